"""`totemcast bench … --plot DIR`: PNG charts of results files (synthetic ones here: two sizes,
ours and Corosync's), and the note, not a failure, when matplotlib cannot be imported."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from totemcast import bench_plots

OURS = """\
# date: 2026-01-01T00:00:00Z
RESULT bench=send rep=1 role=sender size=64 msgs_s=1900000 MBps=121.6
RESULT bench=send rep=2 role=sender size=64 msgs_s=1700000 MBps=108.8
RESULT bench=send rep=1 role=sender size=65536 msgs_s=15700 MBps=1029.0
RESULT bench=send-batch rep=1 role=sender size=64 msgs_s=1500000 MBps=96.0
RESULT bench=send-batch rep=1 role=sender size=65536 msgs_s=17000 MBps=1114.1
RESULT bench=fanout rep=1 role=receiver size=64 msgs_s=575200 MBps=36.8
RESULT bench=fanout rep=1 role=receiver size=64 msgs_s=574800 MBps=36.8
RESULT bench=fanout rep=1 role=receiver size=65536 msgs_s=8784 MBps=575.6
RESULT bench=latency rep=1 role=ping_rtt median_us=20.1 p99_us=61.0
RESULT bench=latency-safe rep=1 role=ping_rtt median_us=31.5 p99_us=90.2
RESULT bench=memory rep=1 role=memory case=idle-node clients=0 node_rss_kb=5000
"""

COROSYNC = """\
# corosync: Corosync Cluster Engine, version '3.1.7'
RESULT bench=send rep=1 role=sender size=64 msgs_s=27036 MBps=1.7
RESULT bench=send rep=2 role=sender size=64 msgs_s=17000 MBps=1.1
RESULT bench=send rep=1 role=sender size=65536 msgs_s=15081 MBps=988.4
RESULT bench=fanout rep=1 role=receiver size=64 msgs_s=18738 MBps=1.2
RESULT bench=fanout rep=1 role=receiver size=65536 msgs_s=8052 MBps=527.7
RESULT bench=latency rep=1 role=ping_rtt median_us=76.0 p99_us=140.0
RESULT bench=udp rep=1 role=udp_rtt median_us=13.0 p99_us=25.0
"""

CHARTS = [
    "throughput-send.png",
    "throughput-fanout.png",
    "latency.png",
    "ratio-send.png",
    "ratio-fanout.png",
    "ratio-latency.png",
]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def results(tmp_path: Path) -> tuple[Path, Path]:
    ours, corosync = tmp_path / "ours.txt", tmp_path / "corosync.txt"
    ours.write_text(OURS)
    corosync.write_text(COROSYNC)
    return ours, corosync


def assert_charts(directory: Path, names: list[str]) -> None:
    assert sorted(path.name for path in directory.glob("*.png")) == sorted(names)
    for name in names:
        data = (directory / name).read_bytes()
        assert data.startswith(PNG_MAGIC), name
        assert len(data) > 10_000, f"{name}: {len(data)} bytes, too small for a chart"


def test_parsing_keeps_result_lines_and_skips_notes() -> None:
    lines = bench_plots.parse_results("# note\nRESULT bench=send rep=2 role=sender size=64 x\nok")
    assert [line.fields for line in lines] == [
        {"bench": "send", "rep": "2", "role": "sender", "size": "64"}
    ]
    assert lines[0].number("size") == 64
    assert lines[0].number("msgs_s") is None


def test_ratios_pair_repetitions_like_the_report() -> None:
    ours = [("1", 100.0), ("2", 90.0)]
    corosync = [("1", 10.0), ("2", 30.0)]
    stat = bench_plots.ratio(ours, corosync)
    assert stat is not None
    assert (stat.median, stat.low, stat.high) == (6.5, 3.0, 10.0)
    # Unpaired labels: the ratio of the medians.
    stat = bench_plots.ratio([("a", 100.0)], [("b", 20.0), ("c", 30.0)])
    assert stat is not None
    assert stat.median == 4.0


def test_plot_writes_every_chart(results: tuple[Path, Path], tmp_path: Path) -> None:
    ours, corosync = results
    out = tmp_path / "plots" / "nested"
    written = bench_plots.plot(
        bench_plots.load_results([ours]), bench_plots.load_results([corosync]), out
    )
    assert [path.name for path in written] == CHARTS
    assert_charts(out, CHARTS)


def test_without_corosync_there_are_no_ratio_charts(
    results: tuple[Path, Path], tmp_path: Path
) -> None:
    written = bench_plots.plot(bench_plots.load_results([results[0]]), [], tmp_path)
    assert [path.name for path in written] == [
        "throughput-send.png",
        "throughput-fanout.png",
        "latency.png",
    ]


def test_module_without_matplotlib_says_how_to_install_it(
    results: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # None in sys.modules makes `import matplotlib…` raise ImportError.
    for name in [name for name in sys.modules if name.startswith("matplotlib")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert not bench_plots.have_matplotlib()
    status = bench_plots.main(["--ours", str(results[0]), "--out", str(tmp_path / "p")])
    assert status == bench_plots.EXIT_NO_MATPLOTLIB
    assert capsys.readouterr().err.splitlines() == [bench_plots.MATPLOTLIB_MISSING]
    assert not (tmp_path / "p").exists()
    with pytest.raises(ImportError):
        bench_plots.plot([], [], tmp_path / "p")


def bench_report(*args: str, env_path: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m totemcast bench report ARGS`, through the Rust command line."""
    env = None if env_path is None else {**os.environ, "PYTHONPATH": str(env_path)}
    return subprocess.run(
        [sys.executable, "-m", "totemcast", "bench", "report", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=100,
        env=env,
    )


def test_bench_report_plot_draws_through_the_command_line(
    results: tuple[Path, Path], tmp_path: Path
) -> None:
    ours, corosync = results
    out = tmp_path / "plots"
    done = bench_report("--ours", str(ours), "--corosync", str(corosync), "--plot", str(out))
    assert done.returncode == 0, done.stderr
    assert "| ratio (totemcast / Corosync) |" in done.stdout  # the comparison is still printed
    assert f"wrote {len(CHARTS)} charts to {out}" in done.stderr
    assert_charts(out, CHARTS)


def test_bench_report_plot_without_matplotlib_notes_it_and_succeeds(
    results: tuple[Path, Path], tmp_path: Path
) -> None:
    # A `matplotlib` package first on the path whose import fails, as a missing one does.
    shadow = tmp_path / "shadow" / "matplotlib"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('matplotlib is not installed')\n")
    ours, corosync = results
    out = tmp_path / "plots"
    args = ["--ours", str(ours), "--corosync", str(corosync), "--plot", str(out), "--json"]
    done = bench_report(*args, env_path=shadow.parent)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [bench_plots.MATPLOTLIB_MISSING]
    assert '"goals"' in done.stdout  # the report itself, unchanged
    assert list(out.glob("*.png")) == []


def test_bench_run_plot_draws_its_results(tmp_path: Path) -> None:
    out = tmp_path / "plots"
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
            "--quiet",
            "--plot",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=110,
    )
    assert done.returncode == 0, done.stderr
    assert "| benchmark | side |" in done.stdout
    # The charts come from the run's RESULT lines, left beside them.
    lines = (out / "results.txt").read_text().splitlines()
    assert sum(line.startswith("RESULT ") for line in lines) == sum(
        line.startswith("RESULT ") for line in done.stdout.splitlines()
    )
    assert_charts(
        out,
        ["throughput-send.png", "throughput-send-zcb.png", "throughput-fanout.png", "latency.png"],
    )
