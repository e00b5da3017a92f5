//! A simulated automatic tank gauge (ATG): a Modbus TCP server exposing
//! several tanks whose volume drains with simulated sales and refills with
//! deliveries. Used by the demo and by the end-to-end tests.
//!
//! Register map (documented for installers in `docs/atg-simulator.md`):
//! tank `i` (0-based) starts at holding register `i * 20`; the same values
//! are mirrored in the input registers. Every value is an IEEE-754 float32
//! in two registers, most significant word first ("ABCD"), except the
//! status word.
//!
//! | offset | field          | unit |
//! |--------|----------------|------|
//! | +0     | volume         | L    |
//! | +2     | ullage         | L    |
//! | +4     | height         | mm   |
//! | +6     | water_height   | mm   |
//! | +8     | temperature    | degC |
//! | +10    | tc_volume      | L    |
//! | +12    | capacity       | L    |
//! | +14    | status (u16): bit0 high level, bit1 low level, bit2 water high, bit3 leak | |

pub mod history;
pub mod regimes;
pub mod scenario;
pub mod veeder_root;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_modbus::server::tcp::{Server, accept_tcp_connection};
use tokio_modbus::{ExceptionCode, Request, Response};

/// Registers per tank.
pub const TANK_STRIDE: u16 = 20;
/// Field offsets within a tank's block.
pub const FIELDS: &[(&str, u16, &str)] = &[
    ("volume", 0, "L"),
    ("ullage", 2, "L"),
    ("height", 4, "mm"),
    ("water_height", 6, "mm"),
    ("temperature", 8, "degC"),
    ("tc_volume", 10, "L"),
    ("capacity", 12, "L"),
];
pub const STATUS_OFFSET: u16 = 14;
/// A site controller (pump/dispenser PLC) with writable holding registers:
/// 1000 pump enable (u16 0/1), 1002-1003 power limit kW (float32 ABCD),
/// 1004-1005 a "locked" float32 that accepts writes and ignores them (to
/// exercise read-back), 1006 status (bit 0 = pump running).
pub const CONTROLLER_BASE: u16 = 1000;
pub const CONTROLLER_LEN: u16 = 10;
const LOCKED: std::ops::Range<u16> = 1004..1006;
/// Alarm fields carried by the status word: (field, bit).
pub const ALARMS: &[(&str, u8)] = &[
    ("alarm.high_level", 0),
    ("alarm.low_level", 1),
    ("alarm.water", 2),
    ("alarm.leak", 3),
];

/// One simulated tank.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Tank {
    pub id: String,
    pub product: String,
    pub capacity: f64,
    pub volume: f64,
    pub water_height: f64,
    pub temperature: f64,
    /// Sales rate, L/h.
    pub sales_rate: f64,
    pub delivering: bool,
    /// A leak the tank's gauge reports (set by tests: [`Simulator::set_leak`]).
    pub leak: bool,
    /// Tank height at full capacity, mm.
    pub max_height: f64,
}

impl Tank {
    pub fn ullage(&self) -> f64 {
        (self.capacity - self.volume).max(0.0)
    }
    pub fn height(&self) -> f64 {
        self.volume / self.capacity * self.max_height
    }
    /// Volume corrected to 15 degC (diesel/petrol expansion ~0.1%/K).
    pub fn tc_volume(&self) -> f64 {
        self.volume * (1.0 - 0.001 * (self.temperature - 15.0))
    }
    /// The value of a field by its normalized name.
    pub fn field(&self, name: &str) -> Option<f64> {
        Some(match name {
            "volume" => self.volume,
            "ullage" => self.ullage(),
            "height" => self.height(),
            "water_height" => self.water_height,
            "temperature" => self.temperature,
            "tc_volume" => self.tc_volume(),
            "capacity" => self.capacity,
            _ => return None,
        })
    }
    fn status(&self) -> u16 {
        let pct = self.volume / self.capacity;
        u16::from(pct > 0.95)
            | (u16::from(pct < 0.10) << 1)
            | (u16::from(self.water_height > 50.0) << 2)
            | (u16::from(self.leak) << 3)
    }
}

/// Simulator settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub tanks: usize,
    /// Simulated seconds per real second.
    pub speed: f64,
    /// Simulation step, real ms.
    pub tick_ms: u64,
    /// Seed for the per-tank parameters (reproducible runs).
    pub seed: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            tanks: 4,
            speed: 60.0,
            tick_ms: 200,
            seed: 7,
        }
    }
}

#[derive(Debug)]
struct State {
    tanks: Vec<Tank>,
    /// Delivery records per tank (the Veeder-Root console's i202), oldest first.
    deliveries: Vec<Vec<veeder_root::SimDelivery>>,
    /// A delivery under way per tank: (start ms, start volume, start height).
    open_delivery: Vec<Option<(i64, f64, f64)>>,
    /// Faults for the next Veeder-Root replies.
    vr_faults: VecDeque<veeder_root::Fault>,
    /// The console's serial line speed, bytes/s (None: as fast as TCP goes).
    vr_bytes_per_s: Option<u64>,
    /// Commands the console answered, by text (`i20100`: 3).
    vr_commands: HashMap<String, u64>,
    /// The console's serial security code, if it demands one.
    vr_security_code: Option<String>,
    controller: [u16; CONTROLLER_LEN as usize],
    writes: u64,
    /// Every power limit the controller held, in order (kW), bounded.
    power_history: Vec<f32>,
    frozen: bool,
    silent: bool,
    requests: u64,
    /// When the newest requests arrived, bounded by [`REQUEST_TIMES`].
    request_times: std::collections::VecDeque<std::time::Instant>,
}

/// Request arrival times the simulator keeps (the oldest are dropped).
pub const REQUEST_TIMES: usize = 100_000;

/// Handle on a running simulator.
#[derive(Clone)]
pub struct Simulator {
    state: Arc<Mutex<State>>,
    pub addr: SocketAddr,
}

const PRODUCTS: &[&str] = &["diesel", "unleaded95", "unleaded98", "adblue"];

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    // A panic while holding the lock leaves consistent plain data; keep serving.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// The tanks a simulator with `cfg` starts with (its seed decides their
/// capacities, volumes and sales rates).
pub fn initial_tanks(cfg: &SimConfig) -> Vec<Tank> {
    let mut rng = cfg
        .seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((rng >> 33) as f64) / f64::from(u32::MAX >> 1)
    };
    (0..cfg.tanks)
        .map(|i| {
            let capacity = [20_000.0, 30_000.0, 40_000.0, 50_000.0][i % 4];
            Tank {
                id: format!("tank-{}", i + 1),
                product: PRODUCTS[i % PRODUCTS.len()].to_string(),
                capacity,
                volume: capacity * (0.3 + 0.6 * next()),
                water_height: 5.0 + 20.0 * next(),
                temperature: 12.0 + 6.0 * next(),
                sales_rate: 300.0 + 900.0 * next(),
                delivering: false,
                leak: false,
                max_height: 2500.0,
            }
        })
        .collect()
}

impl Simulator {
    /// Binds `listen` (use port 0 for any) and starts serving and simulating.
    pub async fn start(listen: SocketAddr, cfg: SimConfig) -> std::io::Result<Simulator> {
        let tanks = initial_tanks(&cfg);
        let n = cfg.tanks;
        let state = Arc::new(Mutex::new(State {
            tanks,
            deliveries: vec![Vec::new(); n],
            open_delivery: vec![None; n],
            vr_faults: VecDeque::new(),
            vr_bytes_per_s: None,
            vr_commands: HashMap::new(),
            vr_security_code: None,
            controller: [0; CONTROLLER_LEN as usize],
            writes: 0,
            power_history: Vec::new(),
            frozen: false,
            silent: false,
            requests: 0,
            request_times: Default::default(),
        }));
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let sim = Simulator { state, addr };
        tokio::spawn(serve(listener, sim.state.clone()));
        tokio::spawn(simulate(sim.state.clone(), cfg));
        Ok(sim)
    }

    /// A copy of the current tanks.
    pub fn tanks(&self) -> Vec<Tank> {
        lock(&self.state).tanks.clone()
    }
    /// Stops (or resumes) the simulation clock; values stay constant while frozen.
    pub fn set_frozen(&self, frozen: bool) {
        lock(&self.state).frozen = frozen;
    }
    /// Makes the device stop answering (requests hang) or answer again.
    pub fn set_silent(&self, silent: bool) {
        lock(&self.state).silent = silent;
    }
    /// Requests answered so far.
    pub fn requests(&self) -> u64 {
        lock(&self.state).requests
    }

    /// When the newest requests arrived (at most [`REQUEST_TIMES`]): what a
    /// test reads polling pauses from.
    pub fn request_times(&self) -> Vec<std::time::Instant> {
        lock(&self.state).request_times.iter().copied().collect()
    }
    /// A controller holding register (1000..1010).
    pub fn controller_register(&self, addr: u16) -> Option<u16> {
        let s = lock(&self.state);
        addr.checked_sub(CONTROLLER_BASE)
            .and_then(|i| s.controller.get(usize::from(i)).copied())
    }
    /// Sets a tank's volume (tests drive deliveries with it; freeze the
    /// simulation first so that sales do not move it).
    pub fn set_volume(&self, tank: usize, litres: f64) {
        if let Some(t) = lock(&self.state).tanks.get_mut(tank) {
            t.volume = litres.clamp(0.0, t.capacity);
        }
    }
    /// Raises or clears a tank's leak alarm (status bit 3; Veeder-Root
    /// alarm type 02).
    pub fn set_leak(&self, tank: usize, leak: bool) {
        if let Some(t) = lock(&self.state).tanks.get_mut(tank) {
            t.leak = leak;
        }
    }
    /// The controller's power limit (registers 1002-1003, float32 ABCD), kW.
    pub fn power_limit(&self) -> f32 {
        let s = lock(&self.state);
        let (hi, lo) = (s.controller[2], s.controller[3]);
        f32::from_bits((u32::from(hi) << 16) | u32::from(lo))
    }
    /// Serves the same tanks as a Veeder-Root TLS console (both reply
    /// formats) on `listen`; returns its address.
    pub async fn start_veeder_root(&self, listen: SocketAddr) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        tokio::spawn(veeder_root::serve(listener, self.state.clone()));
        Ok(addr)
    }
    /// Paces the console's replies like a serial line of `baud` (8N1: 10
    /// bits a byte), as behind a serial-to-TCP bridge; `None`: no pacing.
    pub fn set_veeder_root_baud(&self, baud: Option<u32>) {
        lock(&self.state).vr_bytes_per_s = baud.map(|b| u64::from(b / 10).max(1));
    }
    /// Makes the console demand a 6-character security code before each
    /// command (a command without it is answered `9999FF1B`).
    pub fn set_veeder_root_security_code(&self, code: Option<&str>) {
        lock(&self.state).vr_security_code = code.map(str::to_string);
    }
    /// How often the console was asked each command (`i20100`, `I20502`, ...).
    pub fn veeder_root_commands(&self) -> HashMap<String, u64> {
        lock(&self.state).vr_commands.clone()
    }
    /// Applies `fault` to the console's next reply (faults queue up).
    pub fn inject_veeder_root(&self, fault: veeder_root::Fault) {
        lock(&self.state).vr_faults.push_back(fault);
    }
    /// Records a delivery of `litres` into `tank` (0-based) that started
    /// 20 minutes ago and ended a minute ago, and adds it to the volume
    /// (freeze the simulation first for exact figures).
    pub fn record_delivery(&self, tank: usize, litres: f64) -> Option<veeder_root::SimDelivery> {
        let now = veeder_root::now_ms();
        self.record_delivery_at(tank, litres, now - 20 * 60_000, now - 60_000)
    }
    /// Records a delivery of `litres` into `tank` (0-based) between
    /// `start_ms` and `end_ms`, and adds it to the volume.
    pub fn record_delivery_at(
        &self,
        tank: usize,
        litres: f64,
        start_ms: i64,
        end_ms: i64,
    ) -> Option<veeder_root::SimDelivery> {
        let mut s = lock(&self.state);
        let t = s.tanks.get_mut(tank)?;
        let start_volume = t.volume;
        let start_height = t.height();
        t.volume = (t.volume + litres).clamp(0.0, t.capacity);
        let d = veeder_root::SimDelivery {
            start_ms,
            end_ms,
            start_volume,
            end_volume: t.volume,
            start_height,
            end_height: t.height(),
            temperature: t.temperature,
        };
        push_delivery(&mut s.deliveries[tank], d.clone());
        Some(d)
    }
    /// The console's delivery records of `tank` (0-based), oldest first.
    pub fn delivery_records(&self, tank: usize) -> Vec<veeder_root::SimDelivery> {
        lock(&self.state)
            .deliveries
            .get(tank)
            .cloned()
            .unwrap_or_default()
    }
    /// The Veeder-Root reply to `cmd` now (`i20100`, `I20200`, ...), SOH..=ETX.
    pub fn veeder_root_reply(&self, cmd: &str) -> Vec<u8> {
        veeder_root::reply(&lock(&self.state), cmd, veeder_root::now_ms())
    }
    /// Write requests that reached the device.
    pub fn writes(&self) -> u64 {
        lock(&self.state).writes
    }
    /// Every power limit the controller has held since the start, in order
    /// (the device's own record: what a reference poller would see; the
    /// newest 100,000).
    pub fn power_limit_history(&self) -> Vec<f32> {
        lock(&self.state).power_history.clone()
    }
}

async fn simulate(state: Arc<Mutex<State>>, cfg: SimConfig) {
    let mut t = tokio::time::interval(Duration::from_millis(cfg.tick_ms));
    let dt_h = cfg.tick_ms as f64 / 1000.0 * cfg.speed / 3600.0;
    loop {
        t.tick().await;
        let mut s = lock(&state);
        if s.frozen {
            continue;
        }
        let now = veeder_root::now_ms();
        let State {
            tanks,
            deliveries,
            open_delivery,
            ..
        } = &mut *s;
        for (i, tank) in tanks.iter_mut().enumerate() {
            let was = tank.delivering;
            if tank.delivering {
                tank.volume += 36_000.0 * dt_h; // 600 L/min
                if tank.volume >= tank.capacity * 0.9 {
                    tank.delivering = false;
                }
            } else {
                tank.volume -= tank.sales_rate * dt_h;
                if tank.volume <= tank.capacity * 0.15 {
                    tank.delivering = true;
                }
            }
            tank.volume = tank.volume.clamp(0.0, tank.capacity);
            tank.temperature += 0.05 * dt_h * (15.0 - tank.temperature);
            // the console records each delivery when it ends
            match (was, tank.delivering) {
                (false, true) => open_delivery[i] = Some((now, tank.volume, tank.height())),
                (true, false) => {
                    if let Some((start_ms, start_volume, start_height)) = open_delivery[i].take() {
                        push_delivery(
                            &mut deliveries[i],
                            veeder_root::SimDelivery {
                                start_ms,
                                end_ms: now,
                                start_volume,
                                end_volume: tank.volume,
                                start_height,
                                end_height: tank.height(),
                                temperature: tank.temperature,
                            },
                        );
                    }
                }
                _ => {}
            }
        }
    }
}

fn push_delivery(v: &mut Vec<veeder_root::SimDelivery>, d: veeder_root::SimDelivery) {
    if v.len() == veeder_root::KEEP_DELIVERIES {
        v.remove(0);
    }
    v.push(d);
}

fn registers(tanks: &[Tank]) -> HashMap<u16, u16> {
    let mut m = HashMap::new();
    for (i, t) in tanks.iter().enumerate() {
        let base = i as u16 * TANK_STRIDE;
        for (name, off, _) in FIELDS {
            let v = t.field(name).unwrap_or(0.0) as f32;
            let b = v.to_be_bytes();
            m.insert(base + off, u16::from_be_bytes([b[0], b[1]]));
            m.insert(base + off + 1, u16::from_be_bytes([b[2], b[3]]));
        }
        m.insert(base + STATUS_OFFSET, t.status());
    }
    m
}

/// Status register 1006 bit 0 mirrors the pump enable (register 1000).
/// Appends the power limit to its history when a write changed it.
fn record_power(s: &mut State) {
    let v = f32::from_bits((u32::from(s.controller[2]) << 16) | u32::from(s.controller[3]));
    if s.power_history.last() != Some(&v) {
        if s.power_history.len() >= 100_000 {
            s.power_history.remove(0);
        }
        s.power_history.push(v);
    }
}

fn sync_status(c: &mut [u16; CONTROLLER_LEN as usize]) {
    c[6] = (c[6] & !1) | u16::from(c[0] != 0);
}

type Fut = Pin<Box<dyn Future<Output = Result<Response, ExceptionCode>> + Send>>;

struct AtgService {
    state: Arc<Mutex<State>>,
}

impl tokio_modbus::server::Service for AtgService {
    type Request = Request<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = Fut;

    fn call(&self, req: Self::Request) -> Self::Future {
        let mut s = lock(&self.state);
        if s.silent {
            // A hung device: never answers within any sane timeout.
            return Box::pin(async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Err(ExceptionCode::ServerDeviceBusy)
            });
        }
        s.requests += 1;
        if s.request_times.len() >= REQUEST_TIMES {
            s.request_times.pop_front();
        }
        s.request_times.push_back(std::time::Instant::now());
        let limit = s.tanks.len() as u32 * u32::from(TANK_STRIDE);
        let ctrl = u32::from(CONTROLLER_BASE)..u32::from(CONTROLLER_BASE + CONTROLLER_LEN);
        let in_ctrl = |addr: u16, cnt: u16| {
            ctrl.contains(&u32::from(addr)) && u32::from(addr) + u32::from(cnt) <= ctrl.end
        };
        let res = match req {
            Request::ReadHoldingRegisters(a, c) | Request::ReadInputRegisters(a, c)
                if c > 0 && c <= 125 && in_ctrl(a, c) =>
            {
                let i = usize::from(a - CONTROLLER_BASE);
                let v = s.controller[i..i + usize::from(c)].to_vec();
                Ok(if matches!(req, Request::ReadHoldingRegisters(..)) {
                    Response::ReadHoldingRegisters(v)
                } else {
                    Response::ReadInputRegisters(v)
                })
            }
            Request::ReadHoldingRegisters(a, c) | Request::ReadInputRegisters(a, c) => {
                if c == 0 || c > 125 || u32::from(a) + u32::from(c) > limit {
                    Err(ExceptionCode::IllegalDataAddress)
                } else {
                    let regs = registers(&s.tanks);
                    let v: Vec<u16> = (a..a + c)
                        .map(|x| regs.get(&x).copied().unwrap_or(0))
                        .collect();
                    Ok(if matches!(req, Request::ReadHoldingRegisters(..)) {
                        Response::ReadHoldingRegisters(v)
                    } else {
                        Response::ReadInputRegisters(v)
                    })
                }
            }
            Request::WriteSingleRegister(a, v) if in_ctrl(a, 1) => {
                s.writes += 1;
                if !LOCKED.contains(&a) {
                    s.controller[usize::from(a - CONTROLLER_BASE)] = v;
                }
                sync_status(&mut s.controller);
                record_power(&mut s);
                Ok(Response::WriteSingleRegister(a, v))
            }
            Request::WriteMultipleRegisters(a, ref words)
                if !words.is_empty() && in_ctrl(a, words.len() as u16) =>
            {
                s.writes += 1;
                for (k, w) in words.iter().enumerate() {
                    let addr = a + k as u16;
                    if !LOCKED.contains(&addr) {
                        s.controller[usize::from(addr - CONTROLLER_BASE)] = *w;
                    }
                }
                sync_status(&mut s.controller);
                record_power(&mut s);
                Ok(Response::WriteMultipleRegisters(a, words.len() as u16))
            }
            Request::WriteSingleRegister(..) | Request::WriteMultipleRegisters(..) => {
                Err(ExceptionCode::IllegalDataAddress)
            }
            _ => Err(ExceptionCode::IllegalFunction),
        };
        Box::pin(std::future::ready(res))
    }
}

async fn serve(listener: TcpListener, state: Arc<Mutex<State>>) {
    let server = Server::new(listener);
    let new_service = move |_addr| {
        Ok(Some(AtgService {
            state: state.clone(),
        }))
    };
    let on_connected = |stream, addr| {
        let r = accept_tcp_connection(stream, addr, &new_service);
        async move { r }
    };
    let on_error = |e| tracing::debug!(error = %e, "atg-sim connection error");
    if let Err(e) = server.serve(&on_connected, on_error).await {
        tracing::error!(error = %e, "atg-sim server stopped");
    }
}

/// The agent configuration (`devices:` and `assets:` YAML) that reads this
/// simulator's tanks. Used by the demo script and tests.
pub fn agent_yaml_fragment(addr: SocketAddr, tanks: &[Tank], poll_ms: u64) -> String {
    let mut s = String::from("assets:\n");
    for t in tanks {
        s += &format!(
            "  - id: {}\n    kind: tank\n    name: \"{} ({})\"\n    product: {}\n    capacity: {}\n    capacity_unit: L\n",
            t.id, t.id, t.product, t.product, t.capacity
        );
    }
    s += &format!(
        "devices:\n  - modbus:\n      name: atg\n      address: \"{addr}\"\n      unit_id: 1\n      poll_interval_ms: {poll_ms}\n      timeout_ms: 1000\n      points:\n"
    );
    for (i, t) in tanks.iter().enumerate() {
        for (name, off, unit) in FIELDS.iter().filter(|f| f.0 != "capacity") {
            s += &format!(
                "        - {{ asset: {}, field: {name}, register: {}, type: f32, unit: {unit} }}\n",
                t.id,
                i as u16 * TANK_STRIDE + off
            );
        }
        for (name, bit) in ALARMS {
            s += &format!(
                "        - {{ asset: {}, field: {name}, register: {}, type: u16, bit: {bit}, unit: bool, class: alarm }}\n",
                t.id,
                i as u16 * TANK_STRIDE + STATUS_OFFSET
            );
        }
    }
    s
}

/// The YAML device entry (under `devices:`) for this simulator's controller
/// block as asset `asset`: pump_enable (u16), power_limit (kW), both writable.
pub fn controller_yaml_device(name: &str, addr: SocketAddr, asset: &str, poll_ms: u64) -> String {
    format!(
        "  - modbus:\n      name: {name}\n      address: \"{addr}\"\n      poll_interval_ms: {poll_ms}\n      timeout_ms: 1000\n      points:\n        - {{ asset: {asset}, field: pump_enable, register: 1000, type: u16, writable: true }}\n        - {{ asset: {asset}, field: power_limit, register: 1002, type: f32, unit: kW, writable: true }}\n"
    )
}
