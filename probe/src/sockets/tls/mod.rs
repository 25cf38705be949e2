//! TLS in the socket-level set: the plaintext of connections encrypted with
//! OpenSSL, through uprobes on the `SSL_*` functions of the library each
//! process really maps.
//!
//! ```text
//! claimed process ──maps──> libssl (dev, inode) ──uprobes, per process──> ft_tls_* programs
//!   SSL_read/SSL_write(_ex) return ──FT_EV_TLS_DATA (plaintext, same fd)──┐
//!   read/write syscalls on the socket ──the hellos only (SNI, version)────┼─> tracker (one HTTP/1 path)
//!   the rest of the ciphertext ──suppressed in the kernel─────────────────┘
//! ```
//!
//! - **Which library**: a process's executable mappings
//!   (`/proc/<pid>/maps`), each file by device and inode, opened through
//!   `/proc/<pid>/map_files/` (the exact inode, in the process's own mount
//!   namespace); a file qualifies by the functions it defines
//!   ([`library`]). Scanned when a process becomes a target, when a claimed
//!   process maps a file executable (`import ssl` after the claim), when a
//!   traced process forks, and when it opens a TLS connection while no
//!   library of it is probed.
//! - **Per process**: the uprobes are attached with the process as their
//!   scope, so the kernel sets breakpoints only in the memory of traced
//!   processes: a process that maps the same libssl without being traced
//!   runs it untouched. (Scoped to the file instead, every `SSL_*` call of
//!   every process mapping it trapped into the programs — measured at ~4 µs
//!   per call on the reference VM, `bench/results/tls.md`.) A child forked
//!   by a traced process is claimed in the kernel at fork and gets its own
//!   uprobes when its fork is read (`FT_EV_PROC_FORK`), within a ring poll.
//! - **Not traceable**: a process whose TLS connections get no plaintext is
//!   reported once, with the reason (`static_libssl`, `no_libssl`), in the
//!   log and in `ferrotel_probe_tls_untraced_processes`.
//! - **Off the event loop**: reading a file to find the functions (its
//!   symbol tables) or OpenSSL's code in it (up to 512 MiB) takes from
//!   milliseconds to seconds, while the ring buffer waits to be drained.
//!   On the loop, only `/proc/<pid>/maps` is read and each new file opened
//!   (while its process is known alive: its exit does not change what is
//!   read); the file is read on the blocking pool
//!   ([`crate::analysis::Analyzer`]: one scan at a time, one per file at
//!   once, a second process mapping it waits for the same answer); the
//!   answer is cached per file and applied on the loop, where the uprobes
//!   are attached, in [`TlsProbes::settle`]. A process that exited
//!   meanwhile is never attached to, and nothing of it stays behind.

// Attach errors carry aya's (large) errors unboxed: they happen at startup
// (see crate::ebpf).
#![allow(clippy::result_large_err)]

// The hello parser reads the workload's bytes: it lives in `ferrotel-parse`.
pub use ferrotel_parse::sockets::tls_hello as hello;
pub mod library;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::num::NonZeroU32;
use std::sync::Arc;

use aya::programs::uprobe::{UProbeLinkId, UProbeScope};
use ferrotel_probe_ebpf::contract::tls;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::analysis::{Analysed, Analyzer, DEFAULT_MAX_PENDING, Failure};
use crate::ebpf::{EbpfError, Kernel};

use library::{FileKey, LibraryError, MappedFile, Sites, Untraced};

/// Per-file caches are cleared past this many entries (processes come and
/// go; a node maps a bounded set of libraries, but not a fixed one).
const MAX_CACHED_FILES: usize = 4096;

/// What a file is read for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Question {
    /// Where the probed functions are ([`library::sites`]).
    Sites,
    /// Whether it holds OpenSSL's TLS code ([`library::holds_openssl`]),
    /// asked of the files of a process without a probed library.
    HoldsOpenssl,
}

/// One scan: a file, read for one question.
type ScanKey = (FileKey, Question);

#[derive(Debug)]
enum Answer {
    Sites(Option<Sites>),
    HoldsOpenssl(bool),
}

type ScanError = Box<dyn std::error::Error + Send + Sync>;

/// Where a process's files come from and how they are read: `/proc` and
/// the files themselves ([`ProcFiles`]).
pub trait Files: Send + Sync + 'static {
    /// A file opened on the loop, to be read off it.
    type Opened: Send + std::fmt::Debug + 'static;
    /// The files `pid` maps executable (on the loop: one small `/proc` read).
    fn executable_files(&self, pid: u32) -> std::io::Result<Vec<MappedFile>>;
    /// Opens `file` (on the loop, while its process is known alive).
    fn open(&self, file: &MappedFile) -> std::io::Result<Self::Opened>;
    /// A second handle on an opened file, for another read.
    fn duplicate(&self, opened: &Self::Opened) -> std::io::Result<Self::Opened>;
    /// [`library::sites`] of an opened file (off the loop).
    fn sites(&self, opened: Self::Opened, file: &MappedFile)
    -> Result<Option<Sites>, LibraryError>;
    /// [`library::holds_openssl`] of an opened file (off the loop).
    fn holds_openssl(&self, opened: Self::Opened) -> std::io::Result<bool>;
}

/// The files processes really map, through `/proc/<pid>/map_files/`.
#[derive(Debug, Default)]
pub struct ProcFiles;

impl Files for ProcFiles {
    type Opened = std::fs::File;

    fn executable_files(&self, pid: u32) -> std::io::Result<Vec<MappedFile>> {
        library::executable_files(pid)
    }

    fn open(&self, file: &MappedFile) -> std::io::Result<std::fs::File> {
        std::fs::File::open(&file.open_path)
    }

    fn duplicate(&self, opened: &std::fs::File) -> std::io::Result<std::fs::File> {
        // Shares the offset: every read seeks first, and scans run one at
        // a time.
        opened.try_clone()
    }

    fn sites(
        &self,
        opened: std::fs::File,
        file: &MappedFile,
    ) -> Result<Option<Sites>, LibraryError> {
        library::sites_of_file(opened, &file.open_path)
    }

    fn holds_openssl(&self, opened: std::fs::File) -> std::io::Result<bool> {
        library::holds_openssl_in(opened)
    }
}

/// Attaching the TLS programs to a library in one process.
pub trait Uprobes {
    /// What detaches one uprobe.
    type Link: std::fmt::Debug + Send;
    /// Attaches every program `sites` calls for, in process `pid` only.
    /// All or nothing.
    fn attach_library(
        &mut self,
        pid: u32,
        file: &MappedFile,
        sites: &Sites,
    ) -> Result<Vec<Self::Link>, Box<EbpfError>>;
    fn detach(&mut self, links: Vec<Self::Link>);
}

impl Uprobes for Kernel {
    type Link = (&'static str, UProbeLinkId);

    fn attach_library(
        &mut self,
        pid: u32,
        file: &MappedFile,
        sites: &Sites,
    ) -> Result<Vec<Self::Link>, Box<EbpfError>> {
        attach_library(self, pid, file, sites)
    }

    fn detach(&mut self, mut links: Vec<Self::Link>) {
        self.detach_uprobes(&mut links);
    }
}

/// What is known of one traced process's TLS.
#[derive(Debug)]
struct Process<L> {
    /// Probed library files it maps, with the uprobes in this process.
    libraries: BTreeMap<FileKey, Vec<L>>,
    /// Its untraced TLS was already reported.
    explained: bool,
    /// Without a probed library: the first file it maps that holds
    /// OpenSSL's TLS code. Found when it is scanned, while its files can
    /// still be opened (a short-lived client may be gone when its TLS is
    /// seen).
    openssl_holder: Option<String>,
    /// The files it maps executable, as last read.
    files: Vec<MappedFile>,
    /// Of those, the ones whose sites were not applied yet.
    todo: Vec<MappedFile>,
    /// The search for [`Process::openssl_holder`] is done.
    holder_searched: bool,
    /// Scans off the loop it waits for.
    awaiting: BTreeSet<ScanKey>,
    /// It opened TLS connections: explain, once its scans are back, why
    /// they are not traced (if they are not).
    explain_wanted: bool,
    /// It exited while its explanation waited for a scan: nothing more is
    /// attached; it is forgotten when the explanation is given.
    exited: bool,
}

impl<L> Default for Process<L> {
    fn default() -> Self {
        Self {
            libraries: BTreeMap::new(),
            explained: false,
            openssl_holder: None,
            files: Vec::new(),
            todo: Vec::new(),
            holder_searched: false,
            awaiting: BTreeSet::new(),
            explain_wanted: false,
            exited: false,
        }
    }
}

/// The OpenSSL uprobes of the socket-level set, per process and library.
#[derive(Debug)]
pub struct TlsProbes<U: Uprobes = Kernel, F: Files = ProcFiles> {
    files: Arc<F>,
    /// What each file seen provides (`None`: not a TLS library, or
    /// unreadable).
    sites: HashMap<FileKey, Option<Sites>>,
    /// Whether each file holds OpenSSL's TLS code (asked of the files of
    /// processes without a probed library, to explain untraced TLS).
    holds_openssl: HashMap<FileKey, bool>,
    /// Files being read off the loop.
    scans: Analyzer<ScanKey, Answer, ScanError>,
    /// The processes waiting for each scan.
    waiting: HashMap<ScanKey, BTreeSet<u32>>,
    /// The files of each process being scanned, opened when it was (a
    /// short-lived process may be gone before its files are read), closed
    /// once its scans are done.
    opened: BTreeMap<(u32, FileKey), F::Opened>,
    processes: HashMap<u32, Process<U::Link>>,
    /// Processes to scan at the next [`TlsProbes::settle`].
    to_scan: BTreeSet<u32>,
    /// Processes seen opening TLS connections since the last settle.
    tls_seen: BTreeSet<u32>,
    /// Processes that exited, to release at the next settle.
    exited: BTreeSet<u32>,
    /// Untraced processes by reason, since the last [`TlsProbes::take_untraced`].
    untraced: BTreeMap<&'static str, u64>,
}

impl TlsProbes {
    /// Verifies every TLS program of the set; nothing is attached yet.
    pub fn load(kernel: &mut Kernel) -> Result<Self, EbpfError> {
        kernel.load_uprobes(&tls::PROGRAMS)?;
        Ok(Self::with_files(Arc::new(ProcFiles)))
    }
}

impl<U: Uprobes, F: Files> TlsProbes<U, F> {
    /// Probes reading processes' files through `files`.
    pub fn with_files(files: Arc<F>) -> Self {
        Self {
            files,
            sites: HashMap::new(),
            holds_openssl: HashMap::new(),
            scans: Analyzer::new(DEFAULT_MAX_PENDING),
            waiting: HashMap::new(),
            opened: BTreeMap::new(),
            processes: HashMap::new(),
            to_scan: BTreeSet::new(),
            tls_seen: BTreeSet::new(),
            exited: BTreeSet::new(),
            untraced: BTreeMap::new(),
        }
    }

    /// Distinct library files probed (in one process or more).
    pub fn library_count(&self) -> usize {
        self.processes
            .values()
            .flat_map(|p| p.libraries.keys())
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// Processes with at least one library probed.
    pub fn process_count(&self) -> usize {
        self.processes
            .values()
            .filter(|p| !p.libraries.is_empty())
            .count()
    }

    /// Whether a library of process `pid` is probed.
    pub fn is_traced(&self, pid: u32) -> bool {
        self.processes
            .get(&pid)
            .is_some_and(|p| !p.libraries.is_empty())
    }

    /// Scans of files under way off the loop.
    pub fn pending_scans(&self) -> usize {
        self.scans.pending()
    }

    /// Notified when a scan is back: then [`TlsProbes::settle`] applies it.
    pub fn wakeup(&self) -> Arc<Notify> {
        self.scans.wakeup()
    }

    /// Process `pid` mapped a file executable, or was forked by a traced
    /// process: look for its TLS libraries.
    pub fn mapped(&mut self, pid: u32) {
        self.to_scan.insert(pid);
    }

    /// Process `pid` opened a TLS connection.
    pub fn saw_tls(&mut self, pid: u32) {
        let known = self.processes.get(&pid);
        if known.is_none_or(|p| p.libraries.is_empty() && !p.explained) {
            self.tls_seen.insert(pid);
        }
    }

    /// Process `pid` exited (its TLS seen before still gets explained).
    pub fn exited(&mut self, pid: u32) {
        self.exited.insert(pid);
    }

    /// Untraced processes by reason since the last call.
    pub fn take_untraced(&mut self) -> BTreeMap<&'static str, u64> {
        std::mem::take(&mut self.untraced)
    }

    /// Does the work decoding found and applies the scans that are back:
    /// attaches, explanations, releases. Reads no file but `/proc/<pid>/maps`.
    pub fn settle(&mut self, kernel: &mut U) {
        while let Some(analysed) = self.scans.try_next() {
            self.apply(kernel, analysed);
        }
        let exited = std::mem::take(&mut self.exited);
        for pid in std::mem::take(&mut self.to_scan) {
            if !exited.contains(&pid) {
                self.scan(kernel, pid);
            }
        }
        // Before the releases: a short-lived client's TLS and exit often
        // arrive in one batch.
        for pid in std::mem::take(&mut self.tls_seen) {
            if !self.processes.contains_key(&pid) && !exited.contains(&pid) {
                self.scan(kernel, pid);
            }
            if let Some(process) = self.processes.get_mut(&pid) {
                process.explain_wanted = true;
                self.progress(kernel, pid);
            }
        }
        for pid in exited {
            self.release(kernel, pid);
        }
    }

    /// Looks for the TLS libraries process `pid` maps now (the process is
    /// tracked from then on, until [`TlsProbes::release`]): libraries
    /// known already are probed now, the others once their scan is back.
    pub fn scan(&mut self, kernel: &mut U, pid: u32) {
        let files = match self.files.executable_files(pid) {
            Ok(files) => files,
            Err(error) => {
                // Gone already, or not ours to read: its exit releases it.
                debug!(pid, %error, "Cannot read the process's memory map for TLS libraries");
                return;
            }
        };
        if self.processes.get(&pid).is_some_and(|p| p.exited) {
            // A new process with the pid of one that exited.
            self.forget(pid);
        }
        // Open now what may be read later, while the process is known alive.
        for file in &files {
            let known =
                self.sites.contains_key(&file.key) && self.holds_openssl.contains_key(&file.key);
            if known || self.opened.contains_key(&(pid, file.key)) {
                continue;
            }
            match self.files.open(file) {
                Ok(opened) => {
                    self.opened.insert((pid, file.key), opened);
                }
                // Gone already (its exit releases it), or not ours to read.
                Err(error) => {
                    debug!(pid, file = %file.path, %error, "Cannot open a mapped file to look for OpenSSL in it")
                }
            }
        }
        let process = self.processes.entry(pid).or_default();
        process.todo = files
            .iter()
            .filter(|file| !process.libraries.contains_key(&file.key))
            .cloned()
            .collect();
        process.files = files;
        process.holder_searched = false;
        self.progress(kernel, pid);
    }

    /// Stops tracking `pid` and removes its uprobes.
    pub fn release(&mut self, kernel: &mut U, pid: u32) {
        let Some(process) = self.processes.get_mut(&pid) else {
            return;
        };
        let libraries = std::mem::take(&mut process.libraries);
        let attached = !libraries.is_empty();
        for (_, links) in libraries {
            kernel.detach(links);
        }
        if attached {
            debug!(pid, "Detached TLS probes");
        }
        if process.explain_wanted && !process.explained && !process.awaiting.is_empty() {
            // Its explanation waits for a scan of its files.
            process.exited = true;
            return;
        }
        self.forget(pid);
    }

    /// Detaches everything (the set is stopping).
    pub fn release_all(&mut self, kernel: &mut U) {
        let pids: Vec<u32> = self.processes.keys().copied().collect();
        for pid in pids {
            self.release(kernel, pid);
            self.forget(pid);
        }
    }

    /// Drops what is kept of `pid`, its place in the scans' queues
    /// included (a scan under way still answers for its file).
    fn forget(&mut self, pid: u32) {
        self.close(pid);
        let Some(process) = self.processes.remove(&pid) else {
            return;
        };
        for key in process.awaiting {
            if let Some(waiting) = self.waiting.get_mut(&key) {
                waiting.remove(&pid);
                if waiting.is_empty() {
                    self.waiting.remove(&key);
                }
            }
        }
    }

    /// Caches a scan's answer and moves on the processes waiting for it.
    fn apply(&mut self, kernel: &mut U, analysed: Analysed<ScanKey, Answer, ScanError>) {
        let Analysed { key, outcome } = analysed;
        let (file, question) = key;
        let answer = outcome.unwrap_or_else(|failure| {
            match &failure {
                Failure::Failed(error) => {
                    debug!(dev = file.dev, inode = file.inode, question = ?question, %error, "Not a readable ELF file; no TLS probes in it")
                }
                Failure::Panicked(_) => {
                    warn!(dev = file.dev, inode = file.inode, question = ?question, error = %failure, "Reading a mapped file for OpenSSL failed; no TLS probes in it")
                }
            }
            match question {
                Question::Sites => Answer::Sites(None),
                Question::HoldsOpenssl => Answer::HoldsOpenssl(false),
            }
        });
        match answer {
            Answer::Sites(found) => remember(&mut self.sites, file, found),
            Answer::HoldsOpenssl(holds) => remember(&mut self.holds_openssl, file, holds),
        }
        for pid in self.waiting.remove(&key).unwrap_or_default() {
            if let Some(process) = self.processes.get_mut(&pid) {
                process.awaiting.remove(&key);
            }
            self.progress(kernel, pid);
        }
    }

    /// Takes process `pid` as far as the answers known allow: attaches to
    /// its libraries, asks for the scans it needs, looks for OpenSSL in its
    /// files if it has no library, explains its untraced TLS.
    fn progress(&mut self, kernel: &mut U, pid: u32) {
        let Some(process) = self.processes.get_mut(&pid) else {
            return;
        };
        let exited = process.exited;
        let mut unknown = Vec::new();
        let mut found = Vec::new();
        for file in std::mem::take(&mut process.todo) {
            if process.awaiting.contains(&(file.key, Question::Sites)) {
                unknown.push(file);
                continue;
            }
            match self.sites.get(&file.key) {
                Some(Some(sites)) => found.push((file, sites.clone())),
                Some(None) => {}
                None => unknown.push(file),
            }
        }
        let mut todo = Vec::new();
        for file in unknown {
            if process_awaits(&self.processes, pid, (file.key, Question::Sites))
                || self.request(pid, &file, Question::Sites)
            {
                todo.push(file);
            }
        }
        for (file, sites) in found {
            self.attach(kernel, pid, &file, &sites, exited);
        }
        let Some(process) = self.processes.get_mut(&pid) else {
            return;
        };
        process.todo = todo;
        if !process.todo.is_empty() {
            return;
        }
        if !process.holder_searched {
            if process.libraries.is_empty() && process.openssl_holder.is_none() {
                for file in process.files.clone() {
                    match self.holds_openssl.get(&file.key) {
                        Some(true) => {
                            if let Some(process) = self.processes.get_mut(&pid) {
                                process.openssl_holder = Some(file.path.clone());
                            }
                            break;
                        }
                        Some(false) => {}
                        None => {
                            let key = (file.key, Question::HoldsOpenssl);
                            if process_awaits(&self.processes, pid, key)
                                || self.request(pid, &file, Question::HoldsOpenssl)
                            {
                                return;
                            }
                        }
                    }
                }
            }
            if let Some(process) = self.processes.get_mut(&pid) {
                process.holder_searched = true;
            }
        }
        // Its scans are done: its files are not read again.
        self.close(pid);
        let Some(process) = self.processes.get_mut(&pid) else {
            return;
        };
        if process.explain_wanted {
            self.explain(pid);
        }
        if exited {
            self.forget(pid);
        }
    }

    /// Puts `pid` in the queue of the scan of `file` for `question`,
    /// starting the scan if none is under way. False if the file cannot be
    /// scanned (then it is taken as holding nothing).
    fn request(&mut self, pid: u32, file: &MappedFile, question: Question) -> bool {
        let key = (file.key, question);
        if !self.scans.is_pending(&key) {
            let opened = match self.opened.get(&(pid, file.key)) {
                Some(opened) => self.files.duplicate(opened),
                None => self.files.open(file),
            };
            let opened = match opened {
                Ok(opened) => opened,
                Err(error) => {
                    // Gone already (its exit releases it), or not ours to read.
                    debug!(pid, file = %file.path, %error, "Cannot open a mapped file to look for OpenSSL in it");
                    return false;
                }
            };
            let files = self.files.clone();
            let named = file.clone();
            let scan = move || match question {
                Question::Sites => files
                    .sites(opened, &named)
                    .map(Answer::Sites)
                    .map_err(ScanError::from),
                Question::HoldsOpenssl => files
                    .holds_openssl(opened)
                    .map(Answer::HoldsOpenssl)
                    .map_err(ScanError::from),
            };
            if let Err(busy) = self.scans.submit(key, scan) {
                warn!(pid, file = %file.path, %busy, "Not looking for OpenSSL in this file: too many files are being scanned");
                return false;
            }
        }
        self.waiting.entry(key).or_default().insert(pid);
        if let Some(process) = self.processes.get_mut(&pid) {
            process.awaiting.insert(key);
        }
        true
    }

    /// Attaches to the library `file` in process `pid` (unless it exited).
    fn attach(&mut self, kernel: &mut U, pid: u32, file: &MappedFile, sites: &Sites, exited: bool) {
        let Some(process) = self.processes.get_mut(&pid) else {
            return;
        };
        if exited {
            // It mapped a library its TLS went through: nothing to explain.
            process.explain_wanted = false;
            return;
        }
        match kernel.attach_library(pid, file, sites) {
            Ok(links) => {
                info!(
                    pid,
                    library = %file.path,
                    provider = sites.provider.as_str(),
                    functions = ?sites.offsets.iter().map(|(f, _)| *f).collect::<Vec<_>>(),
                    uprobes = links.len(),
                    "Attached TLS probes"
                );
                process.libraries.insert(file.key, links);
            }
            Err(error) => {
                warn!(pid, library = %file.path, error = %error, "Cannot attach TLS probes; this process's TLS traffic through this library is not traced");
            }
        }
    }

    /// Reports once why a process with TLS connections has no probed
    /// library.
    fn explain(&mut self, pid: u32) {
        let Some(process) = self.processes.get_mut(&pid) else {
            return;
        };
        process.explain_wanted = false;
        if !process.libraries.is_empty() || process.explained {
            return;
        }
        process.explained = true;
        let untraced = match &process.openssl_holder {
            Some(file) => Untraced::Static { file: file.clone() },
            None => Untraced::NoLibrary,
        };
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        match &untraced {
            Untraced::Static { file } => warn!(
                pid,
                exe,
                file,
                reason = untraced.reason(),
                "TLS connections of this process cannot be traced: its TLS library is linked into {file} without the OpenSSL functions in a symbol table; link OpenSSL dynamically (libssl.so) or keep its symbols"
            ),
            Untraced::NoLibrary => warn!(
                pid,
                exe,
                reason = untraced.reason(),
                "TLS connections of this process cannot be traced: it maps no OpenSSL; its TLS library (GnuTLS, NSS, rustls, ...) is not probed"
            ),
        }
        *self.untraced.entry(untraced.reason()).or_default() += 1;
    }
}

impl<U: Uprobes, F: Files> TlsProbes<U, F> {
    /// Closes the files opened for `pid`'s scans.
    fn close(&mut self, pid: u32) {
        self.opened.retain(|(of, _), _| *of != pid);
    }
}

fn process_awaits<L>(processes: &HashMap<u32, Process<L>>, pid: u32, key: ScanKey) -> bool {
    processes
        .get(&pid)
        .is_some_and(|p| p.awaiting.contains(&key))
}

/// Caches a file's answer, clearing the cache when it is full.
fn remember<T>(cache: &mut HashMap<FileKey, T>, file: FileKey, answer: T) {
    if cache.len() >= MAX_CACHED_FILES && !cache.contains_key(&file) {
        cache.clear();
    }
    cache.insert(file, answer);
}

/// Attaches the entry (and return) programs to every probed function of
/// one library file, in process `pid` only. All or nothing.
fn attach_library(
    kernel: &mut Kernel,
    pid: u32,
    file: &MappedFile,
    sites: &Sites,
) -> Result<Vec<(&'static str, UProbeLinkId)>, Box<EbpfError>> {
    // pid 0 is the idle task, never a target.
    let Some(pid) = NonZeroU32::new(pid) else {
        return Ok(Vec::new());
    };
    let mut links = Vec::new();
    for (function, offset) in &sites.offsets {
        let Some((_, entry, ret)) = tls::FUNCTIONS.iter().find(|(f, _, _)| f == function) else {
            continue;
        };
        let programs = std::iter::once(*entry).chain(ret.then_some(tls::RETURN));
        for program in programs {
            let scope = UProbeScope::OneProcess(pid);
            match kernel.attach_uprobe(program, *offset, &file.open_path, scope) {
                Ok(link) => links.push((program, link)),
                Err(error) => {
                    kernel.detach_uprobes(&mut links);
                    return Err(error);
                }
            }
        }
    }
    Ok(links)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::path::PathBuf;
    use std::sync::{Condvar, Mutex};
    use std::thread::ThreadId;
    use std::time::Duration;

    use library::Provider;

    /// A file system of processes and files, whose reads wait for a gate
    /// the test opens, and which records where they ran.
    #[derive(Debug)]
    struct FakeFiles {
        maps: Mutex<HashMap<u32, Vec<MappedFile>>>,
        libraries: BTreeSet<FileKey>,
        holders: BTreeSet<FileKey>,
        gate: Mutex<bool>,
        opened: Condvar,
        /// The scans run, with the thread each ran on.
        runs: Mutex<Vec<(FileKey, Question, ThreadId)>>,
    }

    impl FakeFiles {
        fn new(libraries: &[FileKey], holders: &[FileKey]) -> Arc<Self> {
            Arc::new(Self {
                maps: Mutex::default(),
                libraries: libraries.iter().copied().collect(),
                holders: holders.iter().copied().collect(),
                gate: Mutex::new(false),
                opened: Condvar::new(),
                runs: Mutex::default(),
            })
        }

        fn start(&self, pid: u32, files: &[FileKey]) {
            let files = files.iter().map(|key| mapped(pid, *key)).collect();
            self.maps.lock().expect("maps").insert(pid, files);
        }

        fn exit(&self, pid: u32) {
            self.maps.lock().expect("maps").remove(&pid);
        }

        fn open_gate(&self) {
            *self.gate.lock().expect("gate") = true;
            self.opened.notify_all();
        }

        /// Reads wait here until the test opens the gate. A read that runs
        /// where the test is (on the loop) waits in vain: it gives up
        /// after a while, so the test fails instead of hanging.
        fn pass_gate(&self, key: FileKey, question: Question) {
            let gate = self.gate.lock().expect("gate");
            let (_open, waited) = self
                .opened
                .wait_timeout_while(gate, Duration::from_secs(10), |open| !*open)
                .expect("gate");
            assert!(
                !waited.timed_out(),
                "the scan of {key:?} waited for a gate the test opens only after settle returned: it ran on the event loop"
            );
            self.runs
                .lock()
                .expect("runs")
                .push((key, question, std::thread::current().id()));
        }

        fn runs(&self) -> Vec<(FileKey, Question)> {
            let runs = self.runs.lock().expect("runs");
            runs.iter()
                .map(|(key, question, _)| (*key, *question))
                .collect()
        }
    }

    impl Files for FakeFiles {
        type Opened = FileKey;

        fn executable_files(&self, pid: u32) -> std::io::Result<Vec<MappedFile>> {
            self.maps
                .lock()
                .expect("maps")
                .get(&pid)
                .cloned()
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
        }

        fn duplicate(&self, opened: &FileKey) -> std::io::Result<FileKey> {
            Ok(*opened)
        }

        fn open(&self, file: &MappedFile) -> std::io::Result<FileKey> {
            // map_files entries go with their process.
            let maps = self.maps.lock().expect("maps");
            let alive = maps
                .values()
                .flatten()
                .any(|f| f.open_path == file.open_path);
            alive
                .then_some(file.key)
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
        }

        fn sites(&self, key: FileKey, _: &MappedFile) -> Result<Option<Sites>, LibraryError> {
            self.pass_gate(key, Question::Sites);
            Ok(self.libraries.contains(&key).then(|| Sites {
                provider: Provider::Exported,
                offsets: vec![("SSL_read", 0x100), ("SSL_write", 0x200)],
            }))
        }

        fn holds_openssl(&self, key: FileKey) -> std::io::Result<bool> {
            self.pass_gate(key, Question::HoldsOpenssl);
            Ok(self.holders.contains(&key))
        }
    }

    /// Uprobes that record what is attached in which process.
    #[derive(Debug, Default)]
    struct FakeUprobes {
        attached: BTreeSet<(u32, FileKey)>,
    }

    impl Uprobes for FakeUprobes {
        type Link = (u32, FileKey);

        fn attach_library(
            &mut self,
            pid: u32,
            file: &MappedFile,
            _: &Sites,
        ) -> Result<Vec<Self::Link>, Box<EbpfError>> {
            self.attached.insert((pid, file.key));
            Ok(vec![(pid, file.key)])
        }

        fn detach(&mut self, links: Vec<Self::Link>) {
            for link in links {
                self.attached.remove(&link);
            }
        }
    }

    fn key(inode: u64) -> FileKey {
        FileKey { dev: 1, inode }
    }

    fn mapped(pid: u32, key: FileKey) -> MappedFile {
        MappedFile {
            key,
            path: format!("/lib/file{}", key.inode),
            open_path: PathBuf::from(format!("/proc/{pid}/map_files/{:x}", key.inode)),
        }
    }

    const PYTHON: u64 = 1;
    const LIBSSL: u64 = 2;
    const STATIC_TLS: u64 = 3;

    type Probes = TlsProbes<FakeUprobes, FakeFiles>;

    /// Applies scans as the driver does, until none is under way.
    async fn settle_scans(probes: &mut Probes, uprobes: &mut FakeUprobes) {
        let wakeup = probes.wakeup();
        probes.settle(uprobes);
        while probes.pending_scans() > 0 {
            wakeup.notified().await;
            probes.settle(uprobes);
        }
    }

    #[tokio::test]
    async fn a_library_is_read_off_the_loop_and_attached_on_it_when_the_answer_is_back() {
        let files = FakeFiles::new(&[key(LIBSSL)], &[]);
        let mut probes = Probes::with_files(files.clone());
        let mut uprobes = FakeUprobes::default();
        files.start(10, &[key(PYTHON), key(LIBSSL)]);
        probes.mapped(10);
        probes.settle(&mut uprobes);
        assert!(
            uprobes.attached.is_empty() && files.runs().is_empty(),
            "settle returns before any file is read"
        );
        assert_eq!(
            probes.pending_scans(),
            2,
            "both files are queued for reading"
        );
        files.open_gate();
        settle_scans(&mut probes, &mut uprobes).await;
        assert_eq!(uprobes.attached, BTreeSet::from([(10, key(LIBSSL))]));
        assert!(probes.is_traced(10));
        assert_eq!(probes.library_count(), 1);
        let me = std::thread::current().id();
        assert!(
            files
                .runs
                .lock()
                .expect("runs")
                .iter()
                .all(|(_, _, on)| *on != me),
            "no file is read on the loop's thread"
        );
    }

    #[tokio::test]
    async fn a_file_mapped_by_many_processes_is_read_once() {
        let files = FakeFiles::new(&[key(LIBSSL)], &[]);
        let mut probes = Probes::with_files(files.clone());
        let mut uprobes = FakeUprobes::default();
        for pid in [10, 11] {
            files.start(pid, &[key(LIBSSL)]);
            probes.mapped(pid);
        }
        probes.settle(&mut uprobes);
        // Mapped again (a fork, a dlopen) while the scan runs.
        probes.mapped(10);
        probes.settle(&mut uprobes);
        files.open_gate();
        settle_scans(&mut probes, &mut uprobes).await;
        assert_eq!(
            files.runs(),
            [(key(LIBSSL), Question::Sites)],
            "one read of the file, answering every process that maps it"
        );
        assert_eq!(
            uprobes.attached,
            BTreeSet::from([(10, key(LIBSSL)), (11, key(LIBSSL))])
        );
        // A later process is probed from the cache, with no read.
        files.start(12, &[key(LIBSSL)]);
        probes.mapped(12);
        probes.settle(&mut uprobes);
        assert!(uprobes.attached.contains(&(12, key(LIBSSL))));
        assert_eq!(files.runs().len(), 1);
    }

    #[tokio::test]
    async fn a_process_that_exits_while_its_library_is_read_is_never_attached_and_leaves_nothing_behind()
     {
        let files = FakeFiles::new(&[key(LIBSSL)], &[]);
        let mut probes = Probes::with_files(files.clone());
        let mut uprobes = FakeUprobes::default();
        files.start(10, &[key(LIBSSL)]);
        probes.mapped(10);
        probes.settle(&mut uprobes);
        files.exit(10);
        probes.exited(10);
        probes.settle(&mut uprobes);
        files.open_gate();
        settle_scans(&mut probes, &mut uprobes).await;
        assert!(
            uprobes.attached.is_empty(),
            "nothing attached to a dead pid"
        );
        assert!(
            probes.processes.is_empty() && probes.waiting.is_empty(),
            "nothing kept of the process: {probes:?}"
        );
        assert_eq!(
            probes.sites.get(&key(LIBSSL)),
            Some(&Some(Sites {
                provider: Provider::Exported,
                offsets: vec![("SSL_read", 0x100), ("SSL_write", 0x200)],
            })),
            "the answer is kept for the file (it was opened while the process lived)"
        );
    }

    #[tokio::test]
    async fn untraced_tls_is_explained_once_the_files_searched_for_openssl_are_back() {
        let files = FakeFiles::new(&[], &[key(STATIC_TLS)]);
        let mut probes = Probes::with_files(files.clone());
        let mut uprobes = FakeUprobes::default();
        files.start(10, &[key(PYTHON), key(STATIC_TLS)]);
        probes.mapped(10);
        probes.settle(&mut uprobes);
        // Its TLS and its exit in one batch, while its files are read.
        probes.saw_tls(10);
        files.exit(10);
        probes.exited(10);
        probes.settle(&mut uprobes);
        assert!(
            probes.take_untraced().is_empty(),
            "not explained before the answers"
        );
        files.open_gate();
        settle_scans(&mut probes, &mut uprobes).await;
        assert_eq!(
            probes.take_untraced(),
            BTreeMap::from([("static_libssl", 1)]),
            "explained from the files read while it lived"
        );
        assert!(probes.processes.is_empty() && probes.waiting.is_empty());
    }
}
