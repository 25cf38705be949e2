//! What the Go program set reads from a workload: its executable
//! ([`binary`], with [`buildinfo`], [`pclntab`], [`dwarf`] and the
//! [`offsets`] table) and the records its uprobes write ([`events`]).

pub mod binary;
pub mod buildinfo;
pub mod dwarf;
pub mod events;
pub mod offsets;
pub mod pclntab;
