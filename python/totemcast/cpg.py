"""Closed process groups (the shape of Corosync's CPG API).

A `Handle` is one connection to the local node. It can be in one group at a time; every
member of a group receives the group's messages and membership changes in the same total
order. Enum values and member names are Corosync's (`CPG_TYPE_AGREED` is
`Guarantee.AGREED == 2`, and so on)::

    from totemcast import cpg

    def deliver(handle, group, nodeid, pid, msg):
        print(group, nodeid, pid, bytes(msg))

    with cpg.Handle(deliver=deliver) as handle:
        handle.join("workers")
        handle.mcast_joined(cpg.Guarantee.AGREED, b"hello")
        handle.dispatch(cpg.DispatchFlags.ONE)

The node is `node=` (an embedded `totemcast.Node`, reached without a socket), else the one on
`socket=`, else on `$TOTEMCAST_SOCKET`, else on `DEFAULT_SOCKET`.
"""

from collections.abc import Callable
from os import PathLike
from typing import Any, NamedTuple

from totemcast._native import (
    CPG_MAX_NAME_LENGTH,
    DEFAULT_SOCKET,
    MAX_ATOMIC_MSGSIZE,
    DispatchFlags,
    FlowControlState,
    Guarantee,
    InvalidParamError,
    IterationType,
    Message,
    Node,
    Reason,
    ZcbBuffer,
)
from totemcast._native import CpgHandle as Handle

__all__ = [
    "CPG_MAX_NAME_LENGTH",
    "CPG_MODEL_V1",
    "CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF",
    "DEFAULT_SOCKET",
    "MAX_ATOMIC_MSGSIZE",
    "Address",
    "ConfchgFn",
    "DeliverFn",
    "DispatchFlags",
    "FlowControlState",
    "Guarantee",
    "Handle",
    "IterationDescription",
    "IterationType",
    "Message",
    "Reason",
    "RingId",
    "TotemConfchgFn",
    "ZcbBuffer",
    "initialize",
    "model_initialize",
]

#: `cpg_model_t`: the only model, `CPG_MODEL_V1`.
CPG_MODEL_V1 = 1
#: Model flag: deliver one totem confchg right after the handle's first confchg.
CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF = 0x01


class Address(NamedTuple):
    """A group member: the process `pid` on node `nodeid`, and why it is listed."""

    nodeid: int
    pid: int
    reason: Reason = Reason.UNDEFINED


class RingId(NamedTuple):
    """A totem ring: its representative (lowest node id) and its sequence number."""

    nodeid: int
    seq: int


class IterationDescription(NamedTuple):
    """An entry of `Handle.iteration` (`cpg_iteration_description_t`).

    `group` is the binary group name; `nodeid` and `pid` are 0 for `IterationType.NAME_ONLY`.
    """

    group: bytes
    nodeid: int
    pid: int


#: `deliver(handle, group, nodeid, pid, msg)`: a message (`msg` is a read-only buffer).
DeliverFn = Callable[[Handle, str | bytes, int, int, Message], object]
#: `confchg(handle, group, members, left, joined)`: a membership change of the group.
ConfchgFn = Callable[[Handle, str | bytes, list[Address], list[Address], list[Address]], object]
#: `totem_confchg(handle, ring_id, nodeids)`: a new totem configuration.
TotemConfchgFn = Callable[[Handle, RingId, list[int]], object]


def initialize(
    deliver: DeliverFn | None = None,
    confchg: ConfchgFn | None = None,
    totem_confchg: TotemConfchgFn | None = None,
    *,
    initial_totem_conf: bool = False,
    context: Any = None,
    node: Node | None = None,
    socket: str | PathLike[str] | None = None,
) -> Handle:
    """`cpg_initialize`: connects to the node and returns a `Handle` (the same as `Handle(...)`).

    Raises:
        LibraryError: no node listens on the socket, or the embedded node is stopped.
        AccessError: the node does not allow this user.
    """
    return Handle(
        deliver,
        confchg,
        totem_confchg,
        initial_totem_conf=initial_totem_conf,
        context=context,
        node=node,
        socket=socket,
    )


def model_initialize(
    deliver: DeliverFn | None = None,
    confchg: ConfchgFn | None = None,
    totem_confchg: TotemConfchgFn | None = None,
    *,
    model: int = CPG_MODEL_V1,
    flags: int = 0,
    initial_totem_conf: bool = False,
    context: Any = None,
    node: Node | None = None,
    socket: str | PathLike[str] | None = None,
) -> Handle:
    """`cpg_model_initialize`: `initialize` with Corosync's model and flags.

    Args:
        deliver: see `Handle`.
        confchg: see `Handle`.
        totem_confchg: see `Handle`.
        model: must be `CPG_MODEL_V1`.
        flags: `CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF` or 0; the same as
            `initial_totem_conf=True`.
        initial_totem_conf: see `Handle`.
        context: see `Handle`.
        node: see `Handle`.
        socket: see `Handle`.

    Raises:
        InvalidParamError: an unknown model or flag bit (as Corosync).
    """
    if model != CPG_MODEL_V1:
        raise InvalidParamError(f"model {model} is not CPG_MODEL_V1 ({CPG_MODEL_V1})")
    if flags & ~CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF:
        raise InvalidParamError(f"unknown model flags {flags:#x}")
    return Handle(
        deliver,
        confchg,
        totem_confchg,
        initial_totem_conf=initial_totem_conf or bool(flags),
        context=context,
        node=node,
        socket=socket,
    )
