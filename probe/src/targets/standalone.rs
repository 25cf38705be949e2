//! Standalone target selection: `--pid`, `--exe-path GLOB`, `--open-port N`,
//! resolved by scanning `/proc`, re-scanned periodically so that new
//! processes are claimed and exited ones released.
//!
//! Open ports are found the way `ss -ltnp` does: listening sockets in
//! `/proc/<pid>/net/tcp{,6}` (read per network namespace, so processes in
//! containers are found too) give socket inodes, and `/proc/<pid>/fd/*`
//! links named `socket:[inode]` tie them to processes.
//!
//! Reading those tables is the scan's dominant cost: the kernel walks its
//! whole established-connection hash for them (~20 ms for both on a 24 GiB
//! host, however few connections there are). A [`PortIndex`] therefore
//! keeps each namespace's listeners between scans and reads the tables
//! again only when a process there that does not already match has sockets
//! it did not have at the previous scan (a new process, or a new socket),
//! and at least every [`LISTENERS_MAX_AGE`]. A process that starts
//! listening is found at the next scan, unless its socket was created just
//! before one scan and put to listen after it: then within that age.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use ferrotel_parse::procfs::net_tcp::parse_listening_inodes;

use super::{ProcessTarget, TargetEvent, TargetPublisher};
use crate::telemetry::resource::ResourceRegistry;

/// An invalid standalone selector.
#[derive(Debug, thiserror::Error)]
pub enum SelectorError {
    #[error(
        "invalid --exe-path glob {pattern:?}; use shell glob syntax such as \"/usr/bin/python3*\""
    )]
    BadGlob {
        pattern: String,
        #[source]
        source: glob::PatternError,
    },
}

/// What a standalone probe claims. A process matching any criterion is claimed.
#[derive(Clone, Debug, Default)]
pub struct StandaloneSelector {
    pub pids: Vec<u32>,
    pub exe_globs: Vec<glob::Pattern>,
    pub open_ports: Vec<u16>,
}

impl StandaloneSelector {
    pub fn new(
        pids: &[u32],
        exe_paths: &[String],
        open_ports: &[u16],
    ) -> Result<Self, SelectorError> {
        let exe_globs = exe_paths
            .iter()
            .map(|p| {
                glob::Pattern::new(p).map_err(|source| SelectorError::BadGlob {
                    pattern: p.clone(),
                    source,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            pids: pids.to_vec(),
            exe_globs,
            open_ports: open_ports.to_vec(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.pids.is_empty() && self.exe_globs.is_empty() && self.open_ports.is_empty()
    }
}

/// How long a namespace's listening sockets are trusted without a change
/// that asks for a new read (see the module's documentation).
pub const LISTENERS_MAX_AGE: Duration = Duration::from_secs(30);

/// What the open-port criterion remembers between scans.
#[derive(Debug, Default)]
pub struct PortIndex {
    /// Per network namespace (its `ns/net` link): the inodes of sockets
    /// listening on a wanted port, and when its tables were read.
    listeners: HashMap<PathBuf, (HashSet<u64>, Instant)>,
    /// Per process: its socket inodes at the previous scan, sorted.
    sockets: HashMap<u32, Vec<u64>>,
    /// Times the `net/tcp{,6}` tables of a namespace were read.
    table_reads: u64,
}

impl PortIndex {
    /// Times a namespace's tables were read since this index was made.
    pub fn table_reads(&self) -> u64 {
        self.table_reads
    }

    /// Whether the process at `proc_dir` listens on one of `ports`.
    fn listens_on(&mut self, pid: u32, proc_dir: &Path, ports: &[u16], now: Instant) -> bool {
        let Ok(netns) = std::fs::read_link(proc_dir.join("ns/net")) else {
            return false;
        };
        let sockets = socket_inodes(proc_dir);
        if sockets.is_empty() {
            self.sockets.remove(&pid);
            return false;
        }
        let matches = |listeners: &HashSet<u64>| sockets.iter().any(|i| listeners.contains(i));
        let changed = self.sockets.get(&pid) != Some(&sockets);
        // The namespace's known listeners answer when they were read in
        // this scan, or are recent and either match (a process keeps
        // matching while it holds its listening socket) or the process has
        // no socket they did not see.
        let known = self.listeners.get(&netns).and_then(|(listeners, read_at)| {
            let found = matches(listeners);
            let recent = now.saturating_duration_since(*read_at) < LISTENERS_MAX_AGE;
            (*read_at == now || (recent && (!changed || found))).then_some(found)
        });
        let found = known.unwrap_or_else(|| {
            let mut listeners = HashSet::new();
            for table in ["net/tcp", "net/tcp6"] {
                if let Ok(text) = std::fs::read_to_string(proc_dir.join(table)) {
                    listeners.extend(parse_listening_inodes(&text, ports));
                }
            }
            self.table_reads += 1;
            let found = matches(&listeners);
            self.listeners.insert(netns, (listeners, now));
            found
        });
        self.sockets.insert(pid, sockets);
        found
    }

    /// Forgets exited processes, and listeners too old to answer again.
    fn retain(&mut self, pids: &HashSet<u32>, now: Instant) {
        self.sockets.retain(|pid, _| pids.contains(pid));
        self.listeners
            .retain(|_, (_, read_at)| now.saturating_duration_since(*read_at) < LISTENERS_MAX_AGE);
    }
}

/// The inodes of a process's sockets, sorted.
fn socket_inodes(proc_dir: &Path) -> Vec<u64> {
    let Ok(fds) = std::fs::read_dir(proc_dir.join("fd")) else {
        return Vec::new();
    };
    let mut inodes: Vec<u64> = fds
        .flatten()
        .filter_map(|fd| socket_inode(&std::fs::read_link(fd.path()).ok()?))
        .collect();
    inodes.sort_unstable();
    inodes
}

/// Scans `proc_root` once and returns every process `selector` claims,
/// never including `exclude` (the probe itself). `ports` carries what the
/// open-port criterion learnt in earlier scans; `now` is this scan's time.
pub fn scan(
    proc_root: &Path,
    selector: &StandaloneSelector,
    exclude: u32,
    ports: &mut PortIndex,
    now: Instant,
) -> BTreeMap<u32, ProcessTarget> {
    let mut found = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        warn!(proc_root = %proc_root.display(), "Cannot read the proc filesystem");
        return found;
    };
    let wanted_pids: HashSet<u32> = selector.pids.iter().copied().collect();
    let mut seen = HashSet::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == exclude {
            continue;
        }
        seen.insert(pid);
        let dir = entry.path();
        // Kernel threads have no exe; processes that exit mid-scan neither.
        let Ok(exe) = std::fs::read_link(dir.join("exe")) else {
            continue;
        };
        let reason = if wanted_pids.contains(&pid) {
            Some("pid")
        } else if selector.exe_globs.iter().any(|g| g.matches_path(&exe)) {
            Some("exe_path")
        } else if !selector.open_ports.is_empty()
            && ports.listens_on(pid, &dir, &selector.open_ports, now)
        {
            Some("open_port")
        } else {
            None
        };
        if let Some(reason) = reason {
            found.insert(pid, ProcessTarget { pid, exe, reason });
        }
    }
    ports.retain(&seen, now);
    found
}

fn socket_inode(link: &Path) -> Option<u64> {
    link.to_str()?
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Re-scans every `interval`, publishing what changed, until `shutdown`.
/// Removed processes are also forgotten by `resources`.
pub async fn run(
    selector: StandaloneSelector,
    proc_root: PathBuf,
    interval: Duration,
    publisher: TargetPublisher,
    resources: ResourceRegistry,
    shutdown: CancellationToken,
) {
    let me = std::process::id();
    let mut current: BTreeMap<u32, ProcessTarget> = BTreeMap::new();
    let mut warned_empty = false;
    let mut ports = PortIndex::default();
    loop {
        let scan_root = proc_root.clone();
        let scan_selector = selector.clone();
        let mut index = std::mem::take(&mut ports);
        let next = tokio::task::spawn_blocking(move || {
            let next = scan(&scan_root, &scan_selector, me, &mut index, Instant::now());
            (next, index)
        })
        .await
        // A scan that panicked starts the index afresh.
        .map(|(next, index)| {
            ports = index;
            next
        })
        .unwrap_or_default();
        for (pid, target) in &next {
            if !current.contains_key(pid) {
                info!(pid, exe = %target.exe.display(), reason = target.reason, "Claimed process");
                if !publisher.publish(TargetEvent::Added(target.clone())) {
                    return;
                }
            }
        }
        for pid in current.keys().filter(|pid| !next.contains_key(pid)) {
            info!(pid, "Released process (exited or no longer matching)");
            resources.remove(*pid);
            if !publisher.publish(TargetEvent::Removed(*pid)) {
                return;
            }
        }
        if next.is_empty() && !warned_empty {
            warn!(
                ?selector,
                "No process matches the target selector yet; re-scanning"
            );
            warned_empty = true;
        }
        debug!(
            claimed = next.len(),
            tcp_table_reads = ports.table_reads(),
            "Scanned /proc for targets"
        );
        current = next;
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_listener_is_found_by_port_and_pid_and_exe() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a test listener");
        let port = listener.local_addr().unwrap().port();
        let me = std::process::id();
        let by_port = scan(
            Path::new("/proc"),
            &StandaloneSelector::new(&[], &[], &[port]).unwrap(),
            0,
            &mut PortIndex::default(),
            Instant::now(),
        );
        assert_eq!(
            by_port.get(&me).map(|t| t.reason),
            Some("open_port"),
            "this test process listens on {port}"
        );

        let exe = std::env::current_exe().unwrap().display().to_string();
        let by_exe = scan(
            Path::new("/proc"),
            &StandaloneSelector::new(&[], &[exe], &[]).unwrap(),
            0,
            &mut PortIndex::default(),
            Instant::now(),
        );
        assert_eq!(by_exe.get(&me).map(|t| t.reason), Some("exe_path"));

        let by_pid = scan(
            Path::new("/proc"),
            &StandaloneSelector::new(&[me], &[], &[]).unwrap(),
            0,
            &mut PortIndex::default(),
            Instant::now(),
        );
        assert_eq!(
            by_pid.keys().copied().collect::<Vec<_>>(),
            vec![me],
            "only the given pid is claimed"
        );
        let excluded = scan(
            Path::new("/proc"),
            &StandaloneSelector::new(&[me], &[], &[]).unwrap(),
            me,
            &mut PortIndex::default(),
            Instant::now(),
        );
        assert!(excluded.is_empty(), "the probe never claims itself");
    }

    #[tokio::test]
    async fn resolver_reports_new_and_exited_processes() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id();
        let (publisher, mut events) = super::super::target_channel();
        let shutdown = CancellationToken::new();
        let selector = StandaloneSelector::new(&[pid], &[], &[]).unwrap();
        let task = tokio::spawn(run(
            selector,
            "/proc".into(),
            Duration::from_millis(50),
            publisher,
            ResourceRegistry::default(),
            shutdown.clone(),
        ));
        let added = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("an Added event");
        assert!(
            matches!(added, Some(TargetEvent::Added(ref t)) if t.pid == pid),
            "got {added:?}"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        let removed = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("a Removed event");
        assert_eq!(removed, Some(TargetEvent::Removed(pid)));
        shutdown.cancel();
        task.await.unwrap();
    }

    /// A `/proc` of one process (pid 100, in namespace `net:[1]`) whose
    /// sockets and namespace tables the test controls.
    struct FakeProc {
        root: tempfile::TempDir,
    }

    impl FakeProc {
        const HEADER: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";

        fn new() -> Self {
            let root = tempfile::tempdir().unwrap();
            let dir = root.path().join("100");
            std::fs::create_dir_all(dir.join("fd")).unwrap();
            std::fs::create_dir_all(dir.join("ns")).unwrap();
            std::fs::create_dir_all(dir.join("net")).unwrap();
            std::os::unix::fs::symlink("/usr/bin/python3", dir.join("exe")).unwrap();
            std::os::unix::fs::symlink("net:[1]", dir.join("ns/net")).unwrap();
            std::fs::write(dir.join("net/tcp6"), Self::HEADER).unwrap();
            let fake = Self { root };
            fake.tables(&[]);
            fake
        }

        /// Gives the process a socket with this inode as fd `fd`.
        fn socket(&self, fd: u32, inode: u64) {
            let link = self.root.path().join(format!("100/fd/{fd}"));
            std::os::unix::fs::symlink(format!("socket:[{inode}]"), link).unwrap();
        }

        /// The namespace's IPv4 table: `(port, state, inode)` per line.
        fn tables(&self, sockets: &[(u16, &str, u64)]) {
            let mut text = Self::HEADER.to_owned();
            for (i, (port, state, inode)) in sockets.iter().enumerate() {
                text += &format!(
                    "   {i}: 00000000:{port:04X} 00000000:0000 {state} 00000000:00000000 00:00000000 00000000     0        0 {inode} 1 0000000000000000 100 0 0 10 0\n"
                );
            }
            std::fs::write(self.root.path().join("100/net/tcp"), text).unwrap();
        }

        fn scan(&self, ports: &mut PortIndex, now: Instant) -> bool {
            let selector = StandaloneSelector::new(&[], &[], &[8080]).unwrap();
            scan(self.root.path(), &selector, 0, ports, now).contains_key(&100)
        }
    }

    #[test]
    fn namespace_tables_are_read_again_only_when_a_process_has_new_sockets() {
        let fake = FakeProc::new();
        let mut ports = PortIndex::default();
        let start = Instant::now();
        let at = |secs| start + Duration::from_secs(secs);

        fake.socket(3, 7001);
        fake.tables(&[(22, "0A", 7001)]);
        assert!(!fake.scan(&mut ports, at(0)), "listens on 22, not 8080");
        assert_eq!(ports.table_reads(), 1);
        assert!(!fake.scan(&mut ports, at(2)));
        assert_eq!(
            ports.table_reads(),
            1,
            "same sockets: the tables are not read"
        );

        // A new socket that listens on the wanted port.
        fake.socket(4, 7002);
        fake.tables(&[(22, "0A", 7001), (8080, "0A", 7002)]);
        assert!(
            fake.scan(&mut ports, at(4)),
            "a new listener is found at the next scan"
        );
        assert_eq!(ports.table_reads(), 2);

        // Matching, it keeps matching without a read, even as its
        // connections come and go.
        fake.socket(5, 7003);
        assert!(fake.scan(&mut ports, at(6)));
        assert!(fake.scan(&mut ports, at(8)));
        assert_eq!(ports.table_reads(), 2, "a matching process needs no read");

        // Past the age limit the tables are read again: the listener is gone.
        fake.tables(&[(22, "0A", 7001)]);
        let old = at(8) + LISTENERS_MAX_AGE;
        assert!(!fake.scan(&mut ports, old), "a closed listener is released");
        assert_eq!(ports.table_reads(), 3);
    }

    #[test]
    fn a_socket_put_to_listen_after_a_scan_is_found_within_the_age_limit() {
        let fake = FakeProc::new();
        let mut ports = PortIndex::default();
        let start = Instant::now();
        fake.socket(3, 7001);
        assert!(!fake.scan(&mut ports, start), "created, not listening yet");
        fake.tables(&[(8080, "0A", 7001)]);
        assert!(
            !fake.scan(&mut ports, start + Duration::from_secs(2)),
            "the same socket: not read again yet"
        );
        assert!(fake.scan(&mut ports, start + LISTENERS_MAX_AGE));
    }
}
