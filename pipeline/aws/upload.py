"""Upload the content-addressed code bundles that the definition refers to.

The definition names each bundle by ``s3://{bucket}/{prefix}/code/{sha256}/{name}``, so the
object must be there before an execution starts. A bundle's key already depends on its bytes;
the object also carries its sha256 in metadata (``x-amz-meta-sha256``), so a HEAD is enough to
know it is there and whole, and a re-run uploads nothing. S3 checks the bytes it receives
against ``ChecksumSHA256``, so a corrupted upload is refused rather than stored.
"""
from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from botocore.exceptions import ClientError

from mlops_rules.s3 import split_s3_uri
from pipeline.aws.clients import AwsClients
from pipeline.aws.errors import BackendError, aws_errors, error_code, unless_missing
from pipeline.bundles import Bundle, CodeBundles
from pipeline.settings import Settings

log = logging.getLogger(__name__)

SHA256_METADATA = "sha256"
CONTENT_TYPES = {".tar.gz": "application/gzip", ".sh": "text/x-shellscript", ".json": "application/json"}


@dataclass
class UploadReport:
    """What ``upload_bundles`` did: the URIs it uploaded and the ones already in place."""

    uploaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def split_object_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` → ``(bucket, key)`` of one object (the key not empty); BackendError otherwise."""
    try:
        bucket, key = split_s3_uri(uri)
    except ValueError as error:
        raise BackendError(str(error)) from None
    if not key:
        raise BackendError(f"{uri!r} names a bucket, not an object; write s3://bucket/key")
    return bucket, key


def _content_type(name: str) -> str:
    return next((kind for suffix, kind in CONTENT_TYPES.items() if name.endswith(suffix)), "application/octet-stream")


def check_bucket(clients: AwsClients, bucket: str) -> None:
    """Fail early, and clearly, when the bucket is missing or not ours (a PUT would say less)."""
    with aws_errors(f"checking bucket {bucket}"):
        try:
            clients.s3.head_bucket(Bucket=bucket)
        except ClientError as error:
            code = error_code(error)
            if code in ("404", "NoSuchBucket", "NotFound"):
                raise BackendError(f"bucket {bucket} does not exist: create it (aws s3 mb s3://{bucket} --region "
                                   f"{clients.region}) or set SENTIMENT_MLOPS_BUCKET to an existing one") from error
            if code in ("403", "AccessDenied", "Forbidden"):
                raise BackendError(f"access denied to bucket {bucket}: it belongs to another account or the caller "
                                   f"lacks s3:ListBucket; set SENTIMENT_MLOPS_BUCKET to a bucket of yours") from error
            raise


def head_object(clients: AwsClients, bucket: str, key: str) -> dict | None:
    """The object's HEAD, or None when there is no such object (any other failure is a BackendError)."""
    with aws_errors(f"checking s3://{bucket}/{key}"):
        return unless_missing(clients.s3.head_object, Bucket=bucket, Key=key)


def _in_place(clients: AwsClients, bucket: str, bundle: Bundle) -> bool:
    """Whether the object exists with this bundle's sha256 and size (one HEAD, no download)."""
    head = head_object(clients, bucket, bundle.key)
    if head is None:
        return False
    same = head.get("Metadata", {}).get(SHA256_METADATA) == bundle.sha256 and head.get("ContentLength") == len(bundle.data)
    if not same:
        log.warning("%s exists without the expected sha256 metadata; uploading it again", bundle.s3_uri)
    return same


def upload_bundles(clients: AwsClients, settings: Settings, bundles: CodeBundles | Iterable[Bundle]) -> UploadReport:
    """Put every bundle at its ``s3://`` URI unless it is already there with the same sha256.

    Bundles come from ``pipeline.bundles.build_bundles(settings)``; their URIs (not
    ``settings.bucket``) say where they go, so they match the definition built from them.
    """
    items = list(bundles.all() if isinstance(bundles, CodeBundles) else bundles)
    unique = list({bundle.s3_uri: bundle for bundle in items}.values())
    for bundle in unique:
        if hashlib.sha256(bundle.data).hexdigest() != bundle.sha256:
            raise BackendError(f"bundle {bundle.s3_uri} does not match its sha256: rebuild the bundles")
    for bucket in sorted({split_object_uri(bundle.s3_uri)[0] for bundle in unique}):
        if bucket != settings.bucket:
            log.warning("bundles go to bucket %s, not the settings' bucket %s", bucket, settings.bucket)
        check_bucket(clients, bucket)
    report = UploadReport()
    for bundle in unique:
        bucket, key = split_object_uri(bundle.s3_uri)
        if _in_place(clients, bucket, bundle):
            report.skipped.append(bundle.s3_uri)
            log.info("already in place: %s", bundle.s3_uri)
            continue
        checksum = base64.b64encode(bytes.fromhex(bundle.sha256)).decode("ascii")
        with aws_errors(f"uploading {bundle.s3_uri}"):
            clients.s3.put_object(Bucket=bucket, Key=key, Body=bundle.data, ContentType=_content_type(bundle.name),
                                  Metadata={SHA256_METADATA: bundle.sha256}, ChecksumSHA256=checksum)
        report.uploaded.append(bundle.s3_uri)
        log.info("uploaded %s (%d bytes)", bundle.s3_uri, len(bundle.data))
    return report
