"""The SageMaker Pipelines definition: its shape, its determinism, and that building it is offline.

The definition is built once per module (the SDK import and build cost seconds) with fixed
settings and fixed code bundles, so the snapshot does not change when someone edits a job
script: the bundles' own determinism is tested separately on the real source.
Regenerate the snapshot with ``SENTIMENT_MLOPS_UPDATE_SNAPSHOTS=1``.
"""
from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import threading
import time
import warnings
from datetime import UTC
from pathlib import Path

import pytest
import yaml

from pipeline.bundles import TEXT_REQUIREMENTS, CodeBundles, build_bundles, content_addressed, deterministic_tar_gz
from pipeline.settings import REPO_ROOT, Settings

SNAPSHOT = Path(__file__).parent / "snapshots" / "pipeline_definition.json"
SETTINGS = Settings(region="us-east-1", bucket="test-bucket", prefix="sentiment-mlops",
                    role_arn="arn:aws:iam::111111111111:role/TestSageMakerRole", pipeline_name="sentiment-mlops-test",
                    model_package_group="sentiment-test-group", framework_version="2.5", py_version="py311",
                    training_image_uri=None, processing_image_uri=None, inference_image_uri=None)


def fixed_bundles(settings: Settings) -> CodeBundles:
    return CodeBundles(processing=content_addressed("sourcedir.tar.gz", b"processing code", settings),
                       training=content_addressed("sourcedir.tar.gz", b"training code", settings),
                       runner=content_addressed("runproc.sh", b"#!/bin/bash\n", settings))


class NetworkForbidden:
    """Replaces socket connects and name lookups with a refusal, and records every attempt."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.attempts: list[str] = []

        def refuse(what):
            def _refuse(*args, **kwargs):
                self.attempts.append(f"{what}{args[1:] if what == 'connect' else args}")
                raise OSError(f"network forbidden while building the definition: {what}")
            return _refuse

        monkeypatch.setattr(socket.socket, "connect", refuse("connect"))
        monkeypatch.setattr(socket.socket, "connect_ex", refuse("connect_ex"))
        monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
        monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))


@pytest.fixture(scope="module")
def built():
    """Two builds with network forbidden: (definition text, second text, network attempts)."""
    with pytest.MonkeyPatch.context() as monkeypatch, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message="Running within a PipelineSession")
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
            monkeypatch.delenv(name, raising=False)
        guard = NetworkForbidden(monkeypatch)
        from pipeline.definition import definition_json

        first = definition_json(SETTINGS, fixed_bundles(SETTINGS))
        second = definition_json(SETTINGS, fixed_bundles(SETTINGS))
        # SDK telemetry, were it on, would send from a background thread: give it the chance.
        for thread in threading.enumerate():
            if thread.name.startswith("sagemaker-telemetry"):
                thread.join(timeout=5)
        time.sleep(0.1)
    return first, second, guard.attempts


@pytest.fixture(scope="module")
def definition(built) -> dict:
    return json.loads(built[0])


def steps_by_name(definition: dict) -> dict:
    """Every step by name, those in condition branches (nested ones too) included, in definition order."""
    found: dict = {}

    def add(steps: list) -> None:
        for step in steps:
            found[step["Name"]] = step
            if step["Type"] == "Condition":
                for branch in ("IfSteps", "ElseSteps"):
                    add(step["Arguments"][branch])

    add(definition["Steps"])
    return found


@pytest.mark.slow
def test_no_network_while_building(built):
    assert built[2] == []


def test_same_inputs_give_byte_identical_json(built):
    assert built[0] == built[1]


def test_snapshot(built):
    if os.environ.get("SENTIMENT_MLOPS_UPDATE_SNAPSHOTS"):
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(built[0], encoding="utf-8")
    assert SNAPSHOT.exists(), "no snapshot yet: run with SENTIMENT_MLOPS_UPDATE_SNAPSHOTS=1"
    assert built[0] == SNAPSHOT.read_text(encoding="utf-8"), \
        "the definition changed: review the diff, then run with SENTIMENT_MLOPS_UPDATE_SNAPSHOTS=1"


def test_steps_types_and_order(definition):
    assert [(s["Name"], s["Type"]) for s in definition["Steps"]] == [
        ("Preprocess", "Processing"), ("Train", "Training"), ("CreateModel", "Model"), ("Transform", "Transform"),
        ("Evaluate", "Processing"), ("CheckAccuracy", "Condition")]
    check = definition["Steps"][5]["Arguments"]
    assert [(s["Name"], s["Type"]) for s in check["IfSteps"]] == [("CheckSentenceAccuracy", "Condition")]
    assert [(s["Name"], s["Type"]) for s in check["ElseSteps"]] == [("Fail", "Fail")]
    sentences = check["IfSteps"][0]["Arguments"]
    assert [(s["Name"], s["Type"]) for s in sentences["IfSteps"]] == [("Register", "RegisterModel")]
    assert [(s["Name"], s["Type"]) for s in sentences["ElseSteps"]] == [("FailSentences", "Fail")]


def test_no_repack_step(definition):
    names = list(steps_by_name(definition))
    assert names == ["Preprocess", "Train", "CreateModel", "Transform", "Evaluate", "CheckAccuracy",
                     "CheckSentenceAccuracy", "Register", "FailSentences", "Fail"]
    assert "Repack" not in json.dumps(definition)


def test_dependencies_flow_through_properties(definition):
    steps = steps_by_name(definition)
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"]
                for c in steps["Train"]["Arguments"]["InputDataConfig"]}
    assert channels == {split: {"Get": f"Steps.Preprocess.ProcessingOutputConfig.Outputs['{split}'].S3Output.S3Uri"}
                        for split in ("train", "validation")}
    inputs = {i["InputName"]: i["S3Input"] for i in steps["Evaluate"]["Arguments"]["ProcessingInputs"]}
    assert inputs["model"]["S3Uri"] == {"Get": "Steps.Train.ModelArtifacts.S3ModelArtifacts"}
    assert inputs["model"]["LocalPath"] == "/opt/ml/processing/model"
    assert inputs["test"]["S3Uri"] == {"Get": "Steps.Preprocess.ProcessingOutputConfig.Outputs['test'].S3Output.S3Uri"}
    assert inputs["test"]["LocalPath"] == "/opt/ml/processing/test"
    assert inputs["predictions"]["S3Uri"] == {"Get": "Steps.Transform.TransformOutput.S3OutputPath"}
    assert inputs["predictions"]["LocalPath"] == "/opt/ml/processing/predictions"
    model = steps["CreateModel"]["Arguments"]
    assert model["PrimaryContainer"]["ModelDataUrl"] == {"Get": "Steps.Train.ModelArtifacts.S3ModelArtifacts"}
    transform = steps["Transform"]["Arguments"]
    assert transform["ModelName"] == {"Get": "Steps.CreateModel.ModelName"}
    assert transform["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"] == {"Std:Join": {"On": "/", "Values": [
        {"Get": "Steps.Preprocess.ProcessingOutputConfig.Outputs['test'].S3Output.S3Uri"}, "reviews.jsonl"]}}


def test_the_test_set_is_scored_by_the_model_it_registers_through_what_the_server_takes(definition):
    """CreateModel is Register's container (image, environment, artifact); the transform sends what
    the handlers read, within the server's body limit, and joins each answer to the record Evaluate
    matches it with; and the local runtime takes the very request."""
    from pipeline.local.services.transform.spec import parse_request
    from serve.handlers import INPUT_TYPES, MAX_BODY_BYTES, OUTPUT_TYPES

    steps = steps_by_name(definition)
    container = steps["CreateModel"]["Arguments"]["PrimaryContainer"]
    registered = steps["Register"]["Arguments"]["InferenceSpecification"]["Containers"][0]
    assert (container["Image"], container["Environment"], container["ModelDataUrl"]) == (
        registered["Image"], registered["Environment"], registered["ModelDataUrl"])
    transform = steps["Transform"]["Arguments"]
    assert transform["TransformInput"]["ContentType"] in INPUT_TYPES
    assert transform["TransformOutput"]["Accept"] in OUTPUT_TYPES
    assert transform["MaxPayloadInMB"] * 1024 * 1024 <= MAX_BODY_BYTES  # whichever megabyte SageMaker means
    assert transform["DataProcessing"] == {"InputFilter": "$.text", "JoinSource": "Input"}  # "text": what Preprocess writes
    assert (transform["BatchStrategy"], transform["TransformInput"]["SplitType"],
            transform["TransformOutput"]["AssembleWith"]) == ("MultiRecord", "Line", "Line")
    resolved = json.loads(json.dumps(transform).replace('{"Get": "Steps.CreateModel.ModelName"}', '"model"'))
    resolved["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"] = "s3://b/executions/x/Preprocess/test/reviews.jsonl"
    resolved["TransformOutput"]["S3OutputPath"] = "s3://b/executions/x/Transform/predictions"
    spec = parse_request({**resolved, "TransformJobName": "pipelines-x-Transform"})
    assert spec.processing.join_input and spec.split_lines and spec.line_per_answer


def test_parameters(definition):
    params = {p["Name"]: p for p in definition["Parameters"]}
    assert params["AccuracyThreshold"] == {"Name": "AccuracyThreshold", "Type": "Float", "DefaultValue": 0.88}
    assert params["SentenceAccuracyThreshold"] == {"Name": "SentenceAccuracyThreshold", "Type": "Float", "DefaultValue": 0.82}
    assert params["ModelApprovalStatus"]["DefaultValue"] == "PendingManualApproval"
    assert params["TrainingProfile"]["DefaultValue"] == "gpu"
    assert params["TrainingInstanceType"]["DefaultValue"] == "ml.g5.xlarge"
    assert params["ProcessingInstanceType"]["DefaultValue"] == "ml.m5.xlarge"
    assert params["InputDataUri"]["DefaultValue"] == "s3://test-bucket/sentiment-mlops/data/imdb/"
    assert params["InputDataVersion"] == {"Name": "InputDataVersion", "Type": "String", "DefaultValue": ""}
    assert {"Epochs", "MaxLen", "VocabSize", "EmbeddingDim", "TrainingInstanceCount", "ProcessingInstanceCount"} <= set(params)


def test_parameter_defaults_match_the_scripts():
    from pipeline import parameters
    from steps import preprocess
    from steps.preprocess import PreprocessOptions
    from train.profiles import PROFILES

    defaults = PreprocessOptions()
    assert parameters.DEFAULT_MAX_LEN == defaults.text.max_len
    assert parameters.DEFAULT_VOCAB_SIZE == defaults.vocab_size
    assert parameters.DEFAULT_EMBEDDING_DIM == defaults.embedding_dim
    assert parameters.DEFAULT_INPUT_DATA_VERSION == preprocess.parse_args([]).data_version
    assert parameters.DEFAULT_TRAINING_PROFILE in PROFILES


def gate_figure(kind: str, figure: str) -> dict:
    return {"Std:JsonGet": {"PropertyFile": {"Get": "Steps.Evaluate.PropertyFiles.EvaluationReport"},
                            "Path": f"gate.{kind}.{figure}"}}


@pytest.mark.parametrize("step, kind, threshold", [("CheckAccuracy", "reviews", "AccuracyThreshold"),
                                                   ("CheckSentenceAccuracy", "sentences", "SentenceAccuracyThreshold")])
def test_each_gate_reads_its_kind_of_text_from_the_property_file(definition, step, kind, threshold):
    """A run with no test texts of a kind passes that gate; otherwise their accuracy must reach its threshold."""
    assert steps_by_name(definition)[step]["Arguments"]["Conditions"] == [{"Type": "Or", "Conditions": [
        {"Type": "LessThanOrEqualTo", "LeftValue": gate_figure(kind, "texts"), "RightValue": 0},
        {"Type": "GreaterThanOrEqualTo", "LeftValue": gate_figure(kind, "accuracy"),
         "RightValue": {"Get": f"Parameters.{threshold}"}}]}]


def test_the_evaluation_report_is_a_property_file(definition):
    steps = steps_by_name(definition)
    assert steps["Evaluate"]["PropertyFiles"] == [
        {"PropertyFileName": "EvaluationReport", "OutputName": "evaluation", "FilePath": "evaluation.json"}]
    outputs = steps["Evaluate"]["Arguments"]["ProcessingOutputConfig"]["Outputs"]
    assert [(o["OutputName"], o["S3Output"]["LocalPath"]) for o in outputs] == [("evaluation", "/opt/ml/processing/evaluation")]


@pytest.mark.parametrize("step, kind, threshold", [("Fail", "reviews", "AccuracyThreshold"),
                                                   ("FailSentences", "sentences", "SentenceAccuracyThreshold")])
def test_each_fail_message_names_the_figure_that_missed_and_its_threshold(definition, step, kind, threshold):
    message = steps_by_name(definition)[step]["Arguments"]["ErrorMessage"]["Std:Join"]["Values"]
    assert f"Test accuracy on {kind}" in message
    assert gate_figure(kind, "accuracy") in message and {"Get": f"Parameters.{threshold}"} in message


def test_register_model_arguments(definition):
    register = steps_by_name(definition)["Register"]["Arguments"]
    assert register["ModelPackageGroupName"] == "sentiment-test-group"
    assert register["ModelApprovalStatus"] == {"Get": "Parameters.ModelApprovalStatus"}
    statistics = register["ModelMetrics"]["ModelQuality"]["Statistics"]
    assert statistics["ContentType"] == "application/json"
    assert statistics["S3Uri"] == {"Std:Join": {"On": "/", "Values": [
        {"Get": "Steps.Evaluate.ProcessingOutputConfig.Outputs['evaluation'].S3Output.S3Uri"}, "evaluation.json"]}}
    spec = register["InferenceSpecification"]
    (container,) = spec["Containers"]
    assert container["ModelDataUrl"] == {"Get": "Steps.Train.ModelArtifacts.S3ModelArtifacts"}
    assert container["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
    assert container["Environment"]["SAGEMAKER_SUBMIT_DIRECTORY"] == "/opt/ml/model/code"
    assert container["Image"] == "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.5-cpu-py311"
    assert spec["SupportedContentTypes"] == ["application/json", "text/plain", "text/csv"]
    assert spec["SupportedResponseMIMETypes"] == ["application/json", "text/plain"]


# --- the links an approver opens: CustomerMetadataProperties into Evaluate's output ----------

EVALUATION_FOLDER = {"Get": "Steps.Evaluate.ProcessingOutputConfig.Outputs['evaluation'].S3Output.S3Uri"}


def _register_links(definition: dict, execution_id: str = "abcdef123456") -> dict[str, str]:
    """The package's CustomerMetadataProperties as they resolve in an execution with this id
    (SageMaker's are 12 characters): Evaluate's output URI resolved first, then the links."""
    from datetime import datetime

    from pipeline.local.engine.expressions import ExecutionContext, execution_variables, parameter_values, resolve

    context = ExecutionContext(parameter_values(definition, {}),
                               execution_variables("sentiment-mlops-test", execution_id, datetime(2026, 1, 1, tzinfo=UTC)))
    steps = steps_by_name(definition)
    outputs = resolve(steps["Evaluate"]["Arguments"]["ProcessingOutputConfig"], context)
    context = context.with_step_properties("Evaluate", {"ProcessingOutputConfig": outputs})
    return resolve(steps["Register"]["Arguments"]["CustomerMetadataProperties"], context)


def test_the_package_links_every_file_the_evaluate_step_writes(definition):
    """Each link is Evaluate's output folder joined with a file name from evaluation/outputs.py,
    the module evaluate.py writes its files by (tests/test_evaluate.py checks it writes exactly
    those); the folder is the output evaluate.py is told to write to."""
    from evaluation import evaluate, outputs

    register = steps_by_name(definition)["Register"]["Arguments"]
    assert register["CustomerMetadataProperties"] == {
        key: {"Std:Join": {"On": "/", "Values": [EVALUATION_FOLDER, name]}} for key, name in outputs.LINKS.items()}
    assert list(outputs.LINKS) == ["EvaluationReport", "ConfusionMatrix", "RocPrCurves", "TrainingCurves",
                                   "WorstMistakes", "Predictions", "AccuracyByLength", "Calibration"]
    assert outputs.LINKS["EvaluationReport"] == register["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"][
        "Std:Join"]["Values"][1] == "evaluation.json"
    assert (evaluate.REPORT_FILE, evaluate.PREDICTIONS_FILE, evaluate.MISCLASSIFIED_FILE) == (
        outputs.REPORT_FILE, outputs.PREDICTIONS_FILE, outputs.MISCLASSIFIED_FILE)  # imported, not copies
    evaluate_args = steps_by_name(definition)["Evaluate"]["Arguments"]
    (output,) = evaluate_args["ProcessingOutputConfig"]["Outputs"]
    output_dir = evaluate_args["AppSpecification"]["ContainerArguments"]
    assert output["OutputName"] == "evaluation"
    assert output_dir[output_dir.index("--output-dir") + 1] == output["S3Output"]["LocalPath"]
    links = _register_links(definition)
    assert links == {key: f"s3://test-bucket/sentiment-mlops/executions/abcdef123456/Evaluate/evaluation/{name}"
                     for key, name in outputs.LINKS.items()}


def test_the_package_carries_the_baseline_the_evaluate_step_writes_as_its_drift_check_baselines(definition):
    """The monitoring job reads its baseline from the package it monitors (DriftCheckBaselines'
    ModelDataQuality), as a Model Monitor schedule does: each points at the file of Evaluate's
    baseline folder that monitor/baseline.py writes (tests/test_evaluate.py checks it is written)."""
    from evaluation import outputs
    from monitor import baseline

    quality = steps_by_name(definition)["Register"]["Arguments"]["DriftCheckBaselines"]["ModelDataQuality"]
    assert quality == {part: {"ContentType": "application/json", "S3Uri": {"Std:Join": {"On": "/", "Values": [
        EVALUATION_FOLDER, outputs.BASELINE_FOLDER, name]}}} for part, name in (
        ("Statistics", baseline.STATISTICS_FILE), ("Constraints", baseline.CONSTRAINTS_FILE))}


def definition_json_for(settings: Settings) -> str:
    from pipeline.definition import definition_json

    return definition_json(settings, fixed_bundles(settings))


def test_the_links_fit_sagemakers_limits_with_a_realistic_bucket_and_prefix():
    """CustomerMetadataProperties values hold at most 256 characters. A stack's bucket name
    (CloudFormation adds a suffix) with a longish prefix fits; the build checks the resolved
    length, so the check and the definition must agree on it."""
    from dataclasses import replace

    from evaluation.outputs import LINKS
    from pipeline.definition.contracts import (
        CUSTOMER_METADATA_MAX_ENTRIES,
        CUSTOMER_METADATA_MAX_VALUE,
        customer_metadata_problem,
    )

    settings = replace(SETTINGS, bucket="sentiment-mlops-artifactbucket-1a2b3c4d5e6f7", prefix="teams/nlp/sentiment-mlops")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        definition = json.loads(definition_json_for(settings))
    links = _register_links(definition)
    assert customer_metadata_problem(links) is None and len(links) <= CUSTOMER_METADATA_MAX_ENTRIES
    longest = max(links.values(), key=len)
    folder, _, name = longest.rpartition("/")
    assert folder.endswith("/Evaluate/evaluation") and len(name) == max(map(len, LINKS.values()))
    assert len(longest) < CUSTOMER_METADATA_MAX_VALUE
    from pipeline.definition.contracts import EXECUTION_ID_LENGTH
    from pipeline.local.state.executions import new_execution_id

    assert len(new_execution_id()) == EXECUTION_ID_LENGTH == len("abcdef123456")  # as SageMaker's
    # How much room is left: the longest file name and a 63-character bucket leave the prefix 120.
    room = CUSTOMER_METADATA_MAX_VALUE - len("s3:///executions/abcdef123456/Evaluate/evaluation/") - max(map(len, LINKS.values()))
    assert room - 63 - 1 == 120


@pytest.mark.slow
def test_a_prefix_too_long_for_the_links_fails_the_build_saying_what_to_shorten():
    from dataclasses import replace

    from pipeline.definition.gate_step import DefinitionError
    from pipeline.errors import UserError

    settings = replace(SETTINGS, bucket="b" * 63, prefix="p" * 121)
    with warnings.catch_warnings(), pytest.raises(DefinitionError) as raised:
        warnings.simplefilter("ignore")
        definition_json_for(settings)
    assert isinstance(raised.value, UserError)
    message = str(raised.value)
    assert "'WorstMistakes'" in message and "has 257 characters: SageMaker takes 1 to 256" in message
    assert "Shorten SENTIMENT_MLOPS_PREFIX" in message and "\n" not in message
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        links = _register_links(json.loads(definition_json_for(replace(settings, prefix="p" * 120))))
    assert max(len(v) for v in links.values()) == 256  # the longest that SageMaker takes


def test_a_prefix_with_characters_sagemaker_refuses_in_metadata_fails_the_build():
    from dataclasses import replace

    from pipeline.definition.gate_step import DefinitionError

    with warnings.catch_warnings(), pytest.raises(DefinitionError, match=r"holds '~'"):
        warnings.simplefilter("ignore")
        definition_json_for(replace(SETTINGS, prefix="~team/sentiment"))


def test_training_step(definition):
    from train.epoch_log import METRIC_DEFINITIONS

    args = steps_by_name(definition)["Train"]["Arguments"]
    assert args["AlgorithmSpecification"]["MetricDefinitions"] == METRIC_DEFINITIONS
    assert args["AlgorithmSpecification"]["TrainingImage"].endswith("/pytorch-training:2.5-gpu-py311")
    assert "ContainerEntrypoint" not in args["AlgorithmSpecification"]  # script mode, not the SDK's drivers
    hps = args["HyperParameters"]
    assert hps["sagemaker_program"] == "train/train.py"
    assert hps["sagemaker_submit_directory"] == fixed_bundles(SETTINGS).training.s3_uri
    assert hps["profile"] == {"Get": "Parameters.TrainingProfile"}
    # Hyperparameters must be strings: literal strings or Joins (a parameter's .to_string()).
    for name, value in hps.items():
        assert isinstance(value, str) or "Std:Join" in value or value == {"Get": "Parameters.TrainingProfile"}, name
    assert args["CheckpointConfig"]["LocalPath"] == "/opt/ml/checkpoints"
    checkpoints = json.dumps(args["CheckpointConfig"]["S3Uri"])
    assert "Parameters.TrainingProfile" in checkpoints and "Parameters.Epochs" in checkpoints
    assert args["EnableManagedSpotTraining"] is True
    assert args["StoppingCondition"]["MaxWaitTimeInSeconds"] >= args["StoppingCondition"]["MaxRuntimeInSeconds"]
    assert args["ResourceConfig"]["InstanceType"] == {"Get": "Parameters.TrainingInstanceType"}


def test_no_cache_key_depends_on_the_execution(definition):
    """SageMaker reuses a step when the attributes of its cache key are unchanged: one that
    depended on the execution id (a per-execution checkpoint folder, say) would never be reused."""
    from pipeline.local.engine.cache import CACHE_KEY_ATTRIBUTES

    for step in definition["Steps"]:
        if (step.get("CacheConfig") or {}).get("Enabled"):
            keyed = {name: step["Arguments"].get(name) for name in CACHE_KEY_ATTRIBUTES[step["Type"]]}
            assert '"Execution.' not in json.dumps(keyed), step["Name"]
    # The one known exception, as on SageMaker (aws/sagemaker-python-sdk issue 3392): the Transform's
    # ModelName is made by the execution's own CreateModel step, so it and Evaluate run in every execution.
    transform = steps_by_name(definition)["Transform"]["Arguments"]
    assert transform["ModelName"] == {"Get": "Steps.CreateModel.ModelName"}


def test_every_s3_path_is_explicit(definition):
    """No path came from the SDK's default bucket: all are under the configured bucket and prefix."""
    def strings(node):
        if isinstance(node, str):
            yield node
        elif isinstance(node, dict):
            for value in node.values():
                yield from strings(value)
        elif isinstance(node, list):
            for value in node:
                yield from strings(value)

    uris = [s for s in strings(definition) if s.startswith("s3://")]
    assert uris and all(u.startswith("s3://test-bucket/sentiment-mlops/") for u in uris)
    assert "sagemaker-us-east-1" not in json.dumps(definition)


# --- S3 prefixes: SageMaker reads every object whose key starts with the URI -----------------

def _resolved(value, definition: dict, **parameters):
    """``value`` as SageMaker resolves it for an execution with these parameters."""
    from datetime import datetime

    from pipeline.local.engine.expressions import ExecutionContext, execution_variables, parameter_values, resolve

    execution = execution_variables("sentiment-mlops-test", "exec1", datetime(2026, 1, 1, tzinfo=UTC))
    return resolve(value, ExecutionContext(parameter_values(definition, parameters), execution))


def test_default_input_data_uri_names_one_folder(definition):
    """An S3Prefix input without the trailing "/" also reads ``data/imdb-2026-11/…`` and
    ``data/imdb.csv`` (the README's ``upload-data --name`` puts datasets beside it)."""
    from pipeline.parameters import default_input_data_uri

    params = {p["Name"]: p for p in definition["Parameters"]}
    assert params["InputDataUri"]["DefaultValue"].endswith("/")
    assert default_input_data_uri("s3://b/p/") == "s3://b/p/data/imdb/"
    (data,) = [i["S3Input"] for i in steps_by_name(definition)["Preprocess"]["Arguments"]["ProcessingInputs"]
               if i["InputName"] == "data"]
    assert (data["S3Uri"], data["S3DataType"]) == ({"Get": "Parameters.InputDataUri"}, "S3Prefix")


def test_checkpoint_uri_names_one_folder_per_epochs(definition):
    """Checkpoints are synced from every key under the URI: ``epochs-8`` must not take ``epochs-80``'s."""
    checkpoint = steps_by_name(definition)["Train"]["Arguments"]["CheckpointConfig"]["S3Uri"]
    eight, eighty = (_resolved(checkpoint, definition, Epochs=n) for n in (8, 80))
    assert eight == "s3://test-bucket/sentiment-mlops/checkpoints/gpu/epochs-8/"
    assert eighty.endswith("/epochs-80/") and not eighty.startswith(eight)
    assert _resolved(checkpoint, definition, TrainingProfile="cpu", Epochs=8).endswith("/cpu/epochs-8/")


def test_step_outputs_read_as_prefixes_take_only_their_own_objects(definition):
    """Train and Evaluate read Preprocess's outputs (and Register Evaluate's) through their S3Uri,
    which has no trailing "/": it is safe only while no output URI is a prefix of another."""
    steps = steps_by_name(definition)
    outputs = [_resolved(o["S3Output"]["S3Uri"], definition)
               for name in ("Preprocess", "Evaluate")
               for o in steps[name]["Arguments"]["ProcessingOutputConfig"]["Outputs"]]
    assert len(outputs) == 4 and len(set(outputs)) == 4
    assert not [(a, b) for a in outputs for b in outputs if a != b and b.startswith(a)]


# --- the registered package: the instance types its image serves on ---------------------------

def _processor_of_instance(instance_type: str) -> str:
    """``gpu`` for the accelerated families a PyTorch GPU image runs on (g*, p*), else ``cpu``."""
    return "gpu" if instance_type.split(".")[1][0] in "gp" else "cpu"


def _registered_instance_types(definition: dict) -> tuple[str, list[str], list[str]]:
    spec = steps_by_name(definition)["Register"]["Arguments"]["InferenceSpecification"]
    (container,) = spec["Containers"]
    return (container["Image"], spec["SupportedRealtimeInferenceInstanceTypes"],
            spec["SupportedTransformInstanceTypes"])


def test_registered_instance_types_match_the_cpu_inference_image(definition):
    """The default inference image is the CPU one: a GPU instance would pay for an idle GPU."""
    from pipeline.settings import DEFAULT_ENDPOINT_INSTANCE_TYPE

    image, realtime, transform = _registered_instance_types(definition)
    assert "-cpu-" in image
    assert realtime and {_processor_of_instance(t) for t in realtime + transform} == {"cpu"}
    template = yaml.safe_load((REPO_ROOT / "lambda" / "template.yaml").read_text(encoding="utf-8"))
    # What the local deploy and the deployed stack put the endpoint on.
    assert {DEFAULT_ENDPOINT_INSTANCE_TYPE, template["Parameters"]["EndpointInstanceType"]["Default"]} <= set(realtime)


def test_registered_instance_types_follow_a_pinned_gpu_inference_image():
    from dataclasses import replace

    from pipeline.definition import definition_json

    gpu_image = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.5-gpu-py311"
    settings = replace(SETTINGS, inference_image_uri=gpu_image)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        image, realtime, transform = _registered_instance_types(
            json.loads(definition_json(settings, fixed_bundles(settings))))
    assert image == gpu_image
    assert realtime and {_processor_of_instance(t) for t in realtime + transform} == {"gpu"}

    from pipeline.definition import image_processor

    assert [image_processor(u) for u in ("r/pytorch-inference:2.5.1-gpu-py311-cu124-ubuntu22.04-sagemaker",
                                         "r/pytorch-inference:2.5-cpu-py311", "r/my-gpu-image@sha256:ab")] == [
        "gpu", "cpu", "cpu"]


def test_the_sdk_config_is_checked_once_per_build_and_still_checked():
    """The build skips the SDK's per-lookup schema check for its own config only (10 s of a 12 s
    build); another config is still checked, an invalid one of ours is refused up front, and the
    SDK's validator is back in place afterwards."""
    import jsonschema

    from pipeline.definition.offline import SDK_CONFIG, config_validated_once, prepare_sdk_environment

    prepare_sdk_environment(SETTINGS)
    from sagemaker.core.config.config_manager import SageMakerConfig

    original = SageMakerConfig.__dict__["validate_sagemaker_config"]
    invalid = {"SchemaVersion": "1.0", "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": "sure"}}}}
    with config_validated_once(SDK_CONFIG) as shortened:
        assert shortened, ("SageMakerConfig.validate_sagemaker_config is no longer a static method in this SDK: "
                           "pipeline/definition/offline.py's shortcut is off and every build takes ~10 s longer")
        SageMakerConfig.validate_sagemaker_config(SDK_CONFIG)
        with pytest.raises(jsonschema.ValidationError):
            SageMakerConfig.validate_sagemaker_config(invalid)
    assert SageMakerConfig.__dict__["validate_sagemaker_config"] is original
    with pytest.raises(jsonschema.ValidationError), config_validated_once(invalid):
        pass
    assert SageMakerConfig.__dict__["validate_sagemaker_config"] is original


def test_a_package_mirror_reaches_every_job_and_the_model_only_when_set(definition):
    """Without a NAT, the start-up installs need a mirror: each container gets PIP_INDEX_URL."""
    from dataclasses import replace

    from pipeline.definition import definition_json

    assert "PIP_INDEX_URL" not in json.dumps(definition)
    mirror = "https://mirror-123456789012.d.codeartifact.us-east-1.amazonaws.com/pypi/pypi/simple/"
    settings = replace(SETTINGS, pip_index_url=mirror)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        steps = {s["Name"]: s for s in json.loads(definition_json(settings, fixed_bundles(settings)))["Steps"]}
    assert steps["Preprocess"]["Arguments"]["Environment"]["PIP_INDEX_URL"] == mirror
    assert steps["Evaluate"]["Arguments"]["Environment"]["PIP_INDEX_URL"] == mirror
    assert steps["Train"]["Arguments"]["Environment"]["PIP_INDEX_URL"] == mirror
    register = steps_by_name({"Steps": list(steps.values())})["Register"]
    (container,) = register["Arguments"]["InferenceSpecification"]["Containers"]
    assert container["Environment"]["PIP_INDEX_URL"] == mirror


def _substitute_defaults(args: list, definition: dict) -> list[str]:
    """ContainerArguments with each parameter replaced by its default, as SageMaker would."""
    defaults = {f"Parameters.{p['Name']}": str(p["DefaultValue"]) for p in definition["Parameters"]}

    def value(item):
        if isinstance(item, str):
            return item
        if "Get" in item:
            return defaults[item["Get"]]
        return item["Std:Join"]["On"].join(value(v) for v in item["Std:Join"]["Values"])

    return [value(a) for a in args]


def _passed_parameters(args: list) -> dict[str, str]:
    """``{option: parameter name}`` for each option whose value is a pipeline parameter."""
    def parameter(item):
        if isinstance(item, dict) and "Get" in item:
            return item["Get"].removeprefix("Parameters.")
        if isinstance(item, dict) and "Std:Join" in item:
            names = [parameter(v) for v in item["Std:Join"]["Values"]]
            return next((n for n in names if n), None)
        return None

    return {option: parameter(value) for option, value in zip(args, args[1:])
            if isinstance(option, str) and option.startswith("--") and parameter(value)}


def test_a_new_data_version_changes_preprocess_cache_key(definition):
    """SageMaker keys a Processing step's cache on its resolved request, not the bytes in S3: the
    data's version must be in the request, or data replaced in place reuses the old results."""
    from pipeline.local.engine.cache import CACHE_KEY_ATTRIBUTES, cache_key
    from pipeline.local.engine.expressions import ExecutionContext, parameter_values, resolve

    arguments = steps_by_name(definition)["Preprocess"]["Arguments"]
    keyed = {name: arguments.get(name) for name in CACHE_KEY_ATTRIBUTES["Processing"]}

    def key(version: str) -> str:
        context = ExecutionContext(parameter_values(definition, {"InputDataVersion": version}), {})
        return cache_key("Preprocess", "Processing", resolve(keyed, context))

    assert key("v1") != key("v2") and key("v1") == key("v1")


def test_processing_steps_match_the_scripts_cli(definition):
    from evaluation import evaluate
    from steps import preprocess

    steps = steps_by_name(definition)
    pre = steps["Preprocess"]["Arguments"]
    pre_args = _substitute_defaults(pre["AppSpecification"]["ContainerArguments"], definition)
    assert pre_args[0] == "steps/preprocess.py"
    parsed = preprocess.parse_args(pre_args[1:])
    assert (parsed.input_dir, parsed.output_dir) == ("/opt/ml/processing/input/data", "/opt/ml/processing/output")
    assert (parsed.max_len, parsed.vocab_size, parsed.embedding_dim) == (1000, 20_000, 128)
    assert parsed.data_version == ""  # parse_args exits on an argument the script does not declare
    passed = _passed_parameters(pre["AppSpecification"]["ContainerArguments"])
    assert passed == {"--max-len": "MaxLen", "--vocab-size": "VocabSize", "--embedding-dim": "EmbeddingDim",
                      "--data-version": "InputDataVersion"}
    outputs = {o["OutputName"]: o["S3Output"] for o in pre["ProcessingOutputConfig"]["Outputs"]}
    assert {name: o["LocalPath"] for name, o in outputs.items()} == {
        split: f"/opt/ml/processing/output/{split}" for split in ("train", "validation", "test")}
    for name, output in outputs.items():
        assert output["S3Uri"]["Std:Join"]["Values"][1:] == [{"Get": "Execution.PipelineExecutionId"}, "Preprocess", name]

    ev_args = _substitute_defaults(steps["Evaluate"]["Arguments"]["AppSpecification"]["ContainerArguments"], definition)
    assert ev_args[0] == "evaluation/evaluate.py"
    parsed = evaluate.parse_args(ev_args[1:])
    assert (parsed.model, parsed.test, parsed.predictions, parsed.output_dir) == (
        "/opt/ml/processing/model", "/opt/ml/processing/test", "/opt/ml/processing/predictions",
        "/opt/ml/processing/evaluation")

    for name in ("Preprocess", "Evaluate"):
        app = steps[name]["Arguments"]["AppSpecification"]
        assert app["ContainerEntrypoint"] == ["/bin/bash", "/opt/ml/processing/input/entrypoint/runproc.sh"]
        inputs = {i["InputName"]: i["S3Input"] for i in steps[name]["Arguments"]["ProcessingInputs"]}
        assert inputs["code"]["S3Uri"] == fixed_bundles(SETTINGS).processing.s3_uri
        assert inputs["code"]["LocalPath"] == "/opt/ml/processing/input/code"
        assert inputs["entrypoint"]["S3Uri"] == fixed_bundles(SETTINGS).runner.s3_uri


def test_training_hyperparameters_parse_as_the_container_passes_them(definition):
    from train.train import parse_args

    hps = steps_by_name(definition)["Train"]["Arguments"]["HyperParameters"]
    argv = []
    for name, value in sorted(hps.items()):
        argv += [f"--{name}", _substitute_defaults([value], definition)[0]]
    args, hp = parse_args(argv)
    assert args.profile == "gpu" and hp.epochs == 8


def test_bundles_are_deterministic_and_content_addressed():
    first, second = build_bundles(SETTINGS), build_bundles(SETTINGS)
    for a, b in zip(first.all(), second.all()):
        assert a.data == b.data and a.sha256 == b.sha256 and a.s3_uri == b.s3_uri
        assert a.s3_uri == f"s3://test-bucket/sentiment-mlops/code/{a.sha256}/{a.name}"
    assert first.processing.sha256 != first.training.sha256
    with tarfile.open(fileobj=io.BytesIO(first.processing.data)) as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        requirements = tar.extractfile("requirements.txt").read().decode()
    assert names == sorted(names)
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.mode == 0o644 for m in members)
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    assert {"steps/preprocess.py", "evaluation/evaluate.py", "serve/inference.py", "requirements.txt",
            "constraints.txt"} <= set(names)
    assert "-c constraints.txt" in requirements.splitlines()
    with tarfile.open(fileobj=io.BytesIO(first.training.data)) as tar:
        assert {"train/train.py", "serve/network.py", "steps/arrays.py", "requirements.txt",
                "constraints.txt"} <= set(tar.getnames())
    assert first.processing.data[4:8] == b"\0\0\0\0"  # gzip header mtime


def test_bundles_install_exact_pins_from_the_one_source():
    """The jobs pip-install at every start: exact pins (a range resolves afresh each time, under a
    cached step too) under a constraints.txt that is serve/constraints.txt itself, and nothing the
    training image already has (pip would otherwise replace it from the network)."""
    from serve.dependencies import parse_pins

    source = (REPO_ROOT / "serve" / "constraints.txt").read_bytes()
    pins = parse_pins(source.decode())
    bundles = build_bundles(SETTINGS)
    for bundle in (bundles.processing, bundles.training):
        with tarfile.open(fileobj=io.BytesIO(bundle.data)) as tar:
            requirements, constraints, bundled = (tar.extractfile(name).read().decode() for name in (
                "requirements.txt", "constraints.txt", "serve/constraints.txt"))
        assert constraints == bundled == source.decode()
        lines = [line for line in requirements.splitlines() if not line.startswith("#")]
        assert lines == ["-c constraints.txt", *(f"{name}=={pins[name]}" for name in TEXT_REQUIREMENTS)]
    assert {"nltk", "beautifulsoup4"} <= set(TEXT_REQUIREMENTS)
    assert not {"torch", "numpy", "scipy", "scikit-learn", "matplotlib", "tqdm"} & set(TEXT_REQUIREMENTS)


def test_tar_ignores_file_metadata(tmp_path):
    one = deterministic_tar_gz({"b.py": b"b", "a.py": b"a"})
    two = deterministic_tar_gz({"a.py": b"a", "b.py": b"b"})
    assert one == two


def test_runner_runs_the_script_from_the_bundle(tmp_path):
    """The runner as a processing job runs it: unpack, install requirements, exec the script."""
    bundles = build_bundles(SETTINGS)
    code, work = tmp_path / "code", tmp_path / "work"
    code.mkdir()
    bundle = deterministic_tar_gz({"requirements.txt": b"", "pkg/__init__.py": b"",
                                   "pkg/hello.py": b"import sys\nprint('args', sys.argv[1:])\n"})
    (code / "sourcedir.tar.gz").write_bytes(bundle)
    runner = tmp_path / "runproc.sh"
    runner.write_bytes(bundles.runner.data)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    env = {**os.environ, "SM_CODE_INPUT": str(code), "SM_CODE_DIR": str(work),
           "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(["bash", str(runner), "pkg/hello.py", "--x", "1"], env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "args ['--x', '1']" in result.stdout


@pytest.mark.slow
def test_definition_cli_prints_json_offline():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SENTIMENT_MLOPS_"))}
    env["SENTIMENT_MLOPS_BUCKET"] = "cli-bucket"
    result = subprocess.run([sys.executable, "-m", "pipeline.cli", "definition"], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    definition = json.loads(result.stdout)
    assert [s["Name"] for s in definition["Steps"]] == ["Preprocess", "Train", "CreateModel", "Transform", "Evaluate",
                                                      "CheckAccuracy"]
    assert "s3://cli-bucket/" in result.stdout


@pytest.mark.slow
def test_building_the_definition_does_not_import_torch():
    """The CLI, the control plane and the review page build the definition; none of them trains,
    and torch costs seconds to import (and a GPU build's worth of disk where it is not needed)."""
    script = ("import sys; from pipeline.definition import definition_json; definition_json(); "
              "print(sorted(name for name in sys.modules if name == 'torch' or name.startswith('torch.'))[:5])")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SENTIMENT_MLOPS_"))}
    env["SENTIMENT_MLOPS_BUCKET"] = "cli-bucket"
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"torch imported while building the definition: {result.stdout}"


def _with_counts(value, parameters: dict):
    """The definition's arguments with these parameters' values, and every other run-time value
    (another step's property, a join) replaced by a well-formed S3 URI."""
    if isinstance(value, dict):
        if set(value) == {"Get"} and value["Get"].startswith("Parameters."):
            return parameters.get(value["Get"].split(".", 1)[1], "ml.m5.xlarge")
        if set(value) in ({"Get"}, {"Std:Join"}, {"Std:JsonGet"}):
            return "s3://sentiment-mlops/run-time"
        return {key: _with_counts(item, parameters) for key, item in value.items()}
    if isinstance(value, list):
        return [_with_counts(item, parameters) for item in value]
    return value


def test_more_than_one_instance_validates_against_botocore_and_says_how_to_share_the_work(built):
    """ProcessingInstanceCount=4 and TrainingInstanceCount=2: the requests SageMaker receives are
    valid, Preprocess's raw data is dealt by object (ShardedByS3Key) while its code is copied to
    every instance, Evaluate stays on one (it writes one report), and Train asks the PyTorch
    training toolkit for its torchrun launcher."""
    import botocore.session
    from botocore.validate import validate_parameters

    model = botocore.session.get_session().get_service_model("sagemaker")
    steps = {step["Name"]: step for step in json.loads(built[0])["Steps"]}
    counts = {"ProcessingInstanceCount": 4, "TrainingInstanceCount": 2}
    preprocess = _with_counts(steps["Preprocess"]["Arguments"], counts)
    train = _with_counts(steps["Train"]["Arguments"], counts)
    evaluate = _with_counts(steps["Evaluate"]["Arguments"], counts)
    for operation, request in (("CreateProcessingJob", preprocess), ("CreateProcessingJob", evaluate),
                               ("CreateTrainingJob", train)):
        key = "ProcessingJobName" if operation == "CreateProcessingJob" else "TrainingJobName"
        validate_parameters({**request, key: "job"}, model.operation_model(operation).input_shape)  # raises if not
    assert preprocess["ProcessingResources"]["ClusterConfig"]["InstanceCount"] == 4
    distribution = {i["InputName"]: i["S3Input"]["S3DataDistributionType"] for i in preprocess["ProcessingInputs"]}
    assert distribution == {"data": "ShardedByS3Key", "code": "FullyReplicated", "entrypoint": "FullyReplicated"}
    assert "/opt/ml/config/resourceconfig.json" in preprocess["AppSpecification"]["ContainerArguments"]
    assert evaluate["ProcessingResources"]["ClusterConfig"]["InstanceCount"] == 1
    assert train["ResourceConfig"]["InstanceCount"] == 2
    assert train["HyperParameters"]["sagemaker_torch_distributed_enabled"] == "true"
