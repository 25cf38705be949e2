//! The TelemetryCollector controller against the real test bed
//! (kube-apiserver, kube-controller-manager, kube-scheduler, kwok nodes) and
//! the real collector binary.
//!
//! One scenario, run in order on one namespace (the operator runs with
//! `--watch-namespace`, so it cannot touch other tests' objects):
//! the seed sample rolls out (ServiceAccount, hashed ConfigMap, Deployment
//! with Ready pods, Service with 4317/4318, status with image and
//! endpoints, printer columns); the rendered config runs in the real
//! collector and prints telemetrygen's spans; an operator restart writes
//! nothing; a config change rolls a new hash; an invalid change keeps the old
//! one and says why; fixing it recovers; deployment → daemonset prunes the
//! Deployment; deleting the CR lets the garbage collector remove every child.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use ferrotel_api::collector::{TelemetryCollector, TelemetryCollectorStatus};
use ferrotel_e2e::{TestBed, wait_for};
use k8s_openapi::api::{
    apps::v1::{DaemonSet, Deployment},
    core::v1::{ConfigMap, Service, ServiceAccount},
    events::v1::Event,
};
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams},
};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(60);
const NAME: &str = "otel-collector";
const DEFAULT_IMAGE: &str = ferrotel_api::collector::DEFAULT_COLLECTOR_IMAGE;

fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

use ferrotel_e2e::operator::{OperatorProcess, kubectl};

/// The operator as a process, restricted to one namespace (with leader
/// election in it).
type Operator = OperatorProcess;

fn start_operator(bed: &TestBed, namespace: &str, dir: &Path, run: usize) -> Operator {
    let args: Vec<String> = [
        "--watch-namespace",
        namespace,
        "--leader-elect",
        "--leader-elect-namespace",
        namespace,
        "--log-format",
        "text",
        "--log-level",
        "info,ferrotel_operator=debug",
    ]
    .iter()
    .map(|a| (*a).to_owned())
    .collect();
    OperatorProcess::start(
        bed.kubeconfig(),
        &args,
        &[],
        &dir.join(format!("operator-{run}.log")),
    )
    .unwrap_or_else(|e| panic!("start the operator: {e}"))
}

/// A minimal HTTP/1.0 GET (the test crate has no HTTP client).
async fn http_get(addr: &str, path: &str) -> Result<(u16, String), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)
        .await
        .map_err(|e| e.to_string())?;
    let code = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or(format!("bad response: {buf}"))?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

/// Value of a Prometheus sample line (`name{labels} value`).
fn metric_value(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn condition(status: &TelemetryCollectorStatus, type_: &str) -> Option<(String, String, String)> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Waits until `check` accepts the collector's status.
async fn wait_status<T>(
    api: &Api<TelemetryCollector>,
    op: &mut Operator,
    what: &str,
    check: impl Fn(&TelemetryCollector) -> Result<T, String>,
) -> T {
    let res = wait_for(what, TIMEOUT, || {
        let alive = op.alive();
        let api = api.clone();
        let check = &check;
        async move {
            alive?;
            let tc = api.get(NAME).await.map_err(|e| e.to_string())?;
            check(&tc)
        }
    })
    .await;
    res.unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", op.tail()))
}

/// resourceVersions of the CR and its children (any write changes one).
async fn resource_versions(
    collectors: &Api<TelemetryCollector>,
    service_accounts: &Api<ServiceAccount>,
    config_maps: &Api<ConfigMap>,
    deployments: &Api<Deployment>,
    services: &Api<Service>,
    config_map: &str,
) -> Vec<(String, Option<String>)> {
    vec![
        (
            "TelemetryCollector".into(),
            collectors.get(NAME).await.expect("tc").resource_version(),
        ),
        (
            "ServiceAccount".into(),
            service_accounts
                .get(&format!("{NAME}-collector"))
                .await
                .expect("sa")
                .resource_version(),
        ),
        (
            "ConfigMap".into(),
            config_maps
                .get(config_map)
                .await
                .expect("cm")
                .resource_version(),
        ),
        (
            "Deployment".into(),
            deployments
                .get(&format!("{NAME}-collector"))
                .await
                .expect("deploy")
                .resource_version(),
        ),
        (
            "Service".into(),
            services.get(NAME).await.expect("svc").resource_version(),
        ),
    ]
}

fn template_hash(d: &Deployment) -> Option<String> {
    d.spec
        .as_ref()?
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get("ferrotel.io/config-hash")
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_collector_lifecycle_on_the_real_control_plane() {
    let bed = TestBed::shared();
    ferrotel_e2e::stack::install_crds(bed.kubeconfig()).unwrap_or_else(|e| panic!("{e}"));
    let ns = bed.create_namespace("tcol").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let client = bed.client();
    let collectors: Api<TelemetryCollector> = Api::namespaced(client.clone(), &ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), &ns);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let service_accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);

    let mut op = start_operator(bed, &ns, dir.path(), 1);

    // --- The seed sample rolls out.
    let sample = std::fs::read_to_string(repo_path("config/samples/telemetrycollector.yaml"))
        .expect("sample");
    let sample = sample.replace("namespace: otel", &format!("namespace: {ns}"));
    kubectl(bed, &["apply", "--server-side", "-f", "-"], Some(&sample))
        .unwrap_or_else(|e| panic!("{e}"));
    let status = wait_status(
        &collectors,
        &mut op,
        "the seed collector to become Available and fully rolled out",
        |tc| {
            let s = tc.status.clone().ok_or("no status yet")?;
            // Rolled out too, so no controller still updates the Deployment's
            // status when the restart check below compares resourceVersions.
            match (condition(&s, "Available"), condition(&s, "Progressing")) {
                (Some((a, _, _)), Some((p, _, _))) if a == "True" && p == "False" => Ok(s),
                other => Err(format!(
                    "(Available, Progressing)={other:?}, ready={:?}",
                    s.ready
                )),
            }
        },
    )
    .await;
    assert_eq!(
        status.image.as_deref(),
        Some(DEFAULT_IMAGE),
        "empty spec.image resolves to the pinned default"
    );
    assert_eq!(status.ready.as_deref(), Some("1/1"));
    let hash1 = status.config_hash.clone().expect("status.configHash");
    let cm1 = status.config_map.clone().expect("status.configMap");
    assert!(
        cm1.ends_with(&hash1),
        "ConfigMap {cm1} is named by the hash {hash1}"
    );
    let grpc = status.endpoint("grpc").map(|e| e.url.clone());
    assert_eq!(
        grpc,
        Some(format!("http://{NAME}.{ns}.svc.cluster.local:4317")),
        "status shows the OTLP/gRPC endpoint"
    );
    assert!(
        status.endpoint("http/protobuf").is_some(),
        "status shows the OTLP/HTTP endpoint"
    );
    assert_eq!(
        condition(&status, "ConfigValid").map(|c| c.0),
        Some("True".to_owned())
    );

    service_accounts
        .get(&format!("{NAME}-collector"))
        .await
        .expect("ServiceAccount rendered");
    config_maps
        .get(&cm1)
        .await
        .expect("hashed ConfigMap rendered");
    let deploy = deployments
        .get(&format!("{NAME}-collector"))
        .await
        .expect("Deployment rendered");
    assert_eq!(
        deploy.status.as_ref().and_then(|s| s.ready_replicas),
        Some(1),
        "collector pod Ready on a kwok node"
    );
    assert_eq!(
        template_hash(&deploy).as_deref(),
        Some(hash1.as_str()),
        "pod template carries the hash"
    );
    let svc = services
        .get(NAME)
        .await
        .expect("Service named after the CR");
    let ports: Vec<i32> = svc
        .spec
        .and_then(|s| s.ports)
        .unwrap_or_default()
        .iter()
        .map(|p| p.port)
        .collect();
    assert_eq!(ports, [4317, 4318], "Service exposes the OTLP ports");

    let table = kubectl(bed, &["get", "telemetrycollectors", "-n", &ns], None)
        .unwrap_or_else(|e| panic!("{e}"));
    let header: Vec<_> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "MODE", "READY", "IMAGE", "AGE"],
        "printer columns:\n{table}"
    );
    assert!(
        table.contains("deployment") && table.contains("1/1") && table.contains(DEFAULT_IMAGE),
        "{table}"
    );
    let short = kubectl(bed, &["get", "tcol", "-n", &ns, "-o", "name"], None)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        short.trim(),
        format!("telemetrycollector.ferrotel.io/{NAME}"),
        "short name works"
    );

    // --- The schema keeps the seed's nulls and enforces the CEL rules.
    let stored = kubectl(bed, &["get", "tcol", NAME, "-n", &ns, "-o", "json"], None)
        .unwrap_or_else(|e| panic!("{e}"));
    let stored: serde_json::Value = serde_json::from_str(&stored).expect("kubectl JSON");
    assert!(
        stored["spec"]["config"]
            .as_object()
            .is_some_and(|c| c.get("processors") == Some(&serde_json::Value::Null)),
        "the seed's `processors:` (null) must survive the API server: {}",
        stored["spec"]["config"]
    );
    let bad = sample
        .replace(&format!("name: {NAME}"), "name: bad-replicas")
        .replace("mode: deployment", "mode: daemonset\n  replicas: 2");
    let refused = kubectl(
        bed,
        &["apply", "--server-side", "--dry-run=server", "-f", "-"],
        Some(&bad),
    );
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("spec.replicas is only allowed with mode deployment")),
        "CEL must refuse replicas with mode daemonset: {refused:?}"
    );

    // --- The rendered config runs in the real collector and prints spans.
    let rendered = config_maps
        .get(&cm1)
        .await
        .expect("ConfigMap")
        .data
        .unwrap_or_default()["collector.yaml"]
        .clone();
    // (run at the end, after the control-plane checks)

    // --- Restarting the operator writes nothing.
    let before = resource_versions(
        &collectors,
        &service_accounts,
        &config_maps,
        &deployments,
        &services,
        &cm1,
    )
    .await;
    op.process.terminate(Duration::from_secs(10));
    let mut op = start_operator(bed, &ns, dir.path(), 2);
    let (ready_url, metrics_url) = (op.health_addr.clone(), op.metrics_addr.clone());
    wait_for(
        "the restarted operator to be ready and finish a reconcile",
        TIMEOUT,
        || {
            let alive = op.alive();
            let (ready_url, metrics_url) = (ready_url.clone(), metrics_url.clone());
            async move {
                alive?;
                let (code, body) = http_get(&ready_url, "/readyz").await?;
                if code != 200 {
                    return Err(format!("/readyz {code}: {body}"));
                }
                let (_, metrics) = http_get(&metrics_url, "/metrics").await?;
                let done = metric_value(
                    &metrics,
                    "ferrotel_operator_reconcile_duration_seconds_count{controller=\"collector\"}",
                );
                if done >= 1.0 {
                    Ok(())
                } else {
                    Err("no collector reconcile finished yet".into())
                }
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", op.tail()));
    assert_eq!(
        resource_versions(
            &collectors,
            &service_accounts,
            &config_maps,
            &deployments,
            &services,
            &cm1
        )
        .await,
        before,
        "a restarted operator must not write unchanged objects"
    );
    let (code, _) = http_get(&op.health_addr, "/livez").await.expect("livez");
    assert_eq!(code, 200);

    // --- A config change rolls out a new hash.
    let user = PatchParams::default();
    collectors
        .patch(
            NAME,
            &user,
            &Patch::Merge(
                json!({"spec": {"config": {"exporters": {"debug": {"verbosity": "basic"}}}}}),
            ),
        )
        .await
        .expect("patch config");
    let hash2 = wait_status(&collectors, &mut op, "a new config hash", |tc| {
        let h = tc
            .status
            .as_ref()
            .and_then(|s| s.config_hash.clone())
            .ok_or("no hash")?;
        if h != hash1 {
            Ok(h)
        } else {
            Err("hash unchanged".into())
        }
    })
    .await;
    let deploy = deployments
        .get(&format!("{NAME}-collector"))
        .await
        .expect("deploy");
    assert_eq!(
        template_hash(&deploy),
        Some(hash2.clone()),
        "the new hash is rolled into the pod template"
    );
    config_maps
        .get(&cm1)
        .await
        .expect("the previous ConfigMap is kept for rollback");

    // --- An invalid change is refused; the old hash stays.
    collectors
        .patch(
            NAME,
            &user,
            &Patch::Merge(json!({"spec": {"config": {"service": {"pipelines": {"traces": {"exporters": ["debug", "otlp/missing"]}}}}}})),
        )
        .await
        .expect("patch invalid config");
    let message = wait_status(&collectors, &mut op, "ConfigValid=False", |tc| {
        let s = tc.status.clone().unwrap_or_default();
        match condition(&s, "ConfigValid") {
            Some((st, reason, msg)) if st == "False" => {
                assert_eq!(reason, "InvalidConfig");
                Ok(msg)
            }
            other => Err(format!("ConfigValid={other:?}")),
        }
    })
    .await;
    assert!(
        message.contains(
            "service.pipelines.traces.exporters: \"otlp/missing\" is not defined under exporters"
        ),
        "the message names the bad key: {message}"
    );
    let deploy = deployments
        .get(&format!("{NAME}-collector"))
        .await
        .expect("deploy");
    assert_eq!(
        template_hash(&deploy),
        Some(hash2.clone()),
        "an invalid config is not rolled out"
    );
    let tc = collectors.get(NAME).await.expect("tc");
    assert_eq!(
        tc.status.as_ref().and_then(|s| s.config_hash.clone()),
        Some(hash2.clone()),
        "status keeps the serving hash"
    );
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let warned = wait_for("a Warning Event about the invalid config", TIMEOUT, || {
        let events = events.clone();
        async move {
            let list = events
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            list.items
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("InvalidConfig"))
                .and_then(|e| e.note)
                .ok_or_else(|| "no InvalidConfig event yet".to_owned())
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        warned.contains("otlp/missing"),
        "the Event says the same: {warned}"
    );

    // --- Fixing it recovers.
    collectors
        .patch(NAME, &user, &Patch::Merge(json!({"spec": {"config": {"service": {"pipelines": {"traces": {"exporters": ["debug"]}}}}}})))
        .await
        .expect("patch fixed config");
    wait_status(&collectors, &mut op, "ConfigValid=True again", |tc| {
        let s = tc.status.clone().unwrap_or_default();
        match condition(&s, "ConfigValid") {
            Some((st, _, _))
                if st == "True" && s.config_hash.as_deref() == Some(hash2.as_str()) =>
            {
                Ok(())
            }
            other => Err(format!("ConfigValid={other:?} hash={:?}", s.config_hash)),
        }
    })
    .await;

    // --- managementState: unmanaged stops every write to children.
    collectors
        .patch(
            NAME,
            &user,
            &Patch::Merge(json!({"spec": {"managementState": "unmanaged",
                "config": {"exporters": {"debug": {"verbosity": "normal"}}}}})),
        )
        .await
        .expect("switch to unmanaged");
    wait_status(&collectors, &mut op, "Reconciled=False/Unmanaged", |tc| {
        let s = tc.status.clone().unwrap_or_default();
        match condition(&s, "Reconciled") {
            Some((st, reason, _)) if st == "False" && reason == "Unmanaged" => Ok(()),
            other => Err(format!("Reconciled={other:?}")),
        }
    })
    .await;
    let deploy = deployments
        .get(&format!("{NAME}-collector"))
        .await
        .expect("deploy");
    assert_eq!(
        template_hash(&deploy),
        Some(hash2.clone()),
        "an unmanaged collector's children are left alone"
    );
    collectors
        .patch(
            NAME,
            &user,
            &Patch::Merge(json!({"spec": {"managementState": null}})),
        )
        .await
        .expect("back to managed");

    // --- deployment -> daemonset prunes the Deployment.
    collectors
        .patch(
            NAME,
            &user,
            &Patch::Merge(json!({"spec": {"mode": "daemonset"}})),
        )
        .await
        .expect("switch mode");
    wait_for("the DaemonSet to replace the Deployment", TIMEOUT, || {
        let (deployments, daemonsets) = (deployments.clone(), daemonsets.clone());
        async move {
            let ds = daemonsets
                .get_opt(&format!("{NAME}-collector"))
                .await
                .map_err(|e| e.to_string())?;
            let dep = deployments
                .get_opt(&format!("{NAME}-collector"))
                .await
                .map_err(|e| e.to_string())?;
            match (ds, dep) {
                (Some(_), None) => Ok(()),
                (ds, dep) => Err(format!(
                    "daemonset present={} deployment present={}",
                    ds.is_some(),
                    dep.is_some()
                )),
            }
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", op.tail()));
    wait_status(
        &collectors,
        &mut op,
        "status to report mode daemonset",
        |tc| {
            let mode = tc.status.as_ref().and_then(|s| s.mode).map(|m| m.as_str());
            if mode == Some("daemonset") {
                Ok(())
            } else {
                Err(format!("mode {mode:?}"))
            }
        },
    )
    .await;

    // --- Old ConfigMaps beyond the rollback window (3) are pruned.
    for n in [7, 8] {
        let before = collectors
            .get(NAME)
            .await
            .expect("tc")
            .status
            .and_then(|s| s.config_hash);
        collectors
            .patch(
                NAME,
                &user,
                &Patch::Merge(
                    json!({"spec": {"config": {"exporters": {"debug": {"sampling_initial": n}}}}}),
                ),
            )
            .await
            .expect("patch config");
        wait_status(&collectors, &mut op, "another config hash", |tc| {
            let h = tc.status.as_ref().and_then(|s| s.config_hash.clone());
            if h.is_some() && h != before {
                Ok(())
            } else {
                Err(format!("hash still {h:?}"))
            }
        })
        .await;
    }
    let selector =
        format!("app.kubernetes.io/instance={NAME},app.kubernetes.io/managed-by=ferrotel-operator");
    let kept = wait_for("old ConfigMaps to be pruned", TIMEOUT, || {
        let (cms, selector, cm1) = (config_maps.clone(), selector.clone(), cm1.clone());
        async move {
            let names: Vec<String> = cms
                .list_metadata(&ListParams::default().labels(&selector))
                .await
                .map_err(|e| e.to_string())?
                .items
                .iter()
                .map(|cm| cm.name_any())
                .collect();
            if names.len() == 4 && !names.contains(&cm1) {
                Ok(names)
            } else {
                Err(format!("config maps: {names:?}"))
            }
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", op.tail()));
    assert!(
        kept.iter().any(|n| n.ends_with(&hash2)),
        "recent ConfigMaps stay for rollback: {kept:?}"
    );

    // --- Deleting the CR removes every child (garbage collector).
    collectors
        .delete(NAME, &Default::default())
        .await
        .expect("delete");
    wait_for(
        "every child to be garbage-collected",
        Duration::from_secs(90),
        || {
            let lp = ListParams::default().labels(&selector);
            let (cms, sas, svcs, dss, deps) = (
                config_maps.clone(),
                service_accounts.clone(),
                services.clone(),
                daemonsets.clone(),
                deployments.clone(),
            );
            async move {
                let left = [
                    cms.list_metadata(&lp)
                        .await
                        .map_err(|e| e.to_string())?
                        .items
                        .len(),
                    sas.list_metadata(&lp)
                        .await
                        .map_err(|e| e.to_string())?
                        .items
                        .len(),
                    svcs.list_metadata(&lp)
                        .await
                        .map_err(|e| e.to_string())?
                        .items
                        .len(),
                    dss.list_metadata(&lp)
                        .await
                        .map_err(|e| e.to_string())?
                        .items
                        .len(),
                    deps.list_metadata(&lp)
                        .await
                        .map_err(|e| e.to_string())?
                        .items
                        .len(),
                ];
                if left.iter().all(|n| *n == 0) {
                    Ok(())
                } else {
                    Err(format!("left (cm, sa, svc, ds, deploy): {left:?}"))
                }
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    op.process.terminate(Duration::from_secs(10));
    let log = std::fs::read_to_string(&op.log).unwrap_or_default();
    assert!(
        log.contains("Shut down cleanly"),
        "SIGTERM must shut the operator down gracefully:\n{}",
        op.tail()
    );

    // --- The rendered config runs in the real collector and prints spans.
    run_rendered_config_with_telemetrygen(&rendered).await;
}

/// Runs the rendered config in the real collector (listening on free ports
/// instead of 4317/4318, which parallel tests may hold), sends spans with
/// telemetrygen, and waits for the debug exporter to print them.
async fn run_rendered_config_with_telemetrygen(rendered: &str) {
    let grpc = ferrotel_e2e::free_port();
    let http = ferrotel_e2e::free_port();
    let local = rendered
        .replace("0.0.0.0:4317", &format!("127.0.0.1:{grpc}"))
        .replace("0.0.0.0:4318", &format!("127.0.0.1:{http}"));
    assert_ne!(
        local, rendered,
        "the rendered config must contain the seed's endpoints"
    );
    // The collector's own metrics port (:8888) would clash between runs.
    let mut doc: serde_yaml::Value = serde_yaml::from_str(&local).expect("rendered config is YAML");
    doc["service"]["telemetry"] =
        serde_yaml::from_str("{metrics: {level: none}}").expect("static yaml");
    let local = serde_yaml::to_string(&doc).expect("yaml");
    let mut collector = ferrotel_e2e::Collector::start(&local)
        .await
        .unwrap_or_else(|e| panic!("rendered config must start: {e}"));
    let out = Command::new(ferrotel_e2e::tool_path("telemetrygen"))
        .args([
            "traces",
            "--otlp-insecure",
            "--otlp-endpoint",
            &format!("127.0.0.1:{grpc}"),
            "--traces",
            "3",
            "--service",
            "ferrotel-e2e",
        ])
        .output()
        .expect("run telemetrygen");
    assert!(
        out.status.success(),
        "telemetrygen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log_path = collector.log_path().to_path_buf();
    wait_for(
        "the debug exporter to print telemetrygen's spans",
        TIMEOUT,
        || {
            let alive = collector.check_running();
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            async move {
                alive.map_err(|e| format!("fatal: {e}"))?;
                if text.contains("ferrotel-e2e") && text.contains("Span #") {
                    Ok(())
                } else {
                    Err("no spans printed yet".into())
                }
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}
