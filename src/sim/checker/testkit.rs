//! A small history builder for the checkers' tests, and a few correct histories to plant bugs
//! into.

use crate::api::Guarantee;
use crate::ids::{NodeId, RingId};
use crate::sim::history::{AppMessageId, History, HistoryEvent, Position, ProcessId};
use crate::time::Instant;

/// Incarnation 0 of node `node`.
pub(super) fn p(node: u32) -> ProcessId {
    ProcessId {
        node: NodeId(node),
        incarnation: 0,
    }
}

/// Incarnation `inc` of node `node`.
pub(super) fn pi(node: u32, inc: u32) -> ProcessId {
    ProcessId {
        node: NodeId(node),
        incarnation: inc,
    }
}

/// Ring `seq` with representative 1.
pub(super) fn ring(seq: u64) -> RingId {
    RingId::new(NodeId(1), seq)
}

/// Position `seq.0` in `ring`.
pub(super) fn pos(ring: RingId, seq: u64) -> Position {
    Position {
        ring,
        seq,
        index: 0,
    }
}

/// Message `counter` of `origin`.
pub(super) fn m(origin: ProcessId, counter: u64) -> AppMessageId {
    AppMessageId { origin, counter }
}

/// The payload hash the builder uses for a message.
pub(super) fn hash_of(msg: AppMessageId) -> u64 {
    u64::from(msg.origin.node.0) << 40 ^ u64::from(msg.origin.incarnation) << 32 ^ msg.counter
}

/// The payload length the builder uses.
pub(super) const LEN: usize = 16;

fn nodes(ids: &[u32]) -> Vec<NodeId> {
    ids.iter().copied().map(NodeId).collect()
}

/// Builds a history one event at a time, one microsecond apart.
#[derive(Default)]
pub(super) struct Builder {
    pub(super) history: History,
    /// The processes of the scenario (what `happy` and friends put in, for `live`).
    pub(super) procs: Vec<ProcessId>,
    time_us: u64,
}

impl Builder {
    pub(super) fn new() -> Builder {
        Builder::default()
    }

    /// Appends one event; returns its record index.
    pub(super) fn push(&mut self, process: ProcessId, event: HistoryEvent) -> usize {
        self.time_us += 1;
        self.history
            .push(Instant::from_nanos(self.time_us * 1000), process, event);
        self.history.records.len() - 1
    }

    pub(super) fn start(&mut self, process: ProcessId) -> usize {
        self.push(process, HistoryEvent::Start)
    }

    pub(super) fn crash(&mut self, process: ProcessId) -> usize {
        self.push(process, HistoryEvent::Crash)
    }

    pub(super) fn conf_reg(
        &mut self,
        process: ProcessId,
        ring: RingId,
        members: &[u32],
        joined: &[u32],
    ) -> usize {
        let event = HistoryEvent::ConfReg {
            ring,
            members: nodes(members),
            joined: nodes(joined),
            left: Vec::new(),
        };
        self.push(process, event)
    }

    pub(super) fn conf_trans(
        &mut self,
        process: ProcessId,
        (old_ring, new_ring): (RingId, RingId),
        members: &[u32],
        left: &[u32],
    ) -> usize {
        let event = HistoryEvent::ConfTrans {
            old_ring,
            new_ring,
            members: nodes(members),
            left: nodes(left),
        };
        self.push(process, event)
    }

    pub(super) fn submit(&mut self, origin: ProcessId, counter: u64, g: Guarantee) -> AppMessageId {
        let msg = m(origin, counter);
        let event = HistoryEvent::Submit {
            msg,
            guarantee: g,
            payload_hash: hash_of(msg),
            len: LEN,
        };
        self.push(origin, event);
        msg
    }

    pub(super) fn originate(&mut self, msg: AppMessageId, position: Position) -> usize {
        self.push(msg.origin, HistoryEvent::Originate { msg, position })
    }

    pub(super) fn deliver(
        &mut self,
        process: ProcessId,
        msg: AppMessageId,
        g: Guarantee,
        position: Position,
    ) -> usize {
        let event = HistoryEvent::Deliver {
            msg,
            guarantee: g,
            position,
            payload_hash: hash_of(msg),
            len: LEN,
        };
        self.push(process, event)
    }

    /// Delivers `msg` at each of `to` in turn.
    pub(super) fn deliver_at(
        &mut self,
        to: &[ProcessId],
        msg: AppMessageId,
        g: Guarantee,
        position: Position,
    ) {
        for &q in to {
            self.deliver(q, msg, g, position);
        }
    }

    /// Submits, originates at `position` and delivers at every one of `to`.
    pub(super) fn send(
        &mut self,
        origin: ProcessId,
        counter: u64,
        g: Guarantee,
        position: Position,
        to: &[ProcessId],
    ) -> AppMessageId {
        let msg = self.submit(origin, counter, g);
        self.originate(msg, position);
        self.deliver_at(to, msg, g, position);
        msg
    }

    /// The index of the first record at `process` matching `pred`.
    pub(super) fn find(&self, process: ProcessId, pred: impl Fn(&HistoryEvent) -> bool) -> usize {
        self.history
            .records
            .iter()
            .position(|r| r.process == process && pred(&r.event))
            .unwrap_or_else(|| panic!("no such event at {process:?}"))
    }

    /// The record of `process` delivering `msg`.
    pub(super) fn delivery_of(&self, process: ProcessId, msg: AppMessageId) -> usize {
        self.find(
            process,
            |e| matches!(e, HistoryEvent::Deliver { msg: x, .. } if *x == msg),
        )
    }

    /// Swaps the events (and processes) of two records, keeping the times.
    pub(super) fn swap(&mut self, a: usize, b: usize) {
        let (ea, pa) = (
            self.history.records[a].event.clone(),
            self.history.records[a].process,
        );
        let (eb, pb) = (
            self.history.records[b].event.clone(),
            self.history.records[b].process,
        );
        self.history.records[a].event = eb;
        self.history.records[a].process = pb;
        self.history.records[b].event = ea;
        self.history.records[b].process = pa;
    }

    /// Removes one record.
    pub(super) fn remove(&mut self, rec: usize) {
        self.history.records.remove(rec);
    }
}

/// `n` nodes on ring 1; each sends `per_node` messages of guarantee `g` round-robin, each
/// message submitted, originated and delivered by everyone before the next.
pub(super) fn happy(n: u32, per_node: u64, g: Guarantee) -> Builder {
    let mut b = Builder::new();
    let ids: Vec<u32> = (1..=n).collect();
    b.procs = ids.iter().map(|&i| p(i)).collect();
    let procs = b.procs.clone();
    for &q in &procs {
        b.start(q);
    }
    for &q in &procs {
        b.conf_reg(q, ring(1), &ids, &ids);
    }
    let mut seq = 0;
    for counter in 0..per_node {
        for &s in &procs {
            seq += 1;
            b.send(s, counter, g, pos(ring(1), seq), &procs);
        }
    }
    b
}

/// 3 nodes on ring 1 with mixed guarantees: UNORDERED messages delivered in different orders at
/// different nodes, a FIFO message overtaking another sender's AGREED message at one node, and
/// counters shared across guarantees.
pub(super) fn mixed() -> Builder {
    let mut b = Builder::new();
    let (p1, p2, p3) = (p(1), p(2), p(3));
    b.procs = vec![p1, p2, p3];
    for q in [p1, p2, p3] {
        b.start(q);
        b.conf_reg(q, ring(1), &[1, 2, 3], &[1, 2, 3]);
    }
    let a = b.submit(p1, 0, Guarantee::Agreed);
    let f = b.submit(p2, 0, Guarantee::Fifo);
    let u1 = b.submit(p3, 0, Guarantee::Unordered);
    let u2 = b.submit(p3, 1, Guarantee::Unordered);
    let a3 = b.submit(p3, 2, Guarantee::Safe);
    b.originate(a, pos(ring(1), 1));
    b.originate(f, pos(ring(1), 2));
    b.originate(u1, pos(ring(1), 3));
    b.originate(u2, pos(ring(1), 4));
    b.originate(a3, pos(ring(1), 5));
    // p1: total order.
    b.deliver(p1, a, Guarantee::Agreed, pos(ring(1), 1));
    b.deliver(p1, f, Guarantee::Fifo, pos(ring(1), 2));
    b.deliver(p1, u1, Guarantee::Unordered, pos(ring(1), 3));
    b.deliver(p1, u2, Guarantee::Unordered, pos(ring(1), 4));
    // p2: its FIFO message first, then the UNORDERED ones reversed.
    b.deliver(p2, f, Guarantee::Fifo, pos(ring(1), 2));
    b.deliver(p2, a, Guarantee::Agreed, pos(ring(1), 1));
    b.deliver(p2, u2, Guarantee::Unordered, pos(ring(1), 4));
    b.deliver(p2, u1, Guarantee::Unordered, pos(ring(1), 3));
    // p3: UNORDERED second one first, the rest in order.
    b.deliver(p3, u2, Guarantee::Unordered, pos(ring(1), 4));
    b.deliver(p3, a, Guarantee::Agreed, pos(ring(1), 1));
    b.deliver(p3, f, Guarantee::Fifo, pos(ring(1), 2));
    b.deliver(p3, u1, Guarantee::Unordered, pos(ring(1), 3));
    b.deliver_at(&[p1, p2, p3], a3, Guarantee::Safe, pos(ring(1), 5));
    b
}

/// A correct run with membership changes: nodes 1–3 on ring 1; node 3 crashes; nodes 1 and 2
/// go through transitional ring 1->2 (delivering a SAFE message there and skipping node 3's
/// lost one) to ring 2; node 3 restarts and joins; everyone ends on ring 3.
pub(super) fn membership_change() -> Builder {
    let mut b = Builder::new();
    let (p1, p2, p3) = (p(1), p(2), p(3));
    let p3b = pi(3, 1);
    b.procs = vec![p1, p2, p3b];
    let (r1, r2, r3) = (ring(1), ring(2), ring(3));
    for q in [p1, p2, p3] {
        b.start(q);
        b.conf_reg(q, r1, &[1, 2, 3], &[1, 2, 3]);
    }
    b.send(p1, 0, Guarantee::Agreed, pos(r1, 1), &[p1, p2, p3]);
    let safe = b.submit(p2, 0, Guarantee::Safe);
    b.originate(safe, pos(r1, 2));
    let lost = b.submit(p3, 0, Guarantee::Agreed);
    b.originate(lost, pos(r1, 3));
    b.crash(p3);
    for q in [p1, p2] {
        b.conf_trans(q, (r1, r2), &[1, 2], &[3]);
        b.deliver(q, safe, Guarantee::Safe, pos(r1, 2));
        b.conf_reg(q, r2, &[1, 2], &[]);
    }
    b.send(p1, 1, Guarantee::Agreed, pos(r2, 1), &[p1, p2]);
    b.start(p3b);
    for q in [p1, p2] {
        b.conf_trans(q, (r2, r3), &[1, 2], &[]);
        b.conf_reg(q, r3, &[1, 2, 3], &[3]);
    }
    b.conf_reg(p3b, r3, &[1, 2, 3], &[1, 2, 3]);
    b.send(p3b, 0, Guarantee::Agreed, pos(r3, 1), &[p1, p2, p3b]);
    b
}

/// The properties of `violations`, in order.
pub(super) fn props(violations: &[super::Violation]) -> Vec<&'static str> {
    violations.iter().map(|v| v.property).collect()
}
