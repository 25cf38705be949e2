//! `ferrotel-scale-bench`: the operator at cluster scale, on the project's own
//! test bed (etcd, kube-apiserver, kube-controller-manager, kube-scheduler and
//! kwok nodes, started by `ferrotel_e2e::TestBed`), with the release build of
//! `ferrotel-operator` running against it as its own user.
//!
//! What it builds (defaults): 100 kwok nodes, 1,000 namespaces, 10,000 pods
//! (bound to the nodes directly; kwok makes them Running), 20
//! TelemetryCollectors and 50 Instrumentations, each selecting 1/50 of the
//! namespaces and running its probe on 1/50 of the nodes.
//!
//! What it measures, in order:
//! 1. cold start: the operator started on the full cluster, until every CR
//!    is reconciled (observedGeneration of every CR, its children present);
//! 2. steady state: operator RSS and CPU, and its API requests over a window
//!    (`--steady-seconds`, default 60): from the API server's audit log (the
//!    operator's user only, by verb and resource) and from its `/metrics`
//!    (`apiserver_flowcontrol_dispatched_requests_total` of a FlowSchema that
//!    matches only the operator's user; `apiserver_request_total` has no
//!    client label, so its diff is given for the whole cluster);
//! 3. reconcile latency: `--changes` spec changes spread over the CRs, each
//!    timed from the PATCH until the rendered child reflects it (seen by a
//!    watch);
//! 4. restart: `kill -9`, start again, time until every CR was reconciled,
//!    the operator's writes by verb (audit log) and how many stored objects
//!    actually changed (resourceVersions before and after).
//!
//! Everything it creates is named `scale-…`; the test bed and the operator
//! are stopped when it ends, whatever happens. Any error ends the run with a
//! non-zero status and no results file.
#![forbid(unsafe_code)]
// A command-line tool: stdout is its progress report.
#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail, ensure};
use clap::Parser;
use ferrotel_e2e::audit::{AuditLog, AuditRequest};
use ferrotel_e2e::operator::{OperatorProcess, kubectl};
use ferrotel_e2e::{TestBed, TestBedOptions};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod, ServiceAccount};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::watcher;
use serde_json::{Value, json};

/// The operator's identity on the test bed: the bed's restricted user,
/// bound to the install's operator ClusterRole (config/rbac/role.yaml).
const OPERATOR_USER: &str = "ferrotel-restricted";
/// FlowSchema that matches only the operator's user: its dispatched-request
/// counter in the API server's /metrics is the operator's request count.
const FLOW_SCHEMA: &str = "scale-operator";
const MANAGED_BY: &str = "app.kubernetes.io/managed-by=ferrotel-operator";
const POOL_LABEL: &str = "scale.ferrotel.io/pool";
const TEAM_LABEL: &str = "scale.ferrotel.io/team";
const CHANGE_KEY: &str = "scale.ferrotel.io/change";
/// The ProbeClass a cluster admin creates so that Instrumentations may
/// select namespaces by label (the operator's defaults refuse that).
const PROBE_CLASS: &str = "scale-teams";
/// Goals from the issue.
const RSS_GOAL_MB: f64 = 30.0;
const P99_GOAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Parser)]
#[command(
    about = "Operator at scale: RSS, CPU, reconcile latency, API requests and restart on kwok nodes"
)]
struct Cli {
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    #[arg(long, default_value_t = 1000)]
    namespaces: usize,
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    #[arg(long, default_value_t = 50)]
    instrumentations: usize,
    #[arg(long, default_value_t = 20)]
    collectors: usize,
    /// Spec changes timed for the reconcile latency (half Instrumentations,
    /// half TelemetryCollectors).
    #[arg(long, default_value_t = 60)]
    changes: usize,
    /// Length of the steady-state window.
    #[arg(long, default_value_t = 60)]
    steady_seconds: u64,
    /// Requests in flight while creating the cluster's objects.
    #[arg(long, default_value_t = 24)]
    concurrency: usize,
    /// Results file (Markdown).
    #[arg(long, default_value = "bench/results/scale.md")]
    out: PathBuf,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,kube_client::client::builder=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ferrotel-scale-bench: tokio runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferrotel-scale-bench FAILED: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------- samples

/// Load average and operator memory/CPU, sampled every 500 ms for the whole run.
#[derive(Debug, Default)]
struct Samples {
    /// (seconds since start, 1-min load average)
    load: Vec<(f64, f64)>,
    /// (seconds since start, pid, RSS bytes, CPU seconds)
    operator: Vec<(f64, u32, u64, f64)>,
}

fn loadavg() -> (f64, f64, f64) {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let v: Vec<f64> = text
        .split_whitespace()
        .take(3)
        .filter_map(|x| x.parse().ok())
        .collect();
    (
        v.first().copied().unwrap_or(f64::NAN),
        v.get(1).copied().unwrap_or(f64::NAN),
        v.get(2).copied().unwrap_or(f64::NAN),
    )
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// The `name:` line of a `/proc` file in kB (`status`, `smaps_rollup`), in
/// bytes.
fn kb_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(name))?
        .split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()
        .map(|kb| kb * 1024)
}

/// (VmRSS, VmHWM) in bytes.
fn rss(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some((kb_field(&text, "VmRSS:")?, kb_field(&text, "VmHWM:")?))
}

/// (anonymous, file-backed) resident bytes of `pid`: what it allocated
/// (heap, stacks) against the pages of its executable and libraries.
fn rss_split(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let (rss, anon) = (kb_field(&text, "Rss:")?, kb_field(&text, "Anonymous:")?);
    Some((anon, rss.saturating_sub(anon)))
}

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: u32, ticks: f64) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = text.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime 14, stime 15 (1-based).
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks)
}

// ---------------------------------------------------------------- audit log

/// One request of the operator's user, from the API server's audit log.
type Request = AuditRequest;

/// The operator's requests so far (a watch counted when it starts,
/// everything else when it completes).
struct Audit {
    log: AuditLog,
    requests: Vec<Request>,
}

impl Audit {
    fn refresh(&mut self) -> anyhow::Result<()> {
        let new = self.log.read_new()?;
        self.requests
            .extend(new.into_iter().filter(|r| r.user == OPERATOR_USER));
        Ok(())
    }

    fn between(&self, from: Timestamp, to: Timestamp) -> Vec<&Request> {
        self.requests
            .iter()
            .filter(|r| r.at >= from && r.at < to)
            .collect()
    }

    fn last_non_watch(&self) -> Option<Timestamp> {
        self.requests
            .iter()
            .filter(|r| r.verb != "watch")
            .map(|r| r.at)
            .max()
    }
}

const WRITE_VERBS: &[&str] = &[
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "apply",
];

fn by_verb(requests: &[&Request]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in requests {
        *out.entry(r.verb.clone()).or_default() += 1;
    }
    out
}

fn by_verb_resource(requests: &[&Request]) -> BTreeMap<(String, String), usize> {
    let mut out = BTreeMap::new();
    for r in requests {
        *out.entry((r.verb.clone(), r.resource.clone())).or_default() += 1;
    }
    out
}

// ---------------------------------------------------------------- API server metrics

/// Sum of the samples of `family` whose labels contain every `filter` pair,
/// grouped by the value of label `group` (or "" when `group` is empty).
fn metric_sum(
    text: &str,
    family: &str,
    filter: &[(&str, &str)],
    group: &str,
) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(family) else {
            continue;
        };
        let Some(rest) = rest.strip_prefix('{') else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once('}') else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let labels: BTreeMap<&str, &str> = labels
            .split("\",")
            .filter_map(|kv| {
                let (k, v) = kv.split_once("=\"")?;
                Some((k.trim_matches(','), v.trim_end_matches('"')))
            })
            .collect();
        if filter.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            let key = if group.is_empty() {
                String::new()
            } else {
                labels.get(group).copied().unwrap_or_default().to_owned()
            };
            *out.entry(key).or_default() += value;
        }
    }
    out
}

async fn apiserver_metrics(client: &kube::Client) -> anyhow::Result<String> {
    let req = http::Request::get("/metrics")
        .body(Vec::new())
        .context("request")?;
    client
        .request_text(req)
        .await
        .context("GET /metrics of kube-apiserver")
}

fn diff(after: &BTreeMap<String, f64>, before: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

// ---------------------------------------------------------------- helpers

fn crd(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("ferrotel.io", "v1alpha1", kind),
        plural,
    )
}

fn collectors_resource() -> ApiResource {
    crd("TelemetryCollector", "telemetrycollectors")
}

fn instrumentations_resource() -> ApiResource {
    crd("Instrumentation", "instrumentations")
}

fn ns_name(i: usize) -> String {
    format!("scale-ns-{i:04}")
}

/// Runs `f` up to 8 times while the API server answers with something a
/// retry can fix (throttling, a timeout, a 5xx, a missing ServiceAccount of a
/// new namespace).
async fn retry<T, F, Fut>(what: &str, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut delay = Duration::from_millis(200);
    for attempt in 1.. {
        match f().await {
            Ok(v) => return Ok(v),
            Err(kube::Error::Api(s))
                if attempt < 8
                    && (s.code == 429
                        || s.code >= 500
                        || (s.code == 403 && s.message.contains("serviceaccount"))) =>
            {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(kube::Error::HyperError(_) | kube::Error::Service(_)) if attempt < 8 => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(anyhow!(e).context(what.to_owned())),
        }
    }
    unreachable!()
}

async fn create<K>(api: &Api<K>, obj: &K, what: &str) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    retry(what, || async {
        match api.create(&PostParams::default(), obj).await {
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            other => other.map(|_| ()),
        }
    })
    .await
}

/// Runs `items` through `f`, `concurrency` at a time; the first error ends it.
async fn for_all<I, F, Fut>(items: I, concurrency: usize, f: F) -> anyhow::Result<()>
where
    I: IntoIterator,
    F: Fn(I::Item) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    stream::iter(items.into_iter().map(f))
        .buffer_unordered(concurrency)
        .try_collect::<()>()
        .await
}

/// Polls `check` every `period` until it returns `Ok(Some(_))`; `Ok(None)` =
/// not yet (with a progress note); gives up after `timeout`.
async fn poll<T, F, Fut>(
    what: &str,
    period: Duration,
    timeout: Duration,
    mut check: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Result<T, String>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await? {
            Ok(v) => return Ok(v),
            Err(progress) => {
                if Instant::now() > deadline {
                    bail!("timed out after {timeout:?} waiting for {what}; last: {progress}");
                }
            }
        }
        tokio::time::sleep(period).await;
    }
}

/// Counts the items of a paginated list (metadata only).
async fn count_metadata<K>(
    api: &Api<K>,
    lp: &ListParams,
) -> anyhow::Result<(usize, Vec<kube::api::PartialObjectMeta<K>>)>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut lp = lp.clone().limit(1000);
    let mut items = Vec::new();
    loop {
        let page = api.list_metadata(&lp).await.context("list (metadata)")?;
        let next = page.metadata.continue_.clone().filter(|c| !c.is_empty());
        items.extend(page.items);
        match next {
            Some(token) => lp = lp.continue_token(&token),
            None => break,
        }
    }
    Ok((items.len(), items))
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

// ---------------------------------------------------------------- objects

fn namespace(i: usize, teams: usize) -> Namespace {
    serde_json::from_value(json!({
        "metadata": {"name": ns_name(i), "labels": {TEAM_LABEL: (i % teams).to_string()}}
    }))
    .expect("static Namespace")
}

fn pod(i: usize, nodes: usize) -> Pod {
    serde_json::from_value(json!({
        "metadata": {
            "name": format!("scale-pod-{i:05}"),
            "labels": {"app": format!("scale-app-{}", i % 10)},
        },
        "spec": {
            "nodeName": format!("kwok-node-{}", i % nodes),
            "automountServiceAccountToken": false,
            "containers": [{"name": "app", "image": "registry.invalid/scale/app:1"}],
        }
    }))
    .expect("static Pod")
}

fn collector(c: usize) -> Value {
    json!({
        "apiVersion": "ferrotel.io/v1alpha1",
        "kind": "TelemetryCollector",
        "metadata": {"name": format!("scale-collector-{c:02}"), "namespace": ns_name(c)},
        "spec": {
            "mode": "deployment",
            "podAnnotations": {CHANGE_KEY: "initial"},
            "config": {
                "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": "0.0.0.0:4317"}}}},
                "exporters": {"debug": {}},
                "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["debug"]}}},
            }
        }
    })
}

fn instrumentation(k: usize, collectors: usize) -> Value {
    json!({
        "apiVersion": "ferrotel.io/v1alpha1",
        "kind": "Instrumentation",
        "metadata": {"name": format!("scale-inst-{k:02}"), "namespace": ns_name(k)},
        "spec": {
            "languages": ["go"],
            "exporter": {"collectorRef": {
                "name": format!("scale-collector-{:02}", k % collectors),
                "namespace": ns_name(k % collectors),
            }},
            "selector": {"namespaceSelector": {"matchLabels": {TEAM_LABEL: k.to_string()}}},
            "resource": {"attributes": {CHANGE_KEY: "initial"}},
            "probe": {"nodeSelector": {POOL_LABEL: k.to_string()}},
            "probeClassName": PROBE_CLASS,
        }
    })
}

// ---------------------------------------------------------------- children watch

/// What the watches of the rendered children saw last, per object, and when.
#[derive(Default)]
struct Seen {
    /// "Kind ns/name" -> (when, the text the check looks at)
    objects: BTreeMap<String, (Instant, String)>,
}

fn spawn_child_watch<K>(
    api: Api<K>,
    kind: &'static str,
    seen: Arc<(Mutex<Seen>, tokio::sync::Notify)>,
    text: fn(&K) -> String,
) -> tokio::task::JoinHandle<()>
where
    K: kube::Resource
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    tokio::spawn(async move {
        let mut events =
            std::pin::pin!(watcher(api, watcher::Config::default().labels(MANAGED_BY)));
        while let Some(event) = events.next().await {
            let objs = match event {
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => vec![o],
                Ok(_) => continue,
                Err(e) => {
                    eprintln!("watch of {kind} children: {e} (retrying)");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let now = Instant::now();
            let mut guard = seen.0.lock().expect("seen");
            for o in objs {
                let key = format!(
                    "{kind} {}/{}",
                    o.meta().namespace.clone().unwrap_or_default(),
                    o.meta().name.clone().unwrap_or_default()
                );
                guard.objects.insert(key, (now, text(&o)));
            }
            drop(guard);
            seen.1.notify_waiters();
        }
    })
}

fn template_annotations(
    meta: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
) -> String {
    meta.and_then(|m| m.annotations.as_ref())
        .map(|a| serde_json::to_string(a).unwrap_or_default())
        .unwrap_or_default()
}

/// Waits until `check` holds for the watched object `key`; returns when it was seen.
async fn wait_seen(
    seen: &Arc<(Mutex<Seen>, tokio::sync::Notify)>,
    key: &str,
    timeout: Duration,
    check: impl Fn(&str) -> bool,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        let notified = seen.1.notified();
        {
            let guard = seen.0.lock().expect("seen");
            if let Some((at, text)) = guard.objects.get(key)
                && check(text)
            {
                return Ok(*at);
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let last = seen
                .0
                .lock()
                .expect("seen")
                .objects
                .get(key)
                .map(|(_, t)| t.clone());
            bail!("{key} did not reflect the change within {timeout:?}; last seen: {last:?}");
        }
        let _ = tokio::time::timeout(left.min(Duration::from_millis(250)), notified).await;
    }
}

// ---------------------------------------------------------------- the run

struct Phase {
    name: &'static str,
    from: f64,
    to: f64,
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    ensure!(cli.changes >= 2, "--changes must be at least 2");
    ensure!(
        cli.instrumentations <= cli.namespaces && cli.collectors <= cli.namespaces,
        "more CRs than namespaces"
    );
    let began = Instant::now();
    let since = move || began.elapsed().as_secs_f64();
    let load_before = loadavg();
    let ticks = clock_ticks();

    let operator_bin = ferrotel_e2e::workspace_binary("ferrotel-operator")?;
    ensure!(
        operator_bin
            .parent()
            .and_then(|p| p.file_name())
            .is_some_and(|n| n == "release"),
        "{} is not a release build: build and run this benchmark with --release (bench/scale/run.sh does)",
        operator_bin.display()
    );

    let work = tempfile::Builder::new()
        .prefix("scale-bench-")
        .tempdir()
        .context("work directory")?;
    let mut options = TestBedOptions {
        nodes: cli.nodes,
        ..TestBedOptions::default()
    };
    let audit_path = options
        .audit_user(OPERATOR_USER, work.path())
        .context("writing the audit policy")?;
    println!("Starting the test bed with {} kwok nodes", cli.nodes);
    let bed = TestBed::start(options)
        .await
        .context("starting the test bed")?;
    let result = measure(
        &cli,
        &bed,
        work.path(),
        &audit_path,
        ticks,
        &since,
        load_before,
        &operator_bin,
    )
    .await;
    if result.is_err() {
        // Keep what explains the failure.
        let kept = work.keep();
        eprintln!("operator logs and the audit log kept in {}", kept.display());
    }
    drop(bed);
    result
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    cli: &Cli,
    bed: &TestBed,
    work: &Path,
    audit_path: &Path,
    ticks: f64,
    since: &(dyn Fn() -> f64 + Sync),
    load_before: (f64, f64, f64),
    operator_bin: &Path,
) -> anyhow::Result<()> {
    let client = bed.client();
    let mut phases: Vec<Phase> = Vec::new();
    let samples = Arc::new(Mutex::new(Samples::default()));
    let operator_pid = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let sampler = {
        let samples = samples.clone();
        let pid = operator_pid.clone();
        let began = Instant::now() - Duration::from_secs_f64(since());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                let t = began.elapsed().as_secs_f64();
                let mut s = samples.lock().expect("samples");
                s.load.push((t, loadavg().0));
                let pid = pid.load(std::sync::atomic::Ordering::SeqCst);
                if pid != 0
                    && let (Some((rss, _)), Some(cpu)) = (rss(pid), cpu_seconds(pid, ticks))
                {
                    s.operator.push((t, pid, rss, cpu));
                }
            }
        })
    };
    let _sampler_guard = AbortOnDrop(sampler);

    // ---- setup: CRDs, the operator's RBAC and FlowSchema, node pools
    let t = since();
    println!("Installing CRDs, RBAC and the operator's FlowSchema");
    ferrotel_e2e::stack::install_crds(bed.kubeconfig())?;
    let root = ferrotel_e2e::stack::workspace_root();
    kubectl(
        bed,
        &[
            "apply",
            "--server-side",
            "-f",
            &root.join("config/rbac/role.yaml").display().to_string(),
        ],
        None,
    )
    .map_err(|e| anyhow!(e))?;
    let setup = format!(
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: scale-operator}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: ferrotel-operator}}
subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {OPERATOR_USER}}}]
---
apiVersion: ferrotel.io/v1alpha1
kind: ProbeClass
metadata: {{name: {PROBE_CLASS}}}
spec: {{allowNamespaceSelector: true}}
---
apiVersion: flowcontrol.apiserver.k8s.io/v1
kind: FlowSchema
metadata: {{name: {FLOW_SCHEMA}}}
spec:
  matchingPrecedence: 500
  priorityLevelConfiguration: {{name: workload-high}}
  distinguisherMethod: {{type: ByUser}}
  rules:
  - subjects: [{{kind: User, user: {{name: {OPERATOR_USER}}}}}]
    resourceRules: [{{verbs: ["*"], apiGroups: ["*"], resources: ["*"], clusterScope: true, namespaces: ["*"]}}]
    nonResourceRules: [{{verbs: ["*"], nonResourceURLs: ["*"]}}]
"#
    );
    kubectl(bed, &["apply", "--server-side", "-f", "-"], Some(&setup)).map_err(|e| anyhow!(e))?;

    let nodes: Api<Node> = Api::all(client.clone());
    let teams = cli.instrumentations.max(1);
    for_all(0..cli.nodes, cli.concurrency, |i| {
        let nodes = nodes.clone();
        async move {
            let patch = json!({"metadata": {"labels": {POOL_LABEL: (i % teams).to_string()}}});
            let name = format!("kwok-node-{i}");
            retry("label node", || async {
                nodes
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
            })
            .await
            .map(|_| ())
        }
    })
    .await?;

    // ---- the cluster's load: namespaces, then pods once their ServiceAccounts exist
    println!("Creating {} namespaces", cli.namespaces);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for_all(0..cli.namespaces, cli.concurrency, |i| {
        let namespaces = namespaces.clone();
        async move { create(&namespaces, &namespace(i, teams), "create namespace").await }
    })
    .await?;
    let sas: Api<ServiceAccount> = Api::all(client.clone());
    poll(
        "every namespace's default ServiceAccount",
        Duration::from_secs(2),
        Duration::from_secs(300),
        || async {
            let (n, items) =
                count_metadata(&sas, &ListParams::default().fields("metadata.name=default"))
                    .await?;
            let ours = items
                .iter()
                .filter(|s| {
                    s.metadata
                        .namespace
                        .as_deref()
                        .is_some_and(|ns| ns.starts_with("scale-ns-"))
                })
                .count();
            let _ = n;
            Ok(if ours >= cli.namespaces {
                Ok(())
            } else {
                Err(format!("{ours} of {}", cli.namespaces))
            })
        },
    )
    .await?;

    println!("Creating {} pods", cli.pods);
    let pods_began = Instant::now();
    let per_ns = cli.pods.div_ceil(cli.namespaces);
    for_all(0..cli.pods, cli.concurrency, |i| {
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns_name(i / per_ns));
        let nodes = cli.nodes;
        async move { create(&api, &pod(i, nodes), "create pod").await }
    })
    .await?;
    let pods_created_in = pods_began.elapsed();
    let all_pods: Api<Pod> = Api::all(client.clone());
    poll(
        "every pod Running (kwok)",
        Duration::from_secs(3),
        Duration::from_secs(900),
        || async {
            let (n, items) = count_metadata(
                &all_pods,
                &ListParams::default().fields("status.phase=Running"),
            )
            .await?;
            let ours = items
                .iter()
                .filter(|p| {
                    p.metadata
                        .name
                        .as_deref()
                        .is_some_and(|n| n.starts_with("scale-pod-"))
                })
                .count();
            let _ = n;
            Ok(if ours >= cli.pods {
                Ok(())
            } else {
                Err(format!("{ours} of {} Running", cli.pods))
            })
        },
    )
    .await?;
    let pods_running_in = pods_began.elapsed();
    println!(
        "  {} pods created in {:.0} s, all Running after {:.0} s",
        cli.pods,
        pods_created_in.as_secs_f64(),
        pods_running_in.as_secs_f64()
    );

    // ---- the CRs, created before the operator starts
    let collectors = Api::<DynamicObject>::all_with(client.clone(), &collectors_resource());
    let insts = Api::<DynamicObject>::all_with(client.clone(), &instrumentations_resource());
    for c in 0..cli.collectors {
        let obj: DynamicObject = serde_json::from_value(collector(c))?;
        let api = Api::<DynamicObject>::namespaced_with(
            client.clone(),
            &ns_name(c),
            &collectors_resource(),
        );
        create(&api, &obj, "create TelemetryCollector").await?;
    }
    for k in 0..cli.instrumentations {
        let obj: DynamicObject = serde_json::from_value(instrumentation(k, cli.collectors))?;
        let api = Api::<DynamicObject>::namespaced_with(
            client.clone(),
            &ns_name(k),
            &instrumentations_resource(),
        );
        create(&api, &obj, "create Instrumentation").await?;
    }
    phases.push(Phase {
        name: "setup (test bed, load, CRs)",
        from: t,
        to: since(),
    });

    // ---- cold start
    let mut audit = Audit {
        log: AuditLog::new(audit_path.to_path_buf()),
        requests: Vec::new(),
    };
    let t = since();
    println!("Starting the operator (release build) on the full cluster");
    let started = Instant::now();
    let mut operator = start_operator(bed, work, 1)?;
    operator_pid.store(operator.process.pid(), std::sync::atomic::Ordering::SeqCst);
    operator.wait_ready().await?;
    let ready_in = started.elapsed();
    let reconciled_in = wait_reconciled(&collectors, &insts, &mut operator, started, cli).await?;
    println!(
        "  ready after {:.1} s, every CR reconciled after {:.1} s",
        ready_in.as_secs_f64(),
        reconciled_in.as_secs_f64()
    );
    let quiet_after_start = wait_quiet(
        &mut audit,
        &mut operator,
        Duration::from_secs(20),
        Duration::from_secs(300),
    )
    .await?;
    phases.push(Phase {
        name: "cold start",
        from: t,
        to: since(),
    });
    let cold_peak = rss(operator.process.pid()).map(|(_, hwm)| hwm).unwrap_or(0);

    // ---- steady state
    println!("Steady state: {} s window", cli.steady_seconds);
    let t = since();
    let pid = operator.process.pid();
    // What changes in the cluster meanwhile (every pod event reaches the
    // operator's opt-in watch): counted by a watch of our own.
    let pod_events = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let pod_counter = {
        let events = pod_events.clone();
        let api: Api<kube::api::PartialObjectMeta<Pod>> = Api::all(client.clone());
        AbortOnDrop(tokio::spawn(async move {
            let mut stream = std::pin::pin!(watcher(api, watcher::Config::default()));
            let mut synced = false;
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::InitDone) => synced = true,
                    Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) if synced => {
                        events.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    _ => {}
                }
            }
        }))
    };
    // Give the counting watch its initial list before the window opens.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let nodes_not_ready_before = not_ready_nodes(&client).await?;
    let metrics_before = apiserver_metrics(&client).await?;
    let ts_before = Timestamp::now();
    let cpu_before = cpu_seconds(pid, ticks).context("operator CPU")?;
    tokio::time::sleep(Duration::from_secs(cli.steady_seconds)).await;
    let cpu_after = cpu_seconds(pid, ticks).context("operator CPU")?;
    let ts_after = Timestamp::now();
    let metrics_after = apiserver_metrics(&client).await?;
    let nodes_not_ready_after = not_ready_nodes(&client).await?;
    drop(pod_counter);
    let pod_events = pod_events.load(std::sync::atomic::Ordering::SeqCst);
    operator.alive().map_err(|e| anyhow!(e))?;
    audit.refresh()?;
    let steady_requests: Vec<Request> = audit
        .between(ts_before, ts_after)
        .into_iter()
        .cloned()
        .collect();
    let steady_t = (t, since());
    // What the operator's caches hold (measured from outside), after the window.
    let stores = store_sizes(&client).await?;
    phases.push(Phase {
        name: "steady state",
        from: steady_t.0,
        to: steady_t.1,
    });
    let flow = diff(
        &metric_sum(
            &metrics_after,
            "apiserver_flowcontrol_dispatched_requests_total",
            &[("flow_schema", FLOW_SCHEMA)],
            "",
        ),
        &metric_sum(
            &metrics_before,
            "apiserver_flowcontrol_dispatched_requests_total",
            &[("flow_schema", FLOW_SCHEMA)],
            "",
        ),
    );
    let cluster_by_verb = diff(
        &metric_sum(&metrics_after, "apiserver_request_total", &[], "verb"),
        &metric_sum(&metrics_before, "apiserver_request_total", &[], "verb"),
    );
    let steady_rss: Vec<u64> = samples
        .lock()
        .expect("samples")
        .operator
        .iter()
        .filter(|(at, p, _, _)| *p == pid && *at >= steady_t.0 && *at <= steady_t.1)
        .map(|(_, _, r, _)| *r)
        .collect();
    ensure!(
        !steady_rss.is_empty(),
        "no RSS sample of the operator during the steady state"
    );
    let steady_split = rss_split(pid).unwrap_or((0, 0));

    // ---- reconcile latency
    println!("Reconcile latency: {} changes", cli.changes);
    let t = since();
    let seen = Arc::new((Mutex::new(Seen::default()), tokio::sync::Notify::new()));
    let watches = vec![
        AbortOnDrop(spawn_child_watch::<ConfigMap>(
            Api::all(client.clone()),
            "ConfigMap",
            seen.clone(),
            |cm| serde_json::to_string(&cm.data).unwrap_or_default(),
        )),
        AbortOnDrop(spawn_child_watch::<DaemonSet>(
            Api::all(client.clone()),
            "DaemonSet",
            seen.clone(),
            |ds| template_annotations(ds.spec.as_ref().and_then(|s| s.template.metadata.as_ref())),
        )),
        AbortOnDrop(spawn_child_watch::<Deployment>(
            Api::all(client.clone()),
            "Deployment",
            seen.clone(),
            |d| template_annotations(d.spec.as_ref().and_then(|s| s.template.metadata.as_ref())),
        )),
    ];
    // Every child of every CR seen once before the first change.
    let expected_children = cli.instrumentations * 2 + cli.collectors;
    poll(
        "the children watches to list every child",
        Duration::from_millis(200),
        Duration::from_secs(60),
        || async {
            let guard = seen.0.lock().expect("seen");
            let n = guard
                .objects
                .keys()
                .filter(|k| {
                    (k.starts_with("ConfigMap ") && k.contains("/scale-inst-"))
                        || (k.starts_with("DaemonSet ") && k.contains("/scale-inst-"))
                        || (k.starts_with("Deployment ") && k.contains("/scale-collector-"))
                })
                .count();
            Ok(if n >= expected_children {
                Ok(())
            } else {
                Err(format!("{n} of {expected_children}"))
            })
        },
    )
    .await?;
    let mut inst_latency = Vec::new();
    let mut coll_latency = Vec::new();
    for n in 0..cli.changes {
        let token = format!("scale-change-{n:04}");
        if n % 2 == 0 {
            let k = (n / 2) % cli.instrumentations;
            let name = format!("scale-inst-{k:02}");
            let ns = ns_name(k);
            let ds_key = format!("DaemonSet {ns}/{name}-probe-go");
            let cm_key = format!("ConfigMap {ns}/{name}-probe-go");
            let old_ds = seen
                .0
                .lock()
                .expect("seen")
                .objects
                .get(&ds_key)
                .map(|(_, t)| t.clone())
                .with_context(|| {
                    format!("{ds_key} was never seen: is the child named differently?")
                })?;
            let api = Api::<DynamicObject>::namespaced_with(
                client.clone(),
                &ns,
                &instrumentations_resource(),
            );
            let patch = json!({"spec": {"resource": {"attributes": {CHANGE_KEY: token}}}});
            let t0 = Instant::now();
            retry("patch Instrumentation", || async {
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
            })
            .await?;
            let cm_at = wait_seen(&seen, &cm_key, Duration::from_secs(60), |text| {
                text.contains(&token)
            })
            .await?;
            let ds_at = wait_seen(&seen, &ds_key, Duration::from_secs(60), |text| {
                text != old_ds
            })
            .await?;
            inst_latency.push(cm_at.max(ds_at).duration_since(t0));
        } else {
            let c = (n / 2) % cli.collectors;
            let name = format!("scale-collector-{c:02}");
            let ns = ns_name(c);
            let key = format!("Deployment {ns}/{name}-collector");
            let api =
                Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &collectors_resource());
            let patch = json!({"spec": {"podAnnotations": {CHANGE_KEY: token}}});
            let t0 = Instant::now();
            retry("patch TelemetryCollector", || async {
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
            })
            .await?;
            let want = format!("\"{CHANGE_KEY}\":\"{token}\"");
            let at = wait_seen(&seen, &key, Duration::from_secs(60), |text| {
                text.contains(&want)
            })
            .await
            .with_context(|| format!("is the collector's Deployment named {key}?"))?;
            coll_latency.push(at.duration_since(t0));
        }
        // Spread the changes: the next one lands while the previous one's
        // status and rollout are still settling, as in a real cluster.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    drop(watches);
    operator.alive().map_err(|e| anyhow!(e))?;
    phases.push(Phase {
        name: "reconcile latency",
        from: t,
        to: since(),
    });

    // ---- restart
    println!("Restart: kill -9, start again");
    wait_quiet(
        &mut audit,
        &mut operator,
        Duration::from_secs(20),
        Duration::from_secs(300),
    )
    .await?;
    let t = since();
    let before = versions(&client).await?;
    let first_peak = rss(operator.process.pid()).map(|(_, hwm)| hwm).unwrap_or(0);
    let first_cpu = cpu_seconds(operator.process.pid(), ticks).unwrap_or(0.0);
    let flow_before_kill = apiserver_metrics(&client).await?;
    operator.process.kill();
    let restart_ts = Timestamp::now();
    let restarted = Instant::now();
    let mut operator = start_operator(bed, work, 2)?;
    operator_pid.store(operator.process.pid(), std::sync::atomic::Ordering::SeqCst);
    operator.wait_ready().await?;
    let restart_ready = restarted.elapsed();
    let restart_reconciled =
        wait_reconciled(&collectors, &insts, &mut operator, restarted, cli).await?;
    let quiet_at = wait_quiet(
        &mut audit,
        &mut operator,
        Duration::from_secs(20),
        Duration::from_secs(300),
    )
    .await?;
    let after = versions(&client).await?;
    let flow_after_restart = apiserver_metrics(&client).await?;
    let restart_flow: f64 = diff(
        &metric_sum(
            &flow_after_restart,
            "apiserver_flowcontrol_dispatched_requests_total",
            &[("flow_schema", FLOW_SCHEMA)],
            "",
        ),
        &metric_sum(
            &flow_before_kill,
            "apiserver_flowcontrol_dispatched_requests_total",
            &[("flow_schema", FLOW_SCHEMA)],
            "",
        ),
    )
    .values()
    .sum::<f64>()
        + 0.0;
    let restart_requests: Vec<&Request> = audit.between(restart_ts, Timestamp::now());
    let restart_writes: Vec<&Request> = restart_requests
        .iter()
        .copied()
        .filter(|r| WRITE_VERBS.contains(&r.verb.as_str()))
        .collect();
    let last_write = restart_writes.iter().map(|r| r.at).max();
    let changed: Vec<String> = after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .chain(
            before
                .keys()
                .filter(|k| !after.contains_key(*k))
                .map(|k| format!("{k} (gone)")),
        )
        .collect();
    let second_pid = operator.process.pid();
    let second_peak = rss(second_pid).map(|(_, hwm)| hwm).unwrap_or(0);
    let second_cpu = cpu_seconds(second_pid, ticks).unwrap_or(0.0);
    phases.push(Phase {
        name: "restart",
        from: t,
        to: since(),
    });
    operator.process.terminate(Duration::from_secs(5));
    let load_after = loadavg();

    // ---- report
    let samples = samples.lock().expect("samples");
    let mut inst_sorted = inst_latency.clone();
    inst_sorted.sort();
    let mut coll_sorted = coll_latency.clone();
    coll_sorted.sort();
    let mut all_sorted: Vec<Duration> = inst_latency.iter().chain(&coll_latency).copied().collect();
    all_sorted.sort();
    let steady_mean = steady_rss.iter().sum::<u64>() as f64 / steady_rss.len() as f64;
    let steady_max = steady_rss.iter().copied().max().unwrap_or(0);
    let peak = cold_peak.max(first_peak);
    let steady_reqs: Vec<&Request> = steady_requests.iter().collect();
    let steady_total = steady_reqs.len();
    let window = cli.steady_seconds as f64;
    // + 0.0: the sum of nothing is -0.0.
    let flow_total: f64 = flow.values().sum::<f64>() + 0.0;
    let goal = |ok: bool| if ok { "met" } else { "**MISSED**" };

    let mut md = String::new();
    let _ = writeln!(md, "# Operator at scale (kwok nodes)\n");
    let _ = writeln!(
        md,
        "Written by `bench/scale/run.sh` (`ferrotel-scale-bench`, source `bench/scale/main.rs`); do not edit by hand.\n"
    );
    let _ = writeln!(
        md,
        "- Command: `{}`",
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    let _ = writeln!(md, "- Commit: {}", git_describe());
    let _ = writeln!(
        md,
        "- Date: {}",
        Timestamp::now().strftime("%Y-%m-%d %H:%M UTC")
    );
    let _ = writeln!(md, "- Machine: {}", machine());
    let _ = writeln!(
        md,
        "- Operator: `{}` (release build), run as user `{OPERATOR_USER}` bound to the install's ClusterRole `ferrotel-operator`",
        // Relative to the checkout: results name the project, not a machine.
        operator_bin
            .strip_prefix(root_path(""))
            .unwrap_or(operator_bin)
            .display()
    );
    let _ = writeln!(
        md,
        "- Load average (1/5/15 min): before {:.2}/{:.2}/{:.2}, after {:.2}/{:.2}/{:.2}",
        load_before.0, load_before.1, load_before.2, load_after.0, load_after.1, load_after.2
    );
    let _ = writeln!(md, "- Load average (1 min) per phase, min / mean / max:");
    for p in &phases {
        let l: Vec<f64> = samples
            .load
            .iter()
            .filter(|(at, _)| *at >= p.from && *at <= p.to)
            .map(|(_, l)| *l)
            .collect();
        if l.is_empty() {
            continue;
        }
        let _ = writeln!(
            md,
            "  - {} ({:.0} s): {:.2} / {:.2} / {:.2}",
            p.name,
            p.to - p.from,
            l.iter().copied().fold(f64::INFINITY, f64::min),
            l.iter().sum::<f64>() / l.len() as f64,
            l.iter().copied().fold(0.0, f64::max)
        );
    }
    let provisional = load_before.0 >= 1.5;
    if provisional {
        let _ = writeln!(
            md,
            "- **Provisional**: the machine was loaded (1-min load ≥ 1.5) before the run."
        );
    }
    let _ = writeln!(md, "\n## The cluster\n");
    let _ = writeln!(md, "| What | Count |\n|---|---|");
    let _ = writeln!(md, "| kwok nodes | {} |", cli.nodes);
    let _ = writeln!(md, "| namespaces (`scale-ns-*`) | {} |", cli.namespaces);
    let _ = writeln!(
        md,
        "| pods (`scale-pod-*`, Running) | {} (created in {:.0} s, all Running after {:.0} s) |",
        cli.pods,
        pods_created_in.as_secs_f64(),
        pods_running_in.as_secs_f64()
    );
    let _ = writeln!(
        md,
        "| TelemetryCollectors (mode deployment) | {} |",
        cli.collectors
    );
    let _ = writeln!(
        md,
        "| Instrumentations (Go; each selects {} namespaces and runs on {} nodes) | {} |",
        cli.namespaces / teams,
        cli.nodes / teams,
        cli.instrumentations
    );
    let _ = writeln!(md, "\n## Figures\n");
    let _ = writeln!(md, "| Figure | Value | Goal |\n|---|---|---|");
    let _ = writeln!(
        md,
        "| Operator RSS, peak (VmHWM, first run incl. cold start and latency phase) | {:.1} MB | ≤ {RSS_GOAL_MB} MB: {} |",
        mb(peak),
        goal(mb(peak) <= RSS_GOAL_MB)
    );
    let _ = writeln!(
        md,
        "| Operator RSS, steady (mean / max over the {} s window) | {:.1} / {:.1} MB | ≤ {RSS_GOAL_MB} MB: {} |",
        cli.steady_seconds,
        mb(steady_mean as u64),
        mb(steady_max),
        goal(mb(steady_max) <= RSS_GOAL_MB)
    );
    let _ = writeln!(
        md,
        "| — of which at the end of the window: anonymous (heap, stacks) / file-backed (the executable's and libraries' pages) | {:.1} / {:.1} MB | |",
        mb(steady_split.0),
        mb(steady_split.1)
    );
    let _ = writeln!(
        md,
        "| Operator RSS, peak after the restart (VmHWM of the second process) | {:.1} MB | |",
        mb(second_peak)
    );
    let _ = writeln!(
        md,
        "| Operator CPU, first process (cold start → kill) | {:.2} s | |",
        first_cpu
    );
    let _ = writeln!(
        md,
        "| Operator CPU during the steady window | {:.3} s ({:.2} % of a core) | |",
        cpu_after - cpu_before,
        100.0 * (cpu_after - cpu_before) / window
    );
    let _ = writeln!(
        md,
        "| Operator CPU, second process (restart → quiet) | {:.2} s | |",
        second_cpu
    );
    let _ = writeln!(
        md,
        "| Cold start: /readyz | {:.1} s | |",
        ready_in.as_secs_f64()
    );
    let _ = writeln!(
        md,
        "| Cold start: every CR reconciled | {:.1} s | |",
        reconciled_in.as_secs_f64()
    );
    let _ = writeln!(
        md,
        "| Cold start: last request before quiet | {:.1} s after start | |",
        quiet_after_start
    );
    let _ = writeln!(
        md,
        "| Reconcile latency, all {} changes, p50 / p99 / max | {} / {} / {} | p99 ≤ 1 s: {} |",
        all_sorted.len(),
        ms(percentile(&all_sorted, 50.0)),
        ms(percentile(&all_sorted, 99.0)),
        ms(*all_sorted.last().unwrap_or(&Duration::ZERO)),
        goal(percentile(&all_sorted, 99.0) <= P99_GOAL)
    );
    let _ = writeln!(
        md,
        "| — Instrumentation → probe ConfigMap and DaemonSet ({}), p50 / p99 | {} / {} | |",
        inst_sorted.len(),
        ms(percentile(&inst_sorted, 50.0)),
        ms(percentile(&inst_sorted, 99.0))
    );
    let _ = writeln!(
        md,
        "| — TelemetryCollector → Deployment ({}), p50 / p99 | {} / {} | |",
        coll_sorted.len(),
        ms(percentile(&coll_sorted, 50.0)),
        ms(percentile(&coll_sorted, 99.0))
    );
    let _ = writeln!(
        md,
        "| API requests by the operator at steady state (audit log) | {} in {} s = {:.3}/s | ~0 |",
        steady_total,
        cli.steady_seconds,
        steady_total as f64 / window
    );
    let _ = writeln!(
        md,
        "| API requests by the operator at steady state (`/metrics`, FlowSchema `{FLOW_SCHEMA}`) | {:.0} in {} s = {:.3}/s | ~0 |",
        flow_total,
        cli.steady_seconds,
        flow_total / window
    );
    let _ = writeln!(
        md,
        "| Restart: /readyz | {:.1} s | |",
        restart_ready.as_secs_f64()
    );
    let _ = writeln!(
        md,
        "| Restart: every CR reconciled | {:.1} s | |",
        restart_reconciled.as_secs_f64()
    );
    let _ = writeln!(
        md,
        "| Restart: last request before quiet | {:.1} s after start | |",
        quiet_at
    );
    let _ = writeln!(
        md,
        "| Restart: every request of the restarted operator until quiet, audit log / `/metrics` FlowSchema `{FLOW_SCHEMA}` | {} / {:.0} | |",
        restart_requests.len(),
        restart_flow
    );
    let _ = writeln!(
        md,
        "| Restart: write requests (audit log) | {} | 0: {} |",
        restart_writes.len(),
        goal(restart_writes.is_empty())
    );
    let _ = writeln!(
        md,
        "| Restart: stored objects the operator changed (resourceVersion; generation of DaemonSets and Deployments, whose status their controllers write) (of {}) | {} | 0: {} |",
        before.len(),
        changed.len(),
        goal(changed.is_empty())
    );
    if let Some(last) = last_write {
        let _ = writeln!(
            md,
            "| Restart: last write | {:.1} s after the kill | |",
            last.duration_since(restart_ts).as_secs_f64()
        );
    }
    let _ = writeln!(
        md,
        "\n### The operator's requests at steady state, by verb and resource (audit log)\n"
    );
    table(&mut md, &by_verb_resource(&steady_reqs));
    let _ = writeln!(
        md,
        "\nMeanwhile in the cluster: {pod_events} pod events (added, changed, deleted; each one reaches the operator's opt-in watch); nodes not Ready at the start / end of the window: {nodes_not_ready_before} / {nodes_not_ready_after}."
    );
    let _ = writeln!(
        md,
        "\nWhole cluster (every client: kwok heartbeats, controllers), `apiserver_request_total` diffed over the window, by verb: {}",
        fmt_map(&cluster_by_verb, window)
    );
    let _ = writeln!(
        md,
        "\n### The operator's requests after the restart, by verb and resource (audit log)\n"
    );
    table(&mut md, &by_verb_resource(&restart_requests));
    let _ = writeln!(md, "\nBy verb: {:?}", by_verb(&restart_requests));
    if !changed.is_empty() {
        let _ = writeln!(
            md,
            "\nObjects changed by the restart: {}",
            changed
                .iter()
                .take(40)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let _ = writeln!(
        md,
        "\n### What the operator's watches hold (listed from outside, JSON bytes)\n"
    );
    let _ = writeln!(
        md,
        "| Watch | Objects | Bytes as served | Bytes without managedFields |\n|---|---|---|---|"
    );
    for s in &stores {
        let _ = writeln!(
            md,
            "| {} | {} | {:.1} MB | {:.1} MB |",
            s.0,
            s.1,
            mb(s.2),
            mb(s.3)
        );
    }
    let _ = writeln!(md, "\n### Every latency (ms, in order)\n");
    let _ = writeln!(
        md,
        "Instrumentation: {}",
        inst_latency
            .iter()
            .map(|d| d.as_millis().to_string())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let _ = writeln!(
        md,
        "\nTelemetryCollector: {}",
        coll_latency
            .iter()
            .map(|d| d.as_millis().to_string())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let _ = writeln!(md, "\n### Operator RSS timeline (MB, every 5 s)\n");
    let mut line = String::new();
    let mut next = 0.0;
    for (at, p, r, _) in &samples.operator {
        if *at >= next {
            let _ = write!(
                line,
                "{:.0}s:{:.1}{} ",
                at,
                mb(*r),
                if *p == second_pid { "*" } else { "" }
            );
            next = at + 5.0;
        }
    }
    let _ = writeln!(md, "{line}\n\n(* = the restarted process)");
    let notes = root_path("bench/scale/NOTES.md");
    if let Ok(text) = std::fs::read_to_string(&notes) {
        let _ = writeln!(md, "\n{text}");
    }
    std::fs::write(&cli.out, &md).with_context(|| format!("write {}", cli.out.display()))?;
    println!("{md}");
    println!("Results written to {}", cli.out.display());
    Ok(())
}

async fn not_ready_nodes(client: &kube::Client) -> anyhow::Result<usize> {
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await?;
    Ok(nodes
        .items
        .iter()
        .filter(|n| {
            !n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .count())
}

fn root_path(rel: &str) -> PathBuf {
    ferrotel_e2e::stack::workspace_root().join(rel)
}

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

fn table(md: &mut String, rows: &BTreeMap<(String, String), usize>) {
    if rows.is_empty() {
        let _ = writeln!(md, "(none)");
        return;
    }
    let _ = writeln!(md, "| Verb | Resource | Requests |\n|---|---|---|");
    for ((verb, resource), n) in rows {
        let _ = writeln!(md, "| {verb} | {resource} | {n} |");
    }
}

fn fmt_map(m: &BTreeMap<String, f64>, window: f64) -> String {
    m.iter()
        .map(|(k, v)| format!("{k} {v:.0} ({:.2}/s)", v / window))
        .collect::<Vec<_>>()
        .join(", ")
}

fn git_describe() -> String {
    std::process::Command::new("git")
        .args([
            "-C",
            &ferrotel_e2e::stack::workspace_root().display().to_string(),
            "describe",
            "--always",
            "--dirty",
        ])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "?".into())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cpus} CPUs ({cpu}), {:.0} GiB, Linux {}",
        mem as f64 / 1048576.0,
        kernel.trim()
    )
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn start_operator(bed: &TestBed, work: &Path, run: usize) -> anyhow::Result<OperatorProcess> {
    let args: Vec<String> = ["--log-format=json", "--log-level=info"]
        .iter()
        .map(|a| (*a).to_owned())
        .collect();
    Ok(OperatorProcess::start(
        bed.restricted_kubeconfig(),
        &args,
        &[],
        &work.join(format!("operator-{run}.log")),
    )?)
}

/// The finished reconciles of `controller` in the operator's /metrics.
async fn reconciles_done(operator: &OperatorProcess, controller: &str) -> Result<f64, String> {
    let text = operator.metrics().await?;
    Ok(metric_sum(
        &text,
        "ferrotel_operator_reconcile_duration_seconds_count",
        &[("controller", controller)],
        "",
    )
    .values()
    .sum())
}

/// Waits until every CR's status names its current generation and the
/// operator finished at least one reconcile per CR; returns the time since `started`.
async fn wait_reconciled(
    collectors: &Api<DynamicObject>,
    insts: &Api<DynamicObject>,
    operator: &mut OperatorProcess,
    started: Instant,
    cli: &Cli,
) -> anyhow::Result<Duration> {
    let operator = &*operator;
    poll(
        "every CR reconciled by this operator process",
        Duration::from_millis(250),
        Duration::from_secs(600),
        || async {
            let done_i = reconciles_done(operator, "instrumentation")
                .await
                .map_err(|e| anyhow!(e))?;
            let done_c = reconciles_done(operator, "collector")
                .await
                .map_err(|e| anyhow!(e))?;
            if done_i < cli.instrumentations as f64 || done_c < cli.collectors as f64 {
                return Ok(Err(format!(
                    "reconciles finished: {done_i} instrumentation, {done_c} collector"
                )));
            }
            for (api, n) in [(collectors, cli.collectors), (insts, cli.instrumentations)] {
                let list = api.list(&ListParams::default()).await?;
                let current = list
                    .items
                    .iter()
                    .filter(|o| {
                        o.metadata.generation.is_some()
                            && o.data["status"]["observedGeneration"].as_i64()
                                == o.metadata.generation
                    })
                    .count();
                if current < n {
                    return Ok(Err(format!(
                        "{current} of {n} {} at their generation",
                        api.resource_url()
                    )));
                }
            }
            Ok(Ok(started.elapsed()))
        },
    )
    .await
}

/// Waits until the operator sent no request but watches for `quiet`;
/// returns the seconds from the first request of this process to its last.
async fn wait_quiet(
    audit: &mut Audit,
    operator: &mut OperatorProcess,
    quiet: Duration,
    timeout: Duration,
) -> anyhow::Result<f64> {
    let began = Timestamp::now();
    let deadline = Instant::now() + timeout;
    loop {
        operator.alive().map_err(|e| anyhow!(e))?;
        audit.refresh()?;
        let last = audit.last_non_watch();
        let idle = last
            .map(|l| Timestamp::now().duration_since(l))
            .map(|d| d.as_secs_f64())
            .unwrap_or(f64::MAX);
        if idle >= quiet.as_secs_f64() {
            let first = audit
                .requests
                .iter()
                .filter(|r| r.at >= began)
                .map(|r| r.at)
                .min();
            let _ = first;
            return Ok(last
                .map(|l| l.duration_since(began).as_secs_f64().max(0.0))
                .unwrap_or(0.0));
        }
        if Instant::now() > deadline {
            bail!(
                "the operator never went quiet for {quiet:?} within {timeout:?}: last request {:.1} s ago",
                idle
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// resourceVersion of every object the operator writes: its CRs (status),
/// their children (the generation of DaemonSets and Deployments) and the
/// probes' ClusterRoleBinding.
async fn versions(client: &kube::Client) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut add = |kind: &str, items: Vec<kube::api::ObjectMeta>| {
        for m in items {
            out.insert(
                format!(
                    "{kind} {}/{}",
                    m.namespace.unwrap_or_default(),
                    m.name.unwrap_or_default()
                ),
                // The workloads' controllers write their status (rollouts
                // of the latency phase may still run): their spec is what
                // the operator writes, and its changes bump the generation.
                if kind == "DaemonSet" || kind == "Deployment" {
                    format!("generation {:?}", m.generation)
                } else {
                    m.resource_version.unwrap_or_default()
                },
            );
        }
    };
    let managed = ListParams::default().labels(MANAGED_BY);
    add(
        "ConfigMap",
        count_metadata(&Api::<ConfigMap>::all(client.clone()), &managed)
            .await?
            .1
            .into_iter()
            .map(|o| o.metadata)
            .collect(),
    );
    add(
        "DaemonSet",
        count_metadata(&Api::<DaemonSet>::all(client.clone()), &managed)
            .await?
            .1
            .into_iter()
            .map(|o| o.metadata)
            .collect(),
    );
    add(
        "Deployment",
        count_metadata(&Api::<Deployment>::all(client.clone()), &managed)
            .await?
            .1
            .into_iter()
            .map(|o| o.metadata)
            .collect(),
    );
    add(
        "ServiceAccount",
        count_metadata(&Api::<ServiceAccount>::all(client.clone()), &managed)
            .await?
            .1
            .into_iter()
            .map(|o| o.metadata)
            .collect(),
    );
    add(
        "Service",
        count_metadata(
            &Api::<k8s_openapi::api::core::v1::Service>::all(client.clone()),
            &managed,
        )
        .await?
        .1
        .into_iter()
        .map(|o| o.metadata)
        .collect(),
    );
    for (kind, resource) in [
        ("TelemetryCollector", collectors_resource()),
        ("Instrumentation", instrumentations_resource()),
    ] {
        let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
        add(
            kind,
            api.list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .map(|o| o.metadata)
                .collect(),
        );
    }
    let crb: Api<k8s_openapi::api::rbac::v1::ClusterRoleBinding> = Api::all(client.clone());
    add(
        "ClusterRoleBinding",
        vec![crb.get("ferrotel-probe").await?.metadata],
    );
    Ok(out)
}

/// (watch, objects, JSON bytes, JSON bytes without managedFields) of the
/// operator's biggest watches, listed the way it lists them.
async fn store_sizes(client: &kube::Client) -> anyhow::Result<Vec<(String, usize, u64, u64)>> {
    let mut out = Vec::new();
    let sizes = |items: Vec<kube::api::ObjectMeta>| -> (usize, u64, u64) {
        let n = items.len();
        let mut full = 0u64;
        let mut stripped = 0u64;
        for mut m in items {
            full += serde_json::to_vec(&m).map(|v| v.len() as u64).unwrap_or(0);
            m.managed_fields = None;
            stripped += serde_json::to_vec(&m).map(|v| v.len() as u64).unwrap_or(0);
        }
        (n, full, stripped)
    };
    let all = ListParams::default();
    let (n, f, s) = sizes(
        count_metadata(&Api::<Pod>::all(client.clone()), &all)
            .await?
            .1
            .into_iter()
            .map(|o| o.metadata)
            .collect(),
    );
    out.push((
        "Pods, metadata only (Instrumentation opt-in)".to_owned(),
        n,
        f,
        s,
    ));
    let (n, f, s) = sizes(
        count_metadata(&Api::<Namespace>::all(client.clone()), &all)
            .await?
            .1
            .into_iter()
            .map(|o| o.metadata)
            .collect(),
    );
    out.push(("Namespaces, metadata only (opt-in)".to_owned(), n, f, s));
    let ds: Vec<DaemonSet> = Api::<DaemonSet>::all(client.clone())
        .list(&all)
        .await?
        .items;
    let full: u64 = ds
        .iter()
        .map(|d| serde_json::to_vec(d).map(|v| v.len() as u64).unwrap_or(0))
        .sum();
    let stripped: u64 = ds
        .iter()
        .map(|d| {
            let mut d = d.clone();
            d.metadata.managed_fields = None;
            serde_json::to_vec(&d).map(|v| v.len() as u64).unwrap_or(0)
        })
        .sum();
    out.push((
        "DaemonSets, whole objects, every namespace (Instrumentation owns)".to_owned(),
        ds.len(),
        full,
        stripped,
    ));
    Ok(out)
}
