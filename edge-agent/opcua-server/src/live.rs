//! The live part of the server: readings into the address space (the
//! `Feed`, one slot per variable, newest wins, never waits) and the
//! updater task that writes what changed, the agent's state and the
//! expected deliveries into the nodes, which notifies subscriptions.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use adapter_api::{Quality, Reading};
use opcua::server::node_manager::memory::InMemoryNodeManager;
use opcua::types::{DataValue, DateTime, NodeId, StatusCode, Variant};
use tokio::sync::{Notify, watch};

use crate::{model, nodes};

/// The quality of a reading as a StatusCode: Good, Uncertain or Bad (the
/// last known value is kept with it).
pub fn status_of(q: Quality) -> StatusCode {
    match q {
        Quality::Good => StatusCode::Good,
        Quality::Uncertain => StatusCode::Uncertain,
        Quality::Bad => StatusCode::Bad,
    }
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    value: Option<f64>,
    status: StatusCode,
    ts_ms: i64,
}

#[derive(Default)]
struct Slots {
    samples: Vec<Option<Sample>>,
    dirty: Vec<usize>,
    queued: Vec<bool>,
}

/// Readings into the address space: the newest per point, coalesced.
pub struct Feed {
    index: HashMap<(String, String), usize>,
    slots: Mutex<Slots>,
    notify: Notify,
}

impl Feed {
    pub(crate) fn new(keys: Vec<(String, String)>) -> Feed {
        let n = keys.len();
        Feed {
            index: keys.into_iter().enumerate().map(|(i, k)| (k, i)).collect(),
            slots: Mutex::new(Slots {
                samples: vec![None; n],
                dirty: Vec::with_capacity(n),
                queued: vec![false; n],
            }),
            notify: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a reading (never waits on the server). A bad reading keeps
    /// the last known value and changes only the status.
    pub fn update(&self, r: &Reading) {
        let Some(&i) = self.index.get(&(r.asset_id.clone(), r.field.clone())) else {
            return;
        };
        {
            let mut s = self.lock();
            let last = s.samples[i].and_then(|x| x.value);
            s.samples[i] = Some(Sample {
                value: if r.quality == Quality::Bad || !r.value.is_finite() {
                    last
                } else {
                    Some(r.value)
                },
                status: status_of(r.quality),
                ts_ms: r.source_ts_ms,
            });
            if !s.queued[i] {
                s.queued[i] = true;
                s.dirty.push(i);
            }
        }
        self.notify.notify_one();
    }

    fn take(&self) -> Vec<(usize, Sample)> {
        let mut s = self.lock();
        let dirty = std::mem::take(&mut s.dirty);
        dirty
            .into_iter()
            .filter_map(|i| {
                s.queued[i] = false;
                s.samples[i].map(|x| (i, x))
            })
            .collect()
    }
}

/// The agent's own state, for `Agent/...`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentStatus {
    pub headend_connected: bool,
    pub log_entries: u64,
    /// When the headend last acknowledged the log, Unix ms.
    pub last_ack_ms: Option<i64>,
    pub devices: Vec<DeviceState>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceState {
    pub name: String,
    pub connected: bool,
    pub last_error: String,
}

/// An expected delivery, for `Deliveries/<load>/...`.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub load: String,
    pub eta_ms: i64,
    pub eta_source: String,
    pub planned_volume_l: f64,
    /// expected | delivering | delivered | cancelled
    pub status: String,
}

pub(crate) struct Updater {
    pub(crate) nm: Arc<InMemoryNodeManager<nodes::AgentNodes>>,
    pub(crate) subs: Arc<opcua::server::SubscriptionCache>,
    pub(crate) ns: u16,
    pub(crate) site: String,
    pub(crate) plan: model::Plan,
    pub(crate) feed: Arc<Feed>,
    pub(crate) loads: HashSet<String>,
}

fn dv(value: Variant, status: StatusCode, ts_ms: i64) -> DataValue {
    let now = DateTime::now();
    DataValue {
        value: Some(value),
        status: Some(status),
        source_timestamp: Some(ms_time(ts_ms).unwrap_or(now)),
        server_timestamp: Some(now),
        ..Default::default()
    }
}

/// Unix ms as the stack's time (`None` outside its range).
fn ms_time(ms: i64) -> Option<DateTime> {
    opcua::types::date_time::DateTimeUtc::from_timestamp_millis(ms).map(DateTime::from)
}

impl Updater {
    pub(crate) async fn run(
        mut self,
        mut status: watch::Receiver<AgentStatus>,
        mut deliveries: watch::Receiver<Vec<Delivery>>,
    ) -> Result<(), String> {
        let reading_vars: Vec<(NodeId, model::Type)> = self
            .plan
            .vars
            .iter()
            .filter(|v| matches!(v.source, model::Source::Reading { .. }))
            .map(|v| (nodes::node(self.ns, &v.id), v.ty))
            .collect();
        loop {
            tokio::select! {
                _ = self.feed.notify.notified() => {
                    let changed = self.feed.take();
                    let mut values: Vec<(&NodeId, Option<&opcua::types::NumericRange>, DataValue)> = Vec::new();
                    for (i, s) in &changed {
                        let Some((id, ty)) = reading_vars.get(*i) else { continue };
                        let value = match (s.value, ty) {
                            (Some(v), model::Type::Boolean) => Variant::from(v != 0.0),
                            (Some(v), _) => Variant::from(v),
                            (None, t) => nodes::empty(*t),
                        };
                        // a status change that keeps the value notifies
                        // subscribers by itself (the vendored stack's trigger
                        // is status or value, the spec's default): the last
                        // known value goes out with the new status, never an
                        // empty value (issue 29, item 5)
                        values.push((id, None, dv(value, s.status, s.ts_ms)));
                    }
                    if let Err(e) = self.nm.set_values(&self.subs, values.into_iter()) {
                        return Err(format!("updating values: {e}"));
                    }
                }
                r = status.changed() => {
                    if r.is_err() { return Ok(()); }
                    let s = status.borrow_and_update().clone();
                    self.agent(&s)?;
                }
                r = deliveries.changed() => {
                    if r.is_err() { return Ok(()); }
                    let d = deliveries.borrow_and_update().clone();
                    self.deliveries(&d)?;
                }
            }
        }
    }

    fn agent(&self, s: &AgentStatus) -> Result<(), String> {
        let now = adapter_api::now_ms();
        let mut values: Vec<(NodeId, DataValue)> = Vec::new();
        for v in &self.plan.vars {
            let model::Source::Agent(a) = &v.source else {
                continue;
            };
            let dev = |name: &str| s.devices.iter().find(|d| d.name == name);
            let (value, status) = match a {
                model::AgentVar::HeadendConnected => {
                    (Variant::from(s.headend_connected), StatusCode::Good)
                }
                model::AgentVar::LogEntries => (Variant::from(s.log_entries), StatusCode::Good),
                model::AgentVar::LastAck => match s.last_ack_ms.and_then(ms_time) {
                    Some(t) => (Variant::from(t), StatusCode::Good),
                    None => (
                        Variant::from(DateTime::null()),
                        StatusCode::UncertainInitialValue,
                    ),
                },
                model::AgentVar::DeviceStatus(d) => (
                    Variant::from(match dev(d) {
                        Some(x) if x.connected => "connected",
                        Some(_) => "disconnected",
                        None => "unknown",
                    }),
                    StatusCode::Good,
                ),
                model::AgentVar::DeviceConnected(d) => (
                    Variant::from(dev(d).is_some_and(|x| x.connected)),
                    StatusCode::Good,
                ),
                model::AgentVar::DeviceLastError(d) => (
                    Variant::from(dev(d).map(|x| x.last_error.as_str()).unwrap_or("")),
                    StatusCode::Good,
                ),
            };
            values.push((nodes::node(self.ns, &v.id), dv(value, status, now)));
        }
        self.nm
            .set_values(
                &self.subs,
                values.iter().map(|(id, d)| (id, None, d.clone())),
            )
            .map_err(|e| format!("updating agent state: {e}"))
    }

    fn deliveries(&mut self, list: &[Delivery]) -> Result<(), String> {
        let now = adapter_api::now_ms();
        let wanted: HashSet<String> = list
            .iter()
            .filter(|d| {
                !d.load.is_empty() && !d.load.contains('/') && !d.load.chars().any(char::is_control)
            })
            .map(|d| d.load.clone())
            .collect();
        {
            let mut space = self.nm.address_space().write();
            for gone in self.loads.difference(&wanted) {
                let (folder, vars) = model::delivery_vars(&self.site, gone);
                for v in vars {
                    space.delete(&nodes::node(self.ns, &v.id), true);
                }
                space.delete(&nodes::node(self.ns, &folder.id), true);
            }
            for new in wanted.difference(&self.loads) {
                let (folder, vars) = model::delivery_vars(&self.site, new);
                nodes::add_folder(&mut space, self.ns, &folder);
                for v in &vars {
                    nodes::add_var(&mut space, self.ns, v);
                }
            }
        }
        self.loads = wanted;
        let mut values: Vec<(NodeId, DataValue)> = Vec::new();
        for d in list.iter().filter(|d| self.loads.contains(&d.load)) {
            let base = model::site_path(&self.site, &["Deliveries", &d.load]);
            let eta = ms_time(d.eta_ms)
                .map(Variant::from)
                .unwrap_or(Variant::from(DateTime::null()));
            for (name, value) in [
                ("Eta", eta),
                ("EtaSource", Variant::from(d.eta_source.as_str())),
                ("PlannedVolume", Variant::from(d.planned_volume_l)),
                ("Status", Variant::from(d.status.as_str())),
            ] {
                values.push((
                    nodes::node(self.ns, &format!("{base}/{name}")),
                    dv(value, StatusCode::Good, now),
                ));
            }
        }
        self.nm
            .set_values(
                &self.subs,
                values.iter().map(|(id, d)| (id, None, d.clone())),
            )
            .map_err(|e| format!("updating deliveries: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(field: &str, value: f64, quality: Quality, ts: i64) -> Reading {
        Reading {
            asset_id: "t1".into(),
            field: field.into(),
            value,
            unit: "L".into(),
            quality,
            source_ts_ms: ts,
            received_ts_ms: ts,
            source: String::new(),
            error: String::new(),
            class: adapter_api::DropClass::Telemetry,
        }
    }

    #[test]
    fn the_feed_keeps_the_newest_value_per_point_and_a_bad_reading_keeps_the_last_value() {
        let f = Feed::new(vec![
            ("t1".into(), "volume".into()),
            ("t1".into(), "height".into()),
        ]);
        f.update(&reading("volume", 100.0, Quality::Good, 1));
        f.update(&reading("volume", 110.0, Quality::Good, 2));
        f.update(&reading("unknown", 1.0, Quality::Good, 2));
        let t = f.take();
        assert_eq!(t.len(), 1, "coalesced, unknown ignored");
        assert_eq!((t[0].1.value, t[0].1.ts_ms), (Some(110.0), 2));
        f.update(&reading("volume", 0.0, Quality::Bad, 3));
        let t = f.take();
        assert_eq!(
            (t[0].1.value, t[0].1.status),
            (Some(110.0), StatusCode::Bad)
        );
        assert!(f.take().is_empty());
        f.update(&reading("height", 5.0, Quality::Bad, 4));
        assert_eq!(f.take()[0].1.value, None, "never known: no value");
    }
}
