//! Reading a pod's resource usage from its cgroup, on cgroup v1, v2 and
//! hybrid hosts.
//!
//! A pod's processes are in one cgroup per hierarchy; the kubelet makes a
//! pod-level cgroup (`…/pod<uid>` or `…-pod<uid_>.slice`) with one child per
//! container, so the pod directory's files are the pod's totals. Which
//! hierarchy has which controller depends on the host:
//!
//! | Host | CPU | Memory | Disk I/O |
//! |---|---|---|---|
//! | v2 | `cpu.stat` `usage_usec` | `memory.current`, `memory.stat` | `io.stat` |
//! | hybrid (v1 controllers, v2 mounted too, e.g. `/sys/fs/cgroup/unified`) | `cpu.stat` of v2 (kept by the kernel for every v2 cgroup, controller or not), else v1 `cpuacct.usage` | v1 `memory.usage_in_bytes`, `memory.stat` | see below |
//! | v1 | `cpuacct.usage` | v1 memory | see below |
//!
//! Disk bytes: v2's `io.stat` when the io controller is enabled for the pod.
//! On v1 the `blkio.throttle.io_service_bytes` files only count when a
//! throttling rule exists for the device (measured on this platform's 6.18
//! kernel: zero for 20 MiB of direct writes without a rule, exact with
//! one), and the probe does not write rules into other pods' cgroups; so on
//! v1 the pod's disk bytes are the storage-layer bytes of its processes
//! (`/proc/<pid>/io`, [`super::procio`]).
//!
//! Working set is the kubelet's definition: usage minus inactive file pages.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The host's root as seen from a process that shares its PID namespace.
const HOST_ROOT: &str = "/proc/1/root";

/// Where the cgroup hierarchies are mounted: every cgroup2 mount (a
/// container may see its own besides the host's) and every v1 mount with
/// its controllers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hierarchies {
    pub v2: Vec<PathBuf>,
    pub v1: Vec<(PathBuf, Vec<String>)>,
}

impl Hierarchies {
    /// Parses `/proc/self/mountinfo`.
    pub fn from_mountinfo(content: &str) -> Self {
        let mut out = Self::default();
        for mount in ferrotel_parse::procfs::cgroup::cgroup_mount_entries(content) {
            if mount.v2 {
                out.v2.push(mount.mount_point);
            } else {
                let controllers = mount
                    .options
                    .split(',')
                    .filter(|o| !matches!(*o, "rw" | "ro") && !o.contains('='))
                    .map(str::to_owned)
                    .collect();
                out.v1.push((mount.mount_point, controllers));
            }
        }
        out
    }

    /// The host's hierarchies as this process can reach them: through the
    /// host's init when it may ([`Self::host`]), else its own mounts — in a
    /// pod, those the probe mounted at startup ([`crate::views::host_cgroups`]).
    pub fn read() -> std::io::Result<Self> {
        if let Some(host) = Self::host() {
            return Ok(host);
        }
        Ok(Self::from_mountinfo(&std::fs::read_to_string(
            "/proc/self/mountinfo",
        )?))
    }

    /// The host init's hierarchies, under `/proc/1/root`: with `hostPID`
    /// they show every pod's cgroups even where this process's own mounts do
    /// not (a container's). `None` where the kernel refuses this process
    /// that access (it needs CAP_SYS_PTRACE, and some hosts refuse even
    /// that) or pid 1 has no cgroup mounts.
    pub fn host() -> Option<Self> {
        let host_root = Path::new(HOST_ROOT);
        let text = std::fs::read_to_string(host_root.with_file_name("mountinfo")).ok()?;
        let host = Self::from_mountinfo(&text).under(host_root);
        host.reachable().then_some(host)
    }

    /// Every mount point as seen under `root`.
    fn under(self, root: &Path) -> Self {
        let join = |p: PathBuf| root.join(p.strip_prefix("/").unwrap_or(&p));
        Self {
            v2: self.v2.into_iter().map(join).collect(),
            v1: self.v1.into_iter().map(|(p, c)| (join(p), c)).collect(),
        }
    }

    /// Some mount point is a directory this process can open.
    fn reachable(&self) -> bool {
        self.v2
            .iter()
            .chain(self.v1.iter().map(|(p, _)| p))
            .any(|p| std::fs::read_dir(p).is_ok())
    }

    /// The v1 mounts carrying `controller`.
    fn v1_for<'a>(&'a self, controller: &'a str) -> impl Iterator<Item = &'a Path> + 'a {
        self.v1
            .iter()
            .filter(move |(_, c)| c.iter().any(|c| c == controller))
            .map(|(p, _)| p.as_path())
    }
}

/// The pod-level cgroup directories of one pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodCgroups {
    /// In the unified hierarchy.
    pub v2: Option<PathBuf>,
    /// In v1 hierarchies, by controller (`cpuacct`, `memory`, `blkio`).
    pub v1: BTreeMap<String, PathBuf>,
}

impl PodCgroups {
    pub fn is_empty(&self) -> bool {
        self.v2.is_none() && self.v1.is_empty()
    }
}

/// The pod-level part of a process's cgroup path: everything up to the
/// segment naming the pod (`pod<uid>` or `…-pod<uid_>.slice`).
pub fn pod_level(path: &str, pod_uid: &str) -> Option<String> {
    let underscored = pod_uid.replace('-', "_");
    let mut out = String::new();
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        out.push_str(segment);
        if segment.contains(pod_uid) || segment.contains(&underscored) {
            return Some(out);
        }
    }
    None
}

/// Finds the pod-level directories of the pod `pod_uid` from the content of
/// `/proc/<pid>/cgroup` of one of its processes. A path is tried under every
/// mount of its hierarchy, and the first existing directory is kept.
pub fn locate(proc_cgroup: &str, pod_uid: &str, hierarchies: &Hierarchies) -> PodCgroups {
    let mut out = PodCgroups::default();
    for line in proc_cgroup.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let Some(pod_path) = pod_level(path, pod_uid) else {
            continue;
        };
        let relative = pod_path.trim_start_matches('/');
        if id == "0" && controllers.is_empty() {
            out.v2 = hierarchies
                .v2
                .iter()
                .map(|m| m.join(relative))
                .find(|p| p.is_dir());
        } else {
            for controller in controllers.split(',') {
                if let Some(dir) = hierarchies
                    .v1_for(controller)
                    .map(|m| m.join(relative))
                    .find(|p| p.is_dir())
                {
                    out.v1.insert(controller.to_owned(), dir);
                }
            }
        }
    }
    out
}

/// One reading of a pod's cgroup counters; `None` where no file says.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CgroupSample {
    /// CPU time, user + system, in seconds.
    pub cpu_seconds: Option<f64>,
    pub memory_usage: Option<u64>,
    pub memory_working_set: Option<u64>,
    pub memory_rss: Option<u64>,
    /// `(read, written)` bytes, when the io controller counts them (v2).
    pub disk: Option<(u64, u64)>,
}

/// `usage_usec` of a v2 `cpu.stat`.
pub fn parse_cpu_stat_usage(text: &str) -> Option<u64> {
    key_values(text).get("usage_usec").copied()
}

/// `rbytes` and `wbytes` of a v2 `io.stat`, summed over devices.
pub fn parse_io_stat(text: &str) -> (u64, u64) {
    let mut read = 0u64;
    let mut written = 0u64;
    for line in text.lines() {
        for field in line.split_whitespace().skip(1) {
            match field.split_once('=') {
                Some(("rbytes", v)) => read += v.parse::<u64>().unwrap_or(0),
                Some(("wbytes", v)) => written += v.parse::<u64>().unwrap_or(0),
                _ => {}
            }
        }
    }
    (read, written)
}

/// `key value` lines (`memory.stat`, v2 `cpu.stat`).
pub fn key_values(text: &str) -> BTreeMap<&str, u64> {
    text.lines()
        .filter_map(|line| {
            let (key, value) = line.split_once(' ')?;
            Some((key, value.trim().parse().ok()?))
        })
        .collect()
}

/// Working set and RSS from a usage and `memory.stat`, for v2 (`anon`,
/// `inactive_file`) or v1 (`total_rss`, `total_inactive_file`; hierarchical).
pub fn memory_from_stat(usage: u64, stat: &str, v2: bool) -> (u64, Option<u64>) {
    let values = key_values(stat);
    let (inactive, rss) = if v2 {
        (values.get("inactive_file"), values.get("anon"))
    } else {
        (values.get("total_inactive_file"), values.get("total_rss"))
    };
    (
        usage.saturating_sub(inactive.copied().unwrap_or(0)),
        rss.copied(),
    )
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Reads every counter the pod's cgroups offer (see the module docs for
/// which file wins on which host).
pub fn read(cgroups: &PodCgroups) -> CgroupSample {
    let mut sample = CgroupSample::default();
    let v2 = cgroups.v2.as_deref();
    sample.cpu_seconds = v2
        .and_then(|d| std::fs::read_to_string(d.join("cpu.stat")).ok())
        .and_then(|t| parse_cpu_stat_usage(&t))
        .map(|usec| usec as f64 / 1e6)
        .or_else(|| {
            ["cpuacct", "cpu"]
                .iter()
                .filter_map(|c| cgroups.v1.get(*c))
                .find_map(|d| read_u64(&d.join("cpuacct.usage")))
                .map(|ns| ns as f64 / 1e9)
        });
    // Memory: v2 only where its controller is enabled (then memory.current
    // exists), else v1.
    let v2_memory = v2.and_then(|d| Some((read_u64(&d.join("memory.current"))?, d)));
    let memory = match v2_memory {
        Some((usage, d)) => Some((usage, d.join("memory.stat"), true)),
        None => cgroups.v1.get("memory").and_then(|d| {
            Some((
                read_u64(&d.join("memory.usage_in_bytes"))?,
                d.join("memory.stat"),
                false,
            ))
        }),
    };
    if let Some((usage, stat_path, is_v2)) = memory {
        let stat = std::fs::read_to_string(stat_path).unwrap_or_default();
        let (working_set, rss) = memory_from_stat(usage, &stat, is_v2);
        sample.memory_usage = Some(usage);
        sample.memory_working_set = Some(working_set);
        sample.memory_rss = rss;
    }
    sample.disk = v2
        .and_then(|d| std::fs::read_to_string(d.join("io.stat")).ok())
        .map(|t| parse_io_stat(&t));
    sample
}

/// Every process in the pod: `cgroup.procs` of the pod directory and its
/// descendants, in the first hierarchy that has the pod.
pub fn pod_pids(cgroups: &PodCgroups) -> Vec<u32> {
    let root = cgroups.v2.as_ref().or_else(|| cgroups.v1.values().next());
    let mut pids = Vec::new();
    if let Some(root) = root {
        walk_dirs(root, &mut |dir| {
            if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                pids.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
            }
        });
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// The v2 cgroup IDs (directory inode numbers) of the pod directory and
/// every directory below it: what sockets are tagged with.
pub fn v2_ids(cgroups: &PodCgroups) -> Vec<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut ids = Vec::new();
    if let Some(root) = &cgroups.v2 {
        walk_dirs(root, &mut |dir| {
            if let Ok(meta) = std::fs::metadata(dir) {
                ids.push(meta.ino());
            }
        });
    }
    ids
}

/// Calls `visit` on `dir` and each directory below it (bounded depth:
/// cgroup trees under a pod are shallow; a deep one is not followed).
fn walk_dirs(dir: &Path, visit: &mut dyn FnMut(&Path)) {
    fn walk(dir: &Path, depth: u32, visit: &mut dyn FnMut(&Path)) {
        visit(dir);
        if depth == 0 {
            return;
        }
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&entry.path(), depth - 1, visit);
            }
        }
    }
    walk(dir, 4, visit);
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0e3a6c39-5b0d-4f9b-9d86-6a3a3a0c9f11";

    #[test]
    fn pod_level_cuts_after_the_pod_segment_in_both_drivers() {
        assert_eq!(
            pod_level(&format!("/kubepods/besteffort/pod{UID}/abc123"), UID).as_deref(),
            Some(format!("/kubepods/besteffort/pod{UID}").as_str()),
            "cgroupfs driver"
        );
        let underscored = UID.replace('-', "_");
        assert_eq!(
            pod_level(
                &format!(
                    "/kubepods.slice/kubepods-pod{underscored}.slice/cri-containerd-abc.scope"
                ),
                UID
            )
            .as_deref(),
            Some(format!("/kubepods.slice/kubepods-pod{underscored}.slice").as_str()),
            "systemd driver"
        );
        assert_eq!(pod_level("/system.slice/foo.service", UID), None);
    }

    #[test]
    fn the_hosts_mounts_are_reached_under_its_root() {
        let hierarchies = Hierarchies {
            v2: vec![PathBuf::from("/sys/fs/cgroup/unified")],
            v1: vec![(
                PathBuf::from("/sys/fs/cgroup/memory"),
                vec!["memory".into()],
            )],
        }
        .under(Path::new("/proc/1/root"));
        assert_eq!(
            hierarchies.v2,
            [PathBuf::from("/proc/1/root/sys/fs/cgroup/unified")]
        );
        assert_eq!(
            hierarchies.v1_for("memory").collect::<Vec<_>>(),
            [Path::new("/proc/1/root/sys/fs/cgroup/memory")]
        );
        let nowhere = tempfile::tempdir().expect("tempdir");
        assert!(!hierarchies.under(nowhere.path()).reachable());
    }

    #[test]
    fn mountinfo_lists_every_cgroup2_mount_and_v1_controllers() {
        let mountinfo = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
90 80 0:38 / /host/sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
        let h = Hierarchies::from_mountinfo(mountinfo);
        assert_eq!(
            h.v2,
            [
                PathBuf::from("/sys/fs/cgroup/unified"),
                PathBuf::from("/host/sys/fs/cgroup/unified")
            ]
        );
        assert_eq!(
            h.v1_for("cpuacct").collect::<Vec<_>>(),
            [Path::new("/sys/fs/cgroup/cpu,cpuacct")]
        );
        assert_eq!(
            h.v1_for("memory").collect::<Vec<_>>(),
            [Path::new("/sys/fs/cgroup/memory")]
        );
        assert_eq!(
            h.v1_for("systemd").count(),
            0,
            "named hierarchies are not controllers"
        );
    }

    /// A fake cgroup filesystem with one pod in both kinds of hierarchy.
    fn fake_host(v2_memory: bool) -> (tempfile::TempDir, Hierarchies, String) {
        let root = tempfile::tempdir().unwrap();
        let pod = format!("kubepods/burstable/pod{UID}");
        let unified = root.path().join("unified");
        let memory = root.path().join("memory");
        let cpuacct = root.path().join("cpu,cpuacct");
        for base in [&unified, &memory, &cpuacct] {
            std::fs::create_dir_all(base.join(&pod).join("c1")).unwrap();
        }
        std::fs::write(
            unified.join(&pod).join("cpu.stat"),
            "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n",
        )
        .unwrap();
        std::fs::write(cpuacct.join(&pod).join("cpuacct.usage"), "9000000000\n").unwrap();
        std::fs::write(memory.join(&pod).join("memory.usage_in_bytes"), "1000000\n").unwrap();
        std::fs::write(
            memory.join(&pod).join("memory.stat"),
            "cache 10\nrss 5\ntotal_rss 600000\ntotal_inactive_file 300000\n",
        )
        .unwrap();
        if v2_memory {
            std::fs::write(unified.join(&pod).join("memory.current"), "2000000\n").unwrap();
            std::fs::write(
                unified.join(&pod).join("memory.stat"),
                "anon 1500000\nfile 400000\ninactive_file 250000\n",
            )
            .unwrap();
            std::fs::write(
                unified.join(&pod).join("io.stat"),
                "254:0 rbytes=4096 wbytes=1048576 rios=1 wios=16 dbytes=0 dios=0\n8:0 rbytes=100 wbytes=0\n",
            )
            .unwrap();
        }
        let h = Hierarchies {
            v2: vec![unified],
            v1: vec![
                (memory, vec!["memory".into()]),
                (cpuacct, vec!["cpu".into(), "cpuacct".into()]),
            ],
        };
        let proc_cgroup = format!(
            "4:memory:/{pod}/c1\n2:cpu,cpuacct:/{pod}/c1\n1:name=systemd:/{pod}/c1\n0::/{pod}/c1\n"
        );
        (root, h, proc_cgroup)
    }

    #[test]
    fn hybrid_host_takes_cpu_from_v2_and_memory_from_v1() {
        let (_dir, h, proc_cgroup) = fake_host(false);
        let cgroups = locate(&proc_cgroup, UID, &h);
        assert!(cgroups.v2.is_some(), "{cgroups:?}");
        assert!(cgroups.v1.contains_key("memory") && cgroups.v1.contains_key("cpuacct"));
        let sample = read(&cgroups);
        assert_eq!(sample.cpu_seconds, Some(2.5), "v2 cpu.stat wins");
        assert_eq!(sample.memory_usage, Some(1_000_000), "v1 memory");
        assert_eq!(
            sample.memory_working_set,
            Some(700_000),
            "usage - inactive file"
        );
        assert_eq!(sample.memory_rss, Some(600_000));
        assert_eq!(
            sample.disk, None,
            "no io controller on v2: the caller uses /proc/<pid>/io"
        );
    }

    #[test]
    fn v2_host_reads_memory_and_io_from_v2() {
        let (_dir, h, proc_cgroup) = fake_host(true);
        let sample = read(&locate(&proc_cgroup, UID, &h));
        assert_eq!(sample.memory_usage, Some(2_000_000));
        assert_eq!(sample.memory_working_set, Some(1_750_000));
        assert_eq!(sample.memory_rss, Some(1_500_000));
        assert_eq!(sample.disk, Some((4196, 1_048_576)), "summed over devices");
    }

    #[test]
    fn v1_host_takes_cpu_from_cpuacct() {
        let (_dir, mut h, proc_cgroup) = fake_host(false);
        h.v2.clear();
        let v1_only: String = proc_cgroup
            .lines()
            .filter(|l| !l.starts_with("0::"))
            .map(|l| format!("{l}\n"))
            .collect();
        let cgroups = locate(&v1_only, UID, &h);
        assert_eq!(cgroups.v2, None);
        assert_eq!(read(&cgroups).cpu_seconds, Some(9.0));
    }

    #[test]
    fn pids_and_ids_cover_the_pod_and_its_containers() {
        let (_dir, h, proc_cgroup) = fake_host(false);
        let cgroups = locate(&proc_cgroup, UID, &h);
        let pod = cgroups.v2.clone().unwrap();
        std::fs::write(pod.join("cgroup.procs"), "7\n").unwrap();
        std::fs::write(pod.join("c1/cgroup.procs"), "42\n43\n").unwrap();
        assert_eq!(pod_pids(&cgroups), [7, 42, 43]);
        assert_eq!(v2_ids(&cgroups).len(), 2, "the pod directory and c1");
    }
}
