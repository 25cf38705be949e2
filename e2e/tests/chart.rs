//! The Helm chart (charts/ferrotel) against the real thing: helm lint, the
//! values schema, every documented values example rendered and dry-run
//! applied against the test bed's kube-apiserver (CRDs installed first), and
//! `helm install` with the operator binary run with the chart's exact
//! arguments, environment and ServiceAccount, reconciling the samples, an
//! ArgoCD-style "no diff" check, and a clean `helm uninstall`.

mod packaging;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use ferrotel_e2e::operator::OperatorProcess;
use ferrotel_e2e::{TestBed, free_port, wait_for};
use packaging::*;
use serde_json::Value;

/// API versions passed to `helm template` so the monitoring objects render
/// (they are gated on the cluster serving monitoring.coreos.com/v1).
const MONITORING_APIS: [&str; 6] = [
    "--api-versions",
    "monitoring.coreos.com/v1/ServiceMonitor",
    "--api-versions",
    "monitoring.coreos.com/v1/PodMonitor",
    "--api-versions",
    "monitoring.coreos.com/v1/PrometheusRule",
];

/// The values examples in charts/ferrotel/examples/, plus the defaults.
fn values_cases() -> Vec<(String, Vec<String>)> {
    let mut cases = vec![("defaults".to_string(), Vec::new())];
    for file in yaml_files(&chart_dir().join("examples")) {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        cases.push((
            name,
            vec!["-f".to_string(), file.to_string_lossy().into_owned()],
        ));
    }
    assert!(
        cases.len() >= 4,
        "expected documented values examples in charts/ferrotel/examples"
    );
    cases
}

fn template(release: &str, namespace: &str, args: &[String], monitoring: bool) -> Vec<Value> {
    let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
    if monitoring {
        all.extend(MONITORING_APIS);
    }
    let out = helm_template(release, namespace, &all)
        .unwrap_or_else(|e| panic!("helm template failed: {e}"));
    yaml_docs(&out)
}

fn find<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| kind_of(d) == kind).collect()
}

#[test]
fn helm_lint_passes_for_the_defaults_and_every_values_example() {
    for (name, args) in values_cases() {
        let mut cmd = helm();
        cmd.arg("lint").arg(chart_dir()).arg("--strict").args(&args);
        let out = run(cmd, None).unwrap_or_else(|e| panic!("helm lint with {name}: {e}"));
        assert!(
            out.contains("0 chart(s) failed"),
            "helm lint with {name} reported failures:\n{out}"
        );
    }
}

#[test]
fn chart_crds_are_an_exact_copy_of_the_generated_crds() {
    let generated: BTreeMap<String, String> = yaml_files(&repo_path("crds"))
        .iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                read(p),
            )
        })
        .collect();
    let in_chart: BTreeMap<String, String> = yaml_files(&chart_dir().join("crds"))
        .iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                read(p),
            )
        })
        .collect();
    assert!(!generated.is_empty(), "crds/ is empty; run `make generate`");
    assert_eq!(
        generated.keys().collect::<Vec<_>>(),
        in_chart.keys().collect::<Vec<_>>(),
        "charts/ferrotel/crds must hold the same files as crds/; run `make generate`"
    );
    for (file, text) in &generated {
        assert!(
            in_chart[file] == *text,
            "charts/ferrotel/crds/{file} differs from crds/{file}; run `make generate`"
        );
    }
}

#[test]
fn values_schema_rejects_misspelt_keys_and_bad_values() {
    for (set, why) in [
        ("operator.logLevell=debug", "a misspelt key"),
        (
            "operator.logLevel=verbose",
            "a log level the operator does not know",
        ),
        (
            "operator.image.digest=latest",
            "a digest that is not sha256:<hex>",
        ),
        (
            "monitoring.serviceMonitor.interval=soon",
            "an interval that is not a duration",
        ),
        (
            "operator.watchNamespace=Not_A_Namespace",
            "an invalid namespace name",
        ),
    ] {
        let err = helm_template("ferrotel", "ferrotel-system", &["--set", set])
            .expect_err(&format!("the schema accepted {why} ({set})"));
        assert!(
            err.contains("schema"),
            "{set} failed, but not because of the values schema:\n{err}"
        );
    }
}

#[test]
fn probe_classes_values_take_every_permission_the_probe_class_crd_has() {
    // The values schema lists a ProbeClass's fields by hand (Helm cannot
    // reference the CRD); every `allow*` switch of the CRD must pass it and
    // reach the rendered class.
    let crd: Value = serde_yaml::from_str(&read(&repo_path("crds/probeclasses.ferrotel.io.yaml")))
        .expect("the ProbeClass CRD is YAML");
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    let switches: Vec<String> = spec
        .as_object()
        .expect("ProbeClass spec properties")
        .iter()
        .filter(|(name, schema)| name.starts_with("allow") && schema["type"] == "boolean")
        .map(|(name, _)| name.clone())
        .collect();
    assert!(
        switches.len() >= 4,
        "the ProbeClass CRD's allow* switches: {switches:?}"
    );
    let mut args = Vec::new();
    for switch in &switches {
        args.push("--set".to_owned());
        args.push(format!("probeClasses.platform.{switch}=true"));
    }
    let docs = template("ferrotel", "ferrotel-system", &args, false);
    let classes = find(&docs, "ProbeClass");
    assert_eq!(classes.len(), 1, "one ProbeClass rendered");
    for switch in &switches {
        assert_eq!(
            classes[0]["spec"][switch],
            Value::Bool(true),
            "{switch} reaches the rendered ProbeClass: {}",
            classes[0]["spec"]
        );
    }
}

#[test]
fn image_references_take_the_digest_over_the_tag_and_default_to_the_app_version() {
    let docs = template("ferrotel", "ferrotel-system", &[], false);
    let deployment = find(&docs, "Deployment")[0];
    let image = pod_spec(deployment)["containers"][0]["image"]
        .as_str()
        .unwrap();
    let chart: Value = serde_yaml::from_str(&read(&chart_dir().join("Chart.yaml"))).unwrap();
    let app_version = chart["appVersion"].as_str().unwrap();
    assert_eq!(
        image,
        format!("ghcr.io/ferrotel/ferrotel-operator:{app_version}"),
        "default image tag"
    );

    let digest = "sha256:4b1a2f0e5c3d9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b";
    let docs = template(
        "ferrotel",
        "ferrotel-system",
        &[
            "--set".into(),
            format!("operator.image.digest={digest}"),
            "--set".into(),
            "operator.image.tag=9.9.9".into(),
            "--set".into(),
            format!("defaultImages.probe.digest={digest}"),
        ],
        false,
    );
    let deployment = find(&docs, "Deployment")[0];
    let image = pod_spec(deployment)["containers"][0]["image"]
        .as_str()
        .unwrap();
    assert_eq!(
        image,
        format!("ghcr.io/ferrotel/ferrotel-operator@{digest}"),
        "digest wins over tag"
    );
    let args = container_args(deployment, "operator");
    assert!(
        args.contains(&format!(
            "--default-probe-image=ghcr.io/ferrotel/ferrotel-probe@{digest}"
        )),
        "probe digest reaches the operator: {args:?}"
    );
}

#[test]
fn monitoring_objects_render_only_where_the_prometheus_operator_api_exists() {
    let without = template("ferrotel", "ferrotel-system", &[], false);
    for kind in ["ServiceMonitor", "PodMonitor", "PrometheusRule"] {
        assert!(
            find(&without, kind).is_empty(),
            "{kind} rendered although the API is absent"
        );
    }
    let with = template("ferrotel", "ferrotel-system", &[], true);
    assert_eq!(
        find(&with, "ServiceMonitor").len(),
        1,
        "operator ServiceMonitor"
    );
    assert_eq!(
        find(&with, "PodMonitor").len(),
        2,
        "collector and probe PodMonitors"
    );
    let rule = find(&with, "PrometheusRule");
    assert_eq!(rule.len(), 1, "PrometheusRule");
    let shipped: Value =
        serde_yaml::from_str(&read(&chart_dir().join("alerts/ferrotel.rules.yaml"))).unwrap();
    assert_eq!(
        rule[0]["spec"], shipped,
        "the PrometheusRule carries alerts/ferrotel.rules.yaml verbatim"
    );
    let dashboards = find(&with, "ConfigMap")
        .into_iter()
        .find(|c| name_of(c).ends_with("-dashboards"))
        .expect("dashboards ConfigMap");
    let files = yaml_files_with_ext(&chart_dir().join("dashboards"), "json");
    assert!(
        files.len() >= 3,
        "service RED, collector and probe dashboards"
    );
    for file in files {
        let key = file.file_name().unwrap().to_string_lossy().into_owned();
        let embedded = dashboards["data"][&key]
            .as_str()
            .unwrap_or_else(|| panic!("dashboard {key} not shipped"));
        let parsed: Value = serde_json::from_str(embedded)
            .unwrap_or_else(|e| panic!("{key} in the ConfigMap: {e}"));
        assert!(parsed["panels"].is_array(), "{key} has panels");
    }
}

fn yaml_files_with_ext(dir: &std::path::Path, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    files.sort();
    files
}

#[test]
fn the_operator_binary_accepts_the_rendered_arguments_of_every_values_example() {
    for (name, args) in values_cases() {
        let docs = template("ferrotel", "ferrotel-system", &args, false);
        let deployment = find(&docs, "Deployment")[0];
        assert_operator_accepts_args(
            &container_args(deployment, "operator"),
            &format!("values {name}"),
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_values_example_renders_manifests_the_api_server_accepts() {
    let bed = TestBed::shared();
    install_crds(bed).await;
    for (name, args) in values_cases() {
        let namespace = bed.create_namespace("chart-dry-run").await;
        let docs = template("dry-run", &namespace, &args, false);
        assert!(!docs.is_empty(), "{name}: nothing rendered");
        // Hooks are objects too: validate them with the rest.
        ensure_namespaces(bed, &docs);
        let yaml = to_yaml_stream(&docs);
        server_dry_run(bed, &yaml, "helm").unwrap_or_else(|e| {
            panic!("values {name}: the API server rejects the rendered chart: {e}")
        });
    }
}

// ----------------------------------------------------------- install path

/// Everything the install test needs to find the release's objects.
struct Release {
    name: String,
    namespace: String,
}

impl Release {
    fn helm(&self, bed: &TestBed) -> std::process::Command {
        let mut cmd = helm();
        cmd.env("KUBECONFIG", bed.kubeconfig())
            .args(["--namespace", &self.namespace]);
        cmd
    }

    fn manifest(&self, bed: &TestBed) -> Vec<Value> {
        let mut cmd = self.helm(bed);
        cmd.args(["get", "manifest", &self.name]);
        yaml_docs(&run(cmd, None).expect("helm get manifest"))
    }
}

fn kubectl_json(bed: &TestBed, args: &[&str]) -> Result<Value, String> {
    let mut cmd = kubectl(bed);
    cmd.args(args).args(["-o", "json"]);
    let out = run(cmd, None)?;
    serde_json::from_str(&out).map_err(|e| format!("kubectl {args:?} output is not JSON: {e}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn helm_install_runs_an_operator_that_reconciles_and_helm_uninstall_removes_it_cleanly() {
    let bed = TestBed::shared();
    let namespace = bed.create_namespace("ferrotel-helm").await;
    let workload_ns = bed.create_namespace("helm-otel").await;
    let release = Release {
        name: "ferrotel".into(),
        namespace: namespace.clone(),
    };
    let (metrics_port, health_port) = (free_port(), free_port());

    // 1. helm install, with the chart's own CRDs (crds/) and the seed setup.
    let mut install = release.helm(bed);
    install
        .args(["install", &release.name])
        .arg(chart_dir())
        .arg("-f")
        .arg(chart_dir().join("examples/seed.yaml"))
        .args(["--set", &format!("collector.namespace={workload_ns}")])
        .args(["--set", &format!("instrumentation.namespace={workload_ns}")])
        .args(["--set", &format!("operator.metrics.port={metrics_port}")])
        .args(["--set", &format!("operator.health.port={health_port}")])
        .args(["--wait", "--timeout", "3m"]);
    let notes = run(install, None).unwrap_or_else(|e| panic!("helm install failed: {e}"));
    assert!(
        notes.contains("kubectl"),
        "NOTES tell the user the next command:\n{notes}"
    );

    // 2. The operator, exactly as the Deployment would run it: its args, its
    // env (downward API resolved), its ServiceAccount's token.
    let manifest = release.manifest(bed);
    let deployment = manifest
        .iter()
        .find(|d| kind_of(d) == "Deployment")
        .expect("operator Deployment");
    let args = container_args(deployment, "operator");
    let pod_name = format!("{}-e2e", name_of(deployment));
    let env = container_env(deployment, "operator", &pod_name, &namespace);
    let sa = pod_spec(deployment)["serviceAccountName"]
        .as_str()
        .expect("serviceAccountName")
        .to_string();
    let work = tempfile::tempdir().expect("temp dir");
    let kubeconfig = service_account_kubeconfig(bed, &namespace, &sa, work.path()).await;
    // Verbatim: the listen addresses are the ports set through the values.
    let mut operator =
        OperatorProcess::spawn(&kubeconfig, &args, &env, &work.path().join("operator.log"))
            .unwrap_or_else(|e| panic!("start the operator: {e}"));
    operator
        .wait_ready()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        operator.health_addr,
        format!("127.0.0.1:{health_port}"),
        "the chart passes operator.health.port to --health-addr"
    );

    // 3. It reconciles the chart's collector and instrumentation...
    // Healthy as ArgoCD sees it: our Lua health checks on the live statuses.
    for (kind, name) in [
        ("telemetrycollector", "otel-collector"),
        ("instrumentation", "default"),
    ] {
        wait_for(
            &format!("{kind} {name} to be Healthy (ArgoCD health check)"),
            Duration::from_secs(120),
            || {
                let alive = operator.alive();
                let obj = kubectl_json(bed, &["get", kind, name, "-n", &workload_ns]);
                async move {
                    alive?;
                    let obj = obj?;
                    match argocd_health(&obj) {
                        (status, _) if status == "Healthy" => Ok(()),
                        (status, message) => {
                            Err(format!("{status}: {message}; status={}", obj["status"]))
                        }
                    }
                }
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", operator.tail()));
    }
    let ds = kubectl_json(
        bed,
        &[
            "get",
            "daemonsets",
            "-n",
            &workload_ns,
            "-l",
            "app.kubernetes.io/managed-by=ferrotel-operator",
        ],
    )
    .unwrap();
    assert_eq!(
        ds["items"].as_array().map(Vec::len),
        Some(2),
        "one probe DaemonSet per language: {}",
        names(&ds)
    );
    let deployments = kubectl_json(
        bed,
        &[
            "get",
            "deployments",
            "-n",
            &workload_ns,
            "-l",
            "app.kubernetes.io/managed-by=ferrotel-operator",
        ],
    )
    .unwrap();
    assert_eq!(
        deployments["items"].as_array().map(Vec::len),
        Some(1),
        "the collector Deployment: {}",
        names(&deployments)
    );

    // The probe image's binary accepts the arguments of the DaemonSets the
    // operator rendered (its entrypoint is the binary: images/probe.Containerfile).
    let probe = ferrotel_e2e::workspace_binary("ferrotel-probe").unwrap_or_else(|e| panic!("{e}"));
    for daemonset in ds["items"].as_array().into_iter().flatten() {
        let args = container_args(daemonset, "probe");
        assert!(
            args.iter().any(|a| a == "--language"),
            "probe args name the language: {args:?}"
        );
        let mut cmd = std::process::Command::new(&probe);
        cmd.args(&args).arg("--help");
        run(cmd, None).unwrap_or_else(|e| {
            panic!("the probe rejects the args of {}: {e}", name_of(daemonset))
        });
    }

    // 4. ArgoCD-style check: after reconciling, applying the chart's manifest
    // again changes nothing (the operator never writes a spec it does not own).
    let yaml = to_yaml_stream(&manifest);
    if let Some(diff) = server_side_diff(bed, &yaml, "helm").unwrap_or_else(|e| panic!("{e}")) {
        panic!("a server-side apply of the release manifest after reconcile would change:\n{diff}");
    }

    // 5. A config the distribution cannot run (the kafka exporter is not in
    // operator/api/distribution/manifest.yaml) is refused: ArgoCD sees Degraded,
    // and the operator counts it as a reconcile error.
    let broken = format!(
        "apiVersion: ferrotel.io/v1alpha1\nkind: TelemetryCollector\nmetadata: {{name: broken, namespace: {workload_ns}}}\nspec:\n  config:\n    receivers: {{otlp: {{protocols: {{grpc: {{endpoint: 0.0.0.0:4317}}}}}}}}\n    exporters: {{kafka: {{}}}}\n    service: {{pipelines: {{traces: {{receivers: [otlp], exporters: [kafka]}}}}}}\n"
    );
    let mut apply = kubectl(bed);
    apply.args(["apply", "--server-side", "-f", "-"]);
    run(apply, Some(&broken))
        .unwrap_or_else(|e| panic!("creating a collector with an unknown exporter: {e}"));
    wait_for(
        "the refused collector to be Degraded (ArgoCD health check)",
        Duration::from_secs(60),
        || {
            let obj = kubectl_json(
                bed,
                &["get", "telemetrycollector", "broken", "-n", &workload_ns],
            );
            async move {
                let obj = obj?;
                match argocd_health(&obj) {
                    (status, _) if status == "Degraded" => Ok(()),
                    (status, message) => Err(format!("{status}: {message}")),
                }
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    // 6. Every operator metric the dashboards and alerts name is served.
    assert_eq!(
        operator.metrics_addr,
        format!("127.0.0.1:{metrics_port}"),
        "the chart passes operator.metrics.port to --metrics-addr"
    );
    let metrics = operator
        .metrics()
        .await
        .unwrap_or_else(|e| panic!("operator /metrics: {e}"));
    let used = operator_metrics_named_by_dashboards_and_alerts();
    assert!(
        used.len() >= 3,
        "dashboards/alerts name operator metrics: {used:?}"
    );
    for name in &used {
        assert!(
            metrics.lines().any(|l| l.starts_with(name.as_str())),
            "the operator does not serve {name} (named by the dashboards/alerts):\n{metrics}"
        );
    }
    let mut delete = kubectl(bed);
    delete.args([
        "delete",
        "telemetrycollector",
        "broken",
        "-n",
        &workload_ns,
        "--wait",
    ]);
    run(delete, None).expect("delete the refused collector");

    // 7. Uninstall. The pre-delete hook deletes the release's CRs while the
    // operator and its RBAC are still there. The test bed runs no containers,
    // so the hook Job's containers run here, as its ServiceAccount, in order;
    // then helm uninstall proceeds without hooks.
    run_uninstall_hook(bed, &release, work.path()).await;
    let mut uninstall = release.helm(bed);
    uninstall.args([
        "uninstall",
        &release.name,
        "--no-hooks",
        "--wait",
        "--timeout",
        "2m",
    ]);
    run(uninstall, None).unwrap_or_else(|e| panic!("helm uninstall failed: {e}"));
    operator.process.terminate(Duration::from_secs(5));

    // Children are garbage-collected, cluster-scoped probe RBAC is gone,
    // the release's own objects are gone, the CRDs stay (Helm never deletes crds/).
    wait_for(
        "the collector's and probes' children to be garbage-collected",
        Duration::from_secs(60),
        || async {
            let left = kubectl_json(
                bed,
                &[
                    "get",
                    "deployments,daemonsets,services,configmaps,serviceaccounts",
                    "-n",
                    &workload_ns,
                    "-l",
                    "app.kubernetes.io/managed-by=ferrotel-operator",
                ],
            )?;
            let n = left["items"].as_array().map(Vec::len).unwrap_or(0);
            if n == 0 {
                Ok(())
            } else {
                Err(format!("{n} children left: {}", names(&left)))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let cluster_rbac = kubectl_json(
        bed,
        &[
            "get",
            "clusterroles,clusterrolebindings",
            "-l",
            "app.kubernetes.io/managed-by=ferrotel-operator",
        ],
    )
    .unwrap();
    assert_eq!(
        cluster_rbac["items"].as_array().map(Vec::len),
        Some(0),
        "the operator creates no ClusterRole or ClusterRoleBinding: {}",
        names(&cluster_rbac)
    );
    let release_rbac = kubectl_json(
        bed,
        &[
            "get",
            "clusterroles,clusterrolebindings",
            "-l",
            "app.kubernetes.io/instance=ferrotel",
        ],
    )
    .unwrap();
    assert_eq!(
        release_rbac["items"].as_array().map(Vec::len),
        Some(0),
        "the release's operator and probe RBAC left behind: {}",
        names(&release_rbac)
    );
    let operator_objects = kubectl_json(
        bed,
        &[
            "get",
            "deployments,serviceaccounts,services,roles,rolebindings",
            "-n",
            &namespace,
            "-l",
            "app.kubernetes.io/instance=ferrotel",
        ],
    )
    .unwrap();
    assert_eq!(
        operator_objects["items"].as_array().map(Vec::len),
        Some(0),
        "release objects left: {}",
        names(&operator_objects)
    );
    for crd in crd_names() {
        kubectl_json(bed, &["get", "crd", &crd])
            .unwrap_or_else(|e| panic!("CRD {crd} must be kept on uninstall: {e}"));
    }
}

/// `ferrotel_operator_*` metric names in the shipped dashboards and alerts.
fn operator_metrics_named_by_dashboards_and_alerts() -> std::collections::BTreeSet<String> {
    let pattern = regex::Regex::new(r"ferrotel_operator_[a-z_]+").unwrap();
    let mut text = read(&chart_dir().join("alerts/ferrotel.rules.yaml"));
    for file in yaml_files_with_ext(&chart_dir().join("dashboards"), "json") {
        text.push_str(&read(&file));
    }
    pattern
        .find_iter(&text)
        .map(|m| m.as_str().to_string())
        .collect()
}

fn names(list: &Value) -> String {
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| format!("{}/{}", kind_of(o), name_of(o)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Does what the pre-delete hook does in a real cluster: creates the hook's
/// ServiceAccount and RBAC, runs each container's kubectl args (init
/// containers first) with that account's token, removes the hook objects.
async fn run_uninstall_hook(bed: &TestBed, release: &Release, dir: &std::path::Path) {
    let mut cmd = release.helm(bed);
    cmd.args(["get", "hooks", &release.name]);
    let hooks = yaml_docs(&run(cmd, None).expect("helm get hooks"));
    let (job, rest): (Vec<Value>, Vec<Value>) =
        hooks.into_iter().partition(|d| kind_of(d) == "Job");
    assert_eq!(job.len(), 1, "one pre-delete Job");
    let job = &job[0];
    let yaml = to_yaml_stream(&rest);
    let mut apply = kubectl(bed);
    apply.args(["apply", "--server-side", "-f", "-"]);
    run(apply, Some(&yaml)).unwrap_or_else(|e| panic!("creating the hook's RBAC: {e}"));
    let sa = pod_spec(job)["serviceAccountName"].as_str().unwrap();
    let kubeconfig = service_account_kubeconfig(bed, &release.namespace, sa, dir).await;
    let spec = pod_spec(job);
    let containers = spec["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(spec["containers"].as_array().into_iter().flatten());
    for c in containers {
        let args: Vec<&str> = c["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let mut kubectl = std::process::Command::new(tool("kubectl"));
        kubectl.env("KUBECONFIG", &kubeconfig).args(&args);
        run(kubectl, None).unwrap_or_else(|e| panic!("hook container {}: {e}", c["name"]));
    }
    let mut delete = kubectl(bed);
    delete.args(["delete", "--ignore-not-found", "-f", "-"]);
    run(delete, Some(&yaml)).expect("removing the hook objects");
}

/// The images cannot be built here (no container engine, no registry), so
/// their Containerfiles are checked for what the manifests rely on: multi-stage
/// builds, the runtime user, and an entrypoint that is the binary the tests
/// run with the manifests' args.
#[test]
fn containerfiles_are_multi_stage_with_the_expected_user_and_entrypoint() {
    let manifest = read(&repo_path("operator/api/distribution/manifest.yaml"));
    let ocb_version = manifest
        .lines()
        .find_map(|l| l.trim().strip_prefix("version: "))
        .expect("dist.version in the collector manifest");
    for (file, package, user, entrypoint) in [
        (
            "operator",
            Some("ferrotel-operator"),
            "65532:65532",
            "/usr/local/bin/ferrotel-operator",
        ),
        (
            "probe",
            Some("ferrotel-probe"),
            "0:0",
            "/usr/local/bin/ferrotel-probe",
        ),
        ("collector", None, "65532:65532", "/otelcol"),
    ] {
        let path = repo_path(&format!("images/{file}.Containerfile"));
        let text = read(&path);
        let stages = text.lines().filter(|l| l.starts_with("FROM ")).count();
        assert!(
            stages >= 2,
            "{file}: multi-stage build expected, found {stages} FROM"
        );
        let final_stage = text.rsplit("\nFROM ").next().unwrap();
        assert!(
            final_stage.contains(&format!("\nUSER {user}\n")),
            "{file}: runtime user {user}"
        );
        assert!(
            final_stage.contains(&format!("ENTRYPOINT [\"{entrypoint}\"]")),
            "{file}: entrypoint {entrypoint}"
        );
        if let Some(package) = package {
            assert!(
                text.contains(&format!("-p {package}")),
                "{file}: builds {package}"
            );
        } else {
            assert!(
                text.contains(&format!("ARG OCB_VERSION={ocb_version}")),
                "{file}: OCB_VERSION default equals the manifest's dist.version {ocb_version}"
            );
        }
        let makefile = read(&repo_path("Makefile"));
        assert!(
            makefile.contains(&format!("images/{file}.Containerfile")),
            "make images builds {file}"
        );
    }
    // The manifests use the images' entrypoints (no command override), so the
    // binaries the tests run with the manifests' args are what the pods run.
    let docs = template("ferrotel", "ferrotel-system", &[], false);
    let deployment = find(&docs, "Deployment")[0];
    assert!(
        pod_spec(deployment)["containers"][0]["command"].is_null(),
        "the operator Deployment must not override the entrypoint"
    );
    let non_root = &pod_spec(deployment)["securityContext"];
    assert_eq!(non_root["runAsNonRoot"], true, "operator runs as non-root");
    assert_eq!(
        pod_spec(deployment)["containers"][0]["securityContext"]["readOnlyRootFilesystem"],
        true,
        "operator has a read-only root filesystem"
    );
}
