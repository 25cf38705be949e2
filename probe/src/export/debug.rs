//! The `/debug/*` routes of the probe's HTTP endpoint (paths and JSON in
//! [`ferrotel_api::probe_endpoints`]): per-process decisions
//! ([`crate::ledger`]) and the span tap ([`crate::tap`]). Read by
//! `kubectl ferrotel` through the API server's pod proxy.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ferrotel_api::language::Language;
use ferrotel_api::probe_endpoints::{PROCESSES_PATH, TAP_PATH, TapFilter};

use crate::ledger::ProcessLedger;
use crate::tap::SpanTap;

/// A blank line is written to an idle tap this often, so that a client that
/// went away is noticed (and its subscription freed) even when no span
/// matches its filter.
const TAP_HEARTBEAT: Duration = Duration::from_secs(5);

/// What the debug routes serve.
#[derive(Clone, Debug)]
pub struct DebugState {
    pub ledger: ProcessLedger,
    pub tap: SpanTap,
    pub language: Language,
    /// `NODE_NAME`; empty standalone.
    pub node: String,
}

/// The `/debug/*` router, state applied.
pub fn routes(state: DebugState) -> Router {
    Router::new()
        .route(PROCESSES_PATH, get(processes))
        .route(TAP_PATH, get(tap))
        .with_state(state)
}

async fn processes(State(state): State<DebugState>) -> Response {
    let report = state.ledger.report(Some(state.language), &state.node);
    match serde_json::to_string(&report) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the process report failed: {error}"),
        )
            .into_response(),
    }
}

async fn tap(State(state): State<DebugState>, RawQuery(query): RawQuery) -> Response {
    let filter = match TapFilter::from_query(query.as_deref().unwrap_or_default()) {
        Ok(filter) => filter,
        Err(error) => return (StatusCode::BAD_REQUEST, error.to_string()).into_response(),
    };
    let subscription = match state.tap.subscribe(filter) {
        Ok(subscription) => subscription,
        Err(error) => {
            return (StatusCode::SERVICE_UNAVAILABLE, error.to_string()).into_response();
        }
    };
    let lines = futures::stream::unfold(subscription, |mut subscription| async move {
        let line = tokio::select! {
            event = subscription.next() => {
                let event = event?;
                let mut line = serde_json::to_vec(&event).unwrap_or_default();
                line.push(b'\n');
                line
            }
            () = tokio::time::sleep(TAP_HEARTBEAT) => b"\n".to_vec(),
        };
        Some((Ok::<_, Infallible>(Bytes::from(line)), subscription))
    });
    (
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(lines),
    )
        .into_response()
}
