"""What ``sentiment-mlops`` prints for people (``--json`` prints the result object instead)."""
from __future__ import annotations

import sys
from datetime import date, datetime


def print_summary(command: str, result: dict) -> None:
    if command == "aws":
        _print_aws(result)
    elif command == "run" or (command == "executions" and isinstance(result, dict)):
        _print_execution(result)
    elif command == "executions":
        for row in result:
            print(f"  {row['execution_id']}  {row['status']:<10} {row['started']}  {row['failure_reason'] or ''}")
    elif command == "registry":
        rows = result if isinstance(result, list) else [result]
        if not rows:
            print("no model versions registered")
        for row in rows:
            accuracy = "—" if row.get("accuracy") is None else f"{row['accuracy']:.4f}"
            print(f"  version {row['version']:<4} {row['status']:<22} accuracy {accuracy}  {row.get('created', '')}")
            for deployment in row.get("deployment") or []:
                print(f"  {deployment.get('reason') or _deployment_line(deployment)}")
            if row.get("deployment_error"):
                print(f"  deployment failed: {row['deployment_error']} (retry with: sentiment-mlops events deliver)")
    elif command == "events":
        for row in result or [{"event": "no pending events", "status": ""}]:
            print(f"  {row['event']}: {row.get('reason') or _deployment_line(row)}")
    elif command == "endpoints":
        rows = result if isinstance(result, list) else [result]
        for row in rows:
            if "deleted" in row:
                print(f"deleted endpoint {row['deleted']}")
                continue
            print(f"  {row['EndpointName']:<20} {row['EndpointStatus']:<10} {row['EndpointConfigName']:<36} "
                  f"{row.get('Url') or ''}  {row.get('FailureReason') or ''}")
        if not rows:
            print("no endpoints")
    elif command == "serve":
        print(f"stopped serving {result['path']}")
    elif command == "api":
        print(f"stopped {result['url']}")
    elif command == "definition":
        if "definition" in result:
            sys.stdout.write(result["definition"])
        else:
            print(result["path"])
    else:
        print(result["path"])


def _print_execution(result: dict) -> None:
    print(f"execution {result['execution_id']}: {result['status']}")
    for name, step in result["steps"].items():
        seconds = "" if step["seconds"] is None else f"{step['seconds']:>7.1f}s"
        note = f"  (cached: the result of execution {step['cached_from']})" if step.get("cached_from") else ""
        if step.get("attempts", 0) > 1:
            note += f"  ({step['attempts']} attempts)"
        print(f"  {name:<14} {step['status']:<10} {seconds}{note}")
    if result["accuracy"] is not None:
        print(f"  test accuracy {result['accuracy']:.4f} (threshold {result['threshold']})")
    if result["model_package_version"] is not None:
        print(f"  registered model version {result['model_package_version']} (approve it: sentiment-mlops registry approve "
              f"{result['model_package_version']})")
    if result["failure_reason"]:
        print(f"  {result['failure_reason']}")


def _deployment_line(result: dict) -> str:
    return (f"endpoint {result['endpoint']} {result['status']}: version {result['version']} "
            f"({result['endpoint_config']})")


def _print_aws(result) -> None:
    if isinstance(result, list):
        for row in result:
            print(f"  {row['arn']}  {row['status']:<10} {as_text(row['started'])}  {row['failure_reason'] or ''}")
        if not result:
            print("no executions")
    elif "parameter_overrides" in result:
        print(result["parameter_overrides"])
    elif "teardown" in result:
        done = result["teardown"] == "done"
        print("deleted:" if done else "would delete (run again with --yes):")
        for what in result["deleted" if done else "would_delete"] or ["nothing: none of it exists"]:
            print(f"  {what}")
        print("kept, and what each costs while idle:")
        for what, cost in result["kept"].items():
            print(f"  {what}: {cost}")
    elif "api_url" in result:
        print(f"website uploaded to s3://{result['bucket']} ({', '.join(result['uploaded'])}); its API: {result['api_url']}")
    elif "input_data_uri" in result:
        print(f"{result['files']} file(s), {result['bytes']} bytes, uploaded to {result['input_data_uri']}; "
              f"{result['trigger']} starts a run where the template's trigger is deployed")
    elif "pipeline_arn" in result and "uploaded" in result:
        print(f"pipeline {result['pipeline_arn']} (bundles uploaded: {len(result['uploaded'])}, "
              f"already there: {len(result['already_uploaded'])})")
    else:
        print(f"execution {result['arn']}: {result['status']}")
        for step in result.get("steps") or []:
            print(f"  {step['name']:<14} {step['status']:<10} {step['failure_reason'] or ''}")
        if result.get("steps_note"):
            print(f"  ({result['steps_note']})")
        if result.get("failure_reason"):
            print(f"  {result['failure_reason']}")


def as_text(value) -> str:
    """Times from boto3 are datetimes: ISO 8601 in the output, JSON included."""
    return value.isoformat() if isinstance(value, (datetime, date)) else str(value)
