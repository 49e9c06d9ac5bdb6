"""The rules both sides of the Lambda boundary share (lambda/mlops_rules/): standard library only,
packaged with every function, and the one reading of each rule on both sides."""
from __future__ import annotations

import ast
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from mlops_rules import approvals, caching, data_versions, parameters
from mlops_rules.parameters import ParameterError, cast_parameter, parameter_text
from mlops_rules.s3 import split_s3_uri

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "lambda" / "mlops_rules"


def test_the_rules_import_the_standard_library_only():
    for path in sorted(RULES.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or top == "mlops_rules", f"{path.name} imports {name}"


def test_each_function_loads_from_its_code_root_alone():
    """What Lambda does with ``CodeUri: .`` and ``Handler: deploy.handler``: the folder on the path,
    nothing of the project installed (no site-packages at all: boto3 is imported by ``handler``)."""
    script = ("import sys; sys.path.insert(0, 'lambda'); import deploy, predict, retrain; "
              "print(deploy.handler.__module__, predict.handler.__module__, retrain.handler.__module__)")
    result = subprocess.run([sys.executable, "-I", "-S", "-c", script], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["deploy", "predict", "retrain"]


def test_no_part_of_the_project_loads_a_function_by_path_for_its_rules():
    """Only the local runtime runs the functions' code (as Lambda would); the SageMaker backend and
    the commands take the rules from mlops_rules."""
    for folder in ("pipeline/aws", "pipeline/commands", "pipeline/definition", "pipeline/review"):
        for path in (ROOT / folder).rglob("*.py"):
            assert "load_lambda" not in path.read_text(encoding="utf-8"), f"{path.relative_to(ROOT)} loads a Lambda"


# --- parameters: one typing on both sides ---------------------------------------------------------
INTEGER = {"Name": "Epochs", "Type": "Integer", "DefaultValue": 4}
FLOAT = {"Name": "AccuracyThreshold", "Type": "Float", "DefaultValue": 0.9}
BOOLEAN = {"Name": "Flag", "Type": "Boolean", "DefaultValue": False}
STRING = {"Name": "InputDataUri", "Type": "String", "DefaultValue": "s3://b/data/"}
ENUM = {"Name": "TrainingProfile", "Type": "String", "DefaultValue": "gpu", "EnumValues": ["gpu", "cpu"]}
DEFINITION = {"Version": "2020-12-01", "Parameters": [INTEGER, FLOAT, BOOLEAN, STRING, ENUM,
                                                      {"Name": "InputDataVersion", "Type": "String", "DefaultValue": ""}]}


@pytest.mark.parametrize("declaration, value, expected, text", [
    (INTEGER, "8", 8, "8"), (INTEGER, " 8 ", 8, "8"), (INTEGER, 8, 8, "8"), (INTEGER, 4.0, 4, "4"),
    (FLOAT, "0.9", 0.9, "0.9"), (FLOAT, 1, 1.0, "1.0"), (BOOLEAN, "TRUE", True, "true"), (BOOLEAN, False, False, "false"),
    (STRING, "s3://b/x", "s3://b/x", "s3://b/x"), (ENUM, "cpu", "cpu", "cpu"),
])
def test_a_value_casts_the_same_everywhere(declaration, value, expected, text):
    cast = cast_parameter(declaration, value)
    assert cast == expected and type(cast) is type(expected)
    assert parameter_text(declaration, value) == text


@pytest.mark.parametrize("declaration, value, needs", [
    (INTEGER, "4.0", "a whole number"), (INTEGER, 4.5, "a whole number"), (INTEGER, True, "a whole number"),
    (FLOAT, "NaN", "a finite number"), (FLOAT, math.inf, "a finite number"), (FLOAT, "high", "a number"),
    (BOOLEAN, "yes", "true or false"), (STRING, 5, "a string"), (ENUM, "tpu", "one of gpu, cpu"),
])
def test_a_value_is_refused_the_same_everywhere(declaration, value, needs):
    with pytest.raises(ParameterError, match=rf"{declaration['Name']} \({declaration['Type']}\) needs {needs}"):
        cast_parameter(declaration, value)


def test_the_local_runtime_and_the_sagemaker_backend_agree_on_each_value():
    """What the local runtime runs with is what StartPipelineExecution would be sent, for every value
    either accepts; what one refuses, the other refuses."""
    from pipeline.aws.errors import BackendError
    from pipeline.aws.pipelines import validate_parameters
    from pipeline.local.engine.expressions import ExpressionError, parameter_values

    for value in ("8", 8, 4.0, "4.0", "NaN", "0.5", True, "true", "x", None):
        for declaration in (INTEGER, FLOAT, BOOLEAN, STRING):
            given = {declaration["Name"]: value}
            try:
                local = parameter_values(DEFINITION, given)[declaration["Name"]]
            except ExpressionError:
                with pytest.raises(BackendError):
                    validate_parameters(DEFINITION, given)
                continue
            sent = validate_parameters(DEFINITION, given)[0]["Value"]
            assert cast_parameter(declaration, sent) == local, (declaration["Name"], value)


def test_unknown_names_are_refused_with_the_valid_ones():
    with pytest.raises(ParameterError, match="unknown pipeline parameter Epoch: valid names are Epochs, "):
        parameters.parameter_values(DEFINITION, {"Epoch": 3})


def test_effective_parameters_keep_what_no_longer_casts_as_text():
    """An execution that ran holds what it ran; comparing it must not fail."""
    assert parameters.effective_parameters(DEFINITION, {"Epochs": "4.0"})["Epochs"] == "4.0"
    assert parameters.effective_parameters(DEFINITION, {})["AccuracyThreshold"] == 0.9


# --- the unchanged-since rule ---------------------------------------------------------------------
def test_a_run_repeats_another_on_the_same_data_version_whatever_uri_named_it():
    ran = {"InputDataUri": "s3://b/data/imdb/aclImdb_v1.tar.gz", "InputDataVersion": "v1", "Epochs": "4"}
    assert data_versions.repeats(DEFINITION, {"InputDataUri": "s3://b/data/imdb/", "InputDataVersion": "v1"},
                                 DEFINITION, ran)
    assert not data_versions.repeats(DEFINITION, {"InputDataVersion": "v2"}, DEFINITION, ran)
    assert not data_versions.repeats(DEFINITION, {"InputDataVersion": "v1", "Epochs": 5}, DEFINITION, ran)
    other = json.loads(json.dumps(DEFINITION)) | {"Steps": []}
    assert not data_versions.repeats(other, {"InputDataVersion": "v1"}, DEFINITION, ran)


def test_a_listing_digest_is_relative_to_the_folder_and_order_free():
    objects = [("data/imdb/a.tar.gz", '"e1"', 10), ("data/imdb/b.csv", "e2", 5)]
    by_folder = data_versions.listing_digest("data/imdb/", objects)
    assert by_folder == data_versions.listing_digest("data/imdb/a", list(reversed(objects)))
    assert by_folder != data_versions.listing_digest("data/imdb-2/", [(k.replace("imdb", "imdb-2"), e, s)
                                                                       for k, e, s in objects[:1]])
    assert data_versions.listing_digest("data/", []) is None


# --- the rest ------------------------------------------------------------------------------------
@pytest.mark.parametrize("uri, parts", [("s3://b/k/x.csv", ("b", "k/x.csv")), ("s3://b/k/", ("b", "k/")),
                                        ("s3://b", ("b", ""))])
def test_s3_uris(uri, parts):
    assert split_s3_uri(uri) == parts


@pytest.mark.parametrize("uri", ["s3:///k", "https://b/k", "b/k", None, ""])
def test_what_is_not_an_s3_uri(uri):
    with pytest.raises(ValueError, match="s3://bucket/key"):
        split_s3_uri(uri)


def test_the_cache_lifetime_is_the_steps_expiry():
    from pipeline.definition import CACHE_EXPIRE_AFTER

    assert CACHE_EXPIRE_AFTER == caching.CACHE_EXPIRE_AFTER and caching.CACHE_LIFETIME.days == 30
    with pytest.raises(ValueError, match="ISO 8601 duration"):
        caching.parse_expire_after("thirty days")


def test_a_package_arn_names_its_version():
    assert approvals.package_version("arn:aws:sagemaker:eu-west-1:123456789012:model-package/sentiment-lstm/12") == 12
    assert approvals.package_version("arn:aws:sagemaker:eu-west-1:123456789012:model-package-group/x") is None
    assert approvals.package_version(12) is None


def test_an_execution_reads_the_same_from_either_runtime():
    from datetime import UTC, datetime

    from mlops_rules.executions import ExecutionRecord

    arn = "arn:aws:sagemaker:us-east-1:123456789012:pipeline/p/execution/abc123def456"
    when = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    done = ExecutionRecord.from_summary({"PipelineExecutionArn": arn, "PipelineExecutionStatus": "Failed",
                                         "StartTime": when, "LastModifiedTime": when,
                                         "PipelineExecutionFailureReason": "Step Train failed"})
    assert done.as_dict() == {"execution_id": "abc123def456", "arn": arn, "status": "Failed",
                              "started": "2026-12-07T12:00:00+00:00", "ended": "2026-12-07T12:00:00+00:00",
                              "failure_reason": "Step Train failed", "display_name": None}
    running = ExecutionRecord.from_summary({"PipelineExecutionArn": arn, "PipelineExecutionStatus": "Executing",
                                            "StartTime": when, "LastModifiedTime": when})
    assert running.ended is None


def test_execution_times_are_utc_text_so_text_order_is_time_order():
    from datetime import datetime, timedelta, timezone

    from mlops_rules.executions import ExecutionRecord

    arn = "arn:aws:sagemaker:eu-central-1:123456789012:pipeline/p/execution/"
    summer, winter = timezone(timedelta(hours=2)), timezone(timedelta(hours=1))
    earlier = ExecutionRecord.from_summary({"PipelineExecutionArn": arn + "a", "PipelineExecutionStatus": "Succeeded",
                                            "StartTime": datetime(2026, 10, 25, 2, 50, tzinfo=summer)})  # 00:50Z
    later = ExecutionRecord.from_summary({"PipelineExecutionArn": arn + "b", "PipelineExecutionStatus": "Succeeded",
                                          "StartTime": datetime(2026, 10, 25, 2, 0, tzinfo=winter)})  # 01:00Z
    assert (earlier.started or "") < (later.started or "") and (later.started or "").endswith("+00:00")
