//! What the probe keeps of Pods and Namespaces, and the OpenTelemetry
//! resource attributes it derives from them.
//!
//! We keep compact copies, not the API objects: a node runs up to a few
//! hundred pods, the cluster may have thousands of namespaces, and only a
//! handful of fields matter (names, labels, our annotations, the owner and
//! the container IDs).
//!
//! Attribute names follow the OpenTelemetry semantic conventions for
//! Kubernetes (`k8s.*`) and services (`service.*`).

use std::collections::BTreeMap;

use ferrotel_api::labels::{OTEL_RESOURCE_ANNOTATION_PREFIX, SERVICE_NAME_ANNOTATION};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::ResourceExt;

use super::cgroup::ContainerId;

/// The standard "name of the application" label.
pub const APP_NAME_LABEL: &str = "app.kubernetes.io/name";
/// Set by the Deployment controller on every pod (and in the ReplicaSet
/// name's suffix): lets us name the Deployment without reading ReplicaSets.
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

/// Annotation prefixes the probe acts on; all other annotations are dropped
/// on arrival so that large annotations (last-applied-configuration…) do not
/// sit in memory.
const KEPT_ANNOTATION_PREFIXES: [&str; 3] = [
    "ferrotel.io/",
    "instrumentation.opentelemetry.io/",
    OTEL_RESOURCE_ANNOTATION_PREFIX,
];

fn kept_annotations(all: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    all.iter()
        .filter(|(key, _)| {
            KEPT_ANNOTATION_PREFIXES
                .iter()
                .any(|prefix| key.starts_with(prefix))
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The controller owner of an object (`ownerReferences[controller=true]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub kind: String,
    pub name: String,
}

/// One container of a pod: its name and, once the runtime started it, its ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerInfo {
    pub name: String,
    pub id: Option<ContainerId>,
}

/// What the probe keeps of a Pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub node_name: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub owner: Option<Owner>,
    pub containers: Vec<ContainerInfo>,
    /// `status.podIPs` (else `status.podIP`); empty for host-network pods,
    /// whose address is the node's and names no pod.
    pub ips: Vec<std::net::IpAddr>,
}

impl PodInfo {
    /// Keeps what discovery and attributes need; `None` for a pod without UID
    /// (never the case for objects read from the API).
    pub fn from_pod(pod: &Pod) -> Option<Self> {
        let uid = pod.metadata.uid.clone()?;
        let owner = pod
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true))
            .map(|o| Owner {
                kind: o.kind.clone(),
                name: o.name.clone(),
            });
        let mut containers: Vec<ContainerInfo> = pod
            .spec
            .iter()
            .flat_map(|spec| spec.containers.iter())
            .map(|c| ContainerInfo {
                name: c.name.clone(),
                id: None,
            })
            .collect();
        let statuses = pod.status.iter().flat_map(|s| {
            s.container_statuses
                .iter()
                .flatten()
                .chain(s.init_container_statuses.iter().flatten())
        });
        for status in statuses {
            let id = status
                .container_id
                .as_deref()
                .and_then(ContainerId::from_status)
                .map(|(_, id)| id);
            match containers.iter_mut().find(|c| c.name == status.name) {
                Some(container) => container.id = id,
                None => containers.push(ContainerInfo {
                    name: status.name.clone(),
                    id,
                }),
            }
        }
        let host_network = pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false);
        let ips = if host_network {
            Vec::new()
        } else {
            pod_ips(pod)
        };
        Some(Self {
            uid,
            namespace: pod.namespace().unwrap_or_default(),
            name: pod.name_any(),
            node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            labels: pod.labels().clone(),
            annotations: kept_annotations(pod.annotations()),
            owner,
            containers,
            ips,
        })
    }

    /// The container that has this ID, if any.
    pub fn container_by_id(&self, id: &ContainerId) -> Option<&ContainerInfo> {
        self.containers.iter().find(|c| c.id.as_ref() == Some(id))
    }
}

/// The addresses in a pod's status: `podIPs`, else `podIP`; unparsable ones
/// are skipped.
pub fn pod_ips(pod: &Pod) -> Vec<std::net::IpAddr> {
    let Some(status) = pod.status.as_ref() else {
        return Vec::new();
    };
    let listed: Vec<std::net::IpAddr> = status
        .pod_ips
        .iter()
        .flatten()
        .filter_map(|ip| ip.ip.parse().ok())
        .collect();
    if !listed.is_empty() {
        return listed;
    }
    status
        .pod_ip
        .as_deref()
        .and_then(|ip| ip.parse().ok())
        .into_iter()
        .collect()
}

/// What the probe keeps of a Namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamespaceInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

impl NamespaceInfo {
    pub fn from_namespace(namespace: &Namespace) -> Self {
        Self::from_meta(&namespace.metadata)
    }

    pub fn from_meta(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Self {
        Self {
            name: meta.name.clone().unwrap_or_default(),
            labels: meta.labels.clone().unwrap_or_default(),
            annotations: kept_annotations(&meta.annotations.clone().unwrap_or_default()),
        }
    }
}

/// The workload that owns a pod, as far as we can tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Workload {
    Deployment(String),
    ReplicaSet(String),
    StatefulSet(String),
    DaemonSet(String),
    Job(String),
    CronJob(String),
}

impl Workload {
    pub fn name(&self) -> &str {
        match self {
            Workload::Deployment(n)
            | Workload::ReplicaSet(n)
            | Workload::StatefulSet(n)
            | Workload::DaemonSet(n)
            | Workload::Job(n)
            | Workload::CronJob(n) => n,
        }
    }

    /// The semantic-convention attribute naming this workload.
    pub fn attribute(&self) -> &'static str {
        match self {
            Workload::Deployment(_) => "k8s.deployment.name",
            Workload::ReplicaSet(_) => "k8s.replicaset.name",
            Workload::StatefulSet(_) => "k8s.statefulset.name",
            Workload::DaemonSet(_) => "k8s.daemonset.name",
            Workload::Job(_) => "k8s.job.name",
            Workload::CronJob(_) => "k8s.cronjob.name",
        }
    }
}

/// Resolves the workload owning `pod`.
///
/// `grand_owner` is the controller owner of the pod's own owner (the
/// Deployment of a ReplicaSet, the CronJob of a Job) when the caller could
/// look it up. Without it a ReplicaSet still resolves to its Deployment when
/// its name is `<deployment>-<pod-template-hash>`, which is how the
/// Deployment controller names them — so the probe needs no RBAC on
/// ReplicaSets for the common case.
pub fn resolve_workload(pod: &PodInfo, grand_owner: Option<&Owner>) -> Option<Workload> {
    let owner = pod.owner.as_ref()?;
    let workload = match owner.kind.as_str() {
        "ReplicaSet" => match grand_owner {
            Some(g) if g.kind == "Deployment" => Workload::Deployment(g.name.clone()),
            Some(_) => Workload::ReplicaSet(owner.name.clone()),
            None => match pod.labels.get(POD_TEMPLATE_HASH_LABEL) {
                Some(hash) if !hash.is_empty() => {
                    match owner.name.strip_suffix(&format!("-{hash}")) {
                        Some(deployment) if !deployment.is_empty() => {
                            Workload::Deployment(deployment.to_owned())
                        }
                        _ => Workload::ReplicaSet(owner.name.clone()),
                    }
                }
                _ => Workload::ReplicaSet(owner.name.clone()),
            },
        },
        "Job" => match grand_owner {
            Some(g) if g.kind == "CronJob" => Workload::CronJob(g.name.clone()),
            _ => Workload::Job(owner.name.clone()),
        },
        "StatefulSet" => Workload::StatefulSet(owner.name.clone()),
        "DaemonSet" => Workload::DaemonSet(owner.name.clone()),
        "Deployment" => Workload::Deployment(owner.name.clone()),
        "CronJob" => Workload::CronJob(owner.name.clone()),
        _ => return None,
    };
    Some(workload)
}

/// The `service.name` of a container, by precedence:
/// 1. the `ferrotel.io/service-name` pod annotation,
/// 2. the `resource.opentelemetry.io/service.name` pod annotation (OTel Operator),
/// 3. the `app.kubernetes.io/name` pod label,
/// 4. the owning workload's name (Deployment, StatefulSet, …),
/// 5. the pod's name.
pub fn service_name(pod: &PodInfo, workload: Option<&Workload>) -> String {
    let otel_key = format!("{OTEL_RESOURCE_ANNOTATION_PREFIX}service.name");
    let non_empty = |v: Option<&String>| v.filter(|v| !v.trim().is_empty()).cloned();
    non_empty(pod.annotations.get(SERVICE_NAME_ANNOTATION))
        .or_else(|| non_empty(pod.annotations.get(&otel_key)))
        .or_else(|| non_empty(pod.labels.get(APP_NAME_LABEL)))
        .or_else(|| workload.map(|w| w.name().to_owned()))
        .unwrap_or_else(|| pod.name.clone())
}

/// Whether a pod annotation may set resource attribute `key`. The pod's
/// identity (`k8s.*`: namespace, pod, workload, node, cluster, ...) and the
/// tenant boundary (`service.namespace`, `service.instance.id`, which
/// embeds the namespace) come from the API server only: a tenant who may
/// annotate pods in one namespace must not make its telemetry pose as
/// another namespace's.
pub fn annotation_may_set(key: &str) -> bool {
    !(key.starts_with("k8s.") || key == "service.namespace" || key == "service.instance.id")
}

/// Every resource attribute of one container's processes.
///
/// Precedence, lowest first: the Instrumentation's `resource.attributes`, the
/// pod's `resource.opentelemetry.io/<attr>` annotations (the user's word on
/// one pod beats the platform default), then the derived `k8s.*`,
/// `service.namespace` and `service.instance.id`, which nothing overrides
/// (see [`annotation_may_set`]). `service.name` is derived unless an
/// annotation names it.
pub fn resource_attributes(
    pod: &PodInfo,
    container_name: &str,
    node_name: &str,
    grand_owner: Option<&Owner>,
    instrumentation_attributes: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut attributes = instrumentation_attributes.clone();
    let workload = resolve_workload(pod, grand_owner);
    let node = pod.node_name.as_deref().unwrap_or(node_name);
    // `service_name` already prefers the annotations' word on the name.
    attributes.insert(
        "service.name".to_owned(),
        service_name(pod, workload.as_ref()),
    );
    for (key, value) in &pod.annotations {
        if let Some(attribute) = key.strip_prefix(OTEL_RESOURCE_ANNOTATION_PREFIX)
            && !attribute.is_empty()
            && attribute != "service.name"
            && annotation_may_set(attribute)
        {
            attributes.insert(attribute.to_owned(), value.clone());
        }
    }
    // The identity goes last: annotations cannot override it, and the
    // Instrumentation's attributes only fill what is not derived.
    let mut set = |key: &str, value: &str| {
        attributes.insert(key.to_owned(), value.to_owned());
    };
    set("k8s.namespace.name", &pod.namespace);
    set("k8s.pod.name", &pod.name);
    set("k8s.pod.uid", &pod.uid);
    set("k8s.container.name", container_name);
    set("k8s.node.name", node);
    if let Some(owner) = &pod.owner
        && owner.kind == "ReplicaSet"
    {
        set("k8s.replicaset.name", &owner.name);
    }
    if let Some(owner) = &pod.owner
        && owner.kind == "Job"
    {
        set("k8s.job.name", &owner.name);
    }
    if let Some(workload) = &workload {
        set(workload.attribute(), workload.name());
    }
    set("service.namespace", &pod.namespace);
    set(
        "service.instance.id",
        &format!("{}.{}.{}", pod.namespace, pod.name, container_name),
    );
    attributes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> PodInfo {
        PodInfo {
            uid: "0e3a6c39-5b0d-4f9b-9d86-6a3a3a0c9f11".into(),
            namespace: "shop".into(),
            name: "checkout-7c9d8f6b5-x2x9q".into(),
            node_name: Some("kwok-node-0".into()),
            labels: BTreeMap::from([(POD_TEMPLATE_HASH_LABEL.into(), "7c9d8f6b5".into())]),
            annotations: BTreeMap::new(),
            owner: Some(Owner {
                kind: "ReplicaSet".into(),
                name: "checkout-7c9d8f6b5".into(),
            }),
            containers: vec![ContainerInfo {
                name: "app".into(),
                id: None,
            }],
            ips: Vec::new(),
        }
    }

    #[test]
    fn replicaset_resolves_to_its_deployment_through_the_lookup() {
        let owner = Owner {
            kind: "Deployment".into(),
            name: "checkout-v2".into(),
        };
        assert_eq!(
            resolve_workload(&pod(), Some(&owner)),
            Some(Workload::Deployment("checkout-v2".into()))
        );
    }

    #[test]
    fn replicaset_resolves_to_its_deployment_by_pod_template_hash_without_lookup() {
        assert_eq!(
            resolve_workload(&pod(), None),
            Some(Workload::Deployment("checkout".into()))
        );
    }

    #[test]
    fn bare_replicaset_stays_a_replicaset() {
        let mut pod = pod();
        pod.labels.clear();
        assert_eq!(
            resolve_workload(&pod, None),
            Some(Workload::ReplicaSet("checkout-7c9d8f6b5".into()))
        );
        let mut pod = self::pod();
        pod.labels
            .insert(POD_TEMPLATE_HASH_LABEL.into(), "otherhash".into());
        assert_eq!(
            resolve_workload(&pod, None),
            Some(Workload::ReplicaSet("checkout-7c9d8f6b5".into())),
            "a hash that is not the name's suffix proves nothing"
        );
    }

    #[test]
    fn job_of_a_cronjob_resolves_to_the_cronjob() {
        let mut pod = pod();
        pod.owner = Some(Owner {
            kind: "Job".into(),
            name: "nightly-29012345".into(),
        });
        let cron = Owner {
            kind: "CronJob".into(),
            name: "nightly".into(),
        };
        assert_eq!(
            resolve_workload(&pod, Some(&cron)),
            Some(Workload::CronJob("nightly".into()))
        );
        assert_eq!(
            resolve_workload(&pod, None),
            Some(Workload::Job("nightly-29012345".into()))
        );
    }

    #[test]
    fn statefulset_and_daemonset_own_their_pods_directly() {
        let mut pod = pod();
        pod.owner = Some(Owner {
            kind: "StatefulSet".into(),
            name: "db".into(),
        });
        assert_eq!(
            resolve_workload(&pod, None),
            Some(Workload::StatefulSet("db".into()))
        );
        pod.owner = Some(Owner {
            kind: "DaemonSet".into(),
            name: "agent".into(),
        });
        assert_eq!(
            resolve_workload(&pod, None),
            Some(Workload::DaemonSet("agent".into()))
        );
        pod.owner = None;
        assert_eq!(
            resolve_workload(&pod, None),
            None,
            "a bare pod has no workload"
        );
    }

    #[test]
    fn service_name_precedence_annotation_then_otel_annotation_then_label_then_owner_then_pod() {
        let mut pod = pod();
        let workload = resolve_workload(&pod, None);
        assert_eq!(
            service_name(&pod, workload.as_ref()),
            "checkout",
            "owner's name when nothing else is set"
        );
        pod.labels
            .insert(APP_NAME_LABEL.into(), "checkout-app".into());
        assert_eq!(
            service_name(&pod, workload.as_ref()),
            "checkout-app",
            "app.kubernetes.io/name beats the owner"
        );
        pod.annotations.insert(
            "resource.opentelemetry.io/service.name".into(),
            "otel-name".into(),
        );
        assert_eq!(
            service_name(&pod, workload.as_ref()),
            "otel-name",
            "OTel annotation beats the label"
        );
        pod.annotations
            .insert(SERVICE_NAME_ANNOTATION.into(), "ferrotel-name".into());
        assert_eq!(
            service_name(&pod, workload.as_ref()),
            "ferrotel-name",
            "ferrotel.io/service-name beats all"
        );
        let mut bare = self::pod();
        bare.owner = None;
        assert_eq!(
            service_name(&bare, None),
            bare.name,
            "a bare pod is named after itself"
        );
    }

    #[test]
    fn blank_service_name_annotations_are_ignored() {
        let mut pod = pod();
        pod.annotations
            .insert(SERVICE_NAME_ANNOTATION.into(), " ".into());
        assert_eq!(
            service_name(&pod, resolve_workload(&pod, None).as_ref()),
            "checkout"
        );
    }

    #[test]
    fn resource_attributes_carry_k8s_semantic_conventions() {
        let attributes =
            resource_attributes(&pod(), "app", "fallback-node", None, &BTreeMap::new());
        let expect = [
            ("k8s.namespace.name", "shop"),
            ("k8s.pod.name", "checkout-7c9d8f6b5-x2x9q"),
            ("k8s.pod.uid", "0e3a6c39-5b0d-4f9b-9d86-6a3a3a0c9f11"),
            ("k8s.container.name", "app"),
            ("k8s.node.name", "kwok-node-0"),
            ("k8s.replicaset.name", "checkout-7c9d8f6b5"),
            ("k8s.deployment.name", "checkout"),
            ("service.name", "checkout"),
            ("service.namespace", "shop"),
        ];
        for (key, value) in expect {
            assert_eq!(
                attributes.get(key).map(String::as_str),
                Some(value),
                "{key} in {attributes:?}"
            );
        }
    }

    #[test]
    fn pod_annotations_beat_instrumentation_attributes() {
        let mut pod = pod();
        pod.annotations.insert(
            "resource.opentelemetry.io/deployment.environment".into(),
            "canary".into(),
        );
        let platform = BTreeMap::from([
            ("deployment.environment".to_owned(), "prod".to_owned()),
            ("team".to_owned(), "payments".to_owned()),
        ]);
        let attributes = resource_attributes(&pod, "app", "n", None, &platform);
        assert_eq!(
            attributes.get("deployment.environment").map(String::as_str),
            Some("canary")
        );
        assert_eq!(
            attributes.get("team").map(String::as_str),
            Some("payments"),
            "platform attributes kept"
        );
    }

    #[test]
    fn pod_annotations_cannot_pose_as_another_namespace_or_pod() {
        let mut pod = pod();
        for (key, value) in [
            ("k8s.namespace.name", "payments"),
            ("k8s.pod.name", "ledger-0"),
            ("k8s.deployment.name", "ledger"),
            ("k8s.cluster.name", "prod-eu"),
            ("service.namespace", "payments"),
            ("service.instance.id", "payments.ledger-0.app"),
            ("team", "shop-team"),
        ] {
            pod.annotations.insert(
                format!("{OTEL_RESOURCE_ANNOTATION_PREFIX}{key}"),
                value.into(),
            );
        }
        let platform = BTreeMap::from([
            ("k8s.cluster.name".to_owned(), "prod-us".to_owned()),
            ("k8s.namespace.name".to_owned(), "platform".to_owned()),
        ]);
        let attributes = resource_attributes(&pod, "app", "n", None, &platform);
        let get = |k: &str| attributes.get(k).map(String::as_str);
        assert_eq!(get("k8s.namespace.name"), Some("shop"));
        assert_eq!(get("k8s.pod.name"), Some("checkout-7c9d8f6b5-x2x9q"));
        assert_eq!(get("k8s.deployment.name"), Some("checkout"));
        assert_eq!(get("service.namespace"), Some("shop"));
        assert_eq!(
            get("service.instance.id"),
            Some("shop.checkout-7c9d8f6b5-x2x9q.app")
        );
        assert_eq!(
            get("k8s.cluster.name"),
            Some("prod-us"),
            "only the platform's Instrumentation names the cluster"
        );
        assert_eq!(
            get("team"),
            Some("shop-team"),
            "other attributes are the pod's to set"
        );
    }

    #[test]
    fn only_annotations_the_probe_acts_on_are_kept() {
        let all = BTreeMap::from([
            (
                "kubectl.kubernetes.io/last-applied-configuration".to_owned(),
                "{...}".to_owned(),
            ),
            ("ferrotel.io/instrument".to_owned(), "true".to_owned()),
            ("resource.opentelemetry.io/team".to_owned(), "a".to_owned()),
        ]);
        let kept = kept_annotations(&all);
        assert_eq!(kept.len(), 2, "kept {kept:?}");
        assert!(!kept.contains_key("kubectl.kubernetes.io/last-applied-configuration"));
    }

    #[test]
    fn pod_info_reads_container_ids_from_status() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "uid": "x", "controller": true}]},
            "spec": {"nodeName": "n1", "containers": [{"name": "app"}, {"name": "sidecar"}]},
            "status": {"containerStatuses": [
                {"name": "app", "containerID": format!("containerd://{}", "a".repeat(64)), "image": "", "imageID": "", "ready": true, "restartCount": 0},
                {"name": "sidecar", "image": "", "imageID": "", "ready": false, "restartCount": 0}
            ]}
        }))
        .expect("pod fixture parses");
        let info = PodInfo::from_pod(&pod).expect("pod has a uid");
        let id = ContainerId::parse(&"a".repeat(64)).expect("valid id");
        assert_eq!(
            info.container_by_id(&id).map(|c| c.name.as_str()),
            Some("app")
        );
        assert_eq!(info.containers[1].id, None, "sidecar not started yet");
        assert_eq!(
            info.owner,
            Some(Owner {
                kind: "StatefulSet".into(),
                name: "db".into()
            })
        );
        assert_eq!(info.node_name.as_deref(), Some("n1"));
    }
}
