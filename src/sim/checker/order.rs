//! Ordering: S7 (the global delivery order is acyclic), S8 (agreed order without holes), S9
//! (FIFO per origin).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::ops::Range;

use super::graph::{Graph, Step};
use super::index::{
    Com, ComEnd, Ev, Index, Kind, NONE, ProcLog, is_ordered, msg_name, pos_name, proc_name,
};
use super::{Sink, Violation};
use crate::api::Guarantee;
use crate::ids::{NodeId, RingId};
use crate::sim::history::{AppMessageId, History, HistoryEvent, ProcessId};

/// How many start vertices the short-cycle search tries per strongly connected component.
const CYCLE_SEARCH_STARTS: usize = 32;

/// A vertex of the S7 graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Vertex {
    /// The delivery of an AGREED or SAFE message (a mid), one vertex shared by every process.
    Message(u32),
    /// The origination of an AGREED or SAFE message (a mid).
    Originate(u32),
    /// A regular configuration.
    Regular(RingId),
    /// A transitional configuration, keyed by `(old ring, new ring)`.
    Transitional(RingId, RingId),
}

impl Vertex {
    fn name(self, ix: &Index<'_>) -> String {
        match self {
            Vertex::Message(m) => msg_name(ix.msg(m)),
            Vertex::Originate(m) => format!("Originate {}", msg_name(ix.msg(m))),
            Vertex::Regular(ring) => format!("ConfReg {ring:?}"),
            Vertex::Transitional(old, new) => format!("ConfTrans {old:?}->{new:?}"),
        }
    }
}

/// Why an edge of the S7 graph exists.
#[derive(Clone, Copy, Debug)]
enum Why {
    /// Two consecutive vertex events of one process's log (record indices).
    Log { from: u32, to: u32 },
    /// A message's origination (this record) precedes its delivery.
    Originates(u32),
}

/// The S7 graph's vertices, numbered in first-seen order.
struct Vertices {
    list: Vec<Vertex>,
    message: Vec<u32>,
    originate: Vec<u32>,
    confs: BTreeMap<Vertex, u32>,
}

impl Vertices {
    fn id(&mut self, v: Vertex) -> u32 {
        let next = self.list.len() as u32;
        let slot = match v {
            Vertex::Message(m) => &mut self.message[m as usize],
            Vertex::Originate(m) => &mut self.originate[m as usize],
            Vertex::Regular(_) | Vertex::Transitional(..) => self.confs.entry(v).or_insert(NONE),
        };
        if *slot == NONE {
            *slot = next;
            self.list.push(v);
        }
        *slot
    }
}

/// S7 — the global delivery order is acyclic (the core EVS ordering property, EVS94 1.1,
/// 6.1, 6.2).
///
/// One directed graph whose vertices are: each AGREED or SAFE message (one vertex shared by
/// every process that delivers it), each regular ring, each transitional key `(old, new)` and
/// each origination of an AGREED or SAFE message. Edges join consecutive such events in each
/// process's log, plus `Originate(m) -> m`. A cycle means no single logical time can be given to
/// the deliveries and configuration changes: two processes delivering messages in different
/// orders, a message before a configuration change at one process and after it at another, a
/// causal violation within a configuration, or a longer cycle that no pair of processes shows.
///
/// FIFO and UNORDERED messages are deliberately *not* vertices: they may overtake other senders'
/// messages, so their deliveries carry no total-order constraint (S9 checks FIFO). A repeated
/// delivery of the same message by the same node is left out too (S2 reports it).
///
/// Reports one short cycle per strongly connected component (the shortest through any of the
/// component's first few vertices), with the processes and log positions that made each edge.
#[must_use]
pub fn s7_acyclic_order(history: &History) -> Vec<Violation> {
    s7(&Index::new(history))
}

pub(super) fn s7(ix: &Index<'_>) -> Vec<Violation> {
    let mut vertices = Vertices {
        list: Vec::new(),
        message: vec![NONE; ix.messages()],
        originate: vec![NONE; ix.messages()],
        confs: BTreeMap::new(),
    };
    let mut edges: Vec<Step<Why>> = Vec::new();
    // Vertex -> the target of its last `Why::Log` edge pushed.
    let mut last_target: Vec<u32> = Vec::new();
    for p in &ix.procs {
        let mut prev: Option<(u32, u32)> = None;
        for ev in &p.evs {
            let rec = ev.rec;
            let vertex = match ev.kind {
                Kind::Deliver if is_ordered(ev.guarantee()) && !ev.repeat => {
                    Vertex::Message(ev.mid)
                }
                Kind::Originate if ix.guarantee(ev.mid).is_some_and(is_ordered) => {
                    let delivery = vertices.id(Vertex::Message(ev.mid));
                    let origination = vertices.id(Vertex::Originate(ev.mid));
                    edges.push((origination, delivery, Why::Originates(rec)));
                    Vertex::Originate(ev.mid)
                }
                Kind::ConfReg | Kind::ConfTrans => match *ix.event(rec) {
                    HistoryEvent::ConfReg { ring, .. } => Vertex::Regular(ring),
                    HistoryEvent::ConfTrans {
                        old_ring, new_ring, ..
                    } => Vertex::Transitional(old_ring, new_ring),
                    _ => continue,
                },
                _ => continue,
            };
            let id = vertices.id(vertex);
            if let Some((before, from)) = prev {
                // Most edges repeat at every process; only the first one given is kept
                // anyway, so a repeat of the source's last edge is left out right here.
                if last_target.len() <= before as usize {
                    last_target.resize(vertices.list.len(), NONE);
                }
                let last = &mut last_target[before as usize];
                if *last != id {
                    *last = id;
                    edges.push((before, id, Why::Log { from, to: rec }));
                }
            }
            prev = Some((id, rec));
        }
    }
    let vertices = vertices.list;
    let graph = Graph::new(vertices.len(), edges);
    let mut sink = Sink::new("S7");
    for members in &graph.cyclic_components() {
        sink.report(|| {
            let cycle = graph.short_cycle(members, CYCLE_SEARCH_STARTS);
            describe_cycle(ix, &vertices, &cycle, members.len())
        });
    }
    sink.finish()
}

fn describe_cycle(
    ix: &Index<'_>,
    vertices: &[Vertex],
    cycle: &[Step<Why>],
    component: usize,
) -> String {
    let mut text = format!(
        "cycle of {} in the global delivery order (strongly connected component of {component} \
         vertices): ",
        cycle.len()
    );
    let mut procs: Vec<ProcessId> = Vec::new();
    for (i, &(from, to, why)) in cycle.iter().enumerate() {
        if i == 0 {
            text.push_str(&vertices[from as usize].name(ix));
        }
        let reason = match why {
            Why::Log { from, to } => {
                procs.push(ix.process(from));
                format!(
                    "{} {}->{}",
                    proc_name(ix.process(from)),
                    ix.log_at(from),
                    ix.log_at(to)
                )
            }
            Why::Originates(rec) => format!("originated at {}", ix.at(rec)),
        };
        let _ = write!(text, " --[{reason}]--> {}", vertices[to as usize].name(ix));
    }
    procs.sort_unstable();
    procs.dedup();
    let names: Vec<String> = procs.into_iter().map(proc_name).collect();
    let _ = write!(text, "; processes involved: {}", names.join(", "));
    text
}

/// `O_R` for every ring R: the AGREED and SAFE messages with position in R that any process
/// delivered or originated, sorted by position (one message per position, the least; S14
/// reports conflicts).
struct AgreedOrders {
    /// Position ids with an entry, grouped by ring, each ring's in order.
    pids: Vec<u32>,
    /// pid -> the message of its entry ([`NONE`] without one).
    msg: Vec<u32>,
    /// pid -> its rank in its ring's order.
    rank: Vec<u32>,
    /// Ring id -> its range in `pids`.
    by_ring: Vec<Range<usize>>,
}

impl AgreedOrders {
    fn new(ix: &Index<'_>) -> AgreedOrders {
        let mut msg = vec![NONE; ix.position_count()];
        for ev in &ix.evs {
            let ordered = match ev.kind {
                Kind::Deliver => is_ordered(ev.guarantee()),
                Kind::Originate => ix.guarantee(ev.mid).is_some_and(is_ordered),
                _ => false,
            };
            if ordered {
                let slot = &mut msg[ev.pid as usize];
                *slot = (*slot).min(ev.mid);
            }
        }
        let mut pids = Vec::new();
        let mut rank = vec![NONE; ix.position_count()];
        let mut by_ring = Vec::with_capacity(ix.ring_count());
        for ring in 0..ix.ring_count() as u32 {
            let start = pids.len();
            for pid in ix.ring_positions(ring) {
                if msg[pid as usize] != NONE {
                    rank[pid as usize] = (pids.len() - start) as u32;
                    pids.push(pid);
                }
            }
            by_ring.push(start..pids.len());
        }
        AgreedOrders {
            pids,
            msg,
            rank,
            by_ring,
        }
    }

    /// `O_R` as position ids (R a ring id).
    fn of(&self, ring: u32) -> &[u32] {
        &self.pids[self.by_ring[ring as usize].clone()]
    }
}

/// `m(..) at ring(..)/seq.index`.
fn entry_name(ix: &Index<'_>, (pid, mid): (u32, u32)) -> String {
    format!(
        "{} at {}",
        msg_name(ix.msg(mid)),
        pos_name(ix.position(pid))
    )
}

/// S8 — agreed order without holes (EVS94 5, 6.3; TOCS95 §7.3). With `O_R` the AGREED and
/// SAFE messages originated in ring R (delivered or originated by anyone), in position order:
///
/// (a) in the regular part of R, each process delivers exactly a prefix of `O_R`, in order;
/// (b) in its transitional part it continues in `O_R` order, skipping only messages whose
///     origin is not a member of the transitional configuration, and after skipping a message of
///     origin s it delivers no later message of s in `com_p(R)`;
/// (c) when it then installs its next regular configuration, every message of `O_R` it did not
///     deliver has an origin outside the transitional configuration.
///
/// Only messages of ring R delivered within `com_p(R)` count (S3 reports the others). Reports
/// the first problem of each `com_p(R)`.
#[must_use]
pub fn s8_agreed_without_holes(history: &History) -> Vec<Violation> {
    s8(&Index::new(history))
}

pub(super) fn s8(ix: &Index<'_>) -> Vec<Violation> {
    let orders = AgreedOrders::new(ix);
    let mut sink = Sink::new("S8");
    for p in &ix.procs {
        for com in &p.coms {
            if com.ring_id == NONE || orders.of(com.ring_id).is_empty() {
                continue;
            }
            if let Some(message) = check_com_order(ix, p, com, &orders) {
                sink.report(|| message);
            }
        }
    }
    sink.finish()
}

fn check_com_order(
    ix: &Index<'_>,
    p: &ProcLog<'_>,
    com: &Com,
    orders: &AgreedOrders,
) -> Option<String> {
    let ring = com.ring;
    let order = orders.of(com.ring_id);
    let entry = |i: usize| (order[i], orders.msg[order[i] as usize]);
    let in_ring = |ev: &&Ev| is_ordered(ev.guarantee()) && ix.ring_of(ev.pid) == com.ring_id;
    let mut next = 0usize;
    let regular = &p.segments[com.segments.start];
    for ev in Index::deliveries(p, regular).filter(in_ring) {
        let r = orders.rank[ev.pid as usize] as usize;
        if r < next {
            return Some(format!(
                "(a) {} delivered {} in the regular part of {ring:?} after {}: not in position order",
                ix.at(ev.rec),
                entry_name(ix, (ev.pid, ev.mid)),
                entry_name(ix, entry(next - 1))
            ));
        }
        if r > next {
            return Some(format!(
                "(a) {} delivered {} in the regular part of {ring:?} without {} before it (a hole \
                 of {} message(s) in the agreed order)",
                ix.at(ev.rec),
                entry_name(ix, (ev.pid, ev.mid)),
                entry_name(ix, entry(next)),
                r - next
            ));
        }
        next += 1;
    }
    let mut skipped: BTreeMap<ProcessId, (u32, u32)> = BTreeMap::new();
    let mut transitional: Option<&[NodeId]> = None;
    for seg in &p.segments[com.segments.start + 1..com.segments.end] {
        let members = seg.members;
        transitional = Some(members);
        for ev in Index::deliveries(p, seg).filter(in_ring) {
            let r = orders.rank[ev.pid as usize] as usize;
            if r < next {
                return Some(format!(
                    "(b) {} delivered {} in the transitional part of {ring:?} after {}: not in \
                     position order",
                    ix.at(ev.rec),
                    entry_name(ix, (ev.pid, ev.mid)),
                    entry_name(ix, entry(next - 1))
                ));
            }
            for i in next..r {
                let (pid, mid) = entry(i);
                let origin = ix.msg(mid).origin;
                if members.contains(&origin.node) {
                    return Some(format!(
                        "(b) {} delivered {} in the transitional part of {ring:?}, skipping {} \
                         whose origin is a member of the transitional configuration {:?}",
                        ix.at(ev.rec),
                        entry_name(ix, (ev.pid, ev.mid)),
                        entry_name(ix, (pid, mid)),
                        members
                    ));
                }
                skipped.entry(origin).or_insert((pid, mid));
            }
            if let Some(&earlier) = skipped.get(&ix.msg(ev.mid).origin) {
                return Some(format!(
                    "(b) {} delivered {} in the transitional part of {ring:?} after skipping {} of \
                     the same origin",
                    ix.at(ev.rec),
                    entry_name(ix, (ev.pid, ev.mid)),
                    entry_name(ix, earlier)
                ));
            }
            next = r + 1;
        }
    }
    if let (ComEnd::NextReg(rec), Some(members)) = (com.end, transitional) {
        let missed =
            (next..order.len()).find(|&i| members.contains(&ix.msg(entry(i).1).origin.node));
        if let Some(i) = missed {
            return Some(format!(
                "(c) {} installed its next regular configuration without delivering {}, \
                 originated in {ring:?} by a member of the transitional configuration {:?}",
                ix.at(rec),
                entry_name(ix, entry(i)),
                members
            ));
        }
    }
    None
}

/// S9 — FIFO per origin (EVS94 5; Corosync's FIFO guarantee).
///
/// For every receiver p and origin incarnation s, considering only s's messages that are not
/// UNORDERED (UNORDERED promises no order; the workload's counter is shared across guarantees,
/// so gaps are measured in the subsequence of non-UNORDERED messages, never by counter
/// arithmetic):
/// * p delivers them in increasing counter (submit) order, across configurations too;
/// * within each `com_p(R)`, the ones of ring R that p delivers are a prefix of the ones of
///   ring R that anyone delivered or that s originated: no gaps.
#[must_use]
pub fn s9_fifo(history: &History) -> Vec<Violation> {
    s9(&Index::new(history))
}

pub(super) fn s9(ix: &Index<'_>) -> Vec<Violation> {
    let mut sink = Sink::new("S9");
    let fifo = |g: Guarantee| g != Guarantee::Unordered;
    // Order. Origin id -> the last delivered (counter, record).
    let mut last: Vec<Option<(u64, u32)>> = vec![None; ix.origin_count()];
    for p in &ix.procs {
        last.fill(None);
        for ev in &p.evs {
            if !(ev.is_first_delivery() && fifo(ev.guarantee())) {
                continue;
            }
            let msg = ix.msg(ev.mid);
            let slot = &mut last[ix.origin_id(ev.mid) as usize];
            match *slot {
                Some((counter, before)) if msg.counter <= counter => sink.report(|| {
                    let origin = msg.origin;
                    format!(
                        "{} delivered {} after {} (at {}): not in {}'s submit order",
                        ix.at(ev.rec),
                        msg_name(msg),
                        msg_name(AppMessageId { origin, counter }),
                        ix.log_at(before),
                        proc_name(origin)
                    )
                }),
                _ => *slot = Some((msg.counter, ev.rec)),
            }
        }
    }
    // Gaps. The reference: (origin id, ring id, mid) of every FIFO-or-better message that
    // anyone delivered or originated, sorted (within an origin, mid order is counter order).
    // Each message's first ring, and any further ones aside.
    let mut ring_of: Vec<u32> = vec![NONE; ix.messages()];
    let mut further: Vec<(u32, u32, u32)> = Vec::new();
    for ev in &ix.evs {
        let counted = match ev.kind {
            Kind::Deliver => fifo(ev.guarantee()),
            Kind::Originate => ix.guarantee(ev.mid).is_some_and(fifo),
            _ => false,
        };
        if counted {
            let first = &mut ring_of[ev.mid as usize];
            if *first == NONE {
                *first = ix.ring_of(ev.pid);
            } else if *first != ix.ring_of(ev.pid) {
                further.push((ix.origin_id(ev.mid), ix.ring_of(ev.pid), ev.mid));
            }
        }
    }
    let mut reference: Vec<(u32, u32, u32)> = (0..ix.messages() as u32)
        .filter(|&mid| ring_of[mid as usize] != NONE)
        .map(|mid| (ix.origin_id(mid), ring_of[mid as usize], mid))
        .chain(further)
        .collect();
    // Mostly in order already, in runs (mids are in origin and counter order; rings change
    // now and then): a stable sort merges the runs in near-linear time.
    reference.sort_by_key(|&entry| entry);
    reference.dedup();
    // Origin id -> (mid, record) of its messages delivered in one com, in delivery order.
    let mut got: Vec<Vec<(u32, u32)>> = vec![Vec::new(); ix.origin_count()];
    for p in &ix.procs {
        for com in &p.coms {
            for seg in &p.segments[com.segments.clone()] {
                for ev in Index::deliveries(p, seg) {
                    if fifo(ev.guarantee()) && ix.ring_of(ev.pid) == com.ring_id {
                        got[ix.origin_id(ev.mid) as usize].push((ev.mid, ev.rec));
                    }
                }
            }
            for (origin_id, delivered) in got.iter_mut().enumerate() {
                if delivered.is_empty() {
                    continue;
                }
                delivered.sort_unstable(); // usually sorted already (FIFO)
                let key = (origin_id as u32, com.ring_id);
                let lo = reference.partition_point(|&(o, r, _)| (o, r) < key);
                let hi = reference.partition_point(|&(o, r, _)| (o, r) <= key);
                let all = &reference[lo..hi];
                let gap = delivered
                    .iter()
                    .zip(all)
                    .find(|((mid, _), (_, _, expected))| mid != expected);
                let gap = gap.map(|(&(mid, rec), &(_, _, expected))| (mid, rec, expected));
                delivered.clear();
                if let Some((mid, rec, expected)) = gap {
                    sink.report(|| {
                        let (msg, expected) = (ix.msg(mid), ix.msg(expected));
                        format!(
                            "{} delivered {} in com({:?}) but not the earlier {} of the same \
                             origin and ring (a gap in {}'s FIFO order)",
                            ix.at(rec),
                            msg_name(msg),
                            com.ring,
                            msg_name(expected),
                            proc_name(msg.origin)
                        )
                    });
                }
            }
        }
    }
    sink.finish()
}

#[cfg(test)]
mod tests {
    use super::super::testkit::{Builder, happy, m, membership_change, mixed, p, pos, props, ring};
    use super::*;

    #[test]
    fn correct_histories_pass() {
        for b in [happy(3, 3, Guarantee::Agreed), mixed(), membership_change()] {
            assert!(s7_acyclic_order(&b.history).is_empty());
            assert!(s8_agreed_without_holes(&b.history).is_empty());
            assert!(s9_fifo(&b.history).is_empty());
        }
    }

    #[test]
    fn swapped_deliveries_break_s7_and_s8() {
        let mut b = happy(3, 2, Guarantee::Agreed);
        let (m1, m2) = (m(p(1), 1), m(p(2), 1));
        let (a, c) = (b.delivery_of(p(3), m1), b.delivery_of(p(3), m2));
        b.swap(a, c);
        let found = s7_acyclic_order(&b.history);
        assert_eq!(props(&found), ["S7"], "{found:#?}");
        let text = &found[0].message;
        assert!(text.contains("cycle of 2"), "{text}");
        assert!(
            text.contains("m(n1#0:1)") && text.contains("m(n2#0:1)"),
            "{text}"
        );
        assert!(text.contains("n3#0"), "{text}");
        let found = s8_agreed_without_holes(&b.history);
        assert_eq!(props(&found), ["S8"], "{found:#?}");
        assert!(
            found[0].message.starts_with("(a) n3#0"),
            "{}",
            found[0].message
        );
        assert!(
            found[0].message.contains("without m(n1#0:1)"),
            "{}",
            found[0].message
        );
    }

    #[test]
    fn three_cycle_with_pairwise_consistent_processes() {
        // p1: a < b, p2: b < c, p3: c < a. No two processes deliver two common messages in
        // different orders; only the cycle shows the problem.
        let mut b = Builder::new();
        let (p1, p2, p3) = (p(1), p(2), p(3));
        for q in [p1, p2, p3] {
            b.conf_reg(q, ring(1), &[1, 2, 3], &[1, 2, 3]);
        }
        let a = b.submit(p1, 0, Guarantee::Agreed);
        let bb = b.submit(p2, 0, Guarantee::Agreed);
        let c = b.submit(p3, 0, Guarantee::Agreed);
        let (pa, pb, pc) = (pos(ring(1), 1), pos(ring(1), 2), pos(ring(1), 3));
        b.deliver(p1, a, Guarantee::Agreed, pa);
        b.deliver(p1, bb, Guarantee::Agreed, pb);
        b.deliver(p2, bb, Guarantee::Agreed, pb);
        b.deliver(p2, c, Guarantee::Agreed, pc);
        b.deliver(p3, c, Guarantee::Agreed, pc);
        b.deliver(p3, a, Guarantee::Agreed, pa);
        let found = s7_acyclic_order(&b.history);
        assert_eq!(props(&found), ["S7"], "{found:#?}");
        let text = &found[0].message;
        assert!(text.contains("cycle of 3"), "{text}");
        assert!(
            text.contains("processes involved: n1#0, n2#0, n3#0"),
            "{text}"
        );
    }

    #[test]
    fn causal_violation_through_origination_is_a_cycle() {
        // p2 delivers a, then originates b; p3 delivers b before a.
        let mut b = Builder::new();
        let (p1, p2, p3) = (p(1), p(2), p(3));
        for q in [p1, p2, p3] {
            b.conf_reg(q, ring(1), &[1, 2, 3], &[1, 2, 3]);
        }
        let a = b.submit(p1, 0, Guarantee::Agreed);
        b.originate(a, pos(ring(1), 1));
        b.deliver(p2, a, Guarantee::Agreed, pos(ring(1), 1));
        let second = b.submit(p2, 0, Guarantee::Agreed);
        b.originate(second, pos(ring(1), 2));
        b.deliver(p3, second, Guarantee::Agreed, pos(ring(1), 2));
        b.deliver(p3, a, Guarantee::Agreed, pos(ring(1), 1));
        let found = s7_acyclic_order(&b.history);
        assert_eq!(props(&found), ["S7"], "{found:#?}");
        assert!(
            found[0].message.contains("Originate m(n2#0:0)"),
            "{}",
            found[0].message
        );
    }

    #[test]
    fn message_on_both_sides_of_a_configuration_change_is_a_cycle() {
        let mut b = membership_change();
        // n2 delivers n1's ring-2 message before installing ring 2.
        let msg = m(p(1), 1);
        let late = b.delivery_of(p(2), msg);
        let conf = b.find(
            p(2),
            |e| matches!(e, HistoryEvent::ConfReg { ring: r, .. } if *r == ring(2)),
        );
        b.remove(late);
        b.history.records.insert(
            conf,
            crate::sim::history::Record {
                time: b.history.records[conf].time,
                process: p(2),
                event: HistoryEvent::Deliver {
                    msg,
                    guarantee: Guarantee::Agreed,
                    position: pos(ring(2), 1),
                    payload_hash: super::super::testkit::hash_of(msg),
                    len: super::super::testkit::LEN,
                },
            },
        );
        let found = s7_acyclic_order(&b.history);
        assert_eq!(props(&found), ["S7"], "{found:#?}");
        assert!(
            found[0].message.contains("ConfReg ring(1:2)"),
            "{}",
            found[0].message
        );
    }

    #[test]
    fn fifo_and_unordered_are_not_vertices() {
        // mixed() delivers FIFO and UNORDERED messages in different orders at different nodes.
        assert!(s7_acyclic_order(&mixed().history).is_empty());
    }

    #[test]
    fn s8_catches_a_hole_without_reordering() {
        // n3 never delivers n2's message but delivers the next one: no cycle, but a hole.
        let mut b = happy(3, 1, Guarantee::Agreed);
        let rec = b.delivery_of(p(3), m(p(2), 0));
        b.remove(rec);
        assert!(s7_acyclic_order(&b.history).is_empty());
        let found = s8_agreed_without_holes(&b.history);
        assert_eq!(props(&found), ["S8"], "{found:#?}");
        assert!(
            found[0].message.contains("hole of 1"),
            "{}",
            found[0].message
        );
    }

    #[test]
    fn s8_transitional_skip_of_a_member_message() {
        // In membership_change() n1 skips n2's SAFE message in the transitional part although
        // n2 is a transitional member: n1 never delivers it before ring 2.
        let mut b = membership_change();
        let rec = b.delivery_of(p(1), m(p(2), 0));
        b.remove(rec);
        let found = s8_agreed_without_holes(&b.history);
        assert_eq!(props(&found), ["S8"], "{found:#?}");
        assert!(
            found[0].message.starts_with("(c) n1#0"),
            "{}",
            found[0].message
        );
        assert!(
            found[0].message.contains("m(n2#0:0)"),
            "{}",
            found[0].message
        );
    }

    #[test]
    fn s9_catches_fifo_reversal() {
        let mut b = happy(3, 3, Guarantee::Fifo);
        let (a, c) = (
            b.delivery_of(p(2), m(p(1), 1)),
            b.delivery_of(p(2), m(p(1), 2)),
        );
        b.swap(a, c);
        let found = s9_fifo(&b.history);
        assert_eq!(props(&found), ["S9"], "{found:#?}");
        assert!(found[0].message.contains("n2#0"), "{}", found[0].message);
        assert!(
            found[0].message.contains("not in n1#0's submit order"),
            "{}",
            found[0].message
        );
        // FIFO messages are not in the S7 graph, so only S9 sees this.
        assert!(s7_acyclic_order(&b.history).is_empty());
    }

    #[test]
    fn s9_catches_a_fifo_gap() {
        let mut b = happy(2, 3, Guarantee::Fifo);
        let rec = b.delivery_of(p(2), m(p(1), 1));
        b.remove(rec);
        let found = s9_fifo(&b.history);
        assert_eq!(props(&found), ["S9"], "{found:#?}");
        assert!(
            found[0].message.contains("not the earlier m(n1#0:1)"),
            "{}",
            found[0].message
        );
    }

    #[test]
    fn s9_gap_ignores_unordered_counters() {
        // n1 sends FIFO 0, UNORDERED 1, FIFO 2; n2 gets 0 and 2 and never the UNORDERED one.
        let mut b = Builder::new();
        let (p1, p2) = (p(1), p(2));
        for q in [p1, p2] {
            b.conf_reg(q, ring(1), &[1, 2], &[1, 2]);
        }
        b.send(p1, 0, Guarantee::Fifo, pos(ring(1), 1), &[p1, p2]);
        b.send(p1, 1, Guarantee::Unordered, pos(ring(1), 2), &[p1]);
        b.send(p1, 2, Guarantee::Fifo, pos(ring(1), 3), &[p1, p2]);
        assert!(s9_fifo(&b.history).is_empty());
    }
}
