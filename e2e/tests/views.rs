//! The views against ground truth, on the full stack on the test bed's real
//! node (kubelet, containerd, kube-proxy, CoreDNS; the chart installed, the
//! collector and probes as pods the operator rendered; the apps as
//! Deployments of locally built images, see `ferrotel_e2e::stack`):
//!
//! 1. **Service graph.** A driver (this test, on the host) calls a Python
//!    frontend, which calls a Go middle tier, which calls a Python backend
//!    and an uninstrumented peer (a pod in a namespace that is not opted
//!    in). Every fifth request fails at the backend (500), and the failure
//!    travels up (502). The graph the backend collector receives must be
//!    exactly `user → front`, `front → middle`, `middle → back` and
//!    `middle → ext` (virtual node), with request and failure counts equal
//!    to what the driver sent, every request seen on both sides where both
//!    are traced, and latency quantiles within bounds the test knows: at
//!    least the backend's fixed 30 ms of work, at most what the driver
//!    measured for the same requests.
//! 2. **Pod resources and TCP health.** A worker pod (in the kubelet's
//!    cgroupfs layout: a pod cgroup in every v1 hierarchy of this hybrid
//!    host and in the unified one) burns CPU, writes to disk and sends bytes
//!    on request and reports what it measured itself; the probe's CPU time,
//!    disk write and network transmit increases must be within 5 % of that,
//!    and its three refused connects must be exactly three failed
//!    connections.
//!
//! Needs root (a real node: network namespace, cgroups, mounts, eBPF) and
//! fails saying so.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use ferrotel_e2e::graph::{EdgeKey, EdgeStats, Histogram, service_graph};
use ferrotel_e2e::images::catalog;
use ferrotel_e2e::stack::{self, App};
use ferrotel_e2e::{Collector, wait_for};

/// Measured requests, and every how many one fails.
const REQUESTS: usize = 60;
const FAIL_EVERY: usize = 5;
/// The backend's fixed work per request.
const BACKEND_WORK: Duration = Duration::from_millis(30);
const METRICS_TIMEOUT: Duration = Duration::from_secs(120);

fn graph(collector: &Collector) -> BTreeMap<EdgeKey, EdgeStats> {
    service_graph(
        &collector
            .metrics()
            .unwrap_or_else(|e| panic!("reading the collector's metrics failed: {e}")),
    )
}

fn minus(after: &Histogram, before: &Histogram) -> Histogram {
    Histogram {
        count: after.count - before.count,
        sum: after.sum - before.sum,
        bounds: after.bounds.clone(),
        buckets: after
            .buckets
            .iter()
            .enumerate()
            .map(|(i, n)| n - before.buckets.get(i).copied().unwrap_or(0))
            .collect(),
    }
}

/// The exact `q`-quantile of measured values (nearest rank).
fn exact_quantile(sorted: &[Duration], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64()
}

/// Sum of the samples of `name` whose labels include all of `labels`, in
/// a Prometheus text exposition.
fn prom_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !rest.starts_with('{') && !rest.starts_with(' ') {
            continue;
        }
        if labels
            .iter()
            .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
            && let Some(value) = rest
                .rsplit(' ')
                .next()
                .and_then(|v| v.trim().parse::<f64>().ok())
        {
            *found.get_or_insert(0.0) += value;
        }
    }
    found
}

/// The `/metrics` text of the probe at `addr` (`language` names it).
async fn scrape((language, addr): &(String, String)) -> String {
    let (code, body) = stack::http_get(addr, "/metrics")
        .await
        .unwrap_or_else(|e| panic!("scraping the {language} probe at {addr}: {e}"));
    assert_eq!(code, 200, "the {language} probe's /metrics");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_tier_app_gives_the_exact_service_graph_and_its_pods_resources_match_ground_truth()
{
    let stack::RealStack {
        backend: collector,
        observability,
        bed,
        ..
    } = stack::RealStack::start()
        .await
        .unwrap_or_else(|e| panic!("the stack on a real node: {e}"));
    let client = bed.client();
    let (python_image, middle_image) =
        tokio::task::spawn_blocking(|| -> ferrotel_e2e::Result<_> {
            Ok((catalog::views_python()?, catalog::views_middle()?))
        })
        .await
        .expect("building the apps' images")
        .unwrap_or_else(|e| panic!("building the apps' images: {e}"));
    bed.import_images(&[python_image.clone(), middle_image.clone()])
        .unwrap_or_else(|e| panic!("{e}"));

    // The apps: `app` opted in, `ext` not.
    let app = bed.create_namespace("views").await;
    let ext_ns = bed.create_namespace("ext").await;
    stack::annotate_namespace(&client, &app, "ferrotel.io/instrument", Some("true"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let deploy = |ns: &str, name: &str, image: &str, args: Vec<String>| {
        let (client, ns) = (client.clone(), ns.to_owned());
        let app = App {
            name: name.to_owned(),
            image: image.to_owned(),
            args,
            port: 8080,
            ..App::default()
        };
        async move {
            stack::deploy_app(&client, &ns, &app)
                .await
                .unwrap_or_else(|e| panic!("deploying {}: {e}", app.name))
        }
    };
    let python = python_image.reference.as_str();
    let listen = "--listen=0.0.0.0:8080".to_owned();
    let back = deploy(
        &app,
        "back",
        python,
        vec![
            listen.clone(),
            format!("--work-ms={}", BACKEND_WORK.as_millis()),
        ],
    )
    .await;
    let ext = deploy(&ext_ns, "ext", python, vec![listen.clone()]).await;
    let middle = deploy(
        &app,
        "middle",
        &middle_image.reference,
        vec![
            "--addr=0.0.0.0:8080".to_owned(),
            format!("--backend=http://{}/item", back.addr()),
            format!("--peer=http://{}/ext", ext.addr()),
        ],
    )
    .await;
    let front = deploy(
        &app,
        "front",
        python,
        vec![
            listen.clone(),
            format!("--downstream=http://{}/api", middle.addr()),
        ],
    )
    .await;
    let worker = stack::deploy_app(
        &client,
        &app,
        &App {
            name: "worker".to_owned(),
            image: python.to_owned(),
            args: vec![listen.clone(), "--dir=/scratch".to_owned()],
            port: 8080,
            scratch: Some("/scratch".to_owned()),
            ..App::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("deploying worker: {e}"));

    // 1. Service graph.
    let user_front = EdgeKey::new("user", "front", "virtual_node");
    let front_middle = EdgeKey::new("front", "middle", "");
    let middle_back = EdgeKey::new("middle", "back", "");
    let middle_ext = EdgeKey::new("middle", "ext", "virtual_node");
    let expected: BTreeSet<EdgeKey> = [&user_front, &front_middle, &middle_back, &middle_ext]
        .into_iter()
        .cloned()
        .collect();
    let front_addr = front.addr();
    let get = |path: String| {
        let addr = front_addr.clone();
        async move {
            let started = Instant::now();
            let (code, _) = stack::http_get(&addr, &path)
                .await
                .unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"));
            (code, started.elapsed())
        }
    };
    // Warm up until every probe attached and every edge was exported...
    wait_for(
        "every edge of the three tiers at the collector",
        METRICS_TIMEOUT,
        || async {
            get("/order/1".to_owned()).await;
            let seen: BTreeSet<EdgeKey> = graph(&collector)
                .into_iter()
                .filter(|(_, s)| s.total > 0)
                .map(|(k, _)| k)
                .collect();
            if expected.is_subset(&seen) {
                Ok(())
            } else {
                Err(format!("edges so far: {seen:?}"))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    // ... and until the warm-up requests are all exported: two successive
    // exports agree (cumulative values, nothing in flight).
    let latest_export = || {
        collector
            .metrics()
            .map(|m| m.iter().map(|p| p.time_ns).max().unwrap_or(0))
            .unwrap_or(0)
    };
    let baseline = wait_for(
        "the warm-up to settle at the collector",
        METRICS_TIMEOUT,
        || async {
            let (stamp, first) = (latest_export(), graph(&collector));
            wait_for("a newer metrics export", METRICS_TIMEOUT, || async {
                if latest_export() > stamp {
                    Ok(())
                } else {
                    Err("no newer export".to_owned())
                }
            })
            .await
            .map_err(|e| e.to_string())?;
            let second = graph(&collector);
            if second == first {
                Ok(second)
            } else {
                Err("still changing".to_owned())
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    let probes = stack::probe_endpoints(&client, &observability, "default")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let probe = |language: &str| {
        probes
            .iter()
            .find(|(l, _)| l == language)
            .unwrap_or_else(|| panic!("no Ready {language} probe pod among {probes:?}"))
    };
    let (python_probe, go_probe) = (probe("python"), probe("go"));
    let named = |text: &str, o: &str| {
        prom_value(
            text,
            "ferrotel_probe_service_graph_exchange_total",
            &[("outcome", o)],
        )
        .unwrap_or(0.0)
    };
    let mut named_before = Vec::new();
    for language_probe in [python_probe, go_probe] {
        named_before.push(named(&scrape(language_probe).await, "named"));
    }

    let mut latencies = Vec::with_capacity(REQUESTS);
    let mut failures = 0;
    for i in 0..REQUESTS {
        let fail = i % FAIL_EVERY == FAIL_EVERY - 1;
        let path = format!("/order/{}{}", 1000 + i, if fail { "/fail" } else { "" });
        let (code, took) = get(path).await;
        assert_eq!(code, if fail { 502 } else { 200 }, "request {i}");
        failures += usize::from(fail);
        latencies.push(took);
    }
    latencies.sort();
    let (n, n_failed) = (REQUESTS as u64, failures as u64);
    let want = |key: &EdgeKey| -> (u64, u64) {
        let failed = if *key == middle_ext { 0 } else { n_failed };
        let base = baseline.get(key).cloned().unwrap_or_default();
        (base.total + n, base.failed + failed)
    };
    let after = wait_for(
        "the measured requests at the collector",
        METRICS_TIMEOUT,
        || async {
            let g = graph(&collector);
            let done = expected
                .iter()
                .all(|k| g.get(k).is_some_and(|s| (s.total, s.failed) == want(k)));
            if done {
                Ok(g)
            } else {
                Err(format!("graph: {g:?}"))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let edges: BTreeSet<EdgeKey> = after.keys().cloned().collect();
    assert_eq!(
        edges, expected,
        "exactly the edges of the three tiers and the peer"
    );

    let driver: Vec<f64> = [0.5, 0.9, 0.99]
        .iter()
        .map(|q| exact_quantile(&latencies, *q))
        .collect();
    eprintln!("driver-measured p50/p90/p99: {driver:?} s");
    for key in &expected {
        let (now, base) = (&after[key], baseline.get(key).cloned().unwrap_or_default());
        let server = minus(&now.server, &base.server);
        let client = minus(&now.client, &base.client);
        let server_traced = key != &middle_ext;
        let client_traced = key != &user_front;
        assert_eq!(
            server.count,
            if server_traced { n } else { 0 },
            "{key}: server-side durations"
        );
        assert_eq!(
            client.count,
            if client_traced { n } else { 0 },
            "{key}: client-side durations"
        );
        for (side, h) in [("server", &server), ("client", &client)] {
            if h.count == 0 {
                continue;
            }
            for (q, driver_q) in [0.5, 0.9, 0.99].iter().zip(&driver) {
                let (lower, upper) = h.quantile_bucket(*q).expect("a bucket");
                eprintln!(
                    "{key} {side} p{}: in [{lower}, {upper}] s, interpolated {:?}",
                    q * 100.0,
                    h.quantile(*q)
                );
                assert!(
                    lower <= *driver_q,
                    "{key} {side} p{}: bucket [{lower}, {upper}] s starts above the driver's {driver_q} s, which contains this call",
                    q * 100.0
                );
                if key != &middle_ext {
                    assert!(
                        upper >= BACKEND_WORK.as_secs_f64(),
                        "{key} {side} p{}: bucket [{lower}, {upper}] s ends below the backend's {} s of work, which this call contains",
                        q * 100.0,
                        BACKEND_WORK.as_secs_f64()
                    );
                }
            }
        }
    }

    // 2. Pod resources and TCP health: the Python probe reports the worker.

    // front → middle (Python client, Go server) and middle → back (Go
    // client, Python server) cross the two probes, with propagation off (no
    // bpffs in their pods): each side was named from the other probe's entry
    // in the exchange, which both probes found by its kernel name. The Go
    // client's side needs the connection its probe reads from net/http.
    let crossing = 2 * REQUESTS;
    for (language_probe, before) in [python_probe, go_probe].into_iter().zip(named_before) {
        let text = scrape(language_probe).await;
        let measured = named(&text, "named") - before;
        assert!(
            measured >= crossing as f64 && named(&text, "unavailable") == 0.0,
            "the {} probe named {measured} spans from the exchange during the measured requests (want at least {crossing}: each front → middle and middle → back request), unavailable {}",
            language_probe.0,
            named(&text, "unavailable")
        );
    }
    let pod = worker.pod.clone();
    let pod_label = [("k8s_pod_name", pod.as_str())];
    let samples =
        |text: &str| prom_value(text, "ferrotel_probe_views_samples_total", &[]).unwrap_or(0.0);
    let before = wait_for(
        "the worker's resources on the python probe",
        METRICS_TIMEOUT,
        || async {
            let text = scrape(python_probe).await;
            match prom_value(&text, "k8s_pod_cpu_time_seconds_total", &pod_label) {
                Some(_) => Ok(text),
                None => Err("no k8s_pod_cpu_time_seconds_total for the worker yet".to_owned()),
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let value = |text: &str, name: &str, extra: &[(&str, &str)]| {
        let mut labels = pod_label.to_vec();
        labels.extend_from_slice(extra);
        prom_value(text, name, &labels)
            .unwrap_or_else(|| panic!("{name} {labels:?} missing:\n{text}"))
    };
    let sink = tokio::net::TcpListener::bind("0.0.0.0:0")
        .await
        .expect("sink listener");
    let sink_port = sink.local_addr().expect("sink addr").port();
    let sink_task = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let (mut socket, _) = sink.accept().await.expect("the worker connects");
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        loop {
            match socket.read(&mut buf).await.expect("read") {
                0 => return total,
                n => total += n as u64,
            }
        }
    });
    // The host end of the node link: the pod reaches it through the node.
    let gateway = bed.with_real_node(|n| n.network().host_ip());
    let closed_port = ferrotel_e2e::free_port();
    let (cpu_ms, disk_bytes, net_bytes, refusals) = (2000, 32u64 << 20, 16u64 << 20, 3);
    // Two seconds of CPU time take much longer on a loaded 2-core machine.
    let (code, body) = stack::http_get_within(
        &worker.addr(),
        &format!(
            "/work?cpu_ms={cpu_ms}&disk_bytes={disk_bytes}&net_bytes={net_bytes}&sink={gateway}:{sink_port}&refused={gateway}:{closed_port}&refusals={refusals}"
        ),
        METRICS_TIMEOUT,
    )
    .await
    .expect("worker /work");
    assert_eq!(code, 200, "worker: {body}");
    let truth: serde_json::Value = serde_json::from_str(&body).expect("worker JSON");
    eprintln!("worker measured: {truth}");
    assert_eq!(
        sink_task.await.expect("sink"),
        net_bytes,
        "the sink got every byte"
    );
    assert_eq!(
        truth["refused"], refusals,
        "the closed port refused every connect"
    );
    // Two more readings: one fully after the work ended.
    let readings = samples(&scrape(python_probe).await);
    let after = wait_for(
        "two views readings after the work",
        METRICS_TIMEOUT,
        || async {
            let text = scrape(python_probe).await;
            if samples(&text) >= readings + 2.0 {
                Ok(text)
            } else {
                Err("waiting".to_owned())
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let within = |what: &str, measured: f64, truth: f64| {
        let ratio = measured / truth;
        eprintln!("{what}: probe {measured}, worker {truth} (ratio {ratio:.4})");
        assert!(
            (0.95..=1.05).contains(&ratio),
            "{what}: the probe saw {measured}, the worker measured {truth} (ratio {ratio:.4}, not within 5 %)"
        );
    };
    within(
        "CPU seconds",
        value(&after, "k8s_pod_cpu_time_seconds_total", &[])
            - value(&before, "k8s_pod_cpu_time_seconds_total", &[]),
        truth["cpu_seconds"].as_f64().expect("cpu_seconds"),
    );
    let write = [("disk_io_direction", "write")];
    within(
        "disk bytes written",
        value(&after, "k8s_pod_disk_io_bytes_total", &write)
            - value(&before, "k8s_pod_disk_io_bytes_total", &write),
        disk_bytes as f64,
    );
    let transmit = [("network_io_direction", "transmit")];
    within(
        "network bytes sent",
        value(&after, "k8s_pod_network_io_bytes_total", &transmit)
            - value(&before, "k8s_pod_network_io_bytes_total", &transmit),
        net_bytes as f64,
    );
    let working_set = value(&after, "k8s_pod_memory_working_set_bytes", &[]);
    assert!(
        (1e6..1e9).contains(&working_set),
        "a Python process's working set, from the v1 memory controller: {working_set}"
    );
    let gateway_text = gateway.to_string();
    assert_eq!(
        value(
            &after,
            "obi_stat_tcp_failed_connections_total",
            &[("server", gateway_text.as_str())]
        ),
        f64::from(refusals),
        "each refused connect is one failed connection, to the peer named by its address"
    );
    let node_memory = prom_value(
        &scrape(go_probe).await,
        "k8s_node_memory_available_bytes",
        &[],
    );
    assert!(
        node_memory.is_some_and(|m| m > 0.0),
        "the Go probe (the Instrumentation's first language) reports node memory"
    );
    assert!(
        prom_value(&after, "k8s_node_memory_available_bytes", &[]).is_none(),
        "and only it"
    );
    // The same numbers reach the collector over OTLP.
    wait_for(
        "the worker's CPU time over OTLP",
        METRICS_TIMEOUT,
        || async {
            let points = collector.metrics().map_err(|e| e.to_string())?;
            points
                .iter()
                .find(|p| {
                    p.name == "k8s.pod.cpu.time"
                        && p.resource.get("k8s.pod.name").and_then(|v| v.as_str())
                            == Some(pod.as_str())
                })
                .map(|_| ())
                .ok_or_else(|| "no k8s.pod.cpu.time for the worker yet".to_owned())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}
