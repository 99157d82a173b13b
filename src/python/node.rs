//! `totemcast.Node`: [`crate::Node`] for Python, an embedded node on a thread of this process.
//!
//! The configuration comes as a path, as TOML text or as a dict (converted to TOML here, so
//! every form goes through the same parser and its errors name the same keys). Starting,
//! stopping and asking for the status release the GIL; the node's thread never needs it.
//! `cpg.Handle(node=...)` and `evs.Handle(node=...)` reach the node through socket pairs
//! ([`PyNode::stream`]).

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::sync::MutexExt as _;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use crate::Node;
use crate::error::Error;
use crate::node::config_file;

/// An embedded totemcast node: the node of `config` runs on a thread of this process.
///
/// The same node as `totemcast node`, with its `[ipc] socket` for other processes;
/// `cpg.Handle(node=n)` and `evs.Handle(node=n)` talk to it through a socket pair. A node is a
/// context manager: leaving the block stops it, a clean leave (the other nodes form their next
/// ring at once). Dropping it stops it too. Handles of a stopped node get LibraryError.
///
/// `config`: a path (`os.PathLike`, or a `str` without a newline), TOML text (a `str` with a
/// newline), or a dict shaped like the TOML document (values bool, int, float, str, path, list,
/// dict). `nodeid` picks the `[[node]]` entry; without it, the one whose address is local.
///
/// Raises InvalidParamError (a bad configuration; the message names the key), LibraryError (it
/// cannot start: a taken port or socket, an unreadable authkey), TypeError.
#[pyclass(frozen, name = "Node", module = "totemcast")]
pub(crate) struct PyNode {
    /// `None` once stopped.
    node: Mutex<Option<Node>>,
    nodeid: u32,
    socket: PathBuf,
}

/// Where the configuration comes from.
enum Source {
    File(PathBuf),
    Text(String, &'static str),
}

impl Source {
    fn from_python(config: &Bound<'_, PyAny>) -> PyResult<Source> {
        if let Ok(dict) = config.cast::<PyDict>() {
            let table = table_of(dict, "")?;
            let text = toml::to_string(&table).map_err(|error| {
                Error::InvalidParam(format!("<dict>: cannot write it as TOML: {error}").into())
            })?;
            return Ok(Source::Text(text, "<dict>"));
        }
        if let Ok(text) = config.cast::<PyString>() {
            let text = text.to_str()?;
            if text.contains('\n') {
                return Ok(Source::Text(text.to_owned(), "<config>"));
            }
            return Ok(Source::File(PathBuf::from(text)));
        }
        if config.hasattr("__fspath__")? {
            return Ok(Source::File(config.extract::<PathBuf>()?));
        }
        Err(PyTypeError::new_err(format!(
            "config is a path (str or os.PathLike), TOML text (a str with a newline) or a dict, \
             not {}",
            config.get_type().name()?
        )))
    }

    fn start(self, nodeid: Option<u32>) -> Result<Node, Error> {
        let config = match &self {
            Source::File(path) => config_file::load(path),
            Source::Text(text, origin) => config_file::parse(text, Path::new(origin)),
        }
        .map_err(|error| {
            let mut message = error.as_str().to_owned();
            // Line numbers of the TOML written from a dict mean nothing to its author.
            if let Some(rest) = message.strip_prefix("<dict>:")
                && let Some((line, rest)) = rest.split_once(':')
                && line.bytes().all(|b| b.is_ascii_digit())
            {
                message = format!("<dict>:{rest}");
            }
            Error::InvalidParam(message.into())
        })?;
        Node::start(config, nodeid).map_err(|error| match error {
            // The configuration's messages speak of the command line's flag.
            Error::InvalidParam(message) => {
                Error::InvalidParam(message.replace("--nodeid", "nodeid").into())
            }
            other => other,
        })
    }
}

/// A TOML table of a dict: str keys; `at` is the dotted path of the dict, for errors.
fn table_of(dict: &Bound<'_, PyDict>, at: &str) -> PyResult<toml::Table> {
    let mut table = toml::Table::new();
    for (key, value) in dict.iter() {
        let Ok(key) = key.cast::<PyString>() else {
            return Err(Error::InvalidParam(
                format!(
                    "<dict>: {}: keys are str, not {}",
                    if at.is_empty() { "(top level)" } else { at },
                    key.get_type().name()?
                )
                .into(),
            )
            .into());
        };
        let key = key.to_str()?;
        let path = if at.is_empty() {
            key.to_owned()
        } else {
            format!("{at}.{key}")
        };
        table.insert(key.to_owned(), value_of(&value, &path)?);
    }
    Ok(table)
}

/// A TOML value of a Python value: bool, int, float, str, os.PathLike (as str), list or
/// tuple, dict.
fn value_of(value: &Bound<'_, PyAny>, at: &str) -> PyResult<toml::Value> {
    if let Ok(flag) = value.cast::<PyBool>() {
        return Ok(toml::Value::Boolean(flag.is_true()));
    }
    if value.cast::<PyInt>().is_ok() {
        let number = value.extract::<i64>().map_err(|_| {
            Error::InvalidParam(format!("<dict>: {at}: {value} is out of range").into())
        })?;
        return Ok(toml::Value::Integer(number));
    }
    if let Ok(number) = value.cast::<PyFloat>() {
        return Ok(toml::Value::Float(number.value()));
    }
    if let Ok(text) = value.cast::<PyString>() {
        return Ok(toml::Value::String(text.to_str()?.to_owned()));
    }
    if let Ok(dict) = value.cast::<PyDict>() {
        return Ok(toml::Value::Table(table_of(dict, at)?));
    }
    if value.cast::<PyList>().is_ok() || value.cast::<PyTuple>().is_ok() {
        let items = value
            .try_iter()?
            .enumerate()
            .map(|(i, item)| value_of(&item?, &format!("{at}[{i}]")))
            .collect::<PyResult<Vec<_>>>()?;
        return Ok(toml::Value::Array(items));
    }
    if value.hasattr("__fspath__")? {
        let path = value.extract::<PathBuf>()?;
        let Some(path) = path.to_str() else {
            return Err(
                Error::InvalidParam(format!("<dict>: {at}: the path is not UTF-8").into()).into(),
            );
        };
        return Ok(toml::Value::String(path.to_owned()));
    }
    Err(Error::InvalidParam(
        format!(
            "<dict>: {at}: a {} is not a configuration value (bool, int, float, str, path, \
             list, dict)",
            value.get_type().name()?
        )
        .into(),
    )
    .into())
}

impl PyNode {
    /// One end of a new socket pair the node serves (for a local handle; never waits).
    pub(crate) fn stream(&self, py: Python<'_>) -> PyResult<UnixStream> {
        let guard = self.lock(py);
        let node = guard.as_ref().ok_or_else(stopped)?;
        Ok(node.local_stream()?)
    }

    /// The stream for a handle made with `node=node` (and `socket=socket`, which must be
    /// None then).
    pub(crate) fn stream_of(
        node: &Bound<'_, PyAny>,
        socket: Option<&PathBuf>,
    ) -> PyResult<UnixStream> {
        let node = node.cast::<PyNode>().map_err(|_| {
            PyTypeError::new_err(format!(
                "node must be a totemcast.Node, not {}",
                node.get_type()
                    .name()
                    .map_or_else(|_| "?".to_owned(), |name| name.to_string())
            ))
        })?;
        if socket.is_some() {
            return Err(Error::InvalidParam(
                "give node= or socket=, not both (a handle talks to one node)".into(),
            )
            .into());
        }
        node.get().stream(node.py())
    }

    /// Locks the node (GIL released while waiting for the lock).
    fn lock<'a>(&'a self, py: Python<'_>) -> MutexGuard<'a, Option<Node>> {
        self.node
            .lock_py_attached(py)
            .unwrap_or_else(PoisonError::into_inner)
    }
}

fn stopped() -> PyErr {
    Error::Library("the node is stopped".into()).into()
}

#[pymethods]
impl PyNode {
    #[new]
    #[pyo3(signature = (config, nodeid = None))]
    fn new(py: Python<'_>, config: &Bound<'_, PyAny>, nodeid: Option<u32>) -> PyResult<PyNode> {
        let source = Source::from_python(config)?;
        let node = py.detach(|| source.start(nodeid))?;
        Ok(PyNode {
            nodeid: node.nodeid().0,
            socket: node.socket().to_path_buf(),
            node: Mutex::new(Some(node)),
        })
    }

    /// This node's id.
    #[getter]
    fn nodeid(&self) -> u32 {
        self.nodeid
    }

    /// The socket other processes reach this node on (`[ipc] socket`).
    #[getter]
    fn socket(&self) -> std::ffi::OsString {
        self.socket.clone().into_os_string()
    }

    /// Whether the node runs (it has not been stopped).
    #[getter]
    fn running(&self, py: Python<'_>) -> bool {
        self.lock(py).is_some()
    }

    /// The node's status as a dict, as `totemcast status --json` shows it (`state`, `members`,
    /// `ring_id`, `counters`, ...). Raises LibraryError once stopped.
    fn status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let text = {
            let guard = self.lock(py);
            let node = guard.as_ref().ok_or_else(stopped)?;
            py.detach(|| node.status().map(|status| status.to_string()))?
        };
        py.import("json")?.call_method1("loads", (text,))
    }

    /// Leaves the ring cleanly and stops the node (its handles then get LibraryError); nothing
    /// if it is stopped already.
    fn stop(&self, py: Python<'_>) -> PyResult<()> {
        let node = self.lock(py).take();
        if let Some(node) = node {
            py.detach(|| node.stop())?;
        }
        Ok(())
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.stop(py)?;
        Ok(false)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let state = if self.running(py) {
            "running"
        } else {
            "stopped"
        };
        format!(
            "<totemcast.Node nodeid={} socket='{}' {state}>",
            self.nodeid,
            self.socket.display()
        )
    }
}
