//! Reads the Prometheus text exposition (and OpenMetrics text) that the
//! probes serve on `/metrics`: sample lines only, `# HELP`/`# TYPE`/`# EOF`
//! and exemplars ignored. What the CLI needs is the samples of a few
//! families, so the parser keeps every sample and the callers pick.

use std::collections::BTreeMap;

/// One sample line.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A line that is not a sample (the scrape is still used; the count of
/// such lines is reported).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}: {text:?}")]
pub struct ParseError {
    pub line: usize,
    pub reason: &'static str,
    pub text: String,
}

/// Every sample in `text`, and the lines that could not be read.
pub fn parse(text: &str) -> (Vec<Sample>, Vec<ParseError>) {
    let mut samples = Vec::new();
    let mut errors = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_line(line) {
            Ok(sample) => samples.push(sample),
            Err(reason) => errors.push(ParseError {
                line: index + 1,
                reason,
                text: line.chars().take(200).collect(),
            }),
        }
    }
    (samples, errors)
}

fn parse_line(line: &str) -> Result<Sample, &'static str> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .ok_or("no value")?;
    let name = &line[..name_end];
    if name.is_empty() {
        return Err("no metric name");
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        let (parsed, remaining) = parse_labels(after_brace)?;
        labels = parsed;
        rest = remaining;
    }
    // Value, then an optional timestamp and an optional exemplar (`# {...}`).
    let value_text = rest
        .split('#')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .ok_or("no value")?;
    let value = parse_value(value_text).ok_or("value is not a number")?;
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        other => other.parse().ok(),
    }
}

/// Parses `k="v",k2="v2"}` (after the opening brace); returns the labels
/// and what follows the closing brace.
fn parse_labels(text: &str) -> Result<(BTreeMap<String, String>, &str), &'static str> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = rest.find('=').ok_or("label without '='")?;
        let key = rest[..eq].trim();
        if key.is_empty() {
            return Err("empty label name");
        }
        rest = rest[eq + 1..]
            .trim_start()
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => return Err("unterminated escape"),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => return Err("unterminated label value"),
            }
        };
        labels.insert(key.to_owned(), value);
        rest = &rest[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_histogram_lines_counters_escapes_and_skips_comments() {
        let text = r#"# HELP http_server_request_duration_seconds Duration of HTTP server requests.
# TYPE http_server_request_duration_seconds histogram
http_server_request_duration_seconds_bucket{http_route="/items/{id}",k8s_pod_name="web-1",le="0.005"} 3
http_server_request_duration_seconds_bucket{http_route="/items/{id}",k8s_pod_name="web-1",le="+Inf"} 7
http_server_request_duration_seconds_count{http_route="/items/{id}",k8s_pod_name="web-1"} 7 1700000000000
ferrotel_probe_attached_processes{language="go"} 2
weird{path="a \"quoted\" \\ path\nx"} 1.5e3 # {trace_id="abc"} 1
# EOF
"#;
        let (samples, errors) = parse(text);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(samples.len(), 5);
        assert_eq!(samples[1].labels["le"], "+Inf");
        assert_eq!(samples[1].value, 7.0);
        assert_eq!(samples[2].value, 7.0, "a timestamp is not the value");
        assert_eq!(samples[3].name, "ferrotel_probe_attached_processes");
        assert_eq!(samples[4].labels["path"], "a \"quoted\" \\ path\nx");
        assert_eq!(samples[4].value, 1500.0, "an exemplar is not the value");
    }

    #[test]
    fn broken_lines_are_reported_with_their_number_and_the_rest_is_kept() {
        let (samples, errors) = parse("ok 1\nbad{le=\"1} 2\nalso_bad{a=b} 1\nfine 2\n");
        assert_eq!(samples.len(), 2);
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].line, 2);
        assert_eq!(errors[1].reason, "label value not quoted");
    }
}
