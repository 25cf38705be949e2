//! The pure stage: a validated `TelemetryCollector` → the objects it needs.
//!
//! No I/O here (no `Client`): everything the builders need is in the CR and
//! the operator's defaults, so they are snapshot-tested from small YAML
//! fixtures.

use std::collections::BTreeMap;

use ferrotel_api::{
    collector::{
        CollectorEndpoint, CollectorMode, TelemetryCollector,
        ports::{self, DerivedPort},
    },
    labels,
};
use k8s_openapi::{
    api::{
        apps::v1::{DaemonSet, DaemonSetSpec, Deployment, DeploymentSpec},
        core::v1::{
            ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, KeyToPath, PodSpec,
            PodTemplateSpec, Service, ServiceAccount, ServicePort, ServiceSpec, Volume,
            VolumeMount,
        },
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, ObjectMeta},
        util::intstr::IntOrString,
    },
};
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

/// Pod annotation carrying the config hash: a config change changes the pod
/// template, so the Deployment/DaemonSet rolls out.
pub const CONFIG_HASH_ANNOTATION: &str = "ferrotel.io/config-hash";
/// `app.kubernetes.io/name` of every collector child.
pub const APP_NAME: &str = "telemetrycollector";
/// `app.kubernetes.io/component` of every collector child.
pub const COMPONENT: &str = "collector";
/// Key of the config file in the ConfigMap (and its file name in the pod).
pub const CONFIG_KEY: &str = "collector.yaml";
const CONFIG_DIR: &str = "/conf";
const CONTAINER_NAME: &str = "otelcol";

/// What went wrong building children (only missing metadata can: the API
/// server always sets it, so this means a hand-made object in a test).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("TelemetryCollector has no {0}; it must come from the API server")]
    MissingMetadata(&'static str),
}

/// The workload of the chosen mode.
#[derive(Debug, Clone, PartialEq)]
pub enum Workload {
    Deployment(Box<Deployment>),
    DaemonSet(Box<DaemonSet>),
}

/// Every child a TelemetryCollector can have. The applier destructures this
/// without `..`, so adding a field here without applying it fails to compile.
#[derive(Debug, Clone, PartialEq)]
pub struct Children {
    /// `None` when spec.serviceAccount names an existing one.
    pub service_account: Option<ServiceAccount>,
    pub config_map: ConfigMap,
    pub workload: Workload,
    /// `None` when the config listens on no port.
    pub service: Option<Service>,
}

/// The built children plus what status reports about them.
#[derive(Debug, Clone, PartialEq)]
pub struct Built {
    pub children: Children,
    pub config_hash: String,
    pub image: String,
    pub mode: CollectorMode,
    pub endpoints: Vec<CollectorEndpoint>,
}

/// Names of the children of the collector `name`.
pub fn service_account_name(name: &str) -> String {
    format!("{name}-collector")
}
pub fn workload_name(name: &str) -> String {
    format!("{name}-collector")
}
pub fn config_map_name(name: &str, hash: &str) -> String {
    format!("{name}-config-{hash}")
}
/// The Service is named after the CR so `<name>.<namespace>.svc` is the
/// collector's address (what users of the OpenTelemetry Operator type).
pub fn service_name(name: &str) -> String {
    name.to_owned()
}

/// Labels selecting the pods of the collector `name` (immutable selector).
pub fn selector_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::APP_NAME_LABEL.to_owned(), APP_NAME.to_owned()),
        (labels::APP_INSTANCE_LABEL.to_owned(), name.to_owned()),
        (labels::APP_COMPONENT_LABEL.to_owned(), COMPONENT.to_owned()),
    ])
}

/// Labels of every child of the collector `name`.
pub fn child_labels(name: &str) -> BTreeMap<String, String> {
    let mut l = selector_labels(name);
    l.insert(
        labels::APP_PART_OF_LABEL.to_owned(),
        labels::PART_OF_VALUE.to_owned(),
    );
    l.insert(
        labels::APP_MANAGED_BY_LABEL.to_owned(),
        labels::MANAGED_BY_VALUE.to_owned(),
    );
    l
}

/// First 10 hex digits of the SHA-256 of the rendered config: short enough
/// for object names, long enough that two configs of one collector never
/// collide in practice.
pub fn config_hash(rendered: &str) -> String {
    hex::encode(Sha256::digest(rendered.as_bytes()))[..10].to_owned()
}

/// Builds every child of `tc`. `default_image` is used when spec.image is empty.
pub fn build(tc: &TelemetryCollector, default_image: &str) -> Result<Built, BuildError> {
    let name = tc
        .metadata
        .name
        .clone()
        .ok_or(BuildError::MissingMetadata("metadata.name"))?;
    let namespace = tc
        .metadata
        .namespace
        .clone()
        .ok_or(BuildError::MissingMetadata("metadata.namespace"))?;
    let owner = tc
        .controller_owner_ref(&())
        .ok_or(BuildError::MissingMetadata("metadata.uid"))?;
    let spec = &tc.spec;
    let mode = spec.mode();
    let image = spec.custom_image().unwrap_or(default_image).to_owned();
    let rendered = spec.config.render();
    let hash = config_hash(&rendered);

    let meta = |object_name: String| ObjectMeta {
        name: Some(object_name),
        namespace: Some(namespace.clone()),
        labels: Some(child_labels(&name)),
        owner_references: Some(vec![owner.clone()]),
        ..Default::default()
    };

    let (derived, _) = ports::derive_ports(&spec.config);
    let ports = ports::merge_user_ports(derived, spec.ports.as_deref().unwrap_or_default());

    let service_account = spec
        .service_account
        .as_deref()
        .filter(|s| !s.is_empty())
        .is_none()
        .then(|| ServiceAccount {
            metadata: meta(service_account_name(&name)),
            ..Default::default()
        });
    let service_account_ref = spec
        .service_account
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| service_account_name(&name));

    let config_map = ConfigMap {
        metadata: meta(config_map_name(&name, &hash)),
        data: Some(BTreeMap::from([(CONFIG_KEY.to_owned(), rendered)])),
        ..Default::default()
    };

    let template = pod_template(tc, &name, &image, &hash, &service_account_ref, &ports);
    let selector = LabelSelector {
        match_labels: Some(selector_labels(&name)),
        ..Default::default()
    };
    let workload = match mode {
        CollectorMode::Deployment => Workload::Deployment(Box::new(Deployment {
            metadata: meta(workload_name(&name)),
            spec: Some(DeploymentSpec {
                replicas: Some(spec.replicas.unwrap_or(1)),
                selector,
                template,
                ..Default::default()
            }),
            ..Default::default()
        })),
        CollectorMode::Daemonset => Workload::DaemonSet(Box::new(DaemonSet {
            metadata: meta(workload_name(&name)),
            spec: Some(DaemonSetSpec {
                selector,
                template,
                ..Default::default()
            }),
            ..Default::default()
        })),
    };

    let service = (!ports.is_empty()).then(|| Service {
        metadata: meta(service_name(&name)),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(&name)),
            ports: Some(
                ports
                    .iter()
                    .map(|p| ServicePort {
                        name: Some(p.name.clone()),
                        port: p.port,
                        target_port: Some(IntOrString::Int(p.target_port)),
                        protocol: Some(p.protocol.as_str().to_owned()),
                        app_protocol: p.app_protocol.clone(),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    });

    let endpoints = if service.is_some() {
        endpoints(&name, &namespace, &ports)
    } else {
        Vec::new()
    };
    Ok(Built {
        children: Children {
            service_account,
            config_map,
            workload,
            service,
        },
        config_hash: hash,
        image,
        mode,
        endpoints,
    })
}

/// In-cluster OTLP endpoints served by the collector's Service.
pub fn endpoints(name: &str, namespace: &str, ports: &[DerivedPort]) -> Vec<CollectorEndpoint> {
    ports
        .iter()
        .filter_map(|p| {
            p.otlp.map(|protocol| CollectorEndpoint {
                name: p.name.clone(),
                protocol: protocol.to_owned(),
                url: format!(
                    "http://{}.{namespace}.svc.cluster.local:{}",
                    service_name(name),
                    p.port
                ),
            })
        })
        .collect()
}

fn pod_template(
    tc: &TelemetryCollector,
    name: &str,
    image: &str,
    hash: &str,
    service_account: &str,
    ports: &[DerivedPort],
) -> PodTemplateSpec {
    let spec = &tc.spec;
    let mut annotations = spec.pod_annotations.clone().unwrap_or_default();
    annotations.insert(CONFIG_HASH_ANNOTATION.to_owned(), hash.to_owned());
    let mut container_ports: Vec<ContainerPort> = Vec::new();
    for p in ports {
        // Two Service ports may target one container port; list it once.
        if !container_ports.iter().any(|c| {
            c.container_port == p.target_port && c.protocol.as_deref() == Some(p.protocol.as_str())
        }) {
            container_ports.push(ContainerPort {
                container_port: p.target_port,
                protocol: Some(p.protocol.as_str().to_owned()),
                // Container port names are limited to 15 characters.
                name: (p.name.len() <= 15).then(|| p.name.clone()),
                ..Default::default()
            });
        }
    }
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(child_labels(name)),
            annotations: Some(annotations),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            service_account_name: Some(service_account.to_owned()),
            containers: vec![Container {
                name: CONTAINER_NAME.to_owned(),
                image: Some(image.to_owned()),
                // Feature gates the config needs (profiles pipelines) are
                // part of the command line: without them the collector
                // refuses the config at start.
                args: Some(
                    spec.config
                        .command_args(&format!("{CONFIG_DIR}/{CONFIG_KEY}")),
                ),
                ports: (!container_ports.is_empty()).then_some(container_ports),
                env: spec.env.clone().filter(|e| !e.is_empty()),
                resources: spec.resources.clone(),
                security_context: spec.security_context.clone(),
                volume_mounts: Some(vec![VolumeMount {
                    name: "config".to_owned(),
                    mount_path: CONFIG_DIR.to_owned(),
                    read_only: Some(true),
                    ..Default::default()
                }]),
                ..Default::default()
            }],
            volumes: Some(vec![Volume {
                name: "config".to_owned(),
                config_map: Some(ConfigMapVolumeSource {
                    name: config_map_name(name, hash),
                    items: Some(vec![KeyToPath {
                        key: CONFIG_KEY.to_owned(),
                        path: CONFIG_KEY.to_owned(),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            node_selector: spec.node_selector.clone().filter(|m| !m.is_empty()),
            tolerations: spec.tolerations.clone().filter(|t| !t.is_empty()),
            affinity: spec.affinity.clone(),
            priority_class_name: spec.priority_class_name.clone().filter(|s| !s.is_empty()),
            security_context: spec.pod_security_context.clone(),
            ..Default::default()
        }),
    }
}

/// Name of the CR, for messages.
pub fn display_name(tc: &TelemetryCollector) -> String {
    format!("{}/{}", tc.namespace().unwrap_or_default(), tc.name_any())
}

#[cfg(test)]
mod tests;
