//! The Kustomize install path: `kubectl apply -k config/default` gives a
//! running operator (run here with the Deployment's exact args, env and
//! ServiceAccount) that reconciles `config/samples`; after it has, a
//! server-side diff of every sample and default manifest is empty (what
//! ArgoCD checks); the operator's identity can do what its code needs and
//! nothing else (`kubectl auth can-i`); a user who may only edit
//! Instrumentations in one namespace cannot choose the image or privilege of
//! what runs on the nodes; deleting the samples garbage-collects their
//! children. config/default mirrors the Helm chart, and config/crd is a copy
//! of crds/.

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

    // 5. Least privilege: what the operator's identity may and may not do.
    let operator_sa = format!("system:serviceaccount:{namespace}:{sa}");
    let probe_rbac = "ferrotel-probe";
    for (args, allowed) in [
        (vec!["list", "pods", "--all-namespaces"], true),
        (vec!["watch", "namespaces"], true),
        (vec!["list", "probeclasses.ferrotel.io"], true),
        (
            vec!["patch", &format!("clusterrolebinding/{probe_rbac}")],
            true,
        ),
        (vec!["bind", &format!("clusterrole/{probe_rbac}")], true),
        (vec!["create", "daemonsets.apps", "-n", "otel"], true),
        (vec!["delete", "configmaps", "-n", "otel"], true),
        (
            vec![
                "patch",
                "instrumentations.ferrotel.io",
                "--subresource=status",
                "-n",
                "otel",
            ],
            true,
        ),
        (vec!["create", "events.events.k8s.io", "-n", "otel"], true),
        (
            vec!["update", "leases.coordination.k8s.io", "-n", &namespace],
            true,
        ),
        // Secrets, arbitrary RBAC, exec, pods, nodes, impersonation: no.
        (vec!["get", "secrets", "-n", "otel"], false),
        (vec!["list", "secrets", "--all-namespaces"], false),
        (vec!["create", "clusterroles"], false),
        (vec!["create", "clusterrolebindings"], false),
        (vec!["patch", "clusterrolebinding/cluster-admin"], false),
        (
            vec!["delete", &format!("clusterrolebinding/{probe_rbac}")],
            false,
        ),
        (vec!["patch", &format!("clusterrole/{probe_rbac}")], false),
        (vec!["bind", "clusterrole/cluster-admin"], false),
        (vec!["escalate", "clusterroles"], false),
        (
            vec!["create", "roles.rbac.authorization.k8s.io", "-n", "otel"],
            false,
        ),
        (
            vec![
                "create",
                "rolebindings.rbac.authorization.k8s.io",
                "-n",
                "otel",
            ],
            false,
        ),
        (
            vec!["create", "pods", "--subresource=exec", "-n", "otel"],
            false,
        ),
        (vec!["create", "pods", "-n", "otel"], false),
        (vec!["get", "nodes"], false),
        (vec!["impersonate", "users"], false),
        (
            vec!["create", "customresourcedefinitions.apiextensions.k8s.io"],
            false,
        ),
        (
            vec!["update", "instrumentations.ferrotel.io", "-n", "otel"],
            false,
        ),
    ] {
        assert_eq!(
            can_i(bed, &operator_sa, &args),
            allowed,
            "the operator's ServiceAccount: can-i {args:?}"
        );
    }

    // 6. Who may run what on the nodes: a user who may only edit
    // Instrumentations in one namespace gets neither another image, nor
    // privileged mode, nor another namespace's ProbeClass onto any node.
    restricted_user_cannot_choose_what_runs_on_the_nodes(bed, &mut operator).await;

    // 7. Deleting the samples removes their children (ownerReferences + GC;
    // the finalizer takes their probes out of the probes' binding).
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
        "the operator creates no cluster RBAC: {}",
        rbac["items"]
    );
    assert_eq!(
        probe_binding_subjects(bed),
        Vec::<String>::new(),
        "the deleted Instrumentations' probes left the probes' binding (finalizer)"
    );
    operator.process.terminate(Duration::from_secs(5));
}

/// `kubectl auth can-i <args> --as <who>` → yes or no.
fn can_i(bed: &TestBed, who: &str, args: &[&str]) -> bool {
    let mut cmd = kubectl(bed);
    cmd.args(["auth", "can-i"]).args(args).args(["--as", who]);
    let out = run_raw(&mut cmd, None);
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    match answer.as_str() {
        "yes" => true,
        "no" => false,
        other => panic!(
            "kubectl auth can-i {args:?} --as {who} answered {other:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Runs kubectl as `user` (impersonated by the test bed's admin).
fn kubectl_as(
    bed: &TestBed,
    user: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, String> {
    let mut cmd = kubectl(bed);
    cmd.args(["--as", user]).args(args);
    run(cmd, stdin)
}

fn degraded(inst: &Value) -> Option<(String, String, String)> {
    inst["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Degraded")
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_owned(),
                c["reason"].as_str().unwrap_or_default().to_owned(),
                c["message"].as_str().unwrap_or_default().to_owned(),
            )
        })
}

/// The probe containers of every DaemonSet in the cluster, as
/// `(namespace/name, image, privileged)`.
fn probe_containers(bed: &TestBed) -> Vec<(String, String, bool)> {
    let all = kubectl_json(bed, &["get", "daemonsets", "--all-namespaces"])
        .unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    for ds in all["items"].as_array().into_iter().flatten() {
        let key = format!(
            "{}/{}",
            ds["metadata"]["namespace"].as_str().unwrap_or_default(),
            ds["metadata"]["name"].as_str().unwrap_or_default()
        );
        for c in ds["spec"]["template"]["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
        {
            out.push((
                key.clone(),
                c["image"].as_str().unwrap_or_default().to_owned(),
                c["securityContext"]["privileged"]
                    .as_bool()
                    .unwrap_or(false),
            ));
        }
    }
    out
}

/// The probes' binding's subjects (the install ships the binding).
fn probe_binding_subjects(bed: &TestBed) -> Vec<String> {
    ferrotel_e2e::operator::probe_binding_subjects(bed)
        .unwrap_or_else(|e| panic!("the probes' ClusterRoleBinding ships with the install: {e}"))
}

async fn restricted_user_cannot_choose_what_runs_on_the_nodes(
    bed: &TestBed,
    operator: &mut OperatorProcess,
) {
    const ALICE: &str = "alice";
    let team = bed.create_namespace("team-a").await;
    let rbac = format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: instrumentation-editor, namespace: {team}}}\n\
         rules: [{{apiGroups: [ferrotel.io], resources: [instrumentations], verbs: [get, list, watch, create, update, patch, delete]}}]\n\
         ---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: alice, namespace: {team}}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: instrumentation-editor}}\n\
         subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {ALICE}}}]\n\
         ---\napiVersion: ferrotel.io/v1alpha1\nkind: ProbeClass\nmetadata: {{name: platform}}\n\
         spec: {{allowPrivileged: true, allowAllPodResources: true, allowedImages: [registry.local/probe:debug], namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: otel}}}}}}\n"
    );
    let mut apply = kubectl(bed);
    apply.args(["apply", "--server-side", "-f", "-"]);
    run(apply, Some(&rbac))
        .unwrap_or_else(|e| panic!("alice's Role and the platform ProbeClass: {e}"));

    // What alice may do, and what not.
    for (args, allowed) in [
        (
            vec!["create", "instrumentations.ferrotel.io", "-n", &team],
            true,
        ),
        (vec!["create", "probeclasses.ferrotel.io"], false),
        (vec!["patch", "probeclass/platform"], false),
        (vec!["create", "daemonsets.apps", "-n", &team], false),
        (vec!["patch", "daemonsets.apps", "-n", &team], false),
        (vec!["create", "pods", "-n", &team], false),
        (vec!["patch", "clusterrolebinding/ferrotel-probe"], false),
        (
            vec!["create", "instrumentations.ferrotel.io", "-n", "otel"],
            false,
        ),
        (
            vec![
                "patch",
                "instrumentations.ferrotel.io",
                "--subresource=status",
                "-n",
                &team,
            ],
            false,
        ),
    ] {
        assert_eq!(can_i(bed, ALICE, &args), allowed, "alice: can-i {args:?}");
    }

    let shop = |probe: &str, class: &str| {
        format!(
            "apiVersion: ferrotel.io/v1alpha1\nkind: Instrumentation\nmetadata: {{name: shop, namespace: {team}}}\n\
             spec: {{languages: [go], exporter: {{endpoint: \"http://collector.example:4317\"}}, probe: {probe}{class}}}\n"
        )
    };
    let refused = |inst: &Value| match degraded(inst) {
        Some((s, r, _)) if s == "True" && r == "NotAllowed" => Ok(()),
        other => Err(format!("Degraded is {other:?}")),
    };
    for (probe, class, names) in [
        // Resources and connections of every pod on the nodes, other
        // tenants' included: the admin's decision too. First, so that its
        // refusal turns Degraded on and so is the one with an Event (a
        // Warning goes out when Degraded turns on or changes reason).
        (
            "{}",
            ", views: {podResources: {allPods: true}}",
            "allowAllPodResources: true",
        ),
        ("{privileged: true}", "", "allowPrivileged: true"),
        (
            "{image: evil.example/probe:1}",
            "",
            "\"evil.example/probe:1\"",
        ),
        (
            "{privileged: true}",
            ", probeClassName: platform",
            "namespaceSelector",
        ),
        (
            "{image: registry.local/probe:debug}",
            ", probeClassName: platform",
            "namespaceSelector",
        ),
    ] {
        kubectl_as(
            bed,
            ALICE,
            &["apply", "--server-side", "-f", "-"],
            Some(&shop(probe, class)),
        )
        .unwrap_or_else(|e| panic!("alice may edit Instrumentations in {team}: {e}"));
        wait_for(
            &format!("alice's probe {probe}{class} to be refused"),
            Duration::from_secs(60),
            || {
                let alive = operator.alive();
                let obj = kubectl_json(bed, &["get", "instrumentation", "shop", "-n", &team]);
                async move {
                    alive?;
                    let obj = obj?;
                    refused(&obj)?;
                    let (_, _, message) = degraded(&obj).unwrap_or_default();
                    if message.contains(names) {
                        Ok(())
                    } else {
                        Err(format!("the refusal should name {names:?}: {message}"))
                    }
                }
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", operator.tail()));
        let ds = kubectl_json(bed, &["get", "daemonsets", "-n", &team])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            ds["items"].as_array().map(Vec::len),
            Some(0),
            "a refused Instrumentation has no probes: {}",
            ds["items"]
        );
    }
    // The refusal is also a Warning Event on the Instrumentation, in the
    // words of its condition.
    wait_for(
        "a NotAllowed Event naming views.podResources.allPods",
        Duration::from_secs(30),
        || {
            let events = kubectl_json(
                bed,
                &[
                    "get",
                    "events",
                    "-n",
                    &team,
                    "--field-selector",
                    "reason=NotAllowed,involvedObject.name=shop",
                ],
            );
            async move {
                let events = events?;
                let found = events["items"].as_array().into_iter().flatten().any(|e| {
                    e["type"] == "Warning"
                        && e["message"]
                            .as_str()
                            .is_some_and(|m| m.contains("spec.views.podResources.allPods"))
                });
                if found {
                    Ok(())
                } else {
                    Err(format!("NotAllowed Events: {}", events["items"]))
                }
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    // Asking for nothing: admitted, with the operator's image, unprivileged,
    // the host access the operator fixes, and a place in the probes' binding.
    kubectl_as(
        bed,
        ALICE,
        &["apply", "--server-side", "-f", "-"],
        Some(&shop("{}", "")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // Admitted: not refused, and its probes are there. (It may well be
    // Degraded for another reason: a second Instrumentation makes the
    // sample namespace's "true" ambiguous.)
    wait_for(
        "alice's plain Instrumentation to be admitted",
        Duration::from_secs(60),
        || {
            let obj = kubectl_json(bed, &["get", "instrumentation", "shop", "-n", &team]);
            let probes = probe_containers(bed);
            let team = team.clone();
            async move {
                if let Some((_, reason, message)) = degraded(&obj?).filter(|d| d.1 == "NotAllowed")
                {
                    return Err(format!("still {reason}: {message}"));
                }
                if probes
                    .iter()
                    .any(|(key, _, _)| *key == format!("{team}/shop-probe-go"))
                {
                    Ok(())
                } else {
                    Err("no probe DaemonSet yet".to_owned())
                }
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", operator.tail()));
    let probes = probe_containers(bed);
    let alice_probe = probes
        .iter()
        .find(|(key, _, _)| *key == format!("{team}/shop-probe-go"))
        .unwrap_or_else(|| panic!("alice's probe DaemonSet exists: {probes:?}"));
    assert_eq!(
        (alice_probe.1.as_str(), alice_probe.2),
        ("ghcr.io/ferrotel/ferrotel-probe:0.1.0", false),
        "the operator's default image, unprivileged"
    );
    assert!(
        probe_binding_subjects(bed).contains(&format!("{team}/shop-probe-go")),
        "the probe's ServiceAccount joined the probes' binding: {:?}",
        probe_binding_subjects(bed)
    );

    // Asking for privileged mode afterwards: refused, and the running probes go.
    kubectl_as(
        bed,
        ALICE,
        &["apply", "--server-side", "-f", "-"],
        Some(&shop("{privileged: true}", "")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    wait_for(
        "alice's escalated probes to be removed",
        Duration::from_secs(60),
        || {
            let obj = kubectl_json(bed, &["get", "instrumentation", "shop", "-n", &team]);
            let ds = kubectl_json(bed, &["get", "daemonsets", "-n", &team]);
            async move {
                refused(&obj?)?;
                match ds?["items"].as_array().map(Vec::len) {
                    Some(0) => Ok(()),
                    n => Err(format!("{n:?} DaemonSets left")),
                }
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", operator.tail()));
    assert!(
        !probe_binding_subjects(bed).contains(&format!("{team}/shop-probe-go")),
        "a refused Instrumentation's ServiceAccount leaves the probes' binding"
    );

    // The class does work where it admits: an admin's Instrumentation in
    // otel gets the debug image, privileged.
    let platform = "apiVersion: ferrotel.io/v1alpha1\nkind: Instrumentation\nmetadata: {name: platform, namespace: otel}\n\
                    spec: {languages: [go], exporter: {endpoint: \"http://collector.example:4317\"}, probeClassName: platform, probe: {image: registry.local/probe:debug, privileged: true}, views: {podResources: {allPods: true}}}\n";
    let mut apply = kubectl(bed);
    apply.args(["apply", "--server-side", "-f", "-"]);
    run(apply, Some(platform)).unwrap_or_else(|e| panic!("{e}"));
    wait_for(
        "the platform class's probe to roll out",
        Duration::from_secs(60),
        || {
            let probes = probe_containers(bed);
            async move {
                match probes
                    .iter()
                    .find(|(key, _, _)| key == "otel/platform-probe-go")
                {
                    Some((_, image, privileged))
                        if image == "registry.local/probe:debug" && *privileged =>
                    {
                        Ok(())
                    }
                    other => Err(format!("otel/platform-probe-go: {other:?}")),
                }
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", operator.tail()));

    let config = kubectl_json(
        bed,
        &["get", "configmap", "platform-probe-go", "-n", "otel"],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let config = ferrotel_api::probe_config::ProbeConfig::from_yaml(
        config["data"]["probe.yaml"].as_str().unwrap_or_default(),
    )
    .unwrap_or_else(|e| panic!("the platform probe's config parses: {e}"));
    assert!(
        config.views.pod_resources.all_pods,
        "the class allows allPods, so the probes report every pod on their nodes: {:?}",
        config.views
    );

    // Nothing of alice's reached a node with another image or privileges.
    for (key, image, privileged) in probe_containers(bed) {
        if key.starts_with(&format!("{team}/")) {
            panic!("alice still has a probe DaemonSet: {key} {image} privileged={privileged}");
        }
        assert!(
            image != "evil.example/probe:1" && !(privileged && key != "otel/platform-probe-go"),
            "{key} runs {image} privileged={privileged}"
        );
    }

    for (name, ns) in [("shop", team.as_str()), ("platform", "otel")] {
        let mut delete = kubectl(bed);
        delete.args([
            "delete",
            "instrumentation",
            name,
            "-n",
            ns,
            "--wait",
            "--timeout=60s",
        ]);
        run(delete, None).unwrap_or_else(|e| {
            panic!(
                "delete {ns}/{name}: {e}\noperator log:\n{}",
                operator.tail()
            )
        });
    }
    let mut delete = kubectl(bed);
    delete.args(["delete", "probeclass", "platform"]);
    run(delete, None).unwrap_or_else(|e| panic!("delete the ProbeClass: {e}"));
}
