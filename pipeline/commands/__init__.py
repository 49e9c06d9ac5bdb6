"""The ``sentiment-mlops`` command line: one module per command group.

Each module owns its sub-commands whole: ``register(subparsers)`` adds its parsers and sets
``handler`` on each leaf; a handler ``(args, settings) -> Reply`` (``common.Reply``) does the work
and says how its result prints for people and which exit status it means (``--json`` prints the
result object itself). ``pipeline.cli.main`` only parses, dispatches and prints; any error derived
from ``pipeline.errors.UserError`` becomes one ``error:`` line and exit status 2.

How to add a command:

1. A sub-command of an existing group: in that group's module (say ``run.py``), add its parser in
   ``register`` with ``set_defaults(handler=...)``, and the handler returning a ``Reply``
   (result, printer, exit status). Raise a ``UserError`` subclass (``CommandError`` will do) for
   failures the user can fix. That is the only file.
2. A new group: a new module here with ``register`` and its handlers as above, then its name in
   ``MODULES`` below, in the place it should take in ``--help``. Two files.

Helpers more than one module needs go to ``common.py``, not into a sibling command module.
"""
from __future__ import annotations

from pipeline.commands import aws, definition, hosting, monitor, registry, run, transform

# In --help order: run, executions, download | definition | registry | transform, transforms | aws |
# events, endpoints, api, serve | monitor
MODULES = (run, definition, registry, transform, aws, hosting, monitor)
