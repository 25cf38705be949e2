//! Kernel timestamps to Unix time.
//!
//! `start_ns`/`end_ns` of a record are what the kernel gives eBPF programs:
//! `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) by default, or
//! `bpf_ktime_get_boot_ns()` (CLOCK_BOOTTIME) if the record says so in
//! [`RequestRecord::clock`](super::record::RequestRecord::clock). The
//! pipeline converts them with [`ClockOffsets`] measured once at startup.

pub use ferrotel_parse::record::KernelClock;

/// Offsets from the kernel clocks to Unix time, measured once at startup so
/// that every span of a run is converted consistently (NTP steps of the wall
/// clock after startup do not reorder spans).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockOffsets {
    /// Unix ns minus CLOCK_MONOTONIC ns.
    monotonic: i128,
    /// Unix ns minus CLOCK_BOOTTIME ns.
    boottime: i128,
}

impl ClockOffsets {
    /// Reads the three clocks back to back.
    pub fn measure() -> Self {
        use rustix::time::{ClockId, DynamicClockId, clock_gettime, clock_gettime_dynamic};
        let as_ns =
            |t: rustix::time::Timespec| t.tv_sec as i128 * 1_000_000_000 + t.tv_nsec as i128;
        let mono = as_ns(clock_gettime(ClockId::Monotonic));
        let real = as_ns(clock_gettime(ClockId::Realtime));
        let boot = clock_gettime_dynamic(DynamicClockId::Boottime)
            .map(as_ns)
            .unwrap_or(mono);
        Self {
            monotonic: real - mono,
            boottime: real - boot,
        }
    }

    /// Offsets given explicitly (tests).
    pub fn fixed(monotonic_to_unix: i128, boottime_to_unix: i128) -> Self {
        Self {
            monotonic: monotonic_to_unix,
            boottime: boottime_to_unix,
        }
    }

    /// The current CLOCK_MONOTONIC in ns: what `bpf_ktime_get_ns()` would say
    /// now. Handy for synthetic records in tests.
    pub fn monotonic_now_ns() -> u64 {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
    }

    /// Converts a kernel timestamp to Unix ns.
    pub fn to_unix_nanos(&self, clock: KernelClock, kernel_ns: u64) -> u64 {
        let offset = match clock {
            KernelClock::Monotonic => self.monotonic,
            KernelClock::Boottime => self.boottime,
        };
        (kernel_ns as i128 + offset).clamp(0, u64::MAX as i128) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_timestamps_convert_with_the_clock_offsets() {
        let offsets = ClockOffsets::fixed(1_000, 500);
        assert_eq!(offsets.to_unix_nanos(KernelClock::Monotonic, 10), 1_010);
        assert_eq!(offsets.to_unix_nanos(KernelClock::Boottime, 10), 510);
        let measured = ClockOffsets::measure();
        let now_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i128;
        let converted = measured
            .to_unix_nanos(KernelClock::Monotonic, ClockOffsets::monotonic_now_ns())
            as i128;
        // Generous: the two reads are microseconds apart; a minute would mean a wrong clock.
        assert!(
            (converted - now_unix).abs() < 60_000_000_000,
            "monotonic now converts to about wall-clock now"
        );
    }
}
