"""The preprocessing step (steps/preprocess.py): in-process, through main(), and as a script run by hand."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from serve.text import TextConfig, TextNormalizer
from serve.vocab import PAD_ID, UNK_ID
from steps.arrays import ARRAYS_FILE, load_split_arrays
from steps.preprocess import SPLITS, PreprocessOptions, main, run
from steps.sources import DataError, Split
from tests.synthetic import make_reviews, write_csv, write_jsonl

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "steps" / "preprocess.py"
MAX_LEN = 32
TEXT = TextConfig(stem=False, remove_stopwords=False, max_len=MAX_LEN, truncate="tail")
OPTIONS = PreprocessOptions(vocab_size=5_000, min_count=1, validation_fraction=0.2, seed=3, workers=1, text=TEXT)
TRAIN_N, TEST_N = 200, 100
TEST_ONLY_WORD = "zebracornthing"


def marker(i: int) -> str:
    return f"qx{i:04d}"


def write_lines(path: Path, lines: list[bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def record_line(record: dict) -> bytes:
    return json.dumps(record, ensure_ascii=False).encode("utf-8")


def planted_records() -> tuple[list[dict], list[dict]]:
    """Synthetic reviews; every training review ends with its own marker word, some test reviews hold a
    word that no training review has."""
    reviews = make_reviews(TRAIN_N + TEST_N, seed=21)
    train = [{"text": f"{r['text']} {marker(i)}", "label": r["label"]} for i, r in enumerate(reviews[:TRAIN_N])]
    test = [dict(r) for r in reviews[TRAIN_N:]]
    for r in test[::10]:
        r["text"] = f"{TEST_ONLY_WORD} {r['text']}"
    return train, test


def write_planted_input(folder: Path) -> tuple[list[dict], list[dict]]:
    """The planted reviews as JSON Lines, plus one blank review and one line that is not UTF-8 in train."""
    train, test = planted_records()
    lines = [record_line(r) for r in train]
    lines.insert(5, record_line({"text": "   ", "label": 1}))
    lines.insert(9, b'{"text": "caf\xe9 \xff", "label": 0}')
    write_lines(folder / "train.jsonl", lines)
    write_lines(folder / "test.jsonl", [record_line(r) for r in test])
    return train, test


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def scratch_left(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".preprocess-")] if folder.exists() else []


def vocab_tokens(output: Path) -> list[str]:
    return json.loads((output / "train" / "vocab.json").read_text(encoding="utf-8"))["tokens"]


def decode(tokens: list[str], row: np.ndarray, length: int) -> list[str]:
    lookup = {i + 2: t for i, t in enumerate(tokens)}
    return [lookup.get(int(i), "<unk>") for i in row[:length]]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    base = tmp_path_factory.mktemp("baseline")
    train, test = write_planted_input(base / "input")
    stats = run(base / "input", base / "output", OPTIONS)
    return {"input": base / "input", "output": base / "output", "train": train, "test": test, "stats": stats}


# --- the outputs ----------------------------------------------------------------------------------------


def test_output_layout(baseline):
    out = baseline["output"]
    assert sorted(p.name for p in out.iterdir()) == ["test", "train", "validation"]
    assert sorted(p.name for p in (out / "train").iterdir()) == [ARRAYS_FILE, "embeddings.npy", "stats.json", "vocab.json"]
    assert sorted(p.name for p in (out / "validation").iterdir()) == [ARRAYS_FILE]
    assert sorted(p.name for p in (out / "test").iterdir()) == [ARRAYS_FILE, "reviews.jsonl"]
    assert json.loads((out / "train" / "stats.json").read_text(encoding="utf-8"))["splits"] == baseline["stats"]["splits"]


def test_arrays_are_padded_to_max_len_and_consistent(baseline):
    out, stats = baseline["output"], baseline["stats"]
    vocab_size = stats["vocabulary"]["size"]
    for name in SPLITS:
        ids, lengths, labels = load_split_arrays(out / name)
        assert ids.shape == (stats["splits"][name]["reviews"], MAX_LEN)
        assert ids.dtype == np.uint16
        assert lengths.min() >= 1 and lengths.max() <= MAX_LEN
        assert int(ids.max()) < vocab_size
        columns = np.arange(MAX_LEN)[None, :]
        assert np.all(ids[columns >= lengths[:, None]] == PAD_ID)
        assert np.all(ids[columns < lengths[:, None]] != PAD_ID)
        assert set(np.unique(labels).tolist()) == {0, 1}
        assert int(labels.sum()) == stats["splits"][name]["positive"]
    assert stats["splits"]["train"]["reviews"] + stats["splits"]["validation"]["reviews"] == TRAIN_N
    assert stats["splits"]["test"]["reviews"] == TEST_N


def test_validation_is_stratified_and_disjoint_from_train(baseline):
    out, train = baseline["output"], baseline["train"]
    tokens = vocab_tokens(out)
    ids, lengths, labels = load_split_arrays(out / "train")
    train_markers = [decode(tokens, row, n)[-1] for row, n in zip(ids, lengths)]
    assert all(m.startswith("qx") for m in train_markers)  # tail truncation keeps each review's last word
    assert len(set(train_markers)) == len(train_markers)
    v_ids, v_lengths, v_labels = load_split_arrays(out / "validation")
    # a validation review's marker never reached the vocabulary: its last word is unknown
    assert np.all(v_ids[np.arange(len(v_ids)), v_lengths - 1] == UNK_ID)
    assert len(train_markers) + len(v_ids) == TRAIN_N
    per_label = Counter(r["label"] for r in train)
    assert Counter(v_labels.tolist()) == {k: round(v * OPTIONS.validation_fraction) for k, v in per_label.items()}
    assert Counter(labels.tolist()) == {k: v - round(v * OPTIONS.validation_fraction) for k, v in per_label.items()}
    # the training labels are those of the reviews the markers name
    by_marker = {marker(i): r["label"] for i, r in enumerate(train)}
    assert [by_marker[m] for m in train_markers] == labels.tolist()


def test_vocabulary_comes_from_training_rows_only(baseline):
    out = baseline["output"]
    tokens = vocab_tokens(out)
    markers_in_vocab = {t for t in tokens if t.startswith("qx")}
    assert len(markers_in_vocab) == baseline["stats"]["splits"]["train"]["reviews"]
    assert len(markers_in_vocab) < TRAIN_N  # the validation reviews' markers are left out
    assert TEST_ONLY_WORD not in tokens
    ids, lengths, _ = load_split_arrays(out / "train")
    assert {decode(tokens, row, n)[-1] for row, n in zip(ids, lengths)} == markers_in_vocab
    vocab = json.loads((out / "train" / "vocab.json").read_text(encoding="utf-8"))
    assert vocab["pad_id"] == PAD_ID and vocab["unk_id"] == UNK_ID
    assert len(tokens) == len(set(tokens))


def test_stats(baseline):
    stats, train, test = baseline["stats"], baseline["train"], baseline["test"]
    assert stats["source"]["layout"] == "JSON Lines"
    assert stats["source"]["empty_reviews_skipped"] == 1
    assert stats["source"]["undecodable_reviews_skipped"] == 1
    assert stats["data_sha256"]["train"] == Split([r["text"] for r in train], [r["label"] for r in train]).sha256()
    assert stats["data_sha256"]["test"] == Split([r["text"] for r in test], [r["label"] for r in test]).sha256()
    assert stats["options"] == dataclasses.asdict(OPTIONS)
    assert stats["options"]["text"] == {"stem": False, "remove_stopwords": False, "max_len": MAX_LEN, "truncate": "tail"}
    vocabulary = stats["vocabulary"]
    assert vocabulary["size"] == len(vocab_tokens(baseline["output"])) + 2
    assert vocabulary["min_count"] == 1 and vocabulary["pad_id"] == PAD_ID and vocabulary["unk_id"] == UNK_ID
    assert vocabulary["training_token_coverage"] == 1.0  # min_count 1 and room for every word
    splits = stats["splits"]
    assert splits["train"]["unknown_token_rate"] == 0.0
    assert 0.0 < splits["validation"]["unknown_token_rate"] <= 1.0  # each holds its unseen marker
    assert 0.0 < splits["test"]["unknown_token_rate"] <= 1.0
    for name in SPLITS:
        split = splits[name]
        assert split["positive"] + split["negative"] == split["reviews"]
        p = split["length_percentiles"]
        assert p["p50"] <= p["p90"] <= p["p95"] <= p["p99"] <= p["max"]
        assert 0.0 <= split["truncated_fraction"] <= 1.0
    normalizer = TextNormalizer(TEXT)
    full = np.array([len(normalizer.tokens(r["text"])) for r in test])
    assert splits["test"]["tokens"] == int(full.sum())
    assert splits["test"]["length_percentiles"] == {
        "p50": int(np.percentile(full, 50)), "p90": int(np.percentile(full, 90)), "p95": int(np.percentile(full, 95)),
        "p99": int(np.percentile(full, 99)), "max": int(full.max()), "mean": round(float(full.mean()), 1)}
    assert splits["test"]["truncated_fraction"] == round(float((full > MAX_LEN).mean()), 5)
    assert splits["test"]["truncated_fraction"] > 0
    assert stats["duplicates"] == {"train_extra_copies": 0, "test_extra_copies": 0, "texts_in_both_train_and_test": 0}
    assert stats["seconds"] >= 0


def test_test_reviews_file_holds_the_raw_test_reviews_in_order(baseline):
    lines = (baseline["output"] / "test" / "reviews.jsonl").read_text(encoding="utf-8").splitlines()
    # each with the dataset it came from: one folder of JSON Lines is one dataset of reviews, "imdb"
    assert [json.loads(line) for line in lines] == [{**r, "dataset": "imdb", "kind": "reviews"} for r in baseline["test"]]
    _, _, labels = load_split_arrays(baseline["output"] / "test")
    assert labels.tolist() == [r["label"] for r in baseline["test"]]


def test_no_scratch_folder_is_left(baseline):
    assert scratch_left(baseline["output"]) == []


# --- options --------------------------------------------------------------------------------------------


def test_vocab_size_and_min_count_limit_the_vocabulary(tmp_path, baseline):
    options = dataclasses.replace(OPTIONS, vocab_size=12, min_count=2)
    stats = run(baseline["input"], tmp_path / "out", options)
    tokens = vocab_tokens(tmp_path / "out")
    assert len(tokens) == 10 and stats["vocabulary"]["size"] == 12
    assert not any(t.startswith("qx") for t in tokens)  # each marker occurs once: below min_count
    assert 0.0 < stats["vocabulary"]["training_token_coverage"] < 1.0
    assert stats["splits"]["train"]["unknown_token_rate"] > 0.0
    ids, _, _ = load_split_arrays(tmp_path / "out" / "train")
    assert int(ids.max()) < 12


@pytest.mark.parametrize("truncate", ["head", "tail"])
def test_truncation_keeps_the_chosen_end(tmp_path, truncate):
    sequence = [f"w{i:02d}" for i in range(30)]
    reviews = make_reviews(60, seed=8)
    train = [{"text": f"{r['text']} {' '.join(sequence)}", "label": r["label"]} for r in reviews[:40]]
    test = [{"text": " ".join(sequence), "label": 1}, {"text": "w05 w06", "label": 0}] + reviews[40:]
    write_jsonl(tmp_path / "in", train, test, gz=False)
    text = TextConfig(stem=False, max_len=8, truncate=truncate)
    stats = run(tmp_path / "in", tmp_path / "out", dataclasses.replace(OPTIONS, text=text))
    ids, lengths, _ = load_split_arrays(tmp_path / "out" / "test")
    assert ids.shape[1] == 8 and lengths.max() == 8
    tokens = vocab_tokens(tmp_path / "out")
    expected = sequence[:8] if truncate == "head" else sequence[-8:]
    assert decode(tokens, ids[0], lengths[0]) == expected
    assert decode(tokens, ids[1], lengths[1]) == ["w05", "w06"]
    assert stats["options"]["text"]["truncate"] == truncate
    assert stats["splits"]["train"]["truncated_fraction"] == 1.0


def test_duplicates_are_counted(tmp_path):
    reviews = make_reviews(100, seed=30)
    train, test = reviews[:60], reviews[60:]
    assert len({r["text"] for r in reviews}) == 100  # no accidental duplicates to start with
    train = train + [dict(r) for r in train[:3]]  # 3 extra copies within train
    test = test + [dict(r) for r in test[:2]] + [dict(r) for r in train[10:14]]  # 2 within test, 4 shared
    write_jsonl(tmp_path / "in", train, test)
    stats = run(tmp_path / "in", tmp_path / "out", OPTIONS)
    assert stats["duplicates"] == {"train_extra_copies": 3, "test_extra_copies": 2, "texts_in_both_train_and_test": 4}


def test_csv_input_gets_a_carved_test_split(tmp_path):
    reviews = make_reviews(160, seed=4)
    write_csv(tmp_path / "in" / "IMDB Dataset.csv", reviews)
    stats = run(tmp_path / "in", tmp_path / "out", dataclasses.replace(OPTIONS, csv_test_fraction=0.25))
    assert stats["splits"]["test"]["reviews"] == 40
    assert stats["splits"]["test"]["positive"] == 20
    assert stats["splits"]["train"]["reviews"] + stats["splits"]["validation"]["reviews"] == 120
    lines = (tmp_path / "out" / "test" / "reviews.jsonl").read_text(encoding="utf-8").splitlines()
    carved = [json.loads(line) for line in lines]
    assert len(carved) == 40 and all({"text": r["text"], "label": r["label"]} in reviews for r in carved)
    assert stats["source"]["layout"].startswith("CSV IMDB Dataset.csv")


def test_sample_keeps_a_stratified_n_per_split(tmp_path, baseline):
    stats = run(baseline["input"], tmp_path / "out", dataclasses.replace(OPTIONS, sample=40))
    assert stats["splits"]["test"]["reviews"] == 40
    assert stats["splits"]["test"]["positive"] == 20
    assert stats["splits"]["train"]["reviews"] + stats["splits"]["validation"]["reviews"] == 40
    assert stats["options"]["sample"] == 40


@pytest.mark.parametrize("change", [{"sample": 2}, {"validation_fraction": 0.004}], ids=["sample-2", "fraction-0.004"])
def test_empty_validation_split_is_a_data_error_not_a_crash(tmp_path, baseline, change):
    """Too few reviews per label for the validation fraction (``--sample 2``, or a tiny fraction) leaves the
    validation split empty: that must be a DataError that says so, not numpy's "need at least one array to
    concatenate" (a bare ValueError)."""
    with pytest.raises(DataError):
        run(baseline["input"], tmp_path / "out", dataclasses.replace(OPTIONS, **change))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_training_data_with_one_label_is_a_data_error(tmp_path):
    reviews = [r for r in make_reviews(80, seed=1) if r["label"] == 1]
    write_jsonl(tmp_path / "in", reviews[:30], reviews[30:])
    with pytest.raises(DataError, match="only one label"):
        run(tmp_path / "in", tmp_path / "out", OPTIONS)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# --- determinism ----------------------------------------------------------------------------------------


def test_same_inputs_give_the_same_results(tmp_path, baseline):
    run(baseline["input"], tmp_path / "again", OPTIONS)
    first, second = snapshot(baseline["output"]), snapshot(tmp_path / "again")
    assert first.keys() == second.keys()
    for name in ("train/vocab.json", "test/reviews.jsonl", *(f"{split}/{ARRAYS_FILE}" for split in SPLITS)):
        assert first[name] == second[name], name  # byte-identical, data.npz included
    first_stats = json.loads(first["train/stats.json"])
    assert first_stats == json.loads(second["train/stats.json"])
    for name in SPLITS:
        for a, b in zip(load_split_arrays(baseline["output"] / name), load_split_arrays(tmp_path / "again" / name)):
            assert a.dtype == b.dtype and np.array_equal(a, b)


def test_one_or_two_workers_give_identical_arrays(tmp_path, baseline):
    run(baseline["input"], tmp_path / "one", OPTIONS)
    run(baseline["input"], tmp_path / "two", dataclasses.replace(OPTIONS, workers=2))
    assert vocab_tokens(tmp_path / "one") == vocab_tokens(tmp_path / "two")
    for name in SPLITS:
        for a, b in zip(load_split_arrays(tmp_path / "one" / name), load_split_arrays(tmp_path / "two" / name)):
            assert a.dtype == b.dtype and np.array_equal(a, b)


# --- existing results and failures ----------------------------------------------------------------------


def test_existing_results_are_kept_unless_overwrite(tmp_path, baseline):
    out = tmp_path / "out"
    run(baseline["input"], out, OPTIONS)
    before = snapshot(out)
    with pytest.raises(DataError, match=r"already holds results \(train, validation, test\).*--overwrite"):
        run(baseline["input"], out, dataclasses.replace(OPTIONS, text=dataclasses.replace(TEXT, max_len=16)))
    assert snapshot(out) == before
    run(baseline["input"], out, dataclasses.replace(OPTIONS, text=dataclasses.replace(TEXT, max_len=16)), overwrite=True)
    for name in SPLITS:
        ids, lengths, _ = load_split_arrays(out / name)
        assert ids.shape[1] == 16 and lengths.max() <= 16
    assert json.loads((out / "train" / "stats.json").read_text(encoding="utf-8"))["options"]["text"]["max_len"] == 16
    assert scratch_left(out) == []


def test_empty_split_folders_do_not_count_as_results(tmp_path, baseline):
    out = tmp_path / "out"
    for name in SPLITS:
        (out / name).mkdir(parents=True)
    (out / "unrelated.txt").write_text("kept", encoding="utf-8")
    run(baseline["input"], out, OPTIONS)
    assert load_split_arrays(out / "train")[0].shape[1] == MAX_LEN
    assert (out / "unrelated.txt").read_text(encoding="utf-8") == "kept"


def test_failed_run_leaves_previous_results_untouched(tmp_path, baseline):
    out = tmp_path / "out"
    run(baseline["input"], out, OPTIONS)
    before = snapshot(out)
    bad = tmp_path / "bad"
    write_lines(bad / "train.jsonl", [record_line({"text": "fine film", "label": "great"}), record_line({"text": "x", "label": 0})])
    write_lines(bad / "test.jsonl", [record_line({"text": "y", "label": 1})])
    with pytest.raises(DataError, match="unknown label"):
        run(bad, out, OPTIONS, overwrite=True)
    assert snapshot(out) == before
    assert scratch_left(out) == []


# --- main() and the script ------------------------------------------------------------------------------


def cli_args(input_dir: Path, output_dir: Path) -> list[str]:
    return ["--input-dir", str(input_dir), "--output-dir", str(output_dir), "--vocab-size", "5000", "--min-count", "1",
            "--max-len", str(MAX_LEN), "--truncate", "tail", "--no-stem", "--validation-fraction", "0.2", "--seed", "3",
            "--workers", "1"]


def test_main_runs_and_prints_a_summary(tmp_path, baseline, capsys):
    assert main(cli_args(baseline["input"], tmp_path / "out")) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["splits"] == {name: baseline["stats"]["splits"][name]["reviews"] for name in SPLITS}
    stats = json.loads((tmp_path / "out" / "train" / "stats.json").read_text(encoding="utf-8"))
    assert stats["options"] == dataclasses.asdict(OPTIONS)  # every flag reached the options
    for name in SPLITS:
        for a, b in zip(load_split_arrays(baseline["output"] / name), load_split_arrays(tmp_path / "out" / name)):
            assert np.array_equal(a, b)


@pytest.mark.parametrize("problem", ["missing input", "bad labels", "results exist"])
def test_main_reports_bad_input_in_one_line(tmp_path, baseline, caplog, capsys, problem):
    input_dir, out = tmp_path / "in", tmp_path / "out"
    if problem == "bad labels":
        write_lines(input_dir / "train.jsonl", [record_line({"text": "a", "label": "meh"}), record_line({"text": "b", "label": 1})])
        write_lines(input_dir / "test.jsonl", [record_line({"text": "c", "label": 0})])
    elif problem == "results exist":
        input_dir = baseline["input"]
        (out / "train").mkdir(parents=True)
        (out / "train" / "data.npz").write_bytes(b"old")
    with caplog.at_level(logging.ERROR, logger="preprocess"):
        code = main(cli_args(input_dir, out))
    assert code == 2
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    message = errors[0].getMessage()
    assert "\n" not in message and message
    assert errors[0].exc_info is None
    expected = {"missing input": "input not found", "bad labels": "unknown label", "results exist": "already holds results"}
    assert expected[problem] in message
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and captured.out == ""
    if problem == "results exist":
        assert (out / "train" / "data.npz").read_bytes() == b"old"


def script_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    env["PYTHONHASHSEED"] = "random"
    return env


@pytest.mark.slow
def test_script_runs_by_hand(tmp_path, baseline):
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, str(SCRIPT), *cli_args(baseline["input"], out)], cwd=tmp_path,
                            env=script_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["splits"] == {name: baseline["stats"]["splits"][name]["reviews"] for name in SPLITS}
    assert vocab_tokens(out) == vocab_tokens(baseline["output"])
    for name in SPLITS:
        for a, b in zip(load_split_arrays(baseline["output"] / name), load_split_arrays(out / name)):
            assert np.array_equal(a, b)
    assert "preprocessing done" in result.stderr


@pytest.mark.slow
def test_script_exits_2_without_a_traceback(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), "--input-dir", str(tmp_path / "nothing-here"),
                             "--output-dir", str(tmp_path / "out")], cwd=tmp_path, env=script_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(error_lines) == 1 and "input not found" in error_lines[0]
    assert not (tmp_path / "out").exists()
