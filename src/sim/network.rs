//! The simulated network: per-packet loss, duplication, delay and reordering drawn from the
//! seed, and a bounded number of packets in flight per link.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use super::options::NetworkOptions;
use crate::prng::{Prng, Ratio};
use crate::time::Instant;
use crate::totem::wire::{Kind, peek_kind};

/// A packet on its way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InFlight {
    /// Sending node index.
    pub from: usize,
    /// Receiving node index.
    pub to: usize,
    /// Whether it is a token (unicast).
    pub token: bool,
    /// The datagram (shared by the copies of one multicast).
    pub bytes: bytes::Bytes,
}

/// Which packets a scripted [`Rule`] applies to, by the wire kind byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Match {
    /// Ordering tokens.
    Token,
    /// Regular messages.
    Mcast,
    /// Commit tokens.
    CommitToken,
    /// Every packet.
    Any,
}

/// What a scripted [`Rule`] does to a matching packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Lose it.
    Drop,
    /// Deliver it twice.
    Duplicate,
}

/// A scripted fault: after letting `skip` matching packets pass, apply `action` to the next
/// `count` matching packets from `from` to `to` (`None` = any node).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Sending node index, or any.
    pub from: Option<usize>,
    /// Receiving node index, or any.
    pub to: Option<usize>,
    /// Which packets.
    pub kind: Match,
    /// What to do.
    pub action: Action,
    /// Matching packets to let through first.
    pub skip: u32,
    /// Matching packets to act on.
    pub count: u32,
}

impl Rule {
    fn matches(&self, packet: &InFlight) -> bool {
        let kind = peek_kind(&packet.bytes);
        self.from.is_none_or(|from| from == packet.from)
            && self.to.is_none_or(|to| to == packet.to)
            && match self.kind {
                Match::Token => kind == Some(Kind::Token),
                Match::Mcast => kind == Some(Kind::Mcast),
                Match::CommitToken => kind == Some(Kind::CommitToken),
                Match::Any => true,
            }
    }
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Scheduled {
    at: Instant,
    order: u64,
    packet_index: usize,
}

/// The packets in flight, ordered by arrival time (ties by send order).
#[derive(Debug)]
pub struct Network {
    options: NetworkOptions,
    prng: Prng,
    queue: BinaryHeap<Reverse<Scheduled>>,
    slots: Vec<Option<InFlight>>,
    free_slots: Vec<usize>,
    order: u64,
    in_flight: Vec<usize>,
    nodes: usize,
    rules: Vec<Rule>,
    /// Per directed link: how many partitions currently cut it.
    cuts: Vec<u32>,
    /// Per directed link: packets are held until this instant (a clog), then arrive at once.
    clogged_until: Vec<Instant>,
    /// Packets sent.
    pub sent: u64,
    /// Packets lost (by chance or a full link).
    pub lost: u64,
    /// Packets duplicated.
    pub duplicated: u64,
}

impl Network {
    /// A network among `nodes` nodes.
    #[must_use]
    pub fn new(options: NetworkOptions, prng: Prng, nodes: usize) -> Network {
        Network {
            options,
            prng,
            queue: BinaryHeap::new(),
            slots: Vec::new(),
            free_slots: Vec::new(),
            order: 0,
            in_flight: vec![0; nodes * nodes],
            nodes,
            rules: Vec::new(),
            cuts: vec![0; nodes * nodes],
            clogged_until: vec![Instant::ZERO; nodes * nodes],
            sent: 0,
            lost: 0,
            duplicated: 0,
        }
    }

    /// Replaces the fault options (the liveness phase heals the network).
    pub fn set_options(&mut self, options: NetworkOptions) {
        self.options = options;
    }

    /// Cuts (`true`) or restores one cut of the link from `from` to `to`.
    pub fn cut(&mut self, from: usize, to: usize, cut: bool) {
        let link = &mut self.cuts[from * self.nodes + to];
        *link = if cut {
            *link + 1
        } else {
            link.saturating_sub(1)
        };
    }

    /// Restores every link.
    pub fn heal_links(&mut self) {
        self.cuts.iter_mut().for_each(|c| *c = 0);
        self.clogged_until
            .iter_mut()
            .for_each(|until| *until = Instant::ZERO);
    }

    /// Holds every packet sent from `from` to `to` until `until`; then they arrive in a burst.
    pub fn clog(&mut self, from: usize, to: usize, until: Instant) {
        let link = &mut self.clogged_until[from * self.nodes + to];
        *link = (*link).max(until);
    }

    /// Whether the link from `from` to `to` is cut.
    #[must_use]
    pub fn is_cut(&self, from: usize, to: usize) -> bool {
        self.cuts[from * self.nodes + to] > 0
    }

    /// Adds a scripted fault, applied before the random ones.
    pub fn add_rule(&mut self, rule: Rule) {
        self.rules.push(rule);
    }

    /// Scripted faults that have not run out yet.
    #[must_use]
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The scripted action for `packet`, if a rule applies.
    fn scripted(&mut self, packet: &InFlight) -> Option<Action> {
        let index = self.rules.iter().position(|rule| rule.matches(packet))?;
        let rule = &mut self.rules[index];
        if rule.skip > 0 {
            rule.skip -= 1;
            return None;
        }
        let action = rule.action;
        rule.count -= 1;
        if rule.count == 0 {
            self.rules.remove(index);
        }
        Some(action)
    }

    /// Sends one packet at `now`.
    pub fn send(&mut self, now: Instant, packet: InFlight) {
        self.sent += 1;
        let scripted = self.scripted(&packet);
        let cut = self.is_cut(packet.from, packet.to);
        if cut || scripted == Some(Action::Drop) || self.prng.chance(self.options.loss) {
            self.lost += 1;
            return;
        }
        let copies =
            if scripted == Some(Action::Duplicate) || self.prng.chance(self.options.duplicate) {
                self.duplicated += 1;
                2
            } else {
                1
            };
        let link = packet.from * self.nodes + packet.to;
        let token = packet.token;
        let mut packet = Some(packet);
        for copy in 0..copies {
            if self.in_flight[link] >= self.options.link_capacity {
                self.lost += 1;
                continue;
            }
            let mean = if token {
                self.options.token_delay_mean
            } else {
                self.options.mcast_delay_mean
            };
            let mut delay = self.options.delay_min + uniform(&mut self.prng, mean * 2);
            if self.prng.chance(self.options.spike) {
                delay += uniform(&mut self.prng, self.options.spike_max);
            }
            let packet = if copy + 1 == copies {
                packet.take()
            } else {
                packet.clone()
            };
            let packet = packet.expect("present until the last copy");
            self.in_flight[link] += 1;
            let packet_index = if let Some(index) = self.free_slots.pop() {
                self.slots[index] = Some(packet);
                index
            } else {
                self.slots.push(Some(packet));
                self.slots.len() - 1
            };
            self.order += 1;
            let at = (now + delay).max(self.clogged_until[link]);
            self.queue.push(Reverse(Scheduled {
                at,
                order: self.order,
                packet_index,
            }));
        }
    }

    /// When the next packet arrives.
    #[must_use]
    pub fn next_arrival(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse(s)| s.at)
    }

    /// Removes and returns the next packet if it arrives at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<InFlight> {
        let Reverse(head) = self.queue.peek()?;
        if head.at > now {
            return None;
        }
        let Reverse(head) = self.queue.pop()?;
        let packet = self.slots[head.packet_index].take()?;
        self.free_slots.push(head.packet_index);
        self.in_flight[packet.from * self.nodes + packet.to] -= 1;
        Some(packet)
    }

    /// Packets still in flight.
    #[must_use]
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing is in flight.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

fn uniform(prng: &mut Prng, max: Duration) -> Duration {
    let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        Duration::ZERO
    } else {
        Duration::from_nanos(prng.below(nanos))
    }
}

/// A healed network: no loss, duplication or spikes.
#[must_use]
pub fn healed(options: &NetworkOptions) -> NetworkOptions {
    NetworkOptions {
        loss: Ratio::ZERO,
        duplicate: Ratio::ZERO,
        spike: Ratio::ZERO,
        link_capacity: usize::MAX,
        ..options.clone()
    }
}
