//! Command-line arguments (each also settable through an environment variable,
//! which is how the Helm chart passes them).

use std::net::SocketAddr;

use clap::{Parser, ValueEnum};

/// Ferrotel's Kubernetes operator: runs OpenTelemetry Collectors
/// (TelemetryCollector) and eBPF probe DaemonSets (Instrumentation).
#[derive(Debug, Clone, Parser)]
#[command(name = "ferrotel-operator", version)]
pub struct Args {
    /// Only watch and manage objects in this namespace (default: all namespaces).
    #[arg(long, env = "FERROTEL_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,

    /// Hold a coordination.k8s.io Lease so only one replica reconciles at a time.
    #[arg(long, env = "FERROTEL_LEADER_ELECT", default_value_t = false)]
    pub leader_elect: bool,

    /// Namespace of the leader Lease (default: $POD_NAMESPACE, else the watch namespace, else "default").
    #[arg(long, env = "FERROTEL_LEADER_ELECT_NAMESPACE")]
    pub leader_elect_namespace: Option<String>,

    /// Name of the leader Lease.
    #[arg(
        long,
        env = "FERROTEL_LEADER_ELECT_LEASE",
        default_value = "ferrotel-operator"
    )]
    pub leader_elect_lease_name: String,

    /// Address of the Prometheus `/metrics` endpoint.
    #[arg(long, env = "FERROTEL_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,

    /// Address of the `/livez` and `/readyz` endpoints (may equal --metrics-addr).
    #[arg(long, env = "FERROTEL_HEALTH_ADDR", default_value = "0.0.0.0:8081")]
    pub health_addr: SocketAddr,

    /// Log filter, e.g. `info` or `ferrotel_operator=debug,kube=info` (RUST_LOG overrides it).
    #[arg(long, env = "FERROTEL_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Log output format.
    #[arg(long, env = "FERROTEL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,

    /// Collector image used when a TelemetryCollector leaves spec.image empty.
    #[arg(long, env = "FERROTEL_DEFAULT_COLLECTOR_IMAGE", default_value = ferrotel_api::collector::DEFAULT_COLLECTOR_IMAGE)]
    pub default_collector_image: String,

    /// Probe image of the Instrumentations that name no ProbeClass (and of
    /// the classes that name no image). Instrumentations cannot pick another
    /// image unless a ProbeClass allows it.
    #[arg(long, env = "FERROTEL_DEFAULT_PROBE_IMAGE", default_value = DEFAULT_PROBE_IMAGE)]
    pub default_probe_image: String,

    /// The ClusterRole the install ships for the probes (read pods and
    /// namespaces, get ReplicaSets and Jobs). The operator binds the probes'
    /// ServiceAccounts to it and may bind nothing else.
    #[arg(
        long,
        env = "FERROTEL_PROBE_CLUSTER_ROLE",
        default_value = "ferrotel-probe"
    )]
    pub probe_cluster_role: String,

    /// The ClusterRoleBinding the install ships for the probes; the operator
    /// keeps its subjects equal to the probes' ServiceAccounts.
    #[arg(
        long,
        env = "FERROTEL_PROBE_CLUSTER_ROLE_BINDING",
        default_value = "ferrotel-probe"
    )]
    pub probe_cluster_role_binding: String,
}

/// The probe image released together with this operator.
pub const DEFAULT_PROBE_IMAGE: &str = concat!(
    "ghcr.io/ferrotel/ferrotel-probe:",
    env!("CARGO_PKG_VERSION")
);

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (for log collectors).
    Json,
    /// Human-readable lines (for terminals).
    Text,
}

/// The part of the arguments controllers care about.
#[derive(Debug, Clone)]
pub struct OperatorConfig {
    /// `None` = all namespaces.
    pub watch_namespace: Option<String>,
    /// Image for TelemetryCollectors with an empty `spec.image`.
    pub default_collector_image: String,
    /// Image for Instrumentations with an empty `spec.probe.image`.
    pub default_probe_image: String,
    /// The probes' ClusterRole and the ClusterRoleBinding whose subjects the
    /// operator maintains.
    pub probe_cluster_role: String,
    pub probe_cluster_role_binding: String,
}

impl Args {
    pub fn operator_config(&self) -> OperatorConfig {
        OperatorConfig {
            watch_namespace: self.watch_namespace.clone().filter(|ns| !ns.is_empty()),
            default_collector_image: self.default_collector_image.clone(),
            default_probe_image: self.default_probe_image.clone(),
            probe_cluster_role: self.probe_cluster_role.clone(),
            probe_cluster_role_binding: self.probe_cluster_role_binding.clone(),
        }
    }

    pub fn leader_elect_namespace(&self) -> String {
        self.leader_elect_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .or_else(|| self.watch_namespace.clone())
            .filter(|ns| !ns.is_empty())
            .unwrap_or_else(|| "default".to_owned())
    }
}
