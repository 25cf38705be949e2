//! The full stack, for real: the operator against the test bed's control
//! plane; the collector and the Go and Python probes started from the
//! objects the operator rendered (`ferrotel_e2e::stack` says exactly what
//! is translated); a Python frontend and a Go backend running in pod-like
//! sandboxes (own cgroup named like containerd's, own network namespace and
//! IP) whose container IDs are those of Pods on a kwok node.
//!
//! One test walks through the scenarios in order, because each needs the
//! whole stack (about a minute to bring up) and they build on each other:
//! 1. before opt-in nothing is exported;
//! 2. annotating the namespace makes spans with the right `k8s.*`
//!    attributes arrive (the latency is printed; the ≤ 5 s goal is measured
//!    in `bench/optin-latency`, not asserted here); the backend's pod
//!    belongs to a ReplicaSet its Deployment adopted (no pod-template-hash,
//!    name not `<deployment>-<hash>`), so `k8s.deployment.name` can only
//!    come from reading that ReplicaSet's ownerReferences — with the
//!    probe's own ServiceAccount token, i.e. the RBAC the operator rendered;
//! 3. the Python frontend calling the Go backend gives two services, with
//!    server spans on both and a client span on the frontend;
//! 4. a pod opted out with `ferrotel.io/instrument: "false"` stays dark;
//! 5. removing the namespace annotation stops the spans.
//!
//! Absence is proven against a *marker*: a pod in another, still opted-in
//! namespace, served by the same probe. Requests to the dark pod are made
//! first, then one to the marker; once the marker's span arrived, anything
//! the dark pod had produced would have arrived too (one exporter, in order).
//!
//! Needs root (cgroups, network namespaces, eBPF) and fails saying so.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ferrotel_e2e::stack::{self, LocalCollector, Workload};
use ferrotel_e2e::{Span, TestBed, wait_for};

const SPAN_TIMEOUT: Duration = Duration::from_secs(60);
const SERVER: i64 = 2;
const CLIENT: i64 = 3;

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Everything a span says about its request: path, query, target, name.
fn span_text(s: &Span) -> String {
    ["url.path", "url.query", "url.full", "http.target"]
        .iter()
        .filter_map(|k| s.attr_str(k))
        .chain([s.name.as_str()])
        .collect::<Vec<_>>()
        .join(" ")
}

/// Spans whose resource is pod `pod` and whose request mentions `marker`.
fn spans_for(collector: &LocalCollector, pod: &str, marker: &str) -> Vec<Span> {
    collector
        .spans()
        .unwrap_or_else(|e| panic!("reading the collector's spans failed: {e}"))
        .into_iter()
        .filter(|s| s.resource_str("k8s.pod.name") == Some(pod) && span_text(s).contains(marker))
        .collect()
}

async fn wait_for_spans(
    collector: &LocalCollector,
    pod: &str,
    marker: &str,
    what: &str,
) -> Vec<Span> {
    wait_for(what, SPAN_TIMEOUT, || async {
        let found = spans_for(collector, pod, marker);
        if found.is_empty() {
            Err(format!("no span yet for pod {pod} with {marker:?}"))
        } else {
            Ok(found)
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

async fn get(addr: &str, path: &str) -> u16 {
    match stack::http_get(addr, path).await {
        Ok((code, _)) => code,
        Err(e) => panic!("GET http://{addr}{path} failed: {e}"),
    }
}

/// A request id unique in this test run, six digits, carried in the URL
/// path (`/shop/<id>` -> `/api/items/<id>`): Go server spans record the
/// path but not the query, so the path is what identifies a request.
fn next_id() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(100_000);
    format!("/{}", NEXT.fetch_add(1, Ordering::SeqCst))
}

/// The opted-in marker pair: a Python frontend (`marker-py`) calling a Go
/// backend (`marker`), served by the same two probes as the pods under test.
struct Markers<'a> {
    collector: &'a LocalCollector,
    py: &'a Workload,
    go: &'a Workload,
}

impl Markers<'_> {
    /// Requests through both markers until their spans for `tag` arrived:
    /// both probes' exporters have then sent everything made before.
    async fn flush(&self) {
        let (py_pod, go_pod) = (
            self.py.sandbox.pod_name().to_owned(),
            self.go.sandbox.pod_name().to_owned(),
        );
        let addr = self.py.addr();
        let what = format!("marker spans from {py_pod} and {go_pod}");
        // Every request of this flush counts: spans arrive an export
        // interval after their request, by when newer requests were made.
        let sent = std::sync::Mutex::new(Vec::new());
        wait_for(&what, SPAN_TIMEOUT, || async {
            let id = next_id();
            get(&addr, &format!("/shop{id}")).await;
            sent.lock().expect("ids").push(id);
            let ids = sent.lock().expect("ids").clone();
            let py = ids
                .iter()
                .any(|id| !spans_for(self.collector, &py_pod, id).is_empty());
            let go = ids
                .iter()
                .any(|id| !spans_for(self.collector, &go_pod, id).is_empty());
            if py && go {
                Ok(())
            } else {
                Err(format!("python arrived: {py}, go arrived: {go}"))
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opting_a_namespace_in_and_out_controls_which_pods_send_spans_with_kubernetes_attributes() {
    assert!(
        stack::is_root(),
        "this test needs root: it creates cgroups and network namespaces and the probes load eBPF programs (run make test with sudo)"
    );
    stack::install_crypto_provider();
    let bed = TestBed::shared();
    let client = bed.client();
    let dir = tempfile::Builder::new()
        .prefix("ferrotel-fullstack-")
        .tempdir()
        .expect("tempdir")
        .keep();
    // Kept (logs of the operator, probes, apps) unless the test passes.
    eprintln!("full-stack logs: {}", dir.display());
    let dir = dir.as_path();
    let node = bed
        .node_names()
        .first()
        .expect("the test bed has kwok nodes")
        .clone();

    stack::install_crds(bed.kubeconfig()).unwrap_or_else(|e| panic!("{e}"));
    let _operator = stack::start_operator(bed.kubeconfig(), dir).unwrap_or_else(|e| panic!("{e}"));

    // The collector, from a TelemetryCollector.
    let observability = bed.create_namespace("observability").await;
    stack::kubectl_apply(
        bed.kubeconfig(),
        &format!(
            r#"apiVersion: ferrotel.io/v1alpha1
kind: TelemetryCollector
metadata: {{name: otel, namespace: {observability}}}
spec:
  mode: deployment
  config:
    receivers: {{otlp: {{protocols: {{grpc: {{endpoint: "0.0.0.0:4317"}}, http: {{endpoint: "0.0.0.0:4318"}}}}}}}}
    processors: {{batch: {{timeout: 200ms}}}}
    exporters: {{debug: {{verbosity: basic}}}}
    service:
      pipelines:
        traces: {{receivers: [otlp], processors: [batch], exporters: [debug]}}
        metrics: {{receivers: [otlp], processors: [batch], exporters: [debug]}}
"#
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let collector = stack::run_rendered_collector(&client, &observability, "otel", dir)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // The probes, from an Instrumentation.
    stack::kubectl_apply(
        bed.kubeconfig(),
        &format!(
            r#"apiVersion: ferrotel.io/v1alpha1
kind: Instrumentation
metadata: {{name: default, namespace: {observability}}}
spec:
  languages: [go, python]
  exporter: {{collectorRef: {{name: otel}}}}
  resource: {{attributes: {{deployment.environment: e2e}}}}
"#
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut probes = Vec::new();
    for language in ["go", "python"] {
        let probe = stack::run_rendered_probe(
            &client,
            &observability,
            "default",
            language,
            &node,
            &collector.grpc_url,
            bed.kubeconfig(),
            dir,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        eprintln!("started probe: {}", probe.command.join(" "));
        probes.push(probe);
    }
    for probe in &mut probes {
        stack::wait_probe_ready(probe)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    // The apps: shop (opted in later) and a marker namespace opted in by pod annotation.
    let backend_bin = stack::build_go_backend(dir).unwrap_or_else(|e| panic!("{e}"));
    let python = stack::python_interpreter().unwrap_or_else(|e| panic!("{e}"));
    let frontend_py = stack::workspace_root().join("e2e/apps/demo/frontend.py");
    let shop = bed.create_namespace("shop").await;
    let markers = bed.create_namespace("markers").await;
    let go_args = vec![
        "--addr=0.0.0.0:8080".to_owned(),
        "--error-rate=0".to_owned(),
    ];
    // A Go backend `name` in `ns` (a plain Deployment, or `adopted`: see
    // stack::deploy_adopted) with pod `labels` and `annotations`.
    let go_app = |ns: String,
                  name: &'static str,
                  adopted: bool,
                  labels: BTreeMap<String, String>,
                  annotations: BTreeMap<String, String>| {
        let (client, node, backend_bin, go_args) = (&client, &node, &backend_bin, &go_args);
        async move {
            let deploy = if adopted {
                stack::deploy_adopted(
                    client,
                    &ns,
                    name,
                    node,
                    labels,
                    annotations,
                    backend_bin,
                    go_args,
                    8080,
                    dir,
                )
                .await
            } else {
                stack::deploy(
                    client,
                    &ns,
                    name,
                    node,
                    labels,
                    annotations,
                    backend_bin,
                    go_args,
                    8080,
                    dir,
                )
                .await
            };
            deploy.unwrap_or_else(|e| panic!("{e}"))
        }
    };
    // A Python frontend `name` in `ns` calling `backend`.
    let py_app =
        |ns: String, name: &'static str, annotations: BTreeMap<String, String>, backend: String| {
            let (client, node, python, frontend_py) = (&client, &node, &python, &frontend_py);
            async move {
                let args = vec![
                    frontend_py.display().to_string(),
                    "--listen=0.0.0.0:8000".to_owned(),
                    format!("--backend=http://{backend}"),
                ];
                stack::deploy(
                    client,
                    &ns,
                    name,
                    node,
                    BTreeMap::new(),
                    annotations,
                    python,
                    &args,
                    8000,
                    dir,
                )
                .await
                .unwrap_or_else(|e| panic!("{e}"))
            }
        };
    // Adopted: only the ReplicaSet's real ownerReferences name its Deployment.
    let backend = go_app(
        shop.clone(),
        "backend",
        true,
        map(&[("app.kubernetes.io/name", "catalogue")]),
        BTreeMap::new(),
    )
    .await;
    let frontend = py_app(shop.clone(), "frontend", BTreeMap::new(), backend.addr()).await;
    let dark = go_app(
        shop.clone(),
        "dark",
        false,
        BTreeMap::new(),
        map(&[("ferrotel.io/instrument", "false")]),
    )
    .await;
    let opted_in_pod = || map(&[("ferrotel.io/instrument", "true")]);
    let marker = go_app(
        markers.clone(),
        "marker",
        false,
        BTreeMap::new(),
        opted_in_pod(),
    )
    .await;
    let marker_py = py_app(markers.clone(), "marker-py", opted_in_pod(), marker.addr()).await;
    let markers = Markers {
        collector: &collector,
        py: &marker_py,
        go: &marker,
    };
    let backend_pod = backend.sandbox.pod_name().to_owned();
    let frontend_pod = frontend.sandbox.pod_name().to_owned();
    let dark_pod = dark.sandbox.pod_name().to_owned();

    // 1. Before opt-in: traffic, then a marker flush; nothing from shop.
    assert_eq!(
        get(&frontend.addr(), "/shop/1?phase=before").await,
        200,
        "frontend works before opt-in"
    );
    markers.flush().await;
    let early: Vec<Span> = collector
        .spans()
        .expect("spans")
        .into_iter()
        .filter(|s| s.resource_str("k8s.namespace.name") == Some(shop.as_str()))
        .collect();
    assert!(
        early.is_empty(),
        "namespace {shop} is not opted in yet but exported {} spans: {:?}",
        early.len(),
        early.first()
    );

    // 2. Opt in: spans with the right attributes.
    let opted_in_at = Instant::now();
    stack::annotate_namespace(&client, &shop, "ferrotel.io/instrument", Some("true"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let backend_spans = wait_for(
        &format!("backend spans after annotating {shop}"),
        SPAN_TIMEOUT,
        || async {
            get(&frontend.addr(), &format!("/shop{}", next_id())).await;
            // Any backend span: there were none before the annotation.
            let found = spans_for(&collector, &backend_pod, "/api/items/");
            if found.is_empty() {
                Err("none yet".to_string())
            } else {
                Ok(found)
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "opt-in latency (annotation -> first backend span at the collector, polling): {:?}",
        opted_in_at.elapsed()
    );
    let span = &backend_spans[0];
    let expect = [
        ("k8s.namespace.name", shop.as_str()),
        ("k8s.pod.name", backend_pod.as_str()),
        ("k8s.pod.uid", backend.sandbox.uid()),
        ("k8s.container.name", "app"),
        ("k8s.node.name", node.as_str()),
        ("k8s.deployment.name", "backend"),
        ("service.name", "catalogue"),
        ("service.namespace", shop.as_str()),
        ("deployment.environment", "e2e"),
    ];
    for (key, value) in expect {
        assert_eq!(
            span.resource_str(key),
            Some(value),
            "resource attribute {key} of the backend span; resource: {:?}",
            span.resource
        );
    }
    assert_eq!(
        span.resource_str("k8s.replicaset.name"),
        Some("backend-legacy"),
        "k8s.replicaset.name names the backend's (adopted) ReplicaSet: {:?}",
        span.resource
    );

    // 3. Two services: Python frontend (server + client) -> Go backend (server).
    let frontend_spans = wait_for_spans(
        &collector,
        &frontend_pod,
        "/shop/",
        "frontend spans after opt-in",
    )
    .await;
    let frontend_server = frontend_spans
        .iter()
        .find(|s| s.kind == SERVER)
        .unwrap_or_else(|| panic!("no SERVER span from the frontend: {frontend_spans:?}"));
    assert_eq!(
        frontend_server.service_name(),
        Some("frontend"),
        "frontend service.name is its Deployment's name"
    );
    assert_eq!(
        frontend_server.resource_str("k8s.deployment.name"),
        Some("frontend")
    );
    let frontend_client = wait_for(
        "a CLIENT span from the frontend to the backend",
        SPAN_TIMEOUT,
        || async {
            get(&frontend.addr(), "/shop/3?phase=client").await;
            collector
                .spans()
                .unwrap_or_default()
                .into_iter()
                .find(|s| {
                    s.resource_str("k8s.pod.name") == Some(frontend_pod.as_str())
                        && s.kind == CLIENT
                })
                .ok_or_else(|| "none yet".to_string())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(frontend_client.service_name(), Some("frontend"));
    assert!(
        backend_spans.iter().all(|s| s.kind == SERVER),
        "backend spans are SERVER spans: {backend_spans:?}"
    );
    let services: std::collections::BTreeSet<String> = collector
        .spans()
        .expect("spans")
        .iter()
        .filter(|s| s.resource_str("k8s.namespace.name") == Some(shop.as_str()))
        .filter_map(|s| s.service_name().map(str::to_owned))
        .collect();
    assert_eq!(
        services,
        ["catalogue".to_owned(), "frontend".to_owned()].into(),
        "exactly the two services of {shop}"
    );

    // 4. The opted-out pod stays dark.
    for i in 0..5 {
        assert_eq!(
            get(&dark.addr(), &format!("/api/items/{i}?phase=dark")).await,
            200,
            "dark pod answers"
        );
    }
    markers.flush().await;
    let dark_spans: Vec<Span> = collector
        .spans()
        .expect("spans")
        .into_iter()
        .filter(|s| s.resource_str("k8s.pod.name") == Some(dark_pod.as_str()))
        .collect();
    assert!(
        dark_spans.is_empty(),
        "pod {dark_pod} is opted out but exported {} spans: {:?}",
        dark_spans.len(),
        dark_spans.first()
    );

    // 5. Removing the annotation stops the spans: first wait until a
    // request stops producing spans (the probes released the processes),
    // then check that a further batch stays dark too.
    stack::annotate_namespace(&client, &shop, "ferrotel.io/instrument", None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut round = 0;
    wait_for(
        &format!("requests to {shop} to stop producing spans after removing the annotation"),
        SPAN_TIMEOUT,
        || {
            round += 1;
            let tag = next_id();
            let (frontend, markers, collector) = (&frontend, &markers, &collector);
            let (frontend_pod, backend_pod) = (frontend_pod.clone(), backend_pod.clone());
            async move {
                get(&frontend.addr(), &format!("/shop{tag}")).await;
                markers.flush().await;
                let n = spans_for(collector, &frontend_pod, &tag).len()
                    + spans_for(collector, &backend_pod, &tag).len();
                if n == 0 {
                    Ok(())
                } else {
                    Err(format!(
                        "round {round}, request {tag}: {n} spans still exported"
                    ))
                }
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let late_ids: Vec<String> = (0..5).map(|_| next_id()).collect();
    for id in &late_ids {
        get(&frontend.addr(), &format!("/shop{id}")).await;
    }
    markers.flush().await;
    let late: Vec<Span> = late_ids
        .iter()
        .flat_map(|id| {
            spans_for(&collector, &backend_pod, id)
                .into_iter()
                .chain(spans_for(&collector, &frontend_pod, id))
        })
        .collect();
    assert!(
        late.is_empty(),
        "namespace {shop} was opted out but still exported: {late:?}"
    );

    drop(probes);
    drop(collector);
    let _ = std::fs::remove_dir_all(dir);
}
