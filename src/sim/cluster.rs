//! [`Cluster`]: N protocol cores on one virtual clock over the simulated network, driven by the
//! workload, with online checks after every step and the history checkers at the end.

use std::collections::BTreeMap;
use std::time::Duration;

use super::checker::{self, Violation};
use super::faults::{Fault, Nemesis};
use super::history::{AppMessageId, History, HistoryEvent, ProcessId};
use super::network::{self, InFlight, Network};
use super::options::Options;
use super::workload::{self, Workload};
use crate::api::Guarantee;
use crate::error::CsError;
use crate::ids::NodeId;
use crate::node::state_file::NodeState;
use crate::prng::{Prng, splitmix64};
use crate::time::Instant;
use crate::totem::{self, ConfigurationKind, Destination, Event, Node};

const NETWORK_STREAM: u64 = 0x4E7;
const WORKLOAD_STREAM: u64 = 0x3A4;
const FAULT_STREAM: u64 = 0xFA7;
/// The simulated wall clock at simulated time zero (2026-01-01), in ms since the Unix epoch:
/// nodes restarted without their state file derive their ring seq from it.
const SIM_WALL_CLOCK_EPOCH_MS: u64 = 1_767_225_600_000;

/// Whether a simulated node runs.
#[derive(Debug)]
enum Status {
    Up,
    /// Crashed; restarts at the instant.
    Down(Instant),
    /// Stopped until the instant; what arrives meanwhile waits.
    Paused(Instant, Vec<InFlight>),
}

/// A simulated node: its core and what the simulator tracks about it.
#[derive(Debug)]
struct SimNode {
    core: Node,
    /// The configuration it (re)starts with.
    config: totem::Config,
    status: Status,
    process: ProcessId,
    next_counter: u64,
    next_submit: Instant,
    /// Refused by `mcast` and waiting for `Writable`.
    blocked: bool,
    /// The core's message numbers of this incarnation → the workload's ids.
    numbers: BTreeMap<u64, AppMessageId>,
    delivered: u64,
    /// Accepted submits of this incarnation, and how many of them it delivered itself.
    own_submitted: u64,
    own_delivered: u64,
    /// The node's state file: the last ring seq it persisted (`None`: wiped).
    stored_ring_seq: Option<u64>,
}

/// Figures of one run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages accepted by the cores.
    pub submitted: u64,
    /// Messages delivered, summed over nodes.
    pub delivered: u64,
    /// Bytes delivered, summed over nodes.
    pub bytes_delivered: u64,
    /// Tokens accepted, summed over nodes.
    pub tokens: u64,
    /// Retransmitted regular messages, summed over nodes.
    pub retransmits: u64,
    /// Token losses, summed over nodes.
    pub token_losses: u64,
    /// Packets the network lost.
    pub packets_lost: u64,
    /// Packets the network sent.
    pub packets_sent: u64,
}

/// The result of one run.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Every violated property (empty when the run passed).
    pub violations: Vec<Violation>,
    /// Hash of every event and transmit: equal for equal seeds.
    pub trace_hash: u64,
    /// Simulated time at the end.
    pub simulated: Duration,
    /// Figures.
    pub stats: Stats,
    /// The last records of the history, for the failure report.
    pub trace_tail: Vec<String>,
    /// Hard paths this run reached (name → times), for the sweep's coverage report.
    pub coverage: BTreeMap<&'static str, u64>,
}

/// Adds the hard paths one core's counters show to `coverage`.
fn harvest(coverage: &mut BTreeMap<&'static str, u64>, counters: &totem::Counters) {
    let marks = [
        ("recovery", counters.recoveries),
        ("recovery_rebroadcast", counters.recovery_messages_sent),
        ("recovery_failed", counters.recoveries_failed),
        (
            "recovery_failed_twice",
            u64::from(counters.recoveries_failed >= 2),
        ),
        ("transitional_with_left", counters.transitional_with_left),
        (
            "delivered_in_transitional",
            counters.delivered_in_transitional,
        ),
        ("dropped_after_gap", counters.messages_dropped_after_gap),
        ("merge_of_three_rings", counters.merges_of_three),
        ("failed_to_receive", counters.failed_to_receive),
        ("token_hold", counters.token_holds),
        ("token_hold_cancel", counters.token_hold_cancels),
        ("retransmit_list_full", counters.retransmit_list_full),
        ("flow_control_limited", counters.flow_control_limited),
        ("foreign_message_merge", counters.foreign_triggers),
    ];
    for (name, count) in marks {
        if count > 0 {
            *coverage.entry(name).or_default() += count;
        }
    }
}

/// N cores, the network, the workload and the history.
#[derive(Debug)]
pub struct Cluster {
    options: Options,
    now: Instant,
    nodes: Vec<SimNode>,
    network: Network,
    workload: Workload,
    workload_active: bool,
    history: History,
    violations: Vec<Violation>,
    trace_hash: u64,
    submitted: u64,
    /// W1: every accepted token per ring, token_seq → seq.
    accepted_tokens: BTreeMap<crate::ids::RingId, BTreeMap<u64, u64>>,
    last_seen_token: Vec<(crate::ids::RingId, u64, u64, u64)>,
    nemesis: Nemesis,
    /// When the next random fault strikes (`None`: no more faults).
    next_fault: Option<Instant>,
    /// Cut links to restore, and when.
    heals: Vec<(Instant, Vec<(usize, usize)>)>,
    previous_states: Vec<totem::State>,
    /// Hard paths this run reached (name → times).
    coverage: BTreeMap<&'static str, u64>,
}

impl Cluster {
    /// A cluster shaped by `options`, every node started at time zero.
    pub fn new(options: Options) -> Result<Cluster, crate::Error> {
        let ids: Vec<NodeId> = (1..=options.nodes as u32).map(NodeId).collect();
        let mut nodes = Vec::with_capacity(ids.len());
        let mut history = History::default();
        for &id in &ids {
            let mut config = totem::Config::with_token(id, ids.clone(), options.token_timeout);
            config.window_size = options.window_size;
            config.max_messages = options.max_messages;
            config.netmtu = options.netmtu;
            config.seqno_unchanged_const = options.seqno_unchanged_const;
            config.fail_recv_const = options.fail_recv_const;
            config.message_size_max = options.workload.large_max;
            config.send_queue_bytes_max = options.workload.send_queue_bytes_max;
            config.rng_seed = splitmix64(options.seed ^ u64::from(id.0));
            config.planted_bug = options.planted_bug;
            let ring_seq_start = config.ring_seq_start;
            let process = ProcessId {
                node: id,
                incarnation: 0,
            };
            history.push(Instant::ZERO, process, HistoryEvent::Start);
            nodes.push(SimNode {
                core: Node::new(config.clone(), Instant::ZERO)?,
                config,
                status: Status::Up,
                process,
                next_counter: 0,
                next_submit: Instant::ZERO,
                blocked: false,
                numbers: BTreeMap::new(),
                delivered: 0,
                own_submitted: 0,
                own_delivered: 0,
                stored_ring_seq: Some(ring_seq_start),
            });
        }
        let network = Network::new(
            options.network.clone(),
            Prng::derive(options.seed, NETWORK_STREAM),
            nodes.len(),
        );
        let workload = Workload::new(
            options.workload.clone(),
            Prng::derive(options.seed, WORKLOAD_STREAM),
        );
        let count = nodes.len();
        let nemesis = Nemesis::new(
            options.process_faults.clone(),
            Prng::derive(options.seed, FAULT_STREAM),
        );
        let mut cluster = Cluster {
            next_fault: None,
            nemesis,
            heals: Vec::new(),
            previous_states: vec![totem::State::Gather; count],
            coverage: BTreeMap::new(),
            options,
            now: Instant::ZERO,
            nodes,
            network,
            workload,
            workload_active: true,
            history,
            violations: Vec::new(),
            trace_hash: 0xCBF2_9CE4_8422_2325,
            accepted_tokens: BTreeMap::new(),
            submitted: 0,
            last_seen_token: vec![(crate::ids::RingId::default(), 0, 0, 0); count],
        };
        for index in 0..cluster.nodes.len() {
            cluster.nodes[index].next_submit = Instant::ZERO + cluster.workload.interval();
            cluster.drain(index);
        }
        if cluster.nemesis.options.any() {
            cluster.next_fault = Some(Instant::ZERO + cluster.nemesis.interval());
        }
        Ok(cluster)
    }

    /// The current virtual time.
    #[must_use]
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The recorded history so far.
    #[must_use]
    pub fn history(&self) -> &History {
        &self.history
    }

    /// The core of node `index` (0-based).
    #[must_use]
    pub fn node(&self, index: usize) -> &Node {
        &self.nodes[index].core
    }

    /// The network, for scripted faults.
    pub fn network_mut(&mut self) -> &mut Network {
        &mut self.network
    }

    /// Violations found online so far.
    #[must_use]
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// Stops (or restarts) the workload's submits.
    pub fn set_workload(&mut self, active: bool) {
        self.workload_active = active;
    }

    /// Heals the network: no more loss, duplication or spikes.
    pub fn heal_network(&mut self) {
        self.network
            .set_options(network::healed(&self.options.network));
    }

    /// Submits one message from node `index` now, as the workload would.
    pub fn submit(&mut self, index: usize, guarantee: Guarantee, payload: bytes::Bytes) -> bool {
        let node = &mut self.nodes[index];
        let Some(msg) = workload::app_id(&payload) else {
            return false;
        };
        let (payload_hash, len) = (workload::payload_hash(&payload), payload.len());
        match node.core.mcast(self.now, guarantee, payload) {
            Ok(number) => {
                node.numbers.insert(number, msg);
                node.own_submitted += 1;
                self.submitted += 1;
                let event = HistoryEvent::Submit {
                    msg,
                    guarantee,
                    payload_hash,
                    len,
                };
                self.history.push(self.now, node.process, event);
                self.drain(index);
                true
            }
            Err(error) if error.code() == CsError::TryAgain => {
                node.blocked = true;
                false
            }
            Err(error) => {
                self.violations.push(Violation {
                    property: "API",
                    message: format!("node {} refused a valid mcast: {error}", index + 1),
                });
                false
            }
        }
    }

    /// A fresh payload for node `index` (advances its counter).
    pub fn next_payload(&mut self, index: usize) -> bytes::Bytes {
        let node = &mut self.nodes[index];
        let counter = node.next_counter;
        node.next_counter += 1;
        self.workload.payload(node.process, counter)
    }

    /// The next instant anything happens, if any.
    fn next_instant(&self) -> Option<Instant> {
        let up = |n: &&SimNode| matches!(n.status, Status::Up);
        let timers = self
            .nodes
            .iter()
            .filter(up)
            .filter_map(|n| n.core.poll_timeout());
        let submits = self
            .nodes
            .iter()
            .filter(up)
            .filter(|n| self.workload_active && !n.blocked)
            .map(|n| n.next_submit);
        let wakeups = self.nodes.iter().filter_map(|n| match n.status {
            Status::Up => None,
            Status::Down(at) | Status::Paused(at, _) => Some(at),
        });
        let heals = self.heals.iter().map(|(at, _)| *at);
        timers
            .chain(submits)
            .chain(wakeups)
            .chain(heals)
            .chain(self.next_fault)
            .chain(self.network.next_arrival())
            .min()
    }

    /// Processes everything due at the next instant, if it is at or before `limit`.
    /// Returns false (and moves the clock to `limit`) when nothing is due by then.
    pub fn step(&mut self, limit: Instant) -> bool {
        let Some(next) = self.next_instant().filter(|&next| next <= limit) else {
            self.now = self.now.max(limit);
            return false;
        };
        self.now = self.now.max(next);
        let now = self.now;

        // Every packet that has arrived, tokens after the others ("empty the input buffer
        // before handling the token").
        let mut arrived: Vec<InFlight> = Vec::new();
        while let Some(packet) = self.network.pop_due(now) {
            arrived.push(packet);
        }
        arrived.sort_by_key(|packet| (packet.to, packet.token));
        let mut touched = vec![false; self.nodes.len()];
        self.wake_up(now, &mut touched);
        for packet in arrived {
            match &mut self.nodes[packet.to].status {
                Status::Up => {}
                Status::Down(_) => continue,
                Status::Paused(_, backlog) => {
                    backlog.push(packet);
                    continue;
                }
            }
            touched[packet.to] = true;
            self.hash(&[1, now.as_nanos(), packet.from as u64, packet.to as u64]);
            self.hash(&[packet.bytes.len() as u64]);
            let from = NodeId(packet.from as u32 + 1);
            self.nodes[packet.to]
                .core
                .handle_datagram_bytes(now, from, &packet.bytes);
            self.drain(packet.to);
        }
        for (index, touched) in touched.iter_mut().enumerate() {
            let node = &self.nodes[index];
            if matches!(node.status, Status::Up)
                && node.core.poll_timeout().is_some_and(|at| at <= now)
            {
                *touched = true;
                self.nodes[index].core.handle_timeout(now);
                self.drain(index);
            }
        }
        if self.workload_active {
            for (index, touched) in touched.iter_mut().enumerate() {
                let node = &self.nodes[index];
                if matches!(node.status, Status::Up) && !node.blocked && node.next_submit <= now {
                    *touched = true;
                    let guarantee = self.workload.guarantee();
                    let payload = self.next_payload(index);
                    self.submit(index, guarantee, payload);
                    let interval = self.workload.interval();
                    self.nodes[index].next_submit = now + interval;
                }
            }
        }
        self.strike(now, &mut touched);
        self.check_online(&touched);
        true
    }

    /// Restores healed links, resumes paused nodes (with their backlog, tokens last) and
    /// restarts crashed ones whose time has come.
    fn wake_up(&mut self, now: Instant, touched: &mut [bool]) {
        let mut index = 0;
        while index < self.heals.len() {
            if self.heals[index].0 <= now {
                let (_, links) = self.heals.swap_remove(index);
                for (from, to) in links {
                    self.network.cut(from, to, false);
                }
            } else {
                index += 1;
            }
        }
        for (index, touched) in touched.iter_mut().enumerate() {
            match &mut self.nodes[index].status {
                Status::Paused(until, backlog) if *until <= now => {
                    let mut backlog = std::mem::take(backlog);
                    self.nodes[index].status = Status::Up;
                    backlog.sort_by_key(|packet| packet.token);
                    for packet in backlog {
                        let from = NodeId(packet.from as u32 + 1);
                        self.nodes[index]
                            .core
                            .handle_datagram_bytes(now, from, &packet.bytes);
                        self.drain(index);
                    }
                    *touched = true;
                }
                Status::Down(at) if *at <= now => {
                    self.restart(index);
                    *touched = true;
                }
                _ => {}
            }
        }
    }

    /// Restarts node `index` from its state file: a new incarnation.
    fn restart(&mut self, index: usize) {
        let now = self.now;
        let node = &mut self.nodes[index];
        harvest(&mut self.coverage, node.core.counters());
        node.process.incarnation += 1;
        // As the real node does (`NodeState::next_start`): one past the stored seq, or from
        // the wall clock when the state file is gone.
        let previous = node.stored_ring_seq.map(|ring_seq| NodeState {
            ring_seq,
            incarnation: node.process.incarnation,
            session: 0,
        });
        let wall_clock_ms = SIM_WALL_CLOCK_EPOCH_MS + now.as_nanos() / 1_000_000;
        node.config.ring_seq_start = NodeState::next_start(previous, wall_clock_ms).ring_seq;
        node.stored_ring_seq = Some(node.config.ring_seq_start);
        node.core = Node::new(node.config.clone(), now).expect("the configuration was valid");
        node.status = Status::Up;
        node.numbers.clear();
        node.own_submitted = 0;
        node.own_delivered = 0;
        node.blocked = false;
        node.next_counter = 0;
        node.next_submit = now;
        let process = node.process;
        self.last_seen_token[index] = (crate::ids::RingId::default(), 0, 0, 0);
        self.previous_states[index] = totem::State::Gather;
        self.history.push(now, process, HistoryEvent::Start);
        *self.coverage.entry("restart").or_default() += 1;
        self.drain(index);
    }

    /// Random faults when due, and faults aimed at nodes that just entered COMMIT or RECOVERY.
    fn strike(&mut self, now: Instant, touched: &mut [bool]) {
        if self.next_fault.is_some_and(|at| at <= now) {
            if let Some(fault) = self.nemesis.draw(self.nodes.len()) {
                self.apply(fault, touched);
            }
            self.next_fault = Some(now + self.nemesis.interval());
        }
        if self.next_fault.is_none() {
            return; // healed: no more faults
        }
        for index in 0..self.nodes.len() {
            if !matches!(self.nodes[index].status, Status::Up) {
                continue;
            }
            let state = self.nodes[index].core.state();
            let previous = std::mem::replace(&mut self.previous_states[index], state);
            let (ratio, mark) = match state {
                totem::State::Commit if previous != state => {
                    (self.nemesis.options.on_commit, "fault_on_commit")
                }
                totem::State::Recovery if previous != state => {
                    (self.nemesis.options.on_recovery, "fault_on_recovery")
                }
                _ => continue,
            };
            if self.nemesis.chance(ratio) {
                *self.coverage.entry(mark).or_default() += 1;
                let fault = self.nemesis.aimed_at(index, self.nodes.len());
                if matches!(fault, Fault::Crash { .. } | Fault::Leave { .. }) {
                    let mark = if state == totem::State::Commit {
                        "crash_in_commit"
                    } else {
                        "crash_in_recovery"
                    };
                    *self.coverage.entry(mark).or_default() += 1;
                }
                self.apply(fault, touched);
            }
        }
    }

    /// The current incarnation of every node that is not down.
    #[must_use]
    pub fn live_processes(&self) -> Vec<ProcessId> {
        self.nodes
            .iter()
            .filter(|n| !matches!(n.status, Status::Down(_)))
            .map(|n| n.process)
            .collect()
    }

    /// Injects one fault now (scripted scenarios).
    pub fn inject(&mut self, fault: Fault) {
        let mut touched = vec![false; self.nodes.len()];
        self.apply(fault, &mut touched);
    }

    /// Runs until node `index` is in `state` (or `limit`); returns whether it got there.
    pub fn run_until_state(&mut self, index: usize, state: totem::State, limit: Instant) -> bool {
        while self.nodes[index].core.state() != state {
            if !self.step(limit) {
                return self.nodes[index].core.state() == state;
            }
        }
        true
    }

    /// Applies one fault now.
    fn apply(&mut self, fault: Fault, touched: &mut [bool]) {
        let now = self.now;
        match fault {
            Fault::Crash { node, down } => {
                if matches!(self.nodes[node].status, Status::Down(_)) {
                    return;
                }
                self.nodes[node].status = Status::Down(now + down);
                let process = self.nodes[node].process;
                self.history.push(now, process, HistoryEvent::Crash);
                *self.coverage.entry("crash").or_default() += 1;
                touched[node] = false;
            }
            Fault::CrashWiped { node, down } => {
                if matches!(self.nodes[node].status, Status::Down(_)) {
                    return;
                }
                self.nodes[node].stored_ring_seq = None;
                *self
                    .coverage
                    .entry("restart_without_state_file")
                    .or_default() += 1;
                self.apply(Fault::Crash { node, down }, touched);
            }
            Fault::Leave { node, down } => {
                if matches!(self.nodes[node].status, Status::Down(_)) {
                    return;
                }
                // A paused process cannot run its shutdown; it just dies.
                if matches!(self.nodes[node].status, Status::Up) {
                    self.nodes[node].core.leave(now);
                }
                self.drain(node);
                *self.coverage.entry("leave").or_default() += 1;
                self.apply(Fault::Crash { node, down }, touched);
            }
            Fault::Pause { node, duration } => {
                if matches!(self.nodes[node].status, Status::Up) {
                    self.nodes[node].status = Status::Paused(now + duration, Vec::new());
                    *self.coverage.entry("pause").or_default() += 1;
                    touched[node] = false;
                }
            }
            Fault::Partition { groups, duration } => {
                let mut links = Vec::new();
                for from in 0..groups.len() {
                    for to in 0..groups.len() {
                        if groups[from] != groups[to] {
                            links.push((from, to));
                        }
                    }
                }
                *self.coverage.entry("partition").or_default() += 1;
                self.cut_for(links, duration);
            }
            Fault::OneWay { from, to, duration } => {
                *self.coverage.entry("one_way_partition").or_default() += 1;
                self.cut_for(vec![(from, to)], duration);
            }
            Fault::Clog { from, to, duration } => {
                *self.coverage.entry("clogged_link").or_default() += 1;
                self.network.clog(from, to, now + duration);
            }
            Fault::NonTransitive { a, c, duration } => {
                *self.coverage.entry("non_transitive_partition").or_default() += 1;
                self.cut_for(vec![(a, c), (c, a)], duration);
            }
        }
    }

    fn cut_for(&mut self, links: Vec<(usize, usize)>, duration: Duration) {
        for &(from, to) in &links {
            self.network.cut(from, to, true);
        }
        self.heals.push((self.now + duration, links));
    }

    /// Stops every fault and heals everything now: links, noise, paused and crashed nodes.
    pub fn heal(&mut self) {
        self.next_fault = None;
        self.heal_network();
        self.network.heal_links();
        self.heals.clear();
        let now = self.now;
        for node in &mut self.nodes {
            match &mut node.status {
                Status::Down(at) | Status::Paused(at, _) => *at = now,
                Status::Up => {}
            }
        }
        let mut touched = vec![false; self.nodes.len()];
        self.wake_up(now, &mut touched);
    }

    /// Whether every node is operational on one ring whose members are all the nodes.
    #[must_use]
    pub fn is_stable(&self) -> bool {
        let ring = self.nodes[0].core.installed_ring();
        let everyone: Vec<NodeId> = self.nodes.iter().map(|n| n.core.id()).collect();
        self.nodes.iter().all(|n| {
            matches!(n.status, Status::Up)
                && n.core.state() == totem::State::Operational
                && n.core.installed_ring() == ring
                && n.core.members() == everyone.as_slice()
        })
    }

    /// Runs until [`Cluster::is_stable`] or `limit`; returns whether it became stable.
    pub fn run_until_stable(&mut self, limit: Instant) -> bool {
        while !self.is_stable() {
            if !self.step(limit) {
                return self.is_stable();
            }
        }
        true
    }

    /// Runs until `limit` (or until nothing is left to do).
    pub fn run_until(&mut self, limit: Instant) {
        while self.step(limit) {}
    }

    /// Moves node `index`'s outputs into the network and the history.
    fn drain(&mut self, index: usize) {
        let now = self.now;
        let from = index;
        while let Some((destination, bytes)) = self.nodes[index].core.poll_transmit_bytes() {
            let mcast = totem::wire::peek_kind(&bytes) == Some(totem::wire::Kind::Mcast);
            if mcast && bytes.len() > self.options.netmtu {
                // A real network fragments it, or drops it (a path that blocks fragments).
                // Regular messages are the datagrams the core cuts to netmtu (control messages
                // are bounded by the node count and the retransmit list instead).
                self.violations.push(Violation {
                    property: "MTU",
                    message: format!(
                        "node {} sent a regular message of {} bytes, above netmtu {}",
                        index + 1,
                        bytes.len(),
                        self.options.netmtu
                    ),
                });
            }
            match destination {
                Destination::Multicast => {
                    for to in (0..self.nodes.len()).filter(|&to| to != from) {
                        let packet = InFlight {
                            from,
                            to,
                            token: false,
                            bytes: bytes.clone(),
                        };
                        self.network.send(now, packet);
                    }
                    self.hash(&[2, now.as_nanos(), from as u64, bytes.len() as u64]);
                }
                Destination::Node(to) => {
                    let to = to.0 as usize - 1;
                    self.hash(&[
                        3,
                        now.as_nanos(),
                        from as u64,
                        to as u64,
                        bytes.len() as u64,
                    ]);
                    self.network.send(
                        now,
                        InFlight {
                            from,
                            to,
                            token: true,
                            bytes,
                        },
                    );
                }
            }
        }
        while let Some(event) = self.nodes[index].core.poll_event() {
            self.record(index, event);
        }
    }

    fn record(&mut self, index: usize, event: Event) {
        let now = self.now;
        let process = self.nodes[index].process;
        match event {
            Event::Deliver(delivery) => {
                self.hash(&[4, now.as_nanos(), index as u64, delivery.position.seq]);
                let Some(msg) = workload::app_id(&delivery.payload) else {
                    self.violations.push(Violation {
                        property: "S1",
                        message: format!(
                            "node {} delivered a payload without a message id at {:?}",
                            index + 1,
                            delivery.position
                        ),
                    });
                    return;
                };
                if delivery.guarantee == Guarantee::Safe {
                    self.check_safe(index, delivery.position);
                }
                self.nodes[index].delivered += 1;
                if msg.origin == process {
                    self.nodes[index].own_delivered += 1;
                }
                self.history.push(
                    now,
                    process,
                    HistoryEvent::Deliver {
                        msg,
                        guarantee: delivery.guarantee,
                        position: delivery.position,
                        payload_hash: workload::payload_hash(&delivery.payload),
                        len: delivery.payload.len(),
                    },
                );
            }
            Event::Originated {
                number,
                position: place,
            } => {
                self.hash(&[5, now.as_nanos(), index as u64, number]);
                if let Some(&msg) = self.nodes[index].numbers.get(&number) {
                    let event = HistoryEvent::Originate {
                        msg,
                        position: place,
                    };
                    self.history.push(now, process, event);
                }
            }
            Event::Configuration(configuration) => {
                self.hash(&[6, now.as_nanos(), index as u64, configuration.ring.seq]);
                let event = match configuration.kind {
                    ConfigurationKind::Regular => HistoryEvent::ConfReg {
                        ring: configuration.ring,
                        members: configuration.members,
                        joined: configuration.joined,
                        left: configuration.left,
                    },
                    ConfigurationKind::Transitional => HistoryEvent::ConfTrans {
                        old_ring: configuration.old_ring,
                        new_ring: configuration.ring,
                        members: configuration.members,
                        left: configuration.left,
                    },
                };
                self.history.push(now, process, event);
            }
            Event::PersistRingSeq(seq) => {
                self.hash(&[8, now.as_nanos(), index as u64, seq]);
                self.nodes[index].stored_ring_seq = Some(seq);
            }
            Event::Writable => {
                self.hash(&[7, now.as_nanos(), index as u64]);
                self.nodes[index].blocked = false;
            }
        }
    }

    /// S12(c) oracle: a SAFE delivery in the regular configuration happens only once every
    /// member has the message. Checked against the members still installed on that ring
    /// (one that moved on or crashed had it, or the delivery would have waited; the history
    /// checker S12 covers the rest).
    fn check_safe(&mut self, index: usize, place: totem::Position) {
        if self.nodes[index].core.installed_ring() != Some(place.ring)
            || self.nodes[index].core.state() != totem::State::Operational
        {
            return; // delivered while installing a new ring: transitional rules apply
        }
        let members = self.nodes[index].core.members().to_vec();
        for member in members {
            let other_node = &self.nodes[member.0 as usize - 1];
            let other = &other_node.core;
            if matches!(other_node.status, Status::Up | Status::Paused(..))
                && other.installed_ring() == Some(place.ring)
                && !other.has_received(place.ring, place.seq)
            {
                self.violations.push(Violation {
                    property: "S12",
                    message: format!(
                        "node {} delivered SAFE {:?} while member {member} lacks seq {}",
                        index + 1,
                        place,
                        place.seq
                    ),
                });
            }
        }
    }

    /// W1 for a token node `index` accepted: its token_seq was accepted by nobody else, and
    /// along the chain of accepted tokens (by token_seq) seq never decreases; aru ≤ seq.
    fn check_token(&mut self, index: usize) {
        let accepted = self.nodes[index].core.last_accepted_token();
        if accepted == self.last_seen_token[index] || accepted.1 == 0 {
            return;
        }
        self.last_seen_token[index] = accepted;
        let (ring, token_seq, seq, aru) = accepted;
        let chain = self.accepted_tokens.entry(ring).or_default();
        let before = chain.range(..token_seq).next_back().map(|(_, &s)| s);
        let after = chain.range(token_seq + 1..).next().map(|(_, &s)| s);
        let problem = if chain.insert(token_seq, seq).is_some() {
            Some(format!(
                "token_seq {token_seq} of {ring:?} was accepted twice"
            ))
        } else if before.is_some_and(|b| b > seq) || after.is_some_and(|a| a < seq) {
            Some(format!(
                "token seq went backwards around token_seq {token_seq} on {ring:?}"
            ))
        } else if aru > seq {
            Some(format!("token aru {aru} above seq {seq}"))
        } else {
            None
        };
        if let Some(message) = problem {
            self.violations.push(Violation {
                property: "W1",
                message: format!("node {}: {message}", index + 1),
            });
        }
    }

    /// Per-step white-box checks of the nodes that ran: each core's invariants (W2, W5, W6),
    /// the token chain (W1) and GC safety (W3: nothing is freed that a member still installed
    /// on the same ring lacks).
    fn check_online(&mut self, touched: &[bool]) {
        for index in (0..self.nodes.len()).filter(|&i| touched[i]) {
            self.check_token(index);
        }
        for index in (0..self.nodes.len()).filter(|&i| touched[i]) {
            let node = &self.nodes[index].core;
            node.assert_invariants();
            let Some(ring) = node.installed_ring() else {
                continue;
            };
            let freed = node.freed_upto();
            let lowest = self
                .nodes
                .iter()
                .filter(|n| !matches!(n.status, Status::Down(_)))
                .filter(|n| n.core.installed_ring() == Some(ring))
                .map(|n| n.core.my_aru())
                .min()
                .unwrap_or(0);
            if freed > lowest {
                self.violations.push(Violation {
                    property: "W3",
                    message: format!(
                        "node {} freed seqs up to {freed} of {ring:?} while a member has {lowest}",
                        index + 1
                    ),
                });
            }
        }
    }

    fn hash(&mut self, words: &[u64]) {
        for &word in words {
            self.trace_hash = splitmix64(self.trace_hash ^ word);
        }
    }

    /// Token losses declared so far, summed over nodes.
    fn token_losses(&self) -> u64 {
        self.nodes
            .iter()
            .map(|n| n.core.counters().token_losses)
            .sum()
    }

    /// Whether the healed cluster is done: one ring of everyone, nothing left to send, and
    /// every node delivered its own accepted messages. (That every member delivered the same
    /// messages is then checked on the history, L2.)
    fn all_delivered(&self) -> bool {
        self.is_stable()
            && self
                .nodes
                .iter()
                .all(|n| n.core.send_queue_bytes() == 0 && n.own_delivered >= n.own_submitted)
    }

    fn stats(&self) -> Stats {
        let mut stats = Stats {
            submitted: self.submitted,
            packets_lost: self.network.lost,
            packets_sent: self.network.sent,
            ..Stats::default()
        };
        for node in &self.nodes {
            let counters = node.core.counters();
            stats.delivered += counters.messages_delivered;
            stats.bytes_delivered += counters.bytes_delivered;
            stats.tokens += counters.tokens_accepted;
            stats.retransmits += counters.retransmits_sent;
            stats.token_losses += counters.token_losses;
        }
        stats
    }
}

/// Runs one seed: a chaos phase with faults and workload, then the healed cluster must deliver
/// everything (L2) and keep its token moving (L4); then the history checkers run.
#[must_use]
pub fn run(options: &Options) -> Outcome {
    let mut cluster = match Cluster::new(options.clone()) {
        Ok(cluster) => cluster,
        Err(error) => {
            return Outcome {
                violations: vec![Violation {
                    property: "config",
                    message: error.to_string(),
                }],
                trace_hash: 0,
                simulated: Duration::ZERO,
                stats: Stats::default(),
                trace_tail: Vec::new(),
                coverage: BTreeMap::new(),
            };
        }
    };
    let chaos_end = Instant::ZERO + options.chaos_time;
    // L5 is about steady state: count token losses from the first time everyone is on one ring.
    let mut losses_when_formed = None;
    while cluster.step(chaos_end) {
        if losses_when_formed.is_none() && cluster.is_stable() {
            losses_when_formed = Some(cluster.token_losses());
        }
    }

    // Liveness: heal everything, stop submitting. L1: one ring of everyone within the bound
    // the timers allow (token loss, a failed consensus round, a good one with its rotations).
    cluster.set_workload(false);
    cluster.heal();
    let healed_at = cluster.now();
    let consensus = options.token_timeout * 6 / 5;
    let convergence = options.token_timeout * 2 + consensus * 3 + Duration::from_secs(2);
    if !cluster.run_until_stable(healed_at + convergence) {
        let states = cluster
            .nodes
            .iter()
            .map(|n| n.core.state())
            .collect::<Vec<_>>();
        let formed = cluster
            .run_until_stable(healed_at + options.liveness_time_max)
            .then(|| cluster.now().saturating_duration_since(healed_at));
        cluster.violations.push(Violation {
            property: "L1",
            message: format!(
                "no ring of every node {convergence:?} after healing (formed after \
                 {formed:?}): states {states:?}, rings {:?}",
                cluster
                    .nodes
                    .iter()
                    .map(|n| n.core.installed_ring())
                    .collect::<Vec<_>>()
            ),
        });
    }
    let deadline = healed_at + options.liveness_time_max;
    while !cluster.all_delivered() && cluster.now() < deadline {
        let limit = (cluster.now() + Duration::from_millis(100)).min(deadline);
        cluster.run_until(limit);
    }
    if !cluster.all_delivered() {
        cluster.violations.push(Violation {
            property: "L2",
            message: format!(
                "{:?} after healing, not every node delivered all {} messages: delivered {:?}",
                options.liveness_time_max,
                cluster.submitted,
                cluster
                    .nodes
                    .iter()
                    .map(|n| n.delivered)
                    .collect::<Vec<_>>()
            ),
        });
    }
    // L4: the token keeps moving while idle (held tokens are still forwarded every `hold`).
    let before: Vec<u64> = cluster
        .nodes
        .iter()
        .map(|n| n.core.counters().tokens_accepted)
        .collect();
    let settle = cluster.now() + options.token_timeout * 3;
    cluster.run_until(settle);
    for (index, node) in cluster.nodes.iter().enumerate() {
        if node.core.counters().tokens_accepted <= before[index] {
            cluster.violations.push(Violation {
                property: "L4",
                message: format!(
                    "node {} accepted no token while idle after healing",
                    index + 1
                ),
            });
        }
    }

    // L5: under benign noise the token is never declared lost (that would be a membership
    // change). Benign: loss at most 2 %, and delays that stay below the retransmit period.
    let benign = !options.process_faults.any()
        && options.network.loss.at_most(crate::prng::Ratio::percent(2))
        && options.network.spike_max < options.token_timeout / 5;
    if let (true, Some(before)) = (benign, losses_when_formed) {
        let losses = cluster.token_losses() - before;
        if losses > 0 {
            cluster.violations.push(Violation {
                property: "L5",
                message: format!(
                    "the token was declared lost {losses} times after the ring formed, under \
                     benign noise"
                ),
            });
        }
    }

    let mut violations = std::mem::take(&mut cluster.violations);
    violations.extend(checker::check_safety(&cluster.history));
    let live: Vec<ProcessId> = cluster.nodes.iter().map(|n| n.process).collect();
    violations.extend(checker::check_all_delivered(&cluster.history, &live));
    let tail = cluster.history.records.len().saturating_sub(12);
    let mut coverage = std::mem::take(&mut cluster.coverage);
    for node in &cluster.nodes {
        harvest(&mut coverage, node.core.counters());
    }
    Outcome {
        violations,
        trace_hash: cluster.trace_hash,
        simulated: cluster.now().saturating_duration_since(Instant::ZERO),
        stats: cluster.stats(),
        coverage,
        trace_tail: cluster.history.records[tail..]
            .iter()
            .map(|r| format!("{} {:?} {:?}", r.time, r.process.node, r.event))
            .collect(),
    }
}
