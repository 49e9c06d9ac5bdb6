"""The registry page's views, as plain dataclasses: every version of the group, one version in
detail, and what the endpoint serves now.

Which version serves is read the way SageMaker would be asked: the endpoint (named in the
settings) → its endpoint config → the config's model → the model's container, whose
``ModelPackageName`` is the package ARN the deploy handler created it from (a container given by
``ModelDataUrl`` instead is matched to the version registered with that artifact). The endpoint's
status is the hosting's own: ``InService`` only while its model server runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from evaluation.outputs import DATASETS_KEY
from mlops_rules.hosting import shadow_version
from pipeline.local.services.hosting import LocalHosting
from pipeline.local.state.db import StateError
from pipeline.local.state.registry import ModelPackage
from pipeline.review.evidence import PLOTS, CodeBundle, EvaluationSet, Evidence, EvidenceError, lines_up
from pipeline.review.watched import WatchedView, newest_report
from serve.text import REVIEWS
from steps.sources import DEFAULT_NAME

# The metrics a person compares, as evaluation.json names them (evaluation/metrics.py).
METRICS = {"accuracy": "Accuracy", "precision": "Precision", "recall": "Recall", "f1": "F1", "auc": "AUC"}
WORST_SHOWN = 20


def _number(value: Any) -> float | None:
    """A report's number; SageMaker's reports write undefined ones as the string "NaN"."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return None
    return float(value)


def label_name(label: int) -> str:
    return "positive" if label else "negative"


@dataclass(frozen=True)
class Metric:
    name: str
    label: str
    value: float | None
    standard_deviation: float | None


def metrics_of(report: dict[str, Any]) -> dict[str, Metric]:
    """``binary_classification_metrics.<name>.{value, standard_deviation}`` for each of ``METRICS``."""
    found = _mapping(report.get("binary_classification_metrics") if isinstance(report, dict) else None)
    metrics = {}
    for name, label in METRICS.items():
        entry = _mapping(found.get(name))
        metrics[name] = Metric(name, label, _number(entry.get("value")), _number(entry.get("standard_deviation")))
    return metrics


@dataclass(frozen=True)
class DatasetFigures:
    """One test set's figures from evaluation.json's ``datasets``: a model that is right on reviews
    and wrong on the sentences web users type shows it here, not in the pooled accuracy."""

    name: str
    kind: str
    texts: int | None
    accuracy: Metric
    auc: Metric
    calibration_error: float | None


def datasets_of(report: dict[str, Any]) -> dict[str, DatasetFigures]:
    """Each test set's figures by dataset name. A report from before Evaluate wrote them had one test
    set of reviews, named as a dataset is by default, so an older champion still compares by name."""
    found = _mapping(report.get(DATASETS_KEY) if isinstance(report, dict) else None)
    if not found and isinstance(report, dict) and "binary_classification_metrics" in report:
        found = {DEFAULT_NAME: {**report, "kind": REVIEWS}}
    figures = {}
    for name, entry in found.items():
        entry = _mapping(entry)
        metrics = metrics_of(entry)
        texts = entry.get("texts")
        figures[str(name)] = DatasetFigures(str(name), str(entry.get("kind", "")), texts if isinstance(texts, int) else None,
                                            metrics["accuracy"], metrics["auc"], _number(entry.get("calibration_error")))
    return figures


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class HistoryEntry:
    when: str
    who: str
    from_status: str | None
    to_status: str
    comment: str | None


@dataclass(frozen=True)
class Serving:
    """What the endpoint runs now. ``status`` None: there is no endpoint (nothing approved yet)."""

    endpoint: str
    status: str | None = None
    version: int | None = None
    endpoint_config: str | None = None
    failure_reason: str | None = None
    rolling_out: int | None = None  # the version a guarded update is bringing in, while it runs
    rollout_share: float = 0.0  # its share of the requests now
    shadow: int | None = None  # the version the endpoint runs as its shadow variant, if any
    shadow_share: float = 0.0  # the share of the requests copied to it
    shadow_since: str | None = None  # when its config took the endpoint

    @property
    def in_service(self) -> bool:
        return self.status == "InService"

    def sentence(self) -> str:
        if self.status is None:
            return f"Nothing is deployed: endpoint {self.endpoint} does not exist yet. Approving a version deploys it."
        which = f"version {self.version}" if self.version is not None else f"config {self.endpoint_config}"
        text = f"Endpoint {self.endpoint} serves {which} ({self.status})."
        if self.rolling_out is not None:
            text += f" Rolling out version {self.rolling_out}: it takes {100 * self.rollout_share:.0f} % of the requests."
        if self.shadow is not None:
            text += (f" Version {self.shadow} runs as the shadow: it gets a copy of {100 * self.shadow_share:.0f} % of "
                     "the requests; its answers are captured, never returned.")
        return text + (f" {self.failure_reason}" if self.failure_reason else "")


@dataclass(frozen=True)
class HistoryRow:
    """One change of what the endpoint serves (``endpoints history``)."""

    time: str
    event: str
    version: int | None
    endpoint_config: str | None
    detail: str | None


def serving(evidence: Evidence) -> Serving:
    """The endpoint's state and the version its model was created from."""
    name = evidence.settings.endpoint_name
    hosting = LocalHosting(evidence.settings.home, evidence.conn, registry=evidence.registry)
    try:
        endpoint = hosting.describe_endpoint(EndpointName=name)
    except ClientError:
        return Serving(name)
    version = None
    try:
        config = hosting.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
        container = hosting.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])["PrimaryContainer"]
        if container.get("ModelPackageName"):
            package = evidence.registry.get_by_arn(container["ModelPackageName"])
            version = package.version if package.group_name == evidence.group else None
        elif container.get("ModelDataUrl"):
            matches = [p.version for p in evidence.packages() if p.artifact_uri == container["ModelDataUrl"]]
            version = matches[0] if len(matches) == 1 else None
    except (ClientError, StateError, KeyError, IndexError, TypeError):
        version = None
    pending = endpoint.get("PendingDeploymentSummary")
    rolling_out = hosting.config_version(pending["EndpointConfigName"]) if pending else None
    share = pending["ProductionVariants"][0]["CurrentWeight"] if pending else 0.0
    shadow, shadow_share, since = _shadow(hosting, name, endpoint)
    return Serving(name, endpoint["EndpointStatus"], version, endpoint["EndpointConfigName"],
                   endpoint.get("FailureReason"), rolling_out, share, shadow, shadow_share, since)


def _shadow(hosting: LocalHosting, name: str, endpoint: dict[str, Any]) -> tuple[int | None, float, str | None]:
    """The version the endpoint's config runs as its shadow (by the deploy function's naming), the
    share it is copied, and when that config took the endpoint."""
    version = shadow_version(name, endpoint["EndpointConfigName"])
    summaries = endpoint.get("ShadowProductionVariants") or []
    if version is None or not summaries:
        return None, 0.0, None
    since = next((row["time"] for row in reversed(hosting.endpoint_history(name))
                  if row["endpoint_config"] == endpoint["EndpointConfigName"]), None)
    return version, min(1.0, float(summaries[0]["CurrentWeight"])), since


def serving_history(evidence: Evidence) -> list[HistoryRow]:
    """What the endpoint served when, newest first (none before anything was deployed)."""
    hosting = LocalHosting(evidence.settings.home, evidence.conn, registry=evidence.registry)
    try:
        rows = hosting.endpoint_history(evidence.settings.endpoint_name)
    except ClientError:
        return []
    return [HistoryRow(r["time"], r["event"], r["version"], r["endpoint_config"], r["detail"]) for r in reversed(rows)]


@dataclass(frozen=True)
class VersionSummary:
    version: int
    status: str
    metrics: dict[str, Metric]
    datasets: dict[str, DatasetFigures]
    registered: str
    execution_id: str | None
    approval_description: str | None
    history: list[HistoryEntry]
    serving: bool

    @property
    def last_comment(self) -> str | None:
        return next((h.comment for h in reversed(self.history) if h.comment), None)


def summary(evidence: Evidence, package: ModelPackage, now_serving: Serving) -> VersionSummary:
    history = [HistoryEntry(h.changed_at, h.approver, h.from_status, h.to_status, h.comment)
               for h in evidence.registry.history(package.group_name, package.version)]
    return VersionSummary(package.version, package.approval_status, metrics_of(package.metrics),
                          datasets_of(package.metrics), package.creation_time, package.execution_id, package.approval_description, history,
                          now_serving.version == package.version and now_serving.status is not None)


@dataclass(frozen=True)
class Overview:
    group: str
    serving: Serving
    versions: list[VersionSummary]
    history: list[HistoryRow]


def overview(evidence: Evidence) -> Overview:
    """Every version of the group, newest first, what serves now, and what served before."""
    now = serving(evidence)
    return Overview(evidence.group, now, [summary(evidence, p, now) for p in evidence.packages()],
                    serving_history(evidence))


@dataclass(frozen=True)
class LabelledReview:
    """A test review by its place in the test split, with its label: what a page shows a score against."""

    index: int
    text: str
    label: int

    @property
    def actual(self) -> str:
        return label_name(self.label)


@dataclass(frozen=True)
class Mistake(LabelledReview):
    """A test review the version got wrong, with the score it gave."""

    positive_probability: float

    @property
    def confidence(self) -> float:
        """How sure the wrong answer was: the probability of the label it gave."""
        p = self.positive_probability
        return p if p >= 0.5 else 1 - p


@dataclass(frozen=True)
class PlotView:
    name: str
    title: str
    available: bool


@dataclass(frozen=True)
class Lineage:
    execution_id: str | None
    execution_status: str | None
    started: str | None
    ended: str | None
    parameters: dict[str, Any]
    data_sha256: dict[str, str]  # per split ({"train": …, "test": …}) as the model's config.json keeps them
    data_version: str | None
    training: dict[str, Any]
    code_bundles: list[CodeBundle]
    artifact_uri: str
    artifact_sha256: str
    evaluation_folder: str | None
    test_set: EvaluationSet | None
    evaluated_by: str | None  # the execution whose Evaluate job really ran (a cached step names its source)
    hosts: dict[str, int]  # instances each job ran on, by step


@dataclass(frozen=True)
class VersionDetail:
    summary: VersionSummary
    serving: Serving
    plots: list[PlotView]
    confusion_matrix: dict[str, dict[str, int]] | None
    mistakes: list[Mistake]
    misclassified: int | None
    evaluated: int | None
    lineage: Lineage
    notes: list[str] = field(default_factory=list)  # what could not be found, in words
    watched: WatchedView | None = None  # the newest monitoring report of this version on the endpoint


def detail(evidence: Evidence, version: int) -> VersionDetail:
    """One version: its metrics, plots, most confident mistakes and lineage (``RegistryError`` if
    the version does not exist)."""
    package = evidence.package(version)
    now = serving(evidence)
    notes: list[str] = []
    plots = [PlotView(name, title, evidence.plot(package, name) is not None) for name, title in PLOTS.items()]
    test_set = None
    try:
        test_set = evidence.test_set(package)
    except EvidenceError as error:
        notes.append(str(error))
    mistakes, misclassified, evaluated = _mistakes(evidence, package, notes)
    report = package.metrics.get("binary_classification_metrics") if isinstance(package.metrics, dict) else None
    matrix = report.get("confusion_matrix") if isinstance(report, dict) else None
    return VersionDetail(summary(evidence, package, now), now, plots, matrix if isinstance(matrix, dict) else None,
                         mistakes, misclassified, evaluated, _lineage(evidence, package, test_set), notes,
                         newest_report(evidence.settings, version))


def _mistakes(evidence: Evidence, package: ModelPackage, notes: list[str]) -> tuple[list[Mistake], int | None, int | None]:
    """The ``WORST_SHOWN`` most confident mistakes, from the saved predictions and the test reviews."""
    try:
        predictions = evidence.predictions(package)
        reviews = evidence.test_reviews(package)
    except EvidenceError as error:
        notes.append(f"The most confident mistakes cannot be shown: {error}")
        return [], None, None
    if not lines_up(predictions, reviews):
        notes.append(f"The most confident mistakes cannot be shown: {len(predictions)} saved predictions do not "
                     f"line up with the {len(reviews)} test reviews of version {package.version}")
        return [], None, None
    wrong = [Mistake(i, reviews[i].text, p.label, p.positive_probability)
             for i, p in enumerate(predictions) if (p.positive_probability >= 0.5) != bool(p.label)]
    worst = sorted(wrong, key=lambda m: -m.confidence)[:WORST_SHOWN]  # stable: ties keep the test order
    return worst, len(wrong), len(predictions)


def _lineage(evidence: Evidence, package: ModelPackage, test_set: EvaluationSet | None) -> Lineage:
    execution = evidence.execution(package)
    step = evidence.evaluate_step(package)
    config = evidence.model_config(package) or {}
    data, training = _mapping(config.get("data")), _mapping(config.get("training"))
    evaluated_by = (step.cache_source_execution_id or step.execution_id) if step is not None else None
    return Lineage(
        package.execution_id, execution.status if execution else None, execution.start_time if execution else None,
        execution.end_time if execution else None, dict(execution.parameters) if execution else {},
        _digests(data.get("sha256")), data.get("version"), training, evidence.code_bundles(package), package.artifact_uri,
        package.artifact_sha256, evidence.evaluation_folder(package), test_set, evaluated_by, evidence.job_hosts(package))


def _digests(value: Any) -> dict[str, str]:
    """The data's sha256, per split; a single digest (older artifacts) under "data"."""
    if isinstance(value, str):
        return {"data": value}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}
