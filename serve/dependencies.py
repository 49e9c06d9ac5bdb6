"""What the SageMaker containers pip-install at start, generated from one source of versions.

Three installers read a ``requirements.txt`` at every start: the processing jobs' runner
(``runproc.sh``), the training toolkit (``python -m pip install -r requirements.txt`` in the
unpacked ``sagemaker_submit_directory``) and the PyTorch inference toolkit (``python -m pip
install -r /opt/ml/model/code/requirements.txt``). The two toolkits take no other file and no
extra flag, so the constraints travel inside ``requirements.txt`` as a ``-c constraints.txt``
line, which pip resolves next to the requirements file.

``serve/constraints.txt`` is the one source: exact pins of everything installed on top of the
image. Every unit ships a copy of it as ``constraints.txt`` and a ``requirements.txt`` written
from it here, so the jobs and the endpoint install the same versions, and a changed pin changes
the content-addressed code bundles (and with them SageMaker's step cache keys).

This module lives in ``serve/`` because the training job writes the model's ``code/`` with it,
and uses the standard library only, because the pipeline imports it while building offline.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

CONSTRAINTS_FILE = Path(__file__).resolve().with_name("constraints.txt")
REQUIREMENTS_NAME = "requirements.txt"
CONSTRAINTS_NAME = "constraints.txt"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9][A-Za-z0-9.+!_-]*)$")
_HEADER = ("# Generated from serve/constraints.txt by serve/dependencies.py: edit that file, not this one.\n"
           f"-c {CONSTRAINTS_NAME}\n")


@dataclass(frozen=True)
class ContainerPackages:
    """The third-party packages one kind of container needs, by where they come from.

    ``installs``: pinned in ``serve/constraints.txt`` and pip-installed at start.
    ``from_image``: already in the PyTorch DLC; never listed, so pip neither downloads nor
    replaces them, and their versions are the image's (pin the image's full tag to fix them).
    """

    installs: tuple[str, ...]
    from_image: tuple[str, ...]


# Processing and training jobs: the PyTorch training image (the SageMaker stage of its
# Dockerfile installs scipy, scikit-learn and tqdm, and matplotlib through seaborn and fastai).
JOBS = ContainerPackages(installs=("nltk", "beautifulsoup4"),
                         from_image=("torch", "numpy", "scipy", "scikit-learn", "matplotlib", "tqdm"))
# The endpoint: the PyTorch inference image; the serving code needs text normalization only.
ENDPOINT = ContainerPackages(installs=("nltk", "beautifulsoup4"), from_image=("torch", "numpy"))


def canonical_name(name: str) -> str:
    """PEP 503's normalized name, so that ``Beautifulsoup4`` and ``beautifulsoup4`` are one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_pins(text: str) -> dict[str, str]:
    """``{canonical name: version}`` from a constraints file of exact ``name==version`` lines.

    Anything else (a range, an option, a marker) is refused: a range would let the installed
    version move between two starts of the same cached step.
    """
    pins: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = _PIN.match(line)
        if not match:
            raise ValueError(f"{CONSTRAINTS_NAME} line {number}: {raw.strip()!r} is not an exact 'name==version' pin")
        name = canonical_name(match.group(1))
        if name in pins:
            raise ValueError(f"{CONSTRAINTS_NAME} line {number}: {name} is pinned twice")
        pins[name] = match.group(2)
    return pins


def read_constraints(path: Path = CONSTRAINTS_FILE) -> bytes:
    """The one source's bytes, checked: every line an exact pin."""
    data = Path(path).read_bytes()
    parse_pins(data.decode("utf-8"))
    return data


def pinned(packages: Iterable[str], pins: Mapping[str, str]) -> tuple[str, ...]:
    """``name==version`` for each package; a package without a pin is an error, not a float."""
    missing = [p for p in packages if canonical_name(p) not in pins]
    if missing:
        raise ValueError(f"no pin in serve/{CONSTRAINTS_NAME} for {', '.join(missing)}")
    return tuple(f"{p}=={pins[canonical_name(p)]}" for p in packages)


def requirements_txt(packages: Iterable[str], constraints: bytes) -> bytes:
    """A ``requirements.txt`` that installs ``packages`` at their pins, under ``constraints.txt``."""
    lines = pinned(packages, parse_pins(constraints.decode("utf-8")))
    return (_HEADER + "".join(f"{line}\n" for line in lines)).encode("utf-8")


def install_files(packages: Iterable[str], constraints: bytes | None = None) -> dict[str, bytes]:
    """``{"requirements.txt": ..., "constraints.txt": ...}`` for a unit installing ``packages``:
    the two files that go side by side at the root of its code."""
    constraints = read_constraints() if constraints is None else constraints
    return {REQUIREMENTS_NAME: requirements_txt(packages, constraints), CONSTRAINTS_NAME: constraints}
