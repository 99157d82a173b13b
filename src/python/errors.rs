//! `totemcast.CsError` and the `totemcast.Error` exception hierarchy, built from
//! [`ERROR_TABLE`], and the one conversion from [`Error`] to a Python exception.

use std::collections::BTreeMap;

use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

use crate::error::{CsError, ERROR_TABLE, Error, UnknownErrorCode};

/// The exception class of every error code, filled when the module is imported.
static CLASSES: PyOnceLock<BTreeMap<u32, Py<PyType>>> = PyOnceLock::new();

const ERROR_DOC: &str = "Base class of totemcast errors. `code` is the `CsError` of the error; \
                         `Error.from_code(n, message)` makes the exception of code `n`.";

impl From<Error> for PyErr {
    fn from(error: Error) -> PyErr {
        let code = error.code().code();
        let message = error.to_string();
        Python::attach(
            |py| match CLASSES.get(py).and_then(|classes| classes.get(&code)) {
                Some(class) => PyErr::from_type(class.bind(py).clone(), (message,)),
                // Only reachable if Rust code raises before the module finished importing.
                None => PyException::new_err(message),
            },
        )
    }
}

impl From<UnknownErrorCode> for PyErr {
    fn from(error: UnknownErrorCode) -> PyErr {
        PyValueError::new_err(error.to_string())
    }
}

/// `Error.from_code(code, message="")`: the exception instance for a `cs_error_t` code.
#[pyfunction]
#[pyo3(signature = (_cls, code, message = String::new()), text_signature = "(cls, code, message='')")]
fn error_from_code(
    py: Python<'_>,
    _cls: &Bound<'_, PyAny>,
    code: u32,
    message: String,
) -> PyResult<Py<PyAny>> {
    let error = Error::from_code(code, message)?;
    Ok(PyErr::from(error).into_value(py).into_any())
}

/// Raises the Rust error of `code` with `detail`; lets tests see the Rust-to-Python mapping.
#[pyfunction]
fn _raise_error(code: u32, detail: String) -> PyResult<()> {
    Err(Error::from_code(code, detail)?.into())
}

/// Returns `(code, c_name, python_class, python_builtin, description)` for every error code.
#[pyfunction]
fn error_table() -> Vec<(u32, &'static str, &'static str, &'static str, &'static str)> {
    ERROR_TABLE
        .iter()
        .map(|row| {
            (
                row.code,
                row.c_name,
                row.python_class,
                row.python_builtin,
                row.description,
            )
        })
        .collect()
}

/// Adds `CsError`, `Error` and one subclass per code to the module.
pub(super) fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = module.py();
    let members: Vec<(&str, u32)> = CsError::ALL
        .iter()
        .map(|code| (code.c_name().trim_start_matches("CS_"), code.code()))
        .collect();
    let cs_error = super::int_enum(py, "CsError", &members, "totemcast")?;
    module.add("CsError", &cs_error)?;

    let builtins = py.import("builtins")?;
    let make_type = builtins.getattr("type")?;
    let classmethod = builtins.getattr("classmethod")?;

    let namespace = PyDict::new(py);
    namespace.set_item("__module__", "totemcast")?;
    namespace.set_item("__doc__", ERROR_DOC)?;
    namespace.set_item(
        "from_code",
        classmethod.call1((wrap_pyfunction!(error_from_code, module)?,))?,
    )?;
    let bases = PyTuple::new(py, [py.get_type::<PyException>()])?;
    let base = make_type.call1(("Error", bases, namespace))?;
    module.add("Error", &base)?;

    let mut classes = BTreeMap::new();
    for row in ERROR_TABLE {
        let mut bases = vec![base.clone()];
        if !row.python_builtin.is_empty() {
            bases.push(builtins.getattr(row.python_builtin)?);
        }
        let namespace = PyDict::new(py);
        namespace.set_item("__module__", "totemcast")?;
        namespace.set_item("__doc__", format!("{}: {}.", row.c_name, row.description))?;
        namespace.set_item(
            "code",
            cs_error.getattr(row.c_name.trim_start_matches("CS_"))?,
        )?;
        let class = make_type.call1((row.python_class, PyTuple::new(py, bases)?, namespace))?;
        module.add(row.python_class, &class)?;
        classes.insert(row.code, class.cast_into::<PyType>()?.unbind());
    }
    // A second import in the same interpreter keeps the classes of the first.
    let _ = CLASSES.set(py, classes);

    module.add_function(wrap_pyfunction!(_raise_error, module)?)?;
    module.add_function(wrap_pyfunction!(error_table, module)?)?;
    Ok(())
}
