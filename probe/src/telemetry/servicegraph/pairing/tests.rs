use std::collections::HashMap;
use std::net::IpAddr;

use super::*;
use crate::telemetry::semconv::tests::http_record;
use crate::telemetry::servicegraph::{PeerIdentity, ServiceGraphMetrics, observe_record};

/// The node: `frontend` (10.0.0.2) calls `catalog` (10.0.0.3), both traced
/// by this probe; `catalog-svc` (10.96.0.10) is the ClusterIP of the
/// Service in front of catalog, named differently from its pods'
/// `service.name`; 10.0.1.5 is `checkout` on another node; 192.0.2.80 is an
/// untraced database.
struct Book(HashMap<IpAddr, PeerIdentity>);

impl Book {
    fn node() -> Self {
        let mut book = HashMap::new();
        for (ip, service, traced) in [
            ("10.0.0.2", "frontend", true),
            ("10.0.0.3", "catalog", true),
            ("10.96.0.10", "catalog-svc", true),
            ("10.0.1.5", "checkout", true),
            ("192.0.2.80", "db", false),
        ] {
            book.insert(
                ip.parse().unwrap(),
                PeerIdentity {
                    service: service.into(),
                    namespace: "shop".into(),
                    traced,
                },
            );
        }
        Book(book)
    }
}

impl PeerLookup for Book {
    fn lookup(&self, ip: IpAddr) -> Option<PeerIdentity> {
        self.0.get(&ip).cloned()
    }
}

fn resource(service: &str) -> Arc<ProcessResource> {
    Arc::new(ProcessResource {
        attributes: [
            ("service.name".to_string(), service.to_string()),
            ("service.namespace".to_string(), "shop".to_string()),
        ]
        .into(),
    })
}

const MS: u64 = 1_000_000;

/// A span of `kind` from `local` to `peer` over `[start_ms, end_ms]`.
fn span(
    kind: SpanKind,
    local: &str,
    peer: &str,
    start_ms: u64,
    end_ms: u64,
    status: u16,
) -> RequestRecord {
    let mut r = http_record(kind, "GET", "/items/1", Some(status));
    r.local = Some(local.parse().unwrap());
    r.peer = Some(peer.parse().unwrap());
    r.start_ns = start_ms * MS;
    r.end_ns = end_ms * MS;
    r
}

fn edge(client: &str, server: &str, connection_type: ConnectionType) -> Edge {
    let shop = Some(Arc::<str>::from("shop"));
    Edge {
        client: GraphNode::new(client, shop.clone()),
        server: GraphNode::new(server, shop),
        connection_type,
    }
}

/// A pairer feeding real service-graph metrics, with every observation
/// kept as (observing service, observation).
struct Run {
    pairer: Pairer,
    graph: ServiceGraphMetrics,
    seen: Vec<(String, EdgeObservation)>,
    peers: Book,
    t0: Instant,
    /// The latest time offered or expired at: when a flush happens.
    latest: Instant,
}

impl Run {
    fn new() -> Self {
        Self::with(Pairer::default())
    }

    fn with(pairer: Pairer) -> Self {
        let now = Instant::now();
        Run {
            pairer,
            graph: ServiceGraphMetrics::new(100),
            seen: Vec::new(),
            peers: Book::node(),
            t0: now,
            latest: now,
        }
    }

    fn at(&mut self, ms: u64) -> Instant {
        let at = self.t0 + Duration::from_millis(ms);
        self.latest = self.latest.max(at);
        at
    }

    /// Offers `record` of `service` at `arrive_ms` after the start.
    fn offer(&mut self, record: &RequestRecord, service: &str, arrive_ms: u64) {
        let now = self.at(arrive_ms);
        let (graph, seen) = (&self.graph, &mut self.seen);
        self.pairer.offer(
            record,
            &resource(service),
            &self.peers,
            now,
            &mut |res, obs| {
                graph.observe(res, obs);
                seen.push((res.service_name().to_owned(), obs.clone()));
            },
        );
    }

    /// The pipeline's clock tick at `now_ms`: held ends are written, and
    /// what waited too long is observed.
    fn tick(&mut self, now_ms: u64) {
        let now = self.at(now_ms);
        let (graph, seen) = (&self.graph, &mut self.seen);
        self.pairer.tick(now, &mut |res, obs| {
            graph.observe(res, obs);
            seen.push((res.service_name().to_owned(), obs.clone()));
        });
    }

    fn flush(&mut self) {
        let (graph, seen) = (&self.graph, &mut self.seen);
        self.pairer.flush(self.latest, &mut |res, obs| {
            graph.observe(res, obs);
            seen.push((res.service_name().to_owned(), obs.clone()));
        });
    }

    /// Requests counted, over every edge.
    fn counted(&self) -> usize {
        self.seen.iter().filter(|(_, o)| o.counts_request).count()
    }

    fn client_durations(&self) -> Vec<f64> {
        self.seen
            .iter()
            .filter_map(|(_, o)| o.client_seconds)
            .collect()
    }

    fn server_durations(&self) -> Vec<f64> {
        self.seen
            .iter()
            .filter_map(|(_, o)| o.server_seconds)
            .collect()
    }

    /// What `record` observes alone (today's single-span rule).
    fn single(&self, record: &RequestRecord, service: &str) -> EdgeObservation {
        observe_record(record, &resource(service), &self.peers).expect("a single-span edge")
    }
}

fn client_span(start_ms: u64, end_ms: u64) -> RequestRecord {
    span(
        SpanKind::Client,
        "10.0.0.2:40000",
        "10.0.0.3:8080",
        start_ms,
        end_ms,
        200,
    )
}

fn server_span(start_ms: u64, end_ms: u64, status: u16) -> RequestRecord {
    span(
        SpanKind::Server,
        "10.0.0.3:8080",
        "10.0.0.2:40000",
        start_ms,
        end_ms,
        status,
    )
}

#[test]
fn both_sides_on_this_node_pair_into_one_counted_request_with_both_durations() {
    // Server first (it completes first), and client first.
    for server_first in [true, false] {
        let mut run = Run::new();
        let client = client_span(0, 100);
        let server = server_span(10, 90, 503);
        if server_first {
            run.offer(&server, "catalog", 0);
            assert!(run.seen.is_empty(), "the first side waits for the second");
            run.offer(&client, "frontend", 1);
        } else {
            run.offer(&client, "frontend", 0);
            run.offer(&server, "catalog", 1);
        }
        let direct = edge("frontend", "catalog", ConnectionType::Direct);
        assert_eq!(
            run.seen,
            vec![
                (
                    "catalog".to_owned(),
                    EdgeObservation {
                        edge: direct.clone(),
                        counts_request: true,
                        failed: true,
                        client_seconds: None,
                        server_seconds: Some(0.08),
                    }
                ),
                (
                    "frontend".to_owned(),
                    EdgeObservation {
                        edge: direct.clone(),
                        counts_request: false,
                        failed: false,
                        client_seconds: Some(0.1),
                        server_seconds: None,
                    }
                ),
            ],
            "server_first={server_first}: counted once under the server, the client's \
             duration under the client, one edge"
        );
        assert_eq!(run.graph.request_count(&direct), 1);
        assert_eq!(run.pairer.waiting(), 0, "nothing is left waiting");
        assert_eq!(run.pairer.stats().pairs, 1);
        run.flush();
        assert_eq!(
            run.seen.len(),
            2,
            "a pair is observed once, not again at flush"
        );
    }
}

#[test]
fn a_client_that_dialled_a_cluster_ip_lands_on_the_servers_own_name() {
    let mut run = Run::new();
    // DNAT: the client connected to the ClusterIP, the server sees the
    // client's address unchanged and its own pod address as local.
    let client = span(
        SpanKind::Client,
        "10.0.0.2:40000",
        "10.96.0.10:80",
        0,
        100,
        200,
    );
    let server = server_span(10, 90, 200);
    assert_eq!(
        run.single(&client, "frontend").edge,
        edge("frontend", "catalog-svc", ConnectionType::Direct),
        "alone, the client names the Service it dialled"
    );
    run.offer(&server, "catalog", 0);
    run.offer(&client, "frontend", 1);
    let real = edge("frontend", "catalog", ConnectionType::Direct);
    assert!(
        run.seen.iter().all(|(_, o)| o.edge == real),
        "both observations on the server's real name: {:?}",
        run.seen
    );
    assert_eq!(run.client_durations(), vec![0.1]);
    assert_eq!(run.server_durations(), vec![0.08]);
    assert_eq!(run.graph.request_count(&real), 1);
    assert_eq!(
        run.graph
            .request_count(&edge("frontend", "catalog-svc", ConnectionType::Direct)),
        0
    );
}

#[test]
fn a_server_span_alone_keeps_the_single_span_rule_after_the_window() {
    let mut run = Run::new();
    // Its caller runs on another node: no client span here.
    let server = span(
        SpanKind::Server,
        "10.0.0.3:8080",
        "10.0.1.5:33000",
        0,
        50,
        200,
    );
    run.offer(&server, "catalog", 0);
    run.tick(Pairer::WINDOW.as_millis() as u64);
    assert!(run.seen.is_empty(), "it waits for the whole window");
    run.tick(Pairer::WINDOW.as_millis() as u64 + 1);
    assert_eq!(
        run.seen,
        vec![("catalog".to_owned(), run.single(&server, "catalog"))],
        "then it observes exactly what a single span does"
    );
    assert_eq!(run.pairer.stats().alone, 1);
    assert_eq!(run.pairer.waiting(), 0);
}

#[test]
fn a_client_span_alone_keeps_the_single_span_rule_after_the_window() {
    let mut run = Run::new();
    // An untraced database (counted by the client) and a traced server on
    // another node (not counted by the client).
    let to_db = span(
        SpanKind::Client,
        "10.0.0.2:41000",
        "192.0.2.80:5432",
        0,
        20,
        200,
    );
    let to_remote = span(
        SpanKind::Client,
        "10.0.0.2:41001",
        "10.0.1.5:8080",
        0,
        20,
        200,
    );
    run.offer(&to_db, "frontend", 0);
    run.offer(&to_remote, "frontend", 0);
    assert!(run.seen.is_empty());
    run.tick(2 * Pairer::WINDOW.as_millis() as u64);
    assert_eq!(
        run.seen,
        vec![
            ("frontend".to_owned(), run.single(&to_db, "frontend")),
            ("frontend".to_owned(), run.single(&to_remote, "frontend")),
        ]
    );
    assert_eq!(
        run.counted(),
        1,
        "only the untraced server's request counts"
    );
}

#[test]
fn a_span_without_the_client_address_is_observed_at_once() {
    let mut run = Run::new();
    // The Go client without propagation does not know its connection.
    let mut client = client_span(0, 100);
    client.local = None;
    run.offer(&client, "frontend", 0);
    assert_eq!(
        run.seen,
        vec![("frontend".to_owned(), run.single(&client, "frontend"))]
    );
    assert_eq!(run.pairer.waiting(), 0);
    assert_eq!(run.pairer.stats().unpairable, 1);
}

#[test]
fn keep_alive_requests_pair_by_time_on_one_connection() {
    // Five requests in turn on one connection, each with its own durations
    // (client i lasts 10+i ms, its server 5+i ms).
    let requests: Vec<(RequestRecord, RequestRecord)> = (0..5u64)
        .map(|i| {
            let start = i * 100;
            (
                client_span(start, start + 10 + i),
                server_span(start + 2, start + 7 + i, 200),
            )
        })
        .collect();
    // Every server span before any client span (a slow reader), then in
    // turn, then every client span first.
    for order in 0..3 {
        let mut run = Run::new();
        match order {
            0 => {
                for (_, s) in &requests {
                    run.offer(s, "catalog", 0);
                }
                for (c, _) in requests.iter().rev() {
                    run.offer(c, "frontend", 1);
                }
            }
            1 => {
                for (c, s) in &requests {
                    run.offer(s, "catalog", 0);
                    run.offer(c, "frontend", 0);
                }
            }
            _ => {
                for (c, _) in &requests {
                    run.offer(c, "frontend", 0);
                }
                for (_, s) in &requests {
                    run.offer(s, "catalog", 1);
                }
            }
        }
        assert_eq!(run.pairer.stats().pairs, 5, "order {order}");
        assert_eq!(run.pairer.waiting(), 0, "order {order}");
        // Each pair's two observations follow each other: the server's
        // duration is 5 ms shorter than its own client's.
        for pair in run.seen.chunks(2) {
            let server = pair[0].1.server_seconds.unwrap();
            let client = pair[1].1.client_seconds.unwrap();
            assert!(
                ((client - server) - 0.005).abs() < 1e-9,
                "order {order}: a server span paired with another request's client: \
                 {server} s vs {client} s"
            );
        }
        assert_eq!(
            run.graph
                .request_count(&edge("frontend", "catalog", ConnectionType::Direct)),
            5
        );
    }
}

#[test]
fn a_server_outside_the_client_span_does_not_pair() {
    let mut run = Run::new();
    // Same tuple, but the server started after the client was done: a
    // later request whose client span is not here (or a reused port).
    run.offer(&client_span(0, 100), "frontend", 0);
    run.offer(&server_span(150, 160, 200), "catalog", 0);
    assert_eq!(run.pairer.stats().pairs, 0);
    assert_eq!(run.pairer.waiting(), 2);
    run.flush();
    assert_eq!(run.pairer.stats().alone, 2);
    assert_eq!(run.counted(), 1, "the server span alone counts it");
}

#[test]
fn a_dual_stack_servers_mapped_address_pairs_with_the_ipv4_client() {
    let mut run = Run::new();
    let server = span(
        SpanKind::Server,
        "[::ffff:10.0.0.3]:8080",
        "[::ffff:10.0.0.2]:40000",
        10,
        90,
        200,
    );
    run.offer(&server, "catalog", 0);
    run.offer(&client_span(0, 100), "frontend", 0);
    assert_eq!(run.pairer.stats().pairs, 1);
}

#[test]
fn spans_pushed_out_of_a_full_buffer_or_the_window_are_observed_alone() {
    // Room for two waiting spans.
    let mut run = Run::with(Pairer::new(Duration::from_millis(100), 2));
    let server = server_span(10, 90, 200);
    run.offer(&server, "catalog", 0);
    // Two remote callers' server spans push it out before its client came.
    let remote = |port: u16| {
        span(
            SpanKind::Server,
            "10.0.0.3:8080",
            &format!("10.0.1.5:{port}"),
            0,
            5,
            200,
        )
    };
    run.offer(&remote(1), "catalog", 0);
    run.offer(&remote(2), "catalog", 0);
    assert_eq!(
        run.seen,
        vec![("catalog".to_owned(), run.single(&server, "catalog"))],
        "the oldest is observed alone as soon as it is pushed out"
    );
    // Its client comes late: nothing to pair with, so it waits, then is
    // observed alone too (durations only: the traced server counted).
    let client = client_span(0, 100);
    run.offer(&client, "frontend", 1);
    assert_eq!(run.pairer.stats().pairs, 0);
    run.tick(500);
    assert_eq!(run.pairer.waiting(), 0);
    assert_eq!(
        run.seen.last(),
        Some(&("frontend".to_owned(), run.single(&client, "frontend")))
    );
    assert_eq!(run.counted(), 3, "three requests, each counted once");

    // The window: a client arriving after its server waited out the window.
    let mut run = Run::with(Pairer::new(Duration::from_millis(100), 2));
    run.offer(&server, "catalog", 0);
    run.offer(&client, "frontend", 101);
    assert_eq!(run.pairer.stats().pairs, 0, "the server was observed alone");
    run.flush();
    assert_eq!(run.counted(), 1);
    assert_eq!(
        (run.client_durations().len(), run.server_durations().len()),
        (1, 1)
    );
}

/// A small deterministic generator (no dependency needed for a mix).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

#[test]
fn every_request_is_counted_exactly_once_and_every_duration_observed_once() {
    // Many connections, keep-alive and not, pairs, remote callers and
    // external servers, in a shuffled arrival order, with a small buffer
    // and window so that evictions and expiries happen too.
    let mut rng = Lcg(7);
    let mut records: Vec<(RequestRecord, &str)> = Vec::new();
    let mut requests = 0;
    for conn in 0..200u16 {
        let per_connection = 1 + rng.next(4);
        let start = u64::from(conn) * 10;
        for i in 0..per_connection {
            let t = start + i * 1_000_000;
            let port = 30_000 + conn;
            let status = if rng.next(5) == 0 { 500 } else { 200 };
            requests += 1;
            match rng.next(3) {
                0 => {
                    let client = format!("10.0.0.2:{port}");
                    records.push((
                        span(SpanKind::Client, &client, "10.96.0.10:80", t, t + 9, 200),
                        "frontend",
                    ));
                    records.push((
                        span(
                            SpanKind::Server,
                            "10.0.0.3:8080",
                            &client,
                            t + 1,
                            t + 8,
                            status,
                        ),
                        "catalog",
                    ));
                }
                1 => records.push((
                    span(
                        SpanKind::Server,
                        "10.0.0.3:8080",
                        &format!("10.0.1.5:{port}"),
                        t,
                        t + 3,
                        status,
                    ),
                    "catalog",
                )),
                _ => records.push((
                    span(
                        SpanKind::Client,
                        &format!("10.0.0.2:{port}"),
                        "192.0.2.80:5432",
                        t,
                        t + 3,
                        status,
                    ),
                    "frontend",
                )),
            }
        }
    }
    // Shuffle (Fisher-Yates).
    for i in (1..records.len()).rev() {
        let j = rng.next(i as u64 + 1) as usize;
        records.swap(i, j);
    }
    let clients = records
        .iter()
        .filter(|(r, _)| r.kind == SpanKind::Client)
        .count();
    let servers = records.len() - clients;
    let mut run = Run::with(Pairer::new(Duration::from_millis(50), 64));
    for (n, (record, service)) in records.iter().enumerate() {
        run.offer(record, service, n as u64);
    }
    run.flush();
    let stats = run.pairer.stats();
    assert!(stats.pairs > 0 && stats.alone > 0, "{stats:?}");
    assert_eq!(
        run.seen.len() as u64,
        2 * stats.pairs + stats.alone,
        "a pair observes twice, a span alone once"
    );
    assert_eq!(
        run.counted(),
        requests as usize,
        "each request counted once"
    );
    assert_eq!(run.client_durations().len(), clients);
    assert_eq!(run.server_durations().len(), servers);
    assert_eq!(run.pairer.waiting(), 0);
}

#[test]
fn a_pairer_that_is_off_observes_every_span_alone_at_once() {
    let mut run = Run::with(Pairer::off());
    let client = client_span(0, 100);
    let server = server_span(10, 90, 200);
    run.offer(&server, "catalog", 0);
    run.offer(&client, "frontend", 0);
    assert_eq!(
        run.seen,
        vec![
            ("catalog".to_owned(), run.single(&server, "catalog")),
            ("frontend".to_owned(), run.single(&client, "frontend")),
        ],
        "nothing waits, nothing pairs"
    );
    assert_eq!(run.pairer.waiting(), 0);
    assert_eq!(run.pairer.stats().unpairable, 2);
}

// ------------------------------------------------ exchange across probes

/// The node-wide map, as a fixture two pairers share (one per probe).
#[derive(Clone, Debug, Default)]
struct SharedEnds(Arc<std::sync::Mutex<HashMap<(SocketAddr, bool), EndValue>>>);

use super::super::exchange::{EndValue, ExchangeClient};

/// The map's key, decoded back (the fixture keys by what it encodes).
fn fixture_key(key: &EndKey) -> (SocketAddr, bool) {
    // SAFETY: `EndKey` is `repr(C)` plain bytes (see its `Pod` impl).
    let bytes: [u8; 20] = unsafe { std::mem::transmute(*key) };
    let ip = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(&bytes[..16]).unwrap());
    let port = u16::from_ne_bytes([bytes[16], bytes[17]]);
    (
        SocketAddr::new(canonical_ip(IpAddr::V6(ip)), port),
        bytes[18] == 1,
    )
}

impl Exchange for SharedEnds {
    fn publish(&mut self, key: &EndKey, value: &EndValue) {
        self.0.lock().unwrap().insert(fixture_key(key), *value);
    }

    fn lookup(&mut self, key: &EndKey) -> Option<EndValue> {
        self.0.lock().unwrap().get(&fixture_key(key)).copied()
    }
}

/// Two probes of one node: `client` has the client processes, `server` the
/// server processes, sharing `ends`.
fn two_probes(ends: &SharedEnds) -> (Run, Run) {
    (
        Run::with(Pairer::default().with_exchange(Box::new(ends.clone()))),
        Run::with(Pairer::default().with_exchange(Box::new(ends.clone()))),
    )
}

/// A client span of `frontend` that dialled catalog's Service
/// (`catalog-svc`, 10.96.0.10) from 10.0.0.2:40000.
fn client_via_service(start_ms: u64, end_ms: u64) -> RequestRecord {
    span(
        SpanKind::Client,
        "10.0.0.2:40000",
        "10.96.0.10:80",
        start_ms,
        end_ms,
        200,
    )
}

const AFTER_WINDOW: u64 = Pairer::WINDOW.as_millis() as u64 + 1;
/// The pipeline's clock tick while spans wait: half a window.
const TICK: u64 = Pairer::WINDOW.as_millis() as u64 / 2;

#[test]
fn a_client_and_a_server_in_two_probes_observe_the_pairs_edge_each_with_its_half() {
    // The server's probe takes its span first (it completes first), or the
    // client's does: either way both halves land on the pair's edge.
    for server_first in [true, false] {
        let ends = SharedEnds::default();
        let (mut client_probe, mut server_probe) = two_probes(&ends);
        let client = client_via_service(0, 100);
        let server = server_span(10, 90, 503);
        if server_first {
            server_probe.offer(&server, "catalog", 0);
            client_probe.offer(&client, "frontend", 5);
        } else {
            client_probe.offer(&client, "frontend", 0);
            server_probe.offer(&server, "catalog", 5);
        }
        assert!(
            client_probe.seen.is_empty() && server_probe.seen.is_empty(),
            "no partner in its own probe: each waits the window"
        );
        // Each pipeline's tick writes its probe's end before any span expires.
        client_probe.tick(TICK);
        server_probe.tick(TICK);
        client_probe.tick(AFTER_WINDOW + 5);
        server_probe.tick(AFTER_WINDOW + 5);
        let pair = edge("frontend", "catalog", ConnectionType::Direct);
        assert_eq!(
            server_probe.seen,
            vec![(
                "catalog".to_owned(),
                EdgeObservation {
                    edge: pair.clone(),
                    counts_request: true,
                    failed: true,
                    client_seconds: None,
                    server_seconds: Some(0.08),
                }
            )],
            "the server's probe counts the request and its failure with its duration, named by the client's own name"
        );
        assert_eq!(
            client_probe.seen,
            vec![(
                "frontend".to_owned(),
                EdgeObservation {
                    edge: pair,
                    counts_request: false,
                    failed: false,
                    client_seconds: Some(0.1),
                    server_seconds: None,
                }
            )],
            "the client's probe adds its duration on the same edge, not on catalog-svc"
        );
        for run in [&client_probe, &server_probe] {
            assert_eq!(
                (run.pairer.stats().exchanged, run.pairer.stats().alone),
                (1, 0)
            );
        }
    }
}

#[test]
fn an_entry_older_than_the_span_is_an_earlier_owner_and_is_not_used() {
    let ends = SharedEnds::default();
    let (mut client_probe, mut server_probe) = two_probes(&ends);
    // An earlier connection from the same client address, to catalog,
    // ended before this client's request began; the address now belongs
    // to a process that calls catalog-svc, whose server is not traced here.
    server_probe.offer(&server_span(10, 20, 200), "catalog", 0);
    server_probe.tick(TICK);
    let client = client_via_service(500, 600);
    client_probe.offer(&client, "frontend", 500);
    client_probe.tick(500 + AFTER_WINDOW);
    assert_eq!(
        client_probe.seen,
        vec![(
            "frontend".to_owned(),
            client_probe.single(&client, "frontend")
        )],
        "the stale server entry does not name it: the single-span rule"
    );
    assert_eq!(client_probe.pairer.stats().exchange_misses, 1);
    // The server span, for its part, finds the client entry (the latest
    // client request on the address ended after it started): the address
    // still belonged to frontend then, as far as the exchange can tell.
    server_probe.tick(AFTER_WINDOW + 600);
    assert_eq!(server_probe.pairer.stats().exchanged, 1);
}

#[test]
fn keep_alive_requests_across_probes_are_all_named_though_later_ones_overwrite_the_entry() {
    let ends = SharedEnds::default();
    let (mut client_probe, mut server_probe) = two_probes(&ends);
    // Ten requests one after the other on one connection, all offered
    // before any expires: each entry is overwritten by the next request's.
    for i in 0..10 {
        let t = i * 20;
        server_probe.offer(&server_span(t + 2, t + 8, 200), "catalog", t);
        client_probe.offer(&client_via_service(t, t + 10), "frontend", t + 1);
    }
    client_probe.tick(200 + TICK);
    server_probe.tick(200 + TICK);
    client_probe.tick(200 + AFTER_WINDOW);
    server_probe.tick(200 + AFTER_WINDOW);
    let pair = edge("frontend", "catalog", ConnectionType::Direct);
    assert_eq!(server_probe.graph.request_count(&pair), 10);
    assert_eq!(server_probe.counted(), 10, "each counted once");
    assert_eq!(client_probe.counted(), 0, "never by the client");
    assert!(
        client_probe.seen.iter().all(|(_, o)| o.edge == pair)
            && server_probe.seen.iter().all(|(_, o)| o.edge == pair),
        "every half on the pair's edge"
    );
    assert_eq!(
        (
            client_probe.client_durations().len(),
            server_probe.server_durations().len()
        ),
        (10, 10)
    );
    // Ten ends of one connection in each probe, written at most once per
    // publish interval, read once per cache interval.
    for run in [&client_probe, &server_probe] {
        let stats = run.pairer.stats();
        assert!(
            stats.exchange_writes <= 3 && stats.exchange_reads <= 2,
            "writes and reads per connection, not per span: {stats:?}"
        );
    }
}

#[test]
fn another_clock_or_a_name_that_does_not_fit_falls_back_to_the_single_span_rule() {
    // A name over the field's size is not published.
    let ends = SharedEnds::default();
    let (mut client_probe, mut server_probe) = two_probes(&ends);
    let long = "c".repeat(super::super::exchange::NAME_BYTES + 1);
    server_probe.offer(&server_span(10, 90, 200), &long, 0);
    let client = client_via_service(0, 100);
    client_probe.offer(&client, "frontend", 1);
    client_probe.tick(AFTER_WINDOW + 1);
    assert_eq!(
        client_probe.seen,
        vec![(
            "frontend".to_owned(),
            client_probe.single(&client, "frontend")
        )]
    );
    assert!(
        ends.0.lock().unwrap().len() == 1,
        "only the client published"
    );

    // Another clock: the times say nothing about each other.
    let ends = SharedEnds::default();
    let (mut client_probe, mut server_probe) = two_probes(&ends);
    let mut server = server_span(10, 90, 200);
    server.clock = KernelClock::Boottime;
    server_probe.offer(&server, "catalog", 0);
    client_probe.offer(&client, "frontend", 1);
    client_probe.tick(AFTER_WINDOW + 1);
    server_probe.tick(AFTER_WINDOW + 1);
    assert_eq!(
        client_probe.seen,
        vec![(
            "frontend".to_owned(),
            client_probe.single(&client, "frontend")
        )]
    );
    assert_eq!(
        server_probe.seen,
        vec![(
            "catalog".to_owned(),
            server_probe.single(&server, "catalog")
        )]
    );
}

#[test]
fn a_pair_in_one_probe_is_unchanged_by_the_exchange() {
    let ends = SharedEnds::default();
    let mut run = Run::with(Pairer::default().with_exchange(Box::new(ends.clone())));
    run.offer(&server_span(10, 90, 200), "catalog", 0);
    run.offer(&client_via_service(0, 100), "frontend", 1);
    assert_eq!(run.pairer.stats().pairs, 1);
    assert_eq!(run.pairer.stats().exchanged, 0);
    assert_eq!(
        run.graph
            .request_count(&edge("frontend", "catalog", ConnectionType::Direct)),
        1
    );
}

#[test]
fn an_exchange_turns_a_pairer_that_was_off_on() {
    let ends = SharedEnds::default();
    let mut run = Run::with(Pairer::off().with_exchange(Box::new(ends.clone())));
    run.offer(&server_span(10, 90, 200), "catalog", 0);
    assert!(run.seen.is_empty(), "the server span waits for a client");
    assert!(ends.0.lock().unwrap().is_empty(), "its end is held");
    assert!(run.pairer.needs_ticks(), "for a tick to write it");
    assert_eq!(
        (
            Pairer::default().tick_interval(),
            run.pairer.tick_interval()
        ),
        (Pairer::WINDOW / 2, ExchangeClient::PUBLISH_EVERY),
        "ticks come as often as ends are written"
    );
    let held = ExchangeClient::PUBLISH_EVERY.as_millis() as u64;
    run.tick(held);
    assert_eq!(ends.0.lock().unwrap().len(), 1, "and then written");
}

#[test]
fn an_end_survives_the_map_encoding() {
    for namespace in [Some(Arc::<str>::from("shop")), None] {
        let end = End {
            node: GraphNode::new("catalog", namespace),
            start_ns: 7,
            end_ns: 9,
            clock: KernelClock::Boottime,
        };
        assert_eq!(End::decode(&end.encode().unwrap()), Some(end));
    }
    let empty = End {
        node: GraphNode::new("", None),
        start_ns: 0,
        end_ns: 0,
        clock: KernelClock::Monotonic,
    };
    assert_eq!(empty.encode(), None, "an empty name is no end");
}
