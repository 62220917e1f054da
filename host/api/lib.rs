//! The generated gRPC API (`proto/v1`, package `wimguard.v1`): messages,
//! clients and service traits. The daemon implements the services; the CLI
//! and third-party tools use the clients. Nothing else lives here.

#![allow(clippy::all, missing_docs)]

pub mod v1 {
    tonic::include_proto!("wimguard.v1");
}
