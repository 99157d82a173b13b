//! The progress display on stderr: `[ 3/42] label … result` per step; on a terminal the
//! current step's line shows its elapsed time while it runs.

#![allow(
    clippy::print_stderr,
    reason = "the progress display is for the terminal"
)]

use std::io::{IsTerminal as _, Write as _};
use std::time::Instant;

/// Steps done out of a total, shown on stderr.
#[derive(Debug)]
pub struct Progress {
    total: usize,
    done: usize,
    quiet: bool,
    tty: bool,
    current: Option<(String, Instant)>,
    last_tick: Option<Instant>,
    started: Instant,
}

impl Progress {
    /// A display on stderr (`quiet`: nothing shown).
    #[must_use]
    pub fn new(quiet: bool) -> Progress {
        Progress {
            total: 0,
            done: 0,
            quiet,
            tty: std::io::stderr().is_terminal(),
            current: None,
            last_tick: None,
            started: Instant::now(),
        }
    }

    /// The number of steps to come.
    pub fn set_total(&mut self, total: usize) {
        self.total = total;
    }

    /// A line of its own (not a step).
    pub fn note(&mut self, text: &str) {
        if !self.quiet {
            eprintln!("{}", self.clear_line(text));
        }
    }

    /// A line that is shown even when quiet (a failure).
    pub fn warn(&mut self, text: &str) {
        eprintln!("{}", self.clear_line(text));
    }

    /// A step starts.
    pub fn begin(&mut self, label: &str) {
        self.done += 1;
        let head = self.head(label);
        if !self.quiet {
            eprint!("{head}");
            let _ = std::io::stderr().flush();
        }
        self.current = Some((label.to_string(), Instant::now()));
    }

    /// While a step runs: on a terminal, its elapsed time (at most five times a second).
    pub fn tick(&mut self) {
        if self.quiet || !self.tty {
            return;
        }
        let Some((label, started)) = &self.current else {
            return;
        };
        if self
            .last_tick
            .is_some_and(|last| last.elapsed().as_millis() < 200)
        {
            return;
        }
        self.last_tick = Some(Instant::now());
        let line = format!(
            "{}{:.1} s",
            self.head(label),
            started.elapsed().as_secs_f64()
        );
        eprint!("{}", self.clear_line(&line));
        let _ = std::io::stderr().flush();
    }

    /// The step ended with `result`.
    pub fn end(&mut self, result: &str) {
        let Some((label, started)) = self.current.take() else {
            return;
        };
        if self.quiet {
            return;
        }
        let line = format!(
            "{}{result} ({:.1} s)",
            self.head(&label),
            started.elapsed().as_secs_f64()
        );
        if self.tty {
            eprintln!("{}", self.clear_line(&line));
        } else {
            eprintln!("{result} ({:.1} s)", started.elapsed().as_secs_f64());
        }
    }

    /// Seconds since the display was made.
    #[must_use]
    pub fn elapsed_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn head(&self, label: &str) -> String {
        let width = self.total.to_string().len();
        format!("[{:>width$}/{}] {label} … ", self.done, self.total)
    }

    /// `text` drawn over the current terminal line.
    fn clear_line(&self, text: &str) -> String {
        if self.tty {
            format!("\r\x1b[2K{text}")
        } else {
            text.to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_count_steps_with_aligned_numbers() {
        let mut progress = Progress::new(true);
        progress.set_total(12);
        progress.begin("one");
        assert_eq!(progress.head("one"), "[ 1/12] one … ");
        progress.end("done");
        assert!(progress.current.is_none());
    }
}
