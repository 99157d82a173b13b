"""Type stub of the native module `totemcast._native` (hand-written; checked by mypy.stubtest).

The error classes and enums are built at import time from the Rust tables in `src/error.rs` and
`src/api.rs`; stubtest fails if this file and those tables disagree.
"""

import builtins
from enum import IntEnum
from typing import Final, NoReturn

__all__ = [
    "CPG_MAX_NAME_LENGTH",
    "EVS_GROUPS_PER_CALL_MAX",
    "EVS_GROUP_KEY_LENGTH",
    "MAX_ATOMIC_MSGSIZE",
    "AccessError",
    "BadFlagsError",
    "BadHandleError",
    "BadOperationError",
    "BusyError",
    "ContextNotFoundError",
    "CsError",
    "DispatchFlags",
    "Error",
    "ExistError",
    "FailedOperationError",
    "FlowControlState",
    "Guarantee",
    "InitError",
    "InterruptError",
    "InvalidParamError",
    "IterationType",
    "LibraryError",
    "MessageError",
    "NameNotFoundError",
    "NameTooLongError",
    "NoMemoryError",
    "NoResourcesError",
    "NoSectionsError",
    "NoSpaceError",
    "NotExistError",
    "NotSupportedError",
    "QueueFullError",
    "QueueNotAvailableError",
    "Reason",
    "SecurityError",
    "TimeoutError",
    "TooBigError",
    "TooManyGroupsError",
    "TryAgainError",
    "VersionError",
    "__version__",
    "_raise_error",
    "cli_main",
    "error_table",
]

__version__: Final[str]

CPG_MAX_NAME_LENGTH: Final[int]
EVS_GROUP_KEY_LENGTH: Final[int]
EVS_GROUPS_PER_CALL_MAX: Final[int]
MAX_ATOMIC_MSGSIZE: Final[int]

class CsError(IntEnum):
    """Corosync's `cs_error_t` codes with their numbers; names drop the `CS_` prefix."""

    OK = 1
    ERR_LIBRARY = 2
    ERR_VERSION = 3
    ERR_INIT = 4
    ERR_TIMEOUT = 5
    ERR_TRY_AGAIN = 6
    ERR_INVALID_PARAM = 7
    ERR_NO_MEMORY = 8
    ERR_BAD_HANDLE = 9
    ERR_BUSY = 10
    ERR_ACCESS = 11
    ERR_NOT_EXIST = 12
    ERR_NAME_TOO_LONG = 13
    ERR_EXIST = 14
    ERR_NO_SPACE = 15
    ERR_INTERRUPT = 16
    ERR_NAME_NOT_FOUND = 17
    ERR_NO_RESOURCES = 18
    ERR_NOT_SUPPORTED = 19
    ERR_BAD_OPERATION = 20
    ERR_FAILED_OPERATION = 21
    ERR_MESSAGE_ERROR = 22
    ERR_QUEUE_FULL = 23
    ERR_QUEUE_NOT_AVAILABLE = 24
    ERR_BAD_FLAGS = 25
    ERR_TOO_BIG = 26
    ERR_NO_SECTIONS = 27
    ERR_CONTEXT_NOT_FOUND = 28
    ERR_TOO_MANY_GROUPS = 30
    ERR_SECURITY = 100

class Guarantee(IntEnum):
    """Delivery guarantee of a message."""

    UNORDERED = 0
    FIFO = 1
    AGREED = 2
    SAFE = 3

class DispatchFlags(IntEnum):
    """How `dispatch` runs callbacks."""

    ONE = 1
    ALL = 2
    BLOCKING = 3
    ONE_NONBLOCKING = 4

class Reason(IntEnum):
    """Why a process appears in a confchg list."""

    UNDEFINED = 0
    JOIN = 1
    LEAVE = 2
    NODEDOWN = 3
    NODEUP = 4
    PROCDOWN = 5

class FlowControlState(IntEnum):
    """Whether the node currently refuses sends from a handle."""

    DISABLED = 0
    ENABLED = 1

class IterationType(IntEnum):
    """What an iteration walks over."""

    NAME_ONLY = 1
    ONE_GROUP = 2
    ALL = 3

class Error(Exception):
    """Base class of totemcast errors; `code` is the error's `CsError`."""

    code: CsError

    @classmethod
    def from_code(cls, code: int, message: str = "") -> Error:
        """Returns the exception of `cs_error_t` code `code` (ValueError if it is not one)."""

class LibraryError(Error, builtins.ConnectionError):
    """CS_ERR_LIBRARY: the node is unreachable or the connection to it was lost."""

class VersionError(Error):
    """CS_ERR_VERSION: the client and the node speak different protocol versions."""

class InitError(Error):
    """CS_ERR_INIT: initialization failed."""

class TimeoutError(Error, builtins.TimeoutError):  # noqa: A001 -- also the builtin
    """CS_ERR_TIMEOUT: the operation timed out."""

class TryAgainError(Error):
    """CS_ERR_TRY_AGAIN: temporarily unavailable, try again later (nothing was accepted)."""

class InvalidParamError(Error, builtins.ValueError):
    """CS_ERR_INVALID_PARAM: invalid parameter."""

class NoMemoryError(Error, builtins.MemoryError):
    """CS_ERR_NO_MEMORY: out of memory."""

class BadHandleError(Error, builtins.ValueError):
    """CS_ERR_BAD_HANDLE: the handle is invalid or was finalized."""

class BusyError(Error):
    """CS_ERR_BUSY: busy with an earlier request."""

class AccessError(Error, builtins.PermissionError):
    """CS_ERR_ACCESS: access denied."""

class NotExistError(Error, builtins.LookupError):
    """CS_ERR_NOT_EXIST: does not exist (e.g. not joined)."""

class NameTooLongError(Error, builtins.ValueError):
    """CS_ERR_NAME_TOO_LONG: name too long."""

class ExistError(Error):
    """CS_ERR_EXIST: already exists (e.g. already joined)."""

class NoSpaceError(Error):
    """CS_ERR_NO_SPACE: no space left."""

class InterruptError(Error, builtins.InterruptedError):
    """CS_ERR_INTERRUPT: interrupted."""

class NameNotFoundError(Error, builtins.LookupError):
    """CS_ERR_NAME_NOT_FOUND: name not found."""

class NoResourcesError(Error):
    """CS_ERR_NO_RESOURCES: out of resources."""

class NotSupportedError(Error, builtins.NotImplementedError):
    """CS_ERR_NOT_SUPPORTED: not supported."""

class BadOperationError(Error):
    """CS_ERR_BAD_OPERATION: operation not allowed now."""

class FailedOperationError(Error):
    """CS_ERR_FAILED_OPERATION: operation failed."""

class MessageError(Error):
    """CS_ERR_MESSAGE_ERROR: malformed or unauthenticated message."""

class QueueFullError(Error):
    """CS_ERR_QUEUE_FULL: queue full."""

class QueueNotAvailableError(Error):
    """CS_ERR_QUEUE_NOT_AVAILABLE: queue not available."""

class BadFlagsError(Error, builtins.ValueError):
    """CS_ERR_BAD_FLAGS: invalid flags."""

class TooBigError(Error, builtins.ValueError):
    """CS_ERR_TOO_BIG: too big."""

class NoSectionsError(Error):
    """CS_ERR_NO_SECTIONS: no more sections (end of iteration)."""

class ContextNotFoundError(Error, builtins.LookupError):
    """CS_ERR_CONTEXT_NOT_FOUND: context not found."""

class TooManyGroupsError(Error, builtins.ValueError):
    """CS_ERR_TOO_MANY_GROUPS: too many groups."""

class SecurityError(Error, builtins.PermissionError):
    """CS_ERR_SECURITY: security check failed."""

def error_table() -> list[tuple[int, str, str, str, str]]:
    """Returns `(code, c_name, python_class, python_builtin, description)` of every error code."""

def _raise_error(code: int, detail: str) -> NoReturn:
    """Raises the Rust error of `code` with `detail` (a testing aid for the error mapping)."""

def cli_main(args: list[str]) -> int:
    """Runs the Rust command `args[0]` (`node`, `status`, `cpgtool` or `keygen`) with its
    arguments and returns the exit status; the GIL is released while it runs."""
