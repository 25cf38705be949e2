//! Structs of the socket-level program set (`src/c/sockets/wire.h`),
//! mirrored against the object's DWARF. The object itself is
//! [`crate::SOCKETS`].

use crate::wire::{EventHeader, SockAddr};

/// `FT_SOCK_PAYLOAD_CAP`: the most payload bytes one data event carries.
pub const PAYLOAD_CAP: usize = 4096;
// The per-CPU scratch holds an event and twice the cap (sockets/wire.h);
// `maxPayloadBytes` may not ask for more than the cap.
const _: () = assert!(
    crate::layouts::ft_sock_data_scratch::SIZE
        == core::mem::size_of::<SockDataEvent>() + 2 * PAYLOAD_CAP
);
const _: () = assert!(PAYLOAD_CAP == crate::contract::defaults::MAX_PAYLOAD_BYTES_MAX as usize);

/// `enum ft_sock_role`.
pub mod role {
    pub const UNKNOWN: u32 = 0;
    pub const SERVER: u32 = 1;
    pub const CLIENT: u32 = 2;
}

/// `enum ft_sock_dir`.
pub mod direction {
    pub const INGRESS: u32 = 1;
    pub const EGRESS: u32 = 2;
}

/// `struct ft_sock_open_event`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockOpenEvent {
    pub header: EventHeader,
    pub fd: i32,
    pub role: u32,
    pub local: SockAddr,
    pub peer: SockAddr,
}
crate::mirrors!(
    SockOpenEvent = ft_sock_open_event {
        header,
        fd,
        role,
        local,
        peer
    }
);

/// `struct ft_sock_data_event`; `captured_len` payload bytes follow it
/// in the record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockDataEvent {
    pub header: EventHeader,
    pub enter_ns: u64,
    pub fd: i32,
    pub direction: u32,
    pub total_len: u32,
    pub captured_len: u32,
}
crate::mirrors!(
    SockDataEvent = ft_sock_data_event {
        header,
        enter_ns,
        fd,
        direction,
        total_len,
        captured_len
    }
);

/// `struct ft_sock_close_event`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockCloseEvent {
    pub header: EventHeader,
    pub fd: i32,
    pub role: u32,
}
crate::mirrors!(SockCloseEvent = ft_sock_close_event { header, fd, role });

/// `struct ft_exec_map_event`: a claimed process mapped a file executable.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExecMapEvent {
    pub header: EventHeader,
    pub fd: i32,
    pub prot: u32,
}
crate::mirrors!(ExecMapEvent = ft_exec_map_event { header, fd, prot });

// SAFETY: repr(C), integers and integer arrays only, sizes asserted
// against the -Wpadded C definitions.
unsafe impl crate::Wire for SockOpenEvent {}
// SAFETY: as above.
unsafe impl crate::Wire for ExecMapEvent {}
// SAFETY: as above.
unsafe impl crate::Wire for SockDataEvent {}
// SAFETY: as above.
unsafe impl crate::Wire for SockCloseEvent {}
