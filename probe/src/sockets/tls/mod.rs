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

// Attach errors carry aya's (large) errors unboxed: they happen at startup
// (see crate::ebpf).
#![allow(clippy::result_large_err)]

// The hello parser reads the workload's bytes: it lives in `ferrotel-parse`.
pub use ferrotel_parse::sockets::tls_hello as hello;
pub mod library;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::num::NonZeroU32;

use aya::programs::uprobe::{UProbeLinkId, UProbeScope};
use ferrotel_probe_ebpf::contract::tls;
use tracing::{debug, info, warn};

use crate::ebpf::{EbpfError, Kernel};

use library::{FileKey, MappedFile, Sites, Untraced};

/// Per-file caches are cleared past this many entries (processes come and
/// go; a node maps a bounded set of libraries, but not a fixed one).
const MAX_CACHED_FILES: usize = 4096;

/// What is known of one traced process's TLS.
#[derive(Debug, Default)]
struct Process {
    /// Probed library files it maps, with the uprobes in this process.
    libraries: BTreeMap<FileKey, Vec<(&'static str, UProbeLinkId)>>,
    /// Its untraced TLS was already reported.
    explained: bool,
    /// Without a probed library: the first file it maps that holds
    /// OpenSSL's TLS code. Found when it is scanned, while its files can
    /// still be opened (a short-lived client may be gone when its TLS is
    /// seen).
    openssl_holder: Option<String>,
}

/// The OpenSSL uprobes of the socket-level set, per process and library.
#[derive(Debug, Default)]
pub struct TlsProbes {
    /// What each file seen provides (`None`: not a TLS library, or
    /// unreadable).
    sites: HashMap<FileKey, Option<Sites>>,
    /// Whether each file holds OpenSSL's TLS code (asked of the files of
    /// processes without a probed library, to explain untraced TLS).
    holds_openssl: HashMap<FileKey, bool>,
    processes: HashMap<u32, Process>,
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
        Ok(Self::default())
    }

    /// Distinct library files probed (in one process or more).
    pub fn library_count(&self) -> usize {
        self.processes
            .values()
            .flat_map(|p| p.libraries.keys())
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// Whether a library of process `pid` is probed.
    pub fn is_traced(&self, pid: u32) -> bool {
        self.processes
            .get(&pid)
            .is_some_and(|p| !p.libraries.is_empty())
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

    /// Does the work decoding found: scans, explanations, releases.
    pub fn settle(&mut self, kernel: &mut Kernel) {
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
            self.explain(pid);
        }
        for pid in exited {
            self.release(kernel, pid);
        }
    }

    /// Probes the TLS libraries process `pid` maps now (the process is
    /// tracked from then on, until [`TlsProbes::release`]). Returns how
    /// many it maps.
    pub fn scan(&mut self, kernel: &mut Kernel, pid: u32) -> usize {
        let files = match library::executable_files(pid) {
            Ok(files) => files,
            Err(error) => {
                // Gone already, or not ours to read: its exit releases it.
                debug!(pid, %error, "Cannot read the process's memory map for TLS libraries");
                return self.processes.get(&pid).map_or(0, |p| p.libraries.len());
            }
        };
        self.processes.entry(pid).or_default();
        for file in &files {
            if self
                .processes
                .get(&pid)
                .is_some_and(|p| p.libraries.contains_key(&file.key))
            {
                continue;
            }
            let Some(sites) = self.sites_of(file) else {
                continue;
            };
            match attach_library(kernel, pid, file, &sites) {
                Ok(links) => {
                    info!(
                        pid,
                        library = %file.path,
                        provider = sites.provider.as_str(),
                        functions = ?sites.offsets.iter().map(|(f, _)| *f).collect::<Vec<_>>(),
                        uprobes = links.len(),
                        "Attached TLS probes"
                    );
                    if let Some(process) = self.processes.get_mut(&pid) {
                        process.libraries.insert(file.key, links);
                    }
                }
                Err(error) => {
                    warn!(pid, library = %file.path, error = %error, "Cannot attach TLS probes; this process's TLS traffic through this library is not traced");
                }
            }
        }
        let Some(process) = self.processes.get_mut(&pid) else {
            return 0;
        };
        if process.libraries.is_empty() && process.openssl_holder.is_none() {
            let holds = &mut self.holds_openssl;
            if holds.len() >= MAX_CACHED_FILES {
                holds.clear();
            }
            if let Untraced::Static { file } = library::untraced_reason(&files, |file| {
                *holds
                    .entry(file.key)
                    .or_insert_with(|| library::holds_openssl(&file.open_path).unwrap_or(false))
            }) {
                process.openssl_holder = Some(file);
            }
        }
        process.libraries.len()
    }

    /// Stops tracking `pid` and removes its uprobes.
    pub fn release(&mut self, kernel: &mut Kernel, pid: u32) {
        let Some(process) = self.processes.remove(&pid) else {
            return;
        };
        let attached = !process.libraries.is_empty();
        for (_, mut links) in process.libraries {
            kernel.detach_uprobes(&mut links);
        }
        if attached {
            debug!(pid, "Detached TLS probes");
        }
    }

    /// Detaches everything (the set is stopping).
    pub fn release_all(&mut self, kernel: &mut Kernel) {
        let pids: Vec<u32> = self.processes.keys().copied().collect();
        for pid in pids {
            self.release(kernel, pid);
        }
    }

    fn sites_of(&mut self, file: &MappedFile) -> Option<Sites> {
        if let Some(known) = self.sites.get(&file.key) {
            return known.clone();
        }
        let found = match library::sites(&file.open_path) {
            Ok(found) => found,
            Err(error) => {
                debug!(file = %file.path, %error, "Not a readable ELF file; no TLS probes in it");
                None
            }
        };
        if self.sites.len() >= MAX_CACHED_FILES {
            self.sites.clear();
        }
        self.sites.insert(file.key, found.clone());
        found
    }

    /// Reports once why a process with TLS connections has no probed
    /// library.
    fn explain(&mut self, pid: u32) {
        let Some(process) = self.processes.get_mut(&pid) else {
            return;
        };
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
