//! The Go program set (`--language go`): uprobes on net/http and
//! google.golang.org/grpc.
//!
//! - [`set`]: the [`ProgramSet`](crate::driver::ProgramSet) the driver runs:
//!   the tuning (`go.http`, `go.grpc`, ring and payload sizes), attach per
//!   process, decoding;
//! - [`attach`]: per process, the offsets map and one uprobe per entry and
//!   RET;
//! - [`binary`]: which Go, which modules, where the functions and their RET
//!   instructions are, which struct offsets apply (DWARF, else the generated
//!   [`offsets`] table), cached by (device, inode, build ID);
//! - the eBPF side is `probe-ebpf/src/c/go.bpf.c`: entry uprobes plus one
//!   uprobe per RET instruction (uretprobes crash Go programs, see
//!   PLATFORM.md), goroutine-keyed span context carried to child goroutines
//!   through `runtime.newproc1`.
//!
//! See `docs/probe-go.md` for what is traced and the limits.

pub mod attach;
pub mod set;

// Binary analysis and event decoding read the workload's bytes: they live
// in `ferrotel-parse`, where they are fuzzed.
pub use ferrotel_parse::go::{binary, buildinfo, dwarf, events, offsets, pclntab};

pub use set::GoSet;
