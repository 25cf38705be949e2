//! User-side eBPF plumbing under the [driver](crate::driver): loading a
//! program set with its [`Tuning`], the loaded set's handle ([`Kernel`]:
//! typed maps and programs, attach helpers), reading the ring buffer with
//! batched wake-ups, claiming processes and reading the kernel drop
//! counters. Everything here is generic over the program set; every name it
//! passes to aya comes from the kernel contract,
//! [`ferrotel_probe_ebpf::contract`].

// Setup errors carry aya's (large) errors unboxed: they happen once, at
// startup, and the Go set builds these variants directly.
#![allow(clippy::result_large_err)]

mod btf;
mod btf_trim;
mod claims;
mod drops;
mod reaper;
mod ring;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aya::maps::Map;
use aya::programs::perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent};
use aya::programs::uprobe::{UProbeAttachLocation, UProbeLinkId, UProbeScope};
use aya::programs::{BtfTracePoint, PerfEvent, Program, TracePoint, UProbe};
use aya::{Ebpf, EbpfLoader};
use ferrotel_probe_ebpf::contract::{globals, maps, process};
use tracing::{debug, warn};

pub(crate) use btf::BtfHold;
pub use claims::Claims;
pub use drops::DropCounters;
pub use ring::EventReader;

/// Why a program set could not be set up; every message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    #[error(
        "loading the {set} eBPF program set failed: {source}; the probe needs root (or CAP_BPF + CAP_PERFMON) and a kernel with BTF at /sys/kernel/btf/vmlinux"
    )]
    Load {
        set: &'static str,
        #[source]
        source: aya::EbpfError,
    },
    #[error(
        "the {set} eBPF object has no program {name:?}; rebuild the probe (probe-ebpf is out of date)"
    )]
    MissingProgram { set: &'static str, name: String },
    #[error(
        "the {set} eBPF object has no map {name:?}; rebuild the probe (probe-ebpf is out of date)"
    )]
    MissingMap {
        set: &'static str,
        name: &'static str,
    },
    #[error("program {name:?} of the {set} set is not a {expected} program")]
    WrongProgramType {
        set: &'static str,
        name: String,
        expected: &'static str,
    },
    #[error("verifying/attaching {name:?} ({target}) of the {set} set failed: {source}")]
    Attach {
        set: &'static str,
        name: String,
        target: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("map {name:?} of the {set} set: {source}")]
    Map {
        set: &'static str,
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error(
        "reading kernel BTF from /sys/kernel/btf/vmlinux failed: {0}; the kernel needs CONFIG_DEBUG_INFO_BTF=y"
    )]
    Btf(#[source] aya::BtfError),
    #[error("ring buffer of the {set} set: {source}")]
    Ring {
        set: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "reading the online CPUs (/sys/devices/system/cpu/online) for the {set} set failed: {source}; mount /sys into the probe"
    )]
    OnlineCpus {
        set: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// A `volatile const` knob's value (`__u32` or `__u64` on the C side).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Global {
    U32(u32),
    U64(u64),
}

/// How a program set is loaded. There is no default: every set says where
/// each value comes from (a language's from its `spec.<language>` section,
/// see [`Tuning::from_language`]), so that a knob cannot be dropped on the
/// way to the kernel.
#[derive(Clone, Debug, PartialEq)]
pub struct Tuning {
    /// Size of the `events` ring buffer, rounded up to a power of two of at
    /// least one page ([`ring_size`]).
    pub ring_buffer_bytes: u32,
    /// Pending ring-buffer bytes above which the kernel wakes the reader.
    pub wakeup_bytes: u64,
    /// How often the ring is drained when the kernel did not wake the
    /// reader: the longest a record waits below `wakeup_bytes`.
    pub poll: Duration,
    /// The set's other `volatile const` knobs, by contract name
    /// ([`ferrotel_probe_ebpf::contract::globals`]).
    pub globals: Vec<(&'static str, Global)>,
    /// Maps created with another size than the object's (by contract
    /// name): e.g. a feature's maps shrunk to one entry when it is off.
    pub map_sizes: Vec<(&'static str, u32)>,
    /// Maps reused from (or created at) a bpffs path instead of created
    /// private to the object: shared with another object or probe.
    pub map_pins: Vec<(&'static str, PathBuf)>,
}

impl Tuning {
    /// The tuning of a language's program set: ring size and payload bytes
    /// from its config section; batched wake-ups at the contract's default,
    /// polled every 10 ms (an event waits at most that long).
    pub fn from_language(ring_buffer_bytes: u32, max_payload_bytes: u32) -> Self {
        Self {
            ring_buffer_bytes,
            wakeup_bytes: ferrotel_probe_ebpf::contract::defaults::WAKEUP_BYTES,
            poll: Duration::from_millis(10),
            globals: vec![(globals::MAX_PAYLOAD_BYTES, Global::U32(max_payload_bytes))],
            map_sizes: Vec::new(),
            map_pins: Vec::new(),
        }
    }

    /// Adds or replaces knob `name`.
    pub fn with_global(mut self, name: &'static str, value: Global) -> Self {
        self.globals.retain(|(n, _)| *n != name);
        self.globals.push((name, value));
        self
    }

    /// Creates map `name` with `entries` entries.
    pub fn with_map_size(mut self, name: &'static str, entries: u32) -> Self {
        self.map_sizes.retain(|(n, _)| *n != name);
        self.map_sizes.push((name, entries));
        self
    }

    /// Reuses map `name` pinned at `path` (creating and pinning it there
    /// if nothing is).
    pub fn with_map_pin(mut self, name: &'static str, path: PathBuf) -> Self {
        self.map_pins.retain(|(n, _)| *n != name);
        self.map_pins.push((name, path));
        self
    }
}

/// The error of program `name` of `set` failing to load or attach to `target`.
fn attach_error(
    set: &'static str,
    name: &str,
    target: impl Into<String>,
) -> impl FnOnce(aya::programs::ProgramError) -> EbpfError {
    let name = name.to_owned();
    let target = target.into();
    move |source| EbpfError::Attach {
        set,
        name,
        target,
        source,
    }
}

/// Logs the process's resident memory now and at its peak (`VmRSS`,
/// `VmHWM` in KiB) after a start-up `step` of `set`: the peak is reached
/// while sets load, and this says which step reached it.
pub(crate) fn log_memory(set: &str, step: &str) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return;
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or(0)
    };
    debug!(
        set,
        step,
        rss_kib = field("VmRSS:"),
        peak_kib = field("VmHWM:"),
        "Memory after a start-up step"
    );
}

/// A loader for `object`, given the kernel's BTF if the object needs it
/// (CO-RE relocations or typed kernel symbols): `btf` is where it is kept
/// while the loader lives (shared, see [`btf`]). An object that needs none
/// is loaded without: aya parses nothing for it.
pub(crate) fn loader_for<'a>(
    set: &'static str,
    object: &[u8],
    btf: &'a mut Option<Arc<btf::KernelBtf>>,
) -> Result<EbpfLoader<'a>, EbpfError> {
    // Parsing the object to ask costs little (it is under 400 KiB, and aya
    // parses it again to load it); an object aya cannot parse gets its
    // error from the load itself.
    let needs_btf = aya_obj::Object::parse(object).map_or(true, |parsed| {
        parsed.has_btf_relocations() || parsed.has_strong_typed_ksyms()
    });
    if needs_btf {
        *btf = Some(btf::kernel_btf(set, Some(object)).map_err(EbpfError::Btf)?);
    }
    let mut loader = EbpfLoader::new();
    if let Some(btf) = btf {
        loader.btf(btf);
    }
    Ok(loader)
}

/// Drops a loader once it has loaded and returns the heap it freed (the
/// object's sections and relocations) to the kernel: glibc would keep it.
pub(crate) fn drop_loader(loader: EbpfLoader<'_>) {
    drop(loader);
    ferrotel_memory::release_free_heap();
}

/// Sizes the claimed hint bitmaps (`common/claimed.h`) of an object about to
/// be loaded to this node's pid_max: a bit per pid, 4 KiB each at the
/// default pid_max of 32768 instead of the 512 KiB that the largest one
/// needs. Objects without them ignore it.
///
/// pid_max is read once per probe, so every object's bitmaps have one size,
/// also those the propagation set shares with its language set through
/// pins, even if pid_max is raised while the probe runs.
pub(crate) fn size_claimed_hints(loader: &mut EbpfLoader<'_>) {
    static WORDS: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let words = *WORDS.get_or_init(|| {
        claimed_hint_words(
            std::fs::read_to_string("/proc/sys/kernel/pid_max")
                .ok()
                .and_then(|text| text.trim().parse().ok()),
        )
    });
    loader.map_max_entries(maps::CLAIMED_HINT_USER, words);
    loader.map_max_entries(maps::CLAIMED_HINT_KERNEL, words);
}

/// Words of 64 pids covering every pid below `pid_max`; the kernel's
/// largest (4194304) when it is unknown. A pid beyond the bitmap (pid_max
/// raised later) is looked up in `claimed_tgids`, so a small bitmap is slow
/// for it, never wrong.
fn claimed_hint_words(pid_max: Option<u32>) -> u32 {
    const PID_MAX_LIMIT: u32 = 4 * 1024 * 1024;
    pid_max
        .unwrap_or(PID_MAX_LIMIT)
        .clamp(64, PID_MAX_LIMIT)
        .div_ceil(64)
}

/// Rounds a requested ring size to what the kernel accepts: a power of two,
/// at least one 4 KiB page.
pub fn ring_size(requested: u32) -> u32 {
    requested
        .max(4096)
        .checked_next_power_of_two()
        .unwrap_or(1 << 31)
}

/// A loaded program set: the object, its maps and programs, and the
/// helpers a set uses to attach. Dropping it detaches every program.
pub struct Kernel {
    set: &'static str,
    ebpf: Ebpf,
    ring_buffer_bytes: u32,
    claims: Option<Claims>,
    /// Closes detached uprobes off the event loop; started at the first
    /// detach. Declared after `ebpf`: dropped after it, so a stopping
    /// probe waits for the links it handed over.
    reaper: Option<reaper::LinkReaper>,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernel")
            .field("set", &self.set)
            .field("ring_buffer_bytes", &self.ring_buffer_bytes)
            .finish_non_exhaustive()
    }
}

/// Parses an embedded program set and creates its maps with `tuning`
/// applied. Programs are verified when they are attached.
pub fn load(set: &'static str, object: &[u8], tuning: &Tuning) -> Result<Kernel, EbpfError> {
    let mut btf = None;
    let mut loader = loader_for(set, object, &mut btf)?;
    for (name, entries) in &tuning.map_sizes {
        loader.map_max_entries(name, *entries);
    }
    for (name, path) in &tuning.map_pins {
        if let Some(dir) = path.parent() {
            // bpffs: the probe's own directories (e.g. /sys/fs/bpf/ferrotel).
            let _ = std::fs::create_dir_all(dir);
        }
        loader.map_pin_path(name, path.as_path());
    }
    loader.map_max_entries(maps::EVENTS, ring_size(tuning.ring_buffer_bytes));
    size_claimed_hints(&mut loader);
    loader.override_global(globals::WAKEUP_BYTES, &tuning.wakeup_bytes, true);
    for (name, value) in &tuning.globals {
        match value {
            Global::U32(v) => loader.override_global(name, v, true),
            Global::U64(v) => loader.override_global(name, v, true),
        };
    }
    let loaded = loader.load(object);
    drop_loader(loader);
    drop(btf);
    let ebpf = loaded.map_err(|source| EbpfError::Load { set, source })?;
    log_memory(set, "loaded");
    // What the kernel made of the request, not the request.
    let ring_buffer_bytes = match ebpf.map(maps::EVENTS) {
        Some(Map::RingBuf(data)) => data
            .info()
            .map_err(|source| EbpfError::Map {
                set,
                name: maps::EVENTS,
                source,
            })?
            .max_entries(),
        _ => {
            return Err(EbpfError::MissingMap {
                set,
                name: maps::EVENTS,
            });
        }
    };
    Ok(Kernel {
        set,
        ebpf,
        ring_buffer_bytes,
        claims: None,
        reaper: None,
    })
}

/// Loads a set that keeps what it measures in maps and writes no ring
/// records (pod network, TCP health): no `events` ring, no knobs. Its
/// owner reads the maps on its own schedule; it does not run under the
/// [driver](crate::driver) loop, which exists to drain a ring.
pub fn load_maps_only(set: &'static str, object: &[u8]) -> Result<Kernel, EbpfError> {
    let mut btf = None;
    let mut loader = loader_for(set, object, &mut btf)?;
    let loaded = loader.load(object);
    drop_loader(loader);
    drop(btf);
    let ebpf = loaded.map_err(|source| EbpfError::Load { set, source })?;
    log_memory(set, "loaded");
    Ok(Kernel {
        set,
        ebpf,
        ring_buffer_bytes: 0,
        claims: None,
        reaper: None,
    })
}

impl Kernel {
    /// The program set's name, for errors and logs.
    pub fn set(&self) -> &'static str {
        self.set
    }

    /// Size of the `events` ring buffer as the kernel created it (0 for a
    /// set [loaded without one](load_maps_only)).
    pub fn ring_buffer_bytes(&self) -> u32 {
        self.ring_buffer_bytes
    }

    /// The loaded object, for what the helpers below do not cover.
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// Takes map `name` out of the object as a typed map (the caller owns
    /// it from now on).
    pub fn take_map<M>(&mut self, name: &'static str) -> Result<M, EbpfError>
    where
        M: TryFrom<Map, Error = aya::maps::MapError>,
    {
        let set = self.set;
        let map = self
            .ebpf
            .take_map(name)
            .ok_or(EbpfError::MissingMap { set, name })?;
        M::try_from(map).map_err(|source| EbpfError::Map { set, name, source })
    }

    /// Program `name` as a `P` (`UProbe`, `TracePoint`, ...).
    pub fn program<P>(&mut self, name: &str, expected: &'static str) -> Result<&mut P, EbpfError>
    where
        for<'a> &'a mut P: TryFrom<&'a mut Program>,
    {
        let set = self.set;
        self.ebpf
            .program_mut(name)
            .ok_or_else(|| EbpfError::MissingProgram {
                set,
                name: name.to_owned(),
            })?
            .try_into()
            .map_err(|_| EbpfError::WrongProgramType {
                set,
                name: name.to_owned(),
                expected,
            })
    }

    /// The set's `claimed_tgids` map (taken on first use).
    pub fn claims(&mut self) -> Result<&mut Claims, EbpfError> {
        if self.claims.is_none() {
            let map = self.take_map(maps::CLAIMED_TGIDS)?;
            let hint = self.take_map(maps::CLAIMED_HINT_USER)?;
            self.claims = Some(Claims::new(self.set, map, hint));
        }
        Ok(self.claims.as_mut().expect("just set"))
    }

    /// The claimed pids, if the set claims processes.
    pub fn claimed(&self) -> Option<Vec<u32>> {
        self.claims.as_ref().map(Claims::pids)
    }

    /// Loads program `name` and attaches it to each `category/tracepoint`.
    pub fn attach_tracepoints(
        &mut self,
        name: &str,
        tracepoints: &[(&str, &str)],
    ) -> Result<(), EbpfError> {
        let set = self.set;
        let program: &mut TracePoint = self.program(name, "tracepoint")?;
        program.load().map_err(attach_error(set, name, "load"))?;
        for (category, tracepoint) in tracepoints {
            program.attach(category, tracepoint).map_err(attach_error(
                set,
                name,
                format!("{category}/{tracepoint}"),
            ))?;
        }
        Ok(())
    }

    /// Attaches each `(program, syscall tracepoints)` of a contract table
    /// such as [`ferrotel_probe_ebpf::contract::sockets::TRACEPOINTS`].
    pub fn attach_syscall_tracepoints(
        &mut self,
        table: &[(&str, &[&str])],
    ) -> Result<(), EbpfError> {
        for (program, tracepoints) in table {
            let targets: Vec<(&str, &str)> = tracepoints.iter().map(|t| ("syscalls", *t)).collect();
            self.attach_tracepoints(program, &targets)?;
        }
        Ok(())
    }

    /// Loads BTF tracepoint program `name` for `tracepoint` and attaches it.
    pub fn attach_btf_tracepoint(&mut self, name: &str, tracepoint: &str) -> Result<(), EbpfError> {
        self.attach_btf_tracepoints(&[(name, tracepoint)])
    }

    /// Loads and attaches each `(program, tracepoint)` BTF tracepoint
    /// program, with one parse of the kernel's BTF for all of them (the one
    /// a `BtfHold` keeps for the set's load, if any). Nothing keeps it
    /// after: nothing needs it once the programs are loaded.
    pub fn attach_btf_tracepoints(&mut self, table: &[(&str, &str)]) -> Result<(), EbpfError> {
        let set = self.set;
        let btf = btf::kernel_btf(set, None).map_err(EbpfError::Btf)?;
        for (name, tracepoint) in table {
            let target = format!("tp_btf/{tracepoint}");
            let program = self.program::<BtfTracePoint>(name, "tp_btf")?;
            program
                .load(tracepoint, &btf)
                .map_err(attach_error(set, name, target.as_str()))?;
            program.attach().map_err(attach_error(set, name, target))?;
        }
        drop(btf);
        log_memory(set, "BTF tracepoints attached");
        Ok(())
    }

    /// Loads perf_event program `name` and attaches it to the software CPU
    /// clock of every online CPU, sampling whatever runs there at
    /// `frequency_hz` (the program filters). The software clock because a
    /// VM may have no hardware PMU. Returns the number of CPUs.
    pub fn attach_cpu_clock(&mut self, name: &str, frequency_hz: u32) -> Result<usize, EbpfError> {
        let set = self.set;
        let cpus = aya::util::online_cpus()
            .map_err(|(_, source)| EbpfError::OnlineCpus { set, source })?;
        let program: &mut PerfEvent = self.program(name, "perf_event")?;
        program.load().map_err(attach_error(set, name, "load"))?;
        for &cpu in &cpus {
            program
                .attach(
                    PerfEventConfig::Software(SoftwareEvent::CpuClock),
                    PerfEventScope::AllProcessesOneCpu { cpu },
                    SamplePolicy::Frequency(u64::from(frequency_hz.max(1))),
                    false,
                )
                .map_err(attach_error(set, name, format!("cpu-clock on CPU {cpu}")))?;
        }
        Ok(cpus.len())
    }

    /// Loads (verifies) uprobe programs `names`; they attach later, per
    /// process or per file.
    pub fn load_uprobes(&mut self, names: &[&str]) -> Result<(), EbpfError> {
        let set = self.set;
        for name in names {
            let program: &mut UProbe = self.program(name, "uprobe")?;
            program.load().map_err(attach_error(set, name, "load"))?;
        }
        Ok(())
    }

    /// Attaches loaded uprobe program `name` at file `offset` of `target`
    /// for `scope`. Boxed: aya's errors are large, and per-process attaches
    /// return this on every path.
    pub fn attach_uprobe(
        &mut self,
        name: &'static str,
        offset: u64,
        target: &Path,
        scope: UProbeScope,
    ) -> Result<UProbeLinkId, Box<EbpfError>> {
        let set = self.set;
        let uprobe: &mut UProbe = self.program(name, "uprobe")?;
        uprobe
            .attach(
                [UProbeAttachLocation::AbsoluteOffset(offset)],
                target,
                scope,
            )
            .map_err(|source| {
                let target = format!("{}+{offset:#x}", target.display());
                Box::new(attach_error(set, name, target)(source))
            })
    }

    /// Detaches uprobe links taken from [`Kernel::attach_uprobe`]; a link
    /// whose process exited is already gone, which is fine. Returns at once:
    /// the links are closed on threads of their own (see [`reaper`]).
    pub fn detach_uprobes(&mut self, links: &mut Vec<(&'static str, UProbeLinkId)>) {
        let mut owned = Vec::with_capacity(links.len());
        for (program, link) in links.drain(..) {
            if let Ok(uprobe) = self.program::<UProbe>(program, "uprobe")
                && let Ok(link) = uprobe.take_link(link)
            {
                owned.push(link);
            }
        }
        if self.reaper.is_none() {
            match reaper::LinkReaper::start(self.set) {
                Ok(started) => self.reaper = Some(started),
                Err(error) => {
                    warn!(set = self.set, %error, "Cannot start the uprobe closer thread; closing uprobes on the event loop");
                }
            }
        }
        match &self.reaper {
            Some(reaper) => reaper.close(owned),
            None => drop(owned),
        }
    }

    /// Attaches the shared process-lifecycle programs of `common/proc.h`
    /// (fork inheritance of claims, exit, exec).
    pub fn attach_process_tracking(&mut self) -> Result<(), EbpfError> {
        self.attach_btf_tracepoints(&process::BTF_TRACEPOINTS)
    }
}

#[cfg(test)]
mod tests {
    use ferrotel_api::probe_config::LanguageTuning;
    use ferrotel_probe_ebpf::contract::defaults;

    #[test]
    fn the_probe_configs_defaults_are_the_kernel_contracts() {
        // The API crate cannot depend on probe-ebpf (the operator is built
        // without clang), so its defaults are held to the contract here.
        let config = LanguageTuning::default();
        assert_eq!(config.ring_buffer_bytes, defaults::RING_BUFFER_BYTES);
        assert_eq!(config.max_payload_bytes, defaults::MAX_PAYLOAD_BYTES);
    }

    #[test]
    fn ring_sizes_round_up_to_a_power_of_two_of_at_least_a_page() {
        assert_eq!(super::ring_size(0), 4096);
        assert_eq!(super::ring_size(100_000), 131_072);
        assert_eq!(super::ring_size(1 << 20), 1 << 20);
    }

    #[test]
    fn the_claimed_hints_cover_every_pid_below_pid_max() {
        // pid_max itself is never a pid: 32768 pids are 512 words.
        assert_eq!(super::claimed_hint_words(Some(32_768)), 512);
        assert_eq!(super::claimed_hint_words(Some(32_769)), 513);
        assert_eq!(super::claimed_hint_words(Some(4_194_304)), 65_536);
        // Unknown, or beyond what the kernel allows: the largest.
        assert_eq!(super::claimed_hint_words(None), 65_536);
        assert_eq!(super::claimed_hint_words(Some(u32::MAX)), 65_536);
        assert_eq!(super::claimed_hint_words(Some(0)), 1);
    }
}
