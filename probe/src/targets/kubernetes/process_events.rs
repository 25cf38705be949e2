//! Process lifecycle events for discovery: the kernel tells us when a
//! process execs, and when a container process forks or exits, so that a new
//! process in an opted-in pod is examined at once and an exited one is
//! released at once, instead of on the next `/proc` scan.
//!
//! Discovery loads its own small program set (`probe-ebpf/src/c/discovery.bpf.c`,
//! just the shared `common/proc.h` programs) rather than reading these events
//! out of a front-end's ring buffer: the Go program set has no process
//! programs, the Python one reports execs of claimed processes only, and
//! discovery must work the same for both. Its `claimed_tgids` map holds the
//! container processes discovery tracks ([`ProcessEvents::watch`]); the kernel
//! adds their children at fork and removes them at exit, reporting both.
//!
//! Events can still be lost (ring buffer full: counted in `drop_counters`;
//! the map full; a process moved between cgroups without exec), so discovery
//! keeps a slow full rescan, and rescans at once when the kernel counted a
//! drop.

use std::collections::HashSet;
use std::time::Duration;

use aya::Ebpf;
use ferrotel_probe_ebpf::Wire as _;
use ferrotel_probe_ebpf::wire::{ProcEvent, kind};
use tracing::debug;

use crate::ebpf::{self, Claims, DropCounters, EbpfError, EventReader, LoadOptions};

const SET: &str = "discovery";

/// Upper bound on how long a reported event waits in the ring buffer.
const POLL: Duration = Duration::from_millis(50);

/// Pending bytes that wake the reader early (about 85 events).
const WAKEUP_BYTES: u64 = 4096;

/// Ring buffer size: process events are 48 bytes; 256 KiB holds a burst of
/// about 5,000 execs between two polls.
const RING_BYTES: u32 = 256 * 1024;

/// Mirrors `FT_MAX_CLAIMED_TGIDS`: processes beyond it are still found by
/// the rescan, only later.
const MAX_WATCHED: usize = 4096;

/// One process lifecycle event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessEvent {
    /// `pid` executed a new program (any process on the node).
    Exec(u32),
    /// `pid` was forked by a watched process (and is watched now).
    Fork(u32),
    /// Watched process `pid` exited.
    Exit(u32),
}

/// Decodes one ring-buffer record of the discovery set.
pub fn decode(record: &[u8]) -> Option<ProcessEvent> {
    let event = ProcEvent::read(record)?;
    let pid = event.header.tgid;
    match event.header.kind {
        kind::PROC_EXEC => Some(ProcessEvent::Exec(pid)),
        kind::PROC_FORK => Some(ProcessEvent::Fork(pid)),
        kind::PROC_EXIT => Some(ProcessEvent::Exit(pid)),
        _ => None,
    }
}

/// The loaded discovery program set.
pub struct ProcessEvents {
    // Owns the attached programs: dropping it detaches them.
    _ebpf: Ebpf,
    reader: EventReader,
    watched_map: Claims,
    drops: DropCounters,
    watched: HashSet<u32>,
    dropped_seen: u64,
}

impl std::fmt::Debug for ProcessEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessEvents")
            .field("watched", &self.watched.len())
            .finish_non_exhaustive()
    }
}

impl ProcessEvents {
    /// Loads and attaches the programs. Needs root or CAP_BPF + CAP_PERFMON
    /// and kernel BTF, like the front-ends; must run inside tokio.
    // aya's error is large; this runs once, at startup.
    #[allow(clippy::result_large_err)]
    pub fn start() -> Result<Self, EbpfError> {
        let options = LoadOptions {
            set: SET,
            ring_buffer_bytes: RING_BYTES,
            wakeup_bytes: WAKEUP_BYTES,
            u32_globals: vec![("report_execs", 1)],
        };
        let mut bpf = ebpf::load(ferrotel_probe_ebpf::DISCOVERY, &options)?;
        let btf = ebpf::kernel_btf()?;
        ebpf::attach_process_tracking(&mut bpf, SET, &btf)?;
        let watched_map = Claims::take(&mut bpf, SET)?;
        let drops = DropCounters::take(&mut bpf, SET)?;
        let reader = EventReader::take(&mut bpf, SET, POLL)?;
        Ok(Self {
            _ebpf: bpf,
            reader,
            watched_map,
            drops,
            watched: HashSet::new(),
            dropped_seen: 0,
        })
    }

    /// Waits for events and appends them to `out` (at least one poll).
    pub async fn next_batch(&mut self, out: &mut Vec<ProcessEvent>) -> std::io::Result<()> {
        self.reader
            .drain(|record| {
                if let Some(event) = decode(record) {
                    out.push(event);
                }
            })
            .await?;
        for event in out.iter() {
            if let ProcessEvent::Exit(pid) = event {
                // The kernel removed it from the map already.
                self.watched.remove(pid);
            } else if let ProcessEvent::Fork(pid) = event {
                self.watched.insert(*pid);
            }
        }
        Ok(())
    }

    /// Asks the kernel to report `pid`'s forks and exit.
    pub fn watch(&mut self, pid: u32) {
        if self.watched.contains(&pid) || self.watched.len() >= MAX_WATCHED {
            return;
        }
        match self.watched_map.claim(pid, true) {
            Ok(()) => {
                self.watched.insert(pid);
            }
            Err(error) => {
                debug!(pid, %error, "Cannot watch process; the rescan will notice its exit")
            }
        }
    }

    /// Makes the watched set exactly `pids` (after a full rescan).
    pub fn sync(&mut self, pids: impl IntoIterator<Item = u32>) {
        let wanted: HashSet<u32> = pids.into_iter().collect();
        let gone: Vec<u32> = self.watched.difference(&wanted).copied().collect();
        for pid in gone {
            self.watched_map.release(pid);
            self.watched.remove(&pid);
        }
        for pid in wanted {
            self.watch(pid);
        }
    }

    /// Whether the kernel counted lost events since the last call (then a
    /// full rescan is due).
    pub fn lost_events(&mut self) -> bool {
        let total: u64 = self
            .drops
            .totals()
            .map(|t| t.iter().map(|(_, n)| n).sum())
            .unwrap_or(0);
        let lost = total > self.dropped_seen;
        self.dropped_seen = total;
        lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: u32, tgid: u32) -> Vec<u8> {
        let mut bytes = vec![0u8; std::mem::size_of::<ProcEvent>()];
        bytes[0..4].copy_from_slice(&kind.to_ne_bytes());
        bytes[4..8].copy_from_slice(&tgid.to_ne_bytes());
        bytes
    }

    #[test]
    fn process_records_decode_to_their_kind_and_process_id() {
        assert_eq!(
            decode(&record(kind::PROC_EXEC, 41)),
            Some(ProcessEvent::Exec(41))
        );
        assert_eq!(
            decode(&record(kind::PROC_FORK, 42)),
            Some(ProcessEvent::Fork(42))
        );
        assert_eq!(
            decode(&record(kind::PROC_EXIT, 43)),
            Some(ProcessEvent::Exit(43))
        );
    }

    #[test]
    fn short_and_foreign_records_are_ignored() {
        assert_eq!(decode(&record(kind::PROC_EXEC, 1)[..20]), None);
        assert_eq!(decode(&record(kind::SOCK_DATA, 1)), None);
    }
}
