/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Wire structs of the profiling program set (profile.bpf.c). Source of
 * truth; mirrored in probe-ebpf/src/profile.rs with size asserts.
 */
#ifndef FT_PROFILE_WIRE_H
#define FT_PROFILE_WIRE_H

#include "wire.h"

/* ft_event_header.kind of profiling events (64..79 are the profiling range). */
enum ft_profile_event_kind {
    FT_EV_PROFILE_SAMPLE = 64,
};

/* What a profiled process runs (ft_prof_proc.kind): which frames to add to
 * the native stack. */
enum ft_prof_kind {
    FT_PROF_NATIVE = 0, /* frame-pointer stacks only */
    FT_PROF_GO = 1,     /* + the running goroutine's id (span link) */
    FT_PROF_PYTHON = 2, /* + the interpreter's frame chain */
};

/* A field this interpreter version does not have. */
#define FT_PROF_NO_OFFSET 0xffffffffu

/* ft_py_offsets.flags */
#define FT_PY_LASTI_INT 1u /* frame_instr is an int instruction index (3.10 f_lasti), not a pointer */
#define FT_PY_KEY_PTHREAD 2u /* tstate_thread_key is pthread_self() (the thread pointer), not the tid (3.10) */

/* Bytes of one interpreter frame read at once: every frame field offset
 * must be below FT_PY_FRAME_READ - 8 (checked in user space). */
#define FT_PY_FRAME_READ 128

/*
 * Where the interpreter keeps its threads and frames, for one CPython
 * version (from the offsets table, or from _Py_DebugOffsets on 3.13+).
 * Addresses are in the target's address space. 48 bytes.
 */
struct ft_py_offsets {
    __u64 interp_head;         /* address of _PyRuntime.interpreters.head */
    __u32 interp_threads_head; /* PyInterpreterState.threads.head (3.10: tstate_head) */
    __u32 tstate_next;         /* PyThreadState.next */
    __u32 tstate_thread_key;   /* PyThreadState.native_thread_id (3.10: thread_id, see FT_PY_KEY_PTHREAD) */
    __u32 tstate_frame;        /* .frame (3.10), .cframe (3.11/3.12), .current_frame (3.13+) */
    __u32 cframe_current;      /* _PyCFrame.current_frame (3.11/3.12), else FT_PROF_NO_OFFSET */
    __u32 frame_code;          /* f_code (3.10-3.12), f_executable (3.13+) */
    __u32 frame_previous;      /* f_back (3.10), previous */
    __u32 frame_instr;         /* f_lasti (3.10), prev_instr (3.11/3.12), instr_ptr (3.13+) */
    __u32 frame_owner;         /* owner (3.12+: skip C-stack shims), else FT_PROF_NO_OFFSET */
    __u32 flags;               /* FT_PY_* */
};

/* One profiled process, written by user space under its tgid. 64 bytes. */
struct ft_prof_proc {
    __u32 kind;      /* enum ft_prof_kind */
    __u32 go_goid;   /* runtime.g.goid offset */
    __s64 go_tls_g;  /* where g sits relative to the thread pointer (FS base) */
    struct ft_py_offsets py;
};

/* Stack capacities of one sample. The user stack is capped by the kernel's
 * perf_event_max_stack (127 by default) anyway. */
#define FT_PROF_USER_MAX 127
#define FT_PROF_KERNEL_MAX 48
#define FT_PROF_PY_MAX 64

/* ft_profile_sample.flags */
#define FT_PROF_PY_TRUNCATED 1u     /* more interpreter frames than FT_PROF_PY_MAX */
#define FT_PROF_PY_NO_THREAD 2u     /* no thread state found for this thread */
#define FT_PROF_PY_READ_FAILED 4u   /* a frame could not be read (freed, paged out) */
#define FT_PROF_USER_FAILED 8u      /* bpf_get_stack(user) failed */

/* One interpreter frame: the code object and where in it. 16 bytes. */
struct ft_py_frame {
    __u64 code;  /* PyCodeObject* (3.13+: f_executable, may be a non-code object) */
    __u64 instr; /* instruction pointer, or instruction index with FT_PY_LASTI_INT */
};

/*
 * One CPU-clock sample of a profiled thread. Fixed size: reserved in the
 * ring buffer and filled in place (no per-CPU scratch copy); the *_len
 * fields say how much of each array is valid. Stacks are leaf first.
 * 2480 bytes.
 */
struct ft_profile_sample {
    struct ft_event_header header; /* ts_ns: when the sample fired */
    __u64 goid;                    /* Go: the running goroutine (0 = none/unknown) */
    __u64 py_tstate;               /* Python: the thread's PyThreadState* (0 = none) */
    __u32 user_len;
    __u32 kernel_len;
    __u32 py_len;
    __u32 flags; /* FT_PROF_* */
    __u64 user[FT_PROF_USER_MAX];
    __u64 kernel[FT_PROF_KERNEL_MAX];
    struct ft_py_frame py[FT_PROF_PY_MAX];
};

#endif
