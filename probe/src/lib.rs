//! `ferrotel-probe`: eBPF auto-instrumentation for Go and Python services,
//! exporting OpenTelemetry spans and RED metrics over OTLP.
//!
//! The binary (`main.rs`) is a thin wrapper over [`runtime`]; the modules
//! are public so that integration tests can drive each stage directly.
//!
//! ```text
//! targets (standalone | kubernetes) --TargetEvent--> driver + program set (go | sockets)
//!   --RequestRecord--> RecordSink
//!   -> telemetry::pipeline (route, semconv, sampling, RED metrics)
//!   -> export (bounded queue, OTLP gRPC / HTTP, retry) and /metrics
//! ```

pub mod analysis;
pub mod config;
pub mod driver;
pub mod ebpf;
pub mod export;
pub mod frontend;
pub mod go;
pub mod health;
pub mod languages;
pub mod ledger;
pub mod preflight;
pub mod profile;
pub mod propagation;
pub mod runtime;
pub mod sockets;
pub mod tap;
pub mod targets;
pub mod telemetry;
pub mod tracefs;
pub mod views;

// The parsers of workload-controlled input live in `ferrotel-parse` (fuzzed
// on their own, without this crate's dependencies); they keep their paths
// here.
pub use ferrotel_parse::{elf, http1};
