//! The probe's HTTP endpoints besides `/metrics`, as JSON: what each probe
//! decided about every process it saw ([`PROCESSES_PATH`]) and a live stream
//! of its spans ([`TAP_PATH`]). One definition, shared by the probe (the
//! server) and `kubectl ferrotel` (the client, through the API server's pod
//! proxy: `pods/proxy` on the probe pods' [`PORT_NAME`] port).
//!
//! Both endpoints serve what the probe already holds: nothing here reads
//! process memory or request bodies, and tapped spans are the spans the
//! exporter would send (redaction applied), not more.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::language::Language;

/// The probe container's HTTP port (`/metrics`, `/healthz`, `/readyz`, `/debug/*`).
pub const PORT: u16 = 9464;
/// Its name in the probe pod spec.
pub const PORT_NAME: &str = "metrics";
/// `GET`: a [`ProcessesReport`].
pub const PROCESSES_PATH: &str = "/debug/processes";
/// `GET` with a [`TapFilter`] as query string: newline-delimited
/// [`TapEvent`]s until the client goes away.
pub const TAP_PATH: &str = "/debug/tap";

/// The Prometheus families on a probe's `/metrics` that `kubectl ferrotel`
/// reads, as the text exposition names them (unit and `_total` suffixes
/// included). The probe registers them under these names; a probe test
/// checks its exposition against this list, so a rename fails there first.
pub mod metrics {
    /// Server-side RED (`http.server.request.duration`, seconds).
    pub const HTTP_SERVER_DURATION: &str = "http_server_request_duration_seconds";
    /// Server-side RED for gRPC (`rpc.server.duration`, milliseconds).
    pub const RPC_SERVER_DURATION: &str = "rpc_server_duration_milliseconds";
    /// Client-side RED (`http.client.request.duration`, seconds): with
    /// `server_address`/`server_port`, the edges of the service graph when
    /// the probes export no service graph metrics.
    pub const HTTP_CLIENT_DURATION: &str = "http_client_request_duration_seconds";
    /// Client-side gRPC (`rpc.client.duration`, milliseconds).
    pub const RPC_CLIENT_DURATION: &str = "rpc_client_duration_milliseconds";

    /// Gauge: processes instrumented now, by `language`.
    pub const ATTACHED_PROCESSES: &str = "ferrotel_probe_attached_processes";
    /// Counter: processes refused, by `language` and `reason`.
    pub const ATTACH_REFUSED: &str = "ferrotel_probe_attach_refused_total";
    /// Counter: times trace-context propagation could not be set up, for
    /// the probe or one process, by `language` and `reason`.
    pub const PROPAGATION_REFUSED: &str = "ferrotel_probe_propagation_refused_total";
    /// Counter: events the eBPF programs could not submit, by `language`, `source`.
    pub const KERNEL_EVENTS_DROPPED: &str = "ferrotel_probe_kernel_events_dropped_total";
    /// Counter: completed requests dropped before the pipeline, by `reason`.
    pub const RECORDS_DROPPED: &str = "ferrotel_probe_records_dropped_total";
    /// Counter: spans or data points the exporter dropped, by `signal`, `reason`.
    pub const EXPORT_DROPPED: &str = "ferrotel_probe_export_dropped_items_total";
    /// Counter: OTLP export requests, by `signal` and `result`
    /// ([`EXPORT_RESULT_OK`] or why it failed).
    pub const EXPORT_REQUESTS: &str = "ferrotel_probe_export_requests_total";
    /// The `result` of an export request the collector accepted.
    pub const EXPORT_RESULT_OK: &str = "ok";

    /// Service graph (Tempo's names): counter of requests per edge, labels
    /// [`super::labels::CLIENT`], [`super::labels::SERVER`],
    /// [`super::labels::CONNECTION_TYPE`] and the two namespace labels.
    pub const SERVICE_GRAPH_REQUESTS: &str = "traces_service_graph_request_total";
    /// Service graph: failed requests per edge (same labels).
    pub const SERVICE_GRAPH_FAILED: &str = "traces_service_graph_request_failed_total";
    /// Service graph: duration as the server saw it (histogram, seconds).
    pub const SERVICE_GRAPH_SERVER_DURATION: &str = "traces_service_graph_request_server_seconds";
    /// Service graph: duration as the client saw it (histogram, seconds).
    pub const SERVICE_GRAPH_CLIENT_DURATION: &str = "traces_service_graph_request_client_seconds";

    /// Pod resources (kubeletstats' names), per pod (resource labels):
    /// CPU time, counter, seconds.
    pub const POD_CPU_TIME: &str = "k8s_pod_cpu_time_seconds_total";
    /// CPU in use now, gauge, cores (`k8s.pod.cpu.usage`), when the probe
    /// computes it from its own samples; otherwise the CLI takes the rate of
    /// [`POD_CPU_TIME`] over its window.
    pub const POD_CPU_USAGE: &str = "k8s_pod_cpu_usage";
    /// Memory working set, gauge, bytes.
    pub const POD_MEMORY_WORKING_SET: &str = "k8s_pod_memory_working_set_bytes";
    /// Resident anonymous memory, gauge, bytes.
    pub const POD_MEMORY_RSS: &str = "k8s_pod_memory_rss_bytes";
    /// Bytes through the pod's sockets, counter, by
    /// [`super::labels::NETWORK_DIRECTION`] (`receive`/`transmit`).
    pub const POD_NETWORK_IO: &str = "k8s_pod_network_io_bytes_total";
}

/// Label names of the families in [`metrics`].
pub mod labels {
    /// Resource attributes on every RED and pod resource series.
    pub const NAMESPACE: &str = "k8s_namespace_name";
    pub const POD: &str = "k8s_pod_name";
    pub const SERVICE: &str = "service_name";
    pub const SERVICE_NAMESPACE: &str = "service_namespace";
    /// RED attributes.
    pub const HTTP_ROUTE: &str = "http_route";
    pub const HTTP_METHOD: &str = "http_request_method";
    pub const RPC_SERVICE: &str = "rpc_service";
    pub const RPC_METHOD: &str = "rpc_method";
    pub const SERVER_ADDRESS: &str = "server_address";
    pub const SERVER_PORT: &str = "server_port";
    /// Present on failed requests only (semantic conventions' `error.type`).
    pub const ERROR_TYPE: &str = "error_type";
    /// Service graph.
    pub const CLIENT: &str = "client";
    pub const SERVER: &str = "server";
    pub const CONNECTION_TYPE: &str = "connection_type";
    pub const CLIENT_NAMESPACE: &str = "client_service_namespace";
    pub const SERVER_NAMESPACE: &str = "server_service_namespace";
    /// Pod network direction.
    pub const NETWORK_DIRECTION: &str = "network_io_direction";
    /// Probe health.
    pub const LANGUAGE: &str = "language";
    pub const REASON: &str = "reason";
}

/// Every process one probe has an opinion about.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessesReport {
    /// The probe's `--language`; `None` only in reports of unknown probes.
    #[serde(default)]
    pub language: Option<Language>,
    /// The node the probe runs on (`NODE_NAME`); empty standalone.
    #[serde(default)]
    pub node: String,
    #[serde(default)]
    pub processes: Vec<ProcessReport>,
}

/// One process: where discovery found it, what it decided, and what the
/// language's program set did with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessReport {
    /// Host PID.
    pub pid: u32,
    /// `/proc/<pid>/exe` when it was examined.
    #[serde(default)]
    pub exe: String,
    /// The pod and container it runs in (Kubernetes discovery only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRef>,
    /// The language detected from the executable, if detection ran: it runs
    /// only for processes of pods the opt-in rules claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detected: Option<Language>,
    /// Discovery's decision; `None` for processes selected standalone (by
    /// pid, executable or port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<DiscoveryOutcome>,
    /// What the program set did once the process was claimed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<TracingOutcome>,
}

/// A pod's identity as discovery knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub container: String,
}

/// Why discovery claimed a process of an instrumented pod, or did not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "camelCase")]
pub enum DiscoveryOutcome {
    /// Claimed for this probe's language by `instrumentation` (`namespace/name`).
    #[serde(rename_all = "camelCase")]
    Claimed { instrumentation: String },
    /// The pod is not opted in (no annotation, no selector).
    NotOptedIn,
    /// The pod or its namespace says `"false"`.
    OptedOut,
    /// The pod is pinned to, or the process was detected as, another language.
    #[serde(rename_all = "camelCase")]
    OtherLanguage { language: Language },
    /// The pod is opted in but the executable is neither Go nor Python as
    /// far as detection can tell (a shell, a JVM, a stripped static binary).
    UnknownLanguage,
    /// The claiming Instrumentation does not list this probe's language.
    #[serde(rename_all = "camelCase")]
    LanguageNotEnabled { instrumentation: String },
    /// Opted in at namespace level, but the Instrumentation's podSelector
    /// does not match the pod.
    #[serde(rename_all = "camelCase")]
    PodSelectorMismatch { instrumentation: String },
    /// The opt-in rules found a misconfiguration (ambiguous `"true"`, a
    /// missing Instrumentation, a bad annotation).
    #[serde(rename_all = "camelCase")]
    OptInError { category: String, message: String },
}

/// What the program set did with a claimed process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum TracingOutcome {
    /// Traced by `program_set` (`go`, `sockets`, ...).
    #[serde(rename_all = "camelCase")]
    Traced { program_set: String },
    /// Refused: `reason` is the `attach_refused{reason}` label, `message`
    /// the full error (what is missing, and the fix).
    #[serde(rename_all = "camelCase")]
    Refused {
        program_set: String,
        reason: String,
        message: String,
    },
}

/// Which spans a tap subscriber wants. Every set field must match; an
/// empty filter taps everything the probe traces.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TapFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Any of these pods (empty: any pod).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pods: Vec<String>,
    /// `service.name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// `http.route` (server spans) or `rpc.service/rpc.method`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// `http.request.method`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

/// A tap query string that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid tap query {query:?}: {reason}; use namespace=, pod=, service=, route=, method=")]
pub struct TapQueryError {
    pub query: String,
    pub reason: String,
}

impl TapFilter {
    /// The URL query string (without `?`) for this filter.
    pub fn to_query(&self) -> String {
        let mut out = String::new();
        let mut push = |key: &str, value: &str| {
            if !out.is_empty() {
                out.push('&');
            }
            out.push_str(key);
            out.push('=');
            percent_encode(value, &mut out);
        };
        if let Some(v) = &self.namespace {
            push("namespace", v);
        }
        for pod in &self.pods {
            push("pod", pod);
        }
        if let Some(v) = &self.service {
            push("service", v);
        }
        if let Some(v) = &self.route {
            push("route", v);
        }
        if let Some(v) = &self.method {
            push("method", v);
        }
        out
    }

    /// Parses what [`TapFilter::to_query`] writes (`pod` may repeat).
    pub fn from_query(query: &str) -> Result<Self, TapQueryError> {
        let error = |reason: String| TapQueryError {
            query: query.to_owned(),
            reason,
        };
        let mut filter = TapFilter::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, raw) = pair.split_once('=').unwrap_or((pair, ""));
            let value =
                percent_decode(raw).ok_or_else(|| error(format!("bad escape in {pair:?}")))?;
            match key {
                "namespace" => filter.namespace = Some(value),
                "pod" => filter.pods.push(value),
                "service" => filter.service = Some(value),
                "route" => filter.route = Some(value),
                "method" => filter.method = Some(value),
                other => return Err(error(format!("unknown key {other:?}"))),
            }
        }
        Ok(filter)
    }

    /// Whether a span of `namespace`/`pod`/`service` with `route` and
    /// `method` passes.
    pub fn matches(
        &self,
        namespace: Option<&str>,
        pod: Option<&str>,
        service: Option<&str>,
        route: Option<&str>,
        method: Option<&str>,
    ) -> bool {
        fn eq(want: &Option<String>, got: Option<&str>) -> bool {
            want.as_deref().is_none_or(|w| got == Some(w))
        }
        eq(&self.namespace, namespace)
            && (self.pods.is_empty() || pod.is_some_and(|p| self.pods.iter().any(|w| w == p)))
            && eq(&self.service, service)
            && eq(&self.route, route)
            && self
                .method
                .as_deref()
                .is_none_or(|w| method.is_some_and(|m| m.eq_ignore_ascii_case(w)))
    }
}

/// One line of the tap stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TapEvent {
    Span(Box<TapSpan>),
    /// Spans this subscriber did not get since the previous line because
    /// it read too slowly (its buffer was full). The probe never waits for
    /// a tap.
    #[serde(rename_all = "camelCase")]
    Lost {
        spans: u64,
    },
}

/// A span as the tap shows it: its identity, its resource's Kubernetes
/// names and its attributes as text.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TapSpan {
    pub trace_id: String,
    pub span_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub parent_span_id: String,
    pub name: String,
    /// `server` or `client`.
    pub kind: String,
    pub start_time_unix_nano: u64,
    pub duration_nanos: u64,
    /// The span status is `Error` (5xx for servers, 4xx too for clients,
    /// gRPC failures, transport errors).
    #[serde(default)]
    pub error: bool,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub pod: String,
    #[serde(default)]
    pub service: String,
    /// Span attributes (`http.route`, `url.path`, `http.response.status_code`, ...).
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

fn percent_encode(value: &str, out: &mut String) {
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
}

fn percent_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = value.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_filter_round_trips_through_its_query_string() {
        let filter = TapFilter {
            namespace: Some("shop".into()),
            pods: vec!["web-1".into(), "web 2&x=y".into()],
            service: Some("frontend".into()),
            route: Some("/items/{id}".into()),
            method: Some("GET".into()),
        };
        let query = filter.to_query();
        assert!(
            !query.contains(' ') && !query.contains("&x=y") && !query.contains('{'),
            "values are escaped: {query}"
        );
        assert_eq!(TapFilter::from_query(&query).expect("parses"), filter);
        assert_eq!(
            TapFilter::from_query("").expect("empty"),
            TapFilter::default()
        );
    }

    #[test]
    fn tap_query_with_an_unknown_key_or_bad_escape_is_refused_with_the_keys_that_work() {
        let error = TapFilter::from_query("namespce=shop").expect_err("typo");
        assert!(error.to_string().contains("\"namespce\""), "{error}");
        assert!(error.to_string().contains("namespace="), "{error}");
        assert!(TapFilter::from_query("route=%zz").is_err());
    }

    #[test]
    fn tap_filter_matches_only_when_every_set_field_matches() {
        let filter = TapFilter {
            namespace: Some("shop".into()),
            pods: vec!["a".into(), "b".into()],
            method: Some("get".into()),
            ..TapFilter::default()
        };
        assert!(filter.matches(Some("shop"), Some("b"), None, None, Some("GET")));
        assert!(!filter.matches(Some("shop"), Some("c"), None, None, Some("GET")));
        assert!(!filter.matches(Some("other"), Some("a"), None, None, Some("GET")));
        assert!(!filter.matches(Some("shop"), Some("a"), None, None, Some("POST")));
        assert!(!filter.matches(Some("shop"), Some("a"), None, None, None));
        assert!(TapFilter::default().matches(None, None, None, None, None));
    }

    #[test]
    fn reports_and_tap_lines_have_a_stable_json_shape() {
        let report = ProcessReport {
            pid: 42,
            exe: "/app/server".into(),
            pod: Some(PodRef {
                namespace: "shop".into(),
                name: "web-1".into(),
                uid: "u1".into(),
                container: "app".into(),
            }),
            detected: Some(Language::Go),
            discovery: Some(DiscoveryOutcome::Claimed {
                instrumentation: "obs/default".into(),
            }),
            tracing: Some(TracingOutcome::Refused {
                program_set: "go".into(),
                reason: "no_functions".into(),
                message: "nothing to probe".into(),
            }),
        };
        let json = serde_json::to_value(&report).expect("serializes");
        assert_eq!(json["discovery"]["decision"], "claimed");
        assert_eq!(json["discovery"]["instrumentation"], "obs/default");
        assert_eq!(json["tracing"]["state"], "refused");
        assert_eq!(json["tracing"]["programSet"], "go");
        assert_eq!(json["detected"], "go");
        let back: ProcessReport = serde_json::from_value(json).expect("parses");
        assert_eq!(back, report);

        let lost = serde_json::to_string(&TapEvent::Lost { spans: 3 }).expect("json");
        assert_eq!(lost, r#"{"lost":{"spans":3}}"#);
        let outcome = serde_json::to_string(&DiscoveryOutcome::NotOptedIn).expect("json");
        assert_eq!(outcome, r#"{"decision":"notOptedIn"}"#);
    }
}
