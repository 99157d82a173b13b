//! Delivery obligations: S11 (self-delivery), S12 (safe delivery), and the end-of-run liveness
//! check L2 (no message loss after healing).

use std::collections::BTreeSet;

use super::index::{
    ComEnd, Conf, Index, Kind, NONE, examples, msg_name, nodes_name, pos_name, proc_name,
};
use super::{Sink, Violation};
use crate::api::Guarantee;
use crate::ids::{NodeId, RingId};
use crate::sim::history::{History, HistoryEvent, ProcessId};

/// S11 — self-delivery (EVS94 3; TOCS95 §4.2; Corosync's "virtual synchrony property #1").
///
/// * If p originated m and later installs a regular configuration with no crash in between, p
///   delivered m before that `ConfReg`.
/// * API-level, in order: when p delivers its own non-UNORDERED message, it has already
///   delivered every earlier non-UNORDERED message it submitted (accepted submits are
///   self-delivered in submit order, even when origination is deferred past a configuration
///   change).
///
/// That every accepted submit is eventually self-delivered is liveness: see
/// [`check_all_delivered`].
#[must_use]
pub fn s11_self_delivery(history: &History) -> Vec<Violation> {
    s11(&Index::new(history))
}

pub(super) fn s11(ix: &Index<'_>) -> Vec<Violation> {
    let mut sink = Sink::new("S11");
    // mid -> the index of the last incarnation that delivered it.
    let mut delivered_by: Vec<u32> = vec![NONE; ix.messages()];
    let mut own: Vec<(u64, u32, u32)> = Vec::new();
    // mid -> the record of its pending origination ([`NONE`] if not pending); the mids put
    // there since the last `ConfReg` (some may be delivered since).
    let mut pending: Vec<u32> = vec![NONE; ix.messages()];
    let mut pending_list: Vec<u32> = Vec::new();
    for (pi, p) in ix.procs.iter().enumerate() {
        let pi = pi as u32;
        let me = ix.origin_id_of(p.id);
        let mine = |mid: u32| ix.origin_id(mid) == me;
        own.clear();
        for ev in &p.evs {
            if ev.kind == Kind::Submit && mine(ev.mid) && ev.guarantee() != Guarantee::Unordered {
                own.push((ix.msg(ev.mid).counter, ev.rec, ev.mid));
            }
        }
        own.sort_unstable();
        let mut next_own = 0;
        let mut out_of_order = false;
        for ev in &p.evs {
            match ev.kind {
                Kind::Originate if mine(ev.mid) && delivered_by[ev.mid as usize] != pi => {
                    if pending[ev.mid as usize] == NONE {
                        pending_list.push(ev.mid);
                    }
                    pending[ev.mid as usize] = ev.rec;
                }
                Kind::Deliver => {
                    pending[ev.mid as usize] = NONE;
                    if !mine(ev.mid) {
                        continue;
                    }
                    delivered_by[ev.mid as usize] = pi;
                    if ev.guarantee() == Guarantee::Unordered || out_of_order {
                        continue;
                    }
                    while own
                        .get(next_own)
                        .is_some_and(|&(_, _, mid)| delivered_by[mid as usize] == pi)
                    {
                        next_own += 1;
                    }
                    let counter = ix.msg(ev.mid).counter;
                    if let Some(&(_, submitted, earlier)) = own
                        .get(next_own)
                        .filter(|&&(earlier, _, _)| earlier < counter)
                    {
                        out_of_order = true;
                        sink.report(|| {
                            format!(
                                "{} delivered its own {} before its earlier submit {} (submitted \
                                 at {})",
                                ix.at(ev.rec),
                                msg_name(ix.msg(ev.mid)),
                                msg_name(ix.msg(earlier)),
                                ix.log_at(submitted)
                            )
                        });
                    }
                }
                Kind::ConfReg => {
                    let HistoryEvent::ConfReg { ring, .. } = ix.event(ev.rec) else {
                        continue;
                    };
                    pending_list.sort_unstable();
                    pending_list.dedup();
                    for mid in pending_list.drain(..) {
                        let originated = std::mem::replace(&mut pending[mid as usize], NONE);
                        if originated == NONE {
                            continue;
                        }
                        sink.report(|| {
                            format!(
                                "{} installed {ring:?} without having delivered its own {}, \
                                 originated at {}",
                                ix.at(ev.rec),
                                msg_name(ix.msg(mid)),
                                ix.log_at(originated)
                            )
                        });
                    }
                }
                _ => {}
            }
        }
        for mid in pending_list.drain(..) {
            pending[mid as usize] = NONE;
        }
    }
    sink.finish()
}

/// Where each message was delivered: for every mid, the `(proc, segment)` of each of its
/// `Deliver` events (repeats included), sorted.
struct DeliveredAt {
    start: Vec<u32>,
    at: Vec<(u32, u32)>,
}

impl DeliveredAt {
    fn new(ix: &Index<'_>) -> DeliveredAt {
        let mut start = vec![0u32; ix.messages() + 1];
        for p in &ix.procs {
            for ev in p.evs.iter().filter(|ev| ev.kind == Kind::Deliver) {
                start[ev.mid as usize + 1] += 1;
            }
        }
        for m in 0..ix.messages() {
            start[m + 1] += start[m];
        }
        let mut fill = start.clone();
        let mut at = vec![(0, 0); start[ix.messages()] as usize];
        for (pi, p) in ix.procs.iter().enumerate() {
            for (si, seg) in p.segments.iter().enumerate() {
                for ev in p.body(seg).iter().filter(|ev| ev.kind == Kind::Deliver) {
                    let slot = &mut fill[ev.mid as usize];
                    at[*slot as usize] = (pi as u32, si as u32);
                    *slot += 1;
                }
            }
        }
        DeliveredAt { start, at }
    }

    /// The segments of incarnation `proc` among `segs` in which `mid` was delivered.
    fn within(&self, mid: u32, proc: usize, segs: std::ops::Range<usize>) -> &[(u32, u32)] {
        let all =
            &self.at[self.start[mid as usize] as usize..self.start[mid as usize + 1] as usize];
        let (proc, lo, hi) = (proc as u32, segs.start as u32, segs.end as u32);
        let from = all.partition_point(|&at| at < (proc, lo));
        let to = all.partition_point(|&at| at < (proc, hi));
        &all[from..to]
    }
}

/// S12 — safe delivery (EVS94 7.1, 7.2; TOCS95 §4.2).
///
/// (a) If p delivers SAFE m in the regular part of R, every member q of R (per p's `ConfReg`)
///     installed R, and either delivered m within `com_q(R)` or had not yet installed its next
///     regular configuration when its log ended (crash or end of run).
/// (b) If p delivers SAFE m in transitional configuration T, every q in T's members delivered m
///     in T (the same transitional key), or had not installed its next regular configuration
///     when its log ended, or installed another ring than T's new one (then q behaves as
///     crashed for T: a transitional configuration may list more members than install its new
///     ring, S6 (ii)).
///
/// A member whose log simply ends is never a violation here (completeness is liveness).
#[must_use]
pub fn s12_safe_delivery(history: &History) -> Vec<Violation> {
    s12(&Index::new(history))
}

pub(super) fn s12(ix: &Index<'_>) -> Vec<Violation> {
    let mut sink = Sink::new("S12");
    let installed = ix.com_by_node_ring();
    let delivered = DeliveredAt::new(ix);
    let mut reported: BTreeSet<(u32, NodeId)> = BTreeSet::new();
    let mut targets: Vec<(NodeId, Option<(usize, usize)>)> = Vec::new();
    for p in &ix.procs {
        for com in &p.coms {
            for seg in &p.segments[com.segments.clone()] {
                let Some(conf) = seg.conf else { continue };
                let part = if let Conf::Regular(_) = conf {
                    "(a)"
                } else {
                    "(b)"
                };
                targets.clear();
                for d in Index::deliveries(p, seg).filter(|d| d.guarantee() == Guarantee::Safe) {
                    if targets.is_empty() {
                        targets.extend(
                            seg.members
                                .iter()
                                .map(|&q| (q, installed.get(&(q, com.ring)).copied())),
                        );
                    }
                    for &(q, q_com) in &targets {
                        if q == p.id.node || reported.contains(&(d.mid, q)) {
                            continue;
                        }
                        // None: no failure; Some(None): never installed R; Some(Some(rec)):
                        // installed its next regular configuration at rec without m.
                        let failure = match q_com {
                            None => Some(None),
                            Some((qi, qc)) => match ix.procs[qi].coms[qc].end {
                                // A transitional member that went to another ring than T's
                                // new one behaves as crashed for T (S6 (ii): T may list more
                                // members than install its new ring).
                                ComEnd::NextReg(rec)
                                    if matches!(conf, Conf::Transitional { new, .. }
                                        if !matches!(ix.event(rec),
                                            HistoryEvent::ConfReg { ring, .. } if *ring == new)) =>
                                {
                                    None
                                }
                                ComEnd::NextReg(rec) => {
                                    let q_segs = ix.procs[qi].coms[qc].segments.clone();
                                    let ok = match conf {
                                        Conf::Regular(_) => {
                                            !delivered.within(d.mid, qi, q_segs).is_empty()
                                        }
                                        Conf::Transitional { .. } => delivered
                                            .within(d.mid, qi, q_segs.start + 1..q_segs.end)
                                            .iter()
                                            .any(|&(_, s)| {
                                                ix.procs[qi].segments[s as usize].conf == Some(conf)
                                            }),
                                    };
                                    (!ok).then_some(Some(rec))
                                }
                                ComEnd::Crash(_) | ComEnd::LogEnd => None,
                            },
                        };
                        if let Some(failure) = failure {
                            reported.insert((d.mid, q));
                            sink.report(|| {
                                let failure = match failure {
                                    None => format!("never installed {:?}", com.ring),
                                    Some(rec) => format!(
                                        "installed its next regular configuration at {} without \
                                         delivering it{}",
                                        ix.at(rec),
                                        if part == "(b)" {
                                            format!(" in {conf}")
                                        } else {
                                            String::new()
                                        }
                                    ),
                                };
                                format!(
                                    "{part} {} delivered SAFE {} in {conf} (members {}), but \
                                     member n{q} {failure}",
                                    ix.at(d.rec),
                                    msg_name(ix.msg(d.mid)),
                                    nodes_name(seg.members)
                                )
                            });
                        }
                    }
                }
            }
        }
    }
    sink.finish()
}

/// A set of mids.
struct MidSet(Vec<u64>);

impl MidSet {
    fn new(n: usize) -> MidSet {
        MidSet(vec![0; n.div_ceil(64)])
    }

    fn insert(&mut self, mid: u32) {
        self.0[mid as usize / 64] |= 1 << (mid % 64);
    }

    fn contains(&self, mid: u32) -> bool {
        self.0[mid as usize / 64] & (1 << (mid % 64)) != 0
    }
}

/// L2 — no message loss after healing (PROTOCOL.md §2.4), for the end of a run whose `live`
/// incarnations are up, connected and converged:
///
/// * every live process ends in the same regular ring F (else `L1`), never crashed, and is in
///   the history (else `L1`);
/// * every message a live process submitted was delivered to it (the API-level S11);
/// * every message of ring F (position in F) that any live process delivered or originated was
///   delivered by every live process.
///
/// Messages of earlier rings are not required everywhere: live processes may have been in
/// different partitions then. Duplicates are S2's business. Each incomplete process is
/// reported once, with counts and a few examples.
#[must_use]
pub fn check_all_delivered(history: &History, live: &[ProcessId]) -> Vec<Violation> {
    all_delivered(&Index::new(history), live)
}

pub(super) fn all_delivered(ix: &Index<'_>, live: &[ProcessId]) -> Vec<Violation> {
    let mut live = live.to_vec();
    live.sort_unstable();
    live.dedup();
    let mut l1 = Sink::new("L1");
    let mut l2 = Sink::new("L2");
    let mut finals: Vec<(ProcessId, Option<RingId>)> = Vec::new();
    // (process, its log, what it delivered), in process order.
    let mut delivered: Vec<(ProcessId, usize, MidSet)> = Vec::new();
    for &q in &live {
        let Ok(qi) = ix.procs.binary_search_by_key(&q, |log| log.id) else {
            l1.report(|| format!("live process {} has no events in the history", proc_name(q)));
            continue;
        };
        let log = &ix.procs[qi];
        if let Some(rec) = log.crash {
            l1.report(|| format!("live process {} crashed at {}", proc_name(q), ix.at(rec)));
        }
        let last = log.segments.last().and_then(|seg| seg.conf);
        let final_ring = match last {
            Some(Conf::Regular(ring)) => Some(ring),
            Some(conf) => {
                l1.report(|| format!("live process {} ends in {conf}", proc_name(q)));
                None
            }
            None => {
                l1.report(|| {
                    format!(
                        "live process {} never installed a regular configuration",
                        proc_name(q)
                    )
                });
                None
            }
        };
        finals.push((q, final_ring));
        let mut got = MidSet::new(ix.messages());
        let mut submitted = Vec::new();
        for ev in &log.evs {
            match ev.kind {
                Kind::Deliver => got.insert(ev.mid),
                Kind::Submit => submitted.push(ev.mid),
                _ => {}
            }
        }
        let missing: Vec<u32> = submitted
            .iter()
            .copied()
            .filter(|&mid| !got.contains(mid))
            .collect();
        if !missing.is_empty() {
            l2.report(|| {
                format!(
                    "{} never delivered {} of its {} accepted submits, e.g. {}",
                    proc_name(q),
                    missing.len(),
                    submitted.len(),
                    examples(missing.iter().map(|&mid| ix.msg(mid)), missing.len())
                )
            });
        }
        delivered.push((q, qi, got));
    }
    let rings: BTreeSet<Option<RingId>> = finals.iter().map(|&(_, ring)| ring).collect();
    if rings.len() > 1 && !rings.contains(&None) {
        let listed: Vec<String> = finals
            .iter()
            .filter_map(|&(q, ring)| ring.map(|ring| format!("{} on {ring:?}", proc_name(q))))
            .collect();
        l1.report(|| {
            format!(
                "live processes do not share a final ring: {}",
                listed.join(", ")
            )
        });
    }
    if let (1, Some(&Some(final_ring))) = (rings.len(), rings.first()) {
        // mid -> the position it was first seen at in the final ring, by a live process.
        let ring = ix.ring_id(final_ring);
        let mut in_final: Vec<u32> = vec![NONE; ix.messages()];
        let mut total = 0;
        if ring != NONE {
            for &(_, qi, _) in &delivered {
                for ev in &ix.procs[qi].evs {
                    if matches!(ev.kind, Kind::Deliver | Kind::Originate)
                        && ix.ring_of(ev.pid) == ring
                        && in_final[ev.mid as usize] == NONE
                    {
                        in_final[ev.mid as usize] = ev.pid;
                        total += 1;
                    }
                }
            }
        }
        for (q, _, got) in &delivered {
            let missing = || {
                (0..ix.messages() as u32)
                    .filter(|&mid| in_final[mid as usize] != NONE && !got.contains(mid))
            };
            let count = missing().count();
            if let Some(first) = missing().next() {
                l2.report(|| {
                    format!(
                        "{} is missing {count} of the {total} messages of final ring \
                         {final_ring:?} that live processes delivered or originated, e.g. {} at \
                         {}; all: {}",
                        proc_name(*q),
                        msg_name(ix.msg(first)),
                        pos_name(ix.position(in_final[first as usize])),
                        examples(missing().map(|mid| ix.msg(mid)), count)
                    )
                });
            }
        }
    }
    let mut out = l1.finish();
    out.extend(l2.finish());
    out
}

#[cfg(test)]
mod tests {
    use super::super::testkit::{Builder, happy, m, membership_change, p, pi, pos, props, ring};
    use super::*;

    #[test]
    fn correct_histories_pass() {
        for b in [happy(3, 3, Guarantee::Safe), membership_change()] {
            assert!(s11_self_delivery(&b.history).is_empty());
            assert!(s12_safe_delivery(&b.history).is_empty());
            let found = check_all_delivered(&b.history, &b.procs);
            assert!(found.is_empty(), "{found:#?}");
        }
    }

    #[test]
    fn s11_catches_originator_moving_on_without_its_message() {
        let mut b = membership_change();
        // n1 never delivers its own ring-2 message before installing ring 3.
        let rec = b.delivery_of(p(1), m(p(1), 1));
        b.remove(rec);
        let found = s11_self_delivery(&b.history);
        assert_eq!(props(&found), ["S11"], "{found:#?}");
        let text = &found[0].message;
        assert!(text.starts_with("n1#0"), "{text}");
        assert!(
            text.contains("installed ring(1:3) without having delivered its own m(n1#0:1)"),
            "{text}"
        );
    }

    #[test]
    fn s11_catches_self_delivery_out_of_submit_order() {
        let mut b = Builder::new();
        let (p1, p2) = (p(1), p(2));
        for q in [p1, p2] {
            b.conf_reg(q, ring(1), &[1, 2], &[1, 2]);
        }
        b.submit(p1, 0, Guarantee::Agreed);
        b.send(p1, 1, Guarantee::Agreed, pos(ring(1), 1), &[p1, p2]);
        let found = s11_self_delivery(&b.history);
        assert_eq!(props(&found), ["S11"], "{found:#?}");
        assert!(
            found[0]
                .message
                .contains("before its earlier submit m(n1#0:0)"),
            "{}",
            found[0].message
        );
    }

    #[test]
    fn s12_catches_member_moving_on_without_safe_message() {
        // n1 and n2 deliver a SAFE message in ring 1; n3 installs ring 2 without it.
        let mut b = Builder::new();
        let (p1, p2, p3) = (p(1), p(2), p(3));
        for q in [p1, p2, p3] {
            b.conf_reg(q, ring(1), &[1, 2, 3], &[1, 2, 3]);
        }
        let msg = b.submit(p1, 0, Guarantee::Safe);
        b.originate(msg, pos(ring(1), 1));
        b.deliver_at(&[p1, p2], msg, Guarantee::Safe, pos(ring(1), 1));
        b.conf_trans(p3, (ring(1), ring(2)), &[3], &[1, 2]);
        b.conf_reg(p3, ring(2), &[3], &[]);
        let found = s12_safe_delivery(&b.history);
        assert_eq!(props(&found), ["S12"], "{found:#?}");
        let text = &found[0].message;
        assert!(text.starts_with("(a) n1#0"), "{text}");
        assert!(
            text.contains("member n3 installed its next regular configuration at n3#0"),
            "{text}"
        );
        // Had n3's log just ended (or crashed) before ring 2, nothing is wrong.
        let mut b2 = b;
        let at = b2.find(p3, |e| matches!(e, HistoryEvent::ConfTrans { .. }));
        b2.history.records.truncate(at);
        b2.crash(p3);
        assert!(s12_safe_delivery(&b2.history).is_empty());
    }

    #[test]
    fn s12_catches_transitional_member_without_safe_message() {
        let mut b = membership_change();
        // n2 does not deliver its own SAFE message in transitional 1->2, but n1 does.
        let rec = b.delivery_of(p(2), m(p(2), 0));
        b.remove(rec);
        let found = s12_safe_delivery(&b.history);
        assert_eq!(props(&found), ["S12"], "{found:#?}");
        assert!(
            found[0].message.starts_with("(b) n1#0"),
            "{}",
            found[0].message
        );
        assert!(
            found[0]
                .message
                .contains("member n2 installed its next regular"),
            "{}",
            found[0].message
        );
    }

    #[test]
    fn s12_exempts_a_transitional_member_that_went_to_another_ring() {
        // T(1->2) lists n1 and n2, but n2's recovery failed and it installed ring 3 instead:
        // it behaves as crashed for T, so n1's SAFE delivery in T is no violation. If n2 had
        // installed ring 2 without the message, it would be one.
        let build = |n2_next: u64| {
            let mut b = Builder::new();
            for q in [p(1), p(2)] {
                b.start(q);
                b.conf_reg(q, ring(1), &[1, 2], &[1, 2]);
            }
            let msg = b.submit(p(1), 0, Guarantee::Safe);
            b.originate(msg, pos(ring(1), 1));
            b.conf_trans(p(1), (ring(1), ring(2)), &[1, 2], &[]);
            b.deliver(p(1), msg, Guarantee::Safe, pos(ring(1), 1));
            b.conf_reg(p(1), ring(2), &[1, 2], &[]);
            b.conf_trans(p(2), (ring(1), ring(n2_next)), &[2], &[1]);
            b.conf_reg(p(2), ring(n2_next), &[2], &[]);
            b
        };
        assert!(s12_safe_delivery(&build(3).history).is_empty());
        let found = s12_safe_delivery(&build(2).history);
        assert_eq!(props(&found), ["S12"], "{found:#?}");
    }

    #[test]
    fn l2_reports_missing_deliveries() {
        let mut b = happy(3, 3, Guarantee::Agreed);
        let rec = b.delivery_of(p(2), m(p(3), 2));
        b.remove(rec);
        let unsent = b.submit(p(1), 9, Guarantee::Agreed);
        let found = check_all_delivered(&b.history, &b.procs);
        assert_eq!(props(&found), ["L2", "L2"], "{found:#?}");
        assert!(
            found[0]
                .message
                .contains("n1#0 never delivered 1 of its 4 accepted submits"),
            "{found:#?}"
        );
        assert!(found[0].message.contains(&msg_name(unsent)));
        assert!(
            found[1]
                .message
                .contains("n2#0 is missing 1 of the 9 messages"),
            "{found:#?}"
        );
        assert!(found[1].message.contains("m(n3#0:2)"), "{found:#?}");
    }

    #[test]
    fn l1_reports_live_processes_on_different_rings() {
        let b = membership_change();
        let found = check_all_delivered(&b.history, &[p(1), pi(3, 0)]);
        assert_eq!(props(&found), ["L1", "L1", "L2"], "{found:#?}");
        assert!(found[0].message.contains("n3#0 crashed"), "{found:#?}");
        let text = &found[1].message;
        assert!(
            text.ends_with("n1#0 on ring(1:3), n3#0 on ring(1:1)"),
            "{text}"
        );
        assert!(
            found[2].message.contains("n3#0 never delivered 1 of its 1"),
            "{found:#?}"
        );
        let found = check_all_delivered(&b.history, &[p(1), pi(4, 0)]);
        assert_eq!(props(&found), ["L1"], "{found:#?}");
    }
}
