//! Scripted regressions for the Totem/Corosync bug classes of PROTOCOL.md §4: each scenario
//! forces the hard path, then heals and requires every safety property and convergence.

mod common;

use std::time::Duration;

use common::{all_checks, cluster, quiet, run_for, submit};
use totemcast::api::Guarantee;
use totemcast::ids::RingId;
use totemcast::sim::Cluster;
use totemcast::sim::faults::Fault;
use totemcast::sim::network::{Action, Match, Rule};
use totemcast::totem::State;

const ALL: [Guarantee; 4] = [
    Guarantee::Unordered,
    Guarantee::Fifo,
    Guarantee::Agreed,
    Guarantee::Safe,
];

/// Traffic from every node in every guarantee.
fn traffic(cluster: &mut Cluster, nodes: usize, per: usize) {
    for index in 0..nodes {
        for guarantee in ALL {
            submit(cluster, index, guarantee, per);
        }
    }
}

/// Heals, waits for one ring of everyone, lets it drain, and checks everything.
fn heal_and_check(cluster: &mut Cluster) {
    cluster.heal();
    let limit = cluster.now() + Duration::from_secs(30);
    assert!(
        cluster.run_until_stable(limit),
        "one ring of every node after healing"
    );
    run_for(cluster, Duration::from_secs(5));
    let violations = all_checks(cluster);
    assert!(violations.is_empty(), "{violations:#?}");
}

fn ring_changes(cluster: &Cluster, index: usize) -> u64 {
    cluster.node(index).counters().rings_installed
}

#[test]
fn recovery_interrupted_by_a_new_failure() {
    let mut cluster = cluster(quiet(5));
    traffic(&mut cluster, 5, 20);
    run_for(&mut cluster, Duration::from_millis(2));
    cluster.inject(Fault::Crash {
        node: 4,
        down: Duration::from_secs(60),
    });
    let limit = cluster.now() + Duration::from_secs(10);
    assert!(
        cluster.run_until_state(0, State::Recovery, limit),
        "node 1 reached recovery"
    );
    // A second failure while the new ring recovers.
    cluster.inject(Fault::Crash {
        node: 3,
        down: Duration::from_secs(60),
    });
    run_for(&mut cluster, Duration::from_secs(10));
    assert!(
        cluster.node(0).counters().recoveries_failed >= 1,
        "the recovery was interrupted"
    );
    heal_and_check(&mut cluster);
}

#[test]
fn crash_in_commit() {
    let mut cluster = cluster(quiet(4));
    traffic(&mut cluster, 4, 10);
    cluster.inject(Fault::Crash {
        node: 3,
        down: Duration::from_secs(60),
    });
    let limit = cluster.now() + Duration::from_secs(10);
    assert!(
        cluster.run_until_state(1, State::Commit, limit),
        "node 2 reached commit"
    );
    cluster.inject(Fault::Crash {
        node: 1,
        down: Duration::from_secs(3),
    });
    run_for(&mut cluster, Duration::from_secs(10));
    heal_and_check(&mut cluster);
}

/// Node 1 (the representative) goes down for 50 ms by `fault` amid traffic and comes back;
/// returns its ring before and after, once everything is healed and checked.
fn restart_lowest_id_node(fault: Fault) -> (RingId, RingId) {
    let mut cluster = cluster(quiet(3));
    traffic(&mut cluster, 3, 10);
    run_for(&mut cluster, Duration::from_millis(5));
    let before = cluster.node(0).installed_ring().expect("a ring");
    cluster.inject(fault);
    run_for(&mut cluster, Duration::from_millis(100));
    traffic(&mut cluster, 3, 5);
    heal_and_check(&mut cluster);
    (before, cluster.node(0).installed_ring().expect("a ring"))
}

#[test]
fn quick_restart_of_the_lowest_id_node() {
    // Corosync 3675dace: a representative that restarts before the others notice must not
    // be absorbed as if it never left; its ring ids never repeat (state file).
    let (before, after) = restart_lowest_id_node(Fault::Crash {
        node: 0,
        down: Duration::from_millis(50),
    });
    assert!(after.seq > before.seq, "{before:?} then {after:?}");
}

#[test]
fn duplicate_commit_tokens_are_harmless() {
    let mut cluster = cluster(quiet(4));
    cluster.network_mut().add_rule(Rule {
        from: None,
        to: None,
        kind: Match::CommitToken,
        action: Action::Duplicate,
        skip: 0,
        count: 1000,
    });
    traffic(&mut cluster, 4, 10);
    cluster.inject(Fault::Crash {
        node: 2,
        down: Duration::from_secs(2),
    });
    run_for(&mut cluster, Duration::from_secs(5));
    assert!(
        cluster.network_mut().rules()[0].count < 1000,
        "commit tokens were duplicated"
    );
    heal_and_check(&mut cluster);
}

#[test]
fn lost_commit_tokens_are_retransmitted() {
    let mut cluster = cluster(quiet(4));
    cluster.network_mut().add_rule(Rule {
        from: Some(0),
        to: Some(1),
        kind: Match::CommitToken,
        action: Action::Drop,
        skip: 0,
        count: 2,
    });
    cluster.inject(Fault::Crash {
        node: 3,
        down: Duration::from_secs(60),
    });
    traffic(&mut cluster, 3, 5);
    run_for(&mut cluster, Duration::from_secs(5));
    assert!(
        cluster.network_mut().rules().is_empty(),
        "two commit tokens were lost"
    );
    heal_and_check(&mut cluster);
}

#[test]
fn pause_beyond_the_token_timeout_and_resume() {
    // A SIGSTOP-like pause: the others form a ring without the paused node; on resume it
    // processes its stale backlog, notices, and merges back.
    let mut cluster = cluster(quiet(3));
    traffic(&mut cluster, 3, 10);
    cluster.inject(Fault::Pause {
        node: 1,
        duration: Duration::from_secs(3),
    });
    traffic(&mut cluster, 3, 10);
    run_for(&mut cluster, Duration::from_secs(6));
    assert!(
        ring_changes(&cluster, 0) >= 2,
        "the others reconfigured without the paused node"
    );
    heal_and_check(&mut cluster);
}

#[test]
fn partition_and_merge_with_traffic_on_both_sides() {
    let mut cluster = cluster(quiet(5));
    cluster.inject(Fault::Partition {
        groups: vec![0, 0, 1, 1, 1],
        duration: Duration::from_secs(5),
    });
    run_for(&mut cluster, Duration::from_secs(3));
    traffic(&mut cluster, 5, 10);
    run_for(&mut cluster, Duration::from_secs(5));
    heal_and_check(&mut cluster);
    assert!(
        cluster.node(4).counters().rings_installed >= 3,
        "split, then merged"
    );
}

#[test]
fn tail_loss_on_an_idle_ring_is_repaired_while_the_token_is_held() {
    // Corosync 084d19cd: losing the last messages of a burst must be repaired even though the
    // ring goes idle (and the representative holds the token).
    let mut cluster = cluster(quiet(3));
    cluster.network_mut().add_rule(Rule {
        from: Some(1),
        to: Some(2),
        kind: Match::Mcast,
        action: Action::Drop,
        skip: 3,
        count: 2,
    });
    submit(&mut cluster, 1, Guarantee::Agreed, 5);
    run_for(&mut cluster, Duration::from_secs(5));
    assert!(
        cluster.node(0).counters().token_holds > 0,
        "the ring went idle"
    );
    for index in 0..3 {
        assert_eq!(cluster.node(index).counters().token_losses, 0);
    }
    heal_and_check(&mut cluster);
}

#[test]
fn one_way_and_non_transitive_links_then_heal() {
    let mut cluster = cluster(quiet(4));
    cluster.inject(Fault::OneWay {
        from: 0,
        to: 2,
        duration: Duration::from_secs(4),
    });
    cluster.inject(Fault::NonTransitive {
        a: 1,
        c: 3,
        duration: Duration::from_secs(4),
    });
    traffic(&mut cluster, 4, 10);
    run_for(&mut cluster, Duration::from_secs(6));
    heal_and_check(&mut cluster);
}

#[test]
fn a_clean_leave_reconfigures_well_before_the_token_timeout() {
    let mut cluster = cluster(quiet(4));
    traffic(&mut cluster, 4, 20);
    run_for(&mut cluster, Duration::from_millis(2));
    let before = ring_changes(&cluster, 0);
    cluster.inject(Fault::Leave {
        node: 2,
        down: Duration::from_secs(3),
    });
    // The token timeout is 1 s: a leave must not wait for it (nor for consensus after it).
    run_for(&mut cluster, Duration::from_millis(400));
    for index in [0, 1, 3] {
        assert_eq!(
            ring_changes(&cluster, index),
            before + 1,
            "node {} installed the ring without the leaver",
            index + 1
        );
        assert_eq!(cluster.node(index).members().len(), 3);
        assert_eq!(cluster.node(index).counters().token_losses, 0);
    }
    assert!(cluster.node(0).counters().leaves_received >= 1);
    // It restarts after 3 s and merges back.
    heal_and_check(&mut cluster);
    assert_eq!(cluster.node(0).members().len(), 4);
}

#[test]
fn quick_restart_of_the_lowest_id_node_without_its_state_file() {
    // The disk was wiped: the ring seq comes from the wall clock, still above every ring the
    // node took part in, so no ring id repeats (S5 in heal_and_check).
    let (before, after) = restart_lowest_id_node(Fault::CrashWiped {
        node: 0,
        down: Duration::from_millis(50),
    });
    assert!(
        after.seq > before.seq + 1_000_000,
        "{before:?} then {after:?}"
    );
}
