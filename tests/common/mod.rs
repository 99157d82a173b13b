//! Helpers shared by the simulator integration tests.

#![allow(dead_code, reason = "each test file uses a different subset")]

use std::time::Duration;

use totemcast::api::Guarantee;
use totemcast::prng::Ratio;
use totemcast::sim::checker::{Violation, check_all_delivered, check_safety};
use totemcast::sim::history::HistoryEvent;
use totemcast::sim::{Cluster, Faults, Options};
use totemcast::time::Instant;

/// Options for a scripted scenario: a clean network, Corosync-like timers scaled to 1 s,
/// no background workload.
pub(crate) fn quiet(nodes: usize) -> Options {
    let mut options = Options::swarm(1, Faults::None, Some(nodes));
    options.token_timeout = Duration::from_secs(1);
    options.window_size = 50;
    options.max_messages = 17;
    options.netmtu = 1500;
    options.seqno_unchanged_const = 30;
    options.fail_recv_const = 2500;
    options.network.loss = Ratio::ZERO;
    options.network.duplicate = Ratio::ZERO;
    options.network.spike = Ratio::ZERO;
    options.network.delay_min = Duration::from_micros(100);
    options.network.mcast_delay_mean = Duration::from_micros(50);
    options.network.token_delay_mean = Duration::from_micros(50);
    options.network.link_capacity = usize::MAX;
    options.workload.large_max = 32 << 20;
    options.workload.send_queue_bytes_max = 128 << 20;
    options
}

/// A cluster of `options` with the background workload off, once its nodes formed one ring.
pub(crate) fn cluster(options: Options) -> Cluster {
    let mut cluster = Cluster::new(options).expect("valid options");
    cluster.set_workload(false);
    assert!(
        cluster.run_until_stable(at(Duration::from_secs(10))),
        "the ring formed"
    );
    cluster
}

/// Submits `count` messages from node `index` with `guarantee`; returns how many were accepted.
pub(crate) fn submit(
    cluster: &mut Cluster,
    index: usize,
    guarantee: Guarantee,
    count: usize,
) -> usize {
    (0..count)
        .filter(|_| {
            let payload = cluster.next_payload(index);
            cluster.submit(index, guarantee, payload)
        })
        .count()
}

/// Runs for `duration` of simulated time.
pub(crate) fn run_for(cluster: &mut Cluster, duration: Duration) {
    let limit = cluster.now() + duration;
    cluster.run_until(limit);
}

/// Every check over the run so far: online violations, safety, and all delivered at all nodes.
pub(crate) fn all_checks(cluster: &Cluster) -> Vec<Violation> {
    let mut violations = cluster.violations().to_vec();
    violations.extend(check_safety(cluster.history()));
    violations.extend(check_all_delivered(
        cluster.history(),
        &cluster.live_processes(),
    ));
    violations
}

/// Asserts the run so far passes every check.
pub(crate) fn assert_clean(cluster: &Cluster) {
    let violations = all_checks(cluster);
    assert!(violations.is_empty(), "violations: {violations:#?}");
}

/// The deliveries at node `node` (1-based id), in order: (origin node, counter, guarantee).
pub(crate) fn deliveries(cluster: &Cluster, node: u32) -> Vec<(u32, u64, Guarantee)> {
    cluster
        .history()
        .records
        .iter()
        .filter(|r| r.process.node.0 == node)
        .filter_map(|r| match &r.event {
            HistoryEvent::Deliver { msg, guarantee, .. } => {
                Some((msg.origin.node.0, msg.counter, *guarantee))
            }
            _ => None,
        })
        .collect()
}

/// Time zero plus `duration`.
pub(crate) fn at(duration: Duration) -> Instant {
    Instant::ZERO + duration
}
