//! `Instrumentation` (`ferrotel.io/v1alpha1`, namespaced): "trace the Go and
//! Python services in the namespaces that opted in, and send it there".
//!
//! One Instrumentation renders one probe DaemonSet per language in its own
//! namespace (see the operator's `instrumentation` module). Which pods a probe
//! instruments is decided by the opt-in rules in [`crate::optin`].
//!
//! # GitOps
//!
//! The operator never writes `spec`, and the schema carries **no defaults**:
//! every optional field is an `Option` and defaults are resolved when the
//! operator renders the probe config (and reported in `status`). That keeps
//! the stored spec identical to the applied manifest, so ArgoCD and
//! `kubectl apply --server-side --dry-run=server` see no drift.
//!
//! Where the per-language tuning has the same shape as the probe's config
//! file, the CRD embeds [`LanguageTuning`] from [`crate::probe_config`] so there
//! is one definition of each knob.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::optin::Candidate;
use crate::probe_config::{
    Language, LanguageTuning, OtlpProtocol, ProfilingConfig, PropagationConfig, Propagator,
    RedactionConfig, SamplerType, UnmatchedRoutes, ViewsConfig,
};

/// Ring buffer sizes the probe accepts: powers of two from 4 KiB to 1 GiB.
/// CEL has no bit operations, so the schema lists them.
const RING_BUFFER_RULE: &str = "!has(self.ringBufferBytes) || self.ringBufferBytes in [4096, 8192, 16384, 32768, 65536, 131072, 262144, 524288, 1048576, 2097152, 4194304, 8388608, 16777216, 33554432, 67108864, 134217728, 268435456, 536870912, 1073741824]";

/// Injection needs a format that carries the trace itself.
const INJECT_RULE: &str = "!has(self.propagation) || !has(self.propagation.inject) || !self.propagation.inject || !has(self.propagators) || size(self.propagators) == 0 || self.propagators.exists(p, p == 'tracecontext' || p == 'b3')";

/// Instrumentation: which languages to trace with eBPF probes, in which
/// namespaces, and where to send the spans and metrics.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ferrotel.io",
    version = "v1alpha1",
    kind = "Instrumentation",
    namespaced,
    status = "InstrumentationStatus",
    shortname = "finst",
    category = "ferrotel",
    doc = "Instrumentation rolls out one eBPF probe DaemonSet per language; probes trace the Go and Python services in namespaces opted in with the ferrotel.io/instrument annotation and export OTLP spans and RED metrics, without code changes or pod restarts.",
    // Raw JSON form: the structured form repeats `type_ = ...`, which
    // clippy's duplicated_attributes lint flags.
    printcolumn = r#"{"name":"Languages","type":"string","jsonPath":".spec.languages","description":"Languages traced, one probe DaemonSet each"}"#,
    printcolumn = r#"{"name":"Endpoint","type":"string","jsonPath":".status.exporter.endpoint","description":"Resolved OTLP endpoint"}"#,
    printcolumn = r#"{"name":"Namespaces","type":"integer","jsonPath":".status.matchedNamespaces","description":"Namespaces with instrumented workloads or opted in"}"#,
    printcolumn = r#"{"name":"Pods","type":"integer","jsonPath":".status.matchedPods","description":"Pods matched by the opt-in rules, all languages"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = kube_compatible)]
#[x_kube(validation = kube::core::Rule::new(INJECT_RULE).message("propagation.inject writes the formats of propagators into requests, and baggage alone carries no trace: add tracecontext or b3 to propagators, or remove them to get the default [tracecontext, baggage]"))]
pub struct InstrumentationSpec {
    /// Languages to trace. Each gets its own probe DaemonSet
    /// `<name>-probe-<language>` that loads only that language's eBPF programs.
    #[schemars(length(min = 1), extend("x-kubernetes-list-type" = "set"))]
    pub languages: Vec<Language>,

    /// Where spans and metrics go: a TelemetryCollector (`collectorRef`) or an
    /// explicit OTLP `endpoint`.
    pub exporter: ExporterSpec,

    /// Which workloads are instrumented. Empty: pods in namespaces annotated
    /// `ferrotel.io/instrument` (see docs/opt-in.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<SelectorSpec>,

    /// Head sampling of new traces; default `parentbased_traceidratio` with ratio "1.0".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampler: Option<SamplerSpec>,

    /// Context propagation formats honoured on incoming requests, and
    /// written into outgoing ones by `propagation.inject`; default
    /// `[tracecontext, baggage]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub propagators: Option<Vec<Propagator>>,

    /// Whole traces across services without an SDK: carry the trace
    /// context from a traced client to the server it calls. Off unless
    /// set; turning it on mounts the node's `/sys/fs/bpf` into the probes
    /// (see docs/propagation.md for what it costs and its limits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagation: Option<PropagationSpec>,

    /// Resource attributes added to every span and metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceSpec>,

    /// How `http.route` is derived from request paths (cardinality guard).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<RoutesSpec>,

    /// What is removed from spans before they leave the node; default:
    /// every query string value in `url.query` and `url.full` is `REDACTED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redaction: Option<RedactionConfig>,

    /// Go probe tuning: which protocols to trace, buffer sizes, resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub go: Option<LanguageSpec>,

    /// Python probe tuning: buffer sizes, payload bytes, resources. The
    /// Python probe reads HTTP/1.x at the socket level: `http` is always on
    /// and `grpc` is not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(
        validation = kube::core::Rule::new("!has(self.grpc) || !self.grpc").message("python.grpc is not supported: the Python probe traces HTTP/1.x at the socket level; remove python.grpc"),
        validation = kube::core::Rule::new("!has(self.http) || self.http").message("python.http cannot be false: HTTP/1.x is all the Python probe traces; to stop tracing Python, remove it from languages")
    )]
    pub python: Option<LanguageSpec>,

    /// The ProbeClass (cluster-scoped, created by a cluster admin) that says
    /// which probe images and privilege level this Instrumentation may use.
    /// Unset: the operator's defaults (its default probe image, never
    /// privileged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub probe_class_name: Option<String>,

    /// Pod settings shared by every probe DaemonSet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<ProbeSpec>,

    /// CPU profiling of the instrumented processes (flame graphs, OTLP
    /// profiles linked to spans); off unless `enabled: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profiling: Option<ProfilingConfig>,

    /// What each probe computes on its node besides spans and RED metrics:
    /// the service graph, pod resources and TCP health (docs/views.md).
    /// Unset fields take the defaults: every view on, peers named
    /// cluster-wide, at most 2000 edges, a reading every 10 s, only the
    /// traced pods. `podResources.allPods` needs a ProbeClass with
    /// `allowAllPodResources: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub views: Option<ViewsConfig>,
}

/// Where the probes export OTLP.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.collectorRef) != has(self.endpoint)").message("set exactly one of exporter.collectorRef and exporter.endpoint"))]
pub struct ExporterSpec {
    /// A TelemetryCollector; its in-cluster OTLP endpoint is read from the
    /// collector's status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collector_ref: Option<CollectorRef>,

    /// An explicit OTLP endpoint, e.g. `http://otel.observability.svc:4317`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("self.startsWith('http://') || self.startsWith('https://')").message("exporter.endpoint must start with http:// or https://"))]
    pub endpoint: Option<String>,

    /// OTLP transport: `grpc` (default) or `http/protobuf`. With a
    /// collectorRef it picks which of the collector's endpoints is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<OtlpProtocol>,

    /// TLS client settings from a Secret in this Instrumentation's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
}

/// A reference to a TelemetryCollector.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CollectorRef {
    /// Name of the TelemetryCollector.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Its namespace; default: this Instrumentation's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// TLS for the OTLP connection; the Secret is mounted into the probe pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.certKey) == has(self.keyKey)").message("exporter.tls.certKey and exporter.tls.keyKey go together (mutual TLS needs both)"))]
pub struct TlsSpec {
    /// Secret in this Instrumentation's namespace holding the PEM files.
    #[schemars(length(min = 1))]
    pub secret_name: String,
    /// Key of the CA bundle in the Secret; default `ca.crt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_key: Option<String>,
    /// Key of the client certificate (mutual TLS), e.g. `tls.crt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_key: Option<String>,
    /// Key of the client private key (mutual TLS), e.g. `tls.key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_key: Option<String>,
    /// Skip server certificate verification (testing only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
}

/// Which workloads are instrumented, in addition to the annotation opt-in.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SelectorSpec {
    /// Namespaces whose labels match are opted in to this Instrumentation
    /// without an annotation (a `ferrotel.io/instrument` annotation on the
    /// namespace still wins). Needs a ProbeClass with
    /// `allowNamespaceSelector: true`: it reaches namespaces that did not
    /// opt in themselves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// In namespaces opted in as a whole, only pods whose labels match are
    /// instrumented. A pod's own `ferrotel.io/instrument` annotation wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
}

/// Head sampler, with OpenTelemetry's `OTEL_TRACES_SAMPLER` names.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.ratio) || self.type in ['traceidratio', 'parentbased_traceidratio']").message("sampler.ratio is only used by the traceidratio and parentbased_traceidratio samplers; remove it or change sampler.type"))]
pub struct SamplerSpec {
    /// Sampler type, e.g. `parentbased_traceidratio`.
    #[serde(rename = "type")]
    pub kind: SamplerType,
    /// Fraction of new traces kept, as a decimal string from "0" to "1"
    /// (e.g. "0.25"); default "1.0". Ratio samplers only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^(0(\\\\.[0-9]+)?|1(\\\\.0*)?|\\\\.[0-9]+)$')").message("sampler.ratio must be a decimal between \"0\" and \"1\", e.g. \"0.25\""))]
    pub ratio: Option<String>,
}

/// Trace-context propagation between traced services.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PropagationSpec {
    /// Write the `propagators` headers (`traceparent`, ...) into the
    /// outgoing HTTP/1 requests of traced processes, right after the
    /// request line, so the server called continues the trace wherever it
    /// runs. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inject: Option<bool>,
    /// When a request cannot carry the context (injection off, HTTP/2, a
    /// request the kernel cannot follow), a traced server on the same node
    /// continues the trace of the traced client that called it. Default
    /// false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join: Option<bool>,
}

impl PropagationSpec {
    /// The probe config's section: unset fields off; the pin directory the
    /// probe's default, on the node's `/sys/fs/bpf` the operator mounts.
    pub fn probe_config(&self) -> PropagationConfig {
        PropagationConfig {
            inject: self.inject.unwrap_or(false),
            join: self.join.unwrap_or(false),
            pin_dir: None,
        }
    }
}

/// Resource attributes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ResourceSpec {
    /// Attributes added to every span and metric, e.g. `deployment.environment: prod`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<BTreeMap<String, String>>,
}

/// `http.route` derivation.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RoutesSpec {
    /// Route templates such as `/users/{id}`; the first that matches a path names its route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("self.all(p, p.startsWith('/'))").message("routes.patterns must start with '/', e.g. /users/{id}"))]
    pub patterns: Option<Vec<String>>,
    /// What `http.route` says for a path no pattern matches: `heuristic`
    /// (default: ID-like segments become `*`), `path`, `wildcard` or `unset`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmatched: Option<UnmatchedRoutes>,
    /// Cap on distinct `http.route` values per service (default 500); past it, `/**`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_distinct: Option<u32>,
}

/// Per-language probe tuning. The knobs are the probe config's own
/// [`LanguageTuning`]; unset ones take the probe's defaults.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(RING_BUFFER_RULE).message("ringBufferBytes must be a power of two between 4096 and 1073741824"))]
pub struct LanguageSpec {
    #[serde(flatten)]
    pub tuning: LanguageTuning,
    /// Resources of this language's probe containers; default tuned per
    /// language (Go probes hold more per-process state than Python ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// Pod settings of the probe DaemonSets.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProbeSpec {
    /// Probe image; empty = the ProbeClass's image, or the operator's
    /// default. Any other image must be listed in the ProbeClass's
    /// `allowedImages`, or the Instrumentation is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Image pull policy: Always, IfNotPresent or Never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("self in ['Always', 'IfNotPresent', 'Never']").message("probe.imagePullPolicy must be Always, IfNotPresent or Never"))]
    pub image_pull_policy: Option<String>,
    /// Resources of every probe container (a language section's resources win).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Tolerations; default: tolerate every taint, so a probe runs on every node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Run probes only on nodes with these labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Priority class of the probe pods, e.g. `system-node-critical`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// Probe log filter: `error`, `warn`, `info` (default), `debug`, `trace`
    /// or a `tracing` directive list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    /// Run the probe container privileged. Off by default: the probe gets an
    /// explicit capability list; turn this on only for kernels that refuse
    /// BPF with capabilities alone. Needs a ProbeClass with
    /// `allowPrivileged: true`, or the Instrumentation is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privileged: Option<bool>,
}

/// What the operator observed and resolved.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = kube_compatible)]
pub struct InstrumentationStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing` and `Degraded`.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The exporter the probes use, defaults and collectorRef resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exporter: Option<ResolvedExporter>,
    /// The probe image in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_image: Option<String>,
    /// Number of namespaces matched, any language.
    #[serde(default)]
    pub matched_namespaces: u32,
    /// Number of pods matched, any language.
    #[serde(default)]
    pub matched_pods: u32,
    /// One entry per language in `spec.languages`.
    #[serde(default)]
    pub languages: Vec<LanguageStatus>,
}

impl crate::conditions::WithConditions for InstrumentationStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
    fn conditions_mut(&mut self) -> &mut Vec<Condition> {
        &mut self.conditions
    }
}

/// The exporter as rendered into the probe config.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedExporter {
    pub endpoint: String,
    pub protocol: OtlpProtocol,
}

/// Rollout and reach of one language's probes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LanguageStatus {
    pub language: Language,
    /// The probe DaemonSet's name.
    pub daemon_set: String,
    /// Nodes that should run a probe.
    pub desired: i32,
    /// Probe pods ready.
    pub ready: i32,
    /// Probe pods running the current config and image.
    pub updated: i32,
    /// Hash of the rendered probe config (in the pod template; a change rolls the probes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
    /// Namespaces where this language is instrumented (sorted, at most
    /// [`MAX_LISTED_NAMESPACES`]; see `matchedNamespaceCount`).
    #[serde(default)]
    pub matched_namespaces: Vec<String>,
    /// Number of matched namespaces (the list above may be truncated).
    #[serde(default)]
    pub matched_namespace_count: u32,
    /// Pods matched for this language (pods whose language is pinned by
    /// `ferrotel.io/language` to another language are not counted).
    #[serde(default)]
    pub matched_pods: u32,
}

/// Cap on `status.languages[].matchedNamespaces` so that status stays small.
pub const MAX_LISTED_NAMESPACES: usize = 50;

impl Instrumentation {
    /// What the opt-in rules need to know about this Instrumentation.
    pub fn candidate(&self) -> Candidate {
        let selector = self.spec.selector.clone().unwrap_or_default();
        Candidate {
            namespace: self.metadata.namespace.clone().unwrap_or_default(),
            name: self.metadata.name.clone().unwrap_or_default(),
            languages: self.spec.languages.clone(),
            namespace_selector: selector.namespace_selector,
            pod_selector: selector.pod_selector,
        }
    }
}

impl InstrumentationSpec {
    /// The tuning section of `language`, if the spec has one.
    pub fn language_spec(&self, language: Language) -> Option<&LanguageSpec> {
        match language {
            Language::Go => self.go.as_ref(),
            Language::Python => self.python.as_ref(),
        }
    }
}

/// Makes a generated schema what the API server wants, recursively:
///
/// - removes every `default`: embedded probe-config types carry serde
///   defaults, which schemars turns into schema defaults; the API server would
///   then write them into stored objects and the stored spec would drift from
///   the applied manifest (see module docs);
/// - removes schemars' unsigned formats (`uint32`, ...), which the API server
///   does not know and warns about on every apply (`minimum: 0` stays).
fn kube_compatible(schema: &mut schemars::Schema) {
    fn walk(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                map.remove("default");
                if map
                    .get("format")
                    .and_then(|f| f.as_str())
                    .is_some_and(|f| f.starts_with("uint"))
                {
                    map.remove("format");
                }
                for child in map.values_mut() {
                    walk(child);
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    if let Some(object) = schema.as_object_mut() {
        object.remove("default");
        for value in object.values_mut() {
            walk(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    fn crd_json() -> serde_json::Value {
        serde_json::to_value(Instrumentation::crd()).expect("CRD serializes")
    }

    fn spec_schema() -> serde_json::Value {
        crd_json()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].clone()
    }

    #[test]
    fn schema_has_no_unsigned_formats_the_api_server_warns_about() {
        let text = crd_json().to_string();
        assert!(
            !text.contains("\"uint"),
            "unsigned formats left in the CRD: {text}"
        );
    }

    #[test]
    fn spec_schema_has_no_defaults_so_stored_specs_equal_manifests() {
        let text = spec_schema().to_string();
        assert!(
            !text.contains("\"default\""),
            "the spec schema must carry no defaults, found one in {text}"
        );
    }

    #[test]
    fn crd_is_namespaced_with_status_subresource_and_printer_columns() {
        let crd = crd_json();
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        let version = &crd["spec"]["versions"][0];
        assert!(
            version["subresources"]["status"].is_object(),
            "status subresource missing: {version}"
        );
        let columns: Vec<&str> = version["additionalPrinterColumns"]
            .as_array()
            .expect("printer columns")
            .iter()
            .map(|c| c["name"].as_str().expect("column name"))
            .collect();
        assert_eq!(
            columns,
            [
                "Languages",
                "Endpoint",
                "Namespaces",
                "Pods",
                "Ready",
                "Age"
            ]
        );
    }

    #[test]
    fn every_spec_property_has_a_description() {
        fn check(path: &str, schema: &serde_json::Value, missing: &mut Vec<String>) {
            if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
                for (name, child) in props {
                    let child_path = format!("{path}.{name}");
                    if child.get("description").is_none() {
                        missing.push(child_path.clone());
                    }
                    check(&child_path, child, missing);
                }
            }
            if let Some(items) = schema.get("items") {
                check(&format!("{path}[]"), items, missing);
            }
        }
        let mut missing = Vec::new();
        check("spec", &spec_schema(), &mut missing);
        assert!(
            missing.is_empty(),
            "spec properties without a description: {missing:?}"
        );
    }

    #[test]
    fn architecture_example_parses() {
        let spec: InstrumentationSpec = serde_yaml::from_str(
            r#"
languages: [go, python]
exporter: {collectorRef: {name: otel}}
selector: {}
sampler: {type: parentbased_traceidratio, ratio: "1.0"}
resource: {attributes: {deployment.environment: prod}}
routes: {patterns: ["/users/{id}"], unmatched: heuristic}
go: {ringBufferBytes: 8388608}
python: {grpc: false}
probe: {image: "", resources: {}, tolerations: [], nodeSelector: {}, logLevel: info}
"#,
        )
        .expect("the ARCHITECTURE.md example parses");
        assert_eq!(spec.languages, [Language::Go, Language::Python]);
        let go = spec.language_spec(Language::Go).expect("go section");
        assert_eq!(go.tuning.ring_buffer_bytes, 8 << 20);
        assert!(go.tuning.http, "unset tuning knobs take the probe defaults");
        assert!(!spec.python.as_ref().expect("python section").tuning.grpc);
    }

    #[test]
    fn views_bounds_and_peer_choices_are_in_the_schema() {
        let views = &spec_schema()["properties"]["views"]["properties"];
        let graph = &views["serviceGraph"]["properties"];
        let resources = &views["podResources"]["properties"];
        for (field, schema, min, max) in [
            ("serviceGraph.maxEdges", &graph["maxEdges"], 1.0, 10_000.0),
            (
                "podResources.intervalMillis",
                &resources["intervalMillis"],
                1_000.0,
                60_000.0,
            ),
        ] {
            assert_eq!(
                (schema["minimum"].as_f64(), schema["maximum"].as_f64()),
                (Some(min), Some(max)),
                "{field}: bounds in the schema, checked by the API server: {schema}"
            );
        }
        assert_eq!(
            graph["peers"]["enum"],
            serde_json::json!(["cluster", "node"]),
            "serviceGraph.peers: the two resolutions the probe knows"
        );
    }

    #[test]
    fn cel_rules_are_in_the_schema() {
        let text = spec_schema().to_string();
        for needle in [
            "set exactly one of exporter.collectorRef and exporter.endpoint",
            "sampler.ratio is only used by",
            "sampler.ratio must be a decimal",
            "ringBufferBytes must be a power of two",
            "python.grpc is not supported",
            "python.http cannot be false",
            "propagation.inject writes the formats of propagators",
        ] {
            assert!(
                text.contains(needle),
                "CEL rule {needle:?} missing from the schema"
            );
        }
    }
}
