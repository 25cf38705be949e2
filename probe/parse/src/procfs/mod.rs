//! `/proc` text about a workload's processes: which container
//! ([`cgroup`]), which interpreter ([`maps`]), which listening sockets
//! ([`net_tcp`]).

pub mod cgroup;
pub mod maps;
pub mod net_tcp;
