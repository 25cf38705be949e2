//! The `drop_counters` map: events the kernel side could not deliver.

use aya::maps::{MapData, PerCpuArray};
use ferrotel_probe_ebpf::contract::maps;
use ferrotel_probe_ebpf::wire::drop_reason;

use super::{EbpfError, Kernel};

/// Reader of a program set's per-CPU drop counters.
pub struct DropCounters {
    set: &'static str,
    map: PerCpuArray<MapData, u64>,
}

impl std::fmt::Debug for DropCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DropCounters")
            .field("set", &self.set)
            .finish_non_exhaustive()
    }
}

impl DropCounters {
    /// Takes the map out of `kernel`.
    pub fn take(kernel: &mut Kernel) -> Result<Self, EbpfError> {
        Ok(Self {
            set: kernel.set(),
            map: kernel.take_map(maps::DROP_COUNTERS)?,
        })
    }

    /// Totals per reason (summed over CPUs), as `(label, count)`; every
    /// reason is listed, zeros included, so the metric series exist.
    pub fn totals(&self) -> Result<Vec<(&'static str, u64)>, EbpfError> {
        let mut totals = Vec::new();
        for reason in 0..drop_reason::COUNT {
            let values = self.map.get(&reason, 0).map_err(|source| EbpfError::Map {
                set: self.set,
                name: maps::DROP_COUNTERS,
                source,
            })?;
            let name = drop_reason::name(reason);
            if name == "other" {
                continue;
            }
            totals.push((name, values.iter().sum()));
        }
        Ok(totals)
    }
}
