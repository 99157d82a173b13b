"""`totemcast demo`: a local cluster, a group of processes, one total order through a crash.

The demo starts a cluster of `totemcast node` processes on loopback (`LocalCluster`, nothing
to configure: temporary directory, free ports, a fresh authkey) and a few **member
processes** per node, separate OS processes that each open a `cpg.Handle` to their node and
join one group. Then, in phases:

1. the members multicast messages (AGREED) concurrently; each line of the output is one event
   of the group in the agreed order, printed once every member that should deliver it has
   reported it, with one column per member (✓ delivered it at this place in its sequence);
2. the last node is killed (SIGKILL); the survivors see its members leave with `NODEDOWN`
   and a new ring, and exchange more messages;
3. the node is restarted, the rings merge, its members reconnect and join again (`JOIN`,
   or `NODEUP` if the merge carries them), and a last round of messages goes round;
4. the check: the members that lived through everything must have delivered exactly the same
   sequence (messages, membership changes, rings), and the ones cut off by the crash a
   subsequence of it. The command exits 0 when the check holds, 1 with the reason when it
   does not or when anything does not happen within its deadline.

Member processes run this module (`python -m totemcast.demo --member ...`): they read
commands on stdin and report their events as JSON lines on stdout. They die with the demo.

Colours are used only when stdout is a terminal, `NO_COLOR` is not set and `--no-color` is
not given.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import selectors
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TextIO

from totemcast import Error, LibraryError, TryAgainError, cpg
from totemcast.testing import ClusterError, LocalCluster

__all__ = [
    "ConfChange",
    "Delivery",
    "DemoError",
    "Event",
    "OrderCheck",
    "RingChange",
    "build_parser",
    "check_order",
    "main",
    "use_color",
]

#: The group the members join.
GROUP = "demo"

#: Seconds between two sends of one member, so that the senders' messages interleave.
_SEND_PACE = 0.005


def _n(count: int, noun: str, plural: str | None = None) -> str:
    """`1 member`, `2 members` (or `plural`)."""
    return f"{count} {noun}" if count == 1 else f"{count} {plural or noun + 's'}"


def _duration(since: float) -> str:
    """The time since `since` (a `time.monotonic()`), as `850 ms` or `2.3 s`."""
    seconds = time.monotonic() - since
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


class DemoError(RuntimeError):
    """Something did not happen as the demo expects (in time); the message says what."""


# Events ------------------------------------------------------------------------------------

MemberId = tuple[int, int]
"""A group member: (nodeid, pid)."""


@dataclass(frozen=True)
class Delivery:
    """A message delivered to a member: from process `pid` on node `nodeid`."""

    nodeid: int
    pid: int
    payload: str

    def __str__(self) -> str:
        """`"payload" from nodeid/pid`."""
        return f'"{self.payload}" from {self.nodeid}/{self.pid}'


@dataclass(frozen=True)
class ConfChange:
    """A membership change of the group: the members after it, who left and who joined.

    `left` and `joined` hold (nodeid, pid, reason) with a `cpg.Reason` value.
    """

    members: tuple[MemberId, ...]
    left: tuple[tuple[int, int, int], ...] = ()
    joined: tuple[tuple[int, int, int], ...] = ()

    def __str__(self) -> str:
        """`members [...] left [...] joined [...]`."""
        return f"membership {list(self.members)} left {list(self.left)} joined {list(self.joined)}"


@dataclass(frozen=True)
class RingChange:
    """A new totem ring (`cpg.RingId` as (nodeid, seq)) and its node ids."""

    ring: tuple[int, int]
    nodes: tuple[int, ...]

    def __str__(self) -> str:
        """`ring nodeid/seq of nodes [...]`."""
        return f"ring {self.ring[0]}/{self.ring[1]} of nodes {list(self.nodes)}"


Event = Delivery | ConfChange | RingChange
"""One event of the group, as a member delivers it."""


def event_from_report(report: Mapping[str, Any]) -> Event:
    """The event of a member's JSON report (`ev` is `deliver`, `confchg` or `totem`)."""
    kind = report["ev"]
    if kind == "deliver":
        return Delivery(int(report["nodeid"]), int(report["pid"]), str(report["msg"]))
    if kind == "confchg":
        return ConfChange(
            tuple((int(n), int(p)) for n, p in report["members"]),
            tuple((int(n), int(p), int(r)) for n, p, r in report["left"]),
            tuple((int(n), int(p), int(r)) for n, p, r in report["joined"]),
        )
    if kind == "totem":
        nodeid, seq = report["ring"]
        return RingChange((int(nodeid), int(seq)), tuple(int(n) for n in report["nodes"]))
    raise ValueError(f"not an event report: {report!r}")


# The order check -----------------------------------------------------------------------------


@dataclass(frozen=True)
class OrderCheck:
    """The verdict of `check_order`.

    Attributes:
        ok: every history is consistent with one total order.
        reason: why not (empty when `ok`).
        reference: the member whose history is the reference order.
        messages: messages in the reference order.
        confchgs: group membership changes in it.
        rings: ring changes in it.
    """

    ok: bool
    reason: str = ""
    reference: str = ""
    messages: int = 0
    confchgs: int = 0
    rings: int = 0


def _find(sequence: Sequence[Event], event: Event, start: int) -> int | None:
    """The first index >= `start` of `event` in `sequence`, or None."""
    for index in range(start, len(sequence)):
        if sequence[index] == event:
            return index
    return None


def check_order(
    histories: Mapping[str, Sequence[Event]],
    complete: Collection[str],
    describe: Callable[[Event], str] = str,
) -> OrderCheck:
    """Checks that the members' histories are consistent with one total order.

    The longest history of a `complete` member (one that lived through the whole run) is the
    reference. Every complete member's history must be exactly the reference from that
    member's first event on (it joined then), with the same messages; every other member's
    history (one cut off by a crash, say) must be a subsequence of the reference.

    Args:
        histories: each member's events in the order it delivered them, by member name.
        complete: the names of the members that lived through the whole run.
        describe: how to show an event in the reason.

    Returns:
        The verdict, with the reason of the first inconsistency found.
    """
    missing = [name for name in complete if name not in histories]
    if missing:
        return OrderCheck(False, f"no history of {', '.join(sorted(missing))}")
    if not complete:
        return OrderCheck(False, "no member lived through the whole run")
    names = sorted(complete)
    reference_name = max(names, key=lambda name: len(histories[name]))
    reference = list(histories[reference_name])
    messages = [event for event in reference if isinstance(event, Delivery)]
    for name in names:
        history = list(histories[name])
        start = len(reference) - len(history)
        for offset, event in enumerate(history):
            expected = reference[start + offset]
            if event != expected:
                return OrderCheck(
                    False,
                    f"{name} and {reference_name} differ at {name}'s event {offset + 1}: "
                    f"{name} delivered {describe(event)}, {reference_name} {describe(expected)}",
                    reference_name,
                )
        own = [event for event in history if isinstance(event, Delivery)]
        if own != messages:
            return OrderCheck(
                False,
                f"{name} delivered {len(own)} messages, {reference_name} {len(messages)}",
                reference_name,
            )
    for name in sorted(set(histories) - set(complete)):
        position = 0
        previous: Event | None = None
        for number, event in enumerate(histories[name], 1):
            found = _find(reference, event, position)
            if found is None:
                where = f" after {describe(previous)}" if previous is not None else ""
                return OrderCheck(
                    False,
                    f"{name}'s event {number}, {describe(event)}, is not in "
                    f"{reference_name}'s order{where}",
                    reference_name,
                )
            position = found + 1
            previous = event
    return OrderCheck(
        True,
        "",
        reference_name,
        messages=len(messages),
        confchgs=sum(isinstance(event, ConfChange) for event in reference),
        rings=sum(isinstance(event, RingChange) for event in reference),
    )


# Terminal output -----------------------------------------------------------------------------


def use_color(stream: IO[str], environ: Mapping[str, str], no_color: bool = False) -> bool:
    """Whether to colour output to `stream`: a terminal, `NO_COLOR` unset, not `TERM=dumb`."""
    if no_color or "NO_COLOR" in environ or environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class _Style:
    """ANSI colours when enabled, plain text otherwise; symbols the stream can encode."""

    def __init__(self, stream: IO[str], color: bool) -> None:
        self.color = color
        encoding = getattr(stream, "encoding", None) or "ascii"
        try:
            "✓✗·→".encode(encoding)
        except (UnicodeEncodeError, LookupError):
            self.ok, self.bad, self.absent, self.arrow = "+", "x", ".", "->"
        else:
            self.ok, self.bad, self.absent, self.arrow = "✓", "✗", "·", "→"

    def _paint(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.color and text else text

    def bold(self, text: str) -> str:
        return self._paint(text, "1")

    def dim(self, text: str) -> str:
        return self._paint(text, "2")

    def green(self, text: str) -> str:
        return self._paint(text, "32")

    def red(self, text: str) -> str:
        return self._paint(text, "1;31")

    def yellow(self, text: str) -> str:
        return self._paint(text, "33")

    def cyan(self, text: str) -> str:
        return self._paint(text, "36")


# The member processes, seen from the demo ----------------------------------------------------


@dataclass(eq=False)
class _Member:
    """A member process as the demo tracks it."""

    label: str
    node: int
    process: subprocess.Popen[bytes]
    log: Path
    nodeid: int = 0
    pid: int = 0
    ready: bool = False
    lost: bool = False
    ever_lost: bool = False
    history: list[Event] = field(default_factory=list)
    pending: list[Event] = field(default_factory=list)
    matched: set[int] = field(default_factory=set)
    cursor: int = -1
    unsent: int = 0

    @property
    def address(self) -> MemberId:
        return (self.nodeid, self.pid)

    def command(self, text: str) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        try:
            stdin.write(text.encode() + b"\n")
            stdin.flush()
        except OSError as error:
            raise DemoError(f"member {self.label} does not take commands: {error}") from None

    def log_tail(self, lines: int = 8) -> str:
        try:
            text = self.log.read_text(errors="replace").strip()
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _read_reports(
    member: _Member, stream: IO[bytes], reports: queue.Queue[tuple[_Member, dict[str, Any] | None]]
) -> None:
    """Thread: puts each JSON line of `stream` on `reports`, then None at end of file."""
    for line in stream:
        try:
            report = json.loads(line)
        except ValueError:
            report = {"ev": "error", "error": f"unreadable report {line!r}"}
        reports.put((member, report if isinstance(report, dict) else {"ev": "error"}))
    reports.put((member, None))


@dataclass(frozen=True)
class _Options:
    nodes: int
    members_per_node: int
    messages: int
    timeout: float
    keep: bool
    swap: str | None


class _Demo:
    """Runs the phases and prints them; raises `DemoError` when something fails."""

    def __init__(self, options: _Options, out: TextIO, style: _Style) -> None:
        self.options = options
        self.out = out
        self.style = style
        self.members: list[_Member] = []
        self.by_address: dict[MemberId, _Member] = {}
        self.reports: queue.Queue[tuple[_Member, dict[str, Any] | None]] = queue.Queue()
        self.reference: list[Event] = []
        self.configs: list[frozenset[MemberId]] = []
        self.printed = 0
        self.messages_printed = 0
        self.phase_number = 0
        self.phases = 8
        self.quitting = False
        self.rings_seen: set[tuple[int, int]] = set()
        self.started = time.monotonic()
        self.divergence: str | None = None

    # Output ------------------------------------------------------------------------------

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def phase(self, title: str) -> float:
        self.phase_number += 1
        self.say()
        self.say(self.style.bold(f"[{self.phase_number}/{self.phases}] {title}"))
        return time.monotonic()

    def note(self, text: str) -> None:
        self.say(f"      {text}")

    def done(self, text: str, since: float | None = None) -> None:
        took = "" if since is None else " " + self.style.dim(f"({_duration(since)})")
        self.note(f"{self.style.green(self.style.ok)} {text}{took}")

    def label(self, address: MemberId) -> str:
        member = self.by_address.get(address)
        return member.label if member is not None else f"{address[0]}/{address[1]}"

    def tag_width(self) -> int:
        rounds = 3 * self.options.messages
        return max(len(f"#{rounds}"), len("conf")) + 2

    def header(self) -> None:
        columns = " ".join(f"{m.label:<2}" for m in self.members)
        self.note(self.style.dim(f"{'':<{self.tag_width()}}{columns}"))

    def describe(self, event: Event) -> str:
        if isinstance(event, Delivery):
            return f'{self.label((event.nodeid, event.pid))}: "{event.payload}"'
        if isinstance(event, RingChange):
            nodes = " ".join(str(node) for node in event.nodes)
            return f"ring {event.ring[0]}/{event.ring[1]}: nodes {nodes}"
        parts = []
        for verb, listing, paint in (
            ("left", event.left, self.style.yellow),
            ("joined", event.joined, self.style.cyan),
        ):
            by_reason: dict[int, list[str]] = {}
            for nodeid, pid, reason in listing:
                by_reason.setdefault(reason, []).append(self.label((nodeid, pid)))
            for reason, labels in sorted(by_reason.items()):
                name = cpg.Reason(reason).name
                parts.append(paint(f"{' '.join(sorted(labels))} {verb} ({name})"))
        members = " ".join(sorted(self.label(address) for address in event.members))
        return f"{', '.join(parts)} {self.style.dim(self.style.arrow)} members {members}"

    # Members -----------------------------------------------------------------------------

    def start_members(self, cluster: LocalCluster) -> None:
        for node in range(cluster.n):
            for index in range(self.options.members_per_node):
                label = f"{node + 1}{chr(ord('a') + index)}"
                log = cluster.directory / f"member-{label}.log"
                argv = [
                    sys.executable,
                    "-m",
                    "totemcast.demo",
                    "--member",
                    label,
                    "--socket",
                    str(cluster.socket(node)),
                    "--parent",
                    str(os.getpid()),
                ]
                if label == self.options.swap:
                    argv.append("--swap")
                with log.open("wb") as stderr:
                    process = subprocess.Popen(
                        argv,
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=stderr,
                        start_new_session=True,
                    )
                member = _Member(label, node, process, log)
                self.members.append(member)
                assert process.stdout is not None
                threading.Thread(
                    target=_read_reports,
                    args=(member, process.stdout, self.reports),
                    name=f"demo-{label}",
                    daemon=True,
                ).start()

    def stop_members(self) -> None:
        self.quitting = True
        for member in self.members:
            if member.process.poll() is None:
                with contextlib.suppress(DemoError):
                    member.command("quit")
        deadline = time.monotonic() + 5
        for member in self.members:
            try:
                member.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                member.process.kill()
                member.process.wait()
            if member.process.stdin is not None:
                with contextlib.suppress(OSError):
                    member.process.stdin.close()

    # Reports -----------------------------------------------------------------------------

    def pump(self, done: Callable[[], bool], what: str) -> None:
        """Handles reports until `done()`; DemoError after the deadline."""
        deadline = time.monotonic() + self.options.timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                timeout = f"timed out after {self.options.timeout:g} s waiting for {what}"
                raise DemoError(self.divergence or timeout + self.stall())
            try:
                member, report = self.reports.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            self.handle(member, report)
        if self.divergence:
            raise DemoError(self.divergence)

    def stall(self) -> str:
        """What the next event to print waits for, if anything."""
        if self.printed < len(self.reference):
            waiting = [m.label for m in self.expected(self.printed) if m.cursor < self.printed]
            event = self.describe(self.reference[self.printed])
            return f" ({' '.join(waiting)} did not deliver {event} yet)"
        return ""

    def handle(self, member: _Member, report: dict[str, Any] | None) -> None:
        if report is None:
            if self.quitting:
                return
            try:
                status = member.process.wait(5)
            except subprocess.TimeoutExpired:
                status = None
            tail = member.log_tail()
            raise DemoError(
                f"member {member.label} exited (status {status})"
                + (f"; its log ends with:\n{tail}" if tail else "")
            )
        kind = report.get("ev")
        if kind == "ready":
            member.nodeid, member.pid = int(report["nodeid"]), int(report["pid"])
            member.ready, member.lost = True, False
            self.by_address[member.address] = member
        elif kind in ("deliver", "confchg", "totem"):
            event = event_from_report(report)
            member.history.append(event)
            if member is self.members[0]:
                self.extend_reference(event)
            else:
                member.pending.append(event)
                self.match(member)
            self.print_ready()
        elif kind == "lost":
            member.lost = member.ever_lost = True
            self.note(
                self.style.dim(
                    f"{member.label} lost node {member.node + 1}: {report.get('error')}; "
                    "it will reconnect"
                )
            )
            self.print_ready()
        elif kind == "unsent":
            member.unsent += int(report["count"])
        elif kind == "error":
            raise DemoError(f"member {member.label}: {report.get('error')}")

    def extend_reference(self, event: Event) -> None:
        """The reference member (the first) delivered `event`: the next of the order."""
        previous = self.configs[-1] if self.configs else frozenset()
        self.reference.append(event)
        self.configs.append(frozenset(event.members) if isinstance(event, ConfChange) else previous)
        reference = self.members[0]
        reference.cursor = len(self.reference) - 1
        reference.matched.add(reference.cursor)
        if isinstance(event, RingChange):
            self.rings_seen.add(event.ring)
        for member in self.members[1:]:
            self.match(member)

    def match(self, member: _Member) -> None:
        """Places the member's reported events in the reference order, as far as it goes."""
        while member.pending:
            event = member.pending[0]
            found = _find(self.reference, event, member.cursor + 1)
            if found is None:
                if not (isinstance(event, Delivery) and event in self.reference):
                    return  # not in the reference yet
                # A message the member delivered after one that comes later in the order.
                if self.divergence is None:
                    self.divergence = (
                        f"the order differs: {member.label} delivered "
                        f"{self.name(self.reference.index(event))} after "
                        f"{self.name(member.cursor)}, {self.members[0].label} before it"
                    )
                member.pending.pop(0)
                continue
            member.pending.pop(0)
            member.cursor = found
            member.matched.add(found)

    def name(self, position: int) -> str:
        """The reference event at `position` for a reason: `#12 (2b: "hello 2 from 2b")`."""
        event = self.reference[position]
        if isinstance(event, Delivery):
            number = sum(isinstance(e, Delivery) for e in self.reference[: position + 1])
            return f"#{number} ({self.describe(event)})"
        return self.describe(event)

    def expected(self, position: int) -> list[_Member]:
        """The members that must deliver the reference event at `position`."""
        config = self.configs[position]
        return [m for m in self.members if m.address in config and not m.lost]

    def print_ready(self) -> None:
        """Prints the reference events that every member expected to deliver has delivered."""
        while self.printed < len(self.reference):
            position = self.printed
            expected = self.expected(position)
            if any(member.cursor < position for member in expected):
                return
            event = self.reference[position]
            marks = []
            skipped = None
            for member in self.members:
                if position in member.matched:
                    marks.append(self.style.green(f"{self.style.ok:<2}"))
                elif member in expected:
                    marks.append(self.style.red(f"{self.style.bad:<2}"))
                    skipped = skipped or member
                else:
                    marks.append(self.style.dim(f"{self.style.absent:<2}"))
            if isinstance(event, Delivery):
                self.messages_printed += 1
                tag = f"#{self.messages_printed}"
            else:
                tag = "conf" if isinstance(event, ConfChange) else "ring"
            width = self.tag_width()
            self.note(f"{tag:<{width}}{' '.join(marks)} {self.describe(event)}")
            self.printed += 1
            if skipped is not None:
                # It delivered a later event here (its cursor passed this one).
                instead = min(i for i in skipped.matched if i > position)
                raise DemoError(
                    self.divergence
                    or f"the order differs: {skipped.label} delivered {self.name(instead)} "
                    f"where {self.members[0].label} delivered {self.name(position)}"
                )

    def all_printed(self) -> bool:
        return self.printed == len(self.reference) and not any(m.pending for m in self.members)

    # Phases ------------------------------------------------------------------------------

    def run(self, cluster: LocalCluster) -> OrderCheck:
        options = self.options
        killed = options.nodes - 1
        self.say(
            self.style.bold("totemcast demo")
            + f": {options.nodes} nodes on loopback, "
            + f"{options.nodes * options.members_per_node} member processes "
            + f'({options.members_per_node} per node) in group "{GROUP}"'
        )

        since = self.phase(f"Starting {options.nodes} nodes on loopback")
        cluster.start_all()
        ring = self.wait_for_ring(cluster)
        self.rings_seen.add((ring.nodeid, ring.seq))
        if options.keep:
            self.note(self.style.dim(f"configs and logs in {cluster.directory}"))
        self.done(
            f"ring {ring.nodeid}/{ring.seq} of nodes "
            + " ".join(str(i + 1) for i in range(options.nodes)),
            since,
        )

        since = self.phase("Starting the member processes; they join the group")
        self.start_members(cluster)
        self.pump(lambda: all(m.ready for m in self.members), "the members to connect")
        for node in range(options.nodes):
            on_node = [m for m in self.members if m.node == node]
            self.note(
                f"node {node + 1}: "
                + ", ".join(f"{m.label} {self.style.dim(f'(pid {m.pid})')}" for m in on_node)
            )
        self.header()
        # The first member joins first: its history is the whole order, the reference.
        first = self.members[0]
        first.command("join")
        self.pump(lambda: bool(self.reference), f"{first.label} to join")
        for member in self.members[1:]:
            member.command("join")
        everyone = frozenset(m.address for m in self.members)
        self.pump(
            lambda: bool(self.configs) and self.configs[-1] == everyone and self.all_printed(),
            "every member to join",
        )
        self.done(f'{_n(len(self.members), "member")} in group "{GROUP}"', since)

        self.round(1)

        since = self.phase(f"Killing node {killed + 1} (SIGKILL: a crash, no goodbye)")
        victims = [m for m in self.members if m.node == killed]
        survivors = frozenset(m.address for m in self.members if m.node != killed)
        mark = len(self.reference)
        cluster.kill(killed)
        self.header()
        self.pump(
            lambda: bool(self.configs) and self.configs[-1] == survivors,
            f"the survivors to see the members of node {killed + 1} leave",
        )
        detected = _duration(since)
        expected_nodes = tuple(i + 1 for i in range(options.nodes) if i != killed)
        self.pump(
            lambda: self.ring_printed(expected_nodes, mark),
            f"the ring of nodes {' '.join(map(str, expected_nodes))}",
        )
        self.pump(
            lambda: self.all_printed() and all(m.lost for m in victims),
            f"the members of node {killed + 1} to notice",
        )
        self.done(
            f"the survivors saw NODEDOWN {detected} after the kill "
            + self.style.dim(f"(token {cluster.token_ms} ms + consensus {cluster.consensus_ms} ms)")
        )

        self.round(2)

        since = self.phase(f"Restarting node {killed + 1}; the rings merge, its members rejoin")
        mark = len(self.reference)
        cluster.start(killed)
        ring = self.wait_for_ring(cluster)
        self.header()
        all_nodes = tuple(i + 1 for i in range(options.nodes))
        self.pump(
            lambda: self.ring_printed(all_nodes, mark), f"the survivors to see ring {ring.seq}"
        )
        merged = _duration(since)
        for member in victims:
            member.command("connect")
        self.pump(lambda: not any(m.lost for m in victims), "the members to reconnect")
        for member in victims:
            member.command("join")
        self.pump(
            lambda: self.configs[-1] == everyone and self.all_printed(),
            f"the members of node {killed + 1} to rejoin",
        )
        self.done(f"ring merged {merged} after the restart, members rejoined", since)

        self.round(3)

        since = self.phase("Checking the order")
        self.stop_members()
        histories = {m.label: m.history for m in self.members}
        complete = [m.label for m in self.members if not m.ever_lost]
        return check_order(histories, complete, self.describe)

    def wait_for_ring(self, cluster: LocalCluster) -> cpg.RingId:
        """Waits for the ring of every node; DemoError with each node's state if none forms."""
        try:
            return cluster.wait_for_ring(timeout=self.options.timeout)
        except ClusterError as error:
            if "last status" not in str(error):
                raise DemoError(str(error)) from None  # a node died: the message has its log
            states = []
            for index in range(cluster.n):
                status = cluster.status(index) or {}
                members = " ".join(str(n) for n in status.get("members") or [])
                states.append(f"node {index + 1}: {status.get('state', 'no answer')} [{members}]")
            raise DemoError(
                f"the nodes formed no ring of all {cluster.n} within {self.options.timeout:g} s "
                f"({'; '.join(states)})"
            ) from None

    def ring_printed(self, nodes: tuple[int, ...], since: int) -> bool:
        """Whether a ring of `nodes` is printed from reference position `since` on."""
        return (
            any(
                isinstance(event, RingChange) and event.nodes == nodes
                for event in self.reference[since : self.printed]
            )
            and self.all_printed()
        )

    def round(self, number: int) -> None:
        senders = [m for m in self.members if not m.lost and m.address in self.configs[-1]]
        total = self.options.messages
        sending = min(total, len(senders))
        since = self.phase(
            f"Round {number}: {_n(total, 'message')} from {_n(sending, 'member')} at once"
        )
        self.header()
        before = self.messages_printed
        shares = [total // len(senders) + (i < total % len(senders)) for i in range(len(senders))]
        for member, share in zip(senders, shares, strict=True):
            if share:
                member.command(f"send {share}")
        target = before + total

        def delivered() -> bool:
            unsent = sum(m.unsent for m in self.members)
            return self.messages_printed >= target - unsent and self.all_printed()

        self.pump(delivered, f"the {total} messages of round {number}")
        self.done(
            f"{_n(len(self.expected(self.printed - 1)), 'member')} delivered "
            f"{_n(self.messages_printed - before, 'message')} in one order",
            since,
        )

    def summary(self, check: OrderCheck) -> int:
        style = self.style
        complete = [m.label for m in self.members if not m.ever_lost]
        cut = [m for m in self.members if m.ever_lost]
        if check.ok:
            self.note(
                f"{style.green(style.ok + ' one order:')} {' '.join(complete)} delivered the same "
                f"{_n(check.messages, 'message')}, {_n(check.confchgs, 'membership change')} "
                f"and {_n(check.rings, 'new ring')}, in the same order"
            )
            if cut:
                most = max(sum(isinstance(e, Delivery) for e in m.history) for m in cut)
                self.note(
                    f"{style.green(style.ok)} {' '.join(m.label for m in cut)}, cut off by the "
                    f"crash, delivered theirs ({_n(most, 'message')}) in that order too"
                )
        else:
            self.note(f"{style.red(style.bad + ' the orders differ:')} {check.reason}")
        took = time.monotonic() - self.started
        configurations = check.confchgs + len(self.rings_seen)
        self.say()
        self.say(
            style.bold("Summary: ")
            + f"{_n(self.messages_printed, 'message')}, "
            + f"{_n(len(self.members), 'member process', 'member processes')} on "
            + f"{self.options.nodes} nodes, {configurations} configurations seen "
            + f"({check.confchgs} group memberships, {len(self.rings_seen)} rings), "
            + f"{took:.1f} s"
        )
        return 0 if check.ok else 1


# Command line ------------------------------------------------------------------------------


def _count(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not between {low} and {high}")
        return value

    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("the timeout must be positive")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Returns the parser of `totemcast demo`."""
    parser = argparse.ArgumentParser(
        prog="totemcast demo",
        description=(
            "Starts a cluster of nodes on loopback (nothing to configure) and member processes "
            "on every node in one group; they multicast messages that every member delivers in "
            "the same order. The last node is killed and restarted on the way; the survivors "
            "see its members leave (NODEDOWN), then rejoin. Ends with a check that every "
            "member saw one order: exit status 0 if so, 1 if not or if a step failed."
        ),
    )
    parser.add_argument(
        "--nodes", type=_count(2, 9), default=3, metavar="N", help="nodes (2-9, default 3)"
    )
    parser.add_argument(
        "--members-per-node",
        type=_count(1, 9),
        default=2,
        metavar="M",
        help="member processes on each node (1-9, default 2)",
    )
    parser.add_argument(
        "--messages",
        type=_count(1, 999),
        default=12,
        metavar="K",
        help="messages in each of the three rounds, spread over the senders (default 12)",
    )
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="longest wait for any one step before the demo gives up (default 30)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the directory with the nodes' logs"
    )
    parser.add_argument("--no-color", action="store_true", help="no colours (also: NO_COLOR=1)")
    # For the tests: member LABEL reports its first two deliveries swapped.
    parser.add_argument("--swap", metavar="LABEL", help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs `totemcast demo ARGS` (default: `sys.argv[1:]`); returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--member"]:
        return _member_main(args[1:])
    parsed = build_parser().parse_args(args)
    options = _Options(
        nodes=parsed.nodes,
        members_per_node=parsed.members_per_node,
        messages=parsed.messages,
        timeout=parsed.timeout,
        keep=parsed.keep,
        swap=parsed.swap,
    )
    out = sys.stdout
    style = _Style(out, use_color(out, os.environ, parsed.no_color))
    cluster = LocalCluster(options.nodes, name="demo", keep=options.keep, start=False)
    demo = _Demo(options, out, style)
    err = _Style(sys.stderr, use_color(sys.stderr, os.environ, parsed.no_color))
    status = 1
    try:
        with cluster:
            try:
                check = demo.run(cluster)
            finally:
                demo.stop_members()
            status = demo.summary(check)
            if status != 0:
                cluster.keep = True  # also when the block ends without an exception
    except (DemoError, ClusterError, Error, OSError) as error:
        # LocalCluster keeps its directory when the block raised.
        print(file=out, flush=True)
        print(f"{err.red(err.bad + ' demo failed:')} {error}", file=sys.stderr, flush=True)
        cluster.keep = True
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr, flush=True)
        if not options.keep:
            shutil.rmtree(cluster.directory, ignore_errors=True)
        return 130
    if cluster.keep:
        print(f"node and member logs kept in {cluster.directory}", file=sys.stderr, flush=True)
    return status


# The member process ------------------------------------------------------------------------


def _die_with_parent(parent: int) -> None:
    """Makes this process receive SIGKILL when its parent dies (Linux), or exits if it has."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        sys.exit("the demo that started this member is gone")


class _MemberProcess:
    """One member: a CPG handle driven by commands on stdin, reporting on stdout.

    A thread dispatches the handle (`DispatchFlags.BLOCKING`, which also notices when the node
    goes away); the main thread reads commands and sends.
    """

    def __init__(self, label: str, socket: str, swap: bool) -> None:
        self.label = label
        self.socket = socket
        self.swap = swap
        self.held: dict[str, Any] | None = None
        self.handle: cpg.Handle | None = None
        self.dispatcher: threading.Thread | None = None
        self.nodeid = 0
        self.in_group = False
        self.to_send = 0
        self.sent = 0
        self.output = threading.Lock()
        self.buffer = b""

    def report(self, **fields: Any) -> None:
        line = json.dumps(fields) + "\n"
        with self.output:
            sys.stdout.write(line)
            sys.stdout.flush()

    # Callbacks (on the dispatch thread) ----------------------------------------------------

    def deliver(
        self, handle: cpg.Handle, group: str | bytes, nodeid: int, pid: int, msg: cpg.Message
    ) -> None:
        report = {"ev": "deliver", "nodeid": nodeid, "pid": pid, "msg": bytes(msg).decode()}
        if self.swap and self.held is None:
            self.held = report
            return
        self.report(**report)
        if self.swap and self.held is not None:
            self.report(**self.held)
            self.swap = False

    def confchg(
        self,
        handle: cpg.Handle,
        group: str | bytes,
        members: list[cpg.Address],
        left: list[cpg.Address],
        joined: list[cpg.Address],
    ) -> None:
        self.in_group = any(a.nodeid == self.nodeid and a.pid == os.getpid() for a in members)
        self.report(
            ev="confchg",
            members=[[a.nodeid, a.pid] for a in members],
            left=[[a.nodeid, a.pid, int(a.reason)] for a in left],
            joined=[[a.nodeid, a.pid, int(a.reason)] for a in joined],
        )

    def totem_confchg(self, handle: cpg.Handle, ring_id: cpg.RingId, nodeids: list[int]) -> None:
        # Rings seen while in the group are part of its order; others are not compared.
        if self.in_group:
            self.report(ev="totem", ring=[ring_id.nodeid, ring_id.seq], nodes=list(nodeids))

    def dispatch(self, handle: cpg.Handle) -> None:
        """The dispatch thread: runs the callbacks until the handle is finalized or lost."""
        try:
            handle.dispatch(cpg.DispatchFlags.BLOCKING)
        except LibraryError as error:
            self.in_group = False
            self.report(ev="lost", error=str(error))
        except Error as error:
            self.report(ev="error", error=f"dispatch: {type(error).__name__}: {error}")

    # Commands (on the main thread) ---------------------------------------------------------

    def connect(self) -> None:
        self.drop()
        handle = cpg.Handle(self.deliver, self.confchg, self.totem_confchg, socket=self.socket)
        self.handle = handle
        self.nodeid = handle.local_get()
        self.report(ev="ready", nodeid=self.nodeid, pid=os.getpid())
        self.dispatcher = threading.Thread(target=self.dispatch, args=(handle,), daemon=True)
        self.dispatcher.start()

    def drop(self) -> None:
        """Finalizes the handle (if any) and waits for its dispatch thread."""
        handle, self.handle = self.handle, None
        if handle is not None:
            with contextlib.suppress(Error):
                handle.finalize()
        if self.dispatcher is not None:
            self.dispatcher.join(5)
            self.dispatcher = None

    def lost(self) -> bool:
        """Whether the handle's node went away (its dispatch thread ended)."""
        return self.dispatcher is not None and not self.dispatcher.is_alive()

    def send_one(self) -> None:
        handle = self.handle
        if handle is None or self.lost():
            # The node went away: what was not sent never will be.
            unsent, self.to_send = self.to_send, 0
            self.report(ev="unsent", count=unsent)
            return
        payload = f"hello {self.sent + 1} from {self.label}"
        try:
            # Waits (woken by the node) while its ring is full.
            if not handle.mcast_many(cpg.Guarantee.AGREED, [payload.encode()], timeout=10):
                raise TryAgainError(f"no room to send {payload!r} for 10 s")
        except LibraryError:
            return  # the dispatch thread reports the loss; the next call counts the unsent
        self.sent += 1
        self.to_send -= 1

    def command(self, line: str) -> bool:
        """Runs one command; False to exit."""
        words = line.split()
        if not words:
            return True
        if words[0] == "quit":
            return False
        if words[0] == "connect":
            self.connect()
        elif words[0] == "join":
            if self.handle is None:
                self.connect()
            assert self.handle is not None
            self.handle.join(GROUP)
        elif words[0] == "send":
            self.to_send += int(words[1])
        else:
            self.report(ev="error", error=f"unknown command {line!r}")
        return True

    def read_commands(self) -> bool:
        """Runs the commands waiting on stdin; False to exit (also at end of file)."""
        chunk = os.read(sys.stdin.fileno(), 4096)
        if not chunk:
            return False  # the demo is gone
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        return all(self.command(line.decode()) for line in lines)

    def run(self) -> int:
        self.connect()
        with selectors.DefaultSelector() as selector:
            selector.register(sys.stdin.fileno(), selectors.EVENT_READ)
            try:
                while True:
                    pace = _SEND_PACE if self.to_send else None
                    if selector.select(pace) and not self.read_commands():
                        return 0
                    if self.to_send:
                        self.send_one()
            finally:
                self.drop()


def _member_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="totemcast.demo --member")
    parser.add_argument("label")
    parser.add_argument("--socket", required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--swap", action="store_true")
    args = parser.parse_args(argv)
    _die_with_parent(args.parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the demo stops its members itself
    member = _MemberProcess(args.label, args.socket, args.swap)
    try:
        return member.run()
    except Error as error:
        member.report(ev="error", error=f"{type(error).__name__}: {error}")
        return 1
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
