"""Type stub of the native module `totemcast._native` (hand-written; checked by mypy.stubtest).

The error classes and enums are built at import time from the Rust tables in `src/error.rs` and
`src/api.rs`; stubtest fails if this file and those tables disagree.
"""

import builtins
from collections.abc import Callable, Iterable
from enum import IntEnum
from os import PathLike
from types import TracebackType
from typing import Any, Final, NoReturn, Self, final

from typing_extensions import Buffer

from totemcast.cpg import Address, IterationDescription, RingId

__all__ = [
    "CPG_MAX_NAME_LENGTH",
    "DEFAULT_SOCKET",
    "EVS_GROUPS_PER_CALL_MAX",
    "EVS_GROUP_KEY_LENGTH",
    "MAX_ATOMIC_MSGSIZE",
    "AccessError",
    "BadFlagsError",
    "BadHandleError",
    "BadOperationError",
    "BusyError",
    "ConfigurationType",
    "ContextNotFoundError",
    "CpgHandle",
    "CsError",
    "DispatchFlags",
    "Error",
    "EvsHandle",
    "ExistError",
    "FailedOperationError",
    "FlowControlState",
    "Guarantee",
    "InitError",
    "InterruptError",
    "InvalidParamError",
    "IterationType",
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
    "Reason",
    "SecurityError",
    "TimeoutError",
    "TooBigError",
    "TooManyGroupsError",
    "TryAgainError",
    "VersionError",
    "ZcbBuffer",
    "__version__",
    "_raise_error",
    "cli_main",
    "error_table",
    "write_authkey",
]

__version__: Final[str]

CPG_MAX_NAME_LENGTH: Final[int]
EVS_GROUP_KEY_LENGTH: Final[int]
EVS_GROUPS_PER_CALL_MAX: Final[int]
MAX_ATOMIC_MSGSIZE: Final[int]
#: Where a client looks for its node when neither `socket=` nor `$TOTEMCAST_SOCKET` says.
DEFAULT_SOCKET: Final[str]

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

class ConfigurationType(IntEnum):
    """Which kind of totem configuration an EVS confchg is (`totem_configuration_type`)."""

    REGULAR = 0
    TRANSITIONAL = 1

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

def write_authkey(path: str | PathLike[str]) -> None:
    """Writes a new random authkey file at `path` (mode 0400), like `totemcast keygen -o path`
    but silently; `ExistError` if the file exists."""

def cli_main(args: list[str]) -> int:
    """Runs the Rust command `args[0]` (`node`, `status`, `cpgtool` or `keygen`) with its
    arguments and returns the exit status; the GIL is released while it runs."""

@final
class Message:
    """A delivered message: a read-only buffer over the payload.

    `bytes(msg)` copies it out; `memoryview(msg)`, `numpy.frombuffer(msg, ...)` and
    `struct.unpack_from(fmt, msg)` read it in place. The payload belongs to the message object,
    so views of it stay valid as long as they live. A message compares equal to any buffer with
    the same bytes (`msg == b"hello"`) and hashes like `bytes`.

    A delivered message is a view of the node's event ring (2 MiB) and holds its space until it
    and every view of it are gone; that frees the space at once, whenever it happens (also
    after `dispatch` returned, while the loop waits on `fd_get()`), and lets the node write
    what waits. Held messages that fill the ring hold this handle's later events back, and a
    handle that frees nothing for 5 s while events wait is disconnected: keep `bytes(msg)` to
    store messages.
    """

    def __buffer__(self, flags: int, /) -> memoryview: ...
    def __len__(self) -> int: ...
    def __bytes__(self) -> bytes: ...
    def __eq__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...
    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        """`bytes(self).decode(encoding, errors)`."""

@final
class ZcbBuffer:
    """A send buffer in the handle's shared memory, from `Handle.zcb_alloc` (`cpg_zcb_*`).

    Write the message in place through the buffer protocol (`memoryview(buf)[:n] = data`,
    `numpy.frombuffer(buf, ...)`), release the views, then `Handle.zcb_mcast_joined(g, buf, n)`
    sends the first `n` bytes without the library copying them. The buffer can be sent again;
    a new view waits until the node has read the last send. `Handle.zcb_free(buf)` (or dropping
    the object) frees it.
    """

    def __buffer__(self, flags: int, /) -> memoryview: ...
    def __len__(self) -> int: ...

@final
class CpgHandle:
    """A connection to the local node's CPG service: `totemcast.cpg.Handle`.

    Corosync's `cpg_*` calls as methods. A handle is in at most one group at a time; one
    process is in a given group at most once. Every member of a group delivers the group's
    messages and membership changes (confchgs) in the same total order, its own included.

    Callbacks run inside `dispatch`, in delivery order:

    * `deliver(handle, group, nodeid, pid, msg)`: a message from process `pid` on node
      `nodeid`; `msg` is a read-only `Message` buffer (copy it with `bytes(msg)` to keep it
      beyond the call if you like; it stays valid either way).
    * `confchg(handle, group, members, left, joined)`: the members after the change, sorted
      by (nodeid, pid), and who left or joined, as lists of `cpg.Address` with a `Reason`.
      A joiner first sees its own join; a leaver sees its own leave.
    * `totem_confchg(handle, ring_id, nodeids)`: a new totem ring (`cpg.RingId`) and its
      node ids, after the confchgs it caused.

    A `Message` is a view of the node's shared event ring: it holds its ring space until the
    message and every view of it are gone. Keep `bytes(msg)` rather than the message if you
    hold on to it: a client whose ring stays full is disconnected by the node.

    `group` is given back as `str` if the handle joined it with a `str`, else as `bytes`.

    The node is found through `socket=`, else `$TOTEMCAST_SOCKET`, else `DEFAULT_SOCKET`.
    Every wait (for the node's answer, for events, for room to send) releases the GIL and
    is interrupted by Ctrl-C; an interrupted `join` or `leave` still takes effect. A handle may
    be used from several threads; a `dispatch` that waits does not block other calls. A signal
    handler that runs while a request of its thread waits may `finalize` the handle (the
    request then raises `BadHandleError`); its other calls raise `BusyError`.

    A handle is a context manager: leaving the block finalizes it.

    Args:
        deliver: called for each message, or None.
        confchg: called for each membership change of the group, or None.
        totem_confchg: called for each new totem ring, or None.
        initial_totem_conf: deliver the current totem configuration at once, as the first
            event (`CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF`).
        context: any object, returned by `context_get()`.
        node: an embedded `totemcast.Node` to talk to (through a socket pair, not its
            socket), instead of `socket`.
        socket: the node's socket path.
        busy_poll: seconds a wait of this handle (in `dispatch`, for the node's answer, for
            room to send) polls for the node without sleeping before it sleeps: a reply within
            that window costs no wake-up of this process. 0 sleeps at once; at most 0.01.
            Waits on `fd_get()` (selectors, asyncio) are the caller's and never poll.

    Raises:
        LibraryError: no node listens on the socket, or `node` is stopped.
        InvalidParamError: both `node` and `socket` given, or `busy_poll` out of range.
        AccessError: the node does not allow this user.
        VersionError: the node speaks another IPC version.
        TypeError: a callback is not callable, or `node` is not a `totemcast.Node`.
    """

    def __new__(
        cls,
        deliver: Callable[[CpgHandle, str | bytes, int, int, Message], object] | None = None,
        confchg: Callable[
            [CpgHandle, str | bytes, list[Address], list[Address], list[Address]], object
        ]
        | None = None,
        totem_confchg: Callable[[CpgHandle, RingId, list[int]], object] | None = None,
        *,
        initial_totem_conf: bool = False,
        context: Any = None,
        node: Node | None = None,
        socket: str | PathLike[str] | None = None,
        busy_poll: float = 5e-05,
    ) -> Self: ...
    def join(self, group: str | bytes) -> None:
        """`cpg_join`: joins `group` (1 to 128 bytes; a `str` is UTF-8 encoded).

        Returns once the node accepted the join; the join is complete when this handle's own
        confchg arrives. Messages may be sent at once. While this handle's previous leave is
        still on its way the call waits for it (as libcpg retries on BUSY).

        Raises:
            InvalidParamError: an empty name.
            NameTooLongError: a name longer than 128 bytes.
            ExistError: this handle is in a group already, or another handle of this process
                is in `group`.
            TryAgainError: the node cannot take the request now.
            BadHandleError: the handle is finalized.
            LibraryError: the connection to the node is lost.
        """

    def leave(self, group: str | bytes) -> None:
        """`cpg_leave`: leaves `group`.

        The handle receives the confchg of its own leave and may then join again (unlike
        Corosync 3, where a left handle keeps receiving). While this handle's join is still on
        its way the call waits for it.

        Raises:
            NotExistError: this handle is not in `group`.
            InvalidParamError: an empty name.
            NameTooLongError: a name longer than 128 bytes.
            BadHandleError: the handle is finalized.
        """

    def mcast_joined(self, guarantee: int, *buffers: Buffer) -> None:
        """`cpg_mcast_joined`: multicasts the concatenation of `buffers` to the joined group.

        `buffers` is an iovec: any objects with the buffer protocol (`bytes`, `bytearray`,
        `memoryview`, `array.array`, numpy arrays, `Message`), copied once into the node's
        request ring. The call never waits for room. Zero buffers send an empty message. A
        message larger than 1 MiB is copied out of the buffers first and then sent with the GIL
        released (it goes to the node in parts; once its first part is accepted the call waits
        for room for the rest, and it is delivered whole or not at all).

        Raises:
            TryAgainError: the request ring is full and nothing was sent; the handle's
                descriptor (`fd_get()`) becomes readable when the node has made room.
            NotExistError: the handle has not joined a group.
            TooBigError: the message is longer than `max_atomic_msgsize_get()`.
            InvalidParamError: `guarantee` is not a `Guarantee`.
            TypeError: a buffer is not a bytes-like object (`str` must be encoded).
            BufferError: a buffer with non-byte items that is not C-contiguous.
            BadHandleError: the handle is finalized.
        """

    def mcast_many(
        self, guarantee: int, messages: Iterable[Buffer], *, timeout: float | None = None
    ) -> int:
        """Multicasts each buffer of `messages` as one message, in order; returns how many
        were sent.

        The batch path: messages are handed to the node's ring in chunks, each copied once,
        and the node is woken once per chunk, not once per message. When the ring is full the
        call waits for the node to make room (GIL released, Ctrl-C honoured, woken by the node
        rather than by polling): with `timeout=None` (the default) until every message is
        sent; otherwise for at most `timeout` seconds in all, then it returns the count sent so
        far (`timeout=0` never waits). Messages from `count` on were not sent: pass a sequence
        if you want to send the rest later. A message over 1 MiB goes in parts and, once its
        first part is accepted, waits for room for the rest without a timeout.

        Raises:
            NotExistError: the handle has not joined a group.
            TooBigError: a message is longer than `max_atomic_msgsize_get()`; the messages
                before it were sent (the exception's note says how many).
            InvalidParamError: `guarantee` is not a `Guarantee`.
            TypeError: an item is not a bytes-like object.
            BadHandleError: the handle is (or was meanwhile) finalized.
        """

    def dispatch(self, flags: int = 2) -> int:
        """`cpg_dispatch`: runs the callbacks of waiting events, in order; returns how many
        events were handled.

        * `DispatchFlags.ALL` (the default): every event waiting now; never waits.
        * `DispatchFlags.ONE`: waits for one event and handles it.
        * `DispatchFlags.ONE_NONBLOCKING`: one event, or `TryAgainError` if none waits.
        * `DispatchFlags.BLOCKING`: handles events until the handle is finalized (by a
          callback or another thread), then returns.

        Events are read in batches with the GIL released; waits release the GIL and Ctrl-C
        raises `KeyboardInterrupt`. If a callback raises, dispatch stops at that event and
        the exception propagates; the events after it stay queued, in order, for the next
        dispatch (and the descriptor stays readable). If the handle is finalized during the
        dispatch, it returns after the current callback.

        Raises:
            TryAgainError: `ONE_NONBLOCKING` and no event waits.
            InvalidParamError: unknown flags.
            BadHandleError: the handle is finalized.
            LibraryError: the node closed the connection.
        """

    def fd_get(self) -> int:
        """`cpg_fd_get`: a descriptor that is readable while events wait (for `select`,
        `selectors`, `loop.add_reader`); then call `dispatch`. It also becomes readable when
        the node made room after a `TryAgainError`. It is level-triggered: `dispatch(ALL)`
        clears it when nothing is left.

        Raises:
            BadHandleError: the handle is finalized.
        """

    @property
    def busy_poll(self) -> float:
        """Seconds a wait of this handle polls for the node before it sleeps (`busy_poll=`)."""

    def fileno(self) -> int:
        """The same as `fd_get()`, so a handle can be passed to `select`."""

    def membership_get(self, group: str | bytes) -> list[Address]:
        """`cpg_membership_get`: the current members of any group known to the node (the
        handle need not be in it), sorted by (nodeid, pid), with reason `UNDEFINED`.

        Raises:
            InvalidParamError: an empty name.
            NameTooLongError: a name longer than 128 bytes.
            BadHandleError: the handle is finalized.
        """

    def local_get(self) -> int:
        """`cpg_local_get`: the local node's id."""

    def max_atomic_msgsize_get(self) -> int:
        """`cpg_max_atomic_msgsize_get`: the largest message this handle can send, in bytes."""

    def context_get(self) -> Any:
        """`cpg_context_get`: the object given as `context=` or to `context_set` (or None)."""

    def context_set(self, context: Any) -> None:
        """`cpg_context_set`: remembers `context` for `context_get()`."""

    def iteration(
        self,
        type: int,  # noqa: A002 -- the name ARCHITECTURE.md fixes
        group: str | bytes | None = None,
    ) -> list[IterationDescription]:
        """`cpg_iteration_*`: a snapshot of the groups and members the node knows.

        `IterationType.NAME_ONLY`: every group once (nodeid and pid 0); `ONE_GROUP`: the
        members of `group`; `ALL`: every member of every group. Sorted by group, then
        (nodeid, pid); group names are `bytes` (they are binary).

        Raises:
            InvalidParamError: an unknown type, or `ONE_GROUP` without a group.
            NameTooLongError: a name longer than 128 bytes.
            BadHandleError: the handle is finalized.
        """

    def flow_control_state_get(self) -> FlowControlState:
        """`cpg_flow_control_state_get`: `ENABLED` while the node holds this handle's messages
        (for lack of room in its send queue, or for a client on the node that receives them and
        is more than 16 MiB behind on its events), or its request ring is over three quarters
        full (sends may raise `TryAgainError` then), else `DISABLED`. Unlike Corosync's, it is
        real."""

    def zcb_alloc(self, size: int) -> ZcbBuffer:
        """`cpg_zcb_alloc`: a writable buffer of `size` bytes in shared memory.

        Raises:
            TooBigError: beyond `max_atomic_msgsize_get()`.
            NoMemoryError: beyond the shared arena.
            TryAgainError: the arena is taken by other buffers (or sends not read yet).
        """

    def zcb_free(self, buf: ZcbBuffer) -> None:
        """`cpg_zcb_free`: frees `buf` (its memoryviews must be released first).

        Raises:
            BufferError: views of the buffer are alive.
            InvalidParamError: it was freed already.
            TypeError: `buf` is not a `ZcbBuffer`.
        """

    def zcb_mcast_joined(self, guarantee: int, buf: ZcbBuffer, length: int) -> None:
        """`cpg_zcb_mcast_joined`: multicasts the first `length` bytes of `buf` without the
        library copying them (the node reads them from shared memory).

        Raises:
            BufferError: views of the buffer are alive (release them first).
            InvalidParamError: `length` beyond the buffer, a buffer of another handle, or a
                freed one.
            TryAgainError: the request ring is full.
            NotExistError: the handle has not joined a group.
        """

    def finalize(self) -> None:
        """`cpg_finalize`: closes the connection. The node sees the process leave its group
        (reason `PROCDOWN`) unless it left first. No callbacks run afterwards, a `dispatch`
        waiting in another thread returns, and every later call raises `BadHandleError` -
        a second `finalize` too, as in Corosync.
        """

    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> bool:
        """Finalizes the handle unless it is finalized already."""

@final
class EvsHandle:
    """A connection to the node's EVS service: `totemcast.evs.Handle`.

    Corosync's `evs_*` calls as methods. Groups are keys of 1 to 32 bytes (a `str` is UTF-8
    encoded), zero-padded to 32 bytes, and only a receive filter: the handle receives each
    message sent to at least one group it joined, once (its own messages too), whichever of
    its groups matched. Joining and leaving are local to the handle and announce nothing.
    Wherever groups are taken, one `str` or `bytes` is one group, otherwise an iterable of
    them; at most 50 per call.

    Callbacks run inside `dispatch`, in delivery order (one total order with the messages of
    every sender, for AGREED and SAFE):

    * `deliver(handle, nodeid, pid, msg)`: a message from process `pid` on node `nodeid`
      (Corosync gave the node only); `msg` is a read-only `Message` buffer.
    * `confchg(handle, members, left, joined, ring_id, kind)`: a totem configuration, in
      Corosync's order (`evs_confchg_fn`) with the ring id (`RingId(nodeid, seq)`, never
      missing: Corosync passed NULL) and its kind last, `ConfigurationType.TRANSITIONAL` (the
      old ring's members that move on together, `left` the nodes that did not; `joined` is
      empty) or `ConfigurationType.REGULAR` (the new ring's members, `joined` the new ones;
      `left` is empty). Both carry the new ring's id. Node ids are sorted lists of `int`. The
      first event of a handle is the current configuration, with `left` and `joined` empty.

    Every wait (for the node's answer, for events) releases the GIL and Ctrl-C interrupts
    it; a request interrupted that way (`join`, `leave`, `membership_get`) still reaches the
    node. A handle may be used from several threads (one request at a time; a `dispatch` that
    waits does not block the others) and from a signal handler while a request of its thread
    waits, except for another request (`BusyError`). It is a context manager: leaving the
    block finalizes it.

    Args:
        deliver: called for each message, or None.
        confchg: called for each configuration, or None.
        context: any object, returned by `context_get()`.
        node: an embedded `totemcast.Node` to talk to (through a socket pair), instead of
            `socket`.
        socket: the node's socket path (default `$TOTEMCAST_SOCKET`, else `DEFAULT_SOCKET`).
        busy_poll: seconds a wait of this handle (in `dispatch`, for the node's answer, for
            room to send) polls for the node without sleeping before it sleeps: a reply within
            that window costs no wake-up of this process. 0 sleeps at once; at most 0.01.
            Waits on `fd_get()` (selectors, asyncio) are the caller's and never poll.

    Raises:
        LibraryError: no node listens on the socket, or `node` is stopped.
        AccessError: the node does not allow this user.
        VersionError: the node speaks another IPC version.
        InvalidParamError: both `node` and `socket` given, or `busy_poll` out of range.
        TypeError: a callback is not callable, or `node` is not a `totemcast.Node`.
    """

    def __new__(
        cls,
        deliver: Callable[[EvsHandle, int, int, Message], object] | None = None,
        confchg: Callable[
            [EvsHandle, list[int], list[int], list[int], RingId, ConfigurationType], object
        ]
        | None = None,
        *,
        context: Any = None,
        node: Node | None = None,
        socket: str | PathLike[str] | None = None,
        busy_poll: float = 5e-05,
    ) -> Self: ...
    def join(self, groups: str | bytes | Iterable[str | bytes]) -> None:
        """`evs_join`: adds `groups` to this handle's receive filter.

        Joining a group again changes nothing; an empty iterable is a no-op. If Ctrl-C
        interrupts the wait for the node's answer, the join still takes effect.

        Raises:
            TooManyGroupsError: more than 50 groups in the call, or more than 1024 joined.
            InvalidParamError: an empty key.
            NameTooLongError: a key longer than 32 bytes.
            TypeError: a group that is not `str` or `bytes`.
            BadHandleError: the handle is (or was, while the call waited) finalized.
            BusyError: called from a signal handler while a request of this thread waits.
            LibraryError: the connection to the node is lost.
        """

    def leave(self, groups: str | bytes | Iterable[str | bytes]) -> None:
        """`evs_leave`: removes `groups` from this handle's filter (all or none of them).

        Raises:
            NotExistError: a group is not joined (then none is left).
            TooManyGroupsError: more than 50 groups in the call.
            InvalidParamError: an empty key.
            NameTooLongError: a key longer than 32 bytes.
            BadHandleError: the handle is finalized.
        """

    def joined(self) -> list[bytes]:
        """The groups this handle has joined, sorted, as 32-byte keys (zero-padded)."""

    def mcast_joined(self, guarantee: int, *buffers: Buffer) -> None:
        """`evs_mcast_joined`: multicasts the concatenation of `buffers` to every group this
        handle joined.

        `buffers` is an iovec of buffer-protocol objects (bytes, bytearray, memoryview, numpy
        arrays, `Message`), copied once into the node's request ring; the call never waits.
        Every guarantee is honoured (Corosync sent everything AGREED).

        Raises:
            TryAgainError: the request ring is full and nothing was sent; the descriptor
                (`fd_get()`) becomes readable when the node has made room.
            NotExistError: the handle has joined no group.
            TooBigError: the message is longer than `max_atomic_msgsize_get()`.
            InvalidParamError: `guarantee` is not a `Guarantee`.
            TypeError: a buffer is not a bytes-like object.
            BadHandleError: the handle is finalized.
        """

    def mcast_groups(
        self, guarantee: int, groups: str | bytes | Iterable[str | bytes], *buffers: Buffer
    ) -> None:
        """`evs_mcast_groups`: multicasts the concatenation of `buffers` to `groups`, which
        this handle need not have joined (it receives the message only if it joined one).

        Raises:
            TooManyGroupsError: more than 50 groups.
            InvalidParamError: no group, an empty key, or `guarantee` is not a `Guarantee`.
            NameTooLongError: a key longer than 32 bytes.
            TryAgainError: the request ring is full and nothing was sent.
            TooBigError: the message is longer than `max_atomic_msgsize_get()`.
            BadHandleError: the handle is finalized.
        """

    def membership_get(self) -> tuple[int, list[int]]:
        """`evs_membership_get`: `(local_nodeid, nodeids)`, this node's id and the sorted
        node ids of the current configuration.

        Raises:
            BadHandleError: the handle is finalized.
            LibraryError: the connection to the node is lost.
        """

    def max_atomic_msgsize_get(self) -> int:
        """The largest message this handle can send, in bytes."""

    def dispatch(self, flags: int = 2) -> int:
        """`evs_dispatch`: runs the callbacks of waiting events, in order; returns how many
        events were handled.

        * `DispatchFlags.ALL` (the default): every event waiting now; never waits.
        * `DispatchFlags.ONE`: waits for one event and handles it.
        * `DispatchFlags.ONE_NONBLOCKING`: one event, or `TryAgainError` if none waits.
        * `DispatchFlags.BLOCKING`: handles events until the handle is finalized (by a
          callback or another thread), then returns.

        Waits release the GIL; Ctrl-C raises `KeyboardInterrupt`. If a callback raises,
        dispatch stops at that event and the exception propagates; the events after it stay
        queued, in order, for the next dispatch (and the descriptor stays readable).

        Raises:
            TryAgainError: `ONE_NONBLOCKING` and no event waits.
            InvalidParamError: unknown flags.
            BadHandleError: the handle is finalized.
            LibraryError: the node closed the connection (once no event is left; the
                descriptor stays readable so that a `select` loop learns it).
        """

    def fd_get(self) -> int:
        """`evs_fd_get`: a descriptor that is readable while events wait (for `select`,
        `selectors`, `loop.add_reader`); then call `dispatch`. It also becomes readable when
        the node made room after a `TryAgainError`, and when the node is gone (`dispatch`
        then raises `LibraryError`).

        Raises:
            BadHandleError: the handle is finalized.
        """

    @property
    def busy_poll(self) -> float:
        """Seconds a wait of this handle polls for the node before it sleeps (`busy_poll=`)."""

    def fileno(self) -> int:
        """The same as `fd_get()`, so a handle can be passed to `select`."""

    def context_get(self) -> Any:
        """`evs_context_get`: the object given as `context=` or to `context_set` (or None)."""

    def context_set(self, context: Any) -> None:
        """`evs_context_set`: remembers `context` for `context_get()`."""

    def finalize(self) -> None:
        """`evs_finalize`: closes the connection. No callbacks run afterwards, a `dispatch`
        waiting in another thread returns, and every later call raises `BadHandleError` - a
        second `finalize` too.
        """

    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> bool:
        """Finalizes the handle unless it is finalized already."""

@final
class Node:
    """An embedded totemcast node: the node runs on a thread of this process.

    It is the same node as `totemcast node` (the same protocol, services and `[ipc] socket`
    for other processes). `cpg.Handle(node=n)` and `evs.Handle(node=n)` talk to it through a
    socket pair, without its socket. A node is a context manager: leaving the block stops it,
    which is a clean leave (the other nodes form their next ring at once, without waiting for
    a token timeout); dropping the object stops it too. Starting, stopping and `status()`
    release the GIL. Handles of a stopped node get `LibraryError`.

    `config` is the node's configuration (the TOML file format of `totemcast node`), given as

    * a path: an `os.PathLike`, or a `str` without a newline;
    * TOML text: a `str` with a newline (relative paths in it are taken from the current
      directory);
    * a `dict` in the shape of the TOML document, e.g. `{"totem": {"cluster_name": "c"},
      "node": [{"nodeid": 1, "addr": "127.0.0.1:5405"}], ...}`: values are bool, int, float,
      str, path (`os.PathLike`, written as a str), list, tuple and dict.

    `nodeid` selects this node among the `[[node]]` entries; without it, the entry whose
    address is on this machine (which must be one).

    Raises:
        InvalidParamError: a bad configuration; the message names the key (`<dict>: totem.token:
            ...`), or `nodeid` is not in the node list.
        LibraryError: the node cannot start (its port or socket is taken, an unreadable
            authkey, ...).
        TypeError: `config` is none of the three forms.
    """

    def __new__(
        cls, config: str | PathLike[str] | dict[str, Any], nodeid: int | None = None
    ) -> Self: ...
    @property
    def nodeid(self) -> int:
        """This node's id."""

    @property
    def socket(self) -> str:
        """The socket other processes reach this node on (`[ipc] socket`)."""

    @property
    def running(self) -> bool:
        """Whether the node runs (it has not been stopped)."""

    def status(self) -> dict[str, Any]:
        """The node's status, as `totemcast status --json` shows it (`state`, `members`,
        `ring_id`, `counters`, ...).

        Raises:
            LibraryError: the node is stopped.
        """

    def stop(self) -> None:
        """Leaves the ring cleanly and stops the node (its handles then get `LibraryError`);
        nothing if it is stopped already.

        Raises:
            LibraryError: the node's thread ended with an error.
        """

    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> bool:
        """Stops the node."""
