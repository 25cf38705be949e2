//! The kernel's BTF, cut down to what an object uses and parsed once for
//! everyone who needs it at the same time.
//!
//! aya needs the kernel's BTF (`/sys/kernel/btf/vmlinux`) for two things:
//! the CO-RE relocations of an object that has them, and the kernel type ID
//! each BTF tracepoint is attached by. Parsed whole it is ~13 MiB of heap
//! (~18 MiB while the file's bytes are still held), more than anything
//! else the probe holds, and it was the probe's peak memory.
//!
//! So what is parsed is the part one object uses ([`super::btf_trim`]):
//! the kernel types its relocations name, what they are made of, and the
//! typedef of every BTF tracepoint in the kernel contract; a few hundred
//! of the kernel's 125,850 types on the kernel this was measured on. A BTF
//! the walker does not understand is parsed whole, with a warning.
//!
//! Every loader and BTF tracepoint takes it from [`kernel_btf`]: a parse is
//! shared by everyone who asks for the same object's part while it lives
//! (any part serves the BTF tracepoints), two parses never run at once,
//! and its heap goes back to the kernel as soon as the last user drops it.
//! A [`BtfHold`] keeps the parses made under it alive across several steps
//! (a set's load and then its BTF tracepoints).

use std::collections::HashSet;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use aya::{Btf, BtfError, Endianness};
use ferrotel_probe_ebpf::contract::{process, tcphealth};
use tracing::{debug, warn};

use super::btf_trim::{self, TrimError};

const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

/// The parsed kernel BTF. Dropping the last reference returns its heap to
/// the kernel (glibc would keep it, and the next parse would land on top).
#[derive(Debug)]
pub(crate) struct KernelBtf(Btf);

impl Deref for KernelBtf {
    type Target = Btf;

    fn deref(&self) -> &Btf {
        &self.0
    }
}

impl Drop for KernelBtf {
    fn drop(&mut self) {
        drop(std::mem::replace(&mut self.0, Btf::new()));
        ferrotel_memory::release_free_heap();
    }
}

/// Whose types a parse holds: an embedded object's (by its address), or
/// only the BTF tracepoints' typedefs, which every parse holds.
type PartOf = Option<usize>;

struct Shared {
    /// The parses in use, if anyone still uses them.
    live: Vec<(PartOf, Weak<KernelBtf>)>,
    /// The parses kept alive for the holds, once made under them.
    held: Vec<Arc<KernelBtf>>,
    holds: usize,
}

static SHARED: Mutex<Shared> = Mutex::new(Shared {
    live: Vec::new(),
    held: Vec::new(),
    holds: 0,
});

/// How many times this process parsed the kernel's BTF.
static PARSES: AtomicU64 = AtomicU64::new(0);

fn shared() -> MutexGuard<'static, Shared> {
    // Nothing in it can be left half-updated by a panic.
    SHARED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The kernel's BTF as `object` (an embedded program set) needs it, or as
/// the BTF tracepoints need it (`None`): a parse in use that serves, else a
/// new one. `set` names who asked, for the memory log.
pub(crate) fn kernel_btf(
    set: &'static str,
    object: Option<&[u8]>,
) -> Result<Arc<KernelBtf>, BtfError> {
    let part: PartOf = object.map(|bytes| bytes.as_ptr() as usize);
    let mut shared = shared();
    shared.live.retain(|(_, btf)| btf.strong_count() > 0);
    let serving = shared
        .live
        .iter()
        .filter(|(of, _)| part.is_none() || *of == part)
        .find_map(|(_, btf)| btf.upgrade());
    if let Some(btf) = serving {
        return Ok(btf);
    }
    let btf = Arc::new(KernelBtf(parse(set, object)?));
    PARSES.fetch_add(1, Ordering::Relaxed);
    shared.live.push((part, Arc::downgrade(&btf)));
    if shared.holds > 0 {
        shared.held.push(btf.clone());
    }
    drop(shared);
    super::log_memory(set, "kernel BTF parsed");
    Ok(btf)
}

/// The part of the kernel's BTF that `object` and the BTF tracepoints use,
/// or all of it if that cannot be cut out.
fn parse(set: &'static str, object: Option<&[u8]>) -> Result<Btf, BtfError> {
    match trimmed(set, object) {
        Ok(btf) => Ok(btf),
        Err(TrimFailure::Btf(error)) => Err(error),
        Err(TrimFailure::Trim(error)) => {
            warn!(set, %error, path = KERNEL_BTF, "Cannot cut the kernel BTF down to the types the probe uses; parsing all of it (~13 MiB more memory while loading)");
            Btf::from_sys_fs()
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum TrimFailure {
    #[error(transparent)]
    Btf(BtfError),
    #[error("{0}")]
    Trim(String),
}

fn trimmed(set: &'static str, object: Option<&[u8]>) -> Result<Btf, TrimFailure> {
    let mut names = match object {
        Some(object) => relocation_roots(object)?,
        None => HashSet::new(),
    };
    for (_, tracepoint) in process::BTF_TRACEPOINTS
        .iter()
        .chain(&tcphealth::BTF_TRACEPOINTS)
    {
        names.insert(format!("btf_trace_{tracepoint}").into_bytes());
    }
    let kernel = std::fs::read(KERNEL_BTF).map_err(|error| {
        TrimFailure::Btf(BtfError::FileError {
            path: KERNEL_BTF.into(),
            error,
        })
    })?;
    let (trimmed, kept) = btf_trim::trim(&kernel, &names).map_err(trim_error(KERNEL_BTF))?;
    drop(kernel);
    debug!(
        set,
        kept = kept.kept,
        ids = kept.ids,
        kernel_types = kept.kernel_types,
        bytes = trimmed.len(),
        "Kernel BTF cut down to the types the set uses"
    );
    Btf::parse(&trimmed, Endianness::default()).map_err(TrimFailure::Btf)
}

/// The names of the kernel types `object`'s CO-RE relocations start from.
fn relocation_roots(object: &[u8]) -> Result<HashSet<Vec<u8>>, TrimFailure> {
    use object::{Object, ObjectSection};
    let file = object::File::parse(object)
        .map_err(|error| TrimFailure::Trim(format!("an embedded eBPF object: {error}")))?;
    let section = |name: &str| {
        file.section_by_name(name)
            .and_then(|section| section.data().ok())
    };
    // Without .BTF.ext an object has no CO-RE relocations.
    let (Some(btf), Some(ext)) = (section(".BTF"), section(".BTF.ext")) else {
        return Ok(HashSet::new());
    };
    btf_trim::relocation_roots(btf, ext).map_err(trim_error("an embedded object's BTF"))
}

fn trim_error(what: &'static str) -> impl Fn(TrimError) -> TrimFailure {
    move |error| TrimFailure::Trim(format!("{what}: {error}"))
}

/// How many times this process has parsed the kernel's BTF.
#[cfg(test)]
fn kernel_btf_parses() -> u64 {
    PARSES.load(Ordering::Relaxed)
}

/// Keeps the kernel BTF parsed by [`kernel_btf`] while it lives alive until
/// dropped, so that the steps between share each parse. Parses nothing by
/// itself.
#[derive(Debug)]
#[must_use = "the parses are shared only while the hold lives"]
pub(crate) struct BtfHold(());

impl BtfHold {
    pub(crate) fn new() -> Self {
        let mut shared = shared();
        shared.holds += 1;
        if shared.holds == 1 {
            let live: Vec<_> = shared
                .live
                .iter()
                .filter_map(|(_, btf)| btf.upgrade())
                .collect();
            shared.held = live;
        }
        Self(())
    }
}

impl Drop for BtfHold {
    fn drop(&mut self) {
        let released = {
            let mut shared = shared();
            shared.holds -= 1;
            if shared.holds == 0 {
                std::mem::take(&mut shared.held)
            } else {
                Vec::new()
            }
        };
        // Outside the lock: the last reference frees a parse.
        drop(released);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cut_btf_relocates_every_object_as_the_whole_one_does() {
        let whole = Btf::from_sys_fs()
            .expect("this test reads the kernel's BTF: the kernel must have CONFIG_DEBUG_INFO_BTF");
        let mut relocated = 0;
        for object in ferrotel_probe_ebpf::ALL_OBJECTS {
            let cut = trimmed("test", Some(object)).expect("cut the kernel BTF down");
            let mut against_whole =
                aya_obj::Object::parse(object).expect("parse an embedded object");
            let mut against_cut = against_whole.clone();
            if !against_whole.has_btf_relocations() {
                continue;
            }
            against_whole
                .relocate_btf(&whole)
                .expect("relocate against the whole BTF");
            against_cut
                .relocate_btf(&cut)
                .expect("relocate against the cut BTF");
            for (key, function) in &against_whole.functions {
                assert_eq!(
                    format!("{:?}", function.instructions),
                    format!("{:?}", against_cut.functions[key].instructions),
                    "function {} relocated differently",
                    function.name
                );
            }
            relocated += 1;
        }
        assert!(
            relocated >= 3,
            "the objects have CO-RE relocations to compare"
        );
        // The tracepoints' typedefs are in every part, an object's or none.
        let cut = trimmed("test", None).expect("cut the kernel BTF down");
        for (_, tracepoint) in process::BTF_TRACEPOINTS
            .iter()
            .chain(&tcphealth::BTF_TRACEPOINTS)
        {
            let name = format!("btf_trace_{tracepoint}");
            let kind = aya_obj::btf::BtfKind::Typedef;
            assert_eq!(
                cut.id_by_type_name_kind(&name, kind).ok(),
                Some(
                    whole
                        .id_by_type_name_kind(&name, kind)
                        .expect("the kernel has it")
                ),
                "{name} keeps its kernel type ID"
            );
        }
    }

    // The only test in this binary that counts parses of the kernel BTF,
    // so the process-wide counter moves for it alone.
    #[test]
    fn one_parse_serves_every_step_under_a_hold_and_is_freed_after() {
        if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
            panic!("this test reads the kernel's BTF: the kernel must have CONFIG_DEBUG_INFO_BTF");
        }
        let before = kernel_btf_parses();
        let hold = BtfHold::new();
        let first = kernel_btf("test", None).expect("parse the kernel BTF");
        let id = first
            .id_by_type_name_kind(
                "btf_trace_sched_process_fork",
                aya_obj::btf::BtfKind::Typedef,
            )
            .expect("the kernel has the fork tracepoint");
        drop(first);
        // Dropped by its only user, still alive for the hold.
        let second = kernel_btf("test", None).expect("the held parse");
        assert_eq!(kernel_btf_parses(), before + 1);
        assert_eq!(
            second
                .id_by_type_name_kind(
                    "btf_trace_sched_process_fork",
                    aya_obj::btf::BtfKind::Typedef
                )
                .ok(),
            Some(id)
        );
        drop(hold);
        // The hold is gone but a user is not: shared, not parsed again.
        let third = kernel_btf("test", None).expect("the parse in use");
        assert!(Arc::ptr_eq(&second, &third));
        assert_eq!(kernel_btf_parses(), before + 1);
        drop((second, third));
        // Nobody uses it any more: freed, so the next user parses.
        assert!(shared().live.iter().all(|(_, btf)| btf.upgrade().is_none()));
        let fourth = kernel_btf("test", None).expect("parse the kernel BTF again");
        assert_eq!(kernel_btf_parses(), before + 2);
        // An object's part serves the tracepoints, not another object.
        let go = kernel_btf("test", Some(ferrotel_probe_ebpf::GO)).expect("the Go set's part");
        assert_eq!(kernel_btf_parses(), before + 3);
        assert!(!Arc::ptr_eq(&go, &fourth));
        drop(fourth);
        let tracepoints = kernel_btf("test", None).expect("a part in use");
        assert!(Arc::ptr_eq(&go, &tracepoints));
        let sockets =
            kernel_btf("test", Some(ferrotel_probe_ebpf::SOCKETS)).expect("the sockets set's part");
        assert!(!Arc::ptr_eq(&go, &sockets));
        assert_eq!(kernel_btf_parses(), before + 4);
    }
}
