//! The headend's long-lived tasks under supervision: one that ends while
//! the headend runs is fatal (the binary exits non-zero), never a headend
//! serving REST without ingest, or the reverse.

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Spawns tasks that must not end before shutdown.
#[derive(Clone)]
pub struct Supervisor {
    pub shutdown: watch::Sender<bool>,
    pub fatal: watch::Sender<Option<String>>,
}

impl Supervisor {
    /// [`supervised`] with this headend's shutdown and fatal channels.
    pub fn spawn(
        &self,
        name: &'static str,
        fut: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> JoinHandle<()> {
        supervised(name, fut, self.shutdown.subscribe(), self.fatal.clone())
    }

    /// A receiver that turns true at shutdown.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }
}

/// Spawns one of the headend's long-lived tasks: if it ends while the
/// headend is not shutting down, that is recorded in `fatal` (the binary
/// then exits non-zero): never a headend serving REST without ingest, or
/// the reverse.
pub fn supervised(
    name: &'static str,
    fut: impl std::future::Future<Output = ()> + Send + 'static,
    shutdown: tokio::sync::watch::Receiver<bool>,
    fatal: tokio::sync::watch::Sender<Option<String>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        fut.await;
        if !*shutdown.borrow() {
            tracing::error!(
                task = name,
                "a task of the headend ended; the headend stops"
            );
            fatal.send_if_modified(|f| {
                let first = f.is_none();
                if first {
                    *f = Some(name.to_string());
                }
                first
            });
        }
    })
}

/// Runs `make`'s future on a tokio runtime of its own (`workers` OS
/// threads), so that it keeps its share of the CPU when the main runtime
/// is saturated: during a reconnect storm of 10,000 agents the main
/// runtime's queue holds thousands of TLS handshakes and sessions, and a
/// REST request queued behind them waited seconds (BENCHMARKS, "Sessions
/// at scale"). The returned future ends when `make`'s does (or when the
/// runtime could not start), so [`supervised`] sees it end.
pub fn on_own_runtime<F, Fut>(
    name: &'static str,
    workers: usize,
    make: F,
) -> impl std::future::Future<Output = ()> + Send + 'static
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let (done, ended) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .thread_name(name)
                .enable_all()
                .build()
            {
                Ok(rt) => {
                    rt.block_on(make());
                    let _ = done.send(());
                }
                Err(e) => tracing::error!(task = name, error = %e, "its runtime could not start"),
            }
        });
    async move {
        match thread {
            // an error means the thread ended without saying so: ended too
            Ok(_) => {
                let _ = ended.await;
            }
            Err(e) => tracing::error!(task = name, error = %e, "its thread could not start"),
        }
    }
}
