//! URL and header text as traffic carries it: `Host`/`:authority` values,
//! query strings, request paths and the route patterns they are matched
//! against. Everything here takes text a client or server chose.

use std::borrow::Cow;

use crate::record::Text;

/// The replacement the semantic conventions prescribe for a redacted value.
pub const REDACTED: &str = "REDACTED";

/// Splits a `Host`/`:authority` value into host and port. The host is a
/// slice of `host`: this runs for every span and metric of a request.
pub fn split_host(host: &str) -> (&str, Option<u16>) {
    let host = host.trim();
    if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        if let Some((addr, after)) = rest.split_once(']') {
            let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
            return (addr, port);
        }
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') => match port.parse() {
            Ok(port) => (name, Some(port)),
            Err(_) => (host, None),
        },
        _ => (host, None),
    }
}

/// `query` (without `?`) with the value of every `key=value` pair for which
/// `redacts(key)` holds replaced by [`REDACTED`]; keys, pairs without a
/// value and the order stay. Borrowed when nothing changes.
pub fn redact_query_values<'a>(query: &'a str, redacts: impl Fn(&str) -> bool) -> Cow<'a, str> {
    let mut out = String::with_capacity(query.len());
    let mut changed = false;
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((key, value)) if !value.is_empty() && redacts(key) => {
                out.push_str(key);
                out.push('=');
                out.push_str(REDACTED);
                changed |= value != REDACTED;
            }
            _ => out.push_str(pair),
        }
    }
    if changed {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(query)
    }
}

/// A query key or value as the server reads it: `%hh` decoded, `+` a space;
/// a `%` not followed by two hex digits stays as it is, and bytes that do
/// not form UTF-8 become U+FFFD.
pub fn percent_decode(text: &str) -> Cow<'_, str> {
    if !text.contains(['%', '+']) {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => match text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                Some(byte) => {
                    out.push(byte);
                    i += 3;
                    continue;
                }
                None => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            other => out.push(other),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `{name}` or `*`: exactly one non-empty segment.
    One,
    /// `{name...}` or `**`: the rest of the path (zero or more segments).
    Rest,
}

/// A parsed route pattern such as `/users/{id}/orders/{rest...}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutePattern {
    text: String,
    segments: Vec<Segment>,
}

impl RoutePattern {
    pub fn parse(text: &str) -> Self {
        let segments = split(text)
            .map(|s| {
                if s == "**" || (s.starts_with('{') && s.ends_with("...}")) {
                    Segment::Rest
                } else if s == "*" || (s.starts_with('{') && s.ends_with('}')) {
                    Segment::One
                } else {
                    Segment::Literal(s.to_owned())
                }
            })
            .collect();
        Self {
            text: text.to_owned(),
            segments,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn matches(&self, path: &str) -> bool {
        let mut parts = split(path);
        for segment in &self.segments {
            match segment {
                Segment::Rest => return true,
                Segment::One => {
                    if parts.next().is_none() {
                        return false;
                    }
                }
                Segment::Literal(lit) => {
                    if parts.next() != Some(lit.as_str()) {
                        return false;
                    }
                }
            }
        }
        parts.next().is_none()
    }
}

fn split(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

/// Is this path segment an identifier rather than a name? Numbers, UUIDs,
/// hex strings, dates, and long tokens that mix letters and digits are;
/// `v1`, `users`, `api` are not.
pub fn is_id_like(segment: &str) -> bool {
    let has_digit = segment.bytes().any(|b| b.is_ascii_digit());
    if !has_digit {
        return false;
    }
    let all_digits = segment.bytes().all(|b| b.is_ascii_digit());
    let digits_and_separators = segment
        .bytes()
        .all(|b| b.is_ascii_digit() || b"-_.:".contains(&b));
    let hex_like =
        segment.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') && segment.len() >= 8;
    let long_token = segment.len() >= 16;
    all_digits || digits_and_separators || hex_like || long_token
}

/// The heuristic template of a path: ID-like segments become `*`.
pub fn heuristic_route(path: &str) -> Text {
    // Built for every request without a known route: a typical route fits
    // inline, so this costs no allocation.
    let mut out = Text::default();
    for segment in split(path) {
        out.push('/');
        out.push_str(if is_id_like(segment) { "*" } else { segment });
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heuristic_replaces_id_like_segments_only() {
        assert_eq!(heuristic_route("/users/12345"), "/users/*");
        assert_eq!(
            heuristic_route("/api/v1/orders/550e8400-e29b-41d4-a716-446655440000"),
            "/api/v1/orders/*"
        );
        assert_eq!(heuristic_route("/blobs/deadbeef42/meta"), "/blobs/*/meta");
        assert_eq!(heuristic_route("/reports/2024-01-31"), "/reports/*");
        assert_eq!(
            heuristic_route("/t/aZ3kP9qLmN2xV7wR"),
            "/t/*",
            "long mixed token"
        );
        assert_eq!(
            heuristic_route("/api/v2/health"),
            "/api/v2/health",
            "version segments stay"
        );
        assert_eq!(heuristic_route("/"), "/");
        assert_eq!(heuristic_route(""), "/");
    }

    #[test]
    fn percent_decoding_keeps_what_is_not_an_escape() {
        assert_eq!(percent_decode("api%5Fkey+x"), "api_key x");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%ff"), "\u{fffd}");
        assert!(matches!(percent_decode("plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn host_header_forms_are_split() {
        assert_eq!(split_host("example.com:8080"), ("example.com", Some(8080)));
        assert_eq!(split_host("example.com"), ("example.com", None));
        assert_eq!(split_host("[::1]:9000"), ("::1", Some(9000)));
        assert_eq!(split_host("::1"), ("::1", None));
    }
}
