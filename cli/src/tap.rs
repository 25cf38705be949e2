//! `tap`: a live stream of spans, merged from the probes on the nodes of
//! the pods asked for (`/debug/tap` through the API server's pod proxy).
//! The probe filters (namespace, pods, service, route, method) before
//! anything leaves the node and redacts query values; a slow terminal makes
//! the probe drop spans for this tap (and say how many), never wait.

use std::pin::Pin;
use std::time::Duration;

use ferrotel_api::probe_endpoints::{TAP_PATH, TapEvent, TapFilter, TapSpan};
use futures::{AsyncBufReadExt, Stream, StreamExt};

use crate::cluster::{Cluster, ProbePod};
use crate::error::CliError;
use crate::output::{self, Color, Format, Style};

/// One line read from a probe, or the end of its stream.
#[derive(Debug)]
pub enum Line {
    Event {
        probe: String,
        event: TapEvent,
    },
    /// A line that is not a tap event (skipped, reported once).
    Garbage {
        probe: String,
        text: String,
    },
    Ended {
        probe: String,
        error: Option<String>,
    },
}

type LineStream = Pin<Box<dyn Stream<Item = Line> + Send>>;

/// Opens a tap on every probe; probes that refuse are reported in the
/// second list (`namespace/name: error`). Fails when none opens.
pub async fn open(
    cluster: &Cluster,
    probes: &[ProbePod],
    filter: &TapFilter,
) -> Result<(Vec<LineStream>, Vec<String>), CliError> {
    let query = filter.to_query();
    let path = if query.is_empty() {
        TAP_PATH.to_owned()
    } else {
        format!("{TAP_PATH}?{query}")
    };
    let opened = futures::future::join_all(probes.iter().map(|probe| {
        let path = path.clone();
        async move { (probe, cluster.probe_stream(probe, &path).await) }
    }))
    .await;
    let mut streams: Vec<LineStream> = Vec::new();
    let mut failures = Vec::new();
    for (probe, result) in opened {
        let name = format!("{}/{}", probe.namespace, probe.name);
        match result {
            Ok(reader) => {
                let lines = reader.lines();
                let probe_name = name.clone();
                let events = lines
                    .filter_map(move |line| {
                        let probe = probe_name.clone();
                        async move {
                            match line {
                                Ok(text) if text.trim().is_empty() => None,
                                Ok(text) => Some(match serde_json::from_str::<TapEvent>(&text) {
                                    Ok(event) => Line::Event { probe, event },
                                    Err(_) => Line::Garbage { probe, text },
                                }),
                                Err(error) => Some(Line::Ended {
                                    probe,
                                    error: Some(error.to_string()),
                                }),
                            }
                        }
                    })
                    .chain(futures::stream::once(async move {
                        Line::Ended {
                            probe: name,
                            error: None,
                        }
                    }));
                streams.push(Box::pin(events));
            }
            Err(error) => failures.push(format!("{name}: {error}")),
        }
    }
    if streams.is_empty() {
        return Err(CliError::ProbesUnreachable(failures.join("; ")));
    }
    Ok((streams, failures))
}

/// `HH:MM:SS.mmm` (UTC) of a Unix time in nanoseconds.
pub fn clock(unix_nanos: u64) -> String {
    let millis = unix_nanos / 1_000_000;
    let seconds = millis / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        (seconds / 3600) % 24,
        (seconds / 60) % 60,
        seconds % 60,
        millis % 1000
    )
}

/// A span on one line: time, kind, pod, method and route, status,
/// duration, target, peer and trace id.
pub fn render_span(span: &TapSpan, style: &Style) -> String {
    let attr = |k: &str| span.attributes.get(k).map(String::as_str);
    // The route when there is one (server spans), else the span name,
    // which already starts with the method (`GET`, `GET /items/{id}`).
    let what = match (attr("http.route"), attr("rpc.service"), attr("rpc.method")) {
        (Some(route), _, _) => match attr("http.request.method") {
            Some(method) => format!("{method} {route}"),
            None => route.to_owned(),
        },
        (None, Some(service), Some(method)) => format!("{service}/{method}"),
        _ => span.name.clone(),
    };
    let status = attr("http.response.status_code")
        .or(attr("rpc.grpc.status_code"))
        .unwrap_or("-");
    let target = match (attr("url.path"), attr("url.query")) {
        (Some(path), Some(query)) if !query.is_empty() => format!("{path}?{query}"),
        (Some(path), _) => path.to_owned(),
        _ => attr("url.full").unwrap_or("").to_owned(),
    };
    let peer = match span.kind.as_str() {
        "client" => attr("server.address")
            .map(|a| match attr("server.port") {
                Some(p) => format!("-> {a}:{p}"),
                None => format!("-> {a}"),
            })
            .unwrap_or_default(),
        _ => attr("client.address")
            .map(|a| format!("<- {a}"))
            .unwrap_or_default(),
    };
    let status = style.paint(status, if span.error { Color::Red } else { Color::Green });
    let mut fields = vec![
        clock(span.start_time_unix_nano),
        format!("{:<6}", span.kind),
        format!("{}/{}", span.namespace, span.pod),
        what,
        status,
        output::duration(Some(span.duration_nanos as f64 / 1e9)),
    ];
    if !target.is_empty() {
        fields.push(target);
    }
    if !peer.is_empty() {
        fields.push(peer);
    }
    fields.push(style.paint(&format!("trace={}", span.trace_id), Color::Dim));
    let mut line = fields.join("  ");
    line.push('\n');
    line
}

/// What to print for a line, on stdout and stderr.
pub fn render_line(line: &Line, format: Format, style: &Style) -> (String, String) {
    match line {
        Line::Event {
            event: TapEvent::Span(span),
            ..
        } => (
            if format.is_structured() {
                crate::stat::render_stream(format, span)
            } else {
                render_span(span, style)
            },
            String::new(),
        ),
        Line::Event {
            probe,
            event: TapEvent::Lost { spans },
        } => (
            String::new(),
            format!(
                "warning: probe {probe} dropped {spans} spans for this tap (the terminal read too slowly); narrow the tap with --route, --method or a workload\n"
            ),
        ),
        Line::Garbage { probe, text } => (
            String::new(),
            format!(
                "warning: probe {probe} sent a line that is not a tap event: {:?}\n",
                text.chars().take(120).collect::<String>()
            ),
        ),
        Line::Ended { probe, error } => (
            String::new(),
            match error {
                Some(error) => format!("warning: the tap on probe {probe} broke: {error}\n"),
                None => format!("warning: probe {probe} closed the tap (did it restart?)\n"),
            },
        ),
    }
}

/// Merges `streams` and calls `emit` per line until `max` spans, `duration`,
/// Ctrl-C, or every stream ended. Returns the number of spans shown.
pub async fn follow(
    streams: Vec<LineStream>,
    max: Option<u64>,
    duration: Option<Duration>,
    mut emit: impl FnMut(&Line) -> Result<(), CliError>,
) -> Result<u64, CliError> {
    let mut merged = futures::stream::select_all(streams);
    let deadline = duration.map(|d| tokio::time::Instant::now() + d);
    let mut shown = 0u64;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        if max.is_some_and(|max| shown >= max) {
            break;
        }
        let sleep = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        let line = tokio::select! {
            line = merged.next() => line,
            () = sleep => break,
            _ = &mut ctrl_c => break,
        };
        let Some(line) = line else { break };
        if matches!(
            line,
            Line::Event {
                event: TapEvent::Span(_),
                ..
            }
        ) {
            shown += 1;
        }
        emit(&line)?;
    }
    Ok(shown)
}
