"""The `totemcast` command line."""

import json
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

import totemcast
from totemcast.__main__ import main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"totemcast {totemcast.__version__}"


def test_module_entry_point_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "totemcast", "--help"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0
    assert "usage: totemcast" in done.stdout


def test_unknown_command_fails() -> None:
    with pytest.raises(SystemExit) as exited:
        main(["no-such-command"])
    assert exited.value.code == 2


def run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Runs `python -m totemcast ARGS` and captures its output."""
    return subprocess.run(
        [sys.executable, "-m", "totemcast", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


def test_help_lists_the_node_commands() -> None:
    done = run_cli("--help")
    for command in ("node", "status", "keygen"):
        assert command in done.stdout


def test_keygen_writes_a_private_key_once(tmp_path: Path) -> None:
    key = tmp_path / "keys" / "authkey"
    done = run_cli("keygen", "-o", str(key))
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(key.stat().st_mode) == 0o400
    assert key.stat().st_size == 256
    again = run_cli("keygen", "-o", str(key))
    assert again.returncode == 1
    assert "exists" in again.stderr


def test_bad_config_is_one_line_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(
        '[totem]\ncluster_name = "x"\ntoken = 10\n[[node]]\nnodeid = 1\naddr = "127.0.0.1:5405"\n'
    )
    done = run_cli("node", "--config", str(config), "--nodeid", "1")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "totem.token" in lines[0]


def free_udp_port() -> int:
    """A loopback UDP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_node_runs_reports_status_and_stops_cleanly_on_sigint(tmp_path: Path) -> None:
    key = tmp_path / "authkey"
    assert run_cli("keygen", "-o", str(key)).returncode == 0
    sock = tmp_path / "node.sock"
    config = tmp_path / "node.toml"
    config.write_text(
        f'[totem]\ncluster_name = "pytest"\ntoken = 300\n'
        f'[crypto]\nauthkey = "{key}"\n[ipc]\nsocket = "{sock}"\n'
        f'[system]\nstate_dir = "{tmp_path / "state"}"\n'
        f'[[node]]\nnodeid = 7\naddr = "127.0.0.1:{free_udp_port()}"\n'
    )
    node = subprocess.Popen(
        [sys.executable, "-m", "totemcast", "node", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        status: dict[str, object] = {}
        while status.get("state") != "operational":
            assert time.monotonic() < deadline, "the node never became operational"
            assert node.poll() is None, node.communicate()
            done = run_cli("status", "--json", "--socket", str(sock))
            if done.returncode == 0:
                status = json.loads(done.stdout)
            else:
                time.sleep(0.05)
        assert status["nodeid"] == 7
        assert status["members"] == [7]
        human = run_cli("status", "--socket", str(sock))
        assert "operational" in human.stdout
        node.send_signal(signal.SIGINT)
        _, stderr = node.communicate(timeout=20)
        assert node.returncode == 0, stderr
        assert "leaving the ring" in stderr
        assert "Traceback" not in stderr
    finally:
        if node.poll() is None:
            node.kill()
            node.wait()


def test_status_without_a_node_says_so(tmp_path: Path) -> None:
    done = run_cli("status", "--socket", str(tmp_path / "none.sock"))
    assert done.returncode == 1
    assert "cannot reach a node" in done.stderr
