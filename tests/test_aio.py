"""totemcast.aio: awaitable join/leave/send and events as an async iterator."""

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

import totemcast
from conftest import WITHIN
from totemcast import aio, cpg
from totemcast.cpg import Reason
from totemcast.testing import LocalCluster


def run(main: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(main(), WITHIN * 2)

    asyncio.run(bounded())


def test_join_send_and_iterate_in_order(socket: Path, group: str) -> None:
    pid = os.getpid()

    async def main() -> None:
        async with aio.Handle(socket=socket) as handle:
            await handle.join(group)
            await handle.send(b"one")
            await handle.send(b"t", bytearray(b"wo"), guarantee=cpg.Guarantee.SAFE)
            await handle.send_many([b"%d" % i for i in range(1000)])
            events = []
            async for event in handle:
                events.append(event)
                if len(events) == 1003:
                    break
            joined = events[0]
            assert isinstance(joined, aio.ConfChg)
            assert joined.group == group
            assert joined.joined == [cpg.Address(1, pid, Reason.JOIN)]
            assert all(isinstance(e, aio.Deliver) for e in events[1:])
            payloads = [bytes(e.msg) for e in events[1:] if isinstance(e, aio.Deliver)]
            assert payloads == [b"one", b"two", *(b"%d" % i for i in range(1000))]
            assert await handle.next_event(0.01) is None
            assert handle.membership_get(group) == [cpg.Address(1, pid)]
            assert handle.local_get() == 1
            await handle.leave(group)
            left = await handle.next_event(WITHIN)
            assert isinstance(left, aio.ConfChg)
            assert left.left == [cpg.Address(1, pid, Reason.LEAVE)]
        assert handle.closed
        with pytest.raises(totemcast.BadHandleError):
            handle.native.local_get()
        assert [e async for e in handle] == []

    run(main)


def test_two_handles_on_three_nodes_see_one_order(three: LocalCluster, group: str) -> None:
    async def member(index: int, start: asyncio.Event, ready: list[int]) -> list[bytes]:
        async with aio.Handle(socket=three.socket(index)) as handle:
            await handle.join(group)
            ready.append(index)
            if len(ready) == 2:
                start.set()
            await start.wait()
            # Wait until both are members, then send.
            while len(handle.membership_get(group)) < 2:
                event = await handle.next_event(WITHIN)
                assert event is not None
            await handle.send_many([b"%d-%d" % (index, i) for i in range(200)])
            seen: list[bytes] = []
            async for event in handle:
                if isinstance(event, aio.Deliver):
                    seen.append(bytes(event.msg))
                    if len(seen) == 400:
                        return seen
            raise AssertionError("the iteration ended")

    async def main() -> None:
        start, ready = asyncio.Event(), list[int]()
        first, second = await asyncio.gather(member(0, start, ready), member(2, start, ready))
        assert first == second
        assert sorted(first) == sorted(b"%d-%d" % (n, i) for n in (0, 2) for i in range(200))

    run(main)


def test_cancelled_iteration_loses_no_event(socket: Path, group: str) -> None:
    async def main() -> None:
        async with aio.Handle(socket=socket) as handle:
            await handle.join(group)
            assert isinstance(await handle.next_event(WITHIN), aio.ConfChg)
            waiting = asyncio.ensure_future(handle.__anext__())
            await asyncio.sleep(0)  # let it start waiting
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            await handle.send(b"after cancel")
            event = await handle.next_event(WITHIN)
            assert isinstance(event, aio.Deliver)
            assert event.msg == b"after cancel"

    run(main)


def test_a_small_queue_pauses_reading_without_losing_order(socket: Path, group: str) -> None:
    async def main() -> None:
        async with aio.Handle(socket=socket, max_queued=10) as handle:
            await handle.join(group)
            await handle.send_many([b"%d" % i for i in range(500)])
            seen = []
            async for event in handle:
                if isinstance(event, aio.Deliver):
                    seen.append(bytes(event.msg))
                    if len(seen) == 500:
                        break
            assert seen == [b"%d" % i for i in range(500)]

    run(main)


def test_send_waits_while_the_node_is_paused_and_completes_after() -> None:
    with LocalCluster(1, name="pytest-aio-pause") as cluster:

        async def main() -> None:
            async with aio.Handle(socket=cluster.socket(0)) as handle:
                await handle.join("g")
                cluster.pause(0)
                try:
                    # Fill the request ring until the node would have to make room (with
                    # messages of one record each: larger ones wait between their parts).
                    agreed = cpg.Guarantee.AGREED
                    filled = handle.native.mcast_many(agreed, [bytes(1 << 19)] * 64, timeout=0)
                    assert filled < 64
                    while sent := handle.native.mcast_many(agreed, [b"f"] * 1000, timeout=0):
                        filled += sent
                    with pytest.raises(totemcast.TryAgainError):
                        handle.native.mcast_joined(agreed, b"w")
                    sending = asyncio.ensure_future(handle.send(b"waited"))
                    done, _ = await asyncio.wait((sending,), timeout=0.3)
                    assert not done, "send must wait while the ring is full"
                finally:
                    cluster.resume(0)
                await asyncio.wait_for(sending, WITHIN)
                count = 0
                async for event in handle:
                    if isinstance(event, aio.Deliver):
                        count += 1
                        if event.msg == b"waited":
                            break
                assert count == filled + 1

        run(main)


def test_join_errors_propagate(socket: Path, group: str) -> None:
    async def main() -> None:
        async with aio.Handle(socket=socket) as handle:
            with pytest.raises(totemcast.InvalidParamError):
                await handle.join("")
            with pytest.raises(totemcast.NotExistError):
                await handle.leave(group)
            with pytest.raises(totemcast.NotExistError):
                await handle.send(b"unjoined")
            await handle.join(group)
            with pytest.raises(totemcast.ExistError):
                await handle.join(group)
            handle.context_set("ctx")
            assert handle.context_get() == "ctx"
            assert handle.fileno() == handle.native.fd_get()

    run(main)
