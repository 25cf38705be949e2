/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Trace context in the kernel, for propagation: what the thread that is
 * about to send a request is working for, the knobs, and the shared maps.
 *
 * The sk_msg program that writes headers into outgoing requests runs inside
 * the sending thread's sendmsg, long before user space has seen the request
 * that caused the call (ring-buffer wake-ups are batched). So the context
 * it sends must already be in the kernel, keyed by the sending thread:
 *
 *  - socket-level set (Python and any HTTP/1 process): the server request a
 *    thread is serving is read by a syscall tracepoint, which parses its
 *    context headers and assigns the server span's ids right there
 *    (server.h); the thread's entry names that server span, and each
 *    outgoing request gets a new client span id, its child.
 *  - Go set: the client span is assigned at (*Transport).roundTrip entry on
 *    the caller's goroutine, but the request is written by the connection's
 *    writeLoop goroutine; (*Request).write's entry probe hands the client
 *    span to that goroutine (prop_goroutines, below), whichever thread it
 *    sends from.
 */
#ifndef FT_PROP_CONTEXT_H
#define FT_PROP_CONTEXT_H

#include "common/types.h"
#include "common/sizes.h"
#include "propagation/wire.h"
#include "propagation/headers.h"

/* Load-time knobs (set by user space from the probe config). */
volatile const __u32 prop_inject = 0;          /* write context headers into outgoing HTTP/1 requests */
volatile const __u32 prop_join = 0;            /* publish/adopt contexts for same-node joins */
volatile const __u32 prop_formats = FT_PROP_TRACECONTEXT | FT_PROP_BAGGAGE; /* FT_PROP_* */
/* Head sampling of traces the kernel starts, as the probe's sampler does it:
 * root: 0 never, 1 always, 2 trace-id ratio (low 64 bits <= threshold);
 * parent_based: a span with a parent follows the parent's sampled flag. */
volatile const __u32 prop_sample_root = 1;
volatile const __u32 prop_sample_parent_based = 1;
volatile const __u64 prop_sample_threshold = ~0ULL;

/* What a thread is working for (ft_prop_thread.kind). */
#define FT_PROP_THREAD_PARENT 1u /* span_id is the span outgoing calls are children of */
#define FT_PROP_THREAD_CLIENT 2u /* span_id is the client span of the next request itself */

/* Entries older than this are not used: a Go writeLoop that moved to
 * another thread between (*Request).write and its send must not hand its
 * span to an unrelated request of this thread much later. */
#define FT_PROP_THREAD_CLIENT_TTL_NS (50ULL * 1000 * 1000)

struct ft_prop_thread {
    __u8 trace_id[16];
    __u8 span_id[8];
    __u8 parent_id[8]; /* FT_PROP_THREAD_CLIENT: the client span's parent */
    __u64 ts_ns;
    __u32 kind;        /* FT_PROP_THREAD_* */
    __u32 flags;       /* bit 0: sampled */
    __s32 fd;          /* socket-level set: the server connection (cleared when it answers) */
    __u32 pad;
};

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 16384);
    __type(key, __u64); /* pid_tgid */
    __type(value, struct ft_prop_thread);
} prop_threads SEC(".maps");

/*
 * Go set: a client span handed to the goroutine that writes its request,
 * keyed by that goroutine (its g) rather than by the thread it runs on. A
 * goroutine may move to another thread between (*Request).write and the
 * send that flushes the head (preempted, or descheduled on a busy node),
 * and the send is what the sk_msg program sees: a thread entry would then
 * be missed (the request goes out without context) and left for an
 * unrelated later request of the old thread. The sk_msg program finds the
 * running goroutine from the thread's TLS, where the Go runtime keeps g
 * (ft_prop_tls_g); processes whose TLS does not hold g there (checked at
 * (*Request).write against R14) use the thread entry in prop_threads.
 */
struct ft_prop_goroutine_key {
    __u32 tgid;
    __u32 pad;
    __u64 g; /* *runtime.g */
};

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 4096);
    __type(key, struct ft_prop_goroutine_key);
    __type(value, struct ft_prop_thread);
} prop_goroutines SEC(".maps");

/* A goroutine entry older than this is not used: its request never reached
 * the sk_msg program (a socket outside the sockhash), and the g may since
 * run another goroutine. Far longer than any write of a request head. */
#define FT_PROP_GOROUTINE_CLIENT_TTL_NS (5ULL * 1000 * 1000 * 1000)

/* The running goroutine's g as the Go runtime keeps it in the thread's TLS
 * (linux/amd64: -8 from the FS base), from any program type that may read
 * the current task; 0 if unreadable. */
static __always_inline __u64 ft_prop_tls_g(void)
{
#if defined(__TARGET_ARCH_x86)
    struct task_struct *task = (struct task_struct *)bpf_get_current_task();
    __u64 fsbase = BPF_CORE_READ(task, thread.fsbase);
    __u64 g = 0;
    if (fsbase < 8 || bpf_probe_read_user(&g, sizeof(g), (void *)(fsbase - 8)) != 0)
        return 0;
    return g;
#else
    return 0;
#endif
}

/* tracestate and baggage of a request, carried to the calls it makes; keyed
 * by the span that received them, so goroutines and threads that inherit
 * the span find them. Written only when a request had them. */
struct ft_prop_carry_key {
    __u32 tgid;
    __u32 pad;
    __u8 span_id[8];
};

struct ft_prop_carry {
    __u16 tracestate_len;
    __u16 baggage_len;
    __u32 pad;
    char tracestate[FT_PROP_CARRY_CAP];
    char baggage[FT_PROP_CARRY_CAP];
};

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 4096);
    __type(key, struct ft_prop_carry_key);
    __type(value, struct ft_prop_carry);
} prop_carry SEC(".maps");

/* Where a carry is built before it is stored (it is too big for the stack). */
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct ft_prop_carry);
} prop_carry_scratch SEC(".maps");

/*
 * Same-node joins: a client that did not write its context into a request
 * publishes it under its end of the connection; the server that reads the
 * request without a context header finds it under its peer's address. Shared
 * by every probe on the node when joining is on (the loader pins it at a
 * fixed bpffs path), so a Python client and a Go server meet here. The server's peer is the client's local
 * address even through a Service's DNAT; loopback addresses are qualified by
 * the network namespace (two pods can both use 127.0.0.1:40000).
 */
struct ft_prop_join_key {
    __u8 addr[16]; /* IPv4-mapped for IPv4 */
    __u16 port;
    __u16 pad;
    __u32 stream_id; /* HTTP/2 (gRPC): the stream's id, the same at both ends; 0 for HTTP/1 */
    __u64 netns;   /* netns cookie for loopback addresses, else 0 */
};

struct ft_prop_join {
    __u8 trace_id[16];
    __u8 span_id[8]; /* the client span: the server span's parent */
    __u64 ts_ns;
    __u32 flags;
    __u32 tgid;      /* publisher, for diagnostics */
};

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 16384);
    __type(key, struct ft_prop_join_key);
    __type(value, struct ft_prop_join);
} ferrotel_prop_joins SEC(".maps");

/* A published context older than this is not adopted (the request it was
 * for was lost, or the server is not traced). */
#define FT_PROP_JOIN_TTL_NS (5ULL * 1000 * 1000 * 1000)

/* Takes the context published under `key`: removed, so that it is used
 * once. 0 if a fresh one was there (then in `parent`). */
static __always_inline int ft_prop_take_join(const struct ft_prop_join_key *key, struct ft_traceparent *parent)
{
    struct ft_prop_join *join = bpf_map_lookup_elem(&ferrotel_prop_joins, key);
    if (!join)
        return -1;
    int fresh = bpf_ktime_get_ns() - join->ts_ns <= FT_PROP_JOIN_TTL_NS;
    if (fresh) {
        __builtin_memcpy(parent->trace_id, join->trace_id, 16);
        __builtin_memcpy(parent->parent_id, join->span_id, 8);
        parent->flags = join->flags & 1;
    }
    bpf_map_delete_elem(&ferrotel_prop_joins, key);
    return fresh ? 0 : -1;
}

/* Per-CPU counts of outgoing request heads by enum ft_prop_outcome, and of
 * server requests by enum ft_prop_origin (offset FT_PROP_OUTCOMES). */
#define FT_PROP_COUNTERS 16
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, FT_PROP_COUNTERS);
    __type(key, __u32);
    __type(value, __u64);
} prop_counters SEC(".maps");

static __always_inline void ft_prop_count(__u32 index)
{
    __u64 *n = bpf_map_lookup_elem(&prop_counters, &index);
    if (n)
        *n += 1;
}

static __always_inline void ft_prop_random(__u8 *dst, int words)
{
    for (int i = 0; i < words; i++) {
        __u32 r = bpf_get_prandom_u32();
        __builtin_memcpy(dst + 4 * i, &r, 4);
    }
}

/* The sampled flag of a trace started or continued in the kernel, as the
 * probe's sampler decides it. `parent_flags` < 0: no parent. */
static __always_inline __u32 ft_prop_sampled(const __u8 *trace_id, int parent_flags)
{
    if (parent_flags >= 0 && prop_sample_parent_based)
        return parent_flags & 1;
    if (prop_sample_root == 0)
        return 0;
    if (prop_sample_root == 1)
        return 1;
    /* Low 64 bits of the trace id, big-endian, as TraceId::low_u64. */
    __u64 low = 0;
    for (int i = 8; i < 16; i++)
        low = (low << 8) | trace_id[i];
    return low <= prop_sample_threshold;
}

static __always_inline int ft_prop_is_zero(const __u8 *p, int n)
{
    __u8 any = 0;
    for (int i = 0; i < n; i++)
        any |= p[i];
    return any == 0;
}

/* Loopback (127/8 or ::1, as stored in ft_sock_addr)? */
static __always_inline int ft_prop_is_loopback(const __u8 *addr)
{
    if (addr[10] == 0xff && addr[11] == 0xff && addr[0] == 0 && addr[9] == 0)
        return addr[12] == 127;
    for (int i = 0; i < 15; i++)
        if (addr[i])
            return 0;
    return addr[15] == 1;
}

#endif
