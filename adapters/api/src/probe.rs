//! What `edge-agent probe` reports when a device does not answer as hoped:
//! one failure kind per cause, each with its own exit status, so an
//! installer (or a script) can tell a closed port from a timeout from a
//! trust problem from a device that answered with an error.

use std::fmt;

/// Why a probe failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Nothing listens there, or the host cannot be reached or resolved.
    Unreachable,
    /// Connected (or not) but no answer in time.
    Timeout,
    /// TLS or OPC UA security: the peer's certificate is not trusted, ours
    /// was refused, or the credentials were.
    Trust,
    /// The device answered, with an error (an exception code, a refused
    /// command, a reply that fails its checksum).
    Device,
    /// The probe's own arguments are wrong (nothing was sent).
    Usage,
}

impl Failure {
    /// The process exit status (0 is reserved for "the device answered").
    pub fn exit_code(self) -> u8 {
        match self {
            Failure::Unreachable => 3,
            Failure::Timeout => 4,
            Failure::Trust => 5,
            Failure::Device => 6,
            Failure::Usage => 2,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Unreachable => "unreachable",
            Failure::Timeout => "timeout",
            Failure::Trust => "trust",
            Failure::Device => "device error",
            Failure::Usage => "usage",
        }
    }
}

/// A failed probe: its kind and what to tell the installer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeError {
    pub kind: Failure,
    pub message: String,
}

impl ProbeError {
    pub fn new(kind: Failure, message: impl Into<String>) -> ProbeError {
        ProbeError {
            kind,
            message: message.into(),
        }
    }
    /// A failed TCP connect to `addr`, with a hint per cause.
    pub fn connect(addr: &str, e: &std::io::Error) -> ProbeError {
        use std::io::ErrorKind as K;
        let (kind, hint) = match e.kind() {
            K::ConnectionRefused => (
                Failure::Unreachable,
                "connection refused: nothing listens on that port (wrong port, service off, or a firewall rejecting)",
            ),
            K::TimedOut => (
                Failure::Timeout,
                "no answer to the connection attempt (host down or a firewall dropping)",
            ),
            K::HostUnreachable | K::NetworkUnreachable => (
                Failure::Unreachable,
                "no route to the host (check the address and the site network)",
            ),
            _ => (Failure::Unreachable, "cannot connect"),
        };
        ProbeError::new(kind, format!("{addr}: {hint} ({e})"))
    }
    /// A timeout of `what` after `ms`.
    pub fn timeout(what: &str, ms: u64) -> ProbeError {
        ProbeError::new(
            Failure::Timeout,
            format!("{what}: no answer within {ms} ms"),
        )
    }
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.message)
    }
}

impl std::error::Error for ProbeError {}

/// Connects over TCP within `ms`, naming the cause of a failure.
pub async fn tcp_connect(addr: &str, ms: u64) -> Result<tokio::net::TcpStream, ProbeError> {
    match tokio::time::timeout(
        std::time::Duration::from_millis(ms),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(ProbeError::connect(addr, &e)),
        Err(_) => Err(ProbeError::timeout(&format!("connecting to {addr}"), ms)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_port_is_unreachable_with_its_own_exit_status() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        drop(l);
        let e = tcp_connect(&addr, 2000).await.unwrap_err();
        assert_eq!((e.kind, e.kind.exit_code()), (Failure::Unreachable, 3));
        assert!(e.message.contains("connection refused"), "{e}");
        let codes: Vec<u8> = [
            Failure::Unreachable,
            Failure::Timeout,
            Failure::Trust,
            Failure::Device,
            Failure::Usage,
        ]
        .iter()
        .map(|f| f.exit_code())
        .collect();
        assert_eq!(codes, vec![3, 4, 5, 6, 2], "0 stays the device answered");
    }
}
