//! Fault: the Go probe's process is killed (`SIGKILL` through its host
//! pid) on the real node while it traces a Go service under steady load;
//! the kubelet restarts its container.
//!
//! Checked afterwards: exactly one probe pod and one probe process per
//! language (no duplicate), the target traced again (spans flow for
//! requests sent after the restart, each exactly once), no request ever
//! gets two spans. Loss during the gap is expected: it is measured and
//! printed — the requests sent between the kill and the first request traced
//! again, the spans received for them, and the spans the killed process
//! still held (requests answered before the kill that never reached the
//! collector).
//!
//! Needs root (a real node) and fails saying so.

use std::time::{Duration, Instant};

use ferrotel_e2e::faults::{self, Account, ITEMS, SIDE_SEQ, SeqLoad};
use ferrotel_e2e::stack;
use ferrotel_e2e::wait_for;

const LOAD_INTERVAL: Duration = Duration::from_millis(20);
/// Load after the target is traced again, before the count.
const AFTER: Duration = Duration::from_secs(5);
const TIMEOUT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_probe_is_restarted_once_and_traces_its_target_again_with_the_gap_measured() {
    let (stack, _apps, target) = faults::stack_with_traced_target()
        .await
        .unwrap_or_else(|e| panic!("a traced Go target on a real node: {e}"));
    let (bed, observability) = (&stack.bed, stack.observability.clone());
    let client = bed.client();

    let load = SeqLoad::start(target.addr(), ITEMS.to_owned(), LOAD_INTERVAL, 1);
    // Steady state: the load's own requests are traced.
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

    // The kill.
    let probes = faults::probe_pods(&client, &observability, "default", "go")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(probes.len(), 1, "one Go probe pod before the kill");
    let probe = probes[0].clone();
    let uid = probe.metadata.uid.clone().unwrap_or_default();
    let restarts_before = faults::restarts(&probe);
    let pids = faults::host_pids_in_pod(&uid, "ferrotel-probe");
    assert_eq!(
        pids.len(),
        1,
        "one Go probe process before the kill: {pids:?}"
    );
    let kill_seq = load.next_seq().expect("the load has sent");
    let killed_at = Instant::now();
    assert!(
        ferrotel_e2e::process::signal_pid(pids[0], libc::SIGKILL),
        "SIGKILL to the Go probe (host pid {})",
        pids[0]
    );
    eprintln!(
        "killed the Go probe (host pid {}) before request {kill_seq}; load average {}",
        pids[0],
        faults::load_average()
    );

    // The kubelet restarts the container in the same pod.
    let restarted = wait_for("the Go probe restarted and Ready", TIMEOUT, || async {
        let pods = faults::probe_pods(&client, &observability, "default", "go")
            .await
            .map_err(|e| e.to_string())?;
        match pods.as_slice() {
            [pod] if faults::restarts(pod) > restarts_before && stack::pod_ready(pod) => {
                Ok(pod.clone())
            }
            pods => Err(pods
                .iter()
                .map(stack::pod_problem)
                .collect::<Vec<_>>()
                .join(" | ")),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let ready_after = killed_at.elapsed();
    // Traced again: a request sent after the kill has its span.
    wait_for("the target traced again", TIMEOUT, || async {
        let spans = stack.backend.spans().map_err(|e| e.to_string())?;
        let seen = faults::server_spans_per_seq(&spans, &target.pod, ITEMS);
        if seen.range(kill_seq..SIDE_SEQ).next().is_some() {
            Ok(())
        } else {
            Err(format!("no span for a request from {kill_seq} on"))
        }
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}\nprobe log:\n{}",
            stack::pod_logs(
                bed,
                &observability,
                restarted.metadata.name.as_deref().unwrap_or_default(),
                false
            )
        )
    });
    tokio::time::sleep(AFTER).await;
    let sent = load.stop().await;
    let spans = faults::settled_spans(&stack.backend, &target.pod, &sent)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let account = Account::new(&sent, &spans);

    // The gap: from the kill to the first request traced again.
    let first_traced = *spans.range(kill_seq..).next().expect("checked above").0;
    let at = |seq: u64| {
        sent.iter()
            .find(|s| s.seq == seq)
            .map(|s| s.at)
            .expect("a sent request")
    };
    let gap = at(first_traced).saturating_duration_since(killed_at);
    let in_gap: Vec<u64> = sent
        .iter()
        .filter(|s| (kill_seq..first_traced).contains(&s.seq))
        .map(|s| s.seq)
        .collect();
    let gap_spans = in_gap.iter().filter(|s| spans.contains_key(s)).count();
    let lost_before: Vec<u64> = account
        .missing
        .iter()
        .copied()
        .filter(|s| *s < kill_seq)
        .collect();
    let lost_after: Vec<u64> = account
        .missing
        .iter()
        .copied()
        .filter(|s| *s >= first_traced)
        .collect();
    eprintln!(
        "probe kill: {} requests sent ({} answered), {} with exactly one server span, {} duplicated, \
         {} spans for unknown numbers",
        account.sent,
        account.answered,
        account.one_span,
        account.duplicated.len(),
        account.unknown
    );
    eprintln!(
        "probe kill: container Ready again {:.1} s after the kill; first request traced again sent \
         {:.1} s after the kill; {} requests sent in that gap, {} spans received for them ({} lost); \
         {} requests answered before the kill never reached the collector (held by the killed \
         probe); missing ranges {:?}; load average {}",
        ready_after.as_secs_f64(),
        gap.as_secs_f64(),
        in_gap.len(),
        gap_spans,
        in_gap.len() - gap_spans,
        lost_before.len(),
        faults::ranges(&account.missing),
        faults::load_average()
    );

    assert!(
        account.duplicated.is_empty(),
        "no request may get two server spans across a probe restart: {:?}",
        account.duplicated
    );
    assert!(
        lost_after.is_empty(),
        "once traced again, every request has its span; missing after request {first_traced}: {:?}",
        faults::ranges(&lost_after)
    );
    // Exactly one probe per language, in its pod and on the node.
    let root = bed.with_real_node(|n| n.network().cgroup_root());
    let mut uids = Vec::new();
    for language in ["go", "python"] {
        let pods = faults::probe_pods(&client, &observability, "default", language)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            pods.len(),
            1,
            "exactly one {language} probe pod after the restart: {:?}",
            pods.iter().map(stack::pod_problem).collect::<Vec<_>>()
        );
        let uid = pods[0].metadata.uid.clone().unwrap_or_default();
        let pids = faults::host_pids_in_pod(&uid, "ferrotel-probe");
        assert_eq!(
            pids.len(),
            1,
            "exactly one {language} probe process after the restart: {pids:?}"
        );
        uids.push(uid);
    }
    assert_eq!(
        uids[0], uid,
        "the Go probe was restarted in its pod, not replaced"
    );
    let all = faults::host_pids_under(&root, "ferrotel-probe");
    assert_eq!(
        all.len(),
        2,
        "two probe processes on the node (Go and Python), nothing left of the killed one: {all:?}"
    );
}
