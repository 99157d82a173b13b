"""`python -m totemcast bench`: the benchmark runs from the Python front, with its own processes
(`python -m totemcast node` and workers) and with the Python client's worker
(`benches/python/cpgbench.py`). Tiny counts: the shape of the output, never the speed."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

WORKER = Path(__file__).resolve().parent.parent / "benches" / "python" / "cpgbench.py"


def test_bench_runs_rust_and_python_workers_from_python() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "totemcast",
            "bench",
            "--scenarios",
            "single",
            "--sizes",
            "64",
            "--duration",
            "0.2",
            "--reps",
            "1",
            "--lat-iters",
            "20",
            "--guarantees",
            "agreed",
            "--python-worker",
            f"{sys.executable} {WORKER}",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=110,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    senders = {t["bench"]: t for t in report["throughput"] if t["role"] == "sender"}
    for bench in ("send", "send-zcb", "send-batch", "fanout", "py-send", "py-send-batch"):
        assert senders[bench]["msgs_s"]["median"] > 0, bench
    receivers = [line for line in report["results"] if line["bench"] == "py-fanout"]
    assert [line["role"] for line in receivers].count("receiver") == 3
    assert all(line["gaps"] == 0 for line in receivers if line["role"] == "receiver")
    rtts = {t["bench"] for t in report["latency"] if t["role"] == "ping_rtt"}
    assert {"latency", "py-latency"} <= rtts
    assert "[1/" in done.stderr  # the progress display
