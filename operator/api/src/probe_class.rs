//! `ProbeClass` (`ferrotel.io/v1alpha1`, cluster-scoped): what the probes of
//! an Instrumentation may run as on the nodes — which image, whether
//! privileged — and which namespaces' Instrumentations may use it.
//!
//! # Why a cluster-scoped class
//!
//! An Instrumentation is namespaced, but its probes run on every node with
//! host access (`hostPID`, host `/proc`, BPF). Who may run what there is the
//! cluster admin's decision, so a namespaced Instrumentation cannot choose
//! its probe image or privileged mode on its own: it names a ProbeClass
//! (`spec.probeClassName`), which only a cluster admin can create (it is
//! cluster-scoped), and asks for nothing the class does not allow. Without a
//! class, the operator's own configuration applies: its default probe image,
//! never privileged. Host access itself (`hostPID`, mounts, capabilities) is
//! fixed by the operator and no field of either kind changes it.
//!
//! The rules, applied by the operator at every reconcile (see
//! [`admit`]):
//! - the Instrumentation's namespace must match the class's
//!   `namespaceSelector` (unset: every namespace);
//! - `spec.probe.image`, if set, must be the class's `image` or one of its
//!   `allowedImages` (an exact reference);
//! - `spec.probe.privileged: true` needs `allowPrivileged: true`;
//! - `spec.selector.namespaceSelector` (which claims namespaces that did not
//!   opt in themselves) needs `allowNamespaceSelector: true`;
//! - `spec.propagation` turned on (which mounts the node's BPF filesystem
//!   into the probes and rewrites the traced pods' outgoing requests) needs
//!   `allowPropagation: true`;
//! - `spec.views.podResources.allPods` (which reports every pod on the
//!   node, other tenants' included) needs `allowAllPodResources: true`.
//!
//! `spec.views.serviceGraph.peers: cluster` (a cluster-wide watch of Pods
//! and Services that names the peers of the service graph) needs no
//! permission: the probes' ClusterRole, shipped with the install and the
//! same for every probe, already lists and watches every Pod and Service,
//! and what the watch adds to a tenant's telemetry is the name and
//! namespace of the peers its own traced pods exchanged requests with —
//! peers it sees by address anyway, and that `peers: node` names too when
//! they share the node (docs/security.md).
//!
//! An Instrumentation that asks for more is refused (`Degraded`, reason
//! [`crate::conditions::reasons::NOT_ALLOWED`]) and its probes are removed,
//! so revoking a permission in the class takes effect at once.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::{conditions::reasons, instrumentation::InstrumentationSpec};

/// ProbeClass: the images and privilege the probes of the Instrumentations
/// that reference it may run with, and which namespaces may reference it.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "ferrotel.io",
    version = "v1alpha1",
    kind = "ProbeClass",
    shortname = "fpc",
    category = "ferrotel",
    doc = "ProbeClass is created by a cluster admin: it says which probe image and privilege level the Instrumentations that reference it (spec.probeClassName) may run on the nodes, and which namespaces may reference it.",
    printcolumn = r#"{"name":"Image","type":"string","jsonPath":".spec.image","description":"Probe image; empty: the operator's default"}"#,
    printcolumn = r#"{"name":"Privileged","type":"boolean","jsonPath":".spec.allowPrivileged","description":"Instrumentations may run their probes privileged"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ProbeClassSpec {
    /// Probe image of the Instrumentations of this class that set no
    /// `spec.probe.image`; empty: the operator's default probe image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,

    /// Other images an Instrumentation of this class may ask for in
    /// `spec.probe.image`, as exact references (e.g. a debug build pinned by
    /// digest). Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub allowed_images: Option<Vec<String>>,

    /// Whether an Instrumentation of this class may set
    /// `spec.probe.privileged: true` (for kernels that refuse BPF with
    /// capabilities alone). Default: false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_privileged: Option<bool>,

    /// Whether an Instrumentation of this class may set
    /// `spec.selector.namespaceSelector`, which instruments namespaces that
    /// did not opt in themselves (no annotation) and sends their telemetry
    /// to that Instrumentation's exporter. Default: false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_namespace_selector: Option<bool>,

    /// Whether an Instrumentation of this class may turn on
    /// `spec.propagation`: its probes then mount the node's `/sys/fs/bpf`
    /// read-write (where other tools, e.g. a CNI, pin their maps too),
    /// write trace headers into the outgoing requests of the pods they
    /// trace, and share a node-wide map of trace contexts with every other
    /// Instrumentation's probes on the node. Default: false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_propagation: Option<bool>,

    /// Whether an Instrumentation of this class may set
    /// `spec.views.podResources.allPods: true`: its probes then report the
    /// CPU, memory, disk, network and TCP health (with the peers' names) of
    /// every pod on their nodes, not only of the pods that opted in to it —
    /// other tenants' pods included — to that Instrumentation's exporter.
    /// Default: false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_all_pod_resources: Option<bool>,

    /// Namespaces whose Instrumentations may use this class, by their
    /// labels (`kubernetes.io/metadata.name` selects by name). Unset: every
    /// namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
}

/// Why an Instrumentation may not have what it asks for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "spec.probeClassName {class:?} names no ProbeClass; ask a cluster admin to create it, or remove spec.probeClassName to use the operator's defaults"
    )]
    ClassNotFound { class: String },
    #[error(
        "ProbeClass {class:?} does not admit Instrumentations from namespace {namespace:?} (its namespaceSelector); use another class or ask a cluster admin"
    )]
    NamespaceNotAdmitted { class: String, namespace: String },
    #[error(
        "ProbeClass {class:?} has an invalid namespaceSelector ({reason}); a cluster admin must fix it"
    )]
    InvalidSelector { class: String, reason: String },
    #[error(
        "spec.probe.image {image:?} is not allowed by {granted_by}; remove it to run {default}, or ask a cluster admin for a ProbeClass that lists it in allowedImages"
    )]
    ImageNotAllowed {
        image: String,
        granted_by: String,
        default: String,
    },
    #[error(
        "spec.probe.privileged: true is not allowed by {granted_by}; remove it, or ask a cluster admin for a ProbeClass with allowPrivileged: true"
    )]
    PrivilegedNotAllowed { granted_by: String },
    #[error(
        "spec.selector.namespaceSelector is not allowed by {granted_by}: it would instrument namespaces that did not opt in; opt them in with the ferrotel.io/instrument annotation instead, or ask a cluster admin for a ProbeClass with allowNamespaceSelector: true"
    )]
    NamespaceSelectorNotAllowed { granted_by: String },
    #[error(
        "spec.propagation is not allowed by {granted_by}: it mounts the node's /sys/fs/bpf into the probes and rewrites the traced pods' requests; remove it (or set inject and join to false), or ask a cluster admin for a ProbeClass with allowPropagation: true"
    )]
    PropagationNotAllowed { granted_by: String },
    #[error(
        "spec.views.podResources.allPods is not allowed by {granted_by}: it reports the resources and TCP connections of every pod on the nodes, other tenants' included, to this Instrumentation's exporter; remove it (the traced pods are reported without it), or ask a cluster admin for a ProbeClass with allowAllPodResources: true"
    )]
    AllPodsNotAllowed { granted_by: String },
}

/// What the operator grants an Instrumentation's probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The image every probe container runs.
    pub image: String,
    /// Run the probe container privileged instead of with capabilities.
    pub privileged: bool,
}

/// The class an Instrumentation names, as found (or not) by the operator.
#[derive(Debug, Clone, Copy)]
pub enum ClassRef<'a> {
    /// `spec.probeClassName` is unset: the operator's defaults.
    OperatorDefaults,
    /// The named class does not exist.
    Missing(&'a str),
    /// The named class.
    Found(&'a ProbeClass),
}

impl Refusal {
    /// The `Degraded` condition reason (and Event reason) of this refusal.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::ClassNotFound { .. } => reasons::PROBE_CLASS_NOT_FOUND,
            Refusal::InvalidSelector { .. } => reasons::INVALID_PROBE_CLASS,
            Refusal::NamespaceNotAdmitted { .. }
            | Refusal::ImageNotAllowed { .. }
            | Refusal::PrivilegedNotAllowed { .. }
            | Refusal::NamespaceSelectorNotAllowed { .. }
            | Refusal::PropagationNotAllowed { .. }
            | Refusal::AllPodsNotAllowed { .. } => reasons::NOT_ALLOWED,
        }
    }
}

/// Decides what an Instrumentation in `namespace` (whose labels are
/// `namespace_labels`) gets, given its spec, the class it names and the
/// operator's default probe image.
pub fn admit(
    class: ClassRef<'_>,
    spec: &InstrumentationSpec,
    namespace: &str,
    namespace_labels: &BTreeMap<String, String>,
    default_image: &str,
) -> Result<Grant, Refusal> {
    let (name, class) = match class {
        ClassRef::OperatorDefaults => (None, None),
        ClassRef::Missing(name) => {
            return Err(Refusal::ClassNotFound {
                class: name.to_owned(),
            });
        }
        ClassRef::Found(class) => (
            Some(class.metadata.name.clone().unwrap_or_default()),
            Some(&class.spec),
        ),
    };
    let granted_by = match &name {
        Some(name) => format!("ProbeClass {name:?}"),
        None => "the operator's defaults (spec.probeClassName is unset)".to_owned(),
    };
    if let (Some(name), Some(selector)) = (&name, class.and_then(|c| c.namespace_selector.as_ref()))
    {
        use kube::core::{Selector, SelectorExt};
        let selector =
            Selector::try_from(selector.clone()).map_err(|e| Refusal::InvalidSelector {
                class: name.clone(),
                reason: e.to_string(),
            })?;
        if !selector.matches(namespace_labels) {
            return Err(Refusal::NamespaceNotAdmitted {
                class: name.clone(),
                namespace: namespace.to_owned(),
            });
        }
    }
    let class_image = class
        .and_then(|c| c.image.as_deref())
        .map(str::trim)
        .filter(|i| !i.is_empty());
    let default = class_image.unwrap_or(default_image).to_owned();
    let probe = spec.probe.clone().unwrap_or_default();
    let image = match probe
        .image
        .as_deref()
        .map(str::trim)
        .filter(|i| !i.is_empty())
    {
        None => default,
        Some(asked) if asked == default => default,
        Some(asked)
            if class
                .and_then(|c| c.allowed_images.as_ref())
                .is_some_and(|allowed| allowed.iter().any(|a| a.trim() == asked)) =>
        {
            asked.to_owned()
        }
        Some(asked) => {
            return Err(Refusal::ImageNotAllowed {
                image: asked.to_owned(),
                granted_by,
                default,
            });
        }
    };
    let privileged = probe.privileged.unwrap_or(false);
    if privileged && !class.and_then(|c| c.allow_privileged).unwrap_or(false) {
        return Err(Refusal::PrivilegedNotAllowed { granted_by });
    }
    let selects_namespaces = spec
        .selector
        .as_ref()
        .is_some_and(|s| s.namespace_selector.is_some());
    if selects_namespaces
        && !class
            .and_then(|c| c.allow_namespace_selector)
            .unwrap_or(false)
    {
        return Err(Refusal::NamespaceSelectorNotAllowed { granted_by });
    }
    let propagates = spec
        .propagation
        .as_ref()
        .is_some_and(|p| p.probe_config().enabled());
    if propagates && !class.and_then(|c| c.allow_propagation).unwrap_or(false) {
        return Err(Refusal::PropagationNotAllowed { granted_by });
    }
    let all_pods = spec.views.as_ref().is_some_and(|v| v.reports_all_pods());
    if all_pods
        && !class
            .and_then(|c| c.allow_all_pod_resources)
            .unwrap_or(false)
    {
        return Err(Refusal::AllPodsNotAllowed { granted_by });
    }
    Ok(Grant { image, privileged })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: &str = "ghcr.io/ferrotel/ferrotel-probe:1";

    fn spec(probe: &str) -> InstrumentationSpec {
        serde_yaml::from_str(&format!(
            "languages: [go]\nexporter: {{endpoint: \"http://c:4317\"}}\nprobe: {probe}\n"
        ))
        .unwrap_or_else(|e| panic!("fixture parses: {e}"))
    }

    fn class(name: &str, yaml: &str) -> ProbeClass {
        let mut class = ProbeClass::new(
            name,
            serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("class parses: {e}")),
        );
        class.metadata.name = Some(name.into());
        class
    }

    fn labels(name: &str, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut l = BTreeMap::from([("kubernetes.io/metadata.name".to_owned(), name.to_owned())]);
        l.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        l
    }

    fn admit_in(namespace: &str, class: ClassRef<'_>, probe: &str) -> Result<Grant, Refusal> {
        admit(
            class,
            &spec(probe),
            namespace,
            &labels(namespace, &[]),
            DEFAULT,
        )
    }

    #[test]
    fn without_a_class_the_operator_default_image_runs_unprivileged() {
        assert_eq!(
            admit_in("team-a", ClassRef::OperatorDefaults, "{}"),
            Ok(Grant {
                image: DEFAULT.into(),
                privileged: false
            })
        );
        assert_eq!(
            admit_in(
                "team-a",
                ClassRef::OperatorDefaults,
                &format!("{{image: {DEFAULT:?}, privileged: false}}")
            ),
            Ok(Grant {
                image: DEFAULT.into(),
                privileged: false
            }),
            "asking for what the defaults give anyway is fine"
        );
    }

    #[test]
    fn a_namespaced_instrumentation_alone_cannot_pick_its_image_or_privileged_mode() {
        let image = admit_in(
            "team-a",
            ClassRef::OperatorDefaults,
            "{image: evil.example/probe:1}",
        )
        .expect_err("a custom image without a class must be refused");
        assert_eq!(image.reason(), reasons::NOT_ALLOWED);
        assert!(
            image.to_string().contains("\"evil.example/probe:1\"")
                && image.to_string().contains("allowedImages"),
            "the refusal names the image and the fix: {image}"
        );
        let privileged = admit_in("team-a", ClassRef::OperatorDefaults, "{privileged: true}")
            .expect_err("privileged without a class must be refused");
        assert!(
            privileged.to_string().contains("allowPrivileged: true"),
            "{privileged}"
        );
        let plain = class("plain", "{image: registry.local/probe:2}");
        assert!(
            admit_in("team-a", ClassRef::Found(&plain), "{privileged: true}").is_err(),
            "a class that does not allow privileged refuses it"
        );
        assert!(
            admit_in(
                "team-a",
                ClassRef::Found(&plain),
                &format!("{{image: {DEFAULT:?}}}")
            )
            .is_err(),
            "with a class, the operator default is just another image the class does not list"
        );
    }

    #[test]
    fn a_class_grants_its_image_allowed_images_and_privileged_mode() {
        let debug = class(
            "debug",
            "{image: registry.local/probe:2, allowedImages: [registry.local/probe:debug], allowPrivileged: true}",
        );
        assert_eq!(
            admit_in("obs", ClassRef::Found(&debug), "{}"),
            Ok(Grant {
                image: "registry.local/probe:2".into(),
                privileged: false
            }),
            "privileged is allowed, not imposed"
        );
        assert_eq!(
            admit_in(
                "obs",
                ClassRef::Found(&debug),
                "{image: registry.local/probe:debug, privileged: true}"
            ),
            Ok(Grant {
                image: "registry.local/probe:debug".into(),
                privileged: true
            })
        );
        let empty = class("empty", "{}");
        assert_eq!(
            admit_in("obs", ClassRef::Found(&empty), "{}").map(|g| g.image),
            Ok(DEFAULT.to_owned()),
            "a class without an image uses the operator default"
        );
    }

    #[test]
    fn a_class_admits_only_the_namespaces_its_selector_matches() {
        let obs_only = class(
            "privileged",
            "{allowPrivileged: true, namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: obs}}}",
        );
        assert!(admit_in("obs", ClassRef::Found(&obs_only), "{privileged: true}").is_ok());
        let refused = admit_in("team-a", ClassRef::Found(&obs_only), "{}")
            .expect_err("another namespace may not use the class");
        assert_eq!(
            refused,
            Refusal::NamespaceNotAdmitted {
                class: "privileged".into(),
                namespace: "team-a".into()
            }
        );
        let bad = class(
            "bad",
            "{namespaceSelector: {matchExpressions: [{key: a, operator: Gt, values: [x]}]}}",
        );
        assert_eq!(
            admit_in("obs", ClassRef::Found(&bad), "{}").map_err(|r| r.reason()),
            Err(reasons::INVALID_PROBE_CLASS),
            "a broken selector admits nobody"
        );
    }

    #[test]
    fn claiming_namespaces_by_selector_needs_a_class_that_allows_it() {
        let selecting = |class: ClassRef<'_>| {
            let mut s = spec("{}");
            s.selector = Some(
                serde_yaml::from_str("{namespaceSelector: {matchLabels: {team: b}}}")
                    .expect("selector parses"),
            );
            admit(class, &s, "team-a", &labels("team-a", &[]), DEFAULT)
        };
        let refused = selecting(ClassRef::OperatorDefaults)
            .expect_err("without a class an Instrumentation cannot claim other namespaces");
        assert!(
            refused.to_string().contains("allowNamespaceSelector: true"),
            "{refused}"
        );
        let platform = class("platform", "{allowNamespaceSelector: true}");
        assert!(selecting(ClassRef::Found(&platform)).is_ok());
        let mut pods_only = spec("{}");
        pods_only.selector =
            Some(serde_yaml::from_str("{podSelector: {matchLabels: {app: web}}}").expect("parses"));
        assert!(
            admit(
                ClassRef::OperatorDefaults,
                &pods_only,
                "team-a",
                &labels("team-a", &[]),
                DEFAULT
            )
            .is_ok(),
            "a podSelector only narrows what opted in"
        );
    }

    /// Admission in `team-a` of a plain spec that `edit` changes.
    fn admit_edited(
        class: ClassRef<'_>,
        edit: impl FnOnce(&mut InstrumentationSpec),
    ) -> Result<Grant, Refusal> {
        let mut s = spec("{}");
        edit(&mut s);
        admit(class, &s, "team-a", &labels("team-a", &[]), DEFAULT)
    }

    #[test]
    fn propagation_needs_a_class_that_allows_it() {
        let propagating = |class: ClassRef<'_>, section: &str| {
            admit_edited(class, |s| {
                s.propagation = Some(serde_yaml::from_str(section).expect("section parses"))
            })
        };
        for section in ["{inject: true}", "{join: true}"] {
            let refused = propagating(ClassRef::OperatorDefaults, section)
                .expect_err("without a class the node's bpffs is not mounted");
            assert_eq!(refused.reason(), reasons::NOT_ALLOWED);
            assert!(
                refused.to_string().contains("allowPropagation: true"),
                "{refused}"
            );
            let plain = class("plain", "{allowPrivileged: true}");
            assert!(
                propagating(ClassRef::Found(&plain), section).is_err(),
                "{section}: other permissions do not imply it"
            );
            let tracing = class("tracing", "{allowPropagation: true}");
            assert!(propagating(ClassRef::Found(&tracing), section).is_ok());
        }
        assert!(
            propagating(ClassRef::OperatorDefaults, "{inject: false, join: false}").is_ok(),
            "a section that turns nothing on asks for nothing"
        );
    }

    #[test]
    fn reporting_every_pod_on_the_node_needs_a_class_that_allows_it() {
        let viewing = |class: ClassRef<'_>, views: &str| {
            admit_edited(class, |s| {
                s.views = Some(serde_yaml::from_str(views).expect("views parse"))
            })
        };
        let plain = class(
            "plain",
            "{allowPrivileged: true, allowPropagation: true, allowNamespaceSelector: true}",
        );
        let platform = class("platform", "{allowAllPodResources: true}");
        for views in [
            "{podResources: {allPods: true}}",
            // TCP health alone reads the same pods.
            "{podResources: {enabled: false, allPods: true}}",
        ] {
            let refused = viewing(ClassRef::OperatorDefaults, views)
                .expect_err("without a class a probe reports only what it traces");
            assert_eq!(refused.reason(), reasons::NOT_ALLOWED, "{views}");
            assert!(
                refused.to_string().contains("allowAllPodResources: true")
                    && refused
                        .to_string()
                        .contains("spec.views.podResources.allPods"),
                "{views}: names the field and the fix: {refused}"
            );
            assert!(
                viewing(ClassRef::Found(&plain), views).is_err(),
                "{views}: other permissions do not imply it"
            );
            assert!(
                viewing(ClassRef::Found(&platform), views).is_ok(),
                "{views}"
            );
        }
        for views in [
            "{}",
            "{podResources: {allPods: false, intervalMillis: 5000}}",
            "{serviceGraph: {peers: cluster, maxEdges: 100}, tcpHealth: {enabled: false}}",
            // Nothing reads the other pods when both views are off.
            "{podResources: {enabled: false, allPods: true}, tcpHealth: {enabled: false}}",
        ] {
            assert!(
                viewing(ClassRef::OperatorDefaults, views).is_ok(),
                "{views}: asks for nothing beyond the traced pods"
            );
        }
    }

    #[test]
    fn a_missing_class_is_refused_with_its_name() {
        let refused = admit_in("team-a", ClassRef::Missing("gold"), "{}")
            .expect_err("a missing class grants nothing");
        assert_eq!(refused.reason(), reasons::PROBE_CLASS_NOT_FOUND);
        assert!(refused.to_string().contains("\"gold\""), "{refused}");
    }
}
