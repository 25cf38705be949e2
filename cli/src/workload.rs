//! Which workload a pod belongs to, from what the pod itself says (no
//! extra API reads): its controller ownerReference, with a ReplicaSet made
//! by a Deployment recognised by the `pod-template-hash` suffix the
//! Deployment controller gives both.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

/// `kind/name`, kubectl's short kinds: `deploy/web`, `sts/db`, `ds/agent`,
/// `job/migrate`, `rs/legacy`, `pod/debug`.
pub fn workload_of(pod: &Pod) -> String {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let owner = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true));
    let Some(owner) = owner else {
        return format!("pod/{name}");
    };
    match owner.kind.as_str() {
        "ReplicaSet" => {
            let hash = pod
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("pod-template-hash"));
            match hash.and_then(|h| owner.name.strip_suffix(&format!("-{h}"))) {
                Some(deployment) => format!("deploy/{deployment}"),
                None => format!("rs/{}", owner.name),
            }
        }
        "StatefulSet" => format!("sts/{}", owner.name),
        "DaemonSet" => format!("ds/{}", owner.name),
        "Job" => format!("job/{}", owner.name),
        other => format!("{}/{}", other.to_ascii_lowercase(), owner.name),
    }
}

/// `namespace/pod` → workload, for every pod given.
pub fn index(pods: &[Pod]) -> BTreeMap<(String, String), String> {
    pods.iter()
        .filter_map(|p| {
            Some((
                (p.metadata.namespace.clone()?, p.metadata.name.clone()?),
                workload_of(p),
            ))
        })
        .collect()
}

/// Whether `workload` (as written by a user: `deploy/web`, `deployment/web`,
/// `web`) names `actual` (`deploy/web`).
pub fn matches(workload: &str, actual: &str) -> bool {
    let (want_kind, want_name) = match workload.split_once('/') {
        Some((kind, name)) => (Some(short_kind(kind)), name),
        None => (None, workload),
    };
    let (kind, name) = actual.split_once('/').unwrap_or(("", actual));
    name == want_name && want_kind.is_none_or(|k| k == kind)
}

/// kubectl's short name of a workload kind (`deployment` → `deploy`), or
/// `kind` itself when it is none of them.
pub fn short_kind(kind: &str) -> &str {
    match kind.to_ascii_lowercase().as_str() {
        "deployment" | "deployments" | "deploy" => "deploy",
        "statefulset" | "statefulsets" | "sts" => "sts",
        "daemonset" | "daemonsets" | "ds" => "ds",
        "job" | "jobs" => "job",
        "replicaset" | "replicasets" | "rs" => "rs",
        "pod" | "pods" | "po" => "pod",
        _ => kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    fn pod(owner: Option<(&str, &str)>, hash: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("p-1".into()),
                namespace: Some("shop".into()),
                labels: hash.map(|h| [("pod-template-hash".to_owned(), h.to_owned())].into()),
                owner_references: owner.map(|(kind, name)| {
                    vec![OwnerReference {
                        kind: kind.into(),
                        name: name.into(),
                        controller: Some(true),
                        ..OwnerReference::default()
                    }]
                }),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        }
    }

    #[test]
    fn a_deployments_pod_names_the_deployment_and_other_owners_their_kind() {
        assert_eq!(
            workload_of(&pod(Some(("ReplicaSet", "web-7d4b9c")), Some("7d4b9c"))),
            "deploy/web"
        );
        assert_eq!(
            workload_of(&pod(Some(("ReplicaSet", "web-legacy")), None)),
            "rs/web-legacy",
            "an adopted ReplicaSet without the hash suffix stays a ReplicaSet"
        );
        assert_eq!(
            workload_of(&pod(Some(("StatefulSet", "db")), None)),
            "sts/db"
        );
        assert_eq!(workload_of(&pod(None, None)), "pod/p-1");
    }

    #[test]
    fn a_workload_argument_matches_with_or_without_its_kind() {
        assert!(matches("web", "deploy/web"));
        assert!(matches("deployment/web", "deploy/web"));
        assert!(matches("deploy/web", "deploy/web"));
        assert!(!matches("sts/web", "deploy/web"));
        assert!(!matches("we", "deploy/web"));
    }
}
