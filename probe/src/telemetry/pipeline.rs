//! The pipeline task: records in, RED metrics and queued spans out.

use std::sync::Arc;
use std::time::Instant;

use ferrotel_api::probe_config::{RedactionConfig, RoutesConfig};
use tokio::sync::mpsc;
use tracing::debug;

use super::clock::ClockOffsets;
use super::metrics::RedMetrics;
use super::record::{Protocol, RequestRecord, SpanKind};
use super::redact::Redactor;
use super::resource::{ProcessResource, ResourceRegistry};
use super::route::RouteTemplater;
use super::semconv;
use super::servicegraph::exchange::Exchange;
use super::servicegraph::pairing::{Pairer, PairingStats};
use super::servicegraph::{EdgeObservation, PeerLookup, ServiceGraphMetrics};
use crate::health::Health;
use crate::tap::SpanTap;

/// A span waiting for export, with the resource it belongs to.
#[derive(Clone, Debug)]
pub struct QueuedSpan {
    pub resource: Arc<ProcessResource>,
    /// The protobuf bytes of its OTLP `Span` message
    /// ([`semconv::encode_span`]): encoded once, when it is made.
    pub encoded: Vec<u8>,
}

/// Where sampled spans go: the exporter's queue. A trait so that the
/// pipeline does not depend on the export side (which depends on it for
/// [`QueuedSpan`]).
pub trait SpanQueue: Send + Sync + std::fmt::Debug {
    /// Queues a span; a full queue drops it and counts the drop itself.
    fn push(&self, span: QueuedSpan);
    /// No more spans will come: the exporter flushes what it holds and stops.
    fn close(&self);
}

/// Turns records into metrics and spans.
#[derive(Debug)]
pub struct Pipeline {
    routes: RouteTemplater,
    resources: ResourceRegistry,
    metrics: RedMetrics,
    spans: Arc<dyn SpanQueue>,
    clock: ClockOffsets,
    health: Health,
    redactor: Redactor,
    tap: SpanTap,
    /// Service-graph edges from every record, named through the peer lookup.
    graph: Option<(ServiceGraphMetrics, Arc<dyn PeerLookup>)>,
    /// Pairs the two sides of a request this probe traces both of, before
    /// they reach `graph`.
    pairer: Pairer,
    /// The pairer's exchange counts already added to the health counters.
    exchange_reported: PairingStats,
}

impl std::fmt::Debug for dyn PeerLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerLookup")
    }
}

impl Pipeline {
    pub fn new(
        routes: &RoutesConfig,
        resources: ResourceRegistry,
        metrics: RedMetrics,
        spans: Arc<dyn SpanQueue>,
        clock: ClockOffsets,
        health: Health,
    ) -> Self {
        Self {
            routes: RouteTemplater::new(routes),
            resources,
            metrics,
            spans,
            clock,
            health,
            redactor: Redactor::default(),
            tap: SpanTap::default(),
            graph: None,
            pairer: Pairer::default(),
            exchange_reported: PairingStats::default(),
        }
    }

    /// Redacts query strings as `redaction` says (the default redacts every
    /// query value; see [`super::redact`]).
    pub fn with_redaction(mut self, redaction: &RedactionConfig) -> Self {
        self.redactor = Redactor::new(redaction);
        self
    }

    /// Offers every request's span to `tap` while someone taps (see
    /// [`crate::tap`]: one atomic load per request otherwise).
    pub fn with_tap(mut self, tap: SpanTap) -> Self {
        self.tap = tap;
        self
    }

    /// Also records service-graph edges (`views.serviceGraph`).
    pub fn with_service_graph(
        mut self,
        graph: Option<(ServiceGraphMetrics, Arc<dyn PeerLookup>)>,
    ) -> Self {
        self.graph = graph;
        self
    }

    /// Exchanges the ends of waiting spans with the node's other probes
    /// (see [`super::servicegraph::exchange`]).
    pub fn with_exchange(mut self, exchange: Box<dyn Exchange>) -> Self {
        let pairer = std::mem::take(&mut self.pairer);
        self.pairer = pairer.with_exchange(exchange);
        self
    }

    /// Adds the exchange outcomes and map calls since the last call to the
    /// health counters (four comparisons when nothing changed).
    fn report_exchange(&mut self) {
        let now = self.pairer.stats();
        let last = self.exchange_reported;
        type Count = fn(&Health, &'static str, u64);
        let deltas: [(Count, &'static str, u64, u64); 4] = [
            (
                Health::service_graph_exchange,
                "named",
                now.exchanged,
                last.exchanged,
            ),
            (
                Health::service_graph_exchange,
                "not_found",
                now.exchange_misses,
                last.exchange_misses,
            ),
            (
                Health::service_graph_exchange_calls,
                "write",
                now.exchange_writes,
                last.exchange_writes,
            ),
            (
                Health::service_graph_exchange_calls,
                "read",
                now.exchange_reads,
                last.exchange_reads,
            ),
        ];
        for (count, label, now, last) in deltas {
            if now > last {
                count(&self.health, label, now - last);
            }
        }
        self.exchange_reported = now;
    }

    /// Processes one record: every record feeds the RED metrics; sampled
    /// ones are also queued as spans.
    pub fn process(&mut self, record: &RequestRecord) {
        let record = self.redactor.record(record);
        let record = record.as_ref();
        let resource = self.resources.get(record.pid);
        let route = match (&record.protocol, record.kind) {
            (Protocol::Http(http), SpanKind::Server) => {
                let routed =
                    self.routes
                        .route(resource.service_name(), &http.path, http.route.as_deref());
                if routed.capped {
                    self.health.route_capped();
                }
                routed.route
            }
            _ => None,
        };
        self.metrics.observe(
            &resource,
            record,
            &semconv::metric_attributes(record, route.as_deref()),
        );
        if let Some((graph, peers)) = &self.graph {
            let health = &self.health;
            self.pairer.offer(
                record,
                &resource,
                peers.as_ref(),
                Instant::now(),
                &mut |resource, observation| {
                    if !graph.observe(resource, observation) {
                        health.service_graph_overflow();
                    }
                },
            );
            self.report_exchange();
        }
        let tapping = self.tap.is_active();
        if !record.span.sampled {
            self.health.span_unsampled();
            if tapping {
                let span = semconv::to_span(record, route.as_deref(), &self.clock);
                self.tap.publish(&resource, &span);
            }
            return;
        }
        if tapping {
            let span = semconv::to_span(record, route.as_deref(), &self.clock);
            self.tap.publish(&resource, &span);
        }
        let encoded = semconv::encode_span(record, route.as_deref(), &self.clock);
        // A full queue counts the drop itself.
        self.spans.push(QueuedSpan { resource, encoded });
    }

    /// Observes the service-graph spans that waited for a partner longer
    /// than the pairing window (all of them if `all`).
    pub fn expire_pairs(&mut self, all: bool) {
        let Some((graph, _)) = &self.graph else {
            return;
        };
        let health = &self.health;
        let mut emit = |resource: &Arc<ProcessResource>, observation: &EdgeObservation| {
            if !graph.observe(resource, observation) {
                health.service_graph_overflow();
            }
        };
        if all {
            self.pairer.flush(Instant::now(), &mut emit);
        } else {
            self.pairer.tick(Instant::now(), &mut emit);
        }
        self.report_exchange();
    }

    /// Drains `records` until every sender is gone, then closes the span
    /// queue so the exporter flushes and stops. Spans waiting for a
    /// service-graph partner are observed alone once the pairing window has
    /// passed, even while no record comes.
    pub async fn run(mut self, mut records: mpsc::Receiver<RequestRecord>) {
        let mut tick = tokio::time::interval(self.pairer.tick_interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                record = records.recv() => match record {
                    Some(record) => self.process(&record),
                    None => break,
                },
                _ = tick.tick(), if self.pairer.needs_ticks() => self.expire_pairs(false),
            }
        }
        self.expire_pairs(true);
        debug!("Record stream ended; closing the span queue");
        self.spans.close();
    }
}
