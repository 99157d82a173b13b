//! Process and partition faults (PROTOCOL.md §3.3–3.4): crashes and restarts, pauses,
//! symmetric, asymmetric and non-transitive partitions, drawn per seed, plus state-triggered
//! faults when a node enters COMMIT or RECOVERY (random timing almost never lands there).

use std::time::Duration;

use crate::prng::{Prng, Ratio};

/// How often and how hard faults strike, drawn per seed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultOptions {
    /// Mean time between two random faults (uniform in `0..2×mean`).
    pub interval_mean: Duration,
    /// Relative weights of crash, pause, symmetric partition, one-way cut, non-transitive,
    /// clogged link.
    pub weights: [u64; 6],
    /// Longest a crashed node stays down before it restarts.
    pub down_max: Duration,
    /// Longest pause (beyond the token timeout so that others reconfigure).
    pub pause_max: Duration,
    /// Longest partition.
    pub partition_max: Duration,
    /// Chance that a node entering COMMIT is hit at once.
    pub on_commit: Ratio,
    /// Chance that a node entering RECOVERY is hit at once.
    pub on_recovery: Ratio,
}

impl FaultOptions {
    /// No process or partition faults.
    #[must_use]
    pub fn none() -> FaultOptions {
        FaultOptions {
            interval_mean: Duration::MAX,
            weights: [0; 6],
            down_max: Duration::ZERO,
            pause_max: Duration::ZERO,
            partition_max: Duration::ZERO,
            on_commit: Ratio::ZERO,
            on_recovery: Ratio::ZERO,
        }
    }

    /// Draws the fault mix of one seed, scaled to its token timeout.
    #[must_use]
    pub fn swarm(prng: &mut Prng, token: Duration) -> FaultOptions {
        let scale = |prng: &mut Prng, low: u64, high: u64| {
            token * prng.range_inclusive(low, high) as u32 / 4
        };
        FaultOptions {
            interval_mean: scale(prng, 2, 40),
            weights: [
                prng.range_inclusive(0, 3),
                prng.range_inclusive(0, 3),
                prng.range_inclusive(0, 3),
                prng.range_inclusive(0, 2),
                prng.range_inclusive(0, 2),
                prng.range_inclusive(0, 2),
            ],
            down_max: scale(prng, 1, 24),
            pause_max: scale(prng, 2, 16),
            partition_max: scale(prng, 2, 24),
            on_commit: prng.percent_up_to(30),
            on_recovery: prng.percent_up_to(30),
        }
    }

    /// Whether any fault can happen.
    #[must_use]
    pub fn any(&self) -> bool {
        self.weights.iter().any(|&w| w > 0)
    }
}

/// One fault to apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Crash the node; it restarts after the delay (keeping its state file).
    Crash {
        /// Node index.
        node: usize,
        /// Time until restart.
        down: Duration,
    },
    /// Crash the node and lose its state file; it restarts after the delay.
    CrashWiped {
        /// Node index.
        node: usize,
        /// Time until restart.
        down: Duration,
    },
    /// The node leaves the ring cleanly (a SIGTERM), then is down like a crash.
    Leave {
        /// Node index.
        node: usize,
        /// Time until restart.
        down: Duration,
    },
    /// Stop the node (no input, no timers) for a while; it then resumes with a burst.
    Pause {
        /// Node index.
        node: usize,
        /// How long.
        duration: Duration,
    },
    /// Cut every link between groups (`group[i]` of node i), both ways.
    Partition {
        /// Group of each node.
        groups: Vec<u8>,
        /// How long.
        duration: Duration,
    },
    /// Cut the links from `from` to `to` only (one way).
    OneWay {
        /// Sender.
        from: usize,
        /// Receiver.
        to: usize,
        /// How long.
        duration: Duration,
    },
    /// Hold every packet from `from` to `to` for a while, then release them in a burst.
    Clog {
        /// Sender.
        from: usize,
        /// Receiver.
        to: usize,
        /// How long.
        duration: Duration,
    },
    /// a↔b and b↔c stay, a↮c.
    NonTransitive {
        /// One end.
        a: usize,
        /// The other end.
        c: usize,
        /// How long.
        duration: Duration,
    },
}

/// Draws faults.
#[derive(Debug)]
pub struct Nemesis {
    /// The mix.
    pub options: FaultOptions,
    prng: Prng,
}

impl Nemesis {
    /// A nemesis drawing from `prng`.
    #[must_use]
    pub fn new(options: FaultOptions, prng: Prng) -> Nemesis {
        Nemesis { options, prng }
    }

    /// Time until the next random fault.
    pub fn interval(&mut self) -> Duration {
        let mean = u64::try_from(self.options.interval_mean.as_nanos()).unwrap_or(u64::MAX / 4);
        Duration::from_nanos(self.prng.below(mean.saturating_mul(2).max(1)))
    }

    fn duration(&mut self, max: Duration) -> Duration {
        let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX).max(1);
        Duration::from_nanos(self.prng.range_inclusive(nanos / 4, nanos))
    }

    /// A random fault among `nodes` nodes, or `None` if the mix has none.
    pub fn draw(&mut self, nodes: usize) -> Option<Fault> {
        let weights = self.options.weights;
        let total: u64 = weights.iter().sum();
        if total == 0 || nodes == 0 {
            return None;
        }
        let mut roll = self.prng.below(total);
        let mut kind = 0;
        for (index, weight) in weights.iter().enumerate() {
            if roll < *weight {
                kind = index;
                break;
            }
            roll -= weight;
        }
        let node = self.prng.below(nodes as u64) as usize;
        let other = |prng: &mut Prng| (node + 1 + prng.below(nodes as u64 - 1) as usize) % nodes;
        Some(match kind {
            // One shutdown in four is clean (a leave), as when an operator stops a node.
            0 if self.prng.below(4) == 0 => Fault::Leave {
                node,
                down: self.duration(self.options.down_max),
            },
            // A disk replaced or wiped: the ring seq comes from the wall clock.
            0 if self.prng.below(6) == 0 => Fault::CrashWiped {
                node,
                down: self.duration(self.options.down_max),
            },
            0 => Fault::Crash {
                node,
                down: self.duration(self.options.down_max),
            },
            2 if nodes > 1 => {
                let parts = self.prng.range_inclusive(2, 3.min(nodes as u64)) as u8;
                let groups = (0..nodes)
                    .map(|_| self.prng.below(u64::from(parts)) as u8)
                    .collect();
                Fault::Partition {
                    groups,
                    duration: self.duration(self.options.partition_max),
                }
            }
            3 if nodes > 1 => Fault::OneWay {
                from: node,
                to: other(&mut self.prng),
                duration: self.duration(self.options.partition_max),
            },
            4 if nodes > 2 => Fault::NonTransitive {
                a: node,
                c: other(&mut self.prng),
                duration: self.duration(self.options.partition_max),
            },
            5 if nodes > 1 => Fault::Clog {
                from: node,
                to: other(&mut self.prng),
                duration: self.duration(self.options.partition_max),
            },
            // 1, and partitions that need more nodes than there are: a pause.
            _ => Fault::Pause {
                node,
                duration: self.duration(self.options.pause_max),
            },
        })
    }

    /// A fault aimed at `node`, which just entered COMMIT or RECOVERY.
    pub fn aimed_at(&mut self, node: usize, nodes: usize) -> Fault {
        match self.prng.below(4) {
            0 => Fault::Crash {
                node,
                down: self.duration(self.options.down_max),
            },
            3 => Fault::Leave {
                node,
                down: self.duration(self.options.down_max),
            },
            1 => Fault::Pause {
                node,
                duration: self.duration(self.options.pause_max),
            },
            _ => {
                let groups = (0..nodes).map(|i| u8::from(i == node)).collect();
                Fault::Partition {
                    groups,
                    duration: self.duration(self.options.partition_max),
                }
            }
        }
    }

    /// True with `ratio`.
    pub fn chance(&mut self, ratio: Ratio) -> bool {
        self.prng.chance(ratio)
    }
}
