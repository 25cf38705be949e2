//! The service graph of an edge between the node's two probes: a Python
//! client calling a Go server (and a Go client calling a Python server),
//! each process traced by its language's probe, both probes sharing one pin
//! directory as the probes of a node do. Neither probe sees both sides of a
//! request; they exchange each connection's ends through the node-wide map
//! there, so each request is counted once on `client → server` as the two
//! processes name themselves (the probes' `resourceAttributes` name them,
//! unlike their executables or addresses), the server's durations from the
//! server's probe and the client's from the client's, under the same labels.
//! Without the exchange the client's durations would land on
//! `… → 127.0.0.1` (a counted virtual node: nothing standalone says the
//! address is traced) and the server's on `user → …`.
//!
//! Needs root (eBPF, a bpffs for the pins; sockops for the Go client's
//! connection); fails, does not skip, without it.

mod go_common;
mod prop_common;

use std::time::{Duration, Instant};

use ferrotel_api::probe_config::{Language, ProbeConfig};
use go_common::Probe;
use prop_common::{PinDir, Service, TestCgroup};

const REQUESTS: usize = 20;

const TOTAL: &str = "traces_service_graph_request_total";
const CLIENT_COUNT: &str = "traces_service_graph_request_client_seconds_count";
const SERVER_COUNT: &str = "traces_service_graph_request_server_seconds_count";
const NAMED: &str = "ferrotel_probe_service_graph_exchange_total{outcome=\"named\"}";
const CALLS: &str = "ferrotel_probe_service_graph_exchange_calls_total";

/// The Prometheus sample of one direct edge (standalone: no namespaces).
fn edge(metric: &str, client: &str, server: &str) -> String {
    format!("{metric}{{client=\"{client}\",server=\"{server}\"}}")
}

/// A probe of `language` for `pid`, naming its processes `service`,
/// pinning in `pins` (propagation's `join` half on if `join`).
async fn probe(
    language: Language,
    pid: u32,
    service: &str,
    pins: &PinDir,
    join: bool,
    endpoint: &str,
) -> Probe {
    let edit = |config: &mut ProbeConfig| {
        config.propagation = pins.config(false, join);
        config
            .resource_attributes
            .insert("service.name".into(), service.into());
    };
    let mut probe = Probe::launch(language, endpoint, &[("--pid", pid.to_string())], edit);
    probe.wait_attached_until("1 process", |v| v >= 1.0).await;
    probe
}

/// Both probes' service-graph lines, for failure messages.
fn graph_lines(client_metrics: &str, server_metrics: &str) -> String {
    let mut out = String::new();
    for (who, text) in [
        ("client's probe", client_metrics),
        ("server's probe", server_metrics),
    ] {
        out.push_str(&format!("\n {who}:"));
        for l in text.lines().filter(|l| {
            l.starts_with("traces_service_graph") || l.starts_with("ferrotel_probe_service_graph")
        }) {
            out.push_str(&format!("\n  {l}"));
        }
    }
    out
}

/// Waits until the client's probe has `n` client durations and the
/// server's probe `n` counted requests on `client → server`, then one
/// pairing window more (a request observed twice would show then), and
/// checks the whole edge.
async fn assert_one_edge(
    client_probe: &Probe,
    server_probe: &Probe,
    client: &str,
    server: &str,
    n: usize,
) {
    let n = n as f64;
    let deadline = Instant::now() + go_common::WAIT;
    loop {
        let c = client_probe.metrics().await;
        let s = server_probe.metrics().await;
        let done = Probe::metric_sum(&c, &edge(CLIENT_COUNT, client, server)) >= n
            && Probe::metric_sum(&s, &edge(TOTAL, client, server)) >= n;
        if done || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let c = client_probe.metrics().await;
    let s = server_probe.metrics().await;
    let graph = graph_lines(&c, &s);
    let sum = |text: &str, prefix: String| Probe::metric_sum(text, &prefix);
    assert_eq!(
        (
            sum(&s, edge(TOTAL, client, server)),
            sum(&c, edge(TOTAL, client, server)),
        ),
        (n, 0.0),
        "each request counted once, by the server's probe, on {client} -> {server} (a direct edge):{graph}"
    );
    assert_eq!(
        (
            sum(&s, edge(SERVER_COUNT, client, server)),
            sum(&c, edge(CLIENT_COUNT, client, server)),
        ),
        (n, n),
        "the server's durations from its probe, the client's from its probe, on that same edge:{graph}"
    );
    assert_eq!(
        (sum(&s, NAMED.into()), sum(&c, NAMED.into())),
        (n, n),
        "every span of the edge was named from the other probe's entry:{graph}"
    );
    // The map calls are counted; a connection's ends are written and read
    // at most once per span (less on a keep-alive connection).
    for (probe, text) in [("client", &c), ("server", &s)] {
        let writes = sum(text, format!("{CALLS}{{call=\"write\"}}"));
        let reads = sum(text, format!("{CALLS}{{call=\"read\"}}"));
        assert!(
            writes >= 1.0 && writes <= n && reads >= 1.0 && reads <= n,
            "the {probe}'s probe wrote {writes} and read {reads} times for {n} spans"
        );
    }
    for (text, stray) in [
        (
            &c,
            format!("{CLIENT_COUNT}{{client=\"{client}\",server=\"127.0.0.1\""),
        ),
        (
            &c,
            format!("{TOTAL}{{client=\"{client}\",server=\"127.0.0.1\""),
        ),
        (
            &s,
            format!("{SERVER_COUNT}{{client=\"user\",server=\"{server}\""),
        ),
        (&s, format!("{TOTAL}{{client=\"user\",server=\"{server}\"")),
    ] {
        assert_eq!(
            sum(text, stray.clone()),
            0.0,
            "no single-span half of these requests ({stray}):{graph}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_client_and_a_go_server_in_two_probes_make_one_edge_on_their_own_names() {
    let collector = go_common::collector().await;
    let apps = go_common::apps(go_common::TOOLCHAINS[0]);
    let pins = PinDir::new();
    let py_cgroup = TestCgroup::new("xgraph-py");
    let go_cgroup = TestCgroup::new("xgraph-go");
    let go_server = Service::start(
        "Go httpserver",
        go_cgroup.command(&apps.bin("httpserver"), &["-addr", "127.0.0.1:0"]),
    );
    let py_client = Service::python(&py_cgroup, "two_tier.py", &[&go_server.url("")]);
    // Go without propagation: its server spans still wait for, and
    // publish to, the other probe.
    let go = probe(
        Language::Go,
        go_server.pid(),
        "goserver",
        &pins,
        false,
        &collector.grpc_url(),
    )
    .await;
    let python = probe(
        Language::Python,
        py_client.pid(),
        "pyclient",
        &pins,
        false,
        &collector.grpc_url(),
    )
    .await;

    // Each checkout makes two backend calls on one keep-alive connection.
    let http = go_common::http_client();
    let checkouts = REQUESTS / 2;
    for i in 0..checkouts {
        let url = py_client.url(&format!("/checkout/{i}"));
        let status = http
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
            .status();
        assert_eq!(status, 200, "GET {url}");
    }
    assert_one_edge(&python, &go, "pyclient", "goserver", 2 * checkouts).await;

    go.assert_running();
    python.assert_running();
    drop(python.stop().await);
    drop(go.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_go_client_and_a_python_server_in_two_probes_make_one_edge_on_their_own_names() {
    let collector = go_common::collector().await;
    let apps = go_common::apps(go_common::TOOLCHAINS[0]);
    let pins = PinDir::new();
    let py_cgroup = TestCgroup::new("xgraph-rev-py");
    let go_cgroup = TestCgroup::new("xgraph-rev-go");
    let py_server = Service::python(&py_cgroup, "stdlib_server.py", &[]);
    let go_client = Service::start(
        "Go chiapp",
        go_cgroup.command(&apps.bin("chiapp"), &["-downstream", &py_server.url("")]),
    );
    // The Go client span reads its connection from net/http's
    // persistConn: no propagation needed.
    let go = probe(
        Language::Go,
        go_client.pid(),
        "goclient",
        &pins,
        false,
        &collector.grpc_url(),
    )
    .await;
    let python = probe(
        Language::Python,
        py_server.pid(),
        "pyserver",
        &pins,
        false,
        &collector.grpc_url(),
    )
    .await;

    let http = go_common::http_client();
    go_common::get_n(&http, &go_client.url("/downstream"), REQUESTS, &[]).await;
    assert_one_edge(&go, &python, "goclient", "pyserver", REQUESTS).await;

    go.assert_running();
    python.assert_running();
    drop(python.stop().await);
    drop(go.stop().await);
}

/// The pinned map itself: the second probe to open it gets the first one's
/// map (an end one publishes, the other reads), a directory off the bpffs
/// is refused with an error that says what to mount (the probe then keeps
/// the single-span rule), and the cost of a publish and of a lookup (the
/// system calls the pairing adds per waiting span) is printed.
#[test]
fn the_pinned_exchange_map_is_one_per_pin_directory_and_its_cost_is_measured() {
    use ferrotel_probe::telemetry::record::{KernelClock, SpanKind};
    use ferrotel_probe::telemetry::servicegraph::GraphNode;
    use ferrotel_probe::telemetry::servicegraph::exchange::{
        End, EndKey, Exchange, ExchangeError, PinnedExchange,
    };

    let pins = PinDir::new();
    let mut first = PinnedExchange::open(pins.path())
        .unwrap_or_else(|e| panic!("the first probe creates and pins the map (root): {e}"));
    let mut second = PinnedExchange::open(pins.path())
        .unwrap_or_else(|e| panic!("the second probe opens the pinned map: {e}"));
    let end = End {
        node: GraphNode::new("catalog", Some("shop".into())),
        start_ns: 10,
        end_ns: 20,
        clock: KernelClock::Monotonic,
    };
    let key = EndKey::new("10.0.0.2:40000".parse().unwrap(), SpanKind::Server);
    first.publish(&key, &end.encode().unwrap());
    assert_eq!(
        second.lookup(&key).as_ref().and_then(End::decode),
        Some(end.clone()),
        "what one probe publishes, the other reads"
    );
    let other_side = EndKey::new("10.0.0.2:40000".parse().unwrap(), SpanKind::Client);
    assert_eq!(second.lookup(&other_side), None, "the side is in the key");

    let not_bpffs = std::env::temp_dir().join(format!("ferrotel-exchange-{}", std::process::id()));
    match PinnedExchange::open(&not_bpffs) {
        Err(e @ ExchangeError::NoBpffs { .. }) => {
            assert!(e.to_string().contains("bpffs"), "{e}")
        }
        other => panic!("a directory off the bpffs is refused, got {other:?}"),
    }
    assert!(!not_bpffs.exists(), "and nothing is created there");

    // Cost: distinct keys, as distinct connections are.
    // Fewer than the map holds: an LRU map evicts near its size.
    const N: u16 = 8_000;
    let value = end.encode().unwrap();
    let keys: Vec<EndKey> = (0..N)
        .map(|port| {
            EndKey::new(
                format!("10.0.0.9:{port}").parse().unwrap(),
                SpanKind::Client,
            )
        })
        .collect();
    let started = Instant::now();
    for key in &keys {
        first.publish(key, &value);
    }
    let publish = started.elapsed();
    let started = Instant::now();
    let found = keys.iter().filter(|k| second.lookup(k).is_some()).count();
    let lookup = started.elapsed();
    assert_eq!(found, usize::from(N), "every end published is found");
    assert_eq!(first.failed_writes, 0);
    eprintln!(
        "exchange map: {:.0} ns per publish, {:.0} ns per lookup ({N} each; load {})",
        publish.as_nanos() as f64 / f64::from(N),
        lookup.as_nanos() as f64 / f64::from(N),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim(),
    );
}

/// Without a bpffs (a Kubernetes probe without propagation) the probes
/// find the map by its kernel name: the second opener gets the first one's
/// map, a map of that name created later (a probe that created one at the
/// same moment) loses to the earlier one, and a map of that name with
/// another layout is never taken.
#[test]
fn without_a_bpffs_the_probes_find_one_map_by_its_name() {
    use aya::maps::MapData;
    use ferrotel_probe::telemetry::record::{KernelClock, SpanKind};
    use ferrotel_probe::telemetry::servicegraph::GraphNode;
    use ferrotel_probe::telemetry::servicegraph::exchange::{
        End, EndKey, Exchange, MAP_NAME, PinnedExchange, definition,
    };

    // Another layout under the same name, created before any map of the
    // right layout this test makes: the lowest ID, if the layout were not
    // checked.
    let odd = MapData::create(
        aya_obj::Map::new_from_params(
            aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_LRU_HASH as u32,
            4,
            4,
            16,
            0,
        ),
        MAP_NAME,
        None,
    )
    .unwrap_or_else(|e| panic!("creating a map takes root: {e}"));
    let odd_id = odd.info().unwrap().id();

    let mut first = PinnedExchange::open_by_name()
        .unwrap_or_else(|e| panic!("the first probe finds or creates the map: {e}"));
    let mut second =
        PinnedExchange::open_by_name().unwrap_or_else(|e| panic!("the second probe finds it: {e}"));
    assert_ne!(first.id(), odd_id, "a map of another layout is not taken");
    assert_eq!(second.id(), first.id(), "one map for the node's probes");
    let end = End {
        node: GraphNode::new("catalog", Some("shop".into())),
        start_ns: 10,
        end_ns: 20,
        clock: KernelClock::Monotonic,
    };
    let key = EndKey::new(
        format!("10.0.0.3:{}", std::process::id() % 60_000)
            .parse()
            .unwrap(),
        SpanKind::Server,
    );
    first.publish(&key, &end.encode().unwrap());
    assert_eq!(
        second.lookup(&key).as_ref().and_then(End::decode),
        Some(end),
        "what one probe publishes, the other reads"
    );

    let later = MapData::create(definition(), MAP_NAME, None).unwrap();
    assert!(later.info().unwrap().id() > first.id());
    let third = PinnedExchange::open_by_name().unwrap();
    assert_eq!(
        third.id(),
        first.id(),
        "a map of the name created later loses to the earlier one"
    );
}

/// A client that binds `port` (so that two processes use one client
/// address one after the other), waits until `go` exists, sends one
/// `GET /hello` to `server` and prints DONE once the server closed.
const BOUND_CLIENT: &str = r#"
import os, socket, sys, time
port, server, go = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
print("READY 0", flush=True)
while go != "-" and not os.path.exists(go):
    time.sleep(0.05)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port))
s.connect(("127.0.0.1", server))
s.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
while s.recv(65536):
    pass
s.close()
print("DONE", flush=True)
"#;

/// A file removed when the test ends, however it ends.
struct RemovedOnDrop(std::path::PathBuf);

impl Drop for RemovedOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// An earlier owner of a client address is not the later one: a traced
/// Python process calls a Go server from port P, and once it is done, an
/// untraced process calls another traced Go server from the same port P.
/// The first request is the edge `stale → goserver`; the second one's
/// caller is unknown (`user`), not `stale` from the entry the first left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_earlier_owner_of_the_client_address_does_not_name_a_later_request() {
    let collector = go_common::collector().await;
    let apps = go_common::apps(go_common::TOOLCHAINS[0]);
    let pins = PinDir::new();
    let py_cgroup = TestCgroup::new("xgraph-stale-py");
    let go_cgroup = TestCgroup::new("xgraph-stale-go");
    let first_server = Service::start(
        "Go httpserver (first)",
        go_cgroup.command(&apps.bin("httpserver"), &["-addr", "127.0.0.1:0"]),
    );
    let second_server = Service::start(
        "Go httpserver (second)",
        go_cgroup.command(&apps.bin("httpserver"), &["-addr", "127.0.0.1:0"]),
    );
    // A port nobody uses now: the kernel picks it, the clients bind it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let go_file = RemovedOnDrop(
        std::env::temp_dir().join(format!("ferrotel-xgraph-go-{}", std::process::id())),
    );
    let go_file = &go_file.0;
    let _ = std::fs::remove_file(go_file);
    let python_bin = ferrotel_e2e::tools::venv_bin("python");
    let mut traced = Service::start(
        "bound Python client (traced)",
        py_cgroup.command(
            &python_bin,
            &[
                "-c",
                BOUND_CLIENT,
                &port.to_string(),
                &first_server.port.to_string(),
                go_file.to_str().expect("utf-8 path"),
            ],
        ),
    );
    let targets: Vec<(&str, String)> = [first_server.pid(), second_server.pid()]
        .iter()
        .map(|p| ("--pid", p.to_string()))
        .collect();
    let mut go = Probe::launch(
        Language::Go,
        &collector.grpc_url(),
        &targets,
        |config: &mut ProbeConfig| {
            config.propagation = pins.config(false, false);
            config
                .resource_attributes
                .insert("service.name".into(), "goserver".into());
        },
    );
    go.wait_attached_until("2 processes", |v| v >= 2.0).await;
    let python = probe(
        Language::Python,
        traced.pid(),
        "stale",
        &pins,
        false,
        &collector.grpc_url(),
    )
    .await;

    std::fs::write(go_file, b"").expect("write the go file");
    assert_eq!(traced.line(), "DONE", "the traced client's request");
    // Both halves of the first request observed (the window passed),
    // then the second owner of the port calls.
    let deadline = Instant::now() + go_common::WAIT;
    while Probe::metric_sum(&go.metrics().await, &format!("{TOTAL}{{")) < 1.0
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = std::process::Command::new(&python_bin)
        .args([
            "-c",
            BOUND_CLIENT,
            &port.to_string(),
            &second_server.port.to_string(),
            "-",
        ])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("the untraced client runs");
    assert!(status.success(), "the untraced client's request: {status}");
    while Probe::metric_sum(&go.metrics().await, &format!("{TOTAL}{{")) < 2.0
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = go.metrics().await;
    let c = python.metrics().await;
    let graph = graph_lines(&c, &s);
    assert_eq!(
        (
            Probe::metric_sum(&s, &edge(TOTAL, "stale", "goserver")),
            Probe::metric_sum(
                &s,
                &format!(
                    "{TOTAL}{{client=\"user\",server=\"goserver\",connection_type=\"virtual_node\"}}"
                )
            ),
        ),
        (1.0, 1.0),
        "the traced client's request on its edge, the untraced one's on user:{graph}"
    );
    go.assert_running();
    drop(python.stop().await);
    drop(go.stop().await);
}

/// A pin directory the exchange cannot use (off the bpffs) costs the probe
/// nothing but the exchange: it runs, says so in its metric, and builds the
/// edge from single spans as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_whose_exchange_cannot_open_runs_on_with_single_span_edges() {
    let collector = go_common::collector().await;
    let apps = go_common::apps(go_common::TOOLCHAINS[0]);
    let go_cgroup = TestCgroup::new("xgraph-nobpffs-go");
    let server = Service::start(
        "Go httpserver",
        go_cgroup.command(&apps.bin("httpserver"), &["-addr", "127.0.0.1:0"]),
    );
    let not_bpffs = RemovedOnDrop(
        std::env::temp_dir().join(format!("ferrotel-xgraph-pins-{}", std::process::id())),
    );
    let mut go = Probe::launch(
        Language::Go,
        &collector.grpc_url(),
        &[("--pid", server.pid().to_string())],
        |config: &mut ProbeConfig| {
            config.propagation.pin_dir = Some(not_bpffs.0.display().to_string());
            config
                .resource_attributes
                .insert("service.name".into(), "goserver".into());
        },
    );
    go.wait_attached_until("1 process", |v| v >= 1.0).await;
    let http = go_common::http_client();
    go_common::get_n(&http, &server.url("/hello"), 3, &[]).await;
    let single =
        format!("{TOTAL}{{client=\"user\",server=\"goserver\",connection_type=\"virtual_node\"}}");
    let deadline = Instant::now() + go_common::WAIT;
    let mut metrics = go.metrics().await;
    while Probe::metric_sum(&metrics, &single) < 3.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        metrics = go.metrics().await;
    }
    let graph = graph_lines("", &metrics);
    assert_eq!(
        Probe::metric_sum(
            &metrics,
            "ferrotel_probe_service_graph_exchange_total{outcome=\"unavailable\"}"
        ),
        1.0,
        "the exchange that could not open is counted:{graph}"
    );
    assert_eq!(
        Probe::metric_sum(&metrics, &single),
        3.0,
        "the edge is built from single spans:{graph}"
    );
    assert!(!not_bpffs.0.exists(), "nothing is created off the bpffs");
    go.assert_running();
    drop(go.stop().await);
}
