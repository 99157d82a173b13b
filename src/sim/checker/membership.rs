//! Configurations: S3 (delivery in the right configuration), S4 (well-formed configuration
//! sequence), S5 (configuration identity and monotonicity), S6 (transitional-configuration
//! consistency), S10 (failure atomicity: processes that move together delivered the same set).

use std::collections::BTreeMap;

use super::index::{
    ComEnd, Conf, Index, Kind, ProcLog, examples, is_ordered, msg_name, nodes_name, proc_name,
};
use super::{Sink, Violation};
use crate::ids::{NodeId, RingId};
use crate::sim::history::{History, HistoryEvent};

/// S3 — delivery in the right configuration (EVS94 1.3; TOCS95 §4.2): a message delivered
/// in configuration c was originated in `reg(c)` (its position's ring) and its origin is a
/// member of `reg(c)`; nothing is delivered before the first configuration. (That p is a member
/// of c is checked once per installation by S4.)
#[must_use]
pub fn s3_right_configuration(history: &History) -> Vec<Violation> {
    s3(&Index::new(history))
}

pub(super) fn s3(ix: &Index<'_>) -> Vec<Violation> {
    let mut sink = Sink::new("S3");
    for p in &ix.procs {
        for seg in &p.segments {
            for d in p.body(seg).iter().filter(|ev| ev.kind == Kind::Deliver) {
                let rec = d.rec;
                let (Some(conf), Some(reg)) = (seg.conf, seg.reg) else {
                    sink.report(|| {
                        format!(
                            "{} delivered {} before installing any regular configuration",
                            ix.at(rec),
                            msg_name(ix.msg(d.mid))
                        )
                    });
                    continue;
                };
                if ix.ring_of(d.pid) != seg.reg_id {
                    sink.report(|| {
                        format!(
                            "{} delivered {} of {:?} in {conf} (ring {reg:?})",
                            ix.at(rec),
                            msg_name(ix.msg(d.mid)),
                            ix.ring(ix.ring_of(d.pid))
                        )
                    });
                } else if !seg.reg_members.contains(&ix.msg(d.mid).origin.node) {
                    sink.report(|| {
                        format!(
                            "{} delivered {} in {conf}, but its origin is not a member of \
                             {reg:?} {}",
                            ix.at(rec),
                            msg_name(ix.msg(d.mid)),
                            nodes_name(seg.reg_members)
                        )
                    });
                }
            }
        }
    }
    sink.finish()
}

/// S4 — well-formed configuration sequence, per incarnation:
/// * the first configuration is regular (no empty transitional one at startup);
/// * a `ConfTrans` is followed by a `ConfReg` before any other `ConfTrans` or `Originate`, and a
///   `ConfReg` is preceded by a `ConfTrans` unless it is the incarnation's first;
/// * member lists are sorted without repeats, and the process is a member of every
///   configuration it installs;
/// * `ConfTrans.old` is the previous `ConfReg`'s ring, `ConfTrans.new` the next one's;
/// * `T ⊆ members(R_old) ∩ members(R_new)`, `left(T) = members(R_old) − T`;
/// * `joined(R_new) = members(R_new) − T` (T empty for the first configuration) and
///   `left(R_new) = ∅`;
/// * nothing follows a `Crash`.
#[must_use]
pub fn s4_configuration_sequence(history: &History) -> Vec<Violation> {
    s4(&Index::new(history))
}

pub(super) fn s4(ix: &Index<'_>) -> Vec<Violation> {
    let mut sink = Sink::new("S4");
    for p in &ix.procs {
        check_sequence(ix, p, &mut sink);
    }
    sink.finish()
}

/// What S4 remembers of the previous configuration events.
struct LastConf<'h> {
    /// The last regular configuration: ring and members.
    regular: Option<(RingId, &'h [NodeId])>,
    /// The transitional configuration since then, if any: record, new ring, members.
    transitional: Option<(u32, RingId, &'h [NodeId])>,
}

fn check_sequence<'h>(ix: &Index<'h>, p: &ProcLog<'h>, sink: &mut Sink) {
    let mut last = LastConf {
        regular: None,
        transitional: None,
    };
    let me = p.id.node;
    for ev in &p.evs {
        let rec = ev.rec;
        if p.crash.is_some_and(|crash| rec > crash) {
            sink.report(|| format!("{} has an event after its crash", ix.at(rec)));
            break;
        }
        if !matches!(ev.kind, Kind::ConfReg | Kind::ConfTrans | Kind::Originate) {
            continue;
        }
        match ix.event(rec) {
            HistoryEvent::ConfReg {
                ring,
                members,
                joined,
                left,
            } => {
                let members = members.as_slice();
                check_members(ix, rec, me, members, sink);
                if !left.is_empty() {
                    sink.report(|| {
                        format!(
                            "{} installed {ring:?} with a non-empty left list {left:?}",
                            ix.at(rec)
                        )
                    });
                }
                let t_members: &[NodeId] = match (last.regular, last.transitional) {
                    (Some((old, _)), None) => {
                        sink.report(|| {
                            format!(
                                "{} installed {ring:?} right after {old:?} without a \
                                 transitional configuration",
                                ix.at(rec)
                            )
                        });
                        &[]
                    }
                    (_, Some((trans_rec, new, t))) => {
                        if new != *ring {
                            sink.report(|| {
                                format!(
                                    "{} installed {ring:?} after a transitional configuration to \
                                     {new:?} (at {})",
                                    ix.at(rec),
                                    ix.log_at(trans_rec)
                                )
                            });
                        }
                        if let Some(&outside) = t.iter().find(|n| !members.contains(n)) {
                            sink.report(|| {
                                format!(
                                    "{} installed {ring:?} {}, which lacks transitional member \
                                     {outside:?}",
                                    ix.at(rec),
                                    nodes_name(members)
                                )
                            });
                        }
                        t
                    }
                    (None, None) => &[],
                };
                let expected: Vec<NodeId> = members
                    .iter()
                    .copied()
                    .filter(|n| !t_members.contains(n))
                    .collect();
                if *joined != expected {
                    sink.report(|| {
                        format!(
                            "{} installed {ring:?} with joined {joined:?}, expected members − \
                             transitional = {expected:?}",
                            ix.at(rec)
                        )
                    });
                }
                last = LastConf {
                    regular: Some((*ring, members)),
                    transitional: None,
                };
            }
            HistoryEvent::ConfTrans {
                old_ring,
                new_ring,
                members,
                left,
            } => {
                let members = members.as_slice();
                check_members(ix, rec, me, members, sink);
                if let Some((trans_rec, _, _)) = last.transitional {
                    sink.report(|| {
                        format!(
                            "{} installed a second transitional configuration without a regular \
                             one since the one at {}",
                            ix.at(rec),
                            ix.log_at(trans_rec)
                        )
                    });
                }
                match last.regular {
                    None => sink.report(|| {
                        format!("{} starts with a transitional configuration", ix.at(rec))
                    }),
                    Some((old, old_members)) => {
                        if old != *old_ring {
                            sink.report(|| {
                                format!(
                                    "{} installed transitional {old_ring:?}->{new_ring:?} but its \
                                     regular configuration is {old:?}",
                                    ix.at(rec)
                                )
                            });
                        }
                        if let Some(&outside) = members.iter().find(|n| !old_members.contains(n)) {
                            sink.report(|| {
                                format!(
                                    "{} installed transitional {old_ring:?}->{new_ring:?} with \
                                     member {outside:?} not in {old:?}",
                                    ix.at(rec)
                                )
                            });
                        }
                        let expected: Vec<NodeId> = old_members
                            .iter()
                            .copied()
                            .filter(|n| !members.contains(n))
                            .collect();
                        if *left != expected {
                            sink.report(|| {
                                format!(
                                    "{} installed transitional {old_ring:?}->{new_ring:?} with \
                                     left {left:?}, expected members({old:?}) − transitional = \
                                     {expected:?}",
                                    ix.at(rec)
                                )
                            });
                        }
                    }
                }
                last.transitional = Some((rec, *new_ring, members));
            }
            HistoryEvent::Originate { msg, .. } => {
                if let Some((trans_rec, _, _)) = last.transitional {
                    sink.report(|| {
                        format!(
                            "{} originated {} in the transitional configuration installed at {}",
                            ix.at(rec),
                            msg_name(*msg),
                            ix.log_at(trans_rec)
                        )
                    });
                }
            }
            _ => {}
        }
    }
}

fn check_members(ix: &Index<'_>, rec: u32, me: NodeId, members: &[NodeId], sink: &mut Sink) {
    if !members.is_sorted() || members.windows(2).any(|w| w[0] == w[1]) {
        sink.report(|| {
            format!(
                "{} installed a member list not sorted or with repeats: {members:?}",
                ix.at(rec)
            )
        });
    }
    if !members.contains(&me) {
        sink.report(|| {
            format!(
                "{} installed a configuration {members:?} it is not a member of",
                ix.at(rec)
            )
        });
    }
}

/// S5 — configuration identity and monotonicity (TOCS95 "Uniqueness of configurations"):
/// everyone who installs regular ring X reports the same members (so no two different rings
/// share an id, S16); X's representative is its lowest member; per node, the seqs of the
/// regular rings it installs strictly increase, across its incarnations too (stable storage
/// kept; a simulator mode that wipes it must not run this part).
#[must_use]
pub fn s5_configuration_identity(history: &History) -> Vec<Violation> {
    s5(&Index::new(history))
}

pub(super) fn s5(ix: &Index<'_>) -> Vec<Violation> {
    let mut sink = Sink::new("S5");
    let mut rings: BTreeMap<RingId, (&[NodeId], u32)> = BTreeMap::new();
    let mut last_seq: BTreeMap<NodeId, (RingId, u32)> = BTreeMap::new();
    for p in &ix.procs {
        for rec in p
            .evs
            .iter()
            .filter(|ev| ev.kind == Kind::ConfReg)
            .map(|ev| ev.rec)
        {
            let HistoryEvent::ConfReg { ring, members, .. } = ix.event(rec) else {
                continue;
            };
            let &mut (first_members, first) = rings.entry(*ring).or_insert((members, rec));
            if first == rec {
                if members.first().is_none_or(|rep| rep.0 != ring.rep) {
                    sink.report(|| {
                        format!(
                            "{} installed {ring:?} whose representative is not its lowest member \
                             {}",
                            ix.at(rec),
                            nodes_name(members)
                        )
                    });
                }
            } else if first_members != members.as_slice() {
                sink.report(|| {
                    format!(
                        "{} installed {ring:?} with members {}, but {} installed it with {}",
                        ix.at(rec),
                        nodes_name(members),
                        ix.at(first),
                        nodes_name(first_members)
                    )
                });
            }
            if let Some(&(before, at)) = last_seq.get(&p.id.node) {
                if ring.seq <= before.seq {
                    sink.report(|| {
                        format!(
                            "{} installed {ring:?} after {before:?} (at {}): ring seqs must \
                             increase per node",
                            ix.at(rec),
                            ix.at(at)
                        )
                    });
                }
            }
            last_seq.insert(p.id.node, (*ring, rec));
        }
    }
    sink.finish()
}

/// S6 — transitional-configuration consistency (TOCS95 §4.1 "Configuration Change
/// Consistency"; S16): for a key `(R_old, R_new)` everyone reports the same members and left
/// list; (i) every process that installs R_new with R_old as its previous regular configuration
/// is a member of that transitional configuration; (ii) every member of it installed R_old, is
/// a member of R_new, and if it installs R_new, does so right after R_old.
#[must_use]
pub fn s6_transitional_consistency(history: &History) -> Vec<Violation> {
    s6(&Index::new(history))
}

/// A transitional key's members, left list and the record that first reported them.
type TransitionalFacts<'h> = (&'h [NodeId], &'h [NodeId], u32);

pub(super) fn s6(ix: &Index<'_>) -> Vec<Violation> {
    let mut sink = Sink::new("S6");
    let mut keys: BTreeMap<(RingId, RingId), TransitionalFacts<'_>> = BTreeMap::new();
    let mut ring_members: BTreeMap<RingId, &[NodeId]> = BTreeMap::new();
    // (node, ring) -> the regular ring it installed before (None: the first of its incarnation)
    let mut previous: BTreeMap<(NodeId, RingId), (Option<RingId>, u32)> = BTreeMap::new();
    for p in &ix.procs {
        let mut before: Option<RingId> = None;
        let confs = p
            .evs
            .iter()
            .filter(|ev| matches!(ev.kind, Kind::ConfReg | Kind::ConfTrans));
        for rec in confs.map(|ev| ev.rec) {
            match ix.event(rec) {
                HistoryEvent::ConfTrans {
                    old_ring,
                    new_ring,
                    members,
                    left,
                } => {
                    let key = (*old_ring, *new_ring);
                    let &mut (m, l, first) = keys.entry(key).or_insert((members, left, rec));
                    if (m, l) != (members.as_slice(), left.as_slice()) {
                        sink.report(|| {
                            format!(
                                "{} installed transitional {old_ring:?}->{new_ring:?} as \
                                 (members {members:?}, left {left:?}), but {} as (members {m:?}, \
                                 left {l:?})",
                                ix.at(rec),
                                ix.at(first)
                            )
                        });
                    }
                }
                HistoryEvent::ConfReg { ring, members, .. } => {
                    ring_members.entry(*ring).or_insert(members);
                    previous.entry((p.id.node, *ring)).or_insert((before, rec));
                    before = Some(*ring);
                }
                _ => {}
            }
        }
    }
    for (&(node, ring), &(before, rec)) in &previous {
        let Some(old) = before else { continue };
        if let Some(&(members, _, first)) = keys.get(&(old, ring)) {
            if !members.contains(&node) {
                sink.report(|| {
                    format!(
                        "(i) {} installed {ring:?} right after {old:?}, but is not in the \
                         transitional configuration {members:?} reported at {}",
                        ix.at(rec),
                        ix.at(first)
                    )
                });
            }
        }
    }
    for (&(old, new), &(members, _, first)) in &keys {
        for &q in members {
            if !previous.contains_key(&(q, old)) {
                sink.report(|| {
                    format!(
                        "(ii) transitional {old:?}->{new:?} (at {}) lists {q:?}, which never \
                         installed {old:?}",
                        ix.at(first)
                    )
                });
            }
            if let Some(new_members) = ring_members.get(&new) {
                if !new_members.contains(&q) {
                    sink.report(|| {
                        format!(
                            "(ii) transitional {old:?}->{new:?} (at {}) lists {q:?}, which is not \
                             a member of {new:?} {}",
                            ix.at(first),
                            nodes_name(new_members)
                        )
                    });
                }
            }
            if let Some(&(before, rec)) = previous.get(&(q, new)) {
                if before != Some(old) {
                    sink.report(|| {
                        format!(
                            "(ii) {} installed {new:?} after {before:?}, but the transitional \
                             configuration {old:?}->{new:?} (at {}) lists it",
                            ix.at(rec),
                            ix.at(first)
                        )
                    });
                }
            }
        }
    }
    sink.finish()
}

/// S10 — failure atomicity / same set (EVS94 4; TOCS95 §4.2): processes that both install R
/// and then the same transitional key `(R, R2)` delivered the same AGREED/SAFE messages in R's
/// regular part; those of them that reached their next regular configuration also delivered the
/// same ones in that transitional part.
///
/// Only AGREED and SAFE messages count, as in S7: FIFO and UNORDERED messages may be delivered
/// on receipt, so which side of a configuration change they land on is not agreed.
#[must_use]
pub fn s10_same_set(history: &History) -> Vec<Violation> {
    s10(&Index::new(history))
}

/// One process's view of a `(R, (R, R2))` pair: regular-part set, transitional-part set (if the
/// process reached its next regular configuration), and where.
struct SameSet {
    proc: usize,
    conf_rec: u32,
    /// Sorted mids.
    regular: Vec<u32>,
    /// Sorted mids.
    transitional: Option<Vec<u32>>,
}

pub(super) fn s10(ix: &Index<'_>) -> Vec<Violation> {
    let mut sink = Sink::new("S10");
    let mut groups: BTreeMap<(RingId, Conf), Vec<SameSet>> = BTreeMap::new();
    for (pi, p) in ix.procs.iter().enumerate() {
        for com in &p.coms {
            let mut segs = p.segments[com.segments.clone()].iter();
            let Some(regular) = segs.next() else { continue };
            let Some(trans) = segs.next() else { continue };
            let (Some(key), Some(conf_rec)) = (trans.conf, trans.conf_rec) else {
                continue;
            };
            let collect = |seg| -> Vec<u32> {
                let mut mids: Vec<u32> = Index::deliveries(p, seg)
                    .filter(|d| is_ordered(d.guarantee()) && ix.ring_of(d.pid) == com.ring_id)
                    .map(|d| d.mid)
                    .collect();
                mids.sort_unstable();
                mids.dedup();
                mids
            };
            let complete = matches!(com.end, ComEnd::NextReg(_)) && segs.next().is_none();
            let entry = SameSet {
                proc: pi,
                conf_rec,
                regular: collect(regular),
                transitional: complete.then(|| collect(trans)),
            };
            groups.entry((com.ring, key)).or_default().push(entry);
        }
    }
    for ((ring, key), views) in &groups {
        let Some((first, rest)) = views.split_first() else {
            continue;
        };
        for other in rest {
            if first.regular != other.regular {
                sink.report(|| {
                    describe_difference(ix, "regular part of", *ring, key, first, other, |v| {
                        Some(&v.regular)
                    })
                });
            }
        }
        let complete: Vec<&SameSet> = views.iter().filter(|v| v.transitional.is_some()).collect();
        if let Some((first, rest)) = complete.split_first() {
            for other in rest {
                if first.transitional != other.transitional {
                    sink.report(|| {
                        describe_difference(
                            ix,
                            "transitional part after",
                            *ring,
                            key,
                            first,
                            other,
                            |v| v.transitional.as_ref(),
                        )
                    });
                }
            }
        }
    }
    sink.finish()
}

fn describe_difference(
    ix: &Index<'_>,
    part: &str,
    ring: RingId,
    key: &Conf,
    a: &SameSet,
    b: &SameSet,
    set: impl Fn(&SameSet) -> Option<&Vec<u32>>,
) -> String {
    let empty = Vec::new();
    let (sa, sb) = (set(a).unwrap_or(&empty), set(b).unwrap_or(&empty));
    let only_a = difference(sa, sb);
    let only_b = difference(sb, sa);
    let (pa, pb) = (
        proc_name(ix.procs[a.proc].id),
        proc_name(ix.procs[b.proc].id),
    );
    format!(
        "{pa} and {pb} both went to {key} (at {} and {}) but delivered different sets in the \
         {part} {ring:?}: only {pa}: [{}]; only {pb}: [{}]",
        ix.log_at(a.conf_rec),
        ix.log_at(b.conf_rec),
        examples(only_a.iter().map(|&mid| ix.msg(mid)), only_a.len()),
        examples(only_b.iter().map(|&mid| ix.msg(mid)), only_b.len())
    )
}

/// The mids of sorted `a` not in sorted `b`, in order.
fn difference(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut out = Vec::new();
    let mut j = 0;
    for &x in a {
        while j < b.len() && b[j] < x {
            j += 1;
        }
        if b.get(j) != Some(&x) {
            out.push(x);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::testkit::{Builder, happy, m, membership_change, p, pi, pos, props, ring};
    use super::*;
    use crate::api::Guarantee;

    #[test]
    fn correct_histories_pass() {
        for b in [happy(3, 2, Guarantee::Agreed), membership_change()] {
            for check in [
                s3_right_configuration,
                s4_configuration_sequence,
                s5_configuration_identity,
                s6_transitional_consistency,
                s10_same_set,
            ] {
                let found = check(&b.history);
                assert!(found.is_empty(), "{found:#?}");
            }
        }
    }

    #[test]
    fn s3_catches_delivery_of_another_rings_message() {
        let mut b = membership_change();
        // n2 delivers a fresh ring-1 message while in ring 3.
        let msg = b.submit(p(1), 7, Guarantee::Agreed);
        b.deliver(p(2), msg, Guarantee::Agreed, pos(ring(1), 9));
        let found = s3_right_configuration(&b.history);
        assert_eq!(props(&found), ["S3"], "{found:#?}");
        assert!(
            found[0]
                .message
                .contains("m(n1#0:7) of ring(1:1) in regular ring(1:3)"),
            "{found:#?}"
        );
    }

    #[test]
    fn s3_catches_delivery_before_any_configuration() {
        let mut b = Builder::new();
        let msg = b.submit(p(1), 0, Guarantee::Agreed);
        b.deliver(p(1), msg, Guarantee::Agreed, pos(ring(1), 1));
        let found = s3_right_configuration(&b.history);
        assert_eq!(props(&found), ["S3"], "{found:#?}");
    }

    #[test]
    fn s4_catches_bad_sequences() {
        // Regular right after regular, wrong joined list, not a member.
        let mut b = happy(2, 1, Guarantee::Agreed);
        b.conf_reg(p(1), ring(2), &[1, 2], &[1, 2]);
        let found = s4_configuration_sequence(&b.history);
        assert_eq!(props(&found), ["S4"], "{found:#?}");
        assert!(
            found[0]
                .message
                .contains("without a transitional configuration"),
            "{found:#?}"
        );

        let mut b = membership_change();
        // n2's transitional configuration names the wrong new ring.
        let rec = b.find(p(2), |e| matches!(e, HistoryEvent::ConfTrans { .. }));
        if let HistoryEvent::ConfTrans { new_ring, .. } = &mut b.history.records[rec].event {
            *new_ring = ring(5);
        }
        let found = s4_configuration_sequence(&b.history);
        assert_eq!(props(&found), ["S4"], "{found:#?}");
        assert!(
            found[0]
                .message
                .contains("after a transitional configuration to ring(1:5)"),
            "{found:#?}"
        );

        let mut b = Builder::new();
        b.conf_reg(p(3), ring(1), &[1, 2], &[1, 2]);
        let found = s4_configuration_sequence(&b.history);
        assert_eq!(props(&found), ["S4"], "{found:#?}");
        assert!(found[0].message.contains("not a member"), "{found:#?}");
    }

    #[test]
    fn s5_catches_disagreeing_members_and_going_back() {
        let mut b = happy(2, 0, Guarantee::Agreed);
        b.conf_reg(p(3), ring(1), &[1, 3], &[1, 3]);
        let found = s5_configuration_identity(&b.history);
        assert_eq!(props(&found), ["S5"], "{found:#?}");
        assert!(
            found[0].message.contains("with members [n1, n3]"),
            "{found:#?}"
        );

        let mut b = Builder::new();
        b.conf_reg(p(1), ring(4), &[1], &[1]);
        b.crash(p(1));
        b.conf_reg(pi(1, 1), ring(3), &[1], &[1]);
        let found = s5_configuration_identity(&b.history);
        assert_eq!(props(&found), ["S5"], "{found:#?}");
        assert!(found[0].message.contains("must increase"), "{found:#?}");
    }

    #[test]
    fn s6_catches_disagreeing_transitional_configurations() {
        let mut b = membership_change();
        let rec = b.find(p(2), |e| matches!(e, HistoryEvent::ConfTrans { .. }));
        if let HistoryEvent::ConfTrans { members, left, .. } = &mut b.history.records[rec].event {
            *members = vec![NodeId(2)];
            *left = vec![NodeId(1), NodeId(3)];
        }
        let found = s6_transitional_consistency(&b.history);
        assert!(!found.is_empty());
        assert!(found.iter().all(|v| v.property == "S6"), "{found:#?}");
        assert!(found[0].message.contains("but n1#0"), "{found:#?}");
    }

    #[test]
    fn s10_catches_different_sets_in_the_regular_part() {
        // n2 delivers the ring-1 SAFE message in the regular part, n1 in the transitional part.
        let mut b = membership_change();
        let msg = m(p(2), 0);
        let rec = b.delivery_of(p(2), msg);
        let event = b.history.records[rec].event.clone();
        b.remove(rec);
        let trans = b.find(p(2), |e| matches!(e, HistoryEvent::ConfTrans { .. }));
        b.history.records.insert(
            trans,
            crate::sim::history::Record {
                time: b.history.records[trans].time,
                process: p(2),
                event,
            },
        );
        let found = s10_same_set(&b.history);
        assert_eq!(props(&found), ["S10", "S10"], "{found:#?}");
        assert!(
            found[0].message.contains("only n2#0: [m(n2#0:0)]"),
            "{found:#?}"
        );
        assert!(found[1].message.contains("transitional part"), "{found:#?}");
    }
}
