//! The `totemcast` commands implemented in Rust (`node`, `status`, `keygen`, `bench`), shared by the Rust
//! binary and the Python console script (which hands these commands to [`main`]).
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line front talks to the terminal"
)]

use std::ffi::OsString;
use std::path::PathBuf;

use lexopt::prelude::*;

use crate::node::config_file;
use crate::node::driver::{self, NodeOptions};

/// Where a client looks for its node when nothing else says: `--socket`, then
/// `$TOTEMCAST_SOCKET`, then the config file's `[ipc] socket`, then this.
pub use crate::node::config_file::DEFAULT_SOCKET;

const USAGE: &str = "\
usage: totemcast node --config FILE [--nodeid N] [--history FILE] [--workload RATE]
       totemcast status [--json] [--socket PATH] [--config FILE]
       totemcast cpgtool [--json] [--socket PATH] [--config FILE]
       totemcast keygen [-o FILE]
       totemcast bench [--quick] [--memory] [--failover] [--json] … (totemcast bench --help)";

/// Runs one command (`args` without the program name) and returns the exit status.
#[must_use]
pub fn main(args: Vec<OsString>) -> i32 {
    match run(args) {
        Ok(()) => 0,
        Err(message) => {
            eprintln!("totemcast: {message}");
            1
        }
    }
}

fn run(args: Vec<OsString>) -> Result<(), String> {
    let mut parser = lexopt::Parser::from_args(args);
    let command = match parser.next().map_err(|e| e.to_string())? {
        Some(Value(command)) => command.string().map_err(|e| e.to_string())?,
        Some(Long("help") | Short('h')) | None => {
            println!("{USAGE}");
            return Ok(());
        }
        Some(other) => return Err(format!("{}\n{USAGE}", other.unexpected())),
    };
    match command.as_str() {
        "node" => node(&mut parser),
        "status" => status(&mut parser, false),
        "cpgtool" => status(&mut parser, true),
        "keygen" => keygen(&mut parser),
        "bench" => crate::bench::main(parser.raw_args().map_err(|e| e.to_string())?.collect()),
        other => Err(format!("unknown command {other:?}\n{USAGE}")),
    }
}

fn node(parser: &mut lexopt::Parser) -> Result<(), String> {
    let mut options = NodeOptions::default();
    let mut config = None;
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Long("config") | Short('c') => config = Some(path(parser)?),
            Long("nodeid") => options.nodeid = Some(number(parser, "--nodeid")?),
            Long("history") => options.history = Some(path(parser)?),
            Long("workload") => options.workload_rate = Some(number(parser, "--workload")?),
            Long("help") | Short('h') => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(other.unexpected().to_string()),
        }
    }
    options.config = config.ok_or("node: --config FILE is required")?;
    // The logs' settings live in the config; a config error is reported without them.
    let file = config_file::load(&options.config).map_err(|error| error.to_string())?;
    init_logging(
        file.logging.debug,
        file.logging.format == config_file::LogFormat::Json,
    );
    driver::run(file, &options)
}

/// `status`, or with `groups` `cpgtool`: both ask the node on the resolved socket.
fn status(parser: &mut lexopt::Parser, groups: bool) -> Result<(), String> {
    let mut json = false;
    let mut socket = None;
    let mut config = None;
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Long("json") => json = true,
            Long("socket") => socket = Some(path(parser)?),
            Long("config") | Short('c') => config = Some(path(parser)?),
            other => return Err(other.unexpected().to_string()),
        }
    }
    let socket = match (socket, std::env::var_os("TOTEMCAST_SOCKET"), config) {
        (Some(socket), _, _) => socket,
        (None, Some(socket), _) => PathBuf::from(socket),
        (None, None, Some(config)) => {
            config_file::load(&config)
                .map_err(|error| error.to_string())?
                .ipc
                .socket
        }
        (None, None, None) => PathBuf::from(DEFAULT_SOCKET),
    };
    let ask = if groups {
        driver::groups
    } else {
        driver::status
    };
    let answer = ask(&socket).map_err(|error| error.to_string())?;
    if let Some(error) = answer.get("error") {
        return Err(format!("the node refused: {error}"));
    }
    if json {
        println!("{answer}");
    } else if groups {
        print!("{}", human_groups(&answer));
    } else {
        print!("{}", human_status(&answer));
    }
    Ok(())
}

/// The groups answer like `corosync-cpgtool`: a group per line, then its members.
fn human_groups(answer: &serde_json::Value) -> String {
    use std::fmt::Write;
    let mut out = String::from("Group Name             PID         Node ID\n");
    for group in answer["groups"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "{}", group["name"].as_str().unwrap_or("?"));
        for member in group["members"].as_array().into_iter().flatten() {
            let _ = writeln!(out, "{:>32} {:>11}", member["pid"], member["nodeid"]);
        }
    }
    out
}

/// The status answer as a short table for people.
fn human_status(answer: &serde_json::Value) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let field = |name: &str| answer.get(name).cloned().unwrap_or_default();
    let ring = match answer.get("ring_id") {
        Some(ring) if !ring.is_null() => format!("{}:{}", ring["nodeid"], ring["seq"]),
        _ => "none yet".into(),
    };
    let members: Vec<String> = field("members")
        .as_array()
        .map(|list| list.iter().map(ToString::to_string).collect())
        .unwrap_or_default();
    let _ = writeln!(out, "node        {}", field("nodeid"));
    let _ = writeln!(
        out,
        "cluster     {}",
        field("cluster_name").as_str().unwrap_or("?")
    );
    let _ = writeln!(
        out,
        "state       {}",
        field("state").as_str().unwrap_or("?")
    );
    let _ = writeln!(out, "ring id     {ring}");
    let _ = writeln!(out, "members     {}", members.join(" "));
    let counters = &answer["counters"];
    for (section, names) in [
        (
            "protocol",
            &[
                "tokens_accepted",
                "token_retransmits",
                "token_losses",
                "mcasts_sent",
                "retransmits_sent",
                "messages_delivered",
                "bytes_delivered",
                "flow_control_limited",
                "rings_installed",
                "datagrams_malformed",
            ][..],
        ),
        (
            "crypto",
            &[
                "unauthentic",
                "replayed",
                "stale_session",
                "unknown_node",
                "malformed",
            ][..],
        ),
        (
            "transport",
            &["datagrams_sent", "datagrams_received", "send_errors"][..],
        ),
    ] {
        for name in names {
            if let Some(value) = counters[section].get(*name) {
                let _ = writeln!(out, "{section:<11} {name:<22} {value}");
            }
        }
    }
    out
}

fn keygen(parser: &mut lexopt::Parser) -> Result<(), String> {
    let mut output = PathBuf::from("/etc/totemcast/authkey");
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Short('o') | Long("output") => output = path(parser)?,
            other => return Err(other.unexpected().to_string()),
        }
    }
    if let Some(dir) = output.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|error| format!("{}: {error}", dir.display()))?;
    }
    crate::node::crypto::write_new_authkey(&output).map_err(|error| error.to_string())?;
    println!("wrote a new authkey to {} (mode 0400)", output.display());
    Ok(())
}

fn path(parser: &mut lexopt::Parser) -> Result<PathBuf, String> {
    parser
        .value()
        .map(PathBuf::from)
        .map_err(|error| error.to_string())
}

fn number(parser: &mut lexopt::Parser, name: &str) -> Result<u32, String> {
    let value = parser.value().map_err(|error| error.to_string())?;
    value
        .to_str()
        .and_then(|text| text.parse().ok())
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{name}: expected a positive whole number, got {value:?}"))
}

/// Logs to stderr: `info` (or `debug`), overridden by `$TOTEMCAST_LOG` (a `tracing` filter).
fn init_logging(debug: bool, json: bool) {
    let default = if debug {
        "totemcast=debug"
    } else {
        "totemcast=info"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOTEMCAST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    // A host process (Python) may have installed a subscriber already; that one wins.
    drop(result);
}
