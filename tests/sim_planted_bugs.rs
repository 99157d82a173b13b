//! Each online and history checker catches a real bug planted in the protocol core (simulator
//! builds only), not just hand-edited histories.

use totemcast::prng::Ratio;
use totemcast::sim::{Faults, Options, run};
use totemcast::totem::PlantedBug;

/// Runs a few seeds with `bug` planted; returns every property that fired.
fn caught(bug: PlantedBug, nodes: usize) -> Vec<&'static str> {
    caught_with(bug, nodes, Faults::Network)
}

fn caught_with(bug: PlantedBug, nodes: usize, faults: Faults) -> Vec<&'static str> {
    let mut properties = Vec::new();
    for seed in 1..=6 {
        let mut options = Options::swarm(seed, faults, Some(nodes));
        options.planted_bug = bug;
        options.network.loss = Ratio::percent(10);
        options.network.duplicate = Ratio::percent(10);
        options.workload.guarantee_weights = [1, 1, 3, 3];
        options.chaos_time = std::time::Duration::from_secs(2);
        match std::panic::catch_unwind(|| run(&options)) {
            Ok(outcome) => properties.extend(outcome.violations.iter().map(|v| v.property)),
            // An assertion inside a core names the invariant it guards.
            Err(panic) => {
                let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
                let named = ["W1", "W4", "W5"]
                    .into_iter()
                    .find(|w| message.starts_with(w));
                properties.push(named.unwrap_or("panic"));
            }
        }
    }
    properties.sort_unstable();
    properties.dedup();
    properties
}

#[test]
fn no_bug_no_violation() {
    assert_eq!(caught(PlantedBug::None, 3), Vec::<&str>::new());
}

#[test]
fn safe_without_stability_is_caught_by_s12() {
    let properties = caught(PlantedBug::SafeIgnoresStability, 4);
    assert!(properties.contains(&"S12"), "{properties:?}");
}

#[test]
fn freeing_before_stable_is_caught_by_w3() {
    let properties = caught(PlantedBug::FreeBeforeStable, 4);
    assert!(properties.contains(&"W3"), "{properties:?}");
}

#[test]
fn accepting_duplicate_tokens_is_caught_by_w1() {
    let properties = caught(PlantedBug::AcceptDuplicateTokens, 3);
    assert!(properties.contains(&"W1"), "{properties:?}");
}

#[test]
fn agreed_on_receipt_is_caught_by_the_order_checkers() {
    let properties = caught(PlantedBug::AgreedOnReceipt, 4);
    assert!(
        properties.contains(&"S7") || properties.contains(&"S8"),
        "{properties:?}"
    );
    // A message delivered on receipt can overtake one its origin had delivered before sending.
    assert!(properties.contains(&"S13"), "{properties:?}");
}

#[test]
fn a_ring_seq_that_does_not_advance_is_caught_by_w4() {
    let properties = caught_with(PlantedBug::RingSeqNotAdvanced, 5, Faults::All);
    assert!(properties.contains(&"W4"), "{properties:?}");
}

#[test]
fn an_illegal_state_transition_is_caught_by_w5() {
    let properties = caught(PlantedBug::SingletonSkipsCommit, 3);
    assert_eq!(properties, ["W5"]);
}
