//! The probe's config file: the one format that the operator renders into the
//! probe ConfigMap (`probe.yaml`) and that `ferrotel-probe --config` reads,
//! in a DaemonSet and standalone alike.
//!
//! Every field has a default so that a hand-written standalone config can be
//! short; the operator always writes every field, resolved, so what a probe
//! runs with is visible in the ConfigMap.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::optin::Candidate;
// Re-exported: the probe config names the language it configures, and its
// readers have always found the type here.
pub use crate::language::Language;

/// Name of the probe config file inside the probe ConfigMap and its mount.
pub const PROBE_CONFIG_FILE: &str = "probe.yaml";

/// The full probe configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ProbeConfig {
    /// The Instrumentation this probe serves (`namespace/name`), used by the
    /// opt-in rules; `None` for a standalone probe.
    pub instrumentation: Option<InstrumentationRef>,
    /// Where and how spans and metrics are exported.
    pub exporter: ExporterConfig,
    /// Head sampling of new traces.
    pub sampler: SamplerConfig,
    /// Trace-context formats read from incoming requests and, where
    /// propagation carries context out, written into outgoing ones. Empty
    /// means the default, `[tracecontext, baggage]`
    /// ([`Propagator::effective`]).
    pub propagators: Vec<Propagator>,
    /// Carrying context between services without an SDK: header injection
    /// into outgoing HTTP/1 requests and same-node joins. Left out of the
    /// rendered file when off.
    #[serde(skip_serializing_if = "PropagationConfig::is_off")]
    pub propagation: PropagationConfig,
    /// Extra resource attributes on every span and metric.
    pub resource_attributes: BTreeMap<String, String>,
    /// Which processes to instrument.
    pub targets: TargetsConfig,
    /// `http.route` derivation.
    pub routes: RoutesConfig,
    /// What is removed from telemetry before it leaves the node.
    pub redaction: RedactionConfig,
    /// Tuning for the Go program set.
    pub go: LanguageTuning,
    /// Tuning for the Python program set.
    pub python: LanguageTuning,
    /// The probe's own Prometheus endpoint.
    pub metrics: ProbeMetricsConfig,
    /// CPU profiling of the traced processes (off by default).
    pub profiling: ProfilingConfig,
    /// What the probe computes on the node besides spans and RED metrics:
    /// the service graph, per-pod resources and TCP health.
    pub views: ViewsConfig,
    /// Log filter (`info`, `debug`, or a `tracing` directive list).
    pub log_level: Option<String>,
    /// Every Instrumentation the opt-in rules must consider (this one
    /// included), as the operator sees them: `"true"` means "the only one in
    /// the cluster", and the probe may not read Instrumentations itself (its
    /// RBAC is pods and namespaces). Pass them to
    /// [`crate::optin::Instrumentations::new`]. Empty for a standalone probe.
    pub cluster_instrumentations: Vec<Candidate>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InstrumentationRef {
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum OtlpProtocol {
    /// OTLP over gRPC (default port 4317).
    #[default]
    #[serde(rename = "grpc")]
    Grpc,
    /// OTLP over HTTP with protobuf bodies (default port 4318).
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ExporterConfig {
    /// OTLP endpoint, e.g. `http://otel.observability.svc:4317`.
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` (and the per-signal variables) in the
    /// probe's environment override it, as the OTel spec orders them; empty
    /// with no environment means `http://localhost:4317`.
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    /// Extra headers (e.g. authentication) sent with every export.
    pub headers: BTreeMap<String, String>,
    /// TLS client settings; absent means plain text unless the endpoint is `https://`.
    pub tls: Option<TlsConfig>,
    /// Per-export timeout in milliseconds.
    pub timeout_millis: u64,
    /// Spans held in memory while the collector is slow or down; beyond it new
    /// spans are dropped and counted.
    pub max_queue_size: usize,
    /// Spans sent per export request.
    pub max_export_batch_size: usize,
    /// How often queued spans are flushed, in milliseconds.
    pub scheduled_delay_millis: u64,
    /// How often metrics are exported, in milliseconds.
    pub metrics_interval_millis: u64,
}

impl Default for ExporterConfig {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            protocol: OtlpProtocol::Grpc,
            headers: BTreeMap::new(),
            tls: None,
            timeout_millis: 10_000,
            max_queue_size: 8192,
            max_export_batch_size: 512,
            scheduled_delay_millis: 1000,
            metrics_interval_millis: 15_000,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct TlsConfig {
    /// PEM CA bundle that signs the collector's certificate.
    pub ca_file: Option<String>,
    /// PEM client certificate for mutual TLS.
    pub cert_file: Option<String>,
    /// PEM client key for mutual TLS.
    pub key_file: Option<String>,
    /// Skip server certificate verification (testing only).
    pub insecure_skip_verify: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SamplerType {
    AlwaysOn,
    AlwaysOff,
    #[serde(rename = "traceidratio")]
    TraceIdRatio,
    ParentbasedAlwaysOn,
    ParentbasedAlwaysOff,
    #[default]
    #[serde(rename = "parentbased_traceidratio")]
    ParentbasedTraceIdRatio,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct SamplerConfig {
    #[serde(rename = "type")]
    pub kind: SamplerType,
    /// Fraction of new traces kept, 0.0 to 1.0 (ratio samplers only).
    pub ratio: f64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        Self {
            kind: SamplerType::ParentbasedTraceIdRatio,
            ratio: 1.0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Propagator {
    /// W3C `traceparent` / `tracestate`.
    Tracecontext,
    /// W3C `baggage`.
    Baggage,
    /// Zipkin B3, single and multi header.
    B3,
}

impl Propagator {
    /// The formats in effect for a configured list: the list, or the
    /// default `[tracecontext, baggage]` when it is empty.
    pub fn effective(configured: &[Propagator]) -> Vec<Propagator> {
        if configured.is_empty() {
            vec![Propagator::Tracecontext, Propagator::Baggage]
        } else {
            configured.to_vec()
        }
    }
}

/// Trace-context propagation between services, resolved for one probe.
/// Both halves need the probe's `propagation` program set (sockops on the
/// traced containers' cgroup v2 directories, sk_msg on their TCP client
/// sockets, CAP_NET_ADMIN); a node that cannot load it refuses with a log
/// line and `ferrotel_probe_propagation_refused_total`, and the probe goes
/// on tracing without it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct PropagationConfig {
    /// Write the context headers of [`ProbeConfig::propagators`] into
    /// outgoing HTTP/1 requests of traced processes, right after the
    /// request line.
    pub inject: bool,
    /// When a request cannot carry them (injection off, HTTP/2, a head the
    /// kernel cannot follow), publish the client span for a traced server
    /// on the same node, which continues it.
    pub join: bool,
    /// A directory on a BPF filesystem where the probe pins the maps
    /// propagation shares: the node-wide join map, and (briefly, while
    /// loading) the maps its two program sets share. Unset:
    /// [`PropagationConfig::DEFAULT_PIN_DIR`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pin_dir: Option<String>,
}

impl PropagationConfig {
    /// Where propagation pins its maps unless `pinDir` says otherwise.
    pub const DEFAULT_PIN_DIR: &'static str = "/sys/fs/bpf/ferrotel";

    /// Nothing set: the default.
    pub fn is_off(&self) -> bool {
        *self == Self::default()
    }

    /// Either half is on: the propagation program set is needed.
    pub fn enabled(&self) -> bool {
        self.inject || self.join
    }
}

/// How a probe finds the processes it instruments.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct TargetsConfig {
    /// Watch pods on this node and apply the opt-in rules (DaemonSet mode).
    pub kubernetes: bool,
    /// Label selector on namespaces, in addition to the opt-in annotation
    /// (Kubernetes mode); serialized `LabelSelector`.
    pub namespace_selector: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
    /// Label selector on pods (Kubernetes mode).
    pub pod_selector: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
    /// Standalone: instrument these process IDs.
    pub pids: Vec<u32>,
    /// Standalone: instrument processes whose executable path matches one of these globs.
    pub exe_paths: Vec<String>,
    /// Standalone: instrument processes listening on one of these TCP ports.
    pub open_ports: Vec<u16>,
}

/// What to report as `http.route` for a path no pattern matches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum UnmatchedRoutes {
    /// Replace ID-like segments (numbers, UUIDs, hex) with `*`.
    #[default]
    Heuristic,
    /// Report the path as it is (beware cardinality).
    Path,
    /// Report `/**` for every unmatched path.
    Wildcard,
    /// Leave `http.route` unset.
    Unset,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct RoutesConfig {
    /// Route templates such as `/users/{id}`; the first that matches names the route.
    pub patterns: Vec<String>,
    pub unmatched: UnmatchedRoutes,
    /// Cap on distinct `http.route` values per service; past it, `/**`.
    pub max_distinct: u32,
}

impl Default for RoutesConfig {
    fn default() -> Self {
        Self {
            patterns: Vec::new(),
            unmatched: UnmatchedRoutes::Heuristic,
            max_distinct: 500,
        }
    }
}

/// Which values of a URL's query string are replaced by `REDACTED` in
/// `url.query` and `url.full` (keys are kept, so the shape of the request
/// stays visible).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum QueryRedaction {
    /// Every value: query strings carry tokens, signatures and personal data
    /// under any name.
    #[default]
    All,
    /// The values of the keys the OpenTelemetry semantic conventions name
    /// (`AWSAccessKeyId`, `Signature`, `sig`, `X-Goog-Signature`) and of
    /// `sensitiveQueryKeys`.
    Listed,
    /// Nothing: query strings are exported as sent. (Not `off`: YAML 1.1
    /// readers turn that word into a boolean.)
    None,
}

/// What the probe removes from telemetry before it leaves the node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct RedactionConfig {
    /// Query string values in `url.query` and `url.full`.
    pub query: QueryRedaction,
    /// Extra query keys whose values are redacted under `query: listed`
    /// (compared case-sensitively, after percent-decoding).
    pub sensitive_query_keys: Vec<String>,
}

/// Per-language tuning of the eBPF program set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct LanguageTuning {
    /// Trace HTTP/1.x servers and clients (Go: off leaves their uprobes
    /// out; the Python probe needs it on).
    pub http: bool,
    /// Trace gRPC servers and clients (Go only; off leaves their uprobes
    /// out).
    pub grpc: bool,
    /// Ring buffer size in bytes (a power of two, at least one page).
    pub ring_buffer_bytes: u32,
    /// Bytes copied from a traced process per read, 64 to 4096: the head of
    /// each socket read or write (Python), each string of a request (Go;
    /// at most the event's field: 127 for a path, 63 for host, route and
    /// peer, 15 for the method).
    #[schemars(range(min = 64, max = 4096))]
    pub max_payload_bytes: u32,
}

impl Default for LanguageTuning {
    fn default() -> Self {
        Self {
            http: true,
            grpc: true,
            ring_buffer_bytes: 4 << 20,
            max_payload_bytes: 512,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ProbeMetricsConfig {
    /// Serve Prometheus `/metrics` (RED metrics and probe health).
    pub enabled: bool,
    /// Listen address, e.g. `0.0.0.0:9464`.
    pub listen: String,
}

impl Default for ProbeMetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: "0.0.0.0:9464".to_owned(),
        }
    }
}

/// CPU profiling of the traced processes: sampled on the CPU clock,
/// symbolized on the node (Go through the binary's own function table,
/// Python at the interpreter's level), exported as OTLP profiles and served
/// as pprof. See docs/probe-profiling.md.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ProfilingConfig {
    /// Sample the traced processes' CPU use.
    pub enabled: bool,
    /// Samples per second of CPU time a traced process uses (default 19;
    /// see docs/probe-profiling.md for the cost at 19 and 99).
    #[schemars(range(min = 1, max = 1000))]
    pub frequency_hz: u32,
    /// How often aggregated profiles are exported, in seconds.
    #[schemars(range(min = 1, max = 3600))]
    pub export_interval_seconds: u32,
    /// Also record the kernel part of each stack (time spent in syscalls).
    pub kernel_stacks: bool,
}

impl Default for ProfilingConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            frequency_hz: 19,
            export_interval_seconds: 30,
            kernel_stacks: true,
        }
    }
}

/// The node-level views: the service graph (edges between services with
/// their request rate, errors and latency), per-pod resources (CPU, memory,
/// disk, network) with node memory, and TCP health. Each is on by default.
///
/// The Instrumentation embeds this type as `spec.views` (one definition of
/// each knob): the bounds below are its schema's, checked by the API
/// server, and the probe reads the rendered section as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ViewsConfig {
    /// Edges between services (requests, failures, client and server
    /// durations) as `traces_service_graph_request_*` metrics.
    pub service_graph: ServiceGraphConfig,
    /// CPU, memory, disk and network of pods (`k8s.pod.*`), and node memory.
    pub pod_resources: PodResourcesConfig,
    /// Retransmits, RTT, failed connections and resets of pods' TCP
    /// connections (`obi.stat.tcp.*`).
    pub tcp_health: TcpHealthConfig,
}

impl ViewsConfig {
    /// The probe reports pods it does not trace — other workloads', other
    /// tenants' — on its node: `podResources.allPods` widens the pods the
    /// sampler reads, for pod resources and TCP health alike, so it takes
    /// effect whenever either of them is on.
    pub fn reports_all_pods(&self) -> bool {
        self.pod_resources.all_pods && (self.pod_resources.enabled || self.tcp_health.enabled)
    }
}

/// How a peer's IP address becomes a Kubernetes name in the service graph.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PeerResolution {
    /// Every pod IP and Service ClusterIP of the cluster (a stripped-down,
    /// cluster-wide watch of Pods and Services; see docs/views.md).
    #[default]
    Cluster,
    /// Only the pods on this node; peers elsewhere are named by address
    /// (servers) or `user` (clients).
    Node,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ServiceGraphConfig {
    /// Export `traces_service_graph_request_*` metrics. Default true.
    pub enabled: bool,
    /// Where peer addresses are resolved to names: `cluster` (default; a
    /// cluster-wide watch of Pods and Services) or `node` (this node's pods
    /// only). Also names the peers of TCP health.
    pub peers: PeerResolution,
    /// Cap on distinct edges per probe (default 2000); past it, new edges
    /// are counted in one overflow series (`otel.metric.overflow=true`).
    /// At least 1: turning the graph off is `enabled: false`. At most
    /// 10000: an edge is up to 36 Prometheus series (two counters, two
    /// histograms of 17 series each) in every export and scrape of every
    /// probe, so 10000 edges are up to 360000 series per probe; a graph
    /// that needs more is a cardinality problem for the metrics backend,
    /// not a map anyone reads.
    #[schemars(range(min = 1, max = 10000))]
    pub max_edges: u32,
}

impl Default for ServiceGraphConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            peers: PeerResolution::Cluster,
            max_edges: 2000,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct PodResourcesConfig {
    /// Export `k8s.pod.*` resource metrics and node memory. Default true.
    pub enabled: bool,
    /// Report every pod on the node, not only the pods this probe traces
    /// (pod resources and TCP health alike). Default false. In an
    /// Instrumentation it needs a ProbeClass with `allowAllPodResources:
    /// true`: the other pods are other workloads', possibly other tenants'.
    pub all_pods: bool,
    /// How often cgroup and process counters (and TCP health's kernel
    /// counters) are read, in milliseconds; default 10000. At least 1000:
    /// each reading opens a few cgroup files per reported pod and, on
    /// cgroup v1 and hybrid hosts, `/proc/<pid>/io` of each of their
    /// processes, on every node, while the readings leave the probe only
    /// every export (15 s) or scrape. At most 60000: counters move once
    /// per reading, and a dashboard's `rate()` over a one-minute window
    /// (Grafana's `$__rate_interval` at a 15 s scrape) would see windows
    /// without any reading.
    #[schemars(range(min = 1000, max = 60000))]
    pub interval_millis: u64,
}

impl Default for PodResourcesConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            all_pods: false,
            interval_millis: 10_000,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct TcpHealthConfig {
    /// Export retransmits, RTT, failed connections and resets of the
    /// reported pods' TCP connections. Default true.
    pub enabled: bool,
}

impl Default for TcpHealthConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

impl ProbeConfig {
    /// Parses a probe config file (YAML or JSON).
    pub fn from_yaml(text: &str) -> Result<Self, serde_yaml::Error> {
        serde_yaml::from_str(text)
    }

    /// Renders the config as YAML, every field resolved.
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("ProbeConfig always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let config = ProbeConfig::from_yaml("{}").expect("empty config parses");
        assert_eq!(config, ProbeConfig::default());
    }

    #[test]
    fn rendered_config_round_trips() {
        let mut config = ProbeConfig::default();
        config.exporter.endpoint = "http://otel.observability.svc:4318".into();
        config.exporter.protocol = OtlpProtocol::HttpProtobuf;
        config.routes.patterns = vec!["/users/{id}".into()];
        config.sampler.kind = SamplerType::TraceIdRatio;
        config.sampler.ratio = 0.25;
        let parsed = ProbeConfig::from_yaml(&config.to_yaml()).expect("rendered config parses");
        assert_eq!(parsed, config);
    }

    #[test]
    fn protocol_and_sampler_use_otel_spellings() {
        let config = ProbeConfig::from_yaml(
            "exporter: {protocol: http/protobuf}\nsampler: {type: parentbased_traceidratio, ratio: 0.5}",
        )
        .expect("OTel spellings parse");
        assert_eq!(config.exporter.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(config.sampler.kind, SamplerType::ParentbasedTraceIdRatio);
    }
}
