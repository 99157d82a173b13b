//! The node's small durable state (Corosync's `ringid_*` file, extended): the highest ring seq
//! it took part in, its incarnation count and its last crypto session. Ring ids must never
//! repeat for a node and sessions must grow, across restarts; losing this file is survivable
//! (see [`NodeState::next_start`]) but weakens both, so it is written atomically.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ids::NodeId;

/// What survives a restart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    /// The highest ring seq this node committed to.
    pub ring_seq: u64,
    /// Starts of this node so far (the history's incarnation of the current run).
    pub incarnation: u32,
    /// The crypto session of the current run (sessions grow across restarts).
    pub session: u64,
}

impl NodeState {
    /// The state of a new run after `previous` (None: no state file): the ring seq is advanced
    /// by one so that a quickly restarted node cannot reuse the id of the ring it just left
    /// (Corosync 3675dace); the session grows past the wall clock and the previous one.
    #[must_use]
    pub fn next_start(previous: Option<NodeState>, unix_millis: u64) -> NodeState {
        match previous {
            Some(previous) => NodeState {
                ring_seq: previous.ring_seq + 1,
                incarnation: previous.incarnation + 1,
                session: crate::node::crypto::next_session(Some(previous.session), unix_millis),
            },
            // Without the file, the wall clock stands in, in microseconds: ring seqs grow by
            // 4 per ring and no ring forms in 4 µs, so seeding them from the clock keeps them
            // above any ring this node took part in before, unless the clock went back.
            None => NodeState {
                ring_seq: unix_millis.saturating_mul(1000),
                incarnation: 0,
                session: crate::node::crypto::next_session(None, unix_millis),
            },
        }
    }
}

/// The state file of one node.
#[derive(Clone, Debug)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// The file for `node` in `state_dir` (created if missing).
    pub fn open(state_dir: &Path, node: NodeId) -> io::Result<StateFile> {
        fs::create_dir_all(state_dir).map_err(|error| annotate(state_dir, &error))?;
        Ok(StateFile {
            path: state_dir.join(format!("node-{}.state", node.0)),
        })
    }

    /// Its path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored state, `None` when there is no file yet.
    pub fn load(&self) -> io::Result<Option<NodeState>> {
        match fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|error| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: {error} (delete it to start afresh)",
                        self.path.display()
                    ),
                )
            }),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(annotate(&self.path, &error)),
        }
    }

    /// Stores `state` durably: a temporary file, fsync, rename over the old one, fsync of the
    /// directory. A crash at any point leaves the old or the new state, never a torn one.
    pub fn store(&self, state: &NodeState) -> io::Result<()> {
        let temporary = self.path.with_extension("state.tmp");
        let mut file =
            fs::File::create(&temporary).map_err(|error| annotate(&temporary, &error))?;
        let mut text = serde_json::to_vec(state).map_err(io::Error::from)?;
        text.push(b'\n');
        file.write_all(&text)?;
        file.sync_all()?;
        fs::rename(&temporary, &self.path).map_err(|error| annotate(&self.path, &error))?;
        if let Some(dir) = self.path.parent() {
            fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

fn annotate(path: &Path, error: &io::Error) -> io::Error {
    io::Error::new(error.kind(), format!("{}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_survives_and_grows() {
        let dir = std::env::temp_dir().join(format!("totemcast-state-{}", std::process::id()));
        let file = StateFile::open(&dir, NodeId(3)).unwrap();
        assert_eq!(file.load().unwrap(), None);
        let first = NodeState::next_start(None, 1_000);
        assert_eq!(first.incarnation, 0);
        file.store(&first).unwrap();
        let mut stored = file.load().unwrap().unwrap();
        assert_eq!(stored, first);
        stored.ring_seq = 5_000;
        file.store(&stored).unwrap();
        // The clock went back: the session still grows, the ring seq passes the last ring.
        let second = NodeState::next_start(file.load().unwrap(), 10);
        assert_eq!(second.incarnation, 1);
        assert_eq!(second.ring_seq, 5_001);
        assert_eq!(second.session, 1_001);
        std::fs::write(file.path(), b"{not json").unwrap();
        let error = file.load().unwrap_err();
        assert!(error.to_string().contains("delete it"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
