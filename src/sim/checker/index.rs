//! The pre-pass every checker shares: each incarnation's log, cut into configuration segments
//! (PROTOCOL.md §2.1 notation: an event's configuration is the last `Conf*` before it, `reg(c)`
//! its regular configuration, `com_p(R)` p's events from `ConfReg(R)` to its next `ConfReg`),
//! plus dense ids for messages, positions and rings so the checkers index flat arrays instead
//! of maps.
//!
//! Dense ids keep the order of what they stand for: message ids (`mid`) are sorted by
//! [`AppMessageId`], position ids (`pid`) by [`Position`], ring ids by [`RingId`]. So iterating
//! ids in increasing order is iterating the things themselves in order, as the checkers'
//! reports require.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use crate::api::Guarantee;
use crate::ids::{NodeId, RingId};
use crate::sim::history::{AppMessageId, History, HistoryEvent, Position, ProcessId};

/// "No id": a record without a message or position.
pub(super) const NONE: u32 = u32::MAX;

/// A configuration as the checkers key it: a regular ring, or a transitional configuration
/// keyed by `(old ring, new ring)` (PROTOCOL.md §2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Conf {
    Regular(RingId),
    Transitional { old: RingId, new: RingId },
}

impl fmt::Display for Conf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Conf::Regular(ring) => write!(f, "regular {ring:?}"),
            Conf::Transitional { old, new } => write!(f, "transitional {old:?}->{new:?}"),
        }
    }
}

/// What a record is, without its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Kind {
    Start,
    Crash,
    Submit,
    Originate,
    ConfReg,
    ConfTrans,
    Deliver,
}

/// One record, compacted: what the checkers look at for every event, as dense ids.
#[derive(Clone, Copy, Debug)]
pub(super) struct Ev {
    /// The record index in [`History::records`].
    pub(super) rec: u32,
    /// The message (`Submit`, `Originate`, `Deliver`), else [`NONE`].
    pub(super) mid: u32,
    /// The position (`Originate`, `Deliver`), else [`NONE`].
    pub(super) pid: u32,
    pub(super) kind: Kind,
    /// The guarantee a `Submit` or `Deliver` states (`Unordered` for other events), as its
    /// number (one byte keeps `Ev` at 16 bytes).
    guarantee: u8,
    /// A `Deliver` repeating an earlier delivery of the same message by the same node (any
    /// incarnation). S2 reports those; the order checkers skip them so one duplicate does not
    /// show up as a cycle or a hole as well.
    pub(super) repeat: bool,
}

/// Guarantees by number.
const GUARANTEES: [Guarantee; 4] = [
    Guarantee::Unordered,
    Guarantee::Fifo,
    Guarantee::Agreed,
    Guarantee::Safe,
];

impl Ev {
    /// The guarantee a `Submit` or `Deliver` states (`Unordered` for other events).
    pub(super) fn guarantee(&self) -> Guarantee {
        GUARANTEES[usize::from(self.guarantee & 3)]
    }

    /// A `Deliver` that is not a repeat.
    pub(super) fn is_first_delivery(&self) -> bool {
        self.kind == Kind::Deliver && !self.repeat
    }
}

/// A stretch of one incarnation's log: a configuration event and the events after it up to the
/// next configuration event. The first segment of a log has no configuration (`conf == None`)
/// and holds what comes before the first `Conf*` (`Start`, early submits).
#[derive(Debug)]
pub(super) struct Segment<'h> {
    /// The configuration this segment is in.
    pub(super) conf: Option<Conf>,
    /// The record index of the configuration event.
    pub(super) conf_rec: Option<u32>,
    /// The configuration's members (empty without a configuration).
    pub(super) members: &'h [NodeId],
    /// `reg(c)`: the ring itself for a regular configuration, the last regular ring installed
    /// before a transitional one (None if there was none).
    pub(super) reg: Option<RingId>,
    /// The dense id of `reg` if some position names that ring, else [`NONE`].
    pub(super) reg_id: u32,
    /// The members of `reg(c)`.
    pub(super) reg_members: &'h [NodeId],
    /// The events after the configuration event, as positions in [`ProcLog::evs`].
    pub(super) body: Range<usize>,
}

/// How a `com_p(R)` ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ComEnd {
    /// The process installed its next regular configuration (this record).
    NextReg(u32),
    /// The incarnation crashed (this record) before its next regular configuration.
    Crash(u32),
    /// The log ends (run over) before either.
    LogEnd,
}

/// `com_p(R)`: a regular segment and the transitional segments that follow it up to the next
/// regular one (at most one in a well-formed log, S4).
#[derive(Debug)]
pub(super) struct Com {
    /// R.
    pub(super) ring: RingId,
    /// The dense id of R if some position names it, else [`NONE`].
    pub(super) ring_id: u32,
    /// Indices into [`ProcLog::segments`]; the first is R's regular segment.
    pub(super) segments: Range<usize>,
    /// How it ends.
    pub(super) end: ComEnd,
}

/// One incarnation's log.
#[derive(Debug)]
pub(super) struct ProcLog<'h> {
    pub(super) id: ProcessId,
    /// Its records, compacted, in log order.
    pub(super) evs: Vec<Ev>,
    pub(super) segments: Vec<Segment<'h>>,
    pub(super) coms: Vec<Com>,
    /// The record index of the `Crash` event, if the incarnation crashed.
    pub(super) crash: Option<u32>,
}

/// The shared pre-pass over a history.
#[derive(Debug)]
pub(super) struct Index<'h> {
    pub(super) history: &'h History,
    /// Every incarnation, sorted by [`ProcessId`] (so a node's incarnations are in order).
    pub(super) procs: Vec<ProcLog<'h>>,
    /// Every record, compacted, in recording order (`evs[rec]`).
    pub(super) evs: Vec<Ev>,
    /// mid -> message, sorted.
    msgs: Vec<AppMessageId>,
    /// mid -> dense id of its origin in `origins`.
    msg_origin: Vec<u32>,
    /// Every origin a message names, sorted.
    origins: Vec<ProcessId>,
    /// mid -> the message's guarantee: from its first `Submit`, else from its first `Deliver`.
    guarantees: Vec<Option<Guarantee>>,
    /// pid -> position, sorted.
    positions: Vec<Position>,
    /// Ring id -> ring, sorted: the rings positions name.
    rings: Vec<RingId>,
    /// Ring id -> its positions' ids.
    ring_pids: Vec<Range<u32>>,
    /// pid -> the id of its ring.
    pos_ring: Vec<u32>,
}

/// Dense ids for keys met in a stream: first-seen order while reading, sorted order at the end.
struct Interner<K> {
    /// The last key looked up and its id.
    last: Option<(K, u32)>,
    /// Every key so far with its provisional id, while there are few (searched linearly).
    few: Vec<(K, u32)>,
    /// Every key so far, once there are many.
    many: BTreeMap<K, u32>,
    count: u32,
}

/// Up to how many keys an [`Interner`] searches linearly.
const FEW: usize = 16;

impl<K: Ord + Copy> Interner<K> {
    fn new() -> Interner<K> {
        Interner {
            last: None,
            few: Vec::new(),
            many: BTreeMap::new(),
            count: 0,
        }
    }

    /// The provisional id of `key` (its first-seen rank).
    #[inline]
    fn id(&mut self, key: K) -> u32 {
        match self.last {
            Some((last, id)) if last == key => id,
            _ => {
                let id = self.lookup(key);
                self.last = Some((key, id));
                id
            }
        }
    }

    fn lookup(&mut self, key: K) -> u32 {
        if self.many.is_empty() {
            if let Some(&(_, id)) = self.few.iter().find(|(k, _)| *k == key) {
                return id;
            }
            let id = self.count;
            self.count += 1;
            if self.few.len() < FEW {
                self.few.push((key, id));
            } else {
                self.many.extend(self.few.drain(..));
                self.many.insert(key, id);
            }
            return id;
        }
        let next = self.count;
        let id = *self.many.entry(key).or_insert(next);
        if id == next {
            self.count += 1;
        }
        id
    }

    /// The keys, sorted, and provisional id -> final id (the key's rank in that order).
    fn finish(self) -> (Vec<K>, Vec<u32>) {
        let mut all: Vec<(K, u32)> = self.few;
        all.extend(self.many);
        all.sort_unstable_by_key(|&(key, _)| key);
        let mut remap = vec![0; all.len()];
        let mut keys = Vec::with_capacity(all.len());
        for (rank, (key, provisional)) in all.into_iter().enumerate() {
            remap[provisional as usize] = rank as u32;
            keys.push(key);
        }
        (keys, remap)
    }
}

/// One origin's message counters -> provisional message ids: a table for the usual small,
/// dense counters, a map for the others.
#[derive(Default)]
struct Counters {
    dense: Vec<u32>,
    sparse: BTreeMap<u64, u32>,
    count: usize,
}

impl Counters {
    /// The provisional id of `counter`, `fresh` if it is new.
    fn id(&mut self, counter: u64, fresh: u32) -> u32 {
        if let Some(&id) = usize::try_from(counter)
            .ok()
            .and_then(|c| self.dense.get(c))
            .filter(|&&id| id != NONE)
        {
            return id;
        }
        if !self.sparse.is_empty() {
            if let Some(&id) = self.sparse.get(&counter) {
                return id;
            }
        }
        self.count += 1;
        // The table never grows beyond about twice the counters it holds.
        let limit = 2 * self.count as u64 + 4096;
        if counter < limit {
            let c = counter as usize;
            if c >= self.dense.len() {
                self.dense.resize(c + 1, NONE);
            }
            self.dense[c] = fresh;
        } else {
            self.sparse.insert(counter, fresh);
        }
        fresh
    }

    /// Every `(counter, provisional id)`, by counter.
    fn sorted(&self) -> Vec<(u64, u32)> {
        let mut all: Vec<(u64, u32)> = self
            .dense
            .iter()
            .enumerate()
            .filter(|&(_, &id)| id != NONE)
            .map(|(c, &id)| (c as u64, id))
            .collect();
        if !self.sparse.is_empty() {
            all.extend(self.sparse.iter().map(|(&c, &id)| (c, id)));
            all.sort_unstable();
        }
        all
    }
}

impl<'h> Index<'h> {
    /// Builds the index in O(n log n): one pass over the records with provisional ids
    /// (first-seen order), then the ids are renumbered in sorted order over the compact copy.
    pub(super) fn new(history: &'h History) -> Index<'h> {
        let records = &history.records;
        let n = records.len();
        assert!(
            n < NONE as usize,
            "history too long for 32-bit record indices"
        );

        // The one pass over the records. Message ids are provisional (`pm`); each message's
        // first position is its canonical one, the rare others are kept aside.
        let mut proc_ids = Interner::new();
        let mut origin_ids = Interner::new();
        let mut counters: Vec<Counters> = Vec::new();
        let mut evs: Vec<Ev> = Vec::with_capacity(n);
        let mut rec_proc: Vec<u32> = Vec::with_capacity(n);
        let mut prov_origin: Vec<u32> = Vec::new();
        let mut submit_guarantee: Vec<Option<Guarantee>> = Vec::new();
        let mut deliver_guarantee: Vec<Option<Guarantee>> = Vec::new();
        // (position, pm) of each message's first position, and pm -> its index there.
        let mut firsts: Vec<(Position, u32)> = Vec::new();
        let mut first_of: Vec<u32> = Vec::new();
        // (position, record) of the rest.
        let mut others: Vec<(Position, u32)> = Vec::new();
        for (rec, record) in records.iter().enumerate() {
            let rec = rec as u32;
            rec_proc.push(proc_ids.id(record.process));
            let (kind, msg, guarantee, position) = match record.event {
                HistoryEvent::Start => (Kind::Start, None, Guarantee::Unordered, None),
                HistoryEvent::Crash => (Kind::Crash, None, Guarantee::Unordered, None),
                HistoryEvent::ConfReg { .. } => (Kind::ConfReg, None, Guarantee::Unordered, None),
                HistoryEvent::ConfTrans { .. } => {
                    (Kind::ConfTrans, None, Guarantee::Unordered, None)
                }
                HistoryEvent::Submit { msg, guarantee, .. } => {
                    (Kind::Submit, Some(msg), guarantee, None)
                }
                HistoryEvent::Originate { msg, position } => (
                    Kind::Originate,
                    Some(msg),
                    Guarantee::Unordered,
                    Some(position),
                ),
                HistoryEvent::Deliver {
                    msg,
                    guarantee,
                    position,
                    ..
                } => (Kind::Deliver, Some(msg), guarantee, Some(position)),
            };
            let mut pm = NONE;
            if let Some(msg) = msg {
                let origin = origin_ids.id(msg.origin);
                if origin as usize == counters.len() {
                    counters.push(Counters::default());
                }
                let fresh = prov_origin.len() as u32;
                pm = counters[origin as usize].id(msg.counter, fresh);
                if pm == fresh {
                    prov_origin.push(origin);
                    submit_guarantee.push(None);
                    deliver_guarantee.push(None);
                    first_of.push(NONE);
                }
                match kind {
                    Kind::Submit => {
                        submit_guarantee[pm as usize].get_or_insert(guarantee);
                    }
                    Kind::Deliver => {
                        deliver_guarantee[pm as usize].get_or_insert(guarantee);
                    }
                    _ => {}
                }
            }
            if let Some(position) = position {
                let first = &mut first_of[pm as usize];
                if *first == NONE {
                    *first = firsts.len() as u32;
                    firsts.push((position, pm));
                } else if firsts[*first as usize].0 != position {
                    others.push((position, rec));
                }
            }
            evs.push(Ev {
                rec,
                mid: pm,
                pid: NONE, // set below
                kind,
                guarantee: u32::from(guarantee) as u8,
                repeat: false,
            });
        }
        let (proc_list, proc_remap) = proc_ids.finish();
        let (origins, origin_remap) = origin_ids.finish();

        // Message ids in sorted order: origins in order, each origin's counters in order.
        let mut by_rank: Vec<usize> = (0..counters.len()).collect();
        by_rank.sort_unstable_by_key(|&o| origin_remap[o]);
        let mut msgs = Vec::with_capacity(prov_origin.len());
        let mut msg_origin = Vec::with_capacity(prov_origin.len());
        let mut remap = vec![NONE; prov_origin.len()];
        for o in by_rank {
            let origin = origins[origin_remap[o] as usize];
            for (counter, pm) in counters[o].sorted() {
                remap[pm as usize] = msgs.len() as u32;
                msgs.push(AppMessageId { origin, counter });
                msg_origin.push(origin_remap[o]);
            }
        }
        let mut guarantees: Vec<Option<Guarantee>> = vec![None; msgs.len()];
        for (pm, (submitted, delivered)) in submit_guarantee
            .into_iter()
            .zip(deliver_guarantee)
            .enumerate()
        {
            guarantees[remap[pm] as usize] = submitted.or(delivered);
        }

        // Position and ring ids. The first positions come nearly sorted (and a stable sort
        // merges the runs).
        firsts.sort_by_key(|&(position, _)| position);
        let mut positions: Vec<Position> = Vec::with_capacity(firsts.len());
        // pm -> the pid of its first position.
        let mut canon_pid: Vec<u32> = vec![NONE; remap.len()];
        for &(position, pm) in &firsts {
            if positions.last() != Some(&position) {
                positions.push(position);
            }
            canon_pid[pm as usize] = positions.len() as u32 - 1;
        }
        if !others.is_empty() {
            positions.extend(others.iter().map(|&(position, _)| position));
            positions.sort_unstable();
            positions.dedup();
            for &(position, pm) in &firsts {
                canon_pid[pm as usize] =
                    positions.binary_search(&position).unwrap_or_default() as u32;
            }
            for &(position, rec) in &others {
                evs[rec as usize].pid =
                    positions.binary_search(&position).unwrap_or_default() as u32;
            }
        }
        let mut rings: Vec<RingId> = Vec::new();
        let mut ring_pids: Vec<Range<u32>> = Vec::new();
        let mut pos_ring: Vec<u32> = Vec::with_capacity(positions.len());
        for (pid, position) in positions.iter().enumerate() {
            if rings.last() != Some(&position.ring) {
                rings.push(position.ring);
                ring_pids.push(pid as u32..pid as u32);
            }
            if let Some(range) = ring_pids.last_mut() {
                range.end = pid as u32 + 1;
            }
            pos_ring.push(rings.len() as u32 - 1);
        }

        // Final ids, and each incarnation's log.
        let mut per_proc: Vec<Vec<Ev>> = vec![Vec::new(); proc_list.len()];
        let mut counts = vec![0usize; proc_list.len()];
        for &p in &rec_proc {
            counts[proc_remap[p as usize] as usize] += 1;
        }
        for (list, &count) in per_proc.iter_mut().zip(&counts) {
            list.reserve_exact(count);
        }
        for (ev, &p) in evs.iter_mut().zip(&rec_proc) {
            if ev.mid != NONE {
                if ev.pid == NONE && matches!(ev.kind, Kind::Deliver | Kind::Originate) {
                    ev.pid = canon_pid[ev.mid as usize];
                }
                ev.mid = remap[ev.mid as usize];
            }
            let list = &mut per_proc[proc_remap[p as usize] as usize];
            list.push(*ev);
        }

        // Repeats: a node's incarnations are consecutive in `proc_list`.
        let mut seen_by = vec![NONE; msgs.len()];
        let mut node_group = 0u32;
        for (i, list) in per_proc.iter_mut().enumerate() {
            if i > 0 && proc_list[i].node != proc_list[i - 1].node {
                node_group += 1;
            }
            for ev in list.iter_mut().filter(|ev| ev.kind == Kind::Deliver) {
                let seen = &mut seen_by[ev.mid as usize];
                ev.repeat = *seen == node_group;
                *seen = node_group;
                evs[ev.rec as usize].repeat = ev.repeat;
            }
        }

        let mut ix = Index {
            history,
            procs: Vec::with_capacity(proc_list.len()),
            evs,
            msgs,
            msg_origin,
            origins,
            guarantees,
            positions,
            rings,
            ring_pids,
            pos_ring,
        };
        for (id, list) in proc_list.into_iter().zip(per_proc) {
            let log = ProcLog::new(&ix, id, list);
            ix.procs.push(log);
        }
        ix
    }

    /// The event of record `rec`.
    pub(super) fn event(&self, rec: u32) -> &'h HistoryEvent {
        &self.history.records[rec as usize].event
    }

    /// The incarnation that recorded `rec`.
    pub(super) fn process(&self, rec: u32) -> ProcessId {
        self.history.records[rec as usize].process
    }

    /// The number of distinct messages (mids are `0..messages()`).
    pub(super) fn messages(&self) -> usize {
        self.msgs.len()
    }

    /// The message with id `mid`.
    pub(super) fn msg(&self, mid: u32) -> AppMessageId {
        self.msgs[mid as usize]
    }

    /// The dense id of a message's origin (origins are numbered in [`ProcessId`] order).
    pub(super) fn origin_id(&self, mid: u32) -> u32 {
        self.msg_origin[mid as usize]
    }

    /// The dense id of origin `p`, or [`NONE`] if no message names it.
    pub(super) fn origin_id_of(&self, p: ProcessId) -> u32 {
        self.origins.binary_search(&p).map_or(NONE, |id| id as u32)
    }

    /// The number of distinct origins.
    pub(super) fn origin_count(&self) -> usize {
        self.origins.len()
    }

    /// The position with id `pid`.
    pub(super) fn position(&self, pid: u32) -> Position {
        self.positions[pid as usize]
    }

    /// The id of the ring of position `pid` (an `Originate`'s or a `Deliver`'s).
    pub(super) fn ring_of(&self, pid: u32) -> u32 {
        self.pos_ring[pid as usize]
    }

    /// The ring with id `ring`.
    pub(super) fn ring(&self, ring: u32) -> RingId {
        self.rings[ring as usize]
    }

    /// The number of distinct rings positions name.
    pub(super) fn ring_count(&self) -> usize {
        self.rings.len()
    }

    /// The id of `ring` if some position names it, else [`NONE`].
    pub(super) fn ring_id(&self, ring: RingId) -> u32 {
        self.rings.binary_search(&ring).map_or(NONE, |id| id as u32)
    }

    /// The positions of ring `ring` (an id), in order.
    pub(super) fn ring_positions(&self, ring: u32) -> Range<u32> {
        self.ring_pids[ring as usize].clone()
    }

    /// The number of distinct positions.
    pub(super) fn position_count(&self) -> usize {
        self.positions.len()
    }

    /// A message's guarantee, if anything says it.
    pub(super) fn guarantee(&self, mid: u32) -> Option<Guarantee> {
        self.guarantees[mid as usize]
    }

    /// The deliveries in a segment's body, leaving out repeats (a node delivering a message
    /// again; S2 reports those).
    pub(super) fn deliveries<'a>(
        p: &'a ProcLog<'h>,
        seg: &Segment<'h>,
    ) -> impl Iterator<Item = &'a Ev> + use<'a, 'h> {
        p.body(seg).iter().filter(|ev| ev.is_first_delivery())
    }

    /// Where `rec` is, for violation messages: `n1#0 log[12] t=0.001000s`.
    pub(super) fn at(&self, rec: u32) -> String {
        let record = &self.history.records[rec as usize];
        format!(
            "{} log[{}] t={:?}",
            proc_name(record.process),
            self.log_pos(rec),
            record.time
        )
    }

    /// Just the log position of `rec`: `log[12]`.
    pub(super) fn log_at(&self, rec: u32) -> String {
        format!("log[{}]", self.log_pos(rec))
    }

    /// The position of record `rec` in its incarnation's log (found when a report needs it).
    fn log_pos(&self, rec: u32) -> usize {
        let process = self.process(rec);
        let p = self.procs.partition_point(|log| log.id < process);
        self.procs[p].evs.partition_point(|ev| ev.rec < rec)
    }

    /// For each node, every incarnation's com for ring R: `(node, R) -> (proc, com)`; the first
    /// one if a node (wrongly) installed R more than once.
    pub(super) fn com_by_node_ring(&self) -> BTreeMap<(NodeId, RingId), (usize, usize)> {
        let mut map = BTreeMap::new();
        for (pi, p) in self.procs.iter().enumerate() {
            for (ci, com) in p.coms.iter().enumerate() {
                map.entry((p.id.node, com.ring)).or_insert((pi, ci));
            }
        }
        map
    }
}

impl<'h> ProcLog<'h> {
    /// This log's events in one of its segments' body.
    pub(super) fn body(&self, seg: &Segment<'h>) -> &[Ev] {
        &self.evs[seg.body.clone()]
    }

    fn new(ix: &Index<'h>, id: ProcessId, evs: Vec<Ev>) -> ProcLog<'h> {
        let mut segments = vec![Segment {
            conf: None,
            conf_rec: None,
            members: &[],
            reg: None,
            reg_id: NONE,
            reg_members: &[],
            body: 0..0,
        }];
        let mut crash = None;
        let mut reg: Option<(RingId, &'h [NodeId])> = None;
        for (i, ev) in evs.iter().enumerate() {
            let (conf, members) = match ev.kind {
                Kind::Crash => {
                    crash.get_or_insert(ev.rec);
                    continue;
                }
                Kind::ConfReg | Kind::ConfTrans => match ix.event(ev.rec) {
                    HistoryEvent::ConfReg { ring, members, .. } => {
                        reg = Some((*ring, members.as_slice()));
                        (Conf::Regular(*ring), members.as_slice())
                    }
                    HistoryEvent::ConfTrans {
                        old_ring,
                        new_ring,
                        members,
                        ..
                    } => (
                        Conf::Transitional {
                            old: *old_ring,
                            new: *new_ring,
                        },
                        members.as_slice(),
                    ),
                    _ => continue,
                },
                _ => continue,
            };
            if let Some(last) = segments.last_mut() {
                last.body.end = i;
            }
            segments.push(Segment {
                conf: Some(conf),
                conf_rec: Some(ev.rec),
                members,
                reg: reg.map(|(ring, _)| ring),
                reg_id: reg.map_or(NONE, |(ring, _)| ix.ring_id(ring)),
                reg_members: reg.map_or(&[], |(_, m)| m),
                body: i + 1..i + 1,
            });
        }
        if let Some(last) = segments.last_mut() {
            last.body.end = evs.len();
        }
        let coms = coms(ix, &segments, crash);
        ProcLog {
            id,
            evs,
            segments,
            coms,
            crash,
        }
    }
}

fn coms(ix: &Index<'_>, segments: &[Segment<'_>], crash: Option<u32>) -> Vec<Com> {
    let mut coms = Vec::new();
    // The next regular segment after each one, found from the back in one pass.
    let mut next_regular = vec![None; segments.len()];
    let mut next = None;
    for (si, seg) in segments.iter().enumerate().rev() {
        next_regular[si] = next;
        if matches!(seg.conf, Some(Conf::Regular(_))) {
            next = Some(si);
        }
    }
    for (si, seg) in segments.iter().enumerate() {
        let Some(Conf::Regular(ring)) = seg.conf else {
            continue;
        };
        let (end_seg, end) = match next_regular[si] {
            Some(k) => (k, ComEnd::NextReg(segments[k].conf_rec.unwrap_or_default())),
            None => (segments.len(), crash.map_or(ComEnd::LogEnd, ComEnd::Crash)),
        };
        coms.push(Com {
            ring,
            ring_id: ix.ring_id(ring),
            segments: si..end_seg,
            end,
        });
    }
    coms
}

/// Whether a guarantee puts its messages in the agreed total order (AGREED, SAFE).
pub(super) fn is_ordered(guarantee: Guarantee) -> bool {
    matches!(guarantee, Guarantee::Agreed | Guarantee::Safe)
}

/// `n1#0`: node 1, incarnation 0.
pub(super) fn proc_name(p: ProcessId) -> String {
    format!("n{}#{}", p.node.0, p.incarnation)
}

/// `m(n1#0:5)`: the message with counter 5 of node 1's incarnation 0.
pub(super) fn msg_name(m: AppMessageId) -> String {
    format!(
        "m(n{}#{}:{})",
        m.origin.node.0, m.origin.incarnation, m.counter
    )
}

/// `ring(1:4)/17.0`: ring, seq, index.
pub(super) fn pos_name(p: Position) -> String {
    format!("{:?}/{}.{}", p.ring, p.seq, p.index)
}

/// A few messages, for "e.g." lists: `m(..), m(..), m(..) (and 12 more)`.
pub(super) fn examples<I: IntoIterator<Item = AppMessageId>>(msgs: I, total: usize) -> String {
    const SHOWN: usize = 5;
    let mut out: Vec<String> = msgs.into_iter().take(SHOWN).map(msg_name).collect();
    if total > out.len() {
        out.push(format!("(and {} more)", total - out.len()));
    }
    out.join(", ")
}

/// Node list: `[n1, n2]`.
pub(super) fn nodes_name(nodes: &[NodeId]) -> String {
    format!("{nodes:?}")
}
