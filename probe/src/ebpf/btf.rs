//! The kernel's BTF, parsed once for everyone who needs it at the same time.
//!
//! aya needs the kernel's BTF (`/sys/kernel/btf/vmlinux`) for two things:
//! the CO-RE relocations of an object that has them, and the kernel type ID
//! each BTF tracepoint is attached by. Parsed, it is ~13 MiB of heap (~18
//! MiB while the file's bytes are still held), the largest thing the probe
//! ever holds: its peak memory is the parse on top of everything else.
//!
//! So every loader and BTF tracepoint takes it from [`kernel_btf`]: a parse
//! is shared by everyone who asks while it lives, two parses never run at
//! once (a second caller waits for the first and shares its result), and
//! its heap goes back to the kernel as soon as the last user drops it. A
//! [`BtfHold`] keeps one parse alive across several steps that each need it
//! (a set's load and then its BTF tracepoints) without parsing before one
//! of them does.

use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use aya::{Btf, BtfError};

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

struct Shared {
    /// The parse in use, if anyone still uses it.
    live: Weak<KernelBtf>,
    /// The parse kept alive for the holds, once one was made under them.
    held: Option<Arc<KernelBtf>>,
    holds: usize,
}

static SHARED: Mutex<Shared> = Mutex::new(Shared {
    live: Weak::new(),
    held: None,
    holds: 0,
});

/// How many times this process parsed the kernel's BTF.
static PARSES: AtomicU64 = AtomicU64::new(0);

fn shared() -> MutexGuard<'static, Shared> {
    // Nothing in it can be left half-updated by a panic.
    SHARED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The kernel's BTF: the parse in use if there is one, else a new parse
/// (`set` names who asked, for the memory log).
pub(crate) fn kernel_btf(set: &'static str) -> Result<Arc<KernelBtf>, BtfError> {
    let mut shared = shared();
    if let Some(btf) = shared.live.upgrade() {
        return Ok(btf);
    }
    let btf = Arc::new(KernelBtf(Btf::from_sys_fs()?));
    PARSES.fetch_add(1, Ordering::Relaxed);
    shared.live = Arc::downgrade(&btf);
    if shared.holds > 0 {
        shared.held = Some(btf.clone());
    }
    drop(shared);
    super::log_memory(set, "kernel BTF parsed");
    Ok(btf)
}

/// How many times this process has parsed the kernel's BTF.
pub fn kernel_btf_parses() -> u64 {
    PARSES.load(Ordering::Relaxed)
}

/// Keeps the kernel BTF parsed by [`kernel_btf`] alive until dropped, so
/// that the steps between share one parse. Parses nothing by itself.
#[derive(Debug)]
#[must_use = "the parse is shared only while the hold lives"]
pub(crate) struct BtfHold(());

impl BtfHold {
    pub(crate) fn new() -> Self {
        let mut shared = shared();
        shared.holds += 1;
        if shared.holds == 1 {
            shared.held = shared.live.upgrade();
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
                shared.held.take()
            } else {
                None
            }
        };
        // Outside the lock: the last reference frees the parse.
        drop(released);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The only test in this binary that parses the kernel BTF, so the
    // process-wide counter moves for it alone.
    #[test]
    fn one_parse_serves_every_step_under_a_hold_and_is_freed_after() {
        if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
            panic!("this test reads the kernel's BTF: the kernel must have CONFIG_DEBUG_INFO_BTF");
        }
        let before = kernel_btf_parses();
        let hold = BtfHold::new();
        let first = kernel_btf("test").expect("parse the kernel BTF");
        let id = first
            .id_by_type_name_kind("task_struct", aya_obj::btf::BtfKind::Struct)
            .expect("the kernel has task_struct");
        drop(first);
        // Dropped by its only user, still alive for the hold.
        let second = kernel_btf("test").expect("the held parse");
        assert_eq!(kernel_btf_parses(), before + 1);
        assert_eq!(
            second
                .id_by_type_name_kind("task_struct", aya_obj::btf::BtfKind::Struct)
                .ok(),
            Some(id)
        );
        drop(hold);
        // The hold is gone but a user is not: shared, not parsed again.
        let third = kernel_btf("test").expect("the parse in use");
        assert!(Arc::ptr_eq(&second, &third));
        assert_eq!(kernel_btf_parses(), before + 1);
        drop((second, third));
        // Nobody uses it any more: freed, so the next user parses.
        assert!(shared().live.upgrade().is_none());
        let fourth = kernel_btf("test").expect("parse the kernel BTF again");
        assert_eq!(kernel_btf_parses(), before + 2);
        drop(fourth);
    }
}
