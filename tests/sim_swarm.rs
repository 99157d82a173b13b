//! A few seeds through the simulator in the test build, and the run-twice determinism check.
//! The large sweep runs the release binary (`make sim-sweep`, part of `make test`).
//!
//! `TOTEMCAST_SEEDS=n` changes the number of seeds, `TOTEMCAST_SEED=s` runs one seed.

use totemcast::sim::{Faults, Options, run};

fn env(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name}: not a number")))
}

#[test]
fn seeds_pass_every_check() {
    let (first, count) = match env("TOTEMCAST_SEED") {
        Some(seed) => (seed, 1),
        None => (1000, env("TOTEMCAST_SEEDS").unwrap_or(4)),
    };
    let mut failed = Vec::new();
    for seed in first..first + count {
        for faults in [Faults::All, Faults::Network, Faults::None] {
            let outcome = run(&Options::swarm(seed, faults, None));
            if !outcome.violations.is_empty() {
                failed.push(format!(
                    "seed {seed} faults={faults}: {:?}\n  reproduce: cargo run --release \
                     --features sim --bin totemcast-sim -- --seed {seed} --faults {faults}",
                    &outcome.violations[..outcome.violations.len().min(3)]
                ));
            }
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn same_seed_same_trace() {
    for seed in [7, 8, 9] {
        let options = Options::swarm(seed, Faults::Network, None);
        let first = run(&options);
        let second = run(&options);
        assert_eq!(first.trace_hash, second.trace_hash, "seed {seed}");
        assert_eq!(first.stats, second.stats, "seed {seed}");
        let other = run(&Options::swarm(seed + 100, Faults::Network, None));
        assert_ne!(
            first.trace_hash, other.trace_hash,
            "different seeds, different runs"
        );
    }
}
