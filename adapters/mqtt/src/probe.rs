//! `edge-agent probe mqtt URL --topic 'x/#'`: connects and subscribes with
//! the adapter's own code (same TLS and credential rules), then prints
//! what arrives for a while.

use std::time::Duration;

use adapter_api::probe::{Failure, ProbeError};
use adapter_api::runner::Device;
use rumqttc::Packet;

use crate::MqttDevice;
use crate::broker::Broker;

/// Payload bytes shown per message, at most.
const SHOW: usize = 200;

/// Connects with `dev`'s settings (its points' topics are the
/// subscriptions) and prints each message for `seconds`.
pub async fn probe(dev: MqttDevice, seconds: u64) -> Result<String, ProbeError> {
    crate::validate(&dev).map_err(|e| ProbeError::new(Failure::Usage, e.to_string()))?;
    let (_, host, port) =
        crate::parse_url(&dev.url).map_err(|e| ProbeError::new(Failure::Usage, e))?;
    adapter_api::probe::tcp_connect(&format!("{host}:{port}"), dev.timeout_ms).await?;
    let url = dev.url.clone();
    let mut broker = Broker::new(dev);
    let conn = broker
        .connect()
        .await
        .map_err(|e| ProbeError::new(e.kind, format!("{url}: {}", e.message)))?;
    let mut out = format!("{url} answered: connected and subscribed; listening {seconds} s\n");
    let mut n = 0usize;
    let mut show = |topic: &str, payload: &[u8], out: &mut String| {
        n += 1;
        let text = String::from_utf8_lossy(&payload[..payload.len().min(SHOW)]).to_string();
        let more = if payload.len() > SHOW {
            format!(" ... ({} bytes)", payload.len())
        } else {
            String::new()
        };
        *out += &format!("{topic} {text:?}{more}\n");
    };
    for (t, p) in conn.early() {
        show(t, p, &mut out);
    }
    let mut el = conn.el;
    let until = tokio::time::Instant::now() + Duration::from_secs(seconds);
    loop {
        match tokio::time::timeout_at(until, el.poll()).await {
            Err(_) => break,
            Ok(Ok(rumqttc::Event::Incoming(Packet::Publish(p)))) => {
                show(&p.topic, &p.payload, &mut out);
                // acknowledgements are manual (QoS 1)
                let _ = conn.client.try_ack(&p);
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                out += &format!("the connection ended: {e}\n");
                break;
            }
        }
    }
    let _ = conn.client.try_disconnect();
    out += &format!("{n} messages\n");
    Ok(out)
}
