//! Per-seed simulator options, drawn from the seed (swarm testing: every seed gets its own
//! mix of cluster size, timers, network faults and workload).

use std::fmt;
use std::time::Duration;

use crate::prng::{Prng, Ratio};

/// Which faults a run injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Faults {
    /// A perfect network (small random delays only).
    None,
    /// Loss, duplication, reordering and delay spikes.
    Network,
    /// Network faults plus crashes and restarts, pauses, partitions (symmetric, one-way,
    /// non-transitive) and faults aimed at nodes entering COMMIT or RECOVERY.
    All,
}

impl std::str::FromStr for Faults {
    type Err = String;

    fn from_str(text: &str) -> Result<Faults, String> {
        match text {
            "none" => Ok(Faults::None),
            "network" => Ok(Faults::Network),
            "all" => Ok(Faults::All),
            other => Err(format!("--faults: {other:?} is not none, network or all")),
        }
    }
}

impl fmt::Display for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Faults::None => "none",
            Faults::Network => "network",
            Faults::All => "all",
        })
    }
}

/// Network behaviour, per directed link and packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkOptions {
    /// Chance a packet is lost.
    pub loss: Ratio,
    /// Chance a packet is delivered twice.
    pub duplicate: Ratio,
    /// Smallest one-way delay.
    pub delay_min: Duration,
    /// Mean extra delay of multicast packets (uniform in `0..2×mean`).
    pub mcast_delay_mean: Duration,
    /// Mean extra delay of unicast tokens (a separate profile: switches may delay multicast
    /// relative to the token).
    pub token_delay_mean: Duration,
    /// Chance of a long extra delay (reorders packets).
    pub spike: Ratio,
    /// Longest spike.
    pub spike_max: Duration,
    /// Packets in flight on one link before further ones are dropped (receive buffer).
    pub link_capacity: usize,
}

/// The seeded client workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadOptions {
    /// Mean time between two submits at one node.
    pub interval_mean: Duration,
    /// Largest small message.
    pub small_max: usize,
    /// Chance a message is medium-sized (up to 64 KiB).
    pub medium: Ratio,
    /// Chance a message is large (up to `large_max`).
    pub large: Ratio,
    /// Largest large message.
    pub large_max: usize,
    /// Weights of UNORDERED, FIFO, AGREED, SAFE.
    pub guarantee_weights: [u64; 4],
    /// Most bytes one node keeps queued before it waits for `Writable`.
    pub send_queue_bytes_max: usize,
}

/// Everything that shapes one run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// The seed everything is drawn from.
    pub seed: u64,
    /// Which faults.
    pub faults: Faults,
    /// Cluster size (1–7).
    pub nodes: usize,
    /// `token` timeout of every node.
    pub token_timeout: Duration,
    /// `window_size`.
    pub window_size: u32,
    /// `max_messages`.
    pub max_messages: u32,
    /// `netmtu`.
    pub netmtu: usize,
    /// `seqno_unchanged_const`.
    pub seqno_unchanged_const: u32,
    /// `fail_recv_const` (small values reach the failure-to-receive path).
    pub fail_recv_const: u32,
    /// The network.
    pub network: NetworkOptions,
    /// The workload.
    pub workload: WorkloadOptions,
    /// Length of the phase with faults and workload.
    pub chaos_time: Duration,
    /// Longest the healed cluster may take to deliver everything.
    pub liveness_time_max: Duration,
    /// Crashes, pauses and partitions (none unless `--faults all`).
    pub process_faults: super::faults::FaultOptions,
    /// A deliberate bug in every core, to show the checkers catch it (normally none).
    pub planted_bug: crate::totem::PlantedBug,
}

/// Label of the options' PRNG stream.
const OPTIONS_STREAM: u64 = 0x0F7;

impl Options {
    /// Draws the options of `seed`. `nodes` overrides the drawn cluster size.
    #[must_use]
    pub fn swarm(seed: u64, faults: Faults, nodes: Option<usize>) -> Options {
        let mut prng = Prng::derive(seed, OPTIONS_STREAM);
        let nodes = nodes.unwrap_or_else(|| prng.range_inclusive(1, 7) as usize);
        let token_ms = *prng.pick(&[200, 300, 500, 1000, 3000]).expect("non-empty");
        let max_messages = prng.range_inclusive(1, 20) as u32;
        let window_size = max_messages * prng.range_inclusive(1, 8) as u32;
        let netmtu = *prng
            .pick(&[300, 1500, 1500, 9000, 65_000])
            .expect("non-empty");
        let with_faults = faults != Faults::None;
        let delay_min = Duration::from_micros(prng.range_inclusive(10, 200));
        let network = NetworkOptions {
            loss: if with_faults {
                prng.percent_up_to(30)
            } else {
                Ratio::ZERO
            },
            duplicate: if with_faults {
                prng.percent_up_to(20)
            } else {
                Ratio::ZERO
            },
            delay_min,
            mcast_delay_mean: Duration::from_micros(prng.range_inclusive(0, 1000)),
            token_delay_mean: Duration::from_micros(prng.range_inclusive(0, 500)),
            spike: if with_faults {
                prng.percent_up_to(5)
            } else {
                Ratio::ZERO
            },
            spike_max: Duration::from_millis(prng.range_inclusive(1, 50)),
            link_capacity: *prng.pick(&[64, 256, 4096, usize::MAX]).expect("non-empty"),
        };
        let mut large_max = *prng.pick(&[64 << 10, 1 << 20, 4 << 20]).expect("non-empty");
        if netmtu < 1500 {
            // Thousands of tiny fragments per message only slow the run down.
            large_max = large_max.min(256 << 10);
        }
        let workload = WorkloadOptions {
            // Log-uniform from 0.1 ms to 25.6 ms: light and saturating loads both get seeds.
            interval_mean: Duration::from_micros(100 << prng.range_inclusive(0, 8)),
            small_max: prng.range_inclusive(1, 1200) as usize,
            medium: prng.percent_up_to(10),
            large: Ratio::new(prng.range_inclusive(0, 5), 1000),
            large_max,
            guarantee_weights: [
                prng.range_inclusive(0, 3),
                prng.range_inclusive(0, 3),
                prng.range_inclusive(1, 4),
                prng.range_inclusive(0, 3),
            ],
            send_queue_bytes_max: large_max * 4,
        };
        Options {
            seed,
            faults,
            nodes,
            token_timeout: Duration::from_millis(token_ms),
            window_size,
            max_messages,
            netmtu,
            seqno_unchanged_const: prng.range_inclusive(2, 30) as u32,
            fail_recv_const: *prng.pick(&[10, 50, 2500, 2500]).expect("non-empty"),
            network,
            workload,
            chaos_time: Duration::from_millis(prng.range_inclusive(2000, 20_000)),
            liveness_time_max: Duration::from_secs(120),
            process_faults: if faults == Faults::All {
                super::faults::FaultOptions::swarm(&mut prng, Duration::from_millis(token_ms))
            } else {
                super::faults::FaultOptions::none()
            },
            planted_bug: crate::totem::PlantedBug::None,
        }
    }
}
