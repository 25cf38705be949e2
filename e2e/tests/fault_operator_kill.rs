//! Fault: the operator is killed (`SIGKILL`) in the middle of a reconcile.
//!
//! Several CRs change at once (one Instrumentation gains a language and a
//! resource attribute, one TelemetryCollector gains a processor, three
//! Instrumentations and three TelemetryCollectors are new), and the operator
//! is killed as soon as the API server's audit log shows the first child
//! written for that change. After a restart:
//!
//! 1. every child converges to the changed specs (the new language's probe
//!    DaemonSet, the new attribute in the probe config, the new processor in
//!    the collector config, the new CRs' children, the probes'
//!    ClusterRoleBinding naming every probe ServiceAccount), and every CR's
//!    status reports its current generation;
//! 2. a second `kill -9` and restart on the settled cluster sends zero write
//!    requests and changes no stored object.
//!
//! Counted from outside, in the audit log of the operator's own user (the
//! test bed's restricted user bound to the install's ClusterRole), like
//! `quiet_operator.rs`.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use ferrotel_e2e::{
    TestBed, TestBedOptions,
    audit::{AuditLog, AuditRequest, AuditTrail, summary},
    operator::{
        OperatorProcess, kubectl, kubectl_json, probe_binding_subjects, stored_state,
        workload_status,
    },
    wait_for,
};

const TIMEOUT: Duration = Duration::from_secs(120);
/// How long the operator must send nothing to count as settled.
const QUIET: Duration = Duration::from_secs(5);
const NS: &str = "faults";
/// CRs created by the change (besides the two changed ones).
const NEW: usize = 3;
/// The kinds of the children the operator writes (not its CRs' status,
/// not Events).
const CHILD_RESOURCES: [&str; 6] = [
    "configmaps",
    "serviceaccounts",
    "services",
    "daemonsets",
    "deployments",
    "clusterrolebindings",
];

fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn is_child_write(r: &AuditRequest) -> bool {
    r.is_write() && CHILD_RESOURCES.contains(&r.resource.as_str())
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

/// An Instrumentation of the opted-in namespaces (there are none: the
/// probes have nothing to trace, the CRs nothing to compete for), exporting
/// to `collector`.
fn instrumentation(name: &str, languages: &str, environment: &str, collector: &str) -> String {
    format!(
        "apiVersion: ferrotel.io/v1alpha1\nkind: Instrumentation\n\
         metadata: {{name: {name}, namespace: {NS}}}\n\
         spec:\n  languages: [{languages}]\n  exporter: {{collectorRef: {{name: {collector}}}}}\n\
         \x20 resource: {{attributes: {{deployment.environment: {environment}}}}}\n---\n"
    )
}

/// A TelemetryCollector; `batch` adds a batch processor to its pipeline.
fn collector(name: &str, batch: bool) -> String {
    let (processors, list) = if batch {
        ("\n    processors: {batch: {timeout: 1s}}", "[batch]")
    } else {
        ("", "[]")
    };
    format!(
        "apiVersion: ferrotel.io/v1alpha1\nkind: TelemetryCollector\n\
         metadata: {{name: {name}, namespace: {NS}}}\n\
         spec:\n  mode: deployment\n  config:\n\
         \x20   receivers: {{otlp: {{protocols: {{grpc: {{endpoint: \"0.0.0.0:4317\"}}}}}}}}\n\
         \x20   exporters: {{debug: {{verbosity: basic}}}}{processors}\n\
         \x20   service: {{pipelines: {{traces: {{receivers: [otlp], processors: {list}, exporters: [debug]}}}}}}\n---\n"
    )
}

/// `(instrumentations, collectors)` after the change: name, languages.
fn desired() -> (Vec<(String, Vec<&'static str>)>, Vec<String>) {
    let mut instrumentations = vec![("base".to_owned(), vec!["go", "python"])];
    let mut collectors = vec!["base-col".to_owned()];
    for i in 0..NEW {
        instrumentations.push((format!("extra-{i}"), vec!["go", "python"]));
        collectors.push(format!("col-{i}"));
    }
    (instrumentations, collectors)
}

/// Why the children are not (yet) what the changed specs ask for; `Ok` when
/// they are and every CR's status reports its generation.
fn converged(bed: &TestBed) -> Result<(), String> {
    let (instrumentations, collectors) = desired();
    let children = kubectl_json(
        bed,
        &[
            "get",
            "configmaps,serviceaccounts,daemonsets,deployments",
            "-n",
            NS,
            "-l",
            "app.kubernetes.io/managed-by=ferrotel-operator",
        ],
    )?;
    let items = children["items"].as_array().cloned().unwrap_or_default();
    let find = |kind: &str, name: &str| {
        items
            .iter()
            .find(|i| i["kind"] == kind && i["metadata"]["name"] == name)
            .cloned()
    };
    let mut accounts = Vec::new();
    for (name, languages) in &instrumentations {
        let inst = kubectl_json(bed, &["get", "instrumentation", name, "-n", NS])?;
        if inst["status"]["observedGeneration"] != inst["metadata"]["generation"] {
            return Err(format!("Instrumentation {name} status: {}", inst["status"]));
        }
        for language in languages {
            let child = format!("{name}-probe-{language}");
            for kind in ["ConfigMap", "ServiceAccount", "DaemonSet"] {
                find(kind, &child).ok_or_else(|| format!("no {kind} {child}"))?;
            }
            let config = find("ConfigMap", &child).expect("checked").to_string();
            if name == "base" && !config.contains("changed") {
                return Err(format!(
                    "ConfigMap {child} lacks the changed resource attribute"
                ));
            }
            accounts.push(format!("{NS}/{child}"));
        }
        let stray: Vec<String> = items
            .iter()
            .filter_map(|i| i["metadata"]["name"].as_str())
            .filter(|n| {
                n.starts_with(&format!("{name}-probe-"))
                    && !languages.iter().any(|l| *n == format!("{name}-probe-{l}"))
            })
            .map(str::to_owned)
            .collect();
        if !stray.is_empty() {
            return Err(format!("children of no language of {name}: {stray:?}"));
        }
    }
    let subjects = probe_binding_subjects(bed)?;
    let missing: Vec<&String> = accounts.iter().filter(|a| !subjects.contains(a)).collect();
    if !missing.is_empty() {
        return Err(format!(
            "the probes' ClusterRoleBinding lacks {missing:?}: {subjects:?}"
        ));
    }
    for name in &collectors {
        let tc = kubectl_json(bed, &["get", "telemetrycollector", name, "-n", NS])?;
        if tc["status"]["observedGeneration"] != tc["metadata"]["generation"] {
            return Err(format!(
                "TelemetryCollector {name} status: {}",
                tc["status"]
            ));
        }
        let workload = format!("{name}-collector");
        let deployment =
            find("Deployment", &workload).ok_or_else(|| format!("no Deployment {workload}"))?;
        find("ServiceAccount", &workload).ok_or_else(|| format!("no ServiceAccount {workload}"))?;
        let config_map = deployment["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|v| v["configMap"]["name"].as_str())
            .ok_or_else(|| format!("Deployment {workload} mounts no ConfigMap"))?
            .to_owned();
        let config = find("ConfigMap", &config_map)
            .ok_or_else(|| format!("no ConfigMap {config_map} (mounted by {workload})"))?
            .to_string();
        if name == "base-col" && !config.contains("batch") {
            return Err(format!("ConfigMap {config_map} lacks the added processor"));
        }
        if tc["status"]["configHash"]
            .as_str()
            .is_none_or(str::is_empty)
            || !config_map.ends_with(tc["status"]["configHash"].as_str().unwrap_or("?"))
        {
            return Err(format!(
                "TelemetryCollector {name} reports config hash {} but runs {config_map}",
                tc["status"]["configHash"]
            ));
        }
    }
    Ok(())
}

/// Waits until the restarted operator finished at least `n` reconciles of
/// each controller (each CR once).
async fn wait_reconciled(op: &OperatorProcess, n: u64) {
    wait_for(
        "the restarted operator reconciled every CR",
        TIMEOUT,
        || async move {
            let inst = reconciles(op, "instrumentation").await?;
            let tc = reconciles(op, "collector").await?;
            if inst >= n && tc >= n {
                Ok(())
            } else {
                Err(format!(
                    "reconciles: instrumentation {inst}, collector {tc}"
                ))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", op.tail()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_killed_mid_reconcile_converges_on_restart_and_a_second_restart_writes_nothing()
{
    let dir = tempfile::tempdir().expect("temp dir");
    let user = ferrotel_e2e::pki::RESTRICTED_USER;
    let mut options = TestBedOptions {
        nodes: 1,
        ..TestBedOptions::default()
    };
    let audit_path = options
        .audit_user(user, dir.path())
        .expect("write the audit policy");
    let bed = TestBed::start(options)
        .await
        .unwrap_or_else(|e| panic!("start the test bed: {e}"));
    let mut audit = AuditTrail::new(AuditLog::new(audit_path));

    ferrotel_e2e::stack::install_crds(bed.kubeconfig()).unwrap_or_else(|e| panic!("{e}"));
    let role = repo_path("config/rbac/role.yaml");
    kubectl(
        &bed,
        &[
            "apply",
            "--server-side",
            "-f",
            role.to_str().expect("utf-8"),
        ],
        None,
    )
    .unwrap_or_else(|e| panic!("apply the operator's ClusterRole: {e}"));
    apply(
        &bed,
        &format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\n\
             metadata: {{name: fault-operator}}\n\
             roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: ferrotel-operator}}\n\
             subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {user}}}]\n\
             ---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {NS}}}\n"
        ),
    );
    // Before the change: one Instrumentation (Go only) and one collector.
    apply(
        &bed,
        &(instrumentation("base", "go", "before", "base-col") + &collector("base-col", false)),
    );
    let mut op = start_operator(&bed, dir.path(), 1);
    op.wait_ready().await.unwrap_or_else(|e| panic!("{e}"));
    wait_for("the first rollout", TIMEOUT, || {
        let inst = kubectl_json(&bed, &["get", "instrumentation", "base", "-n", NS]);
        let tc = kubectl_json(&bed, &["get", "telemetrycollector", "base-col", "-n", NS]);
        let ds = kubectl_json(&bed, &["get", "daemonset", "base-probe-go", "-n", NS]);
        async move {
            let (inst, tc, _) = (inst?, tc?, ds?);
            if inst["status"]["observedGeneration"] == 1 && tc["status"]["observedGeneration"] == 1
            {
                Ok(())
            } else {
                Err(format!("statuses: {} {}", inst["status"], tc["status"]))
            }
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", op.tail()));
    audit
        .wait_quiet("after the first rollout", QUIET, TIMEOUT)
        .await;

    // The change, in one request, and the kill at its first child write.
    let mut change =
        instrumentation("base", "go, python", "changed", "base-col") + &collector("base-col", true);
    for i in 0..NEW {
        change += &instrumentation(&format!("extra-{i}"), "go, python", "new", "base-col");
        change += &collector(&format!("col-{i}"), false);
    }
    let mark = audit.mark();
    // Applied from another thread: the audit log is watched from the
    // moment kubectl starts, not once it has returned (by then the
    // operator may have written much of the change).
    let applying = {
        let kubeconfig = bed.kubeconfig().to_owned();
        std::thread::spawn(move || ferrotel_e2e::stack::kubectl_apply(&kubeconfig, &change))
    };
    let first_write = {
        let deadline = std::time::Instant::now() + TIMEOUT;
        loop {
            let requests = audit.since(mark);
            if let Some(first) = requests.iter().find(|r| is_child_write(r)) {
                break first.clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the operator wrote no child for the change: {:?}\noperator log:\n{}",
                summary(&requests),
                op.tail()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    op.process.kill();
    applying
        .join()
        .expect("the apply thread")
        .unwrap_or_else(|e| panic!("apply the change: {e}"));
    let before_kill = audit.since(mark);
    let killed_writes: Vec<AuditRequest> = before_kill
        .iter()
        .filter(|r| is_child_write(r))
        .cloned()
        .collect();
    eprintln!(
        "killed after the first child write ({} {} {}): {} child writes done before the kill: {:?}",
        first_write.verb,
        first_write.resource,
        first_write.name,
        killed_writes.len(),
        summary(&killed_writes)
    );
    let at_kill = converged(&bed);
    eprintln!("children at the kill: {at_kill:?}");
    assert!(
        at_kill.is_err(),
        "inconclusive: everything was written before the kill landed; rerun"
    );

    // 1. The restart converges.
    let mark = audit.mark();
    let mut op = start_operator(&bed, dir.path(), 2);
    op.wait_ready().await.unwrap_or_else(|e| panic!("{e}"));
    wait_for("the children of the changed CRs", TIMEOUT, || {
        let result = op.alive().and_then(|()| converged(&bed));
        async move { result }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", op.tail()));
    audit.wait_quiet("after the restart", QUIET, TIMEOUT).await;
    let restart_writes: Vec<AuditRequest> = audit
        .since(mark)
        .into_iter()
        .filter(is_child_write)
        .collect();
    eprintln!(
        "the restarted operator wrote {} children to finish the change: {:?}",
        restart_writes.len(),
        summary(&restart_writes)
    );
    assert!(
        !restart_writes.is_empty(),
        "the restarted operator had children left to write (the kill was mid-reconcile)"
    );
    converged(&bed).unwrap_or_else(|e| panic!("after settling: {e}"));

    // 2. A second kill -9 and restart on the settled cluster writes nothing.
    let state = stored_state(&bed, NS);
    let workloads = workload_status(&bed, NS);
    op.process.kill();
    let mark = audit.mark();
    let op = start_operator(&bed, dir.path(), 3);
    let mut op = op;
    op.wait_ready().await.unwrap_or_else(|e| panic!("{e}"));
    wait_reconciled(&op, 1 + NEW as u64).await;
    audit
        .wait_quiet("after the second restart", QUIET, TIMEOUT)
        .await;
    assert_eq!(
        workload_status(&bed, NS),
        workloads,
        "inconclusive: the workloads' status moved during the second restart (the operator \
         rightly reports that); rerun on a less loaded machine"
    );
    let requests = audit.since(mark);
    let writes: Vec<AuditRequest> = requests.iter().filter(|r| r.is_write()).cloned().collect();
    eprintln!(
        "the second restart sent {} requests, {} writes: {:?}; load average {}",
        requests.len(),
        writes.len(),
        summary(&requests),
        ferrotel_e2e::faults::load_average()
    );
    assert!(
        writes.is_empty(),
        "a restart on the settled cluster must write nothing; the operator sent {:?}",
        summary(&writes)
    );
    assert_eq!(
        stored_state(&bed, NS),
        state,
        "a restart on the settled cluster must change no stored object"
    );
    op.process.terminate(Duration::from_secs(10));
}
