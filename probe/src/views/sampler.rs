//! The sampler behind pod resources and TCP health: a thread that, every
//! `views.podResources.intervalMillis`, reads the reported pods' cgroup and
//! process counters, keeps the kernel's sets of watched cgroups equal to
//! their containers, folds the kernel's counters into the metrics, and
//! reads node memory.
//!
//! # Which pods a probe reports
//!
//! Every probe on a node (one per language and Instrumentation) would
//! otherwise export the same pod twice, so:
//! - a pod is reported by the probe that traces it (claimed one of its
//!   processes), unless a process of another language of the same
//!   Instrumentation that sorts first (`go` < `python`) runs in it — then
//!   that language's probe reports it;
//! - with `views.podResources.allPods`, the pods nobody traces, and node
//!   memory, are reported by the probe of the Instrumentation's first
//!   language.
//!
//! The work is blocking file I/O (a few files per pod) and map reads, hence
//! a thread of its own rather than the async runtime.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use ferrotel_api::probe_config::{Language, ViewsConfig};
use tracing::{debug, info, warn};

use super::podnet::PodNet;
use super::pods::{NodePod, NodePods};
use super::resources::cgroup::{self, Hierarchies, PodCgroups};
use super::resources::procio::PodProcIo;
use super::resources::{NodeMemory, PodResources, PodSnapshot};
use super::tcp::{CgroupOwner, TcpHealth, TcpProbe};
use crate::health::Health;
use crate::targets::kubernetes::peers::PeerIndex;
use crate::telemetry::metrics::now_unix_nanos;
use crate::telemetry::servicegraph::GraphNode;

/// Who this probe is, for the reporting rules.
#[derive(Clone, Debug)]
pub struct Reporter {
    pub language: Language,
    /// The languages of this probe's Instrumentation (just `language`
    /// standalone).
    pub covered: Vec<Language>,
    pub node_name: String,
}

impl Reporter {
    /// Whether this probe reports node memory and untraced pods.
    pub fn reports_node(&self) -> bool {
        self.covered
            .iter()
            .min()
            .is_none_or(|first| *first == self.language)
    }

    /// Whether this probe reports `pod` (see the module docs).
    pub fn reports(&self, pod: &NodePod, all_pods: bool) -> bool {
        if pod.traced_here {
            return !pod
                .languages
                .iter()
                .any(|l| *l < self.language && self.covered.contains(l));
        }
        all_pods && self.reports_node() && !pod.traced_elsewhere
    }
}

/// What is kept per reported pod between readings.
#[derive(Debug)]
struct PodCache {
    /// The pid the cgroups were located from (located again if it exits).
    pid: u32,
    cgroups: PodCgroups,
    procio: PodProcIo,
    first_seen: u64,
    net_since: Option<u64>,
}

/// The sampler's state (on its own thread).
#[derive(Debug)]
pub struct Sampler {
    config: ViewsConfig,
    reporter: Reporter,
    proc_root: PathBuf,
    hierarchies: Hierarchies,
    podnet: Option<PodNet>,
    tcp: Option<TcpProbe>,
    resources: PodResources,
    tcp_health: TcpHealth,
    peers: PeerIndex,
    pods: NodePods,
    cache: HashMap<String, PodCache>,
    health: Health,
}

impl Sampler {
    /// Sets up the kernel sides that are enabled; one that cannot start
    /// is logged and left out (the rest still runs).
    pub fn new(
        config: &ViewsConfig,
        reporter: Reporter,
        resources: PodResources,
        tcp_health: TcpHealth,
        peers: PeerIndex,
        pods: NodePods,
        health: Health,
    ) -> Self {
        let hierarchies = Hierarchies::read().unwrap_or_else(|error| {
            warn!(%error, "Cannot read the cgroup mounts (/proc/1/mountinfo, /proc/self/mountinfo); pod resources are unavailable");
            Hierarchies::default()
        });
        let podnet = if config.pod_resources.enabled {
            let root = hierarchies.v2.iter().find(|p| p.is_dir()).cloned();
            match root
                .ok_or(super::ViewsError::NoCgroup2)
                .and_then(|r| PodNet::start(&r))
            {
                Ok(podnet) => Some(podnet),
                Err(error) => {
                    warn!(error = format!("{error:#}"), "Pod network counters are off");
                    None
                }
            }
        } else {
            None
        };
        let tcp = if config.tcp_health.enabled {
            match TcpProbe::start() {
                Ok(tcp) => Some(tcp),
                Err(error) => {
                    warn!(error = format!("{error:#}"), "TCP health is off");
                    None
                }
            }
        } else {
            None
        };
        info!(
            pod_resources = config.pod_resources.enabled,
            pod_network = podnet.is_some(),
            tcp_health = tcp.is_some(),
            all_pods = config.pod_resources.all_pods,
            node_memory = reporter.reports_node(),
            "Sampling pod resources and TCP health"
        );
        Self {
            config: config.clone(),
            reporter,
            proc_root: PathBuf::from("/proc"),
            hierarchies,
            podnet,
            tcp,
            resources,
            tcp_health,
            peers,
            pods,
            cache: HashMap::new(),
            health,
        }
    }

    /// Reads `/proc` somewhere else (a host proc mounted into the probe).
    pub fn with_proc_root(mut self, proc_root: impl Into<PathBuf>) -> Self {
        self.proc_root = proc_root.into();
        self
    }

    /// One reading of everything.
    pub fn tick(&mut self) {
        let now = now_unix_nanos();
        let all_pods = self.config.pod_resources.all_pods;
        let reported: Vec<NodePod> = self
            .pods
            .snapshot()
            .into_iter()
            .filter(|p| self.reporter.reports(p, all_pods))
            .collect();
        self.cache
            .retain(|uid, _| reported.iter().any(|p| &p.uid == uid));

        let mut snapshots = BTreeMap::new();
        let mut owners: HashMap<u64, CgroupOwner> = HashMap::new();
        let mut pod_ids: Vec<(String, Vec<u64>)> = Vec::new();
        let proc_root = self.proc_root.clone();
        for pod in &reported {
            let Some(cache) = self.locate(pod, now) else {
                continue;
            };
            let sample = cgroup::read(&cache.cgroups);
            let disk = sample.disk.or_else(|| {
                let pids = cgroup::pod_pids(&cache.cgroups);
                Some(cache.procio.update(&proc_root, &pids))
            });
            let ids = cgroup::v2_ids(&cache.cgroups);
            let node = GraphNode::new(pod.service.as_str(), Some(pod.namespace.as_str().into()));
            for id in &ids {
                owners.insert(
                    *id,
                    CgroupOwner {
                        pod_uid: pod.uid.clone(),
                        node: node.clone(),
                    },
                );
            }
            pod_ids.push((pod.uid.clone(), ids));
            snapshots.insert(
                pod.uid.clone(),
                PodSnapshot {
                    attributes: pod.attributes.clone(),
                    start_unix_nanos: cache.first_seen,
                    cpu_seconds: sample.cpu_seconds,
                    memory_usage: sample.memory_usage,
                    memory_working_set: sample.memory_working_set,
                    memory_rss: sample.memory_rss,
                    disk,
                    network: None,
                    network_start_unix_nanos: 0,
                },
            );
        }

        let watched: BTreeSet<u64> = owners.keys().copied().collect();
        if let Some(podnet) = self.podnet.as_mut() {
            let refused = podnet.watch(&watched);
            if refused > 0 {
                warn!(
                    refused,
                    "The pod network map is full; some containers' traffic is not counted"
                );
            }
            for (uid, ids) in &pod_ids {
                let mut total = ferrotel_probe_ebpf::views::NetCounters::default();
                let mut any = false;
                for id in ids {
                    if let Some(c) = podnet.read(*id) {
                        any = true;
                        total.rx_bytes += c.rx_bytes;
                        total.rx_packets += c.rx_packets;
                        total.tx_bytes += c.tx_bytes;
                        total.tx_packets += c.tx_packets;
                    }
                }
                if any
                    && let (Some(snapshot), Some(cache)) =
                        (snapshots.get_mut(uid), self.cache.get_mut(uid))
                {
                    let since = *cache.net_since.get_or_insert(now);
                    snapshot.network = Some(total);
                    snapshot.network_start_unix_nanos = since;
                }
            }
        }
        if let Some(tcp) = self.tcp.as_mut() {
            let refused = tcp.watch(&watched);
            if refused > 0 {
                warn!(
                    refused,
                    "The TCP health cgroup map is full; some containers are not watched"
                );
            }
            let attributes = snapshots
                .iter()
                .map(|(uid, s)| (uid.clone(), s.attributes.clone()))
                .collect();
            self.tcp_health
                .update(&tcp.read(), &owners, attributes, &self.peers);
        }
        if self.config.pod_resources.enabled {
            self.resources.set_pods(snapshots);
            if self.reporter.reports_node()
                && let Some(memory) = std::fs::read_to_string(self.proc_root.join("meminfo"))
                    .ok()
                    .and_then(|t| NodeMemory::parse(&t))
            {
                let mut attributes = BTreeMap::new();
                if !self.reporter.node_name.is_empty() {
                    attributes.insert("k8s.node.name".to_owned(), self.reporter.node_name.clone());
                }
                self.resources.set_node(attributes, memory);
            }
        }
        self.health.views_sampled();
    }

    /// The cached cgroups of `pod`, located from one of its processes (again
    /// when that process is gone). `None` while none of them can be read.
    fn locate(&mut self, pod: &NodePod, now: u64) -> Option<&mut PodCache> {
        let alive = |pid: u32| self.proc_root.join(pid.to_string()).exists();
        let stale = self
            .cache
            .get(&pod.uid)
            .is_none_or(|c| c.cgroups.is_empty() || !alive(c.pid));
        if stale {
            let found = pod.pids.iter().find_map(|pid| {
                let text =
                    std::fs::read_to_string(self.proc_root.join(pid.to_string()).join("cgroup"))
                        .ok()?;
                let cgroups = cgroup::locate(&text, &pod.uid, &self.hierarchies);
                (!cgroups.is_empty()).then_some((*pid, cgroups))
            });
            match found {
                Some((pid, cgroups)) => {
                    debug!(pod = %pod.uid, ?cgroups, "Located the pod's cgroups");
                    let entry = self
                        .cache
                        .entry(pod.uid.clone())
                        .or_insert_with(|| PodCache {
                            pid,
                            cgroups: PodCgroups::default(),
                            procio: PodProcIo::default(),
                            first_seen: now,
                            net_since: None,
                        });
                    entry.pid = pid;
                    entry.cgroups = cgroups;
                }
                None => return None,
            }
        }
        self.cache.get_mut(&pod.uid)
    }
}

/// Runs `sampler` every `interval` on a thread until the returned sender is
/// dropped; the thread is joined through the handle.
pub fn spawn(
    mut sampler: Sampler,
    interval: Duration,
) -> (mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (stop, stopped) = mpsc::channel::<()>();
    let handle = std::thread::Builder::new()
        .name("ferrotel-views".into())
        .spawn(move || {
            loop {
                sampler.tick();
                match stopped.recv_timeout(interval) {
                    Err(mpsc::RecvTimeoutError::Timeout) => continue,
                    _ => return,
                }
            }
        })
        .expect("spawning the views sampler thread");
    (stop, handle)
}
