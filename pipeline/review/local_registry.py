"""The local model registry as ``pipeline.registries.RegistryStore``: the state database's rows,
the evaluation's files in the local store, and decisions through ``decisions.decide`` (the
approval event recorded and handed to the deploy handler, as the registry page does)."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from evaluation.outputs import linked_files
from mlops_rules.model_versions import ModelVersion
from pipeline.local.state.db import open_state
from pipeline.local.state.registry import ModelPackage, ModelRegistry
from pipeline.local.state.store import ArtifactStore, StoreError
from pipeline.registries import Decided
from pipeline.review.decisions import decide
from pipeline.settings import Settings

# The page `sentiment-mlops api` serves for a version (on its default port).
REGISTRY_PAGE = "http://127.0.0.1:3000/registry/versions/{version}"


class LocalRegistry:
    """One group of the registry in ``settings.home``; each call opens and closes the database."""

    def __init__(self, settings: Settings) -> None:
        self.settings, self.group = settings, settings.model_package_group

    @contextlib.contextmanager
    def _registry(self) -> Iterator[ModelRegistry]:
        with contextlib.closing(open_state(self.settings.home)) as conn:
            yield ModelRegistry(conn)

    def _package(self, number: int) -> ModelPackage:
        with self._registry() as registry:
            return registry.get(self.group, number)

    def versions(self, status: str | None = None) -> list[ModelVersion]:
        with self._registry() as registry:
            return [p.model_version() for p in registry.list_packages(self.group, status)]

    def version(self, number: int) -> ModelVersion:
        return self._package(number).model_version()

    def report(self, version: ModelVersion) -> Mapping[str, Any] | None:
        """The report as registered (kept in the database: no read of the store)."""
        return self._package(version.version).metrics

    def links(self, version: ModelVersion) -> list[dict[str, Any]]:
        """Each with the ``path`` of the file in the local store and whether it ``exists``."""
        store = ArtifactStore(self.settings.home)
        links: list[dict[str, Any]] = []
        for name, uri in linked_files(version.customer_metadata_properties):
            try:
                path = store.path(uri)
            except StoreError:  # not a URI the store can hold: shown as it is
                links.append({"name": name, "uri": uri, "path": None, "exists": None})
                continue
            links.append({"name": name, "uri": uri, "path": str(path), "exists": path.is_file()})
        return links

    def details(self, version: ModelVersion) -> dict[str, Any]:
        """The report, the inference specification, the approval history and the version's page."""
        with self._registry() as registry:
            package = registry.get(self.group, version.version)
            history = [{"when": h.changed_at, "who": h.approver, "from": h.from_status, "to": h.to_status,
                        "comment": h.comment} for h in registry.history(self.group, version.version)]
        return {"metrics": package.metrics, "inference_specification": package.inference_specification,
                "history": history, "registry_page": REGISTRY_PAGE.format(version=version.version)}

    def decide(self, number: int, verb: str, comment: str | None, *, deliver: bool = True) -> Decided:
        """Recorded, and (unless ``deliver`` is False) the event handed to the deploy handler at
        once; a deployment that fails leaves the approval in place and says why."""
        decision = decide(self.settings, number, verb, comment, deliver=deliver)
        return Decided(decision.package.model_version(),
                       {"event": decision.event, "changed": decision.changed, "deployment": decision.deployments,
                        "deployment_error": decision.deployment_error})
