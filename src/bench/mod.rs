//! `totemcast bench`: our node and CPG clients measured in the scenarios of Corosync's
//! harness (`../shared/bench/corosync/`), with its `RESULT` lines, so that its tooling
//! (`summarize.py`) reads both and `make bench-compare` can put them side by side.
//!
//! ```text
//! totemcast bench [--quick] [--sizes 64,1024,16384,65536] [--duration S] [--reps N] …
//!     runs the scenarios; progress on stderr, then the RESULT lines and the tables on stdout
//!     (or one JSON document with --json)
//! totemcast bench report --ours FILE --corosync FILE [--markdown OUT] [--mode TEXT]
//!     the side-by-side comparison of two results files and the goals of ARCHITECTURE.md §4
//! … --plot DIR
//!     either of the above, and PNG charts of the results in DIR (matplotlib, see [`plots`])
//! totemcast bench --role send|recv|ping|pong|watch|hold --socket PATH …
//!     one worker process (cpgbench's modes; started by the scenarios)
//! ```

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line front talks to the terminal"
)]

pub mod copy_rate;
pub mod limits;
pub mod netns;
pub mod plots;
pub mod progress;
pub mod report;
pub mod scenarios;
pub mod worker;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::PathBuf;

use lexopt::prelude::*;

use crate::api::Guarantee;
use progress::Progress;
use report::Results;
use scenarios::{BenchOptions, Client, Part};
use worker::{Api, Role, WorkerArgs};

/// `totemcast bench`'s usage.
pub const USAGE: &str = "\
usage: totemcast bench [--quick] [--memory] [--failover] [--scenarios single,cluster3,memory,failover]
                       [--sizes 64,1024,16384,65536] [--duration S] [--reps N] [--first-rep N]
                       [--receivers N] [--lat-iters N] [--lat-iters-cluster3 N]
                       [--guarantees agreed,safe] [--python-worker 'CMD ARGS']
                       [--token MS] [--failover-reps N] [--json] [--results-out FILE] [--keep]
                       [--quiet] [--plot DIR]
       totemcast bench report --ours FILE… [--corosync FILE…] [--markdown OUT] [--mode TEXT] [--json]
                       [--plot DIR]
       totemcast bench --role send|recv|ping|pong|watch|hold --socket PATH [-g GROUP] [-s SIZE]
                       [-t SECS] [-n COUNT] [-w WARMUP] [-m MEMBERS] [-z | --batch]
                       [--guarantee agreed|safe] [-T TIMEOUT] [--kill PID] [--nodes N]
                       [--handles N] [--groups N] [--group-offset N] [--busy-poll US]

--plot DIR writes PNG charts into DIR: throughput by message size, round trips, and with
Corosync's results the ratios and the goals of ARCHITECTURE.md §4 (a run also leaves its
RESULT lines there as results.txt unless --results-out names a file). It needs matplotlib in
a Python that has totemcast ($TOTEMCAST_PYTHON, else python3; the pip-installed `totemcast`
uses its own): pip install 'totemcast[plot]'. Without it a note says so and nothing else
changes.";

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Run the scenarios.
    Run(RunArgs),
    /// Be one worker process.
    Worker(WorkerArgs),
    /// Compare results files.
    Report(ReportArgs),
    /// Show the usage.
    Help,
}

/// `totemcast bench [options]`.
#[derive(Clone, Debug, PartialEq)]
pub struct RunArgs {
    /// The scenarios and their knobs.
    pub options: BenchOptions,
    /// One JSON document on stdout instead of RESULT lines and tables.
    pub json: bool,
    /// Also write the RESULT lines (with `#` notes) to this file (`run.sh`'s `RESULTS_OUT`).
    pub results_out: Option<PathBuf>,
    /// No progress display.
    pub quiet: bool,
    /// Draw charts into this directory (`--plot`).
    pub plot: Option<PathBuf>,
}

/// `totemcast bench report …`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReportArgs {
    /// Our results files.
    pub ours: Vec<PathBuf>,
    /// Corosync's results files (`run.sh`'s `RESULTS_OUT`).
    pub corosync: Vec<PathBuf>,
    /// Write the report as markdown here (benches/RESULTS.md).
    pub markdown: Option<PathBuf>,
    /// How the run was made (`quick`, `full`), shown in the report.
    pub mode: Option<String>,
    /// JSON on stdout.
    pub json: bool,
    /// Draw charts into this directory (`--plot`).
    pub plot: Option<PathBuf>,
}

/// Runs `totemcast bench ARGS` (the arguments after `bench`).
pub fn main(args: Vec<OsString>) -> Result<(), String> {
    match parse(args)? {
        Command::Help => {
            println!("{USAGE}");
            Ok(())
        }
        Command::Worker(args) => worker::run(&args).map_err(|error| error.to_string()),
        Command::Report(args) => run_report(&args),
        Command::Run(args) => run_scenarios(&args),
    }
}

/// Parses the arguments after `bench`.
pub fn parse(args: Vec<OsString>) -> Result<Command, String> {
    let is_worker = args.iter().any(|arg| arg == "--role");
    let is_report = args.first().is_some_and(|arg| arg == "report");
    let mut parser = lexopt::Parser::from_args(args);
    if is_worker {
        parse_worker(&mut parser)
    } else if is_report {
        let _ = parser.next();
        parse_report(&mut parser)
    } else {
        parse_run(&mut parser)
    }
}

fn err(error: impl std::fmt::Display) -> String {
    error.to_string()
}

fn value<T: std::str::FromStr>(parser: &mut lexopt::Parser, name: &str) -> Result<T, String> {
    let raw = parser.value().map_err(err)?;
    raw.to_str()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| format!("{name}: cannot read {raw:?}"))
}

fn list<T>(
    parser: &mut lexopt::Parser,
    name: &str,
    item: impl Fn(&str) -> Option<T>,
) -> Result<Vec<T>, String> {
    let raw: String = value(parser, name)?;
    let items: Option<Vec<T>> = raw
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| item(s.trim()))
        .collect();
    match items {
        Some(items) if !items.is_empty() => Ok(items),
        _ => Err(format!("{name}: cannot read {raw:?}")),
    }
}

fn guarantee(name: &str) -> Option<Guarantee> {
    Some(match name.to_ascii_lowercase().as_str() {
        "agreed" => Guarantee::Agreed,
        "safe" => Guarantee::Safe,
        "fifo" => Guarantee::Fifo,
        "unordered" => Guarantee::Unordered,
        _ => return None,
    })
}

/// A knob given on the command line, applied once `--quick` has set its defaults.
type Setter = Box<dyn FnOnce(&mut BenchOptions)>;

fn parse_run(parser: &mut lexopt::Parser) -> Result<Command, String> {
    let mut options = BenchOptions::default();
    let mut parts: Option<BTreeSet<Part>> = None;
    let mut extra: BTreeSet<Part> = BTreeSet::new();
    // Applied after --quick, whatever the order.
    let mut set: Vec<Setter> = Vec::new();
    let mut quick = false;
    let mut run = RunArgs {
        options: BenchOptions::default(),
        json: false,
        results_out: None,
        quiet: false,
        plot: None,
    };
    while let Some(arg) = parser.next().map_err(err)? {
        match arg {
            Long("quick") => quick = true,
            Long("memory") => {
                extra.insert(Part::Memory);
            }
            Long("failover") => {
                extra.insert(Part::Failover);
            }
            Long("scenarios") => {
                parts = Some(
                    list(parser, "--scenarios", Part::parse)?
                        .into_iter()
                        .collect(),
                );
            }
            Long("sizes") => {
                let sizes = list(parser, "--sizes", |s| s.parse().ok().filter(|&n| n > 0))?;
                set.push(Box::new(move |o| o.sizes = sizes));
            }
            Long("duration") => {
                let secs: f64 = value(parser, "--duration")?;
                if !(secs > 0.0 && secs.is_finite()) {
                    return Err("--duration: expected seconds above 0".into());
                }
                set.push(Box::new(move |o| o.duration = secs));
            }
            Long("reps") => {
                let reps: u32 = value(parser, "--reps")?;
                set.push(Box::new(move |o| o.reps = reps.max(1)));
            }
            Long("first-rep") => {
                let first: u32 = value(parser, "--first-rep")?;
                set.push(Box::new(move |o| o.first_rep = first));
            }
            Long("receivers") => {
                let n: usize = value(parser, "--receivers")?;
                set.push(Box::new(move |o| o.receivers = n.max(1)));
            }
            Long("lat-iters") => {
                let n: u64 = value(parser, "--lat-iters")?;
                set.push(Box::new(move |o| o.lat_iters = n.max(1)));
            }
            Long("lat-iters-cluster3") => {
                let n: u64 = value(parser, "--lat-iters-cluster3")?;
                set.push(Box::new(move |o| o.lat_iters_cluster3 = n.max(1)));
            }
            Long("guarantees") => {
                let mut list = list(parser, "--guarantees", guarantee)?;
                list.sort_by_key(|g| u32::from(*g) != 2);
                list.dedup();
                set.push(Box::new(move |o| o.guarantees = list));
            }
            Long("python-worker") => {
                let command: String = value(parser, "--python-worker")?;
                let argv: Vec<String> = command.split_whitespace().map(String::from).collect();
                if argv.is_empty() {
                    return Err("--python-worker: an empty command".into());
                }
                set.push(Box::new(move |o| {
                    o.python_worker = Some(argv);
                    if !o.clients.contains(&Client::Python) {
                        o.clients.push(Client::Python);
                    }
                }));
            }
            Long("token") => {
                let token: u32 = value(parser, "--token")?;
                set.push(Box::new(move |o| o.token_ms = Some(token)));
            }
            Long("failover-reps") => {
                let n: u32 = value(parser, "--failover-reps")?;
                set.push(Box::new(move |o| o.failover_reps = n.max(1)));
            }
            Long("json") => run.json = true,
            Long("results-out") => {
                run.results_out = Some(value::<String>(parser, "--results-out")?.into());
            }
            Long("plot") => run.plot = Some(value::<String>(parser, "--plot")?.into()),
            Long("keep") => options.keep = true,
            Long("quiet") | Short('q') => run.quiet = true,
            Long("help") | Short('h') => return Ok(Command::Help),
            other => return Err(format!("{}\n{USAGE}", other.unexpected())),
        }
    }
    if quick {
        options.quick();
    }
    for apply in set {
        apply(&mut options);
    }
    options.parts = match parts {
        Some(mut parts) => {
            parts.extend(extra);
            parts
        }
        // --memory or --failover alone run just those.
        None if !extra.is_empty() => extra,
        None => options.parts,
    };
    run.options = options;
    Ok(Command::Run(run))
}

fn parse_worker(parser: &mut lexopt::Parser) -> Result<Command, String> {
    let mut args = WorkerArgs::default();
    while let Some(arg) = parser.next().map_err(err)? {
        match arg {
            Long("role") => {
                let name: String = value(parser, "--role")?;
                args.role =
                    Role::parse(&name).ok_or_else(|| format!("--role: no role {name:?}"))?;
            }
            Long("socket") => args.socket = value::<String>(parser, "--socket")?.into(),
            Short('g') | Long("group") => args.group = value(parser, "-g")?,
            Short('s') | Long("size") => args.size = value(parser, "-s")?,
            Short('t') | Long("secs") => args.secs = value(parser, "-t")?,
            Short('n') | Long("count") => args.count = Some(value(parser, "-n")?),
            Short('w') | Long("warmup") => args.warmup = value(parser, "-w")?,
            Short('m') | Long("members") => args.members = value(parser, "-m")?,
            Short('z') | Long("zcb") => args.api = Api::Zcb,
            Long("batch") => args.api = Api::Batch,
            Long("guarantee") => {
                let name: String = value(parser, "--guarantee")?;
                args.guarantee =
                    guarantee(&name).ok_or_else(|| format!("--guarantee: no {name:?}"))?;
            }
            Short('T') | Long("timeout") => args.timeout_s = value(parser, "-T")?,
            Long("kill") => args.kill = Some(value(parser, "--kill")?),
            Long("nodes") => args.nodes = value(parser, "--nodes")?,
            Long("handles") => args.handles = value(parser, "--handles")?,
            Long("groups") => args.groups = value(parser, "--groups")?,
            Long("group-offset") => args.group_offset = value(parser, "--group-offset")?,
            Long("busy-poll") => args.busy_poll_us = Some(value(parser, "--busy-poll")?),
            Long("help") | Short('h') => return Ok(Command::Help),
            other => return Err(format!("{}\n{USAGE}", other.unexpected())),
        }
    }
    Ok(Command::Worker(args))
}

fn parse_report(parser: &mut lexopt::Parser) -> Result<Command, String> {
    let mut args = ReportArgs::default();
    while let Some(arg) = parser.next().map_err(err)? {
        match arg {
            Long("ours") => args.ours.push(value::<String>(parser, "--ours")?.into()),
            Long("corosync") => args
                .corosync
                .push(value::<String>(parser, "--corosync")?.into()),
            Long("markdown") => args.markdown = Some(value::<String>(parser, "--markdown")?.into()),
            Long("mode") => args.mode = Some(value(parser, "--mode")?),
            Long("json") => args.json = true,
            Long("plot") => args.plot = Some(value::<String>(parser, "--plot")?.into()),
            Long("help") | Short('h') => return Ok(Command::Help),
            other => return Err(format!("{}\n{USAGE}", other.unexpected())),
        }
    }
    if args.ours.is_empty() {
        return Err("report: --ours FILE is required".into());
    }
    Ok(Command::Report(args))
}

/// Facts about this machine and build, as `# key: value` notes (run.sh writes the same
/// kind of header).
#[must_use]
pub fn machine_notes() -> Vec<String> {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map_or_else(|| "?".into(), |(_, name)| name.trim().to_string());
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    vec![
        format!("date: {}", utc_now()),
        format!("implementation: totemcast {}", env!("CARGO_PKG_VERSION")),
        format!(
            "build: {}",
            if cfg!(debug_assertions) {
                "debug (figures are meaningless)"
            } else {
                "release"
            }
        ),
        format!("kernel: {}", read("/proc/sys/kernel/osrelease").trim()),
        format!("cpu: {cpu} x {cores}"),
        format!("load_start: {}", read("/proc/loadavg").trim()),
    ]
}

/// Now as `YYYY-MM-DDTHH:MM:SSZ`.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    utc(secs)
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (the civil-from-days algorithm).
fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rest = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The RESULT lines with their notes, as a results file holds them.
#[must_use]
pub fn results_text(results: &Results) -> String {
    let mut out = String::new();
    for note in &results.notes {
        let _ = writeln!(out, "# {note}");
    }
    for line in &results.lines {
        let _ = writeln!(out, "{line}");
    }
    out
}

fn run_scenarios(args: &RunArgs) -> Result<(), String> {
    if cfg!(debug_assertions) {
        eprintln!("totemcast bench: this is a debug build; its figures mean nothing");
    }
    // Before the run: a long benchmark says at once that it cannot draw.
    let plotter = match &args.plot {
        Some(dir) => plots::prepare(dir)?,
        None => None,
    };
    // Ctrl-C or SIGTERM: the scenarios stop their workers and nodes and delete their
    // namespaces; a second one ends this process at once.
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register_conditional_shutdown(
            signal,
            130,
            std::sync::Arc::clone(&flag),
        );
        let _ = signal_hook::flag::register(signal, std::sync::Arc::clone(&flag));
    }
    std::thread::spawn(move || {
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        scenarios::INTERRUPTED.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let mut progress = Progress::new(args.quiet);
    let mut results = Results {
        lines: Vec::new(),
        notes: machine_notes(),
    };
    let outcome = scenarios::run(&args.options, &mut progress, &mut results.lines);
    results.notes.push(format!(
        "load_end: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    ));
    results
        .notes
        .push(format!("elapsed_s: {:.0}", progress.elapsed_s()));
    // The charts are drawn from a results file: --results-out's, else one beside them.
    let results_file = match (&args.results_out, &plotter) {
        (Some(path), _) => Some(path.clone()),
        (None, Some(plotter)) => Some(plotter.dir.join("results.txt")),
        (None, None) => None,
    };
    if let Some(path) = &results_file {
        std::fs::write(path, results_text(&results))
            .map_err(|error| format!("{}: {error}", path.display()))?;
    }
    if args.json {
        let json = report::to_json(&results);
        println!("{}", serde_json::to_string_pretty(&json).map_err(err)?);
    } else {
        print!("{}", results_text(&results));
        println!();
        print!("{}", report::tables(&results));
    }
    let drawn = match (&plotter, results_file) {
        (Some(plotter), Some(file)) => plotter.draw(&[file], &[]),
        _ => Ok(()),
    };
    // A failed step is the error to report; the charts of what did run are drawn anyway.
    outcome.and(drawn)
}

fn load(paths: &[PathBuf]) -> Result<Results, String> {
    let mut results = Results::default();
    for path in paths {
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("{}: {error}", path.display()))?;
        results.extend(Results::parse(&text));
    }
    Ok(results)
}

fn run_report(args: &ReportArgs) -> Result<(), String> {
    let ours = load(&args.ours)?;
    let corosync = load(&args.corosync)?;
    let plotter = match &args.plot {
        Some(dir) => plots::prepare(dir)?,
        None => None,
    };
    if args.json {
        let goals: Vec<serde_json::Value> = report::goals(&ours, &corosync)
            .into_iter()
            .map(|goal| {
                serde_json::json!({
                    "figure": goal.figure, "target": goal.target, "baseline": goal.base,
                    "totemcast": goal.ours, "ratio": goal.ratio, "met": goal.met,
                })
            })
            .collect();
        let json = serde_json::json!({
            "totemcast": report::to_json(&ours),
            "corosync": report::to_json(&corosync),
            "goals": goals,
        });
        println!("{}", serde_json::to_string_pretty(&json).map_err(err)?);
    } else if corosync.lines.is_empty() {
        print!("{}", report::tables(&ours));
    } else {
        print!("{}", report::comparison(&ours, &corosync));
    }
    if let Some(path) = &args.markdown {
        let text = markdown(&ours, &corosync, args.mode.as_deref());
        std::fs::write(path, text).map_err(|error| format!("{}: {error}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    match plotter {
        Some(plotter) => plotter.draw(&args.ours, &args.corosync),
        None => Ok(()),
    }
}

/// benches/RESULTS.md: when, where and how, the comparison, the goals and the memory figure.
#[must_use]
pub fn markdown(ours: &Results, corosync: &Results, mode: Option<&str>) -> String {
    let mut out = String::from("# totemcast and Corosync 3.1.7, side by side\n\n");
    let date = ours.note("date").or(corosync.note("date")).unwrap_or("?");
    let _ = writeln!(
        out,
        "Produced by `make bench-compare` ({} mode) on {date}. Both sides ran in one run on one \
         machine, interleaved; only the ratios are meaningful (the machine is shared and \
         noisy).\n",
        mode.unwrap_or("unspecified")
    );
    out.push_str("## Machine and run\n\n| | |\n|---|---|\n");
    // Each slot's results file repeats these; the first says it (the run's own notes come
    // first, so its load_start and load_end win over a slot's).
    for key in [
        "mode",
        "interleaving",
        "cpu",
        "cores",
        "memory",
        "kernel",
        "load_start",
        "load_end",
        "implementation",
        "build",
        "corosync",
        "libqb",
        "python",
    ] {
        if let Some(value) = ours.note(key).or(corosync.note(key)) {
            let _ = writeln!(out, "| {key} | {value} |");
        }
    }
    out.push('\n');
    if corosync.lines.is_empty() {
        out.push_str("## totemcast (no Corosync results given)\n\n");
        out.push_str(&report::tables(ours));
    } else {
        out.push_str("## Side by side\n\nMedians over the repetitions with [min-max]; ratios are the median of the ratios of repetitions run next to each other. `send-batch` and SAFE rows are compared with Corosync's `cpg_mcast_joined` AGREED figure (Corosync has neither).\n\n");
        out.push_str(&report::comparison(ours, corosync));
        out.push('\n');
        out.push_str(&report::anomalies(ours));
    }
    let stats = report::node_stats_table(ours);
    if !stats.is_empty() {
        out.push_str("## Where our nodes' time went\n\nPer send and round-trip scenario, from `/proc/PID/task/*/schedstat` of the node processes (CPU time, and time spent runnable but waiting for a core) and node 1's counters (`totemcast status`): CPU per message sent (a round trip is two), messages ordered per token rotation, the mean time of a rotation (the step's duration over the tokens node 1 accepted), totem packets per message (below 1: messages packed together; above 1: fragments), retransmissions and token visits on which flow control held messages back.\n\n");
        out.push_str(&stats);
    }
    let memory = report::memory_table(ours);
    if !memory.is_empty() {
        let layout = crate::ipc::connection::Layout::default();
        let mib = |bytes: usize| bytes >> 20;
        let _ = write!(
            out,
            "## Resident memory (totemcast)\n\nKiB from `/proc/PID/status` (`VmRSS`, `RssAnon`, `RssShmem`, `VmHWM`). The IPC rings are shared memory, counted in the RSS of both the node and its client once touched ({} MiB of address space per client: {} MiB request ring, {} MiB event ring, {} MiB zero-copy arena).\n\n",
            mib(layout.region_len()),
            mib(layout.request_capacity),
            mib(layout.event_capacity),
            mib(layout.zcb_capacity),
        );
        out.push_str(&memory);
    }
    out
}

#[cfg(test)]
#[allow(clippy::float_cmp, reason = "the figures compared are exact")]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn defaults_are_the_harness_defaults() {
        let Command::Run(run) = parse(args(&[])).unwrap() else {
            panic!("not a run")
        };
        assert_eq!(run.options, BenchOptions::default());
        assert_eq!(run.options.sizes, [64, 1024, 16384, 65536]);
        assert_eq!(run.options.duration, 5.0);
        assert_eq!(run.options.reps, 3);
        assert!(!run.json);
    }

    #[test]
    fn quick_then_explicit_knobs_in_any_order() {
        let Command::Run(run) = parse(args(&[
            "--duration",
            "0.5",
            "--quick",
            "--sizes",
            "64,65536",
            "--guarantees",
            "safe,agreed",
            "--json",
            "--results-out",
            "/tmp/r.txt",
        ]))
        .unwrap() else {
            panic!("not a run")
        };
        let o = &run.options;
        assert_eq!(o.duration, 0.5, "explicit beats --quick");
        assert_eq!(o.reps, 1);
        assert_eq!(o.lat_iters, 2000);
        assert_eq!(o.sizes, [64, 65536]);
        assert_eq!(o.guarantees, [Guarantee::Agreed, Guarantee::Safe]);
        assert!(run.json);
        assert_eq!(run.results_out, Some(PathBuf::from("/tmp/r.txt")));
        assert_eq!(run.plot, None);
    }

    #[test]
    fn plot_takes_a_directory_in_runs_and_reports() {
        let Command::Run(run) = parse(args(&["--quick", "--plot", "plots"])).unwrap() else {
            panic!("not a run")
        };
        assert_eq!(run.plot, Some(PathBuf::from("plots")));
        let Command::Report(report) =
            parse(args(&["report", "--ours", "a", "--plot", "out/plots"])).unwrap()
        else {
            panic!("not a report")
        };
        assert_eq!(report.plot, Some(PathBuf::from("out/plots")));
        let error = parse(args(&["--plot"])).unwrap_err();
        assert!(error.contains("--plot"), "{error}");
    }

    #[test]
    fn memory_and_failover_alone_or_added_to_scenarios() {
        let Command::Run(run) = parse(args(&["--memory"])).unwrap() else {
            panic!()
        };
        assert_eq!(
            run.options.parts.into_iter().collect::<Vec<_>>(),
            [Part::Memory]
        );
        let Command::Run(run) = parse(args(&[
            "--scenarios",
            "single",
            "--failover",
            "--token",
            "1000",
        ]))
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            run.options.parts.into_iter().collect::<Vec<_>>(),
            [Part::Single, Part::Failover]
        );
        assert_eq!(run.options.token_ms, Some(1000));
    }

    #[test]
    fn bad_arguments_say_which() {
        for (bad, says) in [
            (&["--sizes", "64,x"][..], "--sizes"),
            (&["--duration", "0"][..], "--duration"),
            (&["--scenarios", "nope"][..], "--scenarios"),
            (&["--guarantees", "strong"][..], "--guarantees"),
            (&["--frobnicate"][..], "frobnicate"),
            (&["report"][..], "--ours"),
            (&["--role", "dance"][..], "--role"),
        ] {
            let error = parse(args(bad)).unwrap_err();
            assert!(error.contains(says), "{bad:?}: {error}");
        }
    }

    #[test]
    fn worker_arguments_round_trip() {
        let examples = [
            WorkerArgs::default(),
            WorkerArgs {
                role: Role::Recv,
                socket: "/tmp/s.sock".into(),
                group: "bench-fan-64-1".into(),
                size: 65536,
                secs: 1.5,
                count: Some(10),
                warmup: 5,
                members: 4,
                api: Api::Zcb,
                guarantee: Guarantee::Safe,
                timeout_s: 30,
                kill: Some(1234),
                nodes: 5,
                handles: 10,
                groups: 7,
                group_offset: 3,
                busy_poll_us: Some(0),
            },
            WorkerArgs {
                role: Role::Send,
                api: Api::Batch,
                ..WorkerArgs::default()
            },
        ];
        for example in examples {
            let argv: Vec<OsString> = example.to_args().into_iter().map(OsString::from).collect();
            assert_eq!(parse(argv).unwrap(), Command::Worker(example));
        }
    }

    #[test]
    fn report_takes_several_files_per_side() {
        let Command::Report(report) = parse(args(&[
            "report",
            "--ours",
            "a",
            "--ours",
            "b",
            "--corosync",
            "c",
            "--markdown",
            "RESULTS.md",
            "--mode",
            "quick",
        ]))
        .unwrap() else {
            panic!()
        };
        assert_eq!(report.ours, [PathBuf::from("a"), PathBuf::from("b")]);
        assert_eq!(report.corosync, [PathBuf::from("c")]);
        assert_eq!(report.mode.as_deref(), Some("quick"));
    }

    #[test]
    fn dates_are_utc_iso() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_735_689_599), "2024-12-31T23:59:59Z");
    }

    #[test]
    fn markdown_names_mode_machine_and_goals() {
        let ours = Results::parse(
            "# date: 2025-01-01T00:00:00Z\n# kernel: 6.18\n# load_start: 2.00 1.00 0.50 1/100 5\n\
             RESULT bench=send rep=1 role=sender size=64 msgs_s=100 MBps=1\n\
             RESULT bench=memory rep=1 role=memory case=idle-node clients=0 node_rss_kb=5000\n",
        );
        let corosync = Results::parse(
            "# corosync: Corosync Cluster Engine, version '3.1.7'\nRESULT bench=send rep=1 role=sender size=64 msgs_s=10 MBps=0.1\n",
        );
        let text = markdown(&ours, &corosync, Some("quick"));
        assert!(
            text.contains("(quick mode) on 2025-01-01T00:00:00Z"),
            "{text}"
        );
        assert!(text.contains("| kernel | 6.18 |"));
        assert!(text.contains("| load_start | 2.00 1.00 0.50 1/100 5 |"));
        assert!(text.contains("| corosync | Corosync Cluster Engine, version '3.1.7' |"));
        assert!(text.contains("| 1 node, 1 sender (a) mcast_joined | sender | 64 | 10 | 100 |"));
        assert!(text.contains("| idle-node | 0 |"));
        assert!(text.contains("## Resident memory"));
    }
}
