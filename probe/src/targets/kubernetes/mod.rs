//! Kubernetes discovery: which processes on this node belong to opted-in
//! pods of this probe's language, and what their resource attributes are.
//!
//! ```text
//! watch Pods (spec.nodeName = $NODE_NAME) ─┐
//! watch Namespaces (metadata only) ────────┼─> ClusterState ─┐
//! exec/fork/exit tracepoints ──────────────┤                 │
//! full /proc rescan every 30 s ────────────┴─> processes ────┴─> Discovery::reconcile
//!        └ /proc/<pid>/cgroup → container ID → pod             (optin::resolve + language)
//!                                                                 └─> TargetEvent + ResourceRegistry
//! ```
//!
//! Pods and namespaces come from watches (one list, then changes only: no
//! relisting in steady state). Processes come from the kernel: every exec on
//! the node, and the forks and exits of container processes, are reported by
//! a small program set of discovery's own ([`process_events`]), so a process
//! exec'd into an opted-in pod is examined and claimed at once and an exited
//! one released at once. A slow full `/proc` rescan catches what events
//! cannot (lost events, a full watch map); without eBPF (no privileges) the
//! scan alone runs, every second. Any API change triggers an immediate
//! reconcile, so annotating a namespace takes effect within one watch event.

pub use ferrotel_parse::procfs::cgroup;
pub mod discovery;
pub mod language;
pub mod metadata;
pub mod peers;
pub mod process_events;

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use ferrotel_api::optin::{Candidate, Instrumentations};
use ferrotel_api::probe_config::{Language, PeerResolution};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use self::discovery::{Change, Discovery};
use self::metadata::{NamespaceInfo, Owner, PodInfo};
use self::peers::{PeerIndex, PodPeer, ServicePeer};
use self::process_events::{ProcessEvent, ProcessEvents};
use super::{ProcessTarget, TargetEvent, TargetPublisher};
use crate::telemetry::resource::ResourceRegistry;

/// Discovery failed to start.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error(
        "NODE_NAME is empty; set it from the downward API (env NODE_NAME valueFrom fieldRef spec.nodeName) so the probe watches only its node's pods"
    )]
    NoNodeName,
}

/// How Kubernetes discovery runs.
#[derive(Clone, Debug)]
pub struct KubernetesDiscoveryConfig {
    /// This node (`spec.nodeName` of the pods to watch).
    pub node_name: String,
    /// The probe's `--language`.
    pub language: Language,
    /// Every Instrumentation in the cluster, as the operator rendered them
    /// into the probe config (the opt-in rules need them all to resolve
    /// `"true"`).
    pub instrumentations: Vec<Candidate>,
    /// The Instrumentation this probe serves (`namespace/name`); it claims
    /// only the pods the opt-in rules give to it. `None`: all claimed pods.
    pub serves: Option<String>,
    /// Where the host's processes are (`/proc`, or the host's proc mount).
    pub proc_root: PathBuf,
    /// Follow execs, forks and exits through the kernel
    /// ([`process_events`]); falls back to polling if the programs cannot
    /// be loaded.
    pub process_events: bool,
    /// How often `/proc` is rescanned in full while process events work
    /// (a safety net for lost events).
    pub rescan_interval: Duration,
    /// How often `/proc` is scanned when process events are off or
    /// unavailable.
    pub poll_interval: Duration,
    /// Look up ReplicaSets and Jobs to name Deployments and CronJobs
    /// exactly (needs `get` on them; without it names are derived from the
    /// pod-template-hash, which is right for every Deployment-made pod).
    pub lookup_owners: bool,
    /// Where to publish peer names for the service graph (`None`: nowhere).
    pub peers: Option<PeerIndex>,
    /// Where to publish this node's pods for pod resources and TCP health.
    pub node_pods: Option<crate::views::pods::NodePods>,
    /// Whether peers are named from every pod and Service of the cluster
    /// or from this node's pods only.
    pub peer_resolution: PeerResolution,
}

impl KubernetesDiscoveryConfig {
    pub fn new(
        node_name: impl Into<String>,
        language: Language,
        instrumentations: Vec<Candidate>,
    ) -> Self {
        Self {
            node_name: node_name.into(),
            language,
            instrumentations,
            serves: None,
            proc_root: PathBuf::from("/proc"),
            process_events: true,
            rescan_interval: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
            lookup_owners: true,
            peers: None,
            node_pods: None,
            peer_resolution: PeerResolution::Cluster,
        }
    }
}

/// Selects rustls' `ring` provider for the process. Our dependency graph
/// enables both `ring` (kube) and `aws-lc-rs` (the HTTP exporter), and then
/// rustls refuses to guess: the first TLS connection to the API would panic.
/// Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The target source for `config`: Kubernetes discovery when
/// `targets.kubernetes` is set (the operator renders it so), else the
/// standalone `/proc` selection. `NODE_NAME` comes from the downward API; the
/// API client from the in-cluster ServiceAccount or `KUBECONFIG`.
pub fn target_source(config: &crate::config::RuntimeConfig) -> crate::targets::TargetSource {
    if !config.probe.targets.kubernetes {
        return crate::targets::TargetSource::Standalone;
    }
    let mut candidates = config.probe.cluster_instrumentations.clone();
    if candidates.is_empty()
        && let Some(own) = &config.probe.instrumentation
    {
        // An older operator that did not list the cluster's Instrumentations:
        // at least the one this probe serves.
        candidates.push(Candidate {
            namespace: own.namespace.clone(),
            name: own.name.clone(),
            languages: vec![config.language],
            namespace_selector: config.probe.targets.namespace_selector.clone(),
            pod_selector: config.probe.targets.pod_selector.clone(),
        });
    }
    let mut discovery = KubernetesDiscoveryConfig::new(
        std::env::var("NODE_NAME").unwrap_or_default(),
        config.language,
        candidates,
    );
    discovery.serves = config
        .probe
        .instrumentation
        .as_ref()
        .map(|own| format!("{}/{}", own.namespace, own.name));
    discovery.poll_interval = config.rescan.max(Duration::from_millis(100));
    let views = &config.probe.views;
    let (graph_enabled, resolution) = (views.service_graph.enabled, views.service_graph.peers);
    let pods_wanted = views.pod_resources.enabled || views.tcp_health.enabled;
    crate::targets::TargetSource::Custom(Box::new(move |ctx| {
        let crate::targets::TargetContext {
            publisher,
            registry,
            peers,
            pods,
            shutdown,
        } = ctx;
        if pods_wanted {
            discovery.node_pods = Some(pods);
        }
        if graph_enabled {
            discovery.peers = Some(peers);
            discovery.peer_resolution = resolution;
        }
        Box::pin(async move {
            install_crypto_provider();
            let client = kube::Client::try_default().await.map_err(|e| {
                anyhow::anyhow!(
                    "cannot reach the Kubernetes API ({e}); in a pod, mount the ServiceAccount token; outside, set KUBECONFIG"
                )
            })?;
            run(client, discovery, publisher, registry, shutdown).await?;
            Ok(())
        })
    }))
}

/// Watches pods and namespaces and publishes claims until `shutdown`.
///
/// Every claimed process gets its `k8s.*`/`service.*` attributes set in
/// `registry` *before* its `Added` event is published, so its first span
/// already carries them.
pub async fn run(
    client: kube::Client,
    config: KubernetesDiscoveryConfig,
    publisher: TargetPublisher,
    registry: ResourceRegistry,
    shutdown: CancellationToken,
) -> Result<(), DiscoveryError> {
    if config.node_name.trim().is_empty() {
        return Err(DiscoveryError::NoNodeName);
    }
    let mut discovery = Discovery::new(
        config.language,
        config.node_name.clone(),
        Instrumentations::new(config.instrumentations.clone()),
        config.proc_root.clone(),
        std::process::id(),
    )
    .serving(config.serves.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let pod_stream = watcher::watcher(
        pods,
        watcher::Config::default().fields(&format!("spec.nodeName={}", config.node_name)),
    )
    .default_backoff()
    .boxed();
    // Metadata only: labels and annotations are all the rules read.
    let namespaces: Api<PartialObjectMeta<Namespace>> = Api::all(client.clone());
    let ns_stream = watcher::watcher(namespaces, watcher::Config::default())
        .default_backoff()
        .boxed();
    // The cluster-wide peer watches (service graph names): pods of every
    // node, cut down on arrival, listed in small pages from the API
    // server's cache; Services for their ClusterIPs.
    let cluster_peers = config.peers.is_some() && config.peer_resolution == PeerResolution::Cluster;
    let mut all_pods = if cluster_peers {
        let api: Api<Pod> = Api::all(client.clone());
        watcher::watcher(
            api,
            watcher::Config::default().page_size(100).any_semantic(),
        )
        .default_backoff()
        .boxed()
    } else {
        futures::stream::pending().boxed()
    };
    let mut services = if cluster_peers {
        let api: Api<Service> = Api::all(client.clone());
        watcher::watcher(api, watcher::Config::default().any_semantic())
            .default_backoff()
            .boxed()
    } else {
        futures::stream::pending().boxed()
    };
    let mut all_pod_buffer: Option<Vec<PodPeer>> = None;
    let mut service_buffer: Option<Vec<ServicePeer>> = None;
    let mut owners = OwnerLookup::new(client, config.lookup_owners);

    let mut pod_stream = pod_stream;
    let mut ns_stream = ns_stream;
    let mut pod_buffer: Option<Vec<PodInfo>> = None;
    let mut ns_buffer: Option<Vec<NamespaceInfo>> = None;
    let (mut pods_synced, mut namespaces_synced) = (false, false);
    // Attached before the first scan, so that no process falls between.
    let mut process_events = if config.process_events {
        match ProcessEvents::start() {
            Ok(events) => Some(events),
            Err(error) => {
                warn!(error = %error, poll = ?config.poll_interval, "Cannot follow process execs and exits in the kernel; scanning /proc instead");
                None
            }
        }
    } else {
        None
    };
    let scan_every = if process_events.is_some() {
        config.rescan_interval
    } else {
        config.poll_interval
    };
    let mut scan = tokio::time::interval(scan_every);
    scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch = Vec::new();
    info!(
        node = %config.node_name,
        language = %config.language,
        process_events = process_events.is_some(),
        rescan = ?scan_every,
        "Watching pods on this node and namespaces"
    );

    loop {
        let mut api_changed = false;
        // Which peer names may have changed: this node's pods, and (after a
        // namespace change) whether cluster peers are traced.
        let (mut local_peers_changed, mut retrace_peers) = (false, false);
        tokio::select! {
            () = shutdown.cancelled() => break,
            event = pod_stream.next() => {
                match event {
                    Some(Ok(event)) => {
                        api_changed = apply_pod_event(&mut discovery, &mut pod_buffer, event, &mut owners).await;
                        pods_synced |= pod_buffer.is_none();
                        local_peers_changed = api_changed;
                    }
                    Some(Err(error)) => warn!(%error, "Pod watch failed; retrying with backoff"),
                    None => break,
                }
            }
            event = ns_stream.next() => {
                match event {
                    Some(Ok(event)) => {
                        api_changed = apply_namespace_event(&mut discovery, &mut ns_buffer, event);
                        namespaces_synced |= ns_buffer.is_none();
                        local_peers_changed = api_changed;
                        retrace_peers = api_changed;
                    }
                    Some(Err(error)) => warn!(%error, "Namespace watch failed; retrying with backoff"),
                    None => break,
                }
            }
            event = all_pods.next() => {
                if let Some(index) = &config.peers {
                    match event {
                        Some(Ok(event)) => apply_cluster_pod_event(&discovery, index, &mut all_pod_buffer, event),
                        Some(Err(error)) if is_forbidden(&error) => {
                            info!("No RBAC to list pods cluster-wide; naming service-graph peers from this node's pods only (grant list/watch on pods)");
                            all_pods = futures::stream::pending().boxed();
                        }
                        Some(Err(error)) => warn!(%error, "Cluster-wide pod watch failed; retrying with backoff"),
                        None => all_pods = futures::stream::pending().boxed(),
                    }
                }
            }
            event = services.next() => {
                if let Some(index) = &config.peers {
                    match event {
                        Some(Ok(event)) => apply_service_event(&discovery, index, &mut service_buffer, event),
                        Some(Err(error)) if is_forbidden(&error) => {
                            info!("No RBAC to list Services; ClusterIPs stay unnamed in the service graph (grant list/watch on services)");
                            services = futures::stream::pending().boxed();
                        }
                        Some(Err(error)) => warn!(%error, "Service watch failed; retrying with backoff"),
                        None => services = futures::stream::pending().boxed(),
                    }
                }
            }
            read = next_process_events(&mut process_events, &mut batch) => {
                if let Err(error) = read {
                    warn!(%error, "Reading process events failed; scanning /proc instead");
                    process_events = None;
                    scan = tokio::time::interval(config.poll_interval);
                }
                // Only container processes can change a decision: the execs
                // of host processes (most of them) cost one cgroup read.
                for event in batch.drain(..) {
                    api_changed |= match event {
                        ProcessEvent::Exec(pid) | ProcessEvent::Fork(pid) => {
                            let was_known = discovery.knows_container_process(pid);
                            let in_container = discovery.observe_process(pid);
                            if in_container && let Some(events) = process_events.as_mut() {
                                events.watch(pid);
                            }
                            in_container || was_known
                        }
                        ProcessEvent::Exit(pid) => discovery.forget_process(pid),
                        ProcessEvent::Lost => {
                            debug!("Process events were lost; rescanning /proc");
                            scan.reset_immediately();
                            false
                        }
                    };
                }
            }
            _ = scan.tick() => {
                discovery.scan_processes();
                if let Some(events) = process_events.as_mut() {
                    events.sync(discovery.container_pids());
                }
                api_changed = true;
            }
        }
        // Decisions need both lists: before they are complete, a pod's
        // namespace annotation may simply not have arrived yet.
        if api_changed && pods_synced && namespaces_synced {
            publish(discovery.reconcile(), &publisher, &registry);
            if let Some(node_pods) = &config.node_pods {
                node_pods.replace(discovery.node_pods());
            }
            publisher.ledger().discovered(discovery.take_decisions());
        }
        if let Some(index) = &config.peers {
            if local_peers_changed {
                index.replace_local(peers::local_peers(
                    &discovery.cluster,
                    discovery.instrumentations(),
                ));
            }
            if retrace_peers {
                let (cluster, instrumentations) =
                    (&discovery.cluster, discovery.instrumentations());
                index.retrace(
                    |namespace, inputs| {
                        peers::is_traced(cluster, instrumentations, namespace, inputs)
                    },
                    |namespace| {
                        peers::is_traced(cluster, instrumentations, namespace, &Default::default())
                    },
                );
            }
        }
    }
    // Release everything so that front-ends detach cleanly.
    for pid in discovery.claimed().keys() {
        registry.remove(*pid);
        publisher.publish(TargetEvent::Removed(*pid));
    }
    Ok(())
}

async fn next_process_events(
    events: &mut Option<ProcessEvents>,
    batch: &mut Vec<ProcessEvent>,
) -> std::io::Result<()> {
    match events {
        Some(events) => events.next_batch(batch).await,
        None => std::future::pending().await,
    }
}

fn publish(changes: Vec<Change>, publisher: &TargetPublisher, registry: &ResourceRegistry) {
    for change in changes {
        match change {
            Change::Claim { pid, claim } => {
                info!(
                    pid,
                    pod = claim.attributes.get("k8s.pod.name").map(String::as_str).unwrap_or(""),
                    namespace = claim.attributes.get("k8s.namespace.name").map(String::as_str).unwrap_or(""),
                    service = claim.attributes.get("service.name").map(String::as_str).unwrap_or(""),
                    exe = %claim.exe.display(),
                    "Claimed process"
                );
                registry.set_process_resource(pid, claim.attributes);
                publisher.publish(TargetEvent::Added(ProcessTarget {
                    pid,
                    exe: claim.exe,
                    reason: "kubernetes",
                }));
            }
            Change::Update { pid, claim } => {
                debug!(pid, "Updated process resource attributes");
                registry.set_process_resource(pid, claim.attributes);
            }
            Change::Release { pid } => {
                info!(pid, "Released process");
                publisher.publish(TargetEvent::Removed(pid));
                registry.remove(pid);
            }
        }
    }
}

async fn apply_pod_event(
    discovery: &mut Discovery,
    buffer: &mut Option<Vec<PodInfo>>,
    event: Event<Pod>,
    owners: &mut OwnerLookup,
) -> bool {
    match event {
        Event::Init => {
            *buffer = Some(Vec::new());
            false
        }
        Event::InitApply(pod) => {
            if let Some(info) = PodInfo::from_pod(&pod) {
                owners.resolve(discovery, &info).await;
                buffer.get_or_insert_with(Vec::new).push(info);
            }
            false
        }
        Event::InitDone => {
            let pods = buffer.take().unwrap_or_default();
            debug!(pods = pods.len(), "Pod list synced");
            discovery.cluster.replace_pods(pods);
            true
        }
        Event::Apply(pod) => match PodInfo::from_pod(&pod) {
            Some(info) => {
                owners.resolve(discovery, &info).await;
                discovery.cluster.apply_pod(info);
                true
            }
            None => false,
        },
        Event::Delete(pod) => {
            if let Some(uid) = pod.metadata.uid.as_deref() {
                discovery.cluster.delete_pod(uid);
            }
            true
        }
    }
}

/// Whether a watch failed because the probe may not list the kind.
fn is_forbidden(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status)) => status.code == 403,
        _ => false,
    }
}

fn apply_cluster_pod_event(
    discovery: &Discovery,
    index: &PeerIndex,
    buffer: &mut Option<Vec<PodPeer>>,
    event: Event<Pod>,
) {
    let peer = |pod: &Pod| {
        PodInfo::from_pod(pod)
            .map(|info| peers::pod_peer(&info, &discovery.cluster, discovery.instrumentations()))
    };
    match event {
        Event::Init => *buffer = Some(Vec::new()),
        Event::InitApply(pod) => {
            if let Some(peer) = peer(&pod) {
                buffer.get_or_insert_with(Vec::new).push(peer);
            }
        }
        Event::InitDone => {
            let pods = buffer.take().unwrap_or_default();
            debug!(
                pods = pods.len(),
                "Cluster-wide pod list synced for peer names"
            );
            index.replace_pods(pods);
        }
        Event::Apply(pod) => {
            if let Some(peer) = peer(&pod) {
                index.apply_pod(peer);
            }
        }
        Event::Delete(pod) => {
            if let Some(uid) = pod.metadata.uid.as_deref() {
                index.delete_pod(uid);
            }
        }
    }
}

fn apply_service_event(
    discovery: &Discovery,
    index: &PeerIndex,
    buffer: &mut Option<Vec<ServicePeer>>,
    event: Event<Service>,
) {
    let peer = |service: &Service| {
        peers::service_peer(service, &discovery.cluster, discovery.instrumentations())
    };
    match event {
        Event::Init => *buffer = Some(Vec::new()),
        Event::InitApply(service) => buffer.get_or_insert_with(Vec::new).push(peer(&service)),
        Event::InitDone => {
            let services = buffer.take().unwrap_or_default();
            debug!(
                services = services.len(),
                "Service list synced for peer names"
            );
            index.replace_services(services);
        }
        Event::Apply(service) => index.apply_service(peer(&service)),
        Event::Delete(service) => index.delete_service(&format!(
            "{}/{}",
            service.metadata.namespace.as_deref().unwrap_or_default(),
            service.metadata.name.as_deref().unwrap_or_default()
        )),
    }
}

fn apply_namespace_event(
    discovery: &mut Discovery,
    buffer: &mut Option<Vec<NamespaceInfo>>,
    event: Event<PartialObjectMeta<Namespace>>,
) -> bool {
    match event {
        Event::Init => {
            *buffer = Some(Vec::new());
            false
        }
        Event::InitApply(ns) => {
            buffer
                .get_or_insert_with(Vec::new)
                .push(NamespaceInfo::from_meta(&ns.metadata));
            false
        }
        Event::InitDone => {
            let namespaces = buffer.take().unwrap_or_default();
            debug!(namespaces = namespaces.len(), "Namespace list synced");
            discovery.cluster.replace_namespaces(namespaces);
            true
        }
        Event::Apply(ns) => {
            discovery
                .cluster
                .apply_namespace(NamespaceInfo::from_meta(&ns.metadata));
            true
        }
        Event::Delete(ns) => {
            discovery
                .cluster
                .delete_namespace(ns.metadata.name.as_deref().unwrap_or_default());
            true
        }
    }
}

/// Looks up the controller owner of ReplicaSets and Jobs; an owner found is
/// remembered (a controller reference is rarely replaced), a missing one is
/// asked for again on the pod's next event. A kind the probe may not read
/// (403) is not asked for again.
struct OwnerLookup {
    client: kube::Client,
    enabled: bool,
    forbidden: Vec<String>,
    known: HashSet<String>,
}

impl OwnerLookup {
    fn new(client: kube::Client, enabled: bool) -> Self {
        Self {
            client,
            enabled,
            forbidden: Vec::new(),
            known: HashSet::new(),
        }
    }

    async fn resolve(&mut self, discovery: &mut Discovery, pod: &PodInfo) {
        let Some(owner) = pod.owner.as_ref() else {
            return;
        };
        if !self.enabled
            || !matches!(owner.kind.as_str(), "ReplicaSet" | "Job")
            || self.forbidden.contains(&owner.kind)
        {
            return;
        }
        let key = format!("{}/{}", pod.namespace, owner.name);
        if self.known.contains(&key) {
            return;
        }
        let lookup = tokio::time::timeout(Duration::from_secs(2), async {
            let owner_refs = if owner.kind == "ReplicaSet" {
                Api::<ReplicaSet>::namespaced(self.client.clone(), &pod.namespace)
                    .get_metadata(&owner.name)
                    .await
                    .map(|m| m.metadata.owner_references)
            } else {
                Api::<Job>::namespaced(self.client.clone(), &pod.namespace)
                    .get_metadata(&owner.name)
                    .await
                    .map(|m| m.metadata.owner_references)
            };
            owner_refs.map(|refs| {
                refs.unwrap_or_default()
                    .into_iter()
                    .find(|o| o.controller == Some(true))
                    .map(|o| Owner {
                        kind: o.kind,
                        name: o.name,
                    })
            })
        })
        .await;
        match lookup {
            Ok(Ok(Some(found))) => {
                if self.known.len() > 4096 {
                    self.known.clear();
                }
                self.known.insert(key);
                discovery
                    .cluster
                    .set_grand_owner(&pod.namespace, &owner.name, found);
            }
            // Not remembered: a bare ReplicaSet or Job may be adopted later
            // (a Deployment adopts matching orphans), and the pod's next
            // event asks again.
            Ok(Ok(None)) => debug!(owner = %key, "Owner has no controller (yet)"),
            Ok(Err(kube::Error::Api(status))) if status.code == 403 => {
                info!(
                    kind = %owner.kind,
                    "No RBAC to get this owner kind; deriving workload names from pod-template-hash instead (grant get on replicasets.apps and jobs.batch)"
                );
                self.forbidden.push(owner.kind.clone());
            }
            Ok(Err(error)) => {
                debug!(%error, owner = %key, "Owner lookup failed; using the pod-template-hash rule")
            }
            Err(_) => {
                debug!(owner = %key, "Owner lookup timed out; using the pod-template-hash rule")
            }
        }
    }
}
