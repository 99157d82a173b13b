"""PNG charts of `totemcast bench` results, drawn with matplotlib when it is installed.

`totemcast bench … --plot DIR` and `totemcast bench report … --plot DIR` run this module as
`python -m totemcast.bench_plots --ours FILE… [--corosync FILE…] --out DIR`; it can also be run
by hand on any results files (`--results-out` of `totemcast bench`, `RESULTS_OUT` of Corosync's
harness). It reads the `RESULT bench=NAME rep=N role=ROLE key=value …` lines (the format at the
top of `src/bench/report.rs`; `#` lines are notes) and writes, one PNG each:

- `throughput-<scenario>.png`: msgs/s and MB/s by message size (log scales), our variants of
  the scenario (batched, SAFE, Python client) and Corosync's figure beside them;
- `latency.png`: round-trip median and p99 per scenario, ours and Corosync's;
- `ratio-<scenario>.png` and `ratio-latency.png` (with Corosync results only): totemcast /
  Corosync per scenario, with the goals of ARCHITECTURE.md §4 where one applies.

Points are the median over the lines of a figure, error bars its minimum and maximum (the
tables' `median [min-max]`); ratios pair the repetitions run side by side (the same `rep`
label), as `totemcast bench report` does.

matplotlib is optional (`pip install 'totemcast[plot]'`). Without it the module prints
`MATPLOTLIB_MISSING` on stderr and exits with `EXIT_NO_MATPLOTLIB`; the benchmark that
started it goes on as if no plots had been asked for.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: The one line printed on stderr when matplotlib cannot be imported.
MATPLOTLIB_MISSING = (
    "totemcast bench: no plots: matplotlib is not installed; "
    "install it with: pip install 'totemcast[plot]' (or: pip install matplotlib)"
)

#: Exit status of `python -m totemcast.bench_plots` when matplotlib cannot be imported.
EXIT_NO_MATPLOTLIB = 3

#: The sign of ratios ("10 times Corosync").
TIMES = "\N{MULTIPLICATION SIGN}"

#: The name of the other side in legends and titles.
COROSYNC = "Corosync 3.1.7"

#: Roles of throughput lines (msgs_s, MBps) and of round-trip lines (median_us, p99_us).
THROUGHPUT_ROLES = ("sender", "receiver")
LATENCY_ROLE = "ping_rtt"


@dataclass(frozen=True)
class ResultLine:
    """One `RESULT` line: its `key=value` pairs."""

    fields: Mapping[str, str]

    @property
    def bench(self) -> str:
        """The benchmark name (`bench=`), `?` if missing."""
        return self.fields.get("bench", "?")

    @property
    def role(self) -> str:
        """The role (`role=`), `?` if missing."""
        return self.fields.get("role", "?")

    @property
    def rep(self) -> str:
        """The repetition label (`rep=`), `1` if missing."""
        return self.fields.get("rep", "1")

    def number(self, key: str) -> float | None:
        """The value of `key` as a finite number, or None."""
        try:
            value = float(self.fields[key])
        except (KeyError, ValueError):
            return None
        return value if value == value and abs(value) != float("inf") else None


def parse_results(text: str) -> list[ResultLine]:
    """The `RESULT` lines of a results file's text (notes and other lines are skipped).

    Tokens without `=` are ignored, as Corosync's `summarize.py` does.
    """
    lines = []
    for line in text.splitlines():
        if line.startswith("RESULT "):
            pairs = (token.split("=", 1) for token in line.split()[1:] if "=" in token)
            lines.append(ResultLine({key: value for key, value in pairs}))
    return lines


def load_results(paths: Iterable[Path | str]) -> list[ResultLine]:
    """The `RESULT` lines of several results files, in order."""
    lines: list[ResultLine] = []
    for path in paths:
        lines.extend(parse_results(Path(path).read_text(encoding="utf-8")))
    return lines


def have_matplotlib() -> bool:
    """Whether matplotlib and its Agg backend can be imported."""
    try:
        import matplotlib.backends.backend_agg  # noqa: F401
    except ImportError:
        return False
    return True


# --- figures -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Stat:
    median: float
    low: float
    high: float


def _stat(values: Iterable[float]) -> _Stat | None:
    values = sorted(values)
    if not values:
        return None
    return _Stat(statistics.median(values), values[0], values[-1])


#: A figure's samples: (rep label, value) per line.
_Samples = list[tuple[str, float]]


def _throughput(lines: Sequence[ResultLine], index: int) -> dict[tuple[str, str, int], _Samples]:
    """(bench, role, size) → msgs/s (index 0) or MB/s (index 1) per line."""
    key_name = ("msgs_s", "MBps")[index]
    figures: dict[tuple[str, str, int], _Samples] = {}
    for line in lines:
        size, value = line.number("size"), line.number(key_name)
        if line.role in THROUGHPUT_ROLES and size is not None and value is not None:
            figures.setdefault((line.bench, line.role, int(size)), []).append((line.rep, value))
    return figures


def _latency(lines: Sequence[ResultLine], index: int) -> dict[str, _Samples]:
    """Bench name → median µs (index 0) or p99 µs (index 1) of its round trips, per line."""
    key_name = ("median_us", "p99_us")[index]
    figures: dict[str, _Samples] = {}
    for line in lines:
        value = line.number(key_name)
        if line.role == LATENCY_ROLE and value is not None:
            figures.setdefault(line.bench, []).append((line.rep, value))
    return figures


def _udp(ours: Sequence[ResultLine], corosync: Sequence[ResultLine], index: int) -> _Samples:
    """The UDP loopback round trips (Corosync's harness measures them), median or p99."""
    key_name = ("median_us", "p99_us")[index]
    return [
        (line.rep, value)
        for line in (*corosync, *ours)
        if line.role == "udp_rtt" and (value := line.number(key_name)) is not None
    ]


def _per_rep(samples: _Samples) -> dict[str, float]:
    by_rep: dict[str, list[float]] = {}
    for rep, value in samples:
        by_rep.setdefault(rep, []).append(value)
    return {rep: statistics.median(values) for rep, values in by_rep.items()}


def ratio(ours: _Samples, base: _Samples) -> _Stat | None:
    """`ours / base` as `totemcast bench report` computes it.

    The median of the ratios of repetitions run side by side (same `rep` label: the
    interleaved slots of `make bench-compare`), or the ratio of the medians when no labels
    pair up; None without figures on either side.
    """
    ours_by_rep, base_by_rep = _per_rep(ours), _per_rep(base)
    paired = [
        value / base_by_rep[rep]
        for rep, value in ours_by_rep.items()
        if rep in base_by_rep and base_by_rep[rep] > 0
    ]
    if paired:
        return _stat(paired)
    ours_stat, base_stat = _stat(v for _, v in ours), _stat(v for _, v in base)
    if ours_stat is None or base_stat is None or base_stat.median <= 0:
        return None
    return _stat([ours_stat.median / base_stat.median])


def counterpart(bench: str) -> str:
    """The Corosync scenario that our benchmark `bench` is compared with.

    The Python client (`py-`), SAFE (`-safe`) and batched sends (`send-batch`) are our
    variants of Corosync's scenarios (Corosync has none of them).
    """
    rest = bench.removeprefix("py-").removesuffix("-safe")
    return rest.replace("send-batch", "send")


#: Titles of Corosync's scenarios (those of `title()` in src/bench/report.rs).
_TITLES = {
    "send": "1 node, 1 sender (a) mcast_joined",
    "send-zcb": "1 node, 1 sender (b) zcb_mcast_joined",
    "fanout": "1 node, 1 sender + 3 receivers (c)",
    "cluster3-send": "3 nodes (netns), 1 sender on node 1",
    "cluster3-fanout": "3 nodes (netns), sender n1, receivers n2+n3",
    "latency": "1 node, CPG ping-pong round trip (d)",
    "cluster3-latency": "3 nodes, CPG round trip n1<->n2",
}

#: The order of the harness's tables.
_ORDER = [
    "send",
    "send-zcb",
    "fanout",
    "cluster3-send",
    "cluster3-fanout",
    "latency",
    "cluster3-latency",
]


def _order(scenario: str) -> tuple[int, str]:
    return (_ORDER.index(scenario) if scenario in _ORDER else len(_ORDER), scenario)


def _variant(bench: str) -> str:
    """Our variant of the scenario, e.g. `Rust client` or `Python client, SAFE`."""
    rest = bench.removeprefix("py-")
    words = ["Python client" if bench.startswith("py-") else "Rust client"]
    if "send-batch" in rest:
        words.append("batched (mcast_many)")
    if rest.endswith("-safe"):
        words.append("SAFE")
    return ", ".join(words)


def _size(size: int) -> str:
    """64 → `64 B`, 1024 → `1 KiB`, 65536 → `64 KiB`."""
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} B"


@dataclass(frozen=True)
class Goal:
    """A goal of ARCHITECTURE.md §4 on the ratio totemcast / Corosync of one figure."""

    #: Our benchmark, its role (`sender`, `receiver`, `ping_rtt`) and message size (None for
    #: round trips).
    bench: str
    role: str
    size: int | None
    #: `at least` or `at most` this ratio.
    want: Literal["at least", "at most"]
    factor: float

    def label(self) -> str:
        """`≥ 10` times, `≤ 1/5`, as ARCHITECTURE.md writes them."""
        if self.want == "at least":
            return f"≥ {self.factor:g}{TIMES}"
        if self.factor < 1:
            return f"≤ 1/{1 / self.factor:g}"
        return f"≤ {self.factor:g}{TIMES}"


#: The goals against Corosync of ARCHITECTURE.md §4 (the same as `goals()` in
#: src/bench/report.rs; the SAFE-vs-AGREED and failure-detection goals are not ratios to
#: Corosync and have no line here).
GOALS = (
    Goal("send", "sender", 64, "at least", 10),
    Goal("send-batch", "sender", 64, "at least", 10),
    Goal("py-send-batch", "sender", 64, "at least", 3),
    Goal("fanout", "receiver", 65536, "at least", 5),
    Goal("latency", LATENCY_ROLE, None, "at most", 0.2),
    Goal("cluster3-send", "sender", 64, "at least", 5),
    Goal("cluster3-send-batch", "sender", 64, "at least", 5),
    Goal("cluster3-send", "sender", 65536, "at least", 5),
    Goal("cluster3-latency", LATENCY_ROLE, None, "at most", 0.5),
)

#: Line styles of the roles; colours of our variants (Corosync is black).
_ROLE_STYLE = {"sender": "-", "receiver": ":"}
_MARKERS = "os^vD<>p*hX"


def _new_figure(columns: int) -> tuple[Figure, list[Axes]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.5 * columns + 1, 6.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, columns, squeeze=False)[0]
    return figure, list(axes)


def _size_axis(axes: Axes, sizes: Iterable[int]) -> None:
    ticks = sorted(set(sizes))
    axes.set_xscale("log", base=2)
    axes.set_xticks(ticks, [_size(size) for size in ticks])
    axes.minorticks_off()
    if len(ticks) == 1:
        axes.set_xlim(ticks[0] / 2, ticks[0] * 2)
    axes.set_xlabel("message size (bytes, log scale)")
    axes.grid(True, which="major", alpha=0.3)


def _errorbar(axes: Axes, points: list[tuple[int, _Stat]], **style: object) -> None:
    points.sort()
    xs = [size for size, _ in points]
    ys = [stat.median for _, stat in points]
    spread = [
        [stat.median - stat.low for _, stat in points],
        [stat.high - stat.median for _, stat in points],
    ]
    axes.errorbar(xs, ys, yerr=spread, capsize=3, **style)  # type: ignore[arg-type]


def _series(ours: Sequence[ResultLine], scenario: str) -> list[tuple[str, str]]:
    """Our (bench, role) pairs compared with Corosync's `scenario`, in a stable order."""
    keys = {
        (bench, role) for bench, role, _ in _throughput(ours, 0) if counterpart(bench) == scenario
    }
    return sorted(keys, key=lambda key: (key[0].startswith("py-"), key[0], key[1]))


def _save(figure: Figure, out_dir: Path, name: str) -> Path:
    """Adds one legend below the axes (each label once) and writes `out_dir/name`."""
    handles, labels = [], []
    for axes in figure.axes:
        for handle, label in zip(*axes.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    figure.legend(handles, labels, loc="outside lower center", ncols=2, fontsize="small")
    path = out_dir / name
    figure.savefig(path, dpi=100)
    return path


def _plain_numbers(axes: Axes, suffix: str = "") -> None:
    """Tick labels of a log axis as plain numbers (`0.2`, `50`), not powers of ten."""
    from matplotlib.ticker import FuncFormatter

    formatter = FuncFormatter(lambda value, _: f"{value:g}{suffix}")
    axes.yaxis.set_major_formatter(formatter)
    axes.yaxis.set_minor_formatter(formatter)
    axes.tick_params(axis="y", which="minor", labelsize="x-small")


def _wrapped(text: str) -> str:
    return textwrap.fill(text, 24)


def _file_name(scenario: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", scenario)


def _throughput_chart(
    ours: Sequence[ResultLine], corosync: Sequence[ResultLine], scenario: str, out_dir: Path
) -> Path:
    series = _series(ours, scenario)
    roles = sorted({role for _, role in series})
    figure, axes = _new_figure(2)
    title = _TITLES.get(scenario, scenario)
    versus = f": totemcast vs {COROSYNC}" if corosync else ": totemcast"
    figure.suptitle(f"Throughput, {title}{versus}")
    sizes: set[int] = set()
    for index, (ax, unit) in enumerate(
        zip(axes, ("messages per second", "MB/s (10^6 bytes per second)"), strict=True)
    ):
        mine, theirs = _throughput(ours, index), _throughput(corosync, index)
        for number, (bench, role) in enumerate(series):
            points = [
                (size, stat)
                for (b, r, size), samples in mine.items()
                if (b, r) == (bench, role) and (stat := _stat(v for _, v in samples))
            ]
            sizes.update(size for size, _ in points)
            label = f"totemcast, {_variant(bench)}" + (f" ({role})" if len(roles) > 1 else "")
            _errorbar(
                ax,
                points,
                label=label,
                linestyle=_ROLE_STYLE.get(role, "-"),
                marker=_MARKERS[number % len(_MARKERS)],
            )
        for role in roles:
            points = [
                (size, stat)
                for (b, r, size), samples in theirs.items()
                if (b, r) == (scenario, role) and (stat := _stat(v for _, v in samples))
            ]
            if points:
                sizes.update(size for size, _ in points)
                label = COROSYNC + (f" ({role})" if len(roles) > 1 else "")
                _errorbar(
                    ax,
                    points,
                    label=label,
                    color="black",
                    linestyle=_ROLE_STYLE.get(role, "-"),
                    marker="x",
                )
        ax.set_yscale("log")
        ax.set_ylabel(f"{unit}, log scale")
        ax.set_title(("messages", "bytes")[index] + " per second")
    for ax in axes:
        _size_axis(ax, sizes)
    return _save(figure, out_dir, f"throughput-{_file_name(scenario)}.png")


def _goal_lines(axes: Axes, goals: Iterable[Goal], labels: Mapping[str, str]) -> None:
    """One dashed red line per goal factor, its label naming the figures it is for."""
    by_factor: dict[tuple[str, float], list[str]] = {}
    for goal in goals:
        where = labels.get(goal.bench, goal.bench)
        if goal.size is not None:
            where += f" at {_size(goal.size)}"
        if goal.role == "receiver":
            where += " per receiver"
        by_factor.setdefault((goal.label(), goal.factor), []).append(where)
    for style, ((text, factor), wheres) in zip(
        ("--", "-.", ":"), sorted(by_factor.items()), strict=False
    ):
        axes.axhline(
            factor,
            color="tab:red",
            linestyle=style,
            linewidth=1.2,
            label=f"goal (ARCHITECTURE.md §4) {text}: " + "; ".join(wheres),
        )


def _ratio_chart(
    ours: Sequence[ResultLine], corosync: Sequence[ResultLine], scenario: str, out_dir: Path
) -> Path | None:
    mine, theirs = _throughput(ours, 0), _throughput(corosync, 0)
    series = _series(ours, scenario)
    roles = sorted({role for _, role in series})
    figure, (ax,) = _new_figure(1)
    sizes: set[int] = set()
    labels: dict[str, str] = {}
    drawn = False
    for number, (bench, role) in enumerate(series):
        points = []
        for (b, r, size), samples in mine.items():
            base = theirs.get((scenario, role, size))
            if (b, r) == (bench, role) and base and (stat := ratio(samples, base)):
                points.append((size, stat))
        if not points:
            continue
        drawn = True
        sizes.update(size for size, _ in points)
        labels[bench] = _variant(bench)
        label = _variant(bench) + (f" ({role})" if len(roles) > 1 else "")
        _errorbar(
            ax,
            points,
            label=label,
            linestyle=_ROLE_STYLE.get(role, "-"),
            marker=_MARKERS[number % len(_MARKERS)],
        )
    if not drawn:
        return None
    ax.axhline(1, color="black", linewidth=0.8, label=f"parity with {COROSYNC}")
    goals = [g for g in GOALS if g.bench in labels and counterpart(g.bench) == scenario]
    _goal_lines(ax, goals, labels)
    ax.set_yscale("log")
    _plain_numbers(ax, TIMES)
    ax.set_ylabel(f"totemcast / Corosync, messages per second ({TIMES}, log scale)")
    _size_axis(ax, sizes)
    figure.suptitle(
        f"Throughput ratio to {COROSYNC} (higher is better)\n{_TITLES.get(scenario, scenario)}"
    )
    return _save(figure, out_dir, f"ratio-{_file_name(scenario)}.png")


def _bars(
    axes: Axes,
    groups: list[str],
    bars: list[tuple[str, Mapping[str, _Stat]]],
    colors: Mapping[str, str],
) -> None:
    """Grouped bars: per group, one bar of each series that has a figure there."""
    width = 0.8 / max(1, len(bars))
    for number, (label, stats) in enumerate(bars):
        xs, ys, low, high = [], [], [], []
        for position, group in enumerate(groups):
            if group in stats:
                xs.append(position - 0.4 + width * (number + 0.5))
                ys.append(stats[group].median)
                low.append(stats[group].median - stats[group].low)
                high.append(stats[group].high - stats[group].median)
        if xs:
            axes.bar(
                xs, ys, width, yerr=[low, high], capsize=3, label=label, color=colors.get(label)
            )
    axes.set_xticks(
        range(len(groups)), [_wrapped(_TITLES.get(g, g)) for g in groups], fontsize="small"
    )


def _latency_chart(
    ours: Sequence[ResultLine], corosync: Sequence[ResultLine], out_dir: Path
) -> Path | None:
    benches = sorted(_latency(ours, 0), key=lambda b: (b.startswith("py-"), b))
    if not benches:
        return None
    groups = sorted({counterpart(bench) for bench in benches}, key=_order)
    figure, axes = _new_figure(2)
    versus = f", totemcast vs {COROSYNC}" if corosync else ", totemcast"
    figure.suptitle(f"CPG round trip (64 B ping-pong){versus}")
    colors = {COROSYNC: "black"}
    for index, ax in enumerate(axes):
        mine, theirs = _latency(ours, index), _latency(corosync, index)
        bars: list[tuple[str, Mapping[str, _Stat]]] = []
        if corosync:
            bars.append(
                (
                    COROSYNC,
                    {g: s for g in groups if g in theirs and (s := _stat(v for _, v in theirs[g]))},
                )
            )
        variants: dict[str, dict[str, _Stat]] = {}
        for bench in benches:
            if stat := _stat(v for _, v in mine[bench]):
                variants.setdefault(f"totemcast, {_variant(bench)}", {})[counterpart(bench)] = stat
        bars.extend(variants.items())
        _bars(ax, groups, bars, colors)
        reference = _stat(v for _, v in _udp(ours, corosync, index))
        if reference:
            ax.axhline(
                reference.median,
                color="tab:gray",
                linestyle=":",
                label="reference: UDP loopback round trip",
            )
        ax.set_yscale("log")
        _plain_numbers(ax)
        ax.set_ylabel(("median", "99th percentile")[index] + " round trip (µs, log scale)")
        ax.set_title(("median", "p99")[index])
        ax.grid(True, axis="y", alpha=0.3)
    return _save(figure, out_dir, "latency.png")


def _latency_ratio_chart(
    ours: Sequence[ResultLine], corosync: Sequence[ResultLine], out_dir: Path
) -> Path | None:
    mine, theirs = _latency(ours, 0), _latency(corosync, 0)
    pairs = [
        (bench, stat)
        for bench in sorted(mine, key=lambda b: (_order(counterpart(b)), b.startswith("py-"), b))
        if counterpart(bench) in theirs and (stat := ratio(mine[bench], theirs[counterpart(bench)]))
    ]
    if not pairs:
        return None
    figure, (ax,) = _new_figure(1)
    positions = range(len(pairs))
    ax.bar(
        positions,
        [stat.median for _, stat in pairs],
        0.6,
        yerr=[
            [stat.median - stat.low for _, stat in pairs],
            [stat.high - stat.median for _, stat in pairs],
        ],
        capsize=3,
        color="tab:blue",
        label="totemcast / Corosync, median round trip",
    )
    ax.set_xticks(
        positions,
        [f"{_wrapped(_TITLES.get(counterpart(b), b))}\n{_variant(b)}" for b, _ in pairs],
        fontsize="small",
    )
    ax.axhline(1, color="black", linewidth=0.8, label=f"parity with {COROSYNC}")
    # Labels starting with "_" stay out of the legend: the goals get one entry.
    label = "goal (ARCHITECTURE.md §4) of the bar under it"
    for position, (bench, _) in enumerate(pairs):
        for goal in (g for g in GOALS if g.bench == bench and g.role == LATENCY_ROLE):
            ax.hlines(
                goal.factor,
                position - 0.4,
                position + 0.4,
                color="tab:red",
                linestyle="--",
                linewidth=1.5,
                label=label,
            )
            ax.annotate(
                goal.label(),
                (position + 0.4, goal.factor),
                textcoords="offset points",
                xytext=(2, 2),
                color="tab:red",
                fontsize="small",
            )
            label = "_goal"
    ax.set_yscale("log")
    _plain_numbers(ax, TIMES)
    ax.set_ylabel(f"totemcast / Corosync, median round trip ({TIMES}, log scale)")
    ax.grid(True, axis="y", alpha=0.3)
    figure.suptitle(f"Round-trip ratio to {COROSYNC} (lower is better)")
    return _save(figure, out_dir, "ratio-latency.png")


def plot(
    ours: Sequence[ResultLine], corosync: Sequence[ResultLine], out_dir: Path | str
) -> list[Path]:
    """Writes the charts of `ours` (and `corosync`, may be empty) into `out_dir`.

    Creates `out_dir` if needed. Returns the PNG files written, in order; none when there are
    no throughput or round-trip figures (a memory or failure-detection run). Raises
    ImportError when matplotlib cannot be imported.
    """
    import matplotlib.backends.backend_agg  # noqa: F401  (ImportError before any output)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    scenarios = sorted({counterpart(bench) for bench, _, _ in _throughput(ours, 0)}, key=_order)
    for scenario in scenarios:
        written.append(_throughput_chart(ours, corosync, scenario, out))
    if path := _latency_chart(ours, corosync, out):
        written.append(path)
    if corosync:
        for scenario in scenarios:
            if path := _ratio_chart(ours, corosync, scenario, out):
                written.append(path)
        if path := _latency_ratio_chart(ours, corosync, out):
            written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m totemcast.bench_plots`: plots results files; returns the exit status.

    0 when done (also with nothing to plot), `EXIT_NO_MATPLOTLIB` when matplotlib is
    missing (after printing `MATPLOTLIB_MISSING`). `--check` only checks for matplotlib.
    """
    parser = argparse.ArgumentParser(
        prog="python -m totemcast.bench_plots",
        description="PNG charts of `totemcast bench` results (and Corosync's) with matplotlib.",
    )
    parser.add_argument("--ours", action="append", default=[], type=Path, metavar="FILE")
    parser.add_argument("--corosync", action="append", default=[], type=Path, metavar="FILE")
    parser.add_argument("--out", type=Path, metavar="DIR", help="where the PNG files go")
    parser.add_argument("--check", action="store_true", help="only check that matplotlib works")
    args = parser.parse_args(argv)
    if not have_matplotlib():
        print(MATPLOTLIB_MISSING, file=sys.stderr)
        return EXIT_NO_MATPLOTLIB
    if args.check:
        return 0
    if not args.ours or args.out is None:
        parser.error("--ours FILE and --out DIR are required")
    try:
        ours, corosync = load_results(args.ours), load_results(args.corosync)
    except OSError as error:
        print(f"totemcast bench: no plots: {error}", file=sys.stderr)
        return 1
    written = plot(ours, corosync, args.out)
    if written:
        names = ", ".join(path.name for path in written)
        print(
            f"totemcast bench: wrote {len(written)} charts to {args.out}: {names}", file=sys.stderr
        )
    else:
        print(
            "totemcast bench: no charts: no throughput or round-trip results to plot",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
