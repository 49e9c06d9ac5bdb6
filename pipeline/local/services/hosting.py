"""SageMaker hosting on this machine: models, endpoint configs and endpoints, for the deploy
handler (``lambda/deploy.py``) to drive exactly as it drives SageMaker in AWS.

``LocalHosting`` offers the part of the boto3 SageMaker client that the handler calls, with
the same request and response shapes and the same ``ClientError`` for a missing resource. An
endpoint is a model-server process (``python -m serve.server``) listening on 127.0.0.1 at a
port of its choosing; it serves the model package's ``model.tar.gz`` from the local artifact
store, unpacked once under ``<home>/hosting/models/<model>/``, with the artifact's own handlers.

Like SageMaker, ``create_endpoint`` and ``update_endpoint`` return once the change is under way
and the new server is ready (here: synchronously, so that the CLI can report the URL), and an
update starts the new server before it stops the old one: a failed update leaves the old model
serving, with the failure noted. State lives in the local SQLite database; server processes
outlive the command that started them and are found again by their recorded pid.

Clients do not call the model servers directly. An endpoint's ``Url`` is the address of the
home's local SageMaker runtime (``pipeline/local/services/runtime.py``) followed by
``/endpoints/NAME``: it stays the same across updates, as a SageMaker endpoint's name does. An
update is a blue/green swap with no failed request: the new server takes new requests from the
moment its address is committed; the old one is then asked to stop, finishes what it holds,
and exits.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeGuard

from botocore.exceptions import ClientError

from mlops_rules.approvals import package_version
from mlops_rules.capture import config_problems as capture_problems
from mlops_rules.hosting import shadow_share
from mlops_rules.rollouts import EXECUTION_TIMEOUT_RANGE_S, deployment_problems, traffic_steps
from pipeline.local.aws_identity import sagemaker_arn
from pipeline.local.processes import process_runs, start_server, stop_process_group
from pipeline.local.services.cloudwatch import LocalCloudWatch
from pipeline.local.services.runtime import endpoint_log, ensure_runtime, hosting_folder, runtime_url, stop_runtime
from pipeline.local.state.db import StateError, iso, parse_iso, to_json, update_row, utc_now, write_transaction
from pipeline.local.state.models import ModelExists, ModelStore
from pipeline.local.state.registry import ModelRegistry
from pipeline.local.state.store import ArtifactStore
from serve.artifact import ArtifactError, unpack_model_archive

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 120.0
ENDPOINT_COLUMNS = frozenset({"status", "url", "pid", "failure_reason", "config_name", "candidate_config",
                              "candidate_url", "candidate_pid", "candidate_share", "rollout", "shadow_url", "shadow_pid"})
ROLLOUT_MODULE = "pipeline.local.services.rollout"
# A rollout whose driver never recorded itself (its starter was killed at that moment) is given up after this.
DRIVER_START_S = 60.0
# A server asked to stop finishes the requests it holds first (up to 30 s), then exits.
STOP_TIMEOUT_S = 40.0


def _client_error(operation: str, message: str, code: str = "ValidationException") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


def _alive(pid: int | None) -> TypeGuard[int]:
    """Whether ``pid`` is still a model server (a reused pid of another program is not)."""
    return pid is not None and process_runs(pid, "serve.server")


class LocalHosting:
    """The hosting calls of a SageMaker client, served from ``home``."""

    def __init__(self, home: Path | str, conn, registry: ModelRegistry | None = None,
                 ready_timeout_s: float = READY_TIMEOUT_S, runtime_port: int = 0) -> None:
        self.home, self.conn = Path(home), conn
        self.registry = registry or ModelRegistry(conn)
        self.models = ModelStore(conn)
        self.store = ArtifactStore(home)
        self.ready_timeout_s = ready_timeout_s
        self.runtime_port = runtime_port  # for the runtime's first start; it keeps its port after

    @property
    def folder(self) -> Path:
        return hosting_folder(self.home)

    # --- model packages (what CreateModel and the deploy handler read) ----------------------------
    def describe_model_package(self, ModelPackageName: str) -> dict[str, Any]:  # noqa: N803
        try:
            package = self.registry.get_by_arn(ModelPackageName)
        except StateError as error:
            raise _client_error("DescribeModelPackage", str(error)) from None
        return {"ModelPackageArn": package.arn, "ModelPackageGroupName": package.group_name,
                "ModelPackageVersion": package.version, "ModelApprovalStatus": package.approval_status,
                "InferenceSpecification": package.inference_specification,
                # a datetime, as boto3 parses SageMaker's timestamp: the deploy handler orders approvals by it
                "LastModifiedTime": parse_iso(package.last_modified_time),
                **({"DriftCheckBaselines": package.drift_check_baselines} if package.drift_check_baselines else {})}

    def list_model_packages(self, ModelPackageGroupName: str, ModelApprovalStatus: str | None = None,  # noqa: N803
                            SortOrder: str = "Ascending", **_: Any) -> dict[str, Any]:
        """ListModelPackages' summaries in one page (a local group is small), newest first when asked."""
        packages = self.registry.list_packages(ModelPackageGroupName, ModelApprovalStatus)
        if SortOrder != "Descending":
            packages = packages[::-1]
        return {"ModelPackageSummaryList": [
            {"ModelPackageGroupName": p.group_name, "ModelPackageVersion": p.version, "ModelPackageArn": p.arn,
             "ModelApprovalStatus": p.approval_status, "CreationTime": parse_iso(p.creation_time),
             "ModelPackageStatus": "Completed"} for p in packages]}

    # --- models -------------------------------------------------------------------------------
    def describe_model(self, ModelName: str) -> dict[str, Any]:  # noqa: N803 (boto3's parameter names)
        model = self.models.get(ModelName)
        if model is None:
            raise _client_error("DescribeModel", f'Could not find model "{ModelName}".')
        return {"ModelName": model.name, "ModelArn": model.arn, "PrimaryContainer": model.primary_container,
                "ExecutionRoleArn": model.execution_role_arn, "CreationTime": model.creation_time}

    def create_model(self, ModelName: str, ExecutionRoleArn: str, PrimaryContainer: Mapping[str, Any],  # noqa: N803
                     Tags: list | None = None) -> dict[str, str]:
        if "ModelPackageName" in PrimaryContainer:
            artifact_uri = self.registry.get_by_arn(PrimaryContainer["ModelPackageName"]).artifact_uri
        elif "ModelDataUrl" in PrimaryContainer:
            artifact_uri = PrimaryContainer["ModelDataUrl"]
        else:
            raise _client_error("CreateModel", "PrimaryContainer needs ModelPackageName or ModelDataUrl")
        if not self.store.has_object(artifact_uri):
            raise _client_error("CreateModel", f"the model artifact {artifact_uri} is not in the local store")
        try:
            return {"ModelArn": self.models.create(ModelName, dict(PrimaryContainer), artifact_uri, ExecutionRoleArn).arn}
        except ModelExists as error:
            raise _client_error("CreateModel", str(error)) from None

    # --- endpoint configs ---------------------------------------------------------------------
    def describe_endpoint_config(self, EndpointConfigName: str) -> dict[str, Any]:  # noqa: N803
        row = self.conn.execute("SELECT * FROM endpoint_configs WHERE name = ?", (EndpointConfigName,)).fetchone()
        if row is None:
            raise _client_error("DescribeEndpointConfig", f'Could not find endpoint configuration "{EndpointConfigName}".')
        found = {"EndpointConfigName": row["name"], "EndpointConfigArn": row["arn"],
                 "ProductionVariants": json.loads(row["production_variants"]), "CreationTime": row["creation_time"]}
        if row["data_capture_config"]:
            found["DataCaptureConfig"] = json.loads(row["data_capture_config"])
        if row["shadow_variants"]:
            found["ShadowProductionVariants"] = json.loads(row["shadow_variants"])
        return found

    def create_endpoint_config(self, EndpointConfigName: str, ProductionVariants: list,  # noqa: N803
                               DataCaptureConfig: Mapping[str, Any] | None = None,  # noqa: N803
                               ShadowProductionVariants: list | None = None) -> dict[str, str]:  # noqa: N803
        """An endpoint config; with ``DataCaptureConfig``, the runtime captures its invocations
        into the local store as SageMaker does (``pipeline/local/services/capture.py``); with one
        shadow variant, the runtime copies it the share of requests its weight gives."""
        if len(ProductionVariants) != 1:
            raise _client_error("CreateEndpointConfig", "the local runtime serves exactly one production variant")
        self.describe_model(ProductionVariants[0]["ModelName"])  # the model must exist, as SageMaker checks
        problems = capture_problems(DataCaptureConfig) if DataCaptureConfig else []
        problems += _shadow_problems(ProductionVariants[0], ShadowProductionVariants or [])
        for shadow in ShadowProductionVariants or []:
            self.describe_model(shadow["ModelName"])
        if problems:
            raise _client_error("CreateEndpointConfig", f"DataCaptureConfig: {'; '.join(problems)}")
        arn = sagemaker_arn("endpoint-config", EndpointConfigName)
        with write_transaction(self.conn):
            if self.conn.execute("SELECT 1 FROM endpoint_configs WHERE name = ?", (EndpointConfigName,)).fetchone():
                raise _client_error("CreateEndpointConfig", f'Cannot create already existing endpoint configuration "{arn}".')
            self.conn.execute("INSERT INTO endpoint_configs (name, arn, production_variants, creation_time, "
                              "data_capture_config, shadow_variants) VALUES (?,?,?,?,?,?)",
                              (EndpointConfigName, arn, to_json(list(ProductionVariants)), iso(utc_now()),
                               to_json(dict(DataCaptureConfig)) if DataCaptureConfig else None,
                               to_json(list(ShadowProductionVariants)) if ShadowProductionVariants else None))
        return {"EndpointConfigArn": arn}

    # --- endpoints ----------------------------------------------------------------------------
    def describe_endpoint(self, EndpointName: str) -> dict[str, Any]:  # noqa: N803
        row = self.conn.execute("SELECT * FROM endpoints WHERE name = ?", (EndpointName,)).fetchone()
        if row is None:
            raise _client_error("DescribeEndpoint", f'Could not find endpoint "{EndpointName}".')
        if row["rollout"] and _driver_gone(json.loads(row["rollout"])):
            self.roll_back(EndpointName, "the rollout's process is gone (killed, or the machine restarted)")
            row = self.conn.execute("SELECT * FROM endpoints WHERE name = ?", (EndpointName,)).fetchone()
        status, reason = row["status"], row["failure_reason"]
        runtime = runtime_url(self.home)
        if status == "InService" and not _alive(row["pid"]):
            status, reason = "Failed", f"the model server (pid {row['pid']}) is not running; see {self._log(EndpointName)}"
        elif status == "InService" and runtime is None:
            status, reason = "Failed", "the local SageMaker runtime, which routes requests to the endpoint, is not running"
        found = {"EndpointName": row["name"], "EndpointArn": row["arn"], "EndpointConfigName": row["config_name"],
                 "EndpointStatus": status, "CreationTime": row["creation_time"],
                 "LastModifiedTime": row["last_modified_time"],
                 "Url": f"{runtime}/endpoints/{row['name']}" if runtime else None}
        if reason:
            found["FailureReason"] = reason
        shadows = self.describe_endpoint_config(row["config_name"]).get("ShadowProductionVariants", [])
        if shadows:  # as DescribeEndpoint summarizes it, with whether its server runs
            found["ShadowProductionVariants"] = [{
                "VariantName": shadow["VariantName"], "CurrentWeight": shadow.get("InitialVariantWeight", 1.0),
                "DesiredWeight": shadow.get("InitialVariantWeight", 1.0), "CurrentInstanceCount": int(_alive(row["shadow_pid"])),
                "DesiredInstanceCount": shadow.get("InitialInstanceCount", 1)} for shadow in shadows]
        if row["rollout"]:
            rollout = json.loads(row["rollout"])
            found["PendingDeploymentSummary"] = {
                "EndpointConfigName": row["candidate_config"], "StartTime": rollout["started"],
                "ProductionVariants": [{"VariantName": rollout["variant"], "CurrentWeight": row["candidate_share"],
                                        "DesiredWeight": 1.0}]}
        return found

    def list_endpoints(self) -> list[dict[str, Any]]:
        return [self.describe_endpoint(r["name"]) for r in self.conn.execute("SELECT name FROM endpoints ORDER BY name")]

    def create_endpoint(self, EndpointName: str, EndpointConfigName: str,  # noqa: N803
                        Tags: list | None = None) -> dict[str, str]:
        self.describe_endpoint_config(EndpointConfigName)
        self._ensure_runtime("CreateEndpoint")
        arn, now = sagemaker_arn("endpoint", EndpointName), iso(utc_now())
        with write_transaction(self.conn):
            if self.conn.execute("SELECT 1 FROM endpoints WHERE name = ?", (EndpointName,)).fetchone():
                raise _client_error("CreateEndpoint", f'Cannot create already existing endpoint "{arn}".')
            self.conn.execute("INSERT INTO endpoints (name, arn, config_name, status, creation_time, last_modified_time) "
                              "VALUES (?,?,?,'Creating',?,?)", (EndpointName, arn, EndpointConfigName, now, now))
            self._put_tags(arn, Tags or [])
        if self._serve(EndpointName, EndpointConfigName, on_failure={"status": "Failed"}):
            self.record_history(EndpointName, "Created", EndpointConfigName)
        return {"EndpointArn": arn}

    def update_endpoint(self, EndpointName: str, EndpointConfigName: str,  # noqa: N803
                        DeploymentConfig: Mapping[str, Any] | None = None) -> dict[str, str]:  # noqa: N803
        """Blue/green: the new server starts first; if it does not, the old config goes on serving.
        Without a ``DeploymentConfig`` the old server stops once the new one answers. With one,
        traffic moves by its steps under its alarms (``pipeline/local/services/rollout.py``):
        the endpoint is Updating until the rollout ends, InService on the new config or, after
        RollingBack, on the old one; this call returns once the rollout has started."""
        self.describe_endpoint_config(EndpointConfigName)
        plan = self._rollout_plan(EndpointName, EndpointConfigName, DeploymentConfig) if DeploymentConfig else None
        self._ensure_runtime("UpdateEndpoint")
        old_pids = self._claim(EndpointName, "UpdateEndpoint")
        if plan is not None:
            self._start_rollout(EndpointName, EndpointConfigName, plan)
        elif self._serve(EndpointName, EndpointConfigName, on_failure={"status": "InService"}, failure_prefix=
                         f"update to {EndpointConfigName} failed: "):
            for pid in old_pids:
                _stop(pid)
            self.record_history(EndpointName, "Updated", EndpointConfigName,
                                "all traffic at once" + self._shadow_words(EndpointConfigName))
        else:
            self.record_history(EndpointName, "UpdateFailed", EndpointConfigName,
                                self.describe_endpoint(EndpointName).get("FailureReason"))
        return {"EndpointArn": sagemaker_arn("endpoint", EndpointName)}

    # --- guarded rollouts (the driver: pipeline/local/services/rollout.py) --------------------------
    def _rollout_plan(self, endpoint: str, config_name: str, deployment: Mapping[str, Any]) -> dict[str, Any]:
        """The rollout a DeploymentConfig asks for, refused as SageMaker refuses it (the limits, a
        missing alarm, a variant renamed)."""
        new_config = self.describe_endpoint_config(config_name)
        variant = new_config["ProductionVariants"][0]
        count = int(variant.get("InitialInstanceCount", 1))
        problems = deployment_problems(deployment, count)
        if new_config.get("ShadowProductionVariants"):
            problems.append("the local runtime does not roll a shadow variant out under a DeploymentConfig: "
                            "update to a config with a shadow without one")
        current = self.describe_endpoint(endpoint)
        old_variant = self.describe_endpoint_config(current["EndpointConfigName"])["ProductionVariants"][0]
        if old_variant["VariantName"] != variant["VariantName"]:
            problems.append(f"a guarded update keeps the variant's name: {variant['VariantName']} is not "
                            f"{old_variant['VariantName']}")
        if problems:
            raise _client_error("UpdateEndpoint", "; ".join(problems))
        alarms = [a["AlarmName"] for a in (deployment.get("AutoRollbackConfiguration") or {}).get("Alarms", [])]
        try:
            LocalCloudWatch(self.conn).alarms(alarms)
        except ClientError as error:
            raise _client_error("UpdateEndpoint", f"AutoRollbackConfiguration: {error.response['Error']['Message']}") from None
        policy = deployment["BlueGreenUpdatePolicy"]
        return {"steps": traffic_steps(deployment, count), "variant": variant["VariantName"],
                "wait_s": policy["TrafficRoutingConfiguration"]["WaitIntervalInSeconds"],
                "termination_wait_s": policy.get("TerminationWaitInSeconds", 0),
                "max_execution_s": policy.get("MaximumExecutionTimeoutInSeconds", EXECUTION_TIMEOUT_RANGE_S[0]),
                "alarms": alarms, "mode": policy["TrafficRoutingConfiguration"]["Type"]}

    def _start_rollout(self, name: str, config_name: str, plan: dict[str, Any]) -> None:
        """Start the new server beside the old one, record it as the candidate with no traffic
        yet, and hand the rollout to its driver process."""
        try:
            pid, url = self._start_server(name, config_name)
        except RuntimeError as error:
            reason = f"update to {config_name} failed: {error}"
            self._set(name, status="InService", failure_reason=reason)
            self.record_history(name, "UpdateFailed", config_name, reason)
            return
        except BaseException:
            self._set(name, status="InService", failure_reason=f"update to {config_name} failed: interrupted while starting")
            raise
        rollout = {**plan, "started": iso(utc_now()), "step": -1, "driver_pid": None}
        self._set(name, candidate_config=config_name, candidate_url=url, candidate_pid=pid, candidate_share=0.0,
                  rollout=to_json(rollout), failure_reason=None)
        try:
            driver, _ = start_server([sys.executable, "-m", ROLLOUT_MODULE, "--home", str(self.home.resolve()),
                                      "--endpoint", name], rollout_log(self.home, name), "the rollout", 30.0)
        except BaseException as error:
            self.roll_back(name, f"the rollout did not start: {error}")
            if not isinstance(error, Exception):
                raise
            return
        self.update_rollout(name, driver_pid=driver)

    def shift_traffic(self, name: str, share: float) -> None:
        """Give the rollout's candidate this share of the endpoint's requests."""
        self._set(name, candidate_share=share)

    def update_rollout(self, name: str, **fields: Any) -> None:
        """Change the rollout's record (its step, its driver) without touching the rest."""
        with write_transaction(self.conn):
            row = self.conn.execute("SELECT rollout FROM endpoints WHERE name = ?", (name,)).fetchone()
            if row is None or not row["rollout"]:
                return
            self.conn.execute("UPDATE endpoints SET rollout = ? WHERE name = ?",
                              (to_json({**json.loads(row["rollout"]), **fields}), name))

    def _settle(self, name: str, of_candidate: int | None, statuses: tuple[str, ...], /, **fields: Any) -> bool:
        """Change the endpoint only if it is still in the rollout of ``of_candidate`` and in one of
        ``statuses``: whoever reads a rollout's end (its driver, a reader that finds the driver
        gone) acts once, and never on a rollout that has been replaced since it was read."""
        marks = ",".join("?" * len(statuses))
        return update_row(self.conn, "endpoints", name, ENDPOINT_COLUMNS, guard=(
            f"rollout IS NOT NULL AND candidate_pid IS ? AND status IN ({marks})", (of_candidate, *statuses)), **fields) == 1

    def finish_rollout(self, name: str, detail: str) -> None:
        """The candidate takes the endpoint; the old server stops (finishing what it holds)."""
        row = self.conn.execute("SELECT * FROM endpoints WHERE name = ?", (name,)).fetchone()
        if row is None or not row["rollout"]:
            return
        if not self._settle(name, row["candidate_pid"], ("Updating",), status="InService",
                            config_name=row["candidate_config"], url=row["candidate_url"], pid=row["candidate_pid"],
                            candidate_config=None, candidate_url=None, candidate_pid=None, candidate_share=0.0,
                            rollout=None, failure_reason=None, shadow_url=None, shadow_pid=None):
            return  # rolled back meanwhile
        self.record_history(name, "Updated", row["candidate_config"], detail)
        _stop(row["pid"])
        _stop(row["shadow_pid"])  # the old fleet's shadow goes with it: the new config has none

    def roll_back(self, name: str, reason: str) -> None:
        """All traffic back to the old server (RollingBack, then InService with the reason); the
        candidate server stops. A rollback left half done (its process killed) is finished."""
        row = self.conn.execute("SELECT * FROM endpoints WHERE name = ?", (name,)).fetchone()
        if row is None or not row["rollout"]:
            return
        candidate = row["candidate_pid"]
        if not self._settle(name, candidate, ("Updating", "RollingBack"), status="RollingBack", candidate_share=0.0):
            return  # finished, or replaced by another update, since it was read
        failure = f"update to {row['candidate_config']} rolled back: {reason}"
        log.warning("endpoint %s: %s", name, failure)
        _stop(candidate)
        log.info("endpoint %s: the new model server (pid %s) stopped", name, candidate)
        if self._settle(name, candidate, ("RollingBack",), status="InService", candidate_config=None, candidate_url=None,
                        candidate_pid=None, rollout=None, failure_reason=failure):
            self.record_history(name, "RolledBack", row["candidate_config"], reason)

    def wait_for_rollout(self, name: str, on_share: Callable[[float], None] = lambda share: None,
                         poll_s: float = 0.25) -> dict[str, Any]:
        """Follow the endpoint's rollout until it ends (the driver bounds it by its time limit);
        ``on_share`` hears each new share of the candidate. Returns the endpoint as it ends."""
        share = None
        while True:
            endpoint = self.describe_endpoint(name)
            pending = endpoint.get("PendingDeploymentSummary")
            if pending is None and endpoint["EndpointStatus"] not in ("Updating", "RollingBack"):
                return endpoint
            current = pending["ProductionVariants"][0]["CurrentWeight"] if pending else None
            if current is not None and current != share:
                share = current
                on_share(current)
            time.sleep(poll_s)

    # --- which version served when --------------------------------------------------------------------
    def record_history(self, endpoint: str, event: str, config_name: str | None, detail: str | None = None) -> None:
        with write_transaction(self.conn):
            self.conn.execute("INSERT INTO endpoint_history (endpoint, time, event, config_name, detail) "
                              "VALUES (?,?,?,?,?)", (endpoint, iso(utc_now()), event, config_name, detail))

    def endpoint_history(self, name: str) -> list[dict[str, Any]]:
        """The endpoint's changes, oldest first: each with the version its config serves."""
        rows = self.conn.execute("SELECT * FROM endpoint_history WHERE endpoint = ? ORDER BY seq", (name,)).fetchall()
        if not rows and self.conn.execute("SELECT 1 FROM endpoints WHERE name = ?", (name,)).fetchone() is None:
            raise _client_error("DescribeEndpoint", f'Could not find endpoint "{name}".')
        return [{"time": row["time"], "event": row["event"], "endpoint_config": row["config_name"],
                 "version": self.config_version(row["config_name"]), "detail": row["detail"]} for row in rows]

    def rolled_back(self, name: str, config_name: str) -> bool:
        """Whether the endpoint's last change was a rollback of an update to ``config_name``."""
        row = self.conn.execute("SELECT event, config_name FROM endpoint_history WHERE endpoint = ? "
                                "ORDER BY seq DESC LIMIT 1", (name,)).fetchone()
        return row is not None and row["event"] == "RolledBack" and row["config_name"] == config_name

    def config_version(self, config_name: str | None) -> int | None:
        """The registry version an endpoint config serves (through its model's package), if any."""
        if not config_name:
            return None
        row = self.conn.execute("SELECT production_variants FROM endpoint_configs WHERE name = ?", (config_name,)).fetchone()
        model = self.models.get(json.loads(row["production_variants"])[0]["ModelName"]) if row else None
        return package_version(model.primary_container.get("ModelPackageName")) if model else None

    # --- tags (on endpoints: the deploy handler's record of the approval an endpoint follows) ---
    def add_tags(self, ResourceArn: str, Tags: list) -> dict[str, list]:  # noqa: N803
        if not self.conn.execute("SELECT 1 FROM endpoints WHERE arn = ?", (ResourceArn,)).fetchone():
            raise _client_error("AddTags", f"Could not find resource {ResourceArn!r}.")
        with write_transaction(self.conn):
            self._put_tags(ResourceArn, Tags)
        return {"Tags": Tags}

    def list_tags(self, ResourceArn: str) -> dict[str, list]:  # noqa: N803
        rows = self.conn.execute("SELECT key, value FROM tags WHERE resource_arn = ? ORDER BY key", (ResourceArn,))
        return {"Tags": [{"Key": row["key"], "Value": row["value"]} for row in rows]}

    def _put_tags(self, arn: str, tags: list) -> None:
        self.conn.executemany("INSERT OR REPLACE INTO tags (resource_arn, key, value) VALUES (?,?,?)",
                              [(arn, tag["Key"], tag["Value"]) for tag in tags])

    def restart_endpoint(self, name: str) -> dict[str, Any]:
        """Start the endpoint's server again on its current config: what SageMaker does when it
        replaces a failed instance, done here on request (after a reboot, say)."""
        config_name = self.describe_endpoint(name)["EndpointConfigName"]
        self._ensure_runtime("RestartEndpoint")
        for pid in self._claim(name, "RestartEndpoint"):
            _stop(pid)
        if self._serve(name, config_name, on_failure={"status": "Failed", "pid": None, "shadow_pid": None,
                                                      "shadow_url": None}, shadow_required=False):
            self.record_history(name, "Restarted", config_name)
        return self.describe_endpoint(name)

    def _ensure_runtime(self, operation: str) -> str:
        try:
            return ensure_runtime(self.home, self.runtime_port)
        except (RuntimeError, OSError) as error:
            raise _client_error(operation, str(error), "InternalFailure") from None

    def _claim(self, name: str, operation: str) -> tuple[int | None, int | None]:
        """Move an InService or Failed endpoint to Updating in one transaction (so that two
        processes cannot change it at once); returns the pids of the servers it had (its own, its shadow's)."""
        with write_transaction(self.conn):
            row = self.conn.execute("SELECT status, pid, shadow_pid FROM endpoints WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise _client_error(operation, f'Could not find endpoint "{name}".')
            if row["status"] not in ("InService", "Failed"):
                raise _client_error(operation, f"endpoint {name} is {row['status']}: another change is under way")
            self.conn.execute("UPDATE endpoints SET status = 'Updating', last_modified_time = ? WHERE name = ?",
                              (iso(utc_now()), name))
        return row["pid"], row["shadow_pid"]

    def _serve(self, name: str, config_name: str, *, on_failure: dict[str, Any], failure_prefix: str = "",
               shadow_required: bool = True) -> bool:
        """Start the config's servers and record them InService; if one cannot start, record
        ``on_failure`` with the reason. A shadow that does not start fails an update as SageMaker
        fails it (the old config serves on); where the production server is all there is to keep
        (a restart), it serves without its shadow and the reason says so. An interruption is
        recorded too, then goes on."""
        pid = None
        try:
            pid, url = self._start_server(name, config_name)
        except RuntimeError as error:
            self._set(name, **on_failure, failure_reason=f"{failure_prefix}{error}")
            return False
        except BaseException:
            self._set(name, **on_failure, failure_reason=f"{failure_prefix}interrupted while starting")
            raise
        reason = None
        try:
            shadow_pid, shadow_url = self._start_shadow(name, config_name)
        except RuntimeError as error:
            if shadow_required:
                _stop(pid)
                self._set(name, **on_failure, failure_reason=f"{failure_prefix}{error}")
                return False
            shadow_pid, shadow_url, reason = None, None, f"{error}; it serves without its shadow"
        except BaseException:
            _stop(pid)
            self._set(name, **on_failure, failure_reason=f"{failure_prefix}interrupted while starting")
            raise
        self._set(name, status="InService", url=url, pid=pid, config_name=config_name, failure_reason=reason,
                  shadow_url=shadow_url, shadow_pid=shadow_pid)
        return True

    def delete_endpoint(self, EndpointName: str) -> None:  # noqa: N803
        # The row goes first, in one transaction with the check: no update can claim the endpoint
        # while its server drains (SageMaker's endpoint is Deleting then, and takes no update either).
        with write_transaction(self.conn):
            row = self.conn.execute("SELECT status, pid, shadow_pid FROM endpoints WHERE name = ?",
                                    (EndpointName,)).fetchone()
            if row is None:
                raise _client_error("DeleteEndpoint", f'Could not find endpoint "{EndpointName}".')
            if row["status"] in ("Updating", "RollingBack"):  # SageMaker refuses it too: the rollout owns two servers
                raise _client_error("DeleteEndpoint", f"endpoint {EndpointName} is {row['status']}: wait until it is "
                                                      "InService (sentiment-mlops endpoints show)")
            self.conn.execute("DELETE FROM tags WHERE resource_arn = ?", (sagemaker_arn("endpoint", EndpointName),))
            self.conn.execute("DELETE FROM endpoints WHERE name = ?", (EndpointName,))
            self.conn.execute("INSERT INTO endpoint_history (endpoint, time, event) VALUES (?,?,'Deleted')",
                              (EndpointName, iso(utc_now())))
            last = self.conn.execute("SELECT 1 FROM endpoints").fetchone() is None
        _stop(row["pid"])
        _stop(row["shadow_pid"])
        if last:  # nothing left to route to; the runtime comes back on the same port with the next endpoint
            stop_runtime(self.home)

    # --- the server processes ---------------------------------------------------------------------
    def _set(self, name: str, **fields: Any) -> None:
        update_row(self.conn, "endpoints", name, ENDPOINT_COLUMNS, **fields)

    def _log(self, endpoint: str) -> Path:
        return endpoint_log(self.home, endpoint)

    def _model_dir(self, model_name: str) -> Path:
        """The model's artifact, unpacked once into a folder named by the archive's sha256 alone:
        a folder left from another state database is never taken for another artifact, and the
        Models of one artifact (the endpoint's, a transform's, each pipeline run's) share it."""
        model = self.models.get(model_name)
        if model is None:
            raise RuntimeError(f"model {model_name} is not in the local state; approve the version again")
        archive = self.store.path(model.artifact_uri)
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()[:16]
        target = self.folder / "models" / digest
        if not target.is_dir():
            target.parent.mkdir(parents=True, exist_ok=True)
            scratch = Path(tempfile.mkdtemp(prefix=f".{digest}-", dir=target.parent))
            try:
                unpack_model_archive(archive, scratch)
                scratch.rename(target)
            except OSError:
                if not target.is_dir():  # not a lost race with another process: a real failure
                    raise
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        return target

    def _container_environment(self, model_name: str) -> dict[str, str]:
        """The container's ``Environment``, as SageMaker gives it to the endpoint's container: the
        model's own, or its model package's (``SAGEMAKER_MODEL_SERVER_WORKERS``, say)."""
        container = self.describe_model(model_name)["PrimaryContainer"]
        if "ModelPackageName" in container:
            containers = self.registry.get_by_arn(container["ModelPackageName"]).inference_specification.get(
                "Containers") or [{}]
            container = containers[0]
        return {str(k): str(v) for k, v in (container.get("Environment") or {}).items()}

    def _start_server(self, endpoint: str, config_name: str) -> tuple[int, str]:
        """Start a model server for the config's model and wait until it answers; RuntimeError if it does not."""
        variant = self.describe_endpoint_config(config_name)["ProductionVariants"][0]
        pid, url = self.start_model_server(variant["ModelName"], self._log(endpoint))
        log.info("endpoint %s: %s serves %s at %s", endpoint, config_name, variant["ModelName"], url)
        return pid, url

    def _start_shadow(self, endpoint: str, config_name: str) -> tuple[int | None, str | None]:
        """The config's shadow variant's model server, if it has one (its own log); RuntimeError if it does not start."""
        shadows = self.describe_endpoint_config(config_name).get("ShadowProductionVariants") or []
        if not shadows:
            return None, None
        log_path = self._log(endpoint).with_suffix(".shadow.log")
        try:
            pid, url = self.start_model_server(shadows[0]["ModelName"], log_path)
        except RuntimeError as error:
            raise RuntimeError(f"the shadow variant {shadows[0]['VariantName']} did not start: {error}") from None
        log.info("endpoint %s: %s shadows with %s at %s", endpoint, config_name, shadows[0]["ModelName"], url)
        return pid, url

    def _shadow_words(self, config_name: str) -> str:
        """What a config's shadow adds to the history's line ("" without one)."""
        config = self.describe_endpoint_config(config_name)
        shadows = config.get("ShadowProductionVariants") or []
        if not shadows:
            return ""
        return (f"; {shadows[0]['ModelName']} as the shadow, copied "
                f"{shadow_share(shadows[0], config['ProductionVariants'][0]) * 100:.0f} % of the requests")

    def start_model_server(self, model_name: str, log_path: Path,
                           environment: Mapping[str, str] | None = None) -> tuple[int, str]:
        """A model server for ``model_name`` with its container's environment (``environment``
        on top: a transform job's own), answering on 127.0.0.1 at a port of its choosing; its pid
        and URL. RuntimeError with the reason if it does not start."""
        try:
            model_dir = self._model_dir(model_name)
        except (ArtifactError, OSError) as error:
            raise RuntimeError(str(error)) from error
        try:
            container = {**self._container_environment(model_name), **(environment or {})}
        except (ClientError, StateError) as error:
            raise RuntimeError(f"cannot read the model's container: {error}") from error
        argv = [sys.executable, "-m", "serve.server", "--model-dir", str(model_dir), "--host", "127.0.0.1", "--port", "0"]
        try:
            return start_server(argv, log_path, "the model server", self.ready_timeout_s, {**os.environ, **container})
        except RuntimeError as error:
            last = _last_line(log_path)
            raise RuntimeError(f"{error}: {last}" if last else str(error)) from None

def _shadow_problems(production: Mapping[str, Any], shadows: list) -> list[str]:
    """What SageMaker refuses in ShadowProductionVariants: more than one, a weight of 0, the production variant's name."""
    if not shadows:
        return []
    problems = []
    if len(shadows) > 1:
        problems.append("ShadowProductionVariants holds at most one variant")
    for shadow in shadows:
        if shadow.get("VariantName") == production.get("VariantName"):
            problems.append(f"the shadow variant cannot share the production variant's name {shadow.get('VariantName')}")
        if not float(shadow.get("InitialVariantWeight", 1.0)) > 0:
            problems.append("the shadow variant's InitialVariantWeight must be above 0")
    return problems


def _last_line(log_path: Path) -> str:
    """The last line a server that failed to start wrote (its own reason), shortened."""
    try:
        with open(log_path, "rb") as log_file:
            log_file.seek(max(0, log_path.stat().st_size - 4096))
            lines = [line.strip() for line in log_file.read().decode("utf-8", errors="replace").splitlines()]
    except OSError:
        return ""
    return next((line for line in reversed(lines) if line), "")[:300]


def rollout_log(home: Path, endpoint: str) -> Path:
    """Where an endpoint's rollouts write what they did."""
    return endpoint_log(home, endpoint).with_suffix(".rollout.log")


def _driver_gone(rollout: Mapping[str, Any]) -> bool:
    """Whether the process that drives a rollout is gone (or never came, long enough ago)."""
    pid = rollout.get("driver_pid")
    if pid is None:
        return (utc_now() - parse_iso(rollout["started"])).total_seconds() > DRIVER_START_S
    return not process_runs(pid, ROLLOUT_MODULE)


def _stop(pid: int | None) -> None:
    """Stop a model server (its process group); nothing if it is gone already."""
    if _alive(pid):
        stop_process_group(pid, STOP_TIMEOUT_S)
