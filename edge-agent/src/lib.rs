//! The site agent: device adapters -> store-and-forward log -> uplink.
//!
//! ```text
//! adapters --(bounded channel, waits when full)--> log writer --fsync--> sflog
//!                                                       | durable seq
//!                                                       v
//!                               headend <==mTLS gRPC== uplink --ack--> sflog trim
//! ```

// no non-test function over ~150 code lines (clippy.toml sets the bound)
#![deny(clippy::too_many_lines)]

pub mod backfill;
pub mod clock;
pub mod commands;
pub mod config;
pub mod delivery;
pub mod devices;
pub mod enroll;
pub mod health;
pub mod limits;
pub mod logwriter;
pub mod metrics;
pub mod opcua;
pub mod probe;
pub mod renew;
pub mod selfwatch;
pub mod store;
pub mod uplink;
pub mod yamlguard;

use std::sync::Arc;

use tokio::sync::{mpsc, watch};

pub use config::AgentConfig;

/// Errors of the agent library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Log(#[from] sflog::Error),
    #[error(transparent)]
    Adapter(#[from] adapter_api::AdapterError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    OpcUaServer(#[from] agent_opcua_server::StartError),
    #[error("internal: {0}")]
    Internal(String),
}

/// Write requests waiting per device; when full the sender waits.
pub const WRITE_QUEUE: usize = 16;

/// A running agent.
pub struct Agent {
    pub log: Arc<sflog::Log>,
    /// Durable command state and upcoming deliveries.
    pub store: store::Store,
    /// Write side of each device adapter, by device name (the command
    /// path of the command-plane issue sends setpoints here).
    pub writes: std::collections::HashMap<String, mpsc::Sender<adapter_api::WriteRequest>>,
    /// Where `/metrics` and `/status` are served, if enabled.
    pub status_addr: Option<std::net::SocketAddr>,
    /// Where the OPC UA server listens, if configured.
    pub opcua_addr: Option<std::net::SocketAddr>,
    pub uplink: watch::Receiver<uplink::UplinkStatus>,
    stop: watch::Sender<bool>,
    writer: tokio::task::JoinHandle<Result<(), Error>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    fatal: watch::Receiver<Option<String>>,
}

/// Records the first task that ended while the agent was not stopping:
/// the agent must then stop (non-zero exit), never run half alive.
#[derive(Clone)]
pub struct Fatal {
    tx: watch::Sender<Option<String>>,
    stop: watch::Receiver<bool>,
}

/// How a task ended, as `Fatal` reports it.
pub trait Outcome {
    fn why(&self) -> String;
}

impl Outcome for () {
    fn why(&self) -> String {
        "stopped".into()
    }
}

impl<E: std::fmt::Display> Outcome for Result<(), E> {
    fn why(&self) -> String {
        match self {
            Ok(()) => "stopped".into(),
            Err(e) => e.to_string(),
        }
    }
}

impl Fatal {
    /// Spawns one of the agent's tasks; its end is reported to
    /// [`Fatal::ended`], and its outcome kept for whoever awaits it.
    pub fn spawn<T: Outcome + Send + 'static>(
        &self,
        task: String,
        fut: impl std::future::Future<Output = T> + Send + 'static,
    ) -> tokio::task::JoinHandle<T> {
        let fatal = self.clone();
        tokio::spawn(async move {
            let r = fut.await;
            fatal.ended(&task, &r.why());
            r
        })
    }

    /// [`Fatal::spawn`] for a task whose outcome only `Fatal` needs.
    pub fn spawn_task<T: Outcome + Send + 'static>(
        &self,
        task: String,
        fut: impl std::future::Future<Output = T> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let fatal = self.clone();
        tokio::spawn(async move {
            fatal.ended(&task, &fut.await.why());
        })
    }

    /// A recorder for an agent whose stop flag is `stop`; the receiver
    /// sees the first fatal reason.
    pub fn new(stop: watch::Receiver<bool>) -> (Fatal, watch::Receiver<Option<String>>) {
        let (tx, rx) = watch::channel(None);
        (Fatal { tx, stop }, rx)
    }

    /// `task` ended (with `why`); fatal unless the agent is stopping.
    pub fn ended(&self, task: &str, why: &str) {
        if *self.stop.borrow() {
            return;
        }
        tracing::error!(task, why, "a task of the agent ended; the agent stops");
        self.tx.send_if_modified(|f| {
            if f.is_none() {
                *f = Some(format!("{task}: {why}"));
                true
            } else {
                false
            }
        });
    }
}

impl Agent {
    /// Resolves when a task of the agent died (the reason), so that the
    /// process can exit non-zero and be restarted by its supervisor.
    pub async fn failed(&self) -> String {
        let mut f = self.fatal.clone();
        match f.wait_for(|x| x.is_some()).await {
            Ok(v) => v.clone().unwrap_or_default(),
            Err(_) => "supervisor gone".into(),
        }
    }

    /// Stops adapters and the uplink, drains pending readings into the log and fsyncs it.
    pub async fn stop(self) -> Result<(), Error> {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        self.writer
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
    }
}

/// Starts the agent: opens the log, spawns every adapter, the log writer and the uplink.
pub fn start(cfg: AgentConfig) -> Result<Agent, Error> {
    let cfg = Arc::new(cfg);
    let log = Arc::new(sflog::Log::open(&cfg.log.dir, &cfg.log.options())?);
    let had_seqs = log.stats().next_seq > 1;
    // the log shows the agent ran here before (used seqs, or a damaged log)
    let ran_before = logwriter::record_damage(&log)? || had_seqs;
    tracing::info!(site = %cfg.site_id, log_id = log.log_id(), stats = ?log.stats(), "agent log opened");
    warn_if_disk_smaller_than_bound(&cfg.log, &log);
    let (stop, stop_rx) = watch::channel(false);
    let (fatal, fatal_rx) = Fatal::new(stop_rx.clone());
    let (tx, rx) = mpsc::channel(logwriter::READING_QUEUE);
    let mut tasks = Vec::new();
    let (writes, health) = spawn_adapters(&cfg, &tx, &stop_rx, &fatal, &mut tasks)?;
    let tx_watch = tx.clone();
    let (durable_tx, durable_rx) = watch::channel(log.durable_seq());
    let (records_tx, records_rx) = mpsc::channel(logwriter::RECORD_QUEUE);
    let (local_tx, local_rx) = mpsc::channel(commands::LOCAL_QUEUE);
    let command_metrics = commands::CommandMetrics::default();
    // the OPC UA server (if configured) starts before anything reads: a
    // taken port or an unwritable certificate folder stops the agent here
    let opcua_server = start_opcua_server(
        &cfg,
        local_tx.clone(),
        &command_metrics,
        &stop_rx,
        &fatal,
        &mut tasks,
    )?;
    let latest = Arc::new(match &opcua_server {
        Some(h) => logwriter::Latest::with_feed(h.feed.clone()),
        None => logwriter::Latest::default(),
    });
    let (gauge_tx, gauge_rx) = mpsc::channel(logwriter::GAUGE_QUEUE);
    // the writer ends when every adapter and the executor have stopped
    let writer = fatal.spawn(
        "log writer".into(),
        logwriter::run(
            log.clone(),
            rx,
            records_rx,
            cfg.log.clone(),
            durable_tx,
            latest.clone(),
            gauge_tx,
        ),
    );
    let store = open_store(&cfg, ran_before)?;
    let (command_tx, command_rx) = mpsc::channel(commands::COMMAND_QUEUE);
    drop(local_tx);
    let headend_clock = clock::HeadendClock::default();
    let executor = commands::Executor {
        clock: headend_clock.clone(),
        cfg: cfg.clone(),
        store: store.clone(),
        writes: writes.clone(),
        latest,
        records: records_tx,
        readings: tx,
        metrics: command_metrics.clone(),
    };
    tasks.push(fatal.spawn_task(
        "command executor".into(),
        executor.run(
            commands::Inputs {
                commands: command_rx,
                gauge: gauge_rx,
                local: local_rx,
            },
            stop_rx.clone(),
        ),
    ));
    let health = Arc::new(health);
    tasks.push(fatal.spawn_task(
        "self watch".into(),
        selfwatch::run(
            selfwatch::Watch::new(cfg.self_alarms.clone()),
            selfwatch::Sources::of(&cfg, &log, &health),
            tx_watch,
            stop_rx.clone(),
        ),
    ));
    let (status_tx, status_rx) = watch::channel(uplink::UplinkStatus::default());
    let metrics = metrics::Metrics::new(command_metrics);
    let status_addr = serve_status(
        &cfg,
        metrics::Sources {
            site: cfg.site_id.clone(),
            log: log.clone(),
            store: store.clone(),
            metrics: metrics.clone(),
            uplink: status_rx.clone(),
            devices: health.clone(),
        },
        &stop_rx,
        &mut tasks,
    );
    let opcua_addr = opcua_server.as_ref().map(|h| h.addr);
    if let Some(h) = opcua_server {
        tasks.push(fatal.spawn_task(
            "opcua publisher".into(),
            opcua::publish(
                opcua::Sources {
                    log: log.clone(),
                    store: store.clone(),
                    uplink: status_rx.clone(),
                    devices: health.clone(),
                    status: h.status,
                    deliveries: h.deliveries,
                },
                stop_rx.clone(),
            ),
        ));
    }
    let run = uplink::run(uplink::Uplink {
        cfg: cfg.clone(),
        log: log.clone(),
        durable: durable_rx,
        stop: stop_rx.clone(),
        status: status_tx,
        metrics: metrics.clone(),
        commands: command_tx,
        devices: health,
        renewer: None,
        clock: headend_clock,
        store: store.clone(),
        wire: Default::default(),
        meter: Default::default(),
        compress: false,
        failover: uplink::failover::Failover::random(cfg.headend.address.list()),
    });
    tasks.push(fatal.spawn_task("uplink".into(), run));
    tasks.push(tokio::spawn(uplink::watchdog(
        cfg.clone(),
        status_rx.clone(),
        stop_rx,
        metrics,
        fatal.clone(),
    )));
    Ok(Agent {
        log,
        store,
        writes,
        status_addr,
        opcua_addr,
        uplink: status_rx,
        stop,
        writer,
        tasks,
        fatal: fatal_rx,
    })
}

type Tasks = Vec<tokio::task::JoinHandle<()>>;

/// Spawns one task per device. Returns each device's write queue (by
/// name) and its health, as the executor and the status page see them.
#[allow(clippy::type_complexity)]
fn spawn_adapters(
    cfg: &AgentConfig,
    tx: &mpsc::Sender<adapter_api::Event>,
    stop_rx: &watch::Receiver<bool>,
    fatal: &Fatal,
    tasks: &mut Tasks,
) -> Result<
    (
        std::collections::HashMap<String, mpsc::Sender<adapter_api::WriteRequest>>,
        Vec<metrics::DeviceHealth>,
    ),
    Error,
> {
    let mut writes = std::collections::HashMap::new();
    let mut health = Vec::new();
    for d in &cfg.devices {
        let h = adapter_api::Health::default();
        health.push(metrics::DeviceHealth {
            name: d.name().to_string(),
            kind: d.kind(),
            health: h.clone(),
        });
        let adapter = d.build()?;
        let name = adapter.name().to_string();
        let sink = adapter_api::Sink::new(tx.clone(), adapter.when_full(), &name, h)
            .with_time_bound((cfg.device_time.max_skew_s * 1000) as i64);
        let (write_tx, write_rx) = mpsc::channel(WRITE_QUEUE);
        writes.insert(name.clone(), write_tx);
        let run = adapter.run(sink, write_rx, stop_rx.clone());
        tasks.push(fatal.spawn_task(format!("adapter {name}"), run));
    }
    Ok((writes, health))
}

/// The OPC UA server, when configured. It starts before anything reads:
/// a taken port or an unwritable certificate folder stops the agent here.
fn start_opcua_server(
    cfg: &AgentConfig,
    local_tx: mpsc::Sender<commands::LocalWrite>,
    command_metrics: &commands::CommandMetrics,
    stop_rx: &watch::Receiver<bool>,
    fatal: &Fatal,
    tasks: &mut Tasks,
) -> Result<Option<agent_opcua_server::Handle>, Error> {
    let Some(o) = &cfg.opcua_server else {
        return Ok(None);
    };
    let refused = command_metrics.opcua_logins_refused.clone();
    let (handle, run) = agent_opcua_server::start(
        o,
        &opcua::site_model(cfg),
        opcua::writer(local_tx, command_metrics.clone()),
        Arc::new(move || {
            refused.inc();
        }),
        stop_rx.clone(),
    )?;
    tasks.push(fatal.spawn_task("opcua server".into(), async move {
        if let Err(e) = run.await {
            tracing::error!(error = %e, "the OPC UA server ended");
        }
    }));
    Ok(Some(handle))
}

/// Opens the command state; a state lost where the agent ran before asks
/// the headend for the active setpoints again.
fn open_store(cfg: &AgentConfig, ran_before: bool) -> Result<store::Store, Error> {
    let (store, fresh) = store::Store::open_checked(&cfg.log.dir)?;
    if fresh && ran_before {
        // the commands in force here are unknown: the headend sends them again
        tracing::error!(dir = %cfg.log.dir.display(), "the command state (state.sqlite) was lost; asking the headend for the active setpoints");
        store.set_state_lost(true)?;
    }
    Ok(store)
}

/// The status endpoint (`/status`, `/metrics`), when configured: its address.
fn serve_status(
    cfg: &AgentConfig,
    sources: metrics::Sources,
    stop_rx: &watch::Receiver<bool>,
    tasks: &mut Tasks,
) -> Option<std::net::SocketAddr> {
    let listen = cfg.status.listen?;
    metrics::serve(listen, sources, stop_rx.clone()).map(|(addr, task)| {
        tasks.push(task);
        addr
    })
}

/// Is `max_bytes` more than the log's filesystem can hold (its free space
/// plus what the log already uses)? Unknown free space (0) never warns.
pub fn bound_exceeds_disk(max_bytes: u64, st: &sflog::Stats) -> bool {
    st.fs_free_bytes > 0 && max_bytes > st.fs_free_bytes + st.bytes
}

/// Warns at start when the log's bound is larger than its filesystem can
/// hold: the bound then follows the free space (drops start earlier).
fn warn_if_disk_smaller_than_bound(cfg: &config::LogConfig, log: &sflog::Log) {
    let st = log.stats();
    if bound_exceeds_disk(cfg.max_bytes, &st) {
        tracing::warn!(
            max_bytes = cfg.max_bytes,
            fs_free_bytes = st.fs_free_bytes,
            dir = %cfg.dir.display(),
            "log.max_bytes is more than the log's filesystem has free; the log will be bounded by the free space instead (oldest telemetry dropped first)"
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_bound_larger_than_the_free_space_is_warned_about() {
        let st = |free, bytes| sflog::Stats {
            fs_free_bytes: free,
            bytes,
            ..Default::default()
        };
        let gib = 1 << 30;
        assert!(super::bound_exceeds_disk(gib, &st(3 << 20, 1 << 20)));
        assert!(!super::bound_exceeds_disk(gib, &st(80 * gib, 1 << 20)));
        assert!(
            !super::bound_exceeds_disk(gib, &st(gib - 10, 10)),
            "exactly fits"
        );
        assert!(
            !super::bound_exceeds_disk(gib, &st(0, 0)),
            "unknown free space"
        );
    }
}
