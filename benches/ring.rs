//! The IPC ring: records per second through one ring, in one thread (claim, write, commit,
//! read, release) and across two threads (a producer and a consumer on separate cores), for
//! 64 B and 16 KiB payloads. A `Vec` copy of the same bytes runs alongside as the baseline.

use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use totemcast::ipc::ring::{self, Consumer, Producer};
use totemcast::ipc::shm::SharedMemory;

const CAPACITY: usize = 4 << 20;

fn pair() -> (Producer, Consumer) {
    let memory = Arc::new(SharedMemory::create("bench", ring::footprint(CAPACITY)).expect("memfd"));
    ring::initialize(&memory, 0, CAPACITY).expect("ring");
    (
        Producer::new(Arc::clone(&memory), 0, CAPACITY).expect("producer"),
        Consumer::new(memory, 0, CAPACITY).expect("consumer"),
    )
}

fn one_thread(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring_one_thread");
    for size in [64usize, 16 << 10] {
        let payload = vec![7u8; size];
        // Half the ring per batch: the producer never waits on the consumer in one thread.
        let batch = (CAPACITY / 2 / ring::record_size(size)).min(256) as u64;
        group.throughput(Throughput::Elements(batch));
        group.bench_with_input(BenchmarkId::new("ring", size), &size, |b, _| {
            let (mut producer, mut consumer) = pair();
            let mut sum = 0usize;
            b.iter(|| {
                for _ in 0..batch {
                    let mut claim = producer.claim(size).expect("sane").expect("room");
                    claim.payload_mut().copy_from_slice(&payload);
                    claim.commit_batched(1);
                }
                let _ = producer.take_wake();
                while let Some(entry) = consumer.read_next().expect("sane") {
                    sum += consumer.payload(&entry)[0] as usize;
                    consumer.release_batched(entry);
                }
                let _ = consumer.take_producer_wake();
            });
            assert!(sum > 0);
        });
        group.bench_with_input(
            BenchmarkId::new("vec_copy_baseline", size),
            &size,
            |b, _| {
                let mut queue = std::collections::VecDeque::new();
                let mut sum = 0usize;
                b.iter(|| {
                    for _ in 0..batch {
                        queue.push_back(payload.clone());
                    }
                    while let Some(message) = queue.pop_front() {
                        sum += message[0] as usize;
                    }
                });
                assert!(sum > 0);
            },
        );
    }
    group.finish();
}

fn two_threads(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring_two_threads");
    group.sample_size(10);
    for size in [64usize, 16 << 10] {
        let count = if size == 64 { 1_000_000u64 } else { 50_000 };
        group.throughput(Throughput::Elements(count));
        group.bench_with_input(BenchmarkId::new("ring", size), &size, |b, &size| {
            b.iter(|| {
                let (mut producer, mut consumer) = pair();
                let writer = std::thread::spawn(move || {
                    let payload = vec![1u8; size];
                    let mut sent = 0;
                    while sent < count {
                        if let Ok(Ok(_)) = producer.push(1, &payload) {
                            sent += 1;
                        } else {
                            std::hint::spin_loop();
                        }
                    }
                });
                let mut received = 0;
                while received < count {
                    match consumer.read_next().expect("sane") {
                        Some(entry) => {
                            consumer.release(entry);
                            received += 1;
                        }
                        None => std::hint::spin_loop(),
                    }
                }
                writer.join().expect("writer");
            });
        });
    }
    group.finish();
}

criterion_group!(benches, one_thread, two_threads);
criterion_main!(benches);
