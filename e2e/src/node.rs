//! A real Kubernetes node on this machine, next to the kwok ones: containerd
//! and runc (Debian), the CNI bridge + host-local + loopback plugins
//! (Debian's `containernetworking-plugins`), a kubelet and kube-proxy built
//! from the same Kubernetes module as the API server, and cluster DNS
//! (CoreDNS, as a Deployment on this node) — so the project's images run as
//! the pods a user's cluster would run.
//!
//! # One machine, several nodes
//!
//! A developer may run the demo and a test at once, and cargo runs test
//! binaries one after another, each with its own test bed. Nodes must not
//! fight, so everything of a node is its own, named after a small index
//! claimed atomically (`mkdir /run/ferrotel-nodes/<i>`):
//!
//! - a network namespace `ferrotel-node-<i>` joined to the host by a veth
//!   (`ftnode<i>` on the host, `eth0` inside): the node IP `198.18.<i>.2` is
//!   not loopback (the kubelet refuses loopback status addresses, and then
//!   `kubectl logs/exec` fail), ports 10250, 10249, ... never clash, and
//!   kube-proxy's iptables rules and the CNI bridge live inside it;
//! - pods get `198.19.<i>.0/24`, routed from the host through the veth, so
//!   tests reach pod IPs directly. Both ranges are RFC 2544's benchmarking
//!   block: no real network uses them, and the node's namespace has no
//!   default route, so nothing a pod sends can leave the machine;
//! - the API server listens on the host end of the veth (`198.18.<i>.1`),
//!   which pods reach through the `kubernetes` Service via kube-proxy;
//! - containerd with its own root, state, socket, runc root and CNI
//!   namespaces under the node directory (`netns_mounts_under_state_dir`);
//! - the kubelet's `cgroupRoot` `/ferrotel-node-<i>` (cgroupfs driver, cgroup
//!   v1 controllers as on this host): pods' cgroups never collide, and
//!   containerd (hence every shim and container) lives under it too, so
//!   stopping the node kills exactly its processes.
//!
//! # Teardown, also after a kill
//!
//! Stopping a node removes its containers (through containerd, so shims
//! exit cleanly), kills whatever is left in its cgroups, unmounts everything
//! under its directory, removes its cgroups, network namespace (the veth,
//! routes and iptables rules go with it), `/var/log/containers` links and
//! directory. The claim file records the owning process; a node whose owner
//! died without stopping it (SIGKILL) is torn down the same way by the next
//! node start, `ferrotel-testbed down` or `ferrotel-demo down`
//! ([`reap_stale`]).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Node;
use kube::Api;

use crate::images::LocalImage;
use crate::process::Process;
use crate::tools::try_tool_path;
use crate::{Error, FATAL, Result, io_err, wait_for};

/// Where node claims live: one directory per node index.
const CLAIMS_DIR: &str = "/run/ferrotel-nodes";
/// Name of the real node in its cluster.
pub const NODE_NAME: &str = "ferrotel-real-node";
/// The Service IP of cluster DNS (inside the API server's service range).
pub const DNS_SERVICE_IP: &str = "10.96.0.10";
/// CNI plugins the node's config uses (Debian's containernetworking-plugins).
const CNI_BIN_DIR: &str = "/usr/lib/cni";
const MAX_NODES: u8 = 250;
/// The host-wide kernel tunables the kubelet sets at start unless they
/// already hold these values (`setupKernelTunables` in its container
/// manager), as `sysctl` names: it gets to read them, the host keeps its own.
const KUBELET_KERNEL_TUNABLES: [(&str, u32); 6] = [
    ("vm.overcommit_memory", 1),
    ("vm.panic_on_oom", 0),
    ("kernel.panic", 10),
    ("kernel.panic_on_oops", 1),
    ("kernel.keys.root_maxkeys", 1_000_000),
    ("kernel.keys.root_maxbytes", 25_000_000),
];
/// Containers' log links the kubelet writes outside its root directory (a
/// constant in the kubelet).
const CONTAINER_LOG_LINKS: &str = "/var/log/containers";

fn err(message: impl Into<String>) -> Error {
    Error::Node(message.into())
}

/// Runs a command to completion; fails with its stderr.
fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| Error::Spawn {
            component: program.into(),
            program: program.into(),
            source,
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(err(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// The cgroup v1 controllers the kubelet needs here, mounted under
/// `/sys/fs/cgroup/<name>` (hybrid layout).
const V1_CONTROLLERS: [&str; 8] = [
    "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids",
];

/// What a real node needs from the host, checked before anything is created:
/// each missing piece is named with the fix.
pub fn preflight() -> Result<()> {
    let mut missing = Vec::new();
    if !crate::stack::is_root() {
        missing.push(
            "root: the node creates a network namespace, cgroups and mounts (run with sudo)"
                .to_owned(),
        );
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for controller in V1_CONTROLLERS {
        if !cgroup_v1_dir(controller).is_dir() {
            missing.push(format!(
                "the cgroup v1 {controller} controller at /sys/fs/cgroup/{controller} (this node runs the kubelet with the cgroupfs driver on cgroup v1 hierarchies, as this host is set up)"
            ));
        }
    }
    if !mountinfo.lines().any(|l| l.contains(" - cgroup2 ")) {
        missing.push("a cgroup2 mount (e.g. /sys/fs/cgroup/unified)".to_owned());
    }
    for program in [
        "containerd",
        "containerd-shim-runc-v2",
        "runc",
        "ctr",
        "iptables",
        "ip",
        "nsenter",
        "unshare",
        "mount",
    ] {
        if which(program).is_none() {
            missing.push(format!(
                "{program} on PATH (`make tools` installs containerd, runc, iptables, iproute2, util-linux)"
            ));
        }
    }
    for plugin in ["bridge", "host-local", "loopback"] {
        if !Path::new(CNI_BIN_DIR).join(plugin).is_file() {
            missing.push(format!(
                "the CNI plugin {CNI_BIN_DIR}/{plugin} (`make tools` installs containernetworking-plugins)"
            ));
        }
    }
    for tool in ["kubelet", "kube-proxy", "coredns", "pause"] {
        if let Err(e) = try_tool_path(tool) {
            missing.push(e.to_string());
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(err(format!(
            "this host cannot run a real node; missing:\n  - {}",
            missing.join("\n  - ")
        )))
    }
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Where a node's BPF filesystem lives: pods that pin maps (the probes with
/// trace propagation on) mount it as a hostPath.
pub const BPFFS: &str = "/sys/fs/bpf";

/// Whether a BPF filesystem is mounted at [`BPFFS`] (the last mount there
/// is what a new bind of the path sees).
fn bpffs_mounted() -> bool {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mountinfo
        .lines()
        .rev()
        .find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let point = left.split_whitespace().nth(4)?;
            (point == BPFFS).then(|| right.split_whitespace().next() == Some("bpf"))
        })
        .unwrap_or(false)
}

/// Gives the node a BPF filesystem at [`BPFFS`], as systemd mounts one at
/// boot on every node a cluster runs on: a host without systemd (a
/// container, a minimal VM) has none, and the probes' pods would find a
/// plain sysfs directory there (they refuse propagation then). Mounted only
/// when missing, and left mounted like the boot-time one: a mount of the
/// node's own BPF filesystem holds the pins of every probe of the node, and
/// other nodes of this host (or the next test bed) share it as pods on one
/// machine would.
/// The kubelet's hard eviction threshold for free disk space
/// (`nodefs.available` and `imagefs.available` in its configuration), in
/// percent of the filesystem that holds the node's directory.
const EVICTION_FREE_DISK_PERCENT: u64 = 1;

/// What the test bed writes on that filesystem while it runs (container
/// logs, layers unpacked from the imported images, probe and collector
/// output), with margin.
const TEST_BED_DISK_BYTES: u64 = 2 << 30;

/// Fails before the kubelet starts if it would evict pods during the run.
/// Below its threshold a kubelet taints its node with disk pressure and
/// evicts every pod, and the tests then fail far from the cause ("Pending:
/// untolerated taint", a probe pod "Failed").
fn check_disk_headroom(dir: &Path) -> Result<()> {
    let stats =
        rustix::fs::statvfs(dir).map_err(|e| err(format!("statvfs {}: {e}", dir.display())))?;
    let total = stats.f_blocks * stats.f_frsize;
    let free = stats.f_bavail * stats.f_frsize;
    let threshold = total / 100 * EVICTION_FREE_DISK_PERCENT;
    let needed = threshold + TEST_BED_DISK_BYTES;
    if free < needed {
        let gib = |bytes: u64| bytes as f64 / f64::from(1u32 << 30);
        return Err(err(format!(
            "the test bed's node needs {:.1} GiB free on the filesystem of {}, and {:.1} GiB is free: \
             its kubelet evicts every pod below {EVICTION_FREE_DISK_PERCENT}% free ({:.1} GiB) and the \
             run writes up to {:.1} GiB. Free disk space (old cargo target/ directories are the \
             usual culprit) and run again",
            gib(needed),
            dir.display(),
            gib(free),
            gib(threshold),
            gib(TEST_BED_DISK_BYTES),
        )));
    }
    Ok(())
}

fn provide_bpffs() -> Result<()> {
    if bpffs_mounted() {
        return Ok(());
    }
    std::fs::create_dir_all(BPFFS).map_err(io_err(Path::new(BPFFS)))?;
    run("mount", &["-t", "bpf", "bpf", BPFFS])?;
    if !bpffs_mounted() {
        return Err(err(format!(
            "mounted a BPF filesystem at {BPFFS}, but /proc/self/mountinfo does not show it there"
        )));
    }
    tracing::info!(
        path = BPFFS,
        "Mounted a BPF filesystem for the node's pods (the host had none)"
    );
    Ok(())
}

fn cgroup_v1_dir(controller: &str) -> PathBuf {
    Path::new("/sys/fs/cgroup").join(controller)
}

/// The cgroup2 mount point (`/sys/fs/cgroup/unified` on this hybrid host).
fn cgroup2_mount() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        right
            .starts_with("cgroup2 ")
            .then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
    })
}

/// Every hierarchy directory of the cgroup `name` (absolute name such as
/// `/ferrotel-node-3`): one per v1 controller (plus `name=systemd` when
/// mounted) and the unified one.
fn cgroup_dirs(name: &str) -> Vec<PathBuf> {
    let rel = name.trim_start_matches('/');
    let mut dirs: Vec<PathBuf> = V1_CONTROLLERS
        .iter()
        .map(|c| cgroup_v1_dir(c).join(rel))
        .collect();
    if Path::new("/sys/fs/cgroup/systemd").is_dir() {
        dirs.push(Path::new("/sys/fs/cgroup/systemd").join(rel));
    }
    if let Some(unified) = cgroup2_mount() {
        dirs.push(unified.join(rel));
    }
    dirs
}

/// The network of node `index`: addresses are derived from it.
#[derive(Clone, Debug)]
pub struct NodeNetwork {
    index: u8,
}

impl NodeNetwork {
    pub fn index(&self) -> u8 {
        self.index
    }
    /// `ferrotel-node-<i>`: the network namespace, and the cgroup root.
    pub fn name(&self) -> String {
        format!("ferrotel-node-{}", self.index)
    }
    pub fn netns_path(&self) -> PathBuf {
        Path::new("/run/netns").join(self.name())
    }
    /// Host end of the veth.
    pub fn host_interface(&self) -> String {
        format!("ftnode{}", self.index)
    }
    /// The host's address on the node link: the API server listens here.
    pub fn host_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.index, 1)
    }
    /// The node's InternalIP.
    pub fn node_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.index, 2)
    }
    /// Pod addresses of this node.
    pub fn pod_cidr(&self) -> String {
        format!("198.19.{}.0/24", self.index)
    }
    pub fn cgroup_root(&self) -> String {
        format!("/{}", self.name())
    }
    fn claim_dir(&self) -> PathBuf {
        Path::new(CLAIMS_DIR).join(self.index.to_string())
    }

    /// Claims a free index for a node whose files live in `node_dir` (logs
    /// in `logs_dir`), and creates its network namespace and veth. Stale
    /// nodes of dead owners are torn down first.
    pub fn create(node_dir: &Path, logs_dir: &Path) -> Result<NodeNetwork> {
        preflight()?;
        reap_stale();
        std::fs::create_dir_all(CLAIMS_DIR).map_err(io_err(Path::new(CLAIMS_DIR)))?;
        std::fs::create_dir_all(node_dir).map_err(io_err(node_dir))?;
        let node_dir = std::path::absolute(node_dir).map_err(io_err(node_dir))?;
        let logs_dir = std::path::absolute(logs_dir).map_err(io_err(logs_dir))?;
        let owner = format!(
            "{} {}\n{}\n{}\n",
            std::process::id(),
            process_start_time(std::process::id()).unwrap_or_default(),
            node_dir.display(),
            logs_dir.display()
        );
        for index in 0..MAX_NODES {
            let network = NodeNetwork { index };
            // mkdir is the atomic claim: two processes never get one index.
            match std::fs::create_dir(network.claim_dir()) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(source) => {
                    return Err(Error::Io {
                        path: network.claim_dir(),
                        source,
                    });
                }
            }
            let owner_file = network.claim_dir().join("owner");
            std::fs::write(&owner_file, &owner).map_err(io_err(&owner_file))?;
            if let Err(e) = network.setup() {
                teardown(index, &node_dir, &logs_dir);
                return Err(e);
            }
            return Ok(network);
        }
        Err(err(format!(
            "all {MAX_NODES} node slots in {CLAIMS_DIR} are taken; stop other test beds or remove stale ones with `ferrotel-testbed down`"
        )))
    }

    fn setup(&self) -> Result<()> {
        let ns = self.name();
        let host_if = self.host_interface();
        // Leftovers of a crash of this very index (its claim was reaped).
        let _ = run("ip", &["netns", "delete", &ns]);
        let _ = run("ip", &["link", "delete", &host_if]);
        run("ip", &["netns", "add", &ns])?;
        run(
            "ip",
            &[
                "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ],
        )?;
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/30", self.host_ip()),
                "dev",
                &host_if,
            ],
        )?;
        run("ip", &["link", "set", &host_if, "up"])?;
        run(
            "ip",
            &[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/30", self.node_ip()),
                "dev",
                "eth0",
            ],
        )?;
        run("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
        run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
        run(
            "ip",
            &[
                "route",
                "add",
                &self.pod_cidr(),
                "via",
                &self.node_ip().to_string(),
                "dev",
                &host_if,
            ],
        )?;
        // Inside the node: route between eth0 and the pods' bridge, and let
        // bridged pod-to-pod traffic through iptables, so a Service whose
        // endpoint is on the same bridge (CoreDNS) answers with its own
        // address (kube-proxy's un-DNAT).
        for (key, value) in [
            ("net.ipv4.ip_forward", "1"),
            ("net.bridge.bridge-nf-call-iptables", "1"),
        ] {
            run(
                "ip",
                &[
                    "netns",
                    "exec",
                    &ns,
                    "sysctl",
                    "-q",
                    "-w",
                    &format!("{key}={value}"),
                ],
            )?;
        }
        Ok(())
    }
}

/// `starttime` (field 22 of `/proc/<pid>/stat`): with the pid, it names one
/// process even after pid reuse.
fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; it ends at the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The host's values of the tunables the kubelet would set
/// ([`KUBELET_KERNEL_TUNABLES`]), `sysctl` name and value as read from
/// `/proc/sys` (a node must leave them as they are).
pub fn host_kernel_tunables() -> Vec<(&'static str, String)> {
    KUBELET_KERNEL_TUNABLES
        .iter()
        .map(|(key, _)| {
            let path = Path::new("/proc/sys").join(key.replace('.', "/"));
            let value = std::fs::read_to_string(&path)
                .map(|v| v.trim().to_owned())
                .unwrap_or_else(|e| format!("unreadable: {e}"));
            (*key, value)
        })
        .collect()
}

/// Tears down every node whose owning process is gone.
pub fn reap_stale() {
    let Ok(entries) = std::fs::read_dir(CLAIMS_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let Some(index) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u8>().ok())
        else {
            continue;
        };
        let owner = std::fs::read_to_string(entry.path().join("owner")).unwrap_or_default();
        let mut lines = owner.lines();
        let mut ids = lines.next().unwrap_or_default().split_whitespace();
        let pid: Option<u32> = ids.next().and_then(|p| p.parse().ok());
        let start: Option<u64> = ids.next().and_then(|s| s.parse().ok());
        let alive = pid.is_some_and(|pid| {
            process_start_time(pid).is_some() && process_start_time(pid) == start
        });
        // A claim without an owner line is being written right now: only
        // reap it once it is old.
        let fresh = pid.is_none()
            && entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().unwrap_or_default() < Duration::from_secs(60));
        if alive || fresh {
            continue;
        }
        // One reaper per node: a second one (another test process starting
        // its node at the same moment) leaves it alone, unless the first
        // died while reaping.
        let marker = entry.path().join("reaping");
        if std::fs::create_dir(&marker).is_err() {
            let abandoned = marker
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(120));
            if !abandoned {
                continue;
            }
        }
        let dir = lines.next().map(PathBuf::from);
        let logs = lines.next().map(PathBuf::from);
        tracing::warn!(index, owner = pid, dir = ?dir, "Tearing down a node whose owner is gone");
        teardown(
            index,
            dir.as_deref().unwrap_or(Path::new("/nonexistent")),
            logs.as_deref().unwrap_or(Path::new("/nonexistent")),
        );
    }
}

/// Removes everything of node `index` whose files are in `node_dir` (see
/// the module docs); its logs in `logs_dir` stay. Best effort, idempotent.
pub fn teardown(index: u8, node_dir: &Path, logs_dir: &Path) {
    let network = NodeNetwork { index };
    kill_cgroup(&network.cgroup_root());
    unmount_below(node_dir);
    remove_cgroup(&network.cgroup_root());
    let _ = run("ip", &["netns", "delete", &network.name()]);
    let _ = run("ip", &["link", "delete", &network.host_interface()]);
    remove_log_links(node_dir);
    remove_log_links(logs_dir);
    if node_dir.starts_with("/") && node_dir != Path::new("/") && node_dir.exists() {
        let _ = std::fs::remove_dir_all(node_dir);
    }
    let _ = std::fs::remove_dir_all(network.claim_dir());
}

/// Asks containerd to kill and delete every task and container of the CRI
/// namespace: the shims then exit by themselves and remove their sockets.
fn remove_containers(socket: &Path) {
    let Some(ctr) = which("ctr") else { return };
    let ctr = ctr.display().to_string();
    let address = socket.display().to_string();
    let k8s = |args: &[&str]| {
        let mut all = vec!["--address", &address, "-n", "k8s.io"];
        all.extend_from_slice(args);
        run(&ctr, &all)
    };
    let list = |what: &str| -> Vec<String> {
        k8s(&[what, "list", "-q"])
            .map(|out| out.lines().map(str::to_owned).collect())
            .unwrap_or_default()
    };
    for task in list("tasks") {
        let _ = k8s(&["tasks", "kill", "-s", "SIGKILL", &task]);
    }
    for task in list("tasks") {
        // Retries: a task is deletable once its process has been reaped.
        for _ in 0..50 {
            if k8s(&["tasks", "delete", &task]).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    for container in list("containers") {
        let _ = k8s(&["containers", "delete", &container]);
    }
}

/// Pids in the cgroup `name` and below (the pids hierarchy holds them all).
fn cgroup_pids(name: &str) -> Vec<i32> {
    let root = cgroup_v1_dir("pids").join(name.trim_start_matches('/'));
    let mut pids = Vec::new();
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.path().is_dir() {
                stack.push(entry.path());
            }
        }
    }
    pids
}

/// SIGKILLs every process in the cgroup until none is left (processes may
/// fork while we kill; bounded to a few seconds).
fn kill_cgroup(name: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids = cgroup_pids(name);
        if pids.is_empty() || Instant::now() > deadline {
            if !pids.is_empty() {
                tracing::warn!(cgroup = name, ?pids, "Processes survived the node teardown");
            }
            return;
        }
        for pid in pids {
            crate::process::signal_pid(pid, libc::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Removes the cgroup `name` and its children in every hierarchy, deepest
/// first (a cgroup directory is removed with rmdir once it has no tasks).
fn remove_cgroup(name: &str) {
    for root in cgroup_dirs(name) {
        let mut dirs = Vec::new();
        let mut stack = vec![root];
        while let Some(dir) = stack.pop() {
            if !dir.is_dir() {
                continue;
            }
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(entry.path());
                }
            }
            dirs.push(dir);
        }
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for dir in dirs {
            for _ in 0..50 {
                if std::fs::remove_dir(&dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Mount points at or below `dir`, from `/proc/self/mountinfo`, deepest first.
pub fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| m.starts_with(dir))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    mounts.dedup();
    mounts
}

fn unmount_below(dir: &Path) {
    if dir == Path::new("/") || !dir.is_absolute() {
        return;
    }
    // Stacked mounts need several rounds.
    for _ in 0..5 {
        let mounts = mounts_below(dir);
        if mounts.is_empty() {
            return;
        }
        for mount in mounts {
            let _ = rustix_unmount(&mount);
        }
    }
}

fn rustix_unmount(path: &Path) -> std::io::Result<()> {
    let status = Command::new("umount").arg("-l").arg(path).status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "umount -l {}",
            path.display()
        )))
    }
}

/// `/var/log/containers/*.log` links pointing into `node_dir`.
fn remove_log_links(node_dir: &Path) {
    for entry in std::fs::read_dir(CONTAINER_LOG_LINKS)
        .into_iter()
        .flatten()
        .flatten()
    {
        if std::fs::read_link(entry.path()).is_ok_and(|target| target.starts_with(node_dir)) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Host-side leftovers of node `index` (for teardown tests): what exists of
/// its network namespace, veth, route, cgroups, mounts below `node_dir`,
/// directory, claim and container log links (into `node_dir` or
/// `logs_dir`). Empty when the teardown was complete.
pub fn leftovers(index: u8, node_dir: &Path, logs_dir: &Path) -> Vec<String> {
    let network = NodeNetwork { index };
    let mut left = Vec::new();
    if network.netns_path().exists() {
        left.push(format!(
            "network namespace {}",
            network.netns_path().display()
        ));
    }
    if Path::new("/sys/class/net")
        .join(network.host_interface())
        .exists()
    {
        left.push(format!("veth {}", network.host_interface()));
    }
    for dir in cgroup_dirs(&network.cgroup_root()) {
        if dir.exists() {
            left.push(format!("cgroup {}", dir.display()));
        }
    }
    for mount in mounts_below(node_dir) {
        left.push(format!("mount {}", mount.display()));
    }
    if node_dir.exists() {
        left.push(format!("directory {}", node_dir.display()));
    }
    if network.claim_dir().exists() {
        left.push(format!("claim {}", network.claim_dir().display()));
    }
    for entry in std::fs::read_dir(CONTAINER_LOG_LINKS)
        .into_iter()
        .flatten()
        .flatten()
    {
        if std::fs::read_link(entry.path())
            .is_ok_and(|t| t.starts_with(node_dir) || t.starts_with(logs_dir))
        {
            left.push(format!("log link {}", entry.path().display()));
        }
    }
    if let Ok(out) = run("ip", &["route", "show", &network.pod_cidr()])
        && !out.trim().is_empty()
    {
        left.push(format!("route {}", out.trim()));
    }
    left
}

/// The certificates the node's components authenticate with.
#[derive(Clone, Debug)]
pub struct NodeCredentials {
    pub ca_cert: PathBuf,
    pub kubelet: ClientCert,
    pub proxy: ClientCert,
}

/// A component's client certificate and its key.
#[derive(Clone, Debug)]
pub struct ClientCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A running real node.
#[derive(Debug)]
pub struct RealNode {
    network: NodeNetwork,
    dir: PathBuf,
    logs: PathBuf,
    processes: Vec<Process>,
    images: BTreeMap<String, LocalImage>,
    stopped: bool,
}

impl RealNode {
    /// Starts containerd, the kubelet and kube-proxy for `network`, with
    /// files under `dir`, and waits until the node is Ready. `server` is the
    /// API server URL (on the host end of the veth). `images` must include
    /// `pause` (the sandbox image); all are imported.
    pub async fn start(
        network: NodeNetwork,
        dir: &Path,
        logs: &Path,
        server: &str,
        credentials: &NodeCredentials,
        images: &[LocalImage],
        client: &kube::Client,
    ) -> Result<RealNode> {
        let dir = std::path::absolute(dir).map_err(io_err(dir))?;
        let mut node = RealNode {
            network,
            dir: dir.clone(),
            logs: std::path::absolute(logs).map_err(io_err(logs))?,
            processes: Vec::new(),
            images: BTreeMap::new(),
            stopped: false,
        };
        let pause = images
            .iter()
            .find(|i| i.name == "pause")
            .ok_or_else(|| err("the node needs the pause image"))?
            .reference
            .clone();
        node.create_cgroups()?;
        provide_bpffs()?;
        node.start_containerd(&pause)?;
        node.wait_for_containerd().await?;
        for image in images {
            node.import(image)?;
        }
        check_disk_headroom(&dir)?;
        node.start_kubelet(server, &credentials.ca_cert, &credentials.kubelet)?;
        node.start_kube_proxy(server, &credentials.ca_cert, &credentials.proxy)?;
        node.wait_ready(client).await?;
        Ok(node)
    }

    pub fn name(&self) -> &'static str {
        NODE_NAME
    }

    pub fn network(&self) -> &NodeNetwork {
        &self.network
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// containerd, kubelet and kube-proxy logs, and pod logs in `pods/`.
    pub fn logs_dir(&self) -> PathBuf {
        self.logs.clone()
    }

    /// containerd's socket.
    pub fn containerd_socket(&self) -> PathBuf {
        self.dir.join("containerd/containerd.sock")
    }

    /// Images imported so far, by short name.
    pub fn images(&self) -> &BTreeMap<String, LocalImage> {
        &self.images
    }

    fn create_cgroups(&self) -> Result<()> {
        for dir in cgroup_dirs(&self.network.cgroup_root())
            .into_iter()
            .chain(cgroup_dirs(&format!(
                "{}/runtime",
                self.network.cgroup_root()
            )))
        {
            std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
            // cpuset cgroups start empty and accept no task until they
            // have CPUs and memory nodes.
            if dir.starts_with(cgroup_v1_dir("cpuset")) {
                for file in ["cpuset.cpus", "cpuset.mems"] {
                    let parent = dir.parent().unwrap_or(Path::new("/")).join(file);
                    let value = std::fs::read_to_string(&parent).map_err(io_err(&parent))?;
                    let own = dir.join(file);
                    if std::fs::read_to_string(&own)
                        .unwrap_or_default()
                        .trim()
                        .is_empty()
                    {
                        std::fs::write(&own, value.trim()).map_err(io_err(&own))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Moves `pid` into `<cgroup root>/runtime` in every hierarchy.
    fn adopt(&self, pid: u32) -> Result<()> {
        for dir in cgroup_dirs(&format!("{}/runtime", self.network.cgroup_root())) {
            let procs = dir.join("cgroup.procs");
            std::fs::write(&procs, pid.to_string()).map_err(io_err(&procs))?;
        }
        Ok(())
    }

    /// `nsenter --net=<netns> <program> args...`: the node's processes share
    /// the host's mount namespace (so the kubelet's volume mounts are seen by
    /// runc) but not its network.
    fn spawn(&mut self, name: &str, program: &Path, args: &[String]) -> Result<()> {
        let mut cmd = Command::new(which("nsenter").unwrap_or_else(|| "nsenter".into()));
        cmd.arg(format!("--net={}", self.network.netns_path().display()))
            .arg("--")
            .arg(program)
            .args(args);
        self.spawn_command(name, cmd)
    }

    /// The kubelet as [`RealNode::spawn`] would start it, but in a mount
    /// namespace of its own where the kernel tunables it insists on
    /// (`vm.overcommit_memory=1`, `kernel.panic_on_oops=1`, ...: host-wide,
    /// not namespaced) read as already set, so it leaves the host's alone,
    /// and the rest of `/proc/sys` is read-only, so a tunable a later
    /// release adds fails the kubelet's start instead of changing the
    /// host. Its root directory is made a shared mount first (as the
    /// kubelet itself would, but in the host's namespace), so the volumes
    /// it mounts there propagate to the host, where runc bind-mounts them
    /// into containers.
    fn spawn_kubelet(&mut self, program: &Path, args: &[String], base: &Path) -> Result<()> {
        let root = base.join("root");
        std::fs::create_dir_all(&root).map_err(io_err(&root))?;
        let root_text = root.display().to_string();
        run("mount", &["--bind", &root_text, &root_text])?;
        run("mount", &["--make-rshared", &root_text])?;
        let tunables = base.join("kernel-tunables");
        std::fs::create_dir_all(&tunables).map_err(io_err(&tunables))?;
        let mut script = String::from(
            "set -e\nmount --make-rprivate /proc\nmount --bind /proc/sys /proc/sys\nmount -o remount,bind,ro /proc/sys\n",
        );
        for (key, value) in KUBELET_KERNEL_TUNABLES {
            let file = tunables.join(key);
            std::fs::write(&file, format!("{value}\n")).map_err(io_err(&file))?;
            script.push_str(&format!(
                "mount --bind \"$0/{key}\" /proc/sys/{}\n",
                key.replace('.', "/")
            ));
        }
        script.push_str("netns=$1\nshift\nexec nsenter --net=\"$netns\" -- \"$@\"\n");
        let mut cmd = Command::new(which("unshare").unwrap_or_else(|| "unshare".into()));
        cmd.args(["--mount", "--propagation", "unchanged", "--", "sh", "-c"])
            .arg(script)
            .arg(&tunables)
            .arg(self.network.netns_path())
            .arg(program)
            .args(args);
        self.spawn_command("kubelet", cmd)
    }

    fn spawn_command(&mut self, name: &str, cmd: Command) -> Result<()> {
        let logs = self.logs_dir();
        std::fs::create_dir_all(&logs).map_err(io_err(&logs))?;
        let process = Process::spawn(name, cmd, &logs.join(format!("{name}.log")))?;
        let pid = process.pid();
        self.processes.push(process);
        self.adopt(pid)
    }

    fn start_containerd(&mut self, pause: &str) -> Result<()> {
        let base = self.dir.join("containerd");
        let cni_conf = self.dir.join("cni");
        for d in [&base, &cni_conf] {
            std::fs::create_dir_all(d).map_err(io_err(d))?;
        }
        let conflist = serde_json::json!({
            "cniVersion": "0.4.0",
            "name": "ferrotel",
            "plugins": [{
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": true,
                // Pods route everything to the bridge, where kube-proxy's
                // rules rewrite Service IPs; what no rule claims finds no
                // route out of the node's namespace.
                "isDefaultGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": self.network.pod_cidr()}]],
                    "dataDir": base.join("cni-ipam").display().to_string(),
                }
            }]
        });
        let conflist_path = cni_conf.join("10-ferrotel.conflist");
        std::fs::write(&conflist_path, conflist.to_string()).map_err(io_err(&conflist_path))?;
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{base}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  # This machine refuses a negative oom_score_adj; without this runc fails
  # every sandbox ("can't get final child's PID from pipe: EOF").
  restrict_oom_score_adj = true
  # Pod network namespaces under the state directory, not /run/netns: the
  # node's teardown finds them all.
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "{cni_bin}"
  conf_dir = "{cni_conf}"
  max_conf_num = 1

[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = "{base}/runc"
"#,
            root = base.join("root").display(),
            state = base.join("state").display(),
            socket = self.containerd_socket().display(),
            base = base.display(),
            cni_bin = CNI_BIN_DIR,
            cni_conf = cni_conf.display(),
        );
        let config_path = base.join("config.toml");
        std::fs::write(&config_path, config).map_err(io_err(&config_path))?;
        let containerd = which("containerd").ok_or_else(|| err("containerd not found"))?;
        self.spawn(
            "containerd",
            &containerd,
            &[format!("--config={}", config_path.display())],
        )
    }

    fn ctr(&self, args: &[&str]) -> Result<String> {
        let address = self.containerd_socket().display().to_string();
        let mut all = vec!["--address", address.as_str(), "-n", "k8s.io"];
        all.extend_from_slice(args);
        run("ctr", &all)
    }

    async fn wait_for_containerd(&mut self) -> Result<()> {
        let what = format!(
            "containerd to answer on {}",
            self.containerd_socket().display()
        );
        let socket = self.containerd_socket();
        let processes = std::sync::Mutex::new(&mut self.processes);
        wait_for(&what, Duration::from_secs(60), || {
            let status = check_all(&processes);
            let socket = socket.clone();
            async move {
                status.map_err(|e| format!("{FATAL}{e}"))?;
                run(
                    "ctr",
                    &["--address", &socket.display().to_string(), "version"],
                )
                .map(|_| ())
                .map_err(|e| e.to_string())
            }
        })
        .await
    }

    /// Loads `image` into the node's containerd (unpacked for overlayfs), so
    /// pods can use it with no registry.
    pub fn import(&mut self, image: &LocalImage) -> Result<()> {
        if self
            .images
            .get(&image.name)
            .is_some_and(|i| i.reference == image.reference)
        {
            return Ok(());
        }
        let archive = image.archive.display().to_string();
        self.ctr(&["images", "import", &archive]).map_err(|e| {
            err(format!(
                "importing {} into containerd: {e}",
                image.reference
            ))
        })?;
        self.images.insert(image.name.clone(), image.clone());
        Ok(())
    }

    /// `<dir>/<component>/` with a kubeconfig in it for the component's
    /// client certificate: (the directory, the kubeconfig).
    fn component_dir(
        &self,
        component: &str,
        server: &str,
        ca: &Path,
        client: &ClientCert,
    ) -> Result<(PathBuf, PathBuf)> {
        let base = self.dir.join(component);
        std::fs::create_dir_all(&base).map_err(io_err(&base))?;
        let kubeconfig = base.join("kubeconfig");
        write_kubeconfig(&kubeconfig, server, ca, &client.cert, &client.key)?;
        Ok((base, kubeconfig))
    }

    /// Writes `config` to `<base>/config.yaml` and starts the pinned tool
    /// `component` on it, with `args` after `--config`.
    fn spawn_component(
        &mut self,
        component: &str,
        base: &Path,
        config: &str,
        args: &[String],
    ) -> Result<()> {
        let path = base.join("config.yaml");
        std::fs::write(&path, config).map_err(io_err(&path))?;
        let program = try_tool_path(component)?;
        let mut all = vec![format!("--config={}", path.display())];
        all.extend_from_slice(args);
        all.push("--v=1".into());
        if component == "kubelet" {
            self.spawn_kubelet(&program, &all, base)
        } else {
            self.spawn(component, &program, &all)
        }
    }

    fn start_kubelet(&mut self, server: &str, ca: &Path, client: &ClientCert) -> Result<()> {
        let (base, kubeconfig) = self.component_dir("kubelet", server, ca, client)?;
        let config = format!(
            r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {node_ip}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: false}}
  x509: {{clientCAFile: {ca}}}
authorization: {{mode: AlwaysAllow}}
containerRuntimeEndpoint: unix://{socket}
cgroupDriver: cgroupfs
cgroupRoot: {cgroup_root}
cgroupsPerQOS: true
failCgroupV1: false
failSwapOn: false
clusterDNS: [{dns}]
clusterDomain: cluster.local
resolvConf: {resolv}
podLogsDir: {pod_logs}
# Shared CI disks run full: never evict or garbage-collect the images that
# were imported once and cannot be pulled again.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {{memory.available: "1Mi", nodefs.available: "{disk}%", imagefs.available: "{disk}%", nodefs.inodesFree: "1%"}}
serializeImagePulls: false
rotateCertificates: false
shutdownGracePeriod: 0s
"#,
            node_ip = self.network.node_ip(),
            ca = ca.display(),
            socket = self.containerd_socket().display(),
            cgroup_root = self.network.cgroup_root(),
            dns = DNS_SERVICE_IP,
            resolv = self.resolv_conf()?.display(),
            pod_logs = self.logs.join("pods").display(),
            disk = EVICTION_FREE_DISK_PERCENT,
        );
        let args = [
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--root-dir={}", base.join("root").display()),
            format!("--cert-dir={}", base.join("pki").display()),
            format!("--hostname-override={NODE_NAME}"),
            format!("--node-ip={}", self.network.node_ip()),
            "--node-labels=ferrotel.io/real-node=true".to_owned(),
        ];
        self.spawn_component("kubelet", &base, &config, &args)
    }

    /// A resolv.conf for pods with `dnsPolicy: Default`: no upstream server
    /// (nothing may leave the machine), only the search domain.
    fn resolv_conf(&self) -> Result<PathBuf> {
        let path = self.dir.join("resolv.conf");
        std::fs::write(&path, "search cluster.local\noptions ndots:5\n").map_err(io_err(&path))?;
        Ok(path)
    }

    fn start_kube_proxy(&mut self, server: &str, ca: &Path, client: &ClientCert) -> Result<()> {
        let (base, kubeconfig) = self.component_dir("kube-proxy", server, ca, client)?;
        let config = format!(
            r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {{kubeconfig: {kubeconfig}}}
hostnameOverride: {NODE_NAME}
mode: iptables
clusterCIDR: {pod_cidr}
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
# conntrack limits are host-wide: leave them alone.
conntrack: {{maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}}
"#,
            kubeconfig = kubeconfig.display(),
            pod_cidr = self.network.pod_cidr(),
        );
        self.spawn_component("kube-proxy", &base, &config, &[])
    }

    async fn wait_ready(&mut self, client: &kube::Client) -> Result<()> {
        let nodes: Api<Node> = Api::all(client.clone());
        let processes = std::sync::Mutex::new(&mut self.processes);
        wait_for(
            &format!("node {NODE_NAME} (kubelet) to be Ready"),
            Duration::from_secs(120),
            || {
                let status = check_all(&processes);
                let nodes = nodes.clone();
                async move {
                    status.map_err(|e| format!("{FATAL}{e}"))?;
                    let node = nodes
                        .get_opt(NODE_NAME)
                        .await
                        .map_err(|e| e.to_string())?
                        .ok_or("not registered yet")?;
                    let ready = node
                        .status
                        .and_then(|s| s.conditions)
                        .unwrap_or_default()
                        .into_iter()
                        .find(|c| c.type_ == "Ready");
                    match ready {
                        Some(c) if c.status == "True" => Ok(()),
                        Some(c) => Err(format!(
                            "Ready={}: {}",
                            c.status,
                            c.message.unwrap_or_default()
                        )),
                        None => Err("no Ready condition yet".into()),
                    }
                }
            },
        )
        .await
    }

    /// Applies cluster DNS (CoreDNS from `image`, Service `kube-dns` at
    /// [`DNS_SERVICE_IP`]) and waits until it serves.
    pub async fn start_dns(
        &self,
        kubeconfig: &Path,
        client: &kube::Client,
        image: &LocalImage,
    ) -> Result<()> {
        crate::stack::kubectl_apply(kubeconfig, &coredns_manifest(&image.reference))?;
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), "kube-system");
        wait_for(
            "CoreDNS (kube-system/coredns) to be available",
            Duration::from_secs(120),
            || {
                let deployments = deployments.clone();
                async move {
                    let d = deployments
                        .get("coredns")
                        .await
                        .map_err(|e| e.to_string())?;
                    let ready = d.status.and_then(|s| s.ready_replicas).unwrap_or(0);
                    if ready >= 1 {
                        Ok(())
                    } else {
                        Err("0 ready replicas".to_string())
                    }
                }
            },
        )
        .await
    }

    /// Fails if containerd, the kubelet or kube-proxy has exited.
    pub fn check_processes(&mut self) -> Result<()> {
        for p in &mut self.processes {
            p.check_running()?;
        }
        Ok(())
    }

    /// Stops everything (see the module docs). Idempotent; also run on drop.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        // The kubelet first, or it restarts what we remove.
        while self.processes.len() > 1 {
            if let Some(mut p) = self.processes.pop() {
                p.kill();
            }
        }
        // Then containers through containerd (shims exit cleanly), then
        // containerd, then whatever is left.
        remove_containers(&self.containerd_socket());
        for mut p in self.processes.drain(..) {
            p.kill();
        }
        teardown(self.network.index, &self.dir, &self.logs);
    }
}

impl Drop for RealNode {
    fn drop(&mut self) {
        self.stop();
    }
}

fn check_all(processes: &std::sync::Mutex<&mut Vec<Process>>) -> Result<()> {
    let mut guard = processes.lock().unwrap_or_else(|e| e.into_inner());
    for p in guard.iter_mut() {
        p.check_running()?;
    }
    Ok(())
}

fn write_kubeconfig(path: &Path, server: &str, ca: &Path, cert: &Path, key: &Path) -> Result<()> {
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: ferrotel-testbed
  cluster: {{server: {server}, certificate-authority: {ca}}}
users:
- name: node
  user: {{client-certificate: {cert}, client-key: {key}}}
contexts:
- name: node
  context: {{cluster: ferrotel-testbed, user: node}}
current-context: node
",
        ca = ca.display(),
        cert = cert.display(),
        key = key.display(),
    );
    std::fs::write(path, text).map_err(io_err(path))
}

/// CoreDNS as the kubeadm manifests run it, trimmed: the `kubernetes`
/// plugin answers for cluster.local and reverse zones; there is no
/// `forward` (no upstream resolver may be reached from the test bed), hence
/// no `loop` either (it probes through `forward`).
fn coredns_manifest(image: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: ServiceAccount
metadata: {{name: coredns, namespace: kube-system}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: "system:coredns"}}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: "system:coredns"}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}}
subjects:
- {{kind: ServiceAccount, name: coredns, namespace: kube-system}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: coredns, namespace: kube-system}}
data:
  Corefile: |
    .:53 {{
        errors
        health {{
            lameduck 1s
        }}
        ready
        kubernetes cluster.local in-addr.arpa ip6.arpa {{
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
            ttl 30
        }}
        cache 30
        loadbalance
    }}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: coredns
  namespace: kube-system
  labels: {{k8s-app: kube-dns}}
spec:
  replicas: 1
  selector: {{matchLabels: {{k8s-app: kube-dns}}}}
  template:
    metadata:
      labels: {{k8s-app: kube-dns}}
    spec:
      serviceAccountName: coredns
      dnsPolicy: Default
      nodeSelector: {{ferrotel.io/real-node: "true"}}
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        seccompProfile: {{type: RuntimeDefault}}
        # Port 53 without NET_BIND_SERVICE (a namespaced, safe sysctl).
        sysctls:
        - {{name: net.ipv4.ip_unprivileged_port_start, value: "53"}}
      containers:
      - name: coredns
        image: {image}
        imagePullPolicy: Never
        args: [-conf, /etc/coredns/Corefile]
        ports:
        - {{name: dns, containerPort: 53, protocol: UDP}}
        - {{name: dns-tcp, containerPort: 53, protocol: TCP}}
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities: {{drop: [ALL]}}
        readinessProbe:
          httpGet: {{path: /ready, port: 8181}}
          periodSeconds: 2
        volumeMounts:
        - {{name: config, mountPath: /etc/coredns, readOnly: true}}
      volumes:
      - name: config
        configMap: {{name: coredns}}
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {{k8s-app: kube-dns}}
spec:
  clusterIP: {DNS_SERVICE_IP}
  selector: {{k8s-app: kube-dns}}
  ports:
  - {{name: dns, port: 53, protocol: UDP}}
  - {{name: dns-tcp, port: 53, protocol: TCP}}
"#
    )
}
