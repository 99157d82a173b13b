"""The `totemcast` command line (also `python -m totemcast`)."""

import argparse
import sys

import totemcast


def build_parser() -> argparse.ArgumentParser:
    """Returns the parser of the `totemcast` command line."""
    parser = argparse.ArgumentParser(
        prog="totemcast",
        description="Group communication with extended virtual synchrony (Totem).",
    )
    parser.add_argument("--version", action="version", version=f"totemcast {totemcast.__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the command line with `argv` (default: `sys.argv[1:]`); returns the exit status."""
    parser = build_parser()
    parser.parse_args(argv)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
