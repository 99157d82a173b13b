"""totemcast.testing.LocalCluster, and CPG seen from Python when a node dies and comes back."""

import os
from pathlib import Path

import pytest

import totemcast
from conftest import Recorder, dispatch_until
from totemcast import cpg
from totemcast.cpg import DispatchFlags, Reason
from totemcast.testing import ClusterError, LocalCluster, free_udp_port, node_status


def test_layout_and_configuration(tmp_path: Path) -> None:
    cluster = LocalCluster(2, name="layout", directory=tmp_path, start=False)
    assert cluster.nodeid(1) == 2
    assert cluster.socket(0) == tmp_path / "node-1.sock"
    config = cluster.config(1).read_text()
    assert 'cluster_name = "layout"' in config
    assert f'socket = "{cluster.socket(1)}"' in config
    assert all(f"127.0.0.1:{port}" in config for port in cluster.ports)
    assert (tmp_path / "authkey").stat().st_mode & 0o777 == 0o400
    with pytest.raises(IndexError):
        cluster.socket(2)
    assert not cluster.running(0)
    assert node_status(cluster.socket(0)) is None
    assert 1024 <= free_udp_port() <= 65535
    with pytest.raises(ValueError, match="at least one"):
        LocalCluster(0)


def test_a_dead_node_is_reported(tmp_path: Path) -> None:
    cluster = LocalCluster(1, directory=tmp_path, extra_totem="no_such_key = 1", timeout=10)
    with pytest.raises(ClusterError, match="not running"), cluster:
        pass
    assert "no_such_key" in cluster.log(0).read_text()


def test_kill_and_restart_a_node() -> None:
    pid = os.getpid()
    with LocalCluster(3, name="pytest-kill") as cluster:
        first = cluster.wait_for_ring()
        watch, doomed = Recorder(), Recorder()
        with watch.handle(cluster.socket(0)) as watching, doomed.handle(cluster.socket(2)) as lost:
            watching.join("g")
            dispatch_until([(watching, watch)], lambda: len(watch.events) == 1)
            lost.join("g")
            dispatch_until([(watching, watch)], lambda: len(watch.events) == 2)
            assert watch.events[1][2] == [(1, pid, 0), (3, pid, 0)]

            cluster.kill(2)
            ring = cluster.wait_for_ring([0, 1])
            assert ring.seq > first.seq
            dispatch_until([(watching, watch)], lambda: watch.events[-1][0] == "totem")
            down = [e for e in watch.events[2:] if e[0] == "confchg"]
            assert down == [("confchg", "g", [(1, pid, 0)], [(3, pid, Reason.NODEDOWN)], [])]
            assert watch.events[-1] == ("totem", tuple(ring), [1, 2])
            with pytest.raises(totemcast.LibraryError, match="closed"):
                lost.dispatch(DispatchFlags.BLOCKING)

            cluster.restart(2)
            ring = cluster.wait_for_ring()
            count = len(watch.events)
            dispatch_until(
                [(watching, watch)],
                lambda: any(e == ("totem", tuple(ring), [1, 2, 3]) for e in watch.events[count:]),
            )
            assert watching.membership_get("g") == [cpg.Address(1, pid)]
        assert cluster.stop(1) == 0
        assert not cluster.running(1)
        with pytest.raises(ClusterError):
            cluster.stop(1)
        assert "LocalCluster(n=3" in repr(cluster)
        directory = cluster.directory
    assert not directory.exists()
