"""What the SageMaker containers pip-install at start: one source of exact pins, shipped alike.

``serve/constraints.txt`` pins what the jobs and the endpoint install on top of their images.
These tests hold it to what the code imports and to setup.py's ranges, check that the jobs'
bundles and the model's code/ carry the same pins, and that the real pip reads the generated
files offline as intended: pip resolves against wheels the test makes (each pin and a newer
release), so the check means the same whatever is installed here or published today.
"""
from __future__ import annotations

import ast
import io
import os
import subprocess
import sys
import tarfile
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from pipeline.bundles import PROCESSING_PACKAGES, TRAINING_PACKAGES, build_bundles
from pipeline.local.engine import jobs
from pipeline.settings import REPO_ROOT, Settings
from serve import dependencies
from serve.dependencies import ENDPOINT, JOBS, canonical_name, parse_pins

SOURCE = REPO_ROOT / "serve" / "constraints.txt"
PINS = parse_pins(SOURCE.read_text(encoding="utf-8"))
SETTINGS = Settings(bucket="test-bucket", prefix="sentiment-mlops")
PROJECT_PACKAGES = {"pipeline", "serve", "steps", "train", "evaluation", "monitor", "mlops_rules"}
# Where the packages lie: the repository's top, and lambda/ (mlops_rules, bundled at the archive's top).
PACKAGE_ROOTS = (REPO_ROOT, REPO_ROOT / "lambda")
# Import names whose distribution is named otherwise.
DISTRIBUTIONS = {"sklearn": "scikit-learn", "bs4": "beautifulsoup4"}
# The Python of the images the pins are installed into (the PyTorch 2.5 DLC Dockerfiles' PYTHON_VERSION:
# CPU training and CPU inference 3.11.9, GPU training 3.11.10).
IMAGE_PYTHONS = ("3.11.9", "3.11.10")
# What each container runs, which packages its code comes from, and what it gets from where.
# The evaluation job runs the model's own serve/inference.py too.
UNITS = {
    "processing": (("steps/preprocess.py", "evaluation/evaluate.py", "serve/inference.py", "monitor/job.py"),
                   PROCESSING_PACKAGES, JOBS),
    "training": (("train/train.py",), TRAINING_PACKAGES, JOBS),
    "endpoint": (("serve/inference.py",), ("serve",), ENDPOINT),
}


# --- what the code imports --------------------------------------------------------------------

def _guarded(node: ast.Try) -> bool:
    """A ``try`` whose handler catches ImportError: an optional import (a container's toolkit)."""
    names = set()
    for handler in node.handlers:
        types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        names |= {t.id for t in types if isinstance(t, ast.Name)}
    return bool(names & {"ImportError", "ModuleNotFoundError"})


def _imports(tree: ast.AST) -> list[tuple[str, tuple[str, ...]]]:
    """``(module, imported names)`` for each import, at any depth, optional ones left out."""
    found: list[tuple[str, tuple[str, ...]]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Try) and _guarded(node):
            for branch in node.handlers + node.orelse + node.finalbody:
                visit(branch)
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, ()) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, tuple(alias.name for alias in node.names)))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _module_file(module: str) -> Path | None:
    for root in PACKAGE_ROOTS:
        base = root.joinpath(*module.split("."))
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


def _closure(entry_points: tuple[str, ...]) -> tuple[set[str], set[str]]:
    """(project modules, third-party import roots) reached from ``entry_points``."""
    seen: set[str] = set()
    third_party: set[str] = set()
    pending = [REPO_ROOT / path for path in entry_points]
    while pending:
        path = pending.pop()
        relative = path.relative_to(REPO_ROOT).with_suffix("").as_posix().removesuffix("/__init__")
        if relative in seen:
            continue
        seen.add(relative)
        for module, names in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            root = module.split(".")[0]
            if root in PROJECT_PACKAGES:
                targets = [module, *(f"{module}.{name}" for name in names)]
                pending.extend(f for f in map(_module_file, targets) if f is not None)
                pending.extend(f for f in map(_module_file, module.split(".")[:1]) if f is not None)
            elif root not in sys.stdlib_module_names:
                third_party.add(root)
    return seen, third_party


@pytest.mark.parametrize("unit", sorted(UNITS))
def test_every_package_the_code_imports_is_pinned_or_in_the_image(unit):
    """A package neither pinned nor in the image would be missing at start (ImportError) or,
    listed without a pin, resolved afresh at every start."""
    entry_points, packages, container = UNITS[unit]
    modules, third_party = _closure(entry_points)
    assert {m.removeprefix("lambda/").split("/")[0] for m in modules} <= {p.split("/")[-1] for p in packages}, \
        f"{unit} imports code its bundle lacks"
    needed = {canonical_name(DISTRIBUTIONS.get(root, root)) for root in third_party}
    provided = {canonical_name(p) for p in container.installs + container.from_image}
    assert needed <= provided, f"{unit} imports {sorted(needed - provided)}, neither pinned nor in its image"
    assert "nltk" in needed and "beautifulsoup4" in needed  # the walk does see function-level imports


def test_what_is_installed_is_pinned_and_what_the_image_has_is_not():
    """Installed: an exact pin each. From the image: no pin, since a pin unequal to the image's
    copy would make pip replace it at start, from the network."""
    for container in (JOBS, ENDPOINT):
        assert {canonical_name(p) for p in container.installs} <= set(PINS)
        assert not {canonical_name(p) for p in container.from_image} & set(PINS)
        assert not set(container.installs) & set(container.from_image)


# --- the one source -------------------------------------------------------------------------

def _setup_ranges() -> dict[str, SpecifierSet]:
    """setup.py's install_requires, read without running setup()."""
    tree = ast.parse((REPO_ROOT / "setup.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "install_requires":
            assert isinstance(node.value, ast.List), "install_requires is not a list literal"
            requirements = [Requirement(ast.literal_eval(item)) for item in node.value.elts]
            return {canonical_name(r.name): r.specifier for r in requirements}
    raise AssertionError("setup.py has no install_requires")


def test_pins_satisfy_setup_py_ranges():
    """Users install the project from setup.py's ranges; the containers get one point inside them."""
    ranges = _setup_ranges()
    assert {"nltk", "beautifulsoup4"} <= set(ranges) & set(PINS)
    outside = {name: (version, str(ranges[name])) for name, version in PINS.items()
               if name in ranges and not ranges[name].contains(version)}
    assert not outside, f"pins outside setup.py's ranges: {outside}"


def test_the_source_accepts_exact_pins_only():
    assert parse_pins("# note\nnltk==3.9.1  # why\n\nBeautifulSoup4==4.12.3\n") == {
        "nltk": "3.9.1", "beautifulsoup4": "4.12.3"}
    for bad in ("nltk>=3.8\n", "nltk\n", "-r other.txt\n", "nltk==3.9.1\nNLTK==3.9.2\n"):
        with pytest.raises(ValueError):
            parse_pins(bad)
    with pytest.raises(ValueError, match="no pin"):
        dependencies.requirements_txt(["tqdm"], SOURCE.read_bytes())


def _local_differences() -> dict[str, tuple[str, str | None]]:
    """``{name: (pin, installed here or None)}`` for each pin this environment does not match."""
    differ = {}
    for name, version in PINS.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            differ[name] = (version, installed)
    return differ


def test_pinned_versions_run_on_the_images_python():
    """A pin whose Requires-Python excludes the image's Python makes every start fail; checked
    from the installed metadata of each pin this environment has at the pinned version."""
    checked = 0
    for name, version in PINS.items():
        if _local_differences().get(name):
            continue
        requires = metadata.metadata(name).get("Requires-Python")
        for python in IMAGE_PYTHONS:
            assert not requires or SpecifierSet(requires).contains(python), f"{name}=={version} needs Python {requires}"
        checked += 1
    if not checked:
        pytest.skip("no pinned version is installed here to read its Requires-Python from")


# --- the generated files ----------------------------------------------------------------------

def _bundle_files(data: bytes) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for name in ("requirements.txt", "constraints.txt"):
            member = tar.extractfile(name)
            assert member is not None, f"{name} is not a regular file"
            files[name] = member.read()
    return files


def _artifact_files(tmp_path: Path) -> dict[str, bytes]:
    from serve.artifact import write_requirements

    write_requirements(tmp_path)
    return {name: (tmp_path / name).read_bytes() for name in ("requirements.txt", "constraints.txt")}


def test_bundles_and_the_model_carry_the_same_pins_as_the_source(tmp_path):
    bundles = build_bundles(SETTINGS)
    shipped = {"processing": _bundle_files(bundles.processing.data), "training": _bundle_files(bundles.training.data),
               "model": _artifact_files(tmp_path)}
    for unit, files in shipped.items():
        assert files["constraints.txt"] == SOURCE.read_bytes(), unit
        lines = [line for line in files["requirements.txt"].decode().splitlines() if not line.startswith("#")]
        assert lines[0] == "-c constraints.txt", unit
        assert all("==" in line for line in lines[1:]), unit
        assert {Requirement(line).name: str(Requirement(line).specifier) for line in lines[1:]} == {
            name: f"=={PINS[canonical_name(name)]}" for name in (ENDPOINT if unit == "model" else JOBS).installs}, unit


def _pinned_dependencies(name: str) -> list[str]:
    """The pinned packages ``name`` requires, as this environment's copy of it declares them."""
    try:
        declared = metadata.requires(name) or []
    except metadata.PackageNotFoundError:
        return []
    names = (Requirement(line) for line in declared)
    return sorted({canonical_name(r.name) for r in names if not r.marker and canonical_name(r.name) in PINS})


def _wheel(folder: Path, name: str, version: str, requires: list[str]) -> None:
    """A wheel with metadata and nothing else: all that pip's resolver reads in a dry run."""
    stem = f"{name.replace('-', '_')}-{version}"
    files = {f"{stem}.dist-info/METADATA": "Metadata-Version: 2.1\n" f"Name: {name}\nVersion: {version}\n"
             + "".join(f"Requires-Dist: {r}\n" for r in requires),
             f"{stem}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{stem}.dist-info/RECORD"] = "".join(f"{path},,\n" for path in [*files, f"{stem}.dist-info/RECORD"])
    with zipfile.ZipFile(folder / f"{stem}-py3-none-any.whl", "w") as wheel:
        for path, text in files.items():
            wheel.writestr(path, text)


@pytest.fixture
def package_index(tmp_path) -> Path:
    """Each pinned package at its pin and at a newer release, so a pip that ignored the pins would
    take the newer one; made here, so the check does not depend on what is installed or published."""
    folder = tmp_path / "wheels"
    folder.mkdir()
    for name, version in PINS.items():
        for release in (version, "9999.0"):
            _wheel(folder, name, release, _pinned_dependencies(name))
    return folder


def _pip_dry_run(requirements: Path, cwd: Path, wheels: Path) -> subprocess.CompletedProcess:
    """The real pip, changing nothing and asking no index: what would ``pip install -r`` take from ``wheels``?"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_NO_INDEX="1", PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1")
    return subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--find-links",
                           str(wheels), "-r", str(requirements)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def _would_install(output: str) -> dict[str, str]:
    """``{canonical name: version}`` of pip's "Would install name-version ..." line."""
    lines = [line for line in output.splitlines() if line.startswith("Would install ")]
    assert len(lines) == 1, output
    return {canonical_name(name): version
            for name, version in (item.rsplit("-", 1) for item in lines[0].removeprefix("Would install ").split())}


def test_pip_reads_the_constraints_next_to_requirements_and_takes_the_pins(tmp_path, package_index):
    """As the inference toolkit runs it (an absolute path, another working directory): pip takes
    every package, and what those packages require, at its pin, though newer releases are on
    offer; and it does read constraints.txt through the requirements file, since a pin that
    cannot be met fails it."""
    code = tmp_path / "code"
    code.mkdir()
    files = _artifact_files(code)
    result = _pip_dry_run(code / "requirements.txt", tmp_path, package_index)
    assert result.returncode == 0, result.stderr
    taken = _would_install(result.stdout)
    wanted = {canonical_name(name) for name in ENDPOINT.installs}
    wanted |= {dependency for name in wanted for dependency in _pinned_dependencies(name)}
    assert taken == {name: PINS[name] for name in wanted}

    name = canonical_name(ENDPOINT.installs[-1])
    unmet = files["constraints.txt"].decode().replace(f"{name}=={PINS[name]}", f"{name}==0.0.0.1")
    (code / "constraints.txt").write_text(unmet, encoding="utf-8")
    result = _pip_dry_run(code / "requirements.txt", tmp_path, package_index)
    assert result.returncode != 0 and "0.0.0.1" in result.stdout + result.stderr


def test_the_local_runtime_skips_the_install_whatever_its_arguments(tmp_path):
    """Locally ``python`` is a shim that skips ``pip install`` (pinned or constrained alike) and
    runs everything else with this interpreter."""
    shim = tmp_path / "python"
    shim.write_text(jobs.PIP_SHIM.format(python=sys.executable), encoding="utf-8")
    shim.chmod(0o755)
    for arguments in (["-r", "requirements.txt"], ["-r", "requirements.txt", "-c", "constraints.txt"]):
        result = subprocess.run([str(shim), "-m", "pip", "install", "--quiet", *arguments], cwd=tmp_path,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and "skipping pip install" in result.stderr
    result = subprocess.run([str(shim), "-c", "import sys; print(sys.executable)"], capture_output=True, text=True,
                            timeout=60)
    assert result.stdout.strip() == sys.executable


def test_the_containers_tier_runs_the_torch_of_the_images_tags():
    """One source, Settings.framework_version: the image URIs carry it, and the containers' tier
    (scripts/containers_tier.sh) installs the torch release those images ship."""
    import dataclasses

    from pipeline.definition.images import container_torch_version, resolve_images

    settings = Settings()
    release = container_torch_version(settings)
    images = resolve_images(settings)
    assert release.startswith(f"{settings.framework_version}.")
    assert all(f":{settings.framework_version}-" in uri for uri in (images.training, images.inference, images.processing))
    assert "container_torch_version(settings)" in (REPO_ROOT / "scripts" / "containers_tier.sh").read_text()
    assert "scripts/containers_tier.sh" in (REPO_ROOT / ".ci" / "run").read_text()
    with pytest.raises(ValueError, match="knows no PyTorch 1.99 training image"):
        container_torch_version(dataclasses.replace(settings, framework_version="1.99"))


def test_the_processing_bundle_carries_the_monitoring_job_and_the_rules_it_reads_by(tmp_path):
    """The monitoring job runs from the processing bundle (``runproc.sh``: the bundle's top on
    PYTHONPATH); it imports ``mlops_rules``, which lives in lambda/ and is bundled at the top."""
    import subprocess
    import tarfile

    bundle = build_bundles(SETTINGS).processing
    archive = tmp_path / "sourcedir.tar.gz"
    archive.write_bytes(bundle.data)
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        tar.extractall(tmp_path / "code", filter="data")
    assert {"monitor/job.py", "mlops_rules/capture.py", "mlops_rules/feedback.py"} <= names
    assert not any(name.startswith("lambda/") for name in names)
    found = subprocess.run([sys.executable, "-c", "import mlops_rules.capture, monitor.contract; "
                            "print(mlops_rules.capture.__file__)"], cwd=tmp_path / "code", capture_output=True,
                           text=True, check=True, env={"PYTHONPATH": str(tmp_path / "code")})
    assert found.stdout.strip().startswith(str(tmp_path / "code"))
