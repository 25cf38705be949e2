/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * claimed_tgids: the processes this probe instance traces. Written by the
 * loader (user space) and by the fork hook (children of claimed processes).
 * Every program checks it first: syscall tracepoints fire for every process
 * on the node, so the common case must be one hash lookup and out.
 */
#ifndef FT_COMMON_CLAIMED_H
#define FT_COMMON_CLAIMED_H

#include "common/types.h"
#include "common/sizes.h"

/* Value flags of claimed_tgids. */
#define FT_CLAIM_FOLLOW_FORKS 1u /* children inherit the claim */

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, FT_MAX_CLAIMED_TGIDS);
    __type(key, __u32);
    __type(value, __u32);
} claimed_tgids SEC(".maps");

static __always_inline __u32 *ft_claim_of(__u32 tgid)
{
    return bpf_map_lookup_elem(&claimed_tgids, &tgid);
}

static __always_inline int ft_is_claimed(__u32 tgid)
{
    return ft_claim_of(tgid) != NULL;
}

#endif
