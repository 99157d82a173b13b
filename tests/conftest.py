"""Shared fixtures: local clusters of real nodes, unique group names, event recorders."""

import os
import selectors
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from totemcast import cpg
from totemcast.testing import LocalCluster

#: Longest wait for anything a test expects from the nodes (a loaded machine is slow).
WITHIN = 30.0


@pytest.fixture(scope="session")
def node() -> Iterator[LocalCluster]:
    """One node, shared by the tests that do not disturb it (unique groups keep them apart)."""
    with LocalCluster(1, name="pytest-one") as cluster:
        yield cluster


@pytest.fixture(scope="session")
def three() -> Iterator[LocalCluster]:
    """Three nodes in one ring, shared by the tests that do not kill or pause nodes."""
    with LocalCluster(3, name="pytest-three") as cluster:
        yield cluster


@pytest.fixture
def socket(node: LocalCluster) -> Path:
    """The socket of the shared single node."""
    return node.socket(0)


@pytest.fixture
def group() -> str:
    """A group name no other test uses."""
    return f"g-{uuid.uuid4().hex[:12]}"


@dataclass
class Recorder:
    """Callbacks that record every event as a tuple, in order.

    `("deliver", group, nodeid, pid, payload_bytes)`, `("confchg", group, members, left,
    joined)` with lists of `(nodeid, pid, reason)` tuples, `("totem", ring_id, nodeids)`.
    """

    events: list[tuple[Any, ...]] = field(default_factory=list)
    handles: list[cpg.Handle] = field(default_factory=list)

    def deliver(
        self, handle: cpg.Handle, group: str | bytes, nodeid: int, pid: int, msg: cpg.Message
    ) -> None:
        self.handles.append(handle)
        self.events.append(("deliver", group, nodeid, pid, bytes(msg)))

    def confchg(
        self,
        handle: cpg.Handle,
        group: str | bytes,
        members: list[cpg.Address],
        left: list[cpg.Address],
        joined: list[cpg.Address],
    ) -> None:
        self.handles.append(handle)
        as_tuples = [[tuple(a) for a in listing] for listing in (members, left, joined)]
        self.events.append(("confchg", group, *as_tuples))

    def totem_confchg(self, handle: cpg.Handle, ring_id: cpg.RingId, nodeids: list[int]) -> None:
        self.handles.append(handle)
        self.events.append(("totem", tuple(ring_id), nodeids))

    def handle(self, socket: str | os.PathLike[str], **kwargs: Any) -> cpg.Handle:
        """A handle whose callbacks record here."""
        return cpg.Handle(self.deliver, self.confchg, self.totem_confchg, socket=socket, **kwargs)

    def deliveries(self) -> list[bytes]:
        """The payloads delivered so far."""
        return [event[4] for event in self.events if event[0] == "deliver"]


def dispatch_until(
    pairs: Sequence[tuple[cpg.Handle, Recorder]],
    done: Callable[[], bool],
    within: float = WITHIN,
) -> None:
    """Dispatches the handles when their descriptors are readable until `done()` holds."""
    deadline = time.monotonic() + within
    with selectors.DefaultSelector() as selector:
        for handle, _ in pairs:
            selector.register(handle.fd_get(), selectors.EVENT_READ, handle)
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                recorded = {id(r): r.events[-5:] for _, r in pairs}
                raise AssertionError(f"condition not met within {within} s; last: {recorded}")
            for key, _ in selector.select(min(left, 1.0)):
                key.data.dispatch(cpg.DispatchFlags.ALL)


def joined_members(recorder: Recorder) -> int:
    """The member count of the recorder's latest confchg (0 before any)."""
    for event in reversed(recorder.events):
        if event[0] == "confchg":
            return len(event[2])
    return 0
