//! Output conventions: `-o table|wide|json|yaml`, colors only when stdout
//! is a terminal (and `NO_COLOR` is unset), tables padded on plain text so
//! that colors never shift columns, and a progress line on stderr while the
//! CLI waits (only when stderr is a terminal: pipes and logs stay clean).

use std::io::{IsTerminal, Write};

use serde::Serialize;

/// `-o`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// More columns.
    Wide,
    Json,
    Yaml,
}

impl Format {
    pub fn is_structured(self) -> bool {
        matches!(self, Format::Json | Format::Yaml)
    }
}

/// Prints `value` as JSON or YAML.
pub fn structured<T: Serialize>(format: Format, value: &T) -> String {
    match format {
        Format::Yaml => serde_yaml::to_string(value).unwrap_or_else(|e| format!("# {e}\n")),
        _ => {
            let mut text =
                serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("\"{e}\""));
            text.push('\n');
            text
        }
    }
}

/// A color for a cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Color {
    Green,
    Yellow,
    Red,
    Dim,
    Bold,
}

/// Whether to emit ANSI colors.
#[derive(Clone, Copy, Debug)]
pub struct Style {
    pub color: bool,
}

impl Style {
    /// Colors when stdout is a terminal and `NO_COLOR` is not set.
    pub fn detect() -> Self {
        Self {
            color: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    pub fn plain() -> Self {
        Self { color: false }
    }

    pub fn paint(&self, text: &str, color: Color) -> String {
        if !self.color {
            return text.to_owned();
        }
        let code = match color {
            Color::Green => "32",
            Color::Yellow => "33",
            Color::Red => "31",
            Color::Dim => "2",
            Color::Bold => "1",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }
}

/// A cell: text and an optional color.
#[derive(Clone, Debug, PartialEq)]
pub struct Cell {
    pub text: String,
    pub color: Option<Color>,
}

impl From<String> for Cell {
    fn from(text: String) -> Self {
        Self { text, color: None }
    }
}

impl From<&str> for Cell {
    fn from(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            color: None,
        }
    }
}

impl Cell {
    pub fn colored(text: impl Into<String>, color: Color) -> Self {
        Self {
            text: text.into(),
            color: Some(color),
        }
    }
}

/// Aligned columns, kubectl style: upper-case headers, three spaces apart.
#[derive(Clone, Debug, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<Cell>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Self {
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<Cell>) {
        self.rows.push(row);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self, style: &Style) -> String {
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.text.chars().count());
            }
        }
        let mut out = String::new();
        let line = |cells: Vec<(String, Option<Color>)>, out: &mut String| {
            let last = cells.len().saturating_sub(1);
            for (i, (text, color)) in cells.into_iter().enumerate() {
                let pad = if i == last {
                    String::new()
                } else {
                    " ".repeat(widths[i] - text.chars().count() + 3)
                };
                let text = match color {
                    Some(c) => style.paint(&text, c),
                    None => text,
                };
                out.push_str(&text);
                out.push_str(&pad);
            }
            out.push('\n');
        };
        line(
            self.headers.iter().map(|h| (h.clone(), None)).collect(),
            &mut out,
        );
        for row in &self.rows {
            line(
                (0..columns)
                    .map(|i| {
                        row.get(i)
                            .map(|c| (c.text.clone(), c.color))
                            .unwrap_or_default()
                    })
                    .collect(),
                &mut out,
            );
        }
        out
    }
}

/// A one-line progress message on stderr, rewritten in place; nothing when
/// stderr is not a terminal. Cleared when dropped.
#[derive(Debug)]
pub struct Progress {
    enabled: bool,
    shown: bool,
}

impl Progress {
    pub fn new() -> Self {
        Self {
            enabled: std::io::stderr().is_terminal(),
            shown: false,
        }
    }

    pub fn disabled() -> Self {
        Self {
            enabled: false,
            shown: false,
        }
    }

    pub fn set(&mut self, message: &str) {
        if !self.enabled {
            return;
        }
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{message}");
        let _ = err.flush();
        self.shown = true;
    }

    pub fn clear(&mut self) {
        if self.enabled && self.shown {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
            self.shown = false;
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}

/// `0.375` s → `375ms`, `0.0021` → `2.1ms`, `2.5` → `2.50s`.
pub fn duration(seconds: Option<f64>) -> String {
    match seconds {
        None => "-".to_owned(),
        Some(s) if s >= 1.0 => format!("{s:.2}s"),
        Some(s) if s >= 0.01 => format!("{:.0}ms", s * 1000.0),
        Some(s) => format!("{:.1}ms", s * 1000.0),
    }
}

/// `0.995` → `99.50%`; `None` → `-`.
pub fn percent(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "-".to_owned(), |r| format!("{:.2}%", r * 100.0))
}

/// Bytes with a binary unit: `1536` → `1.5Ki`.
pub fn bytes(value: Option<f64>) -> String {
    let Some(mut v) = value else {
        return "-".to_owned();
    };
    for unit in ["", "Ki", "Mi", "Gi", "Ti"] {
        if v.abs() < 1024.0 || unit == "Ti" {
            return if unit.is_empty() {
                format!("{v:.0}")
            } else {
                format!("{v:.1}{unit}")
            };
        }
        v /= 1024.0;
    }
    format!("{v:.1}")
}

/// Green at or above 99 %, yellow above 95 %, red below.
pub fn success_color(ratio: Option<f64>) -> Option<Color> {
    ratio.map(|r| {
        if r >= 0.99 {
            Color::Green
        } else if r >= 0.95 {
            Color::Yellow
        } else {
            Color::Red
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colors_do_not_shift_columns_and_are_off_without_a_terminal() {
        let mut table = Table::new(&["NAME", "SUCCESS"]);
        table.push(vec!["a".into(), Cell::colored("100.00%", Color::Green)]);
        table.push(vec![
            "longer-name".into(),
            Cell::colored("50.00%", Color::Red),
        ]);
        let plain = table.render(&Style::plain());
        assert_eq!(
            plain,
            "NAME          SUCCESS\na             100.00%\nlonger-name   50.00%\n"
        );
        let colored = table.render(&Style { color: true });
        assert!(colored.contains("\x1b[32m100.00%\x1b[0m"), "{colored:?}");
        let stripped = colored
            .replace("\x1b[32m", "")
            .replace("\x1b[31m", "")
            .replace("\x1b[0m", "");
        assert_eq!(stripped, plain, "padding is computed on the plain text");
    }

    #[test]
    fn numbers_read_like_a_person_writes_them() {
        assert_eq!(duration(Some(0.375)), "375ms");
        assert_eq!(duration(Some(0.0021)), "2.1ms");
        assert_eq!(duration(Some(2.5)), "2.50s");
        assert_eq!(duration(None), "-");
        assert_eq!(percent(Some(0.995)), "99.50%");
        assert_eq!(bytes(Some(1536.0)), "1.5Ki");
        assert_eq!(bytes(Some(3.0 * 1024.0 * 1024.0)), "3.0Mi");
        assert_eq!(bytes(Some(12.0)), "12");
    }
}
