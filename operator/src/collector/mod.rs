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
//! 4. **status** ([`status`]): computed from what was applied, written only
//!    when it differs from the stored one (timestamps ignored).
//!
//! `managementState: unmanaged` skips stages 2–3 entirely. The operator never
//! writes to `spec`. Deletion is left to the garbage collector (every child
//! has an ownerReference to the CR).

mod apply;
pub mod build;
mod status;

use std::{sync::Arc, time::Duration};

use ferrotel_api::{
    collector::{
        ManagementState, TelemetryCollector,
        distribution::default_distribution,
        validate::{self, ComponentCheck},
    },
    conditions::{self, reasons},
    labels,
};
use futures::StreamExt;
use k8s_openapi::api::{
    apps::v1::{DaemonSet, Deployment},
    core::v1::{ConfigMap, Service, ServiceAccount},
};
use kube::{
    Api, Resource, ResourceExt,
    runtime::{
        Controller,
        controller::Action,
        events::{Event, EventType},
        watcher,
    },
};
use tracing::{debug, info, warn};

use crate::runtime::{Context, ErrorCategory, errors::Categorized};

/// Name used for metrics, readiness and logs.
pub const CONTROLLER: &str = "collector";

/// How often a healthy collector is re-checked without any watch event (a
/// safety net against missed events, not a polling loop).
const RESYNC: Duration = Duration::from_secs(600);

/// A reconcile failure, one variant per stage that touches the API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to build the children of TelemetryCollector {name}")]
    Build {
        name: String,
        #[source]
        source: build::BuildError,
    },
    #[error("failed to apply {kind} {name}")]
    Apply {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to prune old {kind} children of TelemetryCollector {owner}")]
    Prune {
        kind: &'static str,
        owner: String,
        #[source]
        source: kube::Error,
    },
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
            Self::Apply { source, .. }
            | Self::Prune { source, .. }
            | Self::Status { source, .. } => ErrorCategory::of_kube(source),
        }
    }
}

impl Error {
    /// Event reason for this failure (bounded set).
    fn reason(&self) -> &'static str {
        match self {
            Self::Build { .. } => "BuildFailed",
            Self::Apply { .. } => "ApplyFailed",
            Self::Prune { .. } => "PruneFailed",
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

    // Child watches only see our collectors' children.
    let children = watcher::Config::default().labels(&children_selector());
    // `Controller` applies kube-runtime's default backoff to its merged
    // trigger stream, so a failing watch is retried with backoff.
    let controller = Controller::new(api, watcher::Config::default())
        .owns(ctx.namespaced_api::<Deployment>(), children.clone())
        .owns(ctx.namespaced_api::<DaemonSet>(), children.clone())
        .owns(ctx.namespaced_api::<ConfigMap>(), children.clone())
        .owns(ctx.namespaced_api::<Service>(), children.clone())
        .owns(ctx.namespaced_api::<ServiceAccount>(), children);

    // /readyz turns true once the TelemetryCollector cache holds its first
    // complete list: before that, reconciles would act on a partial view.
    let store = controller.store();
    let ready_ctx = ctx.clone();
    tokio::spawn(async move {
        if crate::runtime::wait_until_synced(&store).await {
            ready_ctx.readiness.mark_synced(CONTROLLER);
            info!(controller = CONTROLLER, "Watches synced");
        }
    });

    info!(controller = CONTROLLER, "Starting controller");
    controller
        .graceful_shutdown_on(ctx.shutdown.clone().cancelled_owned())
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => debug!(object = %obj, "Reconciled"),
                Err(kube::runtime::controller::Error::ReconcilerFailed(err, obj)) => {
                    warn!(object = %obj, error = %err, cause = ?std::error::Error::source(&err).map(ToString::to_string), "Reconcile failed");
                }
                Err(err) => debug!(error = %err, "Controller event"),
            }
        })
        .await;
    info!(controller = CONTROLLER, "Controller stopped");
    Ok(())
}

fn error_policy(tc: Arc<TelemetryCollector>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.error_action(CONTROLLER, &key(&tc), err.category())
}

async fn publish(
    ctx: &Context,
    tc: &TelemetryCollector,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: action.to_owned(),
        secondary: None,
    };
    if let Err(err) = ctx.recorder.publish(&event, &tc.object_ref(&())).await {
        // Events are best effort: never fail a reconcile over one.
        warn!(error = %err, reason, "Could not publish Event");
    }
}

async fn reconcile(tc: Arc<TelemetryCollector>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile(CONTROLLER);
    let name = build::display_name(&tc);
    if tc.meta().deletion_timestamp.is_some() {
        // The garbage collector removes the children through their ownerReferences.
        return Ok(Action::await_change());
    }
    let old_status = tc.status.clone().unwrap_or_default();

    if tc.spec.management_state() == ManagementState::Unmanaged {
        let new = status::unmanaged(&tc, &old_status);
        status::write_if_changed(&ctx, &tc, &old_status, &new).await?;
        ctx.backoffs.reset(&key(&tc));
        return Ok(Action::await_change());
    }

    // 1. validate
    let custom_image = tc.spec.custom_image();
    let check = match custom_image {
        Some(_) => ComponentCheck::Skip,
        None => ComponentCheck::Distribution(default_distribution()),
    };
    let report = validate::validate(
        &tc.spec.config,
        tc.spec.ports.as_deref().unwrap_or_default(),
        check,
    );
    if !report.is_valid() {
        let message = format!(
            "config not rolled out, the previous one keeps serving: {}",
            report.summary()
        );
        let previous = conditions::find(&old_status.conditions, conditions::CONFIG_VALID)
            .map(|c| c.message.clone());
        let new = status::invalid(&tc, &old_status, &message);
        if previous.as_deref() != Some(message.as_str()) {
            info!(collector = %name, reason = %report.summary(), "Refusing invalid collector config");
            publish(
                &ctx,
                &tc,
                EventType::Warning,
                reasons::INVALID_CONFIG,
                "Validate",
                message,
            )
            .await;
        }
        status::write_if_changed(&ctx, &tc, &old_status, &new).await?;
        // Retrying cannot fix the config; the next edit triggers a reconcile.
        ctx.metrics.error(CONTROLLER, ErrorCategory::InvalidSpec);
        ctx.backoffs.reset(&key(&tc));
        return Ok(Action::await_change());
    }

    // 2. build
    let built =
        build::build(&tc, &ctx.config.default_collector_image).map_err(|source| Error::Build {
            name: name.clone(),
            source,
        })?;

    // 3. apply + prune
    let applied = match apply::apply_and_prune(&ctx, &tc, &built).await {
        Ok(applied) => applied,
        Err(err) => {
            let new = status::apply_failed(&tc, &old_status, &err);
            publish(
                &ctx,
                &tc,
                EventType::Warning,
                err.reason(),
                "Apply",
                format!("{err}: {}", cause(&err)),
            )
            .await;
            // Best effort: the error below is what drives the retry.
            let _ = status::write_if_changed(&ctx, &tc, &old_status, &new).await;
            return Err(err);
        }
    };
    if old_status.config_hash.as_deref() != Some(built.config_hash.as_str()) {
        let note = match &old_status.config_hash {
            Some(old) => format!(
                "rolling out config {} (was {old}) with image {}",
                built.config_hash, built.image
            ),
            None => format!(
                "rolled out config {} with image {}",
                built.config_hash, built.image
            ),
        };
        info!(collector = %name, hash = %built.config_hash, "Rolling out collector config");
        publish(
            &ctx,
            &tc,
            EventType::Normal,
            "ConfigRolledOut",
            "Apply",
            note,
        )
        .await;
    }
    for pruned in &applied.pruned {
        publish(
            &ctx,
            &tc,
            EventType::Normal,
            "Pruned",
            "Prune",
            format!("deleted {pruned}, no longer wanted"),
        )
        .await;
    }

    // 4. status
    let new = status::applied(&tc, &old_status, &built, &applied, &report);
    status::write_if_changed(&ctx, &tc, &old_status, &new).await?;
    ctx.backoffs.reset(&key(&tc));
    Ok(Action::requeue(RESYNC))
}

/// The `#[source]` chain of an error as one line (for Events and conditions).
fn cause(err: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut cur = err.source();
    while let Some(e) = cur {
        parts.push(e.to_string());
        cur = e.source();
    }
    parts.join(": ")
}
