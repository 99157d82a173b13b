//! Mutation checks of the checkers: take the history of a correct run, break one property on
//! purpose, and require the checker that guards it to fire.

mod common;

use std::time::Duration;

use common::{cluster, quiet, run_for, submit};
use totemcast::api::Guarantee;
use totemcast::sim::checker::{Violation, check_all_delivered, check_safety};
use totemcast::sim::history::{History, HistoryEvent, ProcessId};

/// A correct history: 3 nodes, every guarantee, every node sending.
fn clean_history() -> History {
    let mut cluster = cluster(quiet(3));
    for index in 0..3 {
        for guarantee in [
            Guarantee::Agreed,
            Guarantee::Fifo,
            Guarantee::Safe,
            Guarantee::Unordered,
        ] {
            submit(&mut cluster, index, guarantee, 8);
        }
    }
    run_for(&mut cluster, Duration::from_secs(2));
    let history = cluster.history().clone();
    assert!(check_safety(&history).is_empty());
    assert!(check_all_delivered(&history, &history.processes()).is_empty());
    history
}

/// Indices of node `node`'s deliveries with `guarantee`.
fn delivery_indices(history: &History, node: u32, guarantee: Guarantee) -> Vec<usize> {
    history
        .records
        .iter()
        .enumerate()
        .filter(|(_, r)| r.process.node.0 == node)
        .filter(|(_, r)| matches!(r.event, HistoryEvent::Deliver { guarantee: g, .. } if g == guarantee))
        .map(|(i, _)| i)
        .collect()
}

fn fired(violations: &[Violation], property: &str) -> bool {
    violations.iter().any(|v| v.property == property)
}

#[test]
fn swapping_two_agreed_deliveries_breaks_the_total_order() {
    let mut history = clean_history();
    let agreed = delivery_indices(&history, 2, Guarantee::Agreed);
    let (a, b) = (agreed[3], agreed[7]);
    let first = history.records[a].event.clone();
    history.records[a].event = history.records[b].event.clone();
    history.records[b].event = first;
    let violations = check_safety(&history);
    assert!(fired(&violations, "S7"), "{violations:#?}");
    assert!(fired(&violations, "S8"), "{violations:#?}");
}

#[test]
fn a_second_delivery_is_a_duplicate() {
    let mut history = clean_history();
    let index = delivery_indices(&history, 1, Guarantee::Safe)[2];
    let record = history.records[index].clone();
    history.records.push(record);
    assert!(fired(&check_safety(&history), "S2"));
}

#[test]
fn a_changed_payload_is_a_creation() {
    let mut history = clean_history();
    let index = delivery_indices(&history, 3, Guarantee::Unordered)[1];
    if let HistoryEvent::Deliver { payload_hash, .. } = &mut history.records[index].event {
        *payload_hash ^= 1;
    }
    assert!(fired(&check_safety(&history), "S1"));
}

#[test]
fn reversed_fifo_deliveries_break_fifo() {
    let mut history = clean_history();
    // Two FIFO deliveries of the same origin at node 1.
    let fifo = delivery_indices(&history, 1, Guarantee::Fifo);
    let origin_of = |i: usize| match &history.records[i].event {
        HistoryEvent::Deliver { msg, .. } => msg.origin,
        _ => unreachable!(),
    };
    let a = fifo[0];
    let b = *fifo
        .iter()
        .skip(1)
        .find(|&&i| origin_of(i) == origin_of(a))
        .expect("two");
    let first = history.records[a].event.clone();
    history.records[a].event = history.records[b].event.clone();
    history.records[b].event = first;
    assert!(fired(&check_safety(&history), "S9"));
}

#[test]
fn two_messages_at_one_position_break_coherence() {
    let mut history = clean_history();
    let agreed = delivery_indices(&history, 3, Guarantee::Agreed);
    let place = match &history.records[agreed[0]].event {
        HistoryEvent::Deliver { position, .. } => *position,
        _ => unreachable!(),
    };
    if let HistoryEvent::Deliver { position, .. } = &mut history.records[agreed[5]].event {
        *position = place;
    }
    assert!(fired(&check_safety(&history), "S14"));
}

#[test]
fn a_missing_delivery_is_a_liveness_failure() {
    let mut history = clean_history();
    let index = delivery_indices(&history, 2, Guarantee::Safe)[4];
    history.records.remove(index);
    let live: Vec<ProcessId> = history.processes();
    let violations = check_all_delivered(&history, &live);
    assert!(fired(&violations, "L2"), "{violations:#?}");
}

#[test]
fn an_own_message_missing_before_the_next_configuration_breaks_self_delivery() {
    let mut history = clean_history();
    // Node 1 no longer delivers its own first AGREED message, then installs a new ring.
    let own = history
        .records
        .iter()
        .position(|r| {
            r.process.node.0 == 1
                && matches!(&r.event, HistoryEvent::Deliver { msg, guarantee: Guarantee::Agreed, .. }
                    if msg.origin.node.0 == 1)
        })
        .expect("node 1 delivered its own message");
    let process = history.records[own].process;
    history.records.remove(own);
    let (ring, members) = history
        .records
        .iter()
        .find_map(|r| match &r.event {
            HistoryEvent::ConfReg { ring, members, .. } => Some((*ring, members.clone())),
            _ => None,
        })
        .expect("a configuration");
    let next = totemcast::ids::RingId {
        seq: ring.seq + 4,
        ..ring
    };
    let time = history.records.last().expect("records").time;
    history.push(
        time,
        process,
        HistoryEvent::ConfReg {
            ring: next,
            members: members.clone(),
            joined: vec![],
            left: vec![],
        },
    );
    assert!(fired(&check_safety(&history), "S11"));
}
