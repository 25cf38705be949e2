/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * The pod network program set: bytes and packets through the sockets of the
 * reported pods' cgroups, counted per cgroup in a per-CPU hash.
 *
 * Two cgroup_skb programs attached once at the cgroup2 root (as bpf links,
 * which coexist with any other program there) run for every socket packet
 * on the node; the socket's cgroup (set when the socket was created) picks
 * the counter, and a cgroup user space did not insert costs one hash lookup
 * and nothing else. User space inserts the v2 cgroup IDs of the reported
 * pods' containers and sums them per pod.
 *
 * What is counted: the IP packets that reach or leave a socket (L3 length,
 * GSO/GRO aggregates counted as their segments for packets) — what the pod's
 * processes sent and received, host-network pods included, without the
 * Ethernet framing an interface counter would add.
 *
 * Programs always return 1 (allow): counting never drops traffic.
 */
#include "common/types.h"
#include "common/sizes.h"
#include "views/wire.h"

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_HASH);
    __uint(max_entries, FT_MAX_WATCHED_CGROUPS);
    __type(key, __u64); /* cgroup v2 id (the directory's inode number) */
    __type(value, struct ft_net_counters);
} cgroup_traffic SEC(".maps");

static __always_inline int ft_count(struct __sk_buff *skb, int egress)
{
    __u64 cgroup = bpf_skb_cgroup_id(skb);
    struct ft_net_counters *counters = bpf_map_lookup_elem(&cgroup_traffic, &cgroup);
    if (!counters)
        return 1;
    __u32 segments = skb->gso_segs ? skb->gso_segs : 1;
    /* Per-CPU values: plain adds are safe. */
    if (egress) {
        counters->tx_bytes += skb->len;
        counters->tx_packets += segments;
    } else {
        counters->rx_bytes += skb->len;
        counters->rx_packets += segments;
    }
    return 1;
}

SEC("cgroup_skb/ingress")
int ft_podnet_ingress(struct __sk_buff *skb)
{
    return ft_count(skb, 0);
}

SEC("cgroup_skb/egress")
int ft_podnet_egress(struct __sk_buff *skb)
{
    return ft_count(skb, 1);
}

char LICENSE[] SEC("license") = "GPL";
