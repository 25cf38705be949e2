//! Everything the probe reads that a workload controls, parsed: the bytes
//! of its HTTP/1 traffic, the ring-buffer records the kernel writes about
//! it, its executable (ELF, Go build info, `.gopclntab`, DWARF, machine
//! code), its `/proc` entries, and the URL and header text it sends; plus
//! the records those parsers produce ([`record::RequestRecord`], its span
//! identity and sampling decision).
//!
//! Nothing here loads eBPF, talks to the API server or exports OTLP: those
//! live in `ferrotel-probe`, which depends on this crate (and re-exports
//! its modules where the probe's own code used to have them). Keeping this
//! crate's dependencies few is the point: the fuzz targets (`probe/fuzz`,
//! nightly and sanitizers) build only this and what it uses (about 3 CPU
//! minutes cold, not the whole probe's dependency tree), so `make test` can
//! run them. A new parser of workload-controlled input belongs
//! here, with a fuzz target; `docs/security.md` says which limits each one
//! keeps.
//!
//! Every parser takes bytes it does not trust: malformed input is an error
//! or `None`, never a panic, and every size the input states is checked
//! against a cap before anything is allocated for it.

#![forbid(unsafe_code)]

pub mod elf;
pub mod go;
pub mod http1;
pub mod process_events;
pub mod procfs;
pub mod record;
pub mod sampling;
pub mod sockets;
pub mod trace_context;
pub mod url;
