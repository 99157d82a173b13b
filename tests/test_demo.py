"""`totemcast demo`: the whole run as a user starts it, and its order check on crafted histories."""

import io
import os
import pty
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from totemcast.cpg import Reason
from totemcast.demo import ConfChange, Delivery, Event, RingChange, check_order, use_color

#: Longest a whole demo may take here (it takes a few seconds; the machine may be loaded).
DEADLINE = 100.0

#: The console script installed next to the interpreter.
CONSOLE_SCRIPT = Path(sys.executable).parent / "totemcast"


def environment(**extra: str) -> dict[str, str]:
    """This environment without NO_COLOR (so that only the terminal decides), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "TERM")}
    return {**env, **extra}


def run_demo(
    command: list[str], cwd: Path, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*command, "demo", *args],
        cwd=cwd,
        env=environment(**env),
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=DEADLINE,
        check=False,
    )


def kept_directory(stderr: str) -> Path | None:
    found = re.search(r"logs kept in (\S+)", stderr)
    return Path(found.group(1)) if found else None


def test_the_demo_runs_from_anywhere_and_checks_one_order(tmp_path: Path) -> None:
    done = run_demo([sys.executable, "-m", "totemcast"], tmp_path)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    # Every phase, in order.
    titles = re.findall(r"^\[(\d)/8\] (.*)$", out, re.MULTILINE)
    assert [int(number) for number, _ in titles] == list(range(1, 9))
    assert "Killing node 3" in titles[3][1]
    assert "Restarting node 3" in titles[5][1]
    # Every message once, numbered in the agreed order, delivered by every member expected
    # to: three rounds of 12, the second without the 2 members of node 3.
    line = r"^ +#(\d+) +((?:[✓·✗] +){6})(\d[a-z]): \"hello \d+ from \3\"$"
    messages = re.findall(line, out, re.MULTILINE)
    assert [int(number) for number, _, _ in messages] == list(range(1, 37))
    marks = [columns.split() for _, columns, _ in messages]
    assert all(m == ["✓"] * 6 for m in marks[:12] + marks[24:])
    assert all(m == ["✓"] * 4 + ["·"] * 2 for m in marks[12:24])
    # The survivors see the crash as NODEDOWN and a ring without node 3, then the merge and
    # the rejoin (JOIN, or NODEUP if the merge carried the members).
    kill = out[out.index("[4/8]") : out.index("[5/8]")]
    assert re.search(r"conf +(✓ +){4}(· +){2}3a 3b left \(NODEDOWN\) → members 1a 1b 2a 2b", kill)
    assert re.search(r"ring +(✓ +){4}(· +){2}ring 1/\d+: nodes 1 2$", kill, re.MULTILINE)
    assert "3a lost node 3" in kill
    merge = out[out.index("[6/8]") : out.index("[7/8]")]
    assert re.search(r"ring .*: nodes 1 2 3$", merge, re.MULTILINE)
    assert re.search(r"3[ab] joined \((JOIN|NODEUP)\)", merge)
    assert re.search(r"(✓ +){6}3[ab] joined \((JOIN|NODEUP)\) → members 1a 1b 2a 2b 3a 3b", merge)
    # The final check and the summary.
    assert re.search(
        r"^ +✓ one order: 1a 1b 2a 2b delivered the same 36 messages, \d+ membership changes",
        out,
        re.MULTILINE,
    )
    assert re.search(r"3a 3b, cut off by the crash, delivered theirs \(24 messages\)", out)
    assert re.search(r"^Summary: 36 messages, 6 member processes on 3 nodes, ", out, re.MULTILINE)
    # Not a terminal: no colours.
    assert "\x1b[" not in out + done.stderr
    assert done.stderr == ""


def test_the_console_script_runs_the_demo_with_options(tmp_path: Path) -> None:
    if not CONSOLE_SCRIPT.exists():
        pytest.skip(f"no console script at {CONSOLE_SCRIPT}")
    done = run_demo(
        [str(CONSOLE_SCRIPT)],
        tmp_path,
        "--nodes",
        "2",
        "--members-per-node",
        "1",
        "--messages",
        "3",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2a left (NODEDOWN) → members 1a" in done.stdout
    assert "✓ one order: 1a delivered the same 9 messages" in done.stdout
    assert "Summary: 9 messages, 2 member processes on 2 nodes" in done.stdout


def run_on_a_terminal(*args: str, **env: str) -> tuple[int, str]:
    """Runs the demo with its stdout on a pseudo-terminal; returns the status and the output."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "totemcast", "demo", *args],
        stdout=terminal,
        stderr=subprocess.PIPE,
        env=environment(**env),
    )
    os.close(terminal)
    output = bytearray()
    try:
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the terminal's last writer is gone
                break
            if not chunk:
                break
            output += chunk
        status = process.wait(DEADLINE)
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()
    return status, output.decode()


SMALL = ("--nodes", "2", "--members-per-node", "1", "--messages", "2")


def test_colours_on_a_terminal_unless_no_color() -> None:
    status, output = run_on_a_terminal(*SMALL)
    assert status == 0, output
    assert "\x1b[32m✓" in output
    status, output = run_on_a_terminal(*SMALL, NO_COLOR="1")
    assert status == 0, output
    assert "\x1b[" not in output
    assert "✓ one order" in output


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_use_color_needs_a_terminal_and_no_opt_out() -> None:
    assert use_color(FakeTerminal(), {})
    assert not use_color(io.StringIO(), {})
    assert not use_color(FakeTerminal(), {"NO_COLOR": "1"})
    assert not use_color(FakeTerminal(), {"NO_COLOR": ""})
    assert not use_color(FakeTerminal(), {"TERM": "dumb"})
    assert not use_color(FakeTerminal(), {}, no_color=True)


def test_help_documents_the_options() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "totemcast", "demo", "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert done.returncode == 0
    for option in ("--nodes", "--members-per-node", "--messages", "--timeout", "--no-color"):
        assert option in done.stdout
    assert "--swap" not in done.stdout
    listing = subprocess.run(
        [sys.executable, "-m", "totemcast", "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert re.search(r"^  demo +", listing.stdout, re.MULTILINE)


def test_bad_options_are_refused() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "totemcast", "demo", "--nodes", "1"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert done.returncode == 2
    assert "--nodes: 1 is not between 2 and 9" in done.stderr


def test_the_demo_fails_when_a_member_delivers_another_order(tmp_path: Path) -> None:
    # A member that reports its first two deliveries the other way round.
    done = run_demo([sys.executable, "-m", "totemcast"], tmp_path, "--swap", "2a")
    kept = kept_directory(done.stderr)
    try:
        assert done.returncode == 1, done.stdout + done.stderr
        # "2a delivered #2 (...) where 1a delivered #1 (...)", or "#1 after #2" if 2a's
        # reports of both arrived before the others' reports of the first.
        reason = (
            r"demo failed: the order differs: 2a delivered #\d+ \(.*\) "
            r"(where \w+ delivered|after) #\d+ "
        )
        assert re.search(reason, done.stderr), done.stderr
        assert re.search(r"^ +#\d+ +✓ +✓ +✗ +✓ +✓ +✓ ", done.stdout, re.MULTILINE)
        assert "one order" not in done.stdout
        assert kept is not None
        assert (kept / "member-2a.log").exists()
    finally:
        if kept is not None:
            shutil.rmtree(kept, ignore_errors=True)


# The order check on crafted histories -------------------------------------------------------

A, B, C = (1, 100), (2, 200), (3, 300)


def msg(sender: tuple[int, int], text: str) -> Delivery:
    return Delivery(sender[0], sender[1], text)


def joined(members: list[tuple[int, int]], who: tuple[int, int]) -> ConfChange:
    return ConfChange(tuple(members), (), ((*who, Reason.JOIN),))


HISTORY: list[Event] = [
    joined([A], A),
    joined([A, B], B),
    joined([A, B, C], C),
    msg(A, "a1"),
    msg(C, "c1"),
    msg(B, "b1"),
    ConfChange((A, B), ((*C, Reason.NODEDOWN),), ()),
    RingChange((1, 8), (1, 2)),
    msg(B, "b2"),
    RingChange((1, 12), (1, 2, 3)),
    joined([A, B, C], C),
    msg(C, "c2"),
    msg(A, "a2"),
]
#: What B delivers: everything from its own join on.
FROM_B = HISTORY[1:]
#: What C delivers: up to the crash, and after its rejoin.
CUT_C = HISTORY[2:6] + HISTORY[10:]


def test_one_order_passes() -> None:
    check = check_order({"a": HISTORY, "b": FROM_B, "c": CUT_C}, complete=["a", "b"])
    assert check.ok, check.reason
    assert check.reference == "a"
    assert (check.messages, check.confchgs, check.rings) == (6, 5, 2)


def test_two_messages_swapped_at_a_complete_member_fail() -> None:
    swapped = [*FROM_B]
    swapped[3], swapped[4] = swapped[4], swapped[3]
    check = check_order({"a": HISTORY, "b": swapped, "c": CUT_C}, complete=["a", "b"])
    assert not check.ok
    assert check.reason.startswith("b and a differ at b's event 4")


def test_a_message_missing_at_a_complete_member_fails() -> None:
    missing = [e for e in FROM_B if e != msg(B, "b2")]
    check = check_order({"a": HISTORY, "b": missing}, complete=["a", "b"])
    assert not check.ok


def test_a_complete_member_that_ends_early_fails() -> None:
    check = check_order({"a": HISTORY, "b": FROM_B[:-1]}, complete=["a", "b"])
    assert not check.ok
    assert "b and a differ" in check.reason


def test_a_member_cut_off_must_keep_the_order() -> None:
    reordered = [*CUT_C]
    reordered[1], reordered[2] = reordered[2], reordered[1]
    check = check_order({"a": HISTORY, "b": FROM_B, "c": reordered}, complete=["a", "b"])
    assert not check.ok
    assert check.reason.startswith("c's event 3")
    # A message the reference never delivered is not in its order either.
    invented = [*CUT_C, msg(C, "c3")]
    assert not check_order({"a": HISTORY, "c": invented}, complete=["a"]).ok


def test_a_membership_change_in_another_place_fails() -> None:
    moved = [*FROM_B]
    moved[4], moved[5] = moved[5], moved[4]  # NODEDOWN before b1
    check = check_order({"a": HISTORY, "b": moved}, complete=["a", "b"])
    assert not check.ok
    assert check.reason.startswith("b and a differ at b's event 5")


def test_nothing_to_compare_with_fails() -> None:
    assert not check_order({"c": CUT_C}, complete=[]).ok
    assert not check_order({"a": HISTORY}, complete=["a", "b"]).ok
