//! Server-side apply and pruning, shared by every controller.
//!
//! All writes go through [`apply`] with the one field manager
//! ([`ferrotel_api::labels::FIELD_MANAGER`]) and `force`: the operator owns
//! the fields it sets, and applying identical content is a no-op in the API
//! server (resourceVersion unchanged), so re-reconciling — or restarting the
//! operator — causes no writes. Never read-modify-write a child instead.
//!
//! [`prune`] deletes children that carry our labels and an ownerReference to
//! the given owner UID but are not in the set just applied (a mode switch, a
//! removed language, old hashed ConfigMaps).

use std::{collections::BTreeSet, fmt::Debug};

use ferrotel_api::labels::FIELD_MANAGER;
use k8s_openapi::NamespaceResourceScope;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};
use serde::{Serialize, de::DeserializeOwned};

/// Applies `obj` (which must carry name and namespace) and returns the
/// object as stored, including its status.
pub async fn apply<K>(client: &Client, obj: &K) -> Result<K, kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let namespace = obj.namespace().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    api.patch(
        &obj.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
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

/// Deletes every `K` in `namespace` matching `label_selector` that is owned
/// by `owner_uid` and whose name is not in `keep`. Returns the deleted names.
///
/// The UID check means a same-named object created by a user (or by a
/// previous, deleted CR of the same name) is never touched.
pub async fn prune<K>(
    client: &Client,
    namespace: &str,
    label_selector: &str,
    owner_uid: &str,
    keep: &BTreeSet<String>,
) -> Result<Vec<String>, kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let existing = api
        .list_metadata(&ListParams::default().labels(label_selector))
        .await?;
    let mut deleted = Vec::new();
    for obj in existing {
        let name = obj.name_any();
        if keep.contains(&name)
            || !is_owned_by(&obj, owner_uid)
            || obj.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => deleted.push(name),
            // Already gone (garbage collector or a concurrent delete): fine.
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(err) => return Err(err),
        }
    }
    Ok(deleted)
}
