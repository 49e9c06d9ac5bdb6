"""The Lambda functions in ``lambda/``, loaded as Lambda loads them, for both backends.

``lambda`` is a Python keyword, so the folder is not a package: each file is its function's
code root (``deploy.handler``, ``predict.handler``). Locally the same files are imported by path
and their ``handle`` functions are given local stand-ins for the boto3 clients; the SageMaker
backend and the commands import them the same way for the rules they share with the functions
(the retrain trigger's data version, the deploy handler's statuses). Neither backend owns this
loader: it lives here so that ``pipeline.aws`` does not import ``pipeline.local``.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from pipeline.settings import REPO_ROOT

LAMBDA_DIR = REPO_ROOT / "lambda"


def lambda_path(name: str) -> Path:
    return LAMBDA_DIR / f"{name}.py"


def load_lambda(name: str) -> ModuleType:
    """``lambda/<name>.py`` as a module (imported once per process, as ``lambda_<name>``)."""
    module_name = f"lambda_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, lambda_path(name))
        if spec is None or spec.loader is None:  # not for a .py path; the type checker cannot know
            raise ImportError(f"cannot load {lambda_path(name)}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[module_name]
            raise
    return sys.modules[module_name]
