//! A pod's disk bytes where no cgroup file counts them (cgroup v1): the sum
//! of its processes' `/proc/<pid>/io` `read_bytes` / `write_bytes` (bytes
//! the process made the storage layer fetch or send; page-cache hits are
//! not disk reads), kept monotonic across process exits.
//!
//! A process that exits takes its counters with it, unless its parent reaps
//! it: then the kernel adds the child's counters to the parent's (`wait`
//! folds a child's I/O accounting into the parent's signal struct). So when
//! a process disappears, its last values are carried over only if its
//! parent is not one of the pod's live processes (e.g. a container's init,
//! reaped by the runtime's shim) — otherwise they would be counted twice.
//! What a process did between the last sample and its exit is lost unless
//! a pod process reaps it; the sampling interval bounds that loss.

use std::collections::HashMap;
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    ppid: u32,
    read: u64,
    written: u64,
}

/// The disk-byte counter of one pod.
#[derive(Clone, Debug, Default)]
pub struct PodProcIo {
    live: HashMap<u32, Seen>,
    departed_read: u64,
    departed_written: u64,
    /// An unreadable `io` file was logged (once per pod).
    warned: bool,
}

/// `read_bytes` and `write_bytes` of a `/proc/<pid>/io`.
pub fn parse_io(text: &str) -> Option<(u64, u64)> {
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    Some((value("read_bytes:")?, value("write_bytes:")?))
}

/// The parent pid from a `/proc/<pid>/stat` (the field after the
/// parenthesised command, which may itself contain spaces and parentheses).
pub fn parse_ppid(stat: &str) -> Option<u32> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

impl PodProcIo {
    /// Takes a new reading of `pids` under `proc_root`; returns the pod's
    /// `(read, written)` bytes so far.
    pub fn update(&mut self, proc_root: &Path, pids: &[u32]) -> (u64, u64) {
        let mut now: HashMap<u32, Seen> = HashMap::with_capacity(pids.len());
        for &pid in pids {
            let dir = proc_root.join(pid.to_string());
            let text = match std::fs::read_to_string(dir.join("io")) {
                Ok(text) => text,
                // Exited meanwhile: its counts are in `departed` (or its parent).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(error) => {
                    if !self.warned {
                        self.warned = true;
                        tracing::warn!(
                            pid,
                            %error,
                            "Cannot read /proc/<pid>/io of a pod's process (reading another user's needs CAP_SYS_PTRACE); its disk bytes are missing"
                        );
                    }
                    continue;
                }
            };
            let Some((read, written)) = parse_io(&text) else {
                continue;
            };
            let ppid = std::fs::read_to_string(dir.join("stat"))
                .ok()
                .and_then(|s| parse_ppid(&s))
                .unwrap_or(0);
            now.insert(
                pid,
                Seen {
                    ppid,
                    read,
                    written,
                },
            );
        }
        self.apply(now)
    }

    fn apply(&mut self, now: HashMap<u32, Seen>) -> (u64, u64) {
        for (pid, last) in &self.live {
            if now.contains_key(pid) {
                continue;
            }
            // Reaped by a live pod process: its counts now show in the parent.
            if now.contains_key(&last.ppid) {
                continue;
            }
            self.departed_read += last.read;
            self.departed_written += last.written;
        }
        self.live = now;
        let (read, written) = self
            .live
            .values()
            .fold((0, 0), |(r, w), s| (r + s.read, w + s.written));
        (self.departed_read + read, self.departed_written + written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(ppid: u32, read: u64, written: u64) -> Seen {
        Seen {
            ppid,
            read,
            written,
        }
    }

    #[test]
    fn proc_io_and_stat_parse() {
        let io = "rchar: 1\nwchar: 2\nsyscr: 3\nsyscw: 4\nread_bytes: 4096\nwrite_bytes: 8192\ncancelled_write_bytes: 0\n";
        assert_eq!(parse_io(io), Some((4096, 8192)));
        assert_eq!(
            parse_ppid("42 (a) b (c)) S 7 42 42 0 -1"),
            Some(7),
            "the command may contain ') '"
        );
    }

    #[test]
    fn an_exited_process_keeps_counting_unless_a_pod_process_reaped_it() {
        let mut io = PodProcIo::default();
        // init (1, parent 0 outside the pod) and a worker (2, child of 1).
        assert_eq!(
            io.apply(HashMap::from([(1, seen(0, 10, 100)), (2, seen(1, 5, 50))])),
            (15, 150)
        );
        // The worker exits and init reaps it: init's counters grow by the
        // worker's, which must not be carried over as well.
        assert_eq!(
            io.apply(HashMap::from([(1, seen(0, 15, 150))])),
            (15, 150),
            "no double count"
        );
        // Init exits (reaped by the runtime outside the pod): carried over.
        assert_eq!(
            io.apply(HashMap::from([(3, seen(0, 1, 1))])),
            (16, 151),
            "monotonic across the exit"
        );
    }
}
