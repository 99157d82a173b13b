"""asyncio front of CPG: awaitable sends, and events as an async iterator.

::

    import asyncio
    from totemcast import aio

    async def main() -> None:
        async with aio.Handle() as handle:
            await handle.join("workers")
            await handle.send(b"hello")
            async for event in handle:
                match event:
                    case aio.ConfChg(members=members):
                        print("members", members)
                    case aio.Deliver(nodeid=nodeid, msg=msg):
                        print(nodeid, bytes(msg))

    asyncio.run(main())

Events come in delivery order, as the typed dataclasses `Deliver`, `ConfChg` and
`TotemConfChg`. `Deliver.msg` is a view of the node's shared event ring (see `cpg.Handle`):
keep `bytes(event.msg)`, not the message, if you store it. The handle watches its
descriptor with `loop.add_reader`: nothing polls.
`send` waits while the node's request ring is full instead of raising `TryAgainError` (the
node wakes the descriptor when it has made room; a timer doubling from 1 ms to 100 ms backs
that up). Everything is cancellation-safe: a cancelled `send` sent nothing, and a cancelled
`__anext__` loses no event.

`await join(group)` returns once the join is complete: this handle's own join confchg has been
delivered (it is still yielded by the iteration, in its place). `await leave(group)` likewise
returns once the leave's confchg has been delivered. The requests themselves wait for the local
node's answer on the loop's thread (a local round trip). A handle belongs to the event loop that
first uses it.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from types import TracebackType
from typing import Any, Self

from totemcast._native import BadHandleError, TryAgainError
from totemcast.cpg import Address, DispatchFlags, Guarantee, Message, Reason, RingId
from totemcast.cpg import Handle as CpgHandle

__all__ = ["ConfChg", "Deliver", "Event", "Handle", "TotemConfChg"]

#: Backstop retry interval of a waiting send: from this, doubling...
_RETRY_FIRST = 0.001
#: ...up to this (seconds).
_RETRY_MAX = 0.1


@dataclass(frozen=True, slots=True)
class Deliver:
    """A message from process `pid` on node `nodeid`; `msg` is a read-only buffer."""

    group: str | bytes
    nodeid: int
    pid: int
    msg: Message


@dataclass(frozen=True, slots=True)
class ConfChg:
    """A membership change of `group`: the members after it, and who left or joined."""

    group: str | bytes
    members: list[Address]
    left: list[Address]
    joined: list[Address]


@dataclass(frozen=True, slots=True)
class TotemConfChg:
    """A new totem ring and its node ids."""

    ring_id: RingId
    nodeids: list[int]


#: What iterating a `Handle` yields.
Event = Deliver | ConfChg | TotemConfChg


def _group_key(group: str | bytes) -> bytes:
    return group.encode() if isinstance(group, str) else bytes(group)


class _Pause(Exception):
    """Raised by a callback to stop `dispatch` when the queue is full (the rest stays queued)."""


class Handle:
    """A CPG handle for asyncio (`async with`, `async for event in handle`).

    Args:
        socket: the node's socket (default `$TOTEMCAST_SOCKET`, else `cpg.DEFAULT_SOCKET`).
        initial_totem_conf: see `cpg.Handle`.
        context: see `cpg.Handle`.
        node: see `cpg.Handle`.
        max_queued: events read ahead of the consumer; beyond it the handle stops reading
            (the node then holds further events for it).

    Raises:
        LibraryError: no node listens on the socket.
    """

    def __init__(
        self,
        *,
        socket: str | PathLike[str] | None = None,
        initial_totem_conf: bool = False,
        context: Any = None,
        node: Any = None,
        max_queued: int = 10_000,
    ) -> None:
        """Connects to the node (blocking for the local handshake)."""
        if max_queued < 1:
            raise ValueError("max_queued must be at least 1")
        #: The underlying `cpg.Handle` (its callbacks belong to this object).
        self.native = CpgHandle(
            self._on_deliver,
            self._on_confchg,
            self._on_totem_confchg,
            initial_totem_conf=initial_totem_conf,
            context=context,
            node=node,
            socket=socket,
        )
        self._fd = self.native.fd_get()
        #: This process as a member: (local node id, pid).
        self._me = (self.native.local_get(), os.getpid())
        #: Joins and leaves waiting for their own confchg: (reason, group bytes, future).
        self._membership_waiters: list[tuple[Reason, bytes, asyncio.Future[None]]] = []
        self._max_queued = max_queued
        self._events: deque[Event] = deque()
        self._waiters: list[asyncio.Future[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reading = False
        self._paused = False
        self._closed = False
        self._error: BaseException | None = None

    # Callbacks (run inside dispatch) ---------------------------------------------------------

    def _push(self, event: Event) -> None:
        self._events.append(event)
        if isinstance(event, ConfChg) and self._membership_waiters:
            self._complete_membership(event)
        if len(self._events) >= self._max_queued and not self._membership_waiters:
            raise _Pause

    def _complete_membership(self, event: ConfChg) -> None:
        """Resolves the join or leave waiting for this confchg, if it is its own."""
        group = _group_key(event.group)
        changed = [(a.nodeid, a.pid, a.reason) for a in (*event.joined, *event.left)]
        for reason, key, waiter in self._membership_waiters:
            if key == group and (*self._me, reason) in changed and not waiter.done():
                waiter.set_result(None)

    def _on_deliver(
        self, _handle: CpgHandle, group: str | bytes, nodeid: int, pid: int, msg: Message
    ) -> None:
        self._push(Deliver(group, nodeid, pid, msg))

    def _on_confchg(
        self,
        _handle: CpgHandle,
        group: str | bytes,
        members: list[Address],
        left: list[Address],
        joined: list[Address],
    ) -> None:
        self._push(ConfChg(group, members, left, joined))

    def _on_totem_confchg(self, _handle: CpgHandle, ring_id: RingId, nodeids: list[int]) -> None:
        self._push(TotemConfChg(ring_id, nodeids))

    # Reading ---------------------------------------------------------------------------------

    def _start_reading(self) -> None:
        """Watches the descriptor on the running loop (from the first use on)."""
        if self._closed:
            raise BadHandleError("the handle is closed")
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError("this handle belongs to another event loop")
        if not self._reading and not self._paused and self._error is None:
            loop.add_reader(self._fd, self._on_readable)
            self._reading = True

    def _stop_reading(self) -> None:
        if self._reading and self._loop is not None:
            self._loop.remove_reader(self._fd)
        self._reading = False

    def _on_readable(self) -> None:
        """The descriptor is readable: move the waiting events into the queue, wake waiters."""
        try:
            self.native.dispatch(DispatchFlags.ALL)
        except _Pause:
            # The queue is full: the node keeps the rest until the consumer catches up.
            self._paused = True
            self._stop_reading()
        except Exception as error:  # the connection is gone: report it after the queue
            self._error = error
            self._stop_reading()
        self._wake_all()

    def _resume(self) -> None:
        """Reads again after a pause (the queue drained, or a join waits for its confchg)."""
        if self._paused:
            self._paused = False
            self._start_reading()
            self._on_readable()

    def _wake_all(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _readable(self, timeout: float | None = None) -> None:
        """Waits until the descriptor was readable (or `timeout` seconds passed)."""
        self._start_reading()
        assert self._loop is not None
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait((waiter,), timeout=timeout)
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    # Iteration -------------------------------------------------------------------------------

    def __aiter__(self) -> Self:
        """The handle is its own iterator."""
        return self

    async def __anext__(self) -> Event:
        """The next event in delivery order (waits for it).

        Raises:
            StopAsyncIteration: the handle was closed.
            LibraryError: the connection to the node was lost (after the queued events).
        """
        while not self._events:
            if self._closed:
                raise StopAsyncIteration
            if self._error is not None:
                raise self._error
            if self._paused:
                self._resume()
                continue
            # Return the ring space of the messages dropped since the last read before
            # sleeping: the node may be waiting for exactly that room to write the next event.
            self._on_readable()
            if self._events or self._error is not None:
                continue
            await self._readable()
        event = self._events.popleft()
        if self._paused and len(self._events) <= self._max_queued // 2:
            self._paused = False
            self._start_reading()
        return event

    async def next_event(self, timeout: float | None = None) -> Event | None:
        """The next event, or None if none came within `timeout` seconds."""
        try:
            return await asyncio.wait_for(self.__anext__(), timeout)
        except TimeoutError:
            return None

    # Requests --------------------------------------------------------------------------------

    async def join(self, group: str | bytes) -> None:
        """Joins `group` and returns once the join is complete (its confchg delivered).

        `cpg.Handle.join`, retried while the node says `TryAgainError`. If cancelled after the
        node accepted the join, the handle still joins.

        Raises:
            ExistError: this handle is in a group already (or this process is in `group`).
            InvalidParamError: an empty name.
            NameTooLongError: a name longer than 128 bytes.
        """
        await self._membership_change(Reason.JOIN, self.native.join, group)

    async def leave(self, group: str | bytes) -> None:
        """Leaves `group` and returns once the leave is complete (its confchg delivered).

        `cpg.Handle.leave`, retried while the node says `TryAgainError`.

        Raises:
            NotExistError: this handle is not in `group`.
        """
        await self._membership_change(Reason.LEAVE, self.native.leave, group)

    async def _membership_change(self, reason: Reason, call: Any, group: str | bytes) -> None:
        self._start_reading()
        assert self._loop is not None
        waiter: asyncio.Future[None] = self._loop.create_future()
        entry = (reason, _group_key(group), waiter)
        self._membership_waiters.append(entry)
        try:
            await self._retry(call, group)
            while not waiter.done():
                if self._closed or self._error is not None:
                    raise self._error or BadHandleError("the handle is closed")
                self._resume()
                await self._readable()
        finally:
            self._membership_waiters.remove(entry)

    async def _retry(self, call: Any, *args: Any) -> None:
        delay = _RETRY_FIRST
        while True:
            try:
                call(*args)
            except TryAgainError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX)
            else:
                return

    async def send(self, *buffers: Any, guarantee: int = Guarantee.AGREED) -> None:
        """Multicasts the concatenation of `buffers`, waiting while the request ring is full.

        The same as `cpg.Handle.mcast_joined`, except that it waits (without polling) where
        that raises `TryAgainError`.

        Raises:
            NotExistError: the handle has not joined a group.
            TooBigError: the message is too long.
        """
        delay = _RETRY_FIRST
        while True:
            try:
                self.native.mcast_joined(guarantee, *buffers)
            except TryAgainError:
                # The node wakes the descriptor when it made room; the timer is a backstop.
                await self._readable(delay)
                delay = min(delay * 2, _RETRY_MAX)
            else:
                return

    async def send_many(
        self, messages: Sequence[Any], *, guarantee: int = Guarantee.AGREED
    ) -> None:
        """Multicasts each buffer of `messages` as one message, in order.

        The batch path of `cpg.Handle.mcast_many`, waiting for room as `send` does. If
        cancelled, a prefix of `messages` was sent.
        """
        sent = 0
        delay = _RETRY_FIRST
        while sent < len(messages):
            count = self.native.mcast_many(guarantee, messages[sent:], timeout=0)
            sent += count
            if sent < len(messages):
                if count:
                    delay = _RETRY_FIRST
                await self._readable(delay)
                delay = min(delay * 2, _RETRY_MAX)

    def membership_get(self, group: str | bytes) -> list[Address]:
        """`cpg.Handle.membership_get`."""
        return self.native.membership_get(group)

    def local_get(self) -> int:
        """`cpg.Handle.local_get`."""
        return self.native.local_get()

    def max_atomic_msgsize_get(self) -> int:
        """`cpg.Handle.max_atomic_msgsize_get`."""
        return self.native.max_atomic_msgsize_get()

    def context_get(self) -> Any:
        """`cpg.Handle.context_get`."""
        return self.native.context_get()

    def context_set(self, context: Any) -> None:
        """`cpg.Handle.context_set`."""
        self.native.context_set(context)

    def fileno(self) -> int:
        """The descriptor this handle watches."""
        return self._fd

    # Closing ---------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether `close` was called."""
        return self._closed

    def close(self) -> None:
        """Finalizes the native handle (idempotent); iterators end, waiting sends fail."""
        if self._closed:
            return
        self._closed = True
        self._stop_reading()
        self.native.finalize()
        self._wake_all()

    async def __aenter__(self) -> Self:
        """Starts watching the descriptor on the running loop."""
        self._start_reading()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Closes the handle."""
        self.close()
