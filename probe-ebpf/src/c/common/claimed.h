/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * claimed_tgids: the processes this probe instance traces. Written by the
 * loader (user space) and by the fork hook (children of claimed processes).
 * Every program checks it first: syscall tracepoints fire for every process
 * on the node, so the common case must be cheap: a bit in an array (below)
 * and out.
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

/*
 * In front of claimed_tgids, one bit per tgid that may be claimed, in
 * words of 64 tgids: a bit clear means "not claimed" without the hash
 * lookup that an untraced process's every syscall entry paid in these
 * programs (the verifier turns an array lookup into a few instructions).
 * A bit set only says "ask claimed_tgids": a stale one
 * (a pid released or reused) costs the lookup, never a wrong answer.
 *
 * Two bitmaps, one per writer, so that no bit is ever lost to a
 * read-modify-write racing another writer: user space sets and clears
 * claimed_hint_user (one owner per set, Claims in probe/src/ebpf), the fork
 * and exit hooks set and clear claimed_hint_kernel with atomic operations.
 * The loader sizes both to the node's pid_max; a tgid beyond them is asked
 * of claimed_tgids.
 */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, FT_CLAIMED_HINT_WORDS);
    __type(key, __u32);
    __type(value, __u64);
} claimed_hint_user SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, FT_CLAIMED_HINT_WORDS);
    __type(key, __u32);
    __type(value, __u64);
} claimed_hint_kernel SEC(".maps");

static __always_inline int ft_maybe_claimed(__u32 tgid)
{
    __u32 word = tgid >> 6;
    __u64 bit = 1ull << (tgid & 63);
    __u64 *user = bpf_map_lookup_elem(&claimed_hint_user, &word);
    if (!user || (*user & bit))
        return 1;
    __u64 *kernel = bpf_map_lookup_elem(&claimed_hint_kernel, &word);
    return !kernel || (*kernel & bit);
}

/* Sets (claimed != 0) or clears the kernel's hint bit of `tgid`. */
static __always_inline void ft_hint_kernel_claim(__u32 tgid, int claimed)
{
    __u32 word = tgid >> 6;
    __u64 bit = 1ull << (tgid & 63);
    __u64 *bits = bpf_map_lookup_elem(&claimed_hint_kernel, &word);
    if (!bits)
        return;
    if (claimed)
        __sync_fetch_and_or(bits, bit);
    else
        __sync_fetch_and_and(bits, ~bit);
}

static __always_inline __u32 *ft_claim_of(__u32 tgid)
{
    if (!ft_maybe_claimed(tgid))
        return NULL;
    return bpf_map_lookup_elem(&claimed_tgids, &tgid);
}

static __always_inline int ft_is_claimed(__u32 tgid)
{
    return ft_claim_of(tgid) != NULL;
}

#endif
