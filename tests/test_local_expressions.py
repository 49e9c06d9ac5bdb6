"""The local runtime's expressions and conditions: every kind, its errors, and the real definition.

The real definition is built once for the module (the SDK build costs seconds); everything
else runs on small hand-written expressions, with fake property files and step properties.
"""
from __future__ import annotations

import json
import re
import warnings
from datetime import UTC, datetime
from typing import Any

import pytest

from pipeline.local.engine.conditions import (
    ConditionError,
    condition_step_outcome,
    evaluate_condition,
    evaluate_conditions,
)
from pipeline.local.engine.expressions import (
    ExecutionContext,
    ExpressionError,
    cast_parameter,
    evaluate,
    execution_variables,
    is_expression,
    iter_expressions,
    parameter_values,
    parse_path,
    read_path,
    referenced_steps,
    resolve,
    stringify,
)

DEFINITION = {"Parameters": [
    {"Name": "Uri", "Type": "String", "DefaultValue": "s3://b/in"},
    {"Name": "Threshold", "Type": "Float", "DefaultValue": 0.88},
    {"Name": "Epochs", "Type": "Integer", "DefaultValue": 8},
    {"Name": "Flag", "Type": "Boolean", "DefaultValue": True},
    {"Name": "Status", "Type": "String", "DefaultValue": "Pending", "EnumValues": ["Pending", "Approved"]},
], "Steps": []}
START = datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)
REPORT = {"binary_classification_metrics": {"accuracy": {"value": 0.9}, "curve": [{"x": 1}, {"x": 2.5}]},
          "odd-key": {"a b": 3}}
PREPROCESS_PROPERTIES = {
    "ProcessingJobName": "job-1",
    "ProcessingOutputConfig": {"Outputs": [
        {"OutputName": "train", "S3Output": {"S3Uri": "s3://b/x/train"}},
        {"OutputName": "test", "S3Output": {"S3Uri": "s3://b/x/test"}}]},
}
TRAIN_PROPERTIES = {"ModelArtifacts": {"S3ModelArtifacts": "s3://b/models/job/output/model.tar.gz"},
                    "FinalMetricDataList": [{"MetricName": "val_accuracy", "Value": 0.91}]}


class Reader:
    """A fake property-file reader that records what it was asked."""

    def __init__(self, documents: dict) -> None:
        self.documents = documents
        self.calls: list[tuple[str, str]] = []

    def __call__(self, step: str, name: str) -> Any:
        self.calls.append((step, name))
        if (step, name) not in self.documents:
            raise ExpressionError(f"no property file {step}.{name}")
        return self.documents[(step, name)]


@pytest.fixture
def context() -> ExecutionContext:
    return ExecutionContext(
        parameters=parameter_values(DEFINITION, {"Epochs": "3"}),
        execution=execution_variables("My-Pipeline", "abc123xyz", START, region="us-east-1", account="123"),
        step_properties={"Preprocess": PREPROCESS_PROPERTIES, "Train": TRAIN_PROPERTIES},
        read_property_file=Reader({("Evaluate", "Report"): REPORT}),
        read_s3_json=lambda uri: {"uri": uri, "n": [10, 20]},
        now=lambda: "2024-05-06T08:00:00.000Z",
    )


def json_get(path: str, step: str = "Evaluate", name: str = "Report") -> dict:
    return {"Std:JsonGet": {"PropertyFile": {"Get": f"Steps.{step}.PropertyFiles.{name}"}, "Path": path}}


# --- parameters ---------------------------------------------------------------------------

def test_parameters_take_given_values_cast_by_type_else_defaults():
    values = parameter_values(DEFINITION, {"Epochs": "3", "Threshold": "0.5", "Flag": "FALSE", "Status": "Approved"})
    assert values == {"Uri": "s3://b/in", "Threshold": 0.5, "Epochs": 3, "Flag": False, "Status": "Approved"}
    assert isinstance(parameter_values(DEFINITION)["Threshold"], float)


@pytest.mark.parametrize("given, message", [
    ({"Nope": "1"}, "unknown pipeline parameter"),
    ({"Epochs": "3.5"}, "Epochs (Integer)"),
    ({"Epochs": True}, "Epochs (Integer)"),
    ({"Threshold": "high"}, "Threshold (Float)"),
    ({"Flag": "yes"}, "Flag (Boolean)"),
    ({"Status": "Rejected"}, "needs one of Pending, Approved"),
])
def test_bad_parameter_values_are_refused(given, message):
    with pytest.raises(ExpressionError, match=re.escape(message)):
        parameter_values(DEFINITION, given)


def test_casts_and_missing_default():
    assert cast_parameter({"Name": "N", "Type": "Integer"}, 4.0) == 4
    assert cast_parameter({"Name": "F", "Type": "Float"}, 1) == 1.0
    with pytest.raises(ExpressionError, match=r"S \(String\) needs a string, got 7"):
        cast_parameter({"Name": "S", "Type": "String"}, 7)  # as StartPipelineExecution's check refuses it
    with pytest.raises(ExpressionError, match="unknown Type"):
        cast_parameter({"Name": "X", "Type": "Decimal"}, 1)
    with pytest.raises(ExpressionError, match="no DefaultValue"):
        parameter_values({"Parameters": [{"Name": "X", "Type": "String"}]})


# --- Get ----------------------------------------------------------------------------------

def test_get_parameters(context):
    assert evaluate({"Get": "Parameters.Epochs"}, context) == 3
    assert evaluate({"Get": "Parameters.Threshold"}, context) == 0.88
    assert evaluate({"Get": "Parameters.Flag"}, context) is True


def test_get_execution_variables(context):
    assert resolve({"Get": "Execution.PipelineExecutionId"}, context) == "abc123xyz"
    assert resolve({"Get": "Execution.PipelineName"}, context) == "My-Pipeline"
    assert resolve({"Get": "Execution.PipelineArn"}, context) == "arn:aws:sagemaker:us-east-1:123:pipeline/my-pipeline"
    assert resolve({"Get": "Execution.PipelineExecutionArn"}, context) == (
        "arn:aws:sagemaker:us-east-1:123:pipeline/my-pipeline/execution/abc123xyz")
    assert resolve({"Get": "Execution.StartDateTime"}, context) == "2024-05-06T07:08:09.123Z"
    assert resolve({"Get": "Execution.CurrentDateTime"}, context) == "2024-05-06T08:00:00.000Z"
    assert resolve({"Get": "Execution.TrainingJobName"}, context.with_execution(TrainingJobName="t-1")) == "t-1"


def test_get_step_properties(context):
    assert resolve({"Get": "Steps.Train.ModelArtifacts.S3ModelArtifacts"}, context).endswith("model.tar.gz")
    assert resolve({"Get": "Steps.Preprocess.ProcessingOutputConfig.Outputs['train'].S3Output.S3Uri"},
                   context) == "s3://b/x/train"
    assert resolve({"Get": 'Steps.Preprocess.ProcessingOutputConfig.Outputs["test"].S3Output.S3Uri'},
                   context) == "s3://b/x/test"
    assert resolve({"Get": "Steps.Preprocess.ProcessingOutputConfig.Outputs[1].S3Output.S3Uri"},
                   context) == "s3://b/x/test"
    assert resolve({"Get": "Steps.Train.FinalMetricDataList['val_accuracy'].Value"}, context) == 0.91


def test_step_properties_may_also_be_keyed_maps(context):
    keyed = context.with_step_properties("P", {"Outputs": {"train": {"S3Uri": "s3://k"}}})
    assert resolve({"Get": "Steps.P.Outputs['train'].S3Uri"}, keyed) == "s3://k"
    assert "P" not in context.step_properties  # the context itself is unchanged


@pytest.mark.parametrize("expression, message", [
    ({"Get": "Parameters.Missing"}, "no such parameter"),
    ({"Get": "Execution.Nope"}, "no such execution variable"),
    ({"Get": "Steps.Evaluate.ProcessingOutputConfig"}, "'Evaluate' has no properties"),
    ({"Get": "Steps.Train.ModelArtifacts.Nope"}, "nothing at 'Nope'"),
    ({"Get": "Steps.Preprocess.ProcessingOutputConfig.Outputs['validation'].S3Output.S3Uri"}, "nothing at 'validation'"),
    ({"Get": "Steps.Preprocess.ProcessingOutputConfig.Outputs[5]"}, "nothing at 5"),
    ({"Get": "Steps.Train"}, "malformed step reference"),
    ({"Get": "Steps.Evaluate.PropertyFiles.Report"}, "read with Std:JsonGet"),
    ({"Get": "Properties.X"}, "unknown root"),
    ({"Get": "Parameters"}, "malformed Get"),
    ({"Get": 3}, "malformed Get"),
    ({"Get": "Parameters.Epochs", "Other": 1}, "one key expected"),
    ({"Std:Concat": []}, "unknown function 'Std:Concat'"),
])
def test_bad_gets_and_unknown_functions_name_the_expression(context, expression, message):
    with pytest.raises(ExpressionError, match=message):
        resolve(expression, context)


def test_current_datetime_needs_a_clock(context):
    clockless = ExecutionContext(context.parameters, context.execution)
    with pytest.raises(ExpressionError, match="no clock"):
        resolve({"Get": "Execution.CurrentDateTime"}, clockless)


# --- Std:Join -----------------------------------------------------------------------------

def test_join_stringifies_like_sagemaker(context):
    join = {"Std:Join": {"On": "/", "Values": [
        "s3://b", {"Get": "Execution.PipelineExecutionId"}, {"Get": "Parameters.Epochs"},
        {"Get": "Parameters.Threshold"}, {"Get": "Parameters.Flag"}, 1.0, False, None]}}
    assert resolve(join, context) == "s3://b/abc123xyz/3/0.88/true/1.0/false/null"


def test_join_default_separator_and_nesting(context):
    inner = {"Std:Join": {"On": "-", "Values": ["a", {"Get": "Parameters.Epochs"}]}}
    assert resolve({"Std:Join": {"Values": [inner, json_get("binary_classification_metrics.accuracy.value")]}},
                   context) == "a-30.9"


@pytest.mark.parametrize("argument, message", [
    ({"On": "/"}, "malformed Std:Join"),
    ({"On": 1, "Values": []}, "On must be a string"),
    ({"On": "", "Values": [["a"]]}, "cannot write a list"),
    ("a,b", "malformed Std:Join"),
])
def test_bad_joins(context, argument, message):
    with pytest.raises(ExpressionError, match=message):
        resolve({"Std:Join": argument}, context)


def test_stringify():
    assert [stringify(v) for v in ("x", 400, 0.88, 1.0, True, None)] == ["x", "400", "0.88", "1.0", "true", "null"]


# --- Std:JsonGet --------------------------------------------------------------------------

def test_json_get_reads_the_property_file(context):
    assert resolve(json_get("binary_classification_metrics.accuracy.value"), context) == 0.9
    assert resolve(json_get("binary_classification_metrics.curve[1].x"), context) == 2.5
    assert resolve(json_get("$.binary_classification_metrics.curve[0]"), context) == {"x": 1}
    assert resolve(json_get("['odd-key']['a b']"), context) == 3
    assert context.read_property_file.calls[0] == ("Evaluate", "Report")


def test_json_get_from_an_s3_uri(context):
    expression = {"Std:JsonGet": {"S3Uri": {"Std:Join": {"On": "/", "Values": ["s3://b", "f.json"]}}, "Path": "n[1]"}}
    assert resolve(expression, context) == 20


@pytest.mark.parametrize("expression, message", [
    (json_get("binary_classification_metrics.precision.value"), "nothing at 'precision'"),
    (json_get("binary_classification_metrics.curve[7].x"), "nothing at 7"),
    (json_get("binary_classification_metrics..value"), "malformed path"),
    (json_get("binary_classification_metrics[0]x"), "malformed path"),
    (json_get(""), "empty"),
    (json_get("a", name="Other"), "no property file Evaluate.Other"),
    ({"Std:JsonGet": {"PropertyFile": {"Get": "Steps.Evaluate.Report"}, "Path": "a"}}, "malformed PropertyFile"),
    ({"Std:JsonGet": {"PropertyFile": "Report", "Path": "a"}}, "malformed PropertyFile"),
    ({"Std:JsonGet": {"Path": "a"}}, "needs a PropertyFile or an S3Uri"),
    ({"Std:JsonGet": {"PropertyFile": {"Get": "Steps.Evaluate.PropertyFiles.Report"}}}, "needs Path"),
])
def test_bad_json_gets(context, expression, message):
    with pytest.raises(ExpressionError, match=message):
        resolve(expression, context)


def test_json_get_without_a_reader(context):
    with pytest.raises(ExpressionError, match="cannot read property files"):
        resolve(json_get("a"), ExecutionContext(context.parameters, context.execution))


# --- walking ------------------------------------------------------------------------------

def test_resolve_walks_nested_structures_and_keeps_plain_values(context):
    arguments = {"A": [1, {"B": {"Get": "Parameters.Uri"}}, "c"], "D": {"E": None, "F": {"Get": "Parameters.Epochs"}}}
    assert resolve(arguments, context) == {"A": [1, {"B": "s3://b/in"}, "c"], "D": {"E": None, "F": 3}}
    assert arguments["A"][1]["B"] == {"Get": "Parameters.Uri"}  # the input is not modified


def test_expression_discovery():
    value = {"x": [json_get("a"), {"Std:Join": {"On": "", "Values": [{"Get": "Steps.Train.A"}, {"Get": "Steps.Evaluate.B"}]}}]}
    assert is_expression(json_get("a")) and not is_expression({"S3Uri": "s"})
    assert len(list(iter_expressions(value))) == 5
    assert referenced_steps(value) == ["Evaluate", "Train"]


def test_paths():
    assert parse_path("a.b['c d'][2]") == [("key", "a"), ("key", "b"), ("key", "c d"), ("index", 2)]
    assert read_path({"a": [{"b": 1}]}, "a[0].b", "test") == 1
    with pytest.raises(ExpressionError, match="test: nothing at 'b'"):
        read_path({"a": 1}, "a.b", "test")


# --- conditions ---------------------------------------------------------------------------

def comparison(kind: str, left, right) -> dict:
    return {"Type": kind, "LeftValue": left, "RightValue": right}


@pytest.mark.parametrize("kind, left, right, expected", [
    ("Equals", {"Get": "Parameters.Epochs"}, 3, True),
    ("Equals", {"Get": "Parameters.Epochs"}, 4, False),
    ("Equals", 1, 1.0, True),
    ("Equals", {"Std:Join": {"On": "", "Values": [{"Get": "Parameters.Epochs"}]}}, 3, True),
    ("Equals", "3", "3.0", False),
    ("Equals", {"Get": "Parameters.Flag"}, True, True),
    ("Equals", {"Get": "Parameters.Flag"}, "TRUE", True),
    ("Equals", {"Get": "Parameters.Flag"}, 1, False),
    ("Equals", {"Get": "Parameters.Status"}, "Pending", True),
    ("GreaterThan", {"Get": "Parameters.Epochs"}, 2, True),
    ("GreaterThan", {"Get": "Parameters.Epochs"}, 3, False),
    ("GreaterThanOrEqualTo", json_get("binary_classification_metrics.accuracy.value"), {"Get": "Parameters.Threshold"}, True),
    ("GreaterThanOrEqualTo", 0.88, {"Get": "Parameters.Threshold"}, True),
    ("GreaterThanOrEqualTo", 0.87, {"Get": "Parameters.Threshold"}, False),
    ("LessThan", "2.5", 3, True),
    ("LessThan", 3, 3, False),
    ("LessThanOrEqualTo", 3, "3", True),
    ("LessThanOrEqualTo", 3.1, 3, False),
])
def test_comparisons(context, kind, left, right, expected):
    assert evaluate_condition(comparison(kind, left, right), context) is expected


def test_in(context):
    query = {"Get": "Parameters.Status"}
    assert evaluate_condition({"Type": "In", "QueryValue": query, "Values": ["Approved", "Pending"]}, context)
    assert not evaluate_condition({"Type": "In", "QueryValue": query, "Values": ["Approved", "Rejected"]}, context)
    assert evaluate_condition({"Type": "In", "QueryValue": {"Get": "Parameters.Epochs"}, "Values": [1, "3"]}, context)


def test_not_and_or_nest(context):
    true, false = comparison("Equals", 1, 1), comparison("Equals", 1, 2)
    assert evaluate_condition({"Type": "Not", "Condition": false}, context)
    assert not evaluate_condition({"Type": "Not", "Condition": true}, context)
    assert evaluate_condition({"Type": "Or", "Conditions": [false, true]}, context)
    assert not evaluate_condition({"Type": "Or", "Conditions": [false, false]}, context)
    nested = {"Type": "Not", "Condition": {"Type": "Or", "Conditions": [false, {"Type": "Not", "Condition": true}]}}
    assert evaluate_condition(nested, context)
    assert evaluate_conditions([true, nested], context) and not evaluate_conditions([true, false], context)


@pytest.mark.parametrize("condition, message", [
    ({"Type": "Between", "LeftValue": 1, "RightValue": 2}, "unknown condition type 'Between'"),
    ({"LeftValue": 1}, "no Type"),
    ({"Type": "Equals", "LeftValue": 1}, "without RightValue"),
    ({"Type": "In", "QueryValue": 1, "Values": 1}, "Values must be a list"),
    ({"Type": "Not", "Expression": {"Type": "Equals", "LeftValue": 1, "RightValue": 1}}, "SageMaker refuses"),
    ({"Type": "Or", "Conditions": []}, "non-empty Conditions"),
    (comparison("GreaterThan", "abc", 1), "needs two numbers"),
    (comparison("LessThan", "a", "b"), "needs two numbers"),
    (comparison("LessThan", True, 1), "needs two numbers"),
    (comparison("Equals", None, 1), "null"),
    (comparison("Equals", [1], [1]), "cannot compare a list"),
])
def test_bad_conditions(context, condition, message):
    with pytest.raises(ConditionError, match=message):
        evaluate_condition(condition, context)


def test_every_condition_is_evaluated_so_errors_are_not_hidden(context):
    conditions = [comparison("Equals", 1, 2), comparison("Equals", {"Get": "Parameters.Missing"}, 1)]
    with pytest.raises(ExpressionError, match="Parameters.Missing"):
        evaluate_conditions(conditions, context)


def test_condition_shapes_are_the_sdks(context):
    """The JSON the v3 SDK emits for each condition type evaluates here (guards against drift)."""
    from pipeline.definition.offline import prepare_sdk_environment
    from pipeline.settings import Settings

    prepare_sdk_environment(Settings())
    from sagemaker.core.workflow import conditions as sdk
    from sagemaker.core.workflow.parameters import ParameterInteger, ParameterString

    epochs, status = ParameterInteger("Epochs", default_value=8), ParameterString("Status", default_value="Pending")
    built = [sdk.ConditionEquals(epochs, 3), sdk.ConditionGreaterThan(epochs, 2), sdk.ConditionGreaterThanOrEqualTo(epochs, 3),
             sdk.ConditionLessThan(epochs, 4), sdk.ConditionLessThanOrEqualTo(2, epochs), sdk.ConditionIn(status, ["a", "Pending"]),
             sdk.ConditionNot(sdk.ConditionEquals(status, "b")),
             sdk.ConditionOr([sdk.ConditionEquals(epochs, 9), sdk.ConditionNot(sdk.ConditionIn(epochs, [1, 2]))])]
    requests = json.loads(json.dumps([c.to_request() for c in built], default=lambda variable: variable.expr))
    assert [r["Type"] for r in requests] == ["Equals", "GreaterThan", "GreaterThanOrEqualTo", "LessThan",
                                             "LessThanOrEqualTo", "In", "Not", "Or"]
    assert all(evaluate_condition(r, context) for r in requests)
    requests[0]["RightValue"] = 4
    assert not evaluate_conditions(requests, context)


# --- the real definition ------------------------------------------------------------------

@pytest.fixture(scope="module")
def definition() -> dict:
    from pipeline.definition import definition_json

    with warnings.catch_warnings():  # the SDK's own deprecation notices, not ours
        warnings.simplefilter("ignore")
        return json.loads(definition_json())


def steps_by_name(definition: dict) -> dict:
    """Every step by name, those in the gates' branches (CheckSentenceAccuracy sits in CheckAccuracy's) too."""
    steps: dict = {}

    def add(found: list) -> None:
        for step in found:
            steps[step["Name"]] = step
            if step["Type"] == "Condition":
                add(step["Arguments"]["IfSteps"] + step["Arguments"]["ElseSteps"])

    add(definition["Steps"])
    return steps


def real_context(definition: dict, given: dict | None = None, accuracy: float = 0.9,
                 sentences: tuple[int, float] = (0, 0.0), reviews: int = 100) -> ExecutionContext:
    """An execution whose Evaluate step measured ``accuracy`` on ``reviews`` reviews, and (texts, accuracy) on sentences."""
    report = {"binary_classification_metrics": {"accuracy": {"value": accuracy}},
              "gate": {"reviews": {"texts": reviews, "accuracy": accuracy},
                       "sentences": {"texts": sentences[0], "accuracy": sentences[1]}}}
    return ExecutionContext(
        parameters=parameter_values(definition, given),
        execution=execution_variables("sentiment-mlops", "exec0001", START),
        read_property_file=Reader({("Evaluate", "EvaluationReport"): report}),
    )


def contains_expression(value) -> bool:
    return any(True for _ in iter_expressions(value))


def test_real_train_arguments_resolve_to_concrete_uris_and_string_hyperparameters(definition):
    steps = steps_by_name(definition)
    context = real_context(definition, {"Epochs": "2"})
    preprocess = resolve(steps["Preprocess"]["Arguments"], context)
    assert not contains_expression(preprocess)
    assert preprocess["AppSpecification"]["ContainerArguments"][-9:] == ["1000", "--vocab-size", "20000",
                                                                          "--embedding-dim", "128",
                                                                          "--data-version", "",
                                                                          "--resource-config",
                                                                          "/opt/ml/config/resourceconfig.json"]
    context = context.with_step_properties("Preprocess", {**preprocess, "ProcessingJobName": "p-1"})
    train = resolve(steps["Train"]["Arguments"], context)
    assert not contains_expression(train)
    uris = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in train["InputDataConfig"]}
    assert set(uris) == {"train", "validation"}
    for channel, uri in uris.items():
        assert uri.startswith("s3://") and uri.endswith(f"/exec0001/Preprocess/{channel}")
    hyperparameters = train["HyperParameters"]
    assert all(isinstance(v, str) for v in hyperparameters.values())
    assert hyperparameters["epochs"] == "2" and hyperparameters["profile"] == "gpu"
    assert train["ResourceConfig"]["InstanceCount"] == 1
    assert train["CheckpointConfig"]["S3Uri"].endswith("/checkpoints/gpu/epochs-2/")  # per profile, not per execution


def test_real_fail_message_names_the_accuracy_and_the_threshold(definition):
    fail = steps_by_name(definition)["Fail"]
    message = resolve(fail["Arguments"], real_context(definition, {"AccuracyThreshold": "0.95"}, 0.8125))["ErrorMessage"]
    assert message == "Test accuracy on reviews 0.8125 is below the threshold 0.95 - the model was not registered."
    fail = steps_by_name(definition)["FailSentences"]
    context = real_context(definition, {"SentenceAccuracyThreshold": "0.85"}, 0.9, sentences=(1821, 0.8125))
    assert resolve(fail["Arguments"], context)["ErrorMessage"] == (
        "Test accuracy on sentences 0.8125 is below the threshold 0.85 - the model was not registered.")


def test_real_check_accuracy_condition(definition):
    check = steps_by_name(definition)["CheckAccuracy"]
    assert condition_step_outcome(check, real_context(definition, {"AccuracyThreshold": "0.88"}, 0.9)) is True
    assert condition_step_outcome(check, real_context(definition, {"AccuracyThreshold": "1.0"}, 0.9)) is False
    assert condition_step_outcome(check, real_context(definition, None, 0.88)) is True  # the default, reached exactly
    # A run on sentences alone has no test reviews: the reviews' gate holds nothing against its threshold.
    assert condition_step_outcome(check, real_context(definition, {"AccuracyThreshold": "1.0"}, 0.0, (1821, 0.9), 0)) is True


@pytest.mark.parametrize("sentences, threshold, passes", [
    ((0, 0.0), "0.82", True),          # no sentences tested: nothing to hold against the threshold
    ((1821, 0.85), "0.82", True),
    ((1821, 0.82), None, True),        # the default, reached exactly
    ((1821, 0.80), "0.82", False),
    ((1821, 0.0), "0.0", True),
])
def test_real_check_sentence_accuracy_condition(definition, sentences, threshold, passes):
    check = steps_by_name(definition)["CheckSentenceAccuracy"]
    given = None if threshold is None else {"SentenceAccuracyThreshold": threshold}
    assert condition_step_outcome(check, real_context(definition, given, 0.9, sentences)) is passes


def test_real_register_arguments_resolve(definition):
    steps = steps_by_name(definition)
    context = real_context(definition).with_step_properties("Train", TRAIN_PROPERTIES).with_step_properties(
        "Evaluate", {"ProcessingOutputConfig": {"Outputs": [{"OutputName": "evaluation", "S3Output": {"S3Uri": "s3://b/e"}}]}})
    register = resolve(steps["Register"]["Arguments"], context)
    assert not contains_expression(register)
    assert register["ModelApprovalStatus"] == "PendingManualApproval"
    assert register["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"] == "s3://b/e/evaluation.json"
    assert register["InferenceSpecification"]["Containers"][0]["ModelDataUrl"] == TRAIN_PROPERTIES["ModelArtifacts"]["S3ModelArtifacts"]
