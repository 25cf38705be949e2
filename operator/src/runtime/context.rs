//! The state every controller shares.

use std::time::Duration;

use ferrotel_api::conditions::WithConditions;
use k8s_openapi::NamespaceResourceScope;
use kube::{
    Api, Client, Resource,
    core::object::HasStatus,
    runtime::{
        controller::Action,
        events::{Recorder, Reporter},
    },
};
use serde::{Serialize, de::DeserializeOwned};
use tokio_util::sync::CancellationToken;

use super::{Backoffs, ErrorCategory, Metrics, OperatorConfig, Readiness, Report, report};

/// Shared by all controllers; cheap to clone behind an `Arc`.
pub struct Context {
    pub client: Client,
    pub config: OperatorConfig,
    pub metrics: Metrics,
    pub readiness: Readiness,
    /// Publishes Kubernetes Events as `ferrotel-operator`.
    pub recorder: Recorder,
    /// Cancelled on SIGTERM/SIGINT, on loss of leadership, or when any
    /// controller fails.
    pub shutdown: CancellationToken,
    pub backoffs: Backoffs,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Context {
    pub fn new(
        client: Client,
        config: OperatorConfig,
        metrics: Metrics,
        readiness: Readiness,
        shutdown: CancellationToken,
    ) -> Self {
        let reporter = Reporter {
            controller: ferrotel_api::labels::FIELD_MANAGER.to_owned(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            config,
            metrics,
            readiness,
            shutdown,
            backoffs: Backoffs::default(),
        }
    }

    /// An `Api` over the watched namespace, or all namespaces.
    pub fn namespaced_api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        match &self.config.watch_namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }

    /// Ends a reconcile: publishes the report's Events on `obj`, then writes
    /// its status if it changed (see [`report`]). Returns whether the status
    /// was written.
    pub async fn report<K>(&self, obj: &K, report: &Report<K::Status>) -> Result<bool, kube::Error>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + HasStatus
            + Clone
            + std::fmt::Debug
            + DeserializeOwned,
        K::Status: WithConditions + Serialize,
    {
        report::write(&self.client, &self.recorder, obj, report).await
    }

    /// The `error_policy` decision: counts the error, then either waits for
    /// the object to change (permanent errors) or retries after a per-object
    /// exponential backoff (transient ones). `key` identifies the object,
    /// e.g. `telemetrycollector/ns/name`; call [`Backoffs::reset`] with the
    /// same key after a successful reconcile.
    pub fn error_action(
        &self,
        controller: &'static str,
        key: &str,
        category: ErrorCategory,
    ) -> Action {
        self.metrics.error(controller, category);
        if category.waits_for_change() {
            self.backoffs.reset(key);
            Action::await_change()
        } else if category == ErrorCategory::Forbidden {
            // Someone has to fix RBAC; poll slowly.
            Action::requeue(Duration::from_secs(60).max(self.backoffs.next_delay(key)))
        } else {
            Action::requeue(self.backoffs.next_delay(key))
        }
    }
}
