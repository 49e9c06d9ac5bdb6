"""A model version, one shape whichever registry holds it: SageMaker's model registry (what
DescribeModelPackage answers) or the local one (a row of the state database). The commands, the
approvers' workspace and scripts read this, not the two registries' own records."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class ModelVersion:
    group: str
    version: int
    arn: str
    status: str  # ModelApprovalStatus
    created: str  # ISO 8601
    artifact: str | None  # the model.tar.gz (the inference container's ModelDataUrl)
    image: str | None  # the inference container's image
    metrics_uri: str | None  # the evaluation report (ModelMetrics.ModelQuality.Statistics)
    approval_description: str | None
    execution_arn: str | None  # the pipeline execution that registered it (MetadataProperties.GeneratedBy)
    # CustomerMetadataProperties as registered: the links to the evaluation's files.
    customer_metadata_properties: Mapping[str, str] = field(default_factory=dict)

    @property
    def execution_id(self) -> str | None:
        """The execution's id, the last part of its ARN (``…:pipeline/NAME/execution/ID``)."""
        return self.execution_arn.rsplit("/", 1)[-1] if self.execution_arn else None

    @classmethod
    def from_description(cls, described: Mapping[str, Any]) -> ModelVersion:
        """From DescribeModelPackage's answer, as boto3 gives it (times as datetimes) or as JSON."""
        containers = (described.get("InferenceSpecification") or {}).get("Containers") or [{}]
        statistics = ((described.get("ModelMetrics") or {}).get("ModelQuality") or {}).get("Statistics") or {}
        created = described.get("CreationTime")
        return cls(
            group=str(described.get("ModelPackageGroupName")), version=int(described.get("ModelPackageVersion") or 0),
            arn=str(described["ModelPackageArn"]), status=str(described.get("ModelApprovalStatus")),
            created=created.isoformat() if isinstance(created, datetime) else str(created),
            artifact=containers[0].get("ModelDataUrl"), image=containers[0].get("Image"),
            metrics_uri=statistics.get("S3Uri"), approval_description=described.get("ApprovalDescription"),
            execution_arn=(described.get("MetadataProperties") or {}).get("GeneratedBy"),
            customer_metadata_properties=dict(described.get("CustomerMetadataProperties") or {}))
