//! The `claimed_tgids` map: which processes a program set traces.

use aya::maps::{Array, HashMap, MapData};
use ferrotel_probe_ebpf::contract::maps;
use ferrotel_probe_ebpf::wire::CLAIM_FOLLOW_FORKS;

use super::EbpfError;

/// Owner of a program set's `claimed_tgids` map and of the bitmap in front
/// of it that user space writes, `claimed_hint_user` (see
/// [`super::Kernel::claims`] and `common/claimed.h`). The only writer of
/// that bitmap: `&mut self` orders its read-modify-writes.
pub struct Claims {
    set: &'static str,
    map: HashMap<MapData, u32, u32>,
    hint: Array<MapData, u64>,
}

impl std::fmt::Debug for Claims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claims")
            .field("set", &self.set)
            .field("map", &self.map)
            .field("hint_words", &self.hint.len())
            .finish()
    }
}

/// The word of a pid in a hint bitmap, and its bit there.
fn hint_position(pid: u32) -> (u32, u64) {
    (pid / 64, 1 << (pid % 64))
}

impl Claims {
    pub(super) fn new(
        set: &'static str,
        map: HashMap<MapData, u32, u32>,
        hint: Array<MapData, u64>,
    ) -> Self {
        Self { set, map, hint }
    }

    /// Starts tracing `pid`; with `follow_forks` its future children are
    /// claimed by the kernel at fork time.
    pub fn claim(&mut self, pid: u32, follow_forks: bool) -> Result<(), EbpfError> {
        let flags = if follow_forks { CLAIM_FOLLOW_FORKS } else { 0 };
        // The bit first: a claim the programs cannot see yet is a claim
        // they skip. A pid beyond the bitmap needs none (it is looked up).
        self.set_hint(pid, true)?;
        self.map
            .insert(&pid, &flags, 0)
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
        // A bit left set would only cost its pid the lookup.
        let _ = self.set_hint(pid, false);
    }

    fn set_hint(&mut self, pid: u32, claimed: bool) -> Result<(), EbpfError> {
        let (word, bit) = hint_position(pid);
        if word >= self.hint.len() {
            return Ok(());
        }
        let error = |source| EbpfError::Map {
            set: self.set,
            name: maps::CLAIMED_HINT_USER,
            source,
        };
        let bits = self.hint.get(&word, 0).map_err(error)?;
        let bits = if claimed { bits | bit } else { bits & !bit };
        self.hint.set(word, &bits, 0).map_err(error)
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

#[cfg(test)]
mod tests {
    use super::hint_position;

    #[test]
    fn a_pid_is_one_bit_of_its_word_as_the_kernel_reads_it() {
        // common/claimed.h: word = tgid >> 6, bit = 1 << (tgid & 63).
        assert_eq!(hint_position(0), (0, 1));
        assert_eq!(hint_position(63), (0, 1 << 63));
        assert_eq!(hint_position(64), (1, 1));
        assert_eq!(hint_position(4_194_303), (65_535, 1 << 63));
    }
}
