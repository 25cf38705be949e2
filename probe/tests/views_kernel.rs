//! The pod network and TCP health program sets in the real kernel, against
//! ground truth made on the spot: a cgroup of our own (under the cgroup2
//! mount), two network namespaces joined by a veth pair, optionally with a
//! lossy qdisc on it, and real Python sockets sending known byte counts and
//! reporting their own `TCP_INFO`. Needs root; fails (does not skip) without
//! it. Everything created is named `ftviews-<pid>-…` and removed on drop.
//!
//! Loss: this platform's kernel has no `tc netem` (`CONFIG_NET_SCH_NETEM`
//! is not set, nor the gact action a BPF dropper would need), so the link
//! gets a token-bucket filter whose queue is shorter than TCP's bursts:
//! real tail drops on the link, which the sender must retransmit (its own
//! `tcpi_total_retrans` is the ground truth).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ferrotel_probe::views::podnet::PodNet;
use ferrotel_probe::views::resources::cgroup::Hierarchies;
use ferrotel_probe::views::tcp::{TcpProbe, peer_ip};
use ferrotel_probe_ebpf::views::{TcpStats, tcp_role};

fn require_root() {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?");
    assert_eq!(
        euid, "0",
        "these tests load eBPF programs, create cgroups and network namespaces: run them as root (make test does)"
    );
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn next() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::SeqCst)
}

fn unique() -> String {
    format!("{}-{}", std::process::id(), next())
}

/// A cgroup of our own under the cgroup2 mount.
struct TestCgroup {
    dir: PathBuf,
}

impl TestCgroup {
    fn create() -> TestCgroup {
        let hierarchies = Hierarchies::read().expect("read mountinfo");
        let root = hierarchies
            .v2
            .first()
            .expect("a cgroup2 mount (this kernel has one at /sys/fs/cgroup/unified)")
            .clone();
        let dir = root.join(format!("ftviews-{}", unique()));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        TestCgroup { dir }
    }

    /// The cgroup v2 id sockets created in it carry.
    fn id(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&self.dir).expect("stat cgroup").ino()
    }

    fn root(&self) -> &Path {
        self.dir.parent().expect("under the mount")
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Members are gone once their process exited; rmdir may race the exit.
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::remove_dir(&self.dir).is_err() && Instant::now() < deadline {
            std::thread::yield_now();
        }
    }
}

/// Two network namespaces joined by a veth pair: `a` = 10.254.N.1,
/// `b` = 10.254.N.2.
struct Link {
    a: String,
    b: String,
    veth_a: String,
    n: u8,
}

impl Link {
    /// A link whose `a` side egress uses `qdisc` (`tc qdisc add … root <qdisc>`).
    fn create(qdisc: Option<&str>) -> Link {
        let k = next();
        let id = format!("{}-{k}", std::process::id());
        // A /24 of 10.254/16 per link: unlikely to meet anything else here,
        // and only routed inside the two namespaces anyway.
        let n = ((std::process::id() * 7 + k) % 200) as u8 + 20;
        let tag = format!("{}{k}", std::process::id() % 100_000);
        let link = Link {
            a: format!("ftviews-{id}-a"),
            b: format!("ftviews-{id}-b"),
            veth_a: format!("ftva{tag}"),
            n,
        };
        let veth_b = format!("ftvb{tag}");
        for ns in [&link.a, &link.b] {
            run(Command::new("ip").args(["netns", "add", ns]));
        }
        run(Command::new("ip").args([
            "link",
            "add",
            &link.veth_a,
            "netns",
            &link.a,
            "type",
            "veth",
            "peer",
            "name",
            &veth_b,
            "netns",
            &link.b,
        ]));
        for (ns, dev, host) in [(&link.a, &link.veth_a, 1), (&link.b, &veth_b, 2)] {
            let exec = |args: &[&str]| {
                run(Command::new("ip").args(["netns", "exec", ns]).args(args));
            };
            exec(&["ip", "link", "set", "lo", "up"]);
            exec(&[
                "ip",
                "addr",
                "add",
                &format!("10.254.{n}.{host}/24"),
                "dev",
                dev,
            ]);
            exec(&["ip", "link", "set", dev, "up"]);
        }
        if let Some(qdisc) = qdisc {
            let mut args = vec!["netns", "exec", &link.a, "tc", "qdisc", "add", "dev"];
            args.extend([link.veth_a.as_str(), "root"]);
            args.extend(qdisc.split_whitespace());
            run(Command::new("ip").args(&args));
        }
        link
    }

    fn addr_b(&self) -> String {
        format!("10.254.{}.2", self.n)
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // Deleting a namespace deletes its veth end, and with it the peer.
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// A Python one-liner in netns `ns`, moved into `cgroup` (if any) before it
/// execs, so every socket it opens belongs to that cgroup.
fn python_in(ns: &str, cgroup: Option<&TestCgroup>, script: &str) -> Command {
    let mut cmd = Command::new("sh");
    let join = cgroup
        .map(|c| format!("echo $$ > '{}/cgroup.procs' && ", c.dir.display()))
        .unwrap_or_default();
    cmd.arg("-c")
        .arg(format!(
            "{join}ns=$0; script=$1; shift; exec ip netns exec \"$ns\" python3 -c \"$script\" \"$@\""
        ))
        .arg(ns)
        .arg(script);
    cmd
}

/// Receives until EOF on `addr:port`, prints the byte count, exits.
const SINK: &str = r#"
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen()
print("READY", flush=True)
c, _ = s.accept()
n = 0
while True:
    d = c.recv(1 << 16)
    if not d:
        break
    n += len(d)
c.close()
print(n, flush=True)
"#;

/// Sends N bytes to `addr:port`, half-closes, waits for the peer's close,
/// then prints its own view from `TCP_INFO`: `tcpi_rtt` (µs) and
/// `tcpi_total_retrans`.
const SEND: &str = r#"
import socket, struct, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])))
c.sendall(b"x" * int(sys.argv[3]))
c.shutdown(socket.SHUT_WR)
while c.recv(1 << 16):
    pass
info = c.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
print(struct.unpack_from("I", info, 68)[0], struct.unpack_from("I", info, 100)[0], flush=True)
c.close()
"#;

/// Starts the sink in netns `b` and waits for its READY line.
fn start_sink(link: &Link, port: u16) -> std::process::Child {
    use std::io::BufRead;
    let mut sink = python_in(&link.b, None, SINK)
        .args([link.addr_b(), port.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the sink");
    let mut line = String::new();
    std::io::BufReader::new(sink.stdout.as_mut().expect("stdout"))
        .read_line(&mut line)
        .expect("sink READY");
    assert_eq!(line.trim(), "READY", "sink said {line:?}");
    sink
}

/// Polls `read` until it satisfies `done` (the kernel updates maps
/// synchronously, but a close may still be in flight when a process exits).
fn wait_until<T: std::fmt::Debug>(
    what: &str,
    mut read: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let value = read();
        if done(&value) {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: last reading {value:?}");
        std::thread::yield_now();
    }
}

fn client_stats(tcp: &TcpProbe, cgroup: u64, peer: &str) -> TcpStats {
    let peer: std::net::IpAddr = peer.parse().unwrap();
    tcp.read()
        .into_iter()
        .filter(|(k, _)| k.cgroup_id == cgroup && k.role == tcp_role::CLIENT && peer_ip(k) == peer)
        .map(|(_, s)| s)
        .next()
        .unwrap_or_default()
}

#[test]
fn socket_bytes_of_a_cgroup_match_what_it_sent_and_received_within_five_percent() {
    require_root();
    let cgroup = TestCgroup::create();
    let link = Link::create(None);
    let mut podnet = PodNet::start(cgroup.root()).unwrap_or_else(|e| panic!("{e:#}"));
    let refused = podnet.watch(&BTreeSet::from([cgroup.id()]));
    assert_eq!(refused, 0);
    let port = 7000 + (std::process::id() % 1000) as u16;
    let sink = start_sink(&link, port);
    let sent: u64 = 8 << 20;
    run(python_in(&link.a, Some(&cgroup), SEND).args([
        link.addr_b(),
        port.to_string(),
        sent.to_string(),
    ]));
    let received: u64 = String::from_utf8_lossy(&sink.wait_with_output().expect("sink").stdout)
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .expect("the sink printed its byte count");
    assert_eq!(received, sent, "the sink got every byte");
    let counters = podnet.read(cgroup.id()).expect("the cgroup is watched");
    let ratio = counters.tx_bytes as f64 / sent as f64;
    assert!(
        (1.0..1.05).contains(&ratio),
        "tx bytes {} for {sent} sent (ratio {ratio:.4}): IP packets carry the payload plus headers, within 5 %",
        counters.tx_bytes
    );
    assert!(
        counters.rx_packets > 0 && counters.rx_bytes < sent / 20,
        "ACKs came back, few bytes: {counters:?}"
    );
    assert!(
        counters.tx_packets >= sent / 65536,
        "at least one packet per 64 KiB GSO segment: {counters:?}"
    );
    // Traffic of other cgroups is not counted.
    let before = podnet.read(cgroup.id()).unwrap();
    let sink = start_sink(&link, port + 1);
    run(python_in(&link.a, None, SEND).args([
        link.addr_b(),
        (port + 1).to_string(),
        "100000".to_string(),
    ]));
    sink.wait_with_output().expect("sink");
    assert_eq!(
        podnet.read(cgroup.id()).unwrap(),
        before,
        "a process outside the cgroup"
    );
}

#[test]
fn a_lossy_link_shows_retransmits_and_the_rtt_and_refused_connects_count_exactly() {
    require_root();
    let cgroup = TestCgroup::create();
    // 20 Mbit/s with a 30 kB queue: TCP's bursts overflow it.
    let link = Link::create(Some("tbf rate 20mbit burst 20kb limit 30kb"));
    let mut tcp = TcpProbe::start().unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(tcp.watch(&BTreeSet::from([cgroup.id()])), 0);
    let port = 8000 + (std::process::id() % 1000) as u16;
    let sink = start_sink(&link, port);
    let out = run(python_in(&link.a, Some(&cgroup), SEND).args([
        link.addr_b(),
        port.to_string(),
        (2u64 << 20).to_string(),
    ]));
    sink.wait_with_output().expect("sink");
    let said = String::from_utf8_lossy(&out.stdout);
    let mut fields = said
        .split_whitespace()
        .map(|f| f.parse::<u64>().expect("a number"));
    let (client_rtt_us, client_retransmitted) = (
        fields.next().expect("tcpi_rtt"),
        fields.next().expect("tcpi_total_retrans"),
    );
    assert!(
        client_retransmitted > 0,
        "the link must drop: the sender retransmitted nothing"
    );
    let stats = wait_until(
        "the connection's RTT sample at close",
        || client_stats(&tcp, cgroup.id(), &link.addr_b()),
        |s| s.rtt_count >= 1,
    );
    assert!(
        stats.retransmits > 0 && stats.retransmits <= client_retransmitted,
        "retransmits seen {} for {client_retransmitted} segments the sender retransmitted (one event per retransmitted skb, which may hold several segments)",
        stats.retransmits
    );
    assert_eq!(stats.rtt_count, 1, "one connection closed: {stats:?}");
    assert_eq!(
        stats.rtt_sum_us, client_rtt_us,
        "the RTT at close is the socket's smoothed RTT (what TCP_INFO said after the peer's FIN)"
    );
    assert_eq!(
        stats.rtt_buckets.iter().sum::<u64>(),
        1,
        "one bucket per sample"
    );

    // Connects to a port nobody listens on are refused (RST): each is one
    // failed connection, and nothing else is.
    let refused_port = port + 500;
    let attempts = 3;
    let connect = format!(
        "import socket, sys\nfor _ in range({attempts}):\n    try:\n        socket.create_connection((sys.argv[1], {refused_port}), timeout=5)\n    except ConnectionRefusedError:\n        pass\n    else:\n        sys.exit('connected?')\n"
    );
    run(python_in(&link.a, Some(&cgroup), &connect).arg(link.addr_b()));
    let stats = wait_until(
        "three failed connects",
        || client_stats(&tcp, cgroup.id(), &link.addr_b()),
        |s| s.failed_connects >= attempts,
    );
    assert_eq!(stats.failed_connects, attempts, "{stats:?}");
    assert!(
        stats.resets_received >= attempts,
        "each refusal is a received reset: {stats:?}"
    );
    std::io::stdout().flush().ok();
}
