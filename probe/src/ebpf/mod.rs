//! User-side eBPF plumbing shared by the language front-ends: loading a
//! program set with its knobs, attaching tracepoints, reading the ring
//! buffer with batched wake-ups, claiming processes and reading the kernel
//! drop counters. Everything here is generic over the program set: the maps
//! it touches (`events`, `claimed_tgids`, `drop_counters`) and the knobs
//! (`wakeup_bytes`, ...) are defined once in `probe-ebpf/src/c/common/`.

// Setup errors carry aya's (large) errors unboxed: they happen once, at
// startup, and the Go front-end builds these variants directly.
#![allow(clippy::result_large_err)]

mod claims;
mod drops;
mod ring;

use aya::programs::{BtfTracePoint, TracePoint};
use aya::{Btf, Ebpf, EbpfLoader};

pub use claims::Claims;
pub use drops::DropCounters;
pub use ring::{DEFAULT_POLL, EventReader};

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
}

/// Load-time settings of a program set.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Program set name, for errors and logs (`python`, `go`).
    pub set: &'static str,
    /// Ring buffer size (`events` map), a power of two >= one page.
    pub ring_buffer_bytes: u32,
    /// Pending bytes above which the kernel wakes the reader (`wakeup_bytes`).
    pub wakeup_bytes: u64,
    /// Extra `volatile const __u32` knobs of the program set, by name.
    pub u32_globals: Vec<(&'static str, u32)>,
}

impl LoadOptions {
    pub fn new(set: &'static str) -> Self {
        Self {
            set,
            ring_buffer_bytes: 4 << 20,
            wakeup_bytes: 64 * 1024,
            u32_globals: Vec::new(),
        }
    }
}

/// Rounds a requested ring size to what the kernel accepts: a power of two,
/// at least one 4 KiB page.
pub fn ring_size(requested: u32) -> u32 {
    requested
        .max(4096)
        .checked_next_power_of_two()
        .unwrap_or(1 << 31)
}

/// Parses an embedded program set and creates its maps, with its knobs
/// set. Programs are verified when they are attached.
pub fn load(object: &[u8], options: &LoadOptions) -> Result<Ebpf, EbpfError> {
    let mut loader = EbpfLoader::new();
    loader.map_max_entries("events", ring_size(options.ring_buffer_bytes));
    loader.override_global("wakeup_bytes", &options.wakeup_bytes, true);
    for (name, value) in &options.u32_globals {
        loader.override_global(name, value, true);
    }
    loader.load(object).map_err(|source| EbpfError::Load {
        set: options.set,
        source,
    })
}

/// Loads program `name` and attaches it to each `category/tracepoint` given.
pub fn attach_tracepoints(
    ebpf: &mut Ebpf,
    set: &'static str,
    name: &str,
    tracepoints: &[(&str, &str)],
) -> Result<(), EbpfError> {
    let program: &mut TracePoint = ebpf
        .program_mut(name)
        .ok_or_else(|| EbpfError::MissingProgram {
            set,
            name: name.to_owned(),
        })?
        .try_into()
        .map_err(|_| EbpfError::WrongProgramType {
            set,
            name: name.to_owned(),
            expected: "tracepoint",
        })?;
    let attach_err = |target: String| {
        move |source| EbpfError::Attach {
            set,
            name: name.to_owned(),
            target,
            source,
        }
    };
    program.load().map_err(attach_err("load".to_owned()))?;
    for (category, tracepoint) in tracepoints {
        program
            .attach(category, tracepoint)
            .map_err(attach_err(format!("{category}/{tracepoint}")))?;
    }
    Ok(())
}

/// Loads BTF tracepoint program `name` for `tracepoint` and attaches it.
pub fn attach_btf_tracepoint(
    ebpf: &mut Ebpf,
    set: &'static str,
    name: &str,
    tracepoint: &str,
    btf: &Btf,
) -> Result<(), EbpfError> {
    let program: &mut BtfTracePoint = ebpf
        .program_mut(name)
        .ok_or_else(|| EbpfError::MissingProgram {
            set,
            name: name.to_owned(),
        })?
        .try_into()
        .map_err(|_| EbpfError::WrongProgramType {
            set,
            name: name.to_owned(),
            expected: "tp_btf",
        })?;
    let attach_err = |source| EbpfError::Attach {
        set,
        name: name.to_owned(),
        target: format!("tp_btf/{tracepoint}"),
        source,
    };
    program.load(tracepoint, btf).map_err(attach_err)?;
    program.attach().map_err(attach_err)?;
    Ok(())
}

/// The kernel's BTF, needed by `tp_btf` programs.
pub fn kernel_btf() -> Result<Btf, EbpfError> {
    Btf::from_sys_fs().map_err(EbpfError::Btf)
}

/// Attaches the shared process-lifecycle programs of `common/proc.h`
/// (fork inheritance of claims, exit, exec) present in every program set.
pub fn attach_process_tracking(
    ebpf: &mut Ebpf,
    set: &'static str,
    btf: &Btf,
) -> Result<(), EbpfError> {
    attach_btf_tracepoint(ebpf, set, "ft_proc_fork", "sched_process_fork", btf)?;
    attach_tracepoints(
        ebpf,
        set,
        "ft_proc_exit",
        &[("sched", "sched_process_exit")],
    )?;
    attach_tracepoints(
        ebpf,
        set,
        "ft_proc_exec",
        &[("sched", "sched_process_exec")],
    )?;
    Ok(())
}
