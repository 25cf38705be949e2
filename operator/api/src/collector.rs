//! The `TelemetryCollector` custom resource (`ferrotel.io/v1alpha1`): one
//! OpenTelemetry Collector, run as a Deployment or a DaemonSet.
//!
//! Besides the types, this module holds the pure logic that decides what a
//! collector config means, so the operator, the tests and tools share it:
//! - [`config`]: the collector's own config (same shape as the OpenTelemetry
//!   Operator's `v1beta1` `spec.config`);
//! - [`distribution`]: the component types the default image offers;
//! - [`validate`]: the checks run before a config is rolled out;
//! - [`ports`]: the Service ports derived from receiver endpoints.

pub mod config;
pub mod distribution;
pub mod ports;
pub mod validate;

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{
        Affinity, EnvVar, PodSecurityContext, ResourceRequirements, SecurityContext, Toleration,
    },
    apimachinery::pkg::apis::meta::v1::Condition,
};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use config::CollectorConfig;

/// The collector image used when `spec.image` is empty: Ferrotel's own
/// distribution, built from `operator/api/distribution/manifest.yaml`.
pub const DEFAULT_COLLECTOR_IMAGE: &str = "ghcr.io/ferrotel/otelcol:0.161.0";

/// An OpenTelemetry Collector managed by Ferrotel.
///
/// The operator renders a ServiceAccount, a ConfigMap named after the hash
/// of the config, a Deployment or DaemonSet, and a Service named after this
/// object exposing the ports of the configured receivers. A config that fails
/// validation is not rolled out: the previous one keeps serving and the
/// `ConfigValid` condition says what is wrong.
// kube-derive repeats `type_ = ...` per printcolumn, which clippy reads as a
// duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ferrotel.io",
    version = "v1alpha1",
    kind = "TelemetryCollector",
    plural = "telemetrycollectors",
    singular = "telemetrycollector",
    shortname = "tcol",
    category = "ferrotel",
    namespaced,
    status = "TelemetryCollectorStatus",
    derive = "PartialEq",
    doc = "TelemetryCollector runs one OpenTelemetry Collector (as a Deployment or a DaemonSet) with the given config; the operator validates the config before rolling it out",
    printcolumn(
        name = "Mode",
        type_ = "string",
        json_path = ".status.mode",
        description = "Deployment or daemonset, as rendered"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.ready",
        description = "Ready/desired collector pods"
    ),
    printcolumn(
        name = "Image",
        type_ = "string",
        json_path = ".status.image",
        description = "Collector image in use"
    ),
    printcolumn(
        name = "Valid",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"ConfigValid\")].status",
        description = "Whether the config passed validation",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = kube::core::Rule::new("!has(self.replicas) || !has(self.mode) || self.mode == 'deployment'").message("spec.replicas is only allowed with mode deployment; a daemonset runs one pod per node").field_path(".replicas"))]
#[serde(rename_all = "camelCase")]
pub struct TelemetryCollectorSpec {
    /// How the collector runs: `deployment` (default; a fixed number of
    /// replicas behind a Service) or `daemonset` (one pod per node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<CollectorMode>,

    /// Number of collector pods (mode deployment only). Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,

    /// Collector image. Empty means the operator's pinned default image (the
    /// Ferrotel distribution); the image in use is shown in status.image.
    /// With a custom image, component types are not checked before rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,

    /// `managed` (default): the operator renders and updates every child.
    /// `unmanaged`: the operator stops writing anything for this collector
    /// (children are left as they are), e.g. for manual debugging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub management_state: Option<ManagementState>,

    /// The collector's own configuration (receivers, processors, exporters,
    /// connectors, extensions, service), exactly as the collector reads it.
    pub config: CollectorConfig,

    /// Service ports to add, or to override when the name or port equals a
    /// port derived from the receivers' endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = kube::core::Rule::new("self.all(p, self.exists_one(q, q.name == p.name))").message("spec.ports names must be unique"))]
    pub ports: Option<Vec<CollectorPort>>,

    /// Compute resources of the collector container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Extra environment variables of the collector container (reference
    /// them in the config as `${env:NAME}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<EnvVar>>,

    /// Node labels the collector pods must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,

    /// Tolerations of the collector pods (e.g. to run a daemonset on tainted nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,

    /// Scheduling constraints of the collector pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// Annotations added to the collector pods (the operator adds its own
    /// config-hash annotation too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_annotations: Option<BTreeMap<String, String>>,

    /// Name of an existing ServiceAccount for the collector pods. Empty:
    /// the operator creates `<name>-collector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,

    /// PriorityClass of the collector pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,

    /// Security context of the collector container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,

    /// Security context of the collector pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_security_context: Option<PodSecurityContext>,
}

/// How the collector runs.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CollectorMode {
    /// A Deployment with `spec.replicas` pods.
    #[default]
    Deployment,
    /// A DaemonSet: one pod per (matching) node.
    Daemonset,
}

impl CollectorMode {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Deployment => "deployment",
            Self::Daemonset => "daemonset",
        }
    }
}

/// Whether the operator manages the collector's children.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ManagementState {
    /// The operator renders, applies and prunes children.
    #[default]
    Managed,
    /// The operator leaves every child untouched.
    Unmanaged,
}

/// A Service port of the collector.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CollectorPort {
    /// Port name (a DNS label, at most 15 characters, unique in spec.ports).
    #[schemars(
        length(min = 1, max = 15),
        regex(pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Port number the Service exposes.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Container port the traffic goes to (default: same as port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub target_port: Option<i32>,
    /// Transport protocol (default TCP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<PortProtocol>,
    /// Application protocol hint, e.g. `grpc` or `http`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
}

/// Transport protocol of a port.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum PortProtocol {
    #[default]
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
    #[serde(rename = "SCTP")]
    Sctp,
}

impl PortProtocol {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
            Self::Sctp => "SCTP",
        }
    }
}

/// What the operator observed and rendered. Written by the operator only.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TelemetryCollectorStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// ConfigValid, Available, Progressing and Reconciled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Mode as rendered (spec.mode or its default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<CollectorMode>,
    /// The image the collector pods run (spec.image or the operator's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Hash of the config currently rolled out (the last valid one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
    /// Name of the ConfigMap holding the config currently rolled out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<String>,
    /// Desired collector pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Collector pods that are ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// `ready/desired`, for kubectl get.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,
    /// In-cluster endpoints of the collector's receivers that accept OTLP,
    /// e.g. `http://otel.observability.svc.cluster.local:4317`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<CollectorEndpoint>,
}

/// One in-cluster endpoint of the collector.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CollectorEndpoint {
    /// The Service port name, e.g. `otlp-grpc`.
    pub name: String,
    /// `grpc` or `http/protobuf` (OTLP) — the value an OTLP exporter's
    /// `protocol` setting takes.
    pub protocol: String,
    /// URL to export to, e.g. `http://otel.observability.svc.cluster.local:4317`.
    pub url: String,
}

impl TelemetryCollectorSpec {
    /// The mode, defaulted.
    pub fn mode(&self) -> CollectorMode {
        self.mode.unwrap_or_default()
    }

    /// The management state, defaulted.
    pub fn management_state(&self) -> ManagementState {
        self.management_state.unwrap_or_default()
    }

    /// The custom image, if one is set (empty counts as unset).
    pub fn custom_image(&self) -> Option<&str> {
        self.image
            .as_deref()
            .map(str::trim)
            .filter(|i| !i.is_empty())
    }
}

impl crate::conditions::WithConditions for TelemetryCollectorStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
    fn conditions_mut(&mut self) -> &mut Vec<Condition> {
        &mut self.conditions
    }
}

impl TelemetryCollectorStatus {
    /// The first endpoint speaking `protocol` (`grpc` or `http/protobuf`).
    pub fn endpoint(&self, protocol: &str) -> Option<&CollectorEndpoint> {
        self.endpoints.iter().find(|e| e.protocol == protocol)
    }
}
