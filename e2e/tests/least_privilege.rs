//! Least privilege, proven on the real node: every capability and pod
//! setting the operator renders for the probe (see `probe_capabilities` in
//! `operator/src/instrumentation/build.rs`) is taken away once, and the
//! probe is shown to fail without it. Everything else it used to ask for
//! (BPF, PERFMON, SYS_RESOURCE, the host mounts of
//! /sys/kernel/btf, /sys/kernel/tracing, /sys/kernel/security, /sys/fs/bpf,
//! /proc and cgroupfs, an unconfined seccomp profile) is gone, and the
//! baseline here — the DaemonSets exactly as rendered, seccomp
//! `RuntimeDefault` — traces Go and Python apps that run as a non-root user.
//!
//! The variants patch the rendered DaemonSets with the operator scaled to
//! zero (it would put them back), one at a time:
//!
//! | Taken away | Expected failure |
//! |---|---|
//! | `SYS_ADMIN`, replaced by `BPF` + `PERFMON` (Go, Python) | the Go probe loads but refuses every process (uprobe `perf_event_open` EACCES: `attach_failed`); the Python probe, on a node without tracefs, exits with its tracefs error (it cannot mount one privately) |
//! | `SYS_PTRACE` (Go, Python) | an app running as another user is never instrumented, while a root app with no capabilities (the marker) still is |
//! | `DAC_READ_SEARCH` (Python) | pod resources cannot read the `/proc/<pid>/io` (mode 0400) of a pod's processes that run as another user: the probe says so (disk bytes of v1/hybrid hosts; the ground truth is in `e2e/tests/views.rs`) |
//! | `hostPID` | the probe exits: it runs in a PID namespace of its own |
//!
//! Absence of spans is proven against the marker, served by the same probe
//! (one exporter, in order): once the marker's span for a later request
//! arrived, the subject's would have too.

use std::collections::BTreeMap;
use std::time::Duration;

use ferrotel_e2e::stack::{self, App, AppPod};
use ferrotel_e2e::{Collector, TestBed, wait_for};

const TIMEOUT: Duration = Duration::from_secs(90);

/// How many spans pod `pod` exported for requests mentioning `marker`.
fn spans_for(backend: &Collector, pod: &str, marker: &str) -> usize {
    stack::pod_spans(backend, pod, marker)
        .unwrap_or_else(|e| panic!("reading the backend's spans failed: {e}"))
        .len()
}

fn next_id() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(200_000);
    NEXT.fetch_add(1, Ordering::SeqCst).to_string()
}

/// The request path an app of `language` records for request `id`.
fn path(language: &str, id: &str) -> String {
    match language {
        "go" => format!("/api/items/{id}"),
        _ => format!("/shop/{id}"),
    }
}

async fn get(addr: &str, path: &str) {
    if let Err(e) = stack::http_get(addr, path).await {
        panic!("GET http://{addr}{path} failed: {e}");
    }
}

/// Requests to `subject`, then to `marker`, until the marker's span of a
/// request made after the subject's arrived; returns how many spans the
/// subject exported for its requests.
async fn subject_spans_after_marker(
    backend: &Collector,
    language: &str,
    subject: &AppPod,
    marker: &AppPod,
) -> usize {
    let subject_ids: Vec<String> = (0..3).map(|_| next_id()).collect();
    for id in &subject_ids {
        get(&subject.addr(), &path(language, id)).await;
    }
    let sent = std::sync::Mutex::new(Vec::new());
    wait_for(
        &format!("a span of the marker {}", marker.pod),
        TIMEOUT,
        || async {
            let id = next_id();
            get(&marker.addr(), &path(language, &id)).await;
            sent.lock().expect("ids").push(id);
            let ids = sent.lock().expect("ids").clone();
            if ids
                .iter()
                .any(|id| spans_for(backend, &marker.pod, &path(language, id)) > 0)
            {
                Ok(())
            } else {
                Err("not yet".to_string())
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    subject_ids
        .iter()
        .map(|id| spans_for(backend, &subject.pod, &path(language, id)))
        .sum()
}

/// Runs `kubectl <args>` against the bed; its stdout. Panics, with
/// kubectl's stderr, if it fails.
fn kubectl(bed: &TestBed, args: &[&str]) -> Vec<u8> {
    let out = bed
        .kubectl()
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running kubectl {args:?}: {e}"));
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `kubectl patch daemonset --type=json` with `ops`.
fn patch_daemon_set(bed: &TestBed, namespace: &str, name: &str, ops: serde_json::Value) {
    let ops = ops.to_string();
    kubectl(
        bed,
        &[
            "patch",
            "daemonset",
            name,
            "-n",
            namespace,
            "--type=json",
            "-p",
            &ops,
        ],
    );
}

/// Sets the probe container's added capabilities of DaemonSet `name`.
fn set_capabilities(bed: &TestBed, namespace: &str, name: &str, caps: &[&str]) {
    patch_daemon_set(
        bed,
        namespace,
        name,
        serde_json::json!([{"op": "replace",
            "path": "/spec/template/spec/containers/0/securityContext/capabilities/add",
            "value": caps}]),
    );
}

/// Waits until a pod of the probe for `language` logs `text` (in its
/// current or previous run).
async fn wait_probe_log(bed: &TestBed, namespace: &str, language: &str, text: &str) {
    let client = bed.client();
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(client, namespace);
    wait_for(
        &format!("the {language} probe to log {text:?}"),
        TIMEOUT,
        || {
            let pods = pods.clone();
            async move {
                let list = pods
                    .list(
                        &kube::api::ListParams::default()
                            .labels(&format!("ferrotel.io/probe-language={language}")),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                let mut seen = Vec::new();
                for pod in list.items {
                    let name = pod.metadata.name.clone().unwrap_or_default();
                    for previous in [false, true] {
                        let logs = stack::pod_logs(bed, namespace, &name, previous);
                        if logs.contains(text) {
                            return Ok(());
                        }
                        seen.push(format!("{name}: {}", logs.lines().last().unwrap_or("")));
                    }
                }
                Err(seen.join(" | "))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// Whether this host has tracefs mounted where the probe looks (a mounted
/// tracefs has entries; the bare mount point is empty).
fn host_has_tracefs() -> bool {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .any(|dir| std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_capability_and_pod_setting_the_probe_keeps_is_one_it_fails_without() {
    let stack::RealStack {
        images,
        backend,
        observability: obs,
        bed,
    } = stack::RealStack::start()
        .await
        .unwrap_or_else(|e| panic!("the stack on a real node: {e}"));
    let client = bed.client();

    // Subjects run as the images' non-root user; markers as root with no
    // capability, which a probe without SYS_PTRACE may still inspect.
    let apps = bed.create_namespace("apps").await;
    stack::annotate_namespace(&client, &apps, "ferrotel.io/instrument", Some("true"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let go = |name: &str, run_as_root: bool| App {
        name: name.to_owned(),
        image: images.backend.reference.clone(),
        args: vec!["--addr=0.0.0.0:8080".into(), "--error-rate=0".into()],
        port: 8080,
        run_as_root,
        ..App::default()
    };
    let deploy = |app: App| {
        let (client, apps) = (client.clone(), apps.clone());
        async move {
            stack::deploy_app(&client, &apps, &app)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        }
    };
    let go_subject = deploy(go("go-subject", false)).await;
    let go_marker = deploy(go("go-marker", true)).await;
    let py = |name: &str, run_as_root: bool| App {
        name: name.to_owned(),
        image: images.frontend.reference.clone(),
        args: vec![
            "--listen=0.0.0.0:8000".into(),
            format!("--backend={}", go_marker.service_url()),
        ],
        port: 8000,
        run_as_root,
        labels: BTreeMap::new(),
        ..App::default()
    };
    let py_subject = deploy(py("py-subject", false)).await;
    let py_marker = deploy(py("py-marker", true)).await;
    let pairs = [
        ("go", &go_subject, &go_marker),
        ("python", &py_subject, &py_marker),
    ];
    let rendered: BTreeMap<&str, Vec<String>> = ["go", "python"]
        .into_iter()
        .map(|language| {
            let out = kubectl(
                &bed,
                &[
                    "get",
                    "daemonset",
                    &format!("default-probe-{language}"),
                    "-n",
                    &obs,
                    "-o",
                    "jsonpath={.spec.template.spec.containers[0].securityContext.capabilities.add}",
                ],
            );
            let caps: Vec<String> = serde_json::from_slice(&out).unwrap_or_else(|e| {
                panic!(
                    "rendered capabilities of the {language} probe: {e}: {}",
                    String::from_utf8_lossy(&out)
                )
            });
            (language, caps)
        })
        .collect();

    // Baseline: as rendered, both probes trace the non-root subjects.
    for (language, subject, marker) in pairs {
        let n = subject_spans_after_marker(&backend, language, subject, marker).await;
        assert_eq!(
            n, 3,
            "as rendered ({:?}), the {language} probe traces {} (non-root): one span per request",
            rendered[language], subject.pod
        );
    }

    // The operator would undo the patches below.
    kubectl(
        &bed,
        &[
            "scale",
            "deployment",
            "-n",
            stack::CHART_NAMESPACE,
            "-l",
            "app.kubernetes.io/component=operator",
            "--replicas=0",
        ],
    );

    let without = |language: &str, cap: &str| -> Vec<String> {
        let caps = &rendered[language];
        assert!(
            caps.iter().any(|c| c == cap),
            "the {language} probe is rendered with {cap}: {caps:?}"
        );
        caps.iter().filter(|c| *c != cap).cloned().collect()
    };
    let restore = |language: &str| {
        let caps: Vec<&str> = rendered[language].iter().map(String::as_str).collect();
        set_capabilities(&bed, &obs, &format!("default-probe-{language}"), &caps);
    };

    // SYS_ADMIN, replaced by what loading eBPF takes otherwise (BPF +
    // PERFMON): the Go probe loads, and its uprobes are refused; the Python
    // probe, on a node without tracefs, cannot mount its own.
    for language in ["go", "python"] {
        if language == "python" && host_has_tracefs() {
            // With tracefs on the node, BPF + PERFMON are enough for the
            // socket-level set: nothing to show here.
            continue;
        }
        let mut caps = without(language, "SYS_ADMIN");
        caps.extend(["BPF".to_owned(), "PERFMON".to_owned()]);
        let caps: Vec<&str> = caps.iter().map(String::as_str).collect();
        set_capabilities(&bed, &obs, &format!("default-probe-{language}"), &caps);
        match language {
            // The refusal category of a uprobe that could not be attached
            // (perf_event_open on the uprobe PMU: EACCES without SYS_ADMIN).
            "go" => wait_probe_log(&bed, &obs, language, "attach_failed").await,
            _ => wait_probe_log(&bed, &obs, language, "tracefs is not mounted").await,
        }
        restore(language);
        stack::wait_probe_ready(&client, &obs, "default", language)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    // SYS_PTRACE.
    for (language, subject, marker) in pairs {
        let caps = without(language, "SYS_PTRACE");
        let caps: Vec<&str> = caps.iter().map(String::as_str).collect();
        set_capabilities(&bed, &obs, &format!("default-probe-{language}"), &caps);
        stack::wait_probe_ready(&client, &obs, "default", language)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let n = subject_spans_after_marker(&backend, language, subject, marker).await;
        assert_eq!(
            n, 0,
            "without SYS_PTRACE the {language} probe cannot inspect {} (another user's process), yet it exported {n} spans",
            subject.pod
        );
        restore(language);
        stack::wait_probe_ready(&client, &obs, "default", language)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    // DAC_READ_SEARCH: a pod's disk bytes on this hybrid host.
    let caps = without("python", "DAC_READ_SEARCH");
    let caps: Vec<&str> = caps.iter().map(String::as_str).collect();
    set_capabilities(&bed, &obs, "default-probe-python", &caps);
    wait_probe_log(&bed, &obs, "python", "Cannot read /proc/<pid>/io").await;
    restore("python");
    stack::wait_probe_ready(&client, &obs, "default", "python")
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // hostPID.
    patch_daemon_set(
        &bed,
        &obs,
        "default-probe-go",
        serde_json::json!([{"op": "replace", "path": "/spec/template/spec/hostPID", "value": false}]),
    );
    wait_probe_log(&bed, &obs, "go", "runs in a PID namespace of its own").await;
}
