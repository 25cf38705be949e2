//! Kubernetes discovery against the real thing: the test bed's API server
//! and kwok node, and real processes in pod-like sandboxes (a cgroup named
//! like containerd's, whose ID is the Pod's `containerID`). No eBPF and no
//! collector: this checks which processes the probe claims and with which
//! attributes; the full stack (`e2e/tests/full_stack.rs`) checks the spans.
//!
//! Needs root (cgroups, network namespaces) and fails saying so.

use std::collections::BTreeMap;
use std::time::Duration;

use ferrotel_api::optin::Candidate;
use ferrotel_api::probe_config::Language;
use ferrotel_e2e::TestBed;
use ferrotel_e2e::stack;
use ferrotel_probe::targets::kubernetes::{self, KubernetesDiscoveryConfig};
use ferrotel_probe::targets::{TargetEvent, TargetEvents, target_channel};
use ferrotel_probe::telemetry::resource::{BaseResource, ResourceRegistry};
use tokio_util::sync::CancellationToken;

const EVENT_TIMEOUT: Duration = Duration::from_secs(30);

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(|uid| uid == "0"))
        .unwrap_or(false)
}

/// Waits for the next event matching `want`, returning every event seen.
async fn wait_event(
    events: &mut TargetEvents,
    what: &str,
    want: impl Fn(&TargetEvent) -> bool,
) -> Vec<TargetEvent> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(event)) => {
                let done = want(&event);
                seen.push(event);
                if done {
                    return seen;
                }
            }
            Ok(None) => panic!("discovery stopped while waiting for {what}; events: {seen:?}"),
            Err(_) => {
                panic!("timed out after {EVENT_TIMEOUT:?} waiting for {what}; events: {seen:?}")
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotating_a_namespace_claims_its_go_pods_processes_with_k8s_attributes_and_removing_it_releases_them()
 {
    assert!(
        is_root(),
        "this test needs root: it creates cgroups and network namespaces for the pod sandboxes (run make test with sudo)"
    );
    kubernetes::install_crypto_provider();
    let bed = TestBed::shared();
    let client = bed.client();
    let node = bed
        .node_names()
        .first()
        .expect("the test bed has kwok nodes")
        .clone();
    let dir = tempfile::tempdir().expect("tempdir");
    let ns = bed.create_namespace("discovery").await;

    let backend_bin = stack::build_go_backend(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let python = stack::python_interpreter().unwrap_or_else(|e| panic!("{e}"));
    let go = stack::deploy(
        &client,
        &ns,
        "catalogue",
        &node,
        BTreeMap::new(),
        BTreeMap::from([(
            "resource.opentelemetry.io/team".to_owned(),
            "shop".to_owned(),
        )]),
        &backend_bin,
        &["--addr=0.0.0.0:8080".to_owned()],
        8080,
        dir.path(),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let frontend_py = stack::workspace_root().join("e2e/apps/demo/frontend.py");
    let py = stack::deploy(
        &client,
        &ns,
        "storefront",
        &node,
        BTreeMap::new(),
        BTreeMap::new(),
        &python,
        &[
            frontend_py.display().to_string(),
            "--listen=0.0.0.0:8000".to_owned(),
            format!("--backend=http://{}", go.addr()),
        ],
        8000,
        dir.path(),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let go_pid = go.sandbox.pid().expect("go workload runs");
    let py_pid = py.sandbox.pid().expect("python workload runs");

    let (publisher, mut events) = target_channel();
    let registry = ResourceRegistry::new(BaseResource::default());
    let shutdown = CancellationToken::new();
    let mut config = KubernetesDiscoveryConfig::new(
        node.clone(),
        Language::Go,
        vec![Candidate {
            namespace: "observability".into(),
            name: "default".into(),
            languages: vec![Language::Go, Language::Python],
            namespace_selector: None,
            pod_selector: None,
        }],
    );
    config.scan_interval = Duration::from_millis(200);
    let task = tokio::spawn(kubernetes::run(
        client.clone(),
        config,
        publisher,
        registry.clone(),
        shutdown.clone(),
    ));

    stack::annotate_namespace(&client, &ns, "ferrotel.io/instrument", Some("true"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let seen = wait_event(
        &mut events,
        &format!("Added({go_pid})"),
        |e| matches!(e, TargetEvent::Added(t) if t.pid == go_pid),
    )
    .await;
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e, TargetEvent::Added(t) if t.pid == py_pid)),
        "the Go probe must not claim the Python process {py_pid}: {seen:?}"
    );
    let resource = registry.get(go_pid);
    let expect = [
        ("k8s.namespace.name", ns.as_str()),
        ("k8s.pod.name", go.sandbox.pod_name()),
        ("k8s.pod.uid", go.sandbox.uid()),
        ("k8s.container.name", "app"),
        ("k8s.node.name", node.as_str()),
        ("k8s.deployment.name", "catalogue"),
        ("service.name", "catalogue"),
        ("service.namespace", ns.as_str()),
        ("team", "shop"),
    ];
    for (key, value) in expect {
        assert_eq!(
            resource.attributes.get(key).map(String::as_str),
            Some(value),
            "{key} of pid {go_pid}; attributes: {:?}",
            resource.attributes
        );
    }

    stack::annotate_namespace(&client, &ns, "ferrotel.io/instrument", None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    wait_event(
        &mut events,
        &format!("Removed({go_pid})"),
        |e| matches!(e, TargetEvent::Removed(pid) if *pid == go_pid),
    )
    .await;

    shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(10), task).await;
    assert!(
        matches!(stopped, Ok(Ok(Ok(())))),
        "discovery stops cleanly on shutdown: {stopped:?}"
    );
}
