/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * drop_counters: per-CPU counts of lost events by reason (enum
 * ft_drop_reason in wire.h). User space sums the CPUs and exports them.
 */
#ifndef FT_COMMON_DROPS_H
#define FT_COMMON_DROPS_H

#include "common/types.h"
#include "wire.h"

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, FT_DROP_REASONS);
    __type(key, __u32);
    __type(value, __u64);
} drop_counters SEC(".maps");

static __always_inline void ft_count_drop(__u32 reason)
{
    __u64 *count = bpf_map_lookup_elem(&drop_counters, &reason);
    if (count)
        *count += 1; /* per-CPU slot: no atomic needed */
}

#endif
