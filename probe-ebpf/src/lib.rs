//! Ferrotel's eBPF program sets, embedded as compiled objects, and the Rust
//! mirror of every struct that crosses the kernel/user boundary.
//!
//! The C headers in `src/c/` are the source of truth for the wire structs;
//! the Rust mirrors assert their sizes at compile time.
#![no_std]
