//! Decoding ring-buffer records of the socket-level program set.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use ferrotel_probe_ebpf::Wire;
use ferrotel_probe_ebpf::sockets::{SockCloseEvent, SockDataEvent, SockOpenEvent, direction, role};
use ferrotel_probe_ebpf::wire::{AF_INET, AF_INET6, EventHeader, ProcEvent, SockAddr, kind};

/// Which way bytes moved, seen from the traced process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// read, recv...: into the process.
    Ingress,
    /// write, send...: out of the process.
    Egress,
}

/// What the kernel said about how the socket came to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleHint {
    /// Accepted: the process is the server.
    Server,
    /// Connected: the process is the client.
    Client,
    /// Adopted on first use; decided from the first bytes.
    Unknown,
}

/// One decoded kernel event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelEvent<'a> {
    Open {
        pid: u32,
        tid: u32,
        ts_ns: u64,
        fd: i32,
        role: RoleHint,
        local: Option<SocketAddr>,
        peer: Option<SocketAddr>,
    },
    Data {
        pid: u32,
        tid: u32,
        enter_ns: u64,
        exit_ns: u64,
        fd: i32,
        direction: Direction,
        total_len: usize,
        payload: &'a [u8],
    },
    Close {
        pid: u32,
        tid: u32,
        ts_ns: u64,
        fd: i32,
    },
    ProcExec {
        pid: u32,
    },
    ProcFork {
        pid: u32,
        parent: u32,
    },
    ProcExit {
        pid: u32,
    },
}

/// Why a record could not be decoded (a build mismatch: never expected).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("ring buffer record of {len} bytes is too short for its kind {kind}")]
    Short { kind: u32, len: usize },
    #[error("ring buffer record has unknown kind {0}")]
    UnknownKind(u32),
}

/// Decodes one ring-buffer record.
pub fn decode(record: &[u8]) -> Result<KernelEvent<'_>, DecodeError> {
    let header = EventHeader::read(record).ok_or(DecodeError::Short {
        kind: 0,
        len: record.len(),
    })?;
    let short = || DecodeError::Short {
        kind: header.kind,
        len: record.len(),
    };
    Ok(match header.kind {
        kind::SOCK_DATA => {
            let event = SockDataEvent::read(record).ok_or_else(short)?;
            let start = size_of::<SockDataEvent>();
            let captured = event.captured_len as usize;
            let payload = record.get(start..start + captured).ok_or_else(short)?;
            KernelEvent::Data {
                pid: header.tgid,
                tid: header.tid,
                enter_ns: event.enter_ns,
                exit_ns: header.ts_ns,
                fd: event.fd,
                direction: if event.direction == direction::INGRESS {
                    Direction::Ingress
                } else {
                    Direction::Egress
                },
                total_len: event.total_len as usize,
                payload,
            }
        }
        kind::SOCK_OPEN => {
            let event = SockOpenEvent::read(record).ok_or_else(short)?;
            KernelEvent::Open {
                pid: header.tgid,
                tid: header.tid,
                ts_ns: header.ts_ns,
                fd: event.fd,
                role: match event.role {
                    role::SERVER => RoleHint::Server,
                    role::CLIENT => RoleHint::Client,
                    _ => RoleHint::Unknown,
                },
                local: socket_addr(&event.local),
                peer: socket_addr(&event.peer),
            }
        }
        kind::SOCK_CLOSE => {
            let event = SockCloseEvent::read(record).ok_or_else(short)?;
            KernelEvent::Close {
                pid: header.tgid,
                tid: header.tid,
                ts_ns: header.ts_ns,
                fd: event.fd,
            }
        }
        kind::PROC_EXEC | kind::PROC_FORK | kind::PROC_EXIT => {
            let event = ProcEvent::read(record).ok_or_else(short)?;
            match header.kind {
                kind::PROC_EXEC => KernelEvent::ProcExec { pid: header.tgid },
                kind::PROC_FORK => KernelEvent::ProcFork {
                    pid: header.tgid,
                    parent: event.parent_tgid,
                },
                _ => KernelEvent::ProcExit { pid: header.tgid },
            }
        }
        other => return Err(DecodeError::UnknownKind(other)),
    })
}

/// An internet socket address (IPv4-mapped addresses become IPv4).
pub fn socket_addr(addr: &SockAddr) -> Option<SocketAddr> {
    match addr.family {
        AF_INET | AF_INET6 => {
            let v6 = Ipv6Addr::from(addr.addr);
            let ip = match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            };
            Some(SocketAddr::new(ip, addr.port))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of<T: Wire>(value: &T) -> Vec<u8> {
        value.as_bytes().to_vec()
    }

    #[test]
    fn a_data_record_decodes_with_exactly_its_captured_payload() {
        let event = SockDataEvent {
            header: EventHeader {
                kind: kind::SOCK_DATA,
                tgid: 10,
                tid: 11,
                cpu: 0,
                ts_ns: 500,
            },
            enter_ns: 400,
            fd: 7,
            direction: direction::EGRESS,
            total_len: 9000,
            captured_len: 5,
        };
        let mut record = bytes_of(&event);
        record.extend_from_slice(b"HTTP/");
        match decode(&record).expect("decodes") {
            KernelEvent::Data {
                pid,
                tid,
                enter_ns,
                exit_ns,
                fd,
                direction,
                total_len,
                payload,
            } => {
                assert_eq!((pid, tid, enter_ns, exit_ns, fd), (10, 11, 400, 500, 7));
                assert_eq!(direction, Direction::Egress);
                assert_eq!(
                    total_len, 9000,
                    "total length is what the syscall moved, not what was copied"
                );
                assert_eq!(payload, b"HTTP/");
            }
            other => panic!("expected data, got {other:?}"),
        }
        record.truncate(record.len() - 1);
        assert!(
            matches!(decode(&record), Err(DecodeError::Short { .. })),
            "a payload shorter than captured_len is refused"
        );
    }

    #[test]
    fn an_open_record_turns_v4_mapped_addresses_into_ipv4() {
        let mut local = SockAddr {
            family: AF_INET,
            port: 8080,
            ..SockAddr::default()
        };
        local.addr[10] = 0xff;
        local.addr[11] = 0xff;
        local.addr[12..].copy_from_slice(&[127, 0, 0, 1]);
        let peer = SockAddr {
            family: AF_INET6,
            port: 5555,
            addr: Ipv6Addr::LOCALHOST.octets(),
        };
        let event = SockOpenEvent {
            header: EventHeader {
                kind: kind::SOCK_OPEN,
                tgid: 1,
                tid: 1,
                cpu: 0,
                ts_ns: 1,
            },
            fd: 3,
            role: role::SERVER,
            local,
            peer,
        };
        match decode(&bytes_of(&event)).expect("decodes") {
            KernelEvent::Open {
                role, local, peer, ..
            } => {
                assert_eq!(role, RoleHint::Server);
                assert_eq!(local, Some("127.0.0.1:8080".parse().unwrap()));
                assert_eq!(peer, Some("[::1]:5555".parse().unwrap()));
            }
            other => panic!("expected open, got {other:?}"),
        }
    }

    #[test]
    fn unknown_kinds_are_reported_not_misread() {
        let header = EventHeader {
            kind: 99,
            ..EventHeader::default()
        };
        assert_eq!(
            decode(&bytes_of(&header)),
            Err(DecodeError::UnknownKind(99))
        );
        assert!(matches!(decode(&[0u8; 3]), Err(DecodeError::Short { .. })));
    }
}
