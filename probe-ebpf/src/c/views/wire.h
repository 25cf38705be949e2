/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Wire structs of the node-level views' program sets: pod network
 * (podnet.bpf.c) and TCP health (tcphealth.bpf.c). Source of truth;
 * mirrored in probe-ebpf/src/lib.rs (module `views`). Both sets aggregate in
 * kernel maps that user space reads on its sampling interval: no events,
 * no ring buffer, nothing per packet leaves the kernel.
 */
#ifndef FT_VIEWS_WIRE_H
#define FT_VIEWS_WIRE_H

#include "wire.h"

/* Bytes and packets through the sockets of one cgroup (value of
 * `cgroup_traffic`, per CPU). Packets count GSO/GRO segments. 32 bytes. */
struct ft_net_counters {
    __u64 rx_bytes;
    __u64 rx_packets;
    __u64 tx_bytes;
    __u64 tx_packets;
};

/* Which end of a TCP connection the watched socket is. */
enum ft_tcp_role {
    FT_TCP_ROLE_UNKNOWN = 0,
    FT_TCP_ROLE_CLIENT = 1, /* it connected out (SYN_SENT) */
    FT_TCP_ROLE_SERVER = 2, /* it was accepted (SYN_RECV) */
};

/* Buckets of the RTT histogram: bucket i counts smoothed RTTs below
 * 2^i * 64 us (the last bucket also everything above). */
#define FT_RTT_BUCKETS 16
#define FT_RTT_FIRST_BOUND_US 64

/* Key of `tcp_peers`: one watched cgroup talking to one peer address in
 * one role. 32 bytes. */
struct ft_tcp_key {
    __u64 cgroup_id;
    __u8 peer[16]; /* IPv4 as IPv4-mapped IPv6 */
    __u32 role;    /* enum ft_tcp_role */
    __u32 pad;
};

/* TCP health of one `ft_tcp_key`, cumulative. 176 bytes. */
struct ft_tcp_stats {
    __u64 retransmits;      /* segments retransmitted (tcp_retransmit_skb) */
    __u64 failed_connects;  /* connects that never got established (SYN_SENT -> CLOSE) */
    __u64 resets_received;  /* RSTs received on the connection (tcp_receive_reset) */
    __u64 resets_sent;      /* RSTs sent on the connection (tcp_send_reset) */
    __u64 rtt_count;        /* closed connections with an RTT sample */
    __u64 rtt_sum_us;       /* sum of their smoothed RTTs */
    __u64 rtt_buckets[FT_RTT_BUCKETS];
};

#endif
