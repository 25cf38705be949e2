//! Checks run on a collector config before it is rolled out.
//!
//! The goal is to refuse, with a message naming the bad key, what would make
//! the collector refuse to start — so a bad edit never replaces a working
//! collector with a crash-looping one. The checks mirror the collector's own
//! config validation (pipelines, references, connectors) plus what only
//! shows up at start time (endpoints that cannot be bound, port collisions),
//! plus the required settings of the components in the default distribution.
//! The e2e corpus test compares this with `otelcol validate`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{
    CollectorPort,
    config::{CollectorConfig, Kind, split_id},
    distribution::Distribution,
    ports::{self, EndpointError, PortCollision},
};

/// Signals a pipeline can carry.
const SIGNALS: &[&str] = &["traces", "metrics", "logs", "profiles"];

/// One problem in a collector config. Messages are lowercase, start with the
/// config path of the bad key and say how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "service.pipelines: no pipeline defined; add one, e.g. traces: {{receivers: [otlp], exporters: [debug]}}"
    )]
    NoPipelines,
    #[error(
        "service.pipelines.{id}: unknown signal {signal:?}; a pipeline id is traces, metrics, logs or profiles, optionally followed by /name"
    )]
    UnknownSignal { id: String, signal: String },
    #[error("service.pipelines.{pipeline}.{list}: empty; a pipeline needs at least one {kind}")]
    EmptyList {
        pipeline: String,
        list: &'static str,
        kind: &'static str,
    },
    #[error(
        "service.pipelines.{pipeline}.{list}: {id:?} is not defined under {sections}; define it there or remove it from the pipeline"
    )]
    Undefined {
        pipeline: String,
        list: &'static str,
        id: String,
        sections: &'static str,
    },
    #[error(
        "service.pipelines.{pipeline}.{list}: {id:?} is listed twice; list each component once"
    )]
    Duplicate {
        pipeline: String,
        list: &'static str,
        id: String,
    },
    #[error(
        "service.extensions: {id:?} is not defined under extensions; define it there or remove it"
    )]
    UndefinedExtension { id: String },
    #[error(
        "{section}.{id}: invalid component id; use a type made of letters, digits and '_' (starting with a letter), optionally followed by /name"
    )]
    BadId { section: &'static str, id: String },
    #[error(
        "{section}.{id}: component type {ty:?} is not in the default collector image (available: {available}); use one of those, or set spec.image to a distribution that has it"
    )]
    UnknownType {
        section: &'static str,
        id: String,
        ty: String,
        available: String,
    },
    #[error(
        "connectors.{id}: used as {used} in pipeline {pipeline:?} but not as {missing} in any pipeline it can feed; add it to the {missing_list} of a {targets} pipeline"
    )]
    ConnectorUnpaired {
        id: String,
        used: &'static str,
        pipeline: String,
        missing: &'static str,
        missing_list: &'static str,
        targets: String,
    },
    #[error("{0}")]
    Endpoint(#[from] EndpointError),
    #[error("{0}")]
    PortCollision(#[from] PortCollision),
    #[error("{path}: required; {hint}")]
    Required { path: String, hint: &'static str },
    #[error("{path}: {value} is not valid; {hint}")]
    BadValue {
        path: String,
        value: String,
        hint: &'static str,
    },
}

/// Which component types exist, if known.
#[derive(Debug, Clone, Copy)]
pub enum ComponentCheck<'a> {
    /// Check component types against this distribution (the default image).
    Distribution(&'a Distribution),
    /// Custom image: its components are unknown, skip the check.
    Skip,
}

/// The outcome of validation; an empty list of errors means valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub errors: Vec<ConfigError>,
    /// False when component types were not checked (custom image).
    pub components_checked: bool,
}

impl Report {
    pub fn is_valid(&self) -> bool {
        self.errors.is_empty()
    }

    /// One line for a condition message: the first problems, and how many more.
    pub fn summary(&self) -> String {
        const SHOWN: usize = 3;
        let mut msg = self
            .errors
            .iter()
            .take(SHOWN)
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        if self.errors.len() > SHOWN {
            msg.push_str(&format!("; and {} more", self.errors.len() - SHOWN));
        }
        msg
    }
}

fn valid_type(ty: &str) -> bool {
    let mut chars = ty.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && ty.len() <= 63
}

fn valid_id(id: &str) -> bool {
    match split_id(id) {
        (ty, None) => valid_type(ty),
        (ty, Some(name)) => valid_type(ty) && !name.is_empty() && name.len() <= 1024,
    }
}

/// Signals a connector type converts between (`(from, to)`), for the
/// connectors of the default distribution. `None`: unknown, not checked.
fn connector_routes(ty: &str) -> Option<&'static [(&'static str, &'static str)]> {
    match ty {
        "forward" => Some(&[
            ("traces", "traces"),
            ("metrics", "metrics"),
            ("logs", "logs"),
            ("profiles", "profiles"),
        ]),
        "spanmetrics" | "span_metrics" => Some(&[("traces", "metrics")]),
        _ => None,
    }
}

/// Where one connector is used: `(pipeline, signal)` as exporter, as receiver.
type ConnectorUse<'a> = (Vec<(&'a str, &'a str)>, Vec<(&'a str, &'a str)>);

/// One list of a pipeline: (key, kind name, ids, kinds it may name, sections, required).
type PipelineList<'a> = (
    &'static str,
    &'static str,
    &'a Option<Vec<String>>,
    &'static [Kind],
    &'static str,
    bool,
);

/// Validates `config` (and `spec.ports`, which share the pod's port space).
pub fn validate(
    config: &CollectorConfig,
    user_ports: &[CollectorPort],
    check: ComponentCheck<'_>,
) -> Report {
    let mut errors = Vec::new();

    // Component ids and types.
    for kind in Kind::ALL {
        for (id, _) in config.components(kind) {
            if !valid_id(id) {
                errors.push(ConfigError::BadId {
                    section: kind.section(),
                    id: id.clone(),
                });
                continue;
            }
            if let ComponentCheck::Distribution(dist) = check {
                let ty = split_id(id).0;
                let known = dist.types(kind);
                if !known.contains(ty) {
                    errors.push(ConfigError::UnknownType {
                        section: kind.section(),
                        id: id.clone(),
                        ty: ty.to_owned(),
                        available: if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.iter().cloned().collect::<Vec<_>>().join(", ")
                        },
                    });
                }
            }
        }
    }

    let defined = |kind: Kind, id: &str| config.components(kind).any(|(k, _)| k == id);

    // Pipelines.
    let pipelines = config.service.pipelines.as_ref().filter(|p| !p.is_empty());
    let Some(pipelines) = pipelines else {
        errors.push(ConfigError::NoPipelines);
        return finish(config, user_ports, check, errors);
    };
    // connector id -> (pipelines using it as exporter, as receiver), with signals.
    let mut connector_use: BTreeMap<&str, ConnectorUse<'_>> = BTreeMap::new();
    for (pid, pipeline) in pipelines {
        let signal = split_id(pid).0;
        if !SIGNALS.contains(&signal) || split_id(pid).1.is_some_and(str::is_empty) {
            errors.push(ConfigError::UnknownSignal {
                id: pid.clone(),
                signal: signal.to_owned(),
            });
            continue;
        }
        let lists: [PipelineList<'_>; 3] = [
            (
                "receivers",
                "receiver",
                &pipeline.receivers,
                &[Kind::Receiver, Kind::Connector],
                "receivers or connectors",
                true,
            ),
            (
                "processors",
                "processor",
                &pipeline.processors,
                &[Kind::Processor],
                "processors",
                false,
            ),
            (
                "exporters",
                "exporter",
                &pipeline.exporters,
                &[Kind::Exporter, Kind::Connector],
                "exporters or connectors",
                true,
            ),
        ];
        for (list, kind_name, ids, kinds, sections, required) in lists {
            let ids = ids.as_deref().unwrap_or_default();
            if required && ids.is_empty() {
                errors.push(ConfigError::EmptyList {
                    pipeline: pid.clone(),
                    list,
                    kind: kind_name,
                });
            }
            let mut seen = BTreeSet::new();
            for id in ids {
                if !seen.insert(id.as_str()) {
                    errors.push(ConfigError::Duplicate {
                        pipeline: pid.clone(),
                        list,
                        id: id.clone(),
                    });
                }
                if !kinds.iter().any(|k| defined(*k, id)) {
                    errors.push(ConfigError::Undefined {
                        pipeline: pid.clone(),
                        list,
                        id: id.clone(),
                        sections,
                    });
                } else if defined(Kind::Connector, id) && list != "processors" {
                    let entry = connector_use.entry(id.as_str()).or_default();
                    if list == "exporters" {
                        entry.0.push((pid.as_str(), signal));
                    } else {
                        entry.1.push((pid.as_str(), signal));
                    }
                }
            }
        }
    }

    // Connectors must link an exporting pipeline to a receiving one.
    for (id, (as_exporter, as_receiver)) in &connector_use {
        let routes = connector_routes(split_id(id).0);
        let supports = |from: &str, to: &str| {
            routes.is_none_or(|r| r.iter().any(|(f, t)| *f == from && *t == to))
        };
        // Signals on the other side this connector type can link to `sig`.
        let targets = |sig: &str, forward: bool| -> String {
            let found = routes.map(|r| {
                r.iter()
                    .filter(|(f, t)| if forward { *f == sig } else { *t == sig })
                    .map(|(f, t)| if forward { *t } else { *f })
                    .collect::<Vec<_>>()
                    .join(" or ")
            });
            match found {
                Some(s) if !s.is_empty() => s,
                // Unknown connector type, or none of its routes fits.
                _ => "compatible".to_owned(),
            }
        };
        for (pid, sig) in as_exporter {
            if !as_receiver.iter().any(|(_, to)| supports(sig, to)) {
                errors.push(ConfigError::ConnectorUnpaired {
                    id: (*id).to_owned(),
                    used: "exporter",
                    pipeline: (*pid).to_owned(),
                    missing: "receiver",
                    missing_list: "receivers",
                    targets: targets(sig, true),
                });
            }
        }
        for (pid, sig) in as_receiver {
            if !as_exporter.iter().any(|(_, from)| supports(from, sig)) {
                errors.push(ConfigError::ConnectorUnpaired {
                    id: (*id).to_owned(),
                    used: "receiver",
                    pipeline: (*pid).to_owned(),
                    missing: "exporter",
                    missing_list: "exporters",
                    targets: targets(sig, false),
                });
            }
        }
    }

    for id in config.service.extensions.iter().flatten() {
        if !defined(Kind::Extension, id) {
            errors.push(ConfigError::UndefinedExtension { id: id.clone() });
        }
    }

    finish(config, user_ports, check, errors)
}

fn finish(
    config: &CollectorConfig,
    user_ports: &[CollectorPort],
    check: ComponentCheck<'_>,
    mut errors: Vec<ConfigError>,
) -> Report {
    component_settings(config, &mut errors);
    let (derived, endpoint_errors) = ports::derive_ports(config);
    errors.extend(endpoint_errors.into_iter().map(ConfigError::from));
    let merged = ports::merge_user_ports(derived, user_ports);
    errors.extend(
        ports::collisions(&merged)
            .into_iter()
            .map(ConfigError::from),
    );
    Report {
        errors,
        components_checked: matches!(check, ComponentCheck::Distribution(_)),
    }
}

fn non_empty_str(v: &Value, key: &str) -> bool {
    v.get(key)
        .and_then(Value::as_str)
        .is_some_and(|s| !s.trim().is_empty())
}

/// Required settings of well-known components — the collector refuses these
/// configs at start, so we refuse them before rollout.
fn component_settings(config: &CollectorConfig, errors: &mut Vec<ConfigError>) {
    for (id, v) in config.components(Kind::Exporter) {
        let path = |k: &str| format!("exporters.{id}.{k}");
        match split_id(id).0 {
            "otlp" | "otlp_grpc" if !non_empty_str(v, "endpoint") => {
                errors.push(ConfigError::Required {
                    path: path("endpoint"),
                    hint: "set the OTLP/gRPC target, e.g. tempo.observability.svc:4317",
                })
            }
            "otlphttp" | "otlp_http"
                if ![
                    "endpoint",
                    "traces_endpoint",
                    "metrics_endpoint",
                    "logs_endpoint",
                    "profiles_endpoint",
                ]
                .iter()
                .any(|k| non_empty_str(v, k)) =>
            {
                errors.push(ConfigError::Required {
                    path: path("endpoint"),
                    hint: "set the OTLP/HTTP base URL, e.g. http://tempo.observability.svc:4318",
                });
            }
            "file" if !non_empty_str(v, "path") => errors.push(ConfigError::Required {
                path: path("path"),
                hint: "set the file to write, e.g. /tmp/otel.jsonl",
            }),
            "prometheus" if !non_empty_str(v, "endpoint") => errors.push(ConfigError::Required {
                path: path("endpoint"),
                hint: "set the address to serve metrics on, e.g. 0.0.0.0:8889",
            }),
            "debug" => {
                if let Some(verbosity) = v.get("verbosity")
                    && !matches!(verbosity.as_str(), Some("basic" | "normal" | "detailed"))
                {
                    errors.push(ConfigError::BadValue {
                        path: path("verbosity"),
                        value: verbosity.to_string(),
                        hint: "use basic, normal or detailed",
                    });
                }
            }
            _ => {}
        }
    }
    for (id, v) in config.components(Kind::Receiver) {
        let ty = split_id(id).0;
        if matches!(ty, "otlp" | "jaeger")
            && v.get("protocols")
                .and_then(Value::as_object)
                .is_none_or(serde_json::Map::is_empty)
        {
            errors.push(ConfigError::Required {
                path: format!("receivers.{id}.protocols"),
                hint: "enable at least one protocol, e.g. protocols: {grpc: {endpoint: 0.0.0.0:4317}}",
            });
        }
        if matches!(ty, "hostmetrics" | "host_metrics")
            && v.get("scrapers")
                .and_then(Value::as_object)
                .is_none_or(serde_json::Map::is_empty)
        {
            errors.push(ConfigError::Required {
                path: format!("receivers.{id}.scrapers"),
                hint: "enable at least one scraper, e.g. scrapers: {cpu: {}}",
            });
        }
    }
    for (id, v) in config.components(Kind::Processor) {
        match split_id(id).0 {
            "memory_limiter" => {
                if !v
                    .get("check_interval")
                    .and_then(Value::as_str)
                    .is_some_and(|s| s != "0s" && s != "0")
                {
                    errors.push(ConfigError::Required {
                        path: format!("processors.{id}.check_interval"),
                        hint: "set a positive duration, e.g. 1s",
                    });
                }
                let limit = |k: &str| v.get(k).and_then(Value::as_u64).is_some_and(|n| n > 0);
                if !limit("limit_mib") && !limit("limit_percentage") {
                    errors.push(ConfigError::Required {
                        path: format!("processors.{id}.limit_mib"),
                        hint: "set limit_mib or limit_percentage",
                    });
                }
            }
            "resource" | "attributes"
                if v.get(if split_id(id).0 == "resource" {
                    "attributes"
                } else {
                    "actions"
                })
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty)
                    && !(split_id(id).0 == "attributes"
                        && (v.get("include").is_some() || v.get("exclude").is_some())) =>
            {
                let key = if split_id(id).0 == "resource" {
                    "attributes"
                } else {
                    "actions"
                };
                errors.push(ConfigError::Required {
                    path: format!("processors.{id}.{key}"),
                    hint: "list at least one action, e.g. [{key: env, value: prod, action: upsert}]",
                });
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::distribution::default_distribution;

    fn config(yaml: &str) -> CollectorConfig {
        serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("test config must parse: {e}"))
    }

    /// Without the component-type check (the default image has no connectors).
    fn skip_types(yaml: &str) -> Report {
        validate(&config(yaml), &[], ComponentCheck::Skip)
    }

    fn check(yaml: &str) -> Report {
        validate(
            &config(yaml),
            &[],
            ComponentCheck::Distribution(default_distribution()),
        )
    }

    const SEED: &str = r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 0.0.0.0:4317
      http:
        endpoint: 0.0.0.0:4318
exporters:
  debug:
    verbosity: "detailed"
processors:
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: []
      exporters: [debug]
"#;

    #[test]
    fn seed_config_with_null_processors_is_valid() {
        let r = check(SEED);
        assert!(
            r.is_valid(),
            "the seed's config must validate: {}",
            r.summary()
        );
        assert!(r.components_checked);
    }

    #[test]
    fn undefined_exporter_is_named_with_its_pipeline() {
        let r = check(&SEED.replace("exporters: [debug]", "exporters: [debug, otlp/tempo]"));
        assert_eq!(
            r.summary(),
            "service.pipelines.traces.exporters: \"otlp/tempo\" is not defined under exporters or connectors; define it there or remove it from the pipeline"
        );
    }

    #[test]
    fn unknown_component_type_is_refused_only_for_the_default_image() {
        let yaml = SEED.replace("debug:\n", "kafka:\n    brokers: [a]\n  debug:\n");
        let r = check(&yaml);
        assert!(
            matches!(r.errors.as_slice(), [ConfigError::UnknownType { ty, .. }] if ty == "kafka"),
            "kafka is not in the default distribution: {:?}",
            r.errors
        );
        let custom = validate(&config(&yaml), &[], ComponentCheck::Skip);
        assert!(
            custom.is_valid() && !custom.components_checked,
            "custom images skip the type check: {custom:?}"
        );
    }

    #[test]
    fn missing_pipelines_and_bad_signal_are_reported() {
        assert_eq!(
            check("receivers: {otlp: {protocols: {grpc: null}}}\nservice: {}").errors,
            [ConfigError::NoPipelines]
        );
        let r = check(&SEED.replace("    traces:", "    spans:"));
        assert!(
            matches!(r.errors.as_slice(), [ConfigError::UnknownSignal { signal, .. }] if signal == "spans"),
            "{:?}",
            r.errors
        );
    }

    #[test]
    fn pipeline_without_receivers_is_refused() {
        let r = check(&SEED.replace("receivers: [otlp]", "receivers: []"));
        assert_eq!(
            r.errors,
            [ConfigError::EmptyList {
                pipeline: "traces".into(),
                list: "receivers",
                kind: "receiver"
            }]
        );
    }

    #[test]
    fn bad_endpoint_and_port_collision_name_the_keys() {
        let r = check(&SEED.replace("0.0.0.0:4318", "0.0.0.0:43x8"));
        assert_eq!(
            r.summary(),
            "receivers.otlp.protocols.http.endpoint: endpoint \"0.0.0.0:43x8\" is not host:port with a port between 1 and 65535; write it like \"0.0.0.0:4317\""
        );
        let r = check(&SEED.replace("0.0.0.0:4318", "0.0.0.0:4317"));
        assert!(
            matches!(r.errors.as_slice(), [ConfigError::PortCollision(c)] if c.port == 4317),
            "grpc and http on one port must collide: {:?}",
            r.errors
        );
    }

    #[test]
    fn connector_must_be_used_on_both_sides_with_compatible_signals() {
        let base = "receivers: {otlp: {protocols: {grpc: null}}}\nexporters: {debug: null}\nconnectors: {spanmetrics: null}\n";
        let ok = skip_types(&format!(
            "{base}service: {{pipelines: {{traces: {{receivers: [otlp], exporters: [spanmetrics]}}, metrics: {{receivers: [spanmetrics], exporters: [debug]}}}}}}"
        ));
        assert!(
            ok.is_valid(),
            "traces -> spanmetrics -> metrics is valid: {}",
            ok.summary()
        );
        let bad = skip_types(&format!(
            "{base}service: {{pipelines: {{traces: {{receivers: [otlp], exporters: [spanmetrics]}}, logs: {{receivers: [spanmetrics], exporters: [debug]}}}}}}"
        ));
        assert_eq!(
            bad.errors.len(),
            2,
            "both ends are unpaired: {:?}",
            bad.errors
        );
        assert!(
            bad.summary()
                .starts_with("connectors.spanmetrics: used as exporter in pipeline \"traces\""),
            "{}",
            bad.summary()
        );
    }

    #[test]
    fn required_settings_of_known_components_are_checked() {
        let r = check(&SEED.replace(
            "debug:\n    verbosity: \"detailed\"",
            "debug:\n    verbosity: loud\n  otlp: {}",
        ));
        let paths: Vec<_> = r.errors.iter().map(ToString::to_string).collect();
        assert_eq!(r.errors.len(), 2, "{paths:?}");
        assert!(
            paths[0].starts_with("exporters.debug.verbosity: \"loud\" is not valid"),
            "{paths:?}"
        );
        assert!(
            paths[1].starts_with("exporters.otlp.endpoint: required"),
            "{paths:?}"
        );
    }

    #[test]
    fn summary_caps_the_number_of_listed_problems() {
        let r = check(
            "exporters: {a: null, b: null, c: null, d: null}\nservice: {pipelines: {traces: {}}}",
        );
        assert!(r.errors.len() > 3, "{:?}", r.errors);
        assert!(
            r.summary()
                .ends_with(&format!("; and {} more", r.errors.len() - 3)),
            "{}",
            r.summary()
        );
    }
}
