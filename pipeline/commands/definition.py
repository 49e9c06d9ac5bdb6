"""``sentiment-mlops definition``: the SageMaker Pipelines definition JSON, built offline."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.commands.common import Reply, print_path
from pipeline.settings import Settings


def register(commands: argparse._SubParsersAction) -> None:
    definition = commands.add_parser("definition", help="print the SageMaker Pipelines definition JSON (offline: no AWS call)")
    definition.add_argument("--output", "-o", help="write the JSON to this file instead of printing it")
    definition.set_defaults(handler=command_definition)


def command_definition(args: argparse.Namespace, settings: Settings) -> Reply:
    """The SageMaker Pipelines definition JSON, built offline (no AWS call, no upload)."""
    from pipeline.definition import quiet_definition_json  # the SDK loads only when a definition is built

    text = quiet_definition_json(settings)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        return Reply({"path": args.output}, print_path)
    return Reply({"definition": text}, _write_definition)


def _write_definition(result: dict) -> None:
    sys.stdout.write(result["definition"])  # as built: no newline added
