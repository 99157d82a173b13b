"""The error model: one Rust table drives CsError, Error and its subclasses."""

import builtins
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

import totemcast
from totemcast import CsError, Error, _native

TABLE = _native.error_table()
CODES = {code for code, *_ in TABLE}


def test_table_has_corosync_numbers() -> None:
    assert sorted(CODES) == [*range(2, 29), 30, 100]


def test_cs_error_mirrors_the_table() -> None:
    assert CsError.OK.value == 1
    assert CsError.ERR_TRY_AGAIN.value == 6
    assert CsError.ERR_SECURITY.value == 100
    assert CsError.__module__ == "totemcast"
    members = {member.value: member.name for member in CsError}
    assert members == {1: "OK"} | {code: c_name[3:] for code, c_name, *_ in TABLE}


@pytest.mark.parametrize(("code", "c_name", "class_name", "builtin", "description"), TABLE)
def test_every_code_has_its_class(
    code: int, c_name: str, class_name: str, builtin: str, description: str
) -> None:
    cls = getattr(totemcast, class_name)
    assert issubclass(cls, Error)
    assert cls.code == code
    assert cls.code is CsError(code)
    assert cls.__module__ == "totemcast"
    assert class_name in totemcast.__all__
    if builtin:
        assert issubclass(cls, getattr(builtins, builtin))
    assert description in (cls.__doc__ or "")


@pytest.mark.parametrize("row", TABLE, ids=lambda row: row[1])
def test_rust_error_reaches_python_as_its_subclass(row: tuple[int, str, str, str, str]) -> None:
    code, c_name, class_name, _, _ = row
    with pytest.raises(Error) as caught:
        _native._raise_error(code, "what went wrong")
    assert type(caught.value) is getattr(totemcast, class_name)
    assert caught.value.code == code
    assert str(caught.value) == f"what went wrong ({c_name})"


def test_rust_error_without_detail_uses_the_description() -> None:
    with pytest.raises(totemcast.TryAgainError, match=r"try again.*\(CS_ERR_TRY_AGAIN\)"):
        _native._raise_error(6, "")


def test_builtin_bases_catch_argument_errors() -> None:
    with pytest.raises(ValueError, match="129 bytes"):
        _native._raise_error(int(CsError.ERR_NAME_TOO_LONG), "group name is 129 bytes")
    with pytest.raises(PermissionError):
        _native._raise_error(int(CsError.ERR_ACCESS), "uid 1000 is not allowed")
    with pytest.raises(ConnectionError):
        _native._raise_error(int(CsError.ERR_LIBRARY), "node gone")
    with pytest.raises(builtins.TimeoutError):
        _native._raise_error(int(CsError.ERR_TIMEOUT), "")


@given(st.sampled_from(sorted(CODES)), st.text(max_size=50))
def test_from_code_round_trips(code: int, message: str) -> None:
    error = Error.from_code(code, message)
    assert isinstance(error, Error)
    assert error.code == code
    assert int(error.code) == code
    assert Error.from_code(int(error.code)).code is error.code
    assert str(error).endswith(f"({CsError(code).name.replace('ERR_', 'CS_ERR_')})")


@given(st.integers(min_value=0, max_value=2**32 - 1).filter(lambda n: n not in CODES))
def test_unknown_codes_are_rejected(code: int) -> None:
    with pytest.raises(ValueError, match=str(code)):
        Error.from_code(code)
    with pytest.raises(ValueError, match=str(code)):
        _native._raise_error(code, "")


def test_ok_and_29_are_not_errors() -> None:
    with pytest.raises(ValueError, match="CS_OK"):
        Error.from_code(1)
    with pytest.raises(ValueError, match="29 is not a cs_error_t code"):
        Error.from_code(29)


def test_negative_codes_are_rejected() -> None:
    with pytest.raises(OverflowError):
        Error.from_code(-1)


def test_errors_pickle_by_public_name() -> None:
    error = Error.from_code(int(CsError.ERR_NOT_EXIST), "not joined")
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is totemcast.NotExistError
    assert clone.args == error.args
