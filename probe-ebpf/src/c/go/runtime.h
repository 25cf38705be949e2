/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Reading Go values from BPF (amd64, register ABI of Go >= 1.17):
 *  - the current goroutine's g is in R14 while Go code runs;
 *  - integer arguments arrive in RAX, RBX, RCX, RDI, RSI, R8, R9, R10, R11,
 *    and results leave in the same registers at RET;
 *  - a string is {ptr, len}, a slice {ptr, len, cap}, an interface {itab, data}.
 */
#ifndef FT_GO_RUNTIME_H
#define FT_GO_RUNTIME_H

#include "common/types.h"
#include "common/payload.h"
#include "go/wire.h"
#include "go/maps.h"

struct ft_go_string {
    __u64 ptr;
    __s64 len;
};

struct ft_go_slice {
    __u64 ptr;
    __s64 len;
    __s64 cap;
};

static __always_inline __u64 ft_go_read_u64(__u64 addr)
{
    __u64 value = 0;
    bpf_probe_read_user(&value, sizeof(value), (void *)addr);
    return value;
}

static __always_inline __u64 ft_go_goid_of(const struct ft_go_offsets *off, __u64 g)
{
    if (!g)
        return 0;
    return ft_go_read_u64(g + off->g_goid);
}

/* The running goroutine's id (R14 holds g in Go code). */
static __always_inline __u64 ft_go_current_goid(struct pt_regs *ctx, const struct ft_go_offsets *off)
{
    return ft_go_goid_of(off, ctx->r14);
}

/*
 * How many of `len` bytes to copy into a field of capacity cap_mask + 1 (a
 * power of two): at most cap_mask, and at most the max_payload_bytes knob.
 */
static __always_inline __u64 ft_go_copy_len(__s64 len, __u64 cap_mask)
{
    if (len <= 0)
        return 0;
    __u64 n = (__u64)len;
    if (n > cap_mask)
        n = cap_mask;
    if (n > max_payload_bytes)
        n = max_payload_bytes;
    return n & cap_mask; /* a bound the verifier can see */
}

/*
 * Copies the Go string whose header is at `addr` into dst (capacity
 * cap_mask + 1); see ft_go_copy_len. Returns the length copied.
 */
static __always_inline __u16 ft_go_read_string(char *dst, __u64 cap_mask, __u64 addr)
{
    struct ft_go_string s = {};
    if (bpf_probe_read_user(&s, sizeof(s), (void *)addr) != 0 || !s.ptr)
        return 0;
    __u64 n = ft_go_copy_len(s.len, cap_mask);
    if (n == 0 || bpf_probe_read_user(dst, n, (void *)s.ptr) != 0)
        return 0;
    return (__u16)n;
}

/* The address in the net.Addr interface at `iface` into `addr` (16 bytes,
 * IPv4-mapped for IPv4) and `port`; 0 on success. A *net.TCPAddr only: its
 * itab where the binary names it, else its shape (IP of 4 or 16 bytes, a
 * port). */
static __always_inline int ft_go_read_tcp_addr(const struct ft_go_offsets *off, __u64 iface, __u8 *addr, __u16 *port)
{
    if (off->tcp_addr_ip == FT_GO_NO_OFFSET || off->tcp_addr_port == FT_GO_NO_OFFSET)
        return -1;
    __u64 pair[2] = {};
    if (bpf_probe_read_user(pair, sizeof(pair), (void *)iface) != 0 || !pair[0] || !pair[1])
        return -1;
    if (off->tcp_addr_itab && pair[0] != off->tcp_addr_itab)
        return -1;
    struct ft_go_slice ip = {};
    __s64 number = 0;
    if (bpf_probe_read_user(&ip, sizeof(ip), (void *)(pair[1] + off->tcp_addr_ip)) != 0 || !ip.ptr ||
        bpf_probe_read_user(&number, sizeof(number), (void *)(pair[1] + off->tcp_addr_port)) != 0 || number <= 0 ||
        number > 65535)
        return -1;
    if (ip.len == 4) {
        __builtin_memset(addr, 0, 10);
        addr[10] = 0xff;
        addr[11] = 0xff;
        if (bpf_probe_read_user(&addr[12], 4, (void *)ip.ptr) != 0)
            return -1;
    } else if (ip.len == 16) {
        /* IPv4 peers of a dual-stack socket come IPv4-mapped, as wanted. */
        if (bpf_probe_read_user(addr, 16, (void *)ip.ptr) != 0)
            return -1;
    } else {
        return -1;
    }
    *port = (__u16)number;
    return 0;
}

static __always_inline void ft_go_random_bytes(__u8 *dst, int words)
{
    for (int i = 0; i < words; i++) {
        __u32 r = bpf_get_prandom_u32();
        __builtin_memcpy(dst + 4 * i, &r, 4);
    }
}

#endif
