//! `edge-agent probe`: test a device connection before going live. Each
//! protocol's probe lives in its adapter crate and uses the adapter's own
//! connection code; this builds their settings from the command line (as
//! the same config structs, so the same rules check them) and turns the
//! outcome into an exit status: 0 only when the device answered.

use std::path::PathBuf;

use adapter_api::probe::{Failure, ProbeError};
use clap::Subcommand;
use serde_json::{Value, json};

#[derive(Subcommand, Debug)]
pub enum Probe {
    /// Read registers: `probe modbus 10.0.0.5:502 --unit 1 --read holding:0..10 --type f32`.
    Modbus {
        /// host:port (Modbus TCP is usually port 502).
        address: String,
        #[arg(long, default_value_t = 1)]
        unit: u8,
        /// TABLE:START..END (end exclusive) or TABLE:ADDR; TABLE is holding,
        /// input, coil or discrete_input.
        #[arg(long, default_value = "holding:0..10")]
        read: String,
        /// u16, i16, u32, i32, f32, u64, i64 or f64 (coils and discrete
        /// inputs are shown as 0/1 whatever it says).
        #[arg(long = "type", default_value = "u16")]
        data_type: String,
        /// Word order of multi-register values: big (ABCD) or little (CDAB).
        #[arg(long, default_value = "big")]
        word_order: String,
        #[arg(long, default_value_t = 3000)]
        timeout_ms: u64,
    },
    /// Open a session: `probe opcua opc.tcp://10.0.0.9:4840 --browse` (and `--read NODE`).
    Opcua {
        url: String,
        /// List the Objects folder, `--depth` levels deep.
        #[arg(long)]
        browse: bool,
        #[arg(long, default_value_t = 3)]
        depth: usize,
        /// Read one node's value (`ns=2;s=Tank1.Volume`, `nsu=URI;s=...`, `i=2258`).
        #[arg(long)]
        read: Option<String>,
        /// none, sign or sign_and_encrypt (default, as in the agent's config).
        #[arg(long, default_value = "sign_and_encrypt")]
        security: String,
        /// The agent's OPC UA certificate store (its trusted/ and rejected/ folders).
        #[arg(long)]
        pki_dir: Option<PathBuf>,
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        password_file: Option<PathBuf>,
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u64,
    },
    /// Subscribe and print: `probe mqtt mqtt://10.0.0.7:1883 --topic 'site/#' --seconds 10`.
    Mqtt {
        /// mqtt://host[:1883] or mqtts://host[:8883].
        url: String,
        /// Topic filter(s) to subscribe to.
        #[arg(long, required = true)]
        topic: Vec<String>,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// CA certificate (PEM) for mqtts://.
        #[arg(long)]
        ca: Option<PathBuf>,
        #[arg(long)]
        cert: Option<PathBuf>,
        #[arg(long)]
        key: Option<PathBuf>,
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        password_file: Option<PathBuf>,
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u64,
    },
    /// Send one console command: `probe veeder-root 10.0.0.5:10001 --cmd i20100`.
    VeederRoot {
        /// host:port of the console's serial interface (usually 10001).
        address: String,
        /// i20100 / I20100 (inventory), i20200 (deliveries), i20500 (alarms); tank 00 = all.
        #[arg(long, default_value = "i20100")]
        cmd: String,
        /// The console's 6-character security code, if it has one.
        #[arg(long, default_value = "")]
        security_code: String,
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u64,
    },
}

/// The `devices:` section of a config file, parsed as `check-config` does.
#[derive(serde::Deserialize)]
struct Devices {
    #[serde(with = "serde_yaml::with::singleton_map_recursive")]
    devices: Vec<crate::config::DeviceConfig>,
}

/// One device's settings (`{"opcua": {...}}`) read through the same YAML
/// path as the agent's config file (same rules, and no second copy of the
/// config structs' deserializers in the binary).
fn config(kind: &str, v: Value) -> Result<crate::config::DeviceConfig, ProbeError> {
    let text = serde_yaml::to_string(&json!({ "devices": [{ kind: v }] }))
        .map_err(|e| ProbeError::new(Failure::Usage, e.to_string()))?;
    let mut d: Devices = serde_yaml::from_str(&text)
        .map_err(|e| ProbeError::new(Failure::Usage, format!("settings: {e}")))?;
    d.devices
        .pop()
        .ok_or_else(|| ProbeError::new(Failure::Usage, "no settings"))
}

fn yaml_enum<T: serde::de::DeserializeOwned>(what: &str, s: &str) -> Result<T, ProbeError> {
    serde_yaml::from_str(s)
        .map_err(|e| ProbeError::new(Failure::Usage, format!("{what} {s:?}: {e}")))
}

/// Runs a probe; `Ok` is what the device said.
pub async fn run(p: Probe) -> Result<String, ProbeError> {
    match p {
        Probe::Modbus {
            address,
            unit,
            read,
            data_type,
            word_order,
            timeout_ms,
        } => {
            let range = read
                .parse()
                .map_err(|e: String| ProbeError::new(Failure::Usage, format!("--read {e}")))?;
            let ty = yaml_enum("--type", &data_type)?;
            let wo = yaml_enum("--word-order", &word_order)?;
            adapter_modbus::probe::probe(&address, unit, range, ty, wo, timeout_ms).await
        }
        Probe::Opcua {
            url,
            browse,
            depth,
            read,
            security,
            pki_dir,
            user,
            password_file,
            timeout_ms,
        } => {
            let mut dev = json!({
                "name": "probe",
                "endpoint": url,
                "security": security,
                "timeout_ms": timeout_ms,
                "points": [{ "node": "i=2258", "asset": "probe", "field": "time" }],
            });
            if let Some(d) = pki_dir {
                dev["pki_dir"] = json!(d);
            }
            if let Some(u) = user {
                dev["auth"] = json!({ "user_password": { "user": u, "password_file": password_file.unwrap_or_default() } });
            }
            let crate::config::DeviceConfig::Opcua(dev) = config("opcua", dev)? else {
                return Err(ProbeError::new(Failure::Usage, "not OPC UA settings"));
            };
            adapter_opcua::probe::probe(*dev, browse || read.is_none(), depth, read).await
        }
        Probe::Mqtt {
            url,
            topic,
            seconds,
            ca,
            cert,
            key,
            user,
            password_file,
            timeout_ms,
        } => {
            let points: Vec<Value> = topic
                .iter()
                .map(|t| json!({ "topic": t, "asset": "probe", "field": "x" }))
                .collect();
            let mut dev = json!({
                "name": "probe",
                "url": url,
                "client_id": format!("tankwatch-probe-{}", std::process::id()),
                "timeout_ms": timeout_ms,
                "points": points,
            });
            if let Some(ca) = ca {
                dev["tls"] = json!({ "ca": ca, "cert": cert, "key": key });
            }
            if let Some(u) = user {
                dev["username"] = json!(u);
                dev["password_file"] = json!(password_file);
            }
            let crate::config::DeviceConfig::Mqtt(dev) = config("mqtt", dev)? else {
                return Err(ProbeError::new(Failure::Usage, "not MQTT settings"));
            };
            adapter_mqtt::probe::probe(*dev, seconds).await
        }
        Probe::VeederRoot {
            address,
            cmd,
            security_code,
            timeout_ms,
        } => adapter_veeder_root::probe::probe(&address, &cmd, &security_code, timeout_ms).await,
    }
}
