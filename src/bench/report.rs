//! `RESULT` lines (the format of Corosync's harness, `../shared/bench/corosync/cpgbench.c`):
//! parsing, aggregation over repetitions, our result tables, the JSON form, and the side by
//! side comparison with Corosync's figures against the goals of ARCHITECTURE.md §4.
//!
//! A line is `RESULT bench=NAME rep=N role=ROLE key=value …`. Throughput lines have
//! `role=sender|receiver`, `size`, `msgs_s` and `MBps`; latency lines `role=ping_rtt|
//! ping_self_delivery|udp_rtt` with `median_us` and `p99_us`; ours add `role=memory`,
//! `role=failover` and `role=copy_rate` lines. Lines starting with `#` are notes (date, kernel, machine).

#![allow(
    clippy::cast_precision_loss,
    reason = "figures and counts far below 2^52"
)]

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One `RESULT` line: its `key=value` pairs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Line {
    fields: BTreeMap<String, String>,
}

impl Line {
    /// Parses `RESULT k=v …`; `None` for any other line. Tokens without `=` are ignored (as
    /// summarize.py does).
    #[must_use]
    pub fn parse(text: &str) -> Option<Line> {
        let rest = text.strip_prefix("RESULT ")?;
        let fields = rest
            .split_whitespace()
            .filter_map(|token| token.split_once('='))
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        Some(Line { fields })
    }

    /// A line from pairs (in this order when printed, `bench` and `rep` first).
    #[must_use]
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, String)>) -> Line {
        Line {
            fields: pairs
                .into_iter()
                .map(|(key, value)| (key.to_string(), value))
                .collect(),
        }
    }

    /// The value of `key`.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }

    /// The value of `key` as a number.
    #[must_use]
    pub fn number(&self, key: &str) -> Option<f64> {
        self.get(key)?.parse().ok()
    }

    /// Sets `key` (replacing it).
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        self.fields.insert(key.to_string(), value.into());
    }

    /// The benchmark name (`bench=`), `?` if missing.
    #[must_use]
    pub fn bench(&self) -> &str {
        self.get("bench").unwrap_or("?")
    }

    /// The role (`role=`), `?` if missing.
    #[must_use]
    pub fn role(&self) -> &str {
        self.get("role").unwrap_or("?")
    }

    /// The fields, for JSON.
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        let map = self
            .fields
            .iter()
            .map(|(key, value)| {
                let value = value
                    .parse::<f64>()
                    .ok()
                    .filter(|n| n.is_finite())
                    .and_then(serde_json::Number::from_f64)
                    .map_or_else(|| serde_json::Value::String(value.clone()), Into::into);
                (key.clone(), value)
            })
            .collect();
        serde_json::Value::Object(map)
    }
}

impl std::fmt::Display for Line {
    /// `RESULT bench=… rep=… role=… rest…` (the harness's order for the first three).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RESULT")?;
        for key in ["bench", "rep", "role"] {
            if let Some(value) = self.get(key) {
                write!(f, " {key}={value}")?;
            }
        }
        for (key, value) in &self.fields {
            if !matches!(key.as_str(), "bench" | "rep" | "role") {
                write!(f, " {key}={value}")?;
            }
        }
        Ok(())
    }
}

/// The lines and notes of one results file (or one run).
#[derive(Clone, Debug, Default)]
pub struct Results {
    /// The `RESULT` lines in order.
    pub lines: Vec<Line>,
    /// The `# …` lines without the `#`.
    pub notes: Vec<String>,
}

impl Results {
    /// Parses a results file's text.
    #[must_use]
    pub fn parse(text: &str) -> Results {
        let mut results = Results::default();
        for line in text.lines() {
            if let Some(note) = line.strip_prefix('#') {
                results.notes.push(note.trim().to_string());
            } else if let Some(parsed) = Line::parse(line) {
                results.lines.push(parsed);
            }
        }
        results
    }

    /// Adds another file's lines and notes.
    pub fn extend(&mut self, other: Results) {
        self.lines.extend(other.lines);
        self.notes.extend(other.notes);
    }

    /// The value of note `key: value` (the first one).
    #[must_use]
    pub fn note(&self, key: &str) -> Option<&str> {
        self.notes.iter().find_map(|note| {
            note.strip_prefix(key)
                .and_then(|rest| rest.strip_prefix(':'))
                .map(str::trim)
        })
    }

    /// Throughput figures: (bench, role, size) → one (msgs/s, MB/s) per line.
    #[must_use]
    pub fn throughput(&self) -> BTreeMap<(String, String, u64), Vec<Sample>> {
        let mut map: BTreeMap<_, Vec<Sample>> = BTreeMap::new();
        for line in &self.lines {
            let role = line.role();
            if !matches!(role, "sender" | "receiver") {
                continue;
            }
            let (Some(size), Some(msgs_s), Some(mbps)) = (
                line.number("size"),
                line.number("msgs_s"),
                line.number("MBps"),
            ) else {
                continue;
            };
            map.entry((line.bench().to_string(), role.to_string(), size as u64))
                .or_default()
                .push(Sample {
                    rep: line.get("rep").unwrap_or("1").to_string(),
                    values: [msgs_s, mbps],
                });
        }
        map
    }

    /// Latency figures: (bench, role) → one (median µs, p99 µs) per line.
    #[must_use]
    pub fn latency(&self) -> BTreeMap<(String, String), Vec<Sample>> {
        let mut map: BTreeMap<_, Vec<Sample>> = BTreeMap::new();
        for line in &self.lines {
            let role = line.role();
            if !matches!(role, "ping_rtt" | "ping_self_delivery" | "udp_rtt") {
                continue;
            }
            let (Some(median), Some(p99)) = (line.number("median_us"), line.number("p99_us"))
            else {
                continue;
            };
            map.entry((line.bench().to_string(), role.to_string()))
                .or_default()
                .push(Sample {
                    rep: line.get("rep").unwrap_or("1").to_string(),
                    values: [median, p99],
                });
        }
        map
    }

    /// The lines of `role`.
    pub fn with_role<'a>(&'a self, role: &'a str) -> impl Iterator<Item = &'a Line> + 'a {
        self.lines.iter().filter(move |line| line.role() == role)
    }
}

/// One measurement: its repetition label and two figures (msgs/s and MB/s, or median and
/// p99 µs).
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// `rep=` of the line.
    pub rep: String,
    /// The two figures.
    pub values: [f64; 2],
}

/// Median, minimum and maximum of some figures.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stat {
    /// The median (the mean of the middle two for an even count, as Python's `statistics`).
    pub median: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
    /// How many.
    pub count: usize,
}

impl Stat {
    /// The statistics of `values`; `None` when empty.
    #[must_use]
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Stat> {
        let mut values: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let median = if n % 2 == 1 {
            values[n / 2]
        } else {
            f64::midpoint(values[n / 2 - 1], values[n / 2])
        };
        Some(Stat {
            median,
            min: values[0],
            max: values[n - 1],
            count: n,
        })
    }

    /// `median [min-max]` (summarize.py's form), or the median alone for one value (or
    /// several equal ones).
    #[must_use]
    pub fn show(&self, decimals: usize) -> String {
        #[allow(clippy::float_cmp, reason = "equal figures need no range")]
        if self.count == 1 || self.min == self.max {
            format!("{:.*}", decimals, self.median)
        } else {
            format!(
                "{:.*} [{:.*}-{:.*}]",
                decimals, self.median, decimals, self.min, decimals, self.max
            )
        }
    }
}

/// `samples`' figure `index`, one value per repetition (the median of a repetition's lines,
/// e.g. of several receivers), by repetition label.
fn per_rep(samples: &[Sample], index: usize) -> BTreeMap<String, f64> {
    let mut by_rep: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for sample in samples {
        by_rep
            .entry(sample.rep.clone())
            .or_default()
            .push(sample.values[index]);
    }
    by_rep
        .into_iter()
        .filter_map(|(rep, values)| Stat::of(values).map(|stat| (rep, stat.median)))
        .collect()
}

/// The ratio `ours / base` of two sets of samples: the median of the ratios of repetitions
/// run side by side (same `rep` label: the interleaved runs of `make bench-compare`), or the
/// ratio of the medians when no labels pair up.
#[must_use]
pub fn ratio(ours: &[Sample], base: &[Sample], index: usize) -> Option<Stat> {
    let ours_by_rep = per_rep(ours, index);
    let base_by_rep = per_rep(base, index);
    let paired: Vec<f64> = ours_by_rep
        .iter()
        .filter_map(|(rep, value)| base_by_rep.get(rep).map(|base| value / base))
        .collect();
    if !paired.is_empty() {
        return Stat::of(paired);
    }
    let ours = Stat::of(ours.iter().map(|s| s.values[index]))?;
    let base = Stat::of(base.iter().map(|s| s.values[index]))?;
    Stat::of([ours.median / base.median])
}

/// Titles of the benchmarks (Corosync's harness's, and ours).
#[must_use]
pub fn title(bench: &str) -> String {
    let (python, rest) = match bench.strip_prefix("py-") {
        Some(rest) => (true, rest),
        None => (false, bench),
    };
    let (safe, rest) = match rest.strip_suffix("-safe") {
        Some(rest) => (true, rest),
        None => (false, rest),
    };
    let base = match rest {
        "send" => "1 node, 1 sender (a) mcast_joined",
        "send-zcb" => "1 node, 1 sender (b) zcb_mcast_joined",
        "send-batch" => "1 node, 1 sender, batched sends (mcast_many)",
        "fanout" => "1 node, 1 sender + 3 receivers (c)",
        "cluster3-send" => "3 nodes (netns), 1 sender on node 1",
        "cluster3-send-batch" => "3 nodes (netns), 1 sender on node 1, batched sends",
        "cluster3-fanout" => "3 nodes (netns), sender n1, receivers n2+n3",
        "latency" => "1 node, CPG ping-pong round trip (d)",
        "cluster3-latency" => "3 nodes, CPG round trip n1<->n2",
        other => other,
    };
    let mut title = base.to_string();
    if python {
        title.push_str(", Python client");
    }
    if safe {
        title.push_str(", SAFE");
    }
    title
}

/// Markdown tables of one side's results (summarize.py's tables, plus memory and failure
/// detection when present).
#[must_use]
pub fn tables(results: &Results) -> String {
    let mut out = String::new();
    let throughput = results.throughput();
    if !throughput.is_empty() {
        out.push_str("| benchmark | side | msg size (B) | msgs/s | MB/s (10^6 B/s) |\n");
        out.push_str("|---|---|---:|---:|---:|\n");
        let mut keys: Vec<_> = throughput.keys().collect();
        keys.sort_by_key(|(bench, role, size)| (bench_order(bench), bench.clone(), *size, role));
        for key in keys {
            let samples = &throughput[key];
            let (bench, role, size) = key;
            let _ = writeln!(
                out,
                "| {} | {role} | {size} | {} | {} |",
                title(bench),
                show(samples, 0, 0),
                show(samples, 1, 1)
            );
        }
        out.push('\n');
    }
    let latency = results.latency();
    if !latency.is_empty() {
        out.push_str("| latency benchmark (64 B) | median us | p99 us |\n|---|---:|---:|\n");
        let mut keys: Vec<_> = latency.keys().collect();
        keys.sort_by_key(|(bench, role)| (bench_order(bench), bench.clone(), role));
        for key in keys {
            let samples = &latency[key];
            let (bench, role) = key;
            let what = match role.as_str() {
                "ping_self_delivery" => format!("{}: send -> own delivery", title(bench)),
                "udp_rtt" => "reference: UDP loopback round trip".to_string(),
                _ => title(bench),
            };
            let _ = writeln!(
                out,
                "| {what} | {} | {} |",
                show(samples, 0, 1),
                show(samples, 1, 1)
            );
        }
        out.push('\n');
    }
    out.push_str(&node_stats_table(results));
    out.push_str(&memory_table(results));
    out.push_str(&failover_table(&[("", results)]));
    out.push_str(&anomalies(results));
    out
}

/// What went wrong without failing a step: receivers that saw gaps, waits that timed out
/// with events waiting (missed wake-ups), PINGs sent again after a second (stalls).
#[must_use]
pub fn anomalies(results: &Results) -> String {
    let mut out = String::new();
    for line in results.with_role("failed") {
        let size = line
            .get("size")
            .filter(|&size| size != "0")
            .map_or(String::new(), |size| format!(", {size} B"));
        let _ = writeln!(
            out,
            "- {} (rep {}{size}): FAILED, {}",
            title(line.bench()),
            line.get("rep").unwrap_or("?"),
            line.get("reason").unwrap_or("?").replace('_', " ")
        );
    }
    for line in &results.lines {
        for (key, what) in [
            ("gaps", "sequence gaps at a receiver"),
            (
                "wakeups_missed",
                "missed wake-ups (a 1 s wait ended with events waiting)",
            ),
            ("stalls", "PINGs unanswered for 1 s (sent again)"),
            (
                "idle_waits",
                "waits of 1 s without any event while events were due (a request to the node \
                 got things going again)",
            ),
        ] {
            if line.number(key).is_some_and(|n| n > 0.0) {
                let _ = writeln!(
                    out,
                    "- {} (rep {}, {}, {} B): {} {what}",
                    title(line.bench()),
                    line.get("rep").unwrap_or("?"),
                    line.role(),
                    line.get("size").unwrap_or("?"),
                    line.get(key).unwrap_or("?"),
                );
            }
        }
    }
    if out.is_empty() {
        out
    } else {
        format!(
            "Anomalies (a figure with idle waits includes those seconds; a FAILED step has no \
             figure):\n\n{out}\n"
        )
    }
}

/// Where our nodes' time went in each send scenario (the `node_stats` lines; empty without).
#[must_use]
pub fn node_stats_table(results: &Results) -> String {
    let mut by_key: BTreeMap<(usize, String, u64), Vec<&Line>> = BTreeMap::new();
    // A step's node_stats line comes after its sender's line; it names its size (older files:
    // the size of the sender just before it).
    let mut last_size = BTreeMap::new();
    for line in &results.lines {
        let key = (
            line.bench().to_string(),
            line.get("rep").unwrap_or("1").to_string(),
        );
        match line.role() {
            "sender" => {
                if let Some(size) = line.number("size") {
                    last_size.insert(key, size as u64);
                }
            }
            "node_stats" => {
                let size = line
                    .number("size")
                    .map(|size| size as u64)
                    .or_else(|| last_size.get(&key).copied())
                    .unwrap_or(0);
                by_key
                    .entry((bench_order(line.bench()), line.bench().to_string(), size))
                    .or_default()
                    .push(line);
            }
            _ => {}
        }
    }
    if by_key.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "| where the nodes' time went (totemcast) | msg size (B) | node CPU µs per message (all \
         nodes) | nodes' run-queue wait (ms) | messages per token rotation | token rotation \
         (µs) | packets per message | retransmits | flow-control-limited visits |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for ((_, bench, size), lines) in by_key {
        let stat = |key: &str, decimals: usize| {
            Stat::of(lines.iter().filter_map(|l| l.number(key)))
                .map_or("-".into(), |s| s.show(decimals))
        };
        let _ = writeln!(
            out,
            "| {} | {size} | {} | {} | {} | {} | {} | {} | {} |",
            title(&bench),
            stat("cpu_us_per_msg", 2),
            stat("nodes_runqueue_wait_ms", 0),
            stat("msgs_per_token", 1),
            stat("rotation_us", 1),
            stat("packets_per_msg", 3),
            stat("retransmits", 0),
            stat("flow_control_limited", 0),
        );
    }
    out.push('\n');
    out
}

fn show(samples: &[Sample], index: usize, decimals: usize) -> String {
    Stat::of(samples.iter().map(|s| s.values[index])).map_or("-".into(), |s| s.show(decimals))
}

/// The order of the harness's tables.
fn bench_order(bench: &str) -> usize {
    let rest = bench.strip_prefix("py-").unwrap_or(bench);
    let rest = rest.strip_suffix("-safe").unwrap_or(rest);
    [
        "send",
        "send-zcb",
        "send-batch",
        "fanout",
        "cluster3-send",
        "cluster3-send-batch",
        "cluster3-fanout",
        "latency",
        "cluster3-latency",
        "udp",
    ]
    .iter()
    .position(|&name| name == rest)
    .unwrap_or(99)
}

/// The memory lines as a table (empty without any).
#[must_use]
pub fn memory_table(results: &Results) -> String {
    let lines: Vec<&Line> = results.with_role("memory").collect();
    if lines.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "| resident memory | clients | groups | msg size (B) | msgs sent | node RSS (KiB) | \
         node private (KiB) | node shared rings (KiB) | node peak (KiB) | one client RSS (KiB) | \
         client private (KiB) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for line in lines {
        let field = |key: &str| line.get(key).unwrap_or("-").to_string();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            field("case"),
            field("clients"),
            field("groups"),
            field("size"),
            field("msgs"),
            field("node_rss_kb"),
            field("node_anon_kb"),
            field("node_shmem_kb"),
            field("node_hwm_kb"),
            field("client_rss_kb"),
            field("client_anon_kb"),
        );
    }
    out.push('\n');
    out
}

/// The failure-detection lines of each `(implementation, results)` as one table.
#[must_use]
pub fn failover_table(sides: &[(&str, &Results)]) -> String {
    let mut out = String::new();
    for (name, results) in sides {
        let lines: Vec<&Line> = results.with_role("failover").collect();
        if lines.is_empty() {
            continue;
        }
        if out.is_empty() {
            out.push_str(
                "| failure detection (kill -9 of node 3 of 3 → new totem configuration at a \
                 survivor's CPG client) | token (ms) | consensus (ms) | bound: (token + \
                 consensus) × 1.2 (ms) | detected after (ms) | within bound |\n\
                 |---|---:|---:|---:|---:|---|\n",
            );
        }
        let mut by_timers: BTreeMap<(u64, u64), Vec<f64>> = BTreeMap::new();
        for line in lines {
            let (Some(token), Some(consensus), Some(detect)) = (
                line.number("token_ms"),
                line.number("consensus_ms"),
                line.number("detect_ms"),
            ) else {
                continue;
            };
            by_timers
                .entry((token as u64, consensus as u64))
                .or_default()
                .push(detect);
        }
        for ((token, consensus), detects) in by_timers {
            let stat = Stat::of(detects).expect("not empty");
            let bound = bound_ms(token, consensus);
            let implementation = if name.is_empty() {
                String::from("totemcast")
            } else {
                (*name).to_string()
            };
            let _ = writeln!(
                out,
                "| {implementation} | {token} | {consensus} | {bound:.0} | {} | {} |",
                stat.show(0),
                verdict(stat.max <= bound)
            );
        }
    }
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

/// The failure-detection goal: token + consensus + 20 %.
#[must_use]
pub fn bound_ms(token: u64, consensus: u64) -> f64 {
    (token + consensus) as f64 * 1.2
}

fn verdict(met: bool) -> &'static str {
    if met { "yes" } else { "**no**" }
}

/// A goal of ARCHITECTURE.md §4 and how it came out.
#[derive(Clone, Debug, PartialEq)]
pub struct Goal {
    /// What is compared.
    pub figure: String,
    /// The target, e.g. `≥ 10×`.
    pub target: String,
    /// Corosync's figure (or our baseline's), shown.
    pub base: String,
    /// Ours, shown.
    pub ours: String,
    /// The ratio ours / base, shown.
    pub ratio: String,
    /// Met, not met, or not measured (`None`).
    pub met: Option<bool>,
}

/// How a goal compares: ours / base at least or at most `factor`.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Want {
    AtLeast(f64),
    AtMost(f64),
}

impl Want {
    fn show(self) -> String {
        match self {
            Want::AtLeast(f) if f >= 1.0 => format!("≥ {f}×"),
            Want::AtLeast(f) => format!("≥ {:.0} %", f * 100.0),
            Want::AtMost(f) if f < 1.0 => format!("≤ 1/{:.0}", 1.0 / f),
            Want::AtMost(f) => format!("≤ {f}×"),
        }
    }

    fn met(self, ratio: f64) -> bool {
        match self {
            Want::AtLeast(f) => ratio >= f,
            Want::AtMost(f) => ratio <= f,
        }
    }
}

/// Which figure of which lines a goal compares.
struct Metric<'a> {
    results: &'a Results,
    bench: &'a str,
    role: &'a str,
    size: Option<u64>,
    /// 0: msgs/s or median µs; 1: MB/s or p99 µs.
    index: usize,
}

impl Metric<'_> {
    fn samples(&self) -> Vec<Sample> {
        match self.size {
            Some(size) => self
                .results
                .throughput()
                .remove(&(self.bench.to_string(), self.role.to_string(), size))
                .unwrap_or_default(),
            None => self
                .results
                .latency()
                .remove(&(self.bench.to_string(), self.role.to_string()))
                .unwrap_or_default(),
        }
    }

    fn unit(&self) -> &'static str {
        match (self.size, self.index) {
            (Some(_), 0) => " msg/s",
            (Some(_), _) => " MB/s",
            (None, _) => " µs",
        }
    }
}

fn metric<'a>(
    results: &'a Results,
    bench: &'a str,
    role: &'a str,
    size: Option<u64>,
    index: usize,
) -> Metric<'a> {
    Metric {
        results,
        bench,
        role,
        size,
        index,
    }
}

fn goal(figure: &str, want: Want, ours: &Metric<'_>, base: &Metric<'_>) -> Goal {
    let ours_samples = ours.samples();
    let base_samples = base.samples();
    let decimals = usize::from(ours.size.is_none() || ours.index == 1);
    let shown = |metric: &Metric<'_>, samples: &[Sample]| {
        Stat::of(samples.iter().map(|s| s.values[metric.index])).map_or_else(
            || "not measured".to_string(),
            |s| format!("{}{}", s.show(decimals), metric.unit()),
        )
    };
    let ratio = ratio(&ours_samples, &base_samples, ours.index);
    Goal {
        figure: figure.to_string(),
        target: want.show(),
        base: shown(base, &base_samples),
        ours: shown(ours, &ours_samples),
        ratio: ratio.map_or("-".into(), |r| format!("{}×", r.show(2))),
        met: ratio.map(|r| want.met(r.median)),
    }
}

/// The goals of ARCHITECTURE.md §4 evaluated on `ours` against `corosync` (both from one
/// run). Throughput goals compare msgs/s (or MB/s), latency goals the median round trip.
#[must_use]
pub fn goals(ours: &Results, corosync: &Results) -> Vec<Goal> {
    let m = metric;
    let c = corosync;
    let o = ours;
    let mut goals = vec![
        goal(
            "1 node, Rust client, 64 B msg/s, one mcast_joined per message (like cpgbench)",
            Want::AtLeast(10.0),
            &m(o, "send", "sender", Some(64), 0),
            &m(c, "send", "sender", Some(64), 0),
        ),
        goal(
            "1 node, Rust client, 64 B msg/s, batched sends (mcast_many)",
            Want::AtLeast(10.0),
            &m(o, "send-batch", "sender", Some(64), 0),
            &m(c, "send", "sender", Some(64), 0),
        ),
        goal(
            "1 node, Python client (batched sends, dispatch), 64 B msg/s vs Corosync's C client",
            Want::AtLeast(3.0),
            &m(o, "py-send-batch", "sender", Some(64), 0),
            &m(c, "send", "sender", Some(64), 0),
        ),
        goal(
            "1 node, 64 KiB, 1 sender + 3 receivers, MB/s per receiver",
            Want::AtLeast(5.0),
            &m(o, "fanout", "receiver", Some(65536), 1),
            &m(c, "fanout", "receiver", Some(65536), 1),
        ),
        goal(
            "1 node, round trip 64 B, median",
            Want::AtMost(0.2),
            &m(o, "latency", "ping_rtt", None, 0),
            &m(c, "latency", "ping_rtt", None, 0),
        ),
        goal(
            "3 nodes (netns), 64 B msg/s, one mcast_joined per message",
            Want::AtLeast(5.0),
            &m(o, "cluster3-send", "sender", Some(64), 0),
            &m(c, "cluster3-send", "sender", Some(64), 0),
        ),
        goal(
            "3 nodes (netns), 64 B msg/s, batched sends",
            Want::AtLeast(5.0),
            &m(o, "cluster3-send-batch", "sender", Some(64), 0),
            &m(c, "cluster3-send", "sender", Some(64), 0),
        ),
        goal(
            "3 nodes (netns), 64 KiB MB/s",
            Want::AtLeast(5.0),
            &m(o, "cluster3-send", "sender", Some(65536), 1),
            &m(c, "cluster3-send", "sender", Some(65536), 1),
        ),
        goal(
            "3 nodes (netns), round trip 64 B, median",
            Want::AtMost(0.5),
            &m(o, "cluster3-latency", "ping_rtt", None, 0),
            &m(c, "cluster3-latency", "ping_rtt", None, 0),
        ),
    ];
    // SAFE against our own AGREED (Corosync has no SAFE).
    for (nodes, prefix) in [("1 node", ""), ("3 nodes", "cluster3-")] {
        let latency = format!("{prefix}latency");
        let latency_safe = format!("{prefix}latency-safe");
        let mut safe = goal(
            &format!("{nodes}, SAFE round trip vs our AGREED"),
            Want::AtMost(2.0),
            &m(o, &latency_safe, "ping_rtt", None, 0),
            &m(o, &latency, "ping_rtt", None, 0),
        );
        safe.base = format!("{} (ours, AGREED)", safe.base);
        goals.push(safe);
        for size in [64, 65536] {
            let send = format!("{prefix}send");
            let send_safe = format!("{prefix}send-safe");
            let mut safe = goal(
                &format!("{nodes}, SAFE {size} B msg/s vs our AGREED"),
                Want::AtLeast(0.8),
                &m(o, &send_safe, "sender", Some(size), 0),
                &m(o, &send, "sender", Some(size), 0),
            );
            safe.base = format!("{} (ours, AGREED)", safe.base);
            goals.push(safe);
        }
    }
    for (name, results) in [("totemcast", ours), ("Corosync", corosync)] {
        let mut by_timers: BTreeMap<(u64, u64), Vec<f64>> = BTreeMap::new();
        for line in results.with_role("failover") {
            if let (Some(token), Some(consensus), Some(detect)) = (
                line.number("token_ms"),
                line.number("consensus_ms"),
                line.number("detect_ms"),
            ) {
                by_timers
                    .entry((token as u64, consensus as u64))
                    .or_default()
                    .push(detect);
            }
        }
        for ((token, consensus), detects) in by_timers {
            let stat = Stat::of(detects).expect("not empty");
            let bound = bound_ms(token, consensus);
            goals.push(Goal {
                figure: format!(
                    "{name}: kill -9 → new configuration, token {token} ms + consensus \
                     {consensus} ms"
                ),
                target: "≤ (token + consensus) + 20 %".into(),
                base: format!("{bound:.0} ms (bound)"),
                ours: format!("{} ms", stat.show(0)),
                ratio: format!("{:.2}× bound", stat.max / bound),
                met: Some(stat.max <= bound),
            });
        }
    }
    goals
}

/// The comparison: every throughput and latency scenario Corosync's harness ran, with ours
/// beside it (our variants — zero copy, batched, SAFE — next to the Corosync scenario they
/// correspond to), then the goals.
#[must_use]
pub fn comparison(ours: &Results, corosync: &Results) -> String {
    let mut out = String::new();
    out.push_str(
        "| scenario | side | msg size (B) | Corosync msgs/s | totemcast msgs/s | Corosync MB/s | \
         totemcast MB/s | ratio (totemcast / Corosync) |\n|---|---|---:|---:|---:|---:|---:|---:|\n",
    );
    let theirs = corosync.throughput();
    let mine = ours.throughput();
    let mut keys: Vec<_> = mine.keys().collect();
    keys.sort_by_key(|(bench, role, size)| {
        (bench_order(bench), *size, role.clone(), bench.clone())
    });
    let empty = Vec::new();
    for key @ (bench, role, size) in keys {
        let base = theirs
            .get(&(counterpart(bench), role.clone(), *size))
            .unwrap_or(&empty);
        let ours = &mine[key];
        let ratio = ratio(ours, base, 0).map_or("-".into(), |r| format!("{}×", r.show(2)));
        let _ = writeln!(
            out,
            "| {} | {role} | {size} | {} | {} | {} | {} | {ratio} |",
            title(bench),
            show(base, 0, 0),
            show(ours, 0, 0),
            show(base, 1, 1),
            show(ours, 1, 1),
        );
    }
    out.push_str(
        "\n| latency (64 B) | Corosync median us | totemcast median us | Corosync p99 us | \
         totemcast p99 us | ratio of medians (totemcast / Corosync) |\n\
         |---|---:|---:|---:|---:|---:|\n",
    );
    let theirs = corosync.latency();
    let mine = ours.latency();
    let mut keys: Vec<_> = mine.keys().collect();
    keys.sort_by_key(|(bench, role)| (bench_order(bench), role.clone(), bench.clone()));
    for key @ (bench, role) in keys {
        let base = theirs
            .get(&(counterpart(bench), role.clone()))
            .unwrap_or(&empty);
        let ours = &mine[key];
        let ratio = ratio(ours, base, 0).map_or("-".into(), |r| format!("{}×", r.show(2)));
        let what = if role == "ping_self_delivery" {
            format!("{}: send -> own delivery", title(bench))
        } else {
            title(bench)
        };
        let _ = writeln!(
            out,
            "| {what} | {} | {} | {} | {} | {ratio} |",
            show(base, 0, 1),
            show(ours, 0, 1),
            show(base, 1, 1),
            show(ours, 1, 1),
        );
    }
    if let Some(udp) = corosync
        .latency()
        .get(&("udp".to_string(), "udp_rtt".to_string()))
    {
        let _ = writeln!(
            out,
            "| reference: UDP loopback round trip | {} | | {} | | |",
            show(udp, 0, 1),
            show(udp, 1, 1)
        );
    }
    out.push('\n');
    out.push_str(&failover_table(&[
        ("totemcast", ours),
        ("Corosync 3.1.7", corosync),
    ]));
    out.push_str(&goals_table(&goals(ours, corosync)));
    out.push_str(&super::limits::limits(ours, corosync));
    out
}

/// The Corosync scenario that our benchmark `bench` corresponds to.
fn counterpart(bench: &str) -> String {
    let rest = bench.strip_prefix("py-").unwrap_or(bench);
    let rest = rest.strip_suffix("-safe").unwrap_or(rest);
    rest.replace("send-batch", "send")
}

/// The goals as a table.
#[must_use]
pub fn goals_table(goals: &[Goal]) -> String {
    let mut out = String::from(
        "| goal (ARCHITECTURE.md §4) | target | baseline | totemcast | ratio | met |\n\
         |---|---|---:|---:|---:|---|\n",
    );
    for goal in goals {
        let met = match goal.met {
            Some(met) => verdict(met),
            None => "not measured",
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {met} |",
            goal.figure, goal.target, goal.base, goal.ours, goal.ratio
        );
    }
    out
}

/// The JSON form of one side's results: the notes, every line, and the aggregated figures.
#[must_use]
pub fn to_json(results: &Results) -> serde_json::Value {
    let stat = |s: Option<Stat>| {
        s.map_or(
            serde_json::Value::Null,
            |s| serde_json::json!({ "median": s.median, "min": s.min, "max": s.max, "n": s.count }),
        )
    };
    let throughput: Vec<_> = results
        .throughput()
        .into_iter()
        .map(|((bench, role, size), samples)| {
            serde_json::json!({
                "bench": bench,
                "title": title(&bench),
                "role": role,
                "size": size,
                "msgs_s": stat(Stat::of(samples.iter().map(|s| s.values[0]))),
                "MBps": stat(Stat::of(samples.iter().map(|s| s.values[1]))),
            })
        })
        .collect();
    let latency: Vec<_> = results
        .latency()
        .into_iter()
        .map(|((bench, role), samples)| {
            serde_json::json!({
                "bench": bench,
                "title": title(&bench),
                "role": role,
                "median_us": stat(Stat::of(samples.iter().map(|s| s.values[0]))),
                "p99_us": stat(Stat::of(samples.iter().map(|s| s.values[1]))),
            })
        })
        .collect();
    serde_json::json!({
        "notes": results.notes,
        "throughput": throughput,
        "latency": latency,
        "memory": results.with_role("memory").map(Line::to_json).collect::<Vec<_>>(),
        "failover": results.with_role("failover").map(Line::to_json).collect::<Vec<_>>(),
        "results": results.lines.iter().map(Line::to_json).collect::<Vec<_>>(),
    })
}

/// Latency figures of one run, as `cpgbench` prints them: nanosecond samples (sorted here)
/// → `RESULT role=… samples= min_us= median_us= mean_us= p99_us= p999_us= max_us=`.
#[must_use]
pub fn latency_line(role: &str, samples: &mut [u64]) -> Option<Line> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let n = samples.len();
    let us = |ns: u64| format!("{:.1}", ns as f64 / 1e3);
    let mean = samples.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
    Some(Line::from_pairs([
        ("role", role.to_string()),
        ("samples", n.to_string()),
        ("min_us", us(samples[0])),
        ("median_us", us(samples[n / 2])),
        ("mean_us", format!("{:.1}", mean / 1e3)),
        ("p99_us", us(samples[n * 99 / 100])),
        ("p999_us", us(samples[n * 999 / 1000])),
        ("max_us", us(samples[n - 1])),
    ]))
}

#[cfg(test)]
#[allow(clippy::float_cmp, reason = "the figures compared are exact")]
mod tests {
    use super::*;

    const COROSYNC: &str = "\
# date: 2025-01-01T00:00:00Z
# kernel: 6.1
RESULT bench=send rep=1 role=sender api=iovec size=64 members=1 msgs=800000 secs=5.0 \
msgs_s=160000 MBps=10.24 send_phase_msgs_s=160000 try_again=3
RESULT bench=send rep=2 role=sender api=iovec size=64 members=1 msgs=800000 secs=5.0 \
msgs_s=140000 MBps=8.96 send_phase_msgs_s=140000 try_again=3
RESULT bench=fanout rep=1 role=receiver size=65536 msgs=10 secs=1 msgs_s=10000 MBps=655.36 gaps=0
RESULT bench=latency rep=1 role=ping_rtt samples=100 min_us=50.0 median_us=80.0 mean_us=81.0 \
p99_us=150.0 p999_us=200.0 max_us=300.0
RESULT bench=failover rep=1 role=failover impl=corosync token_ms=1650 consensus_ms=1980 \
detect_ms=3700
some other output
";

    const OURS: &str = "\
# date: 2025-01-01T00:10:00Z
RESULT bench=send rep=1 role=sender api=iovec size=64 msgs_s=1600000 MBps=102.4
RESULT bench=send rep=2 role=sender api=iovec size=64 msgs_s=1540000 MBps=98.56
RESULT bench=send-safe rep=1 role=sender api=iovec size=64 msgs_s=1500000 MBps=96
RESULT bench=fanout rep=1 role=receiver size=65536 msgs_s=30000 MBps=1966.08
RESULT bench=fanout rep=1 role=receiver size=65536 msgs_s=32000 MBps=2097.15
RESULT bench=fanout rep=1 role=receiver size=65536 msgs_s=34000 MBps=2228.22
RESULT bench=latency rep=1 role=ping_rtt median_us=10.0 p99_us=30.0
RESULT bench=latency-safe rep=1 role=ping_rtt median_us=12.0 p99_us=30.0
RESULT bench=failover rep=1 role=failover impl=totemcast token_ms=1650 consensus_ms=1980 \
detect_ms=3500
";

    #[test]
    fn parses_result_lines_and_notes_like_summarize_py() {
        let results = Results::parse(COROSYNC);
        assert_eq!(results.lines.len(), 5);
        assert_eq!(results.note("kernel"), Some("6.1"));
        assert_eq!(results.note("date"), Some("2025-01-01T00:00:00Z"));
        let first = &results.lines[0];
        assert_eq!(first.bench(), "send");
        assert_eq!(first.role(), "sender");
        assert_eq!(first.number("msgs_s"), Some(160_000.0));
        assert!(Line::parse("RESULTS x=1").is_none());
        assert!(Line::parse("# RESULT x=1").is_none());
        let tput = results.throughput();
        let send = &tput[&("send".into(), "sender".into(), 64)];
        assert_eq!(send.len(), 2);
        assert_eq!(
            Stat::of(send.iter().map(|s| s.values[0])).unwrap().median,
            150_000.0
        );
    }

    #[test]
    fn a_line_prints_bench_rep_role_first_and_parses_back() {
        let mut line = Line::from_pairs([
            ("size", "64".to_string()),
            ("role", "sender".to_string()),
            ("msgs_s", "12".to_string()),
        ]);
        line.set("rep", "3");
        line.set("bench", "send");
        let text = line.to_string();
        assert!(
            text.starts_with("RESULT bench=send rep=3 role=sender "),
            "{text}"
        );
        assert_eq!(Line::parse(&text), Some(line));
    }

    #[test]
    fn stats_take_python_medians_and_show_ranges() {
        let stat = Stat::of([3.0, 1.0, 2.0, 10.0]).unwrap();
        assert_eq!(stat.median, 2.5);
        assert_eq!((stat.min, stat.max, stat.count), (1.0, 10.0, 4));
        assert_eq!(stat.show(1), "2.5 [1.0-10.0]");
        assert_eq!(Stat::of([7.0]).unwrap().show(0), "7");
        assert!(Stat::of([]).is_none());
        assert!(Stat::of([f64::NAN]).is_none());
    }

    #[test]
    fn ratios_pair_repetitions_run_side_by_side() {
        let ours = Results::parse(OURS).throughput()[&("send".into(), "sender".into(), 64)].clone();
        let base =
            Results::parse(COROSYNC).throughput()[&("send".into(), "sender".into(), 64)].clone();
        // rep 1: 10×, rep 2: 11×.
        let r = ratio(&ours, &base, 0).unwrap();
        assert_eq!(r.count, 2);
        assert!((r.median - 10.5).abs() < 1e-9, "{r:?}");
        // Without common labels: ratio of the medians.
        let relabelled: Vec<Sample> = ours
            .iter()
            .map(|s| Sample {
                rep: format!("x{}", s.rep),
                ..s.clone()
            })
            .collect();
        let r = ratio(&relabelled, &base, 0).unwrap();
        assert!((r.median - 1_570_000.0 / 150_000.0).abs() < 1e-9);
    }

    #[test]
    fn goals_compare_against_the_right_counterparts() {
        let goals = goals(&Results::parse(OURS), &Results::parse(COROSYNC));
        let find = |prefix: &str| {
            goals
                .iter()
                .find(|g| g.figure.starts_with(prefix))
                .unwrap_or_else(|| panic!("no goal {prefix}"))
        };
        let send = find("1 node, Rust client, 64 B msg/s, one");
        assert_eq!(send.met, Some(true));
        assert_eq!(send.target, "≥ 10×");
        assert_eq!(send.ratio, "10.50 [10.00-11.00]×");
        let python = find("1 node, Python client");
        assert_eq!(python.met, None);
        assert_eq!(python.ours, "not measured");
        // Receivers: median of three per repetition, 2097.15 / 655.36 = 3.2.
        let fanout = find("1 node, 64 KiB");
        assert_eq!(fanout.met, Some(false));
        assert!(fanout.ratio.starts_with("3.20"), "{}", fanout.ratio);
        let rtt = find("1 node, round trip");
        assert_eq!(rtt.target, "≤ 1/5");
        assert_eq!(rtt.ratio, "0.12×");
        assert_eq!(rtt.met, Some(true));
        let safe = find("1 node, SAFE round trip");
        assert_eq!(safe.met, Some(true));
        assert!(safe.base.ends_with("(ours, AGREED)"));
        let safe_tput = find("1 node, SAFE 64 B");
        assert_eq!(safe_tput.target, "≥ 80 %");
        assert_eq!(safe_tput.met, Some(true));
        let ours_fail = find("totemcast: kill -9");
        assert_eq!(ours_fail.met, Some(true), "3500 ≤ 1.2 × 3630");
        let theirs_fail = find("Corosync: kill -9");
        assert_eq!(theirs_fail.met, Some(true));
        assert_eq!(find("3 nodes (netns), 64 B msg/s, one").met, None);
    }

    #[test]
    fn tables_show_each_side_and_the_comparison() {
        let ours = Results::parse(OURS);
        let table = tables(&ours);
        assert!(table.contains("| 1 node, 1 sender (a) mcast_joined | sender | 64 | 1570000 [1540000-1600000] | 100.5 [98.6-102.4] |"), "{table}");
        assert!(table.contains("| 1 node, CPG ping-pong round trip (d), SAFE | 12.0 | 30.0 |"));
        assert!(
            table.contains("| totemcast | 1650 | 1980 | 4356 | 3500 | yes |"),
            "{table}"
        );
        let compared = comparison(&ours, &Results::parse(COROSYNC));
        // SAFE sends sit next to Corosync's (AGREED) sends.
        assert!(compared.contains("| 1 node, 1 sender (a) mcast_joined, SAFE | sender | 64 | 150000 [140000-160000] | 1500000 |"), "{compared}");
        assert!(
            compared.contains(
                "| 1 node, CPG ping-pong round trip (d) | 80.0 | 10.0 | 150.0 | 30.0 | 0.12× |"
            ),
            "{compared}"
        );
        assert!(compared.contains("| Corosync 3.1.7 | 1650 | 1980 | 4356 | 3700 | yes |"));
        assert!(compared.contains("| goal (ARCHITECTURE.md §4) |"));
    }

    #[test]
    fn node_stats_sit_beside_their_scenario_and_size() {
        let results = Results::parse(
            "RESULT bench=send rep=1 role=sender size=1024 msgs=1000 msgs_s=10 MBps=1\n\
             RESULT bench=send rep=1 role=node_stats msgs=1000 cpu_us_per_msg=2.50 \
             nodes_runqueue_wait_ms=12 msgs_per_token=40.0 rotation_us=90.0 packets_per_msg=0.500 \
             retransmits=0 flow_control_limited=7\n\
             RESULT bench=send rep=2 role=sender size=1024 msgs=1000 msgs_s=10 MBps=1\n\
             RESULT bench=send rep=2 role=node_stats msgs=1000 cpu_us_per_msg=3.50 \
             nodes_runqueue_wait_ms=14 msgs_per_token=40.0 rotation_us=110.0 packets_per_msg=0.500 \
             retransmits=2 flow_control_limited=9\n\
             RESULT bench=send rep=1 role=sender size=64 msgs=1000 msgs_s=10 MBps=1\n\
             RESULT bench=send rep=1 role=node_stats msgs=1000 cpu_us_per_msg=0.50 \
             nodes_runqueue_wait_ms=1 msgs_per_token=90.0 packets_per_msg=0.050 retransmits=0 \
             flow_control_limited=0\n\
             RESULT bench=send rep=1 role=node_stats size=16384 msgs=10 cpu_us_per_msg=9.00 \
             nodes_runqueue_wait_ms=1 msgs_per_token=1.0 packets_per_msg=12.000 retransmits=0 \
             flow_control_limited=0\n",
        );
        let table = node_stats_table(&results);
        assert!(
            table.contains(
                "| 1 node, 1 sender (a) mcast_joined | 1024 | 3.00 [2.50-3.50] | 13 [12-14] | \
                 40.0 | 100.0 [90.0-110.0] | 0.500 | 1 [0-2] | 8 [7-9] |"
            ),
            "{table}"
        );
        // Sizes from the sender before (one slot per size, same rep label) or named.
        assert!(table.contains("| 1 node, 1 sender (a) mcast_joined | 64 | 0.50 | 1 | 90.0 |"));
        assert!(table.contains("| 1 node, 1 sender (a) mcast_joined | 16384 | 9.00 |"));
        assert!(node_stats_table(&Results::default()).is_empty());
    }

    #[test]
    fn anomalies_are_listed_and_absent_when_none() {
        assert_eq!(anomalies(&Results::parse(OURS)), "");
        let bad = Results::parse(
            "RESULT bench=fanout rep=2 role=receiver size=64 msgs_s=1 MBps=1 gaps=3 \
             wakeups_missed=0\nRESULT bench=latency rep=1 role=ping_rtt_info size=64 stalls=1\n",
        );
        let text = anomalies(&bad);
        assert!(text.contains(
            "- 1 node, 1 sender + 3 receivers (c) (rep 2, receiver, 64 B): 3 sequence gaps"
        ));
        assert!(text.contains("1 PINGs unanswered"));
        let failed = Results::parse(
            "RESULT bench=py-fanout rep=1 role=failed size=1024 reason=the_workers_did_not_finish\n",
        );
        assert_eq!(
            anomalies(&failed),
            "Anomalies (a figure with idle waits includes those seconds; a FAILED step has no \
             figure):\n\n- 1 node, 1 sender + 3 receivers (c), Python client (rep 1, 1024 B): \
             FAILED, the workers did not finish\n\n"
        );
        assert!(!text.contains("wake-ups"));
    }

    #[test]
    fn json_keeps_numbers_as_numbers() {
        let json = to_json(&Results::parse(OURS));
        assert_eq!(json["results"][0]["msgs_s"], 1_600_000.0);
        assert_eq!(json["results"][0]["bench"], "send");
        let send = json["throughput"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["bench"] == "send")
            .unwrap();
        assert_eq!(send["msgs_s"]["n"], 2);
        assert_eq!(send["msgs_s"]["median"], 1_570_000.0);
        assert_eq!(json["failover"][0]["detect_ms"], 3500.0);
    }

    #[test]
    fn latency_lines_use_cpgbench_percentiles() {
        let mut samples: Vec<u64> = (1..=1000).rev().map(|us| us * 1000).collect();
        let line = latency_line("ping_rtt", &mut samples).unwrap();
        assert_eq!(line.get("samples"), Some("1000"));
        assert_eq!(line.get("min_us"), Some("1.0"));
        assert_eq!(line.get("median_us"), Some("501.0"));
        assert_eq!(line.get("p99_us"), Some("991.0"));
        assert_eq!(line.get("p999_us"), Some("1000.0"));
        assert_eq!(line.get("mean_us"), Some("500.5"));
        assert!(latency_line("x", &mut []).is_none());
    }
}
