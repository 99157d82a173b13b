"""totemcast: group communication with extended virtual synchrony.

Processes join named groups, see agreed membership changes and multicast messages that every
member delivers in the same total order (the Totem single-ring protocol). The API has the
shape of Corosync's CPG (`totemcast.cpg`) and EVS (`totemcast.evs`) libraries;
`totemcast.aio` is the asyncio front and `totemcast.testing.LocalCluster` starts a local
cluster of nodes for tests and demos. `Node` runs a node inside this process; handles made
with `node=` talk to it without a socket. A delivered message is a `Message`, a read-only
buffer.

Errors are `totemcast.Error` subclasses, one per Corosync `cs_error_t` code; `CsError` is the
`IntEnum` of those codes with Corosync's numbers.
"""

from totemcast._native import (
    AccessError,
    BadFlagsError,
    BadHandleError,
    BadOperationError,
    BusyError,
    ContextNotFoundError,
    CsError,
    Error,
    ExistError,
    FailedOperationError,
    InitError,
    InterruptError,
    InvalidParamError,
    LibraryError,
    Message,
    MessageError,
    NameNotFoundError,
    NameTooLongError,
    Node,
    NoMemoryError,
    NoResourcesError,
    NoSectionsError,
    NoSpaceError,
    NotExistError,
    NotSupportedError,
    QueueFullError,
    QueueNotAvailableError,
    SecurityError,
    TimeoutError,  # noqa: A004 -- totemcast.TimeoutError also derives from the builtin
    TooBigError,
    TooManyGroupsError,
    TryAgainError,
    VersionError,
    __version__,
)

__all__ = [
    "AccessError",
    "BadFlagsError",
    "BadHandleError",
    "BadOperationError",
    "BusyError",
    "ContextNotFoundError",
    "CsError",
    "Error",
    "ExistError",
    "FailedOperationError",
    "InitError",
    "InterruptError",
    "InvalidParamError",
    "LibraryError",
    "Message",
    "MessageError",
    "NameNotFoundError",
    "NameTooLongError",
    "NoMemoryError",
    "NoResourcesError",
    "NoSectionsError",
    "NoSpaceError",
    "Node",
    "NotExistError",
    "NotSupportedError",
    "QueueFullError",
    "QueueNotAvailableError",
    "SecurityError",
    "TimeoutError",
    "TooBigError",
    "TooManyGroupsError",
    "TryAgainError",
    "VersionError",
    "__version__",
]
