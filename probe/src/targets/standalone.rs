//! Standalone target selection: `--pid`, `--exe-path GLOB`, `--open-port N`,
//! resolved by scanning `/proc`, re-scanned periodically so that new
//! processes are claimed and exited ones released.
//!
//! Open ports are found the way `ss -ltnp` does: listening sockets in
//! `/proc/<pid>/net/tcp{,6}` (read once per network namespace, so processes
//! in containers are found too) give socket inodes, and `/proc/<pid>/fd/*`
//! links named `socket:[inode]` tie them to processes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// Scans `proc_root` once and returns every process `selector` claims,
/// never including `exclude` (the probe itself).
pub fn scan(
    proc_root: &Path,
    selector: &StandaloneSelector,
    exclude: u32,
) -> BTreeMap<u32, ProcessTarget> {
    let mut found = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        warn!(proc_root = %proc_root.display(), "Cannot read the proc filesystem");
        return found;
    };
    let wanted_pids: HashSet<u32> = selector.pids.iter().copied().collect();
    // netns inode -> listening socket inodes on the wanted ports.
    let mut listeners_by_netns: HashMap<PathBuf, HashSet<u64>> = HashMap::new();
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
            && listens_on(&dir, &selector.open_ports, &mut listeners_by_netns)
        {
            Some("open_port")
        } else {
            None
        };
        if let Some(reason) = reason {
            found.insert(pid, ProcessTarget { pid, exe, reason });
        }
    }
    found
}

fn listens_on(proc_dir: &Path, ports: &[u16], cache: &mut HashMap<PathBuf, HashSet<u64>>) -> bool {
    let Ok(netns) = std::fs::read_link(proc_dir.join("ns/net")) else {
        return false;
    };
    let listeners = cache.entry(netns).or_insert_with(|| {
        let mut inodes = HashSet::new();
        for table in ["net/tcp", "net/tcp6"] {
            if let Ok(text) = std::fs::read_to_string(proc_dir.join(table)) {
                inodes.extend(parse_listening_inodes(&text, ports));
            }
        }
        inodes
    });
    if listeners.is_empty() {
        return false;
    }
    let Ok(fds) = std::fs::read_dir(proc_dir.join("fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .ok()
            .and_then(|target| socket_inode(&target))
            .is_some_and(|inode| listeners.contains(&inode))
    })
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
    loop {
        let scan_root = proc_root.clone();
        let scan_selector = selector.clone();
        let next = tokio::task::spawn_blocking(move || scan(&scan_root, &scan_selector, me))
            .await
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
        debug!(claimed = next.len(), "Scanned /proc for targets");
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
        );
        assert_eq!(by_exe.get(&me).map(|t| t.reason), Some("exe_path"));

        let by_pid = scan(
            Path::new("/proc"),
            &StandaloneSelector::new(&[me], &[], &[]).unwrap(),
            0,
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
}
