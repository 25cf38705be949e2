//! Shared harness of the Go probe tests: the Go toolchain matrix, building
//! the test targets (e2e/apps/go), running them, and running the probe
//! runtime with the Go program set against the real collector.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use ferrotel_api::probe_config::{Language, ProbeConfig};
use ferrotel_e2e::{Collector, Span};

pub const WAIT: Duration = Duration::from_secs(90);

/// A Go toolchain of the test matrix.
#[derive(Clone, Copy, Debug)]
pub struct Toolchain {
    pub name: &'static str,
    pub go: &'static str,
}

/// The machine's Go and Debian's (bookworm-backports, installed by
/// `make tools`).
pub const TOOLCHAINS: [Toolchain; 2] = [
    Toolchain {
        name: "machine Go (/usr/local/go)",
        go: "/usr/local/go/bin/go",
    },
    Toolchain {
        name: "Debian golang-1.23",
        go: "/usr/lib/go-1.23/bin/go",
    },
];

/// The built test targets of one toolchain.
#[derive(Clone, Debug)]
pub struct Apps {
    pub toolchain: Toolchain,
    pub dir: PathBuf,
    pub go_version: String,
}

impl Apps {
    pub fn bin(&self, app: &str) -> PathBuf {
        self.dir.join(app)
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("probe/ has a parent")
        .to_owned()
}

/// Builds (or finds up to date) every test target with `toolchain`, into
/// `$FERROTEL_CACHE/go-apps/<go version>/`. Fails the test if the toolchain
/// is missing.
pub fn apps(toolchain: Toolchain) -> Apps {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    assert!(
        Path::new(toolchain.go).is_file(),
        "{} is missing at {}: run `make tools` (installs golang-1.23-go from bookworm-backports)",
        toolchain.name,
        toolchain.go
    );
    let version = Command::new(toolchain.go)
        .args(["env", "GOVERSION"])
        .output()
        .expect("run go env");
    let go_version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
    let cache = std::env::var_os("FERROTEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
                .join(".cache/ferrotel")
        });
    let dir = cache.join("go-apps").join(&go_version);
    let status = Command::new(repo_root().join("e2e/apps/go/build.sh"))
        .arg(toolchain.go)
        .arg(&dir)
        .status()
        .expect("run e2e/apps/go/build.sh");
    assert!(
        status.success(),
        "building the Go test targets with {} failed",
        toolchain.name
    );
    Apps {
        toolchain,
        dir,
        go_version,
    }
}

/// A running Go test target.
#[derive(Debug)]
pub struct GoApp {
    child: Child,
    pub addr: SocketAddr,
    pub name: String,
}

impl GoApp {
    /// Starts `bin` with `args` and waits for its "LISTENING host:port" line.
    pub fn start(bin: &Path, args: &[&str]) -> GoApp {
        let mut child = Command::new(bin)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the LISTENING line");
        let addr = line
            .trim()
            .strip_prefix("LISTENING ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "{} printed {line:?} instead of LISTENING host:port",
                    bin.display()
                )
            });
        GoApp {
            child,
            addr,
            name: bin.display().to_string(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Fails the test if the target died (e.g. crashed under the probe).
    pub fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} (pid {}) exited under the probe: {status}",
                self.name,
                self.child.id()
            );
        }
    }
}

impl Drop for GoApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[path = "../probe_harness/mod.rs"]
mod probe_harness;
pub use probe_harness::Probe;
#[allow(unused_imports)] // the TLS tests use it
pub use probe_harness::TestTls;

impl Probe {
    /// Starts the probe with the Go program set for `pids` and
    /// `exe_globs`, exporting to `collector`, and waits until
    /// `expect_attached` processes are instrumented.
    pub async fn start(
        collector: &Collector,
        pids: &[u32],
        exe_globs: &[&str],
        expect_attached: usize,
    ) -> Probe {
        Self::start_with(collector, pids, exe_globs, expect_attached, |_| {}).await
    }

    /// [`Probe::start`] with the config file adjusted by `edit` (e.g. the
    /// `go` tuning).
    pub async fn start_with(
        collector: &Collector,
        pids: &[u32],
        exe_globs: &[&str],
        expect_attached: usize,
        edit: impl FnOnce(&mut ProbeConfig),
    ) -> Probe {
        let targets: Vec<(&str, String)> = pids
            .iter()
            .map(|pid| ("--pid", pid.to_string()))
            .chain(
                exe_globs
                    .iter()
                    .map(|glob| ("--exe-path", (*glob).to_owned())),
            )
            .collect();
        let mut probe = Probe::launch(Language::Go, &collector.grpc_url(), &targets, edit);
        probe.wait_attached(expect_attached).await;
        probe
    }

    /// Waits until the attached-processes gauge reads `n`.
    pub async fn wait_attached(&mut self, n: usize) {
        self.wait_attached_until(&format!("exactly {n} processes"), |v| v == n as f64)
            .await;
    }
}

/// Spans of process `pid`.
pub fn of_pid(pid: u32) -> impl Fn(&Span) -> bool {
    let pid = pid.to_string();
    move |s: &Span| s.resource_str("process.pid") == Some(pid.as_str())
}

pub const SERVER: i64 = 2;
pub const CLIENT: i64 = 3;

/// An HTTP client for the test targets. reqwest is built without a bundled
/// crypto provider (the workspace uses ring only), so install ring first.
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// Sends `n` GETs to `url` (optionally with headers) and returns the longest
/// round trip seen: every server span must be shorter.
pub async fn get_n(
    client: &reqwest::Client,
    url: &str,
    n: usize,
    headers: &[(&str, &str)],
) -> Duration {
    let mut longest = Duration::ZERO;
    for i in 0..n {
        let started = std::time::Instant::now();
        let mut request = client.get(url);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url} #{i}: {e}"));
        let _ = response.bytes().await;
        longest = longest.max(started.elapsed());
    }
    longest
}

/// A W3C trace context the tests send, to see it continued.
pub const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
pub const PARENT_ID: &str = "00f067aa0ba902b7";

/// The real collector, exporting to a file the tests read.
pub async fn collector() -> Collector {
    Collector::start_with_file_exporter()
        .await
        .unwrap_or_else(|e| {
            panic!("the real collector must start (make tools builds otelcol): {e}")
        })
}

/// How many of `spans` have each `key`.
pub fn count_by<'a>(
    spans: &'a [Span],
    key: impl Fn(&'a Span) -> String,
) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for span in spans {
        *counts.entry(key(span)).or_insert(0) += 1;
    }
    counts
}

/// Every span of `children` is a child of one of `parents` (same trace),
/// and each parent has exactly `per_parent` children.
pub fn assert_children(what: &str, children: &[Span], parents: &[Span], per_parent: usize) {
    let by_id: HashMap<&str, &Span> = parents.iter().map(|p| (p.span_id.as_str(), p)).collect();
    let mut per: HashMap<&str, usize> = HashMap::new();
    for child in children {
        let parent = by_id.get(child.parent_span_id.as_str()).unwrap_or_else(|| {
            panic!(
                "{what}: client span {} has parent {:?}, not one of the server spans",
                child.span_id, child.parent_span_id
            )
        });
        assert_eq!(
            child.trace_id, parent.trace_id,
            "{what}: a child shares its parent's trace"
        );
        *per.entry(parent.span_id.as_str()).or_default() += 1;
    }
    for parent in parents {
        assert_eq!(
            per.get(parent.span_id.as_str()).copied().unwrap_or(0),
            per_parent,
            "{what}: children of server span {}",
            parent.span_id
        );
    }
}

/// Lets a client started with `-wait` make its calls (it waits for a line on
/// stdin, so that the probe attaches first) and waits for it to exit: its
/// exit status and standard output.
pub fn release_and_wait(mut client: std::process::Child) -> (std::process::ExitStatus, String) {
    use std::io::Write;
    client
        .stdin
        .take()
        .expect("the client was started with a piped stdin")
        .write_all(b"go\n")
        .expect("release the client");
    let output = client.wait_with_output().expect("the client runs");
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}
