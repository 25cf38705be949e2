//! Per-pod resources (CPU, memory, disk, network) and node memory, under the
//! OpenTelemetry names the kubeletstats receiver uses where it has one:
//!
//! | OTLP name (unit) | Kind | Attributes | Prometheus |
//! |---|---|---|---|
//! | `k8s.pod.cpu.time` (s) | counter | | `k8s_pod_cpu_time_seconds_total` |
//! | `k8s.pod.memory.usage` (By) | gauge | | `k8s_pod_memory_usage_bytes` |
//! | `k8s.pod.memory.working_set` (By) | gauge | | `k8s_pod_memory_working_set_bytes` |
//! | `k8s.pod.memory.rss` (By) | gauge | | `k8s_pod_memory_rss_bytes` |
//! | `k8s.pod.disk.io` (By) | counter | `disk.io.direction` = `read`/`write` | `k8s_pod_disk_io_bytes_total` |
//! | `k8s.pod.network.io` (By) | counter | `network.io.direction` = `receive`/`transmit` | `k8s_pod_network_io_bytes_total` |
//! | `k8s.pod.network.packets` ({packet}) | counter | same | `k8s_pod_network_packets_total` |
//! | `k8s.node.memory.available` / `.usage` / `.working_set` (By) | gauge | | `k8s_node_memory_*_bytes` |
//!
//! The resource of a pod's series is the pod (`k8s.pod.uid`, `k8s.pod.name`,
//! `k8s.namespace.name`, `k8s.node.name`, its workload and `service.name`);
//! of node memory, the node. Counters start when the probe first saw the
//! pod (network: when it started counting it). kubeletstats has no per-pod
//! disk bytes (`k8s.pod.disk.io` follows `container.disk.io`) nor packets.
//!
//! Values come from the sampler ([`super::sampler`]), which reads the
//! cgroup files ([`cgroup`]), `/proc/<pid>/io` ([`procio`]), the pod network
//! program set ([`super::podnet`]) and `/proc/meminfo` every
//! `views.podResources.intervalMillis`; both exports show the last reading.

pub mod cgroup;
pub mod procio;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, metric, number_data_point,
};
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use crate::telemetry::metrics::{
    MetricProducer, counter_metric, int_point, now_unix_nanos, prometheus_label,
    prometheus_resource_labels, resource_metrics,
};
use crate::telemetry::semconv::string_kv;
use ferrotel_probe_ebpf::views::NetCounters;

/// The last reading of one pod.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodSnapshot {
    /// The pod's resource attributes.
    pub attributes: BTreeMap<String, String>,
    pub start_unix_nanos: u64,
    pub cpu_seconds: Option<f64>,
    pub memory_usage: Option<u64>,
    pub memory_working_set: Option<u64>,
    pub memory_rss: Option<u64>,
    /// `(read, written)` bytes.
    pub disk: Option<(u64, u64)>,
    pub network: Option<NetCounters>,
    pub network_start_unix_nanos: u64,
}

/// Node memory from `/proc/meminfo`, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeMemory {
    pub total: u64,
    pub available: u64,
    /// Total minus free.
    pub usage: u64,
    /// Usage minus inactive file pages (the kubelet's working set).
    pub working_set: u64,
}

impl NodeMemory {
    /// Parses `/proc/meminfo` (values in kB).
    pub fn parse(text: &str) -> Option<Self> {
        let kb = |key: &str| -> Option<u64> {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .map(|v| v * 1024)
        };
        let total = kb("MemTotal")?;
        let free = kb("MemFree")?;
        let usage = total.saturating_sub(free);
        Some(Self {
            total,
            available: kb("MemAvailable").unwrap_or(free),
            usage,
            working_set: usage.saturating_sub(kb("Inactive(file)").unwrap_or(0)),
        })
    }
}

#[derive(Debug, Default)]
struct State {
    pods: BTreeMap<String, PodSnapshot>,
    node: Option<(BTreeMap<String, String>, NodeMemory)>,
}

/// Pod resources and node memory, as last sampled. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct PodResources {
    state: Arc<Mutex<State>>,
}

fn gauge(name: &str, description: &str, unit: &str, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.to_owned(),
        description: description.to_owned(),
        unit: unit.to_owned(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: points,
        })),
        ..Default::default()
    }
}

impl PodResources {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the pod readings (pods not listed are gone).
    pub fn set_pods(&self, pods: BTreeMap<String, PodSnapshot>) {
        self.state.lock().expect("resources lock").pods = pods;
    }

    pub fn set_node(&self, attributes: BTreeMap<String, String>, memory: NodeMemory) {
        self.state.lock().expect("resources lock").node = Some((attributes, memory));
    }

    /// The last reading of pod `uid` (tests, summaries).
    pub fn pod(&self, uid: &str) -> Option<PodSnapshot> {
        self.state
            .lock()
            .expect("resources lock")
            .pods
            .get(uid)
            .cloned()
    }

    pub fn pods(&self) -> BTreeMap<String, PodSnapshot> {
        self.state.lock().expect("resources lock").pods.clone()
    }
}

impl MetricProducer for PodResources {
    fn resource_metrics(&self) -> Vec<ResourceMetrics> {
        let now = now_unix_nanos();
        let state = self.state.lock().expect("resources lock");
        let mut out = Vec::new();
        for pod in state.pods.values() {
            let start = pod.start_unix_nanos;
            let mut metrics = Vec::new();
            if let Some(cpu) = pod.cpu_seconds {
                metrics.push(counter_metric(
                    "k8s.pod.cpu.time",
                    "Total CPU time of the pod's processes.",
                    "s",
                    vec![NumberDataPoint {
                        start_time_unix_nano: start,
                        time_unix_nano: now,
                        value: Some(number_data_point::Value::AsDouble(cpu)),
                        ..Default::default()
                    }],
                ));
            }
            for (name, description, value) in [
                (
                    "k8s.pod.memory.usage",
                    "Memory in use, page cache included.",
                    pod.memory_usage,
                ),
                (
                    "k8s.pod.memory.working_set",
                    "Memory in use minus inactive file pages.",
                    pod.memory_working_set,
                ),
                (
                    "k8s.pod.memory.rss",
                    "Anonymous (resident, non-file) memory.",
                    pod.memory_rss,
                ),
            ] {
                if let Some(value) = value {
                    metrics.push(gauge(
                        name,
                        description,
                        "By",
                        vec![int_point(value, 0, now, vec![])],
                    ));
                }
            }
            if let Some((read, written)) = pod.disk {
                let dir = |d: &str| vec![string_kv("disk.io.direction", d)];
                metrics.push(counter_metric(
                    "k8s.pod.disk.io",
                    "Bytes read from and written to block devices.",
                    "By",
                    vec![
                        int_point(read, start, now, dir("read")),
                        int_point(written, start, now, dir("write")),
                    ],
                ));
            }
            if let Some(net) = pod.network {
                let start = pod.network_start_unix_nanos;
                let dir = |d: &str| vec![string_kv("network.io.direction", d)];
                metrics.push(counter_metric(
                    "k8s.pod.network.io",
                    "Bytes through the pod's sockets (IP packets).",
                    "By",
                    vec![
                        int_point(net.rx_bytes, start, now, dir("receive")),
                        int_point(net.tx_bytes, start, now, dir("transmit")),
                    ],
                ));
                metrics.push(counter_metric(
                    "k8s.pod.network.packets",
                    "Packets through the pod's sockets.",
                    "{packet}",
                    vec![
                        int_point(net.rx_packets, start, now, dir("receive")),
                        int_point(net.tx_packets, start, now, dir("transmit")),
                    ],
                ));
            }
            if !metrics.is_empty() {
                out.push(resource_metrics(&pod.attributes, metrics));
            }
        }
        if let Some((attributes, memory)) = &state.node {
            let point = |v| vec![int_point(v, 0, now, vec![])];
            out.push(resource_metrics(
                attributes,
                vec![
                    gauge(
                        "k8s.node.memory.available",
                        "Memory available for new work.",
                        "By",
                        point(memory.available),
                    ),
                    gauge(
                        "k8s.node.memory.usage",
                        "Memory in use (total minus free).",
                        "By",
                        point(memory.usage),
                    ),
                    gauge(
                        "k8s.node.memory.working_set",
                        "Memory in use minus inactive file pages.",
                        "By",
                        point(memory.working_set),
                    ),
                ],
            ));
        }
        out
    }
}

type Labels = Vec<(String, String)>;

fn with(labels: &Labels, key: &str, value: &str) -> Labels {
    let mut out = labels.clone();
    out.push((key.to_owned(), value.to_owned()));
    out
}

impl prometheus_client::collector::Collector for PodResources {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let (pods, node) = {
            let state = self.state.lock().expect("resources lock");
            (
                state
                    .pods
                    .values()
                    .map(|p| (prometheus_resource_labels(&p.attributes), p.clone()))
                    .collect::<Vec<_>>(),
                state.node.clone(),
            )
        };
        {
            let mut family = encoder.encode_descriptor(
                "k8s_pod_cpu_time",
                "Total CPU time of the pod's processes.",
                Some(&Unit::Seconds),
                MetricType::Counter,
            )?;
            for (labels, pod) in &pods {
                if let Some(cpu) = pod.cpu_seconds {
                    family
                        .encode_family(labels)?
                        .encode_counter::<NoLabelSet, f64, u64>(&cpu, None)?;
                }
            }
        }
        for (name, help, pick) in [
            (
                "k8s_pod_memory_usage",
                "Memory in use, page cache included.",
                (|p: &PodSnapshot| p.memory_usage) as fn(&PodSnapshot) -> Option<u64>,
            ),
            (
                "k8s_pod_memory_working_set",
                "Memory in use minus inactive file pages.",
                |p| p.memory_working_set,
            ),
            (
                "k8s_pod_memory_rss",
                "Anonymous (resident, non-file) memory.",
                |p| p.memory_rss,
            ),
        ] {
            let mut family =
                encoder.encode_descriptor(name, help, Some(&Unit::Bytes), MetricType::Gauge)?;
            for (labels, pod) in &pods {
                if let Some(v) = pick(pod) {
                    family.encode_family(labels)?.encode_gauge(&(v as i64))?;
                }
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "k8s_pod_disk_io",
                "Bytes read from and written to block devices.",
                Some(&Unit::Bytes),
                MetricType::Counter,
            )?;
            for (labels, pod) in &pods {
                if let Some((read, written)) = pod.disk {
                    for (direction, value) in [("read", read), ("write", written)] {
                        family
                            .encode_family(&with(labels, "disk_io_direction", direction))?
                            .encode_counter::<NoLabelSet, u64, u64>(&value, None)?;
                    }
                }
            }
        }
        for (name, help, unit, bytes) in [
            (
                "k8s_pod_network_io",
                "Bytes through the pod's sockets (IP packets).",
                Some(Unit::Bytes),
                true,
            ),
            (
                "k8s_pod_network_packets",
                "Packets through the pod's sockets.",
                None,
                false,
            ),
        ] {
            let mut family =
                encoder.encode_descriptor(name, help, unit.as_ref(), MetricType::Counter)?;
            for (labels, pod) in &pods {
                if let Some(net) = pod.network {
                    let (rx, tx) = if bytes {
                        (net.rx_bytes, net.tx_bytes)
                    } else {
                        (net.rx_packets, net.tx_packets)
                    };
                    for (direction, value) in [("receive", rx), ("transmit", tx)] {
                        family
                            .encode_family(&with(labels, "network_io_direction", direction))?
                            .encode_counter::<NoLabelSet, u64, u64>(&value, None)?;
                    }
                }
            }
        }
        if let Some((attributes, memory)) = node {
            let labels: Labels = attributes
                .get("k8s.node.name")
                .map(|n| vec![(prometheus_label("k8s.node.name"), n.clone())])
                .unwrap_or_default();
            for (name, help, value) in [
                (
                    "k8s_node_memory_available",
                    "Memory available for new work.",
                    memory.available,
                ),
                (
                    "k8s_node_memory_usage",
                    "Memory in use (total minus free).",
                    memory.usage,
                ),
                (
                    "k8s_node_memory_working_set",
                    "Memory in use minus inactive file pages.",
                    memory.working_set,
                ),
            ] {
                encoder
                    .encode_descriptor(name, help, Some(&Unit::Bytes), MetricType::Gauge)?
                    .encode_family(&labels)?
                    .encode_gauge(&(value as i64))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_gives_node_memory_in_bytes() {
        let text = "MemTotal:       24000000 kB\nMemFree:        18000000 kB\nMemAvailable:   22000000 kB\nActive(file):    100 kB\nInactive(file):  1000000 kB\n";
        let m = NodeMemory::parse(text).expect("parses");
        assert_eq!(m.total, 24_000_000 * 1024);
        assert_eq!(m.available, 22_000_000 * 1024);
        assert_eq!(m.usage, 6_000_000 * 1024);
        assert_eq!(m.working_set, 5_000_000 * 1024);
    }

    fn pod() -> PodSnapshot {
        PodSnapshot {
            attributes: [
                ("k8s.pod.name".to_string(), "shop-1".to_string()),
                ("k8s.namespace.name".to_string(), "shop".to_string()),
            ]
            .into(),
            start_unix_nanos: 1,
            cpu_seconds: Some(1.5),
            memory_usage: Some(100),
            memory_working_set: Some(80),
            memory_rss: Some(60),
            disk: Some((10, 20)),
            network: Some(NetCounters {
                rx_bytes: 1000,
                rx_packets: 3,
                tx_bytes: 2000,
                tx_packets: 4,
            }),
            network_start_unix_nanos: 2,
        }
    }

    #[test]
    fn prometheus_names_carry_units_and_directions() {
        let resources = PodResources::new();
        resources.set_pods([("uid".to_string(), pod())].into());
        resources.set_node(
            [("k8s.node.name".to_string(), "node-a".to_string())].into(),
            NodeMemory {
                total: 10,
                available: 7,
                usage: 3,
                working_set: 2,
            },
        );
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(resources));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for expected in [
            r#"k8s_pod_cpu_time_seconds_total{k8s_namespace_name="shop",k8s_pod_name="shop-1"} 1.5"#,
            r#"k8s_pod_memory_working_set_bytes{k8s_namespace_name="shop",k8s_pod_name="shop-1"} 80"#,
            r#"k8s_pod_disk_io_bytes_total{k8s_namespace_name="shop",k8s_pod_name="shop-1",disk_io_direction="write"} 20"#,
            r#"k8s_pod_network_io_bytes_total{k8s_namespace_name="shop",k8s_pod_name="shop-1",network_io_direction="transmit"} 2000"#,
            r#"k8s_pod_network_packets_total{k8s_namespace_name="shop",k8s_pod_name="shop-1",network_io_direction="receive"} 3"#,
            r#"k8s_node_memory_available_bytes{k8s_node_name="node-a"} 7"#,
        ] {
            assert!(text.contains(expected), "missing {expected} in:\n{text}");
        }
    }

    #[test]
    fn otlp_has_one_resource_per_pod_and_one_for_the_node() {
        let resources = PodResources::new();
        resources.set_pods([("uid".to_string(), pod())].into());
        resources.set_node(BTreeMap::new(), NodeMemory::default());
        let rms = resources.resource_metrics();
        assert_eq!(rms.len(), 2);
        let names = crate::telemetry::metrics::metric_names(&rms[0]);
        assert_eq!(
            names,
            [
                "k8s.pod.cpu.time",
                "k8s.pod.memory.usage",
                "k8s.pod.memory.working_set",
                "k8s.pod.memory.rss",
                "k8s.pod.disk.io",
                "k8s.pod.network.io",
                "k8s.pod.network.packets"
            ]
        );
        let net = &rms[0].scope_metrics[0].metrics[5];
        let Some(metric::Data::Sum(sum)) = &net.data else {
            panic!("network.io is a sum")
        };
        assert!(sum.is_monotonic);
        assert_eq!(
            sum.data_points[0].start_time_unix_nano, 2,
            "counted since the probe started counting"
        );
    }

    /// `kubectl ferrotel edges` and `resources` read these families and
    /// labels from `/metrics` (`ferrotel_api::probe_endpoints`): renaming
    /// one here breaks them.
    #[test]
    fn the_exposition_carries_every_view_family_and_label_the_cli_reads() {
        use crate::telemetry::servicegraph::{
            ConnectionType, Edge, EdgeObservation, GraphNode, ServiceGraphMetrics,
        };
        use ferrotel_api::probe_endpoints::{labels as l, metrics as m};

        let resources = PodResources::new();
        let mut shop = pod();
        shop.attributes
            .insert("service.name".to_string(), "shop".to_string());
        resources.set_pods([("uid".to_string(), shop)].into());
        let graph = ServiceGraphMetrics::new(10);
        let resource = std::sync::Arc::new(crate::telemetry::resource::ProcessResource {
            attributes: [("service.name".to_owned(), "front".to_owned())].into(),
        });
        let ns = |n: &str| Some(std::sync::Arc::<str>::from(n));
        graph.observe(
            &resource,
            &EdgeObservation {
                edge: Edge {
                    client: GraphNode::new("front", ns("shop")),
                    server: GraphNode::new("db", ns("data")),
                    connection_type: ConnectionType::VirtualNode,
                },
                counts_request: true,
                failed: true,
                client_seconds: Some(0.01),
                server_seconds: Some(0.009),
            },
        );
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(resources));
        registry.register_collector(Box::new(graph));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");

        let line = |family: &str| crate::telemetry::metrics::exposition_line(&text, family);
        for family in [
            m::SERVICE_GRAPH_REQUESTS.to_owned(),
            m::SERVICE_GRAPH_FAILED.to_owned(),
            format!("{}_bucket", m::SERVICE_GRAPH_SERVER_DURATION),
            format!("{}_bucket", m::SERVICE_GRAPH_CLIENT_DURATION),
        ] {
            let series = line(&family);
            for label in [
                l::CLIENT,
                l::SERVER,
                l::CONNECTION_TYPE,
                l::CLIENT_NAMESPACE,
                l::SERVER_NAMESPACE,
            ] {
                assert!(
                    series.contains(&format!("{label}=\"")),
                    "{label} in {series}"
                );
            }
        }
        for family in [
            m::POD_CPU_TIME,
            m::POD_MEMORY_WORKING_SET,
            m::POD_MEMORY_RSS,
            m::POD_NETWORK_IO,
        ] {
            let series = line(family);
            for label in [l::NAMESPACE, l::POD, l::SERVICE] {
                assert!(
                    series.contains(&format!("{label}=\"")),
                    "{label} in {series}"
                );
            }
        }
        assert!(line(m::POD_NETWORK_IO).contains(&format!("{}=\"", l::NETWORK_DIRECTION)));
    }
}
