//! `kubectl ferrotel` on the full stack (`ferrotel_e2e::stack::RealStack`:
//! the real node, the Helm chart, the collector and the Go and Python probes
//! as the operator renders them), with a Python frontend calling a Go
//! backend as Deployments. Every command's numbers are checked against what
//! the load driver here sent, and `why` against every reason a pod is or is
//! not traced.
//!
//! - **stat, top, edges**: started with `-w`/`top` and `-o json` *before*
//!   the load, so their first frame is the baseline; then a known number of
//!   requests per route, each timed. Consecutive frames add up to exactly
//!   the traffic (the CLI reads the probes' cumulative counters), so the
//!   sum of the frames after the first must equal what was sent, per route,
//!   workload and edge; the totals since the probes started too (nothing
//!   else calls these pods). Rates are the requests over each frame's
//!   window; a percentile can only lie in a bucket at or below the one
//!   holding the driver's own round-trip time (a server span is inside the
//!   client's round trip).
//! - **tap**: a run of requests carrying a secret query value; the tap
//!   shows them in order, none missing in between, the value redacted.
//! - **status**: both probes ready, what each attached and refused, no
//!   drops.
//! - **edges**: the probes' service graph: the driver (untraced, so
//!   `user`) calls the frontend, the frontend the backend; each request
//!   counted once, failures as the server saw them (a 4xx is not a server
//!   failure).
//! - **resources**: exactly the opted-in pods a probe claimed (the refused
//!   idle program too: its resources need no protocol; not the opted-out
//!   pod), each with a plausible memory working set and a CPU reading.
//! - **why**: traced (Go and Python), opted out by the pod, namespace not
//!   annotated, no probe for the pod's language (an Instrumentation that
//!   does not list it), no probe on the node for a claimed language, and a
//!   binary the probe refused (a Go program with neither HTTP nor gRPC);
//!   of a Deployment (`deploy/`, `deployment/`), each of its pods.
//!
//! Needs root (a real node, eBPF) and fails saying so. Takes about as long
//! as `full_stack.rs`: the stack, seven pods, and about twenty seconds of
//! measuring.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrotel_e2e::cli::{run, succeeds, text};
use ferrotel_e2e::stack::{self, API_VERSION, App, AppPod, kubectl_apply};
use ferrotel_e2e::{FATAL, wait_for};
use serde_json::Value;
use tokio::io::AsyncBufReadExt;

const TIMEOUT: Duration = Duration::from_secs(120);
/// The measuring window of stat, top and edges.
const WINDOW: &str = "3s";
const WINDOW_SECONDS: f64 = 3.0;
/// The probes' bucket bounds of HTTP durations (seconds): OTel's.
const HTTP_BOUNDS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The smallest bucket bound at or above `seconds`: no percentile the
/// histogram gives for durations up to `seconds` can exceed it.
fn bucket_ceiling(seconds: f64) -> f64 {
    HTTP_BOUNDS
        .iter()
        .copied()
        .find(|b| *b >= seconds)
        .unwrap_or(f64::INFINITY)
}

/// What the driver sent to one route: requests, how many the server
/// counts as failed, and the slowest round trip seen by the driver.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Sent {
    requests: f64,
    failures: f64,
    slowest: f64,
}

impl Sent {
    fn add(&mut self, other: Sent) {
        self.requests += other.requests;
        self.failures += other.failures;
        self.slowest = self.slowest.max(other.slowest);
    }
}

/// Sends `count` GETs of `path(i)` to `addr`, each expecting `status`.
async fn send(addr: &str, count: usize, path: impl Fn(usize) -> String, status: u16) -> f64 {
    let mut slowest: f64 = 0.0;
    for i in 0..count {
        let path = path(i);
        let started = Instant::now();
        let code = match stack::http_get(addr, &path).await {
            Ok((code, _)) => code,
            Err(e) => panic!("GET http://{addr}{path} failed: {e}"),
        };
        slowest = slowest.max(started.elapsed().as_secs_f64());
        assert_eq!(code, status, "GET http://{addr}{path}");
    }
    slowest
}

/// `kubectl ferrotel why <pod> -o json` until its reason is `reason`.
async fn why_until(kubeconfig: &Path, namespace: &str, pod: &str, reason: &str) -> Value {
    wait_for(
        &format!("why {namespace}/{pod} to answer {reason}"),
        TIMEOUT,
        || async {
            let out = run(kubeconfig, &["why", pod, "-n", namespace, "-o", "json"]);
            let (stdout, stderr) = text(&out);
            if !out.status.success() {
                return Err(format!("{FATAL}why failed: {stderr}"));
            }
            let answer: Value = serde_json::from_str(&stdout)
                .map_err(|e| format!("{FATAL}why -o json is not JSON ({e}): {stdout}"))?;
            if answer["reason"] == reason {
                Ok(answer)
            } else {
                Err(format!("answered {answer:#}"))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

#[track_caller]
fn assert_contains(answer: &Value, field: &str, words: &[&str]) {
    let text = answer[field].as_str().unwrap_or_default();
    for word in words {
        assert!(
            text.contains(word),
            "{field} lacks {word:?}; the answer: {answer:#}"
        );
    }
}

/// The process rows of a `why` answer as (probe language, decision, tracing).
fn processes(answer: &Value) -> Vec<(String, String, String)> {
    answer["processes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let s = |k: &str| p[k].as_str().unwrap_or_default().to_owned();
            (s("probeLanguage"), s("decision"), s("tracing"))
        })
        .collect()
}

/// A long-running `kubectl ferrotel … -o json` (one JSON document a line),
/// its documents collected as they come; killed when dropped.
struct Watcher {
    what: String,
    child: tokio::process::Child,
    frames: Arc<Mutex<Vec<Value>>>,
}

impl Watcher {
    fn start(kubeconfig: &Path, args: &[&str]) -> Watcher {
        let mut cmd = tokio::process::Command::from(ferrotel_e2e::cli::command(kubeconfig));
        let mut child = cmd
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("kubectl-ferrotel starts");
        let frames = Arc::new(Mutex::new(Vec::new()));
        let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("piped")).lines();
        let sink = frames.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let frame = serde_json::from_str(&line)
                    .unwrap_or_else(|e| Value::String(format!("not JSON ({e}): {line}")));
                sink.lock().expect("frames").push(frame);
            }
        });
        Watcher {
            what: format!("kubectl ferrotel {}", args.join(" ")),
            child,
            frames,
        }
    }

    fn frames(&self) -> Vec<Value> {
        self.frames.lock().expect("frames").clone()
    }

    /// Waits until `n` frames arrived (or the command ended).
    async fn wait_frames(&mut self, n: usize) -> Vec<Value> {
        let what = format!("{} frames of {}", n, self.what);
        let (frames, child) = (self.frames.clone(), &mut self.child);
        let child = Mutex::new(child);
        wait_for(&what, TIMEOUT, || async {
            let got = frames.lock().expect("frames").clone();
            if got.len() >= n {
                return Ok(got);
            }
            if let Ok(Some(status)) = child.lock().expect("child").try_wait() {
                return Err(format!("{FATAL}it exited ({status}) after {got:?}"));
            }
            Err(format!("{} so far", got.len()))
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    }
}

/// A frame row's key, and its window counts.
type Rows = BTreeMap<String, (f64, f64)>;

/// `(requests, failures)` per key of the rows (or edges) of one frame.
fn frame_rows(frame: &Value, list: &str, key: &dyn Fn(&Value) -> String) -> Rows {
    frame[list]
        .as_array()
        .into_iter()
        .flatten()
        .map(|row| {
            let n = |k: &str| row[k].as_f64().unwrap_or(f64::NAN);
            (key(row), (n("requests"), n("failures")))
        })
        .collect()
}

/// Checks every row of every frame against what was sent to it: the rate
/// is the requests over the frame's window (which lasts at least the
/// asked-for window), percentiles are ordered and no slower than the
/// bucket holding the slowest round trip the driver saw.
#[track_caller]
fn check_rates_and_latency(
    what: &str,
    frames: &[Value],
    list: &str,
    key: &dyn Fn(&Value) -> String,
    sent: &BTreeMap<String, Sent>,
) {
    for frame in frames {
        let seconds = frame["windowSeconds"].as_f64().unwrap_or(0.0);
        assert!(
            seconds >= WINDOW_SECONDS,
            "{what}: a window of {seconds}s is shorter than the {WINDOW} asked for: {frame:#}"
        );
        for row in frame[list].as_array().into_iter().flatten() {
            let Some(sent) = sent.get(&key(row)) else {
                continue;
            };
            let requests = row["requests"].as_f64().unwrap_or(f64::NAN);
            let rps = row["rps"].as_f64().unwrap_or(f64::NAN);
            assert!(
                (rps - requests / seconds).abs() < 1e-9,
                "{what}: rps {rps} is not {requests} requests over {seconds}s: {row:#}"
            );
            if requests == 0.0 {
                continue;
            }
            let p = |k: &str| {
                row[k]
                    .as_f64()
                    .unwrap_or_else(|| panic!("{what}: no {k} in a row with requests: {row:#}"))
            };
            let (p50, p90, p99) = (p("p50"), p("p90"), p("p99"));
            let ceiling = bucket_ceiling(sent.slowest);
            assert!(
                0.0 < p50 && p50 <= p90 && p90 <= p99 && p99 <= ceiling,
                "{what}: percentiles {p50} <= {p90} <= {p99} must lie in (0, {ceiling}] (the bucket of the slowest round trip, {}s): {row:#}",
                sent.slowest
            );
            let success = row["success"].as_f64().unwrap_or(f64::NAN);
            let failures = row["failures"].as_f64().unwrap_or(f64::NAN);
            assert!(
                (success - (1.0 - failures / requests)).abs() < 1e-9,
                "{what}: success {success} is not 1 - {failures}/{requests}: {row:#}"
            );
        }
    }
}

/// Waits until the frames after the baseline (the first) add up to at
/// least what was `sent` for every key, then takes one frame more and
/// checks they add up to exactly that: nothing lost, nothing counted twice.
async fn sums_match(
    watcher: &mut Watcher,
    list: &str,
    key: &dyn Fn(&Value) -> String,
    sent: &BTreeMap<String, Sent>,
) -> Vec<Value> {
    let sum = |frames: &[Value]| -> Rows {
        let mut total = Rows::new();
        for frame in frames.iter().skip(1) {
            for (k, (r, f)) in frame_rows(frame, list, key) {
                let entry = total.entry(k).or_default();
                entry.0 += r;
                entry.1 += f;
            }
        }
        total
    };
    let reached = |total: &Rows| {
        sent.iter().all(|(k, s)| {
            total
                .get(k)
                .is_some_and(|(r, f)| *r >= s.requests && *f >= s.failures)
        })
    };
    let what = format!("the frames of {} to add up to {sent:?}", watcher.what);
    let frames = watcher.frames.clone();
    let seen = wait_for(&what, TIMEOUT, || async {
        let got = frames.lock().expect("frames").clone();
        let total = sum(&got);
        if reached(&total) {
            Ok(got.len())
        } else {
            Err(format!("{total:?} after {} frames", got.len()))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; frames: {:#?}", watcher.frames()));
    let frames = watcher.wait_frames(seen + 1).await;
    let total = sum(&frames);
    for (k, s) in sent {
        assert_eq!(
            total.get(k).copied(),
            Some((s.requests, s.failures)),
            "{}: requests and failures of {k} over the frames after the first, against what was sent; frames: {frames:#?}",
            watcher.what
        );
    }
    frames
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_shows_what_the_load_driver_sent_and_why_names_each_reason() {
    let stack::RealStack {
        images,
        backend: _backend,
        observability,
        bed,
    } = stack::RealStack::start()
        .await
        .unwrap_or_else(|e| panic!("the stack on a real node: {e}"));
    let client = bed.client();
    let kubeconfig: PathBuf = bed.kubeconfig().to_owned();
    let node = bed.with_real_node(|n| n.name().to_owned());
    let obs = observability.as_str();

    // A second Instrumentation, Go only, whose probes run on no node.
    kubectl_apply(
        &kubeconfig,
        &format!(
            r#"apiVersion: {API_VERSION}
kind: Instrumentation
metadata: {{name: go-only, namespace: {obs}}}
spec:
  languages: [go]
  exporter: {{collectorRef: {{name: otel}}}}
  probe: {{nodeSelector: {{ferrotel.io/e2e-no-such-node: "true"}}}}
"#
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));

    let shop = bed.create_namespace("shop").await;
    let plain = bed.create_namespace("plain").await;
    let go_only = bed.create_namespace("go-only").await;
    for (namespace, value) in [
        (&shop, format!("{obs}/default")),
        (&go_only, format!("{obs}/go-only")),
    ] {
        stack::annotate_namespace(&client, namespace, "ferrotel.io/instrument", Some(&value))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let go_app = |name: &str, annotations| App {
        name: name.to_owned(),
        image: images.backend.reference.clone(),
        args: vec!["--addr=0.0.0.0:8080".into(), "--error-rate=0".into()],
        port: 8080,
        annotations,
        ..App::default()
    };
    let py_app = |name: &str, annotations, backend_url: String| App {
        name: name.to_owned(),
        image: images.frontend.reference.clone(),
        args: vec![
            "--listen=0.0.0.0:8000".into(),
            format!("--backend={backend_url}"),
        ],
        port: 8000,
        annotations,
        ..App::default()
    };
    let deploy = |namespace: &str, app: App| {
        let (client, namespace) = (client.clone(), namespace.to_owned());
        async move {
            stack::deploy_app(&client, &namespace, &app)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        }
    };
    let backend_app = deploy(&shop, go_app("backend", BTreeMap::new())).await;
    let frontend = deploy(
        &shop,
        py_app("frontend", BTreeMap::new(), backend_app.service_url()),
    )
    .await;
    let dark = deploy(
        &shop,
        go_app("dark", map(&[("ferrotel.io/instrument", "false")])),
    )
    .await;
    // A Go program with no HTTP or gRPC in it: the Go probe refuses it.
    let pause = ferrotel_e2e::images::catalog::pause().unwrap_or_else(|e| panic!("{e}"));
    kubectl_apply(
        &kubeconfig,
        &format!(
            r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: idle, namespace: {shop}}}
spec:
  selector: {{matchLabels: {{app: idle}}}}
  template:
    metadata: {{labels: {{app: idle}}}}
    spec:
      containers: [{{name: app, image: "{image}", imagePullPolicy: Never}}]
"#,
            image = pause.reference
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let idle = stack::wait_pod_ready(&client, &shop, "app=idle")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let idle = AppPod {
        namespace: shop.clone(),
        deployment: "idle".into(),
        pod: idle.metadata.name.clone().unwrap_or_default(),
        uid: idle.metadata.uid.clone().unwrap_or_default(),
        ip: String::new(),
        port: 0,
    };
    let unannotated = deploy(&plain, go_app("plain", BTreeMap::new())).await;
    let python_unlisted = deploy(
        &go_only,
        py_app("py", BTreeMap::new(), backend_app.service_url()),
    )
    .await;
    let go_unprobed = deploy(&go_only, go_app("go", BTreeMap::new())).await;

    // why, for each reason. Traced first: the load must not start before
    // the probes attached, or they would not count all of it.
    let why = |pod: &AppPod, reason: &'static str| {
        let kubeconfig = kubeconfig.clone();
        let (namespace, name) = (pod.namespace.clone(), pod.pod.clone());
        async move { why_until(&kubeconfig, &namespace, &name, reason).await }
    };
    for (pod, program_set, language) in
        [(&backend_app, "go", "go"), (&frontend, "sockets", "python")]
    {
        let answer = why(pod, "traced").await;
        assert_eq!(answer["traced"], true, "{answer:#}");
        assert_contains(
            &answer,
            "verdict",
            &[
                &format!("by program set {program_set} of {obs}/default"),
                &format!("annotation ferrotel.io/instrument on namespace {shop}"),
            ],
        );
        assert_eq!(
            processes(&answer)
                .iter()
                .filter(|(l, _, t)| l == language && t == &format!("traced ({program_set})"))
                .count(),
            1,
            "one process of {} traced by the {language} probe: {answer:#}",
            pod.pod
        );
    }
    let answer = why(&dark, "optedOut").await;
    assert_contains(
        &answer,
        "verdict",
        &["opted out by pod annotation ferrotel.io/instrument"],
    );
    assert_eq!(answer["traced"], false);
    let answer = why(&unannotated, "notOptedIn").await;
    assert_contains(
        &answer,
        "verdict",
        &[&format!("namespace {plain} is not opted in")],
    );
    assert_contains(
        &answer,
        "fix",
        &[&format!(
            "kubectl annotate namespace {plain} ferrotel.io/instrument=true"
        )],
    );
    let answer = why(&python_unlisted, "languageNotEnabled").await;
    assert_contains(
        &answer,
        "verdict",
        &[
            "its processes are python (detected by the probe)",
            &format!("{obs}/go-only does not list python in spec.languages"),
        ],
    );
    assert_contains(
        &answer,
        "fix",
        &[&format!(
            "add python to spec.languages of Instrumentation {obs}/go-only"
        )],
    );
    let answer = why(&go_unprobed, "noProbeOnNode").await;
    assert_contains(
        &answer,
        "verdict",
        &[&format!("no go probe of {obs}/go-only runs on node {node}")],
    );
    assert_contains(&answer, "fix", &["runs on no node", "nodeSelector"]);
    let answer = why(&idle, "binaryRefused").await;
    assert_contains(&answer, "verdict", &["the go probe refused /pause"]);
    assert_contains(
        &answer,
        "fix",
        &["does not use a library the probe instruments"],
    );
    let refusal = processes(&answer)
        .into_iter()
        .find_map(|(l, _, t)| {
            let rest = t.strip_prefix("refused by go: ")?;
            (l == "go").then(|| rest.split(':').next().unwrap_or_default().to_owned())
        })
        .unwrap_or_else(|| panic!("a Go process refused: {answer:#}"));
    // A workload: each of its pods (found by their owner chain), answered
    // as that pod is; `deployment/` is kubectl's long name of `deploy/`.
    for (workload, app, reason) in [
        ("deploy/backend", &backend_app, "traced"),
        ("deployment/dark", &dark, "optedOut"),
    ] {
        let out = run(&kubeconfig, &["why", workload, "-n", &shop, "-o", "json"]);
        let answer: Value = serde_json::from_str(&succeeds(&out))
            .unwrap_or_else(|e| panic!("why {workload} -o json is JSON: {e}"));
        let pods: Vec<(&str, &str)> = answer["pods"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                (
                    p["pod"].as_str().unwrap_or("?"),
                    p["reason"].as_str().unwrap_or("?"),
                )
            })
            .collect();
        assert_eq!(
            pods,
            [(app.pod.as_str(), reason)],
            "why {workload}: its one pod, answered: {answer:#}"
        );
        assert_eq!(
            answer["workload"],
            format!("deploy/{}", app.deployment),
            "{answer:#}"
        );
        assert_eq!(
            answer["traced"],
            usize::from(reason == "traced"),
            "{answer:#}"
        );
    }

    // The watchers start before the load: their first frame is the baseline.
    let route_key = |row: &Value| {
        format!(
            "{} {} {}",
            row["workload"].as_str().unwrap_or("?"),
            row["method"].as_str().unwrap_or("?"),
            row["route"].as_str().unwrap_or("?")
        )
    };
    let workload_key = |row: &Value| row["workload"].as_str().unwrap_or("?").to_owned();
    let edge_key = |row: &Value| {
        format!(
            "{}/{} -> {}/{}",
            row["clientNamespace"].as_str().unwrap_or("?"),
            row["client"].as_str().unwrap_or("?"),
            row["serverNamespace"].as_str().unwrap_or("?"),
            row["server"].as_str().unwrap_or("?")
        )
    };
    let ns = shop.as_str();
    let mut by_route = Watcher::start(
        &kubeconfig,
        &[
            "stat", "routes", "-n", ns, "-w", "--window", WINDOW, "-o", "json",
        ],
    );
    let mut by_workload = Watcher::start(
        &kubeconfig,
        &[
            "stat",
            "workloads",
            "-n",
            ns,
            "-w",
            "--window",
            WINDOW,
            "-o",
            "json",
        ],
    );
    let mut top = Watcher::start(
        &kubeconfig,
        &[
            "top",
            "routes",
            "-n",
            ns,
            "--interval",
            WINDOW,
            "--rows",
            "0",
            "-o",
            "json",
        ],
    );
    let mut edges = Watcher::start(
        &kubeconfig,
        &["edges", "-n", ns, "-w", "--window", WINDOW, "-o", "json"],
    );
    for watcher in [&mut by_route, &mut by_workload, &mut top, &mut edges] {
        watcher.wait_frames(1).await;
    }

    // The load: per route, a known number of requests and outcomes.
    const ITEMS: usize = 24;
    const BAD_ITEMS: usize = 6;
    const MISSING: usize = 4;
    let addr = frontend.addr();
    let items = send(&addr, ITEMS, |i| format!("/shop/{}", 1000 + i), 200).await;
    // A non-numeric id: the backend answers 400 (not a server failure),
    // the frontend turns it into a 502 (a server failure).
    let bad = send(&addr, BAD_ITEMS, |_| "/shop/abc".to_owned(), 502).await;
    let missing = send(&addr, MISSING, |_| "/missing".to_owned(), 404).await;
    let sent = |requests: usize, failures: usize, slowest: f64| Sent {
        requests: requests as f64,
        failures: failures as f64,
        slowest,
    };
    let backend_sent = sent(ITEMS + BAD_ITEMS, 0, items.max(bad));
    let routes: BTreeMap<String, Sent> = [
        ("deploy/frontend GET /shop/*", sent(ITEMS, 0, items)),
        (
            "deploy/frontend GET /shop/abc",
            sent(BAD_ITEMS, BAD_ITEMS, bad),
        ),
        ("deploy/frontend GET /missing", sent(MISSING, 0, missing)),
        ("deploy/backend GET /api/items/{id}", backend_sent),
    ]
    .into_iter()
    .map(|(k, s)| (k.to_owned(), s))
    .collect();
    let mut frontend_sent = Sent::default();
    for (k, s) in &routes {
        if k.starts_with("deploy/frontend") {
            frontend_sent.add(*s);
        }
    }
    let workloads: BTreeMap<String, Sent> = [
        ("deploy/frontend".to_owned(), frontend_sent),
        ("deploy/backend".to_owned(), backend_sent),
    ]
    .into();
    // The service graph counts each request once, at the traced server:
    // the driver is an untraced client (Tempo's `user`), and a server fails
    // only on a 5xx (the frontend's 502s; not the 404s, nor the backend's
    // 400s).
    let edge_sent: BTreeMap<String, Sent> = [
        (
            format!("/user -> {ns}/frontend"),
            sent(
                ITEMS + BAD_ITEMS + MISSING,
                BAD_ITEMS,
                items.max(bad).max(missing),
            ),
        ),
        (
            format!("{ns}/frontend -> {ns}/backend"),
            sent(ITEMS + BAD_ITEMS, 0, items.max(bad)),
        ),
    ]
    .into();

    // stat by route and workload: window sums and totals, exactly.
    for (watcher, sent, key) in [
        (
            &mut by_route,
            &routes,
            &route_key as &dyn Fn(&Value) -> String,
        ),
        (
            &mut by_workload,
            &workloads,
            &workload_key as &dyn Fn(&Value) -> String,
        ),
    ] {
        let frames = sums_match(watcher, "rows", key, sent).await;
        let what = watcher.what.clone();
        check_rates_and_latency(&what, &frames, "rows", key, sent);
        let last = frames.last().expect("frames");
        let keys: Vec<String> = last["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .map(key)
            .collect();
        assert_eq!(
            keys,
            sent.keys().cloned().collect::<Vec<_>>(),
            "{what}: exactly the rows of what was sent (pods without requests have none): {last:#}"
        );
        for row in last["rows"].as_array().into_iter().flatten() {
            let s = sent[&key(row)];
            assert_eq!(
                (row["totalRequests"].as_f64(), row["totalFailures"].as_f64()),
                (Some(s.requests), Some(s.failures)),
                "{what}: totals since the probes started, against what was sent: {row:#}"
            );
        }
    }
    // top: the same counts, sorted by rate.
    let frames = sums_match(&mut top, "rows", &route_key, &routes).await;
    check_rates_and_latency(&top.what, &frames, "rows", &route_key, &routes);
    for frame in &frames {
        let rps: Vec<f64> = frame["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| r["rps"].as_f64().unwrap_or(f64::NAN))
            .collect();
        assert!(
            rps.windows(2).all(|w| w[0] >= w[1]),
            "top sorts by request rate, descending: {frame:#}"
        );
    }
    // edges: every frontend -> backend call once, the 400s failed.
    let frames = sums_match(&mut edges, "edges", &edge_key, &edge_sent).await;
    check_rates_and_latency(&edges.what, &frames, "edges", &edge_key, &edge_sent);
    // Where the edges came from, told honestly: nothing had called these
    // pods before the load, so no probe had a service graph series and the
    // frames before the first call name no source; from the first call on,
    // the service graph (its series stay, even in a window without calls).
    let first_call = frames
        .iter()
        .position(|f| f["edges"].as_array().is_some_and(|e| !e.is_empty()))
        .unwrap_or_else(|| panic!("a frame with edges: {frames:#?}"));
    assert!(
        first_call >= 1,
        "the baseline frame was taken before the load: {frames:#?}"
    );
    for (i, frame) in frames.iter().enumerate() {
        let source = if i < first_call {
            "none"
        } else {
            "serviceGraph"
        };
        assert_eq!(frame["source"], source, "frame {i}: {frame:#}");
    }
    drop((by_route, by_workload, top, edges));

    // status: both probes ready; the Go probe traces the backend and refused
    // the idle one, the Python probe traces the frontend; nothing dropped.
    let status: Value =
        serde_json::from_str(&succeeds(&run(&kubeconfig, &["status", "-o", "json"])))
            .expect("status -o json is JSON");
    let probes: Vec<&Value> = status["probes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["namespace"] == obs)
        .collect();
    let languages: Vec<&str> = probes
        .iter()
        .map(|p| p["language"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(languages, ["go", "python"], "{status:#}");
    for probe in &probes {
        let metrics = &probe["metrics"];
        assert_eq!(probe["ready"], true, "{probe:#}");
        assert_eq!(probe["node"], node.as_str(), "{probe:#}");
        // One process each: the backend, the frontend.
        assert_eq!(metrics["attached"].as_f64(), Some(1.0), "{probe:#}");
        // Refusals count attempts (a process is tried again when its pod
        // changes), so only their reason is certain.
        let refused: BTreeMap<String, f64> =
            serde_json::from_value(metrics["refused"].clone()).unwrap_or_default();
        if probe["language"] == "go" {
            assert!(
                refused.get(&refusal).is_some_and(|n| *n >= 1.0),
                "the Go probe counts its refusal of the idle program ({refusal}): {probe:#}"
            );
        }
        for counter in ["kernelDropped", "recordsDropped", "exportDropped"] {
            assert_eq!(metrics[counter].as_f64(), Some(0.0), "{counter}: {probe:#}");
        }
    }
    let default = status["instrumentations"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["namespace"] == obs && i["name"] == "default")
        .unwrap_or_else(|| panic!("Instrumentation default in status: {status:#}"));
    for language in default["languages"].as_array().into_iter().flatten() {
        assert_eq!(
            (language["desired"].as_i64(), language["ready"].as_i64()),
            (Some(1), Some(1)),
            "{language:#}"
        );
    }

    // tap: a run of requests with a secret query value, seen in order.
    let mut tap = tokio::process::Command::from(ferrotel_e2e::cli::command(&kubeconfig));
    let tap = tap
        .args([
            "tap",
            "deploy/frontend",
            "-n",
            ns,
            "--max",
            "6",
            "-o",
            "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("tap starts");
    let tap_out = tokio::spawn(tap.wait_with_output());
    let mut tapped_ids = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    let mut id = 5000;
    while !tap_out.is_finished() {
        assert!(
            Instant::now() < deadline,
            "tap --max 6 did not end within {TIMEOUT:?}"
        );
        send(&addr, 1, |_| format!("/shop/{id}?session=s3cret{id}"), 200).await;
        tapped_ids.push(id);
        id += 1;
    }
    let out = tap_out.await.expect("tap task").expect("tap output");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "tap: {stdout}\n{stderr}");
    assert!(
        !stdout.contains("s3cret"),
        "tap shows a query value: {stdout}"
    );
    let spans: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("tap line {l:?}: {e}")))
        .collect();
    assert_eq!(spans.len(), 6, "--max 6: {stdout}");
    let mut server_ids = Vec::new();
    for span in &spans {
        assert_eq!(span["pod"], frontend.pod.as_str(), "{span:#}");
        if span["kind"] == "server" {
            let path = span["attributes"]["url.path"].as_str().unwrap_or_default();
            let id: u32 = path
                .strip_prefix("/shop/")
                .and_then(|i| i.parse().ok())
                .unwrap_or_else(|| panic!("a server span of a driver request: {span:#}"));
            assert_eq!(
                span["attributes"]["url.query"], "session=REDACTED",
                "{span:#}"
            );
            assert_eq!(
                span["attributes"]["http.response.status_code"], "200",
                "{span:#}"
            );
            server_ids.push(id);
        }
    }
    assert!(
        !server_ids.is_empty() && server_ids.windows(2).all(|w| w[1] == w[0] + 1),
        "the tapped server spans are consecutive requests of the driver: {server_ids:?} of {tapped_ids:?}\n{stdout}"
    );
    // Each request is one trace of two spans (the frontend's server span
    // and its call to the backend), shown together; every request between
    // the first and the last shown (which --max may cut) shows both, so no
    // span is missing in between.
    let mut traces: Vec<(&str, usize)> = Vec::new();
    for span in &spans {
        let trace = span["traceId"].as_str().unwrap_or_default();
        match traces.last_mut() {
            Some((last, count)) if *last == trace => *count += 1,
            _ => {
                assert!(
                    !traces.iter().any(|(t, _)| *t == trace),
                    "a request's spans are shown together: {trace} again after others\n{stdout}"
                );
                traces.push((trace, 1));
            }
        }
    }
    assert!(
        traces.len() >= 3,
        "six spans of two per request span at least three requests: {traces:?}\n{stdout}"
    );
    assert!(
        traces[1..traces.len() - 1]
            .iter()
            .all(|(_, count)| *count == 2),
        "both spans of every request between the first and the last shown: {traces:?}\n{stdout}"
    );

    // resources: the claimed pods, each once (two probes, one reporter).
    let out = run(
        &kubeconfig,
        &["resources", "-n", ns, "--window", "2s", "-o", "json"],
    );
    let frame: Value = serde_json::from_str(&succeeds(&out)).expect("resources -o json is JSON");
    let mut pods: Vec<(&str, &str)> = frame["pods"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["pod"].as_str().unwrap_or("?"),
                p["workload"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    pods.sort_unstable();
    let mut traced = vec![
        (backend_app.pod.as_str(), "deploy/backend"),
        (frontend.pod.as_str(), "deploy/frontend"),
        (idle.pod.as_str(), "deploy/idle"),
    ];
    traced.sort_unstable();
    assert_eq!(
        pods, traced,
        "resources: exactly the pods the probes claimed (not {}, opted out): {frame:#}",
        dark.pod
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    for pod in frame["pods"].as_array().into_iter().flatten() {
        let memory = pod["memoryWorkingSet"].as_f64().unwrap_or(0.0);
        assert!(
            (1024.0 * 1024.0..2.0 * 1024.0 * 1024.0 * 1024.0).contains(&memory),
            "a server's working set lies between 1 MiB and 2 GiB: {pod:#}"
        );
        assert!(
            pod["cpu"]
                .as_f64()
                .is_some_and(|c| (0.0..=cores).contains(&c)),
            "a CPU reading within the node's {cores} cores: {pod:#}"
        );
    }
}
