//! Fault: the kube-apiserver is stopped and started again (same flags,
//! same etcd, same port) while the operator runs as the chart's pod and the
//! probe DaemonSets trace a Go service under steady load on the real node.
//!
//! Checked afterwards:
//! - the operator reconnects: a TelemetryCollector created after the
//!   restart gets its Deployment and a status for its generation (whether
//!   the operator kept its process or left on a lost leader lease and was
//!   restarted by the kubelet is printed);
//! - the probe reconnects: a Go pod created after the restart is named in
//!   its spans (the probe learnt about it from a pod watch opened again);
//! - the probes did not restart, and for the target traced before the
//!   fault no request lost its span and none got two (every request of the
//!   load carries its number in its path; the collector's spans are counted
//!   per number).
//!
//! Needs root (a real node) and fails saying so.

use std::time::{Duration, Instant};

use ferrotel_e2e::faults::{self, Account, ITEMS, SIDE_SEQ, SeqLoad};
use ferrotel_e2e::stack;
use ferrotel_e2e::wait_for;

const LOAD_INTERVAL: Duration = Duration::from_millis(20);
/// How long the API server stays down.
const DOWN: Duration = Duration::from_secs(5);
/// Load after the reconnect checks, before the count.
const AFTER: Duration = Duration::from_secs(5);
const TIMEOUT: Duration = Duration::from_secs(120);

fn kubectl_json(bed: &ferrotel_e2e::TestBed, args: &[&str]) -> Result<serde_json::Value, String> {
    ferrotel_e2e::operator::kubectl_json(bed, args)
}

/// `(name, restarts)` of the operator pods of the chart.
fn operator_restarts(bed: &ferrotel_e2e::TestBed) -> Result<Vec<(String, i64)>, String> {
    let list = kubectl_json(
        bed,
        &[
            "get",
            "pods",
            "-n",
            stack::CHART_NAMESPACE,
            "-l",
            "app.kubernetes.io/component=operator",
        ],
    )?;
    Ok(list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                p["status"]["containerStatuses"][0]["restartCount"]
                    .as_i64()
                    .unwrap_or(0),
            )
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_apiserver_restart_operator_and_probes_reconnect_and_no_span_is_lost_or_doubled() {
    let (stack, apps, target) = faults::stack_with_traced_target()
        .await
        .unwrap_or_else(|e| panic!("a traced Go target on a real node: {e}"));
    let (bed, observability) = (&stack.bed, stack.observability.clone());
    let client = bed.client();
    let mut probe_restarts = Vec::new();
    for language in ["go", "python"] {
        let pods = faults::probe_pods(&client, &observability, "default", language)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(pods.len(), 1, "one {language} probe pod");
        probe_restarts.push((
            pods[0].metadata.name.clone().unwrap_or_default(),
            faults::restarts(&pods[0]),
        ));
    }
    let operator_before = operator_restarts(bed).unwrap_or_else(|e| panic!("{e}"));

    let load = SeqLoad::start(target.addr(), ITEMS.to_owned(), LOAD_INTERVAL, 1);
    wait_for("the load traced", TIMEOUT, || async {
        let spans = stack.backend.spans().map_err(|e| e.to_string())?;
        let seen = faults::server_spans_per_seq(&spans, &target.pod, ITEMS);
        if seen.keys().any(|s| *s < SIDE_SEQ) {
            Ok(())
        } else {
            Err("no span of the load yet".to_owned())
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    // The fault.
    let stopped_at = Instant::now();
    bed.restart_apiserver(DOWN)
        .await
        .unwrap_or_else(|e| panic!("restarting the API server: {e}"));
    let outage = stopped_at.elapsed();
    eprintln!(
        "API server stopped and ready again after {:.1} s ({} s down by design); load average {}",
        outage.as_secs_f64(),
        DOWN.as_secs(),
        faults::load_average()
    );
    let client = bed.client();

    // The operator reconciles a CR created after the restart.
    let restarted_at = Instant::now();
    stack::kubectl_apply(
        bed.kubeconfig(),
        &format!(
            "apiVersion: {api}\nkind: TelemetryCollector\n\
             metadata: {{name: after-restart, namespace: {observability}}}\n\
             spec:\n  mode: deployment\n  config:\n\
             \x20   receivers: {{otlp: {{protocols: {{grpc: {{endpoint: \"0.0.0.0:4317\"}}}}}}}}\n\
             \x20   exporters: {{debug: {{verbosity: basic}}}}\n\
             \x20   service: {{pipelines: {{traces: {{receivers: [otlp], exporters: [debug]}}}}}}\n",
            api = stack::API_VERSION
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    wait_for(
        "the operator to reconcile a collector created after the restart",
        TIMEOUT,
        || async {
            let tc = kubectl_json(
                bed,
                &[
                    "get",
                    "telemetrycollector",
                    "after-restart",
                    "-n",
                    &observability,
                ],
            )?;
            kubectl_json(
                bed,
                &[
                    "get",
                    "deployment",
                    "after-restart-collector",
                    "-n",
                    &observability,
                ],
            )?;
            if tc["status"]["observedGeneration"] == tc["metadata"]["generation"] {
                Ok(())
            } else {
                Err(format!("status {}", tc["status"]))
            }
        },
    )
    .await
    .unwrap_or_else(|e| {
        let logs = operator_restarts(bed)
            .unwrap_or_default()
            .iter()
            .map(|(pod, _)| stack::pod_logs(bed, stack::CHART_NAMESPACE, pod, false))
            .collect::<Vec<_>>()
            .join("\n");
        panic!("{e}\noperator log:\n{logs}")
    });
    let operator_after = restarted_at.elapsed();
    let operator_now = operator_restarts(bed).unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "the operator reconciled a new collector {:.1} s after the API server was back; its pods \
         and restarts before {operator_before:?}, after {operator_now:?}",
        operator_after.as_secs_f64()
    );
    // A restarted operator says why its last run ended.
    for (pod, restarts) in &operator_now {
        if operator_before
            .iter()
            .any(|(p, r)| p == pod && r < restarts)
        {
            let previous = stack::pod_logs(bed, stack::CHART_NAMESPACE, pod, true);
            let last: Vec<&str> = previous.lines().rev().take(3).collect();
            eprintln!("operator {pod} restarted; its last run ended with: {last:?}");
        }
    }
    // Deleted without waiting: its pod would only load the node.
    ferrotel_e2e::operator::kubectl(
        bed,
        &[
            "delete",
            "telemetrycollector",
            "after-restart",
            "-n",
            &observability,
            "--wait=false",
        ],
        None,
    )
    .unwrap_or_else(|e| panic!("{e}"));

    // The probe names a pod created after the restart.
    let late_started = Instant::now();
    let late = faults::traced_go_target(&stack, &apps, "late", SIDE_SEQ)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{e}\nGo probe log:\n{}",
                stack::pod_logs(bed, &observability, &probe_restarts[0].0, false)
            )
        });
    eprintln!(
        "the Go probe named pod {} (created after the restart) {:.1} s after its Deployment was applied",
        late.pod,
        late_started.elapsed().as_secs_f64()
    );

    tokio::time::sleep(AFTER).await;
    let sent = load.stop().await;
    let spans = faults::settled_spans(&stack.backend, &target.pod, &sent)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let account = Account::new(&sent, &spans);
    eprintln!(
        "API server restart: {} requests sent to the traced target ({} answered), {} with exactly \
         one server span, {} missing {:?}, {} duplicated, {} spans for unknown numbers; load average {}",
        account.sent,
        account.answered,
        account.one_span,
        account.missing.len(),
        faults::ranges(&account.missing),
        account.duplicated.len(),
        account.unknown,
        faults::load_average()
    );
    assert!(
        account.duplicated.is_empty(),
        "no request may get two server spans across an API server restart: {:?}",
        account.duplicated
    );
    assert!(
        account.missing.is_empty(),
        "no request may lose its span across an API server restart: missing {:?}",
        faults::ranges(&account.missing)
    );
    assert_eq!(
        account.one_span, account.answered,
        "every answered request has exactly one span"
    );
    for (language, (pod, before)) in ["go", "python"].iter().zip(&probe_restarts) {
        let pods = faults::probe_pods(&client, &observability, "default", language)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let now: Vec<(String, i32)> = pods
            .iter()
            .map(|p| {
                (
                    p.metadata.name.clone().unwrap_or_default(),
                    faults::restarts(p),
                )
            })
            .collect();
        assert_eq!(
            now,
            vec![(pod.clone(), *before)],
            "the {language} probe rode out the outage in its process (same pod, no restart)"
        );
    }
}
