//! Service graph metrics: for every edge between two services, the request
//! count, the failed count and the client- and server-side durations, under
//! the names and labels of Tempo's (and the OpenTelemetry eBPF
//! instrumentation's) service graph, so that Grafana's service map and
//! existing dashboards read them unchanged:
//!
//! | OTLP name (unit) | Prometheus | Labels |
//! |---|---|---|
//! | `traces_service_graph_request_total` | `…_request_total` | `client`, `server`, `connection_type`, `client_service_namespace`, `server_service_namespace` |
//! | `traces_service_graph_request_failed_total` | `…_request_failed_total` | same |
//! | `traces_service_graph_request_server` (s) | `…_request_server_seconds_*` | same |
//! | `traces_service_graph_request_client` (s) | `…_request_client_seconds_*` | same |
//!
//! # Edges from single spans
//!
//! The probe sees one side of a request at a time, so an edge is built from
//! one span and the other end is named from the peer's address
//! ([`PeerLookup`]):
//! - a **server span** counts the request on `(peer → this service)`, with
//!   its duration in `request_server`; an unknown caller (outside the
//!   cluster, or behind a proxy) is the virtual node `user`, as Tempo names
//!   a caller without a client span;
//! - a **client span** always records its duration in `request_client` on
//!   `(this service → peer)`, and counts the request only when the server is
//!   *not* traced (an uninstrumented pod, a Service whose namespace is not
//!   opted in, an address outside the cluster): then no server span will
//!   count it, and the edge is a `virtual_node` edge. A traced server counts
//!   its own requests, so each request is counted once.
//!
//! Failures follow the side that counts: `error.type` of that span (5xx or a
//! transport error on a server span, 4xx too on a client span).
//!
//! # Pairs
//!
//! When this probe traces both sides of a request (client and server on
//! its node, in its language), [`pairing::Pairer`] pairs the two spans by
//! the connection's client address and time, and the request is observed
//! once on `client → server` as each process names itself, with both
//! durations. A span that finds no partner in this probe looks up the
//! other side's end that the node's other probe published
//! ([`exchange`]) and, if it fits, observes its half of the pair on the
//! same edge; spans that find neither keep the single-span rule above.
//! Across nodes nothing is paired.
//!
//! # Cardinality
//!
//! Labels are service names and namespaces, never addresses of callers (an
//! unknown caller is `user`); unknown servers are named by host or address,
//! which is what users want to see (a database, an external API) and is
//! bounded by what the code calls. On top, at most `max_edges` distinct
//! edges are kept per probe; further ones are counted in one series with
//! `otel.metric.overflow=true` (the OpenTelemetry SDK's overflow rule), and
//! idle edges are forgotten after an hour like every other series.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Histogram, Metric, ResourceMetrics, metric,
};
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use super::metrics::{
    self, ByResource, HTTP_BOUNDS_SECONDS, HistogramState, counter_metric, encode_histogram,
    int_point, now_unix_nanos,
};
use super::record::{Protocol, RequestRecord, SpanKind};
use super::resource::ProcessResource;
use super::semconv::{self, string_kv};

/// OTLP metric names (Tempo's and OBI's).
pub const REQUEST_TOTAL: &str = "traces_service_graph_request_total";
pub const REQUEST_FAILED_TOTAL: &str = "traces_service_graph_request_failed_total";
pub const REQUEST_SERVER: &str = "traces_service_graph_request_server";
pub const REQUEST_CLIENT: &str = "traces_service_graph_request_client";

/// The client name of a caller the probe cannot name (Tempo's convention).
pub const UNKNOWN_CLIENT: &str = "user";

/// [`UNKNOWN_CLIENT`] as a node name, made once: it names every server
/// span whose client is not known.
fn unknown_client() -> Arc<str> {
    static NAME: std::sync::LazyLock<Arc<str>> =
        std::sync::LazyLock::new(|| Arc::from(UNKNOWN_CLIENT));
    NAME.clone()
}

/// Histogram boundaries: the HTTP ones, in seconds, as Tempo's defaults are.
const BOUNDS: &[f64] = &HTTP_BOUNDS_SECONDS;

/// Who a peer address belongs to, as far as the probe knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    /// Its `service.name` (a pod's, by the same rules the probe names its own
    /// pods) or a Kubernetes Service's name.
    pub service: Arc<str>,
    /// Its namespace (`service.namespace` of Ferrotel's pods).
    pub namespace: Arc<str>,
    /// Whether a Ferrotel probe traces it (its server spans count its edges).
    pub traced: bool,
}

/// Resolves peer addresses; implemented by the peer index that discovery
/// fills, and by fixtures in tests.
pub trait PeerLookup: Send + Sync {
    fn lookup(&self, ip: IpAddr) -> Option<PeerIdentity>;

    /// Resolves a host name a client asked for (`Host` / `:authority`
    /// without the port), e.g. a Service's DNS name; `caller_namespace`
    /// completes a bare Service name.
    fn lookup_host(&self, _host: &str, _caller_namespace: Option<&str>) -> Option<PeerIdentity> {
        None
    }
}

/// A lookup that knows no one (standalone probes).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoPeers;

impl PeerLookup for NoPeers {
    fn lookup(&self, _ip: IpAddr) -> Option<PeerIdentity> {
        None
    }
}

/// One end of an edge.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GraphNode {
    pub name: Arc<str>,
    pub namespace: Option<Arc<str>>,
}

impl GraphNode {
    pub fn new(name: impl Into<Arc<str>>, namespace: Option<Arc<str>>) -> Self {
        Self {
            name: name.into(),
            namespace,
        }
    }
}

/// Tempo's `connection_type`: empty for an edge between two traced
/// services; `virtual_node` when one end is not traced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConnectionType {
    Direct,
    VirtualNode,
}

impl ConnectionType {
    /// The label value; `None` for a direct edge (Tempo leaves it empty).
    pub fn label(self) -> Option<&'static str> {
        match self {
            ConnectionType::Direct => None,
            ConnectionType::VirtualNode => Some("virtual_node"),
        }
    }
}

/// A directed edge of the service graph.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Edge {
    pub client: GraphNode,
    pub server: GraphNode,
    pub connection_type: ConnectionType,
}

impl Edge {
    /// Data-point attributes, in the label names of Tempo and OBI.
    pub fn attributes(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![
            ("client", self.client.name.to_string()),
            ("server", self.server.name.to_string()),
        ];
        if let Some(kind) = self.connection_type.label() {
            out.push(("connection_type", kind.to_owned()));
        }
        if let Some(ns) = &self.client.namespace {
            out.push(("client_service_namespace", ns.to_string()));
        }
        if let Some(ns) = &self.server.namespace {
            out.push(("server_service_namespace", ns.to_string()));
        }
        out
    }
}

/// One request seen on one edge: by one span, or by both once paired.
#[derive(Clone, Debug, PartialEq)]
pub struct EdgeObservation {
    pub edge: Edge,
    /// Whether this observation counts the request (`request_total`,
    /// `request_failed_total`); see the module docs for who counts.
    pub counts_request: bool,
    /// The counting side's span failed.
    pub failed: bool,
    /// Duration the client saw, if a client span is part of this observation.
    pub client_seconds: Option<f64>,
    /// Duration the server saw, if a server span is part of this observation.
    pub server_seconds: Option<f64>,
}

/// This process as a graph node: its `service.name` and `service.namespace`
/// (falling back to `k8s.namespace.name`).
pub fn own_node(resource: &ProcessResource) -> GraphNode {
    let namespace = resource
        .attributes
        .get("service.namespace")
        .or_else(|| resource.attributes.get("k8s.namespace.name"))
        .filter(|n| !n.is_empty())
        .map(|n| Arc::<str>::from(n.as_str()));
    GraphNode::new(resource.service_name(), namespace)
}

/// The host a client asked for (`Host` / `:authority`), without its port.
fn requested_host(record: &RequestRecord) -> Option<String> {
    let authority = match &record.protocol {
        Protocol::Http(http) => http.host.as_deref(),
        Protocol::Grpc(grpc) => grpc.authority.as_deref(),
    }?;
    let (host, _) = semconv::split_host(authority);
    (!host.is_empty()).then(|| host.to_owned())
}

/// The single-span edge of a completed request (see the module docs), or
/// `None` for a client span that says nothing about its server (no peer
/// address, no host).
///
/// A client span's server is its peer address; front-ends that do not see
/// the connection (the Go uprobes read the request, not the socket) leave
/// it unset, and then the requested host stands in: an address literal is
/// looked up as the peer address, a name through [`PeerLookup::lookup_host`].
pub fn observe_record(
    record: &RequestRecord,
    resource: &ProcessResource,
    peers: &dyn PeerLookup,
) -> Option<EdgeObservation> {
    observe_as(record, own_node(resource), peers)
}

/// [`observe_record`] with this process's node already known.
fn observe_as(
    record: &RequestRecord,
    me: GraphNode,
    peers: &dyn PeerLookup,
) -> Option<EdgeObservation> {
    let failed = semconv::is_error(record);
    let seconds = record.duration_secs();
    let host = (record.kind == SpanKind::Client)
        .then(|| requested_host(record))
        .flatten();
    let host_ip = host.as_deref().and_then(|h| h.parse::<IpAddr>().ok());
    let peer_ip = record.peer.map(|p| p.ip()).or(host_ip).map(canonical_ip);
    let peer = peer_ip.and_then(|ip| peers.lookup(ip)).or_else(|| {
        host.as_deref()
            .filter(|_| host_ip.is_none())
            .and_then(|h| peers.lookup_host(h, me.namespace.as_deref()))
    });
    match record.kind {
        SpanKind::Server => {
            let (client, connection_type) = match peer {
                Some(id) => (
                    GraphNode::new(id.service, Some(id.namespace)),
                    if id.traced {
                        ConnectionType::Direct
                    } else {
                        ConnectionType::VirtualNode
                    },
                ),
                None => (
                    GraphNode::new(unknown_client(), None),
                    ConnectionType::VirtualNode,
                ),
            };
            Some(EdgeObservation {
                edge: Edge {
                    client,
                    server: me,
                    connection_type,
                },
                counts_request: true,
                failed,
                client_seconds: None,
                server_seconds: Some(seconds),
            })
        }
        SpanKind::Client => {
            let (server, traced) = match peer {
                Some(id) => (GraphNode::new(id.service, Some(id.namespace)), id.traced),
                None => {
                    // A name the client asked for says more than an address.
                    let name = host
                        .filter(|_| host_ip.is_none())
                        .or_else(|| peer_ip.map(|ip| ip.to_string()))?;
                    (GraphNode::new(name, None), false)
                }
            };
            Some(EdgeObservation {
                edge: Edge {
                    client: me,
                    server,
                    connection_type: if traced {
                        ConnectionType::Direct
                    } else {
                        ConnectionType::VirtualNode
                    },
                },
                counts_request: !traced,
                failed,
                client_seconds: Some(seconds),
                server_seconds: None,
            })
        }
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, what dual-stack sockets
/// report) as the IPv4 address they are.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The series of one edge, as one resource observed it.
#[derive(Clone, Debug)]
struct EdgeSeries {
    /// `None` until an observation counted a request.
    counted: Option<Counted>,
    client: Option<HistogramState>,
    server: Option<HistogramState>,
    last_update: Instant,
}

#[derive(Clone, Copy, Debug)]
struct Counted {
    total: u64,
    failed: u64,
    start_unix_nanos: u64,
}

impl EdgeSeries {
    fn new(now: Instant) -> Self {
        Self {
            counted: None,
            client: None,
            server: None,
            last_update: now,
        }
    }

    /// `now` is read once per observation; the wall-clock start of a new
    /// series only when one is created.
    fn record(&mut self, observation: &EdgeObservation, now: Instant) {
        if observation.counts_request {
            let counted = self.counted.get_or_insert_with(|| Counted {
                total: 0,
                failed: 0,
                start_unix_nanos: now_unix_nanos(),
            });
            counted.total += 1;
            counted.failed += u64::from(observation.failed);
        }
        if let Some(seconds) = observation.client_seconds {
            self.client
                .get_or_insert_with(|| HistogramState::new(BOUNDS, now_unix_nanos(), now))
                .observe(BOUNDS, seconds, now);
        }
        if let Some(seconds) = observation.server_seconds {
            self.server
                .get_or_insert_with(|| HistogramState::new(BOUNDS, now_unix_nanos(), now))
                .observe(BOUNDS, seconds, now);
        }
        self.last_update = now;
    }

    fn merge(&mut self, other: &EdgeSeries) {
        match (&mut self.counted, other.counted) {
            (Some(a), Some(b)) => {
                a.total += b.total;
                a.failed += b.failed;
                a.start_unix_nanos = a.start_unix_nanos.min(b.start_unix_nanos);
            }
            (None, Some(b)) => self.counted = Some(b),
            _ => {}
        }
        for (mine, theirs) in [
            (&mut self.client, &other.client),
            (&mut self.server, &other.server),
        ] {
            match (mine.as_mut(), theirs) {
                (Some(a), Some(b)) => a.merge(b),
                (None, Some(b)) => *mine = Some(b.clone()),
                _ => {}
            }
        }
    }
}

/// An edge, or the overflow series past the edge cap.
type SeriesKey = Option<Edge>;
type EdgeMap = HashMap<SeriesKey, EdgeSeries, foldhash::fast::FixedState>;

#[derive(Debug, Default)]
struct State {
    series: ByResource<EdgeMap>,
    /// Distinct edges held across resources (the cap's measure).
    edges: usize,
}

/// The service graph metrics of one probe. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ServiceGraphMetrics {
    state: Arc<Mutex<State>>,
    max_edges: usize,
}

impl ServiceGraphMetrics {
    pub fn new(max_edges: usize) -> Self {
        Self {
            state: Arc::default(),
            max_edges: max_edges.max(1),
        }
    }

    /// Records one observation under the resource that made it. Returns
    /// `false` if it went to the overflow series (edge cap reached).
    pub fn observe(&self, resource: &Arc<ProcessResource>, observation: &EdgeObservation) -> bool {
        let now = Instant::now();
        let mut state = self.state.lock().expect("service graph lock");
        let at_cap = state.edges >= self.max_edges;
        let series = state.series.series_mut(resource);
        let key = Some(observation.edge.clone());
        let (key, fresh) = match series.contains_key(&key) {
            true => (key, false),
            false if at_cap => (None, false),
            false => (key, true),
        };
        let in_cap = key.is_some();
        series
            .entry(key)
            .or_insert_with(|| EdgeSeries::new(now))
            .record(observation, now);
        if fresh {
            state.edges += 1;
        }
        in_cap
    }

    /// Requests counted on `edge` across resources (tests, summaries).
    pub fn request_count(&self, edge: &Edge) -> u64 {
        let state = self.state.lock().expect("service graph lock");
        state
            .series
            .iter()
            .filter_map(|(_, s)| s.get(&Some(edge.clone())))
            .filter_map(|s| s.counted.map(|c| c.total))
            .sum()
    }

    /// Forgets edges not observed for `idle`, or for
    /// [`EXITED_IDLE`](metrics::EXITED_IDLE) if the process that observed them
    /// has exited.
    pub fn prune_idle(&self, idle: Duration) {
        self.prune(idle, metrics::EXITED_IDLE);
    }

    pub(crate) fn prune(&self, idle: Duration, exited_idle: Duration) {
        let mut state = self.state.lock().expect("service graph lock");
        let mut removed = 0;
        state.series.prune_each(idle, exited_idle, |series, idle| {
            let before = series.len();
            series.retain(|_, s| s.last_update.elapsed() < idle);
            removed += before - series.len();
        });
        state.series.retain(|s| !s.is_empty());
        state.edges = state.edges.saturating_sub(removed);
    }

    /// Cumulative OTLP metrics, one `ResourceMetrics` per observing resource.
    pub fn resource_metrics(&self) -> Vec<ResourceMetrics> {
        let now = now_unix_nanos();
        let state = self.state.lock().expect("service graph lock");
        state
            .series
            .iter()
            .filter(|(_, series)| !series.is_empty())
            .map(|(resource, series)| {
                let mut total = Vec::new();
                let mut failed = Vec::new();
                let mut client = Vec::new();
                let mut server = Vec::new();
                for (key, s) in series {
                    let attributes = key_attributes(key);
                    if let Some(c) = s.counted {
                        total.push(int_point(
                            c.total,
                            c.start_unix_nanos,
                            now,
                            attributes.clone(),
                        ));
                        failed.push(int_point(
                            c.failed,
                            c.start_unix_nanos,
                            now,
                            attributes.clone(),
                        ));
                    }
                    if let Some(h) = &s.client {
                        client.push(h.to_point(BOUNDS, attributes.clone(), now));
                    }
                    if let Some(h) = &s.server {
                        server.push(h.to_point(BOUNDS, attributes, now));
                    }
                }
                let mut metrics = Vec::new();
                for (name, description, points) in [
                    (REQUEST_TOTAL, "Requests between two services.", total),
                    (
                        REQUEST_FAILED_TOTAL,
                        "Failed requests between two services.",
                        failed,
                    ),
                ] {
                    if !points.is_empty() {
                        metrics.push(counter_metric(name, description, "{request}", points));
                    }
                }
                for (name, description, points) in [
                    (
                        REQUEST_SERVER,
                        "Request duration between two services, as the server saw it.",
                        server,
                    ),
                    (
                        REQUEST_CLIENT,
                        "Request duration between two services, as the client saw it.",
                        client,
                    ),
                ] {
                    if !points.is_empty() {
                        metrics.push(Metric {
                            name: name.to_owned(),
                            description: description.to_owned(),
                            unit: "s".to_owned(),
                            data: Some(metric::Data::Histogram(Histogram {
                                data_points: points,
                                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                            })),
                            ..Default::default()
                        });
                    }
                }
                metrics::resource_metrics(resource, metrics)
            })
            .collect()
    }

    /// The same as one export request (`None` if nothing was observed).
    pub fn to_otlp(&self) -> Option<ExportMetricsServiceRequest> {
        let resource_metrics = self.resource_metrics();
        (!resource_metrics.is_empty()).then_some(ExportMetricsServiceRequest { resource_metrics })
    }
}

impl super::metrics::MetricProducer for ServiceGraphMetrics {
    fn resource_metrics(&self) -> Vec<ResourceMetrics> {
        ServiceGraphMetrics::resource_metrics(self)
    }

    fn prune_idle(&self, idle: Duration) {
        ServiceGraphMetrics::prune_idle(self, idle);
    }
}

fn key_attributes(key: &SeriesKey) -> Vec<KeyValue> {
    match key {
        Some(edge) => edge
            .attributes()
            .iter()
            .map(|(k, v)| string_kv(k, v))
            .collect(),
        None => vec![semconv::key_value(
            "otel.metric.overflow",
            &semconv::Value::Str("true".into()),
        )],
    }
}

fn key_labels(key: &SeriesKey) -> Vec<(String, String)> {
    match key {
        Some(edge) => edge
            .attributes()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        None => vec![("otel_metric_overflow".to_owned(), "true".to_owned())],
    }
}

impl prometheus_client::collector::Collector for ServiceGraphMetrics {
    /// One series per edge: the observers of this probe are summed, as
    /// Tempo's series are per edge (Prometheus adds the probe's own target
    /// labels).
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mut merged: BTreeMap<Vec<(String, String)>, EdgeSeries> = BTreeMap::new();
        {
            let state = self.state.lock().expect("service graph lock");
            for (_, series) in state.series.iter() {
                for (key, s) in series {
                    merged
                        .entry(key_labels(key))
                        .and_modify(|m| m.merge(s))
                        .or_insert_with(|| s.clone());
                }
            }
        }
        for (name, pick_failed) in [
            ("traces_service_graph_request", false),
            ("traces_service_graph_request_failed", true),
        ] {
            let help = if pick_failed {
                "Failed requests between two services."
            } else {
                "Requests between two services."
            };
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (labels, s) in &merged {
                if let Some(c) = s.counted {
                    let value = if pick_failed { c.failed } else { c.total };
                    family
                        .encode_family(labels)?
                        .encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(
                            &value, None,
                        )?;
                }
            }
        }
        for (name, client_side) in [
            ("traces_service_graph_request_server", false),
            ("traces_service_graph_request_client", true),
        ] {
            let help = if client_side {
                "Request duration between two services, as the client saw it."
            } else {
                "Request duration between two services, as the server saw it."
            };
            let mut family = encoder.encode_descriptor(
                name,
                help,
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            for (labels, s) in &merged {
                let h = if client_side { &s.client } else { &s.server };
                if let Some(h) = h {
                    encode_histogram(
                        family.encode_family(labels)?,
                        h.sum,
                        h.count,
                        &h.prometheus_buckets(BOUNDS),
                    )?;
                }
            }
        }
        Ok(())
    }
}

pub mod exchange;
pub mod pairing;

#[cfg(test)]
mod tests;
