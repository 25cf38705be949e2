//! A settled operator is quiet: counted from outside, in the API server's
//! audit log of the operator's own user.
//!
//! 1. Pod churn that changes nothing the operator reports (pods created and
//!    deleted in a namespace nobody instruments, labels changed on an
//!    instrumented pod) reaches its opt-in watch and re-evaluates the
//!    Instrumentation, but sends no request at all.
//! 2. After `kill -9` and a restart on the settled cluster, every CR is
//!    reconciled again with zero write requests, and no stored object
//!    changes.
//! 3. Drift still heals: a probe ConfigMap edited by someone else is applied
//!    back.
//!
//! The operator runs as the test bed's restricted user bound to the
//! install's ClusterRole, so its requests are the only ones of that user.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use ferrotel_e2e::{
    TestBed, TestBedOptions,
    audit::{AuditLog, AuditRequest, AuditTrail, summary},
    operator::{OperatorProcess, kubectl, kubectl_json, stored_state, workload_status},
    wait_for,
};

const TIMEOUT: Duration = Duration::from_secs(120);
/// How long the operator must send nothing to count as settled.
const QUIET: Duration = Duration::from_secs(5);
const NS: &str = "otel";
/// Instrumented by the sample (`ferrotel.io/instrument: "true"`).
const APPS: &str = "shop";
/// Instrumented by nobody.
const OTHER: &str = "quiet-other";

fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn start_operator(bed: &TestBed, dir: &Path, run: usize) -> OperatorProcess {
    let args: Vec<String> = ["--log-format", "text", "--log-level", "info"]
        .iter()
        .map(|a| (*a).to_owned())
        .collect();
    OperatorProcess::start(
        bed.restricted_kubeconfig(),
        &args,
        &[],
        &dir.join(format!("operator-{run}.log")),
    )
    .unwrap_or_else(|e| panic!("start the operator: {e}"))
}

/// Finished reconciles per controller, from `/metrics`.
async fn reconciles(op: &OperatorProcess, controller: &str) -> Result<u64, String> {
    let body = op.metrics().await?;
    Ok(body
        .lines()
        .find(|l| {
            l.starts_with("ferrotel_operator_reconcile_duration_seconds_count")
                && l.contains(&format!("controller=\"{controller}\""))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64))
}

fn apply(bed: &TestBed, yaml: &str) {
    kubectl(bed, &["apply", "--server-side", "-f", "-"], Some(yaml))
        .unwrap_or_else(|e| panic!("apply {yaml}: {e}"));
}

fn pod(namespace: &str, name: &str, node: &str, labels: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {namespace}, labels: {{{labels}}}}}\n\
         spec: {{nodeName: {node}, containers: [{{name: app, image: registry.invalid/app:1}}]}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settled_operator_sends_nothing_on_pod_churn_and_writes_nothing_on_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let user = ferrotel_e2e::pki::RESTRICTED_USER;
    let mut options = TestBedOptions::default();
    let audit_path = options
        .audit_user(user, dir.path())
        .expect("write the audit policy");
    let bed = TestBed::start(options)
        .await
        .unwrap_or_else(|e| panic!("start the test bed: {e}"));
    let node = bed.node_names()[0].clone();
    let mut audit = AuditTrail::new(AuditLog::new(audit_path));

    // The install: CRDs, the operator's ClusterRole bound to the restricted
    // user, the probes' ClusterRole and binding; then the samples.
    ferrotel_e2e::stack::install_crds(bed.kubeconfig()).unwrap_or_else(|e| panic!("{e}"));
    for file in [
        "config/rbac/role.yaml",
        "config/rbac/probe_role.yaml",
        "config/rbac/probe_role_binding.yaml",
        "config/samples/namespace.yaml",
        "config/samples/telemetrycollector.yaml",
        "config/samples/instrumentation.yaml",
    ] {
        let path = repo_path(file);
        kubectl(
            &bed,
            &[
                "apply",
                "--server-side",
                "-f",
                path.to_str().expect("utf-8"),
            ],
            None,
        )
        .unwrap_or_else(|e| panic!("apply {file}: {e}"));
    }
    apply(
        &bed,
        &format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\n\
             metadata: {{name: quiet-operator}}\n\
             roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: ferrotel-operator}}\n\
             subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {user}}}]\n\
             ---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {OTHER}}}\n"
        ),
    );
    apply(&bed, &pod(APPS, "app-0", &node, "tier: web"));

    let mut op = start_operator(&bed, dir.path(), 1);
    op.wait_ready().await.unwrap_or_else(|e| panic!("{e}"));

    // Settled: every probe DaemonSet up to date, the app pod counted, the
    // collector serving an endpoint, and then nothing sent. (Readiness is
    // not waited for: on a loaded machine kwok's heartbeats lag and the
    // workload controllers may take minutes to count the pods ready.)
    wait_for("the probes and the collector rolled out", TIMEOUT, || {
        let alive = op.alive();
        let inst = kubectl_json(&bed, &["get", "instrumentation", "default", "-n", NS]);
        let tc = kubectl_json(
            &bed,
            &["get", "telemetrycollector", "otel-collector", "-n", NS],
        );
        let result = alive.and(inst).and_then(|inst| {
            let tc = tc?;
            let languages = inst["status"]["languages"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let rolled_out = languages.len() == 2
                && languages
                    .iter()
                    .all(|l| l["desired"].as_i64() > Some(0) && l["updated"] == l["desired"]);
            if !rolled_out || inst["status"]["matchedPods"] != 1 {
                return Err(format!("Instrumentation status: {}", inst["status"]));
            }
            if tc["status"]["endpoints"]
                .as_array()
                .is_none_or(Vec::is_empty)
            {
                return Err(format!("TelemetryCollector status: {}", tc["status"]));
            }
            Ok(())
        });
        async move { result }
    })
    .await
    .unwrap_or_else(|e| {
        let pods = kubectl(
            &bed,
            &["get", "daemonsets,deployments,pods", "-A", "-o", "wide"],
            None,
        );
        panic!("{e}\nworkloads: {pods:?}\noperator log:\n{}", op.tail())
    });
    audit
        .wait_quiet("after the first rollout", QUIET, TIMEOUT)
        .await;

    // 1. Pod churn that changes nothing the operator reports.
    let workloads = workload_status(&bed, NS);
    let mark = audit.mark();
    let before = reconciles(&op, "instrumentation")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for i in 0..3 {
        apply(
            &bed,
            &pod(OTHER, &format!("churn-{i}"), &node, "tier: batch"),
        );
        apply(
            &bed,
            &pod(APPS, "app-0", &node, &format!("tier: web, round: r{i}")),
        );
    }
    kubectl(
        &bed,
        &["delete", "pods", "--all", "-n", OTHER, "--wait=false"],
        None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // The churn reached the operator: the Instrumentation was re-evaluated.
    wait_for("a re-evaluation after the pod churn", TIMEOUT, || {
        let op = &op;
        async move {
            let now = reconciles(op, "instrumentation").await?;
            if now > before {
                Ok(())
            } else {
                Err(format!(
                    "{now} Instrumentation reconciles, {before} before the churn"
                ))
            }
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", op.tail()));
    audit
        .wait_quiet("after the pod churn", QUIET, TIMEOUT)
        .await;
    assert_eq!(
        workload_status(&bed, NS),
        workloads,
        "inconclusive: the workloads' status moved during the churn window (the operator \
         rightly reports that); rerun on a less loaded machine"
    );
    let churn: Vec<AuditRequest> = audit
        .since(mark)
        .into_iter()
        .filter(|r| r.verb != "watch")
        .collect();
    assert!(
        churn.is_empty(),
        "pod churn that changes nothing must cost no request; the operator sent {:?}",
        summary(&churn)
    );

    // 2. kill -9 and restart on the settled cluster.
    let state = stored_state(&bed, NS);
    let workloads = workload_status(&bed, NS);
    op.process.kill();
    let mark = audit.mark();
    let mut op = start_operator(&bed, dir.path(), 2);
    op.wait_ready().await.unwrap_or_else(|e| panic!("{e}"));
    wait_for(
        "the restarted operator reconciled both CRs",
        TIMEOUT,
        || {
            let op = &op;
            async move {
                let inst = reconciles(op, "instrumentation").await?;
                let tc = reconciles(op, "collector").await?;
                if inst >= 1 && tc >= 1 {
                    Ok(())
                } else {
                    Err(format!(
                        "reconciles: instrumentation {inst}, collector {tc}"
                    ))
                }
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", op.tail()));
    audit.wait_quiet("after the restart", QUIET, TIMEOUT).await;
    assert_eq!(
        workload_status(&bed, NS),
        workloads,
        "inconclusive: the workloads' status moved during the restart (the operator rightly \
         reports that); rerun on a less loaded machine"
    );
    let requests = audit.since(mark);
    let writes: Vec<AuditRequest> = requests.iter().filter(|r| r.is_write()).cloned().collect();
    eprintln!(
        "the restarted operator sent {} requests: {:?}",
        requests.len(),
        summary(&requests)
    );
    assert!(
        writes.is_empty(),
        "a restart on a settled cluster must write nothing; the operator sent {:?}",
        summary(&writes)
    );
    assert_eq!(
        stored_state(&bed, NS),
        state,
        "a restart on a settled cluster must change no stored object"
    );

    // 3. Drift made by someone else is applied back.
    let cm = "default-probe-go";
    let original = kubectl_json(&bed, &["get", "configmap", cm, "-n", NS])
        .unwrap_or_else(|e| panic!("{e}"))["data"]
        .clone();
    kubectl(
        &bed,
        &[
            "patch",
            "configmap",
            cm,
            "-n",
            NS,
            "--type=merge",
            "-p",
            r#"{"data":{"probe.yaml":"edited by hand"}}"#,
        ],
        None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    wait_for("the edited probe ConfigMap applied back", TIMEOUT, || {
        let now =
            kubectl_json(&bed, &["get", "configmap", cm, "-n", NS]).map(|c| c["data"].clone());
        let original = original.clone();
        async move {
            match now {
                Ok(data) if data == original => Ok(()),
                Ok(data) => Err(format!("data is {data}")),
                Err(e) => Err(e),
            }
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", op.tail()));
    op.process.terminate(Duration::from_secs(10));
}
