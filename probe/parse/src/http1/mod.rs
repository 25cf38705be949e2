//! Incremental HTTP/1.x message framing over one direction of a traced
//! connection, as the kernel shows it: a sequence of syscall segments, each
//! the captured *prefix* of what the syscall moved (the rest is a gap of
//! known length).
//!
//! The parser finds message heads (with `httparse`), follows bodies by
//! `Content-Length` or chunked encoding, and reports where each message
//! starts and ends. It copes with heads split across reads, pipelined
//! messages in one read, `HEAD` requests and bodiless statuses (via
//! [`MessageParser::expect_response_to`]), interim `1xx` responses and
//! gaps inside bodies. Anything that does not start like HTTP/1.x turns the
//! stream off ([`Parsed::NotHttp`]) so non-HTTP traffic costs nothing more.
//!
//! When framing is lost (a head longer than the capture, a gap inside a
//! chunk-size line) the message becomes *open-ended*: the connection layer
//! ends it with [`MessageParser::finish`] when the other direction starts
//! the next message or the connection closes.

use std::collections::VecDeque;

use crate::record::Text;

/// Longest head we accumulate before treating it as truncated.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Headers parsed per head; more are ignored (framing headers come early in practice).
const MAX_HEADERS: usize = 64;
/// Longest method token we accept as HTTP (`PROPPATCH`, `MKCALENDAR`...).
const MAX_METHOD_LEN: usize = 16;

/// Which kind of message a direction carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Request,
    Response,
}

/// Where a segment came from: the syscall's times and thread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegmentMeta {
    /// Syscall entry (kernel monotonic ns).
    pub enter_ns: u64,
    /// Syscall exit (kernel monotonic ns).
    pub exit_ns: u64,
    pub tid: u32,
}

/// A parsed request head: only what spans and framing need.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestHead {
    pub method: Text,
    /// The request target as sent (origin form `/a?b`, or absolute form).
    pub target: Text,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    pub host: Option<Text>,
    pub user_agent: Option<Text>,
    pub traceparent: Option<Text>,
    pub content_length: Option<u64>,
    /// The head did not fit the capture or the head limit; only the request
    /// line is known.
    pub truncated: bool,
}

/// A parsed response head.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub version: u8,
    pub content_length: Option<u64>,
    pub truncated: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Head {
    Request(RequestHead),
    Response(ResponseHead),
}

/// What the parser found in a segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A message head was parsed; `first` is the segment its first byte was in.
    Head { head: Head, first: SegmentMeta },
    /// The message whose head was reported last is complete; `last` is the
    /// segment holding its final byte. `body_bytes` counts body bytes seen
    /// (including uncaptured ones).
    Complete { body_bytes: u64, last: SegmentMeta },
    /// The stream is not HTTP/1.x (or lost sync for good); it is ignored from now on.
    NotHttp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkState {
    /// Reading the `<hex>[;ext]\r\n` line (bytes in `line`).
    Size,
    /// Inside chunk data; `u64` bytes left.
    Data(u64),
    /// The CRLF after chunk data; bytes left of it.
    DataEnd(u8),
    /// Trailer section after the last chunk, up to an empty line.
    Trailer,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    /// Between messages.
    Idle,
    /// Accumulating a head.
    Head {
        buf: Vec<u8>,
        first: SegmentMeta,
    },
    /// A body of known length; bytes left.
    Length(u64),
    Chunked {
        state: ChunkState,
        line: Vec<u8>,
    },
    /// Framing unknown: runs until [`MessageParser::finish`].
    Open,
    /// Gave up on this stream.
    Off,
}

/// Framing of one direction of one connection.
#[derive(Debug)]
pub struct MessageParser {
    side: Side,
    state: State,
    /// For a response side: whether each outstanding request forbids a
    /// response body (`HEAD`), oldest first.
    expected: VecDeque<bool>,
    body_bytes: u64,
    last: SegmentMeta,
}

impl MessageParser {
    pub fn new(side: Side) -> Self {
        Self {
            side,
            state: State::Idle,
            expected: VecDeque::new(),
            body_bytes: 0,
            last: SegmentMeta::default(),
        }
    }

    pub fn side(&self) -> Side {
        self.side
    }

    /// Bytes this parser holds (a head being accumulated, a chunk-size or
    /// trailer line); everything else about a message is a few counters.
    pub fn buffered(&self) -> usize {
        match &self.state {
            State::Head { buf, .. } => buf.capacity(),
            State::Chunked { line, .. } => line.capacity(),
            _ => 0,
        }
    }

    /// The stream was found not to be HTTP.
    pub fn is_off(&self) -> bool {
        self.state == State::Off
    }

    /// A message has started and not completed.
    pub fn in_message(&self) -> bool {
        !matches!(self.state, State::Idle | State::Off)
    }

    /// A message is open-ended: its end is decided by [`finish`](Self::finish).
    pub fn is_open_ended(&self) -> bool {
        self.state == State::Open
    }

    /// Response side: a request was sent whose response is expected next;
    /// `head_method` forbids a body.
    pub fn expect_response_to(&mut self, head_method: bool) {
        self.expected.push_back(head_method);
    }

    /// Ends an open-ended (or interrupted) message: the connection closed or
    /// the other direction moved on. Returns its completion, if a message
    /// was in progress.
    pub fn finish(&mut self) -> Option<Parsed> {
        match self.state {
            State::Idle | State::Off => None,
            State::Head { .. } => {
                self.state = State::Idle;
                None
            }
            _ => {
                self.state = State::Idle;
                Some(Parsed::Complete {
                    body_bytes: std::mem::take(&mut self.body_bytes),
                    last: self.last,
                })
            }
        }
    }

    /// Feeds one segment: `captured` is the prefix of the `total_len` bytes
    /// the syscall moved.
    pub fn feed(
        &mut self,
        captured: &[u8],
        total_len: usize,
        meta: SegmentMeta,
        out: &mut Vec<Parsed>,
    ) {
        let captured = &captured[..captured.len().min(total_len)];
        let mut pos = 0;
        let mut gap = (total_len - captured.len()) as u64;
        loop {
            if self.state == State::Off {
                return;
            }
            if pos >= captured.len() {
                if gap == 0 {
                    return;
                }
                // Uncaptured bytes: only countable inside a body of known size.
                gap = self.skip(gap, meta, out);
                if gap == 0 {
                    return;
                }
                continue;
            }
            let rest = &captured[pos..];
            let last_captured = gap == 0;
            pos += match std::mem::replace(&mut self.state, State::Idle) {
                State::Idle => {
                    if !self.looks_like_start(rest) {
                        self.state = State::Off;
                        out.push(Parsed::NotHttp);
                        return;
                    }
                    self.state = State::Head {
                        buf: Vec::new(),
                        first: meta,
                    };
                    0
                }
                State::Head { buf, first } => self.head(buf, first, rest, last_captured, meta, out),
                State::Length(left) => {
                    let n = (rest.len() as u64).min(left);
                    self.body_bytes += n;
                    self.last = meta;
                    self.state = State::Length(left - n);
                    if left == n {
                        self.complete(meta, out);
                    }
                    n as usize
                }
                State::Chunked { state, line } => self.chunked(state, line, rest, meta, out),
                State::Open => {
                    self.body_bytes += rest.len() as u64;
                    self.last = meta;
                    self.state = State::Open;
                    rest.len()
                }
                State::Off => unreachable!("checked at the top of the loop"),
            };
        }
    }

    /// Accounts for `gap` uncaptured bytes; returns how many could not be
    /// placed (which then turn the message open-ended and are absorbed).
    fn skip(&mut self, gap: u64, meta: SegmentMeta, out: &mut Vec<Parsed>) -> u64 {
        self.last = meta;
        match self.state {
            State::Length(left) => {
                let n = gap.min(left);
                self.body_bytes += n;
                self.state = State::Length(left - n);
                if left == n {
                    self.complete(meta, out);
                }
                gap - n
            }
            State::Chunked {
                state: ChunkState::Data(left),
                ..
            } if gap <= left => {
                self.body_bytes += gap;
                let left = left - gap;
                self.state = State::Chunked {
                    state: if left == 0 {
                        ChunkState::DataEnd(2)
                    } else {
                        ChunkState::Data(left)
                    },
                    line: Vec::new(),
                };
                0
            }
            State::Idle => {
                // Bytes we cannot see at a message boundary: we cannot know
                // where the next message starts.
                self.state = State::Off;
                out.push(Parsed::NotHttp);
                0
            }
            State::Off => 0,
            _ => {
                // A head longer than the capture, or a gap across chunk
                // framing: keep the message, lose its end.
                if let State::Head { .. } = self.state {
                    // `head` turned truncated heads into Open already; reaching
                    // here means a gap arrived before any byte of the head.
                    self.state = State::Off;
                    out.push(Parsed::NotHttp);
                    return 0;
                }
                self.body_bytes += gap;
                self.state = State::Open;
                0
            }
        }
    }

    fn looks_like_start(&self, bytes: &[u8]) -> bool {
        match self.side {
            Side::Response => {
                let n = bytes.len().min(7);
                bytes[..n] == b"HTTP/1."[..n]
            }
            Side::Request => {
                let token = bytes
                    .iter()
                    .take(MAX_METHOD_LEN + 1)
                    .take_while(|b| b.is_ascii_uppercase() || **b == b'-' || **b == b'_')
                    .count();
                if token == bytes.len() {
                    return token <= MAX_METHOD_LEN; // a method split across reads
                }
                token > 0 && token <= MAX_METHOD_LEN && bytes[token] == b' '
            }
        }
    }

    /// Accumulates head bytes; returns how many of `rest` belonged to the head.
    fn head(
        &mut self,
        mut buf: Vec<u8>,
        first: SegmentMeta,
        rest: &[u8],
        last_captured: bool,
        meta: SegmentMeta,
        out: &mut Vec<Parsed>,
    ) -> usize {
        let before = buf.len();
        let take = rest.len().min(MAX_HEAD_BYTES - before);
        self.last = meta;
        if before > 0 {
            buf.extend_from_slice(&rest[..take]);
            // A head can only have ended where the new bytes complete an
            // empty line: re-parsing the whole buffer on every read would
            // make a peer that drips a head a byte at a time cost quadratic
            // time. The first bytes are always parsed, so what is not HTTP
            // is still refused early.
            let fresh = &buf[before.saturating_sub(3)..];
            let may_end =
                fresh.windows(2).any(|w| w == b"\n\n") || fresh.windows(3).any(|w| w == b"\n\r\n");
            if !may_end && buf.len() < MAX_HEAD_BYTES && last_captured {
                self.state = State::Head { buf, first };
                return take;
            }
        }
        // Most heads arrive whole in one read: those are parsed where they
        // lie and never copied; only a head split across reads is kept.
        let head_bytes: &[u8] = if before == 0 { &rest[..take] } else { &buf };
        match self.parse_head(head_bytes) {
            Ok(Some((len, head, chunked))) => {
                let consumed = len - before;
                self.start_body(head, chunked, first, out, meta);
                consumed
            }
            Ok(None) if before + take >= MAX_HEAD_BYTES || !last_captured => {
                // The head goes on beyond what we can see: salvage the first
                // line, leave the end of the message to `finish`.
                match self.salvage(head_bytes) {
                    Some(head) => {
                        out.push(Parsed::Head { head, first });
                        self.body_bytes = 0;
                        self.state = State::Open;
                        rest.len()
                    }
                    None => {
                        self.state = State::Off;
                        out.push(Parsed::NotHttp);
                        rest.len()
                    }
                }
            }
            Ok(None) => {
                if before == 0 {
                    buf.extend_from_slice(&rest[..take]);
                }
                self.state = State::Head { buf, first };
                take
            }
            Err(()) => {
                self.state = State::Off;
                out.push(Parsed::NotHttp);
                rest.len()
            }
        }
    }

    /// `Ok(Some((head length, head, chunked)))`, `Ok(None)` if incomplete,
    /// `Err` if not HTTP.
    fn parse_head(&self, buf: &[u8]) -> Result<Option<(usize, Head, bool)>, ()> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        match self.side {
            Side::Request => {
                let mut req = httparse::Request::new(&mut headers);
                match req.parse(buf) {
                    Ok(httparse::Status::Complete(len)) => {
                        let mut head = RequestHead {
                            method: Text::from(req.method.unwrap_or_default()),
                            target: Text::from(req.path.unwrap_or_default()),
                            version: req.version.unwrap_or(1),
                            ..RequestHead::default()
                        };
                        let mut chunked = false;
                        // Every request passes here: names are compared in
                        // place and values kept inline, so that a head costs
                        // no allocation for what it is read for.
                        for h in req.headers.iter() {
                            let value = || header_text(h.value);
                            let name = h.name;
                            if name.eq_ignore_ascii_case("host") {
                                head.host = Some(value());
                            } else if name.eq_ignore_ascii_case("user-agent") {
                                head.user_agent = Some(value());
                            } else if name.eq_ignore_ascii_case("traceparent") {
                                head.traceparent = Some(value());
                            } else if name.eq_ignore_ascii_case("content-length") {
                                head.content_length = header_number(h.value);
                            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                                chunked = is_chunked(h.value);
                            }
                        }
                        if chunked {
                            head.content_length = None;
                        }
                        Ok(Some((len, Head::Request(head), chunked)))
                    }
                    Ok(httparse::Status::Partial) => Ok(None),
                    Err(httparse::Error::TooManyHeaders) => Ok(None),
                    Err(_) => Err(()),
                }
            }
            Side::Response => {
                let mut res = httparse::Response::new(&mut headers);
                match res.parse(buf) {
                    Ok(httparse::Status::Complete(len)) => {
                        let mut head = ResponseHead {
                            status: res.code.unwrap_or(0),
                            version: res.version.unwrap_or(1),
                            ..ResponseHead::default()
                        };
                        let mut chunked = false;
                        for h in res.headers.iter() {
                            if h.name.eq_ignore_ascii_case("content-length") {
                                head.content_length = header_number(h.value);
                            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                                chunked = is_chunked(h.value);
                            }
                        }
                        if chunked {
                            head.content_length = None;
                        }
                        Ok(Some((len, Head::Response(head), chunked)))
                    }
                    Ok(httparse::Status::Partial) => Ok(None),
                    Err(httparse::Error::TooManyHeaders) => Ok(None),
                    Err(_) => Err(()),
                }
            }
        }
    }

    /// The first line of a head we cannot see whole.
    fn salvage(&self, buf: &[u8]) -> Option<Head> {
        let line_end = buf.iter().position(|b| *b == b'\n').unwrap_or(buf.len());
        let line = std::str::from_utf8(&buf[..line_end])
            .ok()?
            .trim_end_matches('\r');
        let mut parts = line.splitn(3, ' ');
        let (a, b) = (parts.next()?, parts.next()?);
        match self.side {
            Side::Request => Some(Head::Request(RequestHead {
                method: Text::from(a),
                target: Text::from(b),
                version: u8::from(parts.next() != Some("HTTP/1.0")),
                truncated: true,
                ..RequestHead::default()
            })),
            Side::Response => Some(Head::Response(ResponseHead {
                status: b.parse().ok()?,
                version: u8::from(a != "HTTP/1.0"),
                truncated: true,
                ..ResponseHead::default()
            })),
        }
    }

    fn start_body(
        &mut self,
        head: Head,
        chunked: bool,
        first: SegmentMeta,
        out: &mut Vec<Parsed>,
        meta: SegmentMeta,
    ) {
        self.body_bytes = 0;
        let framing = match &head {
            Head::Request(req) => {
                if chunked {
                    Framing::Chunked
                } else {
                    Framing::Length(req.content_length.unwrap_or(0))
                }
            }
            Head::Response(res) => {
                if (100..200).contains(&res.status) {
                    if res.status == 101 {
                        // Switching protocols: what follows is not HTTP/1.
                        out.push(Parsed::Head { head, first });
                        out.push(Parsed::Complete {
                            body_bytes: 0,
                            last: meta,
                        });
                        self.state = State::Off;
                        return;
                    }
                    // Interim response: report nothing; the final one follows.
                    self.state = State::Idle;
                    return;
                }
                let head_method = self.expected.pop_front().unwrap_or(false);
                if head_method || res.status == 204 || res.status == 304 {
                    Framing::Length(0)
                } else if chunked {
                    Framing::Chunked
                } else if let Some(len) = res.content_length {
                    Framing::Length(len)
                } else {
                    Framing::UntilClose
                }
            }
        };
        out.push(Parsed::Head { head, first });
        match framing {
            Framing::Length(0) => {
                self.state = State::Idle;
                out.push(Parsed::Complete {
                    body_bytes: 0,
                    last: meta,
                });
            }
            Framing::Length(n) => self.state = State::Length(n),
            Framing::Chunked => {
                self.state = State::Chunked {
                    state: ChunkState::Size,
                    line: Vec::new(),
                }
            }
            Framing::UntilClose => self.state = State::Open,
        }
    }

    fn complete(&mut self, meta: SegmentMeta, out: &mut Vec<Parsed>) {
        self.state = State::Idle;
        out.push(Parsed::Complete {
            body_bytes: std::mem::take(&mut self.body_bytes),
            last: meta,
        });
    }

    fn chunked(
        &mut self,
        state: ChunkState,
        mut line: Vec<u8>,
        rest: &[u8],
        meta: SegmentMeta,
        out: &mut Vec<Parsed>,
    ) -> usize {
        self.last = meta;
        match state {
            ChunkState::Size | ChunkState::Trailer => {
                let Some(nl) = rest.iter().position(|b| *b == b'\n') else {
                    if line.len() + rest.len() > 1024 {
                        self.state = State::Off;
                        out.push(Parsed::NotHttp);
                    } else {
                        line.extend_from_slice(rest);
                        self.state = State::Chunked { state, line };
                    }
                    return rest.len();
                };
                line.extend_from_slice(&rest[..=nl]);
                if state == ChunkState::Trailer {
                    if line == b"\r\n" || line == b"\n" {
                        self.complete(meta, out);
                    } else {
                        self.state = State::Chunked {
                            state: ChunkState::Trailer,
                            line: Vec::new(),
                        };
                    }
                    return nl + 1;
                }
                match httparse::parse_chunk_size(&line) {
                    Ok(httparse::Status::Complete((_, 0))) => {
                        self.state = State::Chunked {
                            state: ChunkState::Trailer,
                            line: Vec::new(),
                        };
                    }
                    Ok(httparse::Status::Complete((_, size))) => {
                        self.state = State::Chunked {
                            state: ChunkState::Data(size),
                            line: Vec::new(),
                        };
                    }
                    _ => {
                        self.state = State::Off;
                        out.push(Parsed::NotHttp);
                    }
                }
                nl + 1
            }
            ChunkState::Data(left) => {
                let n = (rest.len() as u64).min(left);
                self.body_bytes += n;
                let left = left - n;
                self.state = State::Chunked {
                    state: if left == 0 {
                        ChunkState::DataEnd(2)
                    } else {
                        ChunkState::Data(left)
                    },
                    line: Vec::new(),
                };
                n as usize
            }
            ChunkState::DataEnd(left) => {
                // Tolerate a bare LF; anything else means we lost the framing.
                let b = rest[0];
                let left = match (left, b) {
                    (2, b'\r') => 1,
                    (_, b'\n') => 0,
                    _ => {
                        self.state = State::Open;
                        return 0;
                    }
                };
                self.state = State::Chunked {
                    state: if left == 0 {
                        ChunkState::Size
                    } else {
                        ChunkState::DataEnd(left)
                    },
                    line: Vec::new(),
                };
                1
            }
        }
    }
}

enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

/// A header's value as text, trimmed (invalid UTF-8 replaced).
fn header_text(value: &[u8]) -> Text {
    Text::from(String::from_utf8_lossy(value).trim())
}

/// A numeric header's value (`Content-Length`); `None` if it is not one.
fn header_number(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

fn is_chunked(value: &[u8]) -> bool {
    String::from_utf8_lossy(value)
        .rsplit(',')
        .next()
        .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
}

#[cfg(test)]
mod tests;
