//! The node-level views next to spans and RED metrics — what Pixie shows
//! users first, computed from the probe's own data:
//!
//! - the **service graph** ([`crate::telemetry::servicegraph`]): edges
//!   between services with request and error counts and both sides'
//!   latency, named through the [`PeerIndex`] that discovery fills;
//! - **pod resources** ([`resources`]): CPU, memory, disk and network of the
//!   pods this probe reports, and the node's memory;
//! - **TCP health** ([`tcp`]): retransmits, RTT, failed connections and
//!   resets per pod and per peer.
//!
//! Each is a [`MetricProducer`] for the OTLP exporter and a collector of the
//! probe's Prometheus registry, so both outputs carry the same numbers.
//! `views.*` in the probe config turns each on or off.

// Setup errors carry aya's (large) errors unboxed, as crate::ebpf's do:
// they happen once, when a view's kernel side starts.
#![allow(clippy::result_large_err)]

pub mod host_cgroups;
pub mod podnet;
pub mod pods;
pub mod resources;
pub mod sampler;
pub mod tcp;

use std::path::PathBuf;
use std::sync::Arc;

use ferrotel_api::probe_config::ViewsConfig;
use prometheus_client::registry::Registry;

use self::pods::NodePods;
use self::resources::PodResources;
use self::sampler::{Reporter, Sampler};
use self::tcp::TcpHealth;
use crate::targets::kubernetes::peers::PeerIndex;
use crate::telemetry::metrics::MetricProducer;
use crate::telemetry::servicegraph::{PeerLookup, ServiceGraphMetrics};

/// Why a view's kernel side could not start; the probe then runs without
/// that view and says so.
#[derive(Debug, thiserror::Error)]
pub enum ViewsError {
    #[error(transparent)]
    Ebpf(#[from] crate::ebpf::EbpfError),
    #[error(
        "cannot open the cgroup2 root {path}; mount the host's cgroup filesystem into the probe"
    )]
    CgroupRoot {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no cgroup2 filesystem among the host's mounts (/proc/1/mountinfo, reached with hostPID and CAP_SYS_PTRACE) or this process's; pod network counters need a cgroup v2 or hybrid host"
    )]
    NoCgroup2,
    #[error("counting the possible CPUs failed")]
    Cpus(#[source] std::io::Error),
}

/// The views of one probe process.
#[derive(Clone, Debug)]
pub struct Views {
    pub config: ViewsConfig,
    /// Peer addresses → names; filled by Kubernetes discovery, empty
    /// standalone (then callers are `user` and servers their address).
    pub peers: PeerIndex,
    pub graph: Option<ServiceGraphMetrics>,
    /// This node's pods, published by discovery.
    pub pods: NodePods,
    pub resources: Option<PodResources>,
    pub tcp: Option<TcpHealth>,
}

impl Views {
    pub fn new(config: &ViewsConfig) -> Self {
        let graph = config
            .service_graph
            .enabled
            .then(|| ServiceGraphMetrics::new(config.service_graph.max_edges as usize));
        Self {
            config: config.clone(),
            peers: PeerIndex::new(),
            graph,
            pods: NodePods::new(),
            resources: config.pod_resources.enabled.then(PodResources::new),
            tcp: config.tcp_health.enabled.then(TcpHealth::new),
        }
    }

    /// What the pipeline needs to add service-graph observations.
    pub fn service_graph(&self) -> Option<(ServiceGraphMetrics, Arc<dyn PeerLookup>)> {
        self.graph
            .clone()
            .map(|g| (g, Arc::new(self.peers.clone()) as Arc<dyn PeerLookup>))
    }

    /// Registers every enabled view with the Prometheus registry.
    pub fn register(&self, registry: &mut Registry) {
        if let Some(graph) = &self.graph {
            registry.register_collector(Box::new(graph.clone()));
        }
        if let Some(resources) = &self.resources {
            registry.register_collector(Box::new(resources.clone()));
        }
        if let Some(tcp) = &self.tcp {
            registry.register_collector(Box::new(tcp.clone()));
        }
    }

    /// Starts the sampler thread of pod resources and TCP health (if
    /// either is enabled); stop it with [`ViewsSampler::stop`].
    pub fn start_sampler(
        &self,
        reporter: Reporter,
        health: crate::health::Health,
    ) -> Option<ViewsSampler> {
        if self.resources.is_none() && self.tcp.is_none() {
            return None;
        }
        let sampler = Sampler::new(
            &self.config,
            reporter,
            self.resources.clone().unwrap_or_default(),
            self.tcp.clone().unwrap_or_default(),
            self.peers.clone(),
            self.pods.clone(),
            health,
        );
        let interval =
            std::time::Duration::from_millis(self.config.pod_resources.interval_millis.max(100));
        let (stop, handle) = sampler::spawn(sampler, interval);
        Some(ViewsSampler { stop, handle })
    }

    /// Every enabled view, for the OTLP metrics exporter.
    pub fn producers(&self) -> Vec<Arc<dyn MetricProducer>> {
        let mut out: Vec<Arc<dyn MetricProducer>> = Vec::new();
        if let Some(graph) = &self.graph {
            out.push(Arc::new(graph.clone()));
        }
        if let Some(resources) = &self.resources {
            out.push(Arc::new(resources.clone()));
        }
        if let Some(tcp) = &self.tcp {
            out.push(Arc::new(tcp.clone()));
        }
        out
    }
}

/// The running sampler thread.
#[derive(Debug)]
pub struct ViewsSampler {
    stop: std::sync::mpsc::Sender<()>,
    handle: std::thread::JoinHandle<()>,
}

impl ViewsSampler {
    /// Stops the thread (after its current reading) and waits for it; the
    /// kernel programs detach as it drops them.
    pub fn stop(self) {
        drop(self.stop);
        let _ = self.handle.join();
    }
}
