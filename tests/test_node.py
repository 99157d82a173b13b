"""totemcast.Node: an embedded node, its configuration forms and errors, handles through it, and
its stop as a clean leave seen by the nodes of a LocalCluster."""

import asyncio
import os
import selectors
import socket as socket_module
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import totemcast
from conftest import WITHIN, Recorder, dispatch_until
from totemcast import Node, aio, cpg, evs
from totemcast.cpg import DispatchFlags, Guarantee, Reason
from totemcast.testing import ClusterError, LocalCluster

AGREED = Guarantee.AGREED


@pytest.fixture
def layout(tmp_path: Path) -> LocalCluster:
    """The configuration of a one-node cluster (nothing started)."""
    return LocalCluster(1, name="embedded", directory=tmp_path, start=False)


def wait_for(condition: Callable[[], bool], within: float = WITHIN) -> None:
    """Checks `condition` every 10 ms until it holds (AssertionError after `within` s)."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def wait_operational(node: Node) -> None:
    """Waits until `node` is operational in a ring of its own."""

    def operational() -> bool:
        status = node.status()
        return bool(status["state"] == "operational" and status["members"] == [node.nodeid])

    wait_for(operational)


@pytest.fixture
def node(layout: LocalCluster) -> Iterator[Node]:
    with Node(config=layout.config(0), nodeid=1) as node:
        wait_operational(node)
        yield node


def test_help_documents_the_class() -> None:
    assert Node.__module__ == "totemcast"
    assert Node.__doc__
    assert "TOML text" in Node.__doc__
    for name in dir(Node):
        if not name.startswith("_"):
            assert getattr(Node, name).__doc__, name


def test_a_node_is_a_context_manager_that_stops(layout: LocalCluster) -> None:
    with Node(config=layout.config(0), nodeid=1) as node:
        assert node.nodeid == 1
        assert node.socket == str(layout.socket(0))
        assert node.running
        assert "nodeid=1" in repr(node)
        wait_operational(node)
        status = node.status()
        assert status["nodeid"] == 1
        assert isinstance(status["counters"], dict)
        handle = cpg.Handle(node=node)
        assert handle.local_get() == 1
        evs_handle = evs.Handle(node=node)
        assert evs_handle.dispatch(DispatchFlags.ONE) == 1  # the current configuration
    assert not node.running
    assert "stopped" in repr(node)
    node.stop()  # stopping again does nothing
    with pytest.raises(totemcast.LibraryError, match="stopped"):
        node.status()
    with pytest.raises(totemcast.LibraryError, match="stopped"):
        cpg.Handle(node=node)
    with pytest.raises(totemcast.LibraryError, match="stopped"):
        evs.Handle(node=node)
    # A handle of the stopped node finds it gone.
    with pytest.raises(totemcast.LibraryError):
        handle.dispatch(DispatchFlags.BLOCKING)
    handle.finalize()
    with selectors.DefaultSelector() as selector:
        selector.register(evs_handle, selectors.EVENT_READ)
        assert selector.select(WITHIN), "the descriptor tells a select loop"
    with pytest.raises(totemcast.LibraryError, match="closed"):
        evs_handle.dispatch()  # not only a waiting dispatch
    evs_handle.finalize()


def test_cpg_and_evs_handles_through_the_node_and_its_socket(node: Node) -> None:
    pid = os.getpid()
    local, remote = Recorder(), Recorder()
    with (
        cpg.Handle(local.deliver, local.confchg, node=node) as embedded,
        cpg.Handle(remote.deliver, remote.confchg, socket=node.socket) as through_socket,
    ):
        embedded.join("g")
        through_socket.join(b"h")  # one process is in a group once
        embedded.mcast_joined(AGREED, b"to g")
        through_socket.mcast_joined(AGREED, b"to h")
        pairs = [(embedded, local), (through_socket, remote)]
        dispatch_until(
            pairs, lambda: local.deliveries() + remote.deliveries() == [b"to g", b"to h"]
        )
        assert local.events[-1] == ("deliver", "g", 1, pid, b"to g")
        assert remote.events[-1] == ("deliver", b"h", 1, pid, b"to h")
        assert embedded.membership_get("h") == [cpg.Address(1, pid)]
        assert through_socket.membership_get("g") == [cpg.Address(1, pid)]
    received: list[bytes] = []
    with evs.Handle(lambda h, n, p, msg: received.append(bytes(msg)), node=node) as handle:
        assert handle.membership_get() == (1, [1])
        handle.join("k")
        handle.mcast_joined(AGREED, b"evs")
        handle.dispatch(DispatchFlags.ONE)  # the current configuration
        handle.dispatch(DispatchFlags.ONE)
        assert received == [b"evs"]
    with cpg.initialize(node=node) as handle:
        assert handle.local_get() == 1
    with pytest.raises(totemcast.InvalidParamError, match="not both"):
        cpg.Handle(node=node, socket=node.socket)
    with pytest.raises(TypeError, match=r"totemcast\.Node"):
        cpg.Handle(node="node")  # type: ignore[arg-type]


def test_an_asyncio_handle_through_the_node(node: Node) -> None:
    async def main() -> None:
        async with aio.Handle(node=node) as handle:
            await handle.join("a")
            await handle.send(b"async")
            events = [await handle.next_event(WITHIN) for _ in range(2)]
            assert isinstance(events[0], aio.ConfChg)
            assert isinstance(events[1], aio.Deliver)
            assert events[1].msg == b"async"

    asyncio.run(asyncio.wait_for(main(), WITHIN))


def test_config_as_path_text_or_dict(layout: LocalCluster) -> None:
    text = layout.config_text(0)
    as_dict: dict[str, Any] = tomllib.loads(text)
    as_dict["crypto"]["authkey"] = Path(as_dict["crypto"]["authkey"])  # paths are fine
    for config in (str(layout.config(0)), layout.config(0), text, as_dict):
        with Node(config, 1) as node:
            wait_operational(node)


def test_the_local_node_is_found_by_its_address(tmp_path: Path) -> None:
    config = LocalCluster(2, directory=tmp_path, start=False).config_text(0)
    with pytest.raises(totemcast.InvalidParamError, match=r"several .* nodeid"):
        Node(config)  # both nodes are on 127.0.0.1


def test_bad_configurations_are_invalid_param_naming_the_key(layout: LocalCluster) -> None:
    text = layout.config_text(0)
    as_dict: dict[str, Any] = tomllib.loads(text)
    cases: list[tuple[Any, str]] = [
        (text.replace("token = ", "token = 1 #"), r"totem\.token"),
        (text + "\n[totem2]\nx = 1\n", "totem2"),
        (
            {**as_dict, "totem": {**as_dict["totem"], "no_such_key": 1}},
            "<dict>: totem: .*no_such_key",
        ),
        ({**as_dict, "totem": {**as_dict["totem"], "token": None}}, r"totem\.token.*NoneType"),
        ({**as_dict, "ipc": {"socket": 5}}, r"ipc\.socket"),
        ({1: "x"}, "keys are str"),
        (layout.directory / "missing.toml", "missing.toml"),
    ]
    for config, key in cases:
        with pytest.raises(totemcast.InvalidParamError, match=key) as raised:
            Node(config, 1)
        assert isinstance(raised.value, ValueError)
    with pytest.raises(totemcast.InvalidParamError, match=r"nodeid.*9"):
        Node(text, nodeid=9)
    with pytest.raises(TypeError, match="config"):
        Node(42)  # type: ignore[arg-type]


def test_a_port_in_use_is_a_library_error(layout: LocalCluster) -> None:
    with socket_module.socket(socket_module.AF_INET, socket_module.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", layout.ports[0]))
        with pytest.raises(totemcast.LibraryError):
            Node(layout.config(0), 1)
    with Node(layout.config(0), 1) as node:  # free again
        assert node.running


def test_an_embedded_node_in_a_local_cluster_leaves_cleanly_when_stopped() -> None:
    pid = os.getpid()
    with LocalCluster(2, name="pytest-embedded", embedded=[1]) as cluster:
        first = cluster.wait_for_ring()
        assert cluster.is_embedded(1)
        assert not cluster.is_embedded(0)
        assert cluster.pid(1) == pid
        node = cluster.node(1)
        assert node.nodeid == 2
        with pytest.raises(ClusterError, match="process"):
            cluster.node(0)
        with pytest.raises(ClusterError, match="stop"):
            cluster.kill(1)
        with pytest.raises(ClusterError, match="signalled"):
            cluster.pause(1)

        watch, gone = Recorder(), Recorder()
        configurations: list[tuple[Any, ...]] = []
        with (
            watch.handle(cluster.socket(0)) as watching,
            cpg.Handle(gone.deliver, gone.confchg, node=node) as embedded,
            evs.Handle(
                confchg=lambda h, *c: configurations.append(c), socket=cluster.socket(0)
            ) as evs_watch,
        ):
            watching.join("g")
            dispatch_until([(watching, watch)], lambda: len(watch.events) == 1)
            embedded.join("g")
            dispatch_until([(watching, watch)], lambda: len(watch.events) == 2)
            assert watch.events[1][2] == [(1, pid, 0), (2, pid, 0)]

            before = cluster.status(0)
            assert before is not None
            assert cluster.stop(1) == 0  # Node.stop(): a clean leave
            assert not cluster.running(1)
            ring = cluster.wait_for_ring([0])
            assert ring.seq > first.seq
            dispatch_until([(watching, watch)], lambda: watch.events[-1][0] == "totem")
            assert watch.events[2:] == [
                ("confchg", "g", [(1, pid, 0)], [(2, pid, Reason.NODEDOWN)], []),
                ("totem", tuple(ring), [1]),
            ]
            # The ring moved on without waiting for the token to be lost.
            status = cluster.status(0)
            assert status is not None
            losses = before["counters"]["protocol"]["token_losses"]
            assert status["counters"]["protocol"]["token_losses"] == losses
            with pytest.raises(totemcast.LibraryError):
                embedded.dispatch(DispatchFlags.BLOCKING)

            wait_for(lambda: evs_watch.dispatch() >= 0 and configurations[-1][3] == ring)
            assert configurations[-2:] == [
                ([1], [2], [], ring, evs.ConfigurationType.TRANSITIONAL),
                ([1], [], [], ring, evs.ConfigurationType.REGULAR),
            ]

        cluster.start(1)  # an embedded node starts again in this process
        cluster.wait_for_ring()
        assert cluster.node(1) is not node


def test_the_readme_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("### EVS and an embedded node from Python", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(code, "README.md", "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("REGULAR RingId(nodeid=1, seq=")
    assert lines[0].endswith("[1, 2] [] []")
    assert lines[1] == f"2/{os.getpid()}: b'to audit'"
