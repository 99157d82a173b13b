//! `totemcast bench` end to end, tiny: one node process, worker processes for every one-node
//! scenario, a few messages each. Checks the shape of what comes out (the JSON document, the
//! RESULT lines a summarize.py-style tool reads, the tables, the progress display), never the
//! speed.

use std::process::Command;

use serde_json::Value;

const BINARY: &str = env!("CARGO_BIN_EXE_totemcast");

/// The smallest run of the one-node part: 64 B, AGREED and SAFE.
const TINY: &[&str] = &[
    "bench",
    "--scenarios",
    "single",
    "--sizes",
    "64",
    "--duration",
    "0.2",
    "--reps",
    "1",
    "--lat-iters",
    "50",
];

fn run(extra: &[&str]) -> (String, String) {
    let output = Command::new(BINARY)
        .args(TINY)
        .args(extra)
        .output()
        .expect("totemcast runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "totemcast bench failed ({}):\n{stderr}\n{stdout}",
        output.status
    );
    (stdout, stderr)
}

fn number(value: &Value) -> f64 {
    value
        .as_f64()
        .unwrap_or_else(|| panic!("{value} is not a number"))
}

#[test]
fn one_node_json_has_every_scenario() {
    let (stdout, stderr) = run(&["--json"]);
    let json: Value = serde_json::from_str(&stdout).expect("stdout is one JSON document");
    let throughput = json["throughput"].as_array().expect("throughput");
    let find = |bench: &str, role: &str| {
        throughput
            .iter()
            .find(|t| t["bench"] == bench && t["role"] == role)
            .unwrap_or_else(|| panic!("no {bench}/{role} in {throughput:?}"))
    };
    for bench in [
        "send",
        "send-zcb",
        "send-batch",
        "fanout",
        "send-safe",
        "fanout-safe",
    ] {
        let entry = find(bench, "sender");
        assert_eq!(entry["size"], 64);
        assert!(number(&entry["msgs_s"]["median"]) > 0.0, "{entry}");
        assert!(number(&entry["MBps"]["median"]) > 0.0, "{entry}");
        assert!(!entry["title"].as_str().unwrap().is_empty());
    }
    // Three receivers per fan-out, none of which missed a message.
    assert_eq!(find("fanout", "receiver")["msgs_s"]["n"], 3);
    let receivers = json["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|line| line["role"] == "receiver");
    for receiver in receivers {
        assert_eq!(receiver["gaps"], 0.0, "{receiver}");
    }
    let latency = json["latency"].as_array().expect("latency");
    for bench in ["latency", "latency-safe"] {
        let rtt = latency
            .iter()
            .find(|l| l["bench"] == bench && l["role"] == "ping_rtt")
            .unwrap_or_else(|| panic!("no {bench} in {latency:?}"));
        let median = number(&rtt["median_us"]["median"]);
        let p99 = number(&rtt["p99_us"]["median"]);
        assert!(median > 0.0 && p99 >= median, "{rtt}");
    }
    let notes: Vec<&str> = json["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    for key in ["date:", "kernel:", "cpu:", "load_start:", "build:"] {
        assert!(
            notes.iter().any(|n| n.starts_with(key)),
            "{key} in {notes:?}"
        );
    }
    // The progress display: one line per step, numbered.
    assert!(
        stderr.contains("[1/8] 1 node · send · 64 B · agreed"),
        "{stderr}"
    );
    assert!(stderr.contains("[8/8] 1 node · latency-safe"), "{stderr}");
}

#[test]
fn one_node_text_is_result_lines_then_tables() {
    let results = std::env::temp_dir().join(format!("bench-cli-{}.txt", std::process::id()));
    let results_arg = results.display().to_string();
    let (stdout, _) = run(&[
        "--guarantees",
        "agreed",
        "--quiet",
        "--results-out",
        &results_arg,
    ]);
    // The harness's RESULT line format, tagged as run.sh tags its lines.
    let lines: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("RESULT "))
        .collect();
    let sender = lines
        .iter()
        .find(|l| l.starts_with("RESULT bench=send rep=1 role=sender "))
        .unwrap_or_else(|| panic!("no send line in {stdout}"));
    for key in [
        "api=iovec",
        "size=64",
        "msgs=",
        "secs=",
        "msgs_s=",
        "MBps=",
        "try_again=",
    ] {
        assert!(sender.contains(key), "{key} in {sender}");
    }
    assert!(lines.iter().any(
        |l| l.starts_with("RESULT bench=latency rep=1 role=ping_rtt ")
            && l.contains("median_us=")
            && l.contains("p99_us=")
    ));
    assert!(!lines.iter().any(|l| l.contains("-safe")), "AGREED only");
    assert!(stdout.contains("| benchmark | side | msg size (B) | msgs/s | MB/s (10^6 B/s) |"));
    assert!(stdout.contains("| 1 node, 1 sender (b) zcb_mcast_joined | sender | 64 |"));
    assert!(stdout.contains("| latency benchmark (64 B) | median us | p99 us |"));
    // --results-out holds the same lines with their notes, which the report reads back.
    let file = std::fs::read_to_string(&results).expect("results file");
    let report = Command::new(BINARY)
        .args(["bench", "report", "--ours", &results_arg])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&results);
    assert!(file.starts_with("# date: "), "{file}");
    assert_eq!(
        file.lines().filter(|l| l.starts_with("RESULT ")).count(),
        lines.len()
    );
    assert!(report.status.success());
    let report = String::from_utf8_lossy(&report.stdout);
    assert!(
        report.contains("| 1 node, 1 sender (a) mcast_joined | sender | 64 |"),
        "{report}"
    );
}

#[test]
fn plot_without_a_usable_python_is_a_note_and_the_report_is_unchanged() {
    let dir = std::env::temp_dir().join(format!("bench-cli-plot-{}", std::process::id()));
    let results = dir.join("r.txt");
    let plots = dir.join("plots");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        &results,
        "RESULT bench=send rep=1 role=sender size=64 msgs_s=100 MBps=0.1\n",
    )
    .unwrap();
    let output = Command::new(BINARY)
        .args(["bench", "report", "--ours"])
        .arg(&results)
        .arg("--plot")
        .arg(&plots)
        .env("TOTEMCAST_PYTHON", dir.join("no-such-python"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stdout.contains("| 1 node, 1 sender (a) mcast_joined | sender | 64 | 100 |"),
        "{stdout}"
    );
    let notes: Vec<&str> = stderr.lines().collect();
    assert_eq!(notes.len(), 1, "{stderr}");
    assert!(
        notes[0].starts_with("totemcast bench: no plots: cannot run ")
            && notes[0].contains("pip install 'totemcast[plot]'"),
        "{stderr}"
    );
    assert!(plots.is_dir(), "the directory is made before the check");
    assert_eq!(std::fs::read_dir(&plots).unwrap().count(), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}
