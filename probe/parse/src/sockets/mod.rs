//! What the socket-level program set reads from a workload: ring-buffer
//! records of its syscalls ([`events`]) and, through them, its HTTP/1.x
//! streams, paired into requests ([`tracker`]), and the hellos of its TLS
//! connections ([`tls_hello`]).

pub mod events;
mod kernel_context;
pub mod tls_hello;
pub mod tracker;

pub use tracker::{Tracker, TrackerStats};
