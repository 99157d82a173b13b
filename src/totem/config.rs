//! Configuration of one protocol core: Corosync's timer and constant names and defaults
//! (PROTOCOL.md §1.12), every bound the core keeps, and the seed of its PRNG.

use std::time::Duration;

use crate::error::Error;
use crate::ids::NodeId;

/// Smallest value any timeout may take (Corosync's `MINIMUM_TIMEOUT`, 3 × 1000/HZ).
pub const MINIMUM_TIMEOUT: Duration = Duration::from_millis(30);

/// A deliberate protocol bug, compiled only into simulator builds, used to show that the
/// checkers catch real faults of the core (not only hand-edited histories).
#[cfg(feature = "sim")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PlantedBug {
    /// No bug.
    #[default]
    None,
    /// Deliver SAFE messages without waiting for stability (breaks S12).
    SafeIgnoresStability,
    /// Free messages once this node has them, not once every member has (breaks W3).
    FreeBeforeStable,
    /// Accept retransmitted copies of a token again (breaks W1).
    AcceptDuplicateTokens,
    /// Deliver AGREED messages on receipt, like UNORDERED (breaks S7/S8).
    AgreedOnReceipt,
    /// The representative reuses its ring's seq for the new ring (breaks W4 and S5).
    RingSeqNotAdvanced,
    /// A node alone in its gather round goes straight to operational without forming a ring
    /// (an illegal transition: breaks W5).
    SingletonSkipsCommit,
}

/// Largest datagram the core may be asked to produce for the network (a UDP datagram's
/// payload, with room to spare for IPv6 and crypto).
pub const NETMTU_MAX: usize = 65_000;
/// Largest packet the core produces at all: a cluster of one node sends none, and uses this.
pub const PACKET_BYTES_MAX: usize = 1 << 20;

/// Settings of one core. Build with [`Config::new`] (Corosync's defaults), adjust fields,
/// and the core checks them with [`Config::validate`] when it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node.
    pub node_id: NodeId,
    /// Every node of the cluster (the nodelist), sorted and unique; includes `node_id`.
    pub nodes: Vec<NodeId>,
    /// `token`: time without a token before it is declared lost.
    pub token_timeout: Duration,
    /// `token_retransmit`: time after forwarding the token before re-sending it.
    pub token_retransmit: Duration,
    /// `hold`: how long an idle representative holds the token before forwarding it.
    pub hold: Duration,
    /// `join`: period of join messages while gathering.
    pub join_timeout: Duration,
    /// `send_join`: upper bound of the random delay before each join (0 = none).
    pub send_join: Duration,
    /// `consensus`: time to reach consensus in the gather state.
    pub consensus_timeout: Duration,
    /// `merge`: period of merge detects from an idle representative.
    pub merge_timeout: Duration,
    /// `fail_recv_const`: token visits with an unchanged aru before failure to receive.
    pub fail_recv_const: u32,
    /// `seqno_unchanged_const`: idle token visits before the token is held.
    pub seqno_unchanged_const: u32,
    /// `miss_count_const`: visits a gap must persist before it is requested.
    pub miss_count_const: u32,
    /// `window_size`: regular messages all members may send per rotation.
    pub window_size: u32,
    /// `max_messages`: regular messages one member may send per visit.
    pub max_messages: u32,
    /// `netmtu`: largest packet the core produces, in bytes (a datagram, on a cluster of
    /// several nodes), a recovery's re-broadcasts included: regular packets are
    /// [`super::wire::ENCAPSULATION_LEN`] smaller.
    pub netmtu: usize,
    /// Largest totem payload (a service's header and the application's message), delivered
    /// whole or not at all.
    pub message_size_max: usize,
    /// Bytes of accepted, not yet sent messages before `mcast` refuses (`CS_ERR_TRY_AGAIN`).
    pub send_queue_bytes_max: usize,
    /// Most seqs between the ring's aru and the highest seq (Corosync: 16 384).
    pub sort_queue_capacity: u64,
    /// Most retransmit requests in one token (Corosync: 30).
    pub retransmit_entries_max: usize,
    /// Seq of the initial ring (the membership layer replaces this with the persisted one).
    pub ring_seq_start: u64,
    /// First message number of this incarnation; must not repeat across restarts.
    pub message_number_start: u64,
    /// Seed of the core's PRNG (join jitter).
    pub rng_seed: u64,
    /// A deliberate bug for checker validation (simulator builds only).
    #[cfg(feature = "sim")]
    pub planted_bug: PlantedBug,
}

impl Config {
    /// Corosync's defaults for a node of `nodes` (`token` = 3000 ms plus 650 ms per node
    /// beyond two, and the timers derived from it).
    #[must_use]
    pub fn new(node_id: NodeId, nodes: &[NodeId]) -> Config {
        let mut nodes = nodes.to_vec();
        nodes.sort_unstable();
        nodes.dedup();
        let extra = nodes.len().saturating_sub(2) as u64;
        let token = Duration::from_millis(3000 + if nodes.len() >= 3 { 650 * extra } else { 0 });
        Config::with_token(node_id, nodes, token)
    }

    /// The defaults with a given `token` timeout and every timer derived from it as
    /// Corosync derives them.
    #[must_use]
    pub fn with_token(node_id: NodeId, nodes: Vec<NodeId>, token: Duration) -> Config {
        // token_retransmit = token / (retransmits_before_loss + 0.2), retransmits = 4.
        let token_retransmit = token * 10 / 42;
        // hold = token_retransmit × 0.8 − 1000/HZ (HZ = 100).
        let hold = (token_retransmit * 8 / 10).saturating_sub(Duration::from_millis(10));
        Config {
            node_id,
            nodes,
            token_timeout: token,
            token_retransmit,
            hold: hold.max(MINIMUM_TIMEOUT),
            join_timeout: Duration::from_millis(50),
            send_join: Duration::ZERO,
            consensus_timeout: token * 6 / 5,
            merge_timeout: Duration::from_millis(200),
            fail_recv_const: 2500,
            seqno_unchanged_const: 30,
            miss_count_const: 5,
            window_size: 50,
            max_messages: 17,
            netmtu: 1500,
            message_size_max: crate::api::MAX_ATOMIC_MSGSIZE + crate::api::SERVICE_HEADER_MAX,
            send_queue_bytes_max: 256 * 1024 * 1024,
            sort_queue_capacity: 16_384,
            retransmit_entries_max: 30,
            ring_seq_start: 4,
            message_number_start: 1,
            rng_seed: u64::from(node_id.0),
            #[cfg(feature = "sim")]
            planted_bug: PlantedBug::None,
        }
    }

    /// Checks every value; the error names the setting and why it is wrong.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |message: String| Err(Error::InvalidParam(message.into()));
        if self.node_id.is_none() {
            return invalid("node_id: must not be 0".into());
        }
        if self.nodes.windows(2).any(|pair| pair[0] >= pair[1]) {
            return invalid("nodes: must be sorted and unique".into());
        }
        if self.nodes.iter().any(|node| node.is_none()) {
            return invalid("nodes: node id 0 is not allowed".into());
        }
        if self.nodes.binary_search(&self.node_id).is_err() {
            return invalid(format!(
                "nodes: this node ({}) is not in the node list",
                self.node_id
            ));
        }
        for (name, value) in [
            ("token", self.token_timeout),
            ("token_retransmit", self.token_retransmit),
            ("hold", self.hold),
            ("join", self.join_timeout),
            ("consensus", self.consensus_timeout),
            ("merge", self.merge_timeout),
        ] {
            if value < MINIMUM_TIMEOUT {
                return invalid(format!("{name}: {value:?} is below the minimum of 30 ms"));
            }
        }
        if self.token_retransmit >= self.token_timeout {
            return invalid("token_retransmit: must be shorter than token".into());
        }
        if self.hold >= self.token_timeout {
            return invalid("hold: must be shorter than token".into());
        }
        if self.consensus_timeout < self.join_timeout {
            return invalid("consensus: must be at least join".into());
        }
        if self.window_size == 0 || self.max_messages == 0 {
            return invalid("window_size and max_messages: must be at least 1".into());
        }
        if self.max_messages > self.window_size {
            return invalid(format!(
                "max_messages: {} exceeds window_size {}",
                self.max_messages, self.window_size
            ));
        }
        let smallest_mtu = super::wire::ENCAPSULATION_LEN
            + super::wire::MCAST_PREFIX_LEN
            + super::wire::CHUNK_HEADER_LEN
            + 64;
        if self.netmtu < smallest_mtu || self.netmtu > PACKET_BYTES_MAX {
            return invalid(format!(
                "netmtu: {} is outside {smallest_mtu}..={PACKET_BYTES_MAX}",
                self.netmtu
            ));
        }
        if self.message_size_max == 0 || self.message_size_max > u32::MAX as usize {
            return invalid("message_size_max: must be 1..=4 GiB".into());
        }
        if self.send_queue_bytes_max < self.message_size_max {
            return invalid("send_queue_bytes_max: must hold at least one largest message".into());
        }
        if self.sort_queue_capacity < 4 * u64::from(self.window_size) {
            return invalid("sort_queue_capacity: must be at least 4 × window_size".into());
        }
        if self.retransmit_entries_max == 0
            || self.retransmit_entries_max > super::wire::RTR_ENTRIES_MAX
        {
            return invalid("retransmit_entries_max: must be 1..=256".into());
        }
        if self.miss_count_const == 0 || self.seqno_unchanged_const == 0 {
            return invalid(
                "miss_count_const and seqno_unchanged_const: must be at least 1".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(ids: &[u32]) -> Vec<NodeId> {
        ids.iter().map(|&id| NodeId(id)).collect()
    }

    #[test]
    fn defaults_follow_corosync() {
        let config = Config::new(NodeId(1), &nodes(&[3, 1, 2]));
        assert_eq!(config.nodes, nodes(&[1, 2, 3]));
        assert_eq!(config.token_timeout, Duration::from_millis(3650));
        assert_eq!(config.consensus_timeout, Duration::from_millis(4380));
        let two = Config::new(NodeId(1), &nodes(&[1, 2]));
        assert_eq!(two.token_timeout, Duration::from_secs(3));
        assert_eq!(two.token_retransmit, Duration::from_nanos(714_285_714));
        assert!(two.validate().is_ok());
        assert!(config.validate().is_ok());
    }

    #[test]
    fn bad_values_name_the_setting() {
        let good = Config::new(NodeId(1), &nodes(&[1, 2]));
        let cases: Vec<(Config, &str)> = vec![
            (
                Config {
                    node_id: NodeId(5),
                    ..good.clone()
                },
                "not in the node list",
            ),
            (
                Config {
                    token_timeout: Duration::from_millis(5),
                    ..good.clone()
                },
                "token:",
            ),
            (
                Config {
                    max_messages: 60,
                    ..good.clone()
                },
                "max_messages",
            ),
            (
                Config {
                    netmtu: 10,
                    ..good.clone()
                },
                "netmtu",
            ),
            (
                Config {
                    window_size: 0,
                    ..good.clone()
                },
                "window_size",
            ),
            (
                Config {
                    nodes: nodes(&[2, 1]),
                    ..good.clone()
                },
                "sorted",
            ),
        ];
        for (config, needle) in cases {
            let error = config.validate().unwrap_err();
            assert!(error.to_string().contains(needle), "{error} lacks {needle}");
        }
    }
}
