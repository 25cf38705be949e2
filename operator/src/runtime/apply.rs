//! Server-side apply and pruning, shared by every controller, for namespaced
//! and cluster-scoped children alike.
//!
//! All writes go through [`apply`] with the one field manager
//! ([`ferrotel_api::labels::FIELD_MANAGER`]) and `force`: the operator owns
//! the fields it sets, and applying identical content is a no-op in the API
//! server (resourceVersion unchanged), so re-reconciling — or restarting the
//! operator — causes no writes. Never read-modify-write a child instead.
//!
//! [`prune`] deletes children that match a label selector and carry an
//! ownerReference to the object being reconciled but are not in the set just
//! applied (a mode switch, a removed language, old hashed ConfigMaps).

use std::{collections::BTreeSet, fmt::Debug};

use ferrotel_api::labels::FIELD_MANAGER;
use k8s_openapi::{ClusterResourceScope, NamespaceResourceScope};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
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

/// The children of one kind that [`prune`] considers.
#[derive(Debug, Clone, Copy)]
pub struct Children<'a> {
    /// `Kind namespace/name` of their owner, for errors.
    pub owner: &'a str,
    /// Where they live; `None` for cluster-scoped kinds.
    pub namespace: Option<&'a str>,
    /// Labels every child carries.
    pub selector: &'a str,
    /// The UID their ownerReferences name: only owned objects are pruned.
    pub owner_uid: &'a str,
}

/// Deletes every `K` among `children` whose name is not in `keep`. Returns
/// what it deleted, as `Kind name`.
///
/// The ownership check means a same-named object created by a user (or by a
/// previous, deleted owner of the same name) is never touched.
pub async fn prune<K>(
    client: &Client,
    children: Children<'_>,
    keep: &BTreeSet<String>,
) -> Result<Vec<String>, Error>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned,
    K::Scope: ApiScope,
{
    let kind = K::kind(&());
    let error = |source| Error::Prune {
        kind: kind.clone().into_owned(),
        owner: children.owner.to_owned(),
        source,
    };
    let api: Api<K> = K::Scope::api(client.clone(), children.namespace);
    let existing = api
        .list_metadata(&ListParams::default().labels(children.selector))
        .await
        .map_err(error)?;
    let mut deleted = Vec::new();
    for obj in existing {
        let name = obj.name_any();
        if keep.contains(&name)
            || !is_owned_by(&obj, children.owner_uid)
            || obj.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => deleted.push(format!("{kind} {name}")),
            // Already gone (garbage collector or a concurrent delete): fine.
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(err) => return Err(error(err)),
        }
    }
    Ok(deleted)
}
