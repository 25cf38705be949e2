//! Shared harness of the propagation tests: a cgroup v2 directory of the
//! test's own (sockops attach per cgroup, and never to the root), processes
//! started inside it, and the socket-level set loaded with propagation.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use ferrotel_api::probe_config::{LanguageTuning, PropagationConfig, Propagator};
use ferrotel_probe::driver::Driver;
use ferrotel_probe::propagation::Settings;
use ferrotel_probe::sockets::SocketSet;
use ferrotel_probe::targets::ProcessTarget;
use ferrotel_probe::targets::kubernetes::cgroup::read_cgroup_mounts;
use ferrotel_probe::telemetry::sampling::{Sampler, SpanStarter};

pub fn venv_python() -> PathBuf {
    ferrotel_e2e::tools::venv_bin("python")
}

pub fn apps_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../e2e/apps/python")
}

/// A cgroup v2 directory named for this test process, removed (with its
/// processes killed) on drop.
pub struct TestCgroup {
    dir: PathBuf,
}

impl TestCgroup {
    pub fn new(what: &str) -> TestCgroup {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let root = read_cgroup_mounts()
            .ok()
            .and_then(|m| m.v2)
            .expect("a cgroup v2 hierarchy must be mounted (see /proc/self/mountinfo): propagation attaches to cgroup v2 directories");
        let dir = root.join(format!(
            "ferrotel-test-prop-{what}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("creating {} (run as root): {e}", dir.display()));
        TestCgroup { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `program args...` run inside the cgroup: the shell moves itself in,
    /// then execs, so nothing of the program ever runs outside it.
    pub fn command(&self, program: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(r#"echo $$ > "$0/cgroup.procs" && shift && exec "$@""#)
            .arg(&self.dir)
            .arg("--")
            .arg(program)
            .args(args);
        cmd
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let procs = std::fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            ferrotel_e2e::process::signal_pid(pid, 9);
        }
        for _ in 0..100 {
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// `send_chunks.py` in a cgroup: sends exactly the chunks it is given.
pub struct SenderProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl SenderProcess {
    pub fn start(cgroup: &TestCgroup) -> SenderProcess {
        let script = apps_dir().join("send_chunks.py");
        let mut child = cgroup
            .command(
                &venv_python(),
                &["-u", script.to_str().expect("utf-8 path")],
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the sender starts");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("READY");
        assert_eq!(line.trim(), "READY", "the sender must start");
        SenderProcess {
            child,
            stdin,
            stdout,
        }
    }

    pub fn io(&mut self) -> (&mut ChildStdin, &mut BufReader<ChildStdout>) {
        (&mut self.stdin, &mut self.stdout)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `chunks` on a new connection to `port`; what each send() took.
    pub fn send(&mut self, port: u16, chunks: &[Vec<u8>]) -> Vec<usize> {
        let mut line = port.to_string();
        for chunk in chunks {
            line.push(' ');
            line.push_str(&hex::encode(chunk));
        }
        line.push('\n');
        self.stdin
            .write_all(line.as_bytes())
            .expect("to the sender");
        self.stdin.flush().expect("flush");
        let mut answer = String::new();
        self.stdout.read_line(&mut answer).expect("from the sender");
        let fields: Vec<&str> = answer.split_whitespace().collect();
        assert_eq!(fields.first(), Some(&"OK"), "the sender failed: {answer}");
        fields[1..]
            .iter()
            .map(|n| n.parse().expect("send sizes"))
            .collect()
    }
}

impl Drop for SenderProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const BPFFS_PATH: &str = "/sys/fs/bpf";

// The pin directories below live on /sys/fs/bpf, as the probe pod's do on
// its node. A host without systemd may have no bpffs mounted there; then
// this test process mounts one in a mount namespace of its own (the host's
// mount table never changes). It must happen before any thread starts
// (unshare(CLONE_NEWNS) affects only the calling thread), so it runs as an
// ELF constructor, like the harness's private tracefs. Errors are printed;
// a test that pins then fails naming the missing bpffs.
#[used]
#[unsafe(link_section = ".init_array")]
static PRIVATE_BPFFS: extern "C" fn() = private_bpffs;

extern "C" fn private_bpffs() {
    if ferrotel_probe::propagation::is_bpffs(Path::new(BPFFS_PATH)) {
        return;
    }
    use rustix::mount::{MountFlags, mount};
    // The probe's own private mount namespace, as for its tracefs.
    let result = ferrotel_probe::tracefs::enter_private_mount_namespace()
        .map_err(|(step, e)| format!("{step}: {e}"))
        .and_then(|()| {
            mount(
                "bpf",
                BPFFS_PATH,
                "bpf",
                MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
                None::<&std::ffi::CStr>,
            )
            .map_err(|e| format!("mount -t bpf bpf {BPFFS_PATH}: {e}"))
        });
    if let Err(e) = result {
        eprintln!(
            "ferrotel propagation tests: no bpffs at {BPFFS_PATH} and mounting a private one failed ({e}); run as root, or mount one: mount -t bpf bpf {BPFFS_PATH}"
        );
    }
}

/// A pin directory of this test process's own on the host's bpffs,
/// removed (with every pin in it) on drop.
pub struct PinDir(PathBuf);

impl PinDir {
    pub fn new() -> PinDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        PinDir(PathBuf::from(format!(
            "/sys/fs/bpf/ferrotel-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        )))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn config(&self, inject: bool, join: bool) -> PropagationConfig {
        PropagationConfig {
            inject,
            join,
            pin_dir: Some(self.0.display().to_string()),
        }
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Propagation settings for a test, pinning in `pins`.
pub fn settings(pins: &PinDir, inject: bool, join: bool, propagators: &[Propagator]) -> Settings {
    let sampler = Sampler::default();
    Settings::new(&pins.config(inject, join), propagators, &sampler)
}

/// The socket-level set loaded with propagation as asked.
pub fn load_sockets_with_propagation(
    pins: &PinDir,
    inject: bool,
    join: bool,
    propagators: &[Propagator],
) -> Driver<SocketSet> {
    let set = SocketSet::with_propagation(
        &LanguageTuning::default(),
        SpanStarter::new(Sampler::default()),
        settings(pins, inject, join, propagators),
    );
    Driver::load(set).unwrap_or_else(|e| {
        panic!("the socket-level set must load with propagation (run as root): {e}")
    })
}

/// Traces `pid` (claims it; propagation attaches to its cgroup).
pub async fn trace(driver: &mut Driver<SocketSet>, pid: u32) {
    let target = ProcessTarget {
        pid,
        exe: PathBuf::from(format!("/proc/{pid}/exe")),
        reason: "pid",
    };
    driver
        .add_target(&target)
        .await
        .unwrap_or_else(|r| panic!("tracing pid {pid} refused: {}: {:#}", r.reason, r.error));
}

/// A server started inside a [`TestCgroup`], killed (with its process
/// group) on drop. It announces its port with a first stdout line:
/// "READY <port>" (the Python apps) or "LISTENING <host:port>" (the Go ones).
pub struct Service {
    child: Child,
    pub port: u16,
    /// The rest of its stdout, line by line.
    pub stdout: BufReader<ChildStdout>,
}

impl Service {
    pub fn start(what: &str, mut cmd: Command) -> Service {
        use std::os::unix::process::CommandExt;
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("{what} must start: {e}"));
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("{what}: reading its first line: {e}"));
        let line = line.trim();
        let port = line
            .strip_prefix("READY ")
            .and_then(|p| p.parse().ok())
            .or_else(|| {
                line.strip_prefix("LISTENING ")
                    .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
                    .map(|a| a.port())
            })
            .unwrap_or_else(|| panic!("{what} printed {line:?}, not READY <port>"));
        Service {
            child,
            port,
            stdout,
        }
    }

    /// A Python app of e2e/apps/python run with the venv's interpreter.
    pub fn python(cgroup: &TestCgroup, script: &str, args: &[&str]) -> Service {
        let path = apps_dir().join(script);
        let mut argv = vec!["-u", path.to_str().expect("utf-8 path")];
        argv.extend_from_slice(args);
        Service::start(script, cgroup.command(&venv_python(), &argv))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The next stdout line.
    pub fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .expect("the service's stdout");
        line.trim().to_owned()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        ferrotel_e2e::process::signal_pgid(self.child.id() as i32, 9);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
