/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Every sizing constant of the shared eBPF plumbing, in one place.
 *
 * Map capacities are defaults: the loader may resize maps before load
 * (aya `EbpfLoader::map_max_entries`) for large nodes. The defaults of the
 * load-time knobs (ring size, wake-up threshold, payload bytes) are not
 * here: they come from the kernel contract, probe-ebpf/src/contract.rs,
 * through the generated ft_contract.h.
 */
#ifndef FT_COMMON_SIZES_H
#define FT_COMMON_SIZES_H

#include "ft_contract.h"

/* Processes the probe may claim at once (claimed_tgids). */
#define FT_MAX_CLAIMED_TGIDS 4096

/* Words of 64 tgids in each claimed hint bitmap (common/claimed.h) before
 * the loader sizes it to the node's pid_max: the kernel's largest pid_max
 * (PID_MAX_LIMIT, 4194304) / 64. */
#define FT_CLAIMED_HINT_WORDS 65536

/* Tracked TCP/stream connections of claimed processes, keyed by (tgid, fd). */
#define FT_MAX_CONNS 65536

/* In-flight syscalls (enter seen, exit not yet), keyed by pid_tgid. */
#define FT_MAX_INFLIGHT 16384

/* Cgroups (containers of reported pods) whose sockets' traffic is counted
 * (podnet.bpf.c) and whose TCP health is kept (tcphealth.bpf.c). */
#define FT_MAX_WATCHED_CGROUPS 8192

/* (cgroup, peer address, role) triples with TCP health kept; least recently
 * updated ones are evicted first. */
#define FT_MAX_TCP_PEERS 8192

/* Sockets whose client/server role is remembered from their handshake. */
#define FT_MAX_TCP_ROLES 65536

/* Highest fd number inspected through task->files when adopting a socket. */
#define FT_MAX_FD 1048576

#endif
