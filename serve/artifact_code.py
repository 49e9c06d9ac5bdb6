"""Import the inference handlers shipped inside a model artifact, not the repository's copy.

The artifact's ``code/`` holds its own ``serve`` package; importing it under that name would
collide with the repository's.  The repository's modules are set aside while the artifact's
are imported, then put back, so the handlers keep the artifact's code and the rest of the
process keeps its own.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

from serve.artifact import CODE_DIR, ArtifactError

ENTRY_POINT = "inference"
_SHADOWED = ("serve", ENTRY_POINT)


def _ours(name: str) -> bool:
    return any(name == root or name.startswith(root + ".") for root in _SHADOWED)


def load_artifact_handlers(model_dir: Path) -> ModuleType:
    code_dir = (Path(model_dir) / CODE_DIR).resolve()
    if not (code_dir / f"{ENTRY_POINT}.py").is_file():
        raise ArtifactError(f"{model_dir} has no {CODE_DIR}/{ENTRY_POINT}.py: the artifact cannot be served as is")
    set_aside = {name: module for name, module in sys.modules.items() if _ours(name)}
    for name in set_aside:
        del sys.modules[name]
    sys.path.insert(0, str(code_dir))
    try:
        handlers = importlib.import_module(ENTRY_POINT)
        loaded_from = {name: Path(getattr(m, "__file__", "") or "").resolve() for name, m in sys.modules.items() if _ours(name)}
        foreign = [name for name, path in loaded_from.items() if code_dir not in path.parents]
        if foreign:
            raise ArtifactError(f"the artifact's handlers imported {foreign} from outside {code_dir}")
        for name in ("model_fn", "input_fn", "predict_fn", "output_fn"):
            if not callable(getattr(handlers, name, None)):
                raise ArtifactError(f"{code_dir / ENTRY_POINT}.py defines no {name}")
        return handlers
    finally:
        sys.path.remove(str(code_dir))
        for name in [n for n in sys.modules if _ours(n)]:
            del sys.modules[name]
        sys.modules.update(set_aside)
