//! `ferrotel-testbed`: the local control plane for manual use.
//!
//! `up` starts it in the background (a detached `serve` process owns every
//! component), `down` stops it and removes its directory, `status` reports.
#![forbid(unsafe_code)]
// A command-line tool: stdout is its user interface.
#![allow(clippy::print_stdout)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use ferrotel_e2e::process::{signal_pgid, signal_pid, spawn_detached, tail};
use ferrotel_e2e::{TestBed, TestBedOptions};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Start and stop Ferrotel's local test bed (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok, and a real node: containerd, kubelet, kube-proxy, CoreDNS)"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Start the test bed in the background and wait until it is ready.
    Up {
        /// State directory; `<dir>/kubeconfig` is the admin kubeconfig.
        #[arg(long, default_value = ".testbed")]
        dir: PathBuf,
        /// Number of kwok fake nodes.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Without the real node (containerd, kubelet, kube-proxy, CoreDNS),
        /// which needs root: only the control plane and kwok nodes.
        #[arg(long)]
        no_real_node: bool,
    },
    /// Stop everything `up` started and delete the directory (idempotent).
    Down {
        #[arg(long, default_value = ".testbed")]
        dir: PathBuf,
    },
    /// Say whether the test bed runs.
    Status {
        #[arg(long, default_value = ".testbed")]
        dir: PathBuf,
    },
    /// Run the test bed in the foreground until SIGTERM/SIGINT (what `up` starts).
    Serve {
        #[arg(long, default_value = ".testbed")]
        dir: PathBuf,
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        #[arg(long)]
        no_real_node: bool,
    },
}

// A cold real node builds its images and imports them first.
const UP_TIMEOUT: Duration = Duration::from_secs(300);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Up {
            dir,
            nodes,
            no_real_node,
        } => up(&dir, nodes, !no_real_node),
        Cmd::Down { dir } => down(&dir),
        Cmd::Status { dir } => status(&dir),
        Cmd::Serve {
            dir,
            nodes,
            no_real_node,
        } => serve(&dir, nodes, !no_real_node),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferrotel-testbed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn daemon_pid(dir: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(dir.join("daemon.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    // Signal 0 only checks that the process exists; make sure it is ours.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let ours = String::from_utf8_lossy(&cmdline).contains("ferrotel-testbed");
    (alive(pid) && ours).then_some(pid)
}

/// True if `pid` runs. A zombie counts as dead: once `up` has exited, the
/// daemon's parent is whatever reaps orphans, and some sandboxes' PID 1 never
/// does.
fn alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state follows the parenthesised command name, which may contain spaces.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    matches!(state, Some(s) if s != "Z" && s != "X") && signal_pid(pid, 0)
}

fn up(dir: &Path, nodes: usize, real_node: bool) -> Result<(), String> {
    if real_node {
        // Say what is missing now, not from the detached daemon's log.
        ferrotel_e2e::node::preflight().map_err(|e| {
            format!("{e}\n(or start without it: ferrotel-testbed up --no-real-node)")
        })?;
    }
    if let Some(pid) = daemon_pid(dir) {
        if dir.join("ready").exists() {
            println!(
                "test bed already running (pid {pid}); KUBECONFIG={}",
                dir.join("kubeconfig").display()
            );
            return Ok(());
        }
        return Err(format!(
            "a test bed is starting or stuck in {} (pid {pid}); run `ferrotel-testbed down --dir {}`",
            dir.display(),
            dir.display()
        ));
    }
    // Leftovers of a crashed run would confuse readiness detection; a
    // killed daemon's real node goes first (its mounts are in there).
    ferrotel_e2e::node::reap_stale();
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let dir = std::path::absolute(dir).map_err(|e| format!("bad dir {}: {e}", dir.display()))?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find myself: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.arg("serve")
        .arg("--dir")
        .arg(&dir)
        .arg("--nodes")
        .arg(nodes.to_string());
    if !real_node {
        cmd.arg("--no-real-node");
    }
    let log = dir.join("daemon.log");
    let mut child = spawn_detached(cmd, &log).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("daemon.pid"), child.id().to_string())
        .map_err(|e| format!("cannot write daemon.pid: {e}"))?;
    let began = Instant::now();
    print!("Starting the test bed in {} ", dir.display());
    let _ = std::io::stdout().flush();
    loop {
        if dir.join("ready").exists() {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            println!();
            return Err(format!(
                "the test bed exited ({status}) before it was ready; {}:\n{}\n(component logs: {})",
                log.display(),
                tail(&log, 40),
                dir.join("logs").display()
            ));
        }
        if began.elapsed() > UP_TIMEOUT {
            println!();
            let _ = down(&dir);
            return Err(format!(
                "the test bed was not ready after {UP_TIMEOUT:?}; {}:\n{}",
                log.display(),
                tail(&log, 40)
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("ready in {:.1} s", began.elapsed().as_secs_f64());
    let kubeconfig = dir.join("kubeconfig");
    println!(
        "\n  export KUBECONFIG={}\n  ~/.cache/ferrotel/bin/kubectl get nodes\n\n  logs: {}\n  stop: make testbed-down",
        kubeconfig.display(),
        dir.join("logs").display()
    );
    Ok(())
}

fn serve(dir: &Path, nodes: usize, real_node: bool) -> Result<(), String> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // kube's client logs every 500 from /readyz while the API
                // server starts; that is expected, not an error.
                .unwrap_or_else(|_| "info,kube_client::client::builder=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("tokio runtime: {e}"))?;
    runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
        let bed = TestBed::start(TestBedOptions {
            nodes,
            dir: Some(dir.to_path_buf()),
            real_node,
            ..TestBedOptions::default()
        })
        .await
        .map_err(|e| e.to_string())?;
        let mut pids = format!("daemon {}\n", std::process::id());
        for (name, pid) in bed.pids() {
            pids.push_str(&format!("{name} {pid}\n"));
        }
        std::fs::write(dir.join("pids"), pids).map_err(|e| format!("cannot write pids: {e}"))?;
        std::fs::write(
            dir.join("ready"),
            format!("{}\n", bed.startup_time().as_millis()),
        )
        .map_err(|e| format!("cannot write ready: {e}"))?;
        tracing::info!(
            startup_ms = bed.startup_time().as_millis() as u64,
            "Test bed serving; waiting for SIGTERM"
        );
        // Watch the components too: a crashed apiserver should not leave a
        // daemon that claims to be up.
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = tick.tick() => {
                    if let Err(e) = bed.check_processes() {
                        tracing::error!(error = %e, "A component died; stopping the test bed");
                        let _ = std::fs::remove_file(dir.join("ready"));
                        return Err(e.to_string());
                    }
                }
            }
        }
        tracing::info!("Stopping the test bed");
        drop(bed);
        let _ = std::fs::remove_file(dir.join("ready"));
        Ok(())
    })
}

fn down(dir: &Path) -> Result<(), String> {
    if !dir.exists() {
        println!("no test bed in {}", dir.display());
        return Ok(());
    }
    if let Some(pid) = daemon_pid(dir) {
        signal_pid(pid, libc::SIGTERM);
        let began = Instant::now();
        while alive(pid) && began.elapsed() < Duration::from_secs(15) {
            std::thread::sleep(Duration::from_millis(50));
        }
        if alive(pid) {
            signal_pid(pid, libc::SIGKILL);
        }
    }
    // Belt and braces: components die with the daemon (PDEATHSIG), but kill
    // any recorded process group that is still there.
    if let Ok(pids) = std::fs::read_to_string(dir.join("pids")) {
        for line in pids.lines() {
            let mut parts = line.split_whitespace();
            let (Some(name), Some(pid)) = (parts.next(), parts.next()) else {
                continue;
            };
            let Ok(pid) = pid.parse::<i32>() else {
                continue;
            };
            if name == "daemon" {
                continue;
            }
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if alive(pid) && !comm.is_empty() && name.starts_with(comm.trim()) {
                signal_pgid(pid, libc::SIGKILL);
            }
        }
    }
    // A daemon that was killed left its real node: tear it down now.
    ferrotel_e2e::node::reap_stale();
    let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    for mount in ferrotel_e2e::node::mounts_below(&abs) {
        let _ = Command::new("umount").arg("-l").arg(&mount).status();
    }
    std::fs::remove_dir_all(dir).map_err(|e| format!("cannot remove {}: {e}", dir.display()))?;
    println!("test bed in {} stopped and removed", dir.display());
    Ok(())
}

fn status(dir: &Path) -> Result<(), String> {
    match daemon_pid(dir) {
        Some(pid) if dir.join("ready").exists() => {
            println!(
                "running (daemon pid {pid}); KUBECONFIG={}",
                dir.join("kubeconfig").display()
            );
            if let Ok(pids) = std::fs::read_to_string(dir.join("pids")) {
                print!("{pids}");
            }
            Ok(())
        }
        Some(pid) => {
            println!("starting (daemon pid {pid})");
            Ok(())
        }
        None => Err(format!("not running (no live daemon in {})", dir.display())),
    }
}
