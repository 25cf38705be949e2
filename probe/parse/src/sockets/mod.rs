//! What the socket-level program set reads from a workload: ring-buffer
//! records of its syscalls ([`events`]) and, through them, its HTTP/1.x
//! streams, paired into requests ([`tracker`]).

pub mod events;
pub mod tracker;

pub use tracker::{Tracker, TrackerStats};
