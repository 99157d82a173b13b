"""The Python client's benchmark worker: `totemcast bench --role ...` with `totemcast.cpg.Handle`.

`totemcast bench --python-worker "PYTHON benches/python/cpgbench.py"` runs it with the same
arguments as its Rust workers, for the scenarios `py-send`, `py-send-batch`, `py-fanout`,
`py-latency` and their three-node and SAFE forms. It follows Corosync's `cpgbench.c` (and
`src/bench/worker.rs`): the same 32-byte header, the same loop (on `TryAgainError` wait for the
descriptor up to 1 ms, dispatch, retry; a non-blocking dispatch every 16 sends), and the same
`RESULT` lines on stdout. `--batch` sends with `mcast_many` (64 messages per call, never
waiting inside the call); deliveries arrive through `dispatch` callbacks with `Message` views.
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import select
import signal
import struct
import sys
import time
from dataclasses import dataclass, field

from totemcast import TryAgainError
from totemcast.cpg import Address, DispatchFlags, Guarantee, Handle, Message

MAGIC = 0x42475043  # "CPGB"
HEADER = struct.Struct("<IIQQII")  # magic, type, seq, t_ns, pid, nodeid: cpgbench's struct hdr
T_DATA, T_END, T_PING, T_PONG, T_QUIT = 1, 2, 3, 4, 5
BATCH = 64


def now_ns() -> int:
    """CLOCK_MONOTONIC in nanoseconds (cpgbench's clock)."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


@dataclass
class State:
    """What cpgbench's callbacks count."""

    nodeid: int = 0
    pid: int = field(default_factory=os.getpid)
    members: int = 0
    self_joined: bool = False
    self_delivered: int = 0
    self_last_ns: int = 0
    self_end_seen: bool = False
    rx_count: int = 0
    rx_bytes: int = 0
    rx_first_send_ns: int = 0
    rx_last_ns: int = 0
    rx_next_seq: int = 0
    rx_gaps: int = 0
    rx_end_seen: bool = False
    ping_wait_seq: int = -1
    pong_ns: int = 0
    self_latency: list[int] = field(default_factory=list)
    reply: tuple[tuple[int, ...], int] | None = None
    quit_seen: bool = False
    try_again: int = 0
    wakeups_missed: int = 0
    idle_waits: int = 0

    def deliver(self, _h: Handle, _g: str | bytes, nodeid: int, pid: int, msg: Message) -> None:
        """The deliver callback."""
        t = now_ns()
        if len(msg) < HEADER.size:
            return
        magic, kind, seq, t_ns, _, _ = HEADER.unpack_from(msg)
        if magic != MAGIC:
            return
        own = nodeid == self.nodeid and pid == self.pid
        if kind == T_DATA:
            if own:
                self.self_delivered += 1
                self.self_last_ns = t
            else:
                if self.rx_count == 0:
                    self.rx_first_send_ns = t_ns
                    self.rx_next_seq = seq
                if seq != self.rx_next_seq:
                    self.rx_gaps += 1
                self.rx_next_seq = seq + 1
                self.rx_count += 1
                self.rx_bytes += len(msg)
                self.rx_last_ns = t
        elif kind == T_END:
            if own:
                self.self_end_seen = True
            else:
                self.rx_end_seen = True
        elif kind == T_PING:
            if own:
                if seq < len(self.self_latency):
                    self.self_latency[seq] = t - t_ns
            else:
                self.reply = (HEADER.unpack_from(msg), len(msg))
        elif kind == T_PONG:
            if not own and seq == self.ping_wait_seq:
                self.pong_ns = t
        elif kind == T_QUIT and not own:
            self.quit_seen = True

    def confchg(
        self,
        _h: Handle,
        _g: str | bytes,
        members: list[Address],
        _left: list[Address],
        _joined: list[Address],
    ) -> None:
        """The confchg callback."""
        self.members = len(members)
        if any(m.nodeid == self.nodeid and m.pid == self.pid for m in members):
            self.self_joined = True


class Worker:
    """A handle and its counters."""

    def __init__(self, args: argparse.Namespace) -> None:
        """Connects to the node of `args.socket`."""
        self.state = State()
        self.handle = Handle(
            deliver=self.state.deliver, confchg=self.state.confchg, socket=args.socket
        )
        self.state.nodeid = self.handle.local_get()
        self.fd = self.handle.fd_get()
        self.guarantee = Guarantee.SAFE if args.guarantee == "safe" else Guarantee.AGREED

    def pump(self, timeout: float | None) -> None:
        """Waits up to `timeout` seconds for the descriptor, then dispatches.

        A wait without end (None) is made of 1 s waits: one that times out although events
        were waiting is a missed wake-up, counted (and reported) rather than a hang.
        """
        woken = True
        if timeout != 0:
            ready, _, _ = select.select([self.fd], [], [], 1.0 if timeout is None else timeout)
            woken = bool(ready)
        handled = self.handle.dispatch(DispatchFlags.ALL)
        if timeout is None and not woken and handled > 0:
            self.state.wakeups_missed += 1
        if timeout is None and not woken and handled == 0:
            # A second without any event while waiting for some: a request makes the node look
            # at this connection again, and raises LibraryError if the node closed it (it drops
            # a client 512 MiB behind). A wake-up that finds nothing is not one (the node's
            # wake-up for an event can land after the handle read that event, in the same
            # dispatch); the Rust worker counts the same way.
            self.state.idle_waits += 1
            self.handle.local_get()

    def join(self, group: str) -> None:
        """Joins `group` and waits for the own join."""
        while True:
            try:
                self.handle.join(group)
                break
            except TryAgainError:
                time.sleep(0.01)
        while not self.state.self_joined:
            self.pump(None)

    def mcast(self, message: bytes | bytearray | memoryview) -> None:
        """Sends one message, waiting (and dispatching) while the node says TRY_AGAIN."""
        while True:
            try:
                self.handle.mcast_joined(self.guarantee, message)
                return
            except TryAgainError:
                self.state.try_again += 1
                self.pump(0.001)


def emit(role: str, **fields: object) -> None:
    """One RESULT line on stdout."""
    pairs = " ".join(f"{key}={value}" for key, value in fields.items())
    print(f"RESULT role={role} {pairs}", flush=True)


def send(w: Worker, args: argparse.Namespace, size: int) -> None:
    """The `send` mode of cpgbench."""
    limit = args.count if args.count is not None else 1 << 62
    s = w.state
    while s.members < args.members:
        w.pump(None)
    message = bytearray(b"\xab" * size)
    HEADER.pack_into(message, 0, MAGIC, T_DATA, 0, 0, s.pid, s.nodeid)
    batch = [bytearray(message) for _ in range(BATCH)] if args.batch else []
    t_first = now_ns()
    deadline = t_first + int(args.secs * 1e9)
    sent = 0
    next_pump = 16
    while sent < limit:
        t = now_ns()
        if t >= deadline:
            break
        if args.batch:
            n = min(BATCH, limit - sent)
            for i in range(n):
                struct.pack_into("<QQ", batch[i], 8, sent + i, t)
            accepted = w.handle.mcast_many(w.guarantee, batch[:n], timeout=0)
            if accepted == 0:
                s.try_again += 1
                w.pump(0.001)
            sent += accepted
        else:
            struct.pack_into("<QQ", message, 8, sent, t)
            w.mcast(message)
            sent += 1
        if sent >= next_pump:
            w.pump(0)
            next_pump = sent + 16
    t_stop = now_ns()
    HEADER.pack_into(message, 0, MAGIC, T_END, sent, t_stop, s.pid, s.nodeid)
    w.mcast(message)
    while s.self_delivered < sent or not s.self_end_seen:
        w.pump(None)
    elapsed = max(s.self_last_ns - t_first, 1) / 1e9
    send_elapsed = max(t_stop - t_first, 1) / 1e9
    emit(
        "sender",
        api="batch" if args.batch else "iovec",
        size=size,
        members=s.members,
        msgs=sent,
        secs=f"{elapsed:.3f}",
        msgs_s=f"{sent / elapsed:.0f}",
        MBps=f"{sent * size / elapsed / 1e6:.2f}",
        send_phase_msgs_s=f"{sent / send_elapsed:.0f}",
        try_again=s.try_again,
        guarantee=args.guarantee,
        client="python",
        wakeups_missed=s.wakeups_missed,
        idle_waits=s.idle_waits,
    )


def recv(w: Worker) -> None:
    """The `recv` mode of cpgbench."""
    s = w.state
    while not s.rx_end_seen:
        w.pump(None)
    elapsed = max(s.rx_last_ns - s.rx_first_send_ns, 1) / 1e9 if s.rx_count else 1.0
    emit(
        "receiver",
        size=s.rx_bytes // s.rx_count if s.rx_count else 0,
        msgs=s.rx_count,
        secs=f"{elapsed:.3f}",
        msgs_s=f"{s.rx_count / elapsed:.0f}",
        MBps=f"{s.rx_bytes / elapsed / 1e6:.2f}",
        gaps=s.rx_gaps,
        wakeups_missed=s.wakeups_missed,
        idle_waits=s.idle_waits,
    )


def latency_line(role: str, samples: list[int]) -> None:
    """A latency line as cpgbench's `print_lat` prints it."""
    if not samples:
        return
    v = sorted(samples)
    n = len(v)
    emit(
        role,
        samples=n,
        min_us=f"{v[0] / 1e3:.1f}",
        median_us=f"{v[n // 2] / 1e3:.1f}",
        mean_us=f"{sum(v) / n / 1e3:.1f}",
        p99_us=f"{v[n * 99 // 100] / 1e3:.1f}",
        p999_us=f"{v[n * 999 // 1000] / 1e3:.1f}",
        max_us=f"{v[-1] / 1e3:.1f}",
    )


def ping(w: Worker, args: argparse.Namespace, size: int) -> None:
    """The `ping` mode of cpgbench."""
    s = w.state
    iters = args.count if args.count is not None else 20000
    total = iters + args.warmup
    rtt = [0] * total
    s.self_latency = [0] * total
    while s.members < 2:
        w.pump(None)
    message = bytearray(b"\xab" * size)
    stalls = 0
    for i in range(total):
        s.pong_ns = 0
        s.ping_wait_seq = i
        t0 = now_ns()
        HEADER.pack_into(message, 0, MAGIC, T_PING, i, t0, s.pid, s.nodeid)
        w.mcast(message)
        last = t0
        while not s.pong_ns:
            w.pump(0.1)
            if not s.pong_ns and now_ns() - last > 1_000_000_000:
                stalls += 1
                last = now_ns()
                w.mcast(message)
        rtt[i] = s.pong_ns - t0
    while s.self_latency[total - 1] == 0:
        w.pump(0.01)
    HEADER.pack_into(message, 0, MAGIC, T_QUIT, total, now_ns(), s.pid, s.nodeid)
    w.mcast(message)
    emit("ping_rtt_info", size=size, stalls=stalls, guarantee=args.guarantee, client="python")
    latency_line("ping_rtt", rtt[args.warmup :])
    latency_line("ping_self_delivery", s.self_latency[args.warmup :])


def pong(w: Worker) -> None:
    """The `pong` mode of cpgbench."""
    s = w.state
    while not s.quit_seen:
        w.pump(0.1)
        if s.reply is not None:
            (magic, _, seq, t_ns, _, _), length = s.reply
            s.reply = None
            message = bytearray(b"\xcd" * length)
            HEADER.pack_into(message, 0, magic, T_PONG, seq, t_ns, s.pid, s.nodeid)
            w.mcast(message)


def parse(argv: list[str]) -> argparse.Namespace:
    """The Rust worker's arguments (those a Python worker supports)."""
    parser = argparse.ArgumentParser(prog="cpgbench.py", description=__doc__)
    parser.add_argument("--role", required=True, choices=["send", "recv", "ping", "pong"])
    parser.add_argument("--socket", required=True)
    parser.add_argument("-g", dest="group", default="bench")
    parser.add_argument("-s", dest="size", type=int, default=64)
    parser.add_argument("-t", dest="secs", type=float, default=5.0)
    parser.add_argument("-n", dest="count", type=int, default=None)
    parser.add_argument("-w", dest="warmup", type=int, default=1000)
    parser.add_argument("-m", dest="members", type=int, default=1)
    parser.add_argument("-T", dest="timeout", type=int, default=120)
    parser.add_argument("--guarantee", choices=["agreed", "safe"], default="agreed")
    parser.add_argument("--batch", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Runs one worker."""
    args = parse(sys.argv[1:] if argv is None else argv)
    signal.alarm(max(args.timeout, 1))  # never hang a benchmark run (cpgbench's alarm)
    faulthandler.register(signal.SIGUSR1)  # the orchestrator asks a stuck worker where it is
    size = max(args.size, HEADER.size)
    w = Worker(args)
    w.join(args.group)
    if args.role == "send":
        send(w, args, size)
    elif args.role == "recv":
        recv(w)
    elif args.role == "ping":
        ping(w, args, size)
    else:
        pong(w)
    w.handle.finalize()
    return 0


if __name__ == "__main__":
    sys.exit(main())
