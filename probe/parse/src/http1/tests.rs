use proptest::prelude::*;

use super::*;

fn meta(n: u64) -> SegmentMeta {
    SegmentMeta {
        enter_ns: n * 10,
        exit_ns: n * 10 + 5,
        tid: 7,
    }
}

/// Feeds each segment fully captured; returns everything parsed.
fn run(side: Side, segments: &[&[u8]]) -> Vec<Parsed> {
    let mut parser = MessageParser::new(side);
    let mut out = Vec::new();
    for (i, seg) in segments.iter().enumerate() {
        parser.feed(seg, seg.len(), meta(i as u64), &mut out);
    }
    out
}

fn heads(parsed: &[Parsed]) -> Vec<Head> {
    parsed
        .iter()
        .filter_map(|p| {
            if let Parsed::Head { head, .. } = p {
                Some(head.clone())
            } else {
                None
            }
        })
        .collect()
}

fn completions(parsed: &[Parsed]) -> Vec<(u64, SegmentMeta)> {
    parsed
        .iter()
        .filter_map(|p| {
            if let Parsed::Complete { body_bytes, last } = p {
                Some((*body_bytes, *last))
            } else {
                None
            }
        })
        .collect()
}

fn request(parsed: &Parsed) -> &RequestHead {
    match parsed {
        Parsed::Head {
            head: Head::Request(r),
            ..
        } => r,
        other => panic!("expected a request head, got {other:?}"),
    }
}

#[test]
fn a_get_request_is_one_head_and_one_completion_in_the_same_segment() {
    let out = run(
        Side::Request,
        &[b"GET /users/42?x=1 HTTP/1.1\r\nHost: shop:8080\r\nUser-Agent: t\r\n\r\n"],
    );
    assert_eq!(out.len(), 2, "head + completion: {out:?}");
    let req = request(&out[0]);
    assert_eq!(
        (req.method.as_str(), req.target.as_str(), req.version),
        ("GET", "/users/42?x=1", 1)
    );
    assert_eq!(req.host.as_deref(), Some("shop:8080"));
    assert_eq!(req.user_agent.as_deref(), Some("t"));
    assert_eq!(
        completions(&out),
        vec![(0, meta(0))],
        "a GET without body completes with its head"
    );
}

#[test]
fn a_head_split_across_three_reads_is_reported_once_with_the_first_reads_time() {
    let out = run(
        Side::Request,
        &[
            b"PO",
            b"ST /orders HTTP/1.1\r\nContent-Le",
            b"ngth: 5\r\ntraceparent: tp\r\n\r\nhello",
        ],
    );
    let req = request(&out[0]);
    assert_eq!(req.method, "POST");
    assert_eq!(
        req.traceparent.as_deref(),
        Some("tp"),
        "headers from the last read are seen"
    );
    assert!(
        matches!(out[0], Parsed::Head { first, .. } if first == meta(0)),
        "the message starts at the first read"
    );
    assert_eq!(completions(&out), vec![(5, meta(2))]);
}

#[test]
fn a_body_arriving_in_later_reads_completes_at_the_last_of_them() {
    let out = run(
        Side::Request,
        &[
            b"PUT /a HTTP/1.1\r\nContent-Length: 10\r\n\r\n",
            b"01234",
            b"56789",
        ],
    );
    assert_eq!(completions(&out), vec![(10, meta(2))]);
}

#[test]
fn pipelined_requests_in_one_read_are_all_reported_in_order() {
    let out = run(Side::Request, &[b"GET /1 HTTP/1.1\r\n\r\nDELETE /2 HTTP/1.1\r\n\r\nPOST /3 HTTP/1.1\r\nContent-Length: 2\r\n\r\nok"]);
    let methods: Vec<_> = heads(&out)
        .into_iter()
        .map(|h| {
            if let Head::Request(r) = h {
                r.method
            } else {
                panic!()
            }
        })
        .collect();
    assert_eq!(methods, ["GET", "DELETE", "POST"]);
    assert_eq!(completions(&out).len(), 3);
}

#[test]
fn chunked_bodies_are_followed_to_the_last_chunk_and_trailers() {
    let out = run(
        Side::Response,
        &[
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"5\r\nhello\r\n",
            b"6;ext=1\r\n world\r\n",
            b"0\r\nX-T: 1\r\n\r\n",
        ],
    );
    assert_eq!(
        completions(&out),
        vec![(11, meta(3))],
        "11 body bytes, complete at the terminal chunk"
    );
}

#[test]
fn a_head_response_has_no_body_even_with_content_length() {
    let mut parser = MessageParser::new(Side::Response);
    parser.expect_response_to(true);
    parser.expect_response_to(false);
    let mut out = Vec::new();
    let seg = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi";
    parser.feed(seg, seg.len(), meta(0), &mut out);
    assert_eq!(
        completions(&out),
        vec![(0, meta(0)), (2, meta(0))],
        "HEAD response ends at its head; the next one is parsed"
    );
}

#[test]
fn interim_100_continue_is_skipped_and_the_final_status_reported() {
    let out = run(
        Side::Response,
        &[
            b"HTTP/1.1 100 Continue\r\n\r\n",
            b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
        ],
    );
    let statuses: Vec<_> = heads(&out)
        .into_iter()
        .map(|h| {
            if let Head::Response(r) = h {
                r.status
            } else {
                panic!()
            }
        })
        .collect();
    assert_eq!(statuses, [201], "only the final response counts");
    assert_eq!(completions(&out).len(), 1);
}

#[test]
fn bodiless_statuses_complete_at_the_head() {
    for status in ["204 No Content", "304 Not Modified"] {
        let head = format!("HTTP/1.1 {status}\r\n\r\n");
        let out = run(Side::Response, &[head.as_bytes()]);
        assert_eq!(
            completions(&out).len(),
            1,
            "{status} must complete without a body"
        );
    }
}

#[test]
fn a_response_without_length_runs_until_finish() {
    let mut parser = MessageParser::new(Side::Response);
    let mut out = Vec::new();
    let seg = b"HTTP/1.0 200 OK\r\n\r\nsome body";
    parser.feed(seg, seg.len(), meta(0), &mut out);
    parser.feed(b"more", 4, meta(1), &mut out);
    assert!(completions(&out).is_empty(), "no end is known yet");
    assert!(parser.is_open_ended());
    assert_eq!(
        parser.finish(),
        Some(Parsed::Complete {
            body_bytes: 13,
            last: meta(1)
        }),
        "close ends it at the last segment"
    );
}

#[test]
fn uncaptured_body_bytes_are_counted_through_content_length() {
    let mut parser = MessageParser::new(Side::Response);
    let mut out = Vec::new();
    let head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n";
    let mut seg = head.to_vec();
    seg.extend_from_slice(&[b'x'; 100]);
    parser.feed(&seg, head.len() + 60_000, meta(0), &mut out);
    assert!(completions(&out).is_empty());
    parser.feed(&[b'y'; 10], 40_000, meta(1), &mut out);
    assert_eq!(completions(&out), vec![(100_000, meta(1))]);
}

#[test]
fn a_head_longer_than_the_capture_keeps_its_request_line_and_becomes_open_ended() {
    let mut parser = MessageParser::new(Side::Request);
    let mut out = Vec::new();
    let seg = b"GET /big HTTP/1.1\r\nCookie: aaaaaaaa";
    parser.feed(seg, 5000, meta(0), &mut out);
    let req = request(&out[0]);
    assert!(
        req.truncated && req.method == "GET" && req.target == "/big",
        "{req:?}"
    );
    assert!(parser.is_open_ended());
}

#[test]
fn non_http_traffic_turns_the_stream_off() {
    for junk in [
        &b"\x16\x03\x01\x02\x00"[..],
        b"*1\r\n$4\r\nPING\r\n",
        b"hello world",
        b"get / HTTP/1.1\r\n",
    ] {
        let out = run(Side::Request, &[junk, b"GET / HTTP/1.1\r\n\r\n"]);
        assert_eq!(
            out,
            vec![Parsed::NotHttp],
            "{junk:?} must be ignored, and everything after it"
        );
    }
    assert_eq!(
        run(Side::Response, &[b"SSH-2.0-OpenSSH\r\n"]),
        vec![Parsed::NotHttp]
    );
}

#[test]
fn garbage_inside_a_head_turns_the_stream_off() {
    let out = run(
        Side::Request,
        &[b"GET / HTTP/1.1\r\nBad Header\x01: x\r\n\r\n"],
    );
    assert_eq!(out, vec![Parsed::NotHttp]);
}

#[test]
fn switching_protocols_ends_http_parsing() {
    let out = run(
        Side::Response,
        &[b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello"],
    );
    assert_eq!(heads(&out).len(), 1);
    assert_eq!(completions(&out).len(), 1);
    assert_eq!(
        out.last(),
        Some(&Parsed::Complete {
            body_bytes: 0,
            last: meta(0)
        })
    );
}

fn arb_message() -> impl Strategy<Value = Vec<u8>> {
    let method = prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]);
    let path = "/[a-z0-9]{0,12}(/[a-z0-9]{1,8}){0,3}";
    let body = prop::collection::vec(any::<u8>(), 0..300);
    (method, path, body, any::<bool>()).prop_map(|(method, path, body, chunked)| {
        let mut msg = format!("{method} {path} HTTP/1.1\r\nHost: h\r\n").into_bytes();
        if chunked {
            msg.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            for part in body.chunks(97) {
                msg.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                msg.extend_from_slice(part);
                msg.extend_from_slice(b"\r\n");
            }
            msg.extend_from_slice(b"0\r\n\r\n");
        } else {
            msg.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
            msg.extend_from_slice(&body);
        }
        msg
    })
}

proptest! {
    #[test]
    fn any_split_of_a_pipelined_stream_yields_the_same_messages(
        messages in prop::collection::vec(arb_message(), 1..5),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let stream: Vec<u8> = messages.concat();
        let whole = run(Side::Request, &[&stream]);
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
        points.push(0);
        points.push(stream.len());
        points.sort_unstable();
        points.dedup();
        let segments: Vec<&[u8]> = points.windows(2).map(|w| &stream[w[0]..w[1]]).collect();
        let split = run(Side::Request, &segments);
        prop_assert_eq!(heads(&whole).len(), messages.len(), "every message is found in the whole stream");
        prop_assert_eq!(heads(&split), heads(&whole), "splitting must not change the heads");
        let bodies = |p: &[Parsed]| completions(p).into_iter().map(|(b, _)| b).collect::<Vec<_>>();
        prop_assert_eq!(bodies(&split), bodies(&whole), "nor the body sizes");
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_never_invent_more_heads_than_request_lines(
        segments in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..6),
        gaps in prop::collection::vec(0usize..5000, 6),
    ) {
        for side in [Side::Request, Side::Response] {
            let mut parser = MessageParser::new(side);
            let mut out = Vec::new();
            for (seg, gap) in segments.iter().zip(&gaps) {
                parser.feed(seg, seg.len() + gap, meta(0), &mut out);
            }
            let _ = parser.finish();
            let lines = segments.iter().map(|s| s.windows(2).filter(|w| w == b"\r\n" || w[1] == b'\n').count()).sum::<usize>();
            prop_assert!(heads(&out).len() <= lines.max(1), "{} heads from {lines} lines", heads(&out).len());
        }
    }
}
