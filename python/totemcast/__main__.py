"""The `totemcast` command line (also `python -m totemcast`)."""

import argparse
import importlib
import os
import signal
import sys

import totemcast
from totemcast import _native

#: Commands implemented in Rust; their arguments are parsed there.
NATIVE_COMMANDS = {
    "node": "run one node in the foreground (--config FILE [--nodeid N] [--history FILE])",
    "status": "ring id, members, protocol state and counters of a running node [--json]",
    "keygen": "write a new random authkey file, mode 0400 [-o FILE]",
    "cpgtool": "CPG groups and their members on a running node [--json]",
    "bench": "throughput, round trips, memory and failure detection in Corosync's scenarios",
}

#: Commands implemented in Python, in `totemcast.<name>.main(args)`.
PYTHON_COMMANDS = {
    "demo": "a 3-node loopback cluster, ordered messages, a node killed and merged back",
}

#: Every command, as `--help` lists them.
COMMANDS = {**PYTHON_COMMANDS, **NATIVE_COMMANDS}


def build_parser() -> argparse.ArgumentParser:
    """Returns the parser of the `totemcast` command line."""
    parser = argparse.ArgumentParser(
        prog="totemcast",
        description="Group communication with extended virtual synchrony (Totem).",
        epilog="commands:\n"
        + "\n".join(f"  {name:<8} {text}" for name, text in COMMANDS.items())
        + "\n\n`totemcast COMMAND --help` shows a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"totemcast {totemcast.__version__}")
    parser.add_argument("command", nargs="?", choices=sorted(COMMANDS), help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the command line with `argv` (default: `sys.argv[1:]`); returns the exit status."""
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in PYTHON_COMMANDS:
        command = importlib.import_module(f"totemcast.{args[0]}")
        status: int = command.main(args[1:])
        return status
    if args and args[0] in NATIVE_COMMANDS:
        if args[0] == "node":
            # The node handles SIGINT itself (it leaves the ring); Python's handler would raise
            # KeyboardInterrupt after the node has already shut down cleanly.
            signal.signal(signal.SIGINT, signal.SIG_DFL)
        if args[0] == "bench":
            # The benchmark starts nodes and workers as processes of this command, and
            # `--plot` draws its charts with this interpreter (`python -m totemcast.bench_plots`).
            os.environ.setdefault("TOTEMCAST_BENCH_SELF", f"{sys.executable} -m totemcast")
            os.environ.setdefault("TOTEMCAST_PYTHON", sys.executable)
        return _native.cli_main(args)
    parser = build_parser()
    parser.parse_args(args)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
