//! The MQTT event loop's own task (split from `broker.rs`): it never
//! waits on the session. QoS 0 publishes are shed when the inbox is full
//! (counted, then a gap record); QoS 1 publishes are acknowledged as they
//! enter the inbox and wait in `held`, unacknowledged, while it is full, so
//! the broker stops sending (its in-flight window) and queues the rest.

use adapter_api::now_ms;
use rumqttc::{AsyncClient, EventLoop, Packet, QoS};

/// The most the transport reads of one message (64 MiB); a larger one
/// ends the connection with an error naming it.
pub(crate) const READ_CAP: usize = 64 * 1024 * 1024;

/// QoS 1 messages waiting for room in the inbox, their acks held; past
/// this (the broker's in-flight window is far smaller: mosquitto's is 20)
/// they are shed like QoS 0.
pub(crate) const HELD: usize = 10_000;

/// What the event loop task hands the session.
pub(crate) enum Inbound {
    Publish {
        topic: String,
        /// Empty when the message was over `max_payload_bytes` (`size` says).
        payload: Vec<u8>,
        size: usize,
        retained: bool,
        /// A QoS 1 message received before the session (at connect), to
        /// acknowledge once handled; the pump acknowledges the others.
        ack: Option<rumqttc::Publish>,
    },
    /// Publishes shed because the inbox was full since the last message.
    Shed {
        count: u64,
        from_ms: i64,
        to_ms: i64,
    },
}

/// Runs the event loop until the connection ends (its reason goes to
/// `lost`) or the session drops the inbox.
pub(crate) fn spawn(
    mut el: EventLoop,
    tx: tokio::sync::mpsc::Sender<Inbound>,
    lost_tx: tokio::sync::oneshot::Sender<String>,
    max_payload: usize,
    acker: AsyncClient,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut run: Option<(u64, i64, i64)> = None;
        let mut held: std::collections::VecDeque<(Inbound, rumqttc::Publish)> = Default::default();
        let mut acks: std::collections::VecDeque<rumqttc::Publish> = Default::default();
        loop {
            // what waits goes first, in order; acknowledged as it enters
            while let Some((m, p)) = held.pop_front() {
                match tx.try_send(m) {
                    Ok(()) => acks.push_back(p),
                    Err(tokio::sync::mpsc::error::TrySendError::Full(m)) => {
                        held.push_front((m, p));
                        break;
                    }
                    Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
            while let Some(p) = acks.pop_front() {
                if acker.try_ack(&p).is_err() {
                    acks.push_front(p);
                    break;
                }
            }
            if held.is_empty()
                && let Some((count, from_ms, to_ms)) = run
                && tx
                    .try_send(Inbound::Shed {
                        count,
                        from_ms,
                        to_ms,
                    })
                    .is_ok()
            {
                run = None;
            }
            let ev = tokio::select! {
                ev = el.poll() => ev,
                // room in the inbox for what waits
                permit = tx.reserve(), if !held.is_empty() => {
                    match (permit, held.pop_front()) {
                        (Ok(room), Some((m, p))) => {
                            room.send(m);
                            acks.push_back(p);
                        }
                        (Err(_), _) => return,
                        _ => {}
                    }
                    continue;
                }
            };
            match ev {
                Ok(rumqttc::Event::Incoming(Packet::Publish(p))) => {
                    let now = now_ms();
                    let ack = (p.qos != QoS::AtMostOnce).then(|| rumqttc::Publish {
                        payload: Default::default(),
                        ..p.clone()
                    });
                    let msg = inbound(p, max_payload, false);
                    if let Some(ack) = ack
                        && held.len() < HELD
                    {
                        if !held.is_empty() {
                            held.push_back((msg, ack));
                            continue;
                        }
                        match tx.try_send(msg) {
                            Ok(()) => acks.push_back(ack),
                            Err(tokio::sync::mpsc::error::TrySendError::Full(m)) => {
                                held.push_back((m, ack));
                            }
                            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => return,
                        }
                        continue;
                    }
                    if run.is_some() || !held.is_empty() || tx.try_send(msg).is_err() {
                        if tx.is_closed() {
                            return;
                        }
                        let r = run.get_or_insert((0, now, now));
                        r.0 += 1;
                        r.2 = now;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = lost_tx.send(connect_error(&e));
                    return;
                }
            }
        }
    })
}

/// A broker message for the session: an oversized payload is not kept,
/// a QoS 1 message keeps what its acknowledgement needs.
pub(crate) fn inbound(p: rumqttc::Publish, max_payload: usize, keep_ack: bool) -> Inbound {
    let size = p.payload.len();
    let ack = (keep_ack && p.qos != QoS::AtMostOnce).then(|| rumqttc::Publish {
        payload: Default::default(),
        ..p.clone()
    });
    Inbound::Publish {
        topic: p.topic,
        payload: if size > max_payload {
            Vec::new()
        } else {
            p.payload.to_vec()
        },
        size,
        retained: p.retain,
        ack,
    }
}

/// A connection error with its kind (from rumqttc's error, not its text).
pub(crate) fn connect_failure(e: &rumqttc::ConnectionError) -> adapter_api::runner::ConnectError {
    use adapter_api::probe::Failure;
    use rumqttc::ConnectionError as C;
    use std::io::ErrorKind as K;
    let kind = match e {
        C::ConnectionRefused(_) | C::Tls(_) => Failure::Trust,
        C::NetworkTimeout | C::FlushTimeout => Failure::Timeout,
        C::Io(io) if io.kind() == K::TimedOut => Failure::Timeout,
        C::Io(_) | C::MqttState(_) | C::RequestsDone => Failure::Unreachable,
        C::NotConnAck(_) => Failure::Device,
    };
    adapter_api::runner::ConnectError::new(kind, connect_error(e))
}

/// A connection error in an installer's words.
pub(crate) fn connect_error(e: &rumqttc::ConnectionError) -> String {
    match e {
        rumqttc::ConnectionError::ConnectionRefused(code) => format!(
            "the broker refused the connection: {code:?} (check username, password, client id and ACL)"
        ),
        rumqttc::ConnectionError::Tls(t) => {
            format!("TLS: {t} (check tls.ca and the broker's certificate name)")
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use adapter_api::probe::Failure;
    use rumqttc::ConnectionError as C;

    #[test]
    fn a_connection_error_is_classified_by_its_variant_not_its_text() {
        let io = |k| C::Io(std::io::Error::new(k, "x"));
        let cases = [
            (
                C::ConnectionRefused(rumqttc::ConnectReturnCode::NotAuthorized),
                Failure::Trust,
            ),
            (C::NetworkTimeout, Failure::Timeout),
            (C::FlushTimeout, Failure::Timeout),
            (io(std::io::ErrorKind::TimedOut), Failure::Timeout),
            (
                io(std::io::ErrorKind::ConnectionRefused),
                Failure::Unreachable,
            ),
            (C::RequestsDone, Failure::Unreachable),
        ];
        for (e, kind) in cases {
            let f = connect_failure(&e);
            assert_eq!(f.kind, kind, "{e}");
            // the installer's words are the same as before
            assert_eq!(f.message, connect_error(&e));
        }
    }
}
