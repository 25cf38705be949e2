//! TCP health per pod and per peer: retransmitted segments, connects that
//! failed, resets, and the smoothed RTT of closed connections, from the TCP
//! health program set (`probe-ebpf/src/c/tcphealth.bpf.c`, BTF tracepoints
//! only).
//!
//! | OTLP name (unit) | Kind | Prometheus |
//! |---|---|---|
//! | `obi.stat.tcp.retransmits` ({segment}) | counter | `obi_stat_tcp_retransmits_total` |
//! | `obi.stat.tcp.failed.connections` ({connection}) | counter | `obi_stat_tcp_failed_connections_total` |
//! | `obi.stat.tcp.resets` ({reset}, `network.io.direction`) | counter | `obi_stat_tcp_resets_total` |
//! | `obi.stat.tcp.rtt` (s) | histogram | `obi_stat_tcp_rtt_seconds_*` |
//!
//! The names are those of the OpenTelemetry eBPF instrumentation's network
//! statistics, so its dashboards work; `resets` is ours, in the same family.
//! The resource is the pod; the data-point attributes name the connection's
//! two ends like a service-graph edge (`client`, `server`,
//! `client_service_namespace`, `server_service_namespace`), with the pod on
//! the side the kernel saw it take at the handshake: a peer that connected
//! to the pod is its client, named through the peer index or `user`; a peer
//! the pod connected to is its server, named through the index or by
//! address. TCP health therefore lines up with the service graph's edges.
//!
//! The kernel keeps cumulative values per (cgroup, peer address, role) in an
//! LRU map; the probe adds each reading's increase to its own series, so an
//! entry evicted and re-created in the kernel never makes a counter go
//! backwards.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

use aya::maps::{HashMap as BpfHashMap, MapData};
use ferrotel_probe_ebpf::contract::{maps, tcphealth};
use ferrotel_probe_ebpf::views::{RTT_BUCKETS, RTT_FIRST_BOUND_US, TcpKey, TcpStats, tcp_role};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Histogram, HistogramDataPoint, Metric, ResourceMetrics, metric,
};
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use super::ViewsError;
use crate::ebpf::{self, Kernel};
use crate::telemetry::metrics::{
    MetricProducer, counter_metric, encode_histogram, int_point, now_unix_nanos,
    prometheus_resource_labels, resource_metrics,
};
use crate::telemetry::semconv::string_kv;
use crate::telemetry::servicegraph::{GraphNode, PeerLookup, UNKNOWN_CLIENT, canonical_ip};

const SET: &str = "tcphealth";

/// The RTT histogram's upper bounds in seconds (64 µs doubling), matching
/// the kernel's buckets.
pub fn rtt_bounds() -> Vec<f64> {
    (0..RTT_BUCKETS - 1)
        .map(|i| (RTT_FIRST_BOUND_US << i) as f64 / 1e6)
        .collect()
}

/// The loaded program set and its maps.
pub struct TcpProbe {
    // Owns the programs and their links: dropping it detaches them.
    _kernel: Kernel,
    watched: BpfHashMap<MapData, u64, u32>,
    peers: BpfHashMap<MapData, TcpKey, TcpStats>,
    watched_ids: BTreeSet<u64>,
}

impl std::fmt::Debug for TcpProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpProbe")
            .field("watched", &self.watched_ids.len())
            .finish_non_exhaustive()
    }
}

impl TcpProbe {
    /// Loads the set and attaches its BTF tracepoints (no tracefs needed).
    pub fn start() -> Result<Self, ViewsError> {
        // One parse of the kernel's BTF for the load and the attach.
        let btf = ebpf::BtfHold::new();
        let mut kernel = ebpf::load_maps_only(SET, ferrotel_probe_ebpf::TCPHEALTH)?;
        kernel.attach_btf_tracepoints(&tcphealth::BTF_TRACEPOINTS)?;
        drop(btf);
        let watched = kernel.take_map(maps::WATCHED_CGROUPS)?;
        let peers = kernel.take_map(maps::TCP_PEERS)?;
        Ok(Self {
            _kernel: kernel,
            watched,
            peers,
            watched_ids: BTreeSet::new(),
        })
    }

    /// Makes the watched cgroups exactly `ids`; returns how many could not
    /// be added (map full).
    pub fn watch(&mut self, ids: &BTreeSet<u64>) -> usize {
        for id in self
            .watched_ids
            .difference(ids)
            .copied()
            .collect::<Vec<_>>()
        {
            let _ = self.watched.remove(&id);
            self.watched_ids.remove(&id);
        }
        let mut refused = 0;
        for id in ids.difference(&self.watched_ids.clone()) {
            match self.watched.insert(id, &0, 0) {
                Ok(()) => {
                    self.watched_ids.insert(*id);
                }
                Err(_) => refused += 1,
            }
        }
        refused
    }

    /// Every (cgroup, peer, role) the kernel keeps, with its cumulative stats.
    pub fn read(&self) -> Vec<(TcpKey, TcpStats)> {
        self.peers.iter().filter_map(Result::ok).collect()
    }
}

/// The peer address of a kernel key.
pub fn peer_ip(key: &TcpKey) -> IpAddr {
    canonical_ip(IpAddr::V6(Ipv6Addr::from(key.peer)))
}

/// Cumulative TCP health of one (pod, edge).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TcpSeries {
    pub retransmits: u64,
    pub failed_connections: u64,
    pub resets_received: u64,
    pub resets_sent: u64,
    pub rtt_count: u64,
    pub rtt_sum_seconds: f64,
    pub rtt_buckets: [u64; RTT_BUCKETS],
    pub start_unix_nanos: u64,
}

impl TcpSeries {
    fn add(&mut self, d: &TcpStats) {
        self.retransmits += d.retransmits;
        self.failed_connections += d.failed_connects;
        self.resets_received += d.resets_received;
        self.resets_sent += d.resets_sent;
        self.rtt_count += d.rtt_count;
        self.rtt_sum_seconds += d.rtt_sum_us as f64 / 1e6;
        for (a, b) in self.rtt_buckets.iter_mut().zip(d.rtt_buckets) {
            *a += b;
        }
    }
}

/// The increase from `last` to `now`; a field that went down means the
/// kernel entry was evicted and re-created, and then all of `now` is new.
fn increase(last: Option<&TcpStats>, now: &TcpStats) -> TcpStats {
    let Some(last) = last else { return *now };
    let went_down = now.retransmits < last.retransmits
        || now.failed_connects < last.failed_connects
        || now.resets_received < last.resets_received
        || now.resets_sent < last.resets_sent
        || now.rtt_count < last.rtt_count;
    if went_down {
        return *now;
    }
    let mut d = TcpStats {
        retransmits: now.retransmits - last.retransmits,
        failed_connects: now.failed_connects - last.failed_connects,
        resets_received: now.resets_received - last.resets_received,
        resets_sent: now.resets_sent - last.resets_sent,
        rtt_count: now.rtt_count - last.rtt_count,
        rtt_sum_us: now.rtt_sum_us.saturating_sub(last.rtt_sum_us),
        ..TcpStats::default()
    };
    for i in 0..RTT_BUCKETS {
        d.rtt_buckets[i] = now.rtt_buckets[i].saturating_sub(last.rtt_buckets[i]);
    }
    d
}

/// A watched cgroup's pod, as the sampler knows it.
#[derive(Clone, Debug)]
pub struct CgroupOwner {
    pub pod_uid: String,
    /// The pod as a graph node (its `service.name` and namespace).
    pub node: GraphNode,
}

type EdgeKey = (GraphNode, GraphNode);

#[derive(Debug, Default)]
struct State {
    /// Pod uid → its resource attributes.
    pods: BTreeMap<String, BTreeMap<String, String>>,
    series: BTreeMap<(String, EdgeKey), TcpSeries>,
    last: HashMap<TcpKey, TcpStats>,
}

/// TCP health series. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct TcpHealth {
    state: Arc<Mutex<State>>,
}

impl TcpHealth {
    pub fn new() -> Self {
        Self::default()
    }

    /// Folds one reading of the kernel map into the series. `owners` maps
    /// watched cgroup ids to pods; `pods` are the reported pods' resource
    /// attributes (series of pods no longer reported are dropped).
    pub fn update(
        &self,
        readings: &[(TcpKey, TcpStats)],
        owners: &HashMap<u64, CgroupOwner>,
        pods: BTreeMap<String, BTreeMap<String, String>>,
        peers: &dyn PeerLookup,
    ) {
        let now = now_unix_nanos();
        let mut state = self.state.lock().expect("tcp health lock");
        let mut seen = HashMap::with_capacity(readings.len());
        for (key, stats) in readings {
            let delta = increase(state.last.get(key), stats);
            seen.insert(*key, *stats);
            let Some(owner) = owners.get(&key.cgroup_id) else {
                continue;
            };
            let ip = peer_ip(key);
            let peer = peers.lookup(ip);
            let me = owner.node.clone();
            let edge = if key.role == tcp_role::SERVER {
                let client = match peer {
                    Some(p) => GraphNode::new(p.service, Some(p.namespace)),
                    None => GraphNode::new(UNKNOWN_CLIENT, None),
                };
                (client, me)
            } else {
                let server = match peer {
                    Some(p) => GraphNode::new(p.service, Some(p.namespace)),
                    None => GraphNode::new(ip.to_string(), None),
                };
                (me, server)
            };
            state
                .series
                .entry((owner.pod_uid.clone(), edge))
                .or_insert_with(|| TcpSeries {
                    start_unix_nanos: now,
                    ..TcpSeries::default()
                })
                .add(&delta);
        }
        state.last = seen;
        state.series.retain(|(uid, _), _| pods.contains_key(uid));
        state.pods = pods;
    }

    /// The series of one pod (tests).
    pub fn pod_series(&self, uid: &str) -> Vec<(EdgeKey, TcpSeries)> {
        let state = self.state.lock().expect("tcp health lock");
        state
            .series
            .iter()
            .filter(|((u, _), _)| u == uid)
            .map(|((_, e), s)| (e.clone(), s.clone()))
            .collect()
    }
}

fn edge_labels((client, server): &EdgeKey) -> Vec<(&'static str, String)> {
    let mut out = vec![
        ("client", client.name.to_string()),
        ("server", server.name.to_string()),
    ];
    if let Some(ns) = &client.namespace {
        out.push(("client_service_namespace", ns.to_string()));
    }
    if let Some(ns) = &server.namespace {
        out.push(("server_service_namespace", ns.to_string()));
    }
    out
}

impl MetricProducer for TcpHealth {
    fn resource_metrics(&self) -> Vec<ResourceMetrics> {
        let now = now_unix_nanos();
        let bounds = rtt_bounds();
        let state = self.state.lock().expect("tcp health lock");
        let mut out = Vec::new();
        for (uid, attributes) in &state.pods {
            let (mut retransmits, mut failed, mut resets, mut rtt) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for ((_, edge), s) in state.series.iter().filter(|((u, _), _)| u == uid) {
                let attrs: Vec<KeyValue> = edge_labels(edge)
                    .iter()
                    .map(|(k, v)| string_kv(k, v))
                    .collect();
                let start = s.start_unix_nanos;
                retransmits.push(int_point(s.retransmits, start, now, attrs.clone()));
                failed.push(int_point(s.failed_connections, start, now, attrs.clone()));
                for (direction, value) in
                    [("receive", s.resets_received), ("transmit", s.resets_sent)]
                {
                    let mut a = attrs.clone();
                    a.push(string_kv("network.io.direction", direction));
                    resets.push(int_point(value, start, now, a));
                }
                if s.rtt_count > 0 {
                    rtt.push(HistogramDataPoint {
                        attributes: attrs,
                        start_time_unix_nano: start,
                        time_unix_nano: now,
                        count: s.rtt_count,
                        sum: Some(s.rtt_sum_seconds),
                        bucket_counts: s.rtt_buckets.to_vec(),
                        explicit_bounds: bounds.clone(),
                        ..Default::default()
                    });
                }
            }
            if retransmits.is_empty() {
                continue;
            }
            let mut metrics = vec![
                counter_metric(
                    "obi.stat.tcp.retransmits",
                    "TCP segments retransmitted.",
                    "{segment}",
                    retransmits,
                ),
                counter_metric(
                    "obi.stat.tcp.failed.connections",
                    "TCP connects that were never established.",
                    "{connection}",
                    failed,
                ),
                counter_metric(
                    "obi.stat.tcp.resets",
                    "TCP resets received and sent.",
                    "{reset}",
                    resets,
                ),
            ];
            if !rtt.is_empty() {
                metrics.push(Metric {
                    name: "obi.stat.tcp.rtt".to_owned(),
                    description: "Smoothed RTT of TCP connections, at close.".to_owned(),
                    unit: "s".to_owned(),
                    data: Some(metric::Data::Histogram(Histogram {
                        data_points: rtt,
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    })),
                    ..Default::default()
                });
            }
            out.push(resource_metrics(attributes, metrics));
        }
        out
    }
}

impl prometheus_client::collector::Collector for TcpHealth {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let rows: Vec<(Vec<(String, String)>, TcpSeries)> = {
            let state = self.state.lock().expect("tcp health lock");
            state
                .series
                .iter()
                .filter_map(|((uid, edge), s)| {
                    let mut labels = prometheus_resource_labels(state.pods.get(uid)?);
                    labels.extend(
                        edge_labels(edge)
                            .into_iter()
                            .map(|(k, v)| (k.to_owned(), v)),
                    );
                    Some((labels, s.clone()))
                })
                .collect()
        };
        for (name, help, pick) in [
            (
                "obi_stat_tcp_retransmits",
                "TCP segments retransmitted.",
                (|s: &TcpSeries| s.retransmits) as fn(&TcpSeries) -> u64,
            ),
            (
                "obi_stat_tcp_failed_connections",
                "TCP connects that were never established.",
                |s| s.failed_connections,
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (labels, s) in &rows {
                family
                    .encode_family(labels)?
                    .encode_counter::<NoLabelSet, u64, u64>(&pick(s), None)?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "obi_stat_tcp_resets",
                "TCP resets received and sent.",
                None,
                MetricType::Counter,
            )?;
            for (labels, s) in &rows {
                for (direction, value) in
                    [("receive", s.resets_received), ("transmit", s.resets_sent)]
                {
                    let mut l = labels.clone();
                    l.push(("network_io_direction".to_owned(), direction.to_owned()));
                    family
                        .encode_family(&l)?
                        .encode_counter::<NoLabelSet, u64, u64>(&value, None)?;
                }
            }
        }
        let bounds = rtt_bounds();
        let mut family = encoder.encode_descriptor(
            "obi_stat_tcp_rtt",
            "Smoothed RTT of TCP connections, at close.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (labels, s) in rows.iter().filter(|(_, s)| s.rtt_count > 0) {
            let buckets: Vec<(f64, u64)> = bounds
                .iter()
                .copied()
                .chain(std::iter::once(f64::INFINITY))
                .zip(s.rtt_buckets)
                .collect();
            encode_histogram(
                family.encode_family(labels)?,
                s.rtt_sum_seconds,
                s.rtt_count,
                &buckets,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::servicegraph::{NoPeers, PeerIdentity};

    fn key(cgroup: u64, peer: [u8; 4], role: u32) -> TcpKey {
        let mut addr = [0u8; 16];
        addr[10] = 0xff;
        addr[11] = 0xff;
        addr[12..].copy_from_slice(&peer);
        TcpKey {
            cgroup_id: cgroup,
            peer: addr,
            role,
            pad: 0,
        }
    }

    fn stats(retransmits: u64, rtt_us: u64) -> TcpStats {
        let mut s = TcpStats {
            retransmits,
            rtt_count: u64::from(rtt_us > 0),
            rtt_sum_us: rtt_us,
            ..TcpStats::default()
        };
        if rtt_us > 0 {
            s.rtt_buckets[3] = 1;
        }
        s
    }

    struct OnePeer;
    impl PeerLookup for OnePeer {
        fn lookup(&self, ip: IpAddr) -> Option<PeerIdentity> {
            (ip == "10.0.0.9".parse::<IpAddr>().unwrap()).then(|| PeerIdentity {
                service: "catalog".into(),
                namespace: "shop".into(),
                traced: true,
            })
        }
    }

    fn owners() -> HashMap<u64, CgroupOwner> {
        HashMap::from([(
            7,
            CgroupOwner {
                pod_uid: "uid-a".into(),
                node: GraphNode::new("frontend", Some("shop".into())),
            },
        )])
    }

    fn pods() -> BTreeMap<String, BTreeMap<String, String>> {
        [(
            "uid-a".to_string(),
            [("k8s.pod.name".to_string(), "frontend-1".to_string())].into(),
        )]
        .into()
    }

    #[test]
    fn rtt_bounds_double_from_64_microseconds() {
        let b = rtt_bounds();
        assert_eq!(b.len(), RTT_BUCKETS - 1);
        assert_eq!(b[0], 0.000_064);
        assert_eq!(b[1], 0.000_128);
        assert!((b[14] - 64.0 * 16384.0 / 1e6).abs() < 1e-12);
    }

    #[test]
    fn edges_follow_the_role_and_the_peer_index() {
        let tcp = TcpHealth::new();
        tcp.update(
            &[
                (key(7, [10, 0, 0, 9], tcp_role::CLIENT), stats(3, 500)),
                (key(7, [192, 0, 2, 1], tcp_role::SERVER), stats(1, 0)),
                (key(99, [10, 0, 0, 9], tcp_role::CLIENT), stats(50, 0)),
            ],
            &owners(),
            pods(),
            &OnePeer,
        );
        let series = tcp.pod_series("uid-a");
        assert_eq!(
            series.len(),
            2,
            "the unknown cgroup 99 is not ours: {series:?}"
        );
        let names: Vec<(String, String, u64)> = series
            .iter()
            .map(|((c, s), v)| (c.name.to_string(), s.name.to_string(), v.retransmits))
            .collect();
        assert!(
            names.contains(&("frontend".into(), "catalog".into(), 3)),
            "{names:?}"
        );
        assert!(
            names.contains(&("user".into(), "frontend".into(), 1)),
            "an unknown client is `user`: {names:?}"
        );
    }

    #[test]
    fn counters_accumulate_increases_and_survive_kernel_eviction() {
        let tcp = TcpHealth::new();
        let k = key(7, [10, 0, 0, 9], tcp_role::CLIENT);
        for (reading, expected) in [
            (stats(3, 0), 3),
            (stats(5, 0), 5),
            (stats(1, 0), 6),
            (stats(4, 0), 9),
        ] {
            tcp.update(&[(k, reading)], &owners(), pods(), &OnePeer);
            assert_eq!(tcp.pod_series("uid-a")[0].1.retransmits, expected);
        }
        // The pod is no longer reported: its series go.
        tcp.update(&[(k, stats(4, 0))], &owners(), BTreeMap::new(), &NoPeers);
        assert!(tcp.pod_series("uid-a").is_empty());
    }

    #[test]
    fn otlp_and_prometheus_carry_the_obi_names() {
        let tcp = TcpHealth::new();
        tcp.update(
            &[(key(7, [10, 0, 0, 9], tcp_role::CLIENT), stats(2, 600))],
            &owners(),
            pods(),
            &OnePeer,
        );
        let rms = tcp.resource_metrics();
        let names = crate::telemetry::metrics::metric_names(&rms[0]);
        assert_eq!(
            names,
            [
                "obi.stat.tcp.retransmits",
                "obi.stat.tcp.failed.connections",
                "obi.stat.tcp.resets",
                "obi.stat.tcp.rtt"
            ]
        );
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(tcp));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(r#"obi_stat_tcp_retransmits_total{k8s_pod_name="frontend-1",client="frontend",server="catalog",client_service_namespace="shop",server_service_namespace="shop"} 2"#),
            "{text}"
        );
        assert!(text.contains("obi_stat_tcp_rtt_seconds_count{"), "{text}");
    }
}
