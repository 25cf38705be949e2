//! Child processes that cannot outlive the test process.
//!
//! Three layers make sure no etcd or kube-apiserver survives a test run:
//! 1. [`Process`] kills its process group on `Drop` (normal end of a test, and
//!    unwinding after a panic).
//! 2. Every child is forked from one long-lived thread with
//!    `PR_SET_PDEATHSIG = SIGKILL`. The kernel sends that signal when the
//!    *thread* that forked the child exits, so forking from a tokio test
//!    runtime's worker (which dies at the end of each test) would kill shared
//!    components early; the dedicated thread lives as long as the process, so
//!    children die exactly when the test process dies — even on `SIGKILL` or
//!    `abort`, where no destructor runs.
//! 3. An `atexit` handler kills what is still registered and deletes the
//!    directories of instances that are never dropped (the shared test bed is a
//!    `static`), keeping them when any test panicked.
//!
//! This is the only module of the crate with `unsafe` code: `pre_exec`,
//! `prctl`, `setsid`, `kill` and `atexit` are FFI.
#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use crate::Error;

type SpawnJob = (Command, mpsc::Sender<io::Result<Child>>);

/// The channel to the spawner thread. A `Mutex` because `mpsc::Sender` is
/// not `Sync` on older toolchains and we want one global.
static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnJob>>> = OnceLock::new();

/// Process groups still alive, by pgid, with a name for messages.
static LIVE_GROUPS: Mutex<BTreeMap<i32, String>> = Mutex::new(BTreeMap::new());

/// Directories to delete at exit unless a test panicked.
static EXIT_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// How many panics this process has seen so far (any thread). A test bed
/// compares the value at start and at drop to decide whether to keep its logs.
pub fn panics_observed() -> usize {
    install_hooks();
    PANICS.load(Ordering::SeqCst)
}

fn install_hooks() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            previous(info);
        }));
        // SAFETY: `at_exit` is an `extern "C" fn()` that never unwinds (it
        // catches nothing that could panic: it only uses `try_lock`, libc
        // calls and best-effort filesystem removal).
        unsafe {
            libc::atexit(at_exit);
        }
    });
}

extern "C" fn at_exit() {
    if let Ok(groups) = LIVE_GROUPS.try_lock() {
        for pgid in groups.keys() {
            // SAFETY: kill(2) with a negative pid signals a process group we
            // created; it has no memory-safety preconditions.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
    let failed = PANICS.load(Ordering::SeqCst) > 0;
    if let Ok(dirs) = EXIT_DIRS.try_lock() {
        for dir in dirs.iter() {
            if failed {
                // The logs tell what happened; etcd's preallocated WAL
                // (~120 MB) does not, so it goes.
                let _ = std::fs::remove_dir_all(dir.join("etcd"));
                eprintln!(
                    "ferrotel-e2e: a test failed; test bed logs kept in {}",
                    dir.join("logs").display()
                );
            } else {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

/// Deletes `dir` when the process exits, unless a test panicked (then its
/// path is printed so the logs can be read).
pub fn remove_at_exit(dir: PathBuf) {
    install_hooks();
    if let Ok(mut dirs) = EXIT_DIRS.lock() {
        dirs.push(dir);
    }
}

fn spawner() -> mpsc::Sender<SpawnJob> {
    SPAWNER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<SpawnJob>();
            std::thread::Builder::new()
                .name("ferrotel-spawner".into())
                .spawn(move || {
                    // Never returns while the static sender exists, i.e. for
                    // the whole life of the process: PDEATHSIG ties children
                    // to this thread.
                    for (mut cmd, reply) in rx {
                        let _ = reply.send(cmd.spawn());
                    }
                })
                .expect("failed to start the ferrotel-spawner thread");
            Mutex::new(tx)
        })
        .lock()
        .expect("ferrotel-spawner channel poisoned")
        .clone()
}

/// A component of the test bed running as a child process in its own process
/// group, stdout and stderr going to a log file. Killed (with its group) on drop.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Starts `cmd` bound to the lifetime of this process (see module docs),
    /// appending its output to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Process, Error> {
        install_hooks();
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|source| Error::Io {
                path: log.to_path_buf(),
                source,
            })?;
        let err = out.try_clone().map_err(|source| Error::Io {
            path: log.to_path_buf(),
            source,
        })?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        cmd.process_group(0);
        // SAFETY: the closure runs between fork and exec in the child and
        // only calls async-signal-safe functions (prctl, getppid, _exit is not
        // needed: we return an error instead, which std reports to the parent).
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                // The parent thread may have died between fork and prctl;
                // then we were re-parented and must not run unsupervised.
                if libc::getppid() == 1 {
                    return Err(io::Error::other("parent exited before the child started"));
                }
                Ok(())
            });
        }
        let program = cmd.get_program().to_string_lossy().into_owned();
        let (tx, rx) = mpsc::channel();
        spawner().send((cmd, tx)).map_err(|_| Error::Spawn {
            component: name.to_string(),
            program: program.clone(),
            source: io::Error::other("spawner thread is gone"),
        })?;
        let child = rx
            .recv()
            .map_err(|_| io::Error::other("spawner thread is gone"))
            .and_then(|r| r)
            .map_err(|source| Error::Spawn {
                component: name.to_string(),
                program,
                source,
            })?;
        if let Ok(mut groups) = LIVE_GROUPS.lock() {
            groups.insert(child.id() as i32, name.to_string());
        }
        tracing::debug!(component = name, pid = child.id(), log = %log.display(), "Started test-bed process");
        Ok(Process {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
        })
    }

    /// The component name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where stdout and stderr go.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The exit status if the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Fails with the log's last lines if the process has exited.
    pub fn check_running(&mut self) -> Result<(), Error> {
        match self.exited() {
            None => Ok(()),
            Some(status) => Err(Error::Exited {
                component: self.name.clone(),
                status: status.to_string(),
                log: self.log.clone(),
                tail: tail(&self.log, 30),
            }),
        }
    }

    /// SIGTERM to the group, SIGKILL after `grace`, then reap.
    pub fn terminate(&mut self, grace: Duration) {
        if self.exited().is_none() {
            signal_group(self.child.id() as i32, libc::SIGTERM);
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline && self.exited().is_none() {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.kill();
    }

    /// SIGKILL to the whole process group, then reap.
    pub fn kill(&mut self) {
        signal_group(self.child.id() as i32, libc::SIGKILL);
        let _ = self.child.wait();
        if let Ok(mut groups) = LIVE_GROUPS.lock() {
            groups.remove(&(self.child.id() as i32));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

fn signal_group(pgid: i32, signal: libc::c_int) {
    // SAFETY: kill(2) on a process group we created; no memory involved.
    unsafe {
        libc::kill(-pgid, signal);
    }
}

/// Sends `signal` to a single pid; true if it was delivered.
pub fn signal_pid(pid: i32, signal: libc::c_int) -> bool {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid, signal) == 0 }
}

/// Sends `signal` to a process group; true if it was delivered.
pub fn signal_pgid(pgid: i32, signal: libc::c_int) -> bool {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(-pgid, signal) == 0 }
}

/// Starts `cmd` in a new session, not tied to this process: used by
/// `ferrotel-testbed up` to leave the control plane running in the background.
pub fn spawn_detached(mut cmd: Command, log: &Path) -> Result<Child, Error> {
    let out = File::options()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|source| Error::Io {
            path: log.to_path_buf(),
            source,
        })?;
    let err = out.try_clone().map_err(|source| Error::Io {
        path: log.to_path_buf(),
        source,
    })?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    // SAFETY: setsid is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let program = cmd.get_program().to_string_lossy().into_owned();
    cmd.spawn().map_err(|source| Error::Spawn {
        component: "daemon".into(),
        program,
        source,
    })
}

/// The last `lines` lines of a log file (empty if unreadable).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// This process's peak resident memory (`VmHWM`), in bytes: what a memory
/// limit would have had to allow for it so far.
pub fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .expect("VmHWM in /proc/self/status (Linux)")
}
