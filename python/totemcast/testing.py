"""A local cluster of `totemcast node` processes on loopback, for tests and demos.

::

    from totemcast import cpg
    from totemcast.testing import LocalCluster

    with LocalCluster(3) as cluster:          # started, one ring of the 3 nodes formed
        handle = cpg.Handle(socket=cluster.socket(0))
        ...
        cluster.kill(2)                       # SIGKILL node 3
        cluster.wait_for_ring([0, 1])
        cluster.restart(2)
        cluster.wait_for_ring()

Nodes listed in `embedded=` run inside this process as `totemcast.Node`s instead (for handles
made with `node=cluster.node(i)`); `stop(i)` is their clean leave, and they cannot be killed::

    with LocalCluster(3, embedded=[2]) as cluster:
        handle = evs.Handle(node=cluster.node(2))

Nodes are numbered by index from 0; node `i` has node id `i + 1`. Each node gets a free
loopback UDP port, its own socket and state directory in a temporary directory, and one shared
authkey; the configuration is written as `tests/node_harness` does for the Rust tests. The
directory is removed on exit unless `keep=True` or the block raised (its path is then noted
on the exception, with the nodes' logs inside). The node processes die with the process (on
Linux, the thread) that started them, even if it is killed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket as socket_module
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from totemcast import _native
from totemcast._native import Node
from totemcast.cpg import RingId

__all__ = ["ClusterError", "LocalCluster", "free_udp_port", "node_status"]

#: Runs `totemcast node ARGS` in a process that dies with the one that started it (Linux
#: `PR_SET_PDEATHSIG`), so a test runner killed mid-run leaves no nodes behind.
_NODE_MAIN = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit('the process that started this node is gone')\n"
    "from totemcast.__main__ import main\n"
    "sys.exit(main(['node', *sys.argv[2:]]))\n"
)

#: Timers short enough for tests and long enough for a loaded two-core machine (ms).
DEFAULT_TOKEN_MS = 600
DEFAULT_CONSENSUS_MS = 720


class ClusterError(RuntimeError):
    """A node did not start, died, or the cluster did not reach the expected state in time."""


def free_udp_port() -> int:
    """A loopback UDP port that was free a moment ago."""
    with socket_module.socket(socket_module.AF_INET, socket_module.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def node_status(socket: str | os.PathLike[str], timeout: float = 5.0) -> dict[str, Any] | None:
    """The status of the node on `socket` (as `totemcast status --json`); None if none answers."""
    try:
        with socket_module.socket(socket_module.AF_UNIX, socket_module.SOCK_STREAM) as stream:
            stream.settimeout(timeout)
            stream.connect(os.fspath(socket))
            stream.sendall(b'{"request":"status"}\n')
            answer = bytearray()
            while not answer.endswith(b"\n"):
                chunk = stream.recv(65536)
                if not chunk:
                    break
                answer += chunk
    except OSError:
        return None
    try:
        status = json.loads(answer)
    except ValueError:
        return None
    return status if isinstance(status, dict) and "error" not in status else None


class LocalCluster:
    """`n` `totemcast node` processes on loopback (a context manager).

    Args:
        n: number of nodes.
        name: the cluster name (`[totem] cluster_name`).
        token_ms: `[totem] token`, ms.
        consensus_ms: `[totem] consensus`, ms.
        directory: where to put configs, sockets, logs and state (default: a new temporary
            directory, removed on exit).
        keep: keep the directory on exit.
        start: start the nodes and wait for their ring on `__enter__`.
        timeout: seconds to wait for the ring on `__enter__`.
        extra_totem: lines added to every node's `[totem]` section.
        embedded: indexes of the nodes that run in this process (`totemcast.Node`) rather
            than as `totemcast node` processes.
    """

    def __init__(
        self,
        n: int = 3,
        *,
        name: str = "local",
        token_ms: int = DEFAULT_TOKEN_MS,
        consensus_ms: int = DEFAULT_CONSENSUS_MS,
        directory: str | os.PathLike[str] | None = None,
        keep: bool = False,
        start: bool = True,
        timeout: float = 30.0,
        extra_totem: str = "",
        embedded: Iterable[int] = (),
    ) -> None:
        """Writes the configuration; starts nothing until `__enter__` or `start_all`."""
        if n < 1:
            raise ValueError("a cluster needs at least one node")
        self._embedded = frozenset(embedded)
        if not all(0 <= index < n for index in self._embedded):
            raise ValueError(f"embedded node indexes must be in 0..{n - 1}")
        self.n = n
        self.name = name
        self.token_ms = token_ms
        self.consensus_ms = consensus_ms
        self.keep = keep
        self._start_on_enter = start
        self._timeout = timeout
        self._own_directory = directory is None
        self.directory = Path(
            tempfile.mkdtemp(prefix="totemcast-") if directory is None else directory
        )
        self.directory.mkdir(parents=True, exist_ok=True)
        self._processes: list[subprocess.Popen[bytes] | None] = [None] * n
        self._nodes: list[Node | None] = [None] * n
        self.ports = [free_udp_port() for _ in range(n)]
        self._write_configs(extra_totem)

    # Layout ----------------------------------------------------------------------------------

    def nodeid(self, index: int) -> int:
        """The node id of node `index` (`index + 1`)."""
        self._check(index)
        return index + 1

    def socket(self, index: int) -> Path:
        """The IPC socket of node `index` (for `cpg.Handle(socket=...)`)."""
        self._check(index)
        return self.directory / f"node-{index + 1}.sock"

    def config(self, index: int) -> Path:
        """The configuration file of node `index`."""
        self._check(index)
        return self.directory / f"node-{index + 1}.toml"

    def config_text(self, index: int) -> str:
        """The configuration of node `index` as TOML text (for `totemcast.Node(config=...)`)."""
        return self.config(index).read_text()

    def log(self, index: int) -> Path:
        """The log file (stderr) of node `index`."""
        self._check(index)
        return self.directory / f"log-{index + 1}.txt"

    def _check(self, index: int) -> None:
        if not 0 <= index < self.n:
            raise IndexError(f"node index {index} outside 0..{self.n - 1}")

    def _write_configs(self, extra_totem: str) -> None:
        authkey = self.directory / "authkey"
        if not authkey.exists():
            _native.write_authkey(authkey)
        nodelist = "".join(
            f'[[node]]\nnodeid = {i + 1}\naddr = "127.0.0.1:{port}"\n'
            for i, port in enumerate(self.ports)
        )
        for i in range(self.n):
            self.config(i).write_text(
                f'[totem]\ncluster_name = "{self.name}"\ntoken = {self.token_ms}\n'
                f"token_coefficient = 0\nconsensus = {self.consensus_ms}\n{extra_totem}\n"
                f'[crypto]\nauthkey = "{authkey}"\n'
                f'[ipc]\nsocket = "{self.socket(i)}"\n'
                f'[system]\nstate_dir = "{self.directory / f"state-{i + 1}"}"\n'
                f"{nodelist}"
            )

    # Processes -------------------------------------------------------------------------------

    def is_embedded(self, index: int) -> bool:
        """Whether node `index` runs in this process (see `embedded=`)."""
        self._check(index)
        return index in self._embedded

    def node(self, index: int) -> Node:
        """The embedded node `index` (for `cpg.Handle(node=...)`, `evs.Handle(node=...)`).

        Raises:
            ClusterError: node `index` is not embedded or does not run.
        """
        if not self.is_embedded(index):
            raise ClusterError(f"node {index + 1} is a process, not embedded (see embedded=)")
        node = self._nodes[index]
        if node is None or not node.running:
            raise ClusterError(f"node {index + 1} does not run")
        return node

    def running(self, index: int) -> bool:
        """Whether node `index` runs."""
        if self.is_embedded(index):
            node = self._nodes[index]
            return node is not None and node.running
        process = self._processes[index]
        return process is not None and process.poll() is None

    def pid(self, index: int) -> int:
        """The process id of node `index` (which must run; this process for an embedded one)."""
        if self.is_embedded(index):
            self.node(index)
            return os.getpid()
        process = self._processes[index]
        if process is None:
            raise ClusterError(f"node {index + 1} does not run")
        return process.pid

    def start(self, index: int) -> None:
        """Starts node `index` (it must not run)."""
        if self.running(index):
            raise ClusterError(f"node {index + 1} runs already")
        if self.is_embedded(index):
            self._nodes[index] = Node(config=self.config(index), nodeid=index + 1)
            return
        with self.log(index).open("ab") as log:
            self._processes[index] = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _NODE_MAIN,
                    str(os.getpid()),
                    "--config",
                    str(self.config(index)),
                    "--nodeid",
                    str(index + 1),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                # Ctrl-C in a terminal reaches the caller, which stops the nodes itself.
                start_new_session=True,
                env={**os.environ, "TOTEMCAST_LOG": os.environ.get("TOTEMCAST_LOG", "info")},
            )

    def start_all(self) -> None:
        """Starts every node that does not run."""
        for index in range(self.n):
            if not self.running(index):
                self.start(index)

    def kill(self, index: int) -> None:
        """SIGKILL node `index` and reap it (a crash: no clean leave).

        Raises:
            ClusterError: the node does not run, or is embedded (stop it instead).
        """
        if self.is_embedded(index):
            raise ClusterError(f"node {index + 1} runs in this process: stop() it, not kill()")
        process = self._processes[index]
        if process is None:
            raise ClusterError(f"node {index + 1} does not run")
        self._processes[index] = None
        process.kill()
        process.wait()

    def stop(self, index: int, timeout: float = 20.0) -> int:
        """SIGTERM node `index` (it leaves the ring cleanly) and wait; returns its exit status.

        An embedded node is stopped in this process (0).
        """
        if self.is_embedded(index):
            node = self.node(index)
            self._nodes[index] = None
            node.stop()
            return 0
        process = self._processes[index]
        if process is None:
            raise ClusterError(f"node {index + 1} does not run")
        self._processes[index] = None
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise ClusterError(f"node {index + 1} did not stop within {timeout} s") from None

    def restart(self, index: int) -> None:
        """Starts node `index` again, killing it first if it runs (an embedded one: stopping)."""
        if self.is_embedded(index):
            if self.running(index):
                self.stop(index)
        elif self.running(index) or self._processes[index] is not None:
            self.kill(index)
        self.start(index)

    def pause(self, index: int) -> None:
        """SIGSTOP node `index` (not an embedded one: that would stop this process)."""
        os.kill(self._process_pid(index), signal.SIGSTOP)

    def resume(self, index: int) -> None:
        """SIGCONT node `index`."""
        os.kill(self._process_pid(index), signal.SIGCONT)

    def _process_pid(self, index: int) -> int:
        if self.is_embedded(index):
            raise ClusterError(f"node {index + 1} runs in this process and cannot be signalled")
        return self.pid(index)

    def close(self) -> None:
        """Kills every node that runs (stops the embedded ones)."""
        for index in range(self.n):
            if self.is_embedded(index):
                node, self._nodes[index] = self._nodes[index], None
                if node is not None:
                    node.stop()
            elif self._processes[index] is not None:
                self.kill(index)

    # Waiting ---------------------------------------------------------------------------------

    def status(self, index: int) -> dict[str, Any] | None:
        """The status of node `index` (`totemcast status --json`); None if it does not answer."""
        return node_status(self.socket(index))

    def wait_for_ring(self, members: Iterable[int] | None = None, timeout: float = 30.0) -> RingId:
        """Waits for one operational ring of exactly the nodes `members`, and returns it.

        `members` are indexes (default: all nodes); their CPG sync must be done too.

        Raises:
            ClusterError: a node died, or no such ring formed within `timeout` seconds.
        """
        indexes = list(range(self.n)) if members is None else sorted(members)
        expected = [i + 1 for i in indexes]
        deadline = time.monotonic() + timeout
        last: list[dict[str, Any] | None] = []
        while True:
            for index in indexes:
                if not self.running(index):
                    raise ClusterError(
                        f"node {index + 1} is not running; its log:\n{self._tail(index)}"
                    )
            last = [self.status(index) for index in indexes]
            rings = {_ring(status, expected) for status in last}
            if len(rings) == 1 and None not in rings:
                (ring,) = rings
                assert ring is not None
                return ring
            if time.monotonic() >= deadline:
                raise ClusterError(
                    f"no common ring of nodes {expected} within {timeout} s; last status: "
                    f"{last}; logs in {self.directory}"
                )
            time.sleep(0.02)

    def _tail(self, index: int, lines: int = 20) -> str:
        try:
            return "\n".join(self.log(index).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # Context manager -------------------------------------------------------------------------

    def __enter__(self) -> Self:
        """Starts the nodes and waits for their ring (unless `start=False`)."""
        if self._start_on_enter:
            try:
                self.start_all()
                self.wait_for_ring(timeout=self._timeout)
            except BaseException:
                self.close()
                raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Kills the nodes; removes the directory unless asked to keep it or the block failed."""
        self.close()
        if exc is not None:
            exc.add_note(f"totemcast LocalCluster: configs and node logs kept in {self.directory}")
        elif self._own_directory and not self.keep:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __repr__(self) -> str:
        """`LocalCluster(n=3, running=[0, 1, 2], directory=...)`."""
        running = [i for i in range(self.n) if self.running(i)]
        return f"LocalCluster(n={self.n}, running={running}, directory={str(self.directory)!r})"


def _ring(status: dict[str, Any] | None, expected: Sequence[int]) -> RingId | None:
    """The ring of `status` if it is operational, made of `expected` and synced."""
    if status is None or status.get("state") != "operational":
        return None
    if status.get("members") != list(expected):
        return None
    cpg = status.get("counters", {}).get("cpg", {})
    ring = status.get("ring_id")
    if cpg.get("syncing") or not isinstance(ring, dict):
        return None
    return RingId(int(ring["nodeid"]), int(ring["seq"]))
