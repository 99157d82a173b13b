//! An embedded node ([`Node`]): the same driver as `totemcast node`, on a thread of the
//! application. Its local handles reach it through socket pairs handed to the driver (no
//! filesystem socket, the same handshake, rings and services); other processes can still
//! connect through its `[ipc] socket`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;

use super::config_file::{self, FileConfig};
use super::driver::{self, Command, NodeOptions, Stop};
use crate::error::{Error, Result};
use crate::ids::NodeId;
use crate::{cpg, evs};

/// A node running on a thread of this process; dropping it leaves the ring and stops it.
#[derive(Debug)]
pub struct Node {
    nodeid: NodeId,
    socket: PathBuf,
    commands: mpsc::Sender<Command>,
    waker: Arc<mio::Waker>,
    thread: Option<JoinHandle<std::result::Result<(), String>>>,
}

impl Node {
    /// Starts the node of `config` (this machine's node of its node list, or `nodeid`).
    /// Returns once it runs; a bad configuration, an unreadable key or a taken port is an
    /// error here (`CS_ERR_INVALID_PARAM` for the configuration, `CS_ERR_LIBRARY` otherwise).
    pub fn start(config: FileConfig, nodeid: Option<u32>) -> Result<Node> {
        let me = config
            .select_local_node(nodeid)
            .map_err(|error| Error::InvalidParam(error.to_string().into()))?;
        let socket = config.ipc.socket.clone();
        let options = NodeOptions {
            nodeid: Some(me.0),
            ..NodeOptions::default()
        };
        let (commands, receiver) = mpsc::channel();
        let (waker_sender, waker_receiver) = mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name(format!("totemcast-node-{}", me.0))
            .spawn(move || {
                let stop = Stop::Commands {
                    commands: receiver,
                    waker: waker_sender,
                };
                driver::run_embedded(config, &options, stop)
            })
            .map_err(|error| Error::Library(format!("cannot start a thread: {error}").into()))?;
        let Ok(waker) = waker_receiver.recv() else {
            // The driver stopped before running: its error tells why.
            let why = match thread.join() {
                Ok(Err(error)) => error,
                Ok(Ok(())) => "the node stopped at once".into(),
                Err(_) => "the node's thread panicked".into(),
            };
            return Err(Error::Library(why.into()));
        };
        Ok(Node {
            nodeid: me,
            socket,
            commands,
            waker,
            thread: Some(thread),
        })
    }

    /// Starts the node of the configuration file at `path`.
    pub fn from_file(path: impl AsRef<Path>, nodeid: Option<u32>) -> Result<Node> {
        let config = config_file::load(path.as_ref())
            .map_err(|error| Error::InvalidParam(error.to_string().into()))?;
        Node::start(config, nodeid)
    }

    /// Starts the node of a configuration given as TOML text (relative paths in it are taken
    /// from the current directory).
    pub fn from_toml(text: &str, nodeid: Option<u32>) -> Result<Node> {
        let config = config_file::parse(text, Path::new("<config>"))
            .map_err(|error| Error::InvalidParam(error.to_string().into()))?;
        Node::start(config, nodeid)
    }

    /// This node's id.
    #[must_use]
    pub fn nodeid(&self) -> NodeId {
        self.nodeid
    }

    /// The socket other processes reach this node on.
    #[must_use]
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// A CPG handle served by this node without a socket.
    pub fn cpg(&self) -> Result<cpg::Handle> {
        self.cpg_with(cpg::Options::default())
    }

    /// A CPG handle with `options` (`cpg_model_initialize`).
    pub fn cpg_with(&self, options: cpg::Options) -> Result<cpg::Handle> {
        cpg::Handle::connect_stream(self.local_stream()?, options)
    }

    /// An EVS handle served by this node without a socket.
    pub fn evs(&self) -> Result<evs::Handle> {
        evs::Handle::connect_stream(self.local_stream()?)
    }

    /// The node's status (as `totemcast status --json` shows it).
    pub fn status(&self) -> Result<serde_json::Value> {
        driver::status(&self.socket)
            .map_err(|error| Error::Library(format!("status: {error}").into()))
    }

    /// Leaves the ring (the others reconfigure at once) and stops the node.
    pub fn stop(mut self) -> Result<()> {
        self.shut_down()
    }

    fn shut_down(&mut self) -> Result<()> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        let _ = self.commands.send(Command::Stop);
        let _ = self.waker.wake();
        match thread.join() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(Error::Library(error.into())),
            Err(_) => Err(Error::Library("the node's thread panicked".into())),
        }
    }

    /// One end of a new socket pair whose other end the driver serves.
    pub(crate) fn local_stream(&self) -> Result<std::os::unix::net::UnixStream> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()
            .map_err(|error| Error::Library(format!("socket pair: {error}").into()))?;
        self.commands
            .send(Command::Connect(theirs))
            .map_err(|_| Error::Library("the node has stopped".into()))?;
        self.waker
            .wake()
            .map_err(|error| Error::Library(format!("waking the node: {error}").into()))?;
        Ok(ours)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Err(error) = self.shut_down() {
            tracing::error!(%error, "the embedded node stopped with an error");
        }
    }
}
