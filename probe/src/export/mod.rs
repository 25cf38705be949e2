//! OTLP export: a bounded span queue drained in batches, periodic metric
//! snapshots, over gRPC or HTTP/protobuf, with retries. Profiles (when
//! profiling is on) go through the same batch exporter as spans, from a
//! queue of process windows bounded by their estimated size
//! ([`crate::profile::export_queue`]).
//!
//! Spans: the pipeline pushes into a [`queue::BoundedQueue`]; the trace
//! exporter takes a batch when `maxExportBatchSize` spans are waiting or
//! every `scheduledDelayMillis`, and retries a batch that failed with a
//! retryable error (exponential backoff 100 ms → 5 s with jitter, honouring
//! `Retry-After`) until it is accepted or the probe shuts down. The batch
//! under retry stays counted in the queue, so memory is bounded by
//! `maxQueueSize` spans whatever the outage length.
//!
//! Metrics: cumulative histograms, so a snapshot that fails is not retried:
//! the next one carries the same counts plus the new ones.

pub mod client;
pub mod debug;
pub mod prometheus;
pub mod queue;
pub mod settings;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferrotel_api::probe_endpoints::metrics as metric_names;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::resource::v1::Resource;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::health::Health;
use crate::profile::{self, model::Profile};
use crate::telemetry::metrics::{MetricProducer, data_point_count, scope};
use crate::telemetry::pipeline::QueuedSpan;
use crate::telemetry::semconv::string_kv;
use client::{ExportError, OtlpClient};
use queue::BoundedQueue;

/// Backoff between retries of one batch.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

impl Backoff {
    /// The wait before retry number `attempt` (0-based): exponential, capped,
    /// with ±25 % jitter so that many probes do not retry in lockstep.
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = self
            .initial
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max);
        let jitter: f64 = 0.75 + rand::random::<f64>() * 0.5;
        base.mul_f64(jitter)
    }
}

/// The OTLP resource of a process (spans, profiles).
pub fn resource_proto(resource: &crate::telemetry::resource::ProcessResource) -> Resource {
    Resource {
        attributes: resource
            .attributes
            .iter()
            .map(|(k, v)| string_kv(k, v))
            .collect(),
        ..Default::default()
    }
}

/// Groups spans by resource into one encoded export request: the bytes
/// prost writes for an `ExportTraceServiceRequest` of one `ResourceSpans`
/// per resource (in the order each first appears) holding one `ScopeSpans`,
/// with the spans' own bytes copied in, never decoded or re-measured.
pub fn encode_traces_request(batch: Vec<QueuedSpan>) -> Bytes {
    use prost::Message;
    use prost::encoding::{self as pb, WireType};
    /// Bytes of a length-delimited field whose payload is `len` bytes.
    fn field_len(tag: u32, len: usize) -> usize {
        pb::key_len(tag) + pb::encoded_len_varint(len as u64) + len
    }
    fn field_header(tag: u32, len: usize, out: &mut Vec<u8>) {
        pb::encode_key(tag, WireType::LengthDelimited, out);
        pb::encode_varint(len as u64, out);
    }
    struct Group {
        resource: Vec<u8>,
        spans: Vec<Vec<u8>>,
    }
    let mut groups: Vec<Group> = Vec::new();
    let mut index: HashMap<*const crate::telemetry::resource::ProcessResource, usize> =
        HashMap::new();
    for QueuedSpan { resource, encoded } in batch {
        let key = Arc::as_ptr(&resource);
        let i = *index.entry(key).or_insert_with(|| {
            groups.push(Group {
                resource: resource_proto(&resource).encode_to_vec(),
                spans: Vec::new(),
            });
            groups.len() - 1
        });
        groups[i].spans.push(encoded);
    }
    let scope = scope().encode_to_vec();
    // (ResourceSpans length, ScopeSpans length) per group.
    let lengths: Vec<(usize, usize)> = groups
        .iter()
        .map(|group| {
            let scope_spans = field_len(1, scope.len())
                + group
                    .spans
                    .iter()
                    .map(|span| field_len(2, span.len()))
                    .sum::<usize>();
            let resource_spans = field_len(1, group.resource.len()) + field_len(2, scope_spans);
            (resource_spans, scope_spans)
        })
        .collect();
    let total = lengths.iter().map(|(r, _)| field_len(1, *r)).sum();
    let mut out = Vec::with_capacity(total);
    for (group, (resource_spans, scope_spans)) in groups.iter().zip(&lengths) {
        field_header(1, *resource_spans, &mut out);
        field_header(1, group.resource.len(), &mut out);
        out.extend_from_slice(&group.resource);
        field_header(2, *scope_spans, &mut out);
        field_header(1, scope.len(), &mut out);
        out.extend_from_slice(&scope);
        for span in &group.spans {
            field_header(2, span.len(), &mut out);
            out.extend_from_slice(span);
        }
    }
    debug_assert_eq!(out.len(), total);
    Bytes::from(out)
}

/// An item of a signal exported in batches: how one batch becomes one
/// encoded OTLP request. One implementation per signal, so every path that
/// exports it encodes it the same way.
pub trait BatchItem: Send + Sized + 'static {
    fn encode(batch: Vec<Self>) -> Bytes;
}

impl BatchItem for QueuedSpan {
    fn encode(batch: Vec<Self>) -> Bytes {
        encode_traces_request(batch)
    }
}

/// Profile windows ([`crate::profile::export_queue`]).
impl BatchItem for Arc<Profile> {
    fn encode(batch: Vec<Self>) -> Bytes {
        client::encode_profiles(&profile::otlp::request(&batch))
    }
}

/// How often at most a full export queue is reported in the log.
pub const QUEUE_FULL_WARN_INTERVAL: Duration = Duration::from_secs(10);

/// Turns the queue's `queue_full` drop counter into a warning at most every
/// [`QUEUE_FULL_WARN_INTERVAL`]: a queue overflows when spans arrive faster
/// than the collector takes them, which no export error shows (every export
/// succeeds, just too slowly), so without it the loss is only in a metric.
#[derive(Debug, Default)]
struct QueueFullReport {
    reported: u64,
    last_warning: Option<Instant>,
}

impl QueueFullReport {
    /// The items dropped since the last warning, when a warning is due now.
    fn due(&mut self, dropped_total: u64, now: Instant) -> Option<u64> {
        let new = dropped_total.saturating_sub(self.reported);
        let quiet = self
            .last_warning
            .is_none_or(|at| now.duration_since(at) >= QUEUE_FULL_WARN_INTERVAL);
        if new == 0 || !quiet {
            return None;
        }
        self.reported = dropped_total;
        self.last_warning = Some(now);
        Some(new)
    }

    fn check<T>(&mut self, queue: &BoundedQueue<T>, health: &Health, signal: &'static str) {
        let total = health.export_dropped_total(signal, "queue_full");
        if let Some(dropped) = self.due(total, Instant::now()) {
            warn!(
                signal,
                dropped,
                capacity = queue.capacity(),
                "The export queue was full: the collector took items slower than they arrived, and the newest were dropped (counted in ferrotel_probe_export_dropped_items_total{{reason=\"queue_full\"}}). Raise exporter.maxQueueSize for bursts, or give the collector more CPU or replicas for a sustained rate"
            );
        }
    }
}

/// Drains `queue` until it is closed and empty (or `shutdown_grace` after
/// closing has passed while the collector is still failing): a batch is
/// taken when a full one is waiting or every `scheduled_delay`, encoded
/// once ([`BatchItem::encode`]), and sent on `client`'s signal until the
/// collector accepts it, a permanent error drops it, or the grace ends.
/// Spans and profiles are exported this way.
pub async fn run_batch_exporter<T: BatchItem>(
    queue: Arc<BoundedQueue<T>>,
    client: OtlpClient,
    scheduled_delay: Duration,
    backoff: Backoff,
    shutdown_grace: Duration,
    health: Health,
) {
    let signal = client.settings().signal.as_str();
    let mut closed_at: Option<Instant> = None;
    let mut queue_full = QueueFullReport::default();
    loop {
        queue_full.check(&queue, &health, signal);
        if !queue.is_closed() && !queue.has_full_batch() {
            tokio::select! {
                () = queue.wait_ready() => {}
                () = tokio::time::sleep(scheduled_delay) => {}
            }
        }
        if queue.is_closed() && closed_at.is_none() {
            closed_at = Some(Instant::now());
            debug!(
                signal,
                queued = queue.queued(),
                "Flushing the export queue before exit"
            );
        }
        loop {
            let batch = queue.take_batch();
            if batch.is_empty() {
                break;
            }
            let n = batch.len();
            // Encoded once: retries resend the same bytes.
            let body = T::encode(batch);
            let mut attempt = 0;
            loop {
                match client.export_encoded(body.clone()).await {
                    Ok(()) => {
                        health.export_request(signal, metric_names::EXPORT_RESULT_OK);
                        health.exported(signal, n as u64);
                        if attempt > 0 {
                            info!(
                                signal,
                                items = n,
                                attempts = attempt + 1,
                                "Collector accepted a batch after retries"
                            );
                        }
                        break;
                    }
                    Err(err) => {
                        let deadline_passed =
                            closed_at.is_some_and(|t| t.elapsed() >= shutdown_grace);
                        if !err.retryable || deadline_passed {
                            let reason = if err.retryable {
                                "shutdown"
                            } else {
                                "permanent_error"
                            };
                            health.export_request(
                                signal,
                                if err.retryable {
                                    "retryable"
                                } else {
                                    "permanent"
                                },
                            );
                            health.export_dropped(signal, reason, n as u64);
                            warn!(error = %err, signal, items = n, reason, "Dropped an export batch");
                            break;
                        }
                        health.export_request(signal, "retryable");
                        health.export_retry(signal);
                        let delay = wait_for(&err, &backoff, attempt);
                        if attempt == 0 {
                            warn!(error = %err, signal, items = n, "Export failed; retrying with backoff");
                        } else {
                            debug!(error = %err, signal, attempt, ?delay, "Retrying export");
                        }
                        attempt += 1;
                        sleep_unless_closing(&queue, delay, closed_at.is_some()).await;
                        if queue.is_closed() && closed_at.is_none() {
                            closed_at = Some(Instant::now());
                        }
                    }
                }
            }
            queue.complete();
            queue_full.check(&queue, &health, signal);
            if !queue.is_closed() && !queue.has_full_batch() {
                break;
            }
        }
        if queue.is_closed() && queue.queued() == 0 {
            debug!(signal, "Exporter finished");
            return;
        }
    }
}

fn wait_for(err: &ExportError, backoff: &Backoff, attempt: u32) -> Duration {
    let delay = backoff.delay(attempt);
    err.retry_after
        .map_or(delay, |after| after.max(delay).min(Duration::from_secs(30)))
}

/// Sleeps `delay`, but wakes early when the queue closes so that a shutdown
/// during an outage gets its final attempts in without waiting out a long
/// backoff.
async fn sleep_unless_closing<T>(queue: &BoundedQueue<T>, delay: Duration, already_closing: bool) {
    if already_closing {
        tokio::time::sleep(delay.min(Duration::from_millis(200))).await;
        return;
    }
    let deadline = Instant::now() + delay;
    while Instant::now() < deadline && !queue.is_closed() {
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {}
            () = queue.wait_ready() => {
                // Woken by a full batch arriving: keep waiting unless closed.
                if !queue.is_closed() {
                    tokio::time::sleep(Duration::from_millis(20).min(deadline.saturating_duration_since(Instant::now()))).await;
                }
            }
        }
    }
}

/// Exports a metrics snapshot every `interval` and once more when
/// `shutdown` fires; prunes series idle for an hour (an exited process's
/// after a minute).
pub async fn run_metrics_exporter(
    producers: Vec<Arc<dyn MetricProducer>>,
    client: OtlpClient,
    interval: Duration,
    health: Health,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let signal = "metrics";
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        let last = tokio::select! {
            _ = ticker.tick() => false,
            () = shutdown.cancelled() => true,
        };
        let mut resource_metrics = Vec::new();
        for producer in &producers {
            producer.prune_idle(Duration::from_secs(3600));
            resource_metrics.extend(producer.resource_metrics());
        }
        if !resource_metrics.is_empty() {
            let request = ExportMetricsServiceRequest { resource_metrics };
            let points = data_point_count(&request);
            match client.export_metrics(request).await {
                Ok(()) => {
                    health.export_request(signal, metric_names::EXPORT_RESULT_OK);
                    health.exported(signal, points);
                }
                Err(err) => {
                    // Cumulative: the next snapshot carries these counts.
                    health.export_request(
                        signal,
                        if err.retryable {
                            "retryable"
                        } else {
                            "permanent"
                        },
                    );
                    warn!(error = %err, "Metrics export failed; the next interval resends the cumulative values");
                }
            }
        }
        if last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::clock::ClockOffsets;
    use crate::telemetry::resource::ProcessResource;
    use crate::telemetry::semconv::{encode_span, tests::varied_records, to_span};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
    use prost::Message;

    #[test]
    fn a_full_queue_is_warned_about_once_per_interval_with_what_was_dropped_since() {
        let start = Instant::now();
        let mut report = QueueFullReport::default();
        assert_eq!(report.due(0, start), None, "nothing dropped, nothing said");
        assert_eq!(report.due(5, start), Some(5));
        assert_eq!(
            report.due(9, start + Duration::from_secs(1)),
            None,
            "too soon"
        );
        assert_eq!(
            report.due(12, start + QUEUE_FULL_WARN_INTERVAL),
            Some(7),
            "everything since the last warning, also what came while it was quiet"
        );
        assert_eq!(
            report.due(12, start + 3 * QUEUE_FULL_WARN_INTERVAL),
            None,
            "no new drops"
        );
    }

    #[test]
    fn a_batch_encodes_as_the_request_prost_writes_grouped_by_resource() {
        let clock = ClockOffsets::fixed(1_000, 500);
        let resource = |name: &str| {
            Arc::new(ProcessResource {
                attributes: [("service.name".to_owned(), name.to_owned())].into(),
            })
        };
        let (shop, cart) = (resource("shop"), resource("cart"));
        // Interleaved: the groups keep the order each resource first appears.
        let owners = [&shop, &cart, &shop, &shop, &cart, &cart, &shop];
        let records = varied_records();
        let batch: Vec<QueuedSpan> = records
            .iter()
            .zip(owners)
            .map(|(record, owner)| QueuedSpan {
                resource: Arc::clone(owner),
                encoded: encode_span(record, None, &clock),
            })
            .collect();
        let group = |owner: &Arc<ProcessResource>| ResourceSpans {
            resource: Some(resource_proto(owner)),
            scope_spans: vec![ScopeSpans {
                scope: Some(scope()),
                spans: records
                    .iter()
                    .zip(owners)
                    .filter(|(_, o)| Arc::ptr_eq(o, owner))
                    .map(|(record, _)| to_span(record, None, &clock))
                    .collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        };
        let expected = ExportTraceServiceRequest {
            resource_spans: vec![group(&shop), group(&cart)],
        };
        assert_eq!(
            encode_traces_request(batch).as_ref(),
            expected.encode_to_vec().as_slice()
        );
        assert!(encode_traces_request(Vec::new()).is_empty());
    }

    #[test]
    fn backoff_grows_exponentially_with_jitter_and_a_cap() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        };
        for attempt in 0..20 {
            let base = (100.0 * 2f64.powi(attempt as i32)).min(5000.0);
            let d = b.delay(attempt).as_secs_f64() * 1000.0;
            assert!(
                d >= base * 0.75 - 1e-6 && d <= base * 1.25 + 1e-6,
                "attempt {attempt}: {d} ms not within 25% of {base}"
            );
        }
    }
}
