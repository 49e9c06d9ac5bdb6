"""The SageMaker backend: the boto3 calls that put the pipeline on AWS and run it there.

``make_clients(settings)`` → ``upload_bundles`` (the code the definition refers to) →
``upsert_pipeline`` → ``start_execution`` → ``wait_for_execution`` / ``list_executions``; the
registry side lists the registered versions with their accuracy and approves or rejects them.
Every expected failure is a ``BackendError`` with a one-line message that says what to do.
"""
from pipeline.aws.clients import AwsClients, make_clients
from pipeline.aws.errors import BackendError, ExecutionTimeout
from pipeline.aws.pipelines import (
                                    TERMINAL_STATUSES,
                                    deployed_definition,
                                    describe_execution,
                                    execution_steps,
                                    list_executions,
                                    require_role,
                                    start_execution,
                                    upsert_pipeline,
                                    validate_parameters,
                                    wait_for_execution,
)
from pipeline.aws.registry import SageMakerRegistry, read_report, set_approval
from pipeline.aws.upload import UploadReport, upload_bundles

__all__ = [
    "AwsClients", "BackendError", "ExecutionTimeout", "TERMINAL_STATUSES", "UploadReport", "deployed_definition",
    "SageMakerRegistry", "describe_execution", "execution_steps", "list_executions",
    "make_clients", "read_report", "require_role", "set_approval", "start_execution", "upload_bundles", "upsert_pipeline",
    "validate_parameters", "wait_for_execution",
]
