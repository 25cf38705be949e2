//! Ferrotel's API: the `ferrotel.io/v1alpha1` custom resources, the opt-in
//! rules that decide which pods a probe instruments, and the probe's config
//! file format.
//!
//! This crate is deliberately free of controller code so that `crdgen`, the
//! probe and the end-to-end tests can depend on it without pulling in the
//! operator runtime.
#![forbid(unsafe_code)]

pub mod labels;
pub mod probe_config;
