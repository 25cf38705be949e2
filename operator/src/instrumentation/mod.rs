//! The `Instrumentation` controller: one probe DaemonSet (plus ServiceAccount,
//! ClusterRole/Binding and ConfigMap) per language, and a status that says
//! what is instrumented.
//!
//! One reconcile is a named pipeline, one module per stage, like the
//! collector's:
//!
//! 1. **dereference** ([`exporter`]): the endpoint, from the spec or the
//!    referenced TelemetryCollector's status;
//! 2. **validate + build** ([`build`]): pure, CR → desired children;
//! 3. **apply** ([`apply`]): server-side apply of every child, pruning of the
//!    children of removed languages;
//! 4. **status** ([`status`]): pure, computed with its Events from what the
//!    stages came to ([`Outcome`]) and the opt-in caches, written once at the
//!    end of the reconcile and only if it changed.
//!
//! A spec or exporter problem stops before apply: nothing is written but the
//! status (`Degraded`) and a Warning Event, and existing probes keep their
//! last good config. Cleanup (the finalizer) removes the cluster-scoped RBAC,
//! which ownerReferences cannot reach; namespaced children go with the
//! Instrumentation through the garbage collector.
//!
//! Watches (each kept in a cache that the reconcile reads instead of the API
//! server, so that a reconcile with nothing to change sends no request):
//! - Instrumentations (in `--watch-namespace`, or all) — the primary;
//! - the DaemonSets, ConfigMaps and ServiceAccounts they own — rollout
//!   progress lands in status, drift is applied away;
//! - TelemetryCollectors — a collector appearing (or its endpoints changing)
//!   heals the Instrumentations that reference it;
//! - Namespaces and Pods, **metadata only** and cluster-wide (opt-in is
//!   cluster-wide) — any change re-evaluates every Instrumentation's matched
//!   counts, debounced, so status follows annotations within seconds.
//!
//! With `--watch-namespace`, "the Instrumentations in the cluster" that the
//! opt-in value `"true"` refers to are the ones in the watched namespace:
//! those are the ones this operator instance serves.

mod apply;
pub mod build;
mod exporter;
mod optin_cache;
mod status;

use std::{
    collections::BTreeSet,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use ferrotel_api::{
    collector::TelemetryCollector,
    conditions::reasons,
    instrumentation::{Instrumentation, ResolvedExporter},
    optin::{Candidate, InstrumentationKey, Instrumentations},
    probe_class::{self, ClassRef, Grant, ProbeClass, Refusal},
};
use futures::{StreamExt, stream};
use k8s_openapi::{
    api::{
        apps::v1::DaemonSet,
        core::v1::{ConfigMap, Namespace, Pod, ServiceAccount},
    },
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};
use kube::{
    Api, ResourceExt,
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        finalizer::{self, finalizer},
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::runtime::{Context, ErrorCategory, errors::Categorized, report};
use build::BuildInput;
use optin_cache::OptinMeta;
use status::{MatchSummary, MatchTable, Meta, ObservedDaemonSet, Problem, StatusInput};

/// Name used for metrics, readiness and logs.
pub const CONTROLLER: &str = "instrumentation";
/// Finalizer guarding the cluster-scoped RBAC.
pub const FINALIZER: &str = "ferrotel.io/cluster-rbac";

/// Pod and namespace events arriving within this window cause one
/// re-evaluation, not one per event. Only these are debounced: a change to
/// an Instrumentation or its children is reconciled at once.
const DEBOUNCE: Duration = Duration::from_millis(500);

/// Runs the Instrumentation controller until shutdown.
pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    let client = ctx.client.clone();

    // The opt-in inputs, every namespace and pod in the cluster, keep only
    // what the rules read (`optin_cache`): pods are the biggest list in a
    // cluster and most of the operator's memory (bench/results/scale.md).
    let changed = Arc::new(Notify::new());
    let (namespaces, ns_events) =
        optin_cache::watch::<Namespace>(client.clone(), watcher::Config::default());
    // Pages of 100: a page is held whole, as served, while it is parsed.
    let (pods, pod_events) =
        optin_cache::watch::<Pod>(client.clone(), watcher::Config::default().page_size(100));
    // ProbeClasses decide what each Instrumentation may run; a change to one
    // re-evaluates every Instrumentation (classes are few and rarely change).
    let (probe_classes, class_writer) = reflector::store();
    let class_events = reflector::reflector(
        class_writer,
        watcher(
            Api::<ProbeClass>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff(),
    )
    .touched_objects()
    .map(|r| r.map(|_| ()));
    let optin_epoch = Arc::new(AtomicU64::new(0));
    let feeder = {
        let changed = changed.clone();
        let epoch = optin_epoch.clone();
        let shutdown = ctx.shutdown.clone();
        tokio::spawn(async move {
            let mut events = std::pin::pin!(stream::select(
                stream::select(ns_events, pod_events),
                class_events
            ));
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    next = events.next() => match next {
                        Some(Ok(())) => {
                            // After the reflector stored the change: a
                            // reconcile that read the old epoch recomputes.
                            epoch.fetch_add(1, Ordering::SeqCst);
                            changed.notify_one();
                        }
                        Some(Err(err)) => warn!(error = %err, "Namespace, pod or ProbeClass watch failed; retrying with backoff"),
                        None => break,
                    },
                }
            }
        })
    };

    // The probes' children, in caches: the reconcile compares what it
    // renders with them instead of applying everything again.
    let probe_children = watcher::Config::default().labels(&build::all_children_selector());
    let (daemon_sets, ds_events) =
        crate::runtime::cached(ctx.namespaced_api::<DaemonSet>(), probe_children.clone());
    let (config_maps, cm_events) =
        crate::runtime::cached(ctx.namespaced_api::<ConfigMap>(), probe_children.clone());
    let (service_accounts, sa_events) =
        crate::runtime::cached(ctx.namespaced_api::<ServiceAccount>(), probe_children);
    let (collectors, collector_events) = crate::runtime::cached(
        ctx.namespaced_api::<TelemetryCollector>(),
        watcher::Config::default(),
    );
    let children = apply::ChildCaches {
        daemon_sets,
        config_maps,
        service_accounts,
    };

    let instrumentations: Api<Instrumentation> = ctx.namespaced_api();
    let controller = Controller::new(instrumentations, watcher::Config::default())
        .with_config(crate::runtime::controller_config());
    let store = controller.store();
    let referrers = store.clone();
    let controller = controller
        .owns_stream(ds_events)
        .owns_stream(cm_events)
        .owns_stream(sa_events)
        .watches_stream(collector_events, move |collector| {
            let (ns, name) = (
                collector.namespace().unwrap_or_default(),
                collector.name_any(),
            );
            referrers
                .state()
                .into_iter()
                .filter(|i| {
                    i.spec.exporter.collector_ref.as_ref().is_some_and(|r| {
                        r.name == name
                            && r.namespace.clone().or_else(|| i.namespace()).as_deref()
                                == Some(ns.as_str())
                    })
                })
                .map(|i| ObjectRef::from_obj(&*i))
                .collect::<Vec<_>>()
        })
        .reconcile_all_on(stream::unfold(changed, |changed| async move {
            changed.notified().await;
            // Events during the wait leave one stored permit: one more round.
            tokio::time::sleep(DEBOUNCE).await;
            Some(((), changed))
        }))
        .graceful_shutdown_on(ctx.shutdown.clone().cancelled_owned());

    let data = Arc::new(Data {
        ctx: ctx.clone(),
        instrumentations: store.clone(),
        namespaces: namespaces.clone(),
        pods: pods.clone(),
        probe_classes: probe_classes.clone(),
        children: children.clone(),
        collectors: collectors.clone(),
        binding: Default::default(),
        optin_epoch,
        matches: Default::default(),
    });

    // `/readyz` waits until every cache has its first full list.
    {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            // runtime::wait_until_synced works around a missed wake-up in
            // kube-runtime 5.0.0's Store::wait_until_ready (see its docs).
            let synced = crate::runtime::wait_until_synced(&namespaces).await
                && crate::runtime::wait_until_synced(&pods).await
                && crate::runtime::wait_until_synced(&probe_classes).await
                && crate::runtime::wait_until_synced(&store).await
                && crate::runtime::wait_until_synced(&collectors).await
                && crate::runtime::wait_until_synced(&children.daemon_sets).await
                && crate::runtime::wait_until_synced(&children.config_maps).await
                && crate::runtime::wait_until_synced(&children.service_accounts).await;
            if synced {
                info!("Instrumentation caches synced");
                ctx.readiness.mark_synced(CONTROLLER);
            } else {
                warn!("Instrumentation caches were dropped before syncing")
            }
        });
    }

    controller
        .run(reconcile, error_policy, data)
        .for_each(|result| async move { crate::runtime::log_result(CONTROLLER, result) })
        .await;
    feeder.abort();
    info!(controller = CONTROLLER, "Controller stopped");
    Ok(())
}

/// Shared state of the reconciler: the runtime context and the caches.
pub struct Data {
    pub ctx: Arc<Context>,
    pub instrumentations: Store<Instrumentation>,
    pub namespaces: Store<OptinMeta<Namespace>>,
    pub pods: Store<OptinMeta<Pod>>,
    pub probe_classes: Store<ProbeClass>,
    pub children: apply::ChildCaches,
    pub collectors: Store<TelemetryCollector>,
    pub binding: apply::ProbeBinding,
    /// Bumped on every namespace, pod or ProbeClass event, after the cache
    /// stored it.
    pub optin_epoch: Arc<AtomicU64>,
    /// The last match table and what it was computed from: the opt-in
    /// rules over every pod are most of a reconcile's cost.
    matches: tokio::sync::Mutex<Option<CachedMatches>>,
}

struct CachedMatches {
    epoch: u64,
    all: Vec<Candidate>,
    table: MatchTable,
}

impl Data {
    /// Waits until every cache holds its first full list. A reconcile must
    /// not run before: a child missing from a cache would be applied again
    /// (a write on every restart), an Instrumentation missing from the
    /// store would drop its probes from the binding, a collector missing
    /// would show as `CollectorNotFound`. Returns at once once synced.
    async fn synced(&self) -> bool {
        use crate::runtime::wait_until_synced;
        wait_until_synced(&self.instrumentations).await
            && wait_until_synced(&self.namespaces).await
            && wait_until_synced(&self.pods).await
            && wait_until_synced(&self.probe_classes).await
            && wait_until_synced(&self.collectors).await
            && wait_until_synced(&self.children.daemon_sets).await
            && wait_until_synced(&self.children.config_maps).await
            && wait_until_synced(&self.children.service_accounts).await
    }
}

/// One variant per stage that talks to the API server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to read TelemetryCollector for Instrumentation {instrumentation}")]
    Dereference {
        instrumentation: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Children(#[from] crate::runtime::apply::Error),
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

impl Error {
    /// The `Degraded` reason when this error is shown in status.
    fn reason(&self) -> &'static str {
        match self {
            Error::Children(err) => err.reason(),
            _ => reasons::APPLY_FAILED,
        }
    }

    /// What failed, in the API server's words where it answered.
    fn describe(&self) -> String {
        match self {
            Error::Children(err) => err.describe(),
            other => match std::error::Error::source(other) {
                Some(cause) => format!("{other}: {cause}"),
                None => other.to_string(),
            },
        }
    }
}

impl Categorized for Error {
    fn category(&self) -> ErrorCategory {
        match self {
            Error::Dereference { source, .. } | Error::Status { source, .. } => {
                ErrorCategory::of_kube(source)
            }
            Error::Children(err) => ErrorCategory::of_kube(err.kube()),
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

async fn reconcile(inst: Arc<Instrumentation>, data: Arc<Data>) -> Result<Action, Error> {
    if !data.synced().await {
        // The caches were dropped: the controller is stopping.
        return Ok(Action::await_change());
    }
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

fn backoff_key(key: &InstrumentationKey) -> String {
    format!("instrumentation/{key}")
}

fn error_policy(inst: Arc<Instrumentation>, error: &Error, data: Arc<Data>) -> Action {
    data.ctx
        .error_action(CONTROLLER, &backoff_key(&key_of(&inst)), error.category())
}

/// The Instrumentations the opt-in rules consider: every one this operator
/// watches that its ProbeClass admits, except those being deleted, and
/// `inst` itself (the store may lag behind the object we were handed when it
/// was just created). A refused Instrumentation claims nothing: its
/// `namespaceSelector` must not take namespaces from the others.
fn candidates(data: &Data, inst: &Instrumentation) -> Vec<Candidate> {
    let key = key_of(inst);
    let mut out: Vec<Candidate> = data
        .instrumentations
        .state()
        .iter()
        .filter(|i| i.metadata.deletion_timestamp.is_none() && key_of(i) != key)
        .chain(std::iter::once(&Arc::new(inst.clone())))
        .filter(|i| admit(i, data).is_ok())
        .map(|i| i.candidate())
        .collect();
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    out
}

/// What the stages of one reconcile came to. The status and the Events
/// follow from it ([`status::report`]), and are written in one place.
#[derive(Debug)]
pub enum Outcome {
    /// The Instrumentation asks for more than its ProbeClass (or the
    /// operator's defaults) allows: its probes were removed, so that a
    /// permission revoked in the class takes effect at once.
    NotAllowed {
        problem: Problem,
        pruned: Vec<String>,
    },
    /// The spec or its exporter cannot be served yet: nothing was applied,
    /// existing probes keep their last good config.
    Refused {
        problem: Problem,
        daemon_sets: Vec<ObservedDaemonSet>,
    },
    /// Applying failed; the status says what the API server answered, and
    /// the error drives the retry.
    Failed {
        error: Error,
        daemon_sets: Vec<ObservedDaemonSet>,
    },
    /// Every child applied and the children of removed languages pruned.
    Applied {
        exporter: ResolvedExporter,
        probe_image: String,
        applied: apply::Applied,
    },
}

async fn apply_stage(inst: &Instrumentation, data: &Data) -> Result<Action, Error> {
    let all = candidates(data, inst);
    let outcome = run_stages(inst, data, &all).await?;
    let matches = cached_match_summary(inst, data, &all).await;
    let mut failed = None;
    let (exporter, probe_image, daemon_sets, problem, pruned) = match outcome {
        Outcome::NotAllowed { problem, pruned } => (None, None, Vec::new(), Some(problem), pruned),
        Outcome::Refused {
            problem,
            daemon_sets,
        } => (None, None, daemon_sets, Some(problem), Vec::new()),
        Outcome::Failed { error, daemon_sets } => {
            let problem = Problem {
                reason: error.reason(),
                message: error.describe(),
            };
            failed = Some(error);
            (None, None, daemon_sets, Some(problem), Vec::new())
        }
        Outcome::Applied {
            exporter,
            probe_image,
            applied,
        } => (
            Some(exporter),
            Some(probe_image),
            applied.daemon_sets,
            None,
            applied.pruned,
        ),
    };
    if !pruned.is_empty() {
        info!(instrumentation = %key_of(inst), objects = ?pruned, "Pruned children no longer wanted");
    }
    let report = status::report(
        StatusInput {
            generation: inst.metadata.generation,
            exporter,
            probe_image,
            daemon_sets,
            matches: &matches,
            problem,
            previous: inst.status.as_ref(),
            now: Time(Timestamp::now()),
        },
        &pruned,
    );
    let written = data.ctx.report(inst, &report).await;
    if let Some(error) = failed {
        // The apply error drives the retry; the status write was best effort.
        return Err(error);
    }
    written.map_err(|source| Error::Status {
        instrumentation: key_of(inst).to_string(),
        source,
    })?;
    // Rollouts, pods and collectors are watched; the periodic requeue is only
    // a safety net (and bounds how long drift of an applied child lasts).
    Ok(Action::requeue(apply::REAPPLY_AFTER))
}

/// What the ProbeClass `inst` names (or the operator's defaults) grants it.
fn admit(inst: &Instrumentation, data: &Data) -> Result<Grant, Refusal> {
    let namespace = inst.namespace().unwrap_or_default();
    let mut labels = data
        .namespaces
        .get(&ObjectRef::new(&namespace))
        .map(|ns| ns.labels.to_map())
        .unwrap_or_default();
    // The API server sets this label on every namespace; a namespace the
    // cache has not seen yet still has it.
    labels
        .entry("kubernetes.io/metadata.name".to_owned())
        .or_insert_with(|| namespace.clone());
    let class = inst
        .spec
        .probe_class_name
        .as_deref()
        .map(|name| (name, data.probe_classes.get(&ObjectRef::new(name))));
    let class = match &class {
        None => ClassRef::OperatorDefaults,
        Some((name, None)) => ClassRef::Missing(name),
        Some((_, Some(class))) => ClassRef::Found(class),
    };
    probe_class::admit(
        class,
        &inst.spec,
        &namespace,
        &labels,
        &data.ctx.config.default_probe_image,
    )
}

/// Keeps the probes' ClusterRoleBinding listing the ServiceAccounts of every
/// admitted Instrumentation this operator serves, `inst` included unless it
/// is going away.
async fn sync_binding(inst: &Instrumentation, data: &Data, leaving: bool) -> Result<(), Error> {
    let config = &data.ctx.config;
    let subjects = || {
        let key = key_of(inst);
        let mut serving: Vec<Arc<Instrumentation>> = data
            .instrumentations
            .state()
            .into_iter()
            .filter(|i| {
                i.metadata.deletion_timestamp.is_none()
                    && key_of(i) != key
                    && admit(i, data).is_ok()
            })
            .collect();
        if !leaving && inst.metadata.deletion_timestamp.is_none() && admit(inst, data).is_ok() {
            serving.push(Arc::new(inst.clone()));
        }
        build::probe_subjects(serving.iter().map(AsRef::as_ref))
    };
    data.binding
        .sync(
            &data.ctx.client,
            &config.probe_cluster_role_binding,
            &config.probe_cluster_role,
            subjects,
        )
        .await?;
    Ok(())
}

/// admit → dereference → validate + build → apply (+ prune). Writes children
/// only: the status and Events are the caller's. `Err` is an API failure
/// that leaves nothing to report, retried.
async fn run_stages(
    inst: &Instrumentation,
    data: &Data,
    all: &[Candidate],
) -> Result<Outcome, Error> {
    let client = &data.ctx.client;
    let refused = |problem: Problem| async {
        Ok(Outcome::Refused {
            problem,
            daemon_sets: apply::read_daemon_sets(&data.children, inst),
        })
    };
    let failed = |error: Error| async {
        Ok(Outcome::Failed {
            error,
            // The status keeps showing the probes while the API server
            // refuses a change.
            daemon_sets: apply::read_daemon_sets(&data.children, inst),
        })
    };

    // 1. admit: what the ProbeClass (or the operator's defaults) grants
    let grant = match admit(inst, data) {
        Ok(grant) => grant,
        Err(refusal) => {
            warn!(instrumentation = %key_of(inst), reason = refusal.reason(), %refusal, "Refusing Instrumentation");
            let removed = async {
                sync_binding(inst, data, true).await?;
                Ok::<_, Error>(apply::prune(client, &data.children, inst, &BTreeSet::new()).await?)
            };
            return match removed.await {
                Ok(pruned) => Ok(Outcome::NotAllowed {
                    problem: Problem {
                        reason: refusal.reason(),
                        message: format!("{refusal}; its probes are removed"),
                    },
                    pruned,
                }),
                Err(error) => failed(error).await,
            };
        }
    };

    // 2. dereference
    let watched = data.ctx.config.watch_namespace.as_deref();
    let exporter = match exporter::resolve(client, &data.collectors, watched, inst).await {
        Ok(Ok(exporter)) => exporter,
        Ok(Err(problem)) => return refused(problem).await,
        Err(source) => {
            return Err(Error::Dereference {
                instrumentation: key_of(inst).to_string(),
                source,
            });
        }
    };

    // 3. validate + build
    let input = BuildInput {
        instrumentation: inst,
        exporter: &exporter,
        grant: &grant,
        cluster_instrumentations: all,
    };
    let desired = match build::build(&input) {
        Ok(desired) => desired,
        Err(invalid) => {
            return refused(Problem {
                reason: reasons::INVALID_SPEC,
                message: invalid.to_string(),
            })
            .await;
        }
    };

    // 4. apply: the binding first, so the probes can read pods as they start
    let probe_image = desired.probe_image.clone();
    let applied = async {
        sync_binding(inst, data, false).await?;
        apply::apply_and_prune(client, &data.children, inst, desired).await
    };
    match applied.await {
        Ok(applied) => Ok(Outcome::Applied {
            exporter,
            probe_image,
            applied,
        }),
        Err(error @ Error::Children(_)) => failed(error).await,
        Err(error) => Err(error),
    }
}

/// `inst`'s share of the opt-in rules over the caches. One table serves
/// every Instrumentation (see [`status::match_table`]) and is reused while no
/// namespace, pod or ProbeClass event arrived and the Instrumentations it
/// considers are the same: most reconciles (an Instrumentation's children
/// and its own status events) happen while nothing the rules read changed,
/// and a round of pod events reconciles every Instrumentation, which then
/// share one computation.
async fn cached_match_summary(
    inst: &Instrumentation,
    data: &Data,
    all: &[Candidate],
) -> MatchSummary {
    let key = key_of(inst);
    // Held while computing: the reconciles of one round wait for the first
    // one's table instead of each computing its own.
    let mut cached = data.matches.lock().await;
    // Read before computing: an event during the computation leaves the
    // cached epoch behind, and the next reconcile computes again.
    let epoch = data.optin_epoch.load(Ordering::SeqCst);
    let fresh = cached
        .as_ref()
        .is_some_and(|table| table.epoch == epoch && table.all == all);
    if !fresh {
        *cached = Some(CachedMatches {
            epoch,
            all: all.to_vec(),
            table: match_table(data, all),
        });
    }
    let table = &cached.as_ref().expect("set above").table;
    status::summary_of(table, &key, &inst.spec.languages)
}

/// The opt-in rules applied to every namespace and pod in the caches.
fn match_table(data: &Data, all: &[Candidate]) -> MatchTable {
    let instrumentations = Instrumentations::new(all.iter().cloned());
    let namespaces = data.namespaces.state();
    let pods = data.pods.state();
    status::match_table(
        &instrumentations,
        namespaces.iter().map(|n| Meta {
            namespace: "",
            name: &n.name,
            labels: &n.labels,
            annotations: &n.annotations,
        }),
        pods.iter().filter(|p| !p.deleting).map(|p| Meta {
            namespace: p.namespace.as_deref().unwrap_or_default(),
            name: &p.name,
            labels: &p.labels,
            annotations: &p.annotations,
        }),
    )
}

/// Finalizer cleanup: the probes' ServiceAccounts leave the probes'
/// ClusterRoleBinding (cluster-scoped, so no ownerReference can do it);
/// namespaced children carry ownerReferences and go with the garbage
/// collector.
async fn cleanup(inst: &Instrumentation, data: &Data) -> Result<Action, Error> {
    sync_binding(inst, data, true).await?;
    let binding = &data.ctx.config.probe_cluster_role_binding;
    info!(instrumentation = %key_of(inst), binding, "Removed the probes' ServiceAccounts from their ClusterRoleBinding");
    report::publish(
        &data.ctx.recorder,
        inst,
        &[report::normal(
            reasons::DELETING,
            "Cleanup",
            format!("removed the probes' ServiceAccounts from ClusterRoleBinding {binding}"),
        )],
    )
    .await;
    Ok(Action::await_change())
}
