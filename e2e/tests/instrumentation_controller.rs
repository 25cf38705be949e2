//! The Instrumentation controller against the real test bed (kube-apiserver,
//! kube-controller-manager, kube-scheduler, kwok nodes): the samples roll out
//! one probe DaemonSet per language on every node; status follows namespace
//! and pod opt-in annotations within seconds without restarting pods; a
//! missing collector degrades without rendering a broken endpoint; a child the
//! API server refuses shows in status with its message; removing a language
//! prunes; deleting the CR takes its probes out of the probes'
//! ClusterRoleBinding; the stored spec stays what was applied (GitOps); the
//! probe's ServiceAccount can do exactly what the probe needs.
//!
//! One scenario, run in order: this test binary has its own control plane and
//! opt-in is cluster-wide, so parallel scenarios would see each other's
//! Instrumentations (`"true"` would become ambiguous).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferrotel_e2e::{TestBed, wait_for};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(90);
/// The promise: status follows an annotation change within 5 s.
const OPT_IN_LATENCY: Duration = Duration::from_secs(5);
const NS: &str = "otel";
const APPS: &str = "shop";

fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

use ferrotel_e2e::operator::{OperatorProcess, kubectl, kubectl_json, probe_binding_subjects};

fn items(list: &Value) -> Vec<Value> {
    list["items"].as_array().cloned().unwrap_or_default()
}

fn names(list: &Value) -> Vec<String> {
    items(list)
        .iter()
        .filter_map(|i| i["metadata"]["name"].as_str().map(str::to_owned))
        .collect()
}

fn condition<'a>(inst: &'a Value, type_: &str) -> Option<&'a Value> {
    inst["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

fn language_status<'a>(inst: &'a Value, language: &str) -> Option<&'a Value> {
    inst["status"]["languages"]
        .as_array()?
        .iter()
        .find(|l| l["language"] == language)
}

struct Operator {
    inner: OperatorProcess,
    _dir: tempfile::TempDir,
}

impl Operator {
    fn start(bed: &TestBed) -> Operator {
        let dir = tempfile::tempdir().expect("temp dir");
        let args: Vec<String> = [
            "--log-format",
            "text",
            "--log-level",
            "info,ferrotel_operator=debug",
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .collect();
        let inner = OperatorProcess::start(
            bed.kubeconfig(),
            &args,
            &[],
            &dir.path().join("operator.log"),
        )
        .unwrap_or_else(|e| panic!("start the operator: {e}"));
        Operator { inner, _dir: dir }
    }

    fn alive(&mut self) -> Result<(), String> {
        self.inner.alive()
    }

    /// Reconciles of Instrumentations that have finished (the duration
    /// histogram records when a reconcile ends).
    async fn finished_reconciles(&self) -> Result<u64, String> {
        let body = self.inner.metrics().await?;
        body.lines()
            .find(|l| {
                l.starts_with("ferrotel_operator_reconcile_duration_seconds_count")
                    && l.contains("controller=\"instrumentation\"")
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map(|v| v as u64)
            .ok_or_else(|| format!("no instrumentation reconcile count in /metrics:\n{body}"))
    }

    fn tail(&self) -> String {
        self.inner.tail()
    }
}

/// Waits until `check` accepts the Instrumentation `otel/default`.
async fn wait_instrumentation<T>(
    bed: &TestBed,
    operator: &mut Operator,
    what: &str,
    timeout: Duration,
    check: impl Fn(&Value) -> Result<T, String>,
) -> T {
    let result = wait_for(what, timeout, || {
        let alive = operator.alive();
        let inst = kubectl_json(bed, &["get", "instrumentation", "default", "-n", NS]);
        let result = alive.and(inst).and_then(|i| check(&i));
        async move { result }
    })
    .await;
    result.unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", operator.tail()))
}

fn probe_daemon_sets(bed: &TestBed) -> Result<Value, String> {
    kubectl_json(
        bed,
        &[
            "get",
            "daemonsets",
            "-n",
            NS,
            "-l",
            // The sample's probes only (a second Instrumentation's children
            // are garbage-collected asynchronously after it is deleted).
            "app.kubernetes.io/name=ferrotel-probe,app.kubernetes.io/instance=default",
        ],
    )
}

fn create_pod(
    bed: &TestBed,
    namespace: &str,
    name: &str,
    node: &str,
    annotations: &[(&str, &str)],
) {
    let annotations: serde_json::Map<String, Value> = annotations
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
        .collect();
    let pod = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "registry.invalid/shop/app:1"}]},
    });
    kubectl(
        bed,
        &["apply", "--server-side", "-f", "-"],
        Some(&pod.to_string()),
    )
    .unwrap_or_else(|e| panic!("create pod {namespace}/{name}: {e}"));
}

fn pod_uids(bed: &TestBed, namespaces: &[&str]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for &ns in namespaces {
        let pods = kubectl_json(bed, &["get", "pods", "-n", ns]).unwrap_or_else(|e| panic!("{e}"));
        for pod in items(&pods) {
            out.push((
                format!(
                    "{ns}/{}",
                    pod["metadata"]["name"].as_str().unwrap_or_default()
                ),
                pod["metadata"]["uid"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            ));
        }
    }
    out.sort();
    out
}

/// Matched pods and namespaces of one language, from status.
fn matched(inst: &Value, language: &str) -> Result<(u64, Vec<String>), String> {
    let l = language_status(inst, language)
        .ok_or_else(|| format!("no status for {language}: {}", inst["status"]))?;
    let namespaces = l["matchedNamespaces"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    Ok((l["matchedPods"].as_u64().unwrap_or(0), namespaces))
}

/// Waits for the matched pods/namespaces of both languages; returns how long it took.
async fn expect_matches(
    bed: &TestBed,
    operator: &mut Operator,
    what: &str,
    pods: u64,
    namespaces: &[&str],
) -> Duration {
    let start = Instant::now();
    let want: Vec<String> = namespaces.iter().map(|s| (*s).to_owned()).collect();
    wait_instrumentation(bed, operator, what, OPT_IN_LATENCY, |inst| {
        for language in ["go", "python"] {
            let got = matched(inst, language)?;
            if got != (pods, want.clone()) {
                return Err(format!(
                    "{language}: matched {got:?}, want ({pods}, {want:?})"
                ));
            }
        }
        Ok(())
    })
    .await;
    let took = start.elapsed();
    eprintln!("status showed '{what}' after {took:?}");
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instrumentation_samples_roll_out_probes_follow_opt_in_and_clean_up() {
    let bed = TestBed::shared();
    let nodes = bed.node_names().to_vec();
    assert!(
        nodes.len() >= 2,
        "the scenario needs several nodes, test bed has {nodes:?}"
    );

    // CRDs (server-side, idempotent), then wait until they are served.
    let crds = repo_path("crds");
    kubectl(
        bed,
        &[
            "apply",
            "--server-side",
            "-f",
            crds.to_str().expect("utf-8 path"),
        ],
        None,
    )
    .unwrap_or_else(|e| panic!("apply CRDs: {e}"));
    kubectl(
        bed,
        &[
            "wait",
            "--for",
            "condition=Established",
            "--timeout=60s",
            "crd/instrumentations.ferrotel.io",
            "crd/telemetrycollectors.ferrotel.io",
        ],
        None,
    )
    .unwrap_or_else(|e| panic!("CRDs not established: {e}"));

    // The probes' ClusterRole and ClusterRoleBinding ship with the install;
    // the operator only keeps the binding's subjects.
    for file in ["probe_role.yaml", "probe_role_binding.yaml"] {
        let path = repo_path(&format!("config/rbac/{file}"));
        kubectl(
            bed,
            &[
                "apply",
                "--server-side",
                "-f",
                path.to_str().expect("utf-8 path"),
            ],
            None,
        )
        .unwrap_or_else(|e| panic!("apply config/rbac/{file}: {e}"));
    }

    let mut operator = Operator::start(bed);

    // 1. The Instrumentation before its collector: Degraded, nothing rendered.
    let sample = |f: &str| {
        repo_path(&format!("config/samples/{f}"))
            .to_str()
            .expect("utf-8 path")
            .to_owned()
    };
    for file in ["namespace.yaml", "instrumentation.yaml"] {
        kubectl(bed, &["apply", "--server-side", "-f", &sample(file)], None)
            .unwrap_or_else(|e| panic!("apply {file}: {e}"));
    }
    let message = wait_instrumentation(
        bed,
        &mut operator,
        "Degraded=CollectorNotFound",
        TIMEOUT,
        |inst| match condition(inst, "Degraded") {
            Some(c) if c["status"] == "True" && c["reason"] == "CollectorNotFound" => {
                Ok(c["message"].as_str().unwrap_or_default().to_owned())
            }
            other => Err(format!("Degraded is {other:?}")),
        },
    )
    .await;
    assert!(
        message.contains("\"otel-collector\"") && message.contains("create the TelemetryCollector"),
        "the message names the collector and the fix: {message}"
    );
    let ds = probe_daemon_sets(bed).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        items(&ds).is_empty(),
        "no DaemonSet may be created with a broken endpoint: {:?}",
        names(&ds)
    );
    let events = kubectl_json(
        bed,
        &[
            "get",
            "events",
            "-n",
            NS,
            "--field-selector",
            "reason=CollectorNotFound",
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !items(&events).is_empty(),
        "a Warning Event explains the problem"
    );

    // 2. The collector appears: the Instrumentation heals and rolls out.
    kubectl(
        bed,
        &[
            "apply",
            "--server-side",
            "-f",
            &sample("telemetrycollector.yaml"),
        ],
        None,
    )
    .unwrap_or_else(|e| panic!("apply the TelemetryCollector: {e}"));
    let node_count = i64::try_from(nodes.len()).expect("few nodes");
    let endpoint = wait_instrumentation(
        bed,
        &mut operator,
        "both probe DaemonSets ready on every node",
        TIMEOUT,
        |inst| {
            for language in ["go", "python"] {
                let l = language_status(inst, language)
                    .ok_or_else(|| format!("no {language} status: {}", inst["status"]))?;
                let counts = (
                    l["desired"].as_i64(),
                    l["ready"].as_i64(),
                    l["updated"].as_i64(),
                );
                let want = (Some(node_count), Some(node_count), Some(node_count));
                if counts != want {
                    return Err(format!(
                        "{language}: desired/ready/updated {counts:?}, want {want:?}"
                    ));
                }
            }
            match condition(inst, "Ready") {
                Some(c) if c["status"] == "True" => {}
                other => return Err(format!("Ready is {other:?}")),
            }
            if condition(inst, "Degraded").is_some_and(|c| c["status"] == "True") {
                return Err(format!("still Degraded: {:?}", condition(inst, "Degraded")));
            }
            Ok(inst["status"]["exporter"]["endpoint"]
                .as_str()
                .unwrap_or_default()
                .to_owned())
        },
    )
    .await;
    let collector = kubectl_json(
        bed,
        &["get", "telemetrycollector", "otel-collector", "-n", NS],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let grpc = collector["status"]["endpoints"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["protocol"] == "grpc"))
        .and_then(|e| e["url"].as_str())
        .unwrap_or_else(|| {
            panic!(
                "the collector reports a grpc endpoint: {}",
                collector["status"]
            )
        });
    assert_eq!(
        endpoint, grpc,
        "the probes export to the collector's in-cluster gRPC endpoint"
    );
    let ds = probe_daemon_sets(bed).unwrap_or_else(|e| panic!("{e}"));
    let mut ds_names = names(&ds);
    ds_names.sort();
    assert_eq!(ds_names, ["default-probe-go", "default-probe-python"]);
    for language in ["go", "python"] {
        let pods = kubectl_json(
            bed,
            &[
                "get",
                "pods",
                "-n",
                NS,
                "-l",
                &format!("ferrotel.io/probe-language={language}"),
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut ready_nodes: Vec<String> = items(&pods)
            .iter()
            .filter(|p| {
                p["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
            })
            .filter_map(|p| p["spec"]["nodeName"].as_str().map(str::to_owned))
            .collect();
        ready_nodes.sort();
        let mut want = nodes.clone();
        want.sort();
        assert_eq!(
            ready_nodes, want,
            "one Ready {language} probe pod on every node"
        );
        let cm = kubectl_json(
            bed,
            &[
                "get",
                "configmap",
                &format!("default-probe-{language}"),
                "-n",
                NS,
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let config = ferrotel_api::probe_config::ProbeConfig::from_yaml(
            cm["data"]["probe.yaml"].as_str().unwrap_or_default(),
        )
        .unwrap_or_else(|e| panic!("the probe config parses: {e}"));
        assert_eq!(
            config.exporter.endpoint, grpc,
            "{language} probe config carries the resolved endpoint"
        );
    }

    // 3. Opt-in follows annotations within seconds; no pod restarts.
    // A fresh namespace (its default ServiceAccount must exist before pods).
    let payments = bed.create_namespace("payments").await;
    let payments = payments.as_str();
    create_pod(bed, APPS, "web", &nodes[0], &[]);
    create_pod(bed, payments, "api", &nodes[1], &[]);
    create_pod(
        bed,
        payments,
        "ledger",
        &nodes[0],
        &[("ferrotel.io/instrument", "false")],
    );
    expect_matches(
        bed,
        &mut operator,
        "shop matched (sample namespace opted in)",
        1,
        &[APPS],
    )
    .await;
    let uids_before = pod_uids(bed, &[APPS, payments]);

    kubectl(
        bed,
        &[
            "annotate",
            "namespace",
            payments,
            "ferrotel.io/instrument=true",
        ],
        None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let t1 = expect_matches(
        bed,
        &mut operator,
        "payments opted in, ledger opted out",
        2,
        &[payments, APPS],
    )
    .await;

    kubectl(
        bed,
        &[
            "annotate",
            "pod",
            "api",
            "-n",
            payments,
            "ferrotel.io/instrument=false",
        ],
        None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let t2 = expect_matches(
        bed,
        &mut operator,
        "api opted out by pod annotation (payments stays listed: opted in as a whole)",
        1,
        &[payments, APPS],
    )
    .await;

    kubectl(
        bed,
        &[
            "annotate",
            "pod",
            "api",
            "-n",
            payments,
            "ferrotel.io/instrument-",
        ],
        None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    expect_matches(bed, &mut operator, "api back in", 2, &[payments, APPS]).await;

    kubectl(
        bed,
        &["annotate", "namespace", payments, "ferrotel.io/instrument-"],
        None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let t3 = expect_matches(
        bed,
        &mut operator,
        "payments annotation removed",
        1,
        &[APPS],
    )
    .await;
    eprintln!("opt-in latencies: namespace {t1:?}, pod {t2:?}, removal {t3:?}");

    // A pod event that changes nothing is re-evaluated but writes no status.
    let before = kubectl_json(bed, &["get", "instrumentation", "default", "-n", NS])
        .unwrap_or_else(|e| panic!("{e}"));
    let reconciles = operator
        .finished_reconciles()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let bystanders = bed.create_namespace("bystanders").await;
    create_pod(bed, &bystanders, "idle", &nodes[1], &[]);
    wait_for(
        "the operator to re-evaluate after the bystander pod",
        TIMEOUT,
        || {
            let count = operator.finished_reconciles();
            async move {
                match count.await? {
                    n if n > reconciles => Ok(()),
                    n => Err(format!("{n} reconciles finished, was {reconciles}")),
                }
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", operator.tail()));
    let after = kubectl_json(bed, &["get", "instrumentation", "default", "-n", NS])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        after["metadata"]["resourceVersion"], before["metadata"]["resourceVersion"],
        "nothing changed for this Instrumentation, so its status must not be written"
    );
    assert_eq!(
        pod_uids(bed, &[APPS, payments]),
        uids_before,
        "no pod was recreated by opting in or out"
    );
    let restarts: Vec<Value> = [APPS, payments]
        .iter()
        .flat_map(|ns| {
            items(&kubectl_json(bed, &["get", "pods", "-n", ns]).unwrap_or_else(|e| panic!("{e}")))
        })
        .flat_map(|p| {
            p["status"]["containerStatuses"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter(|c| c["restartCount"].as_i64().unwrap_or(0) > 0)
        .collect();
    assert!(restarts.is_empty(), "no container restarted: {restarts:?}");

    // 3b. A second Instrumentation makes the sample namespace's "true"
    // ambiguous: both report it, nothing is matched; deleting it heals.
    let other = format!(
        "apiVersion: ferrotel.io/v1alpha1\nkind: Instrumentation\nmetadata: {{name: other, namespace: {NS}}}\n\
         spec: {{languages: [go], exporter: {{endpoint: \"http://collector.example:4317\"}}}}\n"
    );
    kubectl(bed, &["apply", "--server-side", "-f", "-"], Some(&other))
        .unwrap_or_else(|e| panic!("apply the second Instrumentation: {e}"));
    let message = wait_instrumentation(
        bed,
        &mut operator,
        "Degraded=AmbiguousInstrumentation",
        TIMEOUT,
        |inst| {
            let matched_go = matched(inst, "go")?;
            match condition(inst, "Degraded") {
                Some(c) if c["reason"] == "AmbiguousInstrumentation" && matched_go.0 == 0 => {
                    Ok(c["message"].as_str().unwrap_or_default().to_owned())
                }
                other => Err(format!("Degraded is {other:?}, go matched {matched_go:?}")),
            }
        },
    )
    .await;
    assert!(
        message.contains("otel/default")
            && message.contains("otel/other")
            && message.contains("\"shop\""),
        "the message names the namespace and both candidates: {message}"
    );
    kubectl(
        bed,
        &[
            "delete",
            "instrumentation",
            "other",
            "-n",
            NS,
            "--wait=true",
            "--timeout=60s",
        ],
        None,
    )
    .unwrap_or_else(|e| panic!("delete the second Instrumentation: {e}"));
    wait_instrumentation(
        bed,
        &mut operator,
        "healed after the second one is gone",
        TIMEOUT,
        |inst| match (condition(inst, "Degraded"), matched(inst, "go")?) {
            (Some(c), (1, _)) if c["status"] == "False" => Ok(()),
            (c, m) => Err(format!("Degraded {c:?}, go matched {m:?}")),
        },
    )
    .await;

    // The schema (types, enums, bounds, CEL) rejects what it can say is
    // wrong, naming the field and the bound or the fix.
    for (spec, expected) in [
        (
            "{languages: [go], exporter: {endpoint: \"http://a:4317\", collectorRef: {name: x}}}",
            "set exactly one of exporter.collectorRef and exporter.endpoint",
        ),
        (
            "{languages: [go], exporter: {endpoint: \"http://a:4317\"}, sampler: {type: traceidratio, ratio: \"1.5\"}}",
            "sampler.ratio must be a decimal",
        ),
        (
            "{languages: [go], exporter: {endpoint: \"http://a:4317\"}, go: {ringBufferBytes: 5000}}",
            "ringBufferBytes must be a power of two",
        ),
        (
            "{languages: [go], exporter: {endpoint: \"http://a:4317\"}, go: {maxPayloadBytes: 8192}}",
            "should be less than or equal to 4096",
        ),
        (
            "{languages: [python], exporter: {endpoint: \"http://a:4317\"}, python: {grpc: true}}",
            "python.grpc is not supported",
        ),
        (
            "{languages: [python], exporter: {endpoint: \"http://a:4317\"}, python: {http: false}}",
            "python.http cannot be false",
        ),
        (
            "{languages: [go], exporter: {endpoint: \"http://a:4317\"}, propagators: [baggage], propagation: {inject: true}}",
            "baggage alone carries no trace",
        ),
        (
            "{languages: [go], exporter: {endpoint: \"http://a:4317\"}, views: {serviceGraph: {peers: everywhere}}}",
            "Unsupported value: \"everywhere\"",
        ),
        (
            "{languages: [go], exporter: {endpoint: \"http://a:4317\"}, views: {serviceGraph: {maxEdges: 0}}}",
            "spec.views.serviceGraph.maxEdges: Invalid value: 0: spec.views.serviceGraph.maxEdges in body should be greater than or equal to 1",
        ),
        (
            "{languages: [go], exporter: {endpoint: \"http://a:4317\"}, views: {serviceGraph: {maxEdges: 10001}}}",
            "maxEdges in body should be less than or equal to 10000",
        ),
        (
            "{languages: [go], exporter: {endpoint: \"http://a:4317\"}, views: {podResources: {intervalMillis: 999}}}",
            "intervalMillis in body should be greater than or equal to 1000",
        ),
        (
            "{languages: [go], exporter: {endpoint: \"http://a:4317\"}, views: {podResources: {intervalMillis: 60001}}}",
            "intervalMillis in body should be less than or equal to 60000",
        ),
        (
            "{languages: [go], exporter: {endpoint: \"http://a:4317\"}, views: {tcpHealth: {enabled: \"yes\"}}}",
            ".spec.views.tcpHealth.enabled: expected boolean",
        ),
    ] {
        let bad = format!(
            "apiVersion: ferrotel.io/v1alpha1\nkind: Instrumentation\nmetadata: {{name: bad, namespace: {NS}}}\nspec: {spec}\n"
        );
        match kubectl(
            bed,
            &["apply", "--server-side", "--dry-run=server", "-f", "-"],
            Some(&bad),
        ) {
            Ok(out) => panic!("the API server accepted an invalid spec {spec}: {out}"),
            Err(e) => assert!(
                e.contains(expected),
                "rejection of {spec} should say {expected:?}: {e}"
            ),
        }
    }

    // ... and accepts what injection can use: the default formats, or a
    // list with a trace format.
    for spec in [
        "{languages: [go], exporter: {endpoint: \"http://a:4317\"}, propagation: {inject: true, join: true}}",
        "{languages: [go], exporter: {endpoint: \"http://a:4317\"}, propagators: [b3, baggage], propagation: {inject: true}}",
        "{languages: [go], exporter: {endpoint: \"http://a:4317\"}, propagators: [baggage], propagation: {join: true}}",
        // Every views field at its bounds.
        "{languages: [go], exporter: {endpoint: \"http://a:4317\"}, views: {serviceGraph: {enabled: false, peers: node, maxEdges: 1}, podResources: {enabled: false, allPods: true, intervalMillis: 1000}, tcpHealth: {enabled: false}}}",
        "{languages: [go], exporter: {endpoint: \"http://a:4317\"}, views: {serviceGraph: {peers: cluster, maxEdges: 10000}, podResources: {intervalMillis: 60000}}}",
    ] {
        let good = format!(
            "apiVersion: ferrotel.io/v1alpha1\nkind: Instrumentation\nmetadata: {{name: good, namespace: {NS}}}\nspec: {spec}\n"
        );
        if let Err(e) = kubectl(
            bed,
            &["apply", "--server-side", "--dry-run=server", "-f", "-"],
            Some(&good),
        ) {
            panic!("the API server refused a valid spec {spec}: {e}");
        }
    }

    // 4. GitOps: the stored spec is the applied manifest, and applying the
    // same file again (server-side dry run) changes nothing.
    let stored = kubectl_json(bed, &["get", "instrumentation", "default", "-n", NS])
        .unwrap_or_else(|e| panic!("{e}"));
    let manifest: Value = serde_yaml::from_str(
        &std::fs::read_to_string(sample("instrumentation.yaml")).expect("read the sample"),
    )
    .expect("the sample is YAML");
    assert_eq!(
        stored["spec"], manifest["spec"],
        "the operator must not write (or default) the spec"
    );
    let dry = kubectl_json(
        bed,
        &[
            "apply",
            "--server-side",
            "--dry-run=server",
            "-f",
            &sample("instrumentation.yaml"),
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        dry["spec"], stored["spec"],
        "a re-apply would not change the spec"
    );
    assert_eq!(
        dry["metadata"]["generation"], stored["metadata"]["generation"],
        "a re-apply would not bump the generation (ArgoCD stays in sync)"
    );
    let diff = kubectl(
        bed,
        &[
            "diff",
            "--server-side",
            "-f",
            &sample("instrumentation.yaml"),
        ],
        None,
    );
    assert!(
        diff.is_ok(),
        "kubectl diff --server-side shows drift: {diff:?}"
    );

    // 5. The probe's ServiceAccount: pods, namespaces and Services (their
    //    ClusterIPs name service-graph peers), read-only, and `get` on the
    //    ReplicaSets/Jobs that own pods; nothing else.
    for language in ["go", "python"] {
        let sa = format!("system:serviceaccount:{NS}:default-probe-{language}");
        for (verb_resource, allowed) in [
            (&["list", "pods", "--all-namespaces"][..], true),
            (&["watch", "pods", "--all-namespaces"][..], true),
            (&["list", "namespaces"][..], true),
            (&["watch", "namespaces"][..], true),
            (&["list", "services", "--all-namespaces"][..], true),
            (&["watch", "services", "--all-namespaces"][..], true),
            (&["create", "services", "-n", APPS][..], false),
            (&["list", "endpoints", "--all-namespaces"][..], false),
            // Lists and watches only: the probe never gets one object.
            (&["get", "namespaces"][..], false),
            (&["get", "pods", "-n", APPS][..], false),
            // Owners, to name a pod's Deployment/CronJob: get only.
            (&["get", "replicasets.apps", "-n", APPS][..], true),
            (&["get", "jobs.batch", "-n", APPS][..], true),
            (&["list", "replicasets.apps", "--all-namespaces"][..], false),
            (&["watch", "jobs.batch", "--all-namespaces"][..], false),
            (&["get", "deployments.apps", "-n", APPS][..], false),
            (&["get", "secrets", "-n", NS][..], false),
            (&["list", "secrets", "--all-namespaces"][..], false),
            (&["create", "pods", "-n", APPS][..], false),
            (&["create", "configmaps", "-n", NS][..], false),
            (&["delete", "pods", "-n", APPS][..], false),
            (
                &["list", "instrumentations.ferrotel.io", "--all-namespaces"][..],
                false,
            ),
        ] {
            let mut args = vec!["auth", "can-i", "--as", &sa];
            args.extend_from_slice(verb_resource);
            let answer = match kubectl(bed, &args, None) {
                Ok(out) => out.trim().to_owned(),
                Err(e) => e,
            };
            let yes = answer.trim() == "yes";
            assert_eq!(
                yes, allowed,
                "{sa} {verb_resource:?}: kubectl auth can-i said {answer:?}"
            );
        }
    }

    // 5b. A child the API server refuses: the Instrumentation says so, in the
    // API server's words, and heals once the spec is fixed.
    let bad_resources = std::fs::read_to_string(sample("instrumentation.yaml"))
        .expect("read the sample")
        .replace(
            "spec:\n",
            "spec:\n  go: {resources: {requests: {memory: 2Gi}, limits: {memory: 1Gi}}}\n",
        );
    assert!(bad_resources.contains("2Gi"), "the sample has a spec: line");
    kubectl(
        bed,
        &["apply", "--server-side", "-f", "-"],
        Some(&bad_resources),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let message = wait_instrumentation(
        bed,
        &mut operator,
        "Degraded=ApplyFailed",
        TIMEOUT,
        |inst| match condition(inst, "Degraded") {
            Some(c) if c["status"] == "True" && c["reason"] == "ApplyFailed" => {
                Ok(c["message"].as_str().unwrap_or_default().to_owned())
            }
            other => Err(format!("Degraded is {other:?}")),
        },
    )
    .await;
    assert!(
        message.contains("failed to apply DaemonSet default-probe-go")
            && message.contains("must be less than or equal to memory limit"),
        "the condition names the child and carries the API server's message: {message}"
    );
    kubectl(
        bed,
        &[
            "apply",
            "--server-side",
            "-f",
            &sample("instrumentation.yaml"),
        ],
        None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    wait_instrumentation(
        bed,
        &mut operator,
        "healed after the fix",
        TIMEOUT,
        |inst| match condition(inst, "Degraded") {
            Some(c) if c["status"] == "False" => Ok(()),
            other => Err(format!("Degraded is {other:?}")),
        },
    )
    .await;

    // 6. Removing a language prunes everything rendered for it.
    let go_only = std::fs::read_to_string(sample("instrumentation.yaml"))
        .expect("read the sample")
        .replace("languages: [go, python]", "languages: [go]");
    assert!(
        go_only.contains("languages: [go]"),
        "the sample lists its languages on one line"
    );
    kubectl(bed, &["apply", "--server-side", "-f", "-"], Some(&go_only))
        .unwrap_or_else(|e| panic!("{e}"));
    let python_children = |bed: &TestBed| -> Result<Vec<String>, String> {
        let namespaced = kubectl_json(
            bed,
            &[
                "get",
                "daemonsets,configmaps,serviceaccounts",
                "-n",
                NS,
                "-l",
                "ferrotel.io/probe-language=python",
            ],
        )?;
        let mut all = names(&namespaced);
        all.extend(
            probe_binding_subjects(bed)?
                .into_iter()
                .filter(|s| s == &format!("{NS}/default-probe-python")),
        );
        // Probe pods go with their DaemonSet (garbage collector).
        Ok(all)
    };
    wait_for(
        "python's DaemonSet, ConfigMap, ServiceAccount and RBAC to be pruned",
        TIMEOUT,
        || {
            let alive = operator.alive();
            let left = python_children(bed);
            async move {
                alive?;
                let left = left?;
                if left.is_empty() {
                    Ok(())
                } else {
                    Err(format!("left: {left:?}"))
                }
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", operator.tail()));
    let ds = probe_daemon_sets(bed).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(names(&ds), ["default-probe-go"], "the go probes stay");
    wait_instrumentation(
        bed,
        &mut operator,
        "status lists only go",
        TIMEOUT,
        |inst| {
            let languages = inst["status"]["languages"].as_array().map(Vec::len);
            if languages == Some(1) {
                Ok(())
            } else {
                Err(format!("languages: {}", inst["status"]["languages"]))
            }
        },
    )
    .await;

    // 7. Deleting the CR: the finalizer takes its probes out of the probes'
    // ClusterRoleBinding, the garbage collector removes the namespaced children.
    assert!(
        probe_binding_subjects(bed)
            .unwrap_or_else(|e| panic!("{e}"))
            .contains(&format!("{NS}/default-probe-go")),
        "the go probe's ServiceAccount is bound before the delete"
    );
    kubectl(
        bed,
        &[
            "delete",
            "instrumentation",
            "default",
            "-n",
            NS,
            "--wait=true",
            "--timeout=60s",
        ],
        None,
    )
    .unwrap_or_else(|e| panic!("delete: {e}\noperator log:\n{}", operator.tail()));
    let left: Vec<String> = probe_binding_subjects(bed)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .filter(|s| s.starts_with(&format!("{NS}/default-")))
        .collect();
    assert!(
        left.is_empty(),
        "the deleted Instrumentation's probes are still bound: {left:?}"
    );
    wait_for(
        "the namespaced children to be garbage-collected",
        TIMEOUT,
        || {
            let left = kubectl_json(
                bed,
                &[
                    "get",
                    "daemonsets,configmaps,serviceaccounts",
                    "-n",
                    NS,
                    "-l",
                    "app.kubernetes.io/name=ferrotel-probe",
                ],
            );
            async move {
                let left = names(&left?);
                if left.is_empty() {
                    Ok(())
                } else {
                    Err(format!("left: {left:?}"))
                }
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    operator
        .alive()
        .unwrap_or_else(|e| panic!("{e}\n{}", operator.tail()));
}
