//! The operator runtime: everything the controllers share.
//!
//! Controllers plug in as `(name, fn(Arc<Context>) -> future)` pairs passed to
//! [`run`] by `main.rs`. Each controller gets one [`Context`] and should:
//!
//! - build its `Api`s with [`Context::namespaced_api`] so `--watch-namespace`
//!   is honoured;
//! - call [`Readiness::mark_synced`] with its name once every watch it owns
//!   produced its first event (e.g. after `Store::wait_until_ready` on the
//!   controller's store) — `/readyz` turns true only when every controller did;
//! - stop when [`Context::shutdown`] is cancelled (for kube-runtime's
//!   `Controller`: `.graceful_shutdown_on(ctx.shutdown.clone().cancelled_owned())`);
//! - watch its children through [`cached`] and write them with
//!   [`apply::apply_unless_unchanged`] against that cache, removing unwanted
//!   ones with [`apply::prune_cached`] (one field manager, ownership checked),
//!   so that a settled cluster costs no request, restart included;
//! - end every reconcile in [`Context::report`]: the status its pure status
//!   stage computed, written only if it changed, and its Events;
//! - time each reconcile with [`Metrics::reconcile`] and map errors to an
//!   [`ErrorCategory`] in its `error_policy` via [`Context::error_action`],
//!   which also drives per-object exponential backoff.
//!
//! Leader election ([`leader`]) happens before any controller starts: a
//! standby replica serves `/livez` and `/readyz` but watches nothing.

pub mod apply;
mod args;
mod backoff;
pub mod client;
mod context;
pub mod errors;
pub mod leader;
mod metrics;
mod readiness;
pub mod report;
mod server;

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use anyhow::Context as _;
use futures::future::try_join_all;
use kube::{
    Resource,
    runtime::{
        controller::{self, Action},
        reflector::ObjectRef,
        watcher,
    },
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

pub use args::{Args, LogFormat, OperatorConfig};
pub use backoff::Backoffs;
pub use context::Context;
pub use errors::ErrorCategory;
pub use metrics::Metrics;
pub use readiness::Readiness;
pub use report::Report;

/// What a controller entry point returns.
pub type ControllerFuture = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;
/// A controller entry point: runs until `ctx.shutdown` is cancelled.
pub type ControllerFn = fn(Arc<Context>) -> ControllerFuture;

/// Sets up `tracing` from `--log-level`/`--log-format` (`RUST_LOG` wins if set).
pub fn init_logging(args: &Args) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&args.log_level))
        .with_context(|| {
            format!(
                "invalid --log-level {:?}; use e.g. \"info\" or \"ferrotel_operator=debug,info\"",
                args.log_level
            )
        })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
    Ok(())
}

/// How often freed heap memory is returned to the system.
const HEAP_TRIM_EVERY: Duration = Duration::from_secs(30);

/// Reconciles one controller runs at once. kube-runtime's default is no
/// limit: at a cold start every CR reconciles at the same moment, each with
/// its requests in flight, their connections and its rendered children, and
/// that burst was the operator's memory peak (bench/scale/NOTES.md: 30.2 →
/// 26.5 MB at 10,000 pods and 70 CRs). Not fewer: a change queued behind a
/// round of pod-event reconciles of 50 Instrumentations waits ~3 rounds. One
/// CR is never reconciled twice at once either way.
pub const RECONCILES_AT_ONCE: u16 = 16;

/// The controllers' configuration: [`RECONCILES_AT_ONCE`].
pub fn controller_config() -> kube::runtime::controller::Config {
    kube::runtime::controller::Config::default().concurrency(RECONCILES_AT_ONCE)
}

/// Returns the heap's free pages to the system every [`HEAP_TRIM_EVERY`].
/// glibc gives back on its own only what is free at the top of the heap;
/// what a burst freed below live objects stays resident. The cold start is
/// such a burst (every child created, dozens of concurrent requests, their
/// connections closed by the pool afterwards): without a trim its pages
/// stayed resident for the life of the process (bench/scale/NOTES.md). A
/// trim walks the one arena (`ferrotel_memory::use_one_arena`) in well under
/// a millisecond at 10,000 pods.
fn spawn_heap_trim() {
    tokio::spawn(async {
        let mut every = tokio::time::interval(HEAP_TRIM_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            ferrotel_memory::release_free_heap();
        }
    });
}

/// Runs the operator until SIGTERM/SIGINT, a controller failure or the loss
/// of leadership.
pub async fn run(args: Args, controllers: &[(&'static str, ControllerFn)]) -> anyhow::Result<()> {
    let config = kube::Config::infer().await.context(
        "cannot configure a Kubernetes client: run in a pod with a service account, or set KUBECONFIG \
         (e.g. KUBECONFIG=.testbed/kubeconfig after `make testbed-up`)",
    )?;
    let client = client::build(config).context(
        "cannot build a Kubernetes client from the kubeconfig or service account: check its \
         certificates and credentials",
    )?;
    let shutdown = CancellationToken::new();
    spawn_signal_handler(shutdown.clone());
    spawn_heap_trim();

    let readiness = Readiness::default();
    for (name, _) in controllers {
        readiness.register(name);
    }
    let metrics = Metrics::default();
    let config = args.operator_config();
    let ctx = Arc::new(Context::new(
        client.clone(),
        config,
        metrics,
        readiness,
        shutdown.clone(),
    ));

    let servers = server::spawn(&args, ctx.clone()).await?;

    let elector = if args.leader_elect {
        let elector = leader::LeaderElector::new(
            client.clone(),
            &args.leader_elect_namespace(),
            &args.leader_elect_lease_name,
            leader::identity(),
        );
        ctx.readiness.set_standby(true);
        if !elector.acquire(&shutdown).await? {
            info!("Shut down before acquiring leadership");
            servers.stop().await;
            return Ok(());
        }
        ctx.readiness.set_standby(false);
        Some(elector)
    } else {
        None
    };

    ctx.metrics.set_leader(true);
    let lost = CancellationToken::new();
    let keeper = elector.clone().map(|elector| {
        let (shutdown, lost) = (shutdown.clone(), lost.clone());
        tokio::spawn(async move {
            if let Err(err) = elector.hold(&shutdown).await {
                error!(error = %err, "Lost leadership; stopping controllers");
                lost.cancel();
                shutdown.cancel();
            }
        })
    });

    info!(
        controllers = ?controllers.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        watch_namespace = ctx.config.watch_namespace.as_deref().unwrap_or("<all>"),
        "Starting controllers"
    );
    let result = try_join_all(controllers.iter().map(|(name, run)| {
        let ctx = ctx.clone();
        let name = *name;
        async move {
            let res = run(ctx.clone())
                .await
                .with_context(|| format!("controller {name} failed"));
            // One controller failing takes the others down: a half-running
            // operator would look healthy while ignoring a kind.
            ctx.shutdown.cancel();
            res
        }
    }))
    .await;

    shutdown.cancel();
    if let Some(keeper) = keeper {
        let _ = keeper.await;
    }
    if let Some(elector) = elector
        && !lost.is_cancelled()
        && let Err(err) = elector.release().await
    {
        warn!(error = %err, "Could not release the leader lease; the next leader waits for it to expire");
    }
    servers.stop().await;
    result?;
    if lost.is_cancelled() {
        anyhow::bail!("leadership was lost; exiting so a fresh process can rejoin the election");
    }
    info!("Shut down cleanly");
    Ok(())
}

fn spawn_signal_handler(shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(err) => {
                    error!(error = %err, "Cannot install SIGTERM handler");
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => info!(signal = "SIGTERM", "Shutting down"),
            _ = tokio::signal::ctrl_c() => info!(signal = "SIGINT", "Shutting down"),
            _ = shutdown.cancelled() => return,
        }
        shutdown.cancel();
    });
}

/// Logs what `Controller::run` yields: a failed reconcile at `warn` with its
/// cause (its `error_policy` has already decided the retry), the rest at
/// `debug`.
pub fn log_result<K, E>(
    controller: &'static str,
    result: Result<(ObjectRef<K>, Action), controller::Error<E, watcher::Error>>,
) where
    K: Resource,
    K::DynamicType: std::fmt::Debug,
    E: std::error::Error + 'static,
{
    match result {
        Ok((object, _)) => debug!(controller, %object, "Reconciled"),
        Err(controller::Error::ReconcilerFailed(err, object)) => warn!(
            controller,
            %object,
            error = %err,
            cause = ?std::error::Error::source(&err).map(ToString::to_string),
            "Reconcile failed"
        ),
        Err(err) => debug!(controller, error = %err, "Controller event"),
    }
}

/// Waits until `store` has received its first complete list.
///
/// Polls `Store::wait_until_ready` with a fresh future every 500 ms instead of
/// awaiting one future: with kube-runtime 5.0.0 we observed that single
/// future never completing although the store was already populated (a
/// missed wake-up); a fresh poll always sees the stored value. Returns
/// `false` if the store's writer was dropped (the controller stopped).
pub async fn wait_until_synced<K>(store: &kube::runtime::reflector::Store<K>) -> bool
where
    K: kube::runtime::reflector::Lookup + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    loop {
        match tokio::time::timeout(
            std::time::Duration::from_millis(500),
            store.wait_until_ready(),
        )
        .await
        {
            Ok(res) => return res.is_ok(),
            Err(_elapsed) => {}
        }
    }
}

/// A watch of `api` kept in a store, for a controller to read its children
/// (or other inputs) from instead of GETting them: the store, and the
/// stream of touched objects to pass to `Controller::owns_stream` or
/// `watches_stream` (which drives the store). `managedFields` are dropped
/// before storing: nothing reads them, and they are most of each object.
pub fn cached<K>(
    api: kube::Api<K>,
    config: watcher::Config,
) -> (
    kube::runtime::reflector::Store<K>,
    impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    use kube::runtime::WatchStreamExt;
    let (store, writer) = kube::runtime::reflector::store();
    let stream = kube::runtime::reflector::reflector(
        writer,
        watcher(api, config)
            .default_backoff()
            .modify(|obj: &mut K| obj.meta_mut().managed_fields = None),
    )
    .touched_objects();
    (store, stream)
}
