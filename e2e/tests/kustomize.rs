//! The Kustomize install path: `kubectl apply -k config/default` gives a
//! running operator (run here with the Deployment's exact args, env and
//! ServiceAccount) that reconciles `config/samples`; after it has, a
//! server-side diff of every sample and default manifest is empty (what
//! ArgoCD checks); deleting the samples garbage-collects their children.
//! config/default mirrors the Helm chart, and config/crd is a copy of crds/.

mod packaging;

use std::collections::BTreeMap;
use std::time::Duration;

use ferrotel_e2e::operator::OperatorProcess;
use ferrotel_e2e::{TestBed, wait_for};
use packaging::*;
use serde_json::Value;

fn kustomize(dir: &str) -> Vec<Value> {
    let mut cmd = std::process::Command::new(tool("kubectl"));
    cmd.arg("kustomize").arg(repo_path(dir));
    yaml_docs(&run(cmd, None).unwrap_or_else(|e| panic!("kustomize build {dir}: {e}")))
}

#[test]
fn config_crd_is_an_exact_copy_of_the_generated_crds() {
    let generated: BTreeMap<String, String> = yaml_files(&repo_path("crds"))
        .iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                read(p),
            )
        })
        .collect();
    let copies: BTreeMap<String, String> = yaml_files(&repo_path("config/crd"))
        .iter()
        .filter(|p| !p.ends_with("kustomization.yaml"))
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
        copies.keys().collect::<Vec<_>>(),
        "config/crd must hold the same CRD files as crds/; run `make generate`"
    );
    for (file, text) in &generated {
        assert!(
            copies[file] == *text,
            "config/crd/{file} differs from crds/{file}; run `make generate`"
        );
    }
    let kustomization: Value =
        serde_yaml::from_str(&read(&repo_path("config/crd/kustomization.yaml"))).unwrap();
    let listed: Vec<&str> = kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        generated.keys().map(String::as_str).collect::<Vec<_>>(),
        "config/crd/kustomization.yaml lists every CRD"
    );
}

/// The parts of an object that must agree between the chart and config/default.
fn essence(doc: &Value) -> Value {
    let mut d = doc.clone();
    let meta = d["metadata"].as_object_mut().expect("metadata");
    meta.remove("labels");
    meta.remove("annotations");
    if let Some(t) = d["spec"]["template"]["metadata"].as_object_mut() {
        t.remove("labels");
    }
    d
}

#[test]
fn config_default_has_the_same_operator_rbac_and_arguments_as_the_chart() {
    let kustomized = kustomize("config/default");
    let chart = yaml_docs(
        &helm_template("ferrotel", "ferrotel-system", &[]).unwrap_or_else(|e| panic!("{e}")),
    );
    let key = |d: &Value| {
        format!(
            "{}/{}/{}",
            kind_of(d),
            namespace_of(d).unwrap_or(""),
            name_of(d)
        )
    };
    let from_chart: BTreeMap<String, &Value> = chart.iter().map(|d| (key(d), d)).collect();
    let mut compared = 0;
    for doc in &kustomized {
        match kind_of(doc) {
            "CustomResourceDefinition" | "Namespace" => continue,
            "ConfigMap" => continue,
            _ => {}
        }
        let k = key(doc);
        let twin = from_chart.get(&k).unwrap_or_else(|| {
            panic!("config/default has {k}, the chart (release ferrotel) does not")
        });
        assert_eq!(
            essence(doc),
            essence(twin),
            "{k} differs between config/default and the chart"
        );
        compared += 1;
    }
    assert!(compared >= 6, "only {compared} objects compared");
    let kinds: Vec<&str> = kustomized.iter().map(kind_of).collect();
    for wanted in [
        "CustomResourceDefinition",
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "Deployment",
    ] {
        assert!(kinds.contains(&wanted), "config/default lacks a {wanted}");
    }
}

fn kubectl_json(bed: &TestBed, args: &[&str]) -> Result<Value, String> {
    let mut cmd = kubectl(bed);
    cmd.args(args).args(["-o", "json"]);
    serde_json::from_str(&run(cmd, None)?).map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_apply_k_config_default_runs_an_operator_that_reconciles_the_samples() {
    let bed = TestBed::shared();
    // 1. kubectl apply -k config/default (server-side: the CRDs are large).
    let mut apply = kubectl(bed);
    apply
        .args(["apply", "--server-side", "-k"])
        .arg(repo_path("config/default"));
    run(apply, None).unwrap_or_else(|e| panic!("kubectl apply -k config/default: {e}"));
    let default_docs = kustomize("config/default");
    let deployment = default_docs
        .iter()
        .find(|d| kind_of(d) == "Deployment")
        .expect("operator Deployment");
    let namespace = namespace_of(deployment).expect("namespaced").to_string();
    let mut rollout = kubectl(bed);
    rollout.args([
        "rollout",
        "status",
        "deployment",
        name_of(deployment),
        "-n",
        &namespace,
        "--timeout=120s",
    ]);
    run(rollout, None).unwrap_or_else(|e| panic!("operator Deployment did not roll out: {e}"));

    // 2. The operator process with the Deployment's args, env and identity
    // (its listen addresses move to free loopback ports: the manifest's
    // 8080/8081 may be taken on a shared machine).
    let args = container_args(deployment, "operator");
    let pod = format!("{}-e2e", name_of(deployment));
    let env = container_env(deployment, "operator", &pod, &namespace);
    let sa = pod_spec(deployment)["serviceAccountName"]
        .as_str()
        .unwrap()
        .to_string();
    let work = tempfile::tempdir().unwrap();
    let kubeconfig = service_account_kubeconfig(bed, &namespace, &sa, work.path()).await;
    let mut operator =
        OperatorProcess::start(&kubeconfig, &args, &env, &work.path().join("operator.log"))
            .unwrap_or_else(|e| panic!("start the operator: {e}"));

    // 3. The samples.
    let samples = kustomize("config/samples");
    let mut apply = kubectl(bed);
    apply
        .args(["apply", "--server-side", "-k"])
        .arg(repo_path("config/samples"));
    run(apply, None).unwrap_or_else(|e| panic!("kubectl apply -k config/samples: {e}"));
    let crs: Vec<(String, String, String)> = samples
        .iter()
        .filter(|d| {
            d["apiVersion"]
                .as_str()
                .is_some_and(|v| v.starts_with("ferrotel.io/"))
        })
        .map(|d| {
            (
                kind_of(d).to_string(),
                namespace_of(d).unwrap_or("default").to_string(),
                name_of(d).to_string(),
            )
        })
        .collect();
    assert!(
        crs.iter().any(|c| c.0 == "TelemetryCollector"),
        "config/samples has a TelemetryCollector"
    );
    assert!(
        crs.iter().any(|c| c.0 == "Instrumentation"),
        "config/samples has an Instrumentation"
    );
    for (kind, ns, name) in &crs {
        // Healthy as ArgoCD sees it: our Lua health checks on the live status
        // (which also requires observedGeneration == generation).
        wait_for(
            &format!("{kind} {ns}/{name} to be Healthy (ArgoCD health check)"),
            Duration::from_secs(120),
            || {
                let alive = operator.alive();
                let obj = kubectl_json(bed, &["get", &kind.to_lowercase(), name, "-n", ns]);
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

    // 4. ArgoCD-style: re-applying everything after reconcile changes nothing.
    for (what, docs, manager) in [
        ("config/samples", &samples, "kubectl"),
        ("config/default", &default_docs, "kubectl"),
    ] {
        let yaml = to_yaml_stream(docs);
        if let Some(diff) = server_side_diff(bed, &yaml, manager).unwrap_or_else(|e| panic!("{e}"))
        {
            panic!("a server-side apply of {what} after reconcile would change:\n{diff}");
        }
    }

    // 5. Deleting the samples removes their children (ownerReferences + GC,
    // finalizer for the probes' cluster-scoped RBAC).
    let mut delete = kubectl(bed);
    delete
        .args(["delete", "-k"])
        .arg(repo_path("config/samples"))
        .args(["--wait", "--timeout=120s"]);
    let cr_namespaces: Vec<String> = crs.iter().map(|c| c.1.clone()).collect();
    // Opted-in namespaces are samples too; delete only the CRs' children check.
    run(delete, None).unwrap_or_else(|e| {
        panic!(
            "deleting the samples: {e}\noperator log:\n{}",
            operator.tail()
        )
    });
    for ns in cr_namespaces {
        wait_for(
            &format!("children in {ns} to be garbage-collected"),
            Duration::from_secs(60),
            || async {
                let left = kubectl_json(
                    bed,
                    &[
                        "get",
                        "deployments,daemonsets,services,configmaps",
                        "-n",
                        &ns,
                        "-l",
                        "app.kubernetes.io/managed-by=ferrotel-operator",
                    ],
                );
                match left {
                    Ok(l) if l["items"].as_array().is_some_and(Vec::is_empty) => Ok(()),
                    Ok(l) => Err(format!(
                        "{} left",
                        l["items"].as_array().map(Vec::len).unwrap_or(0)
                    )),
                    // The sample namespace itself may be gone already.
                    Err(e) if e.contains("NotFound") || e.contains("not found") => Ok(()),
                    Err(e) => Err(e),
                }
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    }
    let rbac = kubectl_json(
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
        rbac["items"].as_array().map(Vec::len),
        Some(0),
        "probe cluster RBAC left behind: {}",
        rbac["items"]
    );
    operator.process.terminate(Duration::from_secs(5));
}
