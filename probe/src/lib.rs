//! `ferrotel-probe`: eBPF auto-instrumentation for Go and Python services,
//! exporting OpenTelemetry spans and RED metrics over OTLP.
//!
//! The binary (`main.rs`) is a thin wrapper over [`runtime`]; the modules
//! are public so that integration tests can drive each stage directly.
//!
//! ```text
//! front-end (python | golang) --RequestRecord--> RecordSink
//!   -> telemetry::pipeline (route, semconv, sampling, RED metrics)
//!   -> export (bounded queue, OTLP gRPC / HTTP, retry) and /metrics
//! ```

pub mod config;
pub mod ebpf;
pub mod export;
pub mod frontend;
pub mod golang;
pub mod health;
pub mod http1;
pub mod python;
pub mod runtime;
pub mod targets;
pub mod telemetry;
