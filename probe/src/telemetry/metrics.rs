//! RED metrics: duration histograms per process resource and attribute set,
//! read by the OTLP metrics exporter (cumulative temporality) and by the
//! Prometheus `/metrics` endpoint, from the same numbers.
//!
//! Every request is observed exactly once, sampled or not, so
//! `_count` equals the number of requests.
//!
//! Cardinality is bounded whatever the traffic: attribute values a
//! workload's traffic chooses (`rpc.service`, `rpc.method`, a client's
//! `server.address` and `server.port`) are capped per resource at
//! [`MAX_ATTRIBUTE_VALUES`] distinct values, later ones reported as
//! `_OTHER` (an integer attribute is dropped instead); `http.route` has its
//! own cap in [`super::route`]. Past [`MAX_SERIES_PER_INSTRUMENT`] series of
//! one instrument and resource, observations go to one series with the
//! single attribute `otel.metric.overflow=true`, as the OpenTelemetry SDKs'
//! cardinality limit does. Both are counted
//! (`ferrotel_probe_metric_attribute_capped`, `..._series_capped`).

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use super::record::{Protocol, RequestRecord, SpanKind};
use super::resource::ProcessResource;
use super::semconv::{
    Attr, MAX_METRIC_ATTRIBUTES, MetricAttributes, Value, ValueRef, key_value, string_kv,
};
use crate::health::Health;

/// OTel's recommended boundaries for HTTP durations, in seconds.
pub const HTTP_BOUNDS_SECONDS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// The SDK default boundaries, used for the millisecond RPC durations.
pub const RPC_BOUNDS_MILLIS: [f64; 15] = [
    0.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2500.0, 5000.0, 7500.0,
    10000.0,
];

/// Which RED histogram a request feeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Instrument {
    HttpServer,
    HttpClient,
    RpcServer,
    RpcClient,
}

impl Instrument {
    pub const ALL: [Instrument; 4] = [
        Instrument::HttpServer,
        Instrument::HttpClient,
        Instrument::RpcServer,
        Instrument::RpcClient,
    ];

    pub fn of(record: &RequestRecord) -> Self {
        match (&record.protocol, record.kind) {
            (Protocol::Http(_), SpanKind::Server) => Instrument::HttpServer,
            (Protocol::Http(_), SpanKind::Client) => Instrument::HttpClient,
            (Protocol::Grpc(_), SpanKind::Server) => Instrument::RpcServer,
            (Protocol::Grpc(_), SpanKind::Client) => Instrument::RpcClient,
        }
    }

    /// The OTel metric name.
    pub fn name(self) -> &'static str {
        match self {
            Instrument::HttpServer => "http.server.request.duration",
            Instrument::HttpClient => "http.client.request.duration",
            Instrument::RpcServer => "rpc.server.duration",
            Instrument::RpcClient => "rpc.client.duration",
        }
    }

    fn description(self) -> &'static str {
        match self {
            Instrument::HttpServer => "Duration of HTTP server requests.",
            Instrument::HttpClient => "Duration of HTTP client requests.",
            Instrument::RpcServer => "Measures the duration of inbound RPC.",
            Instrument::RpcClient => "Measures the duration of outbound RPC.",
        }
    }

    pub fn unit(self) -> &'static str {
        match self {
            Instrument::HttpServer | Instrument::HttpClient => "s",
            Instrument::RpcServer | Instrument::RpcClient => "ms",
        }
    }

    fn bounds(self) -> &'static [f64] {
        match self {
            Instrument::HttpServer | Instrument::HttpClient => &HTTP_BOUNDS_SECONDS,
            Instrument::RpcServer | Instrument::RpcClient => &RPC_BOUNDS_MILLIS,
        }
    }

    fn value_of(self, record: &RequestRecord) -> f64 {
        let secs = record.duration_secs();
        match self.unit() {
            "ms" => secs * 1000.0,
            _ => secs,
        }
    }

    /// The Prometheus name without unit suffix (the encoder appends it).
    fn prometheus_name(self) -> &'static str {
        match self {
            Instrument::HttpServer => "http_server_request_duration",
            Instrument::HttpClient => "http_client_request_duration",
            Instrument::RpcServer => "rpc_server_duration",
            Instrument::RpcClient => "rpc_client_duration",
        }
    }

    fn prometheus_unit(self) -> Unit {
        match self.unit() {
            "ms" => Unit::Other("milliseconds".into()),
            _ => Unit::Seconds,
        }
    }
}

/// One explicit-bucket histogram, cumulative since `start_unix_nanos`.
#[derive(Clone, Debug)]
pub(crate) struct HistogramState {
    /// One count per bound, plus the overflow bucket.
    pub(crate) counts: Vec<u64>,
    pub(crate) sum: f64,
    pub(crate) count: u64,
    pub(crate) min: f64,
    pub(crate) max: f64,
    pub(crate) start_unix_nanos: u64,
    pub(crate) last_update: Instant,
}

impl HistogramState {
    /// `now`: the caller's clock reading for this observation (one read
    /// per span serves every series it touches).
    pub(crate) fn new(bounds: &[f64], now_unix: u64, now: Instant) -> Self {
        Self {
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            start_unix_nanos: now_unix,
            last_update: now,
        }
    }

    pub(crate) fn observe(&mut self, bounds: &[f64], value: f64, now: Instant) {
        // Buckets are upper-inclusive: (previous, bound].
        let index = bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(bounds.len());
        self.counts[index] += 1;
        self.sum += value;
        self.count += 1;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        self.last_update = now;
    }

    pub(crate) fn merge(&mut self, other: &HistogramState) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum += other.sum;
        self.count += other.count;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// The cumulative OTLP data point of this histogram at `now`.
    pub(crate) fn to_point(
        &self,
        bounds: &[f64],
        attributes: Vec<opentelemetry_proto::tonic::common::v1::KeyValue>,
        now: u64,
    ) -> HistogramDataPoint {
        HistogramDataPoint {
            attributes,
            start_time_unix_nano: self.start_unix_nanos,
            time_unix_nano: now,
            count: self.count,
            sum: Some(self.sum),
            bucket_counts: self.counts.clone(),
            explicit_bounds: bounds.to_vec(),
            min: (self.count > 0).then_some(self.min),
            max: (self.count > 0).then_some(self.max),
            ..Default::default()
        }
    }

    /// `(upper bound, cumulative-per-bucket count)` pairs for the
    /// Prometheus encoder, `+Inf` last.
    pub(crate) fn prometheus_buckets(&self, bounds: &[f64]) -> Vec<(f64, u64)> {
        bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.counts.iter().copied())
            .collect()
    }
}

/// A series: its instrument and its metric attributes, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
struct SeriesKey {
    instrument: Instrument,
    attributes: Vec<(&'static str, Value)>,
}

/// A request's series key, borrowed from its record. It hashes and compares
/// like the [`SeriesKey`] it finds, so a request that feeds an existing
/// series copies nothing.
struct SeriesKeyRef<'k, 'a> {
    instrument: Instrument,
    attributes: &'k [(&'static str, Attr<'a>)],
}

/// The one hash both key forms use.
fn hash_series<'v, H: Hasher>(
    instrument: Instrument,
    attributes: impl ExactSizeIterator<Item = (&'static str, ValueRef<'v>)>,
    state: &mut H,
) {
    instrument.hash(state);
    state.write_usize(attributes.len());
    for (key, value) in attributes {
        key.hash(state);
        value.hash(state);
    }
}

impl Hash for SeriesKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let attributes = self.attributes.iter().map(|(k, v)| (*k, v.as_ref()));
        hash_series(self.instrument, attributes, state);
    }
}

impl Hash for SeriesKeyRef<'_, '_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let attributes = self.attributes.iter().map(|(k, v)| (*k, v.as_ref()));
        hash_series(self.instrument, attributes, state);
    }
}

impl hashbrown::Equivalent<SeriesKey> for SeriesKeyRef<'_, '_> {
    fn equivalent(&self, key: &SeriesKey) -> bool {
        self.instrument == key.instrument
            && self.attributes.len() == key.attributes.len()
            && self
                .attributes
                .iter()
                .zip(&key.attributes)
                .all(|((k, v), (key, value))| k == key && v.as_ref() == value.as_ref())
    }
}

impl From<&SeriesKeyRef<'_, '_>> for SeriesKey {
    fn from(key: &SeriesKeyRef<'_, '_>) -> Self {
        SeriesKey {
            instrument: key.instrument,
            attributes: key
                .attributes
                .iter()
                .map(|(k, v)| (*k, v.to_value()))
                .collect(),
        }
    }
}

/// What the per-attribute cap does with one attribute of a request.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Capped {
    Keep,
    /// A string past the cap: `_OTHER`.
    Replace,
    /// An integer past the cap: left out.
    Drop,
}

/// Attributes whose values come from traffic (names a workload or its
/// clients choose), capped per resource.
pub const TRAFFIC_ATTRIBUTES: [&str; 4] =
    ["rpc.service", "rpc.method", "server.address", "server.port"];
/// Distinct values kept per traffic attribute and resource.
pub const MAX_ATTRIBUTE_VALUES: usize = 500;
/// Series kept per instrument and resource (the OpenTelemetry SDKs'
/// default cardinality limit).
pub const MAX_SERIES_PER_INSTRUMENT: usize = 2000;
/// The value that replaces a capped string attribute.
pub const OVERFLOW_VALUE: &str = "_OTHER";
/// The attribute of the overflow series.
pub const OVERFLOW_ATTRIBUTE: &str = "otel.metric.overflow";

/// The series map is looked up once per request with a key of a few short
/// strings, where SipHash showed up in profiles; foldhash's fixed-seed hasher
/// is several times cheaper. Keys are bounded by the route cap, so hash
/// flooding is not a concern here.
type SeriesMap = hashbrown::HashMap<SeriesKey, HistogramState, foldhash::fast::FixedState>;

/// The series of one resource.
#[derive(Debug)]
struct ResourceSeries<S> {
    /// The resource last seen with these attributes: a pointer comparison
    /// finds it without hashing or comparing the attribute map per request.
    last: Arc<ProcessResource>,
    series: S,
}

/// The RED series of one resource, with what its cardinality caps count.
#[derive(Debug, Default)]
struct RedSeries {
    series: SeriesMap,
    /// Distinct values seen per traffic attribute.
    values: HashMap<&'static str, hashbrown::HashSet<Value, foldhash::fast::FixedState>>,
    /// Series per instrument (the overflow series included).
    counts: HashMap<Instrument, usize>,
}

impl RedSeries {
    /// Traffic attribute values past the per-attribute cap replaced (or,
    /// for integers, left out): `None` when nothing is capped, the common
    /// case, which copies nothing.
    fn cap_attributes<'a>(
        &mut self,
        attributes: &[(&'static str, Attr<'a>)],
        health: &Health,
    ) -> Option<MetricAttributes<'a>> {
        let mut capped: Option<MetricAttributes<'a>> = None;
        for (index, (key, value)) in attributes.iter().enumerate() {
            let verdict = self.cap_one(key, value, health);
            if verdict != Capped::Keep && capped.is_none() {
                capped = Some(
                    attributes[..index]
                        .iter()
                        .take(MAX_METRIC_ATTRIBUTES)
                        .cloned()
                        .collect(),
                );
            }
            let Some(capped) = &mut capped else {
                continue;
            };
            let _ = match verdict {
                Capped::Keep => capped.try_push((key, value.clone())),
                Capped::Replace => capped.try_push((key, Attr::Str(OVERFLOW_VALUE))),
                Capped::Drop => Ok(()),
            };
        }
        capped
    }

    fn cap_one(&mut self, key: &'static str, value: &Attr<'_>, health: &Health) -> Capped {
        if !TRAFFIC_ATTRIBUTES.contains(&key) {
            return Capped::Keep;
        }
        let seen = self.values.entry(key).or_default();
        if seen.contains(&value.as_ref()) {
            return Capped::Keep;
        }
        if seen.len() < MAX_ATTRIBUTE_VALUES {
            seen.insert(value.to_value());
            return Capped::Keep;
        }
        health.metric_attribute_capped(key);
        match value.as_ref() {
            ValueRef::Str(_) => Capped::Replace,
            _ => Capped::Drop,
        }
    }

    /// The histogram of `attributes`' series, made if new; the overflow
    /// series once the instrument has its fill of series.
    fn histogram(
        &mut self,
        instrument: Instrument,
        attributes: &[(&'static str, Attr<'_>)],
        now: Instant,
        health: &Health,
    ) -> &mut HistogramState {
        let overflow = [(OVERFLOW_ATTRIBUTE, Attr::Bool(true))];
        let mut key = SeriesKeyRef {
            instrument,
            attributes,
        };
        let full = self.counts.get(&instrument).copied().unwrap_or(0) >= MAX_SERIES_PER_INSTRUMENT;
        if full && !self.series.contains_key(&key) {
            health.metric_series_capped();
            key.attributes = &overflow;
        }
        match self.series.entry_ref(&key) {
            hashbrown::hash_map::EntryRef::Occupied(entry) => entry.into_mut(),
            hashbrown::hash_map::EntryRef::Vacant(entry) => {
                *self.counts.entry(instrument).or_default() += 1;
                entry.insert(HistogramState::new(
                    instrument.bounds(),
                    now_unix_nanos(),
                    now,
                ))
            }
        }
    }

    /// After pruning: the caps count what is still there.
    fn recount_values(&mut self) {
        self.values.clear();
        self.counts.clear();
        for series in self.series.keys() {
            *self.counts.entry(series.instrument).or_default() += 1;
            for (key, value) in &series.attributes {
                if TRAFFIC_ATTRIBUTES.contains(key) {
                    self.values.entry(*key).or_default().insert(value.clone());
                }
            }
        }
    }
}

/// Series partitioned by the resource (process) that observed them; shared
/// by every per-request metric family (RED, service graph).
#[derive(Debug)]
pub(crate) struct ByResource<S> {
    /// One entry per distinct resource (two PIDs of one service with the
    /// same attributes share series); a node runs few, so a scan is cheap.
    by_resource: Vec<ResourceSeries<S>>,
}

impl<S> Default for ByResource<S> {
    fn default() -> Self {
        Self {
            by_resource: Vec::new(),
        }
    }
}

impl<S: Default> ByResource<S> {
    pub(crate) fn series_mut(&mut self, resource: &Arc<ProcessResource>) -> &mut S {
        let index = match self
            .by_resource
            .iter()
            .position(|r| Arc::ptr_eq(&r.last, resource))
        {
            Some(i) => i,
            None => match self
                .by_resource
                .iter()
                .position(|r| r.last.attributes == resource.attributes)
            {
                Some(i) => {
                    self.by_resource[i].last = resource.clone();
                    i
                }
                None => {
                    self.by_resource.push(ResourceSeries {
                        last: resource.clone(),
                        series: S::default(),
                    });
                    self.by_resource.len() - 1
                }
            },
        };
        &mut self.by_resource[index].series
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&BTreeMap<String, String>, &S)> {
        self.by_resource
            .iter()
            .map(|r| (&r.last.attributes, &r.series))
    }

    /// Drops the resources whose series `is_empty` says are all gone.
    pub(crate) fn retain(&mut self, keep: impl Fn(&S) -> bool) {
        self.by_resource.retain(|r| keep(&r.series));
    }

    /// Calls `prune` with each resource's series and how long a series of
    /// it may go without an update before it is forgotten: `idle` while the
    /// resource's process runs, `exited_idle` once it has exited. Its
    /// series can no longer change then, and under process churn (a node
    /// starting short-lived processes all day) keeping them for `idle`
    /// would hold one resource per process started in that time.
    pub(crate) fn prune_each(
        &mut self,
        idle: Duration,
        exited_idle: Duration,
        mut prune: impl FnMut(&mut S, Duration),
    ) {
        for resource in &mut self.by_resource {
            let keep_for = if process_exited(&resource.last) {
                idle.min(exited_idle)
            } else {
                idle
            };
            prune(&mut resource.series, keep_for);
        }
    }
}

/// How long the series of a process that has exited are still exported
/// after their last update: the final cumulative values go out with several
/// exports (four at the default 15 s interval), then the series are dropped.
pub(crate) const EXITED_IDLE: Duration = Duration::from_secs(60);

/// The PID of a child that ran and was reaped: a process that has exited.
#[cfg(test)]
pub(crate) fn exited_pid() -> u32 {
    let mut child = std::process::Command::new("true")
        .spawn()
        .expect("spawn `true`");
    let pid = child.id();
    child.wait().expect("reap `true`");
    pid
}

/// Whether the process a resource names (`process.pid`) has exited. A
/// resource without a PID counts as running. A PID the kernel has given to
/// a new process keeps the series for the full idle time.
fn process_exited(resource: &ProcessResource) -> bool {
    resource
        .attributes
        .get("process.pid")
        .and_then(|pid| pid.parse::<u32>().ok())
        .is_some_and(crate::targets::process_gone)
}

type State = ByResource<RedSeries>;

/// The RED histograms. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct RedMetrics {
    state: Arc<Mutex<State>>,
    /// Where cardinality caps are counted.
    health: Health,
}

pub(crate) fn now_unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl RedMetrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// Metrics whose cardinality caps are counted in `health`.
    pub fn with_health(health: Health) -> Self {
        Self {
            state: Arc::default(),
            health,
        }
    }

    /// Observes one request with its metric attributes (capped, see the
    /// module doc).
    pub fn observe(
        &self,
        resource: &Arc<ProcessResource>,
        record: &RequestRecord,
        attributes: &[(&'static str, Attr<'_>)],
    ) {
        let instrument = Instrument::of(record);
        let value = instrument.value_of(record);
        let now = Instant::now();
        let mut state = self.state.lock().expect("metrics lock");
        let series = state.series_mut(resource);
        let capped = series.cap_attributes(attributes, &self.health);
        let attributes = capped.as_deref().unwrap_or(attributes);
        series
            .histogram(instrument, attributes, now, &self.health)
            .observe(instrument.bounds(), value, now);
    }

    /// Total requests observed by `instrument` across all series (tests, health).
    pub fn count(&self, instrument: Instrument) -> u64 {
        let state = self.state.lock().expect("metrics lock");
        state
            .iter()
            .flat_map(|(_, s)| s.series.iter())
            .filter(|(key, _)| key.instrument == instrument)
            .map(|(_, h)| h.count)
            .sum()
    }

    /// Forgets series not updated for `idle` (vanished routes; an exited
    /// process's after [`EXITED_IDLE`]), bounding memory on long-running
    /// nodes.
    pub fn prune_idle(&self, idle: Duration) {
        self.prune(idle, EXITED_IDLE);
    }

    pub(crate) fn prune(&self, idle: Duration, exited_idle: Duration) {
        let mut state = self.state.lock().expect("metrics lock");
        state.prune_each(idle, exited_idle, |resource, idle| {
            resource
                .series
                .retain(|_, h| h.last_update.elapsed() < idle);
            resource.recount_values();
        });
        state.retain(|resource| !resource.series.is_empty());
    }

    /// A cumulative snapshot of every series as an OTLP export request
    /// (`None` if nothing was observed yet).
    pub fn to_otlp(&self) -> Option<ExportMetricsServiceRequest> {
        let now = now_unix_nanos();
        let state = self.state.lock().expect("metrics lock");
        let resource_metrics: Vec<ResourceMetrics> = state
            .iter()
            .map(|(resource, series)| {
                let mut by_instrument: BTreeMap<Instrument, Vec<HistogramDataPoint>> =
                    BTreeMap::new();
                for (
                    SeriesKey {
                        instrument,
                        attributes,
                    },
                    h,
                ) in &series.series
                {
                    by_instrument
                        .entry(*instrument)
                        .or_default()
                        .push(h.to_point(
                            instrument.bounds(),
                            attributes.iter().map(|(k, v)| key_value(k, v)).collect(),
                            now,
                        ));
                }
                resource_metrics(
                    resource,
                    by_instrument
                        .into_iter()
                        .map(|(instrument, data_points)| Metric {
                            name: instrument.name().to_owned(),
                            description: instrument.description().to_owned(),
                            unit: instrument.unit().to_owned(),
                            data: Some(metric::Data::Histogram(Histogram {
                                data_points,
                                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                            })),
                            ..Default::default()
                        })
                        .collect(),
                )
            })
            .collect();
        (!resource_metrics.is_empty()).then_some(ExportMetricsServiceRequest { resource_metrics })
    }
}

/// One resource's metrics, under the probe's instrumentation scope.
pub(crate) fn resource_metrics(
    attributes: &BTreeMap<String, String>,
    metrics: Vec<Metric>,
) -> ResourceMetrics {
    ResourceMetrics {
        resource: Some(Resource {
            attributes: attributes.iter().map(|(k, v)| string_kv(k, v)).collect(),
            ..Default::default()
        }),
        scope_metrics: vec![ScopeMetrics {
            scope: Some(scope()),
            metrics,
            schema_url: String::new(),
        }],
        schema_url: String::new(),
    }
}

/// A cumulative, monotonic sum: an OTLP counter.
pub(crate) fn counter_metric(
    name: &str,
    description: &str,
    unit: &str,
    points: Vec<NumberDataPoint>,
) -> Metric {
    Metric {
        name: name.to_owned(),
        description: description.to_owned(),
        unit: unit.to_owned(),
        data: Some(metric::Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        })),
        ..Default::default()
    }
}

/// An integer data point (a `u64` past `i64::MAX` saturates).
pub(crate) fn int_point(
    value: u64,
    start_unix_nanos: u64,
    now: u64,
    attributes: Vec<KeyValue>,
) -> NumberDataPoint {
    NumberDataPoint {
        attributes,
        start_time_unix_nano: start_unix_nanos,
        time_unix_nano: now,
        value: Some(number_data_point::Value::AsInt(
            i64::try_from(value).unwrap_or(i64::MAX),
        )),
        ..Default::default()
    }
}

/// Something the OTLP metrics exporter takes a cumulative snapshot of on
/// every interval: the RED histograms, the service graph, pod resources,
/// TCP health. One export request carries every producer's resources.
pub trait MetricProducer: Send + Sync + std::fmt::Debug {
    /// Cumulative OTLP metrics, grouped by resource.
    fn resource_metrics(&self) -> Vec<ResourceMetrics>;
    /// Forgets series not updated for `idle`, or for [`EXITED_IDLE`] if
    /// their process has exited (called before each snapshot).
    fn prune_idle(&self, _idle: Duration) {}
}

impl MetricProducer for RedMetrics {
    fn resource_metrics(&self) -> Vec<ResourceMetrics> {
        self.to_otlp()
            .map(|r| r.resource_metrics)
            .unwrap_or_default()
    }

    fn prune_idle(&self, idle: Duration) {
        RedMetrics::prune_idle(self, idle);
    }
}

/// The data points in an export request (what `exported` counts).
pub fn data_point_count(request: &ExportMetricsServiceRequest) -> u64 {
    request
        .resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .map(|m| match &m.data {
            Some(metric::Data::Histogram(h)) => h.data_points.len(),
            Some(metric::Data::Sum(s)) => s.data_points.len(),
            Some(metric::Data::Gauge(g)) => g.data_points.len(),
            Some(metric::Data::ExponentialHistogram(h)) => h.data_points.len(),
            Some(metric::Data::Summary(s)) => s.data_points.len(),
            None => 0,
        } as u64)
        .sum()
}

/// The metric names of one resource's metrics, in order (tests).
#[cfg(test)]
pub(crate) fn metric_names(resource_metrics: &ResourceMetrics) -> Vec<&str> {
    resource_metrics
        .scope_metrics
        .iter()
        .flat_map(|s| &s.metrics)
        .map(|m| m.name.as_str())
        .collect()
}

/// The first sample line of `family` (or of its `_bucket`, `_sum`, ...
/// series) in a text exposition; panics with the text if there is none
/// (tests).
#[cfg(test)]
pub(crate) fn exposition_line<'a>(text: &'a str, family: &str) -> &'a str {
    text.lines()
        .find(|line| {
            line.strip_prefix(family)
                .is_some_and(|rest| rest.starts_with(['{', ' ', '_']))
                && !line.starts_with('#')
        })
        .unwrap_or_else(|| panic!("no {family} series in:\n{text}"))
}

/// The instrumentation scope of everything the probe emits.
pub fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "ferrotel-probe".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        ..Default::default()
    }
}

/// Resource attributes that become Prometheus labels (the rest would
/// belong in `target_info`; these identify the workload on a node).
pub(crate) const PROMETHEUS_RESOURCE_LABELS: [&str; 4] = [
    "service.name",
    "service.namespace",
    "k8s.namespace.name",
    "k8s.pod.name",
];

/// The Prometheus labels a resource contributes to each of its series.
pub(crate) fn prometheus_resource_labels(
    resource: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    PROMETHEUS_RESOURCE_LABELS
        .iter()
        .filter_map(|k| resource.get(*k).map(|v| (prometheus_label(k), v.clone())))
        .collect()
}

pub(crate) fn prometheus_label(key: &str) -> String {
    key.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

pub(crate) fn value_text(value: &Value) -> String {
    match value {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::Bool(b) => b.to_string(),
    }
}

impl prometheus_client::collector::Collector for RedMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        // Processes with equal Prometheus labels (e.g. two workers of one
        // service) are merged: the exposition must not repeat a series.
        let mut merged: BTreeMap<Instrument, BTreeMap<Vec<(String, String)>, HistogramState>> =
            BTreeMap::new();
        {
            let state = self.state.lock().expect("metrics lock");
            for (resource, series) in state.iter() {
                let resource_labels = prometheus_resource_labels(resource);
                for (
                    SeriesKey {
                        instrument,
                        attributes,
                    },
                    h,
                ) in &series.series
                {
                    let mut labels = resource_labels.clone();
                    labels.extend(
                        attributes
                            .iter()
                            .map(|(k, v)| (prometheus_label(k), value_text(v))),
                    );
                    labels.sort();
                    merged
                        .entry(*instrument)
                        .or_default()
                        .entry(labels)
                        .and_modify(|m| m.merge(h))
                        .or_insert_with(|| h.clone());
                }
            }
        }
        for (instrument, series) in merged {
            let unit = instrument.prometheus_unit();
            let mut family = encoder.encode_descriptor(
                instrument.prometheus_name(),
                instrument.description(),
                Some(&unit),
                MetricType::Histogram,
            )?;
            for (labels, h) in series {
                let buckets = h.prometheus_buckets(instrument.bounds());
                let metric_encoder = family.encode_family(&labels)?;
                encode_histogram(metric_encoder, h.sum, h.count, &buckets)?;
            }
        }
        Ok(())
    }
}

pub(crate) fn encode_histogram(
    mut encoder: prometheus_client::encoding::MetricEncoder<'_>,
    sum: f64,
    count: u64,
    buckets: &[(f64, u64)],
) -> Result<(), std::fmt::Error> {
    encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, count, buckets, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::semconv::key_value;
    use crate::telemetry::semconv::{metric_attributes, tests::http_record};

    /// `kubectl ferrotel` reads these families and labels from `/metrics`
    /// (`ferrotel_api::probe_endpoints`): renaming one here breaks it.
    #[test]
    fn the_exposition_carries_every_family_and_label_the_cli_reads() {
        use crate::health::Health;
        use crate::telemetry::record::GrpcInfo;
        use ferrotel_api::probe_endpoints::{labels as l, metrics as m};

        let metrics = RedMetrics::new();
        let resource = Arc::new(ProcessResource {
            attributes: [
                ("service.name".to_owned(), "shop".to_owned()),
                ("k8s.namespace.name".to_owned(), "ns".to_owned()),
                ("k8s.pod.name".to_owned(), "shop-1".to_owned()),
            ]
            .into(),
        });
        let observe = |record: RequestRecord, route: Option<&str>| {
            let attributes = metric_attributes(&record, route);
            metrics.observe(&resource, &record, &attributes);
        };
        observe(
            http_record(SpanKind::Server, "GET", "/a", Some(500)),
            Some("/a"),
        );
        observe(http_record(SpanKind::Client, "GET", "/b", Some(200)), None);
        for kind in [SpanKind::Server, SpanKind::Client] {
            let mut grpc = http_record(kind, "POST", "/", None);
            grpc.protocol = Protocol::Grpc(GrpcInfo {
                service: "s.S".into(),
                method: "M".into(),
                status_code: Some(0),
                authority: Some("s:50051".into()),
                user_agent: None,
                tls: None,
            });
            observe(grpc, None);
        }
        let health = Health::new();
        let frontend = health.frontend(ferrotel_api::language::Language::Go);
        frontend.set_attached_processes(1);
        frontend.attach_refused("no_functions");
        frontend.kernel_dropped_total("events", 1);
        health.record_dropped("pipeline_full");
        health.export_dropped("traces", "queue_full", 1);
        health.export_request("traces", "retryable");
        let mut registry = prometheus_client::registry::Registry::default();
        health.register(&mut registry);
        registry.register_collector(Box::new(metrics.clone()));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");

        let line = |family: &str| exposition_line(&text, family);
        for family in [
            m::HTTP_SERVER_DURATION,
            m::HTTP_CLIENT_DURATION,
            m::RPC_SERVER_DURATION,
            m::RPC_CLIENT_DURATION,
        ] {
            let series = line(&format!("{family}_bucket"));
            for label in [l::NAMESPACE, l::POD, l::SERVICE] {
                assert!(
                    series.contains(&format!("{label}=\"")),
                    "{label} in {series}"
                );
            }
        }
        let server = line(&format!("{}_bucket", m::HTTP_SERVER_DURATION));
        for label in [l::HTTP_ROUTE, l::HTTP_METHOD, l::ERROR_TYPE] {
            assert!(
                server.contains(&format!("{label}=\"")),
                "{label} in {server}"
            );
        }
        let client = line(&format!("{}_bucket", m::HTTP_CLIENT_DURATION));
        for label in [l::SERVER_ADDRESS, l::SERVER_PORT] {
            assert!(
                client.contains(&format!("{label}=\"")),
                "{label} in {client}"
            );
        }
        let rpc = line(&format!("{}_bucket", m::RPC_SERVER_DURATION));
        for label in [l::RPC_SERVICE, l::RPC_METHOD] {
            assert!(rpc.contains(&format!("{label}=\"")), "{label} in {rpc}");
        }
        assert!(line(m::ATTACHED_PROCESSES).contains(&format!("{}=\"go\"", l::LANGUAGE)));
        assert!(line(m::ATTACH_REFUSED).contains(&format!("{}=\"no_functions\"", l::REASON)));
        for family in [
            m::KERNEL_EVENTS_DROPPED,
            m::RECORDS_DROPPED,
            m::EXPORT_DROPPED,
            m::EXPORT_REQUESTS,
        ] {
            line(family);
        }
    }

    fn resource(service: &str) -> Arc<ProcessResource> {
        Arc::new(ProcessResource {
            attributes: [("service.name".to_string(), service.to_string())].into(),
        })
    }

    /// A resource named by the PID of a process that has exited and one by
    /// this test's own PID.
    fn exited_and_running() -> (Arc<ProcessResource>, Arc<ProcessResource>) {
        let exited = exited_pid();
        let with_pid = |service: &str, pid: u32| {
            Arc::new(ProcessResource {
                attributes: [
                    ("service.name".to_string(), service.to_string()),
                    ("process.pid".to_string(), pid.to_string()),
                ]
                .into(),
            })
        };
        (
            with_pid("exited", exited),
            with_pid("running", std::process::id()),
        )
    }

    fn services(request: Option<ExportMetricsServiceRequest>) -> Vec<String> {
        let mut names: Vec<String> = request
            .map(|r| r.resource_metrics)
            .unwrap_or_default()
            .iter()
            .map(|rm| format!("{:?}", rm.resource))
            .map(|r| {
                ["exited", "running"]
                    .into_iter()
                    .find(|name| r.contains(name))
                    .unwrap_or("?")
                    .to_string()
            })
            .collect();
        names.sort();
        names
    }

    #[test]
    fn an_exited_processs_series_are_dropped_after_exited_idle_a_running_ones_are_kept() {
        let (exited, running) = exited_and_running();
        let metrics = RedMetrics::new();
        let record = http_record(SpanKind::Server, "GET", "/", Some(200));
        for resource in [&exited, &running] {
            metrics.observe(resource, &record, &metric_attributes(&record, Some("/")));
        }
        metrics.prune_idle(Duration::from_secs(3600));
        assert_eq!(
            services(metrics.to_otlp()),
            ["exited", "running"],
            "updated less than a minute ago: both still exported"
        );
        metrics.prune(Duration::from_secs(3600), Duration::ZERO);
        assert_eq!(
            services(metrics.to_otlp()),
            ["running"],
            "past the exited idle time only the exited process's series go"
        );
        assert_eq!(metrics.count(Instrument::HttpServer), 1);
    }

    #[test]
    fn equal_resources_share_series_and_different_ones_do_not() {
        let metrics = RedMetrics::new();
        let record = http_record(SpanKind::Server, "GET", "/", Some(200));
        // Two allocations with equal attributes (e.g. a resource replaced by
        // discovery with the same values), then another service.
        for res in [resource("shop"), resource("shop"), resource("shop")] {
            metrics.observe(&res, &record, &metric_attributes(&record, Some("/")));
        }
        metrics.observe(
            &resource("cart"),
            &record,
            &metric_attributes(&record, Some("/")),
        );
        let request = metrics.to_otlp().expect("observed");
        let mut counts: Vec<(String, u64)> = request
            .resource_metrics
            .iter()
            .map(|rm| {
                let name = rm.resource.as_ref().unwrap().attributes[0]
                    .value
                    .as_ref()
                    .and_then(|v| v.value.as_ref())
                    .map(|v| format!("{v:?}"))
                    .unwrap_or_default();
                let Some(metric::Data::Histogram(h)) = &rm.scope_metrics[0].metrics[0].data else {
                    panic!("a histogram")
                };
                assert_eq!(h.data_points.len(), 1, "one series per resource");
                (name, h.data_points[0].count)
            })
            .collect();
        counts.sort();
        assert_eq!(counts.len(), 2, "two distinct resources: {counts:?}");
        assert!(
            counts[0].0.contains("cart") && counts[0].1 == 1,
            "{counts:?}"
        );
        assert!(
            counts[1].0.contains("shop") && counts[1].1 == 3,
            "{counts:?}"
        );
        assert_eq!(metrics.count(Instrument::HttpServer), 4);
    }

    fn grpc_record(method: String, code: i32) -> RequestRecord {
        let mut record = http_record(SpanKind::Server, "POST", "/", None);
        record.protocol = Protocol::Grpc(crate::telemetry::record::GrpcInfo {
            service: "shop.Cart".into(),
            method: method.into(),
            status_code: Some(code),
            authority: None,
            user_agent: None,
            tls: None,
        });
        record
    }

    fn series_with(metrics: &RedMetrics, key: &str, value: &Value) -> u64 {
        let request = metrics.to_otlp().expect("observed");
        request.resource_metrics[0].scope_metrics[0]
            .metrics
            .iter()
            .flat_map(|m| match &m.data {
                Some(metric::Data::Histogram(h)) => h.data_points.clone(),
                _ => vec![],
            })
            .filter(|p| p.attributes.iter().any(|kv| *kv == key_value(key, value)))
            .map(|p| p.count)
            .sum()
    }

    #[test]
    fn rpc_methods_beyond_the_cap_are_reported_as_other_and_counted() {
        let health = Health::new();
        let metrics = RedMetrics::with_health(health.clone());
        let res = resource("cart");
        let extra = 25;
        for i in 0..MAX_ATTRIBUTE_VALUES + extra {
            let record = grpc_record(format!("Method{i}"), 0);
            metrics.observe(&res, &record, &metric_attributes(&record, None));
        }
        assert_eq!(
            series_with(&metrics, "rpc.method", &Value::from(OVERFLOW_VALUE)),
            extra as u64,
            "methods past the cap share the _OTHER series"
        );
        assert_eq!(
            health.metric_attribute_capped_total("rpc.method"),
            extra as u64
        );
        assert_eq!(
            metrics.count(Instrument::RpcServer),
            (MAX_ATTRIBUTE_VALUES + extra) as u64,
            "capping loses no observation"
        );
        // A method seen before the cap keeps its own series.
        let record = grpc_record("Method0".into(), 0);
        metrics.observe(&res, &record, &metric_attributes(&record, None));
        assert_eq!(series_with(&metrics, "rpc.method", &"Method0".into()), 2);
    }

    #[test]
    fn a_borrowed_series_key_hashes_and_compares_like_the_owned_key_it_finds() {
        use std::hash::BuildHasher;
        let hasher = foldhash::fast::FixedState::default();
        let client = http_record(SpanKind::Client, "GET", "/", Some(503));
        let mut no_host = client.clone();
        if let Protocol::Http(http) = &mut no_host.protocol {
            http.host = None; // server.address from the peer address, inline text
        }
        for record in [client, no_host] {
            let borrowed = metric_attributes(&record, None);
            let key = SeriesKeyRef {
                instrument: Instrument::HttpClient,
                attributes: &borrowed,
            };
            let owned = SeriesKey::from(&key);
            assert_eq!(hasher.hash_one(&key), hasher.hash_one(&owned));
            assert!(hashbrown::Equivalent::equivalent(&key, &owned));
            let other = SeriesKeyRef {
                instrument: Instrument::HttpServer,
                attributes: &borrowed,
            };
            assert!(!hashbrown::Equivalent::equivalent(&other, &owned));
            let fewer = SeriesKeyRef {
                instrument: Instrument::HttpClient,
                attributes: &borrowed[1..],
            };
            assert!(!hashbrown::Equivalent::equivalent(&fewer, &owned));
        }
    }

    #[test]
    fn requests_with_equal_attributes_feed_one_series() {
        let metrics = RedMetrics::new();
        let res = resource("shop");
        for _ in 0..100 {
            for record in [
                http_record(SpanKind::Server, "GET", "/users/1", Some(200)),
                http_record(SpanKind::Client, "GET", "/", Some(503)),
            ] {
                metrics.observe(
                    &res,
                    &record,
                    &metric_attributes(&record, Some("/users/{id}")),
                );
            }
        }
        let request = metrics.to_otlp().expect("observed");
        let counts: Vec<u64> = request.resource_metrics[0]
            .scope_metrics
            .iter()
            .flat_map(|s| &s.metrics)
            .flat_map(|m| match &m.data {
                Some(metric::Data::Histogram(h)) => h.data_points.iter().map(|p| p.count).collect(),
                _ => Vec::new(),
            })
            .collect();
        assert_eq!(
            counts,
            [100, 100],
            "one series per instrument, every request in it"
        );
    }

    #[test]
    fn series_beyond_the_cap_go_to_the_overflow_series() {
        let health = Health::new();
        let metrics = RedMetrics::with_health(health.clone());
        let res = resource("cart");
        // 500 methods x 5 codes = 2500 combinations, 500 past the series cap.
        for code in 0..5 {
            for i in 0..MAX_ATTRIBUTE_VALUES {
                let record = grpc_record(format!("M{i}"), code);
                metrics.observe(&res, &record, &metric_attributes(&record, None));
            }
        }
        let overflow = (5 * MAX_ATTRIBUTE_VALUES - MAX_SERIES_PER_INSTRUMENT) as u64;
        assert_eq!(
            series_with(&metrics, OVERFLOW_ATTRIBUTE, &Value::Bool(true)),
            overflow
        );
        assert_eq!(health.metric_series_capped_total(), overflow);
        assert_eq!(
            metrics.count(Instrument::RpcServer),
            5 * MAX_ATTRIBUTE_VALUES as u64
        );
    }

    #[test]
    fn histogram_counts_equal_the_number_of_requests() {
        let metrics = RedMetrics::new();
        let res = resource("shop");
        for i in 0..250u64 {
            let mut record = http_record(
                SpanKind::Server,
                "GET",
                "/users/1",
                Some(if i % 10 == 0 { 500 } else { 200 }),
            );
            record.end_ns = record.start_ns + i * 1_000_000;
            let attrs = metric_attributes(&record, Some("/users/{id}"));
            metrics.observe(&res, &record, &attrs);
        }
        for _ in 0..7 {
            let record = http_record(SpanKind::Client, "GET", "/", Some(200));
            metrics.observe(&res, &record, &metric_attributes(&record, None));
        }
        assert_eq!(
            metrics.count(Instrument::HttpServer),
            250,
            "one observation per server request"
        );
        assert_eq!(
            metrics.count(Instrument::HttpClient),
            7,
            "one observation per client request"
        );

        let request = metrics.to_otlp().expect("a snapshot");
        let points: Vec<&HistogramDataPoint> = request.resource_metrics[0].scope_metrics[0]
            .metrics
            .iter()
            .filter(|m| m.name == "http.server.request.duration")
            .flat_map(|m| match &m.data {
                Some(metric::Data::Histogram(h)) => h.data_points.iter().collect::<Vec<_>>(),
                _ => vec![],
            })
            .collect();
        assert_eq!(points.len(), 2, "one series per status code");
        for p in &points {
            assert_eq!(
                p.bucket_counts.iter().sum::<u64>(),
                p.count,
                "bucket counts add up to the count"
            );
            assert_eq!(p.bucket_counts.len(), p.explicit_bounds.len() + 1);
        }
        assert_eq!(points.iter().map(|p| p.count).sum::<u64>(), 250);
    }

    #[test]
    fn values_land_in_upper_inclusive_buckets_in_the_instrument_unit() {
        let metrics = RedMetrics::new();
        let mut record = http_record(SpanKind::Server, "GET", "/", Some(200));
        record.end_ns = record.start_ns + 5_000_000; // exactly 0.005 s
        metrics.observe(&resource("a"), &record, &[]);
        let req = metrics.to_otlp().unwrap();
        let Some(metric::Data::Histogram(h)) =
            &req.resource_metrics[0].scope_metrics[0].metrics[0].data
        else {
            panic!("expected a histogram");
        };
        assert_eq!(
            h.data_points[0].bucket_counts[0], 1,
            "0.005 s belongs to the (.., 0.005] bucket"
        );
        assert_eq!(h.data_points[0].sum, Some(0.005));
    }

    #[test]
    fn prometheus_exposition_uses_prometheus_names_and_merges_equal_series() {
        let metrics = RedMetrics::new();
        let a = Arc::new(ProcessResource {
            attributes: [
                ("service.name".to_string(), "shop".to_string()),
                ("process.pid".into(), "1".into()),
            ]
            .into(),
        });
        let b = Arc::new(ProcessResource {
            attributes: [
                ("service.name".to_string(), "shop".to_string()),
                ("process.pid".into(), "2".into()),
            ]
            .into(),
        });
        let record = http_record(SpanKind::Server, "GET", "/", Some(200));
        metrics.observe(&a, &record, &metric_attributes(&record, Some("/")));
        metrics.observe(&b, &record, &metric_attributes(&record, Some("/")));
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(metrics.clone()));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let count_lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("http_server_request_duration_seconds_count"))
            .collect();
        assert_eq!(
            count_lines.len(),
            1,
            "two pids of one service merge into one series:\n{text}"
        );
        assert!(
            count_lines[0].ends_with(" 2"),
            "merged count is 2: {}",
            count_lines[0]
        );
        assert!(
            count_lines[0].contains("http_route=\"/\""),
            "{}",
            count_lines[0]
        );
        assert!(
            count_lines[0].contains("service_name=\"shop\""),
            "{}",
            count_lines[0]
        );
    }
}
