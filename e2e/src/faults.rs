//! What the fault tests share: a steady, sequence-numbered load and its
//! accounting at the collector — every request carries its own number in
//! its path (`<prefix><n>`), so that the server spans a collector received
//! can be counted per request, none missing, none twice, across a fault
//! (the Rust counterpart of the reliability soak's
//! `bench/ferrobench/seq.py`) — and, on the real node, a traced Go target
//! and the host processes of a pod.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;

use crate::stack::{self, App, AppPod, RealStack};
use crate::{Collector, Result, Span, wait_for};

/// The Go target's route: `GET /api/items/<n>` (the demo backend).
pub const ITEMS: &str = "/api/items/";
/// Warm-up and probing requests carry numbers from here on, apart from the
/// load's.
pub const SIDE_SEQ: u64 = 1_000_000;
const SPAN_TIMEOUT: Duration = Duration::from_secs(120);

/// One request of the driver.
#[derive(Debug, Clone)]
pub struct Sent {
    pub seq: u64,
    /// When it was sent.
    pub at: Instant,
    /// Its HTTP status, `None` when it got no answer.
    pub status: Option<u16>,
}

/// A load driver sending `GET <prefix><n>` to `addr` every `interval`, one
/// request at a time (a new connection each, as a client would after an
/// idle period), until stopped.
#[derive(Debug)]
pub struct SeqLoad {
    sent: Arc<Mutex<Vec<Sent>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl SeqLoad {
    /// Starts the driver on the current tokio runtime; numbers start at
    /// `first`.
    pub fn start(addr: String, prefix: String, interval: Duration, first: u64) -> SeqLoad {
        let sent = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = {
            let (sent, stop) = (sent.clone(), stop.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut seq = first;
                while !stop.load(Ordering::SeqCst) {
                    tick.tick().await;
                    let at = Instant::now();
                    let status = crate::stack::http_get(&addr, &format!("{prefix}{seq}"))
                        .await
                        .ok()
                        .map(|(code, _)| code);
                    sent.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(Sent { seq, at, status });
                    seq += 1;
                }
            })
        };
        SeqLoad { sent, stop, task }
    }

    /// What was sent so far.
    pub fn sent(&self) -> Vec<Sent> {
        self.sent.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The number the next request will carry (one past the last sent).
    pub fn next_seq(&self) -> Option<u64> {
        self.sent().last().map(|s| s.seq + 1)
    }

    /// Stops after the request in flight and returns every request sent.
    pub async fn stop(self) -> Vec<Sent> {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.task.await;
        self.sent.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The sequence number in `text` after `prefix` (digits up to the first
/// non-digit), if any.
pub fn seq_in(text: &str, prefix: &str) -> Option<u64> {
    let rest = &text[text.find(prefix)? + prefix.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Server spans (kind 2) of pod `pod` per sequence number of `prefix`.
pub fn server_spans_per_seq(spans: &[Span], pod: &str, prefix: &str) -> BTreeMap<u64, usize> {
    let mut out = BTreeMap::new();
    for span in spans {
        if span.kind != 2 || span.resource_str("k8s.pod.name") != Some(pod) {
            continue;
        }
        let path = span
            .attr_str("url.path")
            .or_else(|| span.attr_str("http.target"))
            .unwrap_or(span.name.as_str());
        if let Some(seq) = seq_in(path, prefix) {
            *out.entry(seq).or_default() += 1;
        }
    }
    out
}

/// The accounting of a run: requests against server spans.
#[derive(Debug, Clone, Default)]
pub struct Account {
    pub sent: usize,
    pub answered: usize,
    /// Answered requests with exactly one server span.
    pub one_span: usize,
    /// Answered requests without a span, by number.
    pub missing: Vec<u64>,
    /// Requests with more than one span: `(seq, spans)`.
    pub duplicated: Vec<(u64, usize)>,
    /// Spans for numbers the driver never sent.
    pub unknown: usize,
}

impl Account {
    pub fn new(sent: &[Sent], spans: &BTreeMap<u64, usize>) -> Account {
        let mut account = Account {
            sent: sent.len(),
            ..Account::default()
        };
        for s in sent {
            let n = spans.get(&s.seq).copied().unwrap_or(0);
            if s.status.is_some() {
                account.answered += 1;
                match n {
                    0 => account.missing.push(s.seq),
                    1 => account.one_span += 1,
                    _ => {}
                }
            }
            if n > 1 {
                account.duplicated.push((s.seq, n));
            }
        }
        account.unknown = spans
            .iter()
            .filter(|(seq, _)| !sent.iter().any(|s| s.seq == **seq))
            .map(|(_, n)| n)
            .sum();
        account
    }
}

/// `[first, last]` runs of consecutive numbers, for messages.
pub fn ranges(seqs: &[u64]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &s in seqs {
        match out.last_mut() {
            Some((_, last)) if *last + 1 == s => *last = s,
            _ => out.push((s, s)),
        }
    }
    out
}

/// The 1-, 5- and 15-minute load averages, for the figures a test prints.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The chart's stack on a real node with a Go target traced in a fresh
/// opted-in namespace (`faults-…`): what every fault test on the real node
/// starts from. Returns the stack, the namespace and the target.
pub async fn stack_with_traced_target() -> Result<(RealStack, String, AppPod)> {
    let stack = RealStack::start().await?;
    let apps = stack.bed.create_namespace("faults").await;
    stack::annotate_namespace(
        &stack.bed.client(),
        &apps,
        "ferrotel.io/instrument",
        Some("true"),
    )
    .await?;
    let target = traced_go_target(&stack, &apps, "target", SIDE_SEQ).await?;
    Ok((stack, apps, target))
}

/// Deploys the demo's Go backend (no injected errors) as `name` in
/// `namespace` (which must be opted in) and waits until the Go probe traces
/// it: a server span of its pod at `stack`'s backend. Requests of the warm-up
/// carry numbers from `side` on.
pub async fn traced_go_target(
    stack: &RealStack,
    namespace: &str,
    name: &str,
    side: u64,
) -> Result<AppPod> {
    let app = App {
        name: name.to_owned(),
        image: stack.images.backend.reference.clone(),
        args: vec!["--addr=0.0.0.0:8080".into(), "--error-rate=0".into()],
        port: 8080,
        ..App::default()
    };
    let pod = stack::deploy_app(&stack.bed.client(), namespace, &app).await?;
    wait_traced(&stack.backend, &pod, side).await?;
    Ok(pod)
}

/// Sends requests numbered from `side` on to `pod` until one of them shows
/// as a server span of the pod at `backend`.
pub async fn wait_traced(backend: &Collector, pod: &AppPod, side: u64) -> Result<()> {
    let next = std::sync::atomic::AtomicU64::new(side);
    wait_for(
        &format!("a server span of {} at the collector", pod.pod),
        SPAN_TIMEOUT,
        || async {
            let seq = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            stack::http_get(&pod.addr(), &format!("{ITEMS}{seq}"))
                .await
                .map_err(|e| format!("GET {ITEMS}{seq}: {e}"))?;
            let spans = backend.spans().map_err(|e| e.to_string())?;
            if server_spans_per_seq(&spans, &pod.pod, ITEMS)
                .keys()
                .any(|s| *s >= side)
            {
                Ok(())
            } else {
                Err(format!("{} requests, no server span yet", seq - side + 1))
            }
        },
    )
    .await
}

/// Waits until every answered request of `sent` has a span at `backend`, or
/// until the counts stop changing across two reads a few export intervals
/// apart (the rest is lost); returns the spans per number.
pub async fn settled_spans(
    backend: &Collector,
    pod: &str,
    sent: &[Sent],
) -> Result<BTreeMap<u64, usize>> {
    let read = || -> Result<BTreeMap<u64, usize>> {
        let mut spans = server_spans_per_seq(&backend.spans()?, pod, ITEMS);
        spans.retain(|seq, _| *seq < SIDE_SEQ);
        Ok(spans)
    };
    let deadline = Instant::now() + SPAN_TIMEOUT;
    let mut last = read()?;
    loop {
        if sent
            .iter()
            .all(|s| s.status.is_none() || last.contains_key(&s.seq))
        {
            return Ok(last);
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        let now = read()?;
        if now == last || Instant::now() >= deadline {
            return Ok(now);
        }
        last = now;
    }
}

/// The pods of the `language` probe DaemonSet of Instrumentation
/// `instrumentation` in `namespace` that are not being deleted.
pub async fn probe_pods(
    client: &kube::Client,
    namespace: &str,
    instrumentation: &str,
    language: &str,
) -> Result<Vec<Pod>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let list = pods
        .list(&ListParams::default().labels(&format!(
            "app.kubernetes.io/instance={instrumentation},ferrotel.io/probe-language={language}"
        )))
        .await
        .map_err(|source| crate::Error::Kube {
            context: format!("list the {language} probe pods in {namespace}"),
            source,
        })?;
    Ok(list
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect())
}

/// Restarts of the first container of `pod`.
pub fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .map_or(0, |c| c.restart_count)
}

/// Host pids of the processes named `comm` in the pod with UID `uid` (its
/// cgroup, in the kubelet's cgroupfs layout `.../pod<uid>/<container>`).
pub fn host_pids_in_pod(uid: &str, comm: &str) -> Vec<i32> {
    host_pids_with(&format!("pod{uid}/"), comm)
}

/// Host pids of every process named `comm` in any pod of the node whose
/// cgroup root is `root` (e.g. `/ferrotel-node-0`).
pub fn host_pids_under(root: &str, comm: &str) -> Vec<i32> {
    host_pids_with(&format!("{root}/"), comm)
}

fn host_pids_with(cgroup_part: &str, comm: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let path = entry.path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if name.trim_end() == comm
            && std::fs::read_to_string(path.join("cgroup")).is_ok_and(|c| c.contains(cgroup_part))
        {
            pids.push(pid);
        }
    }
    pids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_read_after_their_prefix_and_counted_per_request() {
        assert_eq!(seq_in("/api/items/123?x=1", "/api/items/"), Some(123));
        assert_eq!(seq_in("GET /api/items/7", "/api/items/"), Some(7));
        assert_eq!(seq_in("/api/items/", "/api/items/"), None);
        assert_eq!(seq_in("/other/5", "/api/items/"), None);
        let now = Instant::now();
        let sent: Vec<Sent> = (1..=5)
            .map(|seq| Sent {
                seq,
                at: now,
                status: (seq != 5).then_some(200),
            })
            .collect();
        let spans = BTreeMap::from([(1, 1), (2, 2), (4, 1), (9, 1)]);
        let account = Account::new(&sent, &spans);
        assert_eq!(
            (account.sent, account.answered, account.one_span),
            (5, 4, 2)
        );
        assert_eq!(account.missing, vec![3]);
        assert_eq!(account.duplicated, vec![(2, 2)]);
        assert_eq!(account.unknown, 1);
        assert_eq!(ranges(&[1, 2, 3, 7, 9, 10]), vec![(1, 3), (7, 7), (9, 10)]);
    }
}
