//! The adapter registry: the one place in the agent that names each
//! protocol. Everything else (config checks, the command path, `/status`,
//! the uplink) works on [`PointSpec`]s and the [`Adapter`] trait.

use adapter_api::{Adapter, AdapterError, PointSpec};
use serde::Deserialize;

/// One device, by protocol (`- modbus: {...}`, `- mqtt: {...}`, `- opcua: {...}`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum DeviceConfig {
    Modbus(adapter_modbus::ModbusDevice),
    Mqtt(Box<adapter_mqtt::MqttDevice>),
}

impl DeviceConfig {
    pub fn name(&self) -> &str {
        match self {
            DeviceConfig::Modbus(d) => &d.name,
            DeviceConfig::Mqtt(d) => &d.name,
        }
    }

    /// The protocol, as `/status` and the headend show it.
    pub fn kind(&self) -> &'static str {
        match self {
            DeviceConfig::Modbus(_) => "modbus",
            DeviceConfig::Mqtt(_) => "mqtt",
        }
    }

    /// Checks what serde cannot (addresses, units, protocol rules); the
    /// message names the device and the point.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            DeviceConfig::Modbus(d) => adapter_modbus::validate(d).map_err(|e| e.to_string()),
            DeviceConfig::Mqtt(d) => adapter_mqtt::validate(d).map_err(|e| e.to_string()),
        }
    }

    /// The device's points, protocol-free (config order).
    pub fn points(&self) -> Vec<PointSpec> {
        match self {
            DeviceConfig::Modbus(d) => adapter_modbus::specs(d),
            DeviceConfig::Mqtt(d) => adapter_mqtt::specs(d),
        }
    }

    /// The adapter for this device.
    pub fn build(&self) -> Result<Box<dyn Adapter>, AdapterError> {
        Ok(match self {
            DeviceConfig::Modbus(d) => Box::new(adapter_modbus::ModbusAdapter::new(d.clone())?),
            DeviceConfig::Mqtt(d) => Box::new(adapter_mqtt::MqttAdapter::new((**d).clone())?),
        })
    }
}
