//! The agent <-> headend wire contract. The `.proto` file
//! (`proto/tankwatch/agent/v1/agent.proto`) is the documentation of every
//! message and of the ack/sequence semantics; this crate only compiles it.

/// Version 1 of the contract (`package tankwatch.agent.v1`).
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("tankwatch.agent.v1");
}
