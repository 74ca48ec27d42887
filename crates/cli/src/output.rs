//! How the operator commands speak: aligned tables for people, JSON for scripts, times and sizes
//! as people read them, progress bars only on a terminal, and the exit codes they share
//! (0 ok, 1 the command found a problem or failed, 2 usage or configuration error).

use std::io::IsTerminal;
use std::process::ExitCode;

use chrono::{SecondsFormat, TimeZone, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

/// Exit code of a command that found a problem (or could not finish).
pub const PROBLEMS: u8 = 1;
/// Exit code of a usage or configuration error.
pub const USAGE: u8 = 2;

/// Prints `error: {e}` and returns exit code 1.
pub fn failed(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(PROBLEMS)
}

/// Prints `error: {e}` and returns exit code 2.
pub fn usage(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(USAGE)
}

/// `printed` (the exit code of printing what a command found) when it found no problem, else
/// exit code 1.
pub fn unless_problems(clean: bool, printed: ExitCode) -> ExitCode {
    if clean {
        printed
    } else {
        ExitCode::from(PROBLEMS)
    }
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json(value: &impl Serialize) -> ExitCode {
    match serde_json::to_string_pretty(value) {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => failed(format!("cannot write JSON: {e}")),
    }
}

/// A time in milliseconds since the Unix epoch as RFC 3339 (UTC, milliseconds).
pub fn time_text(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
        .map_or_else(
            || format!("{ms} ms"),
            |t| t.to_rfc3339_opts(SecondsFormat::Millis, true),
        )
}

/// Parses an RFC 3339 time into milliseconds since the Unix epoch.
pub fn parse_time(text: &str) -> Result<u64, String> {
    let time = chrono::DateTime::parse_from_rfc3339(text).map_err(|e| {
        format!("{text:?} is not an RFC 3339 time (like 2026-12-01T10:00:00Z): {e}")
    })?;
    u64::try_from(time.timestamp_millis()).map_err(|_| format!("{text:?} is before 1970"))
}

/// A byte count as people read it (`1.5 MiB`).
pub fn bytes_text(bytes: u64) -> String {
    indicatif::BinaryBytes(bytes).to_string()
}

/// A table printed with its columns aligned.
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new<S: AsRef<str>>(headers: &[S]) -> Self {
        Table {
            headers: headers.iter().map(|h| h.as_ref().to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (as many cells as headers).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Prints the table on stdout (nothing but the headers when it has no row).
    pub fn print(&self) {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.len()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let line = |cells: Vec<&str>| {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect();
            println!("{}", padded.join("  ").trim_end());
        };
        line(self.headers.iter().map(String::as_str).collect());
        for row in &self.rows {
            line(row.iter().map(String::as_str).collect());
        }
    }
}

/// A progress bar of `len` steps on stderr when it is a terminal; hidden otherwise (scripts
/// and logs get the command's quiet lines instead).
pub fn progress_bar(len: u64, unit: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    let template =
        format!("{{bar:40}} {{pos}}/{{len}} {unit} {{msg}} [{{elapsed_precise}}, ETA {{eta}}]");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_and_a_bad_one_says_what_is_wrong() {
        let ms = parse_time("2026-12-01T10:00:00.250Z").expect("a time");
        assert_eq!(time_text(ms), "2026-12-01T10:00:00.250Z");
        assert_eq!(parse_time("2026-12-01T12:00:00+02:00"), Ok(ms - 250));
        assert!(parse_time("yesterday").unwrap_err().contains("RFC 3339"));
        assert!(parse_time("1960-01-01T00:00:00Z")
            .unwrap_err()
            .contains("before 1970"));
    }
}
