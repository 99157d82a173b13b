//! The node's local socket (the `[ipc] socket` path): a client sends one JSON request line and
//! reads one JSON answer line. `totemcast status` uses it; the IPC handshake of the client
//! library will share the socket.

use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use mio::net::{UnixListener, UnixStream};
use serde::{Deserialize, Serialize};

/// A request on the control socket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    /// Ring id, members, state and counters.
    Status,
    /// CPG groups and their members (`totemcast cpgtool`).
    Groups,
    /// Opens an IPC session (the client library's handshake; the answer carries the rings).
    Connect {
        /// The client's IPC protocol version.
        version: u32,
        /// The service (`"cpg"`).
        service: String,
        /// CPG: deliver the totem configuration at once.
        #[serde(default)]
        initial_totem_conf: bool,
    },
    /// Sets the rate of the test workload (`totemcast node --workload`); 0 stops it.
    Workload {
        /// Messages per second.
        rate: u32,
    },
}

/// Most bytes of a request line; longer requests are refused.
const REQUEST_MAX: usize = 4096;
/// Most control connections open at once; further ones are closed at accept.
const CONNECTIONS_MAX: usize = 64;

/// One accepted connection waiting for its request line.
#[derive(Debug)]
pub struct Connection {
    stream: UnixStream,
    request: Vec<u8>,
}

/// What reading a connection gave.
#[derive(Debug)]
pub enum ReadOutcome {
    /// Not complete yet.
    Pending,
    /// A complete request.
    Request(Request),
    /// A bad request: answer with this error and close.
    Invalid(String),
    /// The peer went away.
    Closed,
}

impl Connection {
    /// A connection on a stream made in this process (an embedded node's local handle).
    #[must_use]
    pub fn local(stream: std::os::unix::net::UnixStream) -> Connection {
        Connection {
            stream: UnixStream::from_std(stream),
            request: Vec::new(),
        }
    }

    /// Reads what has arrived.
    pub fn read(&mut self) -> ReadOutcome {
        let mut chunk = [0u8; 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return ReadOutcome::Closed,
                Ok(len) => {
                    self.request.extend_from_slice(&chunk[..len]);
                    if let Some(end) = self.request.iter().position(|&b| b == b'\n') {
                        return match serde_json::from_slice(&self.request[..end]) {
                            Ok(request) => ReadOutcome::Request(request),
                            Err(error) => ReadOutcome::Invalid(format!("bad request: {error}")),
                        };
                    }
                    if self.request.len() > REQUEST_MAX {
                        return ReadOutcome::Invalid("request longer than 4096 bytes".into());
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    return ReadOutcome::Pending;
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return ReadOutcome::Closed,
            }
        }
    }

    /// Writes the answer line. The answer is small and the socket buffer empty, so one
    /// non-blocking write normally takes it all; a peer that does not read loses it.
    pub fn answer(&mut self, answer: &serde_json::Value) {
        let mut line = answer.to_string().into_bytes();
        line.push(b'\n');
        let _ = self.stream.write_all(&line);
    }

    /// The stream, handed over to an IPC session.
    #[must_use]
    pub fn into_stream(self) -> UnixStream {
        self.stream
    }

    /// The stream, for (de)registration.
    pub fn stream(&mut self) -> &mut UnixStream {
        &mut self.stream
    }
}

/// The listening socket.
#[derive(Debug)]
pub struct ControlSocket {
    path: PathBuf,
    listener: UnixListener,
}

impl ControlSocket {
    /// Listens on `path`, replacing a stale socket file left by a node that died. A live node
    /// already listening there is an error.
    pub fn bind(path: &Path) -> io::Result<ControlSocket> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{}: another node is running on this socket", path.display()),
            ));
        }
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).map_err(|error| {
            io::Error::new(error.kind(), format!("{}: {error}", path.display()))
        })?;
        // Access control is by peer credentials at connect time, not by file mode.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
        Ok(ControlSocket {
            path: path.to_path_buf(),
            listener,
        })
    }

    /// The listener (register it for readability).
    pub fn listener(&mut self) -> &mut UnixListener {
        &mut self.listener
    }

    /// Accepts the next pending connection, if any, unless `open` connections are already at
    /// the limit (then the new one is closed at once).
    pub fn accept(&mut self, open: usize) -> io::Result<Option<Connection>> {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) if open < CONNECTIONS_MAX => {
                    return Ok(Some(Connection {
                        stream,
                        request: Vec::new(),
                    }));
                }
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Sends `request` to the node listening on `path` and returns its answer (blocking, for
/// command-line tools).
pub fn ask(
    path: &Path,
    request: &Request,
    timeout: std::time::Duration,
) -> io::Result<serde_json::Value> {
    let mut stream = std::os::unix::net::UnixStream::connect(path).map_err(|error| {
        io::Error::new(
            error.kind(),
            format!("cannot reach a node at {}: {error}", path.display()),
        )
    })?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut line = serde_json::to_vec(request).map_err(io::Error::from)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut answer = Vec::new();
    io::BufRead::read_until(&mut io::BufReader::new(stream), b'\n', &mut answer)?;
    serde_json::from_slice(&answer).map_err(|error| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad answer from the node: {error}"),
        )
    })
}
