//! tracefs, which syscall tracepoints need and a fresh node may not have.
//!
//! aya attaches a tracepoint program by reading the tracepoint's id from
//! `<tracefs>/events/<category>/<name>/id`, and looks for tracefs only at
//! `/sys/kernel/tracing` and `/sys/kernel/debug/tracing`. systemd mounts it
//! at boot, but a host without systemd (a minimal VM, some container-optimised
//! OSes) has only the empty mount point, and a probe pod sees the host's
//! `/sys/kernel/tracing` only if the host mounted it.
//!
//! So at startup, before any thread exists, [`ensure`] looks for tracefs and,
//! when it is absent, mounts it in a mount namespace of the probe's own:
//! `unshare(CLONE_NEWNS)`, every mount made a slave of the host's (so nothing
//! we mount propagates back, while the host's later mounts still reach us),
//! then `mount -t tracefs` on `/sys/kernel/tracing`. The host's mount table
//! never changes, and the mount disappears with the probe. Both steps need
//! CAP_SYS_ADMIN; without it the error says what is missing and both fixes.
//!
//! The namespace is per thread until threads exist, which is why this runs
//! first in `main`, before the tokio runtime starts any thread.

use std::path::{Path, PathBuf};

/// Where tracefs is mounted when the probe mounts it itself (the path aya
/// looks at first).
pub const TRACEFS_PATH: &str = "/sys/kernel/tracing";
/// The places aya looks for tracefs, in its order.
const CANDIDATES: [&str; 2] = [TRACEFS_PATH, "/sys/kernel/debug/tracing"];

/// How the probe got tracefs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tracefs {
    /// Already mounted (by the host, or a hostPath volume of a host that has it).
    Found(PathBuf),
    /// Mounted by the probe in its own mount namespace.
    MountedPrivately(PathBuf),
}

/// tracefs is absent and the probe could not mount it.
#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error(
        "tracefs is not mounted (/sys/kernel/tracing and /sys/kernel/debug/tracing are empty) and the probe cannot mount it in its own mount namespace: {step} failed ({source}); the tracepoint programs need it. Either grant the probe CAP_SYS_ADMIN (the DaemonSet the operator renders does), or mount tracefs on the node: `mount -t tracefs tracefs /sys/kernel/tracing` (systemd does this at boot)"
    )]
    CannotMount {
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// A mounted tracefs has entries (`events/`, `trace`, ...); the bare mount
/// point the kernel creates is empty. The same test aya uses.
fn has_tracefs(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some())
}

/// The first of aya's candidate paths that holds a tracefs.
pub fn find() -> Option<PathBuf> {
    CANDIDATES
        .iter()
        .map(Path::new)
        .find(|dir| has_tracefs(dir))
        .map(Path::to_path_buf)
}

/// Finds tracefs, or mounts it in a private mount namespace (see the module
/// docs). Call while the process has a single thread.
pub fn ensure() -> Result<Tracefs, TracefsError> {
    if let Some(found) = find() {
        return Ok(Tracefs::Found(found));
    }
    use rustix::mount::{MountFlags, mount};
    let failed = |step: &'static str| {
        move |e: rustix::io::Errno| TracefsError::CannotMount {
            step,
            source: e.into(),
        }
    };
    enter_private_mount_namespace().map_err(|(step, e)| failed(step)(e))?;
    mount(
        "tracefs",
        TRACEFS_PATH,
        "tracefs",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        None::<&std::ffi::CStr>,
    )
    .map_err(failed("mount -t tracefs tracefs /sys/kernel/tracing"))?;
    if has_tracefs(Path::new(TRACEFS_PATH)) {
        Ok(Tracefs::MountedPrivately(PathBuf::from(TRACEFS_PATH)))
    } else {
        Err(TracefsError::CannotMount {
            step: "reading the freshly mounted /sys/kernel/tracing",
            source: std::io::Error::other("the mount is empty"),
        })
    }
}

/// Gives this process a mount namespace of its own whose mounts are slaves
/// of the host's: what it mounts stays private, the host's later mounts
/// still reach it. Call while the process has a single thread (the
/// namespace is per thread until threads exist); needs CAP_SYS_ADMIN. On
/// failure, the step that failed.
pub fn enter_private_mount_namespace() -> Result<(), (&'static str, rustix::io::Errno)> {
    use rustix::mount::{MountPropagationFlags, mount_change};
    use rustix::thread::{UnshareFlags, unshare_unsafe};
    // SAFETY: CLONE_NEWNS only gives this thread (the only one: see the
    // contract above) its own copy of the mount table and fs_struct; it does
    // not touch memory or file descriptors that Rust code relies on, which
    // is what makes unsharing e.g. CLONE_FILES or CLONE_VM unsafe.
    unsafe { unshare_unsafe(UnshareFlags::NEWNS) }.map_err(|e| ("unshare(CLONE_NEWNS)", e))?;
    mount_change(
        "/",
        MountPropagationFlags::DOWNSTREAM | MountPropagationFlags::REC,
    )
    .map_err(|e| ("making / a recursive slave mount", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_mount_point_is_not_tracefs() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(!has_tracefs(dir.path()), "an empty directory is no tracefs");
        std::fs::write(dir.path().join("trace"), "").expect("write");
        assert!(has_tracefs(dir.path()), "a directory with entries counts");
        assert!(
            !has_tracefs(&dir.path().join("missing")),
            "a missing path is no tracefs"
        );
    }

    #[test]
    fn the_error_names_both_fixes() {
        let e = TracefsError::CannotMount {
            step: "unshare(CLONE_NEWNS)",
            source: std::io::Error::from_raw_os_error(1),
        };
        let text = e.to_string();
        assert!(text.contains("CAP_SYS_ADMIN"), "{text}");
        assert!(
            text.contains("mount -t tracefs tracefs /sys/kernel/tracing"),
            "{text}"
        );
        assert!(text.contains("unshare(CLONE_NEWNS) failed"), "{text}");
    }
}
