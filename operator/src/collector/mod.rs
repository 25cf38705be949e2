//! The `TelemetryCollector` controller.
//!
//! One reconcile is a named pipeline, one module per stage:
//!
//! 1. **validate** ([`ferrotel_api::collector::validate`]): an invalid config
//!    stops here — nothing is written but the status (`ConfigValid=False`)
//!    and a Warning Event, so the last good ConfigMap and workload keep
//!    serving; the object then waits for a change instead of retrying.
//! 2. **build** ([`build`]): pure, CR → desired children.
//! 3. **apply** ([`apply`]): server-side apply of every child with the one
//!    field manager, then pruning of children no longer wanted (the other
//!    mode's workload, an unneeded Service or ServiceAccount, old hashed
//!    ConfigMaps beyond the rollback window).
//! 4. **status** ([`status`]): pure, the status and the Events follow from
//!    what the stages came to ([`Outcome`]); the reconcile writes them once,
//!    at its end, the status only when it differs from the stored one
//!    (timestamps ignored).
//!
//! The Instrumentation controller has the same shape. `managementState:
//! unmanaged` skips stages 1–3 entirely. The operator never
//! writes to `spec`. Deletion is left to the garbage collector (every child
//! has an ownerReference to the CR).

mod apply;
pub mod build;
mod status;

use std::{sync::Arc, time::Duration};

use build::Built;
use ferrotel_api::{
    collector::{
        ManagementState, TelemetryCollector,
        distribution::default_distribution,
        validate::{self, ComponentCheck},
    },
    labels,
};
use futures::StreamExt;
use k8s_openapi::api::{
    apps::v1::{DaemonSet, Deployment},
    core::v1::{ConfigMap, Service, ServiceAccount},
};
use kube::{
    Api, Resource, ResourceExt,
    runtime::{Controller, controller::Action, reflector::Store, watcher},
};
use tracing::info;

use crate::runtime::{Context, ErrorCategory, apply as runtime_apply, cached, errors::Categorized};

/// Name used for metrics, readiness and logs.
pub const CONTROLLER: &str = "collector";

/// How often a healthy collector is re-checked without any watch event (a
/// safety net against missed events, not a polling loop).
const RESYNC: Duration = Duration::from_secs(600);

/// A reconcile failure, one variant per stage.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to build the children of TelemetryCollector {name}")]
    Build {
        name: String,
        #[source]
        source: build::BuildError,
    },
    #[error(transparent)]
    Children(#[from] runtime_apply::Error),
    #[error("failed to update the status of TelemetryCollector {name}")]
    Status {
        name: String,
        #[source]
        source: kube::Error,
    },
}

impl Categorized for Error {
    fn category(&self) -> ErrorCategory {
        match self {
            Self::Build { .. } => ErrorCategory::Internal,
            Self::Children(err) => ErrorCategory::of_kube(err.kube()),
            Self::Status { source, .. } => ErrorCategory::of_kube(source),
        }
    }
}

impl Error {
    /// What failed and why, in the API server's words where it answered (for
    /// conditions and Events).
    pub fn describe(&self) -> String {
        match self {
            Self::Children(err) => err.describe(),
            Self::Build { source, .. } => format!("{self}: {source}"),
            Self::Status { source, .. } => format!("{self}: {source}"),
        }
    }

    /// Event reason for this failure (bounded set).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Build { .. } => "BuildFailed",
            Self::Children(err) => err.reason(),
            Self::Status { .. } => "StatusUpdateFailed",
        }
    }
}

fn key(tc: &TelemetryCollector) -> String {
    format!(
        "telemetrycollector/{}/{}",
        tc.namespace().unwrap_or_default(),
        tc.name_any()
    )
}

/// Label selector restricting the child watches to our collectors' children.
fn children_selector() -> String {
    format!(
        "{}={},{}={}",
        labels::APP_MANAGED_BY_LABEL,
        labels::MANAGED_BY_VALUE,
        labels::APP_COMPONENT_LABEL,
        build::COMPONENT
    )
}

/// Runs the controller until `ctx.shutdown` is cancelled.
pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    let api: Api<TelemetryCollector> = ctx.namespaced_api();
    if let Err(err) = api.list(&kube::api::ListParams::default().limit(1)).await {
        anyhow::bail!(
            "cannot list TelemetryCollectors ({err}); install the CRDs with \
             `kubectl apply --server-side -f crds/` and check the operator's RBAC"
        );
    }

    // Child watches only see our collectors' children. They are kept in
    // caches that the reconcile compares its rendered children with, so that
    // a reconcile with nothing to change sends no request.
    let children = watcher::Config::default().labels(&children_selector());
    let (deployments, deployment_events) =
        cached(ctx.namespaced_api::<Deployment>(), children.clone());
    let (daemon_sets, ds_events) = cached(ctx.namespaced_api::<DaemonSet>(), children.clone());
    let (config_maps, cm_events) = cached(ctx.namespaced_api::<ConfigMap>(), children.clone());
    let (services, svc_events) = cached(ctx.namespaced_api::<Service>(), children.clone());
    let (service_accounts, sa_events) = cached(ctx.namespaced_api::<ServiceAccount>(), children);
    let caches = apply::ChildCaches {
        deployments,
        daemon_sets,
        config_maps,
        services,
        service_accounts,
    };
    let controller = Controller::new(api, watcher::Config::default())
        .with_config(crate::runtime::controller_config())
        .owns_stream(deployment_events)
        .owns_stream(ds_events)
        .owns_stream(cm_events)
        .owns_stream(svc_events)
        .owns_stream(sa_events);

    // /readyz turns true once the TelemetryCollector cache holds its first
    // complete list: before that, reconciles would act on a partial view.
    let store = controller.store();
    let data = Arc::new(Data {
        ctx: ctx.clone(),
        store: store.clone(),
        caches,
    });
    let ready = data.clone();
    tokio::spawn(async move {
        if ready.synced().await {
            ready.ctx.readiness.mark_synced(CONTROLLER);
            info!(controller = CONTROLLER, "Watches synced");
        }
    });

    info!(controller = CONTROLLER, "Starting controller");
    controller
        .graceful_shutdown_on(ctx.shutdown.clone().cancelled_owned())
        .run(reconcile, error_policy, data)
        .for_each(|result| async move { crate::runtime::log_result(CONTROLLER, result) })
        .await;
    info!(controller = CONTROLLER, "Controller stopped");
    Ok(())
}

/// Shared state of the reconciler: the runtime context and the caches.
pub struct Data {
    pub ctx: Arc<Context>,
    pub store: Store<TelemetryCollector>,
    pub caches: apply::ChildCaches,
}

impl Data {
    /// Waits until every cache holds its first full list: a child missing
    /// from a cache would be applied again (a write on every restart).
    /// Returns at once once synced.
    async fn synced(&self) -> bool {
        use crate::runtime::wait_until_synced;
        wait_until_synced(&self.store).await
            && wait_until_synced(&self.caches.deployments).await
            && wait_until_synced(&self.caches.daemon_sets).await
            && wait_until_synced(&self.caches.config_maps).await
            && wait_until_synced(&self.caches.services).await
            && wait_until_synced(&self.caches.service_accounts).await
    }
}

fn error_policy(tc: Arc<TelemetryCollector>, err: &Error, data: Arc<Data>) -> Action {
    data.ctx.error_action(CONTROLLER, &key(&tc), err.category())
}

/// What the stages of one reconcile came to. The status and the Events
/// follow from it ([`status::report`]), and are written in one place.
#[derive(Debug)]
pub enum Outcome {
    /// `managementState: unmanaged`: nothing was built or applied.
    Unmanaged,
    /// The config failed validation: nothing was applied, the previous
    /// config keeps serving.
    Invalid(validate::Report),
    /// Building or applying failed; retried with backoff.
    Failed(Error),
    /// Every child applied and what no longer belongs pruned.
    Applied {
        built: Box<Built>,
        applied: apply::Applied,
        report: validate::Report,
    },
}

async fn reconcile(tc: Arc<TelemetryCollector>, data: Arc<Data>) -> Result<Action, Error> {
    if !data.synced().await {
        // The caches were dropped: the controller is stopping.
        return Ok(Action::await_change());
    }
    let ctx = &data.ctx;
    let _timer = ctx.metrics.reconcile(CONTROLLER);
    if tc.meta().deletion_timestamp.is_some() {
        // The garbage collector removes the children through their ownerReferences.
        return Ok(Action::await_change());
    }
    let outcome = run_stages(&tc, &data).await;
    let written = ctx.report(&*tc, &status::report(&tc, &outcome)).await;
    let status_err = |source| Error::Status {
        name: build::display_name(&tc),
        source,
    };
    match outcome {
        Outcome::Unmanaged => {
            written.map_err(status_err)?;
            ctx.backoffs.reset(&key(&tc));
            Ok(Action::await_change())
        }
        Outcome::Invalid(_) => {
            written.map_err(status_err)?;
            // Retrying cannot fix the config; the next edit triggers a reconcile.
            ctx.metrics.error(CONTROLLER, ErrorCategory::InvalidSpec);
            ctx.backoffs.reset(&key(&tc));
            Ok(Action::await_change())
        }
        // The stage's error drives the retry; the status write was best effort.
        Outcome::Failed(err) => Err(err),
        Outcome::Applied { .. } => {
            written.map_err(status_err)?;
            ctx.backoffs.reset(&key(&tc));
            Ok(Action::requeue(RESYNC))
        }
    }
}

/// validate → build → apply (+ prune). Writes children only: the status and
/// Events are the caller's.
async fn run_stages(tc: &TelemetryCollector, data: &Data) -> Outcome {
    let ctx = &data.ctx;
    if tc.spec.management_state() == ManagementState::Unmanaged {
        return Outcome::Unmanaged;
    }
    let name = build::display_name(tc);

    // 1. validate
    let check = match tc.spec.custom_image() {
        Some(_) => ComponentCheck::Skip,
        None => ComponentCheck::Distribution(default_distribution()),
    };
    let report = validate::validate(
        &tc.spec.config,
        tc.spec.ports.as_deref().unwrap_or_default(),
        check,
    );
    if !report.is_valid() {
        info!(collector = %name, reason = %report.summary(), "Refusing invalid collector config");
        return Outcome::Invalid(report);
    }

    // 2. build
    let built = match build::build(tc, &ctx.config.default_collector_image) {
        Ok(built) => built,
        Err(source) => return Outcome::Failed(Error::Build { name, source }),
    };

    // 3. apply + prune
    match apply::apply_and_prune(&ctx.client, &data.caches, tc, &built)
        .await
        .map_err(Error::from)
    {
        Ok(applied) => {
            if tc.status.as_ref().and_then(|s| s.config_hash.as_deref())
                != Some(built.config_hash.as_str())
            {
                info!(collector = %name, hash = %built.config_hash, "Rolling out collector config");
            }
            Outcome::Applied {
                built: Box::new(built),
                applied,
                report,
            }
        }
        Err(err) => Outcome::Failed(err),
    }
}
