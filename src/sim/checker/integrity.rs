//! Message integrity: S1 (no creation), S2 (no duplication), S14 (positions are coherent).

use std::collections::BTreeSet;

use super::index::{Conf, Index, Kind, NONE, msg_name, pos_name, proc_name};
use super::{Sink, Violation};
use crate::api::Guarantee;
use crate::sim::history::{History, HistoryEvent};

/// S1 — no creation: every `Deliver(m)` (and every `Originate(m)`) comes after a `Submit(m)` by
/// m's origin incarnation, with the same payload hash, length and guarantee; a message id is
/// submitted once, by the incarnation it names.
#[must_use]
pub fn s1_no_creation(history: &History) -> Vec<Violation> {
    s1(&Index::new(history))
}

pub(super) fn s1(ix: &Index<'_>) -> Vec<Violation> {
    let mut sink = Sink::new("S1");
    // mid -> its first submit: record, and what it said (guarantee, payload hash, length).
    let mut submits: Vec<u32> = vec![NONE; ix.messages()];
    let mut submitted: Vec<(Guarantee, u64, usize)> =
        vec![(Guarantee::Unordered, 0, 0); ix.messages()];
    for ev in ix.evs.iter().filter(|ev| ev.kind == Kind::Submit) {
        let record = &ix.history.records[ev.rec as usize];
        let HistoryEvent::Submit {
            msg,
            guarantee,
            payload_hash,
            len,
        } = record.event
        else {
            continue;
        };
        let rec = ev.rec;
        if record.process != msg.origin {
            sink.report(|| {
                format!(
                    "{} submitted {}, whose id names another origin ({})",
                    ix.at(rec),
                    msg_name(msg),
                    proc_name(msg.origin)
                )
            });
        }
        let first = submits[ev.mid as usize];
        if first == NONE {
            submits[ev.mid as usize] = rec;
            submitted[ev.mid as usize] = (guarantee, payload_hash, len);
        } else {
            sink.report(|| {
                format!(
                    "{} submitted twice: at {} and at {}",
                    msg_name(msg),
                    ix.at(first),
                    ix.at(rec)
                )
            });
        }
    }
    for (ev, record) in ix.evs.iter().zip(&ix.history.records) {
        let rec = ev.rec;
        match record.event {
            HistoryEvent::Deliver {
                msg,
                guarantee,
                payload_hash,
                len,
                ..
            } => {
                let sub = submits[ev.mid as usize];
                if sub == NONE {
                    sink.report(|| {
                        format!(
                            "{} delivered {}, which was never submitted",
                            ix.at(rec),
                            msg_name(msg)
                        )
                    });
                    continue;
                }
                if sub > rec {
                    sink.report(|| {
                        format!(
                            "{} delivered {} before it was submitted (at {})",
                            ix.at(rec),
                            msg_name(msg),
                            ix.at(sub)
                        )
                    });
                }
                let (sent_guarantee, sent_hash, sent_len) = submitted[ev.mid as usize];
                if (payload_hash, len, guarantee) != (sent_hash, sent_len, sent_guarantee) {
                    sink.report(|| {
                        format!(
                            "{} delivered {} as (hash {payload_hash:#x}, {len} bytes, {guarantee:?}) \
                             but it was submitted at {} as (hash {sent_hash:#x}, {sent_len} bytes, \
                             {sent_guarantee:?})",
                            ix.at(rec),
                            msg_name(msg),
                            ix.log_at(sub)
                        )
                    });
                }
            }
            HistoryEvent::Originate { msg, .. } => match submits[ev.mid as usize] {
                NONE => sink.report(|| {
                    format!(
                        "{} originated {}, which was never submitted",
                        ix.at(rec),
                        msg_name(msg)
                    )
                }),
                sub if sub > rec => sink.report(|| {
                    format!(
                        "{} originated {} before it was submitted (at {})",
                        ix.at(rec),
                        msg_name(msg),
                        ix.at(sub)
                    )
                }),
                _ => {}
            },
            _ => {}
        }
    }
    sink.finish()
}

/// S2 — no duplication: a node delivers each message at most once, across all its
/// incarnations.
#[must_use]
pub fn s2_no_duplication(history: &History) -> Vec<Violation> {
    s2(&Index::new(history))
}

pub(super) fn s2(ix: &Index<'_>) -> Vec<Violation> {
    let mut sink = Sink::new("S2");
    // mid -> the current node's first delivery of it (valid while `node_of[mid]` is the node).
    let mut first: Vec<u32> = vec![NONE; ix.messages()];
    let mut node_of: Vec<u32> = vec![NONE; ix.messages()];
    for p in &ix.procs {
        let node = p.id.node.0;
        for ev in p.evs.iter().filter(|ev| ev.kind == Kind::Deliver) {
            let m = ev.mid as usize;
            if node_of[m] == node && first[m] != NONE {
                let earlier = first[m];
                sink.report(|| {
                    format!(
                        "node {} delivered {} twice: at {} and again at {}",
                        p.id.node,
                        msg_name(ix.msg(ev.mid)),
                        ix.at(earlier),
                        ix.at(ev.rec)
                    )
                });
            } else {
                node_of[m] = node;
                first[m] = ev.rec;
            }
        }
    }
    sink.finish()
}

/// S14 — position coherence (white-box): across every process's `Deliver` and `Originate`
/// events, each position holds one message and each message has one position; a message is
/// originated once, by its origin, on the ring the origin is in (`reg` of its configuration);
/// and no process delivers a message of a ring it has not installed earlier in its incarnation.
#[must_use]
pub fn s14_position_coherence(history: &History) -> Vec<Violation> {
    s14(&Index::new(history))
}

pub(super) fn s14(ix: &Index<'_>) -> Vec<Violation> {
    let mut sink = Sink::new("S14");
    single_valued(ix, &mut sink);
    // Ring id -> the index of the last incarnation that installed it so far.
    let mut installed: Vec<usize> = vec![usize::MAX; ix.ring_count()];
    for (pi, p) in ix.procs.iter().enumerate() {
        for seg in &p.segments {
            if let Some(Conf::Regular(_)) = seg.conf {
                if seg.reg_id != NONE {
                    installed[seg.reg_id as usize] = pi;
                }
            }
            for ev in p.body(seg) {
                match ev.kind {
                    Kind::Deliver if installed[ix.ring_of(ev.pid) as usize] != pi => {
                        sink.report(|| {
                            format!(
                                "{} delivered {} of {:?}, a ring this incarnation never \
                                 installed before",
                                ix.at(ev.rec),
                                msg_name(ix.msg(ev.mid)),
                                ix.ring(ix.ring_of(ev.pid))
                            )
                        });
                    }
                    Kind::Originate => {
                        let msg = ix.msg(ev.mid);
                        if p.id != msg.origin {
                            sink.report(|| {
                                format!(
                                    "{} originated {}, a message of another origin",
                                    ix.at(ev.rec),
                                    msg_name(msg)
                                )
                            });
                        }
                        if seg.reg_id != ix.ring_of(ev.pid) {
                            sink.report(|| {
                                format!(
                                    "{} originated {} at {} while its ring is {}",
                                    ix.at(ev.rec),
                                    msg_name(msg),
                                    pos_name(ix.position(ev.pid)),
                                    seg.reg.map_or("none".to_owned(), |r| format!("{r:?}"))
                                )
                            });
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    sink.finish()
}

/// The `position <-> message` maps must be single-valued; each message is originated once.
fn single_valued(ix: &Index<'_>, sink: &mut Sink) {
    // pid -> (mid, record) of its first mention; mid -> (pid, record) likewise.
    let mut by_pos: Vec<(u32, u32)> = vec![(NONE, NONE); ix.position_count()];
    let mut by_msg: Vec<(u32, u32)> = vec![(NONE, NONE); ix.messages()];
    let mut originated: Vec<u32> = vec![NONE; ix.messages()];
    let mut reported: BTreeSet<(u32, u32)> = BTreeSet::new();
    for ev in &ix.evs {
        let (rec, mid, pid) = (ev.rec, ev.mid, ev.pid);
        match ev.kind {
            Kind::Deliver => {}
            Kind::Originate => {
                let first = originated[mid as usize];
                if first == NONE {
                    originated[mid as usize] = rec;
                } else {
                    sink.report(|| {
                        format!(
                            "{} originated twice: at {} and at {}",
                            msg_name(ix.msg(mid)),
                            ix.at(first),
                            ix.at(rec)
                        )
                    });
                }
            }
            _ => continue,
        }
        let slot = &mut by_pos[pid as usize];
        if slot.0 == NONE {
            *slot = (mid, rec);
        }
        let (other, first) = *slot;
        if other != mid && reported.insert((pid, mid)) {
            sink.report(|| {
                format!(
                    "position {} holds two messages: {} (at {}) and {} (at {})",
                    pos_name(ix.position(pid)),
                    msg_name(ix.msg(other)),
                    ix.at(first),
                    msg_name(ix.msg(mid)),
                    ix.at(rec)
                )
            });
        }
        let slot = &mut by_msg[mid as usize];
        if slot.0 == NONE {
            *slot = (pid, rec);
        }
        let (other_pos, first) = *slot;
        if other_pos != pid && reported.insert((pid, mid)) {
            sink.report(|| {
                format!(
                    "{} has two positions: {} (at {}) and {} (at {})",
                    msg_name(ix.msg(mid)),
                    pos_name(ix.position(other_pos)),
                    ix.at(first),
                    pos_name(ix.position(pid)),
                    ix.at(rec)
                )
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::{Builder, happy, hash_of, m, p, pos, props, ring};
    use super::*;
    use crate::api::Guarantee;

    #[test]
    fn correct_history_passes() {
        let b = happy(3, 3, Guarantee::Agreed);
        assert!(s1_no_creation(&b.history).is_empty());
        assert!(s2_no_duplication(&b.history).is_empty());
        assert!(s14_position_coherence(&b.history).is_empty());
    }

    #[test]
    fn s1_catches_unsubmitted_delivery() {
        let mut b = happy(3, 1, Guarantee::Agreed);
        let ghost = m(p(2), 9);
        b.deliver(p(1), ghost, Guarantee::Agreed, pos(ring(1), 9));
        let found = s1_no_creation(&b.history);
        assert_eq!(props(&found), ["S1"], "{found:#?}");
        assert!(
            found[0].message.contains("m(n2#0:9)"),
            "{}",
            found[0].message
        );
        assert!(found[0].message.contains("never submitted"));
    }

    #[test]
    fn s1_catches_wrong_payload_and_early_delivery() {
        let mut b = happy(2, 1, Guarantee::Agreed);
        let rec = b.delivery_of(p(2), m(p(1), 0));
        if let HistoryEvent::Deliver { payload_hash, .. } = &mut b.history.records[rec].event {
            *payload_hash ^= 1;
        }
        let found = s1_no_creation(&b.history);
        assert_eq!(props(&found), ["S1"], "{found:#?}");
        assert!(found[0].message.contains("n2#0"), "{}", found[0].message);

        // Delivered before submitted.
        let mut b = Builder::new();
        let msg = m(p(1), 0);
        b.conf_reg(p(2), ring(1), &[1, 2], &[1, 2]);
        b.deliver(p(2), msg, Guarantee::Agreed, pos(ring(1), 1));
        b.submit(p(1), 0, Guarantee::Agreed);
        let found = s1_no_creation(&b.history);
        assert_eq!(props(&found), ["S1"], "{found:#?}");
        assert!(found[0].message.contains("before it was submitted"));
        assert_eq!(hash_of(msg), hash_of(m(p(1), 0)));
    }

    #[test]
    fn s2_catches_double_delivery_across_incarnations() {
        let mut b = happy(3, 2, Guarantee::Agreed);
        let msg = m(p(1), 1);
        b.deliver(p(3), msg, Guarantee::Agreed, pos(ring(1), 4));
        let found = s2_no_duplication(&b.history);
        assert_eq!(props(&found), ["S2"], "{found:#?}");
        assert!(
            found[0]
                .message
                .contains("node 3 delivered m(n1#0:1) twice"),
            "{}",
            found[0].message
        );

        let mut b = happy(2, 1, Guarantee::Agreed);
        let later = super::super::testkit::pi(2, 1);
        b.deliver(later, m(p(1), 0), Guarantee::Agreed, pos(ring(1), 1));
        let found = s2_no_duplication(&b.history);
        assert_eq!(props(&found), ["S2"], "{found:#?}");
        assert!(found[0].message.contains("n2#1"), "{}", found[0].message);
    }

    #[test]
    fn s14_catches_two_messages_at_one_position() {
        let mut b = happy(3, 1, Guarantee::Agreed);
        // n3's message claims n2's position at one receiver.
        let rec = b.delivery_of(p(1), m(p(3), 0));
        if let HistoryEvent::Deliver { position, .. } = &mut b.history.records[rec].event {
            *position = pos(ring(1), 2);
        }
        let found = s14_position_coherence(&b.history);
        assert_eq!(props(&found), ["S14"], "{found:#?}");
        let text = &found[0].message;
        assert!(text.contains("ring(1:1)/2.0 holds two messages"), "{text}");
        assert!(
            text.contains("m(n2#0:0)") && text.contains("m(n3#0:0)"),
            "{text}"
        );
    }

    #[test]
    fn s14_catches_delivery_of_an_uninstalled_ring() {
        let mut b = happy(2, 1, Guarantee::Agreed);
        let msg = b.submit(p(1), 1, Guarantee::Agreed);
        b.deliver(p(2), msg, Guarantee::Agreed, pos(ring(7), 1));
        let found = s14_position_coherence(&b.history);
        assert_eq!(props(&found), ["S14"], "{found:#?}");
        assert!(
            found[0].message.contains("never installed"),
            "{}",
            found[0].message
        );
    }

    #[test]
    fn s14_catches_origination_by_another_process() {
        let mut b = happy(2, 1, Guarantee::Agreed);
        let msg = b.submit(p(1), 1, Guarantee::Agreed);
        b.push(
            p(2),
            HistoryEvent::Originate {
                msg,
                position: pos(ring(1), 3),
            },
        );
        let found = s14_position_coherence(&b.history);
        assert_eq!(props(&found), ["S14"], "{found:#?}");
        assert!(
            found[0].message.contains("another origin"),
            "{}",
            found[0].message
        );
    }
}
