"""Extended virtual synchrony groups (the shape of Corosync's removed EVS API).

Groups are opaque keys of 1 to `EVS_GROUP_KEY_LENGTH` bytes (`str` as UTF-8, or `bytes`),
zero-padded to that length, and only a **receive filter**: a handle receives each message sent
to at least one group it joined, once, with the sender's node id and pid. Joining and leaving
are local to the handle and announce nothing. Every totem configuration, transitional and
regular, reaches every handle with its ring id; a new handle first gets the current one. One
call may name at most `EVS_GROUPS_PER_CALL_MAX` groups (`TooManyGroupsError`)::

    from totemcast import evs

    def deliver(handle, nodeid, pid, msg):
        print(nodeid, pid, bytes(msg))

    def confchg(handle, members, left, joined, ring_id, kind):
        print(kind.name, ring_id, members, left, joined)

    with evs.Handle(deliver, confchg) as handle:
        handle.join(["workers", "audit"])
        handle.mcast_groups(evs.Guarantee.AGREED, ["workers"], b"hello")
        handle.dispatch(evs.DispatchFlags.ONE)

The callbacks keep Corosync's parameter order (`evs_deliver_fn`, `evs_confchg_fn`) and add what
it did not give: the sender's `pid`, a ring id that is never missing, and the kind of the
configuration (`ConfigurationType`, last, so that a callback written for Corosync's five
parameters needs only one more).

The node is `node=` (an embedded `totemcast.Node`), else the one on `socket=`, else on
`$TOTEMCAST_SOCKET`, else on `DEFAULT_SOCKET`.
"""

from collections.abc import Callable
from os import PathLike
from typing import Any

from totemcast._native import (
    DEFAULT_SOCKET,
    EVS_GROUP_KEY_LENGTH,
    EVS_GROUPS_PER_CALL_MAX,
    ConfigurationType,
    DispatchFlags,
    Guarantee,
    Message,
    Node,
)
from totemcast._native import EvsHandle as Handle
from totemcast.cpg import RingId

__all__ = [
    "DEFAULT_SOCKET",
    "EVS_GROUPS_PER_CALL_MAX",
    "EVS_GROUP_KEY_LENGTH",
    "ConfchgFn",
    "ConfigurationType",
    "DeliverFn",
    "DispatchFlags",
    "Guarantee",
    "Handle",
    "Message",
    "RingId",
    "initialize",
]

#: `deliver(handle, nodeid, pid, msg)`: a message (`msg` is a read-only buffer).
DeliverFn = Callable[[Handle, int, int, Message], object]
#: `confchg(handle, members, left, joined, ring_id, kind)`: a totem configuration.
ConfchgFn = Callable[[Handle, list[int], list[int], list[int], RingId, ConfigurationType], object]


def initialize(
    deliver: DeliverFn | None = None,
    confchg: ConfchgFn | None = None,
    *,
    context: Any = None,
    node: Node | None = None,
    socket: str | PathLike[str] | None = None,
) -> Handle:
    """`evs_initialize`: connects to the node and returns a `Handle` (the same as `Handle(...)`).

    Raises:
        LibraryError: no node listens on the socket, or the embedded node is stopped.
        AccessError: the node does not allow this user.
    """
    return Handle(deliver, confchg, context=context, node=node, socket=socket)
