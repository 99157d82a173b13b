"""totemcast.evs.Handle against real nodes: filtering, mcast_groups, limits, confchgs with ring
ids, dispatch and callback semantics, finalize."""

import os
import selectors
import signal
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import totemcast
from conftest import WITHIN
from totemcast import evs
from totemcast.evs import ConfigurationType, DispatchFlags, Guarantee, RingId
from totemcast.testing import LocalCluster

AGREED = Guarantee.AGREED
REGULAR = ConfigurationType.REGULAR
TRANSITIONAL = ConfigurationType.TRANSITIONAL


@dataclass
class Events:
    """EVS callbacks that record every event as a tuple, in order.

    `("deliver", nodeid, pid, payload_bytes)` and `("confchg", members, left, joined, ring_id,
    kind)`.
    """

    events: list[tuple[Any, ...]] = field(default_factory=list)

    def deliver(self, handle: evs.Handle, nodeid: int, pid: int, msg: evs.Message) -> None:
        assert isinstance(handle, evs.Handle)
        self.events.append(("deliver", nodeid, pid, bytes(msg)))

    def confchg(
        self,
        handle: evs.Handle,
        members: list[int],
        left: list[int],
        joined: list[int],
        ring_id: RingId,
        kind: ConfigurationType,
    ) -> None:
        assert isinstance(ring_id, RingId)
        assert isinstance(kind, ConfigurationType)
        self.events.append(("confchg", members, left, joined, ring_id, kind))

    def handle(self, **kwargs: Any) -> evs.Handle:
        """A handle whose callbacks record here."""
        return evs.Handle(self.deliver, self.confchg, **kwargs)

    def deliveries(self) -> list[bytes]:
        return [event[3] for event in self.events if event[0] == "deliver"]

    def confchgs(self) -> list[tuple[Any, ...]]:
        return [event for event in self.events if event[0] == "confchg"]


def dispatch_until(
    handles: Sequence[evs.Handle], done: Callable[[], bool], within: float = WITHIN
) -> None:
    """Dispatches the handles when their descriptors are readable until `done()` holds."""
    deadline = time.monotonic() + within
    with selectors.DefaultSelector() as selector:
        for handle in handles:
            selector.register(handle, selectors.EVENT_READ, handle)
        while not done():
            left = deadline - time.monotonic()
            assert left > 0, f"condition not met within {within} s"
            for key, _ in selector.select(min(left, 1.0)):
                key.data.dispatch(DispatchFlags.ALL)


def readable(handle: evs.Handle, timeout: float = 0.0) -> bool:
    with selectors.DefaultSelector() as selector:
        selector.register(handle, selectors.EVENT_READ)
        return bool(selector.select(timeout))


def key() -> str:
    """A group key no other test uses (at most 32 bytes)."""
    return f"k-{uuid.uuid4().hex[:16]}"


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
def handle(socket: Path, events: Events) -> Iterator[evs.Handle]:
    with events.handle(socket=socket) as handle:
        yield handle


def test_the_first_event_is_the_current_configuration(
    node: LocalCluster, handle: evs.Handle, events: Events
) -> None:
    ring = node.wait_for_ring()
    assert handle.dispatch(DispatchFlags.ONE) == 1
    assert events.events == [("confchg", [1], [], [], ring, REGULAR)]
    assert handle.membership_get() == (1, [1])
    assert handle.dispatch() == 0


def test_help_and_names() -> None:
    assert evs.Handle.__module__ == "totemcast.evs"
    assert evs.Handle.__doc__
    assert "confchg(handle, members, left, joined" in evs.Handle.__doc__
    for name in dir(evs.Handle):
        if not name.startswith("_"):
            assert getattr(evs.Handle, name).__doc__, name
    assert evs.initialize is not None
    assert [(k.name, k.value) for k in ConfigurationType] == [("REGULAR", 0), ("TRANSITIONAL", 1)]
    assert evs.RingId is totemcast.cpg.RingId


def test_groups_filter_deliveries_and_mcast_groups_needs_no_join(three: LocalCluster) -> None:
    """Three handles on three nodes: `a` on node 1, `b` on node 2, both on node 3."""
    pid = os.getpid()
    a, b = key(), key()
    recorders = [Events(), Events(), Events()]
    handles = [r.handle(socket=three.socket(i)) for i, r in enumerate(recorders)]
    try:
        handles[0].join(a)
        handles[1].join([b.encode()])
        handles[2].join([a, b])
        handles[0].mcast_joined(AGREED, b"from 1 ", b"to a")  # an iovec
        handles[1].mcast_groups(AGREED, [a], b"from 2 to a")  # 2 did not join a
        handles[2].mcast_joined(Guarantee.SAFE, b"from 3 to a and b")
        handles[0].mcast_groups(AGREED, (a, b), b"from 1 to a and b")
        dispatch_until(handles, lambda: len(recorders[2].deliveries()) == 4)
        # Sent after all four were delivered somewhere: ordered after them everywhere.
        handles[1].mcast_groups(AGREED, [a, b], b"last")
        dispatch_until(handles, lambda: all(b"last" in r.deliveries() for r in recorders))
        senders = {(e[1], e[2], e[3]) for e in recorders[2].events if e[0] == "deliver"}
        assert senders == {
            (1, pid, b"from 1 to a"),
            (2, pid, b"from 2 to a"),
            (3, pid, b"from 3 to a and b"),
            (1, pid, b"from 1 to a and b"),
            (2, pid, b"last"),
        }
        # One total order; each handle gets what matches its filter, once.
        order = recorders[2].deliveries()
        assert order[-1] == b"last"
        assert recorders[0].deliveries() == order
        assert recorders[1].deliveries() == [m for m in order if m.endswith((b"b", b"last"))]
    finally:
        for h in handles:
            h.finalize()


def test_keys_are_zero_padded_str_or_bytes(handle: evs.Handle, events: Events) -> None:
    name = key()
    handle.join(name.encode() + b"\0\0")  # the same key as `name`
    assert handle.joined() == [name.encode().ljust(evs.EVS_GROUP_KEY_LENGTH, b"\0")]
    handle.join(name)  # joining again changes nothing
    assert len(handle.joined()) == 1
    handle.mcast_groups(AGREED, name, b"by str")
    handle.mcast_groups(AGREED, [name.encode()], b"by bytes")
    binary = bytes(range(1, 33))
    handle.join([binary])
    handle.mcast_groups(AGREED, [binary], b"binary")
    dispatch_until([handle], lambda: len(events.deliveries()) == 3)
    assert events.deliveries() == [b"by str", b"by bytes", b"binary"]
    handle.leave([name, binary])
    assert handle.joined() == []
    handle.join([])  # empty: a no-op, as in Corosync
    handle.leave(())


def test_at_most_50_groups_per_call(handle: evs.Handle, events: Events) -> None:
    assert evs.EVS_GROUPS_PER_CALL_MAX == 50
    many = [f"{key()}-{i}" for i in range(51)]
    calls: list[Callable[[], None]] = [
        lambda: handle.join(many),
        lambda: handle.leave(many),
        lambda: handle.mcast_groups(AGREED, many, b"x"),
    ]
    for call in calls:
        with pytest.raises(totemcast.TooManyGroupsError) as raised:
            call()
        assert raised.value.code == totemcast.CsError.ERR_TOO_MANY_GROUPS
        assert isinstance(raised.value, ValueError)
    assert handle.joined() == []
    handle.join(many[:50])
    handle.join(many[50:])  # the limit is per call
    assert len(handle.joined()) == 51
    handle.mcast_groups(AGREED, many[1:], b"to 50")
    dispatch_until([handle], lambda: events.deliveries() == [b"to 50"])
    handle.leave(many[:50])
    assert len(handle.joined()) == 1


def test_bad_keys_and_arguments(handle: evs.Handle) -> None:
    with pytest.raises(totemcast.InvalidParamError):
        handle.join("")
    with pytest.raises(totemcast.NameTooLongError):
        handle.join("k" * 33)
    with pytest.raises(totemcast.NameTooLongError):
        handle.mcast_groups(AGREED, [b"k" * 33], b"x")
    with pytest.raises(TypeError, match="str or bytes"):
        handle.join(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not int"):
        handle.join(["ok", 3])  # type: ignore[list-item]
    with pytest.raises(totemcast.NotExistError):
        handle.mcast_joined(AGREED, b"nothing joined")
    with pytest.raises(totemcast.NotExistError):
        handle.leave(key())
    handle.join("joined")
    with pytest.raises(totemcast.NotExistError):
        handle.leave(["joined", key()])  # all or nothing
    assert len(handle.joined()) == 1
    with pytest.raises(totemcast.InvalidParamError, match="at least one group"):
        handle.mcast_groups(AGREED, [], b"x")
    with pytest.raises(totemcast.InvalidParamError):
        handle.mcast_joined(7, b"x")
    with pytest.raises(TypeError, match="not str"):
        handle.mcast_joined(AGREED, "text")  # type: ignore[arg-type]
    too_big = bytes(handle.max_atomic_msgsize_get() + 1)
    with pytest.raises(totemcast.TooBigError):
        handle.mcast_joined(AGREED, too_big)
    with pytest.raises(totemcast.TooBigError):
        handle.mcast_groups(AGREED, "joined", too_big[:-10], bytes(10))


def test_every_guarantee_and_large_messages(handle: evs.Handle, events: Events) -> None:
    name = key()
    handle.join(name)
    for guarantee in Guarantee:
        handle.mcast_joined(guarantee, b"%d" % guarantee)
    big = os.urandom(handle.max_atomic_msgsize_get())
    handle.mcast_joined(AGREED, memoryview(big)[:1000], bytearray(big[1000:]))
    dispatch_until([handle], lambda: len(events.deliveries()) == 5)
    assert events.deliveries()[:4] == [b"0", b"1", b"2", b"3"]
    assert events.deliveries()[4] == big


def test_dispatch_modes_and_the_descriptor(handle: evs.Handle, events: Events) -> None:
    assert handle.fileno() == handle.fd_get()
    assert readable(handle, WITHIN), "the current configuration waits"
    assert handle.dispatch(DispatchFlags.ONE_NONBLOCKING) == 1
    assert not readable(handle)
    with pytest.raises(totemcast.TryAgainError):
        handle.dispatch(DispatchFlags.ONE_NONBLOCKING)
    with pytest.raises(totemcast.InvalidParamError):
        handle.dispatch(9)
    handle.join("d")
    for i in range(3):
        handle.mcast_joined(AGREED, b"%d" % i)
    assert handle.dispatch(DispatchFlags.ONE) == 1
    assert events.deliveries() == [b"0"]
    dispatch_until([handle], lambda: len(events.deliveries()) == 3)
    assert not readable(handle)
    # Events read while a request waited for its answer keep the descriptor readable.
    handle.mcast_joined(AGREED, b"z")
    assert readable(handle, WITHIN)
    handle.membership_get()
    assert readable(handle)
    assert handle.dispatch() == 1
    assert not readable(handle)


def test_a_raising_callback_propagates_and_later_events_stay_queued_in_order(
    socket: Path,
) -> None:
    seen: list[bytes] = []

    class Boom(Exception):
        pass

    def deliver(h: evs.Handle, nodeid: int, pid: int, msg: evs.Message) -> None:
        seen.append(bytes(msg))
        if bytes(msg).startswith(b"boom"):
            raise Boom(bytes(msg))

    with evs.Handle(deliver, socket=socket) as handle:
        handle.join("r")
        for message in (b"1", b"boom-a", b"2", b"3", b"boom-b", b"4"):
            handle.mcast_joined(AGREED, message)
        with pytest.raises(Boom, match="boom-a"):
            dispatch_until([handle], lambda: False)
        assert seen == [b"1", b"boom-a"]
        assert readable(handle, WITHIN), "the events after the raising callback are waiting"
        assert handle.dispatch(DispatchFlags.ONE) == 1
        assert handle.dispatch(DispatchFlags.ONE) == 1
        with pytest.raises(Boom, match="boom-b"):
            handle.dispatch(DispatchFlags.ONE)
        assert seen == [b"1", b"boom-a", b"2", b"3", b"boom-b"]
        assert handle.dispatch(DispatchFlags.ONE) == 1
        assert seen[-1] == b"4"
        assert handle.dispatch() == 0
        assert not readable(handle)


def test_blocking_dispatch_ends_when_a_callback_finalizes(socket: Path) -> None:
    seen: list[bytes] = []

    def deliver(h: evs.Handle, nodeid: int, pid: int, msg: evs.Message) -> None:
        seen.append(bytes(msg))
        if msg == b"stop":
            h.finalize()

    handle = evs.Handle(deliver, socket=socket)
    handle.join("b")
    for message in (b"a", b"stop", b"after"):
        handle.mcast_joined(AGREED, message)
    assert handle.dispatch(DispatchFlags.BLOCKING) == 3  # the configuration, a, stop
    assert seen == [b"a", b"stop"]
    with pytest.raises(totemcast.BadHandleError):
        handle.dispatch()


def test_context(socket: Path) -> None:
    marker = object()
    with evs.Handle(context=marker, socket=socket) as handle:
        assert handle.context_get() is marker
        handle.context_set([1, 2])
        assert handle.context_get() == [1, 2]
    with evs.initialize(socket=socket) as handle:
        assert handle.context_get() is None


CALLS_AFTER_FINALIZE: dict[str, Callable[[evs.Handle], object]] = {
    "join": lambda h: h.join("g"),
    "leave": lambda h: h.leave("g"),
    "joined": lambda h: h.joined(),
    "mcast_joined": lambda h: h.mcast_joined(AGREED, b"x"),
    "mcast_groups": lambda h: h.mcast_groups(AGREED, "g", b"x"),
    "membership_get": lambda h: h.membership_get(),
    "max_atomic_msgsize_get": lambda h: h.max_atomic_msgsize_get(),
    "dispatch": lambda h: h.dispatch(),
    "dispatch_blocking": lambda h: h.dispatch(DispatchFlags.BLOCKING),
    "fd_get": lambda h: h.fd_get(),
    "fileno": lambda h: h.fileno(),
    "context_get": lambda h: h.context_get(),
    "context_set": lambda h: h.context_set(1),
    "finalize": lambda h: h.finalize(),
}


@pytest.mark.parametrize("call", CALLS_AFTER_FINALIZE.values(), ids=CALLS_AFTER_FINALIZE.keys())
def test_every_call_after_finalize_is_bad_handle(
    socket: Path, call: Callable[[evs.Handle], object]
) -> None:
    handle = evs.Handle(socket=socket)
    handle.finalize()
    with pytest.raises(totemcast.BadHandleError):
        call(handle)
    assert "finalized" in repr(handle)


def test_no_node_and_bad_arguments(tmp_path: Path, socket: Path) -> None:
    with pytest.raises(totemcast.LibraryError, match="cannot reach a node"):
        evs.Handle(socket=tmp_path / "nothing.sock")
    with pytest.raises(TypeError, match="confchg must be callable"):
        evs.Handle(confchg=3, socket=socket)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"totemcast\.Node"):
        evs.Handle(node=object(), socket=socket)  # type: ignore[arg-type]


def test_busy_poll_is_checked_and_every_window_delivers(socket: Path) -> None:
    with evs.Handle(socket=socket) as handle:
        assert handle.busy_poll == pytest.approx(50e-6)
    for bad in (-1.0, 0.02, float("nan")):
        with pytest.raises(totemcast.InvalidParamError, match="busy_poll"):
            evs.Handle(socket=socket, busy_poll=bad)
    for window in (0.0, 0.01):
        events = Events()
        with events.handle(socket=socket, busy_poll=window) as handle:
            assert handle.busy_poll == window
            assert handle.dispatch(DispatchFlags.ONE) == 1  # the configuration
            name = key()
            handle.join(name)
            for i in range(3):
                handle.mcast_joined(AGREED, b"%d" % i)
                assert handle.dispatch(DispatchFlags.ONE) == 1
            assert events.deliveries() == [b"0", b"1", b"2"]


def interrupted_after(seconds: float, call: Callable[[], object]) -> None:
    """Runs `call`, which must wait; SIGALRM after `seconds` raises KeyboardInterrupt in it."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, seconds)
        with pytest.raises(KeyboardInterrupt):
            call()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_ctrl_c_interrupts_requests_and_dispatch_on_a_stopped_node() -> None:
    with LocalCluster(1, name="pytest-evs-paused") as cluster:
        events = Events()
        with events.handle(socket=cluster.socket(0)) as handle:
            handle.dispatch(DispatchFlags.ONE)  # the current configuration
            cluster.pause(0)
            try:
                interrupted_after(0.2, lambda: handle.join("late"))
                interrupted_after(0.2, lambda: handle.membership_get())
                interrupted_after(0.2, lambda: handle.dispatch(DispatchFlags.BLOCKING))
            finally:
                cluster.resume(0)
            # The interrupted join still took effect; the late answers are skipped.
            assert handle.joined() == [b"late".ljust(32, b"\0")]
            assert handle.membership_get() == (1, [1])
            handle.mcast_joined(AGREED, b"after")
            dispatch_until([handle], lambda: events.deliveries() == [b"after"])


def test_a_signal_handler_may_use_a_handle_whose_request_waits() -> None:
    with LocalCluster(1, name="pytest-evs-handler") as cluster:
        handle = evs.Handle(socket=cluster.socket(0))
        raised: list[BaseException] = []

        def handler(signum: int, frame: object) -> None:
            try:
                handle.membership_get()  # a second request in this thread: refused
            except totemcast.BusyError as error:
                raised.append(error)
            handle.finalize()  # the waiting request then gives up

        previous = signal.signal(signal.SIGALRM, handler)
        cluster.pause(0)
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.2)
            with pytest.raises(totemcast.BadHandleError, match="finalized while"):
                handle.join("never answered")
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            cluster.resume(0)
        assert len(raised) == 1
        assert "signal handler" in str(raised[0])


def test_confchgs_with_ring_ids_when_a_node_is_killed() -> None:
    with LocalCluster(3, name="pytest-evs-kill") as cluster:
        first = cluster.wait_for_ring()
        watch = Events()
        with watch.handle(socket=cluster.socket(0)) as handle:
            dispatch_until([handle], lambda: len(watch.events) == 1)
            assert watch.events == [("confchg", [1, 2, 3], [], [], first, REGULAR)]
            cluster.kill(2)
            ring = cluster.wait_for_ring([0, 1])
            dispatch_until([handle], lambda: watch.events[-1][4:] == (ring, REGULAR))
            assert ring.seq > first.seq
            assert watch.events[1:] == [
                ("confchg", [1, 2], [3], [], ring, TRANSITIONAL),
                ("confchg", [1, 2], [], [], ring, REGULAR),
            ]
            cluster.restart(2)
            merged = cluster.wait_for_ring()
            dispatch_until([handle], lambda: watch.events[-1][4:] == (merged, REGULAR))
            assert watch.events[-2:] == [
                ("confchg", [1, 2], [], [], merged, TRANSITIONAL),
                ("confchg", [1, 2, 3], [], [3], merged, REGULAR),
            ]
            assert handle.membership_get() == (1, [1, 2, 3])
