//! `totemcast-sim`: runs the deterministic simulator over one or many seeds.
//!
//! ```text
//! totemcast-sim [--seed S] [--seeds N] [--first S] [--nodes K] [--faults none|network|all]
//! ```
//! Exits 0 only if every run passes every check. A failure prints the violated property, the
//! tail of the trace and the command that reproduces it; the last line is a summary.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line program"
)]

use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use totemcast::sim::{Faults, Options, Outcome, run};

struct Args {
    seed: Option<u64>,
    seeds: u64,
    first: Option<u64>,
    nodes: Option<usize>,
    faults: Faults,
    twice: bool,
}

const USAGE: &str = "usage: totemcast-sim [--seed S] [--seeds N] [--first S] [--nodes 1..7] \
                     [--faults none|network|all] [--twice]";

fn parse() -> Result<Args, String> {
    let mut args = Args {
        seed: None,
        seeds: 1,
        first: None,
        nodes: None,
        faults: Faults::All,
        twice: false,
    };
    let mut iter = std::env::args().skip(1);
    while let Some(flag) = iter.next() {
        let mut value = |name: &str| iter.next().ok_or(format!("{name} needs a value"));
        match flag.as_str() {
            "--seed" => args.seed = Some(number(&value("--seed")?, "--seed")?),
            "--seeds" => args.seeds = number(&value("--seeds")?, "--seeds")?,
            "--first" => args.first = Some(number(&value("--first")?, "--first")?),
            "--nodes" => {
                let nodes = number(&value("--nodes")?, "--nodes")?;
                if !(1..=7).contains(&nodes) {
                    return Err(format!("--nodes: {nodes} is not in 1..=7"));
                }
                args.nodes = Some(nodes as usize);
            }
            "--faults" => args.faults = value("--faults")?.parse()?,
            "--twice" => args.twice = true,
            "--help" | "-h" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if args.seeds == 0 {
        return Err("--seeds: must be at least 1".into());
    }
    Ok(args)
}

fn number(text: &str, name: &str) -> Result<u64, String> {
    text.parse()
        .map_err(|_| format!("{name}: {text:?} is not a whole number"))
}

fn reproduce(seed: u64, args: &Args) -> String {
    let mut command = format!(
        "cargo run --release --features sim --bin totemcast-sim -- --seed {seed} --faults {}",
        args.faults
    );
    if let Some(nodes) = args.nodes {
        let _ = write!(command, " --nodes {nodes}");
    }
    command
}

fn run_seed(seed: u64, args: &Args) -> Result<Outcome, String> {
    let options = Options::swarm(seed, args.faults, args.nodes);
    let attempt = std::panic::catch_unwind(|| run(&options));
    let outcome = attempt.map_err(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
            .unwrap_or_else(|| "a panic".into());
        format!("panic (an assertion inside a core): {message}")
    })?;
    if args.twice {
        let again = run(&options);
        if again.trace_hash != outcome.trace_hash {
            return Err(format!(
                "nondeterminism: trace hash {:#x} then {:#x}",
                outcome.trace_hash, again.trace_hash
            ));
        }
    }
    Ok(outcome)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let (first, count) = if let Some(seed) = args.seed {
        (seed, 1)
    } else {
        // Fresh seeds unless told where to start; the first one is printed for replay.
        let first = args.first.unwrap_or_else(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            totemcast::prng::splitmix64(nanos)
        });
        (first, args.seeds)
    };
    println!(
        "seeds {first}..+{count} faults={} nodes={:?}",
        args.faults, args.nodes
    );
    let started = Instant::now();
    let next = AtomicU64::new(0);
    let passed = AtomicU64::new(0);
    let simulated_nanos = AtomicU64::new(0);
    let failures = Mutex::new(Vec::new());
    // Hard path → number of runs that reached it.
    let coverage: Mutex<std::collections::BTreeMap<&'static str, u64>> = Mutex::default();
    let workers = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .min(count as usize);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= count {
                        break;
                    }
                    let seed = first.wrapping_add(index);
                    match run_seed(seed, &args) {
                        Ok(outcome) if outcome.violations.is_empty() => {
                            let mut reached = coverage.lock().expect("no panics while held");
                            for &mark in outcome.coverage.keys() {
                                *reached.entry(mark).or_default() += 1;
                            }
                            drop(reached);
                            passed.fetch_add(1, Ordering::Relaxed);
                            let nanos = outcome.simulated.as_nanos() as u64;
                            simulated_nanos.fetch_add(nanos, Ordering::Relaxed);
                            if count == 1 {
                                println!("seed {seed}: ok {:?}", outcome.stats);
                            }
                        }
                        Ok(outcome) => {
                            let mut report = format!("FAIL seed {seed}\n");
                            for violation in outcome.violations.iter().take(5) {
                                let _ = writeln!(report, "  {violation}");
                            }
                            if outcome.violations.len() > 5 {
                                let more = outcome.violations.len() - 5;
                                let _ = writeln!(report, "  … {more} more violations");
                            }
                            let options = Options::swarm(seed, args.faults, args.nodes);
                            let _ = writeln!(report, "  options: {options:?}");
                            let _ = writeln!(report, "  stats: {:?}\n  trace tail:", outcome.stats);
                            for line in &outcome.trace_tail {
                                let _ = writeln!(report, "    {line}");
                            }
                            let _ = writeln!(report, "  reproduce: {}", reproduce(seed, &args));
                            println!("{report}");
                            failures.lock().expect("no panics while held").push(seed);
                        }
                        Err(message) => {
                            println!(
                                "FAIL seed {seed}\n  {message}\n  reproduce: {}\n",
                                reproduce(seed, &args)
                            );
                            failures.lock().expect("no panics while held").push(seed);
                        }
                    }
                }
            });
        }
    });
    let failed = failures.lock().expect("threads joined").len();
    let reached = coverage.into_inner().expect("threads joined");
    if !reached.is_empty() {
        let marks: Vec<String> = reached
            .iter()
            .map(|(mark, runs)| format!("{mark}={runs}"))
            .collect();
        println!("coverage (runs reaching each path): {}", marks.join(" "));
    }
    let simulated = Duration::from_nanos(simulated_nanos.load(Ordering::Relaxed));
    println!(
        "seeds={count} passed={} failed={failed} simulated_s={:.1} wall_s={:.1}",
        passed.load(Ordering::Relaxed),
        simulated.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
