//! Loading the propagation object next to a language set, attaching its
//! sk_msg program to the sockhash and its sockops program to the cgroup of
//! every traced container, and reading what it counted.

// Load errors carry aya's (large) errors unboxed: they happen once.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use aya::Ebpf;
use aya::maps::{MapData, PerCpuArray, SockHash};
use aya::programs::links::CgroupAttachMode;
use aya::programs::sock_ops::SockOpsLinkId;
use aya::programs::{SkMsg, SockOps};
use ferrotel_probe_ebpf::contract::{globals, maps, propagation as contract};
use ferrotel_probe_ebpf::propagation::{COUNTERS, origin, outcome};
use tracing::{debug, info};

use super::{Served, Settings, shared_maps};
use crate::driver::Refusal;
use crate::targets::kubernetes::cgroup::read_cgroup_mounts;

/// Why propagation could not start on this node; `reason` is the metric
/// label, the message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum PropagationError {
    #[error(
        "loading the propagation program set failed: {source}; it needs CAP_NET_ADMIN (a sockhash) besides CAP_BPF, and a kernel with sockops and sk_msg (Linux >= 5.10)"
    )]
    Load {
        reason: &'static str,
        #[source]
        source: aya::EbpfError,
    },
    /// The kernel's BTF, which the object's CO-RE reads are fitted to.
    #[error("{0}")]
    Btf(#[source] crate::ebpf::EbpfError),
    #[error("the propagation object has no {what} {name:?}; rebuild the probe")]
    Missing {
        what: &'static str,
        name: &'static str,
    },
    #[error(
        "verifying or attaching {name} failed: {source}; the kernel may lack the sk_msg helpers (bpf_msg_push_data, Linux >= 4.20)"
    )]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error(
        "the probe cannot reach the cgroup v2 hierarchy: mounting one of its own failed ({mount_error}) and none is mounted whole in its view (/proc/self/mountinfo); sockops attach to the traced containers' cgroup v2 directories. Grant the probe CAP_SYS_ADMIN (the DaemonSet the operator renders has it) on a kernel with cgroup v2 (hybrid hosts are fine)"
    )]
    NoCgroup2 { mount_error: std::io::Error },
    #[error(
        "{dir:?} is not on a BPF filesystem; propagation pins the maps it shares there: mount the host's /sys/fs/bpf into the probe, or set propagation.pinDir in the probe config to a directory on a bpffs"
    )]
    NoBpffs { dir: PathBuf },
}

impl PropagationError {
    /// Bounded label for `ferrotel_probe_propagation_refused_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Load { reason, .. } => reason,
            Self::Btf(_) => "no_btf",
            Self::Missing { .. } => "object_mismatch",
            Self::Program { .. } => "kernel_unsupported",
            Self::Map { .. } => "map_error",
            Self::NoCgroup2 { .. } => "no_cgroup2",
            Self::NoBpffs { .. } => "no_bpffs",
        }
    }
}

/// One cgroup the sockops program is attached to.
#[derive(Debug)]
struct Attachment {
    link: SockOpsLinkId,
    /// Traced processes in it.
    pids: usize,
}

/// The loaded propagation object of one language set.
pub struct Injector {
    ebpf: Ebpf,
    /// The sk_msg attachment lives as long as the map; sockets the program
    /// lets go of are removed from it ([`Injector::release`]).
    socks: SockHash<MapData, u64>,
    counters: PerCpuArray<MapData, u64>,
    cgroup2: Cgroup2,
    cgroups: HashMap<PathBuf, Attachment>,
    by_pid: HashMap<u32, PathBuf>,
}

/// Where the traced containers' cgroup v2 directories are opened from.
#[derive(Debug)]
pub enum Cgroup2 {
    /// A cgroup2 mount of the probe's own, detached (`fsopen` + `fsmount`):
    /// it has no mount point and appears in no mount table, lives as long
    /// as this fd, and shows the hierarchy from the probe's cgroup
    /// namespace root — the whole of it when the probe shares the host's
    /// cgroup namespace. A probe pod sees only its own container's cgroup
    /// in its `/sys/fs/cgroup`, so this is how it reaches the others
    /// without a hostPath volume. Needs CAP_SYS_ADMIN.
    Detached(OwnedFd),
    /// The whole hierarchy, mounted in the probe's view (a probe run on the
    /// host, without CAP_SYS_ADMIN).
    Mounted(PathBuf),
}

impl Cgroup2 {
    /// A detached mount of its own, else the whole hierarchy as mounted in
    /// the probe's view.
    pub fn find() -> Result<Self, PropagationError> {
        let mount_error = match Self::detached() {
            Ok(root) => return Ok(root),
            Err(e) => e,
        };
        read_cgroup_mounts()
            .ok()
            .filter(|m| m.v2_whole)
            .and_then(|m| m.v2)
            .map(Self::Mounted)
            .ok_or(PropagationError::NoCgroup2 { mount_error })
    }

    /// Mounts cgroup2 detached (see [`Cgroup2::Detached`]).
    pub fn detached() -> std::io::Result<Self> {
        use rustix::mount::{
            FsMountFlags, FsOpenFlags, MountAttrFlags, fsconfig_create, fsmount, fsopen,
        };
        let fs = fsopen("cgroup2", FsOpenFlags::FSOPEN_CLOEXEC)?;
        fsconfig_create(&fs)?;
        let root = fsmount(
            &fs,
            FsMountFlags::FSMOUNT_CLOEXEC,
            MountAttrFlags::MOUNT_ATTR_NOSUID
                | MountAttrFlags::MOUNT_ATTR_NODEV
                | MountAttrFlags::MOUNT_ATTR_NOEXEC,
        )?;
        Ok(Self::Detached(root))
    }

    /// Opens the directory `relative` (to the hierarchy's root) for
    /// attaching.
    pub fn open(&self, relative: &Path) -> std::io::Result<OwnedFd> {
        use rustix::fs::{Mode, OFlags, open, openat};
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        Ok(match self {
            Self::Detached(root) => openat(root, relative, flags, Mode::empty())?,
            Self::Mounted(root) => open(root.join(relative), flags, Mode::empty())?,
        })
    }
}

impl std::fmt::Display for Cgroup2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Detached(_) => f.write_str("a cgroup2 mount of the probe's own"),
            Self::Mounted(root) => write!(f, "{}", root.display()),
        }
    }
}

impl std::fmt::Debug for Injector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Injector")
            .field("cgroup2", &self.cgroup2)
            .field("cgroups", &self.cgroups.len())
            .finish_non_exhaustive()
    }
}

/// What the kernel counted, as running totals.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Outgoing request heads by outcome label.
    pub outcomes: Vec<(&'static str, u64)>,
    /// Server requests by where their parent came from.
    pub origins: Vec<(&'static str, u64)>,
}

impl Injector {
    /// Loads the propagation object for the language set `served`, which
    /// was loaded with [`Settings::language_tuning`] (its shared maps are
    /// pinned in the share directory, unpinned here whatever happens), and
    /// attaches sk_msg to the sockhash. `wakeup_bytes` is the set's ring
    /// wake-up threshold.
    pub fn load(
        settings: &Settings,
        served: Served,
        wakeup_bytes: u64,
    ) -> Result<Self, PropagationError> {
        let result = Self::load_shared(settings, served, wakeup_bytes);
        // The maps live on in the two objects; a pin would outlive them.
        super::remove_pins(&settings.share_dir);
        result
    }

    fn load_shared(
        settings: &Settings,
        served: Served,
        wakeup_bytes: u64,
    ) -> Result<Self, PropagationError> {
        let cgroup2 = Cgroup2::find()?;
        let pins: Vec<(&'static str, PathBuf)> = shared_maps(served)
            .into_iter()
            .map(|name| (name, settings.share_dir.join(name)))
            .collect();
        let assigns = u32::from(served == Served::Sockets);
        let mut btf = None;
        let mut loader =
            crate::ebpf::loader_for("propagation", ferrotel_probe_ebpf::PROPAGATION, &mut btf)
                .map_err(PropagationError::Btf)?;
        for (name, path) in &pins {
            loader.map_pin_path(name, path.as_path());
        }
        if settings.join {
            loader.map_pin_path(maps::PROP_JOINS, settings.joins_pin.as_path());
        } else {
            loader.map_max_entries(maps::PROP_JOINS, 1);
        }
        match served {
            Served::Go => loader.map_max_entries(maps::INFLIGHT, 1),
            Served::Sockets => loader.map_max_entries(maps::PROP_GOROUTINES, 1),
        };
        // Declared by the shared header, used by the language sets only.
        loader.map_max_entries(maps::PROP_CARRY_SCRATCH, 1);
        // Shared with the language set, which sized them the same way.
        crate::ebpf::size_claimed_hints(&mut loader);
        let knobs = settings.globals();
        for (name, value) in &knobs {
            match value {
                crate::ebpf::Global::U32(v) => loader.override_global(name, v, true),
                crate::ebpf::Global::U64(v) => loader.override_global(name, v, true),
            };
        }
        loader.override_global(globals::WAKEUP_BYTES, &wakeup_bytes, true);
        loader.override_global(globals::PROP_SENDER_ASSIGNS_SPAN, &assigns, true);
        loader.override_global(globals::PROP_SYSCALL_INFLIGHT, &assigns, true);
        let loaded = loader.load(ferrotel_probe_ebpf::PROPAGATION);
        crate::ebpf::drop_loader(loader);
        drop(btf);
        let mut ebpf = loaded.map_err(|source| PropagationError::Load {
            reason: load_reason(&source),
            source,
        })?;
        crate::ebpf::log_memory("propagation", "loaded");
        let socks: SockHash<MapData, u64> = take_map(&mut ebpf, maps::PROP_SOCKS)?;
        let counters: PerCpuArray<MapData, u64> = take_map(&mut ebpf, maps::PROP_COUNTERS)?;
        let program_err = |name| move |source| PropagationError::Program { name, source };
        let msg: &mut SkMsg = program(&mut ebpf, contract::MSG)?;
        msg.load().map_err(program_err(contract::MSG))?;
        msg.attach(socks.fd()).map_err(program_err(contract::MSG))?;
        let ops: &mut SockOps = program(&mut ebpf, contract::SOCKOPS)?;
        ops.load().map_err(program_err(contract::SOCKOPS))?;
        info!(
            cgroup2 = %cgroup2,
            inject = settings.inject,
            join = settings.join,
            formats = settings.formats,
            "Loaded propagation (sockops + sk_msg)"
        );
        Ok(Self {
            ebpf,
            socks,
            counters,
            cgroup2,
            cgroups: HashMap::new(),
            by_pid: HashMap::new(),
        })
    }

    /// Starts carrying context for the TCP connections process `pid` opens
    /// from now on: the sockops program is attached to its cgroup v2
    /// directory (once per directory).
    pub fn add(&mut self, pid: u32) -> Result<(), Refusal> {
        if self.by_pid.contains_key(&pid) {
            return Ok(());
        }
        let dir = cgroup_dir(pid)?;
        if let Some(attachment) = self.cgroups.get_mut(&dir) {
            attachment.pids += 1;
        } else {
            let file = self.cgroup2.open(&dir).map_err(|e| {
                Refusal::new(
                    "cgroup_unreadable",
                    anyhow::anyhow!(
                        "opening cgroup {} of pid {pid} in {}: {e}",
                        dir.display(),
                        self.cgroup2
                    ),
                )
            })?;
            let ops: &mut SockOps = program(&mut self.ebpf, contract::SOCKOPS)
                .map_err(|e| Refusal::new("object_mismatch", e))?;
            // Single: sockops programs attached in multi mode do not run
            // on the kernels we measured (docs/propagation.md). A second
            // probe attaching to the same cgroup replaces this one there.
            let link = ops.attach(&file, CgroupAttachMode::Single).map_err(|e| {
                Refusal::new(
                    "cgroup_attach_failed",
                    anyhow::Error::new(e).context(format!(
                        "attaching sockops to cgroup {} (another program may hold it exclusively)",
                        dir.display()
                    )),
                )
            })?;
            debug!(pid, cgroup = %dir.display(), "Attached propagation sockops");
            self.cgroups
                .insert(dir.clone(), Attachment { link, pids: 1 });
        }
        self.by_pid.insert(pid, dir);
        Ok(())
    }

    /// Stops for `pid`; the cgroup's attachment goes with its last process.
    pub fn remove(&mut self, pid: u32) {
        let Some(dir) = self.by_pid.remove(&pid) else {
            return;
        };
        let Some(attachment) = self.cgroups.get_mut(&dir) else {
            return;
        };
        attachment.pids -= 1;
        if attachment.pids == 0
            && let Some(attachment) = self.cgroups.remove(&dir)
            && let Ok(ops) = program::<SockOps>(&mut self.ebpf, contract::SOCKOPS)
        {
            let _ = ops.detach(attachment.link);
            debug!(cgroup = %dir.display(), "Detached propagation sockops");
        }
    }

    /// Takes socket `cookie` out of the sockhash: the kernel then gives it
    /// back its own send and receive paths. Gone already (closed) is fine.
    pub fn release(&mut self, cookie: u64) {
        let _ = self.socks.remove(&cookie);
    }

    /// cgroups the sockops program is attached to.
    pub fn cgroups(&self) -> usize {
        self.cgroups.len()
    }

    /// The kernel's running totals, summed over CPUs.
    pub fn counts(&self) -> Counts {
        let mut totals = [0u64; COUNTERS as usize];
        for (i, total) in totals.iter_mut().enumerate() {
            if let Ok(values) = self.counters.get(&(i as u32), 0) {
                *total = values.iter().sum();
            }
        }
        Counts {
            outcomes: (0..outcome::COUNT)
                .map(|o| (outcome::name(o), totals[o as usize]))
                .collect(),
            origins: (0..origin::COUNT)
                .map(|o| (origin::name(o), totals[(outcome::COUNT + o) as usize]))
                .collect(),
        }
    }
}

/// The bounded reason of a load failure.
fn load_reason(error: &aya::EbpfError) -> &'static str {
    let text = format!("{error:?}");
    if text.contains("PermissionDenied") || text.contains("EPERM") || text.contains("os error 1)") {
        "no_net_admin"
    } else {
        "load_failed"
    }
}

fn take_map<M>(ebpf: &mut Ebpf, name: &'static str) -> Result<M, PropagationError>
where
    M: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or(PropagationError::Missing { what: "map", name })?;
    M::try_from(map).map_err(|source| PropagationError::Map { name, source })
}

fn program<'a, P>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut P, PropagationError>
where
    for<'b> &'b mut P: TryFrom<&'b mut aya::programs::Program>,
{
    ebpf.program_mut(name)
        .and_then(|p| p.try_into().ok())
        .ok_or(PropagationError::Missing {
            what: "program",
            name,
        })
}

/// The cgroup v2 directory of `pid`, relative to the hierarchy's root.
fn cgroup_dir(pid: u32) -> Result<PathBuf, Refusal> {
    let content = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).map_err(|e| {
        Refusal::new(
            "process_gone",
            anyhow::anyhow!("reading /proc/{pid}/cgroup: {e}"),
        )
    })?;
    let path = unified_path(&content).ok_or_else(|| {
        Refusal::new(
            "no_cgroup2",
            anyhow::anyhow!(
                "pid {pid} has no cgroup v2 path in /proc/{pid}/cgroup (a cgroup v1 only host?); propagation attaches to cgroup v2 directories"
            ),
        )
    })?;
    match classify(path) {
        CgroupPath::Root => Err(Refusal::new(
            "root_cgroup",
            anyhow::anyhow!(
                "pid {pid} is in the root cgroup; propagation attaches per container and would otherwise touch every process on the node"
            ),
        )),
        CgroupPath::Outside => Err(Refusal::new(
            "cgroup_namespace",
            anyhow::anyhow!(
                "pid {pid}'s cgroup {path:?} is outside this probe's cgroup namespace; run the probe with the host's cgroup namespace"
            ),
        )),
        CgroupPath::Relative(relative) => Ok(PathBuf::from(relative)),
    }
}

/// The `0::<path>` line of `/proc/<pid>/cgroup`.
fn unified_path(content: &str) -> Option<&str> {
    content.lines().find_map(|line| line.strip_prefix("0::"))
}

#[derive(Debug, PartialEq, Eq)]
enum CgroupPath<'a> {
    Root,
    /// Above this process's cgroup namespace root (`/../..`).
    Outside,
    Relative(&'a str),
}

fn classify(path: &str) -> CgroupPath<'_> {
    let relative = path.trim_start_matches('/');
    if relative.is_empty() {
        CgroupPath::Root
    } else if relative.split('/').any(|segment| segment == "..") {
        CgroupPath::Outside
    } else {
        CgroupPath::Relative(relative)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unified_line_names_the_cgroup2_directory() {
        let hybrid = "4:memory:/kubepods/besteffort/podx/abc\n0::/kubepods/besteffort/podx/abc\n";
        assert_eq!(unified_path(hybrid), Some("/kubepods/besteffort/podx/abc"));
        assert_eq!(unified_path("4:memory:/x\n"), None, "cgroup v1 only");
    }

    #[test]
    fn root_and_namespaced_cgroups_are_refused() {
        assert_eq!(classify("/"), CgroupPath::Root);
        assert_eq!(classify("/../../kubepods/x"), CgroupPath::Outside);
        assert_eq!(classify("/kubepods/x"), CgroupPath::Relative("kubepods/x"));
    }
}
