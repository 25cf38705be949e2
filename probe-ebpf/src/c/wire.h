/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Wire structs shared by every program set: the source of truth. The Rust
 * mirror (probe-ebpf/src/lib.rs, module `wire`) asserts the same sizes and
 * field offsets at compile time, against this object's BTF. Compiled with -Wpadded -Werror: all padding is explicit, no
 * bool (u32 flags instead), fixed-width types only.
 *
 * Program-set events (sockets/wire.h, go/wire.h) start with the same
 * `struct ft_event_header` so the reader can dispatch on `kind`.
 */
#ifndef FT_WIRE_H
#define FT_WIRE_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

/* Discriminates every record in a ring buffer (ft_event_header.kind). */
enum ft_event_kind {
    FT_EV_PROC_EXEC = 1,
    FT_EV_PROC_EXIT = 2,
    FT_EV_PROC_FORK = 3,
    /* Events of the socket-level program set (sockets/wire.h). */
    FT_EV_SOCK_OPEN = 16,
    FT_EV_SOCK_DATA = 17,
    FT_EV_SOCK_CLOSE = 18,
    /* 32..63 are reserved for the Go program set, 64..79 for profiling (profile/wire.h). */
};

/* Indices into the per-CPU `drop_counters` array: why an event was lost. */
enum ft_drop_reason {
    /* The ring buffer had no room for the event. */
    FT_DROP_RINGBUF_FULL = 0,
    /* The connection table was full; the socket is not traced. */
    FT_DROP_CONN_TABLE_FULL = 1,
    /* The in-flight syscall table was full; that syscall is not traced. */
    FT_DROP_INFLIGHT_FULL = 2,
    /* Reading the payload from user memory failed; event sent without bytes. */
    FT_DROP_PAYLOAD_READ = 3,
    /* A claimed child could not be added to claimed_tgids. */
    FT_DROP_CLAIM_TABLE_FULL = 4,
    FT_DROP_REASONS = 8,
};

/* Common head of every event. 24 bytes. */
struct ft_event_header {
    __u32 kind; /* enum ft_event_kind */
    __u32 tgid; /* process id */
    __u32 tid;  /* thread id */
    __u32 cpu;  /* CPU the event was produced on (for ordering diagnostics) */
    __u64 ts_ns; /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
};

/* Process lifecycle: exec (any process, if enabled), fork (child of a claimed
 * process, claimed automatically), exit (claimed process). 48 bytes. */
struct ft_proc_event {
    struct ft_event_header header;
    __u32 parent_tgid; /* fork: the claimed parent; otherwise 0 */
    __u32 flags;       /* reserved */
    char comm[16];
};

/* One socket address. IPv4 is stored as an IPv4-mapped IPv6 address. 20 bytes. */
struct ft_sock_addr {
    __u8 addr[16];
    __u16 port;   /* host byte order */
    __u16 family; /* AF_INET, AF_INET6, AF_UNIX (then addr/port are zero) */
};

#endif
