//! `ferrotel-flame`: a flame graph (SVG) and folded stacks of a profiled
//! process or pod, fetched from the probe on its node (`/debug/profile`),
//! or from a pprof file. The library behind it is
//! `ferrotel_probe::profile::flame`; a `kubectl ferrotel flame <pod>` wraps
//! the same two steps (fetch pprof through the API server's proxy to the
//! node's probe, then render).
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use ferrotel_probe::profile::flame;

#[derive(Debug, Parser)]
#[command(
    name = "ferrotel-flame",
    about = "Render a CPU flame graph (SVG) and folded stacks from a Ferrotel probe or a pprof file"
)]
struct Args {
    /// Base URL of the probe's HTTP endpoint (its --metrics-addr), e.g. http://127.0.0.1:9464.
    #[arg(long, conflicts_with = "pprof")]
    url: Option<String>,
    /// Read this pprof file (uncompressed protobuf) instead of asking a probe.
    #[arg(long)]
    pprof: Option<PathBuf>,
    /// The pod, as namespace/name.
    #[arg(long, conflicts_with_all = ["pid", "service"])]
    pod: Option<String>,
    /// The process id (host PID namespace).
    #[arg(long, conflicts_with = "service")]
    pid: Option<u32>,
    /// The service.name.
    #[arg(long)]
    service: Option<String>,
    /// How many seconds of recent profiles to merge.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Where to write the SVG.
    #[arg(long, default_value = "flame.svg")]
    svg: PathBuf,
    /// Where to write the folded stacks (omit to skip).
    #[arg(long)]
    folded: Option<PathBuf>,
    /// Also save the pprof bytes fetched from the probe.
    #[arg(long)]
    save_pprof: Option<PathBuf>,
    /// Title of the flame graph.
    #[arg(long)]
    title: Option<String>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferrotel-flame: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let (bytes, what) = match (&args.url, &args.pprof) {
        (_, Some(path)) => (
            std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?,
            path.display().to_string(),
        ),
        (Some(url), None) => {
            let mut query = vec![("seconds", args.seconds.to_string())];
            let what = match (&args.pod, args.pid, &args.service) {
                (Some(pod), _, _) => {
                    query.push(("pod", pod.clone()));
                    format!("pod {pod}")
                }
                (_, Some(pid), _) => {
                    query.push(("pid", pid.to_string()));
                    format!("pid {pid}")
                }
                (_, _, Some(service)) => {
                    query.push(("service", service.clone()));
                    format!("service {service}")
                }
                _ => "every profiled process".to_owned(),
            };
            (fetch(url, &query).await?, what)
        }
        (None, None) => {
            anyhow::bail!("give --url of a probe (with --pod, --pid or --service) or --pprof FILE")
        }
    };
    if let Some(path) = &args.save_pprof {
        std::fs::write(path, &bytes)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    let title = args.title.clone().unwrap_or_else(|| format!("CPU: {what}"));
    let flame = flame::from_pprof(&bytes, &title)?;
    std::fs::write(&args.svg, &flame.svg)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", args.svg.display()))?;
    if let Some(path) = &args.folded {
        std::fs::write(path, &flame.folded)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    eprintln!(
        "{} samples of {what}: wrote {}{}",
        flame.samples,
        args.svg.display(),
        args.folded
            .as_ref()
            .map(|p| format!(" and {}", p.display()))
            .unwrap_or_default()
    );
    Ok(())
}

async fn fetch(url: &str, query: &[(&str, String)]) -> anyhow::Result<Vec<u8>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let endpoint = format!("{}/debug/profile", url.trim_end_matches('/'));
    let query: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect();
    let response = reqwest::Client::new()
        .get(format!("{endpoint}?{}", query.join("&")))
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot reach the probe at {endpoint}: {e}; is --url the probe's --metrics-addr?"
            )
        })?;
    let status = response.status();
    let body: Vec<u8> = response.bytes().await?.to_vec();
    if !status.is_success() {
        anyhow::bail!(
            "{endpoint} answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(body)
}

/// Percent-encodes a query value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
