//! The two facts the probe takes from a TLS handshake it sees as
//! ciphertext: the server name the client asked for (SNI, in the
//! ClientHello) and the protocol version the server chose (the ServerHello,
//! with its `supported_versions` extension for TLS 1.3). Both hellos travel
//! in clear in every TLS version the probe knows, so this works whatever
//! library the process uses, and does not read OpenSSL's memory.
//!
//! The kernel reports the first data events of each direction of a TLS
//! connection (`sockets/tls.h`); [`HelloReader`] joins them and parses
//! what it can. A truncated or malformed hello yields nothing, never an
//! error: these are attributes, not the request.

use std::borrow::Cow;

use crate::record::TlsInfo;

/// TLS record content type of handshake messages.
const HANDSHAKE: u8 = 22;
/// Handshake message types.
const CLIENT_HELLO: u8 = 1;
const SERVER_HELLO: u8 = 2;
/// Extension types.
const SERVER_NAME: u16 = 0;
const SUPPORTED_VERSIONS: u16 = 43;
/// The most bytes kept per direction: a ClientHello with many extensions
/// fits in two kernel events of `maxPayloadBytes` at most.
const MAX_BYTES: usize = 8192;

/// Is `head` the start of a TLS record? Content type 20..=23, version 3.x
/// with x <= 4. Mirrors `ft_tls_is_record` in the kernel.
pub fn is_record(head: &[u8]) -> bool {
    matches!(head, [20..=23, 3, 0..=4, ..])
}

/// Handshake bytes of one direction of a connection, as the kernel
/// reported them.
#[derive(Clone, Debug, Default)]
struct Direction {
    bytes: Vec<u8>,
    /// A gap (an event whose payload was cut short): later bytes would not
    /// follow on.
    broken: bool,
    done: bool,
}

impl Direction {
    fn push(&mut self, payload: &[u8], total_len: usize) -> bool {
        if self.broken || self.done {
            return false;
        }
        let room = MAX_BYTES.saturating_sub(self.bytes.len());
        self.bytes
            .extend_from_slice(&payload[..payload.len().min(room)]);
        if payload.len() < total_len || payload.len() > room {
            self.broken = true;
        }
        true
    }
}

/// Collects the two hellos of one connection and keeps what they said.
#[derive(Clone, Debug, Default)]
pub struct HelloReader {
    client: Direction,
    server: Direction,
    info: TlsInfo,
}

impl HelloReader {
    /// Ciphertext the client sent (`from_client`) or the server sent.
    pub fn feed(&mut self, from_client: bool, payload: &[u8], total_len: usize) {
        let direction = if from_client {
            &mut self.client
        } else {
            &mut self.server
        };
        if !direction.push(payload, total_len) {
            return;
        }
        let Some((kind, body)) = first_handshake_message(&direction.bytes, direction.broken) else {
            return;
        };
        match (from_client, kind) {
            (true, CLIENT_HELLO) => {
                direction.done = true;
                if let Some(name) = client_hello_server_name(&body) {
                    self.info.server_name = Some(name.into());
                }
            }
            (false, SERVER_HELLO) => {
                direction.done = true;
                if let Some(version) = server_hello_version(&body) {
                    self.info.set_version(version);
                }
            }
            // Anything else first: not a handshake we understand.
            _ => direction.done = true,
        }
    }

    /// What the hellos said so far.
    pub fn info(&self) -> &TlsInfo {
        &self.info
    }
}

/// The first handshake message of a byte stream of TLS records: its type
/// and body, once the records hold all of it (a message may span records;
/// the common case, one record holding it all, borrows). A `cut` stream
/// (the capture ended early) gives the part of the body it holds: the
/// fields before the cut are still right.
fn first_handshake_message(stream: &[u8], cut: bool) -> Option<(u8, Cow<'_, [u8]>)> {
    let record = Record::parse(stream)?;
    if record.content_type != HANDSHAKE {
        return None;
    }
    let (kind, len) = message_header(record.fragment)?;
    if let Some(body) = record.fragment.get(4..4 + len) {
        return Some((kind, Cow::Borrowed(body)));
    }
    if cut {
        return Some((kind, Cow::Borrowed(record.fragment.get(4..)?)));
    }
    let mut joined = Vec::new();
    let mut rest = stream;
    while joined.len() < 4 + len {
        let record = Record::parse(rest)?;
        if record.content_type != HANDSHAKE {
            return None;
        }
        joined.extend_from_slice(record.fragment);
        rest = rest.get(5 + record.fragment.len()..)?;
    }
    joined.truncate(4 + len);
    joined.drain(..4);
    Some((kind, Cow::Owned(joined)))
}

/// A TLS record: `type(1) version(2) length(2) fragment`.
struct Record<'a> {
    content_type: u8,
    fragment: &'a [u8],
}

impl<'a> Record<'a> {
    fn parse(bytes: &'a [u8]) -> Option<Self> {
        if !is_record(bytes) {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([*bytes.get(3)?, *bytes.get(4)?]));
        // A fragment cut short by the capture is still worth reading.
        let end = (5 + len).min(bytes.len());
        Some(Record {
            content_type: bytes[0],
            fragment: &bytes[5..end],
        })
    }
}

/// `type(1) length(3)` of a handshake message.
fn message_header(fragment: &[u8]) -> Option<(u8, usize)> {
    let header = fragment.get(..4)?;
    let len = usize::from(header[1]) << 16 | usize::from(header[2]) << 8 | usize::from(header[3]);
    Some((header[0], len))
}

/// A cursor over big-endian handshake fields.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a `width`-byte length prefix.
    fn vector(&mut self, width: usize) -> Option<&'a [u8]> {
        let len = match width {
            1 => usize::from(self.u8()?),
            _ => usize::from(self.u16()?),
        };
        self.take(len)
    }

    /// `(type, data)` of each extension, as far as the bytes go (a
    /// truncated list yields the complete extensions before the cut).
    fn extensions(mut self) -> impl Iterator<Item = (u16, &'a [u8])> {
        // The list's own length prefix; a cut list has fewer bytes.
        let declared = self.u16().map(usize::from).unwrap_or(0);
        let mut list = Cursor(&self.0[..declared.min(self.0.len())]);
        std::iter::from_fn(move || {
            let kind = list.u16()?;
            let data = list.vector(2)?;
            Some((kind, data))
        })
    }
}

/// The host name of a ClientHello's `server_name` extension.
fn client_hello_server_name(body: &[u8]) -> Option<String> {
    let mut c = Cursor(body);
    c.take(2 + 32)?; // legacy_version, random
    c.vector(1)?; // session id
    c.vector(2)?; // cipher suites
    c.vector(1)?; // compression methods
    let data = c
        .extensions()
        .find(|(kind, _)| *kind == SERVER_NAME)
        .map(|(_, data)| data)?;
    let mut list = Cursor(Cursor(data).vector(2)?);
    while let Some(name_type) = list.u8() {
        let name = list.vector(2)?;
        if name_type == 0 {
            // RFC 6066: ASCII, no trailing dot; anything else is not a name.
            let text = std::str::from_utf8(name).ok()?;
            let valid = !text.is_empty()
                && text.len() <= 253
                && text
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
            return valid.then(|| text.to_ascii_lowercase());
        }
    }
    None
}

/// The version a ServerHello chose: `supported_versions` if present (TLS
/// 1.3 keeps 1.2 in the legacy field), else the legacy field.
fn server_hello_version(body: &[u8]) -> Option<u16> {
    let mut c = Cursor(body);
    let legacy = c.u16()?;
    c.take(32)?; // random
    c.vector(1)?; // session id
    c.take(2 + 1)?; // cipher suite, compression method
    let chosen = c
        .extensions()
        .find(|(kind, _)| *kind == SUPPORTED_VERSIONS)
        .and_then(|(_, data)| Cursor(data).u16());
    Some(chosen.unwrap_or(legacy))
}

/// Hellos for tests elsewhere in the crate.
#[cfg(test)]
pub(crate) mod fixtures {
    /// Hellos OpenSSL 3.0 wrote (Python's ssl over memory BIOs), client
    /// asking for `Shop.Example`.
    pub const CLIENT_HELLO_13: &str = concat!(
        "1603010200010001fc03030e1e246ac539bd1eb832736899d223c9f75a61876edcd88d4cbb81bdcf52a0fc20",
        "49c851ddd74e8b4cdd0c241bd311e72a4b9fd267756074985f1bb499ca50e5430024130213031301c02cc030",
        "c02bc02fcca9cca8c024c028c023c027009f009e006b006700ff0100018f00000011000f00000c53686f702e",
        "4578616d706c65000b000403000102000a00160014001d0017001e0019001801000101010201030104002300",
        "000016000000170000000d002a0028040305030603080708080809080a080b08040805080604010501060103",
        "0303010302040205020602002b00050403040303002d00020101003300260024001d0020c4864495f291bd11",
        "bd62315a256530cf1f91c35c15d728680e973e2816a77516001500e100000000000000000000000000000000",
        "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        "000000000000000000000000000000000000000000000000000000000000000000",
    );
    pub const SERVER_HELLO_13: &str = "160303007a020000760303fa80b6f0ef70b55d6925e9a12ceada7cf05ea2be36d6c8b02d6cce5ae7304b9b2049c851ddd74e8b4cdd0c241bd311e72a4b9fd267756074985f1bb499ca50e543130200002e002b0002030400330024001d0020c92ea0ef75ea7bdc2c3db50cdbb17a8b9cf6299fbfa99c2de7055acf1d101376";
    pub const SERVER_HELLO_12: &str = "16030300410200003d0303cdc1ef1275b8baf3b60f2cc64655aa100f51e4b79a9f0763444f574e4752440100c02c000015ff01000100000b0004030001020023000000170000";
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    fn bytes(hex_text: &str) -> Vec<u8> {
        hex::decode(hex_text).expect("fixture is hex")
    }

    fn info(version: &str, sni: &str) -> TlsInfo {
        TlsInfo {
            protocol_name: Some("tls".into()),
            protocol_version: Some(version.into()),
            server_name: Some(sni.into()),
        }
    }

    #[test]
    fn sni_and_the_negotiated_version_come_from_the_two_hellos() {
        let mut reader = HelloReader::default();
        let client = bytes(CLIENT_HELLO_13);
        reader.feed(true, &client, client.len());
        let server = bytes(SERVER_HELLO_13);
        reader.feed(false, &server, server.len());
        assert_eq!(
            reader.info(),
            &info("1.3", "shop.example"),
            "TLS 1.3 is read from supported_versions, not the legacy 1.2 field"
        );

        let mut reader = HelloReader::default();
        let server = bytes(SERVER_HELLO_12);
        reader.feed(false, &server, server.len());
        assert_eq!(reader.info().protocol_version.as_deref(), Some("1.2"));
    }

    #[test]
    fn a_hello_read_as_record_header_then_body_is_joined() {
        // OpenSSL reads a record's 5-byte header, then its body: two events.
        let client = bytes(CLIENT_HELLO_13);
        let mut reader = HelloReader::default();
        reader.feed(true, &client[..5], 5);
        assert_eq!(reader.info().server_name, None, "only a header so far");
        reader.feed(true, &client[5..], client.len() - 5);
        assert_eq!(reader.info().server_name.as_deref(), Some("shop.example"));
    }

    #[test]
    fn a_handshake_message_spread_over_two_records_is_joined() {
        let client = bytes(CLIENT_HELLO_13);
        let fragment = &client[5..];
        let (first, second) = fragment.split_at(60);
        let mut stream = Vec::new();
        for part in [first, second] {
            stream.extend_from_slice(&[22, 3, 1]);
            stream.extend_from_slice(&(part.len() as u16).to_be_bytes());
            stream.extend_from_slice(part);
        }
        let mut reader = HelloReader::default();
        reader.feed(true, &stream, stream.len());
        assert_eq!(reader.info().server_name.as_deref(), Some("shop.example"));
    }

    #[test]
    fn a_capture_cut_short_yields_what_it_holds_and_nothing_false() {
        let client = bytes(CLIENT_HELLO_13);
        // The SNI extension ends at byte 135 of this hello.
        let mut reader = HelloReader::default();
        reader.feed(true, &client[..140], client.len());
        assert_eq!(
            reader.info().server_name.as_deref(),
            Some("shop.example"),
            "the extensions before the cut are read"
        );
        let mut reader = HelloReader::default();
        reader.feed(true, &client[..64], client.len());
        assert_eq!(reader.info(), &TlsInfo::default(), "nothing before SNI");
        reader.feed(true, &client[64..], client.len() - 64);
        assert_eq!(
            reader.info(),
            &TlsInfo::default(),
            "after a cut, later bytes do not follow on"
        );
    }

    #[test]
    fn records_are_told_from_http_by_their_first_bytes() {
        assert!(is_record(&bytes(CLIENT_HELLO_13)));
        assert!(is_record(&[23, 3, 3, 0, 10]), "application data");
        assert!(!is_record(b"GET / HTTP/1.1\r\n"));
        assert!(!is_record(b"HTTP/1.1 200 OK\r\n"));
        assert!(!is_record(&[22, 3]), "too short to tell");
        assert!(!is_record(&[22, 2, 0]), "SSL 2 framing is not a record");
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_in_either_direction_never_panic(
            client in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            server in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            cut in 0usize..600,
        ) {
            let mut reader = HelloReader::default();
            // Valid headers in front, so the parsers get past the framing.
            let mut framed = vec![22, 3, 1, 2, 0, 1, 0, 1, 0xfc];
            framed.extend_from_slice(&client);
            reader.feed(true, &framed, framed.len() + cut);
            reader.feed(false, &server, server.len());
            let _ = reader.info();
        }
    }
}
