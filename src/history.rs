//! The recorded history of a run (PROTOCOL.md §2.1): one ordered log per process incarnation,
//! merged into one list in recording order. The simulator writes it; a real node writes the
//! same events as JSON lines (`totemcast node --history FILE`); the checkers read both.
//!
//! Messages are followed black-box: a test workload writes its [`AppMessageId`] at the start of
//! every payload ([`write_app_header`], [`app_id`]) and records a [`payload_hash`].

use std::io::{self, BufRead, Write};

use serde::{Deserialize, Serialize};

use crate::api::Guarantee;
use crate::ids::{NodeId, RingId};
use crate::time::Instant;

/// One incarnation of a node: `incarnation` goes up by one at every restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProcessId {
    /// The node.
    pub node: NodeId,
    /// Restarts of the node before this incarnation.
    pub incarnation: u32,
}

/// An application message's identity, written by the workload into the payload so that the
/// checkers can follow it black-box: origin incarnation and the origin's counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AppMessageId {
    /// The submitting incarnation.
    pub origin: ProcessId,
    /// Per-incarnation counter, from 0 in submit order.
    pub counter: u64,
}

/// Where a message sits in a ring's total order (the core's own type).
pub use crate::totem::Position;

/// One event of a process's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HistoryEvent {
    /// The incarnation started.
    Start,
    /// The incarnation ended by a crash (no more events from it).
    Crash,
    /// The API accepted `msg` (refused sends are not recorded).
    Submit {
        /// The message.
        msg: AppMessageId,
        /// Its guarantee.
        guarantee: Guarantee,
        /// A hash of its payload.
        payload_hash: u64,
        /// Its length in bytes.
        len: usize,
    },
    /// White-box: the token holder gave `msg` its place in the total order.
    Originate {
        /// The message.
        msg: AppMessageId,
        /// Its place.
        position: Position,
    },
    /// A regular configuration was installed.
    ConfReg {
        /// The ring.
        ring: RingId,
        /// Its members, sorted.
        members: Vec<NodeId>,
        /// Members that were not in the transitional configuration before it.
        joined: Vec<NodeId>,
        /// Always empty for a regular configuration (lefts are on the transitional one).
        left: Vec<NodeId>,
    },
    /// A transitional configuration was installed (between `old_ring` and `new_ring`).
    ConfTrans {
        /// The previous regular ring.
        old_ring: RingId,
        /// The next regular ring.
        new_ring: RingId,
        /// Members of `old_ring` that move to `new_ring` together, sorted.
        members: Vec<NodeId>,
        /// Members of `old_ring` that do not.
        left: Vec<NodeId>,
    },
    /// `msg` was delivered to the application.
    Deliver {
        /// The message.
        msg: AppMessageId,
        /// Its guarantee.
        guarantee: Guarantee,
        /// White-box: its place in the total order.
        position: Position,
        /// A hash of the delivered payload.
        payload_hash: u64,
        /// The delivered length.
        len: usize,
    },
}

/// One event with its process and the (simulated or real) time it was recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// When.
    pub time: Instant,
    /// Which incarnation.
    pub process: ProcessId,
    /// What.
    pub event: HistoryEvent,
}

/// The merged logs of a run, in recording order (each process's events keep their order).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    /// Every record, in recording order.
    pub records: Vec<Record>,
}

impl History {
    /// Appends one record.
    pub fn push(&mut self, time: Instant, process: ProcessId, event: HistoryEvent) {
        self.records.push(Record {
            time,
            process,
            event,
        });
    }

    /// The records of one incarnation, in order.
    pub fn of(&self, process: ProcessId) -> impl Iterator<Item = &Record> {
        self.records.iter().filter(move |r| r.process == process)
    }

    /// Every incarnation that appears, sorted.
    #[must_use]
    pub fn processes(&self) -> Vec<ProcessId> {
        let mut all: Vec<ProcessId> = self.records.iter().map(|r| r.process).collect();
        all.sort_unstable();
        all.dedup();
        all
    }
}

/// Bytes at the start of every workload payload: magic, node, incarnation, counter.
pub const APP_HEADER_LEN: usize = 4 + 4 + 4 + 8;
const APP_MAGIC: u32 = 0xA11C_E5ED;

/// Writes the id header of message `id` (the first [`APP_HEADER_LEN`] bytes of a payload).
pub fn write_app_header(id: AppMessageId, out: &mut Vec<u8>) {
    out.extend_from_slice(&APP_MAGIC.to_le_bytes());
    out.extend_from_slice(&id.origin.node.0.to_le_bytes());
    out.extend_from_slice(&id.origin.incarnation.to_le_bytes());
    out.extend_from_slice(&id.counter.to_le_bytes());
}

/// The message id written at the start of `payload`, if it has one.
#[must_use]
pub fn app_id(payload: &[u8]) -> Option<AppMessageId> {
    let header = payload.get(..APP_HEADER_LEN)?;
    let word = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().expect("4 bytes"));
    if word(0) != APP_MAGIC {
        return None;
    }
    Some(AppMessageId {
        origin: ProcessId {
            node: NodeId(word(4)),
            incarnation: word(8),
        },
        counter: u64::from_le_bytes(header[12..20].try_into().expect("8 bytes")),
    })
}

/// A 64-bit hash of `bytes`, 32 bytes at a time in four independent lanes (payloads are
/// megabytes; this runs for every submit and every delivery).
#[must_use]
pub fn payload_hash(bytes: &[u8]) -> u64 {
    const MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut lanes = [
        0x243F_6A88_85A3_08D3,
        0x1319_8A2E_0370_7344,
        0xA409_3822_299F_31D0,
        0x082E_FA98_EC4E_6C89,
    ];
    let mut blocks = bytes.chunks_exact(32);
    for block in &mut blocks {
        for (lane, word) in lanes.iter_mut().zip(block.chunks_exact(8)) {
            let word = u64::from_le_bytes(word.try_into().expect("eight bytes"));
            *lane = (*lane ^ word).wrapping_mul(MULTIPLIER).rotate_left(29);
        }
    }
    let mut hash = bytes.len() as u64;
    for lane in lanes {
        hash = crate::prng::splitmix64(hash ^ lane);
    }
    for word in blocks.remainder().chunks(8) {
        let mut padded = [0u8; 8];
        padded[..word.len()].copy_from_slice(word);
        hash = crate::prng::splitmix64(hash ^ u64::from_le_bytes(padded));
    }
    hash
}

/// One history record as a JSON line: flat numbers, `[rep, seq]` for rings, `[node,
/// incarnation, counter]` for message ids and `[rep, seq, packet, index]` for positions.
#[derive(Serialize, Deserialize)]
struct JsonRecord {
    /// Nanoseconds of the recording clock (CLOCK_MONOTONIC for real nodes).
    t: u64,
    node: u32,
    inc: u32,
    #[serde(flatten)]
    event: JsonEvent,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum JsonEvent {
    Start,
    Crash,
    Submit {
        msg: [u64; 3],
        guarantee: u32,
        hash: u64,
        len: usize,
    },
    Originate {
        msg: [u64; 3],
        pos: [u64; 4],
    },
    ConfReg {
        ring: [u64; 2],
        members: Vec<u32>,
        joined: Vec<u32>,
        left: Vec<u32>,
    },
    ConfTrans {
        old_ring: [u64; 2],
        new_ring: [u64; 2],
        members: Vec<u32>,
        left: Vec<u32>,
    },
    Deliver {
        msg: [u64; 3],
        guarantee: u32,
        pos: [u64; 4],
        hash: u64,
        len: usize,
    },
}

fn ring_to_json(ring: RingId) -> [u64; 2] {
    [u64::from(ring.rep), ring.seq]
}

fn ring_from_json(ring: [u64; 2]) -> io::Result<RingId> {
    Ok(RingId {
        rep: narrow(ring[0])?,
        seq: ring[1],
    })
}

fn msg_to_json(msg: AppMessageId) -> [u64; 3] {
    [
        u64::from(msg.origin.node.0),
        u64::from(msg.origin.incarnation),
        msg.counter,
    ]
}

fn msg_from_json(msg: [u64; 3]) -> io::Result<AppMessageId> {
    Ok(AppMessageId {
        origin: ProcessId {
            node: NodeId(narrow(msg[0])?),
            incarnation: narrow(msg[1])?,
        },
        counter: msg[2],
    })
}

fn position_to_json(position: Position) -> [u64; 4] {
    [
        u64::from(position.ring.rep),
        position.ring.seq,
        position.seq,
        u64::from(position.index),
    ]
}

fn position_from_json(position: [u64; 4]) -> io::Result<Position> {
    Ok(Position {
        ring: ring_from_json([position[0], position[1]])?,
        seq: position[2],
        index: narrow(position[3])?,
    })
}

fn narrow(value: u64) -> io::Result<u32> {
    u32::try_from(value).map_err(|_| invalid(format!("{value} does not fit in 32 bits")))
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

fn nodes_to_json(nodes: &[NodeId]) -> Vec<u32> {
    nodes.iter().map(|node| node.0).collect()
}

fn nodes_from_json(nodes: Vec<u32>) -> Vec<NodeId> {
    nodes.into_iter().map(NodeId).collect()
}

fn guarantee_from_json(value: u32) -> io::Result<Guarantee> {
    Guarantee::try_from(value).map_err(|error| invalid(error.to_string()))
}

impl Record {
    /// Writes the record as one JSON line.
    pub fn write_json_line(&self, out: &mut impl Write) -> io::Result<()> {
        let event = match &self.event {
            HistoryEvent::Start => JsonEvent::Start,
            HistoryEvent::Crash => JsonEvent::Crash,
            HistoryEvent::Submit {
                msg,
                guarantee,
                payload_hash,
                len,
            } => JsonEvent::Submit {
                msg: msg_to_json(*msg),
                guarantee: u32::from(*guarantee),
                hash: *payload_hash,
                len: *len,
            },
            HistoryEvent::Originate { msg, position } => JsonEvent::Originate {
                msg: msg_to_json(*msg),
                pos: position_to_json(*position),
            },
            HistoryEvent::ConfReg {
                ring,
                members,
                joined,
                left,
            } => JsonEvent::ConfReg {
                ring: ring_to_json(*ring),
                members: nodes_to_json(members),
                joined: nodes_to_json(joined),
                left: nodes_to_json(left),
            },
            HistoryEvent::ConfTrans {
                old_ring,
                new_ring,
                members,
                left,
            } => JsonEvent::ConfTrans {
                old_ring: ring_to_json(*old_ring),
                new_ring: ring_to_json(*new_ring),
                members: nodes_to_json(members),
                left: nodes_to_json(left),
            },
            HistoryEvent::Deliver {
                msg,
                guarantee,
                position,
                payload_hash,
                len,
            } => JsonEvent::Deliver {
                msg: msg_to_json(*msg),
                guarantee: u32::from(*guarantee),
                pos: position_to_json(*position),
                hash: *payload_hash,
                len: *len,
            },
        };
        let record = JsonRecord {
            t: self.time.as_nanos(),
            node: self.process.node.0,
            inc: self.process.incarnation,
            event,
        };
        serde_json::to_writer(&mut *out, &record).map_err(io::Error::from)?;
        out.write_all(b"\n")
    }

    /// Reads one record from a JSON line.
    pub fn from_json_line(line: &str) -> io::Result<Record> {
        let record: JsonRecord = serde_json::from_str(line).map_err(io::Error::from)?;
        let event = match record.event {
            JsonEvent::Start => HistoryEvent::Start,
            JsonEvent::Crash => HistoryEvent::Crash,
            JsonEvent::Submit {
                msg,
                guarantee,
                hash,
                len,
            } => HistoryEvent::Submit {
                msg: msg_from_json(msg)?,
                guarantee: guarantee_from_json(guarantee)?,
                payload_hash: hash,
                len,
            },
            JsonEvent::Originate { msg, pos } => HistoryEvent::Originate {
                msg: msg_from_json(msg)?,
                position: position_from_json(pos)?,
            },
            JsonEvent::ConfReg {
                ring,
                members,
                joined,
                left,
            } => HistoryEvent::ConfReg {
                ring: ring_from_json(ring)?,
                members: nodes_from_json(members),
                joined: nodes_from_json(joined),
                left: nodes_from_json(left),
            },
            JsonEvent::ConfTrans {
                old_ring,
                new_ring,
                members,
                left,
            } => HistoryEvent::ConfTrans {
                old_ring: ring_from_json(old_ring)?,
                new_ring: ring_from_json(new_ring)?,
                members: nodes_from_json(members),
                left: nodes_from_json(left),
            },
            JsonEvent::Deliver {
                msg,
                guarantee,
                pos,
                hash,
                len,
            } => HistoryEvent::Deliver {
                msg: msg_from_json(msg)?,
                guarantee: guarantee_from_json(guarantee)?,
                position: position_from_json(pos)?,
                payload_hash: hash,
                len,
            },
        };
        Ok(Record {
            time: Instant::from_nanos(record.t),
            process: ProcessId {
                node: NodeId(record.node),
                incarnation: record.inc,
            },
            event,
        })
    }
}

impl History {
    /// Reads the JSON lines of several recorded logs (one per node, each holding all its
    /// incarnations) into one history ordered by time; each log keeps its own order. A line
    /// cut short by a `kill -9` (the last line, or one followed by a crash marker) is ignored;
    /// any other bad line is an error naming it.
    pub fn from_json_logs(logs: &[impl AsRef<std::path::Path>]) -> io::Result<History> {
        let mut records = Vec::new();
        for path in logs {
            let path = path.as_ref();
            let file = std::fs::File::open(path).map_err(|error| {
                io::Error::new(error.kind(), format!("{}: {error}", path.display()))
            })?;
            let lines: Vec<String> = io::BufReader::new(file)
                .lines()
                .collect::<io::Result<_>>()?;
            let mut cut_short = None;
            for (number, line) in lines.iter().enumerate() {
                if line.is_empty() {
                    continue;
                }
                match Record::from_json_line(line) {
                    Ok(record) => {
                        // A line cut short by a kill is followed by the crash marker only.
                        if let Some(error) = cut_short.take()
                            && record.event != HistoryEvent::Crash
                        {
                            return Err(error);
                        }
                        records.push(record);
                    }
                    Err(error) => {
                        let error = invalid(format!("{}:{}: {error}", path.display(), number + 1));
                        if let Some(earlier) = cut_short.replace(error) {
                            return Err(earlier);
                        }
                    }
                }
            }
        }
        // A stable sort keeps each log's order among equal times.
        records.sort_by_key(|record| record.time);
        Ok(History { records })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_header_round_trips() {
        let id = AppMessageId {
            origin: ProcessId {
                node: NodeId(4),
                incarnation: 2,
            },
            counter: 99,
        };
        let mut payload = Vec::new();
        write_app_header(id, &mut payload);
        payload.extend_from_slice(b"rest");
        assert_eq!(app_id(&payload), Some(id));
        assert_eq!(app_id(&payload[..10]), None);
        assert_eq!(app_id(&[0; 32]), None);
        assert_ne!(payload_hash(b"a"), payload_hash(b"b"));
        assert_ne!(payload_hash(b"a"), payload_hash(b"a\0"));
        assert_ne!(
            payload_hash(&[1; 9]),
            payload_hash(&[1, 1, 1, 1, 1, 1, 1, 1, 2])
        );
    }

    #[test]
    fn every_event_round_trips_through_json() {
        let process = ProcessId {
            node: NodeId(3),
            incarnation: 1,
        };
        let msg = AppMessageId {
            origin: process,
            counter: 7,
        };
        let ring = RingId::new(NodeId(1), 12);
        let position = Position {
            ring,
            seq: 40,
            index: 2,
        };
        let events = vec![
            HistoryEvent::Start,
            HistoryEvent::Submit {
                msg,
                guarantee: Guarantee::Safe,
                payload_hash: u64::MAX,
                len: 20,
            },
            HistoryEvent::Originate { msg, position },
            HistoryEvent::ConfTrans {
                old_ring: RingId::new(NodeId(2), 8),
                new_ring: ring,
                members: vec![NodeId(2), NodeId(3)],
                left: vec![NodeId(5)],
            },
            HistoryEvent::ConfReg {
                ring,
                members: vec![NodeId(1), NodeId(2), NodeId(3)],
                joined: vec![NodeId(1)],
                left: vec![],
            },
            HistoryEvent::Deliver {
                msg,
                guarantee: Guarantee::Fifo,
                position,
                payload_hash: 5,
                len: 20,
            },
            HistoryEvent::Crash,
        ];
        for (index, event) in events.into_iter().enumerate() {
            let record = Record {
                time: Instant::from_nanos(1_000 + index as u64),
                process,
                event,
            };
            let mut line = Vec::new();
            record.write_json_line(&mut line).unwrap();
            assert_eq!(line.last(), Some(&b'\n'));
            let text = std::str::from_utf8(&line).unwrap();
            assert_eq!(Record::from_json_line(text.trim_end()).unwrap(), record);
        }
        assert!(Record::from_json_line(r#"{"t":1,"node":1,"inc":0,"event":"nope"}"#).is_err());
        assert!(
            Record::from_json_line(
                r#"{"t":1,"node":1,"inc":0,"event":"submit","msg":[1,0,1],"guarantee":9,"hash":0,"len":1}"#
            )
            .is_err()
        );
    }
}
