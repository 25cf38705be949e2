//! The probe's configuration: the `--config` file (the format the operator
//! renders, [`ProbeConfig`]), then the OpenTelemetry environment variables,
//! then command-line flags, each overriding the previous.
//!
//! Flags: `--pid`, `--exe-path`, `--open-port` replace the file's
//! `targets` lists when given; `--metrics-addr` and `--log-level` replace
//! `metrics.listen` and `logLevel`. Environment: see
//! [`crate::export::settings`] for the exporter, `OTEL_SERVICE_NAME` and
//! `OTEL_RESOURCE_ATTRIBUTES` for the resource, `OTEL_TRACES_SAMPLER` and
//! `OTEL_TRACES_SAMPLER_ARG` for the sampler. `docs/probe-export.md` has
//! the full table.

use std::path::PathBuf;

use clap::Parser;
use ferrotel_api::probe_config::{Language, ProbeConfig, SamplerConfig, SamplerType};
use ferrotel_parse::sampling::{Sampler, SamplerKind};

use crate::export::settings::{EnvLookup, ExportSettings, SettingsError};
use crate::telemetry::resource::BaseResource;

/// Command line of `ferrotel-probe`.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "ferrotel-probe",
    version,
    about = "eBPF auto-instrumentation: OpenTelemetry spans and RED metrics for Go and Python services"
)]
pub struct Cli {
    /// Language whose eBPF program set this probe loads (go or python).
    #[arg(long, env = "FERROTEL_LANGUAGE")]
    pub language: Language,
    /// Probe config file (YAML), as rendered by the operator into the probe ConfigMap.
    #[arg(long, env = "FERROTEL_PROBE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Instrument this process id (repeatable). Replaces targets.pids.
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// Instrument processes whose executable path matches this glob (repeatable). Replaces targets.exePaths.
    #[arg(long = "exe-path", value_name = "GLOB")]
    pub exe_paths: Vec<String>,
    /// Instrument processes listening on this TCP port (repeatable). Replaces targets.openPorts.
    #[arg(long = "open-port", value_name = "PORT")]
    pub open_ports: Vec<u16>,
    /// Listen address of the Prometheus /metrics, /healthz and /readyz endpoint ("off" disables it).
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<String>,
    /// Log filter: a level (info, debug) or a tracing directive list.
    #[arg(long, env = "FERROTEL_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "FERROTEL_LOG_JSON")]
    pub log_json: bool,
    /// How often standalone targets are re-scanned in /proc, in milliseconds.
    #[arg(long, default_value_t = 2000, value_name = "MILLIS")]
    pub rescan_millis: u64,
}

/// A config the probe cannot start with.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read probe config {path:?}; pass an existing file with --config or omit it")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid probe config {path:?}; see docs/probe-export.md for the format")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(
        "unknown OTEL_TRACES_SAMPLER {value:?}; use always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio"
    )]
    Sampler { value: String },
    #[error("invalid OTEL_TRACES_SAMPLER_ARG {value:?}; use a ratio between 0 and 1")]
    SamplerArg { value: String },
    #[error(
        "no target selected: pass --pid, --exe-path or --open-port (or targets in the config file), or enable targets.kubernetes"
    )]
    NoTargets,
    #[error("{language}.maxPayloadBytes is {value}; use a value from {min} to {max}")]
    MaxPayloadBytes {
        language: Language,
        value: u32,
        min: u32,
        max: u32,
    },
    #[error(
        "python.http is false, but HTTP/1.x is all the Python probe traces; set it to true, or stop running a Python probe"
    )]
    PythonWithoutHttp,
}

/// Everything the runtime needs, resolved.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    pub language: Language,
    pub probe: ProbeConfig,
    pub export: ExportSettings,
    pub resource: BaseResource,
    pub log_filter: String,
    pub log_json: bool,
    pub rescan: std::time::Duration,
}

impl RuntimeConfig {
    /// Resolves the file, the process environment and the flags.
    pub fn load(cli: &Cli) -> Result<Self, ConfigError> {
        let file = match &cli.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                ProbeConfig::from_yaml(&text).map_err(|source| ConfigError::Parse {
                    path: path.clone(),
                    source,
                })?
            }
            None => ProbeConfig::default(),
        };
        Self::resolve(cli, file, &crate::export::settings::process_env)
    }

    /// Resolution with an injected environment (tests).
    pub fn resolve(
        cli: &Cli,
        mut probe: ProbeConfig,
        env: EnvLookup<'_>,
    ) -> Result<Self, ConfigError> {
        if let Some(value) = env("OTEL_TRACES_SAMPLER") {
            probe.sampler.kind = match value.trim() {
                "always_on" => SamplerType::AlwaysOn,
                "always_off" => SamplerType::AlwaysOff,
                "traceidratio" => SamplerType::TraceIdRatio,
                "parentbased_always_on" => SamplerType::ParentbasedAlwaysOn,
                "parentbased_always_off" => SamplerType::ParentbasedAlwaysOff,
                "parentbased_traceidratio" => SamplerType::ParentbasedTraceIdRatio,
                _ => return Err(ConfigError::Sampler { value }),
            };
        }
        if let Some(value) = env("OTEL_TRACES_SAMPLER_ARG") {
            probe.sampler.ratio = match value.trim().parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => r,
                _ => return Err(ConfigError::SamplerArg { value }),
            };
        }
        if !cli.pids.is_empty() {
            probe.targets.pids = cli.pids.clone();
        }
        if !cli.exe_paths.is_empty() {
            probe.targets.exe_paths = cli.exe_paths.clone();
        }
        if !cli.open_ports.is_empty() {
            probe.targets.open_ports = cli.open_ports.clone();
        }
        if let Some(addr) = &cli.metrics_addr {
            if addr == "off" {
                probe.metrics.enabled = false;
            } else {
                probe.metrics.enabled = true;
                probe.metrics.listen = addr.clone();
            }
        }
        if let Some(level) = &cli.log_level {
            probe.log_level = Some(level.clone());
        }
        check_tuning(cli.language, &probe)?;
        let t = &probe.targets;
        if !t.kubernetes && t.pids.is_empty() && t.exe_paths.is_empty() && t.open_ports.is_empty() {
            return Err(ConfigError::NoTargets);
        }
        let export = ExportSettings::resolve(&probe.exporter, env)?;
        let resource = BaseResource::resolve(
            &probe.resource_attributes,
            env("OTEL_RESOURCE_ATTRIBUTES").as_deref(),
            env("OTEL_SERVICE_NAME").as_deref(),
        );
        let log_filter = probe.log_level.clone().unwrap_or_else(|| "info".to_owned());
        Ok(Self {
            language: cli.language,
            probe,
            export,
            resource,
            log_filter,
            log_json: cli.log_json,
            rescan: std::time::Duration::from_millis(cli.rescan_millis.max(100)),
        })
    }
}

/// Refuses what this probe's program set cannot do with its tuning (the
/// CRD's schema refuses the same; a standalone config file is checked here).
fn check_tuning(language: Language, probe: &ProbeConfig) -> Result<(), ConfigError> {
    use ferrotel_probe_ebpf::contract::defaults::{MAX_PAYLOAD_BYTES_MAX, MAX_PAYLOAD_BYTES_MIN};
    let tuning = match language {
        Language::Go => &probe.go,
        Language::Python => &probe.python,
    };
    if !(MAX_PAYLOAD_BYTES_MIN..=MAX_PAYLOAD_BYTES_MAX).contains(&tuning.max_payload_bytes) {
        return Err(ConfigError::MaxPayloadBytes {
            language,
            value: tuning.max_payload_bytes,
            min: MAX_PAYLOAD_BYTES_MIN,
            max: MAX_PAYLOAD_BYTES_MAX,
        });
    }
    // `python.grpc` is not checked: the config's default is true for every
    // language, and the socket-level set ignores it (the CRD refuses it).
    if language == Language::Python && !tuning.http {
        return Err(ConfigError::PythonWithoutHttp);
    }
    Ok(())
}

/// The head sampler `config` (`sampler.type`, `sampler.ratio`) describes.
pub fn sampler(config: &SamplerConfig) -> Sampler {
    let kind = match config.kind {
        SamplerType::AlwaysOn => SamplerKind::AlwaysOn,
        SamplerType::AlwaysOff => SamplerKind::AlwaysOff,
        SamplerType::TraceIdRatio => SamplerKind::TraceIdRatio,
        SamplerType::ParentbasedAlwaysOn => SamplerKind::ParentBasedAlwaysOn,
        SamplerType::ParentbasedAlwaysOff => SamplerKind::ParentBasedAlwaysOff,
        SamplerType::ParentbasedTraceIdRatio => SamplerKind::ParentBasedTraceIdRatio,
    };
    Sampler::new(kind, config.ratio)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::trace_context::TraceId;
    use std::collections::HashMap;

    #[test]
    fn every_configured_sampler_type_decides_like_its_otel_namesake() {
        let id = TraceId([0xff; 16]);
        let decide = |kind, ratio| sampler(&SamplerConfig { kind, ratio }).should_sample(id, None);
        assert!(decide(SamplerType::AlwaysOn, 0.0));
        assert!(!decide(SamplerType::AlwaysOff, 1.0));
        assert!(!decide(SamplerType::TraceIdRatio, 0.0));
        assert!(decide(SamplerType::ParentbasedAlwaysOn, 0.0));
        assert!(!decide(SamplerType::ParentbasedAlwaysOff, 1.0));
        assert!(decide(SamplerType::ParentbasedTraceIdRatio, 1.0));
        assert_eq!(
            sampler(&SamplerConfig::default()),
            Sampler::default(),
            "the config's default is the SDKs' default"
        );
    }

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("ferrotel-probe").chain(args.iter().copied()))
            .expect("valid command line")
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn flags_replace_the_file_targets_and_listen_address() {
        let file = ProbeConfig::from_yaml(
            "targets: {pids: [1], openPorts: [80]}\nmetrics: {listen: '0.0.0.0:1'}",
        )
        .unwrap();
        let cli = cli(&[
            "--language",
            "python",
            "--pid",
            "7",
            "--pid",
            "8",
            "--metrics-addr",
            "127.0.0.1:9464",
        ]);
        let resolved = RuntimeConfig::resolve(&cli, file, &env(&[])).unwrap();
        assert_eq!(
            resolved.probe.targets.pids,
            vec![7, 8],
            "--pid replaces targets.pids"
        );
        assert_eq!(
            resolved.probe.targets.open_ports,
            vec![80],
            "lists without flags are kept"
        );
        assert_eq!(resolved.probe.metrics.listen, "127.0.0.1:9464");
        assert_eq!(resolved.language, Language::Python);
    }

    #[test]
    fn a_probe_without_targets_refuses_to_start_with_a_hint() {
        let err = RuntimeConfig::resolve(
            &cli(&["--language", "go"]),
            ProbeConfig::default(),
            &env(&[]),
        )
        .unwrap_err();
        assert!(matches!(err, ConfigError::NoTargets), "{err}");
        assert!(
            err.to_string().contains("--pid"),
            "the error names the fix: {err}"
        );
    }

    #[test]
    fn sampler_environment_overrides_the_file() {
        let cli = cli(&["--language", "go", "--exe-path", "/usr/bin/*"]);
        let resolved = RuntimeConfig::resolve(
            &cli,
            ProbeConfig::default(),
            &env(&[
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.1"),
            ]),
        )
        .unwrap();
        assert_eq!(resolved.probe.sampler.kind, SamplerType::TraceIdRatio);
        assert_eq!(resolved.probe.sampler.ratio, 0.1);
        let err = RuntimeConfig::resolve(
            &cli,
            ProbeConfig::default(),
            &env(&[("OTEL_TRACES_SAMPLER", "sometimes")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("\"sometimes\""), "{err}");
    }

    #[test]
    fn language_accepts_both_spellings() {
        assert_eq!(
            cli(&["--language", "golang", "--pid", "1"]).language,
            Language::Go
        );
        assert!(
            Cli::try_parse_from(["ferrotel-probe", "--language", "ruby"]).is_err(),
            "unknown languages are rejected"
        );
    }

    #[test]
    fn max_payload_bytes_out_of_range_is_refused_for_the_probes_own_language() {
        let mut file = ProbeConfig::default();
        file.go.max_payload_bytes = 8192;
        let err = RuntimeConfig::resolve(
            &cli(&["--language", "go", "--pid", "1"]),
            file.clone(),
            &env(&[]),
        )
        .expect_err("8192 bytes cannot be copied");
        assert_eq!(
            err.to_string(),
            "go.maxPayloadBytes is 8192; use a value from 64 to 4096"
        );
        RuntimeConfig::resolve(
            &cli(&["--language", "python", "--pid", "1"]),
            file,
            &env(&[]),
        )
        .expect("the Go section does not matter to a Python probe");
    }

    #[test]
    fn a_python_probe_without_http_is_refused() {
        let mut file = ProbeConfig::default();
        file.python.http = false;
        let err = RuntimeConfig::resolve(
            &cli(&["--language", "python", "--pid", "1"]),
            file,
            &env(&[]),
        )
        .expect_err("HTTP/1.x is all the socket-level set reads");
        assert!(matches!(err, ConfigError::PythonWithoutHttp), "{err}");
    }
}
