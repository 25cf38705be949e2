//! The full stack, for real, on the test bed's real node (kubelet,
//! containerd, kube-proxy, CoreDNS): the Helm chart installed with the
//! project's locally built images; a TelemetryCollector and an
//! Instrumentation whose collector and probe pods run as the operator
//! rendered them (the probe with exactly its listed capabilities); a Python
//! frontend calling a Go backend through its Service name, as Deployments.
//! What the collector pod receives, it forwards to a backend collector on
//! the host, whose files the test reads (`ferrotel_e2e::stack`).
//!
//! One test walks through the scenarios in order, because each needs the
//! whole stack (a minute or two to bring up) and they build on each other:
//! 1. before opt-in nothing is exported;
//! 2. annotating the namespace makes spans with the right `k8s.*`
//!    attributes arrive; the backend's pod belongs to a ReplicaSet its
//!    Deployment adopted (no pod-template-hash, name not
//!    `<deployment>-<hash>`), so `k8s.deployment.name` can only come from
//!    reading that ReplicaSet's ownerReferences — with the probe pod's own
//!    ServiceAccount, i.e. the RBAC the operator rendered;
//! 3. the Python frontend calling the Go backend gives two services, with
//!    server spans on both and a client span on the frontend, and RED
//!    metrics (`http.server.request.duration`) carry the same attributes;
//! 4. a pod opted out with `ferrotel.io/instrument: "false"` stays dark;
//! 5. the Go probe's container is killed: its DaemonSet restarts it and
//!    tracing resumes, each request giving exactly one server span;
//! 6. removing the namespace annotation stops the spans.
//!
//! Absence is proven against a *marker*: a pod in another, still opted-in
//! namespace, served by the same probes. Requests to the dark pod are made
//! first, then one to the marker; once the marker's span arrived, anything
//! the dark pod had produced would have arrived too (one exporter, in order).
//!
//! Needs root (a real node: network namespace, cgroups, mounts, eBPF) and
//! fails saying so.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ferrotel_e2e::stack::{self, App, AppPod};
use ferrotel_e2e::{Collector, Span, wait_for};

const SPAN_TIMEOUT: Duration = Duration::from_secs(90);
const SERVER: i64 = 2;
const CLIENT: i64 = 3;

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Spans whose resource is pod `pod` and whose request mentions `marker`.
fn spans_for(backend: &Collector, pod: &str, marker: &str) -> Vec<Span> {
    stack::pod_spans(backend, pod, marker)
        .unwrap_or_else(|e| panic!("reading the backend's spans failed: {e}"))
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

/// Every span the backend holds for request `id`, one line each: pod,
/// service, kind, name (what a failure needs to tell a span that is missing
/// from one attributed elsewhere).
fn spans_of_request(backend: &Collector, id: &str) -> String {
    let spans = backend.spans().unwrap_or_default();
    let lines: Vec<String> = spans
        .iter()
        .filter(|s| stack::span_request_text(s).contains(id))
        .map(|s| {
            format!(
                "[pod {:?} service {:?} kind {} {:?}]",
                s.resource_str("k8s.pod.name"),
                s.service_name(),
                s.kind,
                s.name
            )
        })
        .collect();
    if lines.is_empty() {
        "none".to_owned()
    } else {
        lines.join(" ")
    }
}

/// The opted-in marker pair: a Python frontend (`marker-py`) calling a Go
/// backend (`marker`), served by the same two probes as the pods under test.
struct Markers<'a> {
    backend: &'a Collector,
    py: &'a AppPod,
    go: &'a AppPod,
}

impl Markers<'_> {
    /// Requests through both markers until their spans arrived: both probes'
    /// exporters have then sent everything made before.
    async fn flush(&self) {
        let (py_pod, go_pod) = (self.py.pod.clone(), self.go.pod.clone());
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
                .any(|id| !spans_for(self.backend, &py_pod, id).is_empty());
            let go = ids
                .iter()
                .any(|id| !spans_for(self.backend, &go_pod, id).is_empty());
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

/// The host pid of the first process of container `container_id`, found
/// through `/proc/<pid>/cgroup` as the probe itself does.
fn host_pid_of_container(container_id: &str) -> Option<i32> {
    let id = container_id.rsplit("://").next()?;
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cgroup = std::fs::read_to_string(e.path().join("cgroup")).ok()?;
        cgroup.contains(id).then_some(pid)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opting_a_namespace_in_and_out_controls_which_pods_send_spans_with_kubernetes_attributes() {
    let stack::RealStack {
        images,
        backend,
        observability,
        bed,
    } = stack::RealStack::start()
        .await
        .unwrap_or_else(|e| panic!("the stack on a real node: {e}"));
    let client = bed.client();
    let node = bed.with_real_node(|n| n.name().to_owned());

    // The apps: shop (opted in later) and a marker namespace opted in by pod annotation.
    let shop = bed.create_namespace("shop").await;
    let markers_ns = bed.create_namespace("markers").await;
    let go_app = |name: &str, adopted: bool, labels, annotations| App {
        name: name.to_owned(),
        image: images.backend.reference.clone(),
        args: vec!["--addr=0.0.0.0:8080".into(), "--error-rate=0".into()],
        port: 8080,
        labels,
        annotations,
        adopted,
        run_as_root: false,
        scratch: None,
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
    let deploy = |ns: String, app: App| {
        let client = client.clone();
        async move {
            stack::deploy_app(&client, &ns, &app)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        }
    };
    // Adopted: only the ReplicaSet's real ownerReferences name its Deployment.
    let backend_app = deploy(
        shop.clone(),
        go_app(
            "backend",
            true,
            map(&[("app.kubernetes.io/name", "catalogue")]),
            BTreeMap::new(),
        ),
    )
    .await;
    // By Service name: cluster DNS (CoreDNS) and kube-proxy are in the path.
    let frontend = deploy(
        shop.clone(),
        py_app("frontend", BTreeMap::new(), backend_app.service_url()),
    )
    .await;
    let dark = deploy(
        shop.clone(),
        go_app(
            "dark",
            false,
            BTreeMap::new(),
            map(&[("ferrotel.io/instrument", "false")]),
        ),
    )
    .await;
    let opted_in_pod = || map(&[("ferrotel.io/instrument", "true")]);
    let marker = deploy(
        markers_ns.clone(),
        go_app("marker", false, BTreeMap::new(), opted_in_pod()),
    )
    .await;
    let marker_py = deploy(
        markers_ns.clone(),
        py_app("marker-py", opted_in_pod(), marker.service_url()),
    )
    .await;
    let markers = Markers {
        backend: &backend,
        py: &marker_py,
        go: &marker,
    };
    let (backend_pod, frontend_pod, dark_pod) = (
        backend_app.pod.clone(),
        frontend.pod.clone(),
        dark.pod.clone(),
    );

    // 1. Before opt-in: traffic, then a marker flush; nothing from shop.
    assert_eq!(
        get(&frontend.addr(), "/shop/1?phase=before").await,
        200,
        "the frontend reaches the backend through its Service name before opt-in"
    );
    markers.flush().await;
    let early: Vec<Span> = backend
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
            let found = spans_for(&backend, &backend_pod, "/api/items/");
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
        "opt-in latency (annotation -> first backend span at the backend, polling): {:?}",
        opted_in_at.elapsed()
    );
    let span = &backend_spans[0];
    let expect = [
        ("k8s.namespace.name", shop.as_str()),
        ("k8s.pod.name", backend_pod.as_str()),
        ("k8s.pod.uid", backend_app.uid.as_str()),
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
    let frontend_spans = wait_for("frontend spans after opt-in", SPAN_TIMEOUT, || async {
        let found = spans_for(&backend, &frontend_pod, "/shop/");
        if found.iter().any(|s| s.kind == SERVER) {
            Ok(found)
        } else {
            get(&frontend.addr(), &format!("/shop{}", next_id())).await;
            Err("no frontend SERVER span yet".to_string())
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let frontend_server = frontend_spans
        .iter()
        .find(|s| s.kind == SERVER)
        .expect("checked above");
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
            backend
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
    let services: std::collections::BTreeSet<String> = backend
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
    // RED metrics for both services, with the same Kubernetes attributes.
    for (pod, service) in [(&backend_pod, "catalogue"), (&frontend_pod, "frontend")] {
        let point = wait_for(
            &format!("an http.server.request.duration point of {pod}"),
            SPAN_TIMEOUT,
            || async {
                backend
                    .metrics()
                    .unwrap_or_default()
                    .into_iter()
                    .find(|m| {
                        m.name == "http.server.request.duration"
                            && m.resource.get("k8s.pod.name").and_then(|v| v.as_str())
                                == Some(pod.as_str())
                    })
                    .ok_or_else(|| "none yet".to_string())
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(point.kind, "histogram", "{point:?}");
        assert!(point.count.unwrap_or(0) >= 1, "{point:?}");
        for (key, value) in [
            ("service.name", service),
            ("k8s.namespace.name", shop.as_str()),
            ("k8s.node.name", node.as_str()),
        ] {
            assert_eq!(
                point.resource.get(key).and_then(|v| v.as_str()),
                Some(value),
                "metric resource attribute {key}: {:?}",
                point.resource
            );
        }
    }

    // 4. The opted-out pod stays dark.
    for i in 0..5 {
        assert_eq!(
            get(&dark.addr(), &format!("/api/items/{i}?phase=dark")).await,
            200,
            "dark pod answers"
        );
    }
    markers.flush().await;
    let dark_spans: Vec<Span> = backend
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

    // 5. The Go probe's container is killed; its DaemonSet restarts it and
    // tracing resumes, with exactly one server span per request.
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(client.clone(), &observability);
    let probe_pod = pods
        .list(&kube::api::ListParams::default().labels("ferrotel.io/probe-language=go"))
        .await
        .expect("list probe pods")
        .items
        .into_iter()
        .next()
        .expect("a Go probe pod");
    let probe_pod_name = probe_pod.metadata.name.clone().expect("name");
    let container_id = probe_pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.first())
        .and_then(|c| c.container_id.clone())
        .expect("the Go probe container has an id");
    let pid = host_pid_of_container(&container_id)
        .unwrap_or_else(|| panic!("no host process of container {container_id}"));
    assert!(
        ferrotel_e2e::process::signal_pid(pid, libc::SIGKILL),
        "SIGKILL the Go probe (pid {pid})"
    );
    wait_for(
        "the Go probe container to be restarted by the kubelet and Ready",
        Duration::from_secs(120),
        || {
            let pods = pods.clone();
            let name = probe_pod_name.clone();
            async move {
                let pod = pods.get(&name).await.map_err(|e| e.to_string())?;
                let restarts = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .and_then(|cs| cs.first())
                    .map_or(0, |c| c.restart_count);
                if restarts >= 1 && stack::pod_ready(&pod) {
                    Ok(())
                } else {
                    Err(stack::pod_problem(&pod))
                }
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let sent = std::sync::Mutex::new(Vec::new());
    wait_for(
        "Go spans again after the probe restart",
        SPAN_TIMEOUT,
        || async {
            let id = next_id();
            get(&frontend.addr(), &format!("/shop{id}")).await;
            sent.lock().expect("ids").push(id);
            let ids = sent.lock().expect("ids").clone();
            if ids
                .iter()
                .any(|id| !spans_for(&backend, &backend_pod, &format!("/api/items{id}")).is_empty())
            {
                Ok(())
            } else {
                Err(format!(
                    "no Go span for any of {} requests yet; every span of the first: {}",
                    ids.len(),
                    spans_of_request(&backend, &ids[0])
                ))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let after: Vec<String> = (0..5).map(|_| next_id()).collect();
    for id in &after {
        assert_eq!(get(&frontend.addr(), &format!("/shop{id}")).await, 200);
    }
    markers.flush().await;
    for id in &after {
        let go = spans_for(&backend, &backend_pod, &format!("/api/items{id}"));
        let py: Vec<Span> = spans_for(&backend, &frontend_pod, &format!("/shop{id}"))
            .into_iter()
            .filter(|s| s.kind == SERVER)
            .collect();
        assert_eq!(
            (go.len(), py.len()),
            (1, 1),
            "request {id} after the probe restart: exactly one Go and one Python server span; Go: {go:?}"
        );
    }

    // 6. Removing the annotation stops the spans: first wait until a
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
            let (frontend, markers, backend) = (&frontend, &markers, &backend);
            let (frontend_pod, backend_pod) = (frontend_pod.clone(), backend_pod.clone());
            async move {
                get(&frontend.addr(), &format!("/shop{tag}")).await;
                markers.flush().await;
                let n = spans_for(backend, &frontend_pod, &tag).len()
                    + spans_for(backend, &backend_pod, &tag).len();
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
            spans_for(&backend, &backend_pod, id)
                .into_iter()
                .chain(spans_for(&backend, &frontend_pod, id))
        })
        .collect();
    assert!(
        late.is_empty(),
        "namespace {shop} was opted out but still exported: {late:?}"
    );
}
