//! The reconciler, as a named pipeline:
//! dereference (exporter) → validate → build (pure) → apply (+ prune) →
//! status (computed, written only when changed).
//!
//! Cleanup (the finalizer) removes the cluster-scoped RBAC, which
//! ownerReferences cannot reach; namespaced children go with the
//! Instrumentation through the garbage collector.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use ferrotel_api::{
    instrumentation::{Instrumentation, InstrumentationStatus, ResolvedExporter, reason},
    labels::FIELD_MANAGER,
    optin::{Candidate, InstrumentationKey, Instrumentations},
};
use k8s_openapi::{
    api::{
        apps::v1::DaemonSet,
        core::v1::{ConfigMap, Namespace, Pod, ServiceAccount},
        rbac::v1::{ClusterRole, ClusterRoleBinding},
    },
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, ListParams, PartialObjectMeta, Patch, PatchParams},
    runtime::{
        controller::Action,
        events::{Event, EventType},
        finalizer::{self, finalizer},
        reflector::Store,
    },
};
use serde::{Serialize, de::DeserializeOwned};
use tracing::{info, warn};

use super::{
    build::{self, BuildInput, Desired, LanguageChildren},
    exporter,
    status::{self, Meta, ObservedDaemonSet, Problem, StatusInput},
};
use crate::runtime::{
    Context, ErrorCategory,
    apply::{self, apply_status},
    errors::Categorized,
};

/// Finalizer guarding the cluster-scoped RBAC.
pub const FINALIZER: &str = "ferrotel.io/cluster-rbac";
pub const CONTROLLER: &str = "instrumentation";

/// Shared state of the reconciler: the runtime context and the caches.
pub struct Data {
    pub ctx: Arc<Context>,
    pub instrumentations: Store<Instrumentation>,
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    pub pods: Store<PartialObjectMeta<Pod>>,
    /// What was last applied per Instrumentation UID (see [`Applied`]).
    pub applied: std::sync::Mutex<std::collections::HashMap<String, Applied>>,
}

/// Fingerprint of the children last applied for an Instrumentation, and when.
///
/// Pod and namespace events re-evaluate every Instrumentation (for the
/// matched counts) far more often than its children change. When the
/// rendered children are identical to what was applied less than
/// [`REAPPLY_AFTER`] ago and every DaemonSet still exists, the reconcile only
/// reads the DaemonSets and computes the status instead of re-applying
/// everything. Any spec, collector or Instrumentation-set change alters the
/// fingerprint; a deleted DaemonSet is re-created at once, other drift within
/// [`REAPPLY_AFTER`].
#[derive(Debug, Clone)]
pub struct Applied {
    fingerprint: String,
    at: std::time::Instant,
}

/// Children are re-applied at least this often, whatever the fingerprint says.
const REAPPLY_AFTER: Duration = Duration::from_secs(300);

/// One variant per stage that talks to the API server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to read TelemetryCollector for Instrumentation {instrumentation}")]
    Dereference {
        instrumentation: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to apply {kind} {name}")]
    Apply {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to prune {kind} of Instrumentation {instrumentation}")]
    Prune {
        kind: &'static str,
        instrumentation: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to read DaemonSet {name}")]
    ReadDaemonSet {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to write the status of Instrumentation {instrumentation}")]
    Status {
        instrumentation: String,
        #[source]
        source: kube::Error,
    },
    #[error("finalizer of Instrumentation {instrumentation} failed")]
    Finalizer {
        instrumentation: String,
        #[source]
        source: Box<finalizer::Error<Error>>,
    },
}

impl Categorized for Error {
    fn category(&self) -> ErrorCategory {
        match self {
            Error::Dereference { source, .. }
            | Error::Apply { source, .. }
            | Error::Prune { source, .. }
            | Error::ReadDaemonSet { source, .. }
            | Error::Status { source, .. } => ErrorCategory::of_kube(source),
            Error::Finalizer { source, .. } => match source.as_ref() {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => {
                    e.category()
                }
                finalizer::Error::AddFinalizer(e) | finalizer::Error::RemoveFinalizer(e) => {
                    ErrorCategory::of_kube(e)
                }
                _ => ErrorCategory::Internal,
            },
        }
    }
}

fn key_of(inst: &Instrumentation) -> InstrumentationKey {
    InstrumentationKey::new(inst.namespace().unwrap_or_default(), inst.name_any())
}

/// Entry point for the Controller.
pub async fn reconcile(inst: Arc<Instrumentation>, data: Arc<Data>) -> Result<Action, Error> {
    let _timer = data.ctx.metrics.reconcile(CONTROLLER);
    let key = key_of(&inst);
    let api: Api<Instrumentation> = Api::namespaced(data.ctx.client.clone(), &key.namespace);
    let result = finalizer(&api, FINALIZER, inst, |event| async {
        match event {
            finalizer::Event::Apply(inst) => apply_stage(&inst, &data).await,
            finalizer::Event::Cleanup(inst) => cleanup(&inst, &data).await,
        }
    })
    .await
    .map_err(|source| Error::Finalizer {
        instrumentation: key.to_string(),
        source: Box::new(source),
    });
    if result.is_ok() {
        data.ctx.backoffs.reset(&backoff_key(&key));
    }
    result
}

pub fn backoff_key(key: &InstrumentationKey) -> String {
    format!("instrumentation/{key}")
}

/// The controller's `error_policy`.
pub fn error_policy(inst: Arc<Instrumentation>, error: &Error, data: Arc<Data>) -> Action {
    let key = key_of(&inst);
    warn!(instrumentation = %key, error = %error, cause = ?std::error::Error::source(error), "Reconcile failed");
    data.ctx
        .error_action(CONTROLLER, &backoff_key(&key), error.category())
}

/// The Instrumentations the opt-in rules consider: every one this operator
/// watches, except those being deleted.
fn candidates(store: &Store<Instrumentation>) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = store
        .state()
        .iter()
        .filter(|i| i.metadata.deletion_timestamp.is_none())
        .map(|i| {
            let selector = i.spec.selector.clone().unwrap_or_default();
            Candidate {
                namespace: i.namespace().unwrap_or_default(),
                name: i.name_any(),
                languages: i.spec.languages.clone(),
                namespace_selector: selector.namespace_selector,
                pod_selector: selector.pod_selector,
            }
        })
        .collect();
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    out
}

async fn apply_stage(inst: &Instrumentation, data: &Data) -> Result<Action, Error> {
    let client = &data.ctx.client;
    let key = key_of(inst);
    let mut all = candidates(&data.instrumentations);
    // The store may lag behind the object we were handed (just created).
    if !all.iter().any(|c| c.key() == key) {
        let selector = inst.spec.selector.clone().unwrap_or_default();
        all.push(Candidate {
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            languages: inst.spec.languages.clone(),
            namespace_selector: selector.namespace_selector,
            pod_selector: selector.pod_selector,
        });
    }

    // Dereference.
    let resolved = exporter::resolve(client, inst)
        .await
        .map_err(|source| Error::Dereference {
            instrumentation: key.to_string(),
            source,
        })?;

    // Validate + build (pure).
    let built: Result<(ResolvedExporter, Desired), Problem> = resolved.and_then(|exporter| {
        let input = BuildInput {
            instrumentation: inst,
            exporter: &exporter,
            default_probe_image: &data.ctx.config.default_probe_image,
            cluster_instrumentations: &all,
        };
        build::build(&input)
            .map(|desired| (exporter.clone(), desired))
            .map_err(|e| Problem {
                reason: reason::INVALID_SPEC,
                message: e.to_string(),
            })
    });

    let (exporter, probe_image, observed, problem) = match built {
        Ok((exporter, desired)) => {
            let image = desired.probe_image.clone();
            let uid = inst.uid().unwrap_or_default();
            let fingerprint = fingerprint(&desired);
            let fresh = data
                .applied
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&uid)
                .is_some_and(|a| a.fingerprint == fingerprint && a.at.elapsed() < REAPPLY_AFTER);
            if fresh {
                let observed = read_daemon_sets(client, inst).await?;
                // Every DaemonSet still exists (a stored object has a generation).
                if observed.iter().all(|ds| ds.generation.is_some()) {
                    write_status(
                        inst,
                        data,
                        &all,
                        Some(exporter),
                        Some(image),
                        observed,
                        None,
                    )
                    .await?;
                    return Ok(Action::requeue(REAPPLY_AFTER));
                }
            }
            // Forget the record first: if applying fails half-way, the next
            // reconcile must apply again.
            data.applied
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&uid);
            let (observed, pruned) = apply_all(client, inst, desired).await?;
            data.applied
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(
                    uid,
                    Applied {
                        fingerprint,
                        at: std::time::Instant::now(),
                    },
                );
            if let Some(pruned) = pruned {
                let note = format!("removed objects no longer wanted: {}", pruned.join(", "));
                publish(data, inst, EventType::Normal, "Pruned", note).await;
            }
            (Some(exporter), Some(image), observed, None)
        }
        Err(problem) => {
            // Nothing is applied with a broken exporter or spec: existing
            // probes keep their last good config, and none are created.
            (
                None,
                None,
                read_daemon_sets(client, inst).await?,
                Some(problem),
            )
        }
    };

    write_status(inst, data, &all, exporter, probe_image, observed, problem).await?;
    // Rollouts, pods and collectors are watched; the periodic requeue is only
    // a safety net.
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// A stable digest of every rendered child.
fn fingerprint(desired: &Desired) -> String {
    let Desired {
        probe_image,
        languages,
    } = desired;
    let mut text = probe_image.clone();
    for LanguageChildren {
        language,
        service_account,
        cluster_role,
        cluster_role_binding,
        config_map,
        daemon_set,
    } in languages
    {
        let parts = [
            serde_json::to_string(language),
            serde_json::to_string(service_account),
            serde_json::to_string(cluster_role),
            serde_json::to_string(cluster_role_binding),
            serde_json::to_string(config_map),
            serde_json::to_string(daemon_set),
        ];
        for part in parts {
            text.push('\n');
            text.push_str(&part.unwrap_or_default());
        }
    }
    build::config_hash(&text)
}

/// Applies every child and prunes the ones no longer wanted; returns the
/// DaemonSets as stored and the names of pruned objects (if any).
async fn apply_all(
    client: &Client,
    inst: &Instrumentation,
    desired: Desired,
) -> Result<(Vec<ObservedDaemonSet>, Option<Vec<String>>), Error> {
    let Desired {
        probe_image: _,
        languages,
    } = desired;
    let mut keep = BTreeSet::new();
    let mut keep_cluster = BTreeSet::new();
    let mut observed = Vec::new();
    for children in languages {
        // Destructured without `..`: a child added to LanguageChildren must be applied here.
        let LanguageChildren {
            language,
            service_account,
            cluster_role,
            cluster_role_binding,
            config_map,
            daemon_set,
        } = children;
        keep.insert(daemon_set.name_any());
        keep_cluster.insert(cluster_role.name_any());
        let config_hash = daemon_set
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get(build::CONFIG_HASH_ANNOTATION).cloned());
        apply_namespaced(client, &service_account).await?;
        apply_cluster(client, &cluster_role).await?;
        apply_cluster(client, &cluster_role_binding).await?;
        apply_namespaced(client, &config_map).await?;
        let stored = apply_namespaced(client, &daemon_set).await?;
        observed.push(ObservedDaemonSet {
            language,
            name: stored.name_any(),
            status: stored.status.clone(),
            generation: stored.metadata.generation,
            config_hash,
        });
    }

    let namespace = inst.namespace().unwrap_or_default();
    let uid = inst.uid().unwrap_or_default();
    let selector = build::children_selector(&inst.name_any());
    let mut pruned = Vec::new();
    let prune_err = |kind| {
        let instrumentation = key_of(inst).to_string();
        move |source| Error::Prune {
            kind,
            instrumentation,
            source,
        }
    };
    pruned.extend(
        apply::prune::<DaemonSet>(client, &namespace, &selector, &uid, &keep)
            .await
            .map_err(prune_err("DaemonSet"))?,
    );
    pruned.extend(
        apply::prune::<ConfigMap>(client, &namespace, &selector, &uid, &keep)
            .await
            .map_err(prune_err("ConfigMap"))?,
    );
    pruned.extend(
        apply::prune::<ServiceAccount>(client, &namespace, &selector, &uid, &keep)
            .await
            .map_err(prune_err("ServiceAccount"))?,
    );
    pruned.extend(
        prune_cluster::<ClusterRoleBinding>(client, &uid, &keep_cluster)
            .await
            .map_err(prune_err("ClusterRoleBinding"))?,
    );
    pruned.extend(
        prune_cluster::<ClusterRole>(client, &uid, &keep_cluster)
            .await
            .map_err(prune_err("ClusterRole"))?,
    );
    if !pruned.is_empty() {
        info!(instrumentation = %key_of(inst), objects = ?pruned, "Pruned children of removed languages");
        return Ok((observed, Some(pruned)));
    }
    Ok((observed, None))
}

async fn apply_namespaced<K>(client: &Client, obj: &K) -> Result<K, Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + Serialize
        + DeserializeOwned,
{
    apply::apply(client, obj)
        .await
        .map_err(|source| Error::Apply {
            kind: kind_of::<K>(),
            name: obj.name_any(),
            source,
        })
}

fn kind_of<K: Resource<DynamicType = ()>>() -> &'static str {
    match K::kind(&()).as_ref() {
        "DaemonSet" => "DaemonSet",
        "ConfigMap" => "ConfigMap",
        "ServiceAccount" => "ServiceAccount",
        "ClusterRole" => "ClusterRole",
        "ClusterRoleBinding" => "ClusterRoleBinding",
        _ => "object",
    }
}

/// Server-side apply of a cluster-scoped object (the runtime's helper is
/// namespaced-only).
async fn apply_cluster<K>(client: &Client, obj: &K) -> Result<K, Error>
where
    K: Resource<Scope = k8s_openapi::ClusterResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + Serialize
        + DeserializeOwned,
{
    let api: Api<K> = Api::all(client.clone());
    api.patch(
        &obj.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .map_err(|source| Error::Apply {
        kind: kind_of::<K>(),
        name: obj.name_any(),
        source,
    })
}

/// Deletes cluster-scoped children of the Instrumentation with `uid` whose
/// name is not in `keep`.
async fn prune_cluster<K>(
    client: &Client,
    uid: &str,
    keep: &BTreeSet<String>,
) -> Result<Vec<String>, kube::Error>
where
    K: Resource<Scope = k8s_openapi::ClusterResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + DeserializeOwned,
{
    let api: Api<K> = Api::all(client.clone());
    let mut deleted = Vec::new();
    for obj in api
        .list_metadata(&ListParams::default().labels(&build::cluster_children_selector(uid)))
        .await?
    {
        let name = obj.name_any();
        if keep.contains(&name) {
            continue;
        }
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => deleted.push(name),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(err) => return Err(err),
        }
    }
    Ok(deleted)
}

/// Reads the DaemonSets of the listed languages (when nothing is applied).
async fn read_daemon_sets(
    client: &Client,
    inst: &Instrumentation,
) -> Result<Vec<ObservedDaemonSet>, Error> {
    let api: Api<DaemonSet> =
        Api::namespaced(client.clone(), &inst.namespace().unwrap_or_default());
    let mut out = Vec::new();
    for &language in &inst.spec.languages {
        let name = build::daemon_set_name(&inst.name_any(), language);
        let ds = api
            .get_opt(&name)
            .await
            .map_err(|source| Error::ReadDaemonSet {
                name: name.clone(),
                source,
            })?;
        let config_hash = ds
            .as_ref()
            .and_then(|d| d.spec.as_ref())
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get(build::CONFIG_HASH_ANNOTATION).cloned());
        out.push(ObservedDaemonSet {
            language,
            name,
            generation: ds.as_ref().and_then(|d| d.metadata.generation),
            status: ds.and_then(|d| d.status),
            config_hash,
        });
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
async fn write_status(
    inst: &Instrumentation,
    data: &Data,
    all: &[Candidate],
    exporter: Option<ResolvedExporter>,
    probe_image: Option<String>,
    daemon_sets: Vec<ObservedDaemonSet>,
    problem: Option<Problem>,
) -> Result<(), Error> {
    let key = key_of(inst);
    let instrumentations = Instrumentations::new(all.iter().cloned());
    let namespaces = data.namespaces.state();
    let pods = data.pods.state();
    let empty = std::collections::BTreeMap::new();
    let meta = |m: &'_ kube::api::ObjectMeta| -> (String, String) {
        (
            m.namespace.clone().unwrap_or_default(),
            m.name.clone().unwrap_or_default(),
        )
    };
    let ns_ids: Vec<(String, String)> = namespaces.iter().map(|n| meta(&n.metadata)).collect();
    let pod_ids: Vec<(String, String)> = pods.iter().map(|p| meta(&p.metadata)).collect();
    let matches = status::match_summary(
        &key,
        &inst.spec.languages,
        &instrumentations,
        namespaces.iter().zip(&ns_ids).map(|(n, (ns, name))| Meta {
            namespace: ns,
            name,
            labels: n.metadata.labels.as_ref().unwrap_or(&empty),
            annotations: n.metadata.annotations.as_ref().unwrap_or(&empty),
        }),
        pods.iter()
            .zip(&pod_ids)
            .filter(|(p, _)| p.metadata.deletion_timestamp.is_none())
            .map(|(p, (ns, name))| Meta {
                namespace: ns,
                name,
                labels: p.metadata.labels.as_ref().unwrap_or(&empty),
                annotations: p.metadata.annotations.as_ref().unwrap_or(&empty),
            }),
    );
    let previous = inst.status.as_ref();
    let new = status::compute(StatusInput {
        generation: inst.metadata.generation,
        exporter,
        probe_image,
        daemon_sets,
        matches: &matches,
        problem,
        previous,
        now: Time(Timestamp::now()),
    });
    if previous == Some(&new) {
        return Ok(());
    }
    publish_degraded_event(inst, data, previous, &new).await;
    apply_status(&data.ctx.client, inst, &new)
        .await
        .map_err(|source| Error::Status {
            instrumentation: key.to_string(),
            source,
        })?;
    Ok(())
}

/// Emits a Warning Event when the Degraded condition turns on or changes reason.
async fn publish_degraded_event(
    inst: &Instrumentation,
    data: &Data,
    previous: Option<&InstrumentationStatus>,
    new: &InstrumentationStatus,
) {
    use ferrotel_api::instrumentation::condition::DEGRADED;
    let find =
        |s: &InstrumentationStatus| s.conditions.iter().find(|c| c.type_ == DEGRADED).cloned();
    let Some(now) = find(new) else { return };
    let before = previous.and_then(find);
    let changed = before
        .as_ref()
        .is_none_or(|b| b.status != now.status || b.reason != now.reason);
    if now.status != "True" || !changed {
        return;
    }
    let event = Event {
        type_: EventType::Warning,
        reason: now.reason.clone(),
        note: Some(now.message.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(err) = data
        .ctx
        .recorder
        .publish(&event, &inst.object_ref(&()))
        .await
    {
        warn!(instrumentation = %key_of(inst), error = %err, "Could not publish Event");
    }
}

/// Finalizer cleanup: the cluster-scoped RBAC. Namespaced children carry
/// ownerReferences and are removed by the garbage collector.
async fn cleanup(inst: &Instrumentation, data: &Data) -> Result<Action, Error> {
    let client = &data.ctx.client;
    let uid = inst.uid().unwrap_or_default();
    data.applied
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&uid);
    let none = BTreeSet::new();
    let instrumentation = key_of(inst).to_string();
    let deleted_bindings = prune_cluster::<ClusterRoleBinding>(client, &uid, &none)
        .await
        .map_err(|source| Error::Prune {
            kind: "ClusterRoleBinding",
            instrumentation: instrumentation.clone(),
            source,
        })?;
    let deleted_roles = prune_cluster::<ClusterRole>(client, &uid, &none)
        .await
        .map_err(|source| Error::Prune {
            kind: "ClusterRole",
            instrumentation: instrumentation.clone(),
            source,
        })?;
    info!(instrumentation, roles = ?deleted_roles, bindings = ?deleted_bindings, "Removed cluster-scoped RBAC");
    let event = Event {
        type_: EventType::Normal,
        reason: reason::DELETING.into(),
        note: Some(format!(
            "removed ClusterRoles {deleted_roles:?} and ClusterRoleBindings {deleted_bindings:?}"
        )),
        action: "Cleanup".into(),
        secondary: None,
    };
    if let Err(err) = data
        .ctx
        .recorder
        .publish(&event, &inst.object_ref(&()))
        .await
    {
        warn!(instrumentation, error = %err, "Could not publish Event");
    }
    Ok(Action::await_change())
}

/// Publishes an Event on the Instrumentation; failures are logged, not fatal.
async fn publish(
    data: &Data,
    inst: &Instrumentation,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(err) = data
        .ctx
        .recorder
        .publish(&event, &inst.object_ref(&()))
        .await
    {
        warn!(instrumentation = %key_of(inst), error = %err, "Could not publish Event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrotel_api::probe_config::OtlpProtocol;

    fn desired(endpoint: &str) -> Desired {
        let inst: Instrumentation = serde_yaml::from_str(
            "apiVersion: ferrotel.io/v1alpha1\nkind: Instrumentation\n\
             metadata: {name: default, namespace: obs, uid: 00000000-0000-0000-0000-000000000001}\n\
             spec: {languages: [go, python], exporter: {collectorRef: {name: otel}}}\n",
        )
        .expect("fixture parses");
        let exporter = ResolvedExporter {
            endpoint: endpoint.into(),
            protocol: OtlpProtocol::Grpc,
        };
        build::build(&BuildInput {
            instrumentation: &inst,
            exporter: &exporter,
            default_probe_image: "probe:test",
            cluster_instrumentations: &[],
        })
        .expect("builds")
    }

    #[test]
    fn fingerprint_is_stable_and_follows_every_rendered_change() {
        assert_eq!(
            fingerprint(&desired("http://a:4317")),
            fingerprint(&desired("http://a:4317")),
            "the same input must not look like a change (or every pod event re-applies)"
        );
        assert_ne!(
            fingerprint(&desired("http://a:4317")),
            fingerprint(&desired("http://b:4317")),
            "a new endpoint must be applied"
        );
    }
}
