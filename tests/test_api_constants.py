"""CPG and EVS enums and limits carry Corosync's values."""

from totemcast import cpg, evs


def test_guarantee() -> None:
    assert [(g.name, g.value) for g in cpg.Guarantee] == [
        ("UNORDERED", 0),
        ("FIFO", 1),
        ("AGREED", 2),
        ("SAFE", 3),
    ]
    assert evs.Guarantee is cpg.Guarantee


def test_dispatch_flags() -> None:
    assert {f.name: f.value for f in cpg.DispatchFlags} == {
        "ONE": 1,
        "ALL": 2,
        "BLOCKING": 3,
        "ONE_NONBLOCKING": 4,
    }


def test_reason() -> None:
    assert [r.name for r in cpg.Reason] == [
        "UNDEFINED",
        "JOIN",
        "LEAVE",
        "NODEDOWN",
        "NODEUP",
        "PROCDOWN",
    ]
    assert [r.value for r in cpg.Reason] == list(range(6))


def test_flow_control_and_iteration() -> None:
    assert cpg.FlowControlState.DISABLED.value == 0
    assert cpg.FlowControlState.ENABLED.value == 1
    assert cpg.IterationType.NAME_ONLY.value == 1
    assert cpg.IterationType.ONE_GROUP.value == 2
    assert cpg.IterationType.ALL.value == 3


def test_limits() -> None:
    assert cpg.CPG_MAX_NAME_LENGTH == 128
    assert evs.EVS_GROUP_KEY_LENGTH == 32
    assert evs.EVS_GROUPS_PER_CALL_MAX == 50
    # Every message up to the atomic size is delivered whole; it is far above Corosync's 1 MiB.
    assert cpg.MAX_ATOMIC_MSGSIZE >= 16 * 1024 * 1024


def test_value_types() -> None:
    member = cpg.Address(1, 4242, cpg.Reason.JOIN)
    assert member == (1, 4242, 1)
    assert member.reason is cpg.Reason.JOIN
    assert cpg.Address(2, 7).reason is cpg.Reason.UNDEFINED
    assert cpg.RingId(nodeid=1, seq=8) == (1, 8)
