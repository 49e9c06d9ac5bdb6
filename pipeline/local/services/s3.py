"""The S3 calls a Lambda function makes, served from the local artifact store: the stand-in that
lets ``lambda/predict.py`` write web users' feedback locally with the code that runs in AWS."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from pipeline.local.state.store import ArtifactStore, StoreError


class LocalS3:
    """``put_object`` as boto3's S3 client offers it, writing ``s3://Bucket/Key`` whole into the store."""

    def __init__(self, home: Path | str) -> None:
        self.store = ArtifactStore(home)

    def put_object(self, Bucket: str, Key: str, Body: bytes, ContentType: str | None = None,  # noqa: N803
                   **_: Any) -> dict[str, Any]:
        try:
            self.store.put_bytes(f"s3://{Bucket}/{Key}", Body)
        except (StoreError, OSError) as error:
            raise ClientError({"Error": {"Code": "InternalError", "Message": str(error)}}, "PutObject") from None
        return {"ResponseMetadata": {"HTTPStatusCode": 200}}
