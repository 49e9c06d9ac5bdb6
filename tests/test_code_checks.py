"""The checks that read the code: ruff (the linter) and mypy (the type checker), each with the
configuration in pyproject.toml, over the whole tree, and the import rules
between the local runtime's parts and the backends (read from the import statements). They run
with the rest of the suite, so the README's test command, and with it .ci/run, fails when any does."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# lambda/ is not a package ("lambda" is a keyword): it is the functions' code root, checked as
# such: the handlers' modules and the rules packaged with them (mlops_rules).
LAMBDAS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "lambda").glob("*.py")) + ["lambda/mlops_rules"]
PACKAGES = ["pipeline", "serve", "steps", "train", "evaluation", "benchmarks", "tests"]


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_ruff_finds_nothing():
    result = _run("ruff", "check", "--no-cache", ".")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_mypy_finds_nothing():
    for targets in (PACKAGES, LAMBDAS):  # two runs: the Lambdas' module names (deploy, ...) stand alone
        result = _run("mypy", "--config-file", "pyproject.toml", *targets)
        assert result.returncode == 0, result.stdout + result.stderr


# --- what may import what ---------------------------------------------------------------------

LOCAL = "pipeline.local"
# The local runtime's three parts; its root keeps only what all three share.
LOCAL_PARTS = ("engine", "state", "services")
LOCAL_ROOT_MODULES = {"__init__", "aws_identity", "processes"}
# (modules under this prefix, the prefixes they must not import, why): the first match of a
# module's name applies. The engine and the services may import the state, and nothing else of each other.
LAYERS: list[tuple[str, tuple[str, ...], str]] = [
    (f"{LOCAL}.state", (f"{LOCAL}.engine", f"{LOCAL}.services"),
     "the state is what is recorded: it imports neither the engine nor the services"),
    (f"{LOCAL}.services", (f"{LOCAL}.engine",), "the services do not run pipelines: they do not import the engine"),
    (f"{LOCAL}.engine", (f"{LOCAL}.services",),
     "the engine runs pipelines: it may import the state, not the stand-ins for AWS services"),
    (LOCAL, tuple(f"{LOCAL}.{part}" for part in LOCAL_PARTS),
     "pipeline/local/'s root modules are shared by the three parts, so they import none of them"),
]
# Across the whole local runtime, and for the SageMaker backend and the approvers' workspace.
NEVER: list[tuple[str, tuple[str, ...], str]] = [
    (LOCAL, ("pipeline.aws", "pipeline.commands", "pipeline.cli", "pipeline.review"),
     "the local runtime imports neither the SageMaker backend nor the commands nor the approvers' workspace "
     "(the `api` command mounts the registry page into the local API)"),
    ("pipeline.review", ("pipeline.commands", "pipeline.cli", f"{LOCAL}.engine"),
     "the approvers' workspace reads the local state and services: the commands call it, it calls no command, "
     "and it runs no pipeline"),
    ("pipeline.aws", (LOCAL,), "the SageMaker backend does not import the local runtime"),
    ("pipeline.definition", (LOCAL, "pipeline.aws", "pipeline.commands", "pipeline.cli"),
     "the definition is built the same for both backends: it imports neither of them, nor the commands"),
]


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _imported(path: Path, module: str) -> list[tuple[int, str, list[str]]]:
    """``(line, statement, modules it imports)`` for every import in the file, at any depth (in
    functions too); ``from a import b`` counts as importing ``a`` and ``a.b``, since b may be a
    module, and a relative import is resolved against the file's package."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[int, str, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.append((node.lineno, ast.unparse(node), [alias.name for alias in node.names]))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*parent, *([base] if base else [])])
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")]
            found.append((node.lineno, ast.unparse(node), targets))
    return found


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _import_violations() -> list[str]:
    found: list[str] = []
    for path in sorted((ROOT / "pipeline").rglob("*.py")):
        module = _module_name(path)
        rules = [rule for rule in LAYERS if _under(module, rule[0])][:1] + [r for r in NEVER if _under(module, r[0])]
        if not rules:
            continue
        for line, statement, targets in _imported(path, module):
            for _, forbidden, why in rules:
                if any(_under(target, prefix) for target in targets for prefix in forbidden):
                    found.append(f"{path.relative_to(ROOT)}:{line} ({module}): {statement!r}: {why}")
    for path in sorted((ROOT / "lambda").rglob("*.py")):  # each runs alone in Lambda, with mlops_rules only
        for line, statement, targets in _imported(path, path.stem):
            if any(_under(target, part) for target in targets for part in PACKAGES):
                found.append(f"{path.relative_to(ROOT)}:{line}: {statement!r}: a Lambda has only mlops_rules beside it")
    return found


def test_imports_follow_the_layers():
    """pipeline/local/ is three parts: ``state`` (SQLite and the artifact store) imports neither
    ``engine`` nor ``services``; ``services`` (hosting, runtime, events, API) does not import
    ``engine``; ``engine`` imports ``state``, not ``services``; the root modules are shared by all three. The local
    runtime imports neither pipeline.aws nor the commands nor pipeline.review (the approvers'
    workspace), pipeline.review neither the commands nor the engine, pipeline.aws not the local
    runtime, and the Lambdas nothing of the project but mlops_rules."""
    local = ROOT / "pipeline" / "local"
    parts = sorted(p.name for p in local.iterdir() if (p / "__init__.py").is_file())
    assert parts == sorted(LOCAL_PARTS), f"pipeline/local/'s sub-packages are {parts}, not {sorted(LOCAL_PARTS)}"
    for part in LOCAL_PARTS:
        assert len(list((local / part).glob("*.py"))) > 1, f"pipeline/local/{part}/ holds no module"
    root_modules = {p.stem for p in local.glob("*.py")}
    assert root_modules == LOCAL_ROOT_MODULES, (
        f"pipeline/local/'s root holds {sorted(root_modules - LOCAL_ROOT_MODULES)}: put each in engine/, state/ or "
        "services/, or, if all three share it, add it to LOCAL_ROOT_MODULES")
    violations = _import_violations()
    assert not violations, "imports across the layers:\n" + "\n".join(violations)
