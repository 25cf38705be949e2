//! `edges`: who calls whom, with each edge's request rate, success rate and
//! latency. Pure: a [`Window`] (and, for client spans, a peer index) in,
//! rows out.
//!
//! Two sources, the better one first:
//! - **the service graph** the probes export (`traces_service_graph_*`,
//!   Tempo's names and labels; [`ferrotel_api::probe_endpoints::metrics`]):
//!   each request counted once, by the server's probe when the server is
//!   traced, by the client's otherwise; latency as the server saw it;
//! - **the client spans' RED metrics** (`http.client.request.duration`,
//!   `rpc.client.duration`), for probes that export no service graph: the
//!   caller is the traced pod's workload, the callee the `server.address` it
//!   called, resolved here to a Service or a pod's workload through the API
//!   ([`Peers`]); calls from untraced clients are not seen; latency as the
//!   client saw it;
//! - **none**: no probe exports either (yet: a series appears with its
//!   first request), so there is no edge to show and no source to name.

use std::collections::{BTreeMap, HashMap};

use ferrotel_api::probe_endpoints::labels as l;
use ferrotel_api::probe_endpoints::metrics as m;
use k8s_openapi::api::core::v1::{Pod, Service};
use serde::Serialize;

use crate::histogram::{Histogram, Labels};
use crate::output::{self, Cell, Format, Style, Table};
use crate::red::{Red, Scope};
use crate::source::{Wants, Window};

const HISTOGRAMS: [(&str, f64); 4] = [
    (m::SERVICE_GRAPH_SERVER_DURATION, 1.0),
    (m::SERVICE_GRAPH_CLIENT_DURATION, 1.0),
    (m::HTTP_CLIENT_DURATION, 1.0),
    (m::RPC_CLIENT_DURATION, 0.001),
];
const COUNTERS: [&str; 2] = [m::SERVICE_GRAPH_REQUESTS, m::SERVICE_GRAPH_FAILED];

pub fn wants() -> Wants<'static> {
    Wants {
        histograms: &HISTOGRAMS,
        counters: &COUNTERS,
        gauges: &[],
    }
}

/// Where the edges came from (`source` in `-o json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum EdgeSource {
    /// The probes' service graph metrics (`traces_service_graph_*`).
    ServiceGraph,
    /// The client spans' RED metrics, for probes without a service graph.
    ClientSpans,
    /// Neither: no probe read has a series of either.
    None,
}

/// One edge.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EdgeRow {
    pub client_namespace: String,
    pub client: String,
    pub server_namespace: String,
    pub server: String,
    /// Tempo's `connection_type`: empty between two traced services,
    /// `virtual_node` for an untraced peer, `database`, `messaging_system`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub connection_type: String,
    #[serde(flatten)]
    pub red: Red,
}

/// The edges of one window.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EdgesFrame {
    pub window_seconds: f64,
    pub source: EdgeSource,
    pub edges: Vec<EdgeRow>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
}

/// Pod IPs and Service addresses, to name the servers client spans called.
#[derive(Clone, Debug, Default)]
pub struct Peers {
    /// IP → (namespace, workload).
    ips: HashMap<String, (String, String)>,
    /// (namespace, Service name), for DNS names.
    services: Vec<(String, String)>,
}

impl Peers {
    pub fn new(pods: &[Pod], services: &[Service]) -> Self {
        let mut ips = HashMap::new();
        for pod in pods {
            let Some(namespace) = pod.metadata.namespace.clone() else {
                continue;
            };
            // A host-network pod's IP is its node's: it names nobody.
            if pod.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
                continue;
            }
            let workload = crate::workload::workload_of(pod);
            for ip in pod.status.iter().flat_map(|s| {
                s.pod_ips
                    .iter()
                    .flatten()
                    .map(|i| i.ip.clone())
                    .chain(s.pod_ip.clone())
            }) {
                ips.insert(ip, (namespace.clone(), workload.clone()));
            }
        }
        let mut names = Vec::new();
        for service in services {
            let (Some(namespace), Some(name)) = (
                service.metadata.namespace.clone(),
                service.metadata.name.clone(),
            ) else {
                continue;
            };
            for ip in service
                .spec
                .iter()
                .flat_map(|s| {
                    s.cluster_ips
                        .iter()
                        .flatten()
                        .cloned()
                        .chain(s.cluster_ip.clone())
                })
                .filter(|ip| ip != "None" && !ip.is_empty())
            {
                ips.insert(ip, (namespace.clone(), format!("svc/{name}")));
            }
            names.push((namespace, name));
        }
        Self {
            ips,
            services: names,
        }
    }

    /// Names `address` as called from `caller_namespace`: a pod's workload,
    /// a Service (by ClusterIP or DNS name), or the address itself.
    pub fn resolve(
        &self,
        address: &str,
        port: Option<&str>,
        caller_namespace: &str,
    ) -> (String, String) {
        if let Some((ns, name)) = self.ips.get(address) {
            return (ns.clone(), name.clone());
        }
        // <svc>, <svc>.<ns>, <svc>.<ns>.svc, <svc>.<ns>.svc.<cluster domain>
        let parts: Vec<&str> = address.split('.').collect();
        let candidate = match parts.as_slice() {
            [svc] => Some((caller_namespace, *svc)),
            [svc, ns] | [svc, ns, "svc"] => Some((*ns, *svc)),
            [svc, ns, "svc", ..] => Some((*ns, *svc)),
            _ => None,
        };
        if let Some((ns, svc)) = candidate
            && self.services.iter().any(|(n, s)| n == ns && s == svc)
        {
            return (ns.to_owned(), format!("svc/{svc}"));
        }
        let name = match port {
            Some(port) if !port.is_empty() => format!("{address}:{port}"),
            _ => address.to_owned(),
        };
        (String::new(), name)
    }
}

#[derive(Default)]
struct Acc {
    requests: f64,
    failures: f64,
    latency: Option<Histogram>,
}

fn add(into: &mut Option<Histogram>, h: &Histogram) {
    match into {
        Some(acc) => acc.add(h),
        None => *into = Some(h.clone()),
    }
}

type Key = (String, String, String, String, String);

fn get(labels: &Labels, key: &str) -> String {
    labels.get(key).cloned().unwrap_or_default()
}

/// Edges of `window`, in `scope` (namespace: either end in it; workload:
/// either end named so), sorted by client then server.
pub fn edges(window: &Window, scope: &Scope, peers: &Peers) -> EdgesFrame {
    let has_graph = COUNTERS
        .iter()
        .any(|c| window.counters.get(*c).is_some_and(|s| !s.is_empty()));
    let has_client_spans = [&HISTOGRAMS[2], &HISTOGRAMS[3]]
        .iter()
        .any(|(h, _)| window.histograms.get(*h).is_some_and(|s| !s.is_empty()));
    let mut groups: BTreeMap<Key, Acc> = BTreeMap::new();
    let source = if has_graph {
        let key = |labels: &Labels| -> Key {
            (
                get(labels, l::CLIENT_NAMESPACE),
                get(labels, l::CLIENT),
                get(labels, l::SERVER_NAMESPACE),
                get(labels, l::SERVER),
                get(labels, l::CONNECTION_TYPE),
            )
        };
        for series in window
            .counters
            .get(m::SERVICE_GRAPH_REQUESTS)
            .into_iter()
            .flatten()
        {
            groups.entry(key(&series.labels)).or_default().requests += series.window;
        }
        for series in window
            .counters
            .get(m::SERVICE_GRAPH_FAILED)
            .into_iter()
            .flatten()
        {
            groups.entry(key(&series.labels)).or_default().failures += series.window;
        }
        // Server-side latency where the server is traced; the client's
        // where only the client is.
        let mut client_latency: BTreeMap<Key, Option<Histogram>> = BTreeMap::new();
        for series in window
            .histograms
            .get(m::SERVICE_GRAPH_SERVER_DURATION)
            .into_iter()
            .flatten()
        {
            if let Some(acc) = groups.get_mut(&key(&series.labels)) {
                add(&mut acc.latency, &series.window);
            }
        }
        for series in window
            .histograms
            .get(m::SERVICE_GRAPH_CLIENT_DURATION)
            .into_iter()
            .flatten()
        {
            add(
                client_latency.entry(key(&series.labels)).or_default(),
                &series.window,
            );
        }
        for (k, h) in client_latency {
            if let (Some(acc), Some(h)) = (groups.get_mut(&k), h)
                && acc.latency.as_ref().is_none_or(|l| l.count() == 0.0)
            {
                acc.latency = Some(h);
            }
        }
        EdgeSource::ServiceGraph
    } else if has_client_spans {
        for (family, _) in [&HISTOGRAMS[2], &HISTOGRAMS[3]] {
            for series in window.histograms.get(*family).into_iter().flatten() {
                let labels = &series.labels;
                let client_ns = get(labels, l::NAMESPACE);
                let pod = get(labels, l::POD);
                let client = scope
                    .workloads
                    .get(&(client_ns.clone(), pod))
                    .cloned()
                    .unwrap_or_else(|| format!("svc/{}", get(labels, l::SERVICE)));
                let address = get(labels, l::SERVER_ADDRESS);
                let port = labels.get(l::SERVER_PORT).map(String::as_str);
                let (server_ns, server) = if address.is_empty() {
                    (String::new(), "unknown".to_owned())
                } else {
                    peers.resolve(&address, port, &client_ns)
                };
                let acc = groups
                    .entry((client_ns, client, server_ns, server, String::new()))
                    .or_default();
                let count = series.window.count();
                acc.requests += count;
                if labels.contains_key(l::ERROR_TYPE) {
                    acc.failures += count;
                }
                add(&mut acc.latency, &series.window);
            }
        }
        EdgeSource::ClientSpans
    } else {
        EdgeSource::None
    };
    let in_scope = |(cns, client, sns, server, _): &Key| {
        scope
            .namespace
            .as_ref()
            .is_none_or(|ns| cns == ns || sns == ns)
            && scope.workload.as_ref().is_none_or(|w| {
                crate::workload::matches(w, client) || crate::workload::matches(w, server)
            })
    };
    let edges = groups
        .into_iter()
        .filter(|(k, acc)| in_scope(k) && acc.requests > 0.0)
        .map(
            |((client_namespace, client, server_namespace, server, connection_type), acc)| {
                let latency = acc.latency.unwrap_or_else(|| Histogram::empty(vec![]));
                EdgeRow {
                    client_namespace,
                    client,
                    server_namespace,
                    server,
                    connection_type,
                    red: Red::new(acc.requests, acc.failures, &latency, window.seconds),
                }
            },
        )
        .collect();
    EdgesFrame {
        window_seconds: window.seconds,
        source,
        edges,
        failures: window.failures.clone(),
    }
}

fn end(namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        name.to_owned()
    } else {
        format!("{namespace}/{name}")
    }
}

/// Edges as a table or data.
pub fn render(frame: &EdgesFrame, format: Format, style: &Style) -> String {
    if format.is_structured() {
        return output::structured(format, frame);
    }
    if frame.edges.is_empty() {
        let why = match frame.source {
            EdgeSource::None => {
                " (the probes read export neither a service graph nor client spans yet)"
            }
            EdgeSource::ServiceGraph | EdgeSource::ClientSpans => "",
        };
        return format!(
            "No calls seen in the last {}s{why}.\n",
            frame.window_seconds.round()
        );
    }
    let mut headers = vec!["CLIENT", "SERVER", "RPS", "SUCCESS", "P50", "P90", "P99"];
    if format == Format::Wide {
        headers.extend(["REQUESTS", "FAILURES", "TYPE"]);
    }
    let mut table = Table::new(&headers);
    for e in &frame.edges {
        let success = output::percent(e.red.success);
        let mut row = vec![
            Cell::from(end(&e.client_namespace, &e.client)),
            Cell::from(end(&e.server_namespace, &e.server)),
            Cell::from(crate::stat::rate(e.red.rps)),
            match output::success_color(e.red.success) {
                Some(c) => Cell::colored(success, c),
                None => Cell::from(success),
            },
            output::duration(e.red.p50).into(),
            output::duration(e.red.p90).into(),
            output::duration(e.red.p99).into(),
        ];
        if format == Format::Wide {
            row.extend([
                Cell::from(format!("{}", e.red.requests)),
                Cell::from(format!("{}", e.red.failures)),
                Cell::from(if e.connection_type.is_empty() {
                    "-"
                } else {
                    e.connection_type.as_str()
                }),
            ]);
        }
        table.push(row);
    }
    let mut out = table.render(style);
    if frame.source == EdgeSource::ClientSpans {
        out.push_str(&style.paint(
            "(from client spans: callers that are not traced are not shown; latency as the client saw it)\n",
            crate::output::Color::Dim,
        ));
    }
    out
}
