//! Bad datagrams from the test process at a live 3-node loopback cluster of real `totemcast node`
//! processes with the workload on: random garbage of many lengths, truncated, bit-flipped,
//! wrongly keyed, foreign, stale, wrong-source and replayed sealed datagrams, and correctly
//! sealed datagrams whose plaintext is protocol garbage. Every node must keep running, count
//! each drop under its reason, keep (or re-form) the ring, and deliver nothing that was not
//! submitted (the simulator's checkers on the recorded histories).
//!
//! The nodelist has a fourth entry, node 4, that is never started: the test binds node 4's
//! address and speaks as node 4 with the real authkey, so its datagrams pass both the crypto
//! and the source-address check and reach the protocol core.

#![allow(
    clippy::print_stderr,
    reason = "the counters observed are worth seeing"
)]

mod node_harness;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use node_harness::{NodeCluster, Timers, free_loopback_addr, quiesce_and_check};
use serde_json::Value;
use totemcast::ids::{NodeId, RingId};
use totemcast::node::clock;
use totemcast::node::crypto::{Cipher, ClusterKey, HEADER_LEN, Sealer, TAG_LEN, read_authkey};
use totemcast::prng::Prng;
use totemcast::totem::wire;

const NAME: &str = "badinput";
const FORM: Duration = Duration::from_secs(20);
/// How long a node may take to count datagrams already sent to it.
const COUNTED: Duration = Duration::from_secs(10);
/// The nodes that run (0-based); index 3 is the nodelist entry the test speaks as.
const RUNNING: [usize; 3] = [0, 1, 2];
const SPARE: usize = 3;
const GARBAGE_LENGTHS: [usize; 7] = [0, 1, 23, 24, 40, 1500, 65_000];

/// `counters.<group>.<name>` of a status answer (0 if absent).
fn counter(status: &Value, group: &str, name: &str) -> u64 {
    status["counters"][group][name].as_u64().unwrap_or(0)
}

/// The test's side of the wire: a socket on an address no node is configured with, a socket on
/// node 4's configured address, and the cluster's real key.
struct Sender {
    targets: Vec<SocketAddr>,
    stranger: UdpSocket,
    spare: UdpSocket,
    key: ClusterKey,
    authkey: Vec<u8>,
    prng: Prng,
}

impl Sender {
    fn new(cluster: &NodeCluster, spare: UdpSocket) -> Sender {
        let authkey = read_authkey(&cluster.authkey()).unwrap();
        Sender {
            targets: RUNNING
                .iter()
                .map(|&i| cluster.addrs[i].parse().unwrap())
                .collect(),
            stranger: UdpSocket::bind("127.0.0.1:0").unwrap(),
            spare,
            key: ClusterKey::derive(&authkey, NAME, Cipher::Aes256Gcm),
            authkey,
            prng: Prng::from_seed(0xBAD_DA7A),
        }
    }

    fn random_bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.prng.next_u64() as u8).collect()
    }

    /// Sends `datagram` from `socket` to `target`, paced so that the nodes' receive buffers
    /// never overflow (a drop there would hide a count).
    fn send_to(socket: &UdpSocket, target: SocketAddr, datagram: &[u8]) {
        socket.send_to(datagram, target).unwrap();
        std::thread::sleep(Duration::from_micros(300 + datagram.len() as u64 / 100));
    }

    fn send_from_stranger(&self, target: usize, datagram: &[u8]) {
        Sender::send_to(&self.stranger, self.targets[target], datagram);
    }

    fn send_from_spare(&self, target: usize, datagram: &[u8]) {
        Sender::send_to(&self.spare, self.targets[target], datagram);
    }
}

fn seal(sealer: &mut Sealer, plaintext: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    sealer.seal(plaintext, &mut out);
    out
}

/// A valid merge detect from `sender` (the core would act on it if it came from `sender`).
fn merge_detect(sender: u32) -> Vec<u8> {
    let mut out = Vec::new();
    wire::encode_merge_detect(&mut out, NodeId(sender), RingId::new(NodeId(sender), 4));
    out
}

/// Plaintexts that decode as no protocol message, or as one from another sender than node 4.
fn protocol_garbage(prng: &mut Prng) -> Vec<(&'static str, Vec<u8>)> {
    let valid = merge_detect(4);
    let mut cases = Vec::new();
    let mut bad_kind = valid.clone();
    bad_kind[3] = 0xEE;
    cases.push(("unknown kind", bad_kind));
    let mut bad_magic = valid.clone();
    bad_magic[0] ^= 0xFF;
    cases.push(("bad magic", bad_magic));
    let mut bad_version = valid.clone();
    bad_version[2] = 0x7F;
    cases.push(("unsupported version", bad_version));
    let mut sender_zero = valid.clone();
    sender_zero[4..8].fill(0);
    cases.push(("sender 0", sender_zero));
    cases.push(("another sender than the datagram's", merge_detect(2)));
    let mut trailing = valid.clone();
    trailing.push(0);
    cases.push(("trailing byte", trailing));
    cases.push(("truncated merge detect", valid[..valid.len() - 1].to_vec()));
    cases.push(("header only", valid[..wire::HEADER_LEN].to_vec()));
    cases.push(("empty", Vec::new()));
    let mut token = Vec::new();
    wire::encode_token(&mut token, NodeId(4), &wire::Token::default());
    cases.push(("truncated token", token[..token.len() / 2].to_vec()));
    // A token claiming more retransmit requests than it carries.
    let mut token_count = token.clone();
    let at = token_count.len() - 2;
    token_count[at..].copy_from_slice(&u16::MAX.to_le_bytes());
    cases.push(("token with a lying count", token_count));
    for len in [1, 7, 8, 9, 64, 1400] {
        let mut bytes: Vec<u8> = (0..len).map(|_| prng.next_u64() as u8).collect();
        // Valid magic and version, a kind that exists, sender node 4: the body is garbage.
        if len >= 8 {
            bytes[..8].copy_from_slice(&valid[..8]);
            bytes[3] = (prng.below(6)) as u8;
        }
        cases.push(("random body", bytes));
    }
    cases
}

/// Polls every running node until `done` holds for its status, or fails naming `what`.
fn wait_until(cluster: &NodeCluster, what: &str, done: impl Fn(usize, &Value) -> bool) {
    let deadline = std::time::Instant::now() + COUNTED;
    loop {
        let statuses: Vec<Option<Value>> = RUNNING.iter().map(|&i| cluster.status(i)).collect();
        let all = statuses
            .iter()
            .enumerate()
            .all(|(i, status)| status.as_ref().is_some_and(|status| done(i, status)));
        if all {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not seen within {COUNTED:?}; last status: {statuses:#?}\nlogs in {}",
            cluster.dir.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every running node's status (panics if one does not answer).
fn statuses(cluster: &NodeCluster) -> Vec<Value> {
    RUNNING
        .iter()
        .map(|&i| {
            cluster
                .status(i)
                .unwrap_or_else(|| panic!("node {} does not answer", i + 1))
        })
        .collect()
}

/// Waits until counter `group.name` went up by at least `more` at every running node.
fn wait_for_count(
    cluster: &NodeCluster,
    before: &[Value],
    group: &'static str,
    name: &'static str,
    more: u64,
) {
    wait_until(cluster, &format!("{group}.{name} +{more}"), |i, status| {
        counter(status, group, name) >= counter(&before[i], group, name) + more
    });
}

#[test]
fn bad_datagrams_are_dropped_counted_and_harmless() {
    let addrs = (0..4).map(|_| free_loopback_addr()).collect();
    let mut cluster = NodeCluster::with_addrs(NAME, addrs, Timers::default(), 150, "");
    // Bound before the nodes start, so no one else takes node 4's port.
    let spare = UdpSocket::bind(cluster.addrs[SPARE].as_str()).unwrap();
    for index in RUNNING {
        cluster.start(index);
    }
    let ring = cluster.wait_for_ring(&RUNNING, FORM);
    cluster.wait_for_traffic(100, FORM);
    let mut sender = Sender::new(&cluster, spare);
    let start = statuses(&cluster);

    // 1. Random garbage of many lengths, from an address outside the nodelist; some of it
    // starts like a datagram header (magic, version, our cipher) and names random nodes.
    for target in 0..RUNNING.len() {
        for len in GARBAGE_LENGTHS {
            let rounds = if len > 10_000 { 2 } else { 8 };
            for round in 0..rounds {
                let mut bytes = sender.random_bytes(len);
                if round % 2 == 1 && len >= 4 {
                    bytes[..4].copy_from_slice(&[0x54, 1, Cipher::Aes256Gcm as u8, 0]);
                }
                sender.send_from_stranger(target, &bytes);
            }
        }
    }
    wait_for_count(&cluster, &start, "crypto", "malformed", 20);

    // 2. Sealed with another key, and with the right authkey under another cluster name,
    // claiming node 4 from node 4's address: never opened. With the right key for another
    // cipher: refused by its header.
    let mut other_authkey = sender.authkey.clone();
    other_authkey[0] ^= 1;
    let wrong_keys = [
        ClusterKey::derive(&other_authkey, NAME, Cipher::Aes256Gcm),
        ClusterKey::derive(&sender.authkey, "another-cluster", Cipher::Aes256Gcm),
    ];
    let session = clock::unix_millis();
    for target in 0..RUNNING.len() {
        for key in &wrong_keys {
            let mut forger = Sealer::new(key, NodeId(4), session);
            for _ in 0..3 {
                let datagram = seal(&mut forger, &merge_detect(4));
                sender.send_from_spare(target, &datagram);
            }
        }
        let chacha = ClusterKey::derive(&sender.authkey, NAME, Cipher::ChaCha20Poly1305);
        let datagram = seal(
            &mut Sealer::new(&chacha, NodeId(4), session),
            &merge_detect(4),
        );
        sender.send_from_stranger(target, &datagram);
    }
    wait_for_count(&cluster, &start, "crypto", "unauthentic", 6);
    wait_for_count(&cluster, &start, "crypto", "cipher_mismatch", 1);

    // 3. The real key, node ids outside the nodelist.
    for claimed in [0, 5, 9, u32::MAX] {
        let datagram = seal(
            &mut Sealer::new(&sender.key, NodeId(claimed), session),
            &merge_detect(claimed.max(1)),
        );
        for target in 0..RUNNING.len() {
            sender.send_from_stranger(target, &datagram);
        }
    }
    wait_for_count(&cluster, &start, "crypto", "unknown_node", 4);

    // 4. Correctly sealed, from an address that is not the named node's: dropped before any
    // decryption, whether it names a running member (with a newer session: it must not
    // displace that member's, see the test below) or node 4.
    let mut as_spare = Sealer::new(&sender.key, NodeId(4), session);
    for (target, claimed) in [(0, 2), (1, 3), (2, 1)] {
        let mut forger = Sealer::new(&sender.key, NodeId(claimed), u64::MAX / 2);
        sender.send_from_stranger(target, &seal(&mut forger, &merge_detect(claimed)));
        sender.send_from_stranger(target, &seal(&mut as_spare, &[]));
    }
    wait_for_count(&cluster, &start, "crypto", "wrong_source", 2);

    // 5. Node 4's own address and the real key: an empty plaintext is opened (and refused by
    // the core's decoder); the same bytes again are a replay; a datagram of an older session
    // of node 4 is stale, whole or truncated (the session is checked before the tag).
    for target in 0..RUNNING.len() {
        let datagram = seal(&mut as_spare, &[]);
        sender.send_from_spare(target, &datagram);
        sender.send_from_spare(target, &datagram);
        let mut old = Sealer::new(&sender.key, NodeId(4), 1);
        let stale = seal(&mut old, &merge_detect(4));
        for len in [stale.len(), stale.len() - 1, HEADER_LEN + TAG_LEN] {
            sender.send_from_spare(target, &stale[..len]);
        }
    }
    wait_for_count(&cluster, &start, "crypto", "replayed", 1);
    wait_for_count(&cluster, &start, "crypto", "stale_session", 3);

    // 6. Real traffic, captured on node 4's address (the nodes send their multicasts to every
    // nodelist entry) and sent again to the other members from elsewhere: dropped by the
    // source check (replays from the right address are the replay window's, step 5).
    let replayed_before = statuses(&cluster);
    let captured = capture(&sender.spare, &cluster, 20);
    for (from, datagram) in &captured {
        for target in 0..RUNNING.len() {
            if sender.targets[target] != *from {
                sender.send_from_stranger(target, datagram);
            }
        }
    }
    wait_until(&cluster, "captured traffic sent again", |i, status| {
        counter(status, "crypto", "wrong_source")
            > counter(&replayed_before[i], "crypto", "wrong_source")
    });

    // 7. Truncated and bit-flipped copies of datagrams sealed as node 4 (fresh counters), from
    // node 4's address: malformed when shorter than header and tag, unauthentic otherwise.
    let before = statuses(&cluster);
    for target in 0..RUNNING.len() {
        let datagram = seal(&mut as_spare, &merge_detect(4));
        for len in [0, 1, 23, 24, 39, 40, datagram.len() - 1] {
            sender.send_from_spare(target, &datagram[..len]);
        }
        // The first ciphertext byte, the last tag byte, the counter's and the session's top
        // bytes (authenticated as AAD; flipped upwards so that they read as fresh, not replayed
        // or stale).
        for bit in [
            8 * HEADER_LEN,
            8 * datagram.len() - 1,
            8 * 23 + 7,
            8 * 15 + 6,
        ] {
            let mut flipped = datagram.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            sender.send_from_spare(target, &flipped);
        }
        let mut bad_cipher = datagram.clone();
        bad_cipher[2] = 0x7F;
        sender.send_from_spare(target, &bad_cipher);
    }
    wait_for_count(&cluster, &before, "crypto", "malformed", 6);
    wait_for_count(&cluster, &before, "crypto", "unauthentic", 6);

    // 8. Correctly sealed as node 4, from node 4's address, with plaintexts that are protocol
    // garbage: opened, source accepted, refused by the core's decoder.
    let garbage = protocol_garbage(&mut sender.prng);
    for target in 0..RUNNING.len() {
        for (_, plaintext) in &garbage {
            let datagram = seal(&mut as_spare, plaintext);
            sender.send_from_spare(target, &datagram);
        }
    }
    wait_for_count(
        &cluster,
        &before,
        "protocol",
        "datagrams_malformed",
        garbage.len() as u64,
    );

    // Every node still runs, answers and orders the workload on a ring of the three.
    for index in RUNNING {
        assert!(cluster.alive(index), "node {} exited", index + 1);
    }
    let after = cluster.wait_for_ring(&RUNNING, FORM);
    cluster.wait_for_traffic(100, FORM);
    let end = statuses(&cluster);
    for (i, status) in end.iter().enumerate() {
        let show = |group: &str, name: &str| {
            format!(
                "{name}={}",
                counter(status, group, name) - counter(&start[i], group, name)
            )
        };
        eprintln!(
            "node {}: crypto {} {} {} {} {} {} {} | transport {} | protocol {} {} {}",
            RUNNING[i] + 1,
            show("crypto", "opened"),
            show("crypto", "malformed"),
            show("crypto", "unknown_node"),
            show("crypto", "cipher_mismatch"),
            show("crypto", "unauthentic"),
            show("crypto", "replayed"),
            show("crypto", "stale_session"),
            show("crypto", "wrong_source"),
            show("protocol", "datagrams_malformed"),
            show("protocol", "datagrams_foreign"),
            show("protocol", "gathers"),
        );
    }
    eprintln!(
        "ring before {ring:?}, after {after:?}; {} real datagrams replayed",
        captured.len()
    );
    quiesce_and_check(&mut cluster);
}

/// Receives up to `count` datagrams sent to `socket` by the running nodes (after dropping what
/// was queued before the call).
fn capture(socket: &UdpSocket, cluster: &NodeCluster, count: usize) -> Vec<(SocketAddr, Vec<u8>)> {
    let nodes: Vec<SocketAddr> = RUNNING
        .iter()
        .map(|&i| cluster.addrs[i].parse().unwrap())
        .collect();
    let mut buf = vec![0; 65_536];
    socket.set_nonblocking(true).unwrap();
    while socket.recv_from(&mut buf).is_ok() {}
    socket.set_nonblocking(false).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut captured = Vec::new();
    while captured.len() < count && std::time::Instant::now() < deadline {
        if let Ok((len, from)) = socket.recv_from(&mut buf)
            && nodes.contains(&from)
        {
            captured.push((from, buf[..len].to_vec()));
        }
    }
    assert!(!captured.is_empty(), "no traffic reached node 4's address");
    captured
}

/// Regression: the opener used to adopt a newer session from a correctly sealed datagram before
/// the source address was checked, so one such datagram from anywhere (by someone holding the
/// authkey) made the receivers drop the real member's datagrams as stale until it restarted.
#[test]
fn a_sealed_datagram_from_the_wrong_address_does_not_displace_a_members_session() {
    let mut cluster = NodeCluster::new("displace", 3, Timers::default(), 150, "");
    cluster.start_all();
    cluster.wait_for_ring(&RUNNING, FORM);
    cluster.wait_for_traffic(100, FORM);
    let authkey = read_authkey(&cluster.authkey()).unwrap();
    let key = ClusterKey::derive(&authkey, "displace", Cipher::Aes256Gcm);
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    let before = statuses(&cluster);
    // As node 2, in a session newer than node 2's own, to nodes 1 and 3.
    let mut forger = Sealer::new(&key, NodeId(2), clock::unix_millis() + 1);
    for target in [0, 2] {
        let datagram = seal(&mut forger, &merge_detect(2));
        stranger
            .send_to(&datagram, cluster.addrs[target].as_str())
            .unwrap();
    }
    // Several token timeouts: long enough for node 2 to be excluded if its datagrams are dropped.
    std::thread::sleep(Duration::from_secs(3));
    let after = statuses(&cluster);
    for i in [0, 2] {
        let grew = |group: &str, name: &str| {
            counter(&after[i], group, name) - counter(&before[i], group, name)
        };
        eprintln!(
            "node {}: wrong_source +{}, stale_session +{}, token_losses +{}",
            i + 1,
            grew("crypto", "wrong_source"),
            grew("crypto", "stale_session"),
            grew("protocol", "token_losses"),
        );
        assert_eq!(
            grew("crypto", "stale_session"),
            0,
            "node {}: node 2's real datagrams were dropped as stale",
            i + 1
        );
    }
    cluster.wait_for_ring(&RUNNING, FORM);
    cluster.wait_for_traffic(100, FORM);
    quiesce_and_check(&mut cluster);
}
