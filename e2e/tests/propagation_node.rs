//! Trace-context propagation on the real node: an Instrumentation turns
//! `spec.propagation` on through a ProbeClass that allows it, the operator
//! renders the probe DaemonSets with the node's `/sys/fs/bpf` and nothing
//! else more, and a chain of services calling each other through their
//! Service names, Python -> Python -> Go -> Python, gives **one trace** per
//! incoming request: every server span the child of the client span that
//! called it, in the three directions (Python -> Python, Python -> Go,
//! Go -> Python), each request crossing the two probes.
//!
//! What this proves that the in-process probe tests cannot: the probes, as
//! pods (capabilities `SYS_ADMIN` + `SYS_PTRACE`, seccomp `RuntimeDefault`,
//! read-only root filesystem), reach the traced containers' cgroup v2
//! directories through their own detached cgroup2 mount, and pin in the
//! node's bpffs through the hostPath.
//!
//! Needs root (a real node) and fails saying so.

use std::time::Duration;

use ferrotel_e2e::images::catalog;
use ferrotel_e2e::stack::{self, App};
use ferrotel_e2e::{Span, wait_for};
use k8s_openapi::api::apps::v1::DaemonSet;
use kube::Api;

const SPAN_TIMEOUT: Duration = Duration::from_secs(90);
const SERVER: i64 = 2;
const CLIENT: i64 = 3;
/// Requests checked one by one once the chain is warm.
const CHECKED_REQUESTS: usize = 5;
/// Each hop of the chain after the first, said as its parent link.
const LINKS: [&str; 6] = [
    "the storefront's client span is the child of its server span",
    "Python -> Python: the relay's server span continues the storefront's client span",
    "the relay's client span is the child of its server span",
    "Python -> Go: the middle's server span continues the relay's client span",
    "the middle's client span is the child of its server span",
    "Go -> Python: the item's server span continues the middle's client span",
];

fn next_id() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(300_000);
    format!("/{}", NEXT.fetch_add(1, Ordering::SeqCst))
}

/// The probes pin the node-wide join map in the node's bpffs, which is
/// this machine's: it outlives the probe pods by design (a restarted probe
/// finds it again), so the test removes it, pass or fail.
struct NodePins;

impl Drop for NodePins {
    fn drop(&mut self) {
        let dir = std::path::Path::new("/sys/fs/bpf/ferrotel");
        if let Err(e) = std::fs::remove_dir_all(dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("removing the probes' pins in {}: {e}", dir.display());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_go_services_in_a_chain_form_one_trace_per_request_with_propagation_on() {
    let _pins = NodePins;
    let stack::RealStack {
        backend,
        observability,
        bed,
        ..
    } = stack::RealStack::start()
        .await
        .unwrap_or_else(|e| panic!("the stack on a real node: {e}"));
    // The probe pods get the node's /sys/fs/bpf through a hostPath. The
    // test bed's node mounts a BPF filesystem there when the host has none
    // (as systemd does at boot); without it the probes would refuse
    // propagation (`no_bpffs`) and this test time out, so say so first.
    let bpffs = rustix::fs::statfs("/sys/fs/bpf").map(|fs| fs.f_type);
    assert!(
        matches!(bpffs, Ok(0xcafe_4a11)),
        "the real node should have a BPF filesystem at /sys/fs/bpf (found: {bpffs:?}): see e2e/src/node.rs provide_bpffs"
    );
    let client = bed.client();

    // The admin's permission, then the Instrumentation asks for it.
    stack::kubectl_apply(
        bed.kubeconfig(),
        &format!(
            r#"apiVersion: {api}
kind: ProbeClass
metadata: {{name: tracing}}
spec: {{allowPropagation: true}}
---
apiVersion: {api}
kind: Instrumentation
metadata: {{name: default, namespace: {observability}}}
spec:
  languages: [go, python]
  exporter: {{collectorRef: {{name: otel}}}}
  resource: {{attributes: {{deployment.environment: e2e}}}}
  probeClassName: tracing
  propagation: {{inject: true, join: true}}
"#,
            api = stack::API_VERSION,
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let daemon_sets: Api<DaemonSet> = Api::namespaced(client.clone(), &observability);
    for language in ["go", "python"] {
        let name = format!("default-probe-{language}");
        wait_for(
            &format!("{name} rendered with the node's bpffs"),
            Duration::from_secs(60),
            || async {
                let ds = daemon_sets.get(&name).await.map_err(|e| e.to_string())?;
                let volumes = ds
                    .spec
                    .and_then(|s| s.template.spec)
                    .and_then(|p| p.volumes)
                    .unwrap_or_default();
                volumes
                    .iter()
                    .any(|v| {
                        v.host_path
                            .as_ref()
                            .is_some_and(|h| h.path == "/sys/fs/bpf")
                    })
                    .then_some(())
                    .ok_or_else(|| format!("volumes {volumes:?}"))
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        stack::wait_probe_ready(&client, &observability, "default", language)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    // One chain gives the three directions, each request crossing both
    // probes twice: storefront (Python) -> relay (Python) -> middle (Go) ->
    // item (Python), every call through a Service name. The views test's
    // apps: a Python tier calls `<downstream>/<id>`, the Go middle
    // `<backend>/<id>`.
    let shop = bed.create_namespace("shop").await;
    stack::annotate_namespace(&client, &shop, "ferrotel.io/instrument", Some("true"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (tier_image, middle_image) = tokio::task::spawn_blocking(|| -> ferrotel_e2e::Result<_> {
        Ok((catalog::views_python()?, catalog::views_middle()?))
    })
    .await
    .expect("building the apps' images")
    .unwrap_or_else(|e| panic!("building the apps' images: {e}"));
    bed.import_images(&[tier_image.clone(), middle_image.clone()])
        .unwrap_or_else(|e| panic!("{e}"));
    let url = |name: &str| format!("http://{name}.{shop}.svc.cluster.local:8080");
    let deploy = |name: &str, image: &str, args: Vec<String>| {
        let (client, shop) = (client.clone(), shop.clone());
        let app = App {
            name: name.to_owned(),
            image: image.to_owned(),
            args,
            port: 8080,
            ..App::default()
        };
        async move {
            stack::deploy_app(&client, &shop, &app)
                .await
                .unwrap_or_else(|e| panic!("deploying {}: {e}", app.name))
        }
    };
    // The apps call their downstream per request, so they start together.
    let (storefront, relay, middle, item) = tokio::join!(
        deploy(
            "storefront",
            &tier_image.reference,
            vec![
                "--listen=0.0.0.0:8080".into(),
                format!("--downstream={}/relay", url("relay")),
            ],
        ),
        deploy(
            "relay",
            &tier_image.reference,
            vec![
                "--listen=0.0.0.0:8080".into(),
                format!("--downstream={}/api", url("middle")),
            ],
        ),
        deploy(
            "middle",
            &middle_image.reference,
            vec![
                "--addr=0.0.0.0:8080".into(),
                format!("--backend={}/item", url("item")),
            ],
        ),
        deploy(
            "item",
            &tier_image.reference,
            vec!["--listen=0.0.0.0:8080".into()],
        ),
    );

    // Each request's seven spans, by (pod, kind, the path that carries the
    // request id), in the order they chain.
    let hops = |id: &str| -> [(String, i64, String); 7] {
        [
            (storefront.pod.clone(), SERVER, format!("/shop{id}")),
            (storefront.pod.clone(), CLIENT, format!("/relay{id}")),
            (relay.pod.clone(), SERVER, format!("/relay{id}")),
            (relay.pod.clone(), CLIENT, format!("/api{id}")),
            (middle.pod.clone(), SERVER, format!("/api{id}")),
            (middle.pod.clone(), CLIENT, format!("/item{id}")),
            (item.pod.clone(), SERVER, format!("/item{id}")),
        ]
    };
    let pods = [&storefront, &relay, &middle, &item].map(|a| a.pod.clone());
    // Every span of the four pods about request `id`, and the seven hops
    // when each is there exactly once.
    let request_spans = |spans: &[Span], id: &str| -> (Vec<Span>, Option<Vec<Span>>) {
        let mine: Vec<Span> = spans
            .iter()
            .filter(|s| {
                s.resource_str("k8s.pod.name")
                    .is_some_and(|p| pods.iter().any(|q| q == p))
                    && stack::span_request_text(s).contains(id)
            })
            .cloned()
            .collect();
        let chain = hops(id)
            .iter()
            .map(|(pod, kind, path)| {
                let found: Vec<&Span> = mine
                    .iter()
                    .filter(|s| {
                        s.resource_str("k8s.pod.name") == Some(pod.as_str())
                            && s.kind == *kind
                            && stack::span_request_text(s).contains(path.as_str())
                    })
                    .collect();
                (found.len() == 1).then(|| found[0].clone())
            })
            .collect();
        (mine, chain)
    };

    // Warm-up: requests until one gave all seven spans (every probe has
    // attached to every pod and exported).
    let sent = std::sync::Mutex::new(Vec::new());
    wait_for("the seven spans of one request", SPAN_TIMEOUT, || async {
        let id = next_id();
        if let Err(e) = stack::http_get(&storefront.addr(), &format!("/shop{id}")).await {
            return Err(format!("GET /shop{id}: {e}"));
        }
        sent.lock().expect("ids").push(id);
        let spans = backend.spans().map_err(|e| e.to_string())?;
        let ids = sent.lock().expect("ids").clone();
        if ids.iter().any(|id| request_spans(&spans, id).1.is_some()) {
            Ok(())
        } else {
            Err(format!("{} requests, no complete trace yet", ids.len()))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", probe_logs(&bed, &observability)));

    // Then every request is one whole trace.
    let mut checked = Vec::new();
    for _ in 0..CHECKED_REQUESTS {
        let id = next_id();
        let (code, body) = stack::http_get(&storefront.addr(), &format!("/shop{id}"))
            .await
            .unwrap_or_else(|e| panic!("GET /shop{id}: {e}"));
        assert_eq!(code, 200, "GET /shop{id} through the chain: {body}");
        checked.push(id);
    }
    for id in &checked {
        let (all, chain) = wait_for(
            &format!("the seven spans of request {id}"),
            SPAN_TIMEOUT,
            || async {
                let spans = backend.spans().map_err(|e| e.to_string())?;
                match request_spans(&spans, id) {
                    (all, Some(chain)) => Ok((all, chain)),
                    (all, None) => Err(format!("spans so far: {}", describe(&all))),
                }
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", probe_logs(&bed, &observability)));
        assert_eq!(
            all.len(),
            chain.len(),
            "request {id}: one span per hop, nothing else: {}",
            describe(&all)
        );
        assert!(
            chain[0].parent_span_id.is_empty(),
            "request {id}: the storefront's server span is the root: {}",
            describe(&all)
        );
        for (child, what) in LINKS.iter().enumerate().map(|(i, w)| (i + 1, w)) {
            let (child, parent) = (&chain[child], &chain[child - 1]);
            assert_eq!(
                (&child.trace_id, &child.parent_span_id),
                (&parent.trace_id, &parent.span_id),
                "request {id}: {what}{}",
                describe(&all)
            );
        }
    }
}

/// One line per span: pod, kind, trace, span and parent ids, request.
fn describe(spans: &[Span]) -> String {
    spans
        .iter()
        .map(|s| {
            format!(
                "\n  {} kind={} trace={} span={} parent={} {}",
                s.resource_str("k8s.pod.name").unwrap_or("?"),
                s.kind,
                s.trace_id,
                s.span_id,
                s.parent_span_id,
                stack::span_request_text(s)
            )
        })
        .collect()
}

/// Both probes' logs (for a failure's message).
fn probe_logs(bed: &ferrotel_e2e::TestBed, namespace: &str) -> String {
    ["python", "go"]
        .map(|language| {
            let logs = stack::pod_logs(bed, namespace, &probe_pod(bed, namespace, language), false);
            format!("{language} probe log:\n{logs}")
        })
        .join("\n")
}

/// The `language` probe pod's name (for its log on failure).
fn probe_pod(bed: &ferrotel_e2e::TestBed, namespace: &str, language: &str) -> String {
    let out = bed
        .kubectl()
        .args([
            "-n",
            namespace,
            "get",
            "pods",
            "-l",
            &format!("ferrotel.io/probe-language={language}"),
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.trim().to_owned()
}
