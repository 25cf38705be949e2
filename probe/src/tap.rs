//! A live copy of the spans this probe makes, for `kubectl ferrotel tap`
//! (`/debug/tap`, [`ferrotel_api::probe_endpoints`]).
//!
//! # Costs and limits
//!
//! - **Nobody tapping costs one relaxed atomic load per request**
//!   ([`SpanTap::is_active`]); the pipeline builds nothing for the tap then.
//! - While someone taps, every request becomes a span for the tap, sampled
//!   or not (a tap shows traffic, not the sampler's choice); only spans some
//!   subscriber's filter matches are converted to [`TapSpan`]s.
//! - Each subscriber has a bounded buffer ([`SUBSCRIBER_BUFFER`] spans). The
//!   pipeline never waits: a span that does not fit is dropped for that
//!   subscriber and counted, and the subscriber's next line says how many it
//!   lost ([`TapEvent::Lost`]). A slow terminal cannot slow the probe.
//! - At most [`MAX_SUBSCRIBERS`] at once; more are refused.
//!
//! What a tap shows is the span the exporter sends — never payloads or
//! headers — with every query string value replaced by `REDACTED`
//! ([`redact_query`]; keys stay, so the request's shape shows): a tap is
//! read by people at a terminal, not only by a tracing backend.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ferrotel_api::probe_endpoints::{TapEvent, TapFilter, TapSpan};
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::{Span, span, status};
use tokio::sync::mpsc;

use crate::telemetry::resource::ProcessResource;

/// Spans buffered per subscriber before further ones are dropped for it.
pub const SUBSCRIBER_BUFFER: usize = 1024;
/// Concurrent subscribers per probe.
pub const MAX_SUBSCRIBERS: usize = 16;

/// The tap. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct SpanTap {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Number of subscribers: the one thing the pipeline reads per request.
    active: AtomicUsize,
    subscribers: Mutex<Vec<Subscriber>>,
    next_id: AtomicU64,
}

#[derive(Debug)]
struct Subscriber {
    id: u64,
    filter: TapFilter,
    tx: mpsc::Sender<Box<TapSpan>>,
    lost: Arc<AtomicU64>,
}

/// [`MAX_SUBSCRIBERS`] already tap this probe.
#[derive(Debug, thiserror::Error)]
#[error("{MAX_SUBSCRIBERS} taps are already open on this probe; close one and retry")]
pub struct TooManyTaps;

impl SpanTap {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether anyone taps (one relaxed load: the per-request cost).
    pub fn is_active(&self) -> bool {
        self.inner.active.load(Ordering::Relaxed) > 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Subscriber>> {
        self.inner
            .subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// A new subscriber receiving the spans `filter` matches from now on.
    pub fn subscribe(&self, filter: TapFilter) -> Result<Subscription, TooManyTaps> {
        let mut subscribers = self.lock();
        if subscribers.len() >= MAX_SUBSCRIBERS {
            return Err(TooManyTaps);
        }
        let (tx, rx) = mpsc::channel(SUBSCRIBER_BUFFER);
        let lost = Arc::new(AtomicU64::new(0));
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        subscribers.push(Subscriber {
            id,
            filter,
            tx,
            lost: lost.clone(),
        });
        self.inner
            .active
            .store(subscribers.len(), Ordering::Relaxed);
        Ok(Subscription {
            rx,
            lost,
            reported: 0,
            tap: self.clone(),
            id,
        })
    }

    fn unsubscribe(&self, id: u64) {
        let mut subscribers = self.lock();
        subscribers.retain(|s| s.id != id);
        self.inner
            .active
            .store(subscribers.len(), Ordering::Relaxed);
    }

    /// Offers `span` of `resource` to every subscriber whose filter matches.
    /// Never blocks. Call only when [`SpanTap::is_active`].
    pub fn publish(&self, resource: &ProcessResource, span: &Span) {
        let subscribers = self.lock();
        let attr = |key: &str| -> Option<&str> {
            span.attributes
                .iter()
                .find(|kv| kv.key == key)
                .and_then(|kv| kv.value.as_ref())
                .and_then(|v| match &v.value {
                    Some(any_value::Value::StringValue(s)) => Some(s.as_str()),
                    _ => None,
                })
        };
        let namespace = resource
            .attributes
            .get("k8s.namespace.name")
            .map(String::as_str);
        let pod = resource.attributes.get("k8s.pod.name").map(String::as_str);
        let service = Some(resource.service_name());
        let rpc_route = match (attr("rpc.service"), attr("rpc.method")) {
            (Some(s), Some(m)) => Some(format!("{s}/{m}")),
            _ => None,
        };
        let route = attr("http.route").or(rpc_route.as_deref());
        let method = attr("http.request.method");
        let mut converted: Option<Box<TapSpan>> = None;
        for subscriber in subscribers.iter() {
            if !subscriber
                .filter
                .matches(namespace, pod, service, route, method)
            {
                continue;
            }
            let tap_span = converted.get_or_insert_with(|| Box::new(to_tap_span(resource, span)));
            match subscriber.tx.try_send(tap_span.clone()) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    subscriber.lost.fetch_add(1, Ordering::Relaxed);
                }
                // Gone: its Subscription's drop removes it.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
    }
}

/// One subscriber's end. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    rx: mpsc::Receiver<Box<TapSpan>>,
    lost: Arc<AtomicU64>,
    reported: u64,
    tap: SpanTap,
    id: u64,
}

impl Subscription {
    /// The next line for the client: first how many spans were lost since
    /// the last line, if any, then the next span.
    pub async fn next(&mut self) -> Option<TapEvent> {
        if let Some(lost) = self.take_lost() {
            return Some(lost);
        }
        let span = self.rx.recv().await?;
        // Spans lost while this one waited are reported before the next.
        Some(TapEvent::Span(span))
    }

    fn take_lost(&mut self) -> Option<TapEvent> {
        let total = self.lost.load(Ordering::Relaxed);
        (total > self.reported).then(|| {
            let spans = total - self.reported;
            self.reported = total;
            TapEvent::Lost { spans }
        })
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.tap.unsubscribe(self.id);
    }
}

fn to_tap_span(resource: &ProcessResource, span: &Span) -> TapSpan {
    let text = |value: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>| -> String {
        match value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(any_value::Value::StringValue(s)) => s.clone(),
            Some(any_value::Value::IntValue(i)) => i.to_string(),
            Some(any_value::Value::DoubleValue(d)) => d.to_string(),
            Some(any_value::Value::BoolValue(b)) => b.to_string(),
            Some(other) => format!("{other:?}"),
            None => String::new(),
        }
    };
    let kind = match span::SpanKind::try_from(span.kind) {
        Ok(span::SpanKind::Server) => "server",
        Ok(span::SpanKind::Client) => "client",
        _ => "internal",
    };
    let error = span
        .status
        .as_ref()
        .is_some_and(|s| s.code == status::StatusCode::Error as i32);
    let get = |key: &str| resource.attributes.get(key).cloned().unwrap_or_default();
    TapSpan {
        trace_id: hex::encode(&span.trace_id),
        span_id: hex::encode(&span.span_id),
        parent_span_id: hex::encode(&span.parent_span_id),
        name: span.name.clone(),
        kind: kind.to_owned(),
        start_time_unix_nano: span.start_time_unix_nano,
        duration_nanos: span
            .end_time_unix_nano
            .saturating_sub(span.start_time_unix_nano),
        error,
        namespace: get("k8s.namespace.name"),
        pod: get("k8s.pod.name"),
        service: resource.service_name().to_owned(),
        attributes: span
            .attributes
            .iter()
            .map(|kv| {
                let value = text(&kv.value);
                let value = match kv.key.as_str() {
                    "url.query" => redact_query(&value),
                    "url.full" => match value.split_once('?') {
                        Some((base, query)) => format!("{base}?{}", redact_query(query)),
                        None => value,
                    },
                    _ => value,
                };
                (kv.key.clone(), value)
            })
            .collect(),
    }
}

/// `a=1&token=xyz&flag` → `a=REDACTED&token=REDACTED&flag`: every value
/// goes, keys stay (the probe cannot know which names carry secrets),
/// whatever the Instrumentation's own redaction policy exports.
fn redact_query(query: &str) -> String {
    ferrotel_parse::url::redact_query_values(query, |_| true).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::semconv::{Value, key_value, string_kv};

    fn resource(pod: &str) -> ProcessResource {
        ProcessResource {
            attributes: [
                ("service.name".to_owned(), "web".to_owned()),
                ("k8s.namespace.name".to_owned(), "shop".to_owned()),
                ("k8s.pod.name".to_owned(), pod.to_owned()),
            ]
            .into(),
        }
    }

    fn span(route: &str) -> Span {
        Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            name: format!("GET {route}"),
            kind: span::SpanKind::Server as i32,
            start_time_unix_nano: 1_000,
            end_time_unix_nano: 3_500,
            attributes: vec![
                string_kv("http.route", route),
                string_kv("http.request.method", "GET"),
                key_value("http.response.status_code", &Value::Int(503)),
            ],
            status: Some(opentelemetry_proto::tonic::trace::v1::Status {
                code: status::StatusCode::Error as i32,
                message: String::new(),
            }),
            ..Span::default()
        }
    }

    #[tokio::test]
    async fn a_subscriber_gets_only_the_spans_its_filter_matches_as_tap_spans() {
        let tap = SpanTap::new();
        assert!(!tap.is_active(), "nobody taps yet");
        let mut sub = tap
            .subscribe(TapFilter {
                route: Some("/items/{id}".into()),
                pods: vec!["web-1".into()],
                ..TapFilter::default()
            })
            .expect("room");
        assert!(tap.is_active());
        tap.publish(&resource("web-1"), &span("/health"));
        tap.publish(&resource("web-2"), &span("/items/{id}"));
        tap.publish(&resource("web-1"), &span("/items/{id}"));
        let Some(TapEvent::Span(got)) = sub.next().await else {
            panic!("a span")
        };
        assert_eq!(got.pod, "web-1");
        assert_eq!(got.attributes["http.route"], "/items/{id}");
        assert_eq!(got.attributes["http.response.status_code"], "503");
        assert_eq!(got.duration_nanos, 2_500);
        assert!(got.error);
        assert_eq!(got.kind, "server");
        assert_eq!(got.trace_id, "01".repeat(16));
        assert!(
            sub.rx.try_recv().is_err(),
            "the other two were filtered out"
        );
        drop(sub);
        assert!(!tap.is_active(), "dropping the subscription unsubscribes");
    }

    #[test]
    fn query_values_are_redacted_in_url_query_and_url_full_and_keys_stay() {
        let mut s = span("/login");
        s.attributes
            .push(string_kv("url.query", "user=ann&token=s3cr3t&debug"));
        s.attributes.push(string_kv(
            "url.full",
            "http://shop:8080/login?user=ann&token=s3cr3t",
        ));
        let tapped = to_tap_span(&resource("web-1"), &s);
        assert_eq!(
            tapped.attributes["url.query"],
            "user=REDACTED&token=REDACTED&debug"
        );
        assert_eq!(
            tapped.attributes["url.full"],
            "http://shop:8080/login?user=REDACTED&token=REDACTED"
        );
        assert!(
            !format!("{tapped:?}").contains("s3cr3t"),
            "no secret anywhere: {tapped:?}"
        );
    }

    #[tokio::test]
    async fn a_slow_subscriber_loses_spans_and_is_told_how_many_without_blocking_the_publisher() {
        let tap = SpanTap::new();
        let mut slow = tap.subscribe(TapFilter::default()).expect("room");
        let extra = 7;
        for _ in 0..SUBSCRIBER_BUFFER + extra {
            tap.publish(&resource("web-1"), &span("/"));
        }
        assert_eq!(
            slow.next().await,
            Some(TapEvent::Lost {
                spans: extra as u64
            }),
            "the loss comes first"
        );
        let mut received = 0;
        while let Ok(_span) = slow.rx.try_recv() {
            received += 1;
        }
        assert_eq!(received, SUBSCRIBER_BUFFER, "the buffer was kept whole");
        assert!(slow.take_lost().is_none(), "each loss is reported once");
    }

    #[test]
    fn subscribers_beyond_the_cap_are_refused() {
        let tap = SpanTap::new();
        let subs: Vec<Subscription> = (0..MAX_SUBSCRIBERS)
            .map(|_| tap.subscribe(TapFilter::default()).expect("room"))
            .collect();
        assert!(tap.subscribe(TapFilter::default()).is_err());
        drop(subs);
        assert!(tap.subscribe(TapFilter::default()).is_ok(), "room again");
    }
}
