//! The adapter registry: the one place in the agent that names each
//! protocol. Everything else (config checks, the command path, `/status`,
//! the uplink) works on [`PointSpec`]s and the [`Adapter`] trait.

use std::path::{Path, PathBuf};

use adapter_api::{Adapter, AdapterError, PointSpec};
use serde::Deserialize;

/// One device, by protocol (`- modbus: {...}`, `- mqtt: {...}`, `- opcua: {...}`).
/// The push adapters' configs are boxed: they are several times larger.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum DeviceConfig {
    Modbus(adapter_modbus::ModbusDevice),
    Mqtt(Box<adapter_mqtt::MqttDevice>),
    Opcua(Box<adapter_opcua::OpcUaDevice>),
    #[serde(rename = "veeder_root")]
    VeederRoot(adapter_veeder_root::VeederRootDevice),
}

impl DeviceConfig {
    pub fn name(&self) -> &str {
        match self {
            DeviceConfig::Modbus(d) => &d.name,
            DeviceConfig::Mqtt(d) => &d.name,
            DeviceConfig::Opcua(d) => &d.name,
            DeviceConfig::VeederRoot(d) => &d.name,
        }
    }

    /// Makes the device's relative file paths relative to `base` (the
    /// config file's directory).
    pub fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        match self {
            DeviceConfig::Modbus(_) | DeviceConfig::VeederRoot(_) => {}
            DeviceConfig::Mqtt(d) => {
                if let Some(p) = &mut d.password_file {
                    fix(p);
                }
                if let Some(t) = &mut d.tls {
                    fix(&mut t.ca);
                    t.cert.iter_mut().chain(t.key.iter_mut()).for_each(fix);
                }
            }
            DeviceConfig::Opcua(d) => {
                fix(&mut d.pki_dir);
                match &mut d.auth {
                    adapter_opcua::config::Auth::Anonymous => {}
                    adapter_opcua::config::Auth::UserPassword { password_file, .. } => {
                        fix(password_file)
                    }
                    adapter_opcua::config::Auth::Certificate { cert, key } => {
                        fix(cert);
                        fix(key);
                    }
                }
            }
        }
    }

    /// The protocol, as `/status` and the headend show it.
    pub fn kind(&self) -> &'static str {
        match self {
            DeviceConfig::Modbus(_) => "modbus",
            DeviceConfig::Mqtt(_) => "mqtt",
            DeviceConfig::Opcua(_) => "opcua",
            DeviceConfig::VeederRoot(_) => "veeder_root",
        }
    }

    /// Checks what serde cannot (addresses, units, protocol rules); the
    /// message names the device and the point.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            DeviceConfig::Modbus(d) => adapter_modbus::validate(d).map_err(|e| e.to_string()),
            DeviceConfig::Mqtt(d) => adapter_mqtt::validate(d).map_err(|e| e.to_string()),
            DeviceConfig::Opcua(d) => adapter_opcua::validate(d).map_err(|e| e.to_string()),
            DeviceConfig::VeederRoot(d) => {
                adapter_veeder_root::validate(d).map_err(|e| e.to_string())
            }
        }
    }

    /// The device's points, protocol-free (config order).
    pub fn points(&self) -> Vec<PointSpec> {
        match self {
            DeviceConfig::Modbus(d) => adapter_modbus::specs(d),
            DeviceConfig::Mqtt(d) => adapter_mqtt::specs(d),
            DeviceConfig::Opcua(d) => adapter_opcua::specs(d),
            DeviceConfig::VeederRoot(d) => adapter_veeder_root::specs(d),
        }
    }

    /// The adapter for this device.
    pub fn build(&self) -> Result<Box<dyn Adapter>, AdapterError> {
        Ok(match self {
            DeviceConfig::Modbus(d) => Box::new(adapter_modbus::ModbusAdapter::new(d.clone())?),
            DeviceConfig::Mqtt(d) => Box::new(adapter_mqtt::MqttAdapter::new((**d).clone())?),
            DeviceConfig::Opcua(d) => Box::new(adapter_opcua::OpcUaAdapter::new((**d).clone())?),
            DeviceConfig::VeederRoot(d) => Box::new(
                adapter_veeder_root::VeederRootAdapter::new(d.clone())
                    .map_err(AdapterError::from)?,
            ),
        })
    }
}
