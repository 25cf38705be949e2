//! Reading the `events` ring buffer.
//!
//! The kernel side wakes us only when `wakeup_bytes` are pending (see
//! `common/ringbuf.h`), so readiness alone would leave a trickle of events
//! waiting indefinitely: the reader also drains on a short timer. Each
//! drain empties the buffer, then clears readiness (aya 0.14 has no tokio
//! integration; this is the `AsyncFd` pattern its docs describe).

use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use ferrotel_probe_ebpf::contract::maps;
use tokio::io::unix::AsyncFd;
use tokio::time::{Interval, MissedTickBehavior};

use super::{EbpfError, Kernel};

/// Async reader of a program set's `events` ring buffer.
pub struct EventReader {
    ring: AsyncFd<RingBuf<MapData>>,
    poll: Interval,
}

impl EventReader {
    /// Takes the `events` map out of `kernel`, drained at least every
    /// `poll`. Must run inside a tokio runtime.
    pub fn take(kernel: &mut Kernel, poll: Duration) -> Result<Self, EbpfError> {
        let set = kernel.set();
        let ring: RingBuf<MapData> = kernel.take_map(maps::EVENTS)?;
        // SAFETY: the RingBuf owns the map's fd (MapData) and keeps it open,
        // unchanged, for as long as it lives; the AsyncFd owns the RingBuf,
        // so the registered fd outlives the registration.
        let ring = unsafe { AsyncFd::register(ring) }.map_err(|e| EbpfError::Ring {
            set,
            source: e.into_parts().1,
        })?;
        let mut poll = tokio::time::interval(poll);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Ok(Self { ring, poll })
    }

    /// Waits for a wake-up or the poll tick, then hands every pending
    /// record to `on_record`. Returns the number of records.
    pub async fn drain(&mut self, mut on_record: impl FnMut(&[u8])) -> std::io::Result<usize> {
        tokio::select! {
            guard = self.ring.readable_mut() => {
                let mut guard = guard?;
                let n = drain_ring(guard.get_inner_mut(), &mut on_record);
                guard.clear_ready();
                Ok(n)
            }
            _ = self.poll.tick() => Ok(drain_ring(self.ring.get_mut(), &mut on_record)),
        }
    }

    /// Drains without waiting (shutdown: deliver what is left).
    pub fn drain_now(&mut self, mut on_record: impl FnMut(&[u8])) -> usize {
        drain_ring(self.ring.get_mut(), &mut on_record)
    }
}

impl std::fmt::Debug for EventReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventReader")
            .field("fd", &std::os::fd::AsRawFd::as_raw_fd(self.ring.get_ref()))
            .finish_non_exhaustive()
    }
}

fn drain_ring(ring: &mut RingBuf<MapData>, on_record: &mut impl FnMut(&[u8])) -> usize {
    let mut n = 0;
    while let Some(item) = ring.next() {
        on_record(&item);
        n += 1;
    }
    n
}
