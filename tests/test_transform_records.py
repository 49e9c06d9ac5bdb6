"""The pure parts of local Batch Transform, checked against what SageMaker documents.

A filter, a batch or a joined line that differs from SageMaker's is a job that passes locally and
fails (or writes something else) in the cloud, so these pin down the JSONPath subset, the record
reading and packing, DataProcessing's joins and filters, and the request checks with their
defaults. Everything here is in memory: no servers, no model, no network.
"""
from __future__ import annotations

import io
import json

import pytest

from pipeline.local.services.transform.jsonpath import JsonPathError, compile_path
from pipeline.local.services.transform.records import (
    Assembly,
    DataProcessing,
    Prepared,
    RecordError,
    batches,
    prepare,
    read_records,
    request_body,
)
from pipeline.local.services.transform.spec import MEGABYTE, RequestError, parse_request, resolve

RECORD = {"id": 7, "features": [0.5, 1.5], "meta": {"lang": "en"}, "SageMakerOutput": 0.9}
ARRAY = [10, 11, 12, 13, 14, 15, 16]
CONTAINER = {"BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 5, "MaxConcurrentTransforms": 2}


def select(expression: str, record):
    return compile_path(expression).apply(record)


def read(data: bytes, split_lines: bool = True, limit: int = 10) -> list[bytes]:
    return list(read_records(io.BytesIO(data), split_lines, limit, "s3://b/in/a.jsonl"))


def processing(**request: str) -> DataProcessing:
    return DataProcessing.parse(request)


def raw(*records: bytes) -> list[Prepared]:
    """Records sent as read (no InputFilter)."""
    return [Prepared(r, r) for r in records]


def sent(batch: list[Prepared]) -> list[bytes]:
    return [record.sent for record in batch]


def packed(records: list[bytes], multi: bool, limit: int) -> list[list[bytes]]:
    return [sent(batch) for batch in batches(raw(*records), multi, limit)]


def body(batch: list[bytes], proc: DataProcessing, fmt: str, where: str, limit: int = 1000) -> bytes:
    return request_body(list(prepare(batch, proc, fmt, where, limit)))


def assembly(line_per_answer: bool = True, input_format: str | None = "json", **request: str) -> Assembly:
    return Assembly(line_per_answer, processing(**request), input_format)


def lines(*values) -> list[bytes]:
    return [json.dumps(value).encode() for value in values]


def request(**changes) -> dict:
    """A minimal valid CreateTransformJob request, with top-level members replaced or added."""
    base = {
        "TransformJobName": "reviews-batch-1",
        "ModelName": "sentiment",
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://b/in/"}},
            "ContentType": "application/jsonlines",
            "SplitType": "Line",
        },
        "TransformOutput": {"S3OutputPath": "s3://b/out/"},
        "TransformResources": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1},
    }
    return {**base, **changes}


def with_input(**changes) -> dict:
    base = request()
    return request(TransformInput={**base["TransformInput"], **changes})


# JSONPath: SageMaker's operators


@pytest.mark.parametrize(("expression", "expected"), [
    ("$", RECORD),
    ("$.features", [0.5, 1.5]),
    ("$.meta.lang", "en"),
    ("$.*", RECORD),
    ("$[*]", RECORD),
    ("$['id']", 7),
    ("$['id','SageMakerOutput']", {"id": 7, "SageMakerOutput": 0.9}),
    ("$[ 'id' , 'features' ]", {"id": 7, "features": [0.5, 1.5]}),
    ("$.features[1]", 1.5),
    ("$.features[-1]", 1.5),
])
def test_jsonpath_on_an_object(expression, expected):
    assert select(expression, RECORD) == expected


@pytest.mark.parametrize(("expression", "expected"), [
    ("$[1]", 11),
    ("$[-1]", 16),
    ("$[1,3,5]", [11, 13, 15]),
    ("$[2:5]", [12, 13, 14]),
    ("$[:5]", [10, 11, 12, 13, 14]),
    ("$[2:]", [12, 13, 14, 15, 16]),
    ("$[1:]", [11, 12, 13, 14, 15, 16]),
    ("$[0,5:]", [10, 15, 16]),
    ("$[-2:]", [15, 16]),
])
def test_jsonpath_on_an_array(expression, expected):
    assert select(expression, ARRAY) == expected


def test_identity_is_only_dollar_and_wildcards():
    assert compile_path("$").is_identity
    assert compile_path("$[*]").is_identity
    assert not compile_path("$.features").is_identity
    assert not compile_path("$[1:]").is_identity


@pytest.mark.parametrize(("expression", "reason"), [
    ("$..id", "recursive descent"),
    ("$[?(@.id > 1)]", "filters and scripts"),
    ("$[(@.length-1)]", "filters and scripts"),
    ("$.a['b.c']", "no nesting"),
    ("$['a[0]']", "no nesting"),
    ("id", "does not start with $"),
    ("$[1:2:3]", "a slice is [start:end]"),
    ("$[x]", "neither a quoted name, an index nor a slice"),
    ("$['a', 1]", "neither a quoted name, an index nor a slice"),
    ("$['id'", "not closed"),
    ("$ id", "cannot read it"),
    ("$." + "a" * 62, "at most 63"),
])
def test_jsonpath_refuses_what_sagemaker_refuses(expression, reason):
    with pytest.raises(JsonPathError, match=reason.replace("[", r"\[").replace("$", r"\$")):
        compile_path(expression)


def test_jsonpath_takes_63_characters():
    expression = "$." + "a" * 61
    assert len(expression) == 63
    assert select(expression, {"a" * 61: 1}) == 1


@pytest.mark.parametrize(("expression", "record", "reason"), [
    ("$.missing", RECORD, "has no 'missing'"),
    ("$['id','nope']", RECORD, "has no 'nope'"),
    ("$[7]", ARRAY, "index 7 is outside the record's 7 elements"),
    ("$[-8]", ARRAY, "index -8 is outside"),
    ("$[0,9]", ARRAY, "index 9 is outside"),
    ("$.id", ARRAY, "of a array, not of an object"),
    ("$[0]", RECORD, "of a object, not of an array"),
    ("$.id.x", RECORD, "of a number, not of an object"),
])
def test_jsonpath_that_does_not_fit_the_record(expression, record, reason):
    with pytest.raises(JsonPathError, match=reason.replace("[", r"\[")):
        select(expression, record)


# read_records: SplitType Line and None


def test_line_split_skips_blank_lines_and_handles_crlf():
    assert read(b'{"a":1}\r\n\r\n  \n{"a":2}\n{"a":3}') == [b'{"a":1}', b'{"a":2}', b'{"a":3}']


def test_line_split_takes_a_line_exactly_at_the_limit():
    assert read(b"x" * 10 + b"\r\n" + b"y\n") == [b"x" * 10, b"y"]


def test_line_over_the_limit_names_its_line_and_reads_no_further():
    stream = io.BytesIO(b"ok\n\n" + b"x" * 100 + b"\n" + b"tail\n")
    records = read_records(stream, True, 10, "s3://b/in/a.jsonl")
    assert next(records) == b"ok"
    with pytest.raises(RecordError, match=r"s3://b/in/a.jsonl line 3 is longer than MaxPayloadInMB \(10 bytes\)"):
        next(records)
    assert stream.tell() == len(b"ok\n\n") + 12  # the record and room for its "\r\n", not the whole line


def test_no_split_is_the_whole_object():
    assert read(b'{"a":1}\n{"a":2}\n', split_lines=False, limit=16) == [b'{"a":1}\n{"a":2}\n']
    assert read(b"", split_lines=False) == []


def test_no_split_over_the_limit_raises_and_reads_no_further():
    stream = io.BytesIO(b"z" * 100)
    with pytest.raises(RecordError, match=r"larger than MaxPayloadInMB \(10 bytes\) and SplitType is None"):
        list(read_records(stream, False, 10, "s3://b/in/a.bin"))
    assert stream.tell() == 11


# batches: SingleRecord and MultiRecord


def test_single_record_is_one_per_batch():
    assert packed([b"a", b"bb", b"c"], False, 1000) == [[b"a"], [b"bb"], [b"c"]]


def test_multi_record_packs_up_to_exactly_the_limit_with_separators():
    records = [b"aaa", b"bbb", b"cc", b"d"]
    # "aaa\nbbb" is 7 bytes; "\ncc" would make 10.
    assert packed(records, True, 7) == [[b"aaa", b"bbb"], [b"cc", b"d"]]
    # "aaa\nbbb\ncc" is exactly 10; "\nd" would make 12.
    assert packed(records, True, 10) == [[b"aaa", b"bbb", b"cc"], [b"d"]]
    # "aaa\nbbb" is 7 > 6, but "bbb\ncc" is exactly 6.
    assert packed(records, True, 6) == [[b"aaa"], [b"bbb", b"cc"], [b"d"]]


def test_a_record_equal_to_the_limit_is_its_own_batch():
    assert packed([b"a", b"x" * 5, b"b"], True, 5) == [[b"a"], [b"x" * 5], [b"b"]]


def test_no_records_no_batches():
    assert packed([], True, 10) == []


# prepare and request_body: InputFilter, and the payload limit on what is sent


def test_identity_sends_the_records_as_read():
    batch = [b'{"review": "good", "id": 1}', b"not even json"]
    assert body(batch, processing(), "json", "a.jsonl") == b'{"review": "good", "id": 1}\nnot even json'


def test_input_filter_on_json_lines():
    batch = lines({"review": "good", "id": 1}, {"review": "caf\u00e9", "id": 2})
    assert body(batch, processing(InputFilter="$.review"), "json", "a.jsonl") == b'"good"\n"caf\\u00e9"'


def test_input_filter_on_csv():
    batch = [b"1,great film,x", b'2,"bad, really",y']
    assert body(batch, processing(InputFilter="$[0]"), "csv", "a.csv") == b"1\n2"
    assert body(batch, processing(InputFilter="$[1:]"), "csv", "a.csv") == b'great film,x\n"bad, really",y'


def test_input_filter_that_misses_names_the_record():
    batch = lines({"review": "good"}, {"text": "bad"})
    with pytest.raises(RecordError, match=r"a.jsonl record 2: InputFilter .* has no 'review'"):
        body(batch, processing(InputFilter="$.review"), "json", "a.jsonl")


def test_the_payload_limit_is_on_the_record_as_sent():
    """Escaped non-ASCII text is longer sent than read: the limit is on what is sent."""
    record = json.dumps({"review": "\u00e9" * 10}, ensure_ascii=False).encode()  # 20 bytes of text read
    assert body([record], processing(InputFilter="$.review"), "json", "a.jsonl", limit=62) == \
        json.dumps("\u00e9" * 10).encode()  # 62 bytes sent
    with pytest.raises(RecordError, match=r"a.jsonl record 1 is 62 bytes as sent, over MaxPayloadInMB \(61 bytes\)"):
        body([record], processing(InputFilter="$.review"), "json", "a.jsonl", limit=61)


def test_multi_record_packs_by_the_size_sent():
    records = list(prepare([json.dumps({"r": "a" * 10}).encode()] * 3, processing(InputFilter="$.r"), "json", "w", 100))
    assert [len(b) for b in batches(records, True, 25)] == [2, 1]  # "aaaaaaaaaa" sent is 12 bytes: 12+1+12 = 25


def test_input_filter_on_a_record_that_is_not_json():
    with pytest.raises(RecordError, match="a.jsonl record 1 is not valid JSON"):
        body([b"{oops"], processing(InputFilter="$.review"), "json", "a.jsonl")


# Assembly.output: AssembleWith, JoinSource, OutputFilter


def test_passthrough_adds_a_newline_only_with_assemble_line_and_only_when_missing():
    batch = [b"r1", b"r2"]
    assert assembly().output(raw(*batch), b"a\nb", "text/plain", "w") == b"a\nb\n"
    assert assembly().output(raw(*batch), b"a\nb\n", "text/plain", "w") == b"a\nb\n"
    assert assembly(line_per_answer=False).output(raw(*batch), b"a\nb", "text/plain", "w") == b"a\nb"


def test_join_on_json_objects_adds_sagemaker_output():
    batch = lines({"id": 1, "review": "good"}, {"id": 2, "review": "bad"})
    out = assembly(JoinSource="Input").output(raw(*batch), b'{"label":1}\n{"label":0}\n', "application/jsonlines", "w")
    assert out == b'{"id":1,"review":"good","SageMakerOutput":{"label":1}}\n' \
                  b'{"id":2,"review":"bad","SageMakerOutput":{"label":0}}\n'


def test_join_on_json_that_is_not_an_object_wraps_input_and_output():
    batch = lines([1, 2], "text")
    out = assembly(JoinSource="Input").output(raw(*batch), b"0.5\n0.25", "application/jsonlines", "w")
    assert out.splitlines() == [b'{"SageMakerInput":[1,2],"SageMakerOutput":0.5}',
                                b'{"SageMakerInput":"text","SageMakerOutput":0.25}']


def test_join_on_csv_appends_the_answer_fields():
    out = assembly(input_format="csv", JoinSource="Input").output(raw(b"1,good", b'2,"so, so"'), b"0.9\n0.1,x\n",
                                                                  "text/csv", "w")
    assert out == b'1,good,0.9\n2,"so, so",0.1,x\n'


def test_join_with_assemble_none_writes_the_records_back_to_back():
    out = assembly(line_per_answer=False, JoinSource="Input").output(raw(*lines({"id": 1})), b"1", "application/json", "w")
    assert out == b'{"id":1,"SageMakerOutput":1}'


def test_output_filter_after_join():
    batch = lines({"id": 1, "label": "pos", "review": "good"})
    out = assembly(JoinSource="Input", OutputFilter="$['label','SageMakerOutput']").output(
        raw(*batch), b'{"p":0.9}\n', "application/json", "w")
    assert json.loads(out) == {"label": "pos", "SageMakerOutput": {"p": 0.9}}


def test_output_filter_that_misses_names_the_record():
    with pytest.raises(RecordError, match=r"w record 1: OutputFilter .* has no 'label'"):
        assembly(JoinSource="Input", OutputFilter="$.label").output(raw(*lines({"id": 1})), b"1", "application/json", "w")


def test_answer_line_count_must_match_the_records():
    batch = lines({"id": 1}, {"id": 2}, {"id": 3})
    with pytest.raises(RecordError, match="w: the model answered 2 lines for 3 records; joining or filtering needs "
                                          "one answer line per record"):
        assembly(JoinSource="Input").output(raw(*batch), b"1\n\n2\n", "application/jsonlines", "w")


def test_a_non_json_answer_line_declared_json_fails_the_join():
    batch = lines({"id": 1}, {"id": 2})
    with pytest.raises(RecordError, match="w record 2's answer is not valid JSON"):
        assembly(JoinSource="Input").output(raw(*batch), b"1\npositive\n", "application/jsonlines", "w")


def test_an_answer_of_another_type_is_joined_as_text():
    out = assembly(JoinSource="Input").output(raw(*lines({"id": 1})), b"positive\n", "text/plain", "w")
    assert json.loads(out) == {"id": 1, "SageMakerOutput": "positive"}


def test_output_filter_without_join_needs_a_json_or_csv_answer():
    with pytest.raises(RecordError, match="OutputFilter needs an answer in JSON or CSV"):
        assembly(OutputFilter="$.label").output(raw(*lines({"id": 1})), b"positive", "text/plain", "w")


# spec.parse_request: CreateTransformJob's checks


def test_a_minimal_request():
    spec = parse_request(request())
    assert (spec.name, spec.model_name, spec.input_uri, spec.output_uri) == (
        "reviews-batch-1", "sentiment", "s3://b/in/", "s3://b/out/")
    assert spec.split_lines and not spec.gzip and not spec.line_per_answer
    assert spec.input_format == "json" and spec.processing.passthrough
    assert (spec.batch_strategy, spec.max_payload_mb, spec.max_concurrent) == (None, None, None)


@pytest.mark.parametrize(("changes", "reason"), [
    ({"TransformJobName": "bad_name"}, "TransformJobName 'bad_name' must be 1 to 63"),
    ({"TransformJobName": "-starts-with-hyphen"}, "must be 1 to 63"),
    ({"TransformJobName": "a" + "-a" * 40}, "must be 1 to 63"),  # the pattern alone takes 81 characters
    ({"MaxPayloadInMB": 101}, "MaxPayloadInMB must be 0 to 100, not 101"),
    ({"MaxPayloadInMB": 0}, "MaxPayloadInMB 0 .* is not run locally"),
    ({"BatchStrategy": "MultiRecord", "TransformInput": with_input(SplitType="None")["TransformInput"]},
     "MultiRecord needs SplitType Line"),
    ({"Environment": {f"K{n}": "v" for n in range(17)}}, "Environment has 17 entries; SageMaker takes at most 16"),
    ({"DataProcessing": {"InputFilter": "$." + "a" * 62}}, "DataProcessing: .* has 64 characters"),
    ({"DataProcessing": {"InputFilter": "$..review"}}, "DataProcessing: .* recursive descent"),
    ({"DataProcessing": {"JoinSource": "Input"}, "TransformInput": with_input(ContentType="text/plain")["TransformInput"]},
     "DataProcessing needs JSON or CSV records; ContentType is 'text/plain'"),
    ({"TransformInput": with_input(SplitType="RecordIO")["TransformInput"]}, "SplitType RecordIO is not run locally"),
])
def test_requests_sagemaker_or_this_runtime_refuses(changes, reason):
    with pytest.raises(RequestError, match=reason):
        parse_request(request(**changes))


def test_a_manifest_input_is_refused():
    manifest = request()
    manifest["TransformInput"]["DataSource"]["S3DataSource"]["S3DataType"] = "ManifestFile"
    with pytest.raises(RequestError, match="S3DataType ManifestFile is not run locally"):
        parse_request(manifest)


def test_a_missing_required_member_is_botocores_report():
    incomplete = request()
    del incomplete["ModelName"]
    with pytest.raises(RequestError, match='Missing required parameter in input: "ModelName"'):
        parse_request(incomplete)


def test_a_wrong_type_is_botocores_report():
    with pytest.raises(RequestError, match="Invalid type for parameter MaxPayloadInMB"):
        parse_request(request(MaxPayloadInMB="6"))


def test_a_name_of_63_characters_is_taken():
    assert parse_request(request(TransformJobName="a" * 63)).name == "a" * 63


def test_data_processing_with_text_plain_passthrough_is_taken():
    spec = parse_request(request(**with_input(ContentType="text/plain"), DataProcessing={"InputFilter": "$"}))
    assert spec.processing.passthrough and spec.input_format is None


# resolve: the request, then the container's /execution-parameters, then SageMaker's defaults


def test_request_values_win_over_the_container():
    spec = parse_request(request(BatchStrategy="SingleRecord", MaxPayloadInMB=1, MaxConcurrentTransforms=4))
    resolved = resolve(spec, CONTAINER)
    assert (resolved.batch_strategy, resolved.max_payload_bytes, resolved.max_concurrent) == ("SingleRecord",
                                                                                              MEGABYTE, 4)


def test_the_container_fills_what_the_request_leaves_out():
    resolved = resolve(parse_request(request()), CONTAINER)
    assert (resolved.batch_strategy, resolved.max_payload_bytes, resolved.max_concurrent) == ("MultiRecord",
                                                                                              5 * MEGABYTE, 2)


def test_sagemaker_defaults_when_neither_says():
    resolved = resolve(parse_request(request()), {})
    assert (resolved.batch_strategy, resolved.max_payload_bytes, resolved.max_concurrent) == ("SingleRecord",
                                                                                              6 * MEGABYTE, 1)


def test_container_values_that_are_not_positive_integers_are_ignored():
    resolved = resolve(parse_request(request()), {"BatchStrategy": "SOMETIMES", "MaxPayloadInMB": True,
                                                  "MaxConcurrentTransforms": 0})
    assert (resolved.batch_strategy, resolved.max_payload_bytes, resolved.max_concurrent) == ("SingleRecord",
                                                                                              6 * MEGABYTE, 1)


def test_a_container_payload_over_100_mb_is_capped():
    assert resolve(parse_request(request()), {"MaxPayloadInMB": 500}).max_payload_bytes == 100 * MEGABYTE


def test_the_containers_multi_record_is_not_used_without_line_split():
    spec = parse_request(with_input(SplitType="None"))
    assert resolve(spec, CONTAINER).batch_strategy == "SingleRecord"
    assert resolve(spec, CONTAINER).max_payload_bytes == 5 * MEGABYTE
