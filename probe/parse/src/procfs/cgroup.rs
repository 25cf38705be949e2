//! From a process to its container: parsing `/proc/<pid>/cgroup` and
//! `/proc/self/mountinfo`.
//!
//! Container runtimes name the cgroup of a container after its ID, in a few
//! shapes that depend on the runtime and on the kubelet's cgroup driver:
//!
//! | Runtime, driver | Last path segments |
//! |---|---|
//! | containerd, systemd | `kubepods-burstable-pod<uid_>.slice/cri-containerd-<id>.scope` |
//! | containerd, cgroupfs | `kubepods/burstable/pod<uid>/<id>` |
//! | CRI-O, systemd | `kubepods-pod<uid_>.slice/crio-<id>.scope` |
//! | CRI-O, cgroupfs | `kubepods/pod<uid>/crio-<id>` |
//! | Docker, systemd | `system.slice/docker-<id>.scope` |
//! | Docker, cgroupfs | `docker/<id>` |
//!
//! On a cgroup v2 host the file has one line (`0::<path>`); on v1 one line per
//! hierarchy; on a hybrid host both, and only some hierarchies may carry the
//! container's path (a test sandbox may create only the v2 directory), so
//! every line is examined. We read the container ID from the deepest segment
//! that looks like one, because systemd-in-container setups nest further
//! cgroups (`.../cri-containerd-<id>.scope/init.scope`) under it.

use std::fmt;
use std::path::{Path, PathBuf};

/// The runtime that created a container, as named by the prefix of
/// `status.containerStatuses[].containerID` (`containerd://<id>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Runtime {
    Containerd,
    CriO,
    Docker,
    /// A bare 64-hex segment: containerd or Docker with the cgroupfs driver.
    Unknown,
}

/// A container ID: 64 lowercase hex digits. The runtime is deliberately not
/// part of equality: a cgroup path does not always say which runtime made it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerId(String);

impl ContainerId {
    /// Accepts exactly 64 hex digits (any case), stored lowercase.
    pub fn parse(text: &str) -> Option<Self> {
        (text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| Self(text.to_ascii_lowercase()))
    }

    /// Parses the `containerID` of a pod's container status, e.g.
    /// `containerd://0123…`, `cri-o://…`, `docker://…`.
    pub fn from_status(text: &str) -> Option<(Runtime, Self)> {
        let (scheme, id) = text.split_once("://")?;
        let runtime = match scheme {
            "containerd" => Runtime::Containerd,
            "cri-o" | "crio" => Runtime::CriO,
            "docker" => Runtime::Docker,
            _ => Runtime::Unknown,
        };
        Some((runtime, Self::parse(id)?))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Twelve digits, like `crictl ps`: enough to recognise, short in logs.
        write!(f, "ContainerId({})", &self.0[..12])
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the cgroup path of a process says about its pod and container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupIdentity {
    pub container_id: Option<ContainerId>,
    pub runtime: Option<Runtime>,
    /// The pod UID from a `pod<uid>` (cgroupfs) or `...-pod<uid_>.slice`
    /// (systemd, dashes replaced by underscores) segment.
    pub pod_uid: Option<String>,
}

impl CgroupIdentity {
    pub fn is_empty(&self) -> bool {
        self.container_id.is_none() && self.pod_uid.is_none()
    }
}

/// Parses the content of `/proc/<pid>/cgroup`.
///
/// The v2 line (`0::`) is preferred: it is the one hierarchy every modern
/// runtime populates; then the v1 lines in file order.
pub fn parse_proc_cgroup(content: &str) -> CgroupIdentity {
    let mut lines: Vec<(bool, &str)> = content
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (id, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            Some((id == "0" && controllers.is_empty(), path))
        })
        .collect();
    // Stable sort: the v2 line first, v1 lines keep their file order.
    lines.sort_by_key(|(is_v2, _)| !is_v2);
    let mut found = CgroupIdentity::default();
    for (_, path) in lines {
        let identity = parse_cgroup_path(path);
        if found.container_id.is_none() && identity.container_id.is_some() {
            found.container_id = identity.container_id;
            found.runtime = identity.runtime;
        }
        if found.pod_uid.is_none() {
            found.pod_uid = identity.pod_uid;
        }
        if found.container_id.is_some() && found.pod_uid.is_some() {
            break;
        }
    }
    found
}

/// Parses one cgroup path (the third field of a `/proc/<pid>/cgroup` line).
pub fn parse_cgroup_path(path: &str) -> CgroupIdentity {
    let mut identity = CgroupIdentity::default();
    for segment in path.split('/').rev().filter(|s| !s.is_empty()) {
        if identity.container_id.is_none()
            && let Some((runtime, id)) = container_segment(segment)
        {
            identity.container_id = Some(id);
            identity.runtime = Some(runtime);
        }
        if identity.pod_uid.is_none() {
            identity.pod_uid = pod_segment(segment);
        }
    }
    identity
}

fn container_segment(segment: &str) -> Option<(Runtime, ContainerId)> {
    let stem = segment.strip_suffix(".scope").unwrap_or(segment);
    // conmon (CRI-O's monitor) lives in `crio-conmon-<id>.scope`: it is not
    // the workload, so it must not match the container.
    if stem.starts_with("crio-conmon-") {
        return None;
    }
    let prefixed = [
        ("cri-containerd-", Runtime::Containerd),
        ("containerd-", Runtime::Containerd),
        ("crio-", Runtime::CriO),
        ("docker-", Runtime::Docker),
        ("libpod-", Runtime::Unknown),
    ];
    for (prefix, runtime) in prefixed {
        if let Some(rest) = stem.strip_prefix(prefix) {
            return ContainerId::parse(rest).map(|id| (runtime, id));
        }
    }
    ContainerId::parse(stem).map(|id| (Runtime::Unknown, id))
}

fn pod_segment(segment: &str) -> Option<String> {
    // systemd driver: `kubepods-besteffort-pod<uid with _>.slice`.
    if let Some(stem) = segment.strip_suffix(".slice") {
        let (_, uid) = stem.rsplit_once("-pod")?;
        return is_uid(uid).then(|| uid.replace('_', "-"));
    }
    // cgroupfs driver: `pod<uid>`.
    let uid = segment.strip_prefix("pod")?;
    is_uid(uid).then(|| uid.to_owned())
}

fn is_uid(text: &str) -> bool {
    text.len() == 36
        && text
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b'-' || b == b'_')
}

/// Where the cgroup hierarchies are mounted, from `/proc/self/mountinfo`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupMounts {
    /// The cgroup2 (unified) mount, if any: `/sys/fs/cgroup` on a pure v2
    /// host, often `/sys/fs/cgroup/unified` on a hybrid one.
    pub v2: Option<PathBuf>,
    /// cgroup v1 mounts with their super options (e.g. `rw,cpu`).
    pub v1: Vec<(PathBuf, String)>,
    /// `v2` shows the whole hierarchy (its mount root is `/`), so
    /// `/proc/<pid>/cgroup` paths resolve under it.
    pub v2_whole: bool,
}

impl CgroupMounts {
    pub fn is_hybrid(&self) -> bool {
        self.v2.is_some() && !self.v1.is_empty()
    }
}

/// One cgroup filesystem mount of `/proc/self/mountinfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupMount {
    /// The directory of the hierarchy that is mounted (`/` for its root; a
    /// container's bind mount of its own cgroup shows that cgroup's path).
    pub root: String,
    pub mount_point: PathBuf,
    /// cgroup2 (unified) rather than a v1 hierarchy.
    pub v2: bool,
    /// Its super options (for v1, its controllers: e.g. `rw,cpu,cpuacct`).
    pub options: String,
}

/// Every cgroup and cgroup2 mount of `/proc/self/mountinfo` (see proc(5):
/// fields up to a lone `-` separator, then the filesystem type, source and
/// super options), in order.
pub fn cgroup_mount_entries(content: &str) -> impl Iterator<Item = CgroupMount> + '_ {
    content.lines().filter_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let sep = fields.iter().position(|f| *f == "-")?;
        let (root, mount_point, fs_type) = (fields.get(3)?, fields.get(4)?, fields.get(sep + 1)?);
        let v2 = match *fs_type {
            "cgroup2" => true,
            "cgroup" => false,
            _ => return None,
        };
        Some(CgroupMount {
            root: unescape_mountinfo(root),
            mount_point: PathBuf::from(unescape_mountinfo(mount_point)),
            v2,
            options: fields.get(sep + 3).copied().unwrap_or_default().to_owned(),
        })
    })
}

/// Parses `/proc/self/mountinfo` into the cgroup mounts.
pub fn parse_mountinfo(content: &str) -> CgroupMounts {
    let mut mounts = CgroupMounts::default();
    for mount in cgroup_mount_entries(content) {
        if !mount.v2 {
            mounts.v1.push((mount.mount_point, mount.options));
            continue;
        }
        // The mount's root within the hierarchy: "/" for the whole of it; a
        // container's own /sys/fs/cgroup shows only its subtree. The first
        // mount of the whole cgroup2 hierarchy wins (later ones are bind
        // mounts of it, e.g. into containers); a subtree only if nothing
        // better is mounted.
        let whole = mount.root == "/";
        if mounts.v2.is_none() || (whole && !mounts.v2_whole) {
            mounts.v2 = Some(mount.mount_point);
            mounts.v2_whole = whole;
        }
    }
    mounts
}

/// Reads the mounts of this process's mount namespace.
pub fn read_cgroup_mounts() -> std::io::Result<CgroupMounts> {
    Ok(parse_mountinfo(&std::fs::read_to_string(
        "/proc/self/mountinfo",
    )?))
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape_mountinfo(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        // `\ooo` is a byte only up to `\377`; anything above is kept as text
        // (the kernel never writes it; a crafted mount point might).
        let octal = (bytes[i] == b'\\' && i + 3 < bytes.len())
            .then(|| &bytes[i + 1..i + 4])
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)))
            .and_then(|d| {
                u8::try_from(
                    u32::from(d[0] - b'0') * 64
                        + u32::from(d[1] - b'0') * 8
                        + u32::from(d[2] - b'0'),
                )
                .ok()
            });
        if let Some(value) = octal {
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads and parses `/proc/<pid>/cgroup` under `proc_root`.
pub fn read_process_identity(proc_root: &Path, pid: u32) -> std::io::Result<CgroupIdentity> {
    let content = std::fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup"))?;
    Ok(parse_proc_cgroup(&content))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f1c2b3a5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7a8";
    const UID: &str = "0e3a6c39-5b0d-4f9b-9d86-6a3a3a0c9f11";

    fn uid_underscored() -> String {
        UID.replace('-', "_")
    }

    fn assert_identity(content: &str, runtime: Runtime) {
        let identity = parse_proc_cgroup(content);
        assert_eq!(
            identity.container_id.as_ref().map(ContainerId::as_str),
            Some(ID),
            "container id from {content:?}"
        );
        assert_eq!(identity.runtime, Some(runtime), "runtime from {content:?}");
    }

    #[test]
    fn containerd_with_systemd_driver_on_cgroup_v2() {
        let content = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{ID}.scope\n",
            uid_underscored()
        );
        assert_identity(&content, Runtime::Containerd);
        assert_eq!(
            parse_proc_cgroup(&content).pod_uid.as_deref(),
            Some(UID),
            "pod uid with dashes restored"
        );
    }

    #[test]
    fn containerd_with_cgroupfs_driver_on_cgroup_v1() {
        let content = format!(
            "12:pids:/kubepods/besteffort/pod{UID}/{ID}\n11:memory:/kubepods/besteffort/pod{UID}/{ID}\n1:name=systemd:/kubepods/besteffort/pod{UID}/{ID}\n"
        );
        assert_identity(&content, Runtime::Unknown);
        assert_eq!(parse_proc_cgroup(&content).pod_uid.as_deref(), Some(UID));
    }

    #[test]
    fn crio_with_systemd_driver() {
        let content = format!(
            "0::/kubepods.slice/kubepods-pod{}.slice/crio-{ID}.scope\n",
            uid_underscored()
        );
        assert_identity(&content, Runtime::CriO);
    }

    #[test]
    fn crio_with_cgroupfs_driver() {
        assert_identity(&format!("0::/kubepods/pod{UID}/crio-{ID}\n"), Runtime::CriO);
    }

    #[test]
    fn crio_conmon_is_not_the_container() {
        let content = format!(
            "0::/kubepods.slice/kubepods-pod{}.slice/crio-conmon-{ID}.scope\n",
            uid_underscored()
        );
        let identity = parse_proc_cgroup(&content);
        assert_eq!(
            identity.container_id, None,
            "conmon must not be claimed as the workload"
        );
        assert_eq!(
            identity.pod_uid.as_deref(),
            Some(UID),
            "but it still belongs to the pod"
        );
    }

    #[test]
    fn docker_with_systemd_and_cgroupfs_drivers() {
        assert_identity(
            &format!("0::/system.slice/docker-{ID}.scope\n"),
            Runtime::Docker,
        );
        assert_identity(&format!("4:memory:/docker/{ID}\n"), Runtime::Unknown);
    }

    #[test]
    fn hybrid_host_where_only_the_unified_hierarchy_carries_the_container() {
        // What our test sandbox creates on a hybrid host: v1 hierarchies at
        // their roots, the v2 line pointing into the pod-like cgroup.
        let content = format!(
            "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/377115ef\n0::/ferrotel-e2e/kubepods-pod{}.slice/cri-containerd-{ID}.scope\n",
            uid_underscored()
        );
        assert_identity(&content, Runtime::Containerd);
    }

    #[test]
    fn nested_cgroups_under_the_container_still_resolve() {
        assert_identity(
            &format!("0::/kubepods.slice/cri-containerd-{ID}.scope/init.scope\n"),
            Runtime::Containerd,
        );
    }

    #[test]
    fn host_processes_have_no_container() {
        let identity = parse_proc_cgroup(
            "0::/init.scope\n1:name=systemd:/user.slice/user-0.slice/session-1.scope\n",
        );
        assert!(identity.is_empty(), "host process resolved to {identity:?}");
    }

    #[test]
    fn short_or_non_hex_ids_are_rejected() {
        assert_eq!(parse_cgroup_path("/docker/abc123").container_id, None);
        assert_eq!(
            parse_cgroup_path(&format!("/docker/{}", "z".repeat(64))).container_id,
            None
        );
    }

    #[test]
    fn status_container_ids_name_their_runtime() {
        let (runtime, id) =
            ContainerId::from_status(&format!("containerd://{ID}")).expect("containerd id parses");
        assert_eq!((runtime, id.as_str()), (Runtime::Containerd, ID));
        assert_eq!(
            ContainerId::from_status(&format!("cri-o://{ID}")).map(|(r, _)| r),
            Some(Runtime::CriO)
        );
        assert_eq!(
            ContainerId::from_status(&format!("docker://{ID}")).map(|(r, _)| r),
            Some(Runtime::Docker)
        );
        assert_eq!(
            ContainerId::from_status(ID),
            None,
            "an id without scheme is not a status containerID"
        );
    }

    #[test]
    fn status_and_cgroup_ids_compare_equal_across_case() {
        let (_, from_status) =
            ContainerId::from_status(&format!("containerd://{}", ID.to_uppercase()))
                .expect("parses");
        let from_cgroup = parse_cgroup_path(&format!("/cri-containerd-{ID}.scope")).container_id;
        assert_eq!(Some(from_status), from_cgroup);
    }

    const HYBRID_MOUNTINFO: &str = "\
22 28 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn hybrid_mountinfo_finds_the_unified_mount() {
        let mounts = parse_mountinfo(HYBRID_MOUNTINFO);
        assert_eq!(
            mounts.v2.as_deref(),
            Some(Path::new("/sys/fs/cgroup/unified"))
        );
        assert_eq!(mounts.v1.len(), 2, "two v1 hierarchies: {mounts:?}");
        assert!(mounts.is_hybrid());
    }

    #[test]
    fn the_whole_cgroup2_hierarchy_wins_over_a_containers_own_subtree() {
        // A probe container: its own cgroupfs view first, the host's
        // hierarchy bind-mounted under /host later.
        let mounts = parse_mountinfo(
            "800 790 0:38 /kubepods/besteffort/podx/ctr /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n\
             810 790 0:38 / /host/sys/fs/cgroup/unified ro - cgroup2 cgroup2 rw\n",
        );
        assert_eq!(
            mounts.v2.as_deref(),
            Some(Path::new("/host/sys/fs/cgroup/unified"))
        );
        assert!(mounts.v2_whole);
    }

    #[test]
    fn pure_v2_mountinfo_with_optional_fields() {
        let mounts = parse_mountinfo(
            "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 master:1 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n",
        );
        assert_eq!(mounts.v2.as_deref(), Some(Path::new("/sys/fs/cgroup")));
        assert!(!mounts.is_hybrid());
    }

    #[test]
    fn octal_escapes_above_a_byte_are_kept_as_text() {
        // Found by fuzzing: `\777` overflowed the byte it was decoded into.
        let mounts = parse_mountinfo("41 31 0:38 / /mnt/a\\777b rw - cgroup2 cgroup2 rw\n");
        assert_eq!(mounts.v2.as_deref(), Some(Path::new("/mnt/a\\777b")));
    }

    #[test]
    fn mount_points_with_escaped_spaces_are_unescaped() {
        let mounts = parse_mountinfo("41 31 0:38 / /mnt/my\\040cgroup rw - cgroup2 cgroup2 rw\n");
        assert_eq!(mounts.v2.as_deref(), Some(Path::new("/mnt/my cgroup")));
    }

    #[test]
    fn v1_only_mountinfo_has_no_v2_mount() {
        let mounts =
            parse_mountinfo("32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n");
        assert_eq!(mounts.v2, None);
    }
}
