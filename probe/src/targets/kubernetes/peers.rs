//! Who is behind a peer address: the index the service graph names edge
//! ends with ([`PeerLookup`]).
//!
//! # Sources, most precise first
//!
//! 1. **Pods on this node**, from discovery's own pod watch: the same
//!    `service.name` the probe gives its own spans (the Deployment read from
//!    the ReplicaSet when RBAC allows).
//! 2. **Every pod of the cluster** (`views.serviceGraph.peers: cluster`, the
//!    default): a second pod watch without a node filter. Each Pod is cut
//!    down on arrival to its addresses, `service.name` (the same rules, the
//!    Deployment named by the pod-template-hash rule), namespace and the
//!    few annotations the opt-in rules read — pod labels only when an
//!    Instrumentation selects pods by label. Host-network pods are left out:
//!    their address is their node's.
//! 3. **Services' ClusterIPs**: a client connected to a Service sees its
//!    ClusterIP as the peer (kube-proxy rewrites the destination below the
//!    socket), so a ClusterIP names the Service (its Kubernetes name).
//!
//! # Traced or not
//!
//! A peer is *traced* when the opt-in rules (`ferrotel_api::optin`) claim it
//! for some language, evaluated with what this probe knows (the peer's
//! namespace and annotations; detection of the language is not possible for
//! a remote pod, so an opted-in pod in a language Ferrotel does not trace
//! counts as traced and its incoming edges are counted by nobody). A
//! Service is traced when its namespace is opted in. Entries are
//! re-evaluated when a namespace changes.
//!
//! # Cost
//!
//! The cluster-wide watch is the cost: every pod change in the cluster
//! reaches every probe (as it does every kube-proxy for EndpointSlices).
//! What stays in memory is a few hundred bytes per pod (addresses, names,
//! opt-in annotations; not measured at scale yet). `peers: node` turns it
//! off: peers on other nodes are then `user` (callers) or their address
//! (servers).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use ferrotel_api::optin::{self, Decision, Instrumentations, NamespaceView, PodView};
use ferrotel_api::probe_config::Language;

use super::discovery::ClusterState;
use super::metadata::{self, NamespaceInfo, PodInfo};
use crate::telemetry::servicegraph::{PeerIdentity, PeerLookup, canonical_ip};

/// What the opt-in rules need to re-decide whether a pod is traced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OptInInputs {
    /// Pod labels, kept only when an Instrumentation selects pods by label.
    pub labels: Option<BTreeMap<String, String>>,
    /// The opt-in annotations (`ferrotel.io/…`, OpenTelemetry inject keys).
    pub annotations: BTreeMap<String, String>,
}

/// One pod, as the index keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodPeer {
    pub uid: String,
    pub ips: Vec<IpAddr>,
    pub service: Arc<str>,
    pub namespace: Arc<str>,
    pub inputs: OptInInputs,
    pub traced: bool,
}

/// One Service with ClusterIPs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePeer {
    /// `namespace/name`.
    pub key: String,
    pub ips: Vec<IpAddr>,
    pub name: Arc<str>,
    pub namespace: Arc<str>,
    pub traced: bool,
}

/// The index's maps, looked up for every span: foldhash instead of
/// SipHash (keys are addresses and names from the Kubernetes API; traffic
/// only looks them up, so it cannot flood them).
type Map<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

#[derive(Debug, Default)]
struct Inner {
    local: Map<IpAddr, PeerIdentity>,
    pods: Map<String, PodPeer>,
    pod_by_ip: Map<IpAddr, String>,
    services: Map<String, ServicePeer>,
    service_by_ip: Map<IpAddr, String>,
    /// Service and namespace names are shared by many pods: one allocation each.
    strings: HashSet<Arc<str>>,
}

impl Inner {
    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(found) = self.strings.get(s) {
            return found.clone();
        }
        // Bounded by the distinct workload and namespace names, but a long
        // churn of one-off names (Jobs) must not grow it forever.
        if self.strings.len() > 4 * (self.pods.len() + self.services.len()) + 1024 {
            self.strings.clear();
        }
        let arc: Arc<str> = Arc::from(s);
        self.strings.insert(arc.clone());
        arc
    }

    fn remove_pod(&mut self, uid: &str) {
        if let Some(old) = self.pods.remove(uid) {
            release(&mut self.pod_by_ip, &old.ips, uid);
        }
    }

    fn insert_pod(&mut self, mut pod: PodPeer) {
        self.remove_pod(&pod.uid);
        pod.service = self.intern(&pod.service);
        pod.namespace = self.intern(&pod.namespace);
        claim(&mut self.pod_by_ip, &pod.ips, &pod.uid);
        self.pods.insert(pod.uid.clone(), pod);
    }

    fn remove_service(&mut self, key: &str) {
        if let Some(old) = self.services.remove(key) {
            release(&mut self.service_by_ip, &old.ips, key);
        }
    }

    fn insert_service(&mut self, mut service: ServicePeer) {
        self.remove_service(&service.key);
        service.name = self.intern(&service.name);
        service.namespace = self.intern(&service.namespace);
        claim(&mut self.service_by_ip, &service.ips, &service.key);
        self.services.insert(service.key.clone(), service);
    }
}

/// Points `ips` at `owner`: a newer object may reuse an address a deleted
/// one had.
fn claim(by_ip: &mut Map<IpAddr, String>, ips: &[IpAddr], owner: &str) {
    for ip in ips {
        by_ip.insert(*ip, owner.to_owned());
    }
}

/// Forgets `owner`'s addresses, except those a newer owner took meanwhile.
fn release(by_ip: &mut Map<IpAddr, String>, ips: &[IpAddr], owner: &str) {
    for ip in ips {
        if by_ip.get(ip).is_some_and(|o| o == owner) {
            by_ip.remove(ip);
        }
    }
}

/// Counts of what the index holds, for the probe's health metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IndexSize {
    pub local: usize,
    pub pods: usize,
    pub services: usize,
}

/// Peer address → identity, written by discovery and read by the pipeline.
/// Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct PeerIndex {
    inner: Arc<RwLock<Inner>>,
}

impl PeerLookup for PeerIndex {
    fn lookup(&self, ip: IpAddr) -> Option<PeerIdentity> {
        let ip = canonical_ip(ip);
        let inner = self.inner.read().expect("peer index lock");
        if let Some(local) = inner.local.get(&ip) {
            return Some(local.clone());
        }
        if let Some(pod) = inner.pod_by_ip.get(&ip).and_then(|uid| inner.pods.get(uid)) {
            return Some(PeerIdentity {
                service: pod.service.clone(),
                namespace: pod.namespace.clone(),
                traced: pod.traced,
            });
        }
        let service = inner
            .service_by_ip
            .get(&ip)
            .and_then(|key| inner.services.get(key))?;
        Some(PeerIdentity {
            service: service.name.clone(),
            namespace: service.namespace.clone(),
            traced: service.traced,
        })
    }

    /// A Service by DNS name: `name.namespace.svc[.<cluster domain>]`,
    /// `name.namespace`, or a bare `name` in the caller's namespace.
    fn lookup_host(&self, host: &str, caller_namespace: Option<&str>) -> Option<PeerIdentity> {
        let host = host.trim_end_matches('.');
        let mut parts = host.split('.');
        let name = parts.next()?;
        let key = match (parts.next(), parts.next()) {
            (None, _) => format!("{}/{name}", caller_namespace?),
            (Some(namespace), None) => format!("{namespace}/{name}"),
            (Some(namespace), Some("svc")) => format!("{namespace}/{name}"),
            // Any other name is outside the cluster.
            _ => return None,
        };
        let inner = self.inner.read().expect("peer index lock");
        let service = inner.services.get(&key)?;
        Some(PeerIdentity {
            service: service.name.clone(),
            namespace: service.namespace.clone(),
            traced: service.traced,
        })
    }
}

impl PeerIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the pods of this node (discovery calls it after every pod or
    /// namespace change).
    pub fn replace_local(&self, entries: HashMap<IpAddr, PeerIdentity>) {
        self.inner.write().expect("peer index lock").local = entries.into_iter().collect();
    }

    pub fn apply_pod(&self, pod: PodPeer) {
        let mut inner = self.inner.write().expect("peer index lock");
        if pod.ips.is_empty() {
            // Not running yet, or host network: nothing to find it by.
            inner.remove_pod(&pod.uid);
        } else {
            inner.insert_pod(pod);
        }
    }

    pub fn delete_pod(&self, uid: &str) {
        self.inner.write().expect("peer index lock").remove_pod(uid);
    }

    /// Replaces every cluster pod (after the watch listed them again).
    pub fn replace_pods(&self, pods: impl IntoIterator<Item = PodPeer>) {
        let mut inner = self.inner.write().expect("peer index lock");
        inner.pods.clear();
        inner.pod_by_ip.clear();
        for pod in pods {
            if !pod.ips.is_empty() {
                inner.insert_pod(pod);
            }
        }
        inner.pods.shrink_to_fit();
        inner.pod_by_ip.shrink_to_fit();
    }

    pub fn apply_service(&self, service: ServicePeer) {
        let mut inner = self.inner.write().expect("peer index lock");
        if service.ips.is_empty() {
            inner.remove_service(&service.key);
        } else {
            inner.insert_service(service);
        }
    }

    pub fn delete_service(&self, key: &str) {
        self.inner
            .write()
            .expect("peer index lock")
            .remove_service(key);
    }

    pub fn replace_services(&self, services: impl IntoIterator<Item = ServicePeer>) {
        let mut inner = self.inner.write().expect("peer index lock");
        inner.services.clear();
        inner.service_by_ip.clear();
        for service in services {
            if !service.ips.is_empty() {
                inner.insert_service(service);
            }
        }
    }

    /// Re-decides `traced` for every pod and Service (a namespace's
    /// annotations or labels changed, or the namespaces were listed).
    pub fn retrace(
        &self,
        pod_traced: impl Fn(&str, &OptInInputs) -> bool,
        service_traced: impl Fn(&str) -> bool,
    ) {
        let mut inner = self.inner.write().expect("peer index lock");
        for pod in inner.pods.values_mut() {
            pod.traced = pod_traced(&pod.namespace, &pod.inputs);
        }
        for service in inner.services.values_mut() {
            service.traced = service_traced(&service.namespace);
        }
    }

    pub fn size(&self) -> IndexSize {
        let inner = self.inner.read().expect("peer index lock");
        IndexSize {
            local: inner.local.len(),
            pods: inner.pods.len(),
            services: inner.services.len(),
        }
    }
}

/// Whether the opt-in rules claim a pod with `inputs` in `namespace` for
/// any language (see the module docs on what "traced" can know).
pub fn is_traced(
    cluster: &ClusterState,
    instrumentations: &Instrumentations,
    namespace: &str,
    inputs: &OptInInputs,
) -> bool {
    let fallback = NamespaceInfo {
        name: namespace.to_owned(),
        ..Default::default()
    };
    let ns = cluster.namespace(namespace).unwrap_or(&fallback);
    let no_labels = BTreeMap::new();
    let ns_view = NamespaceView {
        name: &ns.name,
        labels: &ns.labels,
        annotations: &ns.annotations,
    };
    let pod_view = PodView {
        labels: inputs.labels.as_ref().unwrap_or(&no_labels),
        annotations: &inputs.annotations,
    };
    Language::ALL.iter().any(|language| {
        matches!(
            optin::resolve(instrumentations, &ns_view, &pod_view, *language, None),
            Ok(Decision::Claimed(_))
        )
    })
}

/// What the opt-in rules will need of `pod` later (labels only if some
/// Instrumentation selects pods by label).
pub fn opt_in_inputs(pod: &PodInfo, instrumentations: &Instrumentations) -> OptInInputs {
    OptInInputs {
        labels: instrumentations
            .select_pods_by_label()
            .then(|| pod.labels.clone()),
        annotations: pod.annotations.clone(),
    }
}

/// A pod of another node (or this one), cut down for the index.
pub fn pod_peer(
    pod: &PodInfo,
    cluster: &ClusterState,
    instrumentations: &Instrumentations,
) -> PodPeer {
    let inputs = opt_in_inputs(pod, instrumentations);
    let traced = is_traced(cluster, instrumentations, &pod.namespace, &inputs);
    let workload = metadata::resolve_workload(pod, None);
    PodPeer {
        uid: pod.uid.clone(),
        ips: pod.ips.iter().map(|ip| canonical_ip(*ip)).collect(),
        service: metadata::service_name(pod, workload.as_ref()).into(),
        namespace: pod.namespace.as_str().into(),
        inputs,
        traced,
    }
}

/// A Service, cut down for the index; traced when its namespace is opted in.
pub fn service_peer(
    service: &k8s_openapi::api::core::v1::Service,
    cluster: &ClusterState,
    instrumentations: &Instrumentations,
) -> ServicePeer {
    let namespace = service.metadata.namespace.clone().unwrap_or_default();
    let name = service.metadata.name.clone().unwrap_or_default();
    let traced = is_traced(
        cluster,
        instrumentations,
        &namespace,
        &OptInInputs::default(),
    );
    ServicePeer {
        key: format!("{namespace}/{name}"),
        ips: service_ips(service).into_iter().map(canonical_ip).collect(),
        name: name.as_str().into(),
        namespace: namespace.as_str().into(),
        traced,
    }
}

/// This node's pods by address, named exactly as the probe names its own
/// spans (grand owners looked up where RBAC allowed).
pub fn local_peers(
    cluster: &ClusterState,
    instrumentations: &Instrumentations,
) -> HashMap<IpAddr, PeerIdentity> {
    let mut out = HashMap::new();
    for pod in cluster.pods() {
        if pod.ips.is_empty() {
            continue;
        }
        let workload = metadata::resolve_workload(pod, cluster.grand_owner_of(pod));
        let inputs = opt_in_inputs(pod, instrumentations);
        let identity = PeerIdentity {
            service: metadata::service_name(pod, workload.as_ref()).into(),
            namespace: pod.namespace.as_str().into(),
            traced: is_traced(cluster, instrumentations, &pod.namespace, &inputs),
        };
        for ip in &pod.ips {
            out.insert(canonical_ip(*ip), identity.clone());
        }
    }
    out
}

/// The ClusterIPs of a Service (`spec.clusterIPs`, else `spec.clusterIP`);
/// headless Services (`None`) have none.
pub fn service_ips(service: &k8s_openapi::api::core::v1::Service) -> Vec<IpAddr> {
    let Some(spec) = service.spec.as_ref() else {
        return Vec::new();
    };
    let listed: Vec<&String> = match &spec.cluster_ips {
        Some(ips) if !ips.is_empty() => ips.iter().collect(),
        _ => spec.cluster_ip.iter().collect(),
    };
    listed
        .into_iter()
        .filter_map(|ip| ip.parse::<IpAddr>().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, ip: &str, service: &str, traced: bool) -> PodPeer {
        PodPeer {
            uid: uid.into(),
            ips: vec![ip.parse().unwrap()],
            service: service.into(),
            namespace: "shop".into(),
            inputs: OptInInputs::default(),
            traced,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn local_pods_win_over_cluster_pods_and_cluster_pods_over_services() {
        let index = PeerIndex::new();
        index.apply_service(ServicePeer {
            key: "shop/catalog".into(),
            ips: vec![ip("10.96.0.10")],
            name: "catalog".into(),
            namespace: "shop".into(),
            traced: true,
        });
        index.apply_pod(pod("u1", "10.1.0.5", "catalog-from-cluster", true));
        index.replace_local(HashMap::from([(
            ip("10.1.0.5"),
            PeerIdentity {
                service: "catalog".into(),
                namespace: "shop".into(),
                traced: true,
            },
        )]));
        assert_eq!(
            index.lookup(ip("10.1.0.5")).unwrap().service.as_ref(),
            "catalog",
            "the node's own pod watch is the more precise name"
        );
        index.replace_local(HashMap::new());
        assert_eq!(
            index.lookup(ip("10.1.0.5")).unwrap().service.as_ref(),
            "catalog-from-cluster"
        );
        assert_eq!(
            index
                .lookup(ip("::ffff:10.96.0.10"))
                .unwrap()
                .service
                .as_ref(),
            "catalog",
            "a ClusterIP names its Service, also as an IPv4-mapped address"
        );
        assert_eq!(index.lookup(ip("10.1.0.6")), None);
    }

    #[test]
    fn service_dns_names_resolve_in_every_spelling() {
        let index = PeerIndex::new();
        index.apply_service(ServicePeer {
            key: "shop/catalog".into(),
            ips: vec![ip("10.96.0.10")],
            name: "catalog".into(),
            namespace: "shop".into(),
            traced: false,
        });
        for (host, caller) in [
            ("catalog", Some("shop")),
            ("catalog.shop", None),
            ("catalog.shop.svc", None),
            ("catalog.shop.svc.cluster.local", Some("other")),
            ("catalog.shop.svc.cluster.local.", None),
        ] {
            assert_eq!(
                index
                    .lookup_host(host, caller)
                    .map(|p| p.service.to_string()),
                Some("catalog".into()),
                "{host} from {caller:?}"
            );
        }
        assert_eq!(index.lookup_host("catalog", Some("other")), None);
        assert_eq!(index.lookup_host("catalog", None), None);
        assert_eq!(index.lookup_host("api.example.com", Some("shop")), None);
    }

    #[test]
    fn a_reused_address_names_the_newer_pod_and_deleting_the_older_keeps_it() {
        let index = PeerIndex::new();
        index.apply_pod(pod("old", "10.1.0.5", "old-app", true));
        index.apply_pod(pod("new", "10.1.0.5", "new-app", false));
        index.delete_pod("old");
        let found = index
            .lookup(ip("10.1.0.5"))
            .expect("the new pod keeps the address");
        assert_eq!(found.service.as_ref(), "new-app");
        assert!(!found.traced);
        index.delete_pod("new");
        assert_eq!(index.lookup(ip("10.1.0.5")), None);
    }

    #[test]
    fn a_pod_that_lost_its_address_leaves_the_index() {
        let index = PeerIndex::new();
        index.apply_pod(pod("u1", "10.1.0.5", "app", true));
        let mut gone = pod("u1", "10.1.0.5", "app", true);
        gone.ips.clear();
        index.apply_pod(gone);
        assert_eq!(index.lookup(ip("10.1.0.5")), None);
        assert_eq!(index.size().pods, 0);
    }

    #[test]
    fn retrace_redecides_by_namespace() {
        let index = PeerIndex::new();
        index.apply_pod(pod("u1", "10.1.0.5", "app", false));
        let mut other = pod("u2", "10.1.0.6", "other", false);
        other.namespace = "ops".into();
        index.apply_pod(other);
        index.retrace(|ns, _| ns == "shop", |ns| ns == "shop");
        assert!(index.lookup(ip("10.1.0.5")).unwrap().traced);
        assert!(
            !index.lookup(ip("10.1.0.6")).unwrap().traced,
            "another namespace stays untraced"
        );
    }

    #[test]
    fn names_are_shared_between_pods_of_one_workload() {
        let index = PeerIndex::new();
        index.replace_pods([
            pod("u1", "10.1.0.5", "app", true),
            pod("u2", "10.1.0.6", "app", true),
        ]);
        let a = index.lookup(ip("10.1.0.5")).unwrap();
        let b = index.lookup(ip("10.1.0.6")).unwrap();
        assert!(
            Arc::ptr_eq(&a.service, &b.service),
            "one allocation per name"
        );
    }
}
