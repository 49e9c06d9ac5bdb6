"""Model approvals as SageMaker's registry keeps them, and the event an approval sends: what the
registries (local and SageMaker), the approvers' workspace and the deploy function agree on."""
from __future__ import annotations

import re
from typing import Any

# ModelApprovalStatus's values; a new version starts pending, for a person to decide.
APPROVAL_STATUSES = ("PendingManualApproval", "Approved", "Rejected")
DEFAULT_APPROVAL_STATUS = "PendingManualApproval"
# What an approver says, and the status it records.
VERBS = {"approve": "Approved", "reject": "Rejected"}
# UpdateModelPackage's ApprovalDescription holds at most 1,024 characters; the local registry
# keeps the same limit, so a comment accepted here is accepted there.
MAX_COMMENT_CHARS = 1024
# The EventBridge event a change of a package's status sends, which the deploy rule matches.
EVENT_SOURCE = "aws.sagemaker"
EVENT_DETAIL_TYPE = "SageMaker Model Package State Change"
_PACKAGE_ARN = re.compile(r"^arn:aws[a-z-]*:sagemaker:[a-z0-9-]+:\d{12}:model-package/[A-Za-z0-9-]{1,63}/(\d+)$")


def package_version(arn: Any) -> int | None:
    """The version a model package version ARN names (``…:model-package/GROUP/3`` → 3); None for
    anything else."""
    match = _PACKAGE_ARN.match(arn) if isinstance(arn, str) else None
    return int(match.group(1)) if match else None
