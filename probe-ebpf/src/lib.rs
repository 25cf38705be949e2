//! Ferrotel's eBPF program sets, embedded as compiled objects; the kernel
//! contract ([`contract`]: every map, global and program name user space
//! looks up, and every knob's default); and the Rust mirror of every struct
//! that crosses the kernel/user boundary.
//!
//! The C headers in `src/c/` are the source of truth for the wire structs
//! (`wire.h` for what every program set shares, `sockets/wire.h`,
//! `go/wire.h` and `views/wire.h` per set). `build.rs` reads the layouts
//! clang gave them from the objects' DWARF, and each Rust mirror asserts its
//! size and every field offset against them at compile time ([`mirrors!`]):
//! a field added, moved or resized on one side only fails the build.
//!
//! Objects: `build.rs` compiles every `src/c/<name>.bpf.c` and embeds it as
//! the static `<NAME>` (e.g. [`SOCKETS`]), aligned so aya can parse it in place.
#![no_std]

/// Alignment wrapper for embedded objects (see `build.rs`).
#[repr(C, align(32))]
#[derive(Debug)]
pub struct Aligned<Bytes: ?Sized> {
    pub bytes: Bytes,
}

include!(concat!(env!("OUT_DIR"), "/objects.rs"));

/// The layouts of the C structs, from the objects' DWARF (`build.rs`).
mod layouts {
    include!(concat!(env!("OUT_DIR"), "/layouts.rs"));
}

/// Asserts at compile time that a Rust mirror has the size of its C struct
/// and each listed field the C field's offset, and that every C field is
/// listed: `mirrors!(EventHeader = ft_event_header { kind, tgid, .. })`.
macro_rules! mirrors {
    ($rust:ty = $c:ident { $($field:ident),+ $(,)? }) => {
        const _: () = {
            use crate::layouts::$c as c;
            assert!(
                core::mem::size_of::<$rust>() == c::SIZE,
                concat!("size of ", stringify!($rust), " differs from struct ", stringify!($c))
            );
            assert!(
                [$(stringify!($field)),+].len() == c::FIELDS,
                concat!("struct ", stringify!($c), " has fields ", stringify!($rust), " does not list")
            );
            $(
                assert!(
                    core::mem::offset_of!($rust, $field) == c::$field,
                    concat!(stringify!($rust), ".", stringify!($field), " is not where struct ", stringify!($c), " has it")
                );
            )+
        };
    };
}
pub(crate) use mirrors;

/// The kernel contract: names and defaults shared with the C side.
pub mod contract;

/// Plain-old-data wire structs: every bit pattern is a valid value.
///
/// # Safety
///
/// Implement only for `#[repr(C)]` structs made of integers and arrays of
/// integers, with no implicit padding (the C side is compiled with
/// `-Wpadded -Werror`).
pub unsafe trait Wire: Copy + Sized {
    /// Reads `Self` from the start of `bytes` (a ring-buffer record), or
    /// `None` if the record is too short.
    fn read(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < core::mem::size_of::<Self>() {
            return None;
        }
        // SAFETY: the length was checked above; `Wire` guarantees any bit
        // pattern is a valid `Self`; `read_unaligned` copes with the ring
        // buffer's 8-byte record alignment being weaker than `Self`'s.
        Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<Self>()) })
    }

    /// The bytes of `self` as the kernel writes them into a record: what
    /// tests and fuzz targets build records from.
    fn as_bytes(&self) -> &[u8] {
        // SAFETY: `Wire` types have no padding, so all `size_of::<Self>()`
        // bytes are initialized; the slice borrows `self`.
        unsafe {
            core::slice::from_raw_parts(
                core::ptr::from_ref(self).cast::<u8>(),
                core::mem::size_of::<Self>(),
            )
        }
    }
}

/// Structs of the Go program set (`src/c/go/wire.h`).
pub mod go;

/// Structs of the profiling program set (`src/c/profile/wire.h`).
pub mod profile;

/// Structs of the socket-level program set (`src/c/sockets/wire.h`).
pub mod sockets;

/// Structs of trace-context propagation (`src/c/propagation/wire.h`).
pub mod propagation;
/// Structs of the node-level views' program sets (`src/c/views/wire.h`).
pub mod views;

/// Structs shared by every program set (`src/c/wire.h`).
pub mod wire {
    /// `enum ft_event_kind`.
    pub mod kind {
        pub const PROC_EXEC: u32 = 1;
        pub const PROC_EXIT: u32 = 2;
        pub const PROC_FORK: u32 = 3;
        pub const SOCK_OPEN: u32 = 16;
        pub const SOCK_DATA: u32 = 17;
        pub const SOCK_CLOSE: u32 = 18;
        /// Plaintext of a TLS connection, in the layout of `SOCK_DATA`.
        pub const TLS_DATA: u32 = 19;
        pub const EXEC_MAP: u32 = 20;
    }

    /// `enum ft_drop_reason`: indices into the `drop_counters` map.
    pub mod drop_reason {
        pub const RINGBUF_FULL: u32 = 0;
        pub const CONN_TABLE_FULL: u32 = 1;
        pub const INFLIGHT_FULL: u32 = 2;
        pub const PAYLOAD_READ: u32 = 3;
        pub const CLAIM_TABLE_FULL: u32 = 4;
        pub const TLS_NO_FD: u32 = 5;
        /// Number of slots in `drop_counters` (`FT_DROP_REASONS`).
        pub const COUNT: u32 = 8;

        /// Metric label for a reason index.
        pub fn name(reason: u32) -> &'static str {
            match reason {
                RINGBUF_FULL => "ringbuf_full",
                CONN_TABLE_FULL => "conn_table_full",
                INFLIGHT_FULL => "inflight_full",
                PAYLOAD_READ => "payload_read",
                CLAIM_TABLE_FULL => "claim_table_full",
                TLS_NO_FD => "tls_no_fd",
                _ => "other",
            }
        }
    }

    /// `claimed_tgids` value flag: children inherit the claim at fork.
    pub const CLAIM_FOLLOW_FORKS: u32 = 1;

    /// `struct ft_event_header`.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct EventHeader {
        pub kind: u32,
        pub tgid: u32,
        pub tid: u32,
        pub cpu: u32,
        /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC).
        pub ts_ns: u64,
    }
    crate::mirrors!(
        EventHeader = ft_event_header {
            kind,
            tgid,
            tid,
            cpu,
            ts_ns
        }
    );

    /// `struct ft_proc_event`.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct ProcEvent {
        pub header: EventHeader,
        pub parent_tgid: u32,
        pub flags: u32,
        pub comm: [u8; 16],
    }
    crate::mirrors!(
        ProcEvent = ft_proc_event {
            header,
            parent_tgid,
            flags,
            comm
        }
    );

    /// `struct ft_sock_addr`: IPv4 as IPv4-mapped IPv6, port in host order.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct SockAddr {
        pub addr: [u8; 16],
        pub port: u16,
        pub family: u16,
    }
    crate::mirrors!(SockAddr = ft_sock_addr { addr, port, family });

    pub const AF_UNIX: u16 = 1;
    pub const AF_INET: u16 = 2;
    pub const AF_INET6: u16 = 10;

    // SAFETY: repr(C), integers and integer arrays only, sizes asserted
    // against the -Wpadded C definitions.
    unsafe impl crate::Wire for EventHeader {}
    // SAFETY: as above.
    unsafe impl crate::Wire for ProcEvent {}
    // SAFETY: as above.
    unsafe impl crate::Wire for SockAddr {}
}

/// `aya::Pod` for the structs user space reads from or writes to maps.
#[cfg(feature = "user")]
mod pod {
    // SAFETY: `Wire` types are plain old data (see the trait's contract).
    unsafe impl aya::Pod for crate::wire::EventHeader {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::wire::ProcEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::wire::SockAddr {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::sockets::SockOpenEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::sockets::SockDataEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::sockets::SockCloseEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::profile::ProfProc {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::sockets::ExecMapEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::views::NetCounters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::views::TcpKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::views::TcpStats {}
}

#[cfg(test)]
mod tests {
    use super::Wire;
    use super::sockets::SockDataEvent;

    #[test]
    fn embedded_sockets_object_is_an_aligned_bpf_elf() {
        assert_eq!(
            &super::SOCKETS[..4],
            b"\x7fELF",
            "the socket-level program set must be an ELF object"
        );
        assert_eq!(
            super::SOCKETS.as_ptr() as usize % 32,
            0,
            "aya needs the object aligned"
        );
        // e_machine at offset 18, little-endian: EM_BPF = 247.
        assert_eq!(
            u16::from_le_bytes([super::SOCKETS[18], super::SOCKETS[19]]),
            247,
            "the object must target BPF"
        );
    }

    #[test]
    fn short_records_are_refused_and_full_ones_decode_field_by_field() {
        let mut record = [0u8; 48 + 3];
        record[0..4].copy_from_slice(&17u32.to_ne_bytes());
        record[40..44].copy_from_slice(&1234u32.to_ne_bytes());
        assert!(
            SockDataEvent::read(&record[..47]).is_none(),
            "47 bytes cannot hold a 48-byte event"
        );
        let shifted = SockDataEvent::read(&record[1..]).expect("50 bytes hold an event");
        assert_ne!(
            shifted.header.kind, 17,
            "decoding starts at the first byte given"
        );
        let event = SockDataEvent::read(&record).expect("a full record decodes");
        assert_eq!(event.header.kind, 17);
        assert_eq!(event.total_len, 1234, "total_len sits at offset 40");
    }
}
