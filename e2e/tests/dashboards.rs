//! The Grafana dashboards and Prometheus alerts shipped in the chart:
//! every dashboard is valid JSON with the panels the docs promise, every
//! PromQL expression (panels, template variables, alert rules) parses with a
//! real PromQL parser, and every metric it names is one that something we
//! run actually exports — checked against live scrapes of our collector build
//! (internal telemetry and the prometheus exporter fed by hostmetrics) and of
//! the probe (RED, service graph, pod resources, TCP health), not against a
//! list typed by hand. The operator's metric names are checked against its
//! live /metrics by e2e/tests/chart.rs.

mod packaging;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ferrotel_e2e::{Collector, free_port, tool_path, wait_for};
use packaging::*;
use promql_parser::parser::{self, Expr};
use serde_json::Value;

/// Where an expression came from, for failure messages.
#[derive(Debug, Clone)]
struct Query {
    origin: String,
    expr: String,
}

fn dashboards() -> Vec<(String, Value)> {
    let dir = chart_dir().join("dashboards");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("dashboards/ exists") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let json: Value = serde_json::from_str(&read(&path))
                .unwrap_or_else(|e| panic!("{name} is not valid JSON: {e}"));
            out.push((name, json));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn alert_rules() -> Vec<Value> {
    let rules: Value = serde_yaml::from_str(&read(&chart_dir().join("alerts/ferrotel.rules.yaml")))
        .expect("rules parse");
    rules["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// Grafana's variables become what Grafana would send: `$__rate_interval`
/// and friends a duration, `$var` / `${var}` (used in regex matchers) `.*`.
fn expand_grafana_variables(expr: &str) -> String {
    let builtins = regex::Regex::new(r"\$__(rate_interval|interval|range)\b").unwrap();
    let vars = regex::Regex::new(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?").unwrap();
    vars.replace_all(&builtins.replace_all(expr, "5m"), ".*")
        .into_owned()
}

fn queries() -> Vec<Query> {
    let mut out = Vec::new();
    for (name, dash) in dashboards() {
        for panel in dash["panels"].as_array().expect("panels") {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{name}: a target without expr"));
                out.push(Query {
                    origin: format!("{name} panel {:?}", panel["title"]),
                    expr: expand_grafana_variables(expr),
                });
            }
        }
        for var in dash["templating"]["list"].as_array().into_iter().flatten() {
            if var["type"] == "query" {
                let q = var["query"]["query"]
                    .as_str()
                    .or(var["query"].as_str())
                    .expect("variable query");
                // label_values(<selector>, label): the selector is PromQL.
                let inner = q
                    .strip_prefix("label_values(")
                    .and_then(|s| s.rsplit_once(','))
                    .map(|(sel, _)| sel.to_string())
                    .unwrap_or_else(|| {
                        panic!(
                            "{name}: variable {} uses {q}; only label_values() is supported",
                            var["name"]
                        )
                    });
                out.push(Query {
                    origin: format!("{name} variable {}", var["name"]),
                    expr: expand_grafana_variables(&inner),
                });
            }
        }
    }
    for rule in alert_rules() {
        let alert = rule["alert"]
            .as_str()
            .or(rule["record"].as_str())
            .expect("alert or record")
            .to_string();
        out.push(Query {
            origin: format!("alert {alert}"),
            expr: rule["expr"].as_str().expect("expr").to_string(),
        });
    }
    out
}

fn metric_names(expr: &Expr, out: &mut BTreeSet<String>) {
    match expr {
        Expr::VectorSelector(vs) => {
            let name = vs.name.clone().or_else(|| {
                vs.matchers
                    .matchers
                    .iter()
                    .find(|m| m.name == "__name__")
                    .map(|m| m.value.clone())
            });
            out.insert(name.expect("every selector names a metric"));
        }
        Expr::MatrixSelector(ms) => metric_names(&Expr::VectorSelector(ms.vs.clone()), out),
        Expr::Aggregate(a) => {
            metric_names(&a.expr, out);
            if let Some(p) = &a.param {
                metric_names(p, out);
            }
        }
        Expr::Unary(u) => metric_names(&u.expr, out),
        Expr::Binary(b) => {
            metric_names(&b.lhs, out);
            metric_names(&b.rhs, out);
        }
        Expr::Paren(p) => metric_names(&p.expr, out),
        Expr::Subquery(s) => metric_names(&s.expr, out),
        Expr::Call(c) => c.args.args.iter().for_each(|a| metric_names(a, out)),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

/// Metric name -> the queries using it.
fn used_metrics() -> BTreeMap<String, Vec<String>> {
    let mut used: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for q in queries() {
        let ast = parser::parse(&q.expr)
            .unwrap_or_else(|e| panic!("{}: PromQL does not parse: {e}\n{}", q.origin, q.expr));
        let mut names = BTreeSet::new();
        metric_names(&ast, &mut names);
        for n in names {
            used.entry(n).or_default().push(q.origin.clone());
        }
    }
    used
}

#[test]
fn dashboards_are_grafana_json_with_the_documented_panels() {
    let dash = dashboards();
    let names: Vec<&str> = dash.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "ferrotel-collector.json",
            "ferrotel-pod-resources.json",
            "ferrotel-probe.json",
            "ferrotel-service-map.json",
            "ferrotel-service-red.json"
        ]
    );
    let mut uids = BTreeSet::new();
    for (name, d) in &dash {
        assert!(
            d["uid"].is_string() && uids.insert(d["uid"].as_str().unwrap().to_string()),
            "{name}: unique uid"
        );
        assert!(
            d["title"]
                .as_str()
                .is_some_and(|t| t.starts_with("Ferrotel / ")),
            "{name}: title"
        );
        let mut ids = BTreeSet::new();
        for p in d["panels"].as_array().unwrap() {
            assert!(
                ids.insert(p["id"].as_i64().expect("panel id")),
                "{name}: duplicate panel id {}",
                p["id"]
            );
            if p["type"] != "row" {
                assert!(
                    p["targets"].as_array().is_some_and(|t| !t.is_empty()),
                    "{name}: panel {} has no query",
                    p["title"]
                );
                assert_eq!(
                    p["datasource"]["uid"], "${datasource}",
                    "{name}: panel {} must use the datasource variable",
                    p["title"]
                );
            }
        }
    }
    let all_titles: String = dash
        .iter()
        .flat_map(|(_, d)| {
            d["panels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["title"].to_string())
        })
        .collect();
    for promised in [
        "Request rate",
        "Error rate",
        "p50 / p90 / p99",
        "by route",
        "accepted / refused",
        "queue",
        "Ring-buffer drops",
        "Attached processes",
        "Export requests",
        "Service map",
        "Edges: req/s, error share, p50 / p90 / p99",
        "CPU by pod",
        "Memory working set by pod",
        "Disk bytes read / written",
        "Network bytes received / sent",
        "Retransmits",
        "TCP RTT",
        "Node memory",
    ] {
        assert!(
            all_titles.contains(promised),
            "no dashboard panel about {promised:?} (docs/observability.md promises one)"
        );
    }
}

/// The service map's Node Graph panel gets what Grafana's Node Graph
/// reads: one edges frame (`id`, `source`, `target`, `mainstat`,
/// `secondarystat`, `detail__*`) joined from the edge queries, and one nodes
/// frame (`id`, `mainstat`) from its own query.
#[test]
fn the_service_map_feeds_the_node_graph_its_edges_and_nodes_frames() {
    let (_, map) = dashboards()
        .into_iter()
        .find(|(name, _)| name == "ferrotel-service-map.json")
        .expect("the service map dashboard");
    let panel = map["panels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["type"] == "nodeGraph")
        .expect("a Node Graph panel");
    let targets = panel["targets"].as_array().unwrap();
    let refs: Vec<&str> = targets
        .iter()
        .map(|t| t["refId"].as_str().unwrap())
        .collect();
    assert_eq!(refs, ["A", "B", "C", "D", "E", "F"]);
    for t in targets {
        assert_eq!(
            t["format"], "table",
            "{}: one row per edge or node",
            t["refId"]
        );
        assert_eq!(t["instant"], true, "{}: over the time range", t["refId"]);
    }
    let outer_by = |expr: &str| -> BTreeSet<String> {
        let ast = parser::parse(&expand_grafana_variables(expr)).expect("parses");
        let Expr::Aggregate(a) = ast else {
            panic!("edge queries aggregate by their frame's fields: {expr}")
        };
        match a.modifier {
            Some(promql_parser::parser::LabelModifier::Include(labels)) => {
                labels.labels.into_iter().collect()
            }
            other => panic!("{expr}: aggregated with {other:?}"),
        }
    };
    let fields = |names: &[&str]| names.iter().map(|n| n.to_string()).collect();
    assert_eq!(
        outer_by(targets[0]["expr"].as_str().unwrap()),
        fields(&["id", "source", "target"])
    );
    for t in &targets[1..5] {
        assert_eq!(outer_by(t["expr"].as_str().unwrap()), fields(&["id"]));
    }
    let transformations = panel["transformations"].as_array().unwrap();
    let join = &transformations[0];
    assert_eq!(join["id"], "joinByField");
    assert_eq!(join["options"]["byField"], "id");
    assert_eq!(
        join["filter"]["options"], "/^[A-E]$/",
        "the nodes query stays a frame of its own"
    );
    let renames = &transformations[1]["options"]["renameByName"];
    for (from, to) in [
        ("Value #A", "mainstat"),
        ("Value #B", "secondarystat"),
        ("Value #C", "detail__p50"),
        ("Value #D", "detail__p90"),
        ("Value #E", "detail__p99"),
        ("Value #F", "mainstat"),
    ] {
        assert_eq!(renames[from], to, "{from}");
    }
    for (query, quantile) in [(2, "0.5"), (3, "0.9"), (4, "0.99")] {
        let expr = targets[query]["expr"].as_str().unwrap();
        assert!(
            expr.contains(&format!("histogram_quantile({quantile},"))
                && expr.contains("traces_service_graph_request_server_seconds_bucket")
                && expr.contains("traces_service_graph_request_client_seconds_bucket"),
            "{}: p{quantile} from the server's histogram, the client's for a virtual node: {expr}",
            targets[query]["refId"]
        );
    }
}

#[test]
fn every_promql_expression_parses() {
    let queries = queries();
    assert!(
        queries.len() >= 30,
        "only {} expressions found",
        queries.len()
    );
    for q in &queries {
        parser::parse(&q.expr)
            .unwrap_or_else(|e| panic!("{}: PromQL does not parse: {e}\n{}", q.origin, q.expr));
    }
    let alerts: BTreeSet<String> = alert_rules()
        .iter()
        .map(|r| r["alert"].as_str().unwrap().to_string())
        .collect();
    for promised in [
        "FerrotelServiceHighErrorRate",
        "FerrotelServiceLatencySLOBurnFast",
        "FerrotelProbeRingBufferDrops",
        "FerrotelCollectorRefusingSpans",
        "FerrotelNodeHighCPU",
        "FerrotelNodeMemoryPressure",
        "FerrotelTargetDown",
    ] {
        assert!(alerts.contains(promised), "alert {promised} missing");
    }
}

/// Metric names in a Prometheus text exposition (samples and # TYPE lines).
fn exposed_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let name = if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let family = parts.next().unwrap_or_default().to_string();
            // A histogram family's samples are _bucket/_sum/_count; a counter's _total.
            match parts.next() {
                Some("histogram") => {
                    for s in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{family}{s}"));
                    }
                }
                Some("counter") if !family.ends_with("_total") => {
                    names.insert(format!("{family}_total"));
                }
                _ => {}
            }
            family
        } else if line.starts_with('#') || line.trim().is_empty() {
            continue;
        } else {
            line.split(['{', ' '])
                .next()
                .unwrap_or_default()
                .to_string()
        };
        names.insert(name);
    }
    names
}

async fn scrape(url: &str) -> Result<String, String> {
    let rest = url.strip_prefix("http://").ok_or("http only")?;
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    match ferrotel_e2e::stack::http_get(host, &path).await {
        Ok((200, body)) => Ok(body),
        Ok((code, _)) => Err(format!("GET {url} answered {code}")),
        Err(e) => Err(format!("GET {url}: {e}")),
    }
}

fn telemetrygen(signal: &str, endpoint: &str) -> std::process::Output {
    let mut cmd = std::process::Command::new(tool("telemetrygen"));
    cmd.arg(signal)
        .args(["--otlp-insecure", "--otlp-endpoint", endpoint])
        .args([format!("--{signal}"), "20".to_string()]);
    run_raw(&mut cmd, None)
}

/// Runs our collector build with traffic through a working pipeline (so the
/// accepted/sent counters exist), a pipeline whose exporter cannot connect
/// (refused/send-failed counters), hostmetrics into the prometheus exporter
/// (node CPU and memory), and scrapes both its internal telemetry and the
/// exporter.
async fn collector_metric_names() -> BTreeSet<String> {
    let (good, sink, broken, telemetry) = (free_port(), free_port(), free_port(), free_port());
    let host = free_port();
    // A port nobody listens on: the exporter fails every send.
    let dead = free_port();
    let config = format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{good}"}}
  otlp/sink:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{sink}"}}
  otlp/broken:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{broken}"}}
  hostmetrics:
    collection_interval: 1s
    scrapers: {{cpu: {{}}, memory: {{}}}}
exporters:
  prometheus:
    endpoint: "127.0.0.1:{host}"
  otlp/forward:
    endpoint: "127.0.0.1:{sink}"
    tls: {{insecure: true}}
  otlp/dead:
    endpoint: "127.0.0.1:{dead}"
    tls: {{insecure: true}}
    timeout: 1s
    retry_on_failure: {{enabled: false}}
    sending_queue: {{enabled: false}}
  nop: {{}}
service:
  telemetry:
    metrics:
      level: detailed
      readers:
        - pull:
            exporter:
              prometheus: {{host: "127.0.0.1", port: {telemetry}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [otlp/forward]}}
    metrics: {{receivers: [otlp], exporters: [otlp/forward]}}
    logs: {{receivers: [otlp], exporters: [otlp/forward]}}
    traces/sink: {{receivers: [otlp/sink], exporters: [nop]}}
    metrics/sink: {{receivers: [otlp/sink], exporters: [nop]}}
    logs/sink: {{receivers: [otlp/sink], exporters: [nop]}}
    traces/broken: {{receivers: [otlp/broken], exporters: [otlp/dead]}}
    metrics/broken: {{receivers: [otlp/broken], exporters: [otlp/dead]}}
    logs/broken: {{receivers: [otlp/broken], exporters: [otlp/dead]}}
    metrics/host: {{receivers: [hostmetrics], exporters: [prometheus]}}
"#
    );
    let collector = Collector::start(&config)
        .await
        .unwrap_or_else(|e| panic!("our collector build did not start: {e}"));
    for signal in ["traces", "metrics", "logs"] {
        let ok = telemetrygen(signal, &format!("127.0.0.1:{good}"));
        assert!(
            ok.status.success(),
            "telemetrygen {signal}: {}",
            String::from_utf8_lossy(&ok.stderr)
        );
        // Refused by the broken pipeline: telemetrygen reports the error; that is the point.
        let _refused = telemetrygen(signal, &format!("127.0.0.1:{broken}"));
    }
    let wanted = [
        "otelcol_receiver_accepted_spans_total",
        "otelcol_receiver_refused_log_records_total",
        "otelcol_exporter_sent_metric_points_total",
        "otelcol_exporter_send_failed_spans_total",
    ];
    let internal = wait_for(
        "the collector's internal metrics to show the traffic",
        Duration::from_secs(30),
        || async {
            let text = scrape(&format!("http://127.0.0.1:{telemetry}/metrics")).await?;
            let names = exposed_names(&text);
            match wanted.iter().find(|w| !names.contains(**w)) {
                None => Ok(names),
                Some(missing) => Err(format!("{missing} not exposed yet")),
            }
        },
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}\ncollector log:\n{}",
            ferrotel_e2e::process::tail(collector.log_path(), 30)
        )
    });
    // The node alerts' names, as this build's prometheus exporter writes
    // what its hostmetrics receiver reads.
    let node = ["system_cpu_time_seconds_total", "system_memory_usage_bytes"];
    let host = wait_for(
        "the prometheus exporter to show hostmetrics",
        Duration::from_secs(30),
        || async {
            let names = exposed_names(&scrape(&format!("http://127.0.0.1:{host}/metrics")).await?);
            match node.iter().find(|w| !names.contains(**w)) {
                None => Ok(names),
                Some(missing) => Err(format!("{missing} not exposed yet: {names:?}")),
            }
        },
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}\ncollector log:\n{}",
            ferrotel_e2e::process::tail(collector.log_path(), 30)
        )
    });
    drop(collector);
    internal.into_iter().chain(host).collect()
}

/// Names the probe serves on its /metrics, from a live scrape: the real
/// probe binary (root, real eBPF) instruments a Python HTTP server and a
/// Python client calling it, so the RED histograms (server and client) and
/// the service graph's edges exist next to the probe's health families and
/// the views' (pod resources, node memory, TCP health).
async fn probe_metric_names() -> BTreeSet<String> {
    assert_eq!(
        effective_uid(),
        0,
        "scraping the real probe needs root (it loads eBPF programs); run the tests as root (make test does)"
    );
    let work = tempfile::tempdir().unwrap();
    let (port, metrics) = (free_port(), free_port());
    let spawn = |name: &str, cmd: std::process::Command| {
        ferrotel_e2e::process::Process::spawn(name, cmd, &work.path().join(format!("{name}.log")))
            .unwrap_or_else(|e| panic!("start {name}: {e}"))
    };
    let mut server_cmd = std::process::Command::new("python3");
    server_cmd
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .current_dir(work.path());
    let _server = spawn("python-server", server_cmd);
    // The client waits for the probe to attach, then calls the server in a loop.
    let client_src = format!(
        "import time, urllib.request\ntime.sleep(1)\nfor _ in range(600):\n    try:\n        urllib.request.urlopen('http://127.0.0.1:{port}/', timeout=2).read()\n    except Exception:\n        pass\n    time.sleep(0.05)\n"
    );
    let mut client_cmd = std::process::Command::new("python3");
    client_cmd.args(["-c", &client_src]);
    let client = spawn("python-client", client_cmd);
    let binary = ferrotel_e2e::workspace_binary("ferrotel-probe").unwrap_or_else(|e| panic!("{e}"));
    let mut probe_cmd = std::process::Command::new(binary);
    probe_cmd
        .args([
            "--language",
            "python",
            "--open-port",
            &port.to_string(),
            "--pid",
            &client.pid().to_string(),
        ])
        .args(["--metrics-addr", &format!("127.0.0.1:{metrics}")])
        .env_remove("RUST_LOG");
    let mut probe = spawn("ferrotel-probe", probe_cmd);
    let probe_log = work.path().join("ferrotel-probe.log");
    // The views' families (service graph, pod resources, node memory, TCP
    // health) are described in every scrape; the service graph's edge
    // exists once a request was traced.
    let wanted = [
        "http_server_request_duration_seconds_count",
        "http_client_request_duration_seconds_count",
        "ferrotel_probe_events_received_total",
        "traces_service_graph_request_server_seconds_count",
        "k8s_pod_cpu_time_seconds_total",
        "obi_stat_tcp_retransmits_total",
    ];
    wait_for(
        "the probe's /metrics to show server and client RED metrics",
        Duration::from_secs(60),
        || {
            let alive = probe.check_running().map_err(|e| format!("fatal: {e}"));
            async move {
                alive?;
                let names =
                    exposed_names(&scrape(&format!("http://127.0.0.1:{metrics}/metrics")).await?);
                match wanted.iter().find(|w| !names.contains(**w)) {
                    None => Ok(names),
                    Some(missing) => Err(format!("{missing} not exposed yet")),
                }
            }
        },
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}\nprobe log:\n{}",
            ferrotel_e2e::process::tail(&probe_log, 30)
        )
    })
}

/// The probe's health families as its code registers them
/// (probe/src/health.rs): counters that nothing incremented yet are not in
/// a scrape (prometheus-client only writes families with samples), so the
/// registrations are read from the source: `r.register("<name>", "<help>",
/// m.<field>.clone())` with `<field>: ...Counter>` or `...Gauge>`.
fn probe_health_names_from_code() -> BTreeSet<String> {
    let source = read(&repo_path("probe/src/health.rs"));
    let prefix = regex::Regex::new(r#"sub_registry_with_prefix\("([a-z_]+)"\)"#).unwrap();
    let prefix = &prefix
        .captures(&source)
        .expect("health.rs registers under a prefix")[1];
    let register =
        regex::Regex::new(r#"(?s)r\.register\(\s*"([a-z_]+)",.*?m\.([a-z_]+)\.clone\(\)"#).unwrap();
    let mut names = BTreeSet::new();
    for cap in register.captures_iter(&source) {
        let field = regex::Regex::new(&format!(r"\b{}: ([^\n]+),\s*\n", &cap[2])).unwrap();
        let ty = field
            .captures(&source)
            .unwrap_or_else(|| panic!("field {} not found in health.rs", &cap[2]))[1]
            .to_string();
        let suffix = if ty.contains("Counter") { "_total" } else { "" };
        names.insert(format!("{prefix}_{}{suffix}", &cap[1]));
    }
    assert!(
        names.len() >= 8,
        "found only {names:?} in probe/src/health.rs"
    );
    names
}

fn effective_uid() -> u32 {
    // /proc/self/status: "Uid: real effective saved fs".
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|u| u.parse().ok())
        .expect("effective uid in /proc/self/status")
}

/// Metrics Prometheus itself synthesises for every scrape target.
const PROMETHEUS_SYNTHETIC: [&str; 1] = ["up"];

#[tokio::test(flavor = "multi_thread")]
async fn every_metric_the_dashboards_and_alerts_name_is_exported_by_ferrotel_or_the_collector() {
    assert!(
        tool_path("otelcol").is_file(),
        "otelcol missing; run `make tools`"
    );
    let used = used_metrics();
    let collector = collector_metric_names().await;
    let mut unknown = Vec::new();
    let scraped = probe_metric_names().await;
    let from_code = probe_health_names_from_code();
    // Every name the scrape shows must be one the code registers (the
    // code-derived list is right), and together they are what the probe serves.
    for name in scraped
        .iter()
        .filter(|n| n.starts_with("ferrotel_probe_") && n.ends_with("_total"))
    {
        assert!(
            from_code.contains(name),
            "probe serves {name}, which the health.rs reading missed: {from_code:?}"
        );
    }
    let probe: BTreeSet<String> = scraped.into_iter().chain(from_code).collect();
    for (name, origins) in &used {
        let known = if PROMETHEUS_SYNTHETIC.contains(&name.as_str()) {
            true
        } else if name.starts_with("otelcol_") || name.starts_with("system_") {
            collector.contains(name)
        } else if name.starts_with("ferrotel_operator_") {
            // Checked against the live operator in e2e/tests/chart.rs.
            true
        } else {
            probe.contains(name)
        };
        if !known {
            unknown.push(format!("{name} (used by {})", origins.join("; ")));
        }
    }
    assert!(
        unknown.is_empty(),
        "metrics named by dashboards/alerts that nothing exports:\n  {}\ncollector exports: {:?}",
        unknown.join("\n  "),
        collector
            .iter()
            .filter(|n| n.starts_with("otelcol_") || n.starts_with("system_"))
            .collect::<Vec<_>>()
    );
}
