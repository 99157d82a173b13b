"""A Python receiver behind on its events while the node holds a backlog for it.

The receiver (on node 1) and the sender (on node 2) are handles of this process: a process is
one member per node. A local_get behind a backlog larger than the event ring is answered (it
hung: the bench's fan-out step), and a receiver the node drops for being slow learns it.
"""

import select
import signal
import struct
import time
from collections.abc import Iterator

import pytest

import totemcast
from conftest import WITHIN
from totemcast import cpg
from totemcast.cpg import DispatchFlags, Guarantee
from totemcast.testing import LocalCluster

SIZE = 64 << 10


@pytest.fixture(scope="module")
def pair() -> Iterator[LocalCluster]:
    """Two nodes in one ring."""
    with LocalCluster(2, name="pytest-backlog") as cluster:
        yield cluster


class Counter:
    """Counts deliveries (checking their order) and the last membership's size."""

    def __init__(self) -> None:
        self.delivered = 0
        self.members = 0

    def deliver(self, _h: cpg.Handle, _g: object, _n: int, _p: int, msg: cpg.Message) -> None:
        (seq,) = struct.unpack_from("<Q", msg)
        assert seq == self.delivered, "out of order or lost"
        self.delivered += 1

    def confchg(self, _h: cpg.Handle, _g: object, members: list[cpg.Address], *_: object) -> None:
        self.members = len(members)


def pump(handle: cpg.Handle, until: object) -> None:
    """Dispatches until `until()` holds."""
    deadline = time.monotonic() + WITHIN
    while not until():  # type: ignore[operator]
        assert time.monotonic() < deadline, "stuck"
        select.select([handle], [], [], 0.1)
        handle.dispatch(DispatchFlags.ALL)


def clients_counter(cluster: LocalCluster, name: str) -> int:
    status = cluster.status(0)
    assert status is not None
    return int(status["counters"]["clients"][name])


def send_and_deliver(sender: cpg.Handle, seen: Counter, first: int, count: int) -> None:
    """Sends `count` messages and waits for their own delivery."""
    message = bytearray(SIZE)
    for seq in range(first, first + count):
        struct.pack_into("<Q", message, 0, seq)
        while True:
            try:
                sender.mcast_joined(Guarantee.AGREED, message)
                break
            except totemcast.TryAgainError:
                sender.dispatch(DispatchFlags.ALL)
                select.select([sender], [], [], 0.01)
    pump(sender, lambda: seen.delivered == first + count)


def joined_pair(
    cluster: LocalCluster, group: str
) -> tuple[cpg.Handle, Counter, cpg.Handle, Counter]:
    at_receiver, at_sender = Counter(), Counter()
    receiver = cpg.Handle(
        deliver=at_receiver.deliver, confchg=at_receiver.confchg, socket=cluster.socket(0)
    )
    receiver.join(group)
    pump(receiver, lambda: at_receiver.members == 1)
    sender = cpg.Handle(
        deliver=at_sender.deliver, confchg=at_sender.confchg, socket=cluster.socket(1)
    )
    sender.join(group)
    pump(sender, lambda: at_sender.members == 2)
    pump(receiver, lambda: at_receiver.members == 2)
    return receiver, at_receiver, sender, at_sender


def test_local_get_behind_a_backlog_larger_than_the_ring_is_answered(
    pair: LocalCluster, group: str
) -> None:
    receiver, at_receiver, sender, at_sender = joined_pair(pair, group)
    with receiver, sender:
        before = clients_counter(pair, "events_written")
        count = 416  # 26 MiB: 8 fill the receiver's ring, 18 wait above the 16 MiB throttle
        send_and_deliver(sender, at_sender, 0, count)
        deadline = time.monotonic() + WITHIN
        while clients_counter(pair, "events_written") < before + count:
            assert time.monotonic() < deadline, "node 1 never delivered them"

        # The wait inside is without end; SIGALRM turns a hang into a failure.
        def hung(*_: object) -> None:
            raise AssertionError("local_get behind the backlog was never answered")

        previous = signal.signal(signal.SIGALRM, hung)
        signal.alarm(int(WITHIN))
        try:
            assert receiver.local_get() == pair.nodeid(0)
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
        pump(receiver, lambda: at_receiver.delivered == count)
        assert clients_counter(pair, "disconnected_slow") == 0


def test_a_receiver_the_node_drops_for_being_slow_learns_it(pair: LocalCluster, group: str) -> None:
    receiver, _, sender, at_sender = joined_pair(pair, group)
    with receiver, sender:
        before = clients_counter(pair, "disconnected_slow")
        send_and_deliver(sender, at_sender, 0, 200)
        count = 200
        deadline = time.monotonic() + WITHIN
        # Events still come 5 s after it last read: the node drops it.
        while clients_counter(pair, "disconnected_slow") == before:
            assert time.monotonic() < deadline, "the node never dropped the receiver"
            send_and_deliver(sender, at_sender, count, 1)
            count += 1
        ready, _, _ = select.select([receiver], [], [], WITHIN)
        assert ready, "the descriptor did not wake"

        def dispatch_until_error() -> None:
            while True:
                assert receiver.dispatch(DispatchFlags.ALL) > 0, "0 events, no error"

        with pytest.raises(totemcast.LibraryError):
            dispatch_until_error()
        for flags in (DispatchFlags.ALL, DispatchFlags.ONE_NONBLOCKING):
            with pytest.raises(totemcast.LibraryError):
                receiver.dispatch(flags)
        assert select.select([receiver], [], [], 0)[0], "the descriptor stopped being readable"
        with pytest.raises(totemcast.LibraryError):
            receiver.local_get()
        chunk = bytes(60 << 10)

        def send_until_error() -> None:
            for _ in range(1000):
                receiver.mcast_many(Guarantee.AGREED, [chunk] * 16, timeout=0)

        with pytest.raises(totemcast.LibraryError):
            send_until_error()


class Keeper(Counter):
    """Counts deliveries and keeps the messages (views of the event ring) while `keep` holds."""

    def __init__(self) -> None:
        super().__init__()
        self.keep = True
        self.kept: list[cpg.Message] = []

    def deliver(self, h: cpg.Handle, g: object, n: int, p: int, msg: cpg.Message) -> None:
        super().deliver(h, g, n, p, msg)
        if self.keep:
            self.kept.append(msg)


def test_messages_dropped_after_dispatch_let_the_node_write_what_waits(
    pair: LocalCluster, group: str
) -> None:
    """Messages kept past `dispatch` fill the ring; dropping them later, while the handle
    waits on its descriptor with nothing to read, must let the node write the events it holds
    back. Their space used to be freed only at the handle's next read, and nothing would bring
    one: the node waited for the space, the handle for the node."""
    at_receiver = Keeper()
    receiver = cpg.Handle(
        deliver=at_receiver.deliver, confchg=at_receiver.confchg, socket=pair.socket(0)
    )
    receiver.join(group)
    pump(receiver, lambda: at_receiver.members == 1)
    at_sender = Counter()
    sender = cpg.Handle(deliver=at_sender.deliver, confchg=at_sender.confchg, socket=pair.socket(1))
    with receiver, sender:
        sender.join(group)
        pump(sender, lambda: at_sender.members == 2)
        pump(receiver, lambda: at_receiver.members == 2)
        at_receiver.kept.clear()
        dropped = clients_counter(pair, "disconnected_slow")
        before = clients_counter(pair, "events_written")
        count = 200  # 12.5 MiB: more than the receiver's 2 MiB ring holds
        send_and_deliver(sender, at_sender, 0, count)
        deadline = time.monotonic() + WITHIN
        while clients_counter(pair, "events_written") < before + count:
            assert time.monotonic() < deadline, "node 1 never delivered them"
        # Read what the ring holds, keeping every message, until nothing more comes.
        while select.select([receiver], [], [], 0)[0]:
            receiver.dispatch(DispatchFlags.ALL)
        assert 0 < len(at_receiver.kept) == at_receiver.delivered < count
        at_receiver.keep = False
        at_receiver.kept.clear()
        ready, _, _ = select.select([receiver], [], [], WITHIN)
        assert ready, "the node did not write the events it held back"
        assert clients_counter(pair, "disconnected_slow") == dropped, (
            "the node dropped the receiver for releasing nothing"
        )
        pump(receiver, lambda: at_receiver.delivered == count)
