//! The test bed: real control-plane components and a real OpenTelemetry
//! Collector as local processes (issue 2).
#![forbid(unsafe_code)]
