"""join/leave/send/finalize sequences on a few handles, checked against a model of CPG.

The handles belong to this process and sit on the three nodes of the shared cluster (two on
node 1), so a member is (nodeid, pid) and the two handles on node 1 exclude each other from a
group. After every step the test waits until each handle has delivered exactly what the model
predicts (nothing more), in order.
"""

import os
import selectors
import time
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

import totemcast
from conftest import WITHIN, Recorder
from totemcast import cpg
from totemcast.cpg import DispatchFlags, Guarantee, Reason
from totemcast.testing import LocalCluster

#: The node (index) of each handle.
NODES = (0, 0, 1, 2)
SLOTS = st.integers(0, len(NODES) - 1)
GROUPS = st.sampled_from(["a", "b"])

Member = tuple[int, int]


class CpgMachine(RuleBasedStateMachine):
    """Handles on a live cluster next to a model of their groups."""

    cluster: LocalCluster

    def __init__(self) -> None:
        super().__init__()
        self.prefix = uuid.uuid4().hex[:8]
        self.pid = os.getpid()
        self.recorders = [Recorder() for _ in NODES]
        self.handles = [
            r.handle(self.cluster.socket(n)) for r, n in zip(self.recorders, NODES, strict=True)
        ]
        self.expected: list[list[tuple[Any, ...]]] = [[] for _ in NODES]
        self.group_of: list[str | None] = [None for _ in NODES]
        self.members: dict[str, list[Member]] = {}

    def name(self, group: str) -> str:
        return f"{self.prefix}-{group}"

    def me(self, slot: int) -> Member:
        return (NODES[slot] + 1, self.pid)

    def in_group(self, group: str) -> list[int]:
        return [s for s, g in enumerate(self.group_of) if g == group]

    def confchg(self, group: str, left: list[Any], joined: list[Any]) -> None:
        """Expects a confchg of `group` at every handle in it (after the change)."""
        listing = [(*m, Reason.UNDEFINED) for m in sorted(self.members.get(group, []))]
        for slot in self.in_group(group):
            self.expected[slot].append(("confchg", self.name(group), listing, left, joined))

    @rule(slot=SLOTS, group=GROUPS)
    def join(self, slot: int, group: str) -> None:
        handle, me = self.handles[slot], self.me(slot)
        if self.group_of[slot] is not None or me in self.members.get(group, []):
            with pytest.raises(totemcast.ExistError):
                handle.join(self.name(group))
            return
        handle.join(self.name(group))
        self.group_of[slot] = group
        self.members.setdefault(group, []).append(me)
        self.confchg(group, [], [(*me, Reason.JOIN)])

    @rule(slot=SLOTS, group=GROUPS)
    def leave(self, slot: int, group: str) -> None:
        handle, me = self.handles[slot], self.me(slot)
        if self.group_of[slot] != group:
            with pytest.raises(totemcast.NotExistError):
                handle.leave(self.name(group))
            return
        handle.leave(self.name(group))
        self.members[group].remove(me)
        self.confchg(group, [(*me, Reason.LEAVE)], [])  # the leaver sees its own leave
        self.group_of[slot] = None

    @rule(slot=SLOTS, payload=st.binary(max_size=64), guarantee=st.sampled_from(Guarantee))
    def send(self, slot: int, payload: bytes, guarantee: Guarantee) -> None:
        handle, group = self.handles[slot], self.group_of[slot]
        if group is None:
            with pytest.raises(totemcast.NotExistError):
                handle.mcast_joined(guarantee, payload)
            return
        handle.mcast_joined(guarantee, payload)
        for other in self.in_group(group):
            self.expected[other].append(("deliver", self.name(group), *self.me(slot), payload))

    @rule(slot=SLOTS)
    def finalize_and_reconnect(self, slot: int) -> None:
        self.handles[slot].finalize()
        group, me = self.group_of[slot], self.me(slot)
        self.group_of[slot] = None
        if group is not None:
            self.members[group].remove(me)
            self.confchg(group, [(*me, Reason.PROCDOWN)], [])
        self.recorders[slot] = Recorder()
        self.handles[slot] = self.recorders[slot].handle(self.cluster.socket(NODES[slot]))
        self.expected[slot] = []
        if group is not None:
            # The node drops the member when the PROCDOWN is delivered; no handle of ours
            # may be in the group to see it, so ask until it is gone.
            expected = [cpg.Address(*m) for m in sorted(self.members[group])]
            deadline = time.monotonic() + WITHIN
            while self.handles[slot].membership_get(self.name(group)) != expected:
                assert time.monotonic() < deadline, "the finalized handle is still a member"
                time.sleep(0.005)

    @rule(slot=SLOTS, group=GROUPS)
    def membership(self, slot: int, group: str) -> None:
        members = self.handles[slot].membership_get(self.name(group))
        assert members == [cpg.Address(*m) for m in sorted(self.members.get(group, []))]

    @invariant()
    def every_handle_delivered_what_the_model_predicts(self) -> None:
        deadline = time.monotonic() + WITHIN
        with selectors.DefaultSelector() as selector:
            for handle in self.handles:
                selector.register(handle, selectors.EVENT_READ)
            while True:
                done = True
                for recorder, expected in zip(self.recorders, self.expected, strict=True):
                    seen = recorder.events
                    assert seen == expected[: len(seen)], "a handle delivered an unexpected event"
                    done = done and len(seen) == len(expected)
                if done:
                    return
                left = deadline - time.monotonic()
                assert left > 0, "a handle is missing events"
                for key, _ in selector.select(left):
                    key.fileobj.dispatch(DispatchFlags.ALL)  # type: ignore[union-attr]

    def teardown(self) -> None:
        for handle in self.handles:
            handle.finalize()


def test_cpg_matches_its_model(three: LocalCluster) -> None:
    CpgMachine.cluster = three
    run_state_machine_as_test(
        CpgMachine,
        settings=settings(
            max_examples=50,
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
