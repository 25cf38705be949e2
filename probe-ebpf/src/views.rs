//! Structs of the node-level views' program sets (`src/c/views/wire.h`):
//! pod network ([`crate::PODNET`]) and TCP health ([`crate::TCPHEALTH`]),
//! mirrored against the objects' DWARF. Both sets aggregate in maps that
//! user space reads; nothing here is a ring record.

/// `struct ft_net_counters`: one cgroup's socket traffic.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetCounters {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
}
crate::mirrors!(
    NetCounters = ft_net_counters {
        rx_bytes,
        rx_packets,
        tx_bytes,
        tx_packets
    }
);

/// `enum ft_tcp_role`.
pub mod tcp_role {
    pub const UNKNOWN: u32 = 0;
    pub const CLIENT: u32 = 1;
    pub const SERVER: u32 = 2;
}

/// `FT_RTT_BUCKETS`.
pub const RTT_BUCKETS: usize = 16;
/// `FT_RTT_FIRST_BOUND_US`: bucket `i` counts RTTs below `2^i` times this.
pub const RTT_FIRST_BOUND_US: u64 = 64;

/// `struct ft_tcp_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TcpKey {
    pub cgroup_id: u64,
    pub peer: [u8; 16],
    pub role: u32,
    pub pad: u32,
}
crate::mirrors!(
    TcpKey = ft_tcp_key {
        cgroup_id,
        peer,
        role,
        pad
    }
);

/// `struct ft_tcp_stats`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpStats {
    pub retransmits: u64,
    pub failed_connects: u64,
    pub resets_received: u64,
    pub resets_sent: u64,
    pub rtt_count: u64,
    pub rtt_sum_us: u64,
    pub rtt_buckets: [u64; RTT_BUCKETS],
}
crate::mirrors!(
    TcpStats = ft_tcp_stats {
        retransmits,
        failed_connects,
        resets_received,
        resets_sent,
        rtt_count,
        rtt_sum_us,
        rtt_buckets
    }
);
// The bucket count is part of the layout: a C change fails the build here.
const _: () = assert!(
    crate::layouts::ft_tcp_stats::SIZE == 6 * 8 + RTT_BUCKETS * 8,
    "FT_RTT_BUCKETS differs from RTT_BUCKETS"
);

// SAFETY: repr(C), integers and integer arrays only, layouts asserted
// against the -Wpadded C definitions.
unsafe impl crate::Wire for NetCounters {}
// SAFETY: as above.
unsafe impl crate::Wire for TcpKey {}
// SAFETY: as above.
unsafe impl crate::Wire for TcpStats {}
