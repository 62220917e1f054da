//! The generated gRPC API (`proto/v1`, package `wimguard.v1`).

#![allow(clippy::all, missing_docs)]

pub mod v1 {
    tonic::include_proto!("wimguard.v1");
}
