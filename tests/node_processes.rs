//! Real `totemcast node` processes on loopback: ring formation, `kill -9`, restart and merge,
//! SIGSTOP/SIGCONT beyond the token timeout, a clean leave — with the simulator's checkers run on
//! the histories the nodes recorded.

#![allow(
    clippy::print_stderr,
    reason = "the measured detection times are worth seeing"
)]

mod node_harness;

use std::time::Duration;

use node_harness::{NodeCluster, Timers, first_configuration_after, quiesce_and_check};
use totemcast::node::clock;

const FORM: Duration = Duration::from_secs(20);

#[test]
fn three_nodes_form_one_ring_and_deliver_in_one_order() {
    let mut cluster = NodeCluster::new("three", 3, Timers::default(), 150, "");
    cluster.start_all();
    cluster.wait_for_ring(&[0, 1, 2], FORM);
    let status = cluster.status(0).unwrap();
    assert_eq!(status["cluster_name"], "three");
    assert_eq!(status["nodeid"], 1);
    cluster.wait_for_traffic(300, FORM);
    quiesce_and_check(&mut cluster);
}

#[test]
fn five_nodes_survive_kill_restart_and_merge() {
    let timers = Timers::default();
    let mut cluster = NodeCluster::new("five", 5, timers, 100, "");
    cluster.start_all();
    cluster.wait_for_ring(&[0, 1, 2, 3, 4], FORM);
    cluster.wait_for_traffic(200, FORM);

    let killed_at = clock::now();
    cluster.kill(4);
    cluster.wait_for_ring(&[0, 1, 2, 3], FORM);
    // Failure detection: token timeout + consensus + 20 %, measured on the nodes' own clock.
    let bound = Duration::from_millis((timers.token + timers.consensus) * 12 / 10);
    let history = cluster.history();
    for index in 0..4 {
        let at =
            first_configuration_after(&history, cluster.process(index), killed_at, &[1, 2, 3, 4])
                .expect("a configuration without node 5");
        let took = at.saturating_duration_since(killed_at);
        eprintln!(
            "node {} saw node 5 gone after {took:?} (bound {bound:?})",
            index + 1
        );
        assert!(took <= bound, "node {}: {took:?} > {bound:?}", index + 1);
    }

    cluster.start(4);
    cluster.wait_for_ring(&[0, 1, 2, 3, 4], FORM);
    cluster.wait_for_traffic(200, FORM);
    quiesce_and_check(&mut cluster);
}

#[test]
fn a_node_paused_beyond_the_token_timeout_is_excluded_then_merges_back() {
    let timers = Timers::default();
    let mut cluster = NodeCluster::new("pause", 3, timers, 150, "");
    cluster.start_all();
    cluster.wait_for_ring(&[0, 1, 2], FORM);
    cluster.wait_for_traffic(100, FORM);
    cluster.pause(1);
    cluster.wait_for_ring(&[0, 2], FORM);
    cluster.resume(1);
    cluster.wait_for_ring(&[0, 1, 2], FORM);
    cluster.wait_for_traffic(200, FORM);
    quiesce_and_check(&mut cluster);
}

#[test]
fn sigterm_leaves_cleanly_before_the_token_timeout_and_a_restart_rejoins() {
    // A long token: a leave that fell back to token loss would take seconds.
    let timers = Timers {
        token: 3000,
        consensus: 3600,
    };
    let mut cluster = NodeCluster::new("leave", 3, timers, 100, "");
    cluster.start_all();
    cluster.wait_for_ring(&[0, 1, 2], FORM);
    cluster.wait_for_traffic(100, FORM);
    let stopped_at = clock::now();
    cluster.stop(2);
    cluster.wait_for_ring(&[0, 1], FORM);
    let history = cluster.history();
    for index in 0..2 {
        let at = first_configuration_after(&history, cluster.process(index), stopped_at, &[1, 2])
            .expect("a configuration without node 3");
        let took = at.saturating_duration_since(stopped_at);
        assert!(
            took < Duration::from_millis(1500),
            "node {}: leave took {took:?}",
            index + 1
        );
    }
    assert!(
        cluster.status(0).unwrap()["counters"]["protocol"]["token_losses"].as_u64() == Some(0),
        "no token loss: the leave did it"
    );
    cluster.start(2);
    let ring = cluster.wait_for_ring(&[0, 1, 2], FORM);
    assert_eq!(ring.rep, 1);
    cluster.wait_for_traffic(100, FORM);
    quiesce_and_check(&mut cluster);
}
