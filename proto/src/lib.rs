//! The agent <-> headend wire contract. The `.proto` file
//! (`proto/tankwatch/agent/v1/agent.proto`) is the documentation of every
//! message and of the ack/sequence semantics; this crate only compiles it.

/// Version 1 of the contract (`package tankwatch.agent.v1`).
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("tankwatch.agent.v1");
}

pub use ack::UnknownReason;

/// The asset id of the agent itself: its own conditions (a device offline,
/// the log dropping, storage nearly full, the certificate expiring) are
/// alarm points of this asset, `alarm.<condition>`. No configured asset
/// may take it.
pub const AGENT_ASSET: &str = "agent";

/// The ack reason's text form (`applied`, `rejected_interlock`, ...): the
/// one mapping both ends use, so the enum and the v1 string never disagree.
mod ack {
    use super::v1::{AckReason, CommandAck};

    /// Every reason with its text form, in the enum's order.
    const TEXT: &[(AckReason, &str)] = &[
        (AckReason::Received, "received"),
        (AckReason::Applied, "applied"),
        (AckReason::Completed, "completed"),
        (AckReason::Superseded, "superseded"),
        (AckReason::Cancelled, "cancelled"),
        (AckReason::Expired, "expired"),
        (AckReason::RejectedOutOfRange, "rejected_out_of_range"),
        (AckReason::RejectedInterlock, "rejected_interlock"),
        (AckReason::RejectedInvalid, "rejected_invalid"),
        (AckReason::DeviceUnreachable, "device_unreachable"),
        (AckReason::WriteFailed, "write_failed"),
        (AckReason::ReadbackMismatch, "readback_mismatch"),
    ];

    /// An ack reason this side does not know (a newer agent, a bad peer).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct UnknownReason(pub String);

    impl std::fmt::Display for UnknownReason {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "unknown ack reason {:?}", self.0)
        }
    }

    impl std::error::Error for UnknownReason {}

    impl AckReason {
        /// The text form (`CommandAck.reason`, SQL, REST). `""` for
        /// `Unspecified`, which is never sent.
        pub fn as_text(self) -> &'static str {
            TEXT.iter().find(|(r, _)| *r == self).map_or("", |(_, t)| t)
        }

        /// Parses the text form; an unknown text is an error.
        pub fn from_text(s: &str) -> Result<AckReason, UnknownReason> {
            TEXT.iter()
                .find(|(_, t)| *t == s)
                .map(|(r, _)| *r)
                .ok_or_else(|| UnknownReason(s.to_string()))
        }

        /// Whether the command is refused or failed (not a normal step).
        pub fn is_refusal(self) -> bool {
            !matches!(
                self,
                AckReason::Unspecified
                    | AckReason::Received
                    | AckReason::Applied
                    | AckReason::Completed
            )
        }
    }

    impl CommandAck {
        /// An ack with both the enum and its v1 text set.
        pub fn new(
            command_id: impl Into<String>,
            reason: AckReason,
            detail: impl Into<String>,
            ts_ms: i64,
            readback: Option<f64>,
        ) -> CommandAck {
            CommandAck {
                command_id: command_id.into(),
                reason: reason.as_text().to_string(),
                detail: detail.into(),
                ts_ms,
                seq: 0,
                readback,
                code: reason as i32,
            }
        }

        /// The reason: the enum when set, else the v1 text. A value this
        /// side does not know is an error.
        pub fn reason_code(&self) -> Result<AckReason, UnknownReason> {
            match AckReason::try_from(self.code) {
                Ok(AckReason::Unspecified) => AckReason::from_text(&self.reason),
                Ok(r) => Ok(r),
                Err(_) => Err(UnknownReason(format!("code {}", self.code))),
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn every_reason_round_trips_its_text_and_its_number_and_unknown_ones_are_errors() {
            for n in 1..=12 {
                let r = AckReason::try_from(n).unwrap();
                assert_eq!(AckReason::from_text(r.as_text()), Ok(r));
                let a = CommandAck::new("c", r, "", 0, None);
                assert_eq!(a.reason_code(), Ok(r));
                // a v1 agent sends only the text
                let v1 = CommandAck { code: 0, ..a };
                assert_eq!(v1.reason_code(), Ok(r));
            }
            assert!(AckReason::from_text("some_future_reason").is_err());
            assert!(AckReason::from_text("Applied").is_err());
            let bad = CommandAck {
                code: 99,
                ..CommandAck::new("c", AckReason::Applied, "", 0, None)
            };
            assert!(bad.reason_code().is_err());
            let empty = CommandAck::default();
            assert!(empty.reason_code().is_err());
        }
    }
}

/// The compact batch codec (aliases, deltas, exact decimals).
pub mod compact;
#[cfg(feature = "fixtures")]
pub mod fixtures;
