//! The command line: kubectl's conventions (`-n`, `-A`, `-l`, `-o`,
//! `--kubeconfig`, `--context`, `--request-timeout`) on every subcommand.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::output::Format;
use crate::red::{GroupBy, SortBy};

/// Ferrotel from the terminal: why a pod is (or is not) traced, live RED
/// metrics per workload and route, the service graph, a live span tap and
/// pod resources — read from the probes through the API server, or from
/// Prometheus with --prometheus.
#[derive(Debug, Parser)]
#[command(
    name = "kubectl-ferrotel",
    bin_name = "kubectl ferrotel",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand takes.
#[derive(Clone, Debug, Args)]
pub struct Global {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config,
    /// then the in-cluster ServiceAccount).
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// The namespace (default: the context's namespace).
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long, global = true, conflicts_with = "namespace")]
    pub all_namespaces: bool,
    /// Only pods with these labels (a label selector, e.g. app=web,tier!=db).
    #[arg(short = 'l', long, global = true, value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
    /// Colors: auto (on a terminal, unless NO_COLOR is set), always, never.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    /// How long one API request may take (e.g. 10s, 1m).
    #[arg(long, global = true, value_name = "DURATION", value_parser = parse_duration, default_value = "30s")]
    pub request_timeout: Duration,
    /// Read metrics from this Prometheus server (its base URL) instead of
    /// the probes; it must scrape the probes (the chart's PodMonitor does).
    #[arg(long, global = true, env = "FERROTEL_PROMETHEUS", value_name = "URL")]
    pub prometheus: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The install at a glance: operator, collectors, instrumentations,
    /// probes per node with what they attached and dropped, and what is
    /// wrong, in words.
    Status,
    /// Whether a pod is traced: which Instrumentation and opt-in rule
    /// decided, which of its processes the probes claimed and with which
    /// program set, and otherwise exactly why not.
    #[command(visible_alias = "describe")]
    Why(WhyArgs),
    /// Request rate, success rate and latency percentiles per namespace,
    /// workload, pod or route, over a window.
    Stat(StatArgs),
    /// Like stat, sorted and refreshed in place until interrupted.
    Top(TopArgs),
    /// The service graph: who calls whom, with per-edge rate, success and
    /// latency.
    Edges(EdgesArgs),
    /// A live stream of spans of a workload, pod or route, with query
    /// values redacted.
    Tap(TapArgs),
    /// CPU, memory and network of the pods the probes report.
    Resources(ResourcesArgs),
    /// Shell completion script (bash, zsh, fish, powershell, elvish).
    Completion(CompletionArgs),
}

#[derive(Clone, Debug, Args)]
pub struct WhyArgs {
    /// The pod (`NAME` or `pod/NAME`), or a workload whose pods to explain
    /// (`deploy/NAME`, `sts/NAME`, `ds/NAME`, `job/NAME`, `rs/NAME`), in
    /// -n's namespace.
    #[arg(value_name = "POD|WORKLOAD", value_parser = crate::why::Target::parse)]
    pub target: crate::why::Target,
}

/// How long each measurement lasts and whether to repeat it.
#[derive(Clone, Debug, Args)]
pub struct WindowArgs {
    /// The measurement window (e.g. 10s, 1m). With the probes as source the
    /// command waits this long; with Prometheus it looks this far back.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10s")]
    pub window: Duration,
    /// Keep measuring: print a new result every window until interrupted.
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// Stop after this many results (with --watch, and for top).
    #[arg(long, value_name = "N")]
    pub iterations: Option<u64>,
}

#[derive(Clone, Debug, Args)]
pub struct StatArgs {
    /// What each row is.
    #[arg(value_enum, default_value_t = GroupBy::Workloads)]
    pub by: GroupBy,
    /// Only this workload (`web`, `deploy/web`, `sts/db`).
    pub workload: Option<String>,
    #[command(flatten)]
    pub window: WindowArgs,
}

#[derive(Clone, Debug, Args)]
pub struct TopArgs {
    /// What each row is.
    #[arg(value_enum, default_value_t = GroupBy::Routes)]
    pub by: GroupBy,
    /// Only this workload (`web`, `deploy/web`).
    pub workload: Option<String>,
    /// Sort key, descending.
    #[arg(long, value_enum, default_value_t = SortBy::Rps)]
    pub sort: SortBy,
    /// Rows shown (0: all).
    #[arg(long, default_value_t = 20)]
    pub rows: usize,
    /// The refresh interval: each frame shows the last interval.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "2s")]
    pub interval: Duration,
    /// Stop after this many frames.
    #[arg(long, value_name = "N")]
    pub iterations: Option<u64>,
}

#[derive(Clone, Debug, Args)]
pub struct EdgesArgs {
    /// Only edges from or to this workload (`web`, `deploy/web`).
    pub workload: Option<String>,
    #[command(flatten)]
    pub window: WindowArgs,
}

#[derive(Clone, Debug, Args)]
pub struct TapArgs {
    /// What to tap: a workload (`web`, `deploy/web`), a pod (`pod/name`),
    /// or nothing for every traced pod of the namespace (or -l's pods).
    pub target: Option<String>,
    /// Only this route (`http.route`, e.g. /items/{id}, or
    /// `service/method` for gRPC).
    #[arg(long)]
    pub route: Option<String>,
    /// Only this HTTP method.
    #[arg(long)]
    pub method: Option<String>,
    /// Only spans of this `service.name`.
    #[arg(long)]
    pub service: Option<String>,
    /// Stop after this many spans.
    #[arg(long, value_name = "N")]
    pub max: Option<u64>,
    /// Stop after this long (e.g. 30s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
}

#[derive(Clone, Debug, Args)]
pub struct ResourcesArgs {
    /// Only pods of this workload (`web`, `deploy/web`).
    pub workload: Option<String>,
    #[command(flatten)]
    pub window: WindowArgs,
}

#[derive(Clone, Debug, Args)]
pub struct CompletionArgs {
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `500ms`, `10s`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration; use e.g. 500ms, 10s, 2m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}; use ms, s, m or h"
            ));
        }
    };
    if !seconds.is_finite() || seconds <= 0.0 {
        return Err(format!("{text:?} must be more than zero"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_read_like_kubectls() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("ten").is_err());
        assert!(
            parse_duration("5d")
                .unwrap_err()
                .contains("use ms, s, m or h")
        );
    }

    #[test]
    fn kubectl_flags_work_before_and_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "kubectl-ferrotel",
            "-n",
            "shop",
            "stat",
            "routes",
            "deploy/web",
            "-o",
            "json",
            "--window",
            "5s",
        ])
        .expect("parses");
        assert_eq!(cli.global.namespace.as_deref(), Some("shop"));
        assert_eq!(cli.global.output, Format::Json);
        let Command::Stat(stat) = cli.command else {
            panic!("stat")
        };
        assert_eq!(stat.by, GroupBy::Routes);
        assert_eq!(stat.workload.as_deref(), Some("deploy/web"));
        assert_eq!(stat.window.window, Duration::from_secs(5));
        assert!(
            Cli::try_parse_from(["kubectl-ferrotel", "-n", "a", "-A", "status"]).is_err(),
            "-n and -A conflict"
        );
    }
}
