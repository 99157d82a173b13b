"""Closed process groups (the shape of Corosync's CPG API).

This module holds the CPG enums, limits and value types. Values and member names are
Corosync's (`CPG_TYPE_AGREED` is `Guarantee.AGREED == 2`, and so on).
"""

from typing import NamedTuple

from totemcast._native import (
    CPG_MAX_NAME_LENGTH,
    MAX_ATOMIC_MSGSIZE,
    DispatchFlags,
    FlowControlState,
    Guarantee,
    IterationType,
    Reason,
)

__all__ = [
    "CPG_MAX_NAME_LENGTH",
    "MAX_ATOMIC_MSGSIZE",
    "Address",
    "DispatchFlags",
    "FlowControlState",
    "Guarantee",
    "IterationType",
    "Reason",
    "RingId",
]


class Address(NamedTuple):
    """A group member: the process `pid` on node `nodeid`, and why it is listed."""

    nodeid: int
    pid: int
    reason: Reason = Reason.UNDEFINED


class RingId(NamedTuple):
    """A totem ring: its representative (lowest node id) and its sequence number."""

    nodeid: int
    seq: int
