//! Buffers at the Python edge: [`PyMessage`], the read-only delivery that Python reads through
//! the buffer protocol without a copy; [`PyZcbBuffer`], a writable send buffer in shared memory;
//! and [`InputBuffer`], any buffer-protocol object handed to a send, copied once into the request
//! ring.
#![allow(
    unsafe_code,
    reason = "the buffer protocol (bf_getbuffer) and borrowing Python buffers need raw pointers"
)]

use std::borrow::Cow;
use std::ffi::{c_int, c_void};
use std::ops::Deref;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyBufferError, PyTypeError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::MutexExt as _;
use pyo3::types::{PyBytes, PyMemoryView, PyString};

use crate::cpg::ZcbBuffer;
use crate::error::Error;

/// A delivered message: a read-only, immutable buffer.
///
/// `bytes(msg)` copies it out; `memoryview(msg)`, `numpy.frombuffer(msg)` and
/// `struct.unpack_from(fmt, msg)` read it in place. Views stay valid as long as they live. It
/// compares equal to any buffer with the same bytes and hashes like `bytes`. A message is a view
/// of the node's shared event ring and holds its ring space while it (or a view) lives: keep
/// `bytes(msg)` if you store it.
//
// The payload is anything that derefs to bytes and is `Send` ([`PyMessage::from_view`]: a
// pinned view of the event ring) or a `Bytes` ([`PyMessage::from_bytes`]).
#[pyclass(frozen, name = "Message", module = "totemcast")]
pub(crate) struct PyMessage {
    payload: Bytes,
}

/// Adapts an owner that derefs to bytes to what [`Bytes::from_owner`] takes.
struct DerefOwner<P>(P);

impl<P: Deref<Target = [u8]>> AsRef<[u8]> for DerefOwner<P> {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl PyMessage {
    /// A message over `payload` (no copy).
    pub(crate) fn from_bytes(payload: Bytes) -> PyMessage {
        PyMessage { payload }
    }

    /// A message over any owner of bytes, e.g. a pinned view of a ring record; the owner is
    /// dropped (releasing what it pins) when Python drops the message and every view of it.
    #[allow(
        dead_code,
        reason = "for the pinned ring views the client will deliver"
    )]
    pub(crate) fn from_view<P>(view: P) -> PyMessage
    where
        P: Deref<Target = [u8]> + Send + 'static,
    {
        PyMessage {
            payload: Bytes::from_owner(DerefOwner(view)),
        }
    }
}

#[pymethods]
impl PyMessage {
    /// Exports the payload read-only (`PyBUF_WRITABLE` requests fail with `BufferError`).
    #[allow(clippy::needless_pass_by_value, reason = "the signature PyO3 expects")]
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        let payload = &slf.get().payload;
        let len = ffi::Py_ssize_t::try_from(payload.len())
            .map_err(|_| PyTypeError::new_err("message too large for a buffer"))?;
        // SAFETY: `view` is the caller's Py_buffer to fill (CPython passes a valid pointer).
        // The exported memory is the immutable payload of a frozen object: nothing writes or
        // frees it while the object lives, and `PyBuffer_FillInfo` stores a new reference to the
        // object in `view.obj`, so it lives as long as the view. `readonly = 1` makes the call
        // refuse writable requests, so the `*mut` cast never serves a write.
        let status = unsafe {
            ffi::PyBuffer_FillInfo(
                view,
                slf.as_ptr(),
                payload.as_ptr().cast_mut().cast::<c_void>(),
                len,
                1,
                flags,
            )
        };
        if status == -1 {
            return Err(PyErr::fetch(slf.py()));
        }
        Ok(())
    }

    /// PEP 688 from Python (`memoryview(self)`): read-only, so `PyBUF_WRITABLE` is refused.
    fn __buffer__<'py>(slf: &Bound<'py, Self>, flags: c_int) -> PyResult<Bound<'py, PyMemoryView>> {
        if flags & ffi::PyBUF_WRITABLE != 0 {
            return Err(PyBufferError::new_err("a Message is read-only"));
        }
        PyMemoryView::from(slf.as_any())
    }

    fn __len__(&self) -> usize {
        self.payload.len()
    }

    fn __bytes__<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.payload)
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let py = other.py();
        let equal = if let Ok(other) = other.cast::<PyMessage>() {
            other.get().payload == self.payload
        } else if let Ok(other) = other.cast::<PyBytes>() {
            other.as_bytes() == &self.payload[..]
        } else if let Ok(input) = InputBuffer::get(other) {
            input.len() == self.payload.len() && input.to_vec(py)? == self.payload[..]
        } else {
            return Ok(py.NotImplemented());
        };
        Ok(equal.into_pyobject(py)?.to_owned().into_any().unbind())
    }

    fn __hash__(&self, py: Python<'_>) -> PyResult<isize> {
        PyBytes::new(py, &self.payload).hash()
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        const SHOWN: usize = 32;
        let head = PyBytes::new(py, &self.payload[..self.payload.len().min(SHOWN)]);
        let head = head.repr()?;
        Ok(if self.payload.len() > SHOWN {
            format!("Message({head}... {} bytes)", self.payload.len())
        } else {
            format!("Message({head})")
        })
    }

    /// `bytes(self).decode(encoding, errors)`.
    #[pyo3(signature = (encoding = "utf-8", errors = "strict"))]
    fn decode<'py>(
        &self,
        py: Python<'py>,
        encoding: &str,
        errors: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        if (encoding == "utf-8" || encoding == "utf8")
            && errors == "strict"
            && let Ok(text) = std::str::from_utf8(&self.payload)
        {
            return Ok(PyString::new(py, text).into_any());
        }
        self.__bytes__(py)
            .call_method1("decode", (encoding, errors))
    }
}

/// The bytes of a Python object with the buffer protocol (`bytes`, `bytearray`, `memoryview`,
/// `array.array`, numpy arrays, [`PyMessage`]...), read under the GIL.
pub(crate) enum InputBuffer<'py> {
    /// `bytes`: read directly.
    Bytes(Bound<'py, PyBytes>),
    /// Anything else, as unsigned bytes (C-contiguous if its items are not bytes).
    Buffer(PyBuffer<u8>),
}

impl<'py> InputBuffer<'py> {
    /// Borrows `object`'s buffer. `TypeError` if it has none, `BufferError` if its items are not
    /// bytes and it is not C-contiguous.
    pub(crate) fn get(object: &Bound<'py, PyAny>) -> PyResult<InputBuffer<'py>> {
        if let Ok(bytes) = object.cast::<PyBytes>() {
            return Ok(InputBuffer::Bytes(bytes.clone()));
        }
        if object.is_instance_of::<PyString>() {
            return Err(PyTypeError::new_err(
                "a message must be a bytes-like object, not str (encode it first)",
            ));
        }
        match PyBuffer::<u8>::get(object) {
            Ok(buffer) => Ok(InputBuffer::Buffer(buffer)),
            Err(error) => {
                // Items of another type (numpy float arrays, array('i')...): their raw bytes.
                let Ok(view) = PyMemoryView::from(object) else {
                    return Err(PyTypeError::new_err(format!(
                        "a message must be a bytes-like object (buffer protocol), not {}",
                        object.get_type().name()?
                    )));
                };
                let bytes = view.call_method1("cast", ("B",)).map_err(|_| error)?;
                Ok(InputBuffer::Buffer(PyBuffer::<u8>::get(&bytes)?))
            }
        }
    }

    /// Length in bytes.
    pub(crate) fn len(&self) -> usize {
        match self {
            InputBuffer::Bytes(bytes) => bytes.as_bytes().len(),
            InputBuffer::Buffer(buffer) => buffer.item_count(),
        }
    }

    /// The bytes: borrowed when the object is `bytes` or C-contiguous, else copied.
    ///
    /// The borrow must end before the GIL is released or Python code runs (both could change
    /// the bytes or free them), so callers use it for one copy into the ring, GIL held.
    pub(crate) fn as_slice(&self, py: Python<'_>) -> PyResult<Cow<'_, [u8]>> {
        match self {
            InputBuffer::Bytes(bytes) => Ok(Cow::Borrowed(bytes.as_bytes())),
            InputBuffer::Buffer(buffer) => match buffer.as_slice_ptr() {
                Some(pointer) => {
                    // SAFETY: the pointer and length describe the exporter's C-contiguous
                    // memory (`as_slice_ptr` checked contiguity), which stays valid while the
                    // buffer is exported, i.e. while `self` is borrowed. It is not written while
                    // the slice lives: the slice is used with the GIL held and no Python code
                    // running (an exported `bytearray` cannot even be resized).
                    Ok(Cow::Borrowed(unsafe { pointer.as_ref() }))
                }
                None => Ok(Cow::Owned(buffer.to_vec(py)?)),
            },
        }
    }

    /// Copies the bytes into `out`, which must be exactly [`InputBuffer::len`] long.
    pub(crate) fn copy_to(&self, py: Python<'_>, out: &mut [u8]) -> PyResult<()> {
        match self {
            InputBuffer::Bytes(bytes) => {
                out.copy_from_slice(bytes.as_bytes());
                Ok(())
            }
            InputBuffer::Buffer(buffer) => buffer.copy_to_slice(py, out),
        }
    }

    fn to_vec(&self, py: Python<'_>) -> PyResult<Vec<u8>> {
        let mut out = vec![0; self.len()];
        self.copy_to(py, &mut out)?;
        Ok(out)
    }
}

/// A send buffer in the handle's shared memory, from `Handle.zcb_alloc`.
///
/// Write it in place (`memoryview(buf)[:n] = data`), release the views, then
/// `handle.zcb_mcast_joined(guarantee, buf, n)` sends it without a copy by the library. It can
/// be sent again; a new view waits until the node has read the last send. `zcb_free(buf)` or
/// dropping it frees it.
#[pyclass(frozen, name = "ZcbBuffer", module = "totemcast.cpg")]
pub(crate) struct PyZcbBuffer {
    /// `None` once freed.
    inner: Mutex<Option<ZcbBuffer>>,
    /// Buffer-protocol views alive (sends and frees wait for none).
    exports: AtomicUsize,
    len: usize,
}

impl PyZcbBuffer {
    pub(crate) fn new(buffer: ZcbBuffer) -> PyZcbBuffer {
        PyZcbBuffer {
            len: buffer.len(),
            inner: Mutex::new(Some(buffer)),
            exports: AtomicUsize::new(0),
        }
    }

    fn check_no_views(&self, what: &str) -> PyResult<()> {
        if self.exports.load(Ordering::Acquire) != 0 {
            return Err(PyBufferError::new_err(format!(
                "release the memoryviews of this buffer before {what} it"
            )));
        }
        Ok(())
    }

    /// Runs `f` on the buffer (views must be released first); `InvalidParamError` once freed.
    pub(crate) fn with<T>(
        &self,
        py: Python<'_>,
        what: &str,
        f: impl FnOnce(&mut ZcbBuffer) -> PyResult<T>,
    ) -> PyResult<T> {
        self.check_no_views(what)?;
        let mut inner = self
            .inner
            .lock_py_attached(py)
            .unwrap_or_else(PoisonError::into_inner);
        let buffer = inner.as_mut().ok_or_else(freed)?;
        f(buffer)
    }

    /// Frees the block (`cpg_zcb_free`).
    pub(crate) fn free(&self, py: Python<'_>) -> PyResult<()> {
        self.check_no_views("freeing")?;
        let buffer = self
            .inner
            .lock_py_attached(py)
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .ok_or_else(freed)?;
        drop(buffer);
        Ok(())
    }
}

fn freed() -> PyErr {
    Error::InvalidParam("the zero-copy buffer was freed".into()).into()
}

#[pymethods]
impl PyZcbBuffer {
    /// Exports the block writable; waits first until the node has read the last send of it.
    #[allow(clippy::needless_pass_by_value, reason = "the signature PyO3 expects")]
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let mut inner = this
            .inner
            .lock_py_attached(py)
            .unwrap_or_else(PoisonError::into_inner);
        let buffer = inner.as_mut().ok_or_else(freed)?;
        py.detach(|| buffer.wait_until_read())?;
        let len = ffi::Py_ssize_t::try_from(buffer.len())
            .map_err(|_| PyTypeError::new_err("buffer too large"))?;
        let pointer = buffer.as_mut_ptr();
        // SAFETY: `view` is the caller's Py_buffer to fill. The block lies in the mapped arena,
        // which the buffer keeps mapped; it stays allocated while any view lives, because
        // freeing and sending refuse while `exports` is not zero and `PyBuffer_FillInfo` keeps
        // a reference to this object in `view.obj`. The node has finished reading the block
        // (waited above) and reads it again only after a send, which waits for the views to go.
        let status = unsafe {
            ffi::PyBuffer_FillInfo(view, slf.as_ptr(), pointer.cast::<c_void>(), len, 0, flags)
        };
        if status == -1 {
            return Err(PyErr::fetch(py));
        }
        this.exports.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {
        self.exports.fetch_sub(1, Ordering::AcqRel);
    }

    /// PEP 688 from Python (`memoryview(self)`, writable).
    fn __buffer__<'py>(slf: &Bound<'py, Self>, flags: c_int) -> PyResult<Bound<'py, PyMemoryView>> {
        let _ = flags;
        PyMemoryView::from(slf.as_any())
    }

    fn __len__(&self) -> usize {
        self.len
    }

    fn __repr__(&self) -> String {
        let state = if self
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
        {
            ""
        } else {
            " freed"
        };
        format!("<totemcast.cpg.ZcbBuffer {} bytes{state}>", self.len)
    }
}
