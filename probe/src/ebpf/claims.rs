//! The `claimed_tgids` map: which processes a program set traces.

use aya::maps::{HashMap, MapData};
use ferrotel_probe_ebpf::contract::maps;
use ferrotel_probe_ebpf::wire::CLAIM_FOLLOW_FORKS;

use super::EbpfError;

/// Owner of a program set's `claimed_tgids` map (see [`super::Kernel::claims`]).
#[derive(Debug)]
pub struct Claims {
    set: &'static str,
    map: HashMap<MapData, u32, u32>,
}

impl Claims {
    pub(super) fn new(set: &'static str, map: HashMap<MapData, u32, u32>) -> Self {
        Self { set, map }
    }

    /// Starts tracing `pid`; with `follow_forks` its future children are
    /// claimed by the kernel at fork time.
    pub fn claim(&mut self, pid: u32, follow_forks: bool) -> Result<(), EbpfError> {
        let flags = if follow_forks { CLAIM_FOLLOW_FORKS } else { 0 };
        self.map
            .insert(pid, flags, 0)
            .map_err(|source| EbpfError::Map {
                set: self.set,
                name: maps::CLAIMED_TGIDS,
                source,
            })
    }

    /// Stops tracing `pid`; a pid that was not claimed is fine.
    pub fn release(&mut self, pid: u32) {
        // Not found is the only expected error (the exit hook got there first).
        let _ = self.map.remove(&pid);
    }

    /// Whether `pid` is currently claimed (kernel view, including children
    /// claimed at fork).
    pub fn is_claimed(&self, pid: u32) -> bool {
        self.map.get(&pid, 0).is_ok()
    }

    /// Every claimed pid.
    pub fn pids(&self) -> Vec<u32> {
        self.map.keys().filter_map(Result::ok).collect()
    }
}
