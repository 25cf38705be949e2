//! Flame graphs: folded stacks and an SVG (inferno) from a profile or from
//! pprof bytes. This is the library behind `ferrotel-flame` (and what a
//! `kubectl ferrotel flame` wraps): fetch a pod's pprof from its node's
//! probe (`/debug/profile`), then [`from_pprof`].

use std::sync::Arc;

use inferno::flamegraph::{self, Options};

use super::model::Profile;
use super::pprof::{self, DecodeError};
use crate::telemetry::resource::ProcessResource;

/// A rendered flame graph.
#[derive(Clone, Debug)]
pub struct Flame {
    /// `root;...;leaf count` lines (Brendan Gregg's folded format).
    pub folded: String,
    pub svg: Vec<u8>,
    pub samples: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum FlameError {
    #[error(transparent)]
    Pprof(#[from] DecodeError),
    #[error(
        "the profile has no samples: the process used no CPU in that window, or it is not profiled (is profiling.enabled set?)"
    )]
    Empty,
    #[error("rendering the flame graph failed: {0}")]
    Render(String),
}

/// Renders folded stacks as an SVG flame graph titled `title`.
pub fn svg(folded: &str, title: &str) -> Result<Vec<u8>, FlameError> {
    let mut options = Options::default();
    options.title = title.to_owned();
    options.count_name = "samples".to_owned();
    let mut out = Vec::new();
    flamegraph::from_lines(&mut options, folded.lines(), &mut out)
        .map_err(|e| FlameError::Render(e.to_string()))?;
    Ok(out)
}

/// Folded stacks and SVG of `profile`.
pub fn render(profile: &Profile, title: &str) -> Result<Flame, FlameError> {
    if profile.is_empty() {
        return Err(FlameError::Empty);
    }
    let folded = profile.folded();
    Ok(Flame {
        svg: svg(&folded, title)?,
        folded,
        samples: profile.total(),
    })
}

/// Folded stacks and SVG of pprof bytes (ours or any other producer's).
pub fn from_pprof(bytes: &[u8], title: &str) -> Result<Flame, FlameError> {
    let profile = pprof::decode(bytes, Arc::new(ProcessResource::default()))?;
    render(&profile, title)
}
