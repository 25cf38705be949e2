//! The probe's own health counters, served on `/metrics` next to the RED
//! metrics, plus the readiness flag behind `/readyz`.
//!
//! Front-ends get a [`FrontendHealth`] (already labelled with their
//! language); the exporter and the pipeline use [`Health`] directly.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ferrotel_api::probe_config::Language;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

#[derive(Debug, Default)]
struct Metrics {
    events_received: Family<Labels, Counter>,
    kernel_events_dropped: Family<Labels, Counter>,
    parse_errors: Family<Labels, Counter>,
    attached_processes: Family<Labels, Gauge>,
    ring_buffer_bytes: Family<Labels, Gauge>,
    attach_refused: Family<Labels, Counter>,
    records_submitted: Counter,
    records_dropped: Family<Labels, Counter>,
    spans_unsampled: Counter,
    export_requests: Family<Labels, Counter>,
    export_retries: Family<Labels, Counter>,
    export_items: Family<Labels, Counter>,
    export_dropped: Family<Labels, Counter>,
    export_queue_items: Family<Labels, Gauge>,
    route_cardinality_capped: Counter,
    metric_attribute_capped: Family<Labels, Counter>,
    metric_series_capped: Counter,
    connections_untraced: Family<Labels, Counter>,
    propagation_requests: Family<Labels, Counter>,
    propagation_server_requests: Family<Labels, Counter>,
    propagation_refused: Family<Labels, Counter>,
    propagation_cgroups: Family<Labels, Gauge>,
    tls_untraced: Family<Labels, Counter>,
    tls_libraries: Family<Labels, Gauge>,
    tls_processes: Family<Labels, Gauge>,
    service_graph_overflow: Counter,
    service_graph_exchange: Family<Labels, Counter>,
    service_graph_exchange_calls: Family<Labels, Counter>,
    views_samples: Counter,
}

/// Shared health state. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Health {
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    /// Last kernel-side drop total seen per (language, source), to turn the
    /// kernel map's running totals into counter increments.
    kernel_totals: Arc<Mutex<HashMap<(Language, String), u64>>>,
}

impl Health {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers every health metric under `ferrotel_probe_` in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        let m = &self.metrics;
        let r = registry.sub_registry_with_prefix("ferrotel_probe");
        r.register(
            "events_received",
            "Events read from the kernel ring buffers",
            m.events_received.clone(),
        );
        r.register(
            "kernel_events_dropped",
            "Events the eBPF programs could not submit (ring buffer full), from the kernel-side counters",
            m.kernel_events_dropped.clone(),
        );
        r.register(
            "parse_errors",
            "Payloads the front-ends could not parse, by protocol",
            m.parse_errors.clone(),
        );
        r.register(
            "attached_processes",
            "Processes currently instrumented, by language",
            m.attached_processes.clone(),
        );
        r.register(
            "ring_buffer_bytes",
            "Size of the eBPF ring buffer as the kernel created it, by language",
            m.ring_buffer_bytes.clone(),
        );
        r.register(
            "attach_refused",
            "Processes the front-end refused to instrument, by reason (e.g. unknown_offsets)",
            m.attach_refused.clone(),
        );
        r.register(
            "records",
            "Completed requests handed to the telemetry pipeline",
            m.records_submitted.clone(),
        );
        r.register(
            "records_dropped",
            "Completed requests dropped before the pipeline (pipeline_full, shutdown)",
            m.records_dropped.clone(),
        );
        r.register(
            "spans_unsampled",
            "Requests not exported as spans by the sampler (still counted in metrics)",
            m.spans_unsampled.clone(),
        );
        r.register(
            "export_requests",
            "OTLP export requests, by signal and result",
            m.export_requests.clone(),
        );
        r.register(
            "export_retries",
            "OTLP export attempts retried after a retryable failure",
            m.export_retries.clone(),
        );
        r.register(
            "exported_items",
            "Spans or metric data points accepted by the collector",
            m.export_items.clone(),
        );
        r.register(
            "export_dropped_items",
            "Spans or metric data points dropped by the exporter, by reason",
            m.export_dropped.clone(),
        );
        r.register(
            "export_queue_items",
            "Spans or metric data points waiting in the export queue",
            m.export_queue_items.clone(),
        );
        r.register(
            "propagation_requests",
            "Outgoing HTTP/1 request heads seen by the propagation sk_msg program, by outcome (injected, published, app_context, no_context, head_too_large, not_http1, unframed, push_failed)",
            m.propagation_requests.clone(),
        );
        r.register(
            "propagation_server_requests",
            "Server requests whose context the kernel decided at request start, by origin (traceparent, b3, joined, new_trace)",
            m.propagation_server_requests.clone(),
        );
        r.register(
            "propagation_refused",
            "Times propagation could not be set up, for the probe (no_net_admin, no_cgroup2, kernel_unsupported, ...) or a process (root_cgroup, cgroup_attach_failed, ...)",
            m.propagation_refused.clone(),
        );
        r.register(
            "propagation_cgroups",
            "cgroups the propagation sockops program is attached to",
            m.propagation_cgroups.clone(),
        );
        r.register(
            "tls_untraced_processes",
            "Processes whose TLS connections cannot be traced, by reason (static_libssl, no_libssl)",
            m.tls_untraced.clone(),
        );
        r.register(
            "tls_libraries",
            "TLS library files (libssl) with uprobes attached, by language",
            m.tls_libraries.clone(),
        );
        r.register(
            "tls_processes",
            "Processes whose TLS library calls are probed (each gets uprobes of its own), by language",
            m.tls_processes.clone(),
        );
        r.register(
            "route_cardinality_capped",
            "Requests whose http.route was replaced by /** because the per-service cap was reached",
            m.route_cardinality_capped.clone(),
        );
        r.register(
            "metric_attribute_capped",
            "Observations whose attribute value (taken from traffic) was replaced by _OTHER because the per-resource cap of distinct values was reached, by attribute",
            m.metric_attribute_capped.clone(),
        );
        r.register(
            "connections_untraced",
            "Connections not traced (or no longer) because a memory cap was reached, by reason: connection_cap (too many tracked), abandoned (head bytes or pipelined requests over their cap)",
            m.connections_untraced.clone(),
        );
        r.register(
            "metric_series_capped",
            "Observations recorded in the otel.metric.overflow series because a resource's series cap per instrument was reached",
            m.metric_series_capped.clone(),
        );
        r.register(
            "service_graph_overflow",
            "Requests counted in the service graph's overflow series because the edge cap was reached",
            m.service_graph_overflow.clone(),
        );
        r.register(
            "service_graph_exchange",
            "Service-graph spans that found no partner in this probe, by outcome of the node-wide exchange with the node's other probes: named (the other end named from its entry), not_found (observed alone); unavailable counts once when the exchange map could not be opened",
            m.service_graph_exchange.clone(),
        );
        r.register(
            "service_graph_exchange_calls",
            "System calls on the node-wide service-graph exchange map, by call: write (one per connection end per publish interval, not per span), read (one per connection end per cache interval)",
            m.service_graph_exchange_calls.clone(),
        );
        r.register(
            "views_samples",
            "Readings of pod resources, node memory and TCP health taken by the views sampler",
            m.views_samples.clone(),
        );
    }

    /// A service-graph observation went to the overflow series.
    pub fn service_graph_overflow(&self) {
        self.metrics.service_graph_overflow.inc();
    }

    /// `n` more service-graph spans had the exchange `outcome` (`named`,
    /// `not_found`, `unavailable`).
    pub fn service_graph_exchange(&self, outcome: &'static str, n: u64) {
        self.metrics
            .service_graph_exchange
            .get_or_create(&vec![("outcome", outcome.to_owned())])
            .inc_by(n);
    }

    /// `n` more `call`s (`write`, `read`) on the exchange map.
    pub fn service_graph_exchange_calls(&self, call: &'static str, n: u64) {
        self.metrics
            .service_graph_exchange_calls
            .get_or_create(&vec![("call", call.to_owned())])
            .inc_by(n);
    }

    /// The views sampler finished one reading.
    pub fn views_sampled(&self) {
        self.metrics.views_samples.inc();
    }

    /// Readings the views sampler finished (tests wait on it).
    pub fn views_samples(&self) -> u64 {
        self.metrics.views_samples.get()
    }

    /// Health handle for a language front-end.
    pub fn frontend(&self, language: Language) -> FrontendHealth {
        FrontendHealth {
            health: self.clone(),
            language,
        }
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub(crate) fn record_submitted(&self) {
        self.metrics.records_submitted.inc();
    }
    pub(crate) fn record_dropped(&self, reason: &'static str) {
        self.metrics
            .records_dropped
            .get_or_create(&vec![("reason", reason.to_owned())])
            .inc();
    }
    pub fn records_submitted(&self) -> u64 {
        self.metrics.records_submitted.get()
    }
    pub fn records_dropped(&self, reason: &'static str) -> u64 {
        self.metrics
            .records_dropped
            .get_or_create(&vec![("reason", reason.to_owned())])
            .get()
    }
    pub(crate) fn span_unsampled(&self) {
        self.metrics.spans_unsampled.inc();
    }
    pub(crate) fn route_capped(&self) {
        self.metrics.route_cardinality_capped.inc();
    }
    pub(crate) fn metric_attribute_capped(&self, attribute: &'static str) {
        self.metrics
            .metric_attribute_capped
            .get_or_create(&vec![("attribute", attribute.to_owned())])
            .inc();
    }
    pub fn metric_attribute_capped_total(&self, attribute: &'static str) -> u64 {
        self.metrics
            .metric_attribute_capped
            .get_or_create(&vec![("attribute", attribute.to_owned())])
            .get()
    }
    pub(crate) fn metric_series_capped(&self) {
        self.metrics.metric_series_capped.inc();
    }
    pub fn metric_series_capped_total(&self) -> u64 {
        self.metrics.metric_series_capped.get()
    }

    /// One export request finished: `result` is `ok`, `retryable` or `permanent`.
    pub fn export_request(&self, signal: &'static str, result: &'static str) {
        self.metrics
            .export_requests
            .get_or_create(&vec![
                ("signal", signal.to_owned()),
                ("result", result.to_owned()),
            ])
            .inc();
    }
    pub fn export_retry(&self, signal: &'static str) {
        self.metrics
            .export_retries
            .get_or_create(&vec![("signal", signal.to_owned())])
            .inc();
    }
    pub fn exported(&self, signal: &'static str, items: u64) {
        self.metrics
            .export_items
            .get_or_create(&vec![("signal", signal.to_owned())])
            .inc_by(items);
    }
    pub fn exported_total(&self, signal: &'static str) -> u64 {
        self.metrics
            .export_items
            .get_or_create(&vec![("signal", signal.to_owned())])
            .get()
    }
    /// Items dropped by the exporter: `queue_full`, `permanent_error`, `shutdown`.
    pub fn export_dropped(&self, signal: &'static str, reason: &'static str, items: u64) {
        self.metrics
            .export_dropped
            .get_or_create(&vec![
                ("signal", signal.to_owned()),
                ("reason", reason.to_owned()),
            ])
            .inc_by(items);
    }
    pub fn export_dropped_total(&self, signal: &'static str, reason: &'static str) -> u64 {
        self.metrics
            .export_dropped
            .get_or_create(&vec![
                ("signal", signal.to_owned()),
                ("reason", reason.to_owned()),
            ])
            .get()
    }
    pub fn set_export_queue_items(&self, signal: &'static str, items: usize) {
        self.metrics
            .export_queue_items
            .get_or_create(&vec![("signal", signal.to_owned())])
            .set(i64::try_from(items).unwrap_or(i64::MAX));
    }
}

/// The propagation counter families ([`FrontendHealth::propagation_total`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PropagationMetric {
    /// `propagation_requests{outcome}`.
    Outcome,
    /// `propagation_server_requests{origin}`.
    Origin,
    /// `propagation_refused{reason}`.
    Refused,
}

/// What a language front-end reports about itself. Cheap to clone.
#[derive(Clone, Debug)]
pub struct FrontendHealth {
    health: Health,
    language: Language,
}

impl FrontendHealth {
    fn labels(&self) -> Labels {
        vec![("language", self.language.as_str().to_owned())]
    }

    /// `n` events were read from the ring buffer.
    pub fn events_received(&self, n: u64) {
        self.health
            .metrics
            .events_received
            .get_or_create(&self.labels())
            .inc_by(n);
    }

    /// The kernel-side drop counter `source` (e.g. the ring buffer name)
    /// now reads `total`: pass the running total read from the map (summed
    /// over CPUs); the increment since the last call is added. A total lower
    /// than before (maps recreated) counts from zero again.
    pub fn kernel_dropped_total(&self, source: &str, total: u64) {
        let delta = self.since_last(source.to_owned(), total);
        let mut labels = self.labels();
        labels.push(("source", source.to_owned()));
        self.health
            .metrics
            .kernel_events_dropped
            .get_or_create(&labels)
            .inc_by(delta);
    }

    /// A propagation counter of family `metric` now reads `total` for
    /// `label` (running totals, like [`FrontendHealth::kernel_dropped_total`]).
    pub fn propagation_total(&self, metric: PropagationMetric, label: &'static str, total: u64) {
        let (family, key, name) = match metric {
            PropagationMetric::Outcome => (
                &self.health.metrics.propagation_requests,
                "outcome",
                "prop_outcome",
            ),
            PropagationMetric::Origin => (
                &self.health.metrics.propagation_server_requests,
                "origin",
                "prop_origin",
            ),
            PropagationMetric::Refused => (
                &self.health.metrics.propagation_refused,
                "reason",
                "prop_refused",
            ),
        };
        let delta = self.since_last(format!("{name}/{label}"), total);
        let mut labels = self.labels();
        labels.push((key, label.to_owned()));
        family.get_or_create(&labels).inc_by(delta);
    }

    /// The increment of the kernel running total `key` of this language
    /// since its last reading (the whole `total` if it went down: maps
    /// recreated), remembering `total`.
    fn since_last(&self, key: String, total: u64) -> u64 {
        let mut totals = self
            .health
            .kernel_totals
            .lock()
            .expect("kernel totals lock");
        let last = totals.entry((self.language, key)).or_insert(0);
        let delta = if total >= *last { total - *last } else { total };
        *last = total;
        delta
    }

    /// cgroups the propagation sockops program is attached to now.
    pub fn set_propagation_cgroups(&self, n: usize) {
        self.health
            .metrics
            .propagation_cgroups
            .get_or_create(&self.labels())
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// A payload of `protocol` (`http1`, `http2`, `grpc`, ...) failed to parse.
    pub fn parse_error(&self, protocol: &'static str) {
        self.parse_errors(protocol, 1);
    }

    /// `n` payloads of `protocol` failed to parse.
    pub fn parse_errors(&self, protocol: &'static str, n: u64) {
        let mut labels = self.labels();
        labels.push(("protocol", protocol.to_owned()));
        self.health
            .metrics
            .parse_errors
            .get_or_create(&labels)
            .inc_by(n);
    }

    /// The size of the ring buffer the kernel created for the program set.
    pub fn set_ring_buffer_bytes(&self, bytes: u32) {
        self.health
            .metrics
            .ring_buffer_bytes
            .get_or_create(&self.labels())
            .set(i64::from(bytes));
    }

    /// `n` more connections were not traced because of a cap; `reason` is
    /// `connection_cap` or `abandoned`.
    pub fn connections_untraced(&self, reason: &'static str, n: u64) {
        let mut labels = self.labels();
        labels.push(("reason", reason.to_owned()));
        self.health
            .metrics
            .connections_untraced
            .get_or_create(&labels)
            .inc_by(n);
    }

    /// The number of processes currently instrumented.
    pub fn set_attached_processes(&self, n: usize) {
        self.health
            .metrics
            .attached_processes
            .get_or_create(&self.labels())
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// A process was not instrumented; `reason` is a bounded category
    /// (`unknown_offsets`, `not_go`, `attach_failed`, ...).
    pub fn attach_refused(&self, reason: &'static str) {
        let mut labels = self.labels();
        labels.push(("reason", reason.to_owned()));
        self.health
            .metrics
            .attach_refused
            .get_or_create(&labels)
            .inc();
    }

    /// `n` more processes whose TLS connections cannot be traced, for
    /// `reason` (`static_libssl`, `no_libssl`).
    pub fn tls_untraced(&self, reason: &'static str, n: u64) {
        let mut labels = self.labels();
        labels.push(("reason", reason.to_owned()));
        self.health
            .metrics
            .tls_untraced
            .get_or_create(&labels)
            .inc_by(n);
    }

    /// The TLS library files probed now, and the processes probed in them.
    pub fn set_tls_probed(&self, libraries: usize, processes: usize) {
        let labels = self.labels();
        let metrics = &self.health.metrics;
        metrics
            .tls_libraries
            .get_or_create(&labels)
            .set(i64::try_from(libraries).unwrap_or(i64::MAX));
        metrics
            .tls_processes
            .get_or_create(&labels)
            .set(i64::try_from(processes).unwrap_or(i64::MAX));
    }

    /// The eBPF programs are loaded and attached: `/readyz` turns 200.
    pub fn mark_ready(&self) {
        self.health.set_ready(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_drop_totals_become_counter_increments() {
        let health = Health::new();
        let mut registry = Registry::default();
        health.register(&mut registry);
        let fe = health.frontend(Language::Python);
        fe.kernel_dropped_total("events", 5);
        fe.kernel_dropped_total("events", 12);
        fe.kernel_dropped_total("events", 12);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("ferrotel_probe_kernel_events_dropped_total{language=\"python\",source=\"events\"} 12"),
            "running total 12 must be exported as 12, got:\n{text}"
        );
    }
}
