"""A CPG member process for the multi-process tests (run as a script).

`cpg_member.py order SOCKET GROUP MEMBERS COUNT TAG`: joins GROUP, waits until MEMBERS
processes are in it, sends COUNT messages `TAG-i`, and prints every delivery it saw (until it
has MEMBERS * COUNT) as one JSON list of `[nodeid, pid, payload]`.

`cpg_member.py hold SOCKET GROUP`: joins GROUP, prints `joined` once its join is complete, then
waits for a line on stdin: `leave` leaves first, anything else (or end of file) exits without
leaving.
"""

import json
import sys

from totemcast import cpg


def order(socket: str, group: str, members: int, count: int, tag: str) -> None:
    deliveries: list[list[object]] = []
    sizes: list[int] = []

    def deliver(h: cpg.Handle, g: str | bytes, nodeid: int, pid: int, msg: cpg.Message) -> None:
        deliveries.append([nodeid, pid, msg.decode()])

    def confchg(
        h: cpg.Handle,
        g: str | bytes,
        current: list[cpg.Address],
        left: list[cpg.Address],
        joined: list[cpg.Address],
    ) -> None:
        sizes.append(len(current))

    with cpg.Handle(deliver, confchg, socket=socket) as handle:
        handle.join(group)
        while not sizes or sizes[-1] < members:
            handle.dispatch(cpg.DispatchFlags.ONE)
        handle.mcast_many(cpg.Guarantee.AGREED, [f"{tag}-{i}".encode() for i in range(count)])
        while len(deliveries) < members * count:
            handle.dispatch(cpg.DispatchFlags.ONE)
    print(json.dumps(deliveries), flush=True)


def hold(socket: str, group: str) -> None:
    done: list[bool] = []

    def confchg(h: cpg.Handle, *args: object) -> None:
        done.append(True)

    handle = cpg.Handle(confchg=confchg, socket=socket)
    handle.join(group)
    while not done:
        handle.dispatch(cpg.DispatchFlags.ONE)
    print("joined", flush=True)
    if sys.stdin.readline().strip() == "leave":
        handle.leave(group)
        print("left", flush=True)
        sys.stdin.readline()


if __name__ == "__main__":
    if sys.argv[1] == "order":
        order(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
    else:
        hold(sys.argv[2], sys.argv[3])
