//! The `totemcast._native` extension module. `PyO3` lives only below this module.
//!
//! The error hierarchy and the API enums are built here at import time from the Rust tables
//! ([`crate::error::ERROR_TABLE`], [`crate::api::PYTHON_ENUMS`]), so Python and Rust share one
//! source of truth.

mod buffer;
mod cpg;
mod errors;
mod evs;
mod handle;
mod node;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::api;

/// Builds an `enum.IntEnum` whose `__module__` is `module`.
fn int_enum<'py>(
    py: Python<'py>,
    name: &str,
    members: &[(&str, u32)],
    module: &str,
) -> PyResult<Bound<'py, PyAny>> {
    let kwargs = PyDict::new(py);
    kwargs.set_item("module", module)?;
    py.import("enum")?
        .getattr("IntEnum")?
        .call((name, members.to_vec()), Some(&kwargs))
}

/// Runs one of the commands implemented in Rust (`node`, `status`, `cpgtool`, `keygen`) with `args`
/// (without the program name) and returns its exit status. The GIL is released meanwhile.
#[pyfunction]
fn cli_main(py: Python<'_>, args: Vec<String>) -> i32 {
    py.detach(|| crate::cli::main(args.into_iter().map(Into::into).collect()))
}

/// Writes a new random authkey file at `path` (mode 0400), as `totemcast keygen -o path` does
/// but silently. `ExistError` if the file exists.
#[pyfunction]
#[allow(
    clippy::needless_pass_by_value,
    reason = "PyO3 hands arguments over by value"
)]
fn write_authkey(py: Python<'_>, path: std::path::PathBuf) -> PyResult<()> {
    py.detach(|| crate::node::crypto::write_new_authkey(&path))
        .map_err(PyErr::from)
}

#[pymodule]
#[pyo3(name = "_native")]
fn native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = module.py();
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    for info in api::PYTHON_ENUMS {
        module.add(
            info.name,
            int_enum(py, info.name, info.members, "totemcast")?,
        )?;
    }
    for &(name, value) in api::PYTHON_LIMITS {
        module.add(name, value)?;
    }
    errors::register(module)?;
    module.add_function(wrap_pyfunction!(cli_main, module)?)?;
    module.add_function(wrap_pyfunction!(write_authkey, module)?)?;
    module.add("DEFAULT_SOCKET", crate::node::config_file::DEFAULT_SOCKET)?;
    module.add("Message", py.get_type::<buffer::PyMessage>())?;
    module.add("ZcbBuffer", py.get_type::<buffer::PyZcbBuffer>())?;
    // `CpgHandle` here, `totemcast.cpg.Handle` for users; `EvsHandle`, `totemcast.evs.Handle`.
    module.add("CpgHandle", py.get_type::<cpg::PyCpgHandle>())?;
    module.add("EvsHandle", py.get_type::<evs::PyEvsHandle>())?;
    module.add("Node", py.get_type::<node::PyNode>())?;
    Ok(())
}
