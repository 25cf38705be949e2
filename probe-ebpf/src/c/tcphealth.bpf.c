/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * The TCP health program set: retransmits, failed connects, resets and the
 * smoothed RTT of the reported pods' TCP connections, per (cgroup, peer
 * address, role), aggregated in the kernel.
 *
 * Only BTF tracepoints (tp_btf): no kprobes (absent on the reference kernel)
 * and no tracefs (not mounted on a fresh machine). Retransmits, state
 * changes and resets mostly fire in softirq or timer context, where the
 * current task is unrelated, so a connection is attributed through its
 * socket: the cgroup that created it (sk_cgrp_data), filtered by the
 * `watched_cgroups` map user space fills with the reported pods' cgroups.
 *
 * RTT: one sample per connection, its smoothed RTT when it closes (what OBI
 * reads with a kprobe on tcp_close; here the inet_sock_set_state tracepoint
 * seeing the move to TCP_CLOSE).
 */
#include "common/types.h"
#include "common/sizes.h"
#include "common/sock.h"
#include "views/wire.h"

#ifndef IPPROTO_TCP
#define IPPROTO_TCP 6
#endif

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, FT_MAX_WATCHED_CGROUPS);
    __type(key, __u64);   /* cgroup v2 id */
    __type(value, __u32); /* reserved */
} watched_cgroups SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, FT_MAX_TCP_PEERS);
    __type(key, struct ft_tcp_key);
    __type(value, struct ft_tcp_stats);
} tcp_peers SEC(".maps");

/* Role learnt at the handshake, by socket address; removed at close. */
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, FT_MAX_TCP_ROLES);
    __type(key, __u64);
    __type(value, __u32);
} tcp_roles SEC(".maps");

static __always_inline __u64 ft_sock_cgroup(const struct sock *sk)
{
    return BPF_CORE_READ(sk, sk_cgrp_data.cgroup, kn, id);
}

static __always_inline int ft_watched(__u64 cgroup)
{
    return bpf_map_lookup_elem(&watched_cgroups, &cgroup) != NULL;
}

/* The role remembered from the handshake; for a connection older than the
 * probe, the end with the lower port is taken for the server. */
static __always_inline __u32 ft_role(const struct sock *sk)
{
    __u64 key = (__u64)sk;
    __u32 *known = bpf_map_lookup_elem(&tcp_roles, &key);
    if (known)
        return *known;
    __u16 local = BPF_CORE_READ(sk, __sk_common.skc_num);
    __u16 peer = __builtin_bswap16(BPF_CORE_READ(sk, __sk_common.skc_dport));
    return local < peer ? FT_TCP_ROLE_SERVER : FT_TCP_ROLE_CLIENT;
}

/* The stats of (cgroup, peer, role), created on first use; NULL if the
 * socket is not watched (or not IP). */
static __always_inline struct ft_tcp_stats *ft_stats(const struct sock *sk, __u32 role)
{
    __u64 cgroup = ft_sock_cgroup(sk);
    if (!ft_watched(cgroup))
        return NULL;
    struct ft_sock_addr local = {}, peer = {};
    ft_sock_addrs((struct sock *)sk, &local, &peer);
    if (peer.family != AF_INET && peer.family != AF_INET6)
        return NULL;
    struct ft_tcp_key key = {};
    key.cgroup_id = cgroup;
    __builtin_memcpy(key.peer, peer.addr, sizeof(key.peer));
    key.role = role;
    struct ft_tcp_stats *stats = bpf_map_lookup_elem(&tcp_peers, &key);
    if (stats)
        return stats;
    struct ft_tcp_stats zero = {};
    bpf_map_update_elem(&tcp_peers, &key, &zero, BPF_NOEXIST);
    return bpf_map_lookup_elem(&tcp_peers, &key);
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(ft_tcp_retransmit, const struct sock *sk)
{
    struct ft_tcp_stats *stats = ft_stats(sk, ft_role(sk));
    if (stats)
        __sync_fetch_and_add(&stats->retransmits, 1);
    return 0;
}

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(ft_tcp_receive_reset, struct sock *sk)
{
    struct ft_tcp_stats *stats = ft_stats(sk, ft_role(sk));
    if (stats)
        __sync_fetch_and_add(&stats->resets_received, 1);
    return 0;
}

SEC("tp_btf/tcp_send_reset")
int BPF_PROG(ft_tcp_send_reset, const struct sock *sk)
{
    /* RSTs for segments that match no socket have none to attribute. */
    if (!sk)
        return 0;
    struct ft_tcp_stats *stats = ft_stats(sk, ft_role(sk));
    if (stats)
        __sync_fetch_and_add(&stats->resets_sent, 1);
    return 0;
}

static __always_inline void ft_observe_rtt(const struct sock *sk, struct ft_tcp_stats *stats)
{
    const struct tcp_sock *tp = (const struct tcp_sock *)sk;
    __u64 rtt_us = BPF_CORE_READ(tp, srtt_us) >> 3;
    if (rtt_us == 0)
        return; /* never measured: nothing was acknowledged */
    /* Bucket i holds [2^(i-1), 2^i) * 64 us: the bit length of rtt/64. */
    __u64 scaled = rtt_us / FT_RTT_FIRST_BOUND_US;
    __u32 index = scaled ? 64 - __builtin_clzll(scaled) : 0;
    if (index > FT_RTT_BUCKETS - 1)
        index = FT_RTT_BUCKETS - 1;
    __sync_fetch_and_add(&stats->rtt_count, 1);
    __sync_fetch_and_add(&stats->rtt_sum_us, rtt_us);
    if (index < FT_RTT_BUCKETS)
        __sync_fetch_and_add(&stats->rtt_buckets[index], 1);
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(ft_tcp_state, const struct sock *sk, int oldstate, int newstate)
{
    if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
        return 0;
    __u64 key = (__u64)sk;
    if (newstate == TCP_ESTABLISHED) {
        __u32 role = oldstate == TCP_SYN_SENT ? FT_TCP_ROLE_CLIENT : FT_TCP_ROLE_SERVER;
        if (ft_watched(ft_sock_cgroup(sk)))
            bpf_map_update_elem(&tcp_roles, &key, &role, BPF_ANY);
        return 0;
    }
    if (newstate != TCP_CLOSE)
        return 0;
    if (oldstate == TCP_SYN_SENT) {
        struct ft_tcp_stats *stats = ft_stats(sk, FT_TCP_ROLE_CLIENT);
        if (stats)
            __sync_fetch_and_add(&stats->failed_connects, 1);
    } else if (oldstate != TCP_LISTEN && oldstate != TCP_SYN_RECV) {
        struct ft_tcp_stats *stats = ft_stats(sk, ft_role(sk));
        if (stats)
            ft_observe_rtt(sk, stats);
    }
    bpf_map_delete_elem(&tcp_roles, &key);
    return 0;
}

char LICENSE[] SEC("license") = "GPL";
