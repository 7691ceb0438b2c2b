//! Generated gRPC code for the tss-node APIs (`proto/tss.proto`).
#![allow(missing_docs, clippy::all)]

/// Version 1 of the API.
pub mod v1 {
    tonic::include_proto!("tss.v1");
}
