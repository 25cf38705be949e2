//! Build: `Instrumentation` (+ resolved exporter) → the desired child objects.
//!
//! Pure: no `Client`, no I/O. Everything here is covered by snapshot tests
//! from small YAML fixtures (`snapshots/`), so a change to what the operator
//! renders is visible in review.

use std::collections::BTreeMap;

use ferrotel_api::{
    instrumentation::{Instrumentation, ResolvedExporter},
    labels::{
        APP_COMPONENT_LABEL, APP_INSTANCE_LABEL, APP_MANAGED_BY_LABEL, APP_NAME_LABEL,
        APP_PART_OF_LABEL, MANAGED_BY_VALUE, PART_OF_VALUE,
    },
    optin::Candidate,
    probe_class::Grant,
    probe_config::{
        ExporterConfig, InstrumentationRef, Language, LanguageTuning, PROBE_CONFIG_FILE,
        ProbeConfig, ProbeMetricsConfig, Propagator, RoutesConfig, SamplerConfig, TargetsConfig,
        TlsConfig,
    },
};
use k8s_openapi::{
    api::{
        apps::v1::{DaemonSet, DaemonSetSpec},
        core::v1::{
            Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar,
            EnvVarSource, HTTPGetAction, HostPathVolumeSource, ObjectFieldSelector, PodSpec,
            PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecretVolumeSource,
            SecurityContext, ServiceAccount, Toleration, Volume, VolumeMount,
        },
        rbac::v1::{ClusterRoleBinding, RoleRef, Subject},
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference},
        util::intstr::IntOrString,
    },
};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use sha2::{Digest, Sha256};

pub use ferrotel_api::labels::{
    PROBE_APP_NAME as APP_NAME, PROBE_LANGUAGE_LABEL as LANGUAGE_LABEL,
};
/// Pod template annotation carrying the probe config hash: a config change
/// changes the template and so rolls the probes.
pub const CONFIG_HASH_ANNOTATION: &str = "ferrotel.io/config-hash";

const CONFIG_DIR: &str = "/etc/ferrotel";
const TLS_DIR: &str = "/etc/ferrotel/tls";
const METRICS_PORT: i32 = ferrotel_api::probe_endpoints::PORT as i32;

/// What the probe needs from its node, instead of `privileged: true`.
/// Every item was measured on a real node (kubelet + containerd, the probe
/// image as rendered here) and each one has a test that shows the probe
/// failing without it (`e2e/tests/least_privilege.rs`); what it does not
/// use is not asked for.
///
/// - `SYS_ADMIN`: kernels with "perf: Revert to requiring CAP_SYS_ADMIN for
///   uprobes" (mainline 2025) refuse `perf_event_open` on the uprobe PMU to
///   BPF + PERFMON (EACCES), so the Go set cannot attach without it; and
///   where the node has no tracefs mounted (no systemd), the Python probe
///   mounts one in its own mount namespace for its syscall tracepoints,
///   which needs it too (BTF tracepoints and uprobes need no tracefs). With
///   SYS_ADMIN, BPF and PERFMON grant nothing more (the kernel accepts
///   SYS_ADMIN wherever it checks them), so they are not listed.
/// - `SYS_PTRACE`: reading `/proc/<pid>/exe`, `maps`, `root/` of apps that
///   run as another user (the usual non-root container) is a ptrace-mode
///   access check.
/// - `DAC_READ_SEARCH`: pod resources on cgroup v1 and hybrid hosts count a
///   pod's disk bytes from its processes' `/proc/<pid>/io` (v1 blkio counts
///   nothing without a throttling rule), a file of mode 0400 owned by the
///   app's user, so root without it is refused before the ptrace check
///   (measured on the real node: EACCES, disk bytes 0, in
///   `e2e/tests/views.rs`).
///
/// `SYS_RESOURCE` is gone: BPF memory is charged to the memory cgroup since
/// 5.11 and the probe ignores a failing `setrlimit`; a runtime whose
/// bounding set lacks it cannot even start the pod (measured:
/// `unable to apply caps: operation not permitted`).
pub fn probe_capabilities(language: Language) -> &'static [&'static str] {
    match language {
        Language::Go | Language::Python => &["SYS_ADMIN", "SYS_PTRACE", "DAC_READ_SEARCH"],
    }
}

// HOST_MOUNTS_NONE: the probe mounts no host path, unless propagation is on
// (`BPFFS_DIR`). With `hostPID` the container's own `/proc` shows every
// process of the node, and its own `/sys` has `/sys/kernel/btf`; tracefs is
// mounted privately when the host has none (see `probe_capabilities`).
// `/sys/kernel/security`, the host's `/proc` and cgroupfs were mounted
// before and never read; propagation reaches the traced containers' cgroup
// v2 directories through a detached cgroup2 mount of its own (SYS_ADMIN),
// not a hostPath.

/// The node's BPF filesystem, mounted (read-write, same path) only when
/// `spec.propagation` turns on either half: propagation pins the map that
/// lets the Go and the Python probe of a node join each other's traces, and
/// briefly the maps its two program sets share, under `ferrotel/` there (the
/// probe config's default pin directory). A pod has no bpffs of its own; a
/// node whose `/sys/fs/bpf` is no bpffs gets propagation refused by the
/// probe (`ferrotel_probe_propagation_refused_total{reason="no_bpffs"}`,
/// shown by `kubectl ferrotel status`) while tracing goes on.
pub const BPFFS_DIR: &str = "/sys/fs/bpf";

/// Everything rendered for one language. The applier destructures it without
/// `..`, so a child that is built but never applied does not compile.
///
/// No RBAC: the probes' ClusterRole ships with the install, and their
/// ServiceAccounts are bound to it through the one ClusterRoleBinding the
/// operator maintains ([`probe_binding`]) — so the operator needs no right
/// to create roles or bindings.
#[derive(Clone, Debug, Serialize)]
pub struct LanguageChildren {
    pub language: Language,
    pub service_account: ServiceAccount,
    pub config_map: ConfigMap,
    pub daemon_set: DaemonSet,
}

/// All desired children of one Instrumentation.
#[derive(Clone, Debug, Serialize)]
pub struct Desired {
    pub probe_image: String,
    pub languages: Vec<LanguageChildren>,
}

/// A spec problem the schema could not catch; reported as `Degraded` /
/// `InvalidSpec` and not retried until the object changes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("spec.{field} is invalid: {message}")]
pub struct InvalidSpec {
    pub field: String,
    pub message: String,
}

/// What [`build`] needs besides the Instrumentation.
#[derive(Debug, Clone, Copy)]
pub struct BuildInput<'a> {
    pub instrumentation: &'a Instrumentation,
    pub exporter: &'a ResolvedExporter,
    /// The image and privilege level the ProbeClass (or the operator's
    /// defaults) grants; the spec's own `probe.image`/`privileged` are
    /// requests, already checked against it.
    pub grant: &'a Grant,
    /// Every Instrumentation the probe must know about for the opt-in rules
    /// (`"true"` means "the only one"), this one included.
    pub cluster_instrumentations: &'a [Candidate],
}

/// Names of the children of `instrumentation` for `language`.
pub fn daemon_set_name(instrumentation_name: &str, language: Language) -> String {
    format!("{instrumentation_name}-probe-{language}")
}

/// Checks what the schema cannot express (the schema already checks shapes).
pub fn validate(instrumentation: &Instrumentation) -> Result<(), InvalidSpec> {
    let spec = &instrumentation.spec;
    if let Some(ratio) = spec.sampler.as_ref().and_then(|s| s.ratio.as_deref()) {
        parse_ratio(ratio)?;
    }
    if let Some(selector) = &spec.selector {
        for (field, sel) in [
            ("namespaceSelector", &selector.namespace_selector),
            ("podSelector", &selector.pod_selector),
        ] {
            if let Some(sel) = sel {
                kube::core::Selector::try_from(sel.clone()).map_err(|e| InvalidSpec {
                    field: format!("selector.{field}"),
                    message: format!("{e}; use operators In, NotIn, Exists or DoesNotExist"),
                })?;
            }
        }
    }
    Ok(())
}

fn parse_ratio(ratio: &str) -> Result<f64, InvalidSpec> {
    match ratio.trim().parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(InvalidSpec {
            field: "sampler.ratio".into(),
            message: format!(
                "{ratio:?} is not a decimal between \"0\" and \"1\"; write e.g. \"0.25\""
            ),
        }),
    }
}

/// Renders the probe config for one language: every field resolved.
pub fn probe_config(
    input: &BuildInput<'_>,
    language: Language,
) -> Result<ProbeConfig, InvalidSpec> {
    let inst = input.instrumentation;
    let spec = &inst.spec;
    let sampler = match &spec.sampler {
        None => SamplerConfig::default(),
        Some(s) => SamplerConfig {
            kind: s.kind,
            ratio: s
                .ratio
                .as_deref()
                .map(parse_ratio)
                .transpose()?
                .unwrap_or(1.0),
        },
    };
    let tls = spec.exporter.tls.as_ref().map(|tls| TlsConfig {
        ca_file: Some(format!(
            "{TLS_DIR}/{}",
            tls.ca_key.as_deref().unwrap_or("ca.crt")
        )),
        cert_file: tls.cert_key.as_ref().map(|k| format!("{TLS_DIR}/{k}")),
        key_file: tls.key_key.as_ref().map(|k| format!("{TLS_DIR}/{k}")),
        insecure_skip_verify: tls.insecure_skip_verify.unwrap_or(false),
    });
    let routes_default = RoutesConfig::default();
    let routes = spec
        .routes
        .as_ref()
        .map_or(routes_default.clone(), |r| RoutesConfig {
            patterns: r.patterns.clone().unwrap_or_default(),
            unmatched: r.unmatched.unwrap_or(routes_default.unmatched),
            max_distinct: r.max_distinct.unwrap_or(routes_default.max_distinct),
        });
    let tuning = spec
        .language_spec(language)
        .map(|l| l.tuning.clone())
        .unwrap_or_default();
    // Only this language's section is rendered from the spec: tuning Python
    // must not roll the Go probes.
    let (go, python) = match language {
        Language::Go => (tuning, LanguageTuning::default()),
        Language::Python => (LanguageTuning::default(), tuning),
    };
    let selector = spec.selector.clone().unwrap_or_default();
    Ok(ProbeConfig {
        instrumentation: Some(InstrumentationRef {
            namespace: inst.namespace().unwrap_or_default(),
            name: inst.name_any(),
        }),
        exporter: ExporterConfig {
            endpoint: input.exporter.endpoint.clone(),
            protocol: input.exporter.protocol,
            tls,
            ..ExporterConfig::default()
        },
        sampler,
        propagators: spec
            .propagators
            .clone()
            .unwrap_or_else(|| vec![Propagator::Tracecontext, Propagator::Baggage]),
        propagation: spec
            .propagation
            .as_ref()
            .map(|p| p.probe_config())
            .unwrap_or_default(),
        resource_attributes: spec
            .resource
            .as_ref()
            .and_then(|r| r.attributes.clone())
            .unwrap_or_default(),
        targets: TargetsConfig {
            kubernetes: true,
            namespace_selector: selector.namespace_selector,
            pod_selector: selector.pod_selector,
            ..TargetsConfig::default()
        },
        routes,
        redaction: spec.redaction.clone().unwrap_or_default(),
        go,
        python,
        metrics: ProbeMetricsConfig {
            enabled: true,
            listen: format!("0.0.0.0:{METRICS_PORT}"),
        },
        // Unset: today's defaults, so an Instrumentation without `views`
        // renders the config (and hash) it always did. `allPods` was
        // checked against the ProbeClass before build.
        views: spec.views.clone().unwrap_or_default(),
        log_level: Some(
            spec.probe
                .as_ref()
                .and_then(|p| p.log_level.clone())
                .unwrap_or_else(|| "info".into()),
        ),
        profiling: spec.profiling.clone().unwrap_or_default(),
        cluster_instrumentations: input.cluster_instrumentations.to_vec(),
    })
}

/// Short content hash of a rendered config.
pub fn config_hash(text: &str) -> String {
    hex::encode(&Sha256::digest(text.as_bytes())[..8])
}

/// Builds every child of the Instrumentation.
pub fn build(input: &BuildInput<'_>) -> Result<Desired, InvalidSpec> {
    validate(input.instrumentation)?;
    let probe_image = input.grant.image.clone();
    let mut languages = Vec::new();
    for &language in &input.instrumentation.spec.languages {
        languages.push(build_language(input, language)?);
    }
    Ok(Desired {
        probe_image,
        languages,
    })
}

fn owner_reference(inst: &Instrumentation) -> OwnerReference {
    inst.controller_owner_ref(&())
        .expect("an Instrumentation read from the API server has a uid")
}

fn labels(inst: &Instrumentation, language: Language) -> BTreeMap<String, String> {
    BTreeMap::from([
        (APP_NAME_LABEL.to_owned(), APP_NAME.to_owned()),
        (APP_INSTANCE_LABEL.to_owned(), inst.name_any()),
        (APP_COMPONENT_LABEL.to_owned(), format!("probe-{language}")),
        (APP_PART_OF_LABEL.to_owned(), PART_OF_VALUE.to_owned()),
        (APP_MANAGED_BY_LABEL.to_owned(), MANAGED_BY_VALUE.to_owned()),
        (LANGUAGE_LABEL.to_owned(), language.to_string()),
    ])
}

/// Labels every namespaced child of the Instrumentation `name` carries.
pub fn children_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (APP_NAME_LABEL.to_owned(), APP_NAME.to_owned()),
        (APP_INSTANCE_LABEL.to_owned(), name.to_owned()),
        (APP_MANAGED_BY_LABEL.to_owned(), MANAGED_BY_VALUE.to_owned()),
    ])
}

/// Label selector (as a string) matching the namespaced children of every
/// Instrumentation: what the operator's child watches select.
pub fn all_children_selector() -> String {
    format!("{APP_NAME_LABEL}={APP_NAME},{APP_MANAGED_BY_LABEL}={MANAGED_BY_VALUE}")
}

fn namespaced_meta(inst: &Instrumentation, name: &str, language: Language) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: inst.namespace(),
        labels: Some(labels(inst, language)),
        owner_references: Some(vec![owner_reference(inst)]),
        ..ObjectMeta::default()
    }
}

fn build_language(
    input: &BuildInput<'_>,
    language: Language,
) -> Result<LanguageChildren, InvalidSpec> {
    let inst = input.instrumentation;
    let name = daemon_set_name(&inst.name_any(), language);

    let config = probe_config(input, language)?;
    let propagation = config.propagation.enabled();
    let config = config.to_yaml();
    let hash = config_hash(&config);

    let service_account = ServiceAccount {
        metadata: namespaced_meta(inst, &name, language),
        ..ServiceAccount::default()
    };

    let config_map = ConfigMap {
        metadata: namespaced_meta(inst, &name, language),
        data: Some(BTreeMap::from([(PROBE_CONFIG_FILE.to_owned(), config)])),
        ..ConfigMap::default()
    };

    let daemon_set = daemon_set(inst, &name, language, input.grant, &hash, propagation);
    Ok(LanguageChildren {
        language,
        service_account,
        config_map,
        daemon_set,
    })
}

/// The ServiceAccounts of every probe DaemonSet of `instrumentations`,
/// sorted: the subjects of the probes' ClusterRoleBinding.
pub fn probe_subjects<'a>(
    instrumentations: impl IntoIterator<Item = &'a Instrumentation>,
) -> Vec<Subject> {
    let mut subjects: Vec<Subject> = instrumentations
        .into_iter()
        .flat_map(|inst| {
            inst.spec.languages.iter().map(move |&language| Subject {
                kind: "ServiceAccount".into(),
                name: daemon_set_name(&inst.name_any(), language),
                namespace: inst.namespace(),
                ..Subject::default()
            })
        })
        .collect();
    subjects.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    subjects.dedup();
    subjects
}

/// The probes' ClusterRoleBinding as the operator applies it: only the
/// fields it owns (the install owns the rest, labels included), so that
/// Helm, Kustomize or ArgoCD and the operator never fight over it.
pub fn probe_binding(binding: &str, role: &str, subjects: Vec<Subject>) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(binding.to_owned()),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: role.to_owned(),
        },
        subjects: Some(subjects),
    }
}

/// Resource defaults per language: Go probes keep per-binary symbol and
/// struct-offset tables and per-goroutine state, Python probes only socket
/// state, so Go gets more memory.
pub fn default_resources(language: Language) -> ResourceRequirements {
    let (request_memory, limit_memory) = match language {
        Language::Go => ("128Mi", "512Mi"),
        Language::Python => ("64Mi", "256Mi"),
    };
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity("50m".into())),
            ("memory".to_owned(), Quantity(request_memory.into())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_owned(),
            Quantity(limit_memory.into()),
        )])),
        ..ResourceRequirements::default()
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn daemon_set(
    inst: &Instrumentation,
    name: &str,
    language: Language,
    grant: &Grant,
    hash: &str,
    propagation: bool,
) -> DaemonSet {
    let spec = &inst.spec;
    let probe = spec.probe.clone().unwrap_or_default();
    let Grant { image, privileged } = grant;
    let resources = spec
        .language_spec(language)
        .and_then(|l| l.resources.clone())
        .or_else(|| probe.resources.clone())
        .unwrap_or_else(|| default_resources(language));

    // No hostPath volume but the bpffs of propagation: see `HOST_MOUNTS_NONE`.
    let mut volumes: Vec<Volume> = Vec::new();
    let mut mounts: Vec<VolumeMount> = Vec::new();
    volumes.push(Volume {
        name: "config".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: name.into(),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    });
    mounts.push(VolumeMount {
        name: "config".into(),
        mount_path: CONFIG_DIR.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    });
    if let Some(tls) = &spec.exporter.tls {
        volumes.push(Volume {
            name: "exporter-tls".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(tls.secret_name.clone()),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: "exporter-tls".into(),
            mount_path: TLS_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }

    if propagation {
        volumes.push(Volume {
            name: "bpffs".into(),
            host_path: Some(HostPathVolumeSource {
                path: BPFFS_DIR.into(),
                // The directory exists on every kernel with BPF (it is
                // sysfs's mount point); whether a bpffs is mounted there is
                // the probe's check, so a node without one still traces.
                type_: Some("Directory".into()),
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: "bpffs".into(),
            mount_path: BPFFS_DIR.into(),
            ..VolumeMount::default()
        });
    }

    let security_context = if *privileged {
        SecurityContext {
            privileged: Some(true),
            run_as_user: Some(0),
            ..SecurityContext::default()
        }
    } else {
        SecurityContext {
            privileged: Some(false),
            allow_privilege_escalation: Some(false),
            run_as_user: Some(0),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                add: Some(
                    probe_capabilities(language)
                        .iter()
                        .map(|c| (*c).to_owned())
                        .collect(),
                ),
                drop: Some(vec!["ALL".into()]),
            }),
            // The runtime's default profile lets a process with SYS_ADMIN
            // call bpf(), perf_event_open(), unshare() and mount(): all the
            // probe needs (measured with containerd's profile on a real node).
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            ..SecurityContext::default()
        }
    };

    let container = Container {
        name: "probe".into(),
        image: Some(image.clone()),
        image_pull_policy: probe.image_pull_policy.clone(),
        args: Some(vec![
            "--language".into(),
            language.to_string(),
            "--config".into(),
            format!("{CONFIG_DIR}/{PROBE_CONFIG_FILE}"),
        ]),
        env: Some(vec![
            field_env("NODE_NAME", "spec.nodeName"),
            field_env("POD_NAME", "metadata.name"),
            field_env("POD_NAMESPACE", "metadata.namespace"),
        ]),
        ports: Some(vec![ContainerPort {
            name: Some("metrics".into()),
            container_port: METRICS_PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/readyz".into()),
                port: IntOrString::String("metrics".into()),
                ..HTTPGetAction::default()
            }),
            period_seconds: Some(10),
            ..Probe::default()
        }),
        resources: Some(resources),
        security_context: Some(security_context),
        volume_mounts: Some(mounts),
        ..Container::default()
    };

    let selector_labels = BTreeMap::from([
        (APP_NAME_LABEL.to_owned(), APP_NAME.to_owned()),
        (APP_INSTANCE_LABEL.to_owned(), inst.name_any()),
        (LANGUAGE_LABEL.to_owned(), language.to_string()),
    ]);
    let mut node_selector = BTreeMap::from([("kubernetes.io/os".to_owned(), "linux".to_owned())]);
    node_selector.extend(probe.node_selector.clone().unwrap_or_default());
    // Default: tolerate every taint, so a probe runs on every node
    // (control-plane and tainted pools included).
    let tolerations = probe.tolerations.clone().unwrap_or_else(|| {
        vec![Toleration {
            operator: Some("Exists".into()),
            ..Toleration::default()
        }]
    });

    DaemonSet {
        metadata: namespaced_meta(inst, name, language),
        spec: Some(DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some(selector_labels),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(inst, language)),
                    annotations: Some(BTreeMap::from([(
                        CONFIG_HASH_ANNOTATION.to_owned(),
                        hash.to_owned(),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(name.into()),
                    host_pid: Some(true),
                    containers: vec![container],
                    volumes: Some(volumes),
                    tolerations: Some(tolerations),
                    node_selector: Some(node_selector),
                    priority_class_name: probe.priority_class_name.clone(),
                    ..PodSpec::default()
                }),
            },
            ..DaemonSetSpec::default()
        }),
        ..DaemonSet::default()
    }
}

#[cfg(test)]
mod tests;
