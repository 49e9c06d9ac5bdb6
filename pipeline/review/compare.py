"""Champion against challenger: a candidate beside the version it would replace (the one serving
now, by default), from what each version's evaluation saved. Nothing is scored again.

- Metric deltas (challenger − champion) for accuracy, precision, recall, F1 and AUC, always, and
  the accuracy on each test set either version was evaluated on (IMDb's reviews, SST-2's sentences).
- The test reviews on which the two disagree (one says positive, the other negative), with both
  scores, biggest difference first: only when both versions were evaluated on the same test
  reviews. "The same" means the same texts and labels in the same order: a digest of the
  ``reviews.jsonl`` each version's Evaluate step read (two executions on the same data write the
  same reviews under different URIs, and a file from before each line named its dataset holds the
  same reviews as one from after), and each version's saved predictions line up with those reviews. Otherwise the reason
  is given in words and only the metrics are compared.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from pipeline.errors import UserError
from pipeline.local.services.hosting import LocalHosting
from pipeline.review.evidence import EvaluationSet, Evidence, EvidenceError, Prediction, Review, lines_up
from pipeline.review.live import LiveComparison, live_comparison
from pipeline.review.versions import METRICS, LabelledReview, Serving, VersionSummary, serving, summary

SHOWN_DISAGREEMENTS = 50


class ComparisonError(UserError):
    """A comparison that cannot be made as asked; the message says what to ask instead."""


@dataclass(frozen=True)
class MetricDelta:
    name: str
    label: str
    champion: float | None
    challenger: float | None

    @property
    def delta(self) -> float | None:
        if self.champion is None or self.challenger is None:
            return None
        return self.challenger - self.champion


@dataclass(frozen=True)
class Disagreement(LabelledReview):
    champion_probability: float
    challenger_probability: float

    @property
    def challenger_right(self) -> bool:
        return (self.challenger_probability >= 0.5) == bool(self.label)


@dataclass(frozen=True)
class Comparison:
    champion: VersionSummary
    challenger: VersionSummary
    serving: Serving
    deltas: list[MetricDelta]
    per_review: bool  # whether the reviews could be compared one by one
    reason: str | None  # why not, in words
    test_set: EvaluationSet | None  # the shared test reviews, when per_review
    disagreements_total: int
    challenger_right: int  # of the disagreements, how many the challenger gets right
    disagreements: list[Disagreement]  # the SHOWN_DISAGREEMENTS with the biggest difference
    live: LiveComparison | None = None  # on live traffic: when the challenger shadows the champion that serves

    def as_dict(self) -> dict[str, Any]:
        """For ``--json``: the fields, each delta with its value, each disagreement with who is right."""
        result = asdict(self)
        result["deltas"] = [{**asdict(d), "delta": d.delta} for d in self.deltas]
        result["disagreements"] = [{**asdict(d), "actual": d.actual, "challenger_right": d.challenger_right}
                                   for d in self.disagreements]
        result["champion_right"] = self.disagreements_total - self.challenger_right
        if self.live is not None:
            result["live"] = {**asdict(self.live), "agreement": self.live.agreement, "interval": self.live.interval}
        return result


def compare(evidence: Evidence, champion: int | None, challenger: int) -> Comparison:
    """``challenger`` beside ``champion`` (None: the version the endpoint serves now)."""
    now = serving(evidence)
    if champion is None:
        if now.version is None:
            raise ComparisonError("no version is serving now to compare with; name the version to compare against")
        champion = now.version
    if champion == challenger:
        raise ComparisonError(f"version {challenger} compared with itself shows nothing; name two different versions")
    packages = evidence.package(champion), evidence.package(challenger)  # RegistryError names the versions there are
    champ, chall = (summary(evidence, p, now) for p in packages)
    deltas = [MetricDelta(name, label, champ.metrics[name].value, chall.metrics[name].value)
              for name, label in METRICS.items()] + _dataset_deltas(champ, chall)
    live = _on_live_traffic(evidence, now, champion, challenger)
    try:
        test_set, reviews, ours, theirs = _shared_reviews(evidence, packages[0], packages[1])
    except EvidenceError as why:
        return Comparison(champ, chall, now, deltas, False, str(why), None, 0, 0, [], live)
    differ = [Disagreement(i, reviews[i].text, reviews[i].label, a.positive_probability, b.positive_probability)
              for i, (a, b) in enumerate(zip(ours, theirs))
              if (a.positive_probability >= 0.5) != (b.positive_probability >= 0.5)]
    shown = sorted(differ, key=lambda d: -abs(d.challenger_probability - d.champion_probability))[:SHOWN_DISAGREEMENTS]
    return Comparison(champ, chall, now, deltas, True, None, test_set, len(differ),
                      sum(d.challenger_right for d in differ), shown, live)


def _on_live_traffic(evidence: Evidence, now: Serving, champion: int, challenger: int) -> LiveComparison | None:
    """The shadow against the serving version on the requests web users sent, when the challenger
    is the endpoint's shadow and the champion the version it shadows."""
    if now.shadow != challenger or now.version != champion or now.endpoint_config is None or now.shadow_since is None:
        return None
    hosting = LocalHosting(evidence.settings.home, evidence.conn, registry=evidence.registry)
    config = hosting.describe_endpoint_config(EndpointConfigName=now.endpoint_config)
    return live_comparison(evidence.settings.home, now.endpoint, config, now.shadow_since)


def _dataset_deltas(champion: VersionSummary, challenger: VersionSummary) -> list[MetricDelta]:
    """Accuracy on each test set, by dataset name; a set only one version was tested on shows one figure."""
    names = list(dict.fromkeys([*champion.datasets, *challenger.datasets]))

    def accuracy(version: VersionSummary, name: str) -> float | None:
        figures = version.datasets.get(name)
        return figures.accuracy.value if figures else None

    return [MetricDelta(f"accuracy:{name}", f"Accuracy on {name}", accuracy(champion, name), accuracy(challenger, name))
            for name in names]


def _shared_reviews(evidence: Evidence, champion, challenger) -> tuple[
        EvaluationSet, list[Review], list[Prediction], list[Prediction]]:
    """The test reviews both were evaluated on and both versions' predictions for them;
    EvidenceError saying why the reviews cannot be compared one by one."""
    sets = []
    for package in (champion, challenger):
        try:
            sets.append(evidence.test_set(package))
        except EvidenceError as error:
            raise EvidenceError(f"the test reviews of version {package.version} cannot be found ({error})") from None
    if sets[0].sha256 != sets[1].sha256:
        raise EvidenceError(
            f"the two were evaluated on different test reviews (version {champion.version}: {sets[0].count:,} "
            f"reviews, sha256 {sets[0].sha256[:12]}…; version {challenger.version}: {sets[1].count:,} reviews, "
            f"sha256 {sets[1].sha256[:12]}…), so their predictions are not about the same reviews")
    reviews = evidence.test_reviews(challenger)
    predictions = []
    for package in (champion, challenger):
        found = evidence.predictions(package)
        if not lines_up(found, reviews):
            raise EvidenceError(f"the saved predictions of version {package.version} ({len(found):,}) do not line up "
                                f"with the {len(reviews):,} test reviews it was evaluated on")
        predictions.append(found)
    return sets[1], reviews, predictions[0], predictions[1]
