//! `kubectl ferrotel` against the real API server of the test bed: its
//! errors name what failed and the fix — no kubeconfig, a missing RBAC
//! permission (with the verb and resource, and the `kubectl auth can-i` to
//! check it), a probe the API server cannot reach — and `why` applies the
//! opt-in rules to real objects. It runs as a kubectl plugin too.
//!
//! The user is the bed's restricted user (ClusterRole `view` only); the
//! test binds the CLI's own roles (`config/rbac/cli_role.yaml`) step by
//! step and checks what each unlocks. The probe here is a pod object on a
//! kwok node (its IP leads nowhere), so reaching it through the pod proxy
//! fails the way an unreachable probe does; real probes answering real
//! traffic are in `cli_stack.rs`.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use ferrotel_e2e::stack::{install_crds, install_crypto_provider, kubectl_apply, workspace_root};
use ferrotel_e2e::{TestBed, wait_for, workspace_binary};

fn cli(kubeconfig: &Path, args: &[&str]) -> Output {
    let binary = workspace_binary("kubectl-ferrotel").unwrap_or_else(|e| panic!("{e}"));
    Command::new(binary)
        .env("KUBECONFIG", kubeconfig)
        .env("NO_COLOR", "1")
        .args(args)
        .output()
        .expect("kubectl-ferrotel runs")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[track_caller]
fn assert_fails_with(out: &Output, words: &[&str]) {
    let (stdout, stderr) = text(out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected a failure; stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for word in words {
        assert!(
            stderr.contains(word),
            "{word:?} missing from the error:\n{stderr}"
        );
    }
}

#[track_caller]
fn succeeds(out: &Output) -> String {
    let (stdout, stderr) = text(out);
    assert!(
        out.status.success(),
        "expected success; stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_what_failed_and_the_fix_and_why_applies_the_opt_in_rules() {
    install_crypto_provider();
    let bed = TestBed::shared();
    install_crds(bed.kubeconfig()).unwrap_or_else(|e| panic!("{e}"));
    let user = bed.restricted_user();
    let as_user = bed.restricted_kubeconfig();

    // No kubeconfig at all.
    let home = tempfile::tempdir().expect("tempdir");
    let binary = workspace_binary("kubectl-ferrotel").unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(&binary)
        .env_clear()
        .env("HOME", home.path())
        .env("KUBECONFIG", home.path().join("missing"))
        .arg("status")
        .output()
        .expect("runs");
    assert_fails_with(
        &out,
        &[
            "no usable kubeconfig",
            "set KUBECONFIG or pass --kubeconfig",
        ],
    );

    // The restricted user may read pods but not Ferrotel's resources.
    assert_fails_with(
        &cli(as_user, &["status"]),
        &[
            "not allowed to list telemetrycollectors.ferrotel.io at the cluster scope",
            "ferrotel-cli-viewer",
            "kubectl auth can-i list telemetrycollectors.ferrotel.io -A",
        ],
    );

    // The viewer role, bound as docs/cli.md says.
    let roles = std::fs::read_to_string(workspace_root().join("config/rbac/cli_role.yaml"))
        .expect("cli_role.yaml");
    kubectl_apply(bed.kubeconfig(), &roles).unwrap_or_else(|e| panic!("{e}"));
    let viewer = format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {{name: cli-e2e-viewer}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: ferrotel-cli-viewer}}\n\
         subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {user}}}]\n"
    );
    kubectl_apply(bed.kubeconfig(), &viewer).unwrap_or_else(|e| panic!("{e}"));
    let status = succeeds(&cli(as_user, &["status"]));
    assert!(status.contains("PROBLEMS"), "{status}");

    // An Instrumentation with one probe pod on kwok-node-0, and an app pod
    // next to it in a namespace that is not opted in.
    let probes = bed.create_namespace("cli-probes").await;
    let shop = bed.create_namespace("cli-shop").await;
    let node = bed.node_names()[0].clone();
    kubectl_apply(
        bed.kubeconfig(),
        &format!(
            r#"apiVersion: ferrotel.io/v1alpha1
kind: Instrumentation
metadata: {{name: default, namespace: {probes}}}
spec: {{languages: [go], exporter: {{endpoint: "http://otel:4317"}}}}
---
apiVersion: v1
kind: Pod
metadata:
  name: default-probe-go-e2e
  namespace: {probes}
  labels:
    app.kubernetes.io/name: ferrotel-probe
    app.kubernetes.io/instance: default
    ferrotel.io/probe-language: go
spec:
  nodeName: {node}
  containers: [{{name: probe, image: registry.invalid/probe:1, ports: [{{name: metrics, containerPort: 9464}}]}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: web, namespace: {shop}, labels: {{app: web}}}}
spec:
  nodeName: {node}
  containers: [{{name: app, image: registry.invalid/web:1}}]
"#
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));

    // kwok makes the pods Running and Ready; the CLI asks only ready probes.
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(bed.client(), &probes);
    wait_for(
        "the probe pod to be Ready",
        Duration::from_secs(60),
        || async {
            let pod = pods
                .get("default-probe-go-e2e")
                .await
                .map_err(|e| e.to_string())?;
            let ready = pod
                .status
                .and_then(|s| s.conditions)
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            if ready {
                Ok(())
            } else {
                Err("not Ready".to_string())
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    let why = |extra: &[&str]| {
        let mut args = vec!["why", "web", "-n", shop.as_str(), "-o", "json"];
        args.extend(extra);
        let out = succeeds(&cli(as_user, &args));
        serde_json::from_str::<serde_json::Value>(&out)
            .unwrap_or_else(|e| panic!("why -o json is JSON ({e}):\n{out}"))
    };
    let answer = why(&[]);
    assert_eq!(answer["reason"], "notOptedIn", "{answer:#}");
    assert!(
        answer["fix"].as_str().is_some_and(|f| f.contains(&format!(
            "kubectl annotate namespace {shop} ferrotel.io/instrument=true"
        ))),
        "{answer:#}"
    );
    // The probe on the node was asked and refused by RBAC: said, not hidden.
    let probe_error = answer["probes"][0]["error"].as_str().unwrap_or_default();
    assert!(
        probe_error.contains("not allowed to get pods/proxy")
            && probe_error.contains(&format!("kubectl auth can-i get pods/proxy -n {probes}")),
        "{answer:#}"
    );

    // Opted in: now the probe's answer is what decides, and RBAC stops it.
    let out = bed
        .kubectl()
        .args([
            "annotate",
            "namespace",
            &shop,
            "ferrotel.io/instrument=true",
        ])
        .output()
        .expect("kubectl");
    assert!(out.status.success(), "{out:?}");
    let answer = why(&[]);
    assert_eq!(answer["reason"], "probeUnreachable", "{answer:#}");
    assert_eq!(answer["optIn"][0]["decision"], "claimed");
    assert_eq!(
        answer["optIn"][0]["instrumentation"],
        format!("{probes}/default")
    );
    assert!(
        answer["verdict"]
            .as_str()
            .is_some_and(|v| v.contains("ferrotel-cli-probe-proxy")),
        "{answer:#}"
    );

    // The probe proxy role in the probes' namespace: the request reaches the
    // API server's proxy, which cannot reach a kwok pod's IP (no route, or a
    // network that refuses the destination: either way the probe did not
    // answer, and that is what the CLI must say — not a permission problem).
    kubectl_apply(
        bed.kubeconfig(),
        &format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: cli-e2e-probes, namespace: {probes}}}\n\
             roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: ferrotel-cli-probe-proxy}}\n\
             subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {user}}}]\n"
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let answer = why(&[]);
    assert_eq!(answer["reason"], "probeUnreachable", "{answer:#}");
    let verdict = answer["verdict"].as_str().unwrap_or_default();
    assert!(
        verdict.contains("did not answer /debug/processes") && !verdict.contains("not allowed"),
        "{answer:#}"
    );

    // stat finds the probe but cannot read it: the error says why.
    assert_fails_with(
        &cli(as_user, &["stat", "-n", &shop, "--window", "1s"]),
        &[
            "no probe answered through the API server",
            "did not answer /metrics",
        ],
    );
    // tap on a namespace nobody opted in names the fix.
    let dark = bed.create_namespace("cli-dark").await;
    kubectl_apply(
        bed.kubeconfig(),
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: dark, namespace: {dark}}}\n\
             spec: {{nodeName: {node}, containers: [{{name: app, image: registry.invalid/dark:1}}]}}\n"
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_fails_with(
        &cli(as_user, &["tap", "-n", &dark, "--max", "1"]),
        &[
            "none of the 1 pods in scope is opted in",
            &format!("kubectl annotate namespace {dark} ferrotel.io/instrument=true"),
        ],
    );

    // As a kubectl plugin: kubectl finds kubectl-ferrotel on the PATH.
    let kubectl = ferrotel_e2e::tool_path("kubectl");
    let dir = binary.parent().expect("target dir");
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(kubectl)
        .env("PATH", path)
        .env("KUBECONFIG", as_user)
        .args(["ferrotel", "why", "web", "-n", &shop, "-o", "yaml"])
        .output()
        .expect("kubectl runs");
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success() && stdout.contains("reason: probeUnreachable"),
        "kubectl ferrotel: {stdout}\n{stderr}"
    );
}
