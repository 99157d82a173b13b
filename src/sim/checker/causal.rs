//! S13, causal order inside a configuration (PROTOCOL.md §2.2; [EVS94] 5): if origin s
//! delivered m1 in `com_s(R)` before originating an AGREED or SAFE m2 in R, every process that
//! delivers m2 in `com(R)` delivered m1 before it. S7 implies it (origination vertices); this
//! check names the causal pair when it breaks. FIFO and UNORDERED m2 promise no causal order.
//!
//! Linear time: s's deliveries in `com_s(R)` form a list D, and m2 depends on a prefix of D
//! (its length when s originated m2). For each process q and each list D it meets, a cursor
//! marks how long a prefix of D q has delivered so far; it only moves forward.

use std::collections::BTreeMap;

use super::index::{Index, Kind, NONE, is_ordered, msg_name};
use super::{Sink, Violation};
use crate::sim::history::History;

/// S13 over a whole history.
#[must_use]
pub fn s13_causal_order(history: &History) -> Vec<Violation> {
    s13(&Index::new(history))
}

pub(super) fn s13(ix: &Index<'_>) -> Vec<Violation> {
    let mut sink = Sink::new("S13");
    // Every list D, by (process index, com index), and mid -> (list id, prefix length) of each
    // AGREED or SAFE message originated after some deliveries.
    let mut lists: Vec<Vec<u32>> = Vec::new();
    let mut depends: Vec<Option<(u32, u32)>> = vec![None; ix.messages()];
    for p in &ix.procs {
        for com in &p.coms {
            if com.ring_id == NONE {
                continue;
            }
            let list_id = lists.len() as u32;
            let mut delivered = Vec::new();
            for seg in &p.segments[com.segments.clone()] {
                for ev in p.body(seg) {
                    match ev.kind {
                        Kind::Deliver if !ev.repeat => delivered.push(ev.mid),
                        Kind::Originate
                            if ix.ring_of(ev.pid) == com.ring_id
                                && !delivered.is_empty()
                                && ix.guarantee(ev.mid).is_some_and(is_ordered)
                                && depends[ev.mid as usize].is_none() =>
                        {
                            depends[ev.mid as usize] = Some((list_id, delivered.len() as u32));
                        }
                        _ => {}
                    }
                }
            }
            lists.push(delivered);
        }
    }
    // Per process: which messages it delivered so far, and a cursor per list it met.
    let mut seen = vec![false; ix.messages()];
    for q in &ix.procs {
        seen.fill(false);
        let mut cursors: BTreeMap<u32, u32> = BTreeMap::new();
        for com in &q.coms {
            for seg in &q.segments[com.segments.clone()] {
                for ev in Index::deliveries(q, seg) {
                    let due = depends[ev.mid as usize]
                        .filter(|_| com.ring_id != NONE && ix.ring_of(ev.pid) == com.ring_id);
                    if let Some((list_id, needed)) = due {
                        let list = &lists[list_id as usize];
                        let cursor = cursors.entry(list_id).or_insert(0);
                        while *cursor < needed && seen[list[*cursor as usize] as usize] {
                            *cursor += 1;
                        }
                        if *cursor < needed {
                            let missing = list[*cursor as usize];
                            sink.report(|| {
                                format!(
                                    "{} delivered {} before {}, which its origin delivered \
                                     before originating it",
                                    ix.at(ev.rec),
                                    msg_name(ix.msg(ev.mid)),
                                    msg_name(ix.msg(missing)),
                                )
                            });
                        }
                    }
                    seen[ev.mid as usize] = true;
                }
            }
        }
    }
    sink.finish()
}

#[cfg(test)]
mod tests {
    use super::super::testkit::{Builder, p, pos, props, ring};
    use super::*;
    use crate::api::Guarantee;

    /// Node 1 delivers node 2's m1, then originates m2; node 3 delivers m2 first.
    fn causal_pair(m2_guarantee: Guarantee, swap_at_3: bool) -> Vec<Violation> {
        let mut b = Builder::new();
        let all = [p(1), p(2), p(3)];
        let r = ring(4);
        for &q in &all {
            b.start(q);
            b.conf_reg(q, r, &[1, 2, 3], &[1, 2, 3]);
        }
        let m1 = b.submit(p(2), 0, Guarantee::Fifo);
        b.originate(m1, pos(r, 1));
        b.deliver(p(1), m1, Guarantee::Fifo, pos(r, 1));
        let m2 = b.submit(p(1), 0, m2_guarantee);
        b.originate(m2, pos(r, 2));
        b.deliver(p(1), m2, m2_guarantee, pos(r, 2));
        b.deliver(p(2), m1, Guarantee::Fifo, pos(r, 1));
        b.deliver(p(2), m2, m2_guarantee, pos(r, 2));
        let first = b.deliver(p(3), m1, Guarantee::Fifo, pos(r, 1));
        let second = b.deliver(p(3), m2, m2_guarantee, pos(r, 2));
        if swap_at_3 {
            b.swap(first, second);
        }
        s13_causal_order(&b.history)
    }

    #[test]
    fn a_message_delivered_before_its_cause_is_reported() {
        assert!(causal_pair(Guarantee::Agreed, false).is_empty());
        let found = causal_pair(Guarantee::Agreed, true);
        assert_eq!(props(&found), ["S13"], "{found:#?}");
        assert!(
            found[0].message.contains("m(n2#0:0)"),
            "{}",
            found[0].message
        );
        assert_eq!(props(&causal_pair(Guarantee::Safe, true)), ["S13"]);
        // FIFO and UNORDERED promise no causal order.
        assert!(causal_pair(Guarantee::Fifo, true).is_empty());
        assert!(causal_pair(Guarantee::Unordered, true).is_empty());
    }

    #[test]
    fn happy_histories_are_causal() {
        for history in [
            super::super::testkit::happy(3, 20, Guarantee::Agreed).history,
            super::super::testkit::mixed().history,
            super::super::testkit::membership_change().history,
        ] {
            let found = s13_causal_order(&history);
            assert!(found.is_empty(), "{found:#?}");
        }
    }
}
