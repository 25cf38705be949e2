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
use ferrotel_e2e::sandbox::{PodSandbox, SandboxOptions};
use ferrotel_e2e::stack;
use ferrotel_probe::targets::kubernetes::{self, KubernetesDiscoveryConfig};
use ferrotel_probe::targets::{TargetEvent, TargetEvents, target_channel};
use ferrotel_probe::telemetry::resource::{BaseResource, ResourceRegistry};
use tokio_util::sync::CancellationToken;

const EVENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Waits for the next event matching `want`, returning every event seen.
async fn wait_event(
    events: &mut TargetEvents,
    what: &str,
    mut want: impl FnMut(&TargetEvent) -> bool,
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

/// The shared test bed's client, its first kwok node, a temporary
/// directory and a fresh namespace.
struct Setup {
    client: kube::Client,
    node: String,
    dir: tempfile::TempDir,
    ns: String,
}

/// Fails unless root (saying `why` root is needed), then prepares [`Setup`].
async fn setup(namespace_prefix: &str, why: &str) -> Setup {
    assert!(
        stack::is_root(),
        "this test needs root: {why} (run make test with sudo)"
    );
    kubernetes::install_crypto_provider();
    let bed = TestBed::shared();
    Setup {
        client: bed.client(),
        node: bed
            .node_names()
            .first()
            .expect("the test bed has kwok nodes")
            .clone(),
        dir: tempfile::tempdir().expect("tempdir"),
        ns: bed.create_namespace(namespace_prefix).await,
    }
}

/// One Instrumentation, `observability/default`, for Go and Python.
fn every_language_instrumentation() -> Vec<Candidate> {
    vec![Candidate {
        namespace: "observability".into(),
        name: "default".into(),
        languages: vec![Language::Go, Language::Python],
        namespace_selector: None,
        pod_selector: None,
    }]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotating_a_namespace_claims_its_go_pods_processes_with_k8s_attributes_and_removing_it_releases_them()
 {
    let Setup {
        client,
        node,
        dir,
        ns,
    } = setup(
        "discovery",
        "it creates cgroups and network namespaces for the pod sandboxes",
    )
    .await;

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
    let config = KubernetesDiscoveryConfig::new(
        node.clone(),
        Language::Go,
        every_language_instrumentation(),
    );
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

/// Waits until the parent sleeps, then forks once; both live until killed.
const FORKING_SLEEPER: &str = "import os, sys, time\n\
while not os.path.exists(sys.argv[1]):\n    time.sleep(0.05)\n\
os.fork()\n\
time.sleep(3600)\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_exec_d_into_an_opted_in_pod_is_claimed_from_its_exec_event_its_fork_too_and_both_released_at_exit_with_rescans_an_hour_apart()
 {
    let Setup {
        client,
        node,
        dir,
        ns,
    } = setup(
        "procevents",
        "it loads eBPF and creates cgroups for the pod sandboxes",
    )
    .await;
    stack::annotate_namespace(&client, &ns, "ferrotel.io/instrument", Some("true"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let python = stack::python_interpreter().unwrap_or_else(|e| panic!("{e}"));
    let options = SandboxOptions {
        container: "app".into(),
        network: false,
    };
    let pod = |name: &'static str| {
        let (client, ns, node, options) =
            (client.clone(), ns.clone(), node.clone(), options.clone());
        async move {
            let sandbox = PodSandbox::create_pod(
                &client,
                &ns,
                name,
                &node,
                serde_json::json!({}),
                serde_json::json!({}),
                options,
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
            sandbox
                .publish_status()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            sandbox
        }
    };
    // Runs before discovery starts: its claim shows that discovery has
    // listed the API and scanned /proc once.
    let mut early = pod("early").await;
    let early_pid = early
        .spawn(
            &python,
            &["-c".into(), "import time; time.sleep(3600)".into()],
            &[],
            &dir.path().join("early.log"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    // Known to the API before its process exists.
    let mut late = pod("late").await;

    let (publisher, mut events) = target_channel();
    let registry = ResourceRegistry::new(BaseResource::default());
    let shutdown = CancellationToken::new();
    let mut config = KubernetesDiscoveryConfig::new(
        node.clone(),
        Language::Python,
        every_language_instrumentation(),
    );
    // Polling is out of the picture: only the first scan runs within the
    // test, so everything after it must come from the kernel's events.
    config.rescan_interval = Duration::from_secs(3600);
    config.poll_interval = Duration::from_secs(3600);
    assert!(config.process_events, "process events are on by default");
    let task = tokio::spawn(kubernetes::run(
        client.clone(),
        config,
        publisher,
        registry.clone(),
        shutdown.clone(),
    ));
    wait_event(
        &mut events,
        &format!("Added({early_pid}) from the first scan"),
        |e| matches!(e, TargetEvent::Added(t) if t.pid == early_pid),
    )
    .await;

    let flag = dir.path().join("fork-now");
    let late_pid = late
        .spawn(
            &python,
            &[
                "-c".into(),
                FORKING_SLEEPER.into(),
                flag.display().to_string(),
            ],
            &[],
            &dir.path().join("late.log"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    wait_event(
        &mut events,
        &format!("Added({late_pid}) from its exec (no rescan for an hour; if this times out, the process events are not working: see the probe's warnings)"),
        |e| matches!(e, TargetEvent::Added(t) if t.pid == late_pid),
    )
    .await;
    assert_eq!(
        registry
            .get(late_pid)
            .attributes
            .get("k8s.pod.name")
            .map(String::as_str),
        Some("late"),
        "the exec'd process carries its pod's attributes"
    );

    std::fs::write(&flag, b"").expect("write the fork flag");
    let seen = wait_event(
        &mut events,
        "Added(<forked child>) from its fork",
        |e| matches!(e, TargetEvent::Added(t) if t.pid != late_pid && t.pid != early_pid),
    )
    .await;
    let child_pid = match seen.last() {
        Some(TargetEvent::Added(t)) => t.pid,
        other => panic!("expected the child's Added event, got {other:?}"),
    };
    assert!(
        late.pids().contains(&child_pid),
        "the claimed child {child_pid} is in the late pod's cgroup: {:?}",
        late.pids()
    );

    late.stop();
    let mut released = std::collections::BTreeSet::new();
    wait_event(
        &mut events,
        &format!("Removed({late_pid}) and Removed({child_pid}) from their exits"),
        |e| {
            if let TargetEvent::Removed(pid) = e {
                released.insert(*pid);
            }
            released.contains(&late_pid) && released.contains(&child_pid)
        },
    )
    .await;
    early.stop();

    shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(10), task).await;
    assert!(
        matches!(stopped, Ok(Ok(Ok(())))),
        "discovery stops cleanly on shutdown: {stopped:?}"
    );
}
