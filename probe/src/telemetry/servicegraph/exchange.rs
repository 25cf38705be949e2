//! The ends of connections, exchanged between the probes of one node (one
//! per language), so that an edge between a process of one probe and a
//! process of the other is named as a pair names it.
//!
//! # What is exchanged
//!
//! A span that waits for its other side ([`super::pairing::Pairer`])
//! publishes its process's own graph node (`service.name` and namespace)
//! under the connection's client address and its side, with the span's
//! start and end, in a node-wide BPF map that every probe opens in its pin
//! directory ([`PIN`], an LRU hash of [`MAX_ENTRIES`]). A span that found
//! no partner in its own probe looks up the other side's entry under the
//! same client address before it falls back to the single-span rule, and
//! names the other end from it.
//!
//! # Where the map is
//!
//! With propagation on (or `propagation.pinDir` set) the map is pinned at
//! [`PIN`] in the pin directory on the node's bpffs, which the operator
//! mounts into the probes only for propagation; it outlives the probes.
//! Without propagation, a probe in Kubernetes mode has no bpffs, and finds the map
//! by its kernel name instead ([`PinnedExchange::open_by_name`]): the
//! loaded map named [`MAP_NAME`] with this layout and the lowest ID, else
//! one it creates. Two probes that create one at the same moment settle on
//! the same map: IDs are given in creation order, so the first one created
//! was visible to the second's check after its own creation. That map lives
//! while a probe holds it (the node's two probes restarting together start
//! an empty one). Listing the node's maps takes `CAP_SYS_ADMIN`, which the
//! probes have.
//!
//! # When an entry fits
//!
//! An entry holds the latest span of its side on that client address: on a
//! keep-alive connection later requests overwrite it before the waiting span
//! looks (a second later). So the check is not the pair's (the server
//! started within the client's request) but that the entry is not older
//! than the span: the client's latest request on the address ended at or
//! after the server span started; the server's latest request on it started
//! at or after the client span started. That rejects the entry of an
//! earlier owner of the address (a connection closed before this request);
//! a later owner that reuses the port within the wait is not told apart.
//!
//! # Cost
//!
//! Each write and each read of the map is a system call
//! (`BPF_MAP_UPDATE_ELEM`, `BPF_MAP_LOOKUP_ELEM`), a few microseconds on a
//! busy node: once per span they doubled the probe's CPU per span. So the
//! pairer goes through an [`ExchangeClient`], which makes them per
//! connection instead of per span:
//!
//! - Writes are held until the pipeline's next tick, every
//!   [`ExchangeClient::PUBLISH_EVERY`] while the exchange is open, and only
//!   the latest end of each key is written: a keep-alive connection's
//!   requests overwrite one entry, so one write per connection per tick
//!   says what one write per request said.
//! - Reads are cached for [`ExchangeClient::LOOKUP_TTL`], absent entries
//!   included: spans leave the pairing in arrival order, the spans of one
//!   connection one after the other.
//!
//! Both delays are far inside the pairing window, which is what makes them
//! safe: a span is looked up a [`Pairer::WINDOW`](super::pairing::Pairer)
//! after it arrived, the other side's end was written at most
//! `PUBLISH_EVERY` after its own span arrived (the next tick), and a read
//! cached `LOOKUP_TTL` ago was made after that. A connection per request
//! still costs a write and a read per span.
//!
//! Names longer than [`NAME_BYTES`] are not published, and such an end is
//! never named from the map (its spans keep the single-span rule).

use std::collections::HashMap as StdHashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aya::maps::{HashMap, Map, MapData, MapError};

use super::GraphNode;
use crate::telemetry::record::{KernelClock, SpanKind};

/// The map's name in the pin directory.
pub const PIN: &str = "graph_ends";
/// The map's name in the kernel (at most 15 bytes), by which probes
/// without a bpffs find it.
pub const MAP_NAME: &str = "ft_graph_ends";
/// Entries at most (LRU: the least recently written go first). An entry is
/// needed for about a second (the pairing window); 16,384 take 3.8 MiB
/// of kernel memory per node (preallocated; `memlock` as the kernel reports it).
pub const MAX_ENTRIES: u32 = 16_384;
/// Bytes of a published `service.name` and of a namespace at most (a
/// Kubernetes namespace has 63).
pub const NAME_BYTES: usize = 64;

/// The map's key: the client address of a connection and the side that
/// published.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EndKey {
    /// IPv6, or IPv4-mapped IPv6.
    ip: [u8; 16],
    port: u16,
    /// 1: a client span published it; 0: a server span.
    client: u8,
    pad: u8,
}

// SAFETY: `repr(C)`, plain integers and byte arrays, no implicit padding
// (16 + 2 + 1 + 1 bytes, alignment 2).
unsafe impl aya::Pod for EndKey {}

impl EndKey {
    pub fn new(client_addr: SocketAddr, kind: SpanKind) -> Self {
        let ip = match client_addr.ip() {
            std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            std::net::IpAddr::V6(v6) => v6,
        };
        Self {
            ip: ip.octets(),
            port: client_addr.port(),
            client: u8::from(kind == SpanKind::Client),
            pad: 0,
        }
    }
}

/// The map's value: who published, and when its span ran.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndValue {
    start_ns: u64,
    end_ns: u64,
    /// 0: `CLOCK_MONOTONIC`, 1: `CLOCK_BOOTTIME`.
    clock: u8,
    name_len: u8,
    namespace_len: u8,
    pad: [u8; 5],
    name: [u8; NAME_BYTES],
    namespace: [u8; NAME_BYTES],
}

// SAFETY: `repr(C)`, plain integers and byte arrays, no implicit padding
// (8 + 8 + 1 + 1 + 1 + 5 + 64 + 64 bytes, alignment 8).
unsafe impl aya::Pod for EndValue {}

/// One published end, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct End {
    pub node: GraphNode,
    pub start_ns: u64,
    pub end_ns: u64,
    pub clock: KernelClock,
}

impl End {
    /// The map value, or `None` if a name does not fit.
    pub fn encode(&self) -> Option<EndValue> {
        Self::encode_parts(&self.node, self.start_ns, self.end_ns, self.clock)
    }

    /// [`End::encode`] without building the `End` (the pairing's hot path).
    pub fn encode_parts(
        node: &GraphNode,
        start_ns: u64,
        end_ns: u64,
        clock: KernelClock,
    ) -> Option<EndValue> {
        let mut value = EndValue {
            start_ns,
            end_ns,
            clock: u8::from(clock == KernelClock::Boottime),
            name_len: 0,
            namespace_len: 0,
            pad: [0; 5],
            name: [0; NAME_BYTES],
            namespace: [0; NAME_BYTES],
        };
        let name = node.name.as_bytes();
        let namespace = node.namespace.as_deref().unwrap_or("").as_bytes();
        if name.is_empty() || name.len() > NAME_BYTES || namespace.len() > NAME_BYTES {
            return None;
        }
        value.name[..name.len()].copy_from_slice(name);
        value.name_len = name.len() as u8;
        value.namespace[..namespace.len()].copy_from_slice(namespace);
        value.namespace_len = namespace.len() as u8;
        Some(value)
    }

    /// The end a map value describes, or `None` if it is not one this
    /// encoding wrote (lengths out of range, names not UTF-8).
    pub fn decode(value: &EndValue) -> Option<Self> {
        let name = value.name.get(..usize::from(value.name_len))?;
        let namespace = value.namespace.get(..usize::from(value.namespace_len))?;
        let name = std::str::from_utf8(name).ok().filter(|n| !n.is_empty())?;
        let namespace = std::str::from_utf8(namespace).ok()?;
        Some(Self {
            node: GraphNode::new(
                name,
                (!namespace.is_empty()).then(|| Arc::<str>::from(namespace)),
            ),
            start_ns: value.start_ns,
            end_ns: value.end_ns,
            clock: if value.clock == 1 {
                KernelClock::Boottime
            } else {
                KernelClock::Monotonic
            },
        })
    }

    /// Whether this end, published by the other side, describes the
    /// process at the other end of a span of `kind` over
    /// `[start_ns, end_ns]` on the same client address: same clock, and not
    /// older than the span (see the module docs).
    pub fn fits(&self, kind: SpanKind, start_ns: u64, clock: KernelClock) -> bool {
        self.clock == clock
            && match kind {
                // The client's latest request on the address ended at or
                // after this server span started.
                SpanKind::Server => self.end_ns >= start_ns,
                // The server's latest request on it started at or after
                // this client span started.
                SpanKind::Client => self.start_ns >= start_ns,
            }
    }
}

/// Where the ends are exchanged: the pinned map, or a fixture in tests.
pub trait Exchange: Send + std::fmt::Debug {
    /// Publishes `value` under `key` (best effort: a failed write only
    /// means the other probe falls back to the single-span rule).
    fn publish(&mut self, key: &EndKey, value: &EndValue);
    /// The entry under `key`, if any.
    fn lookup(&mut self, key: &EndKey) -> Option<EndValue>;
}

/// Map calls an [`ExchangeClient`] made since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExchangeCalls {
    pub writes: u64,
    pub reads: u64,
}

/// The pairer's side of the exchange: writes coalesced per key, reads
/// cached briefly (see the module docs, "Cost").
#[derive(Debug)]
pub struct ExchangeClient {
    exchange: Box<dyn Exchange>,
    /// The latest end per key not yet written.
    pending: StdHashMap<EndKey, EndValue, foldhash::fast::FixedState>,
    /// What the map held under a key when it was last read (`None`: no
    /// entry), all read at or after `cached_since`.
    cached: StdHashMap<EndKey, Option<EndValue>, foldhash::fast::FixedState>,
    cached_since: Option<Instant>,
    calls: ExchangeCalls,
}

impl ExchangeClient {
    /// How often the pipeline writes the held ends (its tick while the
    /// exchange is open, [`super::pairing::Pairer::tick_interval`]): how
    /// long a published end waits at most.
    pub const PUBLISH_EVERY: Duration = Duration::from_millis(100);
    /// How long a read answers for its key.
    pub const LOOKUP_TTL: Duration = Duration::from_millis(100);
    /// Ends waiting to be written at most (a connection per request at a
    /// high rate): past it they are written at once.
    pub const MAX_PENDING: usize = 4_096;
    /// Reads cached at most: past it the cache starts over.
    pub const MAX_CACHED: usize = 8_192;

    pub fn new(exchange: Box<dyn Exchange>) -> Self {
        Self {
            exchange,
            pending: StdHashMap::default(),
            cached: StdHashMap::default(),
            cached_since: None,
            calls: ExchangeCalls::default(),
        }
    }

    /// Publishes `value` under `key`: held until [`Self::write_pending`]
    /// (the pipeline's next tick), written at once if the buffer is full.
    pub fn publish(&mut self, key: EndKey, value: EndValue) {
        self.pending.insert(key, value);
        if self.pending.len() >= Self::MAX_PENDING {
            self.write_pending();
        }
    }

    /// Writes every held end now (a tick, or the record stream ended).
    pub fn write_pending(&mut self) {
        for (key, value) in self.pending.drain() {
            self.exchange.publish(&key, &value);
            self.calls.writes += 1;
        }
    }

    /// The entry under `key`: this probe's own end not yet written, else
    /// the map's, read at most [`Self::LOOKUP_TTL`] ago.
    pub fn lookup(&mut self, key: &EndKey, now: Instant) -> Option<EndValue> {
        if let Some(value) = self.pending.get(key) {
            return Some(*value);
        }
        let stale = self
            .cached_since
            .is_none_or(|since| now.saturating_duration_since(since) > Self::LOOKUP_TTL);
        if stale || self.cached.len() >= Self::MAX_CACHED {
            self.cached.clear();
            self.cached_since = Some(now);
        }
        if let Some(cached) = self.cached.get(key) {
            return *cached;
        }
        let value = self.exchange.lookup(key);
        self.calls.reads += 1;
        self.cached.insert(*key, value);
        value
    }

    pub fn calls(&self) -> ExchangeCalls {
        self.calls
    }

    /// Whether ends wait to be written.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }
}

/// Why the node-wide map could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error(
        "{dir:?} is not on a BPF filesystem; the service graph exchanges connection ends with the node's other probes in a map pinned there: mount the host's /sys/fs/bpf into the probe, or set propagation.pinDir to a directory on a bpffs"
    )]
    NoBpffs { dir: PathBuf },
    #[error("creating the pin directory {dir:?} failed: {source}")]
    Dir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "opening the service-graph exchange map {path:?} failed: {source}; if a probe of another version pinned it with another layout, remove the pin (every probe of the node recreates it)"
    )]
    Map { path: PathBuf, source: MapError },
    #[error(
        "finding or creating the service-graph exchange map {MAP_NAME:?} by its name failed: {source} (the probe lists and opens the node's BPF maps by ID, which takes CAP_SYS_ADMIN)"
    )]
    ByName { source: MapError },
}

/// The node-wide map: pinned at [`PIN`] in the pin directory
/// ([`PinnedExchange::open`]: opened if a probe pinned it already, else
/// created and pinned), or found by its kernel name
/// ([`PinnedExchange::open_by_name`]).
pub struct PinnedExchange {
    map: HashMap<MapData, EndKey, EndValue>,
    /// The map's kernel ID.
    id: u32,
    /// Writes that failed (they are rare and only degrade naming).
    pub failed_writes: u64,
}

impl std::fmt::Debug for PinnedExchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedExchange").finish_non_exhaustive()
    }
}

impl PinnedExchange {
    pub fn open(pin_dir: &Path) -> Result<Self, ExchangeError> {
        if crate::propagation::pin_dir_off_bpffs(pin_dir) {
            return Err(ExchangeError::NoBpffs {
                dir: pin_dir.to_owned(),
            });
        }
        std::fs::create_dir_all(pin_dir).map_err(|source| ExchangeError::Dir {
            dir: pin_dir.to_owned(),
            source,
        })?;
        let path = pin_dir.join(PIN);
        let map_err = |source| ExchangeError::Map {
            path: path.clone(),
            source,
        };
        let data = match MapData::from_pin(&path) {
            Ok(data) => data,
            Err(_) => {
                let data = MapData::create(definition(), MAP_NAME, None).map_err(map_err)?;
                match data.pin(&path) {
                    Ok(()) => data,
                    // The node's other probe pinned one in between: use
                    // that one, so both write to the same map.
                    Err(_) => MapData::from_pin(&path).map_err(map_err)?,
                }
            }
        };
        Self::from_data(data).map_err(map_err)
    }

    /// Opens the node's map without a bpffs: the loaded map named
    /// [`MAP_NAME`] with this layout and the lowest ID, else a new one (see
    /// the module docs, "Where the map is").
    pub fn open_by_name() -> Result<Self, ExchangeError> {
        let map_err = |source| ExchangeError::ByName { source };
        let data = match lowest_loaded() {
            Some(id) => MapData::from_id(id).map_err(map_err)?,
            None => {
                let created = MapData::create(definition(), MAP_NAME, None).map_err(map_err)?;
                let id = created.info().map_err(map_err)?.id();
                // Created at the same moment as another probe's: the one
                // created first wins, in both probes.
                match lowest_loaded() {
                    Some(lower) if lower < id => MapData::from_id(lower).map_err(map_err)?,
                    _ => created,
                }
            }
        };
        Self::from_data(data).map_err(map_err)
    }

    fn from_data(data: MapData) -> Result<Self, MapError> {
        let id = data.info()?.id();
        let map = Map::from_map_data(data).and_then(HashMap::try_from)?;
        Ok(Self {
            map,
            id,
            failed_writes: 0,
        })
    }

    /// The map's kernel ID.
    pub fn id(&self) -> u32 {
        self.id
    }
}

/// The map's definition: an LRU hash of [`MAX_ENTRIES`] ends.
pub fn definition() -> aya_obj::Map {
    aya_obj::Map::new_from_params(
        aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_LRU_HASH as u32,
        size_of::<EndKey>() as u32,
        size_of::<EndValue>() as u32,
        MAX_ENTRIES,
        0,
    )
}

/// The lowest ID of a loaded map named [`MAP_NAME`] with this layout.
/// Maps that vanish while listed, or that cannot be read, are skipped.
fn lowest_loaded() -> Option<u32> {
    aya::maps::loaded_maps()
        .filter_map(Result::ok)
        .filter(|info| {
            info.name_as_str() == Some(MAP_NAME)
                && matches!(info.map_type(), Ok(aya::maps::MapType::LruHash))
                && info.key_size() as usize == size_of::<EndKey>()
                && info.value_size() as usize == size_of::<EndValue>()
                && info.max_entries() == MAX_ENTRIES
        })
        .map(|info| info.id())
        .min()
}

impl Exchange for PinnedExchange {
    fn publish(&mut self, key: &EndKey, value: &EndValue) {
        if self.map.insert(key, value, 0).is_err() {
            self.failed_writes += 1;
        }
    }

    fn lookup(&mut self, key: &EndKey) -> Option<EndValue> {
        self.map.get(key, 0).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A map that counts its calls.
    #[derive(Debug, Default, Clone)]
    struct Counting(Arc<std::sync::Mutex<CountingState>>);

    #[derive(Debug, Default)]
    struct CountingState {
        entries: StdHashMap<EndKey, EndValue>,
        writes: u64,
        reads: u64,
    }

    impl Exchange for Counting {
        fn publish(&mut self, key: &EndKey, value: &EndValue) {
            let mut state = self.0.lock().unwrap();
            state.writes += 1;
            state.entries.insert(*key, *value);
        }

        fn lookup(&mut self, key: &EndKey) -> Option<EndValue> {
            let mut state = self.0.lock().unwrap();
            state.reads += 1;
            state.entries.get(key).copied()
        }
    }

    fn key(port: u16) -> EndKey {
        EndKey::new(SocketAddr::from(([10, 0, 0, 2], port)), SpanKind::Server)
    }

    fn value(start_ns: u64) -> EndValue {
        End::encode_parts(
            &GraphNode::new("catalog", None),
            start_ns,
            start_ns + 1,
            KernelClock::Monotonic,
        )
        .unwrap()
    }

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn one_connections_ends_are_written_once_per_tick_the_latest_one() {
        let map = Counting::default();
        let mut client = ExchangeClient::new(Box::new(map.clone()));
        for i in 0..1_000 {
            client.publish(key(40_000), value(i));
        }
        assert_eq!(map.0.lock().unwrap().writes, 0, "held until the tick");
        client.write_pending();
        let state = map.0.lock().unwrap();
        assert_eq!(state.writes, 1, "a thousand requests, one write");
        assert_eq!(state.entries[&key(40_000)], value(999), "the latest end");
    }

    #[test]
    fn every_connection_gets_its_write_and_a_full_buffer_writes_at_once() {
        let map = Counting::default();
        let mut client = ExchangeClient::new(Box::new(map.clone()));
        for port in 0..10 {
            client.publish(key(port), value(1));
        }
        client.write_pending();
        assert_eq!(map.0.lock().unwrap().writes, 10);
        assert!(!client.has_pending());
        for port in 0..ExchangeClient::MAX_PENDING as u16 {
            client.publish(key(port), value(2));
        }
        assert_eq!(
            map.0.lock().unwrap().writes,
            10 + ExchangeClient::MAX_PENDING as u64,
            "a full buffer is written without waiting"
        );
        assert_eq!(client.calls().writes, map.0.lock().unwrap().writes);
    }

    #[test]
    fn a_read_answers_for_its_key_until_it_is_older_than_its_ttl() {
        let map = Counting::default();
        let mut other_probe = map.clone();
        let mut client = ExchangeClient::new(Box::new(map.clone()));
        let t0 = Instant::now();
        for i in 0..100 {
            assert_eq!(client.lookup(&key(1), ms(t0, i)), None);
        }
        assert_eq!(
            map.0.lock().unwrap().reads,
            1,
            "an absent entry is cached too"
        );
        other_probe.publish(&key(1), &value(5));
        assert_eq!(client.lookup(&key(1), ms(t0, 100)), None, "still cached");
        assert_eq!(
            client.lookup(&key(1), ms(t0, 101)),
            Some(value(5)),
            "read again once older than the TTL"
        );
        assert_eq!(client.calls().reads, 2);
        client.publish(key(2), value(7));
        assert_eq!(
            client.lookup(&key(2), ms(t0, 101)),
            Some(value(7)),
            "its own end not yet written answers without a read"
        );
        assert_eq!(client.calls().reads, 2);
    }
}
