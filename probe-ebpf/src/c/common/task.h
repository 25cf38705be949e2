/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/* The running task, as the process-lifecycle programs see it. */
#ifndef FT_COMMON_TASK_H
#define FT_COMMON_TASK_H

#include "common/types.h"

/* At sched_process_exit: is the exiting task its process's main thread, so
 * that the whole process is leaving and not one of its threads? Every set
 * that forgets per-process state on exit asks this first. */
static __always_inline int ft_whole_process_exits(__u64 pid_tgid)
{
    return (__u32)pid_tgid == (__u32)(pid_tgid >> 32);
}

#endif
