"""The Lambda functions in ``lambda/``, loaded as Lambda loads them.

``lambda`` is a Python keyword, so the folder is not a package: it is each function's code root
(the template's ``CodeUri``), and a handler string names a module in it (``deploy.handler``).
Locally that folder goes on the path and the module is imported by that name, with
``mlops_rules`` beside it as in the function's package. Only the local runtime runs the
functions (hosting's events, the API's predict), and the tests; the rules the functions share
with the rest of the project are taken from ``mlops_rules``, never from a function's module.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

from pipeline.settings import REPO_ROOT

LAMBDA_DIR = REPO_ROOT / "lambda"


def lambda_path(name: str) -> Path:
    return LAMBDA_DIR / f"{name}.py"


def load_lambda(name: str) -> ModuleType:
    """The module ``name`` of a handler string ``name.handler``, imported from the code root.
    ImportError if a module of that name from elsewhere is in the way."""
    if str(LAMBDA_DIR) not in sys.path:
        sys.path.insert(0, str(LAMBDA_DIR))
    module = importlib.import_module(name)
    if Path(module.__file__ or "").resolve() != lambda_path(name).resolve():
        raise ImportError(f"module {name!r} is {module.__file__}, not the function's {lambda_path(name)}")
    return module
