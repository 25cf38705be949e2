/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * events: the ring buffer every program set writes to, with batched
 * wake-ups. A submit wakes the reader only once `wakeup_bytes` are pending;
 * the reader also polls on a short timer, so nothing waits longer than that
 * period. Waking per event was the dominant cost measured on this platform.
 */
#ifndef FT_COMMON_RINGBUF_H
#define FT_COMMON_RINGBUF_H

#include "common/types.h"
#include "common/sizes.h"
#include "common/drops.h"

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, FT_DEFAULT_RINGBUF_BYTES); /* resized at load: ringBufferBytes */
} events SEC(".maps");

/*
 * Load-time knob: pending bytes above which a submit wakes the reader; 0
 * wakes it on every event. Below it the reader finds the data on its poll.
 */
volatile const __u64 wakeup_bytes = FT_DEFAULT_WAKEUP_BYTES;

static __always_inline __u64 ft_wakeup_flags(void)
{
    if (bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= wakeup_bytes)
        return BPF_RB_FORCE_WAKEUP;
    return BPF_RB_NO_WAKEUP;
}

/* Reserve a fixed-size record; counts a drop when the buffer is full. */
static __always_inline void *ft_reserve(__u64 size)
{
    void *record = bpf_ringbuf_reserve(&events, size, 0);
    if (!record)
        ft_count_drop(FT_DROP_RINGBUF_FULL);
    return record;
}

static __always_inline void ft_submit(void *record)
{
    bpf_ringbuf_submit(record, ft_wakeup_flags());
}

/* Copy a variable-length record built elsewhere (per-CPU scratch). */
static __always_inline void ft_output(void *data, __u64 size)
{
    if (bpf_ringbuf_output(&events, data, size, ft_wakeup_flags()) != 0)
        ft_count_drop(FT_DROP_RINGBUF_FULL);
}

static __always_inline void ft_fill_header(struct ft_event_header *header, __u32 kind, __u64 pid_tgid)
{
    header->kind = kind;
    header->tgid = pid_tgid >> 32;
    header->tid = (__u32)pid_tgid;
    header->cpu = bpf_get_smp_processor_id();
    header->ts_ns = bpf_ktime_get_ns();
}

#endif
