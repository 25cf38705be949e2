//! Ring-buffer records of the discovery program set (`discovery.bpf.c`):
//! process lifecycles.

use ferrotel_probe_ebpf::Wire as _;
use ferrotel_probe_ebpf::wire::{ProcEvent, kind};

/// One process lifecycle event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessEvent {
    /// `pid` executed a new program (any process on the node).
    Exec(u32),
    /// `pid` was forked by a watched process (and is watched now).
    Fork(u32),
    /// Watched process `pid` exited.
    Exit(u32),
    /// Events were lost (in the kernel or on the way): rescan `/proc`.
    Lost,
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
