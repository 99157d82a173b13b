//! A Rust CPG client and its node: AGREED messages per second through the whole path (client
//! → request ring → node → totem core → CPG service → event ring → client), one node, the
//! client delivering its own messages (as Corosync's `cpgbench` does). The node is embedded
//! (its driver on a thread of this process, the client on the main thread: two cores, as a
//! client process and a node process would use).
//!
//! Each figure is measured side by side, in this run, with the same payloads:
//! - `mcast_many` (batched sends, one wake-up per batch) against `mcast_joined` one at a time;
//! - zero-copy sends (`zcb_alloc` + `zcb_mcast_joined`) against plain copying sends;
//! - the IPC ring alone (producer and consumer threads, no node) as the upper bound.
//!
//! `cargo bench --bench cpg_client` (add `-- --quick` for a short run).
#![allow(clippy::print_stdout, reason = "a benchmark report")]
#![allow(clippy::cast_precision_loss, reason = "rates of counts far below 2^52")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use totemcast::Node;
use totemcast::api::{DispatchFlags, Guarantee};
use totemcast::cpg::Event;
use totemcast::ipc::ring::{self, Consumer, Producer};
use totemcast::ipc::shm::SharedMemory;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let dir = std::env::temp_dir().join(format!("totemcast-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let authkey = dir.join("authkey");
    totemcast::node::crypto::write_new_authkey(&authkey).expect("authkey");
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free port");
    let config = format!(
        "[totem]\ncluster_name = \"bench\"\n[crypto]\nauthkey = \"{}\"\n[ipc]\nsocket = \"{}\"\n\
         [system]\nstate_dir = \"{}\"\n[[node]]\nnodeid = 1\naddr = \"{port}\"\n",
        authkey.display(),
        dir.join("node.sock").display(),
        dir.join("state").display(),
    );
    let node = Node::from_toml(&config, Some(1)).expect("node");
    let scale = if quick { 10 } else { 1 };
    println!(
        "one node, one Rust client delivering its own AGREED messages; ratios from this run\n"
    );
    println!(
        "{:<40} {:>14} {:>12} {:>10}",
        "scenario", "msg/s", "MB/s", "ratio"
    );
    let small_only = std::env::args().any(|a| a == "--small");
    let large_only = std::env::args().any(|a| a == "--large");
    let small = if large_only {
        &[][..]
    } else {
        &[(64usize, 2_000_000 / scale), (1024, 1_000_000 / scale)][..]
    };
    for &(size, count) in small {
        let batched = run(&node, size, count, Send::Batched);
        let single = run(&node, size, count, Send::OneByOne);
        let bound = ring_alone(size, count);
        report(
            &format!("{size} B, mcast_many (batches)"),
            size,
            batched,
            None,
        );
        report(
            &format!("{size} B, mcast_joined one by one"),
            size,
            single,
            Some(("of batched", single / batched)),
        );
        report(
            &format!("{size} B, IPC ring alone (bound)"),
            size,
            bound,
            Some(("node path / ring", batched / bound)),
        );
    }
    let large = if small_only {
        &[][..]
    } else {
        &[(16usize << 10, 200_000 / scale), (64 << 10, 50_000 / scale)][..]
    };
    for &(size, count) in large {
        let copying = run(&node, size, count, Send::OneByOne);
        let zero_copy = run(&node, size, count, Send::ZeroCopy);
        report(
            &format!("{} KiB, mcast_joined", size >> 10),
            size,
            copying,
            None,
        );
        report(
            &format!("{} KiB, zcb_mcast_joined", size >> 10),
            size,
            zero_copy,
            Some(("of copying", zero_copy / copying)),
        );
    }
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

fn report(name: &str, size: usize, rate: f64, ratio: Option<(&str, f64)>) {
    let ratio = ratio.map_or(String::new(), |(what, r)| format!("{r:.2} {what}"));
    println!(
        "{name:<40} {rate:>14.0} {:>12.1} {ratio:>10}",
        rate * size as f64 / 1e6
    );
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Send {
    Batched,
    OneByOne,
    ZeroCopy,
}

/// Messages per second delivered back to the sending client.
fn run(node: &Node, size: usize, count: usize, how: Send) -> f64 {
    let mut handle = node.cpg().expect("handle");
    let group = format!("bench-{size}-{}", how as u8);
    handle.join(&group).expect("join");
    // The join's confchg first.
    let mut joined = false;
    while !joined {
        handle
            .dispatch(DispatchFlags::One, |e| {
                joined |= matches!(e, Event::ConfChg { .. });
            })
            .expect("dispatch");
    }
    let payload = vec![0x5au8; size];
    let batch: Vec<&[u8]> = vec![&payload[..]; 64];
    let mut buffers: Vec<_> = (0..4)
        .map(|_| handle.zcb_alloc(size).expect("zcb"))
        .collect();
    for buffer in &mut buffers {
        buffer.copy_from_slice(&payload);
    }
    let (mut sent, mut delivered) = (0usize, 0usize);
    let start = Instant::now();
    while delivered < count {
        let before = sent;
        match how {
            Send::Batched => {
                let n = (count - sent).min(batch.len());
                sent += handle
                    .mcast_many(Guarantee::Agreed, batch[..n].iter().copied())
                    .expect("send");
            }
            Send::OneByOne => {
                for _ in 0..(count - sent).min(64) {
                    match handle.mcast_joined(Guarantee::Agreed, &[&payload]) {
                        Ok(()) => sent += 1,
                        Err(error) if error.code() == totemcast::CsError::TryAgain => break,
                        Err(error) => panic!("{error}"),
                    }
                }
            }
            Send::ZeroCopy => {
                for _ in 0..(count - sent).min(64) {
                    let buffer = &mut buffers[sent % 4];
                    match handle.zcb_mcast_joined(Guarantee::Agreed, buffer, size) {
                        Ok(()) => sent += 1,
                        Err(error) if error.code() == totemcast::CsError::TryAgain => break,
                        Err(error) => panic!("{error}"),
                    }
                }
            }
        }
        let got = handle
            .dispatch(DispatchFlags::All, |e| {
                if let Event::Deliver { payload, .. } = e {
                    debug_assert_eq!(payload.len(), size);
                    delivered += 1;
                }
            })
            .expect("dispatch");
        if got == 0 && sent == before {
            handle
                .wait_for_event(Some(Duration::from_millis(1)))
                .expect("wait");
        }
    }
    let rate = count as f64 / start.elapsed().as_secs_f64();
    drop(buffers);
    handle.finalize().expect("finalize");
    rate
}

/// Records per second through one ring between two threads (the IPC layer's bound).
fn ring_alone(size: usize, count: usize) -> f64 {
    const CAPACITY: usize = 8 << 20;
    let memory = Arc::new(SharedMemory::create("bench", ring::footprint(CAPACITY)).expect("memfd"));
    ring::initialize(&memory, 0, CAPACITY).expect("ring");
    let mut producer = Producer::new(Arc::clone(&memory), 0, CAPACITY).expect("producer");
    let mut consumer = Consumer::new(memory, 0, CAPACITY).expect("consumer");
    let payload = vec![0x5au8; size];
    let start = Instant::now();
    let writer = std::thread::spawn(move || {
        let mut sent = 0;
        while sent < count {
            if let Ok(mut claim) = producer.claim(size).expect("sane") {
                claim.payload_mut().copy_from_slice(&payload);
                claim.commit_batched(1);
                sent += 1;
            } else {
                std::hint::spin_loop();
            }
        }
    });
    let mut received = 0;
    let mut sum = 0usize;
    while received < count {
        match consumer.read_next().expect("sane") {
            Some(entry) => {
                sum += consumer.payload(&entry)[0] as usize;
                consumer.release_batched(entry);
                received += 1;
            }
            None => std::hint::spin_loop(),
        }
    }
    writer.join().expect("writer");
    assert!(sum > 0);
    count as f64 / start.elapsed().as_secs_f64()
}
