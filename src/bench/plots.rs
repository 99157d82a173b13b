//! `--plot DIR`: PNG charts of the results, drawn by the Python module
//! `totemcast.bench_plots` with matplotlib (`python -m totemcast.bench_plots --ours FILE…
//! [--corosync FILE…] --out DIR`), which reads the same results files as `bench report`.
//!
//! The interpreter is `$TOTEMCAST_PYTHON`, else `python3`; the Python front (`totemcast` from
//! pip) sets `TOTEMCAST_PYTHON` to its own interpreter, so there the charts work whenever
//! matplotlib is installed. The cargo-built binary needs an interpreter on `PATH` (or named by
//! `TOTEMCAST_PYTHON`) in which `import totemcast` works.
//!
//! Plots are optional: when the interpreter, the package or matplotlib is missing, one line
//! on stderr says so and how to install it, and the command goes on and ends as it would
//! without `--plot`. [`prepare`] checks before a run, so a long benchmark says at its start
//! that it will draw nothing.

#![allow(
    clippy::print_stderr,
    reason = "the notes of a command-line front go to the terminal"
)]

use std::ffi::OsString;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The environment variable naming the Python interpreter that draws the charts.
pub const PYTHON_ENV: &str = "TOTEMCAST_PYTHON";

/// The Python module that draws the charts.
pub const MODULE: &str = "totemcast.bench_plots";

/// Exit status of the module when matplotlib is missing (it has said so on stderr):
/// `EXIT_NO_MATPLOTLIB` in `python/totemcast/bench_plots.py`.
pub const EXIT_NO_MATPLOTLIB: i32 = 3;

/// How to get everything the charts need.
const INSTALL: &str = "pip install 'totemcast[plot]' into that interpreter, or set \
                       TOTEMCAST_PYTHON to one that has totemcast and matplotlib";

/// A checked way to draw charts into a directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plotter {
    /// The interpreter.
    pub python: OsString,
    /// Where the PNG files go.
    pub dir: PathBuf,
}

/// `$TOTEMCAST_PYTHON`, else `python3`.
#[must_use]
pub fn python() -> OsString {
    std::env::var_os(PYTHON_ENV)
        .filter(|python| !python.is_empty())
        .unwrap_or_else(|| "python3".into())
}

/// Creates `dir` and checks that [`python`] can draw (`--check`). `Ok(None)` when it cannot,
/// after one line on stderr saying why and how to fix it; `Err` only when `dir` cannot be
/// created.
pub fn prepare(dir: &Path) -> Result<Option<Plotter>, String> {
    prepare_with(python(), dir)
}

/// [`prepare`] with this interpreter.
fn prepare_with(python: OsString, dir: &Path) -> Result<Option<Plotter>, String> {
    std::fs::create_dir_all(dir).map_err(|error| format!("--plot {}: {error}", dir.display()))?;
    let shown = python.to_string_lossy().into_owned();
    let checked = Command::new(&python)
        .args(["-m", MODULE, "--check"])
        .stdin(Stdio::null())
        .output();
    let output = match checked {
        Ok(output) => output,
        Err(error) => {
            eprintln!("totemcast bench: no plots: cannot run {shown} ({error}); {INSTALL}");
            return Ok(None);
        }
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    match output.status.code() {
        Some(0) => Ok(Some(Plotter {
            python,
            dir: dir.to_path_buf(),
        })),
        Some(EXIT_NO_MATPLOTLIB) => {
            // The module's own one line: matplotlib is missing, and how to install it.
            eprintln!("{}", stderr.trim());
            Ok(None)
        }
        _ => {
            let reason = stderr
                .lines()
                .rev()
                .find(|line| !line.trim().is_empty())
                .map_or_else(|| output.status.to_string(), |line| line.trim().to_string());
            eprintln!(
                "totemcast bench: no plots: {shown} cannot run {MODULE} ({reason}); {INSTALL}"
            );
            Ok(None)
        }
    }
}

impl Plotter {
    /// Draws the charts of `ours` beside `corosync` (results files; `corosync` may be empty).
    /// The module lists what it wrote on stderr; its stdout goes to stderr too, so that
    /// `--json` keeps stdout one document.
    pub fn draw(&self, ours: &[PathBuf], corosync: &[PathBuf]) -> Result<(), String> {
        let mut command = Command::new(&self.python);
        command
            .args(["-m", MODULE, "--out"])
            .arg(&self.dir)
            .stdin(Stdio::null());
        for (flag, paths) in [("--ours", ours), ("--corosync", corosync)] {
            for path in paths {
                command.arg(flag).arg(path);
            }
        }
        if let Ok(stderr) = std::io::stderr().as_fd().try_clone_to_owned() {
            command.stdout(Stdio::from(stderr));
        }
        let shown = self.python.to_string_lossy();
        let status = command
            .status()
            .map_err(|error| format!("plots: cannot run {shown}: {error}"))?;
        match status.code() {
            Some(0 | EXIT_NO_MATPLOTLIB) => Ok(()),
            _ => Err(format!("plots: {shown} -m {MODULE} failed ({status})")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_interpreter_is_a_note_not_an_error() {
        let dir = std::env::temp_dir().join(format!("tcb-plots-{}", std::process::id()));
        let plotter = prepare_with("/nonexistent/python3".into(), &dir);
        assert_eq!(plotter, Ok(None));
        assert!(dir.is_dir(), "the directory is made before the check");
        std::fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn an_uncreatable_directory_is_an_error() {
        let error = prepare(Path::new("/proc/no/such/dir")).unwrap_err();
        assert!(error.starts_with("--plot /proc/no/such/dir:"), "{error}");
    }
}
