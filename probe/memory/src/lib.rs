//! Keeping glibc's heap small in long-running processes whose big
//! allocations are transient, shared by the probe and the operator.
//!
//! The probe's big allocations are transient: a Go executable's symbol
//! tables and the kernel's BTF are read, used and dropped. glibc keeps what
//! they freed in the arena of the thread that freed it (one per blocking
//! thread that ran an analysis), so without a trim the probe's resident
//! memory stays at its startup peak: about 20 MiB more at idle, measured
//! with one Go target ([`release_free_heap`]).
//!
//! The operator's memory is its watch caches, filled by whichever tokio
//! worker polled the watch: with one arena per worker thread each arena kept
//! its own free space, 5.2 MiB of 39 MiB at 10,000 pods
//! (`bench/scale/NOTES.md`); one arena serves its few threads
//! ([`use_one_arena`]).

/// Returns the free pages of every malloc arena to the kernel. Call it after
/// a large transient allocation was dropped; it walks the arenas under their
/// locks (well under a millisecond at the probe's size), so not per request.
pub fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` takes no pointer and only changes glibc's own
    // allocator state, under the allocator's locks; any thread may call it.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Makes every thread allocate from glibc's main arena instead of one arena
/// per thread (up to eight per core), like `MALLOC_ARENA_MAX=1`: for a
/// process whose threads mostly wait, the lock they share costs less than
/// the free space each arena would keep. Call it first thing in `main`,
/// before any thread starts. An arena count set in the environment
/// (`MALLOC_ARENA_MAX`, or `glibc.malloc.arena_max` in `GLIBC_TUNABLES`)
/// still wins: glibc applied it at start, and this then does nothing.
pub fn use_one_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none()
        && !std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc.arena_max"))
    {
        // SAFETY: `mallopt` takes no pointer and only sets a parameter of
        // glibc's allocator, under the allocator's lock.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}
