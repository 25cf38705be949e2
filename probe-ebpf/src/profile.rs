//! Structs of the profiling program set (`src/c/profile/wire.h`), mirrored
//! against the object's DWARF. The object itself is [`crate::PROFILE`].

use crate::wire::EventHeader;

/// `FT_EV_PROFILE_SAMPLE` (`ft_event_header.kind`).
pub const SAMPLE_KIND: u32 = 64;

/// `enum ft_prof_kind`: which frames the kernel adds to the native stack.
pub mod proc_kind {
    pub const NATIVE: u32 = 0;
    pub const GO: u32 = 1;
    pub const PYTHON: u32 = 2;
}

/// `FT_PROF_NO_OFFSET`: a field this interpreter version does not have.
pub const NO_OFFSET: u32 = u32::MAX;
/// `FT_PY_LASTI_INT`: `frame_instr` is an instruction index (3.10).
pub const PY_LASTI_INT: u32 = 1;
/// `FT_PY_KEY_PTHREAD`: `tstate_thread_key` holds `pthread_self()` (3.10).
pub const PY_KEY_PTHREAD: u32 = 2;
/// `FT_PY_FRAME_READ`: bytes of a frame read at once; every frame field
/// offset must be below `PY_FRAME_READ - 8`.
pub const PY_FRAME_READ: u32 = 128;

pub const USER_MAX: usize = 127;
pub const KERNEL_MAX: usize = 48;
pub const PY_MAX: usize = 64;

/// `FT_PROF_*` bits of [`ProfileSample::flags`].
pub mod flags {
    pub const PY_TRUNCATED: u32 = 1;
    pub const PY_NO_THREAD: u32 = 2;
    pub const PY_READ_FAILED: u32 = 4;
    pub const USER_FAILED: u32 = 8;
}

/// `struct ft_py_offsets`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PyOffsets {
    pub interp_head: u64,
    pub interp_threads_head: u32,
    pub tstate_next: u32,
    pub tstate_thread_key: u32,
    pub tstate_frame: u32,
    pub cframe_current: u32,
    pub frame_code: u32,
    pub frame_previous: u32,
    pub frame_instr: u32,
    pub frame_owner: u32,
    pub flags: u32,
}
crate::mirrors!(
    PyOffsets = ft_py_offsets {
        interp_head,
        interp_threads_head,
        tstate_next,
        tstate_thread_key,
        tstate_frame,
        cframe_current,
        frame_code,
        frame_previous,
        frame_instr,
        frame_owner,
        flags
    }
);

/// `struct ft_prof_proc`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProfProc {
    pub kind: u32,
    pub go_goid: u32,
    pub go_tls_g: i64,
    pub py: PyOffsets,
}
crate::mirrors!(
    ProfProc = ft_prof_proc {
        kind,
        go_goid,
        go_tls_g,
        py
    }
);

/// `struct ft_py_frame`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PyFrame {
    pub code: u64,
    pub instr: u64,
}
crate::mirrors!(PyFrame = ft_py_frame { code, instr });

/// `struct ft_profile_sample`: stacks leaf first; the `*_len` fields say
/// how much of each array is valid.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProfileSample {
    pub header: EventHeader,
    pub goid: u64,
    pub py_tstate: u64,
    pub user_len: u32,
    pub kernel_len: u32,
    pub py_len: u32,
    pub flags: u32,
    pub user: [u64; USER_MAX],
    pub kernel: [u64; KERNEL_MAX],
    pub py: [PyFrame; PY_MAX],
}
crate::mirrors!(
    ProfileSample = ft_profile_sample {
        header,
        goid,
        py_tstate,
        user_len,
        kernel_len,
        py_len,
        flags,
        user,
        kernel,
        py
    }
);

impl ProfileSample {
    /// The valid user frames, leaf first.
    pub fn user_stack(&self) -> &[u64] {
        &self.user[..(self.user_len as usize).min(USER_MAX)]
    }
    /// The valid kernel frames, leaf first.
    pub fn kernel_stack(&self) -> &[u64] {
        &self.kernel[..(self.kernel_len as usize).min(KERNEL_MAX)]
    }
    /// The interpreter frames, innermost first.
    pub fn python_stack(&self) -> &[PyFrame] {
        &self.py[..(self.py_len as usize).min(PY_MAX)]
    }
}

// SAFETY: repr(C), integers and integer arrays only, layouts asserted
// against the -Wpadded C definitions.
unsafe impl crate::Wire for PyOffsets {}
// SAFETY: as above.
unsafe impl crate::Wire for ProfProc {}
// SAFETY: as above.
unsafe impl crate::Wire for PyFrame {}
// SAFETY: as above.
unsafe impl crate::Wire for ProfileSample {}
