//! Ferrotel's real test bed: the real control-plane components and a real
//! OpenTelemetry Collector as local processes on loopback.
//!
//! # Using it from a test
//!
//! ```no_run
//! use std::time::Duration;
//! use ferrotel_e2e::{TestBed, wait_for};
//!
//! # async fn example() {
//! // One control plane per test process, started on first use; isolate by namespace.
//! let bed = TestBed::shared();
//! let ns = bed.create_namespace("my-test").await;
//! let client = bed.client();
//! // ... create objects with `client`, or shell out:
//! let out = bed.kubectl().args(["get", "nodes"]).output().unwrap();
//! assert!(out.status.success());
//! // Wait for conditions, never sleep:
//! wait_for("the pods to run", Duration::from_secs(30), || async {
//!     Err::<(), _>("not yet".to_string())
//! })
//! .await
//! .unwrap();
//! # }
//! ```
//!
//! - [`TestBed::shared`]: etcd, kube-apiserver (TLS, RBAC, service-account
//!   keys), kube-controller-manager, kube-scheduler and kwok with 3 fake
//!   nodes. [`TestBed::start`] gives a dedicated instance (own ports, own
//!   directory), e.g. to test cluster-scoped behaviour in isolation.
//! - [`Collector`]: the OpenTelemetry Collector built from
//!   `operator/api/distribution/manifest.yaml`, either with a `file` exporter whose
//!   output [`Collector::spans`] / [`Collector::metrics`] parse, or with any
//!   config ([`Collector::start`]); [`validate_config`] runs `otelcol validate`.
//! - [`tools::tool_path`] finds the pinned tools installed by `make tools`;
//!   [`workspace_binary`] finds our own binaries (`ferrotel-operator`,
//!   `ferrotel-probe`) built next to the test executable.
//!
//! # Lifetime and logs
//!
//! Every component runs in its own process group, forked from one dedicated
//! thread with `PR_SET_PDEATHSIG`, so nothing outlives the test process, not
//! even after `SIGKILL`. A dedicated [`TestBed`] / [`Collector`] stops its
//! processes on drop; the shared one at process exit. Component logs live in
//! `<dir>/logs/`; the directory is deleted when everything passed and kept
//! (with its path printed on stderr) when a test panicked.
#![deny(unsafe_code)]

pub mod audit;
pub mod cli;
pub mod collector;
pub mod faults;
pub mod graph;
pub mod images;
pub mod node;
pub mod operator;
pub mod pki;
pub mod process;
pub mod sandbox;
pub mod stack;
pub mod testbed;
pub mod tools;

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use collector::{AttrValue, Collector, MetricPoint, Span, validate_config};
pub use testbed::{TestBed, TestBedOptions};
pub use tools::tool_path;

/// Everything that can go wrong while starting or driving the test bed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tool from `make tools` is missing.
    #[error("tool {name:?} not found at {path}; run `make tools` (e2e/tools/install.sh)")]
    ToolMissing {
        /// Tool name.
        name: String,
        /// Where it was expected.
        path: PathBuf,
    },
    /// A workspace binary is missing.
    #[error(
        "binary {name:?} not found at {path}; run `cargo build --workspace --bins` first (make test does)"
    )]
    BinaryMissing {
        /// Binary name.
        name: String,
        /// Where it was expected.
        path: PathBuf,
    },
    /// A process could not be started.
    #[error("failed to start {component} ({program})")]
    Spawn {
        /// Component name.
        component: String,
        /// Program path.
        program: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A component exited while it should be running.
    #[error("{component} exited ({status}); log {log}:\n{tail}")]
    Exited {
        /// Component name.
        component: String,
        /// Exit status.
        status: String,
        /// Log file.
        log: PathBuf,
        /// Last lines of the log.
        tail: String,
    },
    /// A condition did not hold in time.
    #[error("timed out after {timeout:?} waiting for {what}; last observation: {last}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long we waited.
        timeout: Duration,
        /// The last reason the condition gave.
        last: String,
    },
    /// A wait was abandoned because its condition reported a fatal problem.
    #[error("gave up waiting for {what}: {reason}")]
    Aborted {
        /// What was awaited.
        what: String,
        /// Why it can never happen.
        reason: String,
    },
    /// Filesystem error.
    #[error("i/o error on {path}")]
    Io {
        /// Path involved.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Pki(String),
    /// Talking to the API server failed.
    #[error("kubernetes API call failed: {context}")]
    Kube {
        /// What we were doing.
        context: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
    /// The collector's configuration or output was not what we expect.
    #[error("collector: {0}")]
    Collector(String),
    /// Building a local container image failed.
    #[error("image: {0}")]
    Image(String),
    /// The real node (containerd, kubelet, kube-proxy) could not be set up
    /// or misbehaved.
    #[error("real node: {0}")]
    Node(String),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Maps an I/O error on `path` to [`Error::Io`] (for `map_err`).
pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Prefix of a reason that makes [`wait_for`] give up at once (e.g. the
/// component being waited for has exited): `Err(format!("{FATAL}{e}"))`.
pub const FATAL: &str = "fatal: ";

/// Polls `condition` every 100 ms (backing off to 500 ms) until it returns
/// `Ok`, or fails after `timeout` with `what` and the last `Err` reason it
/// gave. A reason starting with [`FATAL`] (`"fatal: "`) ends the wait at once
/// with [`Error::Aborted`]. Use this instead of sleeping.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut condition: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(100);
    loop {
        let last = match condition().await {
            Ok(value) => return Ok(value),
            Err(reason) => reason,
        };
        if let Some(reason) = last.strip_prefix(FATAL) {
            return Err(Error::Aborted {
                what: what.to_string(),
                reason: reason.to_string(),
            });
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: what.to_string(),
                timeout,
                last,
            });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 3 / 2).min(Duration::from_millis(500));
    }
}

/// Path of a binary of this workspace (e.g. `ferrotel-operator`,
/// `ferrotel-probe`, `ferrotel-testbed`) built in the same target directory and
/// profile as the running test executable (`target/<profile>/<name>`).
/// Fails with "run `cargo build --workspace --bins` first" if it is absent.
pub fn workspace_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(|source| Error::Io {
        path: PathBuf::from("/proc/self/exe"),
        source,
    })?;
    // Test executables live in target/<profile>/deps/, binaries one level up.
    let mut dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::BinaryMissing {
            name: name.to_string(),
            path,
        })
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago. Ports handed out by
/// this process are never handed out twice, so parallel tests in one process
/// don't collide; collisions with other processes are rare (the kernel picks
/// from the ephemeral range) and make a component fail to start, which the
/// test bed retries.
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("cannot bind any port on 127.0.0.1");
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if given.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
}
