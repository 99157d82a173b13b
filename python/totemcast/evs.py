"""Extended virtual synchrony groups (the shape of Corosync's removed EVS API).

Groups are opaque keys of 1 to `EVS_GROUP_KEY_LENGTH` bytes, zero-padded to that length, used
as a receive filter. One call may name at most `EVS_GROUPS_PER_CALL_MAX` groups.
"""

from totemcast._native import (
    EVS_GROUP_KEY_LENGTH,
    EVS_GROUPS_PER_CALL_MAX,
    DispatchFlags,
    Guarantee,
)

__all__ = [
    "EVS_GROUPS_PER_CALL_MAX",
    "EVS_GROUP_KEY_LENGTH",
    "DispatchFlags",
    "Guarantee",
]
