/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Every sizing constant of the shared eBPF plumbing, in one place.
 *
 * Map capacities are defaults: the loader may resize maps before load
 * (aya `EbpfLoader::set_max_entries`) for large nodes.
 */
#ifndef FT_COMMON_SIZES_H
#define FT_COMMON_SIZES_H

/* Processes the probe may claim at once (claimed_tgids). */
#define FT_MAX_CLAIMED_TGIDS 4096

/* Default ring buffer size; must be a power of two and a multiple of the page size. */
#define FT_RINGBUF_BYTES (8 * 1024 * 1024)

/*
 * Pending ring-buffer bytes above which a submit wakes the reader. Below it
 * the reader is not woken and finds the data on its periodic poll: waking the
 * reader per event was measured as the dominant cost of syscall tracing
 * (PLATFORM.md). Overridable at load time through `wakeup_bytes`.
 */
#define FT_DEFAULT_WAKEUP_BYTES (64 * 1024)

/* Tracked TCP/stream connections of claimed processes, keyed by (tgid, fd). */
#define FT_MAX_CONNS 65536

/* In-flight syscalls (enter seen, exit not yet), keyed by pid_tgid. */
#define FT_MAX_INFLIGHT 16384

/* Highest fd number inspected through task->files when adopting a socket. */
#define FT_MAX_FD 1048576

#endif
