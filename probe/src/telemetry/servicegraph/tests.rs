use std::collections::HashMap;
use std::net::IpAddr;

use super::*;
use crate::telemetry::semconv::tests::http_record;
use opentelemetry_proto::tonic::metrics::v1::number_data_point;

/// A fixed address book.
#[derive(Default)]
struct Book(HashMap<IpAddr, PeerIdentity>);

impl Book {
    fn with(mut self, ip: &str, service: &str, namespace: &str, traced: bool) -> Self {
        self.0.insert(
            ip.parse().unwrap(),
            PeerIdentity {
                service: service.into(),
                namespace: namespace.into(),
                traced,
            },
        );
        self
    }
}

impl PeerLookup for Book {
    fn lookup(&self, ip: IpAddr) -> Option<PeerIdentity> {
        self.0.get(&ip).cloned()
    }
}

fn resource(service: &str, namespace: &str) -> Arc<ProcessResource> {
    Arc::new(ProcessResource {
        attributes: [
            ("service.name".to_string(), service.to_string()),
            ("service.namespace".to_string(), namespace.to_string()),
        ]
        .into(),
    })
}

fn record(kind: SpanKind, peer: &str, status: u16) -> RequestRecord {
    let mut r = http_record(kind, "GET", "/items/1", Some(status));
    r.peer = Some(peer.parse().unwrap());
    r
}

fn node(name: &str, ns: Option<&str>) -> GraphNode {
    GraphNode::new(name, ns.map(Arc::from))
}

#[test]
fn server_span_counts_the_edge_from_the_resolved_caller() {
    let peers = Book::default().with("10.0.0.2", "frontend", "shop", true);
    let obs = observe_record(
        &record(SpanKind::Server, "10.0.0.2:51000", 200),
        &resource("catalog", "shop"),
        &peers,
    )
    .expect("a server span always makes an edge");
    assert_eq!(obs.edge.client, node("frontend", Some("shop")));
    assert_eq!(obs.edge.server, node("catalog", Some("shop")));
    assert_eq!(obs.edge.connection_type, ConnectionType::Direct);
    assert!(obs.counts_request, "the server side counts");
    assert!(!obs.failed);
    assert_eq!(obs.server_seconds, Some(0.25));
    assert_eq!(obs.client_seconds, None);
}

#[test]
fn unknown_caller_is_the_virtual_user_node() {
    let obs = observe_record(
        &record(SpanKind::Server, "192.0.2.7:40000", 503),
        &resource("catalog", "shop"),
        &NoPeers,
    )
    .unwrap();
    assert_eq!(
        obs.edge.client,
        node("user", None),
        "caller addresses never become labels"
    );
    assert_eq!(obs.edge.connection_type, ConnectionType::VirtualNode);
    assert!(obs.failed, "a 503 server span is a failed request");
}

#[test]
fn an_untraced_caller_makes_a_virtual_node_edge() {
    let peers = Book::default().with("10.0.0.2", "batch-job", "ops", false);
    let obs = observe_record(
        &record(SpanKind::Server, "10.0.0.2:1", 200),
        &resource("catalog", "shop"),
        &peers,
    )
    .unwrap();
    assert_eq!(obs.edge.client, node("batch-job", Some("ops")));
    assert_eq!(obs.edge.connection_type, ConnectionType::VirtualNode);
}

#[test]
fn client_span_to_a_traced_server_records_latency_but_leaves_counting_to_the_server() {
    let peers = Book::default().with("10.0.0.3", "catalog", "shop", true);
    let obs = observe_record(
        &record(SpanKind::Client, "10.0.0.3:8080", 500),
        &resource("frontend", "shop"),
        &peers,
    )
    .unwrap();
    assert_eq!(obs.edge.client, node("frontend", Some("shop")));
    assert_eq!(obs.edge.server, node("catalog", Some("shop")));
    assert_eq!(obs.edge.connection_type, ConnectionType::Direct);
    assert!(!obs.counts_request, "the traced server counts this request");
    assert_eq!(obs.client_seconds, Some(0.25));
}

#[test]
fn client_span_to_an_untraced_server_counts_a_virtual_node_edge() {
    let peers = Book::default().with("10.0.0.9", "legacy", "shop", false);
    let obs = observe_record(
        &record(SpanKind::Client, "10.0.0.9:80", 404),
        &resource("frontend", "shop"),
        &peers,
    )
    .unwrap();
    assert_eq!(obs.edge.server, node("legacy", Some("shop")));
    assert_eq!(obs.edge.connection_type, ConnectionType::VirtualNode);
    assert!(obs.counts_request, "nobody else will count it");
    assert!(obs.failed, "4xx is an error on the client side");
}

#[test]
fn unresolved_server_is_named_by_host_else_by_address() {
    let mut r = record(SpanKind::Client, "[::ffff:203.0.113.5]:443", 200);
    let obs = observe_record(&r, &resource("frontend", "shop"), &NoPeers).unwrap();
    assert_eq!(
        obs.edge.server,
        node("shop.example", None),
        "the Host header's name, without its port"
    );
    if let Protocol::Http(http) = &mut r.protocol {
        http.host = Some("203.0.113.5:443".into());
    }
    let obs = observe_record(&r, &resource("frontend", "shop"), &NoPeers).unwrap();
    assert_eq!(
        obs.edge.server,
        node("203.0.113.5", None),
        "an address literal host gives way to the (IPv4) peer address"
    );
    if let Protocol::Http(http) = &mut r.protocol {
        http.host = None;
    }
    r.peer = None;
    assert_eq!(
        observe_record(&r, &resource("frontend", "shop"), &NoPeers),
        None,
        "nothing names the server"
    );
}

#[test]
fn a_client_span_without_a_peer_address_is_resolved_from_its_host() {
    // Go client spans carry the request's host, not the connection.
    let peers = Book::default().with("10.0.0.3", "catalog", "shop", true);
    let mut r = record(SpanKind::Client, "10.0.0.3:8080", 200);
    r.peer = None;
    if let Protocol::Http(http) = &mut r.protocol {
        http.host = Some("10.0.0.3:8080".into());
    }
    let obs = observe_record(&r, &resource("frontend", "shop"), &peers).unwrap();
    assert_eq!(obs.edge.server, node("catalog", Some("shop")));
    assert!(!obs.counts_request);

    struct Dns;
    impl PeerLookup for Dns {
        fn lookup(&self, _: IpAddr) -> Option<PeerIdentity> {
            None
        }
        fn lookup_host(&self, host: &str, ns: Option<&str>) -> Option<PeerIdentity> {
            (host == "catalog" && ns == Some("shop")).then(|| PeerIdentity {
                service: "catalog".into(),
                namespace: "shop".into(),
                traced: false,
            })
        }
    }
    if let Protocol::Http(http) = &mut r.protocol {
        http.host = Some("catalog:8080".into());
    }
    let obs = observe_record(&r, &resource("frontend", "shop"), &Dns).unwrap();
    assert_eq!(
        obs.edge.server,
        node("catalog", Some("shop")),
        "a bare Service name in the caller's namespace"
    );
    assert!(
        obs.counts_request,
        "an untraced Service's requests are counted by the client"
    );
}

#[test]
fn mapped_ipv6_peers_resolve_as_ipv4() {
    let peers = Book::default().with("10.0.0.2", "frontend", "shop", true);
    let obs = observe_record(
        &record(SpanKind::Server, "[::ffff:10.0.0.2]:5000", 200),
        &resource("catalog", "shop"),
        &peers,
    )
    .unwrap();
    assert_eq!(obs.edge.client.name.as_ref(), "frontend");
}

fn edge(client: &str, server: &str) -> Edge {
    Edge {
        client: node(client, Some("shop")),
        server: node(server, Some("shop")),
        connection_type: ConnectionType::Direct,
    }
}

fn counted(edge: Edge, failed: bool, server: f64) -> EdgeObservation {
    EdgeObservation {
        edge,
        counts_request: true,
        failed,
        client_seconds: None,
        server_seconds: Some(server),
    }
}

#[test]
fn counts_failures_and_both_histograms_reach_otlp() {
    let metrics = ServiceGraphMetrics::new(100);
    let server = resource("catalog", "shop");
    let client = resource("frontend", "shop");
    for i in 0..10 {
        metrics.observe(
            &server,
            &counted(edge("frontend", "catalog"), i % 5 == 0, 0.02),
        );
        // The client's view of the same requests, not counted again.
        metrics.observe(
            &client,
            &EdgeObservation {
                edge: edge("frontend", "catalog"),
                counts_request: false,
                failed: false,
                client_seconds: Some(0.03),
                server_seconds: None,
            },
        );
    }
    assert_eq!(metrics.request_count(&edge("frontend", "catalog")), 10);
    let request = metrics.to_otlp().expect("observed");
    let mut by_name: BTreeMap<String, Vec<(u64, Vec<KeyValue>)>> = BTreeMap::new();
    for rm in &request.resource_metrics {
        for m in &rm.scope_metrics[0].metrics {
            let points: Vec<(u64, Vec<KeyValue>)> = match &m.data {
                Some(metric::Data::Sum(s)) => {
                    assert!(s.is_monotonic, "{} is a counter", m.name);
                    s.data_points
                        .iter()
                        .map(|p| match p.value {
                            Some(number_data_point::Value::AsInt(v)) => {
                                (v as u64, p.attributes.clone())
                            }
                            _ => panic!("integer counts"),
                        })
                        .collect()
                }
                Some(metric::Data::Histogram(h)) => {
                    assert_eq!(m.unit, "s");
                    h.data_points
                        .iter()
                        .map(|p| (p.count, p.attributes.clone()))
                        .collect()
                }
                other => panic!("unexpected data {other:?}"),
            };
            by_name.entry(m.name.clone()).or_default().extend(points);
        }
    }
    let one = |name: &str| -> u64 {
        let points = &by_name[name];
        assert_eq!(points.len(), 1, "{name}: one series for one edge");
        let keys: Vec<&str> = points[0].1.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "client",
                "server",
                "client_service_namespace",
                "server_service_namespace"
            ],
            "{name}: Tempo/OBI labels, no connection_type on a direct edge"
        );
        points[0].0
    };
    assert_eq!(one(REQUEST_TOTAL), 10);
    assert_eq!(one(REQUEST_FAILED_TOTAL), 2);
    assert_eq!(one(REQUEST_SERVER), 10, "server histogram count");
    assert_eq!(one(REQUEST_CLIENT), 10, "client histogram count");
}

#[test]
fn an_exited_observers_edges_are_dropped_after_exited_idle_a_running_ones_are_kept() {
    let metrics = ServiceGraphMetrics::new(100);
    let with_pid = |service: &str, pid: u32| {
        let mut attributes = resource(service, "shop").attributes.clone();
        attributes.insert("process.pid".into(), pid.to_string());
        Arc::new(ProcessResource { attributes })
    };
    let exited = with_pid("catalog", crate::telemetry::metrics::exited_pid());
    let running = with_pid("cart", std::process::id());
    assert!(metrics.observe(&exited, &counted(edge("web", "catalog"), false, 0.01)));
    assert!(metrics.observe(&running, &counted(edge("web", "cart"), false, 0.01)));
    metrics.prune_idle(Duration::from_secs(3600));
    assert_eq!(
        metrics.resource_metrics().len(),
        2,
        "both observed just now"
    );
    metrics.prune(Duration::from_secs(3600), Duration::ZERO);
    let left = metrics.resource_metrics();
    assert_eq!(left.len(), 1, "only the running observer's edges are left");
    assert!(
        format!("{:?}", left[0].resource).contains("cart"),
        "{left:?}"
    );
}

#[test]
fn edges_past_the_cap_go_to_one_overflow_series() {
    let metrics = ServiceGraphMetrics::new(2);
    let res = resource("catalog", "shop");
    assert!(metrics.observe(&res, &counted(edge("a", "catalog"), false, 0.01)));
    assert!(metrics.observe(&res, &counted(edge("b", "catalog"), false, 0.01)));
    assert!(!metrics.observe(&res, &counted(edge("c", "catalog"), false, 0.01)));
    assert!(!metrics.observe(&res, &counted(edge("d", "catalog"), false, 0.01)));
    assert!(
        metrics.observe(&res, &counted(edge("a", "catalog"), false, 0.01)),
        "a known edge still has its own series"
    );
    let request = metrics.to_otlp().unwrap();
    let total = request.resource_metrics[0].scope_metrics[0]
        .metrics
        .iter()
        .find(|m| m.name == REQUEST_TOTAL)
        .unwrap();
    let Some(metric::Data::Sum(sum)) = &total.data else {
        panic!("a sum")
    };
    assert_eq!(
        sum.data_points.len(),
        3,
        "two edges and the overflow series"
    );
    let overflow = sum
        .data_points
        .iter()
        .find(|p| {
            p.attributes
                .iter()
                .any(|kv| kv.key == "otel.metric.overflow")
        })
        .expect("an overflow series");
    assert_eq!(
        overflow.value,
        Some(number_data_point::Value::AsInt(2)),
        "c and d"
    );
    metrics.prune_idle(Duration::ZERO);
    assert!(metrics.to_otlp().is_none(), "everything idle is forgotten");
    assert!(
        metrics.observe(&res, &counted(edge("e", "catalog"), false, 0.01)),
        "pruning frees room under the cap"
    );
}

#[test]
fn prometheus_exposition_has_one_series_per_edge_with_tempo_names() {
    let metrics = ServiceGraphMetrics::new(100);
    // Two replicas of one service observe the same edge.
    for pod in ["catalog-1", "catalog-2"] {
        let res = Arc::new(ProcessResource {
            attributes: [
                ("service.name".to_string(), "catalog".to_string()),
                ("k8s.pod.name".to_string(), pod.to_string()),
            ]
            .into(),
        });
        metrics.observe(&res, &counted(edge("frontend", "catalog"), true, 0.2));
    }
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(metrics));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let line = |prefix: &str| -> String {
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with(prefix)).collect();
        assert_eq!(lines.len(), 1, "one {prefix} series:\n{text}");
        lines[0].to_owned()
    };
    let total = line("traces_service_graph_request_total{");
    assert!(total.ends_with(" 2"), "{total}");
    assert!(
        total.contains(r#"client="frontend""#) && total.contains(r#"server="catalog""#),
        "{total}"
    );
    assert!(line("traces_service_graph_request_failed_total{").ends_with(" 2"));
    assert!(line("traces_service_graph_request_server_seconds_count{").ends_with(" 2"));
    assert!(
        !text.contains("traces_service_graph_request_client_seconds_count{"),
        "no client-side observation, no client histogram:\n{text}"
    );
}
