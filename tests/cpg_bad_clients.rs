//! Clients that misbehave, against a real `totemcast node` process: one that stops dispatching
//! while another floods its group (disconnected alone once it has read nothing for 5 s while
//! its events wait, or 512 MiB of them wait), and
//! bad input — group names of 0 and 129 bytes, messages over the cluster's limit, records
//! written raw into a request ring (malformed, corrupt, or as large as the ring takes), and a
//! finalized handle. A bad client is answered with an error code or dropped
//! (`disconnected_bad`), the node stays up and the other clients do not notice.

#![allow(clippy::print_stderr, reason = "the tests say what they observed")]

mod cpg_harness;
mod node_harness;

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cpg_harness::{
    Command, Fleet, GroupEvent, OK, check_exactly_once, wait_all_delivered, wait_members,
};
use nix::poll::{PollFd, PollFlags};
use node_harness::{NodeCluster, Timers};
use serde_json::Value;
use totemcast::api::{DispatchFlags, Guarantee, Reason};
use totemcast::cpg::{Event, Handle};
use totemcast::error::CsError;
use totemcast::ipc::connection::{self, Endpoint};
use totemcast::ipc::ring;
use totemcast::node::cpg::records;

const WITHIN: Duration = Duration::from_secs(30);
const GROUP: &str = "g";

fn socket(cluster: &NodeCluster, index: usize) -> PathBuf {
    cluster.dir.join(format!("node-{}.sock", index + 1))
}

/// `counters.clients.<name>` of node 1.
fn client_counter(cluster: &NodeCluster, name: &str) -> u64 {
    let status = cluster.status(0).expect("the node answers its status");
    status["counters"]["clients"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name} in {status:#}"))
}

/// Waits until `counters.clients.<name>` of node 1 is `want`.
#[track_caller]
fn wait_counter(cluster: &NodeCluster, name: &str, want: u64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let status: Option<Value> = cluster.status(0);
        let value = status
            .as_ref()
            .and_then(|s| s["counters"]["clients"][name].as_u64());
        if value == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "counter {name} is {value:?}, not {want}; status: {status:#?}\nlogs in {}",
            cluster.dir.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_client_that_never_dispatches_is_disconnected_alone() {
    let mut cluster = NodeCluster::new("cpgb-slow", 1, Timers::default(), 0, "");
    cluster.start_all();
    cluster.wait_for_ring(&[0], WITHIN);
    let mut fleet = Fleet::new(Duration::from_secs(120));
    let flooder = fleet.spawn("flooder", &socket(&cluster, 0));
    let observer = fleet.spawn("observer", &socket(&cluster, 0));
    let slow = fleet.spawn("slow", &socket(&cluster, 0));
    for p in [flooder, observer, slow] {
        fleet.call_ok(p, &Command::Join(GROUP.into()));
    }
    wait_members(
        &mut fleet,
        &[flooder, observer],
        &[flooder, observer, slow],
        GROUP,
    );
    fleet.command(slow, &Command::Stall);
    // The flooder sends 256 KiB messages until the slow client is gone: its event ring (2 MiB)
    // fills, its backlog grows, and it reads nothing for 5 s (or 512 MiB wait).
    fleet.command(
        flooder,
        &Command::Send {
            first: 0,
            count: u64::MAX / 2,
            size_min: 256 << 10,
            size_spread: 0,
        },
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while client_counter(&cluster, "disconnected_slow") == 0 {
        assert!(
            Instant::now() < deadline,
            "the slow client was not disconnected\n{}",
            fleet.describe()
        );
        // Take in what the clients report meanwhile (their pipes must not fill up).
        fleet.pump();
        std::thread::sleep(Duration::from_millis(20));
    }
    fleet.command(flooder, &Command::StopSending);
    fleet.wait("the flooder is done", |fleet| {
        fleet.procs[flooder].sends_done() == 1
    });
    eprintln!(
        "the slow client was disconnected after the flooder had {} messages of 256 KiB accepted",
        fleet.procs[flooder].accepted().len()
    );
    wait_all_delivered(&mut fleet, &[flooder, observer], &[flooder], GROUP);
    assert_eq!(client_counter(&cluster, "disconnected_slow"), 1);
    assert_eq!(client_counter(&cluster, "disconnected_bad"), 0);
    let gone = fleet.procs[slow].member();
    fleet.wait("PROCDOWN of the slow client", |fleet| {
        [flooder, observer]
            .iter()
            .all(|&p| fleet.procs[p].saw_leave(GROUP, gone, Reason::ProcDown))
    });
    let procs = &fleet.procs;
    check_exactly_once(
        &[&procs[flooder], &procs[observer]],
        &[&procs[flooder]],
        GROUP,
    );
    // The slow client learns it was dropped at its next call.
    let (code, _) = fleet.call(slow, &Command::LocalGet);
    assert_eq!(code, u32::from(CsError::Library), "a call after the drop");
    fleet.wait_exit(slow);
    // The node goes on: the others still talk, a new client connects.
    fleet.command(
        observer,
        &Command::Send {
            first: 0,
            count: 10,
            size_min: 12,
            size_spread: 100,
        },
    );
    wait_all_delivered(
        &mut fleet,
        &[flooder, observer],
        &[flooder, observer],
        GROUP,
    );
    let mut handle = Handle::connect(socket(&cluster, 0)).unwrap();
    let mut want = vec![
        fleet.procs[flooder].member(),
        fleet.procs[observer].member(),
    ];
    want.sort_unstable();
    let members: Vec<(u32, u32)> = handle
        .membership_get(GROUP)
        .unwrap()
        .iter()
        .map(|&(n, p)| (n.0, p))
        .collect();
    assert_eq!(members, want);
}

/// A client that speaks the ring protocol by hand.
struct Rogue {
    endpoint: Endpoint,
    buffer: Vec<u8>,
}

impl Rogue {
    fn connect(cluster: &NodeCluster) -> Rogue {
        let (endpoint, _) = connection::connect(&socket(cluster, 0), "cpg").unwrap();
        Rogue {
            endpoint,
            buffer: Vec::new(),
        }
    }

    /// Writes a record and wakes the node.
    fn push(&mut self, kind: u32, body: &[u8]) {
        let wake = self.endpoint.tx.push(kind, body).unwrap().unwrap();
        if wake {
            self.endpoint.wake_peer();
        }
    }

    /// The next answer's code and body (events before it are skipped).
    #[track_caller]
    fn answer(&mut self) -> (u32, Vec<u8>) {
        let deadline = Instant::now() + WITHIN;
        loop {
            if let Some(entry) = self.endpoint.rx.read_next().unwrap() {
                self.endpoint.rx.copy(&entry, &mut self.buffer);
                if self.endpoint.rx.release(entry) {
                    self.endpoint.wake_peer();
                }
                if entry.kind == records::ANSWER {
                    let code = u32::from_le_bytes(self.buffer[..4].try_into().unwrap());
                    return (code, self.buffer[4..].to_vec());
                }
                continue;
            }
            assert!(Instant::now() < deadline, "no answer from the node");
            if self.endpoint.rx.prepare_to_sleep() {
                let mut fds = [PollFd::new(self.endpoint.wakeup(), PollFlags::POLLIN)];
                let _ = nix::poll::poll(&mut fds, 100u16);
                self.endpoint.clear_wakeup();
            }
        }
    }

    /// A request and its answer's code.
    #[track_caller]
    fn call(&mut self, kind: u32, body: &[u8]) -> u32 {
        self.push(kind, body);
        self.answer().0
    }

    /// Waits until the node closed this client's socket.
    #[track_caller]
    fn wait_dropped(&self, what: &str) {
        let mut fds = [PollFd::new(self.endpoint.stream.as_fd(), PollFlags::POLLIN)];
        let ready = nix::poll::poll(&mut fds, 20_000u16).unwrap();
        assert_eq!(ready, 1, "the node did not drop the client that {what}");
        let mut byte = [0u8; 1];
        assert_eq!(
            std::io::Read::read(&mut &self.endpoint.stream, &mut byte).unwrap(),
            0,
            "end of file for the client that {what}"
        );
    }
}

/// The others are unaffected: `sender` multicasts `count` more messages and both deliver
/// every accepted one.
fn others_go_on(fleet: &mut Fleet, sender: usize, receivers: &[usize], first: u64) {
    fleet.command(
        sender,
        &Command::Send {
            first,
            count: 20,
            size_min: 12,
            size_spread: 200,
        },
    );
    let done = fleet.procs[sender].sends_done() + 1;
    fleet.wait("the sender is done", |fleet| {
        fleet.procs[sender].sends_done() == done
    });
    wait_all_delivered(fleet, receivers, &[sender], GROUP);
    for &r in receivers {
        assert!(
            !fleet.procs[r].ended,
            "{} was disconnected",
            fleet.procs[r].name
        );
    }
}

/// Waits until each of `procs` lists `who` among the members of `GROUP` with them.
#[track_caller]
fn wait_joined(fleet: &mut Fleet, procs: &[usize], who: (u32, u32)) {
    let mut want: Vec<(u32, u32)> = procs.iter().map(|&p| fleet.procs[p].member()).collect();
    want.push(who);
    want.sort_unstable();
    fleet.wait(&format!("{who:?} joins {GROUP:?}"), |fleet| {
        procs
            .iter()
            .all(|&p| fleet.procs[p].last_members(GROUP).as_ref() == Some(&want))
    });
}

#[test]
fn bad_requests_are_refused_or_dropped_and_the_others_go_on() {
    // A limit above what one ring record holds (4 MiB): the largest messages go in parts.
    let limit = 6 << 20;
    let extra = format!("max_message_size = {limit}");
    let mut cluster = NodeCluster::new("cpgb-bad", 1, Timers::default(), 0, &extra);
    cluster.start_all();
    cluster.wait_for_ring(&[0], WITHIN);
    let mut fleet = Fleet::new(WITHIN);
    let a = fleet.spawn("a", &socket(&cluster, 0));
    let b = fleet.spawn("b", &socket(&cluster, 0));
    for p in [a, b] {
        fleet.call_ok(p, &Command::Join(GROUP.into()));
    }
    wait_members(&mut fleet, &[a, b], &[a, b], GROUP);
    let me = std::process::id();
    let code = |error: totemcast::Error| error.code();

    // Names, through the library (which checks first) and raw (the node checks again).
    let long = "x".repeat(128);
    let too_long = "x".repeat(129);
    let mut handle = Handle::connect(socket(&cluster, 0)).unwrap();
    assert_eq!(code(handle.join("").unwrap_err()), CsError::InvalidParam);
    assert_eq!(
        code(handle.join(&too_long).unwrap_err()),
        CsError::NameTooLong
    );
    assert_eq!(
        code(handle.membership_get("").unwrap_err()),
        CsError::InvalidParam
    );
    assert_eq!(
        code(handle.membership_get(&too_long).unwrap_err()),
        CsError::NameTooLong
    );
    assert_eq!(
        code(handle.leave(&too_long).unwrap_err()),
        CsError::NameTooLong
    );
    let mut rogue = Rogue::connect(&cluster);
    let invalid = u32::from(CsError::InvalidParam);
    let name_too_long = u32::from(CsError::NameTooLong);
    assert_eq!(rogue.call(records::JOIN, b""), invalid);
    assert_eq!(
        rogue.call(records::JOIN, too_long.as_bytes()),
        name_too_long
    );
    assert_eq!(rogue.call(records::MEMBERSHIP_GET, b""), invalid);
    assert_eq!(
        rogue.call(records::MEMBERSHIP_GET, too_long.as_bytes()),
        name_too_long
    );
    assert_eq!(
        rogue.call(records::LEAVE, too_long.as_bytes()),
        name_too_long
    );
    assert_eq!(rogue.call(records::LEAVE, b""), invalid);
    assert_eq!(
        rogue.call(records::LEAVE, GROUP.as_bytes()),
        u32::from(CsError::NotExist)
    );
    // A multicast before a join is ignored (no answer, as in Corosync); junk after a
    // LOCAL_GET is ignored.
    rogue.push(records::MCAST, &[2, 1, 2, 3]);
    let (status, body) = {
        rogue.push(records::LOCAL_GET, b"junk");
        rogue.answer()
    };
    assert_eq!((status, body), (OK, 1u32.to_le_bytes().to_vec()));
    assert_eq!(client_counter(&cluster, "disconnected_bad"), 0);

    // A 128-byte name is fine; the limit is the cluster's (told in the handshake); a message
    // one byte over it is refused and nothing is sent; one of exactly the limit arrives whole.
    let c = fleet.spawn("c", &socket(&cluster, 0));
    fleet.call_ok(c, &Command::Join(long.clone()));
    handle.join(&long).unwrap();
    let max = handle.max_atomic_msgsize_get().unwrap();
    assert_eq!(max, limit);
    let over = cpg_harness::payload(me, 0, max + 1);
    assert_eq!(
        code(
            handle
                .mcast_joined(Guarantee::Agreed, &[&over[..max], &over[max..]])
                .unwrap_err()
        ),
        CsError::TooBig
    );
    handle
        .mcast_joined(Guarantee::Agreed, &[&cpg_harness::payload(me, 1, max)])
        .unwrap();
    handle
        .mcast_joined(Guarantee::Agreed, &[&cpg_harness::payload(me, 2, 12)])
        .unwrap();
    let long_name = long.clone();
    fleet.wait("c delivers the two messages", |fleet| {
        fleet.procs[c].deliveries(&long_name).len() >= 2
    });
    let got: Vec<GroupEvent> = fleet.procs[c]
        .events(&long)
        .into_iter()
        .filter(|e| matches!(e, GroupEvent::Deliver(..)))
        .collect();
    assert_eq!(
        got,
        vec![
            GroupEvent::Deliver((1, me), 1, true),
            GroupEvent::Deliver((1, me), 2, true)
        ],
        "c delivers the largest message whole and nothing of the refused one"
    );
    let mut own = Vec::new();
    while own.len() < 3 {
        handle
            .dispatch(DispatchFlags::One, |event| {
                if let Event::Deliver { payload, .. } = event {
                    own.push(payload.len());
                } else {
                    own.push(0);
                }
            })
            .unwrap();
    }
    assert_eq!(
        own,
        [0, max, 12],
        "the sender: its join, then its two messages"
    );
    assert_eq!(client_counter(&cluster, "disconnected_bad"), 0);

    // Records that get their writer dropped, one fresh rogue each; the node and the others go
    // on after each.
    let mut over_limit = records::mcast_first(Guarantee::Agreed, limit as u64 + 1).to_vec();
    over_limit.extend_from_slice(&[0; 64]);
    let mut first_too_long = records::mcast_first(Guarantee::Agreed, 8).to_vec();
    first_too_long.extend_from_slice(&[0; 64]);
    let malformed: [(&str, u32, Vec<u8>); 9] = [
        (
            "announced a multicast over the cluster's limit",
            records::MCAST_FIRST,
            over_limit,
        ),
        (
            "sent a first part longer than its multicast",
            records::MCAST_FIRST,
            first_too_long,
        ),
        (
            "sent a part of no multicast",
            records::MCAST_MORE,
            vec![1; 8],
        ),
        (
            "named a zero-copy block outside its arena",
            records::ZCB_MCAST,
            records::zcb_mcast(Guarantee::Agreed, u64::MAX / 2, 16).to_vec(),
        ),
        ("sent a 2000-byte join", records::JOIN, vec![b'x'; 2000]),
        (
            "sent an empty multicast request",
            records::MCAST,
            Vec::new(),
        ),
        ("sent guarantee 9", records::MCAST, vec![9, 1, 2, 3]),
        (
            "sent a node's answer kind",
            records::ANSWER,
            vec![1, 0, 0, 0],
        ),
        ("sent kind 0", 0, Vec::new()),
    ];
    let mut dropped = 0;
    let mut first = 0;
    for (what, kind, body) in malformed {
        let mut rogue = Rogue::connect(&cluster);
        rogue.push(kind, &body);
        rogue.wait_dropped(what);
        dropped += 1;
        wait_counter(&cluster, "disconnected_bad", dropped, WITHIN);
        others_go_on(&mut fleet, a, &[a, b], first);
        first += 20;
    }

    // A record header overwritten after the record was published (through the shared memfd,
    // as another process mapping it could): a length beyond the ring.
    let mut rogue = Rogue::connect(&cluster);
    let wake = rogue
        .endpoint
        .tx
        .push(records::LOCAL_GET, b"")
        .unwrap()
        .unwrap();
    assert!(wake, "the node sleeps on a fresh ring");
    let mut header = Vec::new();
    header.extend_from_slice(&0x00F0_0000u32.to_le_bytes());
    header.extend_from_slice(&records::LOCAL_GET.to_le_bytes());
    let written = nix::sys::uio::pwrite(
        rogue.endpoint.region().fd(),
        &header,
        ring::HEADER_LEN as i64,
    )
    .unwrap();
    assert_eq!(written, 8);
    rogue.endpoint.wake_peer();
    rogue.wait_dropped("corrupted its request ring");
    dropped += 1;
    wait_counter(&cluster, "disconnected_bad", dropped, WITHIN);
    others_go_on(&mut fleet, a, &[a, b], first);
    first += 20;

    // A member that sends garbage is dropped and leaves its group (PROCDOWN) at once.
    let mut rogue = Rogue::connect(&cluster);
    assert_eq!(rogue.call(records::JOIN, GROUP.as_bytes()), OK);
    let member = (1, me);
    wait_joined(&mut fleet, &[a, b], member);
    rogue.push(records::MCAST, &[]);
    rogue.wait_dropped("sent garbage as a member");
    dropped += 1;
    wait_counter(&cluster, "disconnected_bad", dropped, WITHIN);
    fleet.wait("PROCDOWN of the dropped member", |fleet| {
        [a, b]
            .iter()
            .all(|&p| fleet.procs[p].saw_leave(GROUP, member, Reason::ProcDown))
    });
    others_go_on(&mut fleet, a, &[a, b], first);
    first += 20;

    // A member that writes by hand one record as large as the ring takes (more than one
    // event record holds with the delivery's header, less than the cluster's limit): the
    // others get it whole (in parts), nobody is dropped, and it can leave as usual.
    let mut rogue = Rogue::connect(&cluster);
    assert_eq!(rogue.call(records::JOIN, GROUP.as_bytes()), OK);
    wait_joined(&mut fleet, &[a, b], member);
    let mut body = vec![u8::try_from(u32::from(Guarantee::Agreed)).unwrap()];
    let large = rogue.endpoint.tx.payload_max() - 1;
    body.extend(cpg_harness::payload(me, 7, large));
    rogue.push(records::MCAST, &body);
    fleet.wait("a and b deliver the large message", |fleet| {
        [a, b].iter().all(|&p| {
            fleet.procs[p]
                .deliveries(GROUP)
                .contains(&(member.0, member.1, 7))
        })
    });
    assert_eq!(rogue.call(records::LEAVE, GROUP.as_bytes()), OK);
    fleet.wait("LEAVE of the large message's sender", |fleet| {
        [a, b]
            .iter()
            .all(|&p| fleet.procs[p].saw_leave(GROUP, member, Reason::Leave))
    });
    assert_eq!(client_counter(&cluster, "disconnected_bad"), dropped);
    others_go_on(&mut fleet, a, &[a, b], first);

    // A finalized handle: every call says BAD_HANDLE, and it is gone from its group.
    handle.finalize().unwrap();
    assert_eq!(code(handle.join("h").unwrap_err()), CsError::BadHandle);
    assert_eq!(
        code(handle.dispatch(DispatchFlags::All, |_| {}).unwrap_err()),
        CsError::BadHandle
    );
    assert_eq!(code(handle.finalize().unwrap_err()), CsError::BadHandle);
    let long_name = long.clone();
    fleet.wait("c sees the finalized handle go", |fleet| {
        fleet.procs[c].saw_leave(&long_name, (1, me), Reason::ProcDown)
    });

    assert!(cluster.status(0).is_some(), "the node is up");
    let procs = &fleet.procs;
    check_exactly_once(&[&procs[a], &procs[b]], &[&procs[a]], GROUP);
    for p in [a, b] {
        let from_rogues: Vec<GroupEvent> = procs[p]
            .events(GROUP)
            .into_iter()
            .filter(|e| matches!(e, GroupEvent::Deliver(from, ..) if *from == member))
            .collect();
        assert_eq!(
            from_rogues,
            [GroupEvent::Deliver(member, 7, true)],
            "{}: of the hand-written clients, only the large message (whole)",
            procs[p].name
        );
    }
    assert_eq!(
        client_counter(&cluster, "disconnected_slow"),
        0,
        "nobody was too slow"
    );
}
