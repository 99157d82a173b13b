"""Several processes in one group, on one node and on three: one order, and PROCDOWN."""

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import WITHIN, Recorder, dispatch_until
from totemcast import cpg
from totemcast.cpg import Reason
from totemcast.testing import LocalCluster

MEMBER = Path(__file__).parent / "programs" / "cpg_member.py"


def run_members(sockets: list[Path], group: str, count: int) -> list[list[list[object]]]:
    """Runs one member process per socket; returns what each delivered."""
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                str(MEMBER),
                "order",
                str(s),
                group,
                str(len(sockets)),
                str(count),
                f"p{i}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, s in enumerate(sockets)
    ]
    results = []
    try:
        for process in processes:
            out, err = process.communicate(timeout=WITHIN * 2)
            assert process.returncode == 0, err
            results.append(json.loads(out))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return results


def check_one_order(results: list[list[list[object]]], senders: int, count: int) -> None:
    first = results[0]
    assert len(first) == senders * count
    for other in results[1:]:
        assert other == first
    pids = {pid for _, pid, _ in first}
    assert len(pids) == senders
    # Each sender's messages in its own order (FIFO inside the total order).
    for pid in pids:
        own = [payload for _, p, payload in first if p == pid]
        tag = str(own[0]).split("-")[0]
        assert own == [f"{tag}-{i}" for i in range(count)]


def test_processes_on_one_node_deliver_one_order(node: LocalCluster, group: str) -> None:
    results = run_members([node.socket(0)] * 4, group, 100)
    check_one_order(results, 4, 100)
    assert {nodeid for nodeid, _, _ in results[0]} == {1}


def test_processes_on_three_nodes_deliver_one_order(three: LocalCluster, group: str) -> None:
    sockets = [three.socket(i % 3) for i in range(6)]
    results = run_members(sockets, group, 50)
    check_one_order(results, 6, 50)
    assert {nodeid for nodeid, _, _ in results[0]} == {1, 2, 3}


def hold(socket: Path, group: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, str(MEMBER), "hold", str(socket), group],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline() == "joined\n"
    return process


def test_a_member_that_dies_is_procdown_and_one_that_leaves_is_leave(
    three: LocalCluster, group: str
) -> None:
    recorder = Recorder()
    with recorder.handle(three.socket(0)) as handle:
        handle.join(group)
        dispatch_until([(handle, recorder)], lambda: len(recorder.events) == 1)
        me = (1, os.getpid())
        # A process on node 2 joins, then is killed: PROCDOWN.
        with hold(three.socket(1), group) as killed:
            dispatch_until([(handle, recorder)], lambda: len(recorder.events) == 2)
            assert recorder.events[1][4] == [(2, killed.pid, Reason.JOIN)]
            assert recorder.events[1][2] == [(*me, 0), (2, killed.pid, 0)]
            killed.kill()
            killed.wait()
        dispatch_until([(handle, recorder)], lambda: len(recorder.events) == 3)
        assert recorder.events[2][2:] == ([(*me, 0)], [(2, killed.pid, Reason.PROCDOWN)], [])
        # A process on node 3 joins and leaves: LEAVE.
        with hold(three.socket(2), group) as leaver:
            assert leaver.stdin is not None
            assert leaver.stdout is not None
            leaver.stdin.write("leave\n")
            leaver.stdin.flush()
            assert leaver.stdout.readline() == "left\n"
            dispatch_until([(handle, recorder)], lambda: len(recorder.events) == 5)
            assert recorder.events[3][4] == [(3, leaver.pid, Reason.JOIN)]
            assert recorder.events[4][3] == [(3, leaver.pid, Reason.LEAVE)]
            leaver.stdin.close()
            assert leaver.wait(WITHIN) == 0
        assert handle.membership_get(group) == [cpg.Address(*me)]
