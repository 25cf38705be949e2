/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/* The one include every program set starts with: kernel types and libbpf helpers. */
#ifndef FT_COMMON_TYPES_H
#define FT_COMMON_TYPES_H

/* -Wpadded guards our wire structs, not the kernel's or libbpf's. */
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wpadded"
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#pragma clang diagnostic pop

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif
#ifndef AF_UNIX
#define AF_UNIX 1
#endif
#ifndef SOCK_STREAM
#define SOCK_STREAM 1
#endif
#ifndef S_IFMT
#define S_IFMT 00170000
#endif
#ifndef S_IFSOCK
#define S_IFSOCK 0140000
#endif
#ifndef EINPROGRESS
#define EINPROGRESS 115
#endif

/*
 * Layout of the `syscalls/sys_enter_*` and `sys_exit_*` tracepoint records:
 * an 8-byte common header, the syscall number, then every argument widened
 * to 64 bits (see /sys/kernel/tracing/events/syscalls/<name>/format).
 */
struct ft_sys_enter_ctx {
    __u64 common;
    __s32 syscall_nr;
    __u32 pad;
    __u64 args[6];
};

struct ft_sys_exit_ctx {
    __u64 common;
    __s32 syscall_nr;
    __u32 pad;
    __s64 ret;
};

#endif
