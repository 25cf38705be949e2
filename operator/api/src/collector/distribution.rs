//! The component types offered by Ferrotel's collector distribution (the
//! default image), derived from the builder manifest it is built from.
//!
//! The manifest lists Go modules, not component types. A module named
//! `<type><kind>` (e.g. `otlpreceiver`) provides type `<type>`; the few
//! components whose type is spelled differently from their module are listed
//! in [`TYPE_OVERRIDES`]. The e2e corpus test compares the result with
//! `otelcol components` of the real binary, so a drift fails a test.

use std::{collections::BTreeSet, sync::LazyLock};

use serde::Deserialize;

use super::config::Kind;

/// The OpenTelemetry Collector Builder manifest of the default image.
pub const MANIFEST: &str = include_str!("../../distribution/manifest.yaml");

/// Module stems whose component type differs from the stem, per kind
/// suffix. Since v0.14x the OTLP exporters are `otlp_grpc`/`otlp_http`, and
/// by v0.165 several contrib types are snake_case; the old names that keep
/// working as deprecated aliases are accepted too (see [`ALIASES`]). The
/// tail-sampling processor has no alias: `tailsampling` is refused by the
/// collector itself.
const TYPE_OVERRIDES: &[(&str, &str, &[&str])] = &[
    ("processor", "memorylimiter", &["memory_limiter"]),
    ("processor", "tailsampling", &["tail_sampling"]),
    ("extension", "healthcheck", &["health_check"]),
    ("exporter", "otlp", &["otlp_grpc", "otlp"]),
    ("exporter", "otlphttp", &["otlp_http", "otlphttp"]),
    (
        "exporter",
        "prometheusremotewrite",
        &["prometheus_remote_write", "prometheusremotewrite"],
    ),
    ("receiver", "hostmetrics", &["host_metrics", "hostmetrics"]),
    ("connector", "spanmetrics", &["span_metrics", "spanmetrics"]),
];

/// Types we accept that `otelcol components` does not list because they are
/// deprecated aliases of a listed type: `(section, alias)`.
pub const ALIASES: &[(&str, &str)] = &[
    ("exporters", "otlp"),
    ("exporters", "otlphttp"),
    ("exporters", "prometheusremotewrite"),
    ("receivers", "hostmetrics"),
    ("connectors", "spanmetrics"),
];

#[derive(Debug, Deserialize)]
struct Manifest {
    #[serde(default)]
    receivers: Vec<Module>,
    #[serde(default)]
    processors: Vec<Module>,
    #[serde(default)]
    exporters: Vec<Module>,
    #[serde(default)]
    connectors: Vec<Module>,
    #[serde(default)]
    extensions: Vec<Module>,
}

#[derive(Debug, Deserialize)]
struct Module {
    gomod: String,
}

/// The component types of one distribution, per kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Distribution {
    pub receivers: BTreeSet<String>,
    pub processors: BTreeSet<String>,
    pub exporters: BTreeSet<String>,
    pub connectors: BTreeSet<String>,
    pub extensions: BTreeSet<String>,
}

impl Distribution {
    /// The types of `kind`.
    pub fn types(&self, kind: Kind) -> &BTreeSet<String> {
        match kind {
            Kind::Receiver => &self.receivers,
            Kind::Processor => &self.processors,
            Kind::Exporter => &self.exporters,
            Kind::Connector => &self.connectors,
            Kind::Extension => &self.extensions,
        }
    }

    /// Parses a builder manifest.
    pub fn from_manifest(yaml: &str) -> Result<Self, serde_yaml::Error> {
        let m: Manifest = serde_yaml::from_str(yaml)?;
        let types = |mods: &[Module], suffix: &str| -> BTreeSet<String> {
            mods.iter()
                .flat_map(|m| {
                    let path = m.gomod.split_whitespace().next().unwrap_or_default();
                    let module = path.rsplit('/').next().unwrap_or(path);
                    let stem = module.strip_suffix(suffix).unwrap_or(module);
                    TYPE_OVERRIDES
                        .iter()
                        .find(|(k, s, _)| *k == suffix && *s == stem)
                        .map_or_else(
                            || vec![stem.to_owned()],
                            |(_, _, t)| t.iter().map(|t| (*t).to_owned()).collect(),
                        )
                })
                .collect()
        };
        Ok(Self {
            receivers: types(&m.receivers, "receiver"),
            processors: types(&m.processors, "processor"),
            exporters: types(&m.exporters, "exporter"),
            connectors: types(&m.connectors, "connector"),
            extensions: types(&m.extensions, "extension"),
        })
    }
}

/// The default image's distribution.
pub fn default_distribution() -> &'static Distribution {
    static DIST: LazyLock<Distribution> = LazyLock::new(|| {
        Distribution::from_manifest(MANIFEST)
            .unwrap_or_else(|e| panic!("embedded distribution manifest is invalid: {e}"))
    });
    &DIST
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_manifest_yields_the_seed_components() {
        let d = default_distribution();
        assert!(
            d.receivers.contains("otlp"),
            "otlp receiver missing: {:?}",
            d.receivers
        );
        assert!(
            d.exporters.contains("debug"),
            "debug exporter missing: {:?}",
            d.exporters
        );
        assert!(
            d.processors.contains("batch"),
            "batch processor missing: {:?}",
            d.processors
        );
    }

    #[test]
    fn module_names_map_to_component_types_with_overrides() {
        let d = Distribution::from_manifest(
            "processors:\n  - gomod: go.opentelemetry.io/collector/processor/memorylimiterprocessor v1\n\
             extensions:\n  - gomod: example.com/x/extension/healthcheckextension v1\n\
             exporters:\n  - gomod: example.com/x/otlphttpexporter v1\n",
        )
        .unwrap_or_else(|e| panic!("test manifest must parse: {e}"));
        assert_eq!(d.processors.iter().collect::<Vec<_>>(), ["memory_limiter"]);
        assert_eq!(d.extensions.iter().collect::<Vec<_>>(), ["health_check"]);
        assert_eq!(
            d.exporters.iter().collect::<Vec<_>>(),
            ["otlp_http", "otlphttp"],
            "new name and alias"
        );
        assert!(d.receivers.is_empty(), "absent sections are empty");
    }
}
