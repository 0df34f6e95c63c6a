"""The ``m2a`` command: one sub-command per module in this package.

Each module exposes ``add_parser(subparsers)`` which registers its parser and sets
``func`` (called with the parsed arguments, returns an exit code or None).
User errors (``M2AError``) are printed as one line and exit with status 2: no traceback.
"""
from __future__ import annotations

import argparse
import sys
from importlib import import_module

from m2a_core.errors import M2AError

COMMANDS = ("convert", "infer", "eval", "export", "build-engine", "bench", "calibrate")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="m2a", description="Mask2Anomaly: anomaly, open-set semantic and panoptic segmentation."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        import_module(f"m2a_core.cli.{name.replace('-', '_')}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except M2AError as exc:
        print(f"m2a {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"m2a {args.command}: interrupted", file=sys.stderr)
        return 130
