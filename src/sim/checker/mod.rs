//! Property checkers over recorded histories (PROTOCOL.md §2.2, algorithms in §3.6).
//!
//! Every checker reads a [`History`] after the run and returns the [`Violation`]s it finds, in a
//! deterministic order (no iteration over randomized hash maps), each message naming the
//! processes (`n1#0` = node 1, incarnation 0), messages (`m(n1#0:5)` = counter 5 of `n1#0`),
//! positions (`ring(1:4)/17.0` = ring, seq, index) and log positions (`log[12]` = 13th event of
//! that incarnation's log) involved, so a failing seed prints something a human can follow.
//!
//! [`check_safety`] runs every safety checker; it tolerates histories that simply end (a process
//! alive at the end that has not delivered something yet is not a safety violation).
//! [`check_all_delivered`] is the liveness check L2 for the end of a healed run. Each property
//! also has its own function (`s7_acyclic_order`, ...) so tests can call it alone.
//!
//! Layout: `index` is the pre-pass every checker shares (each incarnation's log, compacted and
//! cut into configuration segments and `com_p(R)` ranges, with dense order-preserving ids for
//! messages, positions and rings, so that the checkers index flat arrays rather than maps and
//! stay fast on histories of millions of records); `integrity` holds S1, S2, S14; `order` holds
//! S7, S8, S9 (with `graph` for the SCC search); `causal` holds S13; `delivery` holds S11, S12
//! and L2;
//! `membership` holds S3, S4, S5, S6, S10.
//!
//! A property's checker reports at most [`SHOWN_PER_PROPERTY`] violations, then one summary
//! line with the number it left out.

mod causal;
mod delivery;
mod graph;
mod index;
mod integrity;
mod membership;
mod order;

#[cfg(test)]
mod testkit;

use std::fmt;

use crate::sim::history::{History, ProcessId};

pub use causal::s13_causal_order;
pub use delivery::{check_all_delivered, s11_self_delivery, s12_safe_delivery};
pub use integrity::{s1_no_creation, s2_no_duplication, s14_position_coherence};
pub use membership::{
    s3_right_configuration, s4_configuration_sequence, s5_configuration_identity,
    s6_transitional_consistency, s10_same_set,
};
pub use order::{s7_acyclic_order, s8_agreed_without_holes, s9_fifo};

use index::Index;

/// How many violations of one property are spelled out before the rest are only counted.
pub const SHOWN_PER_PROPERTY: usize = 50;

/// One broken property.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The property's id in PROTOCOL.md §2: `"S1"`..`"S16"`, `"L1"`, `"L2"`; or `"API"` (a
    /// valid call refused), `"MTU"` (a regular message above netmtu).
    pub property: &'static str,
    /// What broke, naming processes, messages, positions and log indices.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.property, self.message)
    }
}

/// Runs every safety checker (S1–S14; S15 is the CPG layer's, S16 is S5 and S6 together) and
/// returns their violations, grouped by property in that order. Empty means the
/// history is safe. A property's parts, such as S8 (a)/(b)/(c), are named at the start of the
/// message; `property` is just the number.
#[must_use]
pub fn check_safety(history: &History) -> Vec<Violation> {
    safety(&Index::new(history))
}

/// Every safety checker over one shared index.
fn safety(ix: &Index<'_>) -> Vec<Violation> {
    let mut out = Vec::new();
    out.extend(integrity::s1(ix));
    out.extend(integrity::s2(ix));
    out.extend(membership::s3(ix));
    out.extend(membership::s4(ix));
    out.extend(membership::s5(ix));
    out.extend(membership::s6(ix));
    out.extend(order::s7(ix));
    out.extend(order::s8(ix));
    out.extend(order::s9(ix));
    out.extend(membership::s10(ix));
    out.extend(delivery::s11(ix));
    out.extend(delivery::s12(ix));
    out.extend(causal::s13(ix));
    out.extend(integrity::s14(ix));
    out
}

/// Checks the history and, when `live` is given, also [`check_all_delivered`]: the usual call
/// at the end of a healed simulation.
#[must_use]
pub fn check_run(history: &History, live: Option<&[ProcessId]>) -> Vec<Violation> {
    let ix = Index::new(history);
    let mut out = safety(&ix);
    if let Some(live) = live {
        out.extend(delivery::all_delivered(&ix, live));
    }
    out
}

/// Collects one property's violations, spelling out the first [`SHOWN_PER_PROPERTY`].
struct Sink {
    property: &'static str,
    shown: Vec<Violation>,
    hidden: usize,
}

impl Sink {
    fn new(property: &'static str) -> Sink {
        Sink {
            property,
            shown: Vec::new(),
            hidden: 0,
        }
    }

    /// Reports one violation; the message is only built if it will be shown.
    fn report(&mut self, message: impl FnOnce() -> String) {
        if self.shown.len() < SHOWN_PER_PROPERTY {
            self.shown.push(Violation {
                property: self.property,
                message: message(),
            });
        } else {
            self.hidden += 1;
        }
    }

    fn finish(mut self) -> Vec<Violation> {
        if self.hidden > 0 {
            let message = format!(
                "... and {} more {} violations not shown",
                self.hidden, self.property
            );
            self.shown.push(Violation {
                property: self.property,
                message,
            });
        }
        self.shown
    }
}

#[cfg(test)]
mod tests {
    use super::testkit::{Builder, ring};
    use super::*;
    use crate::api::Guarantee;

    #[test]
    fn happy_histories_have_no_violation() {
        for history in [
            testkit::happy(3, 4, Guarantee::Agreed).history,
            testkit::happy(3, 4, Guarantee::Safe).history,
            testkit::happy(1, 3, Guarantee::Fifo).history,
            testkit::mixed().history,
            testkit::membership_change().history,
        ] {
            let found = check_safety(&history);
            assert!(found.is_empty(), "{found:#?}");
        }
        let happy = testkit::happy(3, 4, Guarantee::Agreed);
        assert!(check_run(&happy.history, Some(&happy.procs)).is_empty());
    }

    #[test]
    fn large_histories_are_checked_in_near_linear_time() {
        // 5 nodes x 4000 rounds: 20k messages, 140k records.
        let mut b = testkit::happy(5, 4000, Guarantee::Safe);
        let started = std::time::Instant::now();
        let found = check_run(&b.history, Some(&b.procs));
        assert!(found.is_empty(), "{:#?}", &found[..found.len().min(5)]);
        // One node delivers everything backwards: one giant cycle, many holes.
        let last = b.procs[4];
        let mut positions: Vec<usize> = (0..b.history.records.len())
            .filter(|&i| {
                let r = &b.history.records[i];
                r.process == last
                    && matches!(r.event, crate::sim::history::HistoryEvent::Deliver { .. })
            })
            .collect();
        let events: Vec<_> = positions
            .iter()
            .map(|&i| b.history.records[i].event.clone())
            .collect();
        positions.reverse();
        for (i, event) in positions.into_iter().zip(events) {
            b.history.records[i].event = event;
        }
        let found = check_safety(&b.history);
        assert!(found.iter().any(|v| v.property == "S7"));
        assert!(found.iter().any(|v| v.property == "S8"));
        assert!(found.len() <= 13 * (SHOWN_PER_PROPERTY + 1));
        let elapsed = started.elapsed();
        assert!(elapsed.as_secs() < 60, "took {elapsed:?}");
    }

    #[test]
    fn sink_caps_and_counts() {
        let mut sink = Sink::new("S0");
        for i in 0..SHOWN_PER_PROPERTY + 3 {
            sink.report(|| format!("v{i}"));
        }
        let out = sink.finish();
        assert_eq!(out.len(), SHOWN_PER_PROPERTY + 1);
        assert!(out.last().is_some_and(|v| v.message.contains("3 more S0")));
    }

    #[test]
    fn empty_history_is_fine() {
        let b = Builder::new();
        assert!(check_safety(&b.history).is_empty());
        assert!(check_all_delivered(&b.history, &[]).is_empty());
        let _ = ring(1);
    }
}
