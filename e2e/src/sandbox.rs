//! Pod-like sandboxes: run a real process the way a kubelet with containerd
//! would, so that the probe's Kubernetes discovery can be tested for real.
//!
//! A [`PodSandbox`] ties three things together:
//! - a **Pod object** on a kwok node (created here, or adopted from a
//!   Deployment's ReplicaSet so that owner resolution is real too), whose
//!   `status.containerStatuses[].containerID` is `containerd://<id>`;
//! - a **cgroup v2 directory** named like containerd's systemd layout,
//!   `<unified>/ferrotel-e2e/kubepods-pod<uid_>.slice/cri-containerd-<id>.scope`,
//!   found through `/proc/self/mountinfo` (on hybrid hosts the unified mount
//!   is not `/sys/fs/cgroup`);
//! - optionally a **network namespace** with a veth pair on a bridge and its
//!   own IPv4 address (a private 10.x subnet that exists only on this
//!   bridge), so that two pods talk over real, distinct addresses.
//!
//! The process is moved into the cgroup *before* it execs the workload
//! (`sh -c 'echo $$ > cgroup.procs; exec …'`), so it is never seen outside
//! the pod, and enters the network namespace with `nsenter --net`, which
//! (unlike `ip netns exec`) leaves the mount namespace — and thus the cgroup
//! filesystem — alone.
//!
//! kwok fills in pod status (phase, conditions, container states) and does
//! not know our IDs, so [`PodSandbox::publish_status`] patches the status
//! subresource after kwok marked the pod Running and re-checks it, because
//! kwok's later status writes would otherwise win.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};

use crate::process::Process;
use crate::{Error, Result, wait_for};

/// Parent of every sandbox cgroup under the unified mount (the tests').
pub const CGROUP_PARENT: &str = "ferrotel-e2e";

static PARENT_OVERRIDE: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// Makes this process put its sandboxes under `name` instead of
/// [`CGROUP_PARENT`] (call before the first sandbox). The demo uses its
/// own parent so that cleaning up after it never touches the sandboxes of
/// tests running at the same time. Returns `false` if already set.
pub fn use_cgroup_parent(name: &'static str) -> bool {
    PARENT_OVERRIDE.set(name).is_ok()
}

/// The parent this process puts its sandbox cgroups under.
pub fn cgroup_parent() -> &'static str {
    PARENT_OVERRIDE.get().copied().unwrap_or(CGROUP_PARENT)
}

/// The cgroup2 mount point, from `/proc/self/mountinfo`.
pub fn cgroup2_mount() -> Result<PathBuf> {
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(|source| Error::Io {
            path: "/proc/self/mountinfo".into(),
            source,
        })?;
    mountinfo
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            (fields.get(sep + 1) == Some(&"cgroup2")).then(|| PathBuf::from(fields[4].replace("\\040", " ")))
        })
        .ok_or_else(|| Error::Collector("no cgroup2 mount in /proc/self/mountinfo; mount one (e.g. at /sys/fs/cgroup/unified)".into()))
}

/// A random 64-hex container ID, like containerd's.
pub fn random_container_id() -> String {
    let mut bytes = [0u8; 32];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_err()
    {
        // Unique enough for a test: time and pid.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
            ^ u128::from(std::process::id());
        bytes[..16].copy_from_slice(&seed.to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().map_err(|source| Error::Spawn {
        component: "sandbox setup".into(),
        program: cmd.get_program().to_string_lossy().into_owned(),
        source,
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Collector(format!(
            "sandbox setup command {:?} failed ({}): {}",
            cmd,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn ip(args: &[&str]) -> Result<()> {
    run(Command::new("ip").args(args))
}

/// The bridge every sandbox of this process plugs into; deleted when the
/// last sandbox using it is dropped.
#[derive(Debug)]
struct Bridge {
    name: String,
    /// First three octets of the /24.
    prefix: [u8; 3],
    next_host: Mutex<u8>,
}

impl Bridge {
    fn shared() -> Result<Arc<Bridge>> {
        static BRIDGE: Mutex<Weak<Bridge>> = Mutex::new(Weak::new());
        let mut slot = BRIDGE.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bridge) = slot.upgrade() {
            return Ok(bridge);
        }
        let pid = std::process::id();
        // A /24 per test process, in 10.200.0.0/13 - 10.207.x: unlikely to
        // collide with anything on a test machine, and only routed here.
        let prefix = [10, 200 + (pid % 8) as u8, ((pid / 8) % 250) as u8];
        let bridge = Bridge {
            name: format!("ftbr{}", pid % 10_000_000),
            prefix,
            next_host: Mutex::new(2),
        };
        let _ = ip(&["link", "del", &bridge.name]);
        ip(&["link", "add", &bridge.name, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", bridge.gateway()),
            "dev",
            &bridge.name,
        ])?;
        ip(&["link", "set", &bridge.name, "up"])?;
        let bridge = Arc::new(bridge);
        *slot = Arc::downgrade(&bridge);
        Ok(bridge)
    }

    fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.prefix[0], self.prefix[1], self.prefix[2], 1)
    }

    fn allocate(&self) -> Ipv4Addr {
        let mut next = self.next_host.lock().unwrap_or_else(|e| e.into_inner());
        let host = *next;
        *next = next.wrapping_add(1).max(2);
        Ipv4Addr::new(self.prefix[0], self.prefix[1], self.prefix[2], host)
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.name]);
    }
}

/// A network namespace with one veth into the bridge.
#[derive(Debug)]
struct Netns {
    name: String,
    ip: Ipv4Addr,
    _bridge: Arc<Bridge>,
}

impl Netns {
    fn create() -> Result<Netns> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let bridge = Bridge::shared()?;
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let name = format!("ferrotel-{pid}-{n}");
        // Interface names are at most 15 bytes.
        let host_if = format!("ftv{}{}", pid % 100_000, n % 100);
        let ip_addr = bridge.allocate();
        let _ = ip(&["netns", "del", &name]);
        ip(&["netns", "add", &name])?;
        let netns = Netns {
            name,
            ip: ip_addr,
            _bridge: bridge.clone(),
        };
        ip(&[
            "link",
            "add",
            &host_if,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &netns.name,
        ])?;
        ip(&["link", "set", &host_if, "master", &bridge.name])?;
        ip(&["link", "set", &host_if, "up"])?;
        let exec = |args: &[&str]| {
            let mut full = vec!["netns", "exec", netns.name.as_str()];
            full.extend_from_slice(args);
            ip(&full)
        };
        exec(&["ip", "link", "set", "lo", "up"])?;
        exec(&["ip", "addr", "add", &format!("{ip_addr}/24"), "dev", "eth0"])?;
        exec(&["ip", "link", "set", "eth0", "up"])?;
        exec(&[
            "ip",
            "route",
            "add",
            "default",
            "via",
            &bridge.gateway().to_string(),
        ])?;
        Ok(netns)
    }

    fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes its veth end, and with it the peer.
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// How to make a sandbox.
#[derive(Clone, Debug)]
pub struct SandboxOptions {
    /// Container name in the Pod.
    pub container: String,
    /// Give the pod its own network namespace and IP.
    pub network: bool,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        Self {
            container: "app".into(),
            network: true,
        }
    }
}

/// One pod-like sandbox (see the module docs). Local resources (process,
/// cgroup, network namespace) are released on drop; the Pod object belongs
/// to its namespace (delete the namespace, or call [`PodSandbox::delete_pod`]).
pub struct PodSandbox {
    client: kube::Client,
    namespace: String,
    pod_name: String,
    uid: String,
    container: String,
    container_id: String,
    cgroup: PathBuf,
    netns: Option<Netns>,
    process: Option<Process>,
}

impl std::fmt::Debug for PodSandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodSandbox")
            .field("pod", &format_args!("{}/{}", self.namespace, self.pod_name))
            .field("container_id", &self.container_id)
            .field("cgroup", &self.cgroup)
            .field("ip", &self.ip())
            .finish_non_exhaustive()
    }
}

impl PodSandbox {
    /// Creates a bare Pod `name` on `node` (with `labels` and `annotations`)
    /// and its sandbox.
    pub async fn create_pod(
        client: &kube::Client,
        namespace: &str,
        name: &str,
        node: &str,
        labels: serde_json::Value,
        annotations: serde_json::Value,
        options: SandboxOptions,
    ) -> Result<PodSandbox> {
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": labels, "annotations": annotations},
            "spec": {
                "nodeName": node,
                "containers": [{"name": options.container, "image": "ferrotel.local/sandbox:latest"}],
                "tolerations": [{"operator": "Exists"}],
            }
        }))
        .map_err(|e| Error::Collector(format!("invalid pod fixture: {e}")))?;
        pods.create(&PostParams::default(), &pod)
            .await
            .map_err(|source| Error::Kube {
                context: format!("create pod {namespace}/{name}"),
                source,
            })?;
        Self::adopt(client, namespace, name, options).await
    }

    /// Builds the sandbox of an existing Pod (e.g. made by a Deployment):
    /// waits until it is scheduled, then creates its cgroup (and netns).
    pub async fn adopt(
        client: &kube::Client,
        namespace: &str,
        name: &str,
        options: SandboxOptions,
    ) -> Result<PodSandbox> {
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let pod = wait_for(
            &format!("pod {namespace}/{name} to be scheduled"),
            Duration::from_secs(60),
            || {
                let pods = pods.clone();
                async move {
                    match pods.get_opt(name).await {
                        Ok(Some(pod))
                            if pod
                                .spec
                                .as_ref()
                                .and_then(|s| s.node_name.as_ref())
                                .is_some() =>
                        {
                            Ok(pod)
                        }
                        Ok(Some(_)) => Err("not scheduled yet".into()),
                        Ok(None) => Err("absent".into()),
                        Err(e) => Err(e.to_string()),
                    }
                }
            },
        )
        .await?;
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let container_id = random_container_id();
        let cgroup = cgroup2_mount()?
            .join(cgroup_parent())
            .join(format!("kubepods-pod{}.slice", uid.replace('-', "_")))
            .join(format!("cri-containerd-{container_id}.scope"));
        std::fs::create_dir_all(&cgroup).map_err(|source| Error::Io {
            path: cgroup.clone(),
            source,
        })?;
        let netns = if options.network {
            Some(Netns::create()?)
        } else {
            None
        };
        Ok(PodSandbox {
            client: client.clone(),
            namespace: namespace.to_owned(),
            pod_name: name.to_owned(),
            uid,
            container: options.container,
            container_id,
            cgroup,
            netns,
            process: None,
        })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn pod_name(&self) -> &str {
        &self.pod_name
    }

    pub fn uid(&self) -> &str {
        &self.uid
    }

    pub fn container_id(&self) -> &str {
        &self.container_id
    }

    pub fn cgroup_dir(&self) -> &Path {
        &self.cgroup
    }

    /// The pod's own IP, or 127.0.0.1 without a network namespace.
    pub fn ip(&self) -> Ipv4Addr {
        self.netns
            .as_ref()
            .map(|n| n.ip)
            .unwrap_or(Ipv4Addr::LOCALHOST)
    }

    /// The main process, once spawned.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::pid)
    }

    /// PIDs currently in the sandbox's cgroup.
    pub fn pids(&self) -> Vec<u32> {
        std::fs::read_to_string(self.cgroup.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Starts `program args…` inside the sandbox, output appended to `log`.
    /// `env` is added to the environment.
    pub fn spawn(
        &mut self,
        program: &Path,
        args: &[String],
        env: &[(String, String)],
        log: &Path,
    ) -> Result<u32> {
        let procs = self.cgroup.join("cgroup.procs");
        let mut cmd = Command::new("sh");
        // `$$` is the shell's PID, which `exec` hands to the workload.
        cmd.arg("-c")
            .arg(format!("echo $$ > '{}' && exec \"$@\"", procs.display()))
            .arg("sandbox");
        if let Some(netns) = &self.netns {
            cmd.arg("nsenter")
                .arg(format!("--net={}", netns.path().display()))
                .arg("--");
        }
        cmd.arg(program).args(args);
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        let name = format!("{}/{}", self.namespace, self.pod_name);
        let process = Process::spawn(&name, cmd, log)?;
        let pid = process.pid();
        self.process = Some(process);
        Ok(pid)
    }

    /// Fails with the log tail if the workload exited.
    pub fn check_running(&mut self) -> Result<()> {
        match &mut self.process {
            Some(p) => p.check_running(),
            None => Ok(()),
        }
    }

    /// Writes the container ID (and pod IP) into the Pod's status once kwok
    /// reports it Running, and waits until the API shows it.
    pub async fn publish_status(&self) -> Result<()> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let container_id = format!("containerd://{}", self.container_id);
        let what = format!(
            "pod {}/{} to show containerID {}",
            self.namespace,
            self.pod_name,
            &self.container_id[..12]
        );
        wait_for(&what, Duration::from_secs(60), || {
            let pods = pods.clone();
            let container_id = container_id.clone();
            async move {
                let pod = pods.get(&self.pod_name).await.map_err(|e| e.to_string())?;
                let status = pod.status.clone().unwrap_or_default();
                if status.phase.as_deref() != Some("Running") {
                    return Err(format!(
                        "phase {:?}, waiting for kwok to run it",
                        status.phase
                    ));
                }
                let shown = status.container_statuses.iter().flatten().any(|c| {
                    c.name == self.container
                        && c.container_id.as_deref() == Some(container_id.as_str())
                });
                if shown {
                    return Ok(());
                }
                let mut statuses = status.container_statuses.clone().unwrap_or_default();
                match statuses.iter_mut().find(|c| c.name == self.container) {
                    Some(c) => c.container_id = Some(container_id.clone()),
                    None => {
                        return Err(format!("no status for container {:?} yet", self.container));
                    }
                }
                let mut patch = serde_json::json!({"status": {"containerStatuses": statuses}});
                if let Some(netns) = &self.netns {
                    patch["status"]["podIP"] = serde_json::json!(netns.ip.to_string());
                    patch["status"]["podIPs"] = serde_json::json!([{"ip": netns.ip.to_string()}]);
                }
                pods.patch_status(
                    &self.pod_name,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
                .map_err(|e| format!("patching status: {e}"))?;
                Err("patched, re-checking".into())
            }
        })
        .await?;
        Ok(())
    }

    /// Deletes the Pod object (grace period 0) and stops the workload.
    pub async fn delete_pod(mut self) -> Result<()> {
        self.stop();
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let params = kube::api::DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        match pods.delete(&self.pod_name, &params).await {
            Ok(_) | Err(kube::Error::Api(_)) => Ok(()),
            Err(source) => Err(Error::Kube {
                context: format!("delete pod {}", self.pod_name),
                source,
            }),
        }
    }

    /// Stops the workload (and anything it forked into the cgroup).
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.terminate(Duration::from_secs(2));
        }
        // Stragglers that left the process group but not the cgroup.
        for pid in self.pids() {
            crate::process::signal_pid(pid as i32, libc::SIGKILL);
        }
    }
}

impl Drop for PodSandbox {
    fn drop(&mut self) {
        self.stop();
        // rmdir fails while the cgroup still has (dying) members: retry a little.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.cgroup).is_ok() || !self.cgroup.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Parents go when empty (another sandbox of the pod may still use them).
        if let Some(pod_slice) = self.cgroup.parent() {
            let _ = std::fs::remove_dir(pod_slice);
        }
    }
}

/// Deletes network namespaces (`ferrotel-<pid>-<n>`) and bridges
/// (`ftbr<pid>`) of sandbox owners that no longer run: what a killed test or
/// demo left behind. Names of any other shape are not ours to judge (the
/// real node's `ferrotel-node-<i>` has an owner of its own).
pub fn remove_stale_networks() {
    let alive = |pid: u32| Path::new("/proc").join(pid.to_string()).exists();
    for entry in std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = netns_owner(&name)
            && !alive(pid)
        {
            let _ = ip(&["netns", "del", &name]);
        }
    }
    for entry in std::fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = bridge_owner(&name)
            && !alive(pid)
        {
            let _ = ip(&["link", "del", &name]);
        }
    }
}

/// The owner pid of a sandbox network namespace `ferrotel-<pid>-<n>`
/// (both numbers); `None` for every other name.
fn netns_owner(name: &str) -> Option<u32> {
    let (pid, n) = name.strip_prefix("ferrotel-")?.split_once('-')?;
    n.parse::<u32>().ok()?;
    pid.parse().ok()
}

/// The owner pid of a sandbox bridge `ftbr<pid>`; `None` for other names.
fn bridge_owner(name: &str) -> Option<u32> {
    name.strip_prefix("ftbr")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sandbox_names_have_an_owner_pid() {
        assert_eq!(netns_owner("ferrotel-4242-0"), Some(4242));
        assert_eq!(netns_owner("ferrotel-4242-17"), Some(4242));
        // The real node's namespace (node.rs) is no sandbox's.
        assert_eq!(netns_owner("ferrotel-node-0"), None);
        assert_eq!(netns_owner("ferrotel-4242"), None);
        assert_eq!(netns_owner("ferrotel-4242-x"), None);
        assert_eq!(netns_owner("cni-4242-0"), None);
        assert_eq!(bridge_owner("ftbr4242"), Some(4242));
        assert_eq!(bridge_owner("ftbrx"), None);
        assert_eq!(bridge_owner("ftnode0"), None);
    }
}
