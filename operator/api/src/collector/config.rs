//! The collector's own configuration, as it appears in
//! `TelemetryCollector.spec.config` and in the rendered ConfigMap.
//!
//! Component settings are free-form (each component defines its own), so
//! their schema preserves unknown fields and accepts `null` — `debug:` with no
//! value is a valid collector config and must survive the API server, or the
//! pipeline naming `debug` would point at nothing.

use std::collections::BTreeMap;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Components of one kind, by ID (`type` or `type/name`).
pub type Components = BTreeMap<String, Value>;

/// The collector configuration (same shape as the collector's config file).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CollectorConfig {
    /// Receivers by ID (`type` or `type/name`), e.g. `otlp`; values are each
    /// receiver's own settings (may be empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "components_schema")]
    pub receivers: Option<Components>,
    /// Processors by ID, e.g. `batch` or `memory_limiter`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "components_schema")]
    pub processors: Option<Components>,
    /// Exporters by ID, e.g. `debug` or `otlp/tempo`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "components_schema")]
    pub exporters: Option<Components>,
    /// Connectors by ID (an exporter of one pipeline and a receiver of another).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "components_schema")]
    pub connectors: Option<Components>,
    /// Extensions by ID, e.g. `health_check`; enable them in service.extensions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "components_schema")]
    pub extensions: Option<Components>,
    /// Which components run: the pipelines and enabled extensions.
    pub service: ServiceConfig,
}

/// The `service` section: pipelines, enabled extensions and the collector's
/// own telemetry settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceConfig {
    /// Extension IDs to start (each must be defined under extensions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Vec<String>>,
    /// Pipelines by ID: `traces`, `metrics`, `logs` or `profiles`, optionally
    /// followed by `/name` (e.g. `traces/tempo`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipelines: Option<BTreeMap<String, Pipeline>>,
    /// The collector's own logs and metrics (free-form, as the collector reads it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_schema")]
    pub telemetry: Option<Value>,
}

/// One pipeline: data flows from the receivers through the processors (in
/// order) to the exporters.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pipeline {
    /// Receiver (or connector) IDs feeding this pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receivers: Option<Vec<String>>,
    /// Processor IDs, applied in this order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processors: Option<Vec<String>>,
    /// Exporter (or connector) IDs receiving this pipeline's data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exporters: Option<Vec<String>>,
}

fn components_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "nullable": true,
        "additionalProperties": {
            "description": "The component's own settings (free-form; may be empty or null for defaults).",
            "x-kubernetes-preserve-unknown-fields": true,
            "nullable": true
        }
    })
}

fn free_form_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "nullable": true,
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// Which section a component belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Receiver,
    Processor,
    Exporter,
    Connector,
    Extension,
}

impl Kind {
    /// Singular name as the collector spells it in messages.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Receiver => "receiver",
            Self::Processor => "processor",
            Self::Exporter => "exporter",
            Self::Connector => "connector",
            Self::Extension => "extension",
        }
    }

    /// The config section holding components of this kind.
    pub const fn section(self) -> &'static str {
        match self {
            Self::Receiver => "receivers",
            Self::Processor => "processors",
            Self::Exporter => "exporters",
            Self::Connector => "connectors",
            Self::Extension => "extensions",
        }
    }

    pub const ALL: [Kind; 5] = [
        Self::Receiver,
        Self::Processor,
        Self::Exporter,
        Self::Connector,
        Self::Extension,
    ];
}

impl CollectorConfig {
    /// The components of one kind (empty when the section is absent or null).
    pub fn components(&self, kind: Kind) -> impl Iterator<Item = (&String, &Value)> {
        let section = match kind {
            Kind::Receiver => &self.receivers,
            Kind::Processor => &self.processors,
            Kind::Exporter => &self.exporters,
            Kind::Connector => &self.connectors,
            Kind::Extension => &self.extensions,
        };
        section.iter().flatten()
    }

    /// The config file content the collector reads (YAML; deterministic, so
    /// its hash only changes when the config does).
    pub fn render(&self) -> String {
        serde_yaml::to_string(self).unwrap_or_else(|e| {
            // Serializing plain maps, lists and JSON values cannot fail.
            unreachable!("collector config is always serializable: {e}")
        })
    }

    /// Whether a pipeline carries profiles (`profiles` or `profiles/<name>`).
    pub fn has_profiles_pipeline(&self) -> bool {
        self.service
            .pipelines
            .iter()
            .flatten()
            .any(|(id, _)| split_id(id).0 == "profiles")
    }

    /// The feature gates the collector needs to run this config.
    ///
    /// Only what the config uses: the collector exits at start on a gate it
    /// does not know, and `spec.image` may name a build from before a gate
    /// existed or after it was retired (gates are removed some releases
    /// after their feature goes stable). A gate passed to every collector
    /// would also change every pod template, and so restart every
    /// collector, on the operator upgrade that introduced it.
    pub fn feature_gates(&self) -> Vec<&'static str> {
        let mut gates = Vec::new();
        if self.has_profiles_pipeline() {
            gates.push(PROFILES_FEATURE_GATE);
        }
        gates
    }

    /// The collector's arguments to run this config from `config_path`:
    /// what the operator renders into the pod and what the tests give
    /// `otelcol validate`, so both judge the same command line.
    pub fn command_args(&self, config_path: &str) -> Vec<String> {
        let mut args = vec![format!("--config={config_path}")];
        let gates = self.feature_gates();
        if !gates.is_empty() {
            let enabled: Vec<String> = gates.iter().map(|g| format!("+{g}")).collect();
            args.push(format!("--feature-gates={}", enabled.join(",")));
        }
        args
    }
}

/// The collector refuses `profiles` pipelines unless this gate is on: the
/// signal is alpha in the distribution the default image is built from
/// (`operator/api/distribution/manifest.yaml`; OTLP profiles `v1development`).
pub const PROFILES_FEATURE_GATE: &str = "service.profilesSupport";

/// Splits a component ID into its type and optional name: `otlp/tempo` →
/// (`otlp`, `Some("tempo")`).
pub fn split_id(id: &str) -> (&str, Option<&str>) {
    match id.split_once('/') {
        Some((ty, name)) => (ty, Some(name)),
        None => (id, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> CollectorConfig {
        serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("test config must parse: {e}"))
    }

    #[test]
    fn a_config_without_profiles_runs_with_the_config_flag_only() {
        let c = config(
            "receivers: {otlp: {}}\nexporters: {debug: {}}\n\
             service: {pipelines: {traces: {receivers: [otlp], exporters: [debug]}, \
             metrics: {receivers: [otlp], exporters: [debug]}}}",
        );
        assert!(c.feature_gates().is_empty(), "no gate is needed");
        assert_eq!(
            c.command_args("/conf/collector.yaml"),
            ["--config=/conf/collector.yaml"],
            "existing collectors keep their command line"
        );
    }

    #[test]
    fn a_profiles_pipeline_named_or_not_turns_the_profiles_gate_on() {
        for id in ["profiles", "profiles/backend"] {
            let c = config(&format!(
                "receivers: {{otlp: {{}}}}\nexporters: {{debug: {{}}}}\n\
                 service: {{pipelines: {{traces: {{receivers: [otlp], exporters: [debug]}}, \
                 {id}: {{receivers: [otlp], exporters: [debug]}}}}}}"
            ));
            assert_eq!(
                c.command_args("/conf/collector.yaml"),
                [
                    "--config=/conf/collector.yaml",
                    "--feature-gates=+service.profilesSupport"
                ],
                "pipeline {id:?} needs the gate"
            );
        }
    }
}
