/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * The floor a syscall tracer imposes on every process: programs that do
 * nothing, on the raw syscall tracepoints. Attaching any program there sets
 * TIF_SYSCALL_TRACEPOINT on every task, so each syscall takes the slow entry
 * and exit path and calls the program; what remains is the cost of the
 * mechanism. Loaded by the benchmark with bpftool (no tracefs needed).
 */
#include <linux/types.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

#ifdef FLOOR_ENTER
SEC("raw_tp/sys_enter")
int ft_bench_floor_enter(void *ctx)
{
    return 0;
}
#endif

SEC("raw_tp/sys_exit")
int ft_bench_floor_exit(void *ctx)
{
    return 0;
}
