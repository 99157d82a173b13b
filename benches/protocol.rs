//! Throughput of the protocol core inside the simulator (no faults): application messages
//! ordered and delivered at every node per second of CPU, for 3 and 5 nodes, 64 B and 64 KiB.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use totemcast::api::Guarantee;
use totemcast::prng::Ratio;
use totemcast::sim::{Cluster, Faults, Options};

fn options(nodes: usize, size: usize) -> Options {
    let mut options = Options::swarm(1, Faults::None, Some(nodes));
    options.token_timeout = Duration::from_secs(1);
    options.window_size = 200;
    options.max_messages = 50;
    options.netmtu = 65_000;
    options.network.spike = Ratio::ZERO;
    options.network.delay_min = Duration::from_micros(20);
    options.network.mcast_delay_mean = Duration::ZERO;
    options.network.token_delay_mean = Duration::ZERO;
    options.workload.large_max = size.max(1 << 16);
    options.workload.send_queue_bytes_max = 1 << 28;
    options
}

fn ordering(c: &mut Criterion) {
    let mut group = c.benchmark_group("order_and_deliver");
    group.sample_size(10);
    for nodes in [3, 5] {
        for size in [64usize, 64 << 10] {
            let count = if size == 64 { 20_000 } else { 500 };
            group.throughput(Throughput::Elements(count as u64));
            group.bench_with_input(
                BenchmarkId::new(format!("{nodes}_nodes"), size),
                &(nodes, size),
                |b, &(nodes, size)| {
                    b.iter_batched(
                        || {
                            let mut cluster = Cluster::new(options(nodes, size)).expect("valid");
                            cluster.set_workload(false);
                            let formed = cluster.now() + Duration::from_secs(30);
                            assert!(cluster.run_until_stable(formed), "the ring formed");
                            let payloads: Vec<_> = (0..count)
                                .map(|_| {
                                    let mut p = cluster.next_payload(0).to_vec();
                                    p.resize(size, 7);
                                    bytes::Bytes::from(p)
                                })
                                .collect();
                            (cluster, payloads)
                        },
                        |(mut cluster, payloads)| {
                            for (i, payload) in payloads.into_iter().enumerate() {
                                assert!(cluster.submit(i % nodes, Guarantee::Agreed, payload));
                            }
                            let limit = cluster.now() + Duration::from_secs(600);
                            while cluster.node(nodes - 1).counters().messages_delivered
                                < count as u64
                            {
                                assert!(cluster.step(limit), "delivered everything in time");
                            }
                        },
                        criterion::BatchSize::PerIteration,
                    );
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, ordering);
criterion_main!(benches);
