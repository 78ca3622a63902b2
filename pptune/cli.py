"""The ``pptune`` command: parse, call one library function, print or write, return an exit code.

Each subcommand lives in ``pptune/commands/<name>.py`` with ``add_parser(subparsers)`` and
``run(args) -> int``; those modules import heavy libraries (torch, optuna, matplotlib) inside
``run`` only, so ``pptune --help`` and the cost-model commands start fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys

from pptune import __version__
from pptune.errors import PptuneError

# command name -> module under pptune.commands
COMMANDS: dict[str, str] = {
    "demo": "demo",
    "probe-cluster": "probe_cluster",
    "profile": "profile",
    "plan": "plan",
    "estimate": "estimate",
    "measure": "measure",
    "validate": "validate",
    "calibrate": "calibrate",
    "tune": "tune",
    "plot": "plot",
}


class UsageError(Exception):
    """A command-line syntax error: ``prog`` (``pptune plan``) and argparse's message."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog, self.message = prog, " ".join(message.split())

    def line(self) -> str:
        return f"{self.prog}: error: {self.message} (see {self.prog} --help)"


class _Parser(argparse.ArgumentParser):
    """argparse without its multi-line usage dump: an error is one line naming the (sub)command (see ``main``)."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(self.prog, message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pptune",
        description="Plan pipeline-parallel training for DeepSpeed and Megatron-LM: profile, estimate, plan, emit.",
    )
    parser.add_argument("--version", action="version", version=f"pptune {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module in COMMANDS.items():
        importlib.import_module(f"pptune.commands.{module}").add_parser(sub, name)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI. User errors print one line on stderr and return 2; success returns 0."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:  # a subcommand's unknown flags reach here: name the subcommand, not the top level
            prog = f"pptune {args.command}"
            raise UsageError(prog, f"unrecognized argument{'s' if len(extra) > 1 else ''} {' '.join(extra)}")
    except UsageError as exc:  # one line, exit 2 (argparse would print its usage, then the error)
        print(exc.line(), file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help, --version
        return int(exc.code or 0)
    args.command_line = "pptune " + shlex.join(argv)
    try:
        return int(args.run(args) or 0)
    except PptuneError as exc:
        print(f"pptune {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pptune {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `pptune estimate ... | head`: the reader left; no traceback, and none at exit
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return 141  # 128 + SIGPIPE, what a shell reports for a writer whose reader left
