//! The host's cgroup hierarchies, which pod resources and pod network
//! counters read, as a probe pod can reach them.
//!
//! A container's own mounts do not show them: runc bind-mounts the
//! container's own cgroup directory onto each v1 hierarchy's mount point
//! (mountinfo's root field is that directory, not `/`), and on a hybrid host
//! mounts no cgroup2 at all — measured on this platform's real node. With
//! `hostPID` the host's init (`/proc/1/root`) sees them, where the kernel
//! lets this process read it ([`Hierarchies::read`] tries it first); some
//! hosts refuse even root that access (this platform's init does). So at
//! startup, before any thread exists, [`ensure`] checks what the probe can
//! reach and, when neither view shows the hierarchies, mounts them in a
//! mount namespace of its own, like [`crate::tracefs`]: a tmpfs on
//! `/sys/fs/cgroup`, the cgroup2 hierarchy on `unified` and each v1
//! hierarchy (by its controllers) on a directory of its own, read-only. The
//! probe shares the host's cgroup namespace, so each shows the whole
//! hierarchy; the host's mount table never changes. Needs CAP_SYS_ADMIN.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use ferrotel_parse::procfs::cgroup::{CgroupMount, cgroup_mount_entries};

use super::resources::cgroup::Hierarchies;

/// Where the probe mounts the hierarchies in its own mount namespace.
pub const PRIVATE_ROOT: &str = "/sys/fs/cgroup";

/// How the probe reaches the host's hierarchies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostCgroups {
    /// Its own mounts show them whole (standalone on the host, or a pod
    /// with the host's cgroup mounts).
    Visible,
    /// Through the host's init, `/proc/1/root`.
    HostRoot,
    /// Mounted in its own mount namespace: these mount points (a hierarchy
    /// that could not be mounted is missing, and logged).
    MountedPrivately(Vec<PathBuf>),
}

/// The hierarchies are hidden and the probe could not mount them.
#[derive(Debug, thiserror::Error)]
#[error(
    "the host's cgroup hierarchies are not visible to the probe (a container's cgroup mounts show only its own cgroup) and it cannot mount them in its own mount namespace: {step} failed ({source}); pod resources and pod network counters need them. Grant the probe CAP_SYS_ADMIN (the DaemonSet the operator renders does), or turn views.podResources and views.tcpHealth off"
)]
pub struct HostCgroupsError {
    step: String,
    #[source]
    source: std::io::Error,
}

/// Whether these mounts show the hierarchies whole: each mounted at its
/// root, and a cgroup2 among them (cgroup_skb programs attach to it).
pub fn whole(mounts: &[CgroupMount]) -> bool {
    mounts.iter().any(|m| m.v2) && mounts.iter().all(|m| m.root == "/")
}

/// cgroup v1 super options that are not controllers (cgroups(7)).
const NOT_CONTROLLERS: [&str; 9] = [
    "rw",
    "ro",
    "none",
    "xattr",
    "noprefix",
    "clone_children",
    "cpuset_v2_mode",
    "favordynmods",
    "nofavordynmods",
];

/// The v1 controllers a mount's super options name (`rw,cpu,cpuacct` →
/// `cpu,cpuacct`); named hierarchies without controllers (`name=systemd`)
/// give none.
fn v1_controllers(options: &str) -> Option<String> {
    let controllers: Vec<&str> = options
        .split(',')
        .filter(|o| !NOT_CONTROLLERS.contains(o) && !o.contains('='))
        .collect();
    (!controllers.is_empty()).then(|| controllers.join(","))
}

/// Finds the host's hierarchies, or mounts them in a private mount
/// namespace (see the module docs). Call while the process has a single
/// thread.
pub fn ensure() -> Result<HostCgroups, HostCgroupsError> {
    let own =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(|source| HostCgroupsError {
            step: "reading /proc/self/mountinfo".into(),
            source,
        })?;
    let mounts: Vec<CgroupMount> = cgroup_mount_entries(&own).collect();
    if whole(&mounts) {
        return Ok(HostCgroups::Visible);
    }
    if Hierarchies::host().is_some() {
        return Ok(HostCgroups::HostRoot);
    }
    mount_privately(&mounts)
}

fn mount_privately(mounts: &[CgroupMount]) -> Result<HostCgroups, HostCgroupsError> {
    use rustix::mount::{MountFlags, mount};
    let failed = |step: String| {
        move |e: rustix::io::Errno| HostCgroupsError {
            step,
            source: e.into(),
        }
    };
    crate::tracefs::enter_private_mount_namespace()
        .map_err(|(step, e)| failed(step.to_owned())(e))?;
    let flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    mount(
        "ferrotel-cgroups",
        PRIVATE_ROOT,
        "tmpfs",
        flags,
        c"mode=755",
    )
    .map_err(failed(format!("mount -t tmpfs on {PRIVATE_ROOT}")))?;
    let root = Path::new(PRIVATE_ROOT);
    let mut mounted = Vec::new();
    let unified = root.join("unified");
    std::fs::create_dir(&unified).map_err(|source| HostCgroupsError {
        step: format!("mkdir {}", unified.display()),
        source,
    })?;
    mount(
        "cgroup2",
        &unified,
        "cgroup2",
        flags | MountFlags::RDONLY,
        None,
    )
    .map_err(failed(format!("mount -t cgroup2 on {}", unified.display())))?;
    mounted.push(unified);
    let mut v1: Vec<String> = mounts
        .iter()
        .filter(|m| !m.v2)
        .filter_map(|m| v1_controllers(&m.options))
        .collect();
    v1.sort();
    v1.dedup();
    for controllers in v1 {
        let dir = root.join(&controllers);
        let data = CString::new(controllers.as_str()).expect("mountinfo fields have no NUL");
        let result = std::fs::create_dir(&dir)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                mount(
                    "cgroup",
                    &dir,
                    "cgroup",
                    flags | MountFlags::RDONLY,
                    data.as_c_str(),
                )
                .map_err(|e| e.to_string())
            });
        match result {
            Ok(()) => mounted.push(dir),
            // One hierarchy short: the counters it holds are missing.
            Err(error) => tracing::warn!(
                %controllers,
                %error,
                "Cannot mount this cgroup v1 hierarchy; pod counters it holds are unavailable"
            ),
        }
    }
    Ok(HostCgroups::MountedPrivately(mounted))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mounts(text: &str) -> Vec<CgroupMount> {
        cgroup_mount_entries(text).collect()
    }

    #[test]
    fn a_containers_bind_mounts_are_not_the_whole_hierarchies() {
        let host = "\
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw";
        assert!(whole(&mounts(host)));
        let container = "\
492 491 0:29 /kubepods/besteffort/pod1/c1 /sys/fs/cgroup/cpu ro,relatime - cgroup cgroup rw,cpu";
        assert!(!whole(&mounts(container)), "bound below the root");
        let v1_only = "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu";
        assert!(!whole(&mounts(v1_only)), "no cgroup2 to attach to");
    }

    #[test]
    fn v1_hierarchies_are_named_by_their_controllers() {
        assert_eq!(
            v1_controllers("rw,cpu,cpuacct").as_deref(),
            Some("cpu,cpuacct")
        );
        assert_eq!(v1_controllers("rw,memory").as_deref(), Some("memory"));
        assert_eq!(v1_controllers("rw,name=systemd"), None);
        assert_eq!(
            v1_controllers("rw,xattr,release_agent=/x,name=systemd"),
            None
        );
        assert_eq!(
            v1_controllers("rw,noprefix,cpuset").as_deref(),
            Some("cpuset")
        );
    }

    #[test]
    fn the_error_names_the_step_and_both_fixes() {
        let e = HostCgroupsError {
            step: "unshare(CLONE_NEWNS)".into(),
            source: std::io::Error::from_raw_os_error(1),
        };
        let text = e.to_string();
        assert!(text.contains("unshare(CLONE_NEWNS) failed"), "{text}");
        assert!(text.contains("CAP_SYS_ADMIN"), "{text}");
        assert!(text.contains("views.podResources"), "{text}");
    }
}
