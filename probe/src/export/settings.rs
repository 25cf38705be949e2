//! Exporter settings: the config file's `exporter` section with the
//! OpenTelemetry SDK environment variables applied on top.
//!
//! Precedence, highest first (see `docs/probe-export.md`):
//! 1. signal-specific variables (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
//!    `..._METRICS_ENDPOINT`, `..._TRACES_PROTOCOL`, `..._TRACES_HEADERS`, ...);
//! 2. the generic variables (`OTEL_EXPORTER_OTLP_ENDPOINT`, `..._PROTOCOL`,
//!    `..._HEADERS`, `..._TIMEOUT`, `..._CERTIFICATE`, ...);
//! 3. the config file (`exporter.endpoint`, `protocol`, `headers`, `tls`, ...);
//! 4. defaults (`http://localhost:4317` for gRPC, `http://localhost:4318`
//!    for HTTP/protobuf).
//!
//! Headers merge rather than replace: config, then generic, then signal
//! variables, later keys winning. As in the SDKs, a signal-specific HTTP
//! endpoint is used as-is, while a generic or config endpoint gets
//! `/v1/traces` or `/v1/metrics` appended.

use std::collections::BTreeMap;
use std::time::Duration;

use ferrotel_api::probe_config::{ExporterConfig, OtlpProtocol, TlsConfig};

/// The OTLP signals the probe exports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Traces,
    Metrics,
    /// Alpha in OTLP (`v1development`); only sent when profiling is on.
    Profiles,
}

impl Signal {
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
            Signal::Profiles => "profiles",
        }
    }
    fn env_infix(self) -> &'static str {
        match self {
            Signal::Traces => "TRACES",
            Signal::Metrics => "METRICS",
            Signal::Profiles => "PROFILES",
        }
    }
}

/// A setting the user got wrong.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SettingsError {
    #[error(
        "unsupported OTLP protocol {value:?} in {source_name}; use \"grpc\" or \"http/protobuf\""
    )]
    Protocol { value: String, source_name: String },
    #[error(
        "invalid OTLP endpoint {value:?} in {source_name}; use a URL such as \"http://otel-collector:4317\""
    )]
    Endpoint { value: String, source_name: String },
    #[error("invalid number {value:?} in {source_name}; use a whole number of {unit}")]
    Number {
        value: String,
        source_name: String,
        unit: &'static str,
    },
}

/// Resolved settings of one signal's exporter.
#[derive(Clone, Debug, PartialEq)]
pub struct SignalSettings {
    pub signal: Signal,
    pub protocol: OtlpProtocol,
    /// For gRPC: scheme://host:port; for HTTP: the full URL to POST to.
    pub endpoint: String,
    /// Where the endpoint came from, for logs and errors.
    pub endpoint_source: String,
    pub headers: BTreeMap<String, String>,
    pub timeout: Duration,
    pub tls: Option<TlsConfig>,
}

/// Everything the exporters need.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportSettings {
    pub traces: SignalSettings,
    pub metrics: SignalSettings,
    pub profiles: SignalSettings,
    pub max_queue_size: usize,
    pub max_export_batch_size: usize,
    pub scheduled_delay: Duration,
    pub metrics_interval: Duration,
}

/// Reads a variable; injected so tests need not touch the process environment.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The real process environment (empty values count as unset, as in the SDKs).
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn parse_protocol(value: &str, source_name: &str) -> Result<OtlpProtocol, SettingsError> {
    match value.trim() {
        "grpc" => Ok(OtlpProtocol::Grpc),
        "http/protobuf" => Ok(OtlpProtocol::HttpProtobuf),
        other => Err(SettingsError::Protocol {
            value: other.to_owned(),
            source_name: source_name.to_owned(),
        }),
    }
}

fn parse_u64(value: &str, source_name: &str, unit: &'static str) -> Result<u64, SettingsError> {
    value.trim().parse().map_err(|_| SettingsError::Number {
        value: value.to_owned(),
        source_name: source_name.to_owned(),
        unit,
    })
}

fn check_endpoint(value: &str, source_name: &str) -> Result<String, SettingsError> {
    let value = value.trim();
    let bad = || SettingsError::Endpoint {
        value: value.to_owned(),
        source_name: source_name.to_owned(),
    };
    let rest = value
        .strip_prefix("http://")
        .or_else(|| value.strip_prefix("https://"))
        .ok_or_else(bad)?;
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() {
        return Err(bad());
    }
    value.parse::<http::Uri>().map_err(|_| bad())?;
    Ok(value.to_owned())
}

/// Parses `key=value,key2=value2` header lists (values percent-decoded).
pub fn parse_headers(text: &str) -> BTreeMap<String, String> {
    crate::telemetry::resource::parse_resource_attributes(text)
}

impl ExportSettings {
    pub fn resolve(config: &ExporterConfig, env: EnvLookup<'_>) -> Result<Self, SettingsError> {
        let num = |name: &str, unit| env(name).map(|v| parse_u64(&v, name, unit)).transpose();
        Ok(Self {
            traces: SignalSettings::resolve(Signal::Traces, config, env)?,
            metrics: SignalSettings::resolve(Signal::Metrics, config, env)?,
            profiles: SignalSettings::resolve(Signal::Profiles, config, env)?,
            max_queue_size: num("OTEL_BSP_MAX_QUEUE_SIZE", "spans")?
                .map_or(config.max_queue_size, |v| v as usize),
            max_export_batch_size: num("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "spans")?
                .map_or(config.max_export_batch_size, |v| v as usize),
            scheduled_delay: Duration::from_millis(
                num("OTEL_BSP_SCHEDULE_DELAY", "milliseconds")?
                    .unwrap_or(config.scheduled_delay_millis),
            ),
            metrics_interval: Duration::from_millis(
                num("OTEL_METRIC_EXPORT_INTERVAL", "milliseconds")?
                    .unwrap_or(config.metrics_interval_millis),
            ),
        })
    }
}

impl SignalSettings {
    pub fn resolve(
        signal: Signal,
        config: &ExporterConfig,
        env: EnvLookup<'_>,
    ) -> Result<Self, SettingsError> {
        let specific = |suffix: &str| format!("OTEL_EXPORTER_OTLP_{}_{suffix}", signal.env_infix());
        let generic = |suffix: &str| format!("OTEL_EXPORTER_OTLP_{suffix}");
        let first = |suffix: &str| -> Option<(String, String)> {
            let s = specific(suffix);
            if let Some(v) = env(&s) {
                return Some((v, s));
            }
            let g = generic(suffix);
            env(&g).map(|v| (v, g))
        };

        let protocol = match first("PROTOCOL") {
            Some((value, name)) => parse_protocol(&value, &name)?,
            None => config.protocol,
        };
        let path = match signal {
            Signal::Traces => "/v1/traces",
            Signal::Metrics => "/v1/metrics",
            Signal::Profiles => "/v1development/profiles",
        };
        let append_path = |base: &str| match protocol {
            OtlpProtocol::Grpc => base.to_owned(),
            OtlpProtocol::HttpProtobuf => format!("{}{path}", base.trim_end_matches('/')),
        };
        let (endpoint, endpoint_source) = if let Some(v) = env(&specific("ENDPOINT")) {
            (
                check_endpoint(&v, &specific("ENDPOINT"))?,
                specific("ENDPOINT"),
            )
        } else if let Some(v) = env(&generic("ENDPOINT")) {
            (
                append_path(&check_endpoint(&v, &generic("ENDPOINT"))?),
                generic("ENDPOINT"),
            )
        } else if !config.endpoint.trim().is_empty() {
            (
                append_path(&check_endpoint(&config.endpoint, "exporter.endpoint")?),
                "exporter.endpoint".to_owned(),
            )
        } else {
            let default = match protocol {
                OtlpProtocol::Grpc => "http://localhost:4317",
                OtlpProtocol::HttpProtobuf => "http://localhost:4318",
            };
            (append_path(default), "default".to_owned())
        };

        let mut headers = config.headers.clone();
        if let Some(v) = env(&generic("HEADERS")) {
            headers.extend(parse_headers(&v));
        }
        if let Some(v) = env(&specific("HEADERS")) {
            headers.extend(parse_headers(&v));
        }

        let timeout = match first("TIMEOUT") {
            Some((value, name)) => Duration::from_millis(parse_u64(&value, &name, "milliseconds")?),
            None => Duration::from_millis(config.timeout_millis),
        };

        let mut tls = config.tls.clone();
        for (suffix, field) in [
            ("CERTIFICATE", 0),
            ("CLIENT_CERTIFICATE", 1),
            ("CLIENT_KEY", 2),
        ] {
            if let Some((path, _)) = first(suffix) {
                let t = tls.get_or_insert_with(TlsConfig::default);
                match field {
                    0 => t.ca_file = Some(path),
                    1 => t.cert_file = Some(path),
                    _ => t.key_file = Some(path),
                }
            }
        }

        Ok(Self {
            signal,
            protocol,
            endpoint,
            endpoint_source,
            headers,
            timeout,
            tls,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn config(endpoint: &str, protocol: OtlpProtocol) -> ExporterConfig {
        ExporterConfig {
            endpoint: endpoint.into(),
            protocol,
            ..Default::default()
        }
    }

    #[test]
    fn defaults_depend_on_the_protocol() {
        let grpc = ExportSettings::resolve(&ExporterConfig::default(), &env(&[])).unwrap();
        assert_eq!(grpc.traces.endpoint, "http://localhost:4317");
        let http =
            ExportSettings::resolve(&config("", OtlpProtocol::HttpProtobuf), &env(&[])).unwrap();
        assert_eq!(http.traces.endpoint, "http://localhost:4318/v1/traces");
        assert_eq!(http.metrics.endpoint, "http://localhost:4318/v1/metrics");
        assert_eq!(
            http.profiles.endpoint,
            "http://localhost:4318/v1development/profiles"
        );
    }

    #[test]
    fn config_endpoint_is_used_when_no_variable_is_set() {
        let s = ExportSettings::resolve(
            &config("http://otel:4318/", OtlpProtocol::HttpProtobuf),
            &env(&[]),
        )
        .unwrap();
        assert_eq!(s.traces.endpoint, "http://otel:4318/v1/traces");
        assert_eq!(s.traces.endpoint_source, "exporter.endpoint");
    }

    #[test]
    fn environment_overrides_the_config_file_and_signal_variables_win() {
        let cfg = config("http://from-config:4317", OtlpProtocol::Grpc);
        let s = ExportSettings::resolve(
            &cfg,
            &env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4318"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "http://traces-only:9999/custom/path",
                ),
            ]),
        )
        .unwrap();
        assert_eq!(
            s.traces.protocol,
            OtlpProtocol::HttpProtobuf,
            "env protocol beats config"
        );
        assert_eq!(
            s.traces.endpoint, "http://traces-only:9999/custom/path",
            "signal endpoint used as-is"
        );
        assert_eq!(
            s.metrics.endpoint, "http://generic:4318/v1/metrics",
            "generic endpoint gets the signal path"
        );
        assert_eq!(s.metrics.endpoint_source, "OTEL_EXPORTER_OTLP_ENDPOINT");

        let s = ExportSettings::resolve(
            &cfg,
            &env(&[("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/protobuf")]),
        )
        .unwrap();
        assert_eq!(s.traces.protocol, OtlpProtocol::Grpc);
        assert_eq!(
            s.metrics.protocol,
            OtlpProtocol::HttpProtobuf,
            "per-signal protocol"
        );
    }

    #[test]
    fn headers_merge_config_then_generic_then_signal() {
        let mut cfg = ExporterConfig::default();
        cfg.headers
            .insert("authorization".into(), "from-config".into());
        cfg.headers.insert("x-team".into(), "a".into());
        let s = ExportSettings::resolve(
            &cfg,
            &env(&[
                (
                    "OTEL_EXPORTER_OTLP_HEADERS",
                    "authorization=Bearer%20generic,x-env=1",
                ),
                (
                    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
                    "authorization=Bearer traces",
                ),
            ]),
        )
        .unwrap();
        assert_eq!(s.traces.headers["authorization"], "Bearer traces");
        assert_eq!(
            s.metrics.headers["authorization"], "Bearer generic",
            "percent-decoded generic value"
        );
        assert_eq!(s.traces.headers["x-team"], "a", "config headers are kept");
        assert_eq!(s.traces.headers["x-env"], "1");
    }

    #[test]
    fn bad_values_are_reported_with_their_source() {
        let err = ExportSettings::resolve(
            &ExporterConfig::default(),
            &env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unsupported OTLP protocol \"http/json\" in OTEL_EXPORTER_OTLP_PROTOCOL; use \"grpc\" or \"http/protobuf\""
        );
        let err = ExportSettings::resolve(&config("otel:4317", OtlpProtocol::Grpc), &env(&[]))
            .unwrap_err();
        assert!(
            matches!(err, SettingsError::Endpoint { ref source_name, .. } if source_name == "exporter.endpoint"),
            "{err}"
        );
        let err = ExportSettings::resolve(
            &ExporterConfig::default(),
            &env(&[("OTEL_BSP_MAX_QUEUE_SIZE", "lots")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("OTEL_BSP_MAX_QUEUE_SIZE"), "{err}");
    }

    #[test]
    fn batch_and_timeout_variables_override_the_config() {
        let s = ExportSettings::resolve(
            &ExporterConfig::default(),
            &env(&[
                ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
                ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "10"),
                ("OTEL_BSP_SCHEDULE_DELAY", "50"),
                ("OTEL_METRIC_EXPORT_INTERVAL", "2000"),
                ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "1500"),
                ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/etc/ca.pem"),
            ]),
        )
        .unwrap();
        assert_eq!((s.max_queue_size, s.max_export_batch_size), (100, 10));
        assert_eq!(s.scheduled_delay, Duration::from_millis(50));
        assert_eq!(s.metrics_interval, Duration::from_secs(2));
        assert_eq!(s.traces.timeout, Duration::from_millis(1500));
        assert_eq!(
            s.metrics.timeout,
            Duration::from_millis(10_000),
            "config default for metrics"
        );
        assert_eq!(
            s.traces.tls.as_ref().and_then(|t| t.ca_file.as_deref()),
            Some("/etc/ca.pem")
        );
    }
}
