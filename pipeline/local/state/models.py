"""SageMaker Models on this machine: the ``hosted_models`` table, for hosting (CreateModel from
the deploy function or ``transform``) and for the pipeline's CreateModel step alike. A model
names its artifact in the local store; nothing is started here."""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from pipeline.local.aws_identity import sagemaker_arn
from pipeline.local.state.db import StateError, iso, to_json, utc_now, write_transaction


class ModelExists(StateError):
    """CreateModel for a name that is taken (SageMaker's "Cannot create already existing model")."""


@dataclass(frozen=True)
class HostedModel:
    name: str
    arn: str
    primary_container: dict[str, Any]
    artifact_uri: str
    execution_role_arn: str
    creation_time: str


class ModelStore:
    """The local SageMaker Models."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def get(self, name: str) -> HostedModel | None:
        row = self.conn.execute("SELECT * FROM hosted_models WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        return HostedModel(row["name"], row["arn"], json.loads(row["primary_container"]), row["artifact_uri"],
                           row["execution_role_arn"], row["creation_time"])

    def create(self, name: str, container: dict[str, Any], artifact_uri: str, role_arn: str) -> HostedModel:
        """Record a model; ModelExists if the name is taken (in the same write transaction)."""
        arn = sagemaker_arn("model", name)
        with write_transaction(self.conn):
            if self.conn.execute("SELECT 1 FROM hosted_models WHERE name = ?", (name,)).fetchone():
                raise ModelExists(f'Cannot create already existing model "{arn}".')
            now = iso(utc_now())
            self.conn.execute("INSERT INTO hosted_models VALUES (?,?,?,?,?,?)",
                              (name, arn, to_json(dict(container)), artifact_uri, role_arn, now))
        return HostedModel(name, arn, dict(container), artifact_uri, role_arn, now)
