"""The local runtime's schedule: dependencies, branches, order, errors, and the real definition."""
from __future__ import annotations

import json
import warnings

import pytest

from pipeline.local.engine.graph import GraphError, Plan, build_plan


def step(name: str, depends_on: list | None = None, arguments: dict | None = None, type_: str = "Processing") -> dict:
    result = {"Name": name, "Type": type_, "Arguments": arguments or {}}
    if depends_on is not None:
        result["DependsOn"] = depends_on
    return result


def get(step_name: str, path: str = "ProcessingOutputConfig.Outputs['x'].S3Output.S3Uri") -> dict:
    return {"Get": f"Steps.{step_name}.{path}"}


def condition(name: str, if_steps: list, else_steps: list, left=None) -> dict:
    left = left if left is not None else 1
    return step(name, type_="Condition", arguments={
        "Conditions": [{"Type": "Equals", "LeftValue": left, "RightValue": 1}],
        "IfSteps": if_steps, "ElseSteps": else_steps})


def run_all(plan: Plan, outcomes: dict) -> list[str]:
    """Drive the plan as an executor would, one step at a time; return what ran."""
    done: list[str] = []
    known: dict = {}
    while plan.ready_steps(done, known):
        name = plan.ready_steps(done, known)[0]
        done.append(name)
        if plan.step(name).type == "Condition":
            known[name] = outcomes[name]
    assert plan.remaining(done, known) == ()
    return done


def test_dependencies_come_from_depends_on_and_references():
    plan = build_plan({"Steps": [
        step("C", arguments={"In": {"Std:Join": {"On": "/", "Values": [get("B"), "x"]}}}),
        step("B", depends_on=["A"]),
        step("A"),
        step("D", arguments={"Report": {"Std:JsonGet": {"PropertyFile": {"Get": "Steps.C.PropertyFiles.R"}, "Path": "a"}}}),
    ]})
    assert plan.step("C").dependencies == ("B",)
    assert plan.step("D").dependencies == ("C",)
    assert plan.order == ("A", "B", "C", "D")


def test_ties_follow_definition_order():
    plan = build_plan({"Steps": [step("Z"), step("Y"), step("X", depends_on=["Z"]), step("W")]})
    assert plan.order == ("Z", "Y", "X", "W")
    assert plan.ready_steps([], {}) == ("Z", "Y", "W")
    assert plan.ready_steps([], {}, started=["Z"]) == ("Y", "W")
    assert plan.ready_steps(["Z"], {}) == ("Y", "X", "W")


def test_branch_steps_wait_for_their_condition_and_its_outcome():
    plan = build_plan({"Steps": [step("A"), condition("If", [step("Yes", arguments={"u": get("A")})], [step("No")],
                                                      left=get("A", "Outcome"))]})
    assert plan.step("If").dependencies == ("A",)
    assert plan.step("Yes").dependencies == ("If", "A") and plan.step("Yes").branch is True
    assert plan.step("No").condition == "If" and plan.step("No").branch is False
    assert plan.ready_steps(["A"], {}) == ("If",)
    assert plan.ready_steps(["A", "If"], {"If": True}) == ("Yes",)
    assert plan.skipped_steps(["A", "If"], {"If": True}) == ("No",)
    assert plan.ready_steps(["A", "If"], {"If": False}) == ("No",)


def test_skipping_propagates_to_dependents_and_nested_conditions():
    plan = build_plan({"Steps": [
        condition("Outer", [condition("Inner", [step("InnerYes")], [step("InnerNo")])], [step("OuterNo")]),
        step("After", depends_on=["InnerYes"]),
        step("Independent"),
    ]})
    assert plan.order == ("Outer", "Inner", "InnerYes", "InnerNo", "OuterNo", "After", "Independent")
    assert run_all(plan, {"Outer": False}) == ["Outer", "OuterNo", "Independent"]
    assert plan.skipped_steps(["Outer"], {"Outer": False}) == ("Inner", "InnerYes", "InnerNo", "After")
    assert run_all(plan, {"Outer": True, "Inner": True}) == ["Outer", "Inner", "InnerYes", "After", "Independent"]
    assert run_all(plan, {"Outer": True, "Inner": False}) == ["Outer", "Inner", "InnerNo", "Independent"]


def test_arguments_of_a_condition_exclude_its_branches():
    plan = build_plan({"Steps": [step("A"), condition("If", [step("Yes", arguments={"u": get("A")})], [])]})
    assert "IfSteps" not in plan.step("If").arguments() and "Conditions" in plan.step("If").arguments()
    assert plan.step("If").dependencies == ()


@pytest.mark.parametrize("steps, message", [
    ([step("A"), step("A")], "duplicate step name 'A'"),
    ([condition("If", [step("A")], []), step("A")], "duplicate step name 'A'"),
    ([step("A", depends_on=["Ghost"])], "unknown step 'Ghost'"),
    ([step("A", arguments={"x": get("Ghost")})], "unknown step 'Ghost'"),
    ([step("A", depends_on=["A"])], "depends on itself"),
    ([step("A", depends_on=["C"]), step("B", depends_on=["A"]), step("C", depends_on=["B"])],
     "dependency cycle: A -> C -> B -> A"),
    ([condition("If", [step("Yes")], [], left=get("Yes"))], "dependency cycle: If -> Yes -> If"),
    ([{**step("A"), "DependsOn": "B"}, step("B")], "DependsOn must be a list"),
    ([{"Type": "Processing"}], "no Name"),
    ([step("A", arguments={"x": {"Get": "Steps.A"}})], "malformed step reference"),
])
def test_errors(steps, message):
    with pytest.raises(GraphError, match=message):
        build_plan({"Steps": steps})


def test_progress_errors():
    plan = build_plan({"Steps": [step("A"), condition("If", [step("Yes")], [])]})
    with pytest.raises(GraphError, match="outcome was not given"):
        plan.ready_steps(["A", "If"], {})
    with pytest.raises(GraphError, match="not a Condition step"):
        plan.ready_steps(["A"], {"A": True})
    with pytest.raises(GraphError, match="unknown step 'B'"):
        plan.ready_steps(["B"], {})
    with pytest.raises(GraphError, match="needs a Steps list"):
        build_plan({})


# --- the real definition ------------------------------------------------------------------

@pytest.fixture(scope="module")
def plan() -> Plan:
    from pipeline.definition import definition_json

    with warnings.catch_warnings():  # the SDK's own deprecation notices, not ours
        warnings.simplefilter("ignore")
        return build_plan(json.loads(definition_json()))


def test_real_order(plan):
    assert plan.order == ("Preprocess", "Train", "CreateModel", "Transform", "Evaluate", "CheckAccuracy",
                          "CheckSentenceAccuracy", "Register", "FailSentences", "Fail")
    assert plan.step("Train").dependencies == ("Preprocess",)
    assert plan.step("CreateModel").dependencies == ("Train",)
    assert set(plan.step("Transform").dependencies) == {"CreateModel", "Preprocess"}
    assert set(plan.step("Evaluate").dependencies) == {"Train", "Preprocess", "Transform"}
    assert plan.step("CheckAccuracy").dependencies == ("Evaluate",)


def test_real_register_and_fail_only_after_the_condition_chooses(plan):
    done = ["Preprocess", "Train", "CreateModel", "Transform", "Evaluate"]
    assert plan.ready_steps([], {}) == ("Preprocess",)
    assert plan.ready_steps(["Preprocess", "Train"], {}) == ("CreateModel",)
    assert plan.ready_steps(done, {}) == ("CheckAccuracy",)
    done.append("CheckAccuracy")
    assert plan.ready_steps(done, {"CheckAccuracy": True}) == ("CheckSentenceAccuracy",)
    assert plan.ready_steps(done, {"CheckAccuracy": False}) == ("Fail",)
    done.append("CheckSentenceAccuracy")
    assert plan.ready_steps(done, {"CheckAccuracy": True, "CheckSentenceAccuracy": True}) == ("Register",)
    assert plan.ready_steps(done, {"CheckAccuracy": True, "CheckSentenceAccuracy": False}) == ("FailSentences",)
    gates = ["Preprocess", "Train", "CreateModel", "Transform", "Evaluate", "CheckAccuracy"]
    assert run_all(plan, {"CheckAccuracy": True, "CheckSentenceAccuracy": True}) == [*gates, "CheckSentenceAccuracy", "Register"]
    assert run_all(plan, {"CheckAccuracy": True, "CheckSentenceAccuracy": False}) == [
        *gates, "CheckSentenceAccuracy", "FailSentences"]
    assert run_all(plan, {"CheckAccuracy": False}) == [*gates, "Fail"]
