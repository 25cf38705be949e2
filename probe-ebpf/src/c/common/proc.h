/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Process lifecycle programs shared by every program set:
 *  - ft_proc_fork: children of a claimed process are claimed in the kernel at
 *    fork time, before they can serve a request (gunicorn and uvicorn fork
 *    their workers after the probe attached to the master);
 *  - ft_proc_exit: a claimed process left; its claim is removed;
 *  - ft_proc_exec: a process exec'd; reported for every process when
 *    `report_execs` is set, so user space can discover new targets.
 * Include once per program set (it defines programs). All three are BTF
 * tracepoints: they attach without tracefs, which a fresh host may not have
 * mounted.
 */
#ifndef FT_COMMON_PROC_H
#define FT_COMMON_PROC_H

#include "common/types.h"
#include "common/sizes.h"
#include "common/claimed.h"
#include "common/drops.h"
#include "common/ringbuf.h"
#include "common/task.h"
#include "wire.h"

/* Load-time knob: report execs of every process (1) or only claimed ones (0). */
volatile const __u32 report_execs = FT_DEFAULT_REPORT_EXECS;

static __always_inline void ft_emit_proc(__u32 kind, __u64 pid_tgid, __u32 parent_tgid)
{
    struct ft_proc_event *event = ft_reserve(sizeof(*event));
    if (!event)
        return;
    ft_fill_header(&event->header, kind, pid_tgid);
    event->parent_tgid = parent_tgid;
    event->flags = 0;
    bpf_get_current_comm(event->comm, sizeof(event->comm));
    ft_submit(event);
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(ft_proc_fork, struct task_struct *parent, struct task_struct *child)
{
    __u32 parent_tgid = parent->tgid;
    __u32 child_tgid = child->tgid;
    if (parent_tgid == child_tgid)
        return 0; /* a new thread, not a new process */
    __u32 *claim = ft_claim_of(parent_tgid);
    if (!claim || !(*claim & FT_CLAIM_FOLLOW_FORKS))
        return 0;
    __u32 flags = *claim;
    ft_hint_kernel_claim(child_tgid, 1);
    if (bpf_map_update_elem(&claimed_tgids, &child_tgid, &flags, BPF_ANY) != 0) {
        ft_count_drop(FT_DROP_CLAIM_TABLE_FULL);
        return 0;
    }
    /* Reported as the child: header.tgid is the new process. */
    ft_emit_proc(FT_EV_PROC_FORK, ((__u64)child_tgid << 32) | (__u32)child->pid, parent_tgid);
    return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(ft_proc_exit, struct task_struct *task)
{
    __u64 pid_tgid = bpf_get_current_pid_tgid();
    __u32 tgid = pid_tgid >> 32;
    if (!ft_whole_process_exits(pid_tgid))
        return 0;
    if (!ft_is_claimed(tgid))
        return 0;
    bpf_map_delete_elem(&claimed_tgids, &tgid);
    ft_hint_kernel_claim(tgid, 0);
    ft_emit_proc(FT_EV_PROC_EXIT, pid_tgid, 0);
    return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(ft_proc_exec, struct task_struct *task)
{
    __u64 pid_tgid = bpf_get_current_pid_tgid();
    if (!report_execs && !ft_is_claimed(pid_tgid >> 32))
        return 0;
    ft_emit_proc(FT_EV_PROC_EXEC, pid_tgid, 0);
    return 0;
}

#endif
