"""totemcast.cpg.Handle against a real node: every method, its errors and the callbacks."""

import array
import gc
import os
import selectors
import signal
import struct
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import totemcast
from conftest import WITHIN, Recorder, dispatch_until, joined_members
from totemcast import cpg
from totemcast.cpg import DispatchFlags, Guarantee, Reason
from totemcast.testing import LocalCluster

AGREED = Guarantee.AGREED


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def handle(socket: Path, recorder: Recorder) -> Iterator[cpg.Handle]:
    with recorder.handle(socket) as handle:
        yield handle


def joined(handle: cpg.Handle, recorder: Recorder, group: str | bytes) -> None:
    """Joins `group` and waits for the handle's own join confchg."""
    handle.join(group)
    dispatch_until([(handle, recorder)], lambda: any(e[0] == "confchg" for e in recorder.events))


def wait_for(condition: Callable[[], bool], within: float = WITHIN) -> None:
    """Checks `condition` every 10 ms until it holds (AssertionError after `within` s)."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def readable(handle: cpg.Handle, timeout: float = 0.0) -> bool:
    with selectors.DefaultSelector() as selector:
        selector.register(handle, selectors.EVENT_READ)
        return bool(selector.select(timeout))


# Construction --------------------------------------------------------------------------------


def test_no_node_is_a_library_error(tmp_path: Path) -> None:
    with pytest.raises(totemcast.LibraryError, match="cannot reach a node"):
        cpg.Handle(socket=tmp_path / "nothing.sock")


def test_socket_comes_from_the_environment_then_the_default(
    socket: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOTEMCAST_SOCKET", str(socket))
    with cpg.Handle() as handle:
        assert handle.local_get() == 1
    monkeypatch.delenv("TOTEMCAST_SOCKET")
    assert cpg.DEFAULT_SOCKET == "/run/totemcast/totemcast.sock"
    if not os.path.exists(cpg.DEFAULT_SOCKET):
        with pytest.raises(totemcast.LibraryError, match=cpg.DEFAULT_SOCKET):
            cpg.Handle()


def test_initialize_and_model_initialize_return_handles(socket: Path) -> None:
    with cpg.initialize(socket=socket) as first, cpg.model_initialize(socket=str(socket)) as second:
        assert isinstance(first, cpg.Handle)
        assert isinstance(second, cpg.Handle)
    with pytest.raises(totemcast.InvalidParamError):
        cpg.model_initialize(model=2, socket=socket)
    with pytest.raises(totemcast.InvalidParamError):
        cpg.model_initialize(flags=0x02, socket=socket)


def test_callbacks_must_be_callable(socket: Path) -> None:
    with pytest.raises(TypeError, match="deliver must be callable"):
        cpg.Handle("not callable", socket=socket)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="totem_confchg"):
        cpg.Handle(totem_confchg=3, socket=socket)  # type: ignore[arg-type]


def test_busy_poll_is_checked_and_every_window_delivers(socket: Path, group: str) -> None:
    with cpg.Handle(socket=socket) as handle:
        assert handle.busy_poll == pytest.approx(50e-6)
    for bad in (-1e-6, 0.0101, float("nan"), float("inf")):
        with pytest.raises(totemcast.InvalidParamError, match="busy_poll"):
            cpg.Handle(socket=socket, busy_poll=bad)
    # A blocking dispatch waits (spinning, then sleeping) for the join and for each message.
    for window in (0.0, 0.01):
        recorder = Recorder()
        with recorder.handle(socket, busy_poll=window) as handle:
            assert handle.busy_poll == window
            handle.join(group)
            assert handle.dispatch(DispatchFlags.ONE) == 1
            for i in range(3):
                handle.mcast_joined(AGREED, b"%d" % i)
                assert handle.dispatch(DispatchFlags.ONE) == 1
            assert recorder.deliveries() == [b"0", b"1", b"2"]
            handle.leave(group)
            assert handle.dispatch(DispatchFlags.ONE) == 1


def test_node_must_be_an_embedded_node(socket: Path) -> None:
    # Handles through a `totemcast.Node` are tested in test_node.py.
    with pytest.raises(TypeError, match=r"totemcast\.Node"):
        cpg.Handle(node=object(), socket=socket)  # type: ignore[arg-type]


def test_initial_totem_conf_follows_the_first_confchg(node: LocalCluster, group: str) -> None:
    ring = node.wait_for_ring()
    # Each handle joins its own group: the previous handle's membership (same process) ends
    # only when its PROCDOWN is delivered, and a join before that is CS_ERR_EXIST, as in
    # Corosync.
    makers: list[Callable[[Recorder], cpg.Handle]] = [
        lambda r: r.handle(node.socket(0), initial_totem_conf=True),
        lambda r: cpg.model_initialize(
            r.deliver,
            r.confchg,
            r.totem_confchg,
            flags=cpg.CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF,
            socket=node.socket(0),
        ),
    ]
    for index, handle_of in enumerate(makers):
        recorder = Recorder()
        with handle_of(recorder) as handle:
            assert handle.dispatch() == 0
            joined(handle, recorder, f"{group}-{index}")
            dispatch_until([(handle, recorder)], events_reach(recorder, 2))
            assert recorder.events[0][0] == "confchg"
            assert recorder.events[1] == ("totem", tuple(ring), [1])


def test_iteration(socket: Path, handle: cpg.Handle, recorder: Recorder, group: str) -> None:
    pid = os.getpid()
    joined(handle, recorder, group)
    name = group.encode()
    everyone = handle.iteration(cpg.IterationType.ALL)
    assert cpg.IterationDescription(name, 1, pid) in everyone
    assert everyone == sorted(everyone)
    assert cpg.IterationDescription(name, 0, 0) in handle.iteration(cpg.IterationType.NAME_ONLY)
    assert handle.iteration(cpg.IterationType.ONE_GROUP, group) == [(name, 1, pid)]
    assert handle.iteration(cpg.IterationType.ONE_GROUP, name + b"-nobody") == []
    with pytest.raises(totemcast.InvalidParamError):
        handle.iteration(cpg.IterationType.ONE_GROUP)
    with pytest.raises(totemcast.InvalidParamError):
        handle.iteration(0)
    with pytest.raises(totemcast.NameTooLongError):
        handle.iteration(cpg.IterationType.ONE_GROUP, b"x" * 129)


def test_flow_control_state(handle: cpg.Handle) -> None:
    state = handle.flow_control_state_get()
    assert state is cpg.FlowControlState.DISABLED


def test_zero_copy_send_buffers(handle: cpg.Handle, recorder: Recorder, group: str) -> None:
    joined(handle, recorder, group)
    buffer = handle.zcb_alloc(64)
    assert isinstance(buffer, cpg.ZcbBuffer)
    assert len(buffer) == 64
    with memoryview(buffer) as view:
        assert not view.readonly
        view[:5] = b"first"
        with pytest.raises(BufferError, match="release"):
            handle.zcb_mcast_joined(AGREED, buffer, 5)
        with pytest.raises(BufferError, match="release"):
            handle.zcb_free(buffer)
    handle.zcb_mcast_joined(AGREED, buffer, 5)
    with memoryview(buffer) as view:  # waits until the node has read the first send
        view[:6] = b"second"
    handle.zcb_mcast_joined(Guarantee.SAFE, buffer, 6)
    with pytest.raises(totemcast.InvalidParamError):
        handle.zcb_mcast_joined(AGREED, buffer, 65)
    with pytest.raises(TypeError, match="zcb_alloc"):
        handle.zcb_mcast_joined(AGREED, bytearray(5), 5)  # type: ignore[arg-type]
    dispatch_until([(handle, recorder)], lambda: len(recorder.deliveries()) == 2)
    assert recorder.deliveries() == [b"first", b"second"]
    handle.zcb_free(buffer)
    assert "freed" in repr(buffer)
    with pytest.raises(totemcast.InvalidParamError):
        handle.zcb_free(buffer)
    with pytest.raises(totemcast.InvalidParamError):
        handle.zcb_mcast_joined(AGREED, buffer, 1)
    with pytest.raises(totemcast.TooBigError):
        handle.zcb_alloc(handle.max_atomic_msgsize_get() + 1)


def test_help_documents_the_class() -> None:
    assert cpg.Handle.__module__ == "totemcast.cpg"
    assert cpg.Handle.__name__ == "Handle"
    assert totemcast.Message.__module__ == "totemcast"
    for cls in (cpg.Handle, cpg.Message, cpg.ZcbBuffer, cpg.Address, cpg.RingId):
        assert cls.__doc__, cls
    for name in dir(cpg.Handle):
        if not name.startswith("_"):
            assert getattr(cpg.Handle, name).__doc__, name
    for name in cpg.__all__:
        assert getattr(cpg, name) is not None


# Join, leave, membership -----------------------------------------------------------------------


def test_join_sees_own_join_first_and_membership(
    handle: cpg.Handle, recorder: Recorder, group: str
) -> None:
    pid = os.getpid()
    joined(handle, recorder, group)
    assert recorder.events == [("confchg", group, [(1, pid, 0)], [], [(1, pid, Reason.JOIN)])]
    assert recorder.handles == [handle]
    members = handle.membership_get(group)
    assert members == [cpg.Address(1, pid, Reason.UNDEFINED)]
    assert isinstance(members[0], cpg.Address)
    assert members[0].reason is Reason.UNDEFINED
    assert handle.membership_get(group.encode()) == members
    assert handle.membership_get(group + "-nobody") == []
    assert handle.local_get() == 1


def test_group_names_are_1_to_128_bytes(handle: cpg.Handle) -> None:
    with pytest.raises(totemcast.InvalidParamError):
        handle.join("")
    with pytest.raises(totemcast.InvalidParamError):
        handle.join(b"")
    with pytest.raises(totemcast.NameTooLongError):
        handle.join(b"x" * 129)
    with pytest.raises(totemcast.NameTooLongError):
        handle.join("é" * 65)  # 130 bytes in UTF-8
    with pytest.raises(totemcast.NameTooLongError):
        handle.membership_get("y" * 129)
    with pytest.raises(TypeError, match="str or bytes"):
        handle.join(bytearray(b"g"))  # type: ignore[arg-type]
    with pytest.raises(UnicodeEncodeError):
        handle.join("\udc80")


def test_a_128_byte_binary_name_round_trips(
    handle: cpg.Handle, recorder: Recorder, group: str
) -> None:
    name = (group.encode() + bytes(range(256)))[:128]
    joined(handle, recorder, name)
    handle.mcast_joined(AGREED, b"m")
    dispatch_until([(handle, recorder)], lambda: len(recorder.events) == 2)
    assert recorder.events[0][1] == name
    assert recorder.events[1][:2] == ("deliver", name)
    assert isinstance(recorder.events[1][1], bytes)


def test_callbacks_get_the_group_as_it_was_given(socket: Path, group: str) -> None:
    for name in (group, group.encode()):
        recorder = Recorder()
        with recorder.handle(socket) as handle:
            joined(handle, recorder, name)
            assert type(recorder.events[0][1]) is type(name)
            assert recorder.events[0][1] == name


def test_double_join_is_exist_even_for_another_group(
    handle: cpg.Handle, recorder: Recorder, group: str
) -> None:
    handle.join(group)
    with pytest.raises(totemcast.ExistError):
        handle.join(group)
    with pytest.raises(totemcast.ExistError):
        handle.join(group + "-other")


def test_one_process_is_in_a_group_once(socket: Path, handle: cpg.Handle, group: str) -> None:
    handle.join(group)
    with cpg.Handle(socket=socket) as other, pytest.raises(totemcast.ExistError):
        other.join(group)


def test_leave_errors(handle: cpg.Handle, recorder: Recorder, group: str) -> None:
    with pytest.raises(totemcast.NotExistError):
        handle.leave(group)
    joined(handle, recorder, group)
    with pytest.raises(totemcast.NotExistError):
        handle.leave(group + "-other")
    with pytest.raises(totemcast.InvalidParamError):
        handle.leave("")


def test_leave_completes_and_the_handle_can_join_again(
    handle: cpg.Handle, recorder: Recorder, group: str
) -> None:
    pid = os.getpid()
    joined(handle, recorder, group)
    handle.leave(group)
    with pytest.raises(totemcast.NotExistError):
        handle.mcast_joined(AGREED, b"after leave")
    dispatch_until([(handle, recorder)], lambda: len(recorder.events) == 2)
    assert recorder.events[1] == ("confchg", group, [], [(1, pid, Reason.LEAVE)], [])
    assert handle.membership_get(group) == []
    handle.join(group)
    dispatch_until([(handle, recorder)], lambda: len(recorder.events) == 3)
    assert recorder.events[2][4] == [(1, pid, Reason.JOIN)]


def test_join_then_leave_at_once_waits_for_the_join(
    handle: cpg.Handle, recorder: Recorder, group: str
) -> None:
    # The node answers BUSY while the join is on its way; the handle retries as libcpg does.
    handle.join(group)
    handle.leave(group)
    dispatch_until([(handle, recorder)], lambda: len(recorder.events) == 2)
    assert [e[0] for e in recorder.events] == ["confchg", "confchg"]
    assert recorder.events[1][3][0][2] == Reason.LEAVE


# Sending ------------------------------------------------------------------------------------


def test_send_before_join_is_not_exist(handle: cpg.Handle) -> None:
    with pytest.raises(totemcast.NotExistError):
        handle.mcast_joined(AGREED, b"x")
    with pytest.raises(totemcast.NotExistError):
        handle.mcast_many(AGREED, [b"x"])


def test_oversized_send_is_too_big(handle: cpg.Handle, recorder: Recorder, group: str) -> None:
    joined(handle, recorder, group)
    limit = handle.max_atomic_msgsize_get()
    assert limit >= 1 << 20
    with pytest.raises(totemcast.TooBigError):
        handle.mcast_joined(AGREED, bytes(limit + 1))
    with pytest.raises(totemcast.TooBigError):
        handle.mcast_joined(AGREED, bytes(limit // 2 + 1), bytes(limit // 2 + 1))
    with pytest.raises(totemcast.TooBigError) as caught:
        handle.mcast_many(AGREED, [b"a", b"b", bytes(limit + 1), b"never"])
    assert "first 2 messages" in " ".join(caught.value.__notes__)
    dispatch_until([(handle, recorder)], lambda: len(recorder.deliveries()) == 2)
    assert recorder.deliveries() == [b"a", b"b"]


def test_large_messages_are_delivered_whole(
    handle: cpg.Handle, recorder: Recorder, group: str
) -> None:
    joined(handle, recorder, group)
    large = bytes(range(256)) * (5 * 4096)  # 5 MiB: sent in parts
    handle.mcast_joined(AGREED, memoryview(large)[:1000], memoryview(large)[1000:])
    assert handle.mcast_many(AGREED, [b"small", large, b"after"]) == 3
    dispatch_until([(handle, recorder)], lambda: len(recorder.deliveries()) == 4)
    assert recorder.deliveries() == [large, b"small", large, b"after"]


def test_bad_arguments_to_send(handle: cpg.Handle, group: str) -> None:
    handle.join(group)
    with pytest.raises(totemcast.InvalidParamError, match="guarantee"):
        handle.mcast_joined(4, b"x")
    with pytest.raises(TypeError, match="not str"):
        handle.mcast_joined(AGREED, "text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bytes-like"):
        handle.mcast_joined(AGREED, 42)  # type: ignore[arg-type]
    with pytest.raises(BufferError):
        handle.mcast_joined(AGREED, memoryview(array.array("i", range(8)))[::2])
    with pytest.raises(ValueError, match="timeout"):
        handle.mcast_many(AGREED, [b"x"], timeout=-1)


def test_every_guarantee_and_iovecs_of_buffers_arrive_in_order(
    handle: cpg.Handle, recorder: Recorder, group: str
) -> None:
    joined(handle, recorder, group)
    ints = array.array("i", [1, 2, 3])
    sent = [
        (Guarantee.AGREED, (b"ab", bytearray(b"cd"), memoryview(b"efgh")[1:3])),
        (Guarantee.SAFE, (memoryview(b"abcdef")[::2],)),
        (Guarantee.FIFO, (ints,)),
        (Guarantee.UNORDERED, ()),
        (3, (b"int guarantee",)),
    ]
    for guarantee, buffers in sent:
        handle.mcast_joined(guarantee, *buffers)
    dispatch_until([(handle, recorder)], lambda: len(recorder.deliveries()) == len(sent))
    assert sorted(recorder.deliveries()) == sorted(
        [b"abcdfg", b"ace", ints.tobytes(), b"", b"int guarantee"]
    )
    pid = os.getpid()
    assert all(e[1:4] == (group, 1, pid) for e in recorder.events if e[0] == "deliver")


def test_numpy_arrays_are_buffers(handle: cpg.Handle, recorder: Recorder, group: str) -> None:
    numpy = pytest.importorskip("numpy")
    joined(handle, recorder, group)
    samples = numpy.arange(16, dtype="<f4")
    handle.mcast_joined(AGREED, samples)
    dispatch_until([(handle, recorder)], lambda: len(recorder.deliveries()) == 1)
    assert recorder.deliveries() == [samples.tobytes()]


def test_mcast_many_sends_a_batch_in_order(
    handle: cpg.Handle, recorder: Recorder, group: str
) -> None:
    joined(handle, recorder, group)
    messages = [b"%05d" % i for i in range(5000)]
    assert handle.mcast_many(AGREED, messages) == len(messages)
    assert handle.mcast_many(AGREED, (m for m in [b"gen-1", b"gen-2"]), timeout=0) == 2
    assert handle.mcast_many(AGREED, []) == 0
    dispatch_until([(handle, recorder)], lambda: len(recorder.deliveries()) == 5002)
    assert recorder.deliveries() == [*messages, b"gen-1", b"gen-2"]


# Messages ------------------------------------------------------------------------------------


def test_a_message_is_a_read_only_zero_copy_buffer(
    socket: Path, group: str, recorder: Recorder
) -> None:
    kept: list[cpg.Message] = []

    def deliver(h: cpg.Handle, g: str | bytes, n: int, p: int, msg: cpg.Message) -> None:
        kept.append(msg)

    with cpg.Handle(deliver, recorder.confchg, socket=socket) as handle:
        joined(handle, recorder, group)
        payload = struct.pack("<HI", 7, 123456) + b"tail"
        handle.mcast_joined(AGREED, payload)
        dispatch_until([(handle, recorder)], lambda: len(kept) == 1)
    msg = kept[0]
    view = memoryview(msg)
    assert view.readonly
    assert view.tobytes() == payload
    with pytest.raises(TypeError):
        view[0] = 1
    assert struct.unpack_from("<HI", msg) == (7, 123456)
    assert bytes(msg) == payload
    assert len(msg) == len(payload)
    assert msg == payload
    assert msg == bytearray(payload)
    assert msg != b"other"
    assert msg != "not a buffer"
    assert hash(msg) == hash(payload)
    assert msg.decode("latin-1") == payload.decode("latin-1")
    assert "Message(" in repr(msg)
    with pytest.raises(BufferError):
        msg.__buffer__(1)  # PyBUF_WRITABLE
    # A view keeps the payload alive after the message object is gone.
    del kept[:], msg
    gc.collect()
    assert view.tobytes() == payload


# Dispatch ------------------------------------------------------------------------------------


def test_dispatch_modes(handle: cpg.Handle, recorder: Recorder, group: str) -> None:
    assert handle.dispatch() == 0
    assert handle.dispatch(DispatchFlags.ALL) == 0
    with pytest.raises(totemcast.TryAgainError):
        handle.dispatch(DispatchFlags.ONE_NONBLOCKING)
    with pytest.raises(totemcast.InvalidParamError):
        handle.dispatch(9)
    handle.join(group)
    assert handle.dispatch(DispatchFlags.ONE) == 1  # waits for the join's confchg
    for i in range(3):
        handle.mcast_joined(AGREED, b"%d" % i)
    assert handle.dispatch(DispatchFlags.ONE) == 1
    assert recorder.deliveries() == [b"0"]
    dispatch_until([(handle, recorder)], lambda: len(recorder.deliveries()) == 3)
    handle.mcast_joined(AGREED, b"last")
    assert readable(handle, WITHIN)
    assert handle.dispatch(DispatchFlags.ONE_NONBLOCKING) == 1
    assert recorder.deliveries() == [b"0", b"1", b"2", b"last"]
    with pytest.raises(totemcast.TryAgainError):
        handle.dispatch(DispatchFlags.ONE_NONBLOCKING)


def test_blocking_dispatch_ends_when_a_callback_finalizes(socket: Path, group: str) -> None:
    seen: list[bytes] = []

    def deliver(h: cpg.Handle, g: str | bytes, n: int, p: int, msg: cpg.Message) -> None:
        seen.append(bytes(msg))
        if msg == b"stop":
            h.finalize()

    handle = cpg.Handle(deliver, socket=socket)
    handle.join(group)
    assert handle.dispatch(DispatchFlags.ONE) == 1  # the join's confchg (no callback set)
    handle.mcast_many(AGREED, [b"a", b"stop", b"after"])
    assert handle.dispatch(DispatchFlags.BLOCKING) == 2
    assert seen == [b"a", b"stop"]
    with pytest.raises(totemcast.BadHandleError):
        handle.dispatch()


def test_blocking_dispatch_in_a_thread_ends_when_another_thread_finalizes(
    socket: Path, group: str
) -> None:
    delivered: list[bytes] = []
    all_delivered = threading.Event()

    def deliver(h: cpg.Handle, g: str | bytes, n: int, p: int, msg: cpg.Message) -> None:
        delivered.append(bytes(msg))
        if len(delivered) == 100:
            all_delivered.set()

    handle = cpg.Handle(deliver, socket=socket)
    handle.join(group)
    assert handle.dispatch(DispatchFlags.ONE) == 1  # the join's confchg
    results: list[int | BaseException] = []

    def run() -> None:
        try:
            results.append(handle.dispatch(DispatchFlags.BLOCKING))
        except BaseException as error:
            results.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    # This thread sends while the other one waits in dispatch: the handle is shared.
    for i in range(100):
        handle.mcast_joined(AGREED, b"%d" % i)
    assert all_delivered.wait(WITHIN)
    handle.finalize()
    thread.join(WITHIN)
    assert not thread.is_alive()
    assert results == [100]
    assert delivered == [b"%d" % i for i in range(100)]


def test_a_raising_callback_propagates_and_later_events_stay_queued_in_order(
    socket: Path, group: str
) -> None:
    seen: list[bytes] = []

    class Boom(Exception):
        pass

    def deliver(h: cpg.Handle, g: str | bytes, n: int, p: int, msg: cpg.Message) -> None:
        seen.append(bytes(msg))
        if bytes(msg).startswith(b"boom"):
            raise Boom(bytes(msg))

    recorder = Recorder()
    with cpg.Handle(deliver, recorder.confchg, socket=socket) as handle:
        joined(handle, recorder, group)
        handle.mcast_many(AGREED, [b"1", b"boom-a", b"2", b"3", b"boom-b", b"4"])
        with pytest.raises(Boom, match="boom-a"):
            dispatch_until([(handle, recorder)], lambda: False, within=WITHIN)
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


def test_keyboard_interrupt_stops_a_waiting_dispatch(handle: cpg.Handle, group: str) -> None:
    handle.join(group)
    handle.dispatch(DispatchFlags.ONE)  # the join's confchg
    fired: list[int] = []

    def interrupt(signum: int, frame: object) -> None:
        fired.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(KeyboardInterrupt):
            handle.dispatch(DispatchFlags.BLOCKING)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert fired == [signal.SIGALRM]
    # The handle still works.
    handle.mcast_joined(AGREED, b"after")
    assert handle.dispatch(DispatchFlags.ONE) == 1


# Descriptor ----------------------------------------------------------------------------------


def test_a_send_right_after_join_is_ordered_after_the_join(socket: Path) -> None:
    pid = os.getpid()
    for _ in range(8):
        recorder = Recorder()
        with recorder.handle(socket) as handle:
            name = f"race-{uuid.uuid4().hex[:8]}"
            handle.join(name)
            handle.mcast_joined(AGREED, b"first")
            handle.mcast_joined(AGREED, bytes(2 << 20))
            dispatch_until([(handle, recorder)], events_reach(recorder, 3), within=5)
            assert recorder.events[0][0] == "confchg"
            assert recorder.events[1] == ("deliver", name, 1, pid, b"first")


def test_the_descriptor_stays_readable_for_events_that_came_while_a_send_waited(
    socket: Path,
) -> None:
    # The send waits for room several times (the message is 4 times the request ring): those
    # waits used to consume the wake-ups the node gave for the events that arrived meanwhile,
    # so the descriptor stayed unreadable with events waiting, and the node, waiting for room
    # in the event ring, dropped the handle 5 s later.
    recorder = Recorder()
    with recorder.handle(socket) as handle:
        name = f"rearm-{uuid.uuid4().hex[:8]}"
        handle.join(name)
        handle.mcast_joined(AGREED, b"first")
        big = os.urandom(8 << 20)
        handle.mcast_joined(AGREED, big)
        dispatch_until([(handle, recorder)], events_reach(recorder, 3))
        assert recorder.deliveries() == [b"first", big]


def events_reach(recorder: Recorder, count: int) -> Callable[[], bool]:
    return lambda: len(recorder.events) >= count


def test_descriptor_is_readable_exactly_while_events_wait(
    handle: cpg.Handle, recorder: Recorder, group: str
) -> None:
    assert handle.fileno() == handle.fd_get()
    assert not readable(handle)
    handle.join(group)
    assert readable(handle, WITHIN)
    assert handle.dispatch() == 1
    assert not readable(handle)
    handle.mcast_joined(AGREED, b"x")
    handle.mcast_joined(AGREED, b"y")
    assert readable(handle, WITHIN)
    assert handle.dispatch(DispatchFlags.ONE) == 1
    dispatch_until([(handle, recorder)], lambda: len(recorder.deliveries()) == 2)
    assert not readable(handle)
    # Events read while a request waited for its answer keep the descriptor readable.
    handle.mcast_joined(AGREED, b"z")
    assert readable(handle, WITHIN)
    handle.local_get()
    assert readable(handle)
    assert handle.dispatch() == 1
    assert not readable(handle)


# Lifetime ------------------------------------------------------------------------------------


def test_context(socket: Path) -> None:
    marker = object()
    with cpg.Handle(context=marker, socket=socket) as handle:
        assert handle.context_get() is marker
        handle.context_set([1, 2])
        assert handle.context_get() == [1, 2]
        handle.context_set(None)
        assert handle.context_get() is None


CALLS_AFTER_FINALIZE: dict[str, Callable[[cpg.Handle], object]] = {
    "join": lambda h: h.join("g"),
    "leave": lambda h: h.leave("g"),
    "mcast_joined": lambda h: h.mcast_joined(AGREED, b"x"),
    "mcast_many": lambda h: h.mcast_many(AGREED, [b"x"]),
    "dispatch": lambda h: h.dispatch(),
    "dispatch_blocking": lambda h: h.dispatch(DispatchFlags.BLOCKING),
    "fd_get": lambda h: h.fd_get(),
    "fileno": lambda h: h.fileno(),
    "membership_get": lambda h: h.membership_get("g"),
    "local_get": lambda h: h.local_get(),
    "max_atomic_msgsize_get": lambda h: h.max_atomic_msgsize_get(),
    "context_get": lambda h: h.context_get(),
    "context_set": lambda h: h.context_set(1),
    "iteration": lambda h: h.iteration(cpg.IterationType.ALL),
    "flow_control_state_get": lambda h: h.flow_control_state_get(),
    "zcb_alloc": lambda h: h.zcb_alloc(1),
    "zcb_free": lambda h: h.zcb_free(None),  # type: ignore[arg-type]
    "finalize": lambda h: h.finalize(),
}


@pytest.mark.parametrize("call", CALLS_AFTER_FINALIZE.values(), ids=CALLS_AFTER_FINALIZE.keys())
def test_every_call_after_finalize_is_bad_handle(
    socket: Path, call: Callable[[cpg.Handle], object]
) -> None:
    handle = cpg.Handle(socket=socket)
    handle.finalize()
    with pytest.raises(totemcast.BadHandleError):
        call(handle)
    assert "finalized" in repr(handle)


def test_context_manager_finalizes_once(socket: Path, group: str) -> None:
    with cpg.Handle(socket=socket) as handle:
        handle.join(group)
        wait_for(lambda: handle.membership_get(group) != [])
    with pytest.raises(totemcast.BadHandleError):
        handle.local_get()
    with cpg.Handle(socket=socket) as handle:
        handle.finalize()  # an explicit finalize in the block is fine
    with cpg.Handle(socket=socket) as probe:
        wait_for(lambda: probe.membership_get(group) == [])


def test_a_handle_and_its_callbacks_are_collected(socket: Path) -> None:
    class Owner:
        def __init__(self) -> None:
            self.handle = cpg.Handle(self.deliver, socket=socket, context=self)

        def deliver(self, *args: object) -> None:
            pass

    owner = Owner()
    probe = weakref.ref(owner)
    del owner
    gc.collect()
    assert probe() is None


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


def test_waits_on_a_stopped_node_honour_timeouts_and_ctrl_c() -> None:
    with LocalCluster(1, name="pytest-paused") as cluster:
        sender_events = Recorder()
        sender = sender_events.handle(cluster.socket(0))
        joined(sender, sender_events, "s")
        cluster.pause(0)
        try:
            # Messages of up to 1 MiB go in one record each (larger ones would wait between
            # parts, uninterruptibly).
            filled = sender.mcast_many(AGREED, [bytes(1 << 19)] * 64, timeout=0)
            assert filled < 64
            while sent := sender.mcast_many(AGREED, [b"f"] * 1000, timeout=0):
                filled += sent
            started = time.monotonic()
            assert sender.mcast_many(AGREED, [b"x"], timeout=0.2) == 0
            assert time.monotonic() - started >= 0.2
            interrupted_after(0.2, lambda: sender.mcast_many(AGREED, [b"y"]))
            with pytest.raises(totemcast.TryAgainError):
                sender.mcast_joined(AGREED, b"w")
            assert sender.flow_control_state_get() is cpg.FlowControlState.ENABLED
            interrupted_after(0.2, lambda: sender.dispatch(DispatchFlags.BLOCKING))
        finally:
            cluster.resume(0)
        # The node makes the descriptor readable once it has made room after the TRY_AGAIN.
        assert readable(sender, WITHIN)
        assert sender.mcast_many(AGREED, [b"z"]) == 1
        dispatch_until([(sender, sender_events)], lambda: len(sender_events.deliveries()) > filled)
        assert sender_events.deliveries()[-1] == b"z"
        assert len(sender_events.deliveries()) == filled + 1
        sender.finalize()


def test_ctrl_c_interrupts_requests_and_a_signal_handler_may_finalize() -> None:
    with LocalCluster(1, name="pytest-cpg-requests") as cluster:
        recorder = Recorder()
        handle = recorder.handle(cluster.socket(0))
        other = cpg.Handle(socket=cluster.socket(0))
        cluster.pause(0)
        try:
            interrupted_after(0.2, lambda: handle.join("late"))
            interrupted_after(0.2, lambda: handle.membership_get("late"))
        finally:
            cluster.resume(0)
        # The interrupted join took effect (its own confchg comes); the late answers are
        # applied or dropped, and the handle goes on.
        dispatch_until([(handle, recorder)], lambda: joined_members(recorder) == 1)
        assert handle.membership_get("late") == [cpg.Address(1, os.getpid())]
        with pytest.raises(totemcast.ExistError):
            handle.join("late")

        busy: list[BaseException] = []

        def handler(signum: int, frame: object) -> None:
            try:
                other.local_get()  # another request of this thread's waiting handle
            except totemcast.BusyError as error:
                busy.append(error)
            other.finalize()  # the waiting request ends

        previous = signal.signal(signal.SIGALRM, handler)
        cluster.pause(0)
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.2)
            with pytest.raises(totemcast.BadHandleError, match="finalized while"):
                other.membership_get("late")
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            cluster.resume(0)
        assert len(busy) == 1
        assert "signal handler" in str(busy[0])
        assert "finalized" in repr(other)
        assert handle.local_get() == 1
        handle.finalize()
