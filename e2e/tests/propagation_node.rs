//! Trace-context propagation on the real node: an Instrumentation turns
//! `spec.propagation` on through a ProbeClass that allows it, the operator
//! renders the probe DaemonSets with the node's `/sys/fs/bpf` and nothing
//! else more, and a Python frontend calling a Go backend through its Service
//! name gives **one trace** per incoming request: the backend's server span
//! is the child of the frontend's client span.
//!
//! What this proves that the in-process probe tests cannot: the probes, as
//! pods (capabilities `SYS_ADMIN` + `SYS_PTRACE`, seccomp `RuntimeDefault`,
//! read-only root filesystem), reach the traced containers' cgroup v2
//! directories through their own detached cgroup2 mount, and pin in the
//! node's bpffs through the hostPath.
//!
//! Needs root (a real node) and fails saying so.

use std::collections::BTreeMap;
use std::time::Duration;

use ferrotel_e2e::stack::{self, App};
use ferrotel_e2e::{Span, wait_for};
use k8s_openapi::api::apps::v1::DaemonSet;
use kube::Api;

const SPAN_TIMEOUT: Duration = Duration::from_secs(90);
const SERVER: i64 = 2;
const CLIENT: i64 = 3;

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
async fn a_python_frontend_and_a_go_backend_form_one_trace_with_propagation_on() {
    // The probe pods get the node's /sys/fs/bpf through a hostPath; the
    // test bed's node shares this machine's. A machine without systemd may
    // have none mounted there: then the probes would refuse propagation
    // (`no_bpffs`) and this test time out, so say what is missing first.
    let bpffs = rustix::fs::statfs("/sys/fs/bpf").map(|fs| fs.f_type);
    assert!(
        matches!(bpffs, Ok(0xcafe_4a11)),
        "this test needs a BPF filesystem at /sys/fs/bpf, as a systemd node has (found: {bpffs:?}); mount one: mount -t bpf bpf /sys/fs/bpf"
    );
    let _pins = NodePins;
    let stack::RealStack {
        images,
        backend,
        observability,
        bed,
    } = stack::RealStack::start()
        .await
        .unwrap_or_else(|e| panic!("the stack on a real node: {e}"));
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

    let shop = bed.create_namespace("shop").await;
    stack::annotate_namespace(&client, &shop, "ferrotel.io/instrument", Some("true"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let catalogue = stack::deploy_app(
        &client,
        &shop,
        &App {
            name: "catalogue".into(),
            image: images.backend.reference.clone(),
            args: vec!["--addr=0.0.0.0:8080".into(), "--error-rate=0".into()],
            port: 8080,
            labels: BTreeMap::new(),
            ..App::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let storefront = stack::deploy_app(
        &client,
        &shop,
        &App {
            name: "storefront".into(),
            image: images.frontend.reference.clone(),
            args: vec![
                "--listen=0.0.0.0:8000".into(),
                format!("--backend={}", catalogue.service_url()),
            ],
            port: 8000,
            ..App::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    // Requests until one gave all three spans; every request that did must
    // be one trace.
    let (front_pod, back_pod) = (storefront.pod.clone(), catalogue.pod.clone());
    let of = |spans: &[Span], pod: &str, kind: i64, id: &str| -> Option<Span> {
        spans
            .iter()
            .find(|s| {
                s.resource_str("k8s.pod.name") == Some(pod)
                    && s.kind == kind
                    && stack::span_request_text(s).contains(id)
            })
            .cloned()
    };
    let sent = std::sync::Mutex::new(Vec::new());
    let (front_server, front_client, back_server) =
        wait_for("the three spans of one request", SPAN_TIMEOUT, || async {
            let id = next_id();
            if let Err(e) = stack::http_get(&storefront.addr(), &format!("/shop{id}")).await {
                return Err(format!("GET /shop{id}: {e}"));
            }
            sent.lock().expect("ids").push(id);
            let spans = backend.spans().map_err(|e| e.to_string())?;
            let ids = sent.lock().expect("ids").clone();
            ids.iter()
                .find_map(|id| {
                    Some((
                        of(&spans, &front_pod, SERVER, id)?,
                        of(&spans, &front_pod, CLIENT, id)?,
                        of(&spans, &back_pod, SERVER, id)?,
                    ))
                })
                .ok_or_else(|| format!("{} requests, no complete trace yet", ids.len()))
        })
        .await
        .unwrap_or_else(|e| {
            let logs = stack::pod_logs(
                &bed,
                &observability,
                &probe_pod(&bed, &observability),
                false,
            );
            panic!("{e}\npython probe log:\n{logs}")
        });
    assert_eq!(
        (&front_client.trace_id, &front_client.parent_span_id),
        (&front_server.trace_id, &front_server.span_id),
        "the frontend's client span is the child of its server span"
    );
    assert_eq!(
        (&back_server.trace_id, &back_server.parent_span_id),
        (&front_client.trace_id, &front_client.span_id),
        "the backend's server span continues the frontend's client span: one trace across the two pods"
    );
}

/// The Python probe pod's name (for its log on failure).
fn probe_pod(bed: &ferrotel_e2e::TestBed, namespace: &str) -> String {
    let out = bed
        .kubectl()
        .args([
            "-n",
            namespace,
            "get",
            "pods",
            "-l",
            "ferrotel.io/probe-language=python",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.trim().to_owned()
}
