"""sentiment-mlops: a movie-review sentiment model trained, gated, registered and served the SageMaker way.

Each top-level package is a deployable unit (see docs/ARCHITECTURE.md): ``pipeline`` runs on the user's
machine, ``steps``/``train``/``evaluation`` inside SageMaker jobs, ``serve`` inside the endpoint.
"""
from setuptools import find_packages, setup

setup(
    name="sentiment-mlops",
    version="0.1.0",
    description="IMDb sentiment LSTM on SageMaker Pipelines, runnable end to end on one machine",
    python_requires=">=3.11.4",  # tarfile extraction filters,
    packages=[*find_packages(include=["pipeline", "pipeline.*", "serve", "serve.*", "steps", "train", "evaluation", "monitor"]),
              "mlops_rules"],
    # The rules the Lambda functions share with the rest (standard library only) live in the
    # functions' code root, which the template packages whole; installed from there as mlops_rules.
    package_dir={"mlops_rules": "lambda/mlops_rules"},
    install_requires=[
        # The SageMaker SDK's major version changes the workflow API: pin it.
        "sagemaker>=3.27,<4",
        "boto3>=1.34",
        # Any torch 2.x build works; pick the CPU or CUDA build you want before installing.
        "torch>=2.2",
        "numpy>=1.26",
        "scikit-learn>=1.4",
        "scipy>=1.11",  # imported directly (sparse matrices, L-BFGS); scikit-learn brings it too
        "nltk>=3.8,<4",
        "beautifulsoup4>=4.12,<5",
        "matplotlib>=3.8",
        "tqdm>=4.66",
        # The model server, the local SageMaker runtime and the local API: an event-loop HTTP
        # server and client with a C parser (see the README's "Dependencies").
        "aiohttp>=3.11,<4",
        # The registry page's HTML (pipeline/review/templates/), written out with autoescaping so that
        # review text from a data set is shown as text (see the README's "Dependencies").
        "jinja2>=3.1,<4",
    ],
    # The registry page's templates and style sheet travel with the package, installed or editable.
    package_data={"pipeline.review": ["templates/*.html", "static/*.css"]},
    # cfn-lint checks lambda/template.yaml (SAM transform included) the way CloudFormation would;
    # selenium drives Debian's Chromium for the website's browser tests.
    # ruff and mypy read the code (tests/test_code_checks.py), with their settings in pyproject.toml; pinned,
    # since a new release adds checks and a clean tree would fail without a change of its own.
    # pytest-timeout fails a hung test (a server that never answers) instead of holding CI.
    extras_require={"test": ["pytest>=8", "pytest-timeout>=2.3,<3", "moto[server,events]>=5.1,<6", "psutil>=5.9", "cfn-lint>=1.20,<2",
                             "selenium>=4.20,<5", "ruff==0.17.6", "mypy==1.20.2"]},
    entry_points={"console_scripts": ["sentiment-mlops=pipeline.cli:main"]},
)
