"""The ``sentiment-mlops`` command: one entry point, a subcommand per job, ``--json`` for scripts.

The commands themselves live in ``pipeline.commands`` (one module per command group, each with
its parser, its handlers and its printing); this module builds the parser from them, runs the
handler, prints its reply, and turns errors into exit statuses in one place.
"""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sqlite3
import sys
import threading
from pathlib import Path

from pipeline.commands import MODULES
from pipeline.commands.common import as_text
from pipeline.errors import UserError
from pipeline.local.processes import STOP_SIGNALS
from pipeline.local.state.db import state_path
from pipeline.settings import Settings

log = logging.getLogger("sentiment-mlops")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sentiment-mlops", allow_abbrev=False, description="Train, evaluate and serve an IMDb sentiment LSTM.")
    parser.add_argument("--home", help="folder for local runs, artifacts and the registry (default ./.mlops or $SENTIMENT_MLOPS_HOME)")
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)
    for module in MODULES:
        module.register(commands)
    return parser


def _state_error_message(error: sqlite3.Error, settings: Settings) -> str:
    """Say which file and what to do: "database is locked" alone does not name the home."""
    path = state_path(settings.home)
    text = str(error)
    if "locked" in text or "busy" in text:
        return (f"the state database {path} stayed locked by another sentiment-mlops command; "
                "wait for it to finish (executions list shows what runs) and try again")
    if isinstance(error, sqlite3.DatabaseError) and "not a database" in text:
        return (f"{path} is not a sentiment-mlops state database ({text}); "
                "point --home at another folder or move the file away")
    return f"the state database {path} could not be used: {text}"


def _interrupt(signum: int, frame) -> None:
    """SIGTERM and SIGHUP (a closed terminal, `kill`) stop a command as Ctrl-C does, so that a
    run marks its execution Stopped and stops its job instead of leaving both behind."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    stop_signals = [s for s in STOP_SIGNALS if s != signal.SIGINT]  # Ctrl-C raises KeyboardInterrupt already
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        return _main(argv)
    previous = {s: signal.signal(s, _interrupt) for s in stop_signals}
    try:
        return _main(argv)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = Settings(home=Path(args.home)) if args.home else Settings()
    try:
        reply = args.handler(args, settings)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except sqlite3.Error as exc:
        log.debug("state database error", exc_info=True)
        print(f"error: {_state_error_message(exc, settings)}", file=sys.stderr)
        return 2
    except ConnectionError as exc:  # a network that went away mid-command
        log.debug("connection error", exc_info=True)
        print(f"error: {exc}; check the network connection and run the command again", file=sys.stderr)
        return 2
    except OSError as exc:  # a home folder that cannot be written, a full disk
        log.debug("operating system error", exc_info=True)
        print(f"error: {exc}; check the path, its permissions and free space "
              "(--verbose shows where it happened)", file=sys.stderr)
        return 2
    if getattr(args, "json", False):
        print(json.dumps(reply.result, default=as_text))
    else:
        reply.print_text()
    return reply.exit_code


if __name__ == "__main__":
    sys.exit(main())
