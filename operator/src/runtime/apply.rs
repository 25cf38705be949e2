//! Server-side apply and pruning, shared by every controller, for namespaced
//! and cluster-scoped children alike.
//!
//! All writes go through [`apply`] with the one field manager
//! ([`ferrotel_api::labels::FIELD_MANAGER`]) and `force`: the operator owns
//! the fields it sets, and applying identical content is a no-op in the API
//! server (resourceVersion unchanged), so re-reconciling — or restarting the
//! operator — changes no stored object. Never read-modify-write a child
//! instead.
//!
//! [`apply_unless_unchanged`] skips the request when the controller's watch
//! cache of the child already holds every field the operator sets
//! ([`unchanged`]): applying identical content is a no-op for the API server
//! but still a PATCH request, and a restarted operator would send one per
//! child.
//!
//! [`prune_cached`] deletes children (found in a watch cache) that carry the
//! owner's labels and an ownerReference to the object being reconciled but
//! are not in the set just applied (a mode switch, a removed language, old
//! hashed ConfigMaps).

use std::{collections::BTreeSet, fmt::Debug};

use ferrotel_api::labels::FIELD_MANAGER;
use k8s_openapi::{ClusterResourceScope, NamespaceResourceScope};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
};
use serde::{Serialize, de::DeserializeOwned};

/// A child that could not be written or deleted, named by kind and name.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to apply {kind} {name}")]
    Apply {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to prune {kind} children of {owner}")]
    Prune {
        kind: String,
        /// `Kind namespace/name` of the object whose children these are.
        owner: String,
        #[source]
        source: kube::Error,
    },
}

impl Error {
    /// The API server's answer.
    pub fn kube(&self) -> &kube::Error {
        match self {
            Error::Apply { source, .. } | Error::Prune { source, .. } => source,
        }
    }

    /// What failed and the API server's own words, for a condition or an
    /// Event: `failed to apply DaemonSet otel/x: DaemonSet.apps "x" is
    /// invalid: …`.
    pub fn describe(&self) -> String {
        match self.kube() {
            kube::Error::Api(status) => format!("{self}: {}", status.message),
            other => format!("{self}: {other}"),
        }
    }

    /// Event and condition reason (bounded set).
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Apply { .. } => "ApplyFailed",
            Error::Prune { .. } => "PruneFailed",
        }
    }
}

/// The `Api` for an object of a given scope: implemented by kube's two
/// scopes, so that [`apply`] and [`prune`] serve both.
pub trait ApiScope: Sized {
    /// An `Api` in `namespace` (ignored for cluster-scoped kinds).
    fn api<K>(client: Client, namespace: Option<&str>) -> Api<K>
    where
        K: Resource<Scope = Self, DynamicType = ()>;
}

impl ApiScope for NamespaceResourceScope {
    fn api<K>(client: Client, namespace: Option<&str>) -> Api<K>
    where
        K: Resource<Scope = Self, DynamicType = ()>,
    {
        Api::namespaced(client, namespace.unwrap_or_default())
    }
}

impl ApiScope for ClusterResourceScope {
    fn api<K>(client: Client, _namespace: Option<&str>) -> Api<K>
    where
        K: Resource<Scope = Self, DynamicType = ()>,
    {
        Api::all(client)
    }
}

/// Applies `obj` (which must carry its name, and its namespace if it has
/// one) and returns the object as stored, including its status.
pub async fn apply<K>(client: &Client, obj: &K) -> Result<K, Error>
where
    K: Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned,
    K::Scope: ApiScope,
{
    let api: Api<K> = K::Scope::api(client.clone(), obj.meta().namespace.as_deref());
    api.patch(
        &obj.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .map_err(|source| Error::Apply {
        kind: K::kind(&()).into_owned(),
        name: obj.name_any(),
        source,
    })
}

/// Server-side applies the status of a custom resource. `status` is the
/// whole status object; fields we set before and omit now are removed.
pub async fn apply_status<K>(
    client: &Client,
    obj: &K,
    status: &impl Serialize,
) -> Result<K, kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let namespace = obj.namespace().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
}

/// True when `obj` has an ownerReference to `owner_uid`.
pub fn is_owned_by(obj: &impl Resource, owner_uid: &str) -> bool {
    obj.meta()
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == owner_uid)
}

/// The children of one kind that [`prune_cached`] considers.
#[derive(Debug, Clone, Copy)]
pub struct Children<'a> {
    /// `Kind namespace/name` of their owner, for errors.
    pub owner: &'a str,
    /// Where they live; `None` for cluster-scoped kinds.
    pub namespace: Option<&'a str>,
    /// The UID their ownerReferences name: only owned objects are pruned.
    pub owner_uid: &'a str,
}

/// True when applying `desired` would not change `stored`: every field
/// `desired` sets has the same value in `stored` (lists element by element,
/// of the same length). Fields only `stored` has (defaults, status, other
/// managers' fields) do not count: applying would not remove them either.
///
/// This is what lets a reconcile skip the apply of an unchanged child, so
/// that a restarted operator (whose in-memory state is gone) makes no write
/// on a settled cluster. Drift made by someone else to a field the operator
/// sets shows as a difference and is applied away. A value the API server
/// normalises (e.g. a quantity `0.5` stored as `500m`) shows as a difference
/// too: the apply is then a no-op write, never a missed one.
pub fn unchanged<K: Serialize>(desired: &K, stored: &K) -> bool {
    match (serde_json::to_value(desired), serde_json::to_value(stored)) {
        (Ok(desired), Ok(stored)) => contains(&stored, &desired),
        _ => false,
    }
}

fn contains(stored: &serde_json::Value, desired: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (stored, desired) {
        (Value::Object(stored), Value::Object(desired)) => desired.iter().all(|(key, want)| {
            match stored.get(key) {
                Some(have) => contains(have, want),
                // The API server drops nulls and empty maps and lists.
                None => empty(want),
            }
        }),
        (Value::Array(stored), Value::Array(desired)) => {
            stored.len() == desired.len() && stored.iter().zip(desired).all(|(s, d)| contains(s, d))
        }
        (Value::Null, want) => empty(want),
        (have, want) => have == want,
    }
}

fn empty(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::Null => true,
        serde_json::Value::Object(m) => m.is_empty(),
        serde_json::Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Annotation on every child applied through [`apply_unless_unchanged`]: a
/// digest of what was applied. [`unchanged`] alone cannot see a field the
/// operator stopped setting (a removed resource limit stays in the stored
/// object, and skipping the apply would leave it there); any change to the
/// rendered child changes this digest, so the apply that removes the field
/// happens.
pub const APPLIED_HASH_ANNOTATION: &str = "ferrotel.io/applied-hash";

/// `obj` with [`APPLIED_HASH_ANNOTATION`] set to the digest of `obj`.
pub fn with_applied_hash<K>(obj: &K) -> K
where
    K: Resource + Clone + Serialize,
{
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(serde_json::to_vec(obj).unwrap_or_default());
    let hash: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let mut obj = obj.clone();
    obj.meta_mut()
        .annotations
        .get_or_insert_with(Default::default)
        .insert(APPLIED_HASH_ANNOTATION.to_owned(), hash);
    obj
}

/// Applies `obj`, marked with [`APPLIED_HASH_ANNOTATION`], unless `stored`
/// (the child as the controller's watch cache holds it) already has every
/// field it sets, that digest included ([`unchanged`]); returns the stored
/// object then, without any request.
pub async fn apply_unless_unchanged<K>(
    client: &Client,
    obj: &K,
    stored: Option<&K>,
) -> Result<K, Error>
where
    K: Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned,
    K::Scope: ApiScope,
{
    let obj = with_applied_hash(obj);
    if let Some(stored) = stored
        && unchanged(&obj, stored)
    {
        return Ok(stored.clone());
    }
    apply(client, &obj).await
}

/// Deletes every object of `cached` in `children.namespace` that carries all
/// `labels` and an ownerReference to `children.owner_uid` and whose name is
/// not in `keep`. Returns what it deleted, as `Kind name`.
pub async fn prune_cached<K>(
    client: &Client,
    children: Children<'_>,
    labels: &std::collections::BTreeMap<String, String>,
    cached: &[std::sync::Arc<K>],
    keep: &BTreeSet<String>,
) -> Result<Vec<String>, Error>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned,
    K::Scope: ApiScope,
{
    let kind = K::kind(&());
    let api: Api<K> = K::Scope::api(client.clone(), children.namespace);
    let mut deleted = Vec::new();
    for obj in cached {
        let meta = obj.meta();
        let name = obj.name_any();
        let has_labels = labels
            .iter()
            .all(|(k, v)| meta.labels.as_ref().and_then(|l| l.get(k)) == Some(v));
        if meta.namespace.as_deref() != children.namespace
            || !has_labels
            || keep.contains(&name)
            || !is_owned_by(obj.as_ref(), children.owner_uid)
            || meta.deletion_timestamp.is_some()
        {
            continue;
        }
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => deleted.push(format!("{kind} {name}")),
            // Already gone (garbage collector or a concurrent delete): fine.
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(source) => {
                return Err(Error::Prune {
                    kind: kind.into_owned(),
                    owner: children.owner.to_owned(),
                    source,
                });
            }
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;

    fn cm(json: serde_json::Value) -> ConfigMap {
        serde_json::from_value(json).expect("a ConfigMap")
    }

    #[test]
    fn unchanged_ignores_what_only_the_stored_object_has() {
        let desired = cm(serde_json::json!({
            "metadata": {"name": "a", "namespace": "n", "labels": {"x": "1"}},
            "data": {"k": "v"},
        }));
        let stored = cm(serde_json::json!({
            "metadata": {"name": "a", "namespace": "n", "labels": {"x": "1", "other": "2"},
                         "resourceVersion": "7", "uid": "u"},
            "data": {"k": "v"},
        }));
        assert!(unchanged(&desired, &stored));
    }

    #[test]
    fn unchanged_sees_drift_of_every_field_we_set() {
        let desired = cm(serde_json::json!({
            "metadata": {"name": "a", "labels": {"x": "1"}},
            "data": {"k": "v"},
        }));
        for stored in [
            serde_json::json!({"metadata": {"name": "a", "labels": {"x": "1"}}, "data": {"k": "edited"}}),
            serde_json::json!({"metadata": {"name": "a", "labels": {"x": "1"}}}),
            serde_json::json!({"metadata": {"name": "a"}, "data": {"k": "v"}}),
            serde_json::json!({"metadata": {"name": "a", "labels": {"x": "2"}}, "data": {"k": "v"}}),
        ] {
            assert!(!unchanged(&desired, &cm(stored.clone())), "{stored}");
        }
    }

    #[test]
    fn a_field_no_longer_set_changes_the_applied_hash() {
        let before = with_applied_hash(&cm(serde_json::json!({
            "metadata": {"name": "a", "labels": {"x": "1", "gone": "soon"}},
        })));
        let after = with_applied_hash(&cm(serde_json::json!({
            "metadata": {"name": "a", "labels": {"x": "1"}},
        })));
        assert!(
            !unchanged(&after, &before),
            "the stored object still has the label; only the digest says it must go"
        );
        assert!(unchanged(&before, &before.clone()));
    }

    #[test]
    fn unchanged_compares_lists_element_by_element() {
        use k8s_openapi::api::core::v1::ServiceAccount;
        let sa = |secrets: serde_json::Value| -> ServiceAccount {
            serde_json::from_value(
                serde_json::json!({"metadata": {"name": "a"}, "secrets": secrets}),
            )
            .expect("a ServiceAccount")
        };
        let desired = sa(serde_json::json!([{"name": "s1"}, {"name": "s2"}]));
        assert!(unchanged(
            &desired,
            &sa(serde_json::json!([{"name": "s1", "namespace": "n"}, {"name": "s2"}]))
        ));
        assert!(!unchanged(
            &desired,
            &sa(serde_json::json!([{"name": "s1"}]))
        ));
        assert!(!unchanged(
            &desired,
            &sa(serde_json::json!([{"name": "s2"}, {"name": "s1"}]))
        ));
        assert!(!unchanged(
            &desired,
            &sa(serde_json::json!([{"name": "s1"}, {"name": "s2"}, {"name": "s3"}]))
        ));
    }
}
