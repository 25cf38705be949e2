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

pub mod config;
pub mod driver;
pub mod ebpf;
pub mod export;
pub mod frontend;
pub mod go;
pub mod health;
pub mod http1;
pub mod languages;
pub mod runtime;
pub mod sockets;
pub mod targets;
pub mod telemetry;
pub mod views;
