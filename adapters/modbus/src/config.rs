//! Configuration of one Modbus TCP device (a section of the agent's YAML).
use serde::{Deserialize, Deserializer};

/// One Modbus TCP device and the points read from it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusDevice {
    /// Unique device name, used in logs and reading sources.
    pub name: String,
    /// `host:port` of the device (Modbus TCP is usually port 502).
    pub address: String,
    /// Modbus unit id (slave id), 0-255. Default 1.
    #[serde(default = "default_unit_id")]
    pub unit_id: u8,
    /// Time between polls, ms. 10 to 3,600,000. Default 1000.
    #[serde(default = "default_poll", deserialize_with = "poll_ms")]
    pub poll_interval_ms: u64,
    /// Timeout of one request (and of connecting), ms. 50 to 60,000. Default 1000.
    #[serde(default = "default_timeout", deserialize_with = "timeout_ms")]
    pub timeout_ms: u64,
    /// Upper bound of the reconnect backoff, ms. 100 to 600,000. Default 30,000.
    #[serde(
        default = "adapter_api::default_max_backoff_ms",
        deserialize_with = "adapter_api::max_backoff_ms"
    )]
    pub max_backoff_ms: u64,
    /// Most unmapped registers between two points read in one request,
    /// 0 to 64 (0 = only contiguous points share a request). Default 8.
    /// A device that answers a merged request with exception 2 or 3 has it
    /// split into one request per point anyway (remembered per device).
    #[serde(default = "default_max_gap", deserialize_with = "max_gap")]
    pub max_gap: u16,
    /// The register map: which registers become which asset field.
    pub points: Vec<Point>,
}

adapter_api::mapped_point! {
    /// One value read from the device: its registers, then the shared
    /// mapping keys (asset, field, unit, scale, offset, class, on_change,
    /// writable).
    pub struct Point {
        /// Table: `holding` (default), `input`, `coil` or `discrete_input`
        /// (the last two with `type: bool`).
        #[serde(default)]
        pub table: Table,
        /// Zero-based register address (0-65535).
        pub register: u16,
        /// Data type; multi-register types take 2 (32-bit) or 4 (64-bit) registers.
        #[serde(rename = "type")]
        pub data_type: DataType,
        /// Order of the 16-bit words of a multi-register value. Default `big`
        /// (most significant word first, "ABCD"); `little` is "CDAB".
        #[serde(default)]
        pub word_order: Order,
        /// Order of the two bytes inside each register. Default `big`.
        #[serde(default)]
        pub byte_order: Order,
        /// Take one bit of the (integer) value, 0 = least significant: the
        /// reading is 0 or 1 (status words, alarm flags). Scale/offset are not applied.
        #[serde(default)]
        pub bit: Option<u8>,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    /// Holding registers (function 3; written with 6 and 16).
    #[default]
    Holding,
    /// Input registers (function 4).
    Input,
    /// Coils (function 1; written with 5): one bit, type `bool`. Pump
    /// running, valve open, relay outputs.
    Coil,
    /// Discrete inputs (function 2): one bit, type `bool`, read-only. Alarm
    /// and level-switch contacts.
    DiscreteInput,
}

impl Table {
    /// Whether the table holds bits (coils, discrete inputs), not registers.
    pub fn is_bits(self) -> bool {
        matches!(self, Table::Coil | Table::DiscreteInput)
    }

    /// The read function code.
    pub fn function(self) -> u8 {
        match self {
            Table::Coil => 0x01,
            Table::DiscreteInput => 0x02,
            Table::Holding => 0x03,
            Table::Input => 0x04,
        }
    }

    /// The short name in a point's source (`hr`, `ir`, `co`, `di`).
    pub fn short(self) -> &'static str {
        match self {
            Table::Holding => "hr",
            Table::Input => "ir",
            Table::Coil => "co",
            Table::DiscreteInput => "di",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    /// One coil or discrete input: 0 or 1.
    Bool,
    U16,
    I16,
    U32,
    I32,
    F32,
    U64,
    I64,
    F64,
}

impl DataType {
    /// Number of 16-bit registers the type occupies.
    pub fn registers(self) -> u16 {
        match self {
            DataType::Bool | DataType::U16 | DataType::I16 => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
            DataType::U64 | DataType::I64 | DataType::F64 => 4,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    #[default]
    Big,
    Little,
}

fn default_unit_id() -> u8 {
    1
}
fn default_poll() -> u64 {
    1000
}
fn default_timeout() -> u64 {
    1000
}
fn default_max_gap() -> u16 {
    crate::codec::MAX_HOLE
}
fn max_gap<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    adapter_api::bounded_u64(d, "max_gap", 0, 64).map(|v| v as u16)
}

fn poll_ms<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    adapter_api::bounded_u64(d, "poll_interval_ms", 10, 3_600_000)
}
fn timeout_ms<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    adapter_api::bounded_u64(d, "timeout_ms", 50, 60_000)
}
