//! From a kernel sample to frames: per process, what it runs (Go, Python,
//! native) and where its files are mapped; per file, its symbols; per PC
//! and per Python code object, the frames they stand for. Every cache is
//! bounded ([`Limits`]); a sample whose PCs miss everything still yields
//! frames (`[libfoo.so]`), never an error.
//!
//! A new process is read in two steps: an [`Examiner`] reads its maps and
//! the files that say what it runs (ELF, pclntab, the interpreter's
//! offsets), off the event loop; [`Symbolizer::install`] then adds what it
//! found, on the loop. The symbolizer decodes other processes' samples
//! meanwhile; both share the per-file cache ([`FileCache`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ferrotel_probe_ebpf::profile::{PY_MAX, ProfProc, ProfileSample, proc_kind};
use tracing::debug;

use super::cache::BoundedCache;
use super::elf::ElfImage;
use super::gosym::GoSymtab;
use super::maps::{FileKey, Mapping, Memory, mapping_at, read_maps};
use super::model::{Frame, FrameKind};
use super::python::{CodeInfo, PyModule, PyProcess, line_for};
use crate::go::binary::AnalysisCache;

/// Caps of the symbol caches.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Files (executables, libraries) whose symbols are kept.
    pub files: usize,
    /// Resolved (file, PC) entries.
    pub pcs: usize,
    /// Python code objects (per process and address).
    pub code_objects: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            files: 64,
            pcs: 65_536,
            code_objects: 16_384,
        }
    }
}

/// Files larger than this are not read for symbols.
const MAX_FILE_BYTES: u64 = 512 << 20;
/// A PC in no known mapping re-reads the process's maps at most this often.
const MAPS_REFRESH: Duration = Duration::from_secs(1);

/// What the profiler knows of one file.
#[derive(Debug)]
pub struct FileInfo {
    pub path: String,
    pub image: ElfImage,
    pub go: Option<GoSymtab>,
    pub python: Option<PyModule>,
}

/// What kind of process, for logs and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcKind {
    Native,
    Go,
    Python,
}

#[derive(Debug)]
struct ProcState {
    kind: ProcKind,
    maps: Vec<Mapping>,
    maps_read: Instant,
    mem: Option<Memory>,
    python: Option<(PyProcess, FileKey)>,
    kernel_view: ProfProc,
}

/// Why a process is profiled with native frames only; it is still sampled.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("cannot read /proc/{pid}/maps: {source}")]
    Maps {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
}

/// Cache statistics, exported as metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub files: usize,
    pub pcs: usize,
    pub code_objects: usize,
    pub evicted: u64,
}

/// The files processes map, read once per (device, inode), at most
/// [`Limits::files`] of them. Shared by the symbolizer (on the loop) and
/// the examinations (off it).
#[derive(Debug)]
pub struct FileCache {
    entries: Mutex<BoundedCache<FileKey, Option<Arc<FileInfo>>>>,
}

impl FileCache {
    fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(BoundedCache::new(capacity)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BoundedCache<FileKey, Option<Arc<FileInfo>>>> {
        // A panic under the lock (an examination is allowed to panic) leaves
        // a consistent map behind: keep using it.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The file behind `mapping` of `pid`. The lock is not held while the
    /// file is read, so the loop never waits for an examination's reads (a
    /// file read twice at once is parsed twice, then cached once).
    fn get(&self, pid: u32, mapping: &Mapping) -> Option<Arc<FileInfo>> {
        let key = mapping.file();
        if let Some(hit) = self.lock().get(&key) {
            return hit.clone();
        }
        let info = load_file(pid, mapping).map(Arc::new);
        self.lock().insert(key, info.clone());
        info
    }
}

/// Reads what a process runs. Holds only shared caches, so it is `Send`
/// and cheap to clone: examinations run off the event loop with one.
#[derive(Clone, Debug)]
pub struct Examiner {
    files: Arc<FileCache>,
    go_analysis: Arc<AnalysisCache>,
}

/// What an [`Examiner`] found in one process, for [`Symbolizer::install`].
#[derive(Debug)]
pub struct Examined {
    state: ProcState,
}

impl Examiner {
    /// Examines a process: what it runs, and what the kernel program needs
    /// to add its language's frames. File I/O (its maps, its executable,
    /// its interpreter): run it off the event loop.
    pub fn examine(&self, pid: u32) -> Result<Examined, ProcError> {
        let maps = read_maps(pid).map_err(|source| ProcError::Maps { pid, source })?;
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
        let mem = Memory::open(pid).ok();
        let mut state = ProcState {
            kind: ProcKind::Native,
            maps_read: Instant::now(),
            mem,
            python: None,
            kernel_view: ProfProc::default(),
            maps: Vec::new(),
        };
        // Distinct files, the executable first.
        let mut seen = Vec::new();
        let mut candidates: Vec<&Mapping> = maps.iter().collect();
        candidates.sort_by_key(|m| Path::new(&m.path) != exe);
        for mapping in candidates {
            if seen.contains(&mapping.file()) {
                continue;
            }
            seen.push(mapping.file());
            let is_exe = Path::new(&mapping.path) == exe;
            if !is_exe && !mapping.path.contains("python") {
                continue;
            }
            let Some(info) = self.files.get(pid, mapping) else {
                continue;
            };
            if is_exe && let Some(go) = &info.go {
                state.kind = ProcKind::Go;
                state.kernel_view = ProfProc {
                    kind: proc_kind::GO,
                    go_goid: self.goid_offset(pid),
                    go_tls_g: go.tls_g,
                    ..ProfProc::default()
                };
                break;
            }
            if let (Some(module), Some(mem)) = (&info.python, &state.mem) {
                // Any mapping of the file gives its load bias.
                match PyProcess::resolve(module, &info.image, mapping, mem) {
                    Ok(py) => {
                        state.kind = ProcKind::Python;
                        state.kernel_view = ProfProc {
                            kind: proc_kind::PYTHON,
                            py: py.offsets(),
                            ..ProfProc::default()
                        };
                        state.python = Some((py, mapping.file()));
                    }
                    Err(error) => {
                        debug!(pid, %error, "Python process profiled with native frames only");
                    }
                }
                break;
            }
        }
        state.maps = maps;
        Ok(Examined { state })
    }

    /// `runtime.g.goid` from the Go analysis the tracer uses (DWARF, else
    /// the offsets table); 0 if unknown (samples are then not linked).
    fn goid_offset(&self, pid: u32) -> u32 {
        match self
            .go_analysis
            .get(&PathBuf::from(format!("/proc/{pid}/exe")))
        {
            Ok(binary) => binary.offsets.g_goid,
            Err(error) => {
                debug!(pid, %error, "No goroutine ids for this Go binary; samples are not linked to spans");
                0
            }
        }
    }
}

#[derive(Debug)]
pub struct Symbolizer {
    examiner: Examiner,
    pcs: BoundedCache<(FileKey, u64), Arc<[Frame]>>,
    code: BoundedCache<(u32, u64), Option<Arc<CodeInfo>>>,
    kernel: Option<Arc<KernelSymbols>>,
    kernel_tried: bool,
    procs: HashMap<u32, ProcState>,
}

impl Symbolizer {
    pub fn new(limits: Limits) -> Self {
        Self {
            examiner: Examiner {
                files: Arc::new(FileCache::new(limits.files)),
                go_analysis: Arc::default(),
            },
            pcs: BoundedCache::new(limits.pcs),
            code: BoundedCache::new(limits.code_objects),
            kernel: None,
            kernel_tried: false,
            procs: HashMap::new(),
        }
    }

    pub fn stats(&self) -> CacheStats {
        let files = self.examiner.files.lock();
        CacheStats {
            files: files.len(),
            pcs: self.pcs.len(),
            code_objects: self.code.len(),
            evicted: files.evicted() + self.pcs.evicted() + self.code.evicted(),
        }
    }

    /// Examines processes with this symbolizer's file caches, off the loop.
    pub fn examiner(&self) -> Examiner {
        self.examiner.clone()
    }

    /// Symbolizes `pid`'s samples from what `examined` found, in place of
    /// what was known of it.
    pub fn install(&mut self, pid: u32, examined: Examined) -> (ProfProc, ProcKind) {
        self.remove_process(pid);
        let Examined { state } = examined;
        let result = (state.kernel_view, state.kind);
        self.procs.insert(pid, state);
        result
    }

    /// Examines and installs a process at once, on the caller's thread
    /// (measurements that drive the symbolizer by hand).
    pub fn add_process(&mut self, pid: u32) -> Result<(ProfProc, ProcKind), ProcError> {
        let examined = self.examiner.examine(pid)?;
        Ok(self.install(pid, examined))
    }

    /// A forked child runs the same code at the same addresses.
    pub fn fork(&mut self, parent: u32, child: u32) -> Option<ProfProc> {
        let p = self.procs.get(&parent)?;
        let state = ProcState {
            kind: p.kind,
            maps: p.maps.clone(),
            maps_read: p.maps_read,
            mem: Memory::open(child).ok(),
            python: p.python.clone(),
            kernel_view: p.kernel_view,
        };
        let view = state.kernel_view;
        self.procs.insert(child, state);
        Some(view)
    }

    pub fn remove_process(&mut self, pid: u32) {
        self.procs.remove(&pid);
        self.code.remove_if(|(p, _)| *p == pid);
    }

    /// Processes known (profiled, or sampled before they were announced).
    pub fn processes(&self) -> usize {
        self.procs.len()
    }

    pub fn kind(&self, pid: u32) -> Option<ProcKind> {
        self.procs.get(&pid).map(|p| p.kind)
    }

    /// The frames of one sample, root first.
    pub fn stack(&mut self, sample: &ProfileSample) -> Vec<Frame> {
        let pid = sample.header.tgid;
        if !self.procs.contains_key(&pid) {
            // Sampled before user space read it (a fork not yet decoded, a
            // process that exec'd and waits to be read again): native
            // frames, from what /proc says now. What it runs is learnt off
            // the loop; here only its maps are read.
            self.add_native(pid);
        }
        let mut leaf_first: Vec<Frame> = Vec::new();
        // Kernel part first (it is the leaf side).
        let kernel = sample.kernel_stack();
        if !kernel.is_empty() {
            self.load_kernel();
            for (i, &ip) in kernel.iter().enumerate() {
                let pc = if i == 0 { ip } else { ip.wrapping_sub(1) };
                let name = self
                    .kernel
                    .as_ref()
                    .and_then(|k| k.lookup(pc))
                    .unwrap_or("[kernel]");
                leaf_first.push(Frame::new(FrameKind::Kernel, name, None, 0));
            }
        }
        let python = self
            .procs
            .get(&pid)
            .and_then(|p| p.python.as_ref().map(|(_, file)| *file));
        let py_frames = sample.python_stack();
        for (i, &ip) in sample.user_stack().iter().enumerate() {
            let pc = if i == 0 { ip } else { ip.wrapping_sub(1) };
            let Some(mapping) = self.mapping(pid, pc) else {
                leaf_first.push(Frame::new(FrameKind::Native, "[unknown]", None, 0));
                continue;
            };
            // Above the interpreter's own frames only the native code that
            // Python code called is worth showing (C extensions, libc);
            // frame pointers do not survive the interpreter's own C code.
            if !py_frames.is_empty() && Some(mapping.file()) == python {
                break;
            }
            leaf_first.extend(self.frames_at(pid, &mapping, pc).iter().cloned());
        }
        if !py_frames.is_empty() {
            for frame in py_frames.iter().take(PY_MAX) {
                leaf_first.push(self.python_frame(pid, frame.code, frame.instr));
            }
        }
        leaf_first.reverse();
        leaf_first
    }

    fn add_native(&mut self, pid: u32) {
        // Gone already: its samples get unknown frames.
        let Ok(maps) = read_maps(pid) else { return };
        self.procs.insert(
            pid,
            ProcState {
                kind: ProcKind::Native,
                maps,
                maps_read: Instant::now(),
                mem: None,
                python: None,
                kernel_view: ProfProc::default(),
            },
        );
    }

    fn mapping(&mut self, pid: u32, pc: u64) -> Option<Mapping> {
        let state = self.procs.get_mut(&pid)?;
        if let Some(m) = mapping_at(&state.maps, pc) {
            return Some(m.clone());
        }
        if state.maps_read.elapsed() >= MAPS_REFRESH
            && let Ok(maps) = read_maps(pid)
        {
            state.maps = maps;
            state.maps_read = Instant::now();
            return mapping_at(&state.maps, pc).cloned();
        }
        None
    }

    fn frames_at(&mut self, pid: u32, mapping: &Mapping, pc: u64) -> Arc<[Frame]> {
        let Some(info) = self.examiner.files.get(pid, mapping) else {
            return Arc::from(vec![native_unknown(&mapping.path)]);
        };
        let Some(bias) = info.image.bias(mapping) else {
            return Arc::from(vec![native_unknown(&mapping.path)]);
        };
        let vaddr = pc.wrapping_sub(bias);
        let key = (mapping.file(), vaddr);
        if let Some(hit) = self.pcs.get(&key) {
            return hit.clone();
        }
        let frames: Arc<[Frame]> = match info.go.as_ref().and_then(|g| g.frames(vaddr)) {
            Some(go) => go
                .into_iter()
                .map(|f| {
                    Frame::new(
                        if f.inlined {
                            FrameKind::GoInlined
                        } else {
                            FrameKind::Go
                        },
                        &f.function,
                        Some(&f.file),
                        f.line,
                    )
                })
                .collect(),
            None => match info.image.symbol_at(vaddr) {
                Some((name, _)) => Arc::from(vec![Frame::new(
                    FrameKind::Native,
                    name,
                    Some(basename(&info.path)),
                    0,
                )]),
                None => Arc::from(vec![native_unknown(&info.path)]),
            },
        };
        self.pcs.insert(key, frames.clone());
        frames
    }

    fn python_frame(&mut self, pid: u32, code: u64, instr: u64) -> Frame {
        let cached = self.code.get(&(pid, code)).cloned();
        let state = self.procs.get(&pid);
        let Some((py, _)) = state.and_then(|s| s.python.as_ref()) else {
            return Frame::new(FrameKind::Python, "<unknown>", None, 0);
        };
        let info = match cached {
            Some(info) => info,
            None => {
                let info = state
                    .and_then(|s| s.mem.as_ref())
                    .and_then(|mem| py.read_code(mem, code).ok())
                    .map(Arc::new);
                self.code.insert((pid, code), info.clone());
                info
            }
        };
        let Some(info) = info else {
            return Frame::new(FrameKind::Python, "<unknown>", None, 0);
        };
        let index = py.instruction_index(code, instr);
        let line = line_for(&info.lines, info.first_line, index).max(0) as u32;
        Frame::new(FrameKind::Python, &info.name, Some(&info.file), line)
    }

    fn load_kernel(&mut self) {
        if self.kernel_tried {
            return;
        }
        self.kernel_tried = true;
        match KernelSymbols::read("/proc/kallsyms") {
            Ok(k) if !k.is_empty() => self.kernel = Some(Arc::new(k)),
            Ok(_) => debug!("/proc/kallsyms shows no addresses; kernel frames stay anonymous"),
            Err(error) => {
                debug!(%error, "Cannot read /proc/kallsyms; kernel frames stay anonymous")
            }
        }
    }

    /// The Python process state (tests, diagnostics).
    pub fn python(&self, pid: u32) -> Option<&PyProcess> {
        self.procs.get(&pid)?.python.as_ref().map(|(p, _)| p)
    }
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn native_unknown(path: &str) -> Frame {
    if path.starts_with('[') {
        return Frame::new(FrameKind::Native, path, None, 0);
    }
    Frame::new(FrameKind::Native, &format!("[{}]", basename(path)), None, 0)
}

fn load_file(pid: u32, mapping: &Mapping) -> Option<FileInfo> {
    if !mapping.path.starts_with('/') {
        return None;
    }
    let candidates = [
        mapping.host_path(pid),
        PathBuf::from(format!(
            "/proc/{pid}/map_files/{:x}-{:x}",
            mapping.start, mapping.end
        )),
    ];
    let data = candidates.iter().find_map(|path| {
        let meta = std::fs::metadata(path).ok()?;
        if meta.len() > MAX_FILE_BYTES {
            return None;
        }
        std::fs::read(path).ok()
    })?;
    let image = ElfImage::parse(&data)
        .map_err(|error| debug!(path = %mapping.path, %error, "Not an ELF file; no symbols"))
        .ok()?;
    let go = match GoSymtab::parse(&data, &image) {
        Ok(go) => Some(go),
        Err(super::gosym::GoSymError::NoPclntab) => None,
        Err(error) => {
            debug!(path = %mapping.path, %error, "Unreadable Go function table");
            None
        }
    };
    let python = PyModule::from_elf(&mapping.path, &data)
        .map_err(
            |error| debug!(path = %mapping.path, %error, "Not readable as a Python interpreter"),
        )
        .ok()
        .flatten();
    Some(FileInfo {
        path: mapping.path.clone(),
        image,
        go,
        python,
    })
}

/// Kernel text symbols from `/proc/kallsyms` (root sees the addresses).
#[derive(Debug)]
pub struct KernelSymbols {
    symbols: Vec<(u64, u32, u32)>,
    names: String,
}

impl KernelSymbols {
    pub fn read(path: &str) -> std::io::Result<Self> {
        Ok(Self::parse(&std::fs::read_to_string(path)?))
    }

    pub fn parse(text: &str) -> Self {
        let mut symbols = Vec::new();
        let mut names = String::new();
        for line in text.lines() {
            let mut f = line.split_ascii_whitespace();
            let (Some(addr), Some(kind), Some(name)) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            if !matches!(kind, "t" | "T") {
                continue;
            }
            let Ok(addr) = u64::from_str_radix(addr, 16) else {
                continue;
            };
            if addr == 0 {
                continue;
            }
            symbols.push((addr, names.len() as u32, name.len() as u32));
            names.push_str(name);
        }
        symbols.sort_unstable_by_key(|s| s.0);
        Self { symbols, names }
    }

    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }

    pub fn lookup(&self, addr: u64) -> Option<&str> {
        let i = self
            .symbols
            .partition_point(|s| s.0 <= addr)
            .checked_sub(1)?;
        let (_, at, len) = self.symbols[i];
        self.names.get(at as usize..(at + len) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_examination_on_another_thread_fills_the_symbolizers_file_cache() {
        let mut symbolizer = Symbolizer::new(Limits::default());
        let examiner = symbolizer.examiner();
        let pid = std::process::id();
        let examined = std::thread::spawn(move || examiner.examine(pid))
            .join()
            .expect("the examination does not panic")
            .expect("examine this process");
        assert_eq!(
            symbolizer.stats().files,
            1,
            "the executable the examination read is cached for the symbolizer too"
        );
        assert_eq!(symbolizer.processes(), 0, "installed only by install");
        let (view, kind) = symbolizer.install(pid, examined);
        assert_eq!(kind, ProcKind::Native, "a Rust test binary");
        assert_eq!(view.kind, ProfProc::default().kind);
        assert_eq!(symbolizer.processes(), 1);
    }

    #[test]
    fn kernel_addresses_resolve_to_the_preceding_text_symbol() {
        let k = KernelSymbols::parse(
            "ffffffff81000000 T _stext\nffffffff81000100 t do_one\nffffffff81000200 D some_data\nffffffff81000300 T do_two\n",
        );
        assert_eq!(k.lookup(0xffffffff81000150), Some("do_one"));
        assert_eq!(
            k.lookup(0xffffffff81000250),
            Some("do_one"),
            "data symbols are skipped"
        );
        assert_eq!(k.lookup(0xffffffff81000300), Some("do_two"));
        assert_eq!(k.lookup(0x1000), None);
    }
}
