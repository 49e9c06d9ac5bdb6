"""SST-2 as Yoon Kim prepared it (steps/sst.py): detokenization, the layout, and bad lines.

Every file here is written by the test into tmp_path, in the real files' format.
"""
from __future__ import annotations

import copy
from pathlib import Path

import pytest

from serve.text import TextConfig, TextNormalizer
from steps.sources import ACCEPTED_LAYOUTS, DataError, check_dataset, load_reviews
from steps.sst import detokenize
from tests.synthetic import make_reviews, write_jsonl

TRAIN = [
    "1 a stirring , funny and finally transporting re-imagining of beauty and the beast and 1930s horror films",
    "0 they presume their audience wo n't sit still for a sociology lesson .",
    "1 it 's a visually stunning rumination on love , memory , history and the war between art and commerce .",
    "0 gets -lrb- sci-fi -rrb- rehash .",
    "1 my little eye is the best little `` horror '' movie i 've seen in years .",
]
DEV = [
    "0 the film is strictly routine .",
    "1 a slick , engrossing melodrama .",
]
TEST = [
    "0 too bad .",
    "1 this is a stunning film , a one-of-a-kind tour de force .",
    "0 final verdict : you 've seen it all before .",
]


def write_sst(folder: Path, train: list[str] | None = TRAIN, test: list[str] | None = TEST,
              dev: list[str] | None = DEV) -> Path:
    """A folder with the stsa.binary files given (None: that file is left out)."""
    folder.mkdir(parents=True, exist_ok=True)
    for suffix, lines in (("train", train), ("dev", dev), ("test", test)):
        if lines is not None:
            (folder / f"stsa.binary.{suffix}").write_bytes("".join(line + "\n" for line in lines).encode("utf-8"))
    return folder


# --- detokenize ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("tokenized, expected", [
    # bracket words, only as whole tokens
    ("-lrb- sci-fi -rrb-", "(sci-fi)"),
    ("-lsb- sic -rsb- and -lcb- x -rcb-", "[sic] and {x}"),
    ("-LRB- upper -RRB-", "(upper)"),
    ("a-lrb-b", "a-lrb-b"),
    # escaped slash and star
    ("writer\\/director", "writer/director"),
    ("\\* corpus", "* corpus"),
    # double quotes
    ("the `` horror '' movie", 'the "horror" movie'),
    ("`` the time machine '' is", '"the time machine" is'),
    # contractions
    ("do n't", "don't"),
    ("ca n't", "can't"),
    ("wo n't", "won't"),
    ("it 's", "it's"),
    ("you 're", "you're"),
    ("we 've", "we've"),
    ("they 'll", "they'll"),
    ("i 'd", "i'd"),
    ("i 'm", "i'm"),
    ("jonathan parker 's bartleby", "jonathan parker's bartleby"),
    # single quotes and plural possessives
    ("his ` blundering ' style", "his 'blundering' style"),
    ("haynes ' work", "haynes' work"),
    ("the '70s and 'em", "the '70s and 'em"),
    # spacing around punctuation
    ("a , b . c ; d : e ! f ? g", "a, b. c; d: e! f? g"),
    ("100 % missing", "100% missing"),
    ("a $ 99 special", "a $99 special"),
    # kept as they are
    ("huppert ... is magnificent", "huppert... is magnificent"),
    ("... with the bourne identity", "... with the bourne identity"),
    ("just right -- funny", "just right -- funny"),
    ("a one-of-a-kind tour de force", "a one-of-a-kind tour de force"),
    ("it can not last", "it can not last"),
    ("  extra   spaces  ", "extra spaces"),
])
def test_each_rule(tokenized, expected):
    assert detokenize(tokenized) == expected


@pytest.mark.parametrize("tokenized, expected", [
    ("they presume their audience wo n't sit still for a sociology lesson , however entertainingly presented , "
     "so they trot out the conventional science-fiction elements .",
     "they presume their audience won't sit still for a sociology lesson, however entertainingly presented, "
     "so they trot out the conventional science-fiction elements."),
    ("it 's like every bad idea , minus those daytime programs ' slickness and sophistication "
     "-lrb- and who knew they even had any ? -rrb- .",
     "it's like every bad idea, minus those daytime programs' slickness and sophistication "
     "(and who knew they even had any?)."),
    ("` what 's the russian word for wow !? '", "'what's the russian word for wow!?'"),
    ("this is no `` waterboy ! ''", 'this is no "waterboy!"'),
    ("oversexed , at times overwrought comedy\\/drama that offers little insight .",
     "oversexed, at times overwrought comedy/drama that offers little insight."),
])
def test_whole_sentences(tokenized, expected):
    assert detokenize(tokenized) == expected


def test_the_tokenizer_sees_contractions_as_in_reviews_people_type():
    normalizer = TextNormalizer(TextConfig())
    typed = normalizer.tokens("I don't think it's good, and I can't say I won't (really).")
    assert normalizer.tokens(detokenize("i do n't think it 's good , and i ca n't say i wo n't -lrb- really -rrb- .")) == typed
    assert "don't" in typed and "lrb" not in typed


# --- the layout ----------------------------------------------------------------------------------------


def test_layout_with_dev_reads_three_splits(tmp_path):
    folder = write_sst(tmp_path / "sst2")
    check_dataset(folder)
    data = load_reviews(folder)
    assert (len(data.train), len(data.test)) == (len(TRAIN), len(TEST))
    assert data.validation is not None and len(data.validation) == len(DEV)
    assert (data.kind, data.name) == ("sentences", "sst2")
    assert data.train.labels == [1, 0, 1, 0, 1]
    assert data.train.texts[1] == "they presume their audience won't sit still for a sociology lesson."
    assert data.validation.texts == ["the film is strictly routine.", "a slick, engrossing melodrama."]
    assert data.test.labels == [0, 1, 0]
    assert data.undecodable == 0 and data.unlabeled == []
    assert [Path(p).name for p in data.sources] == ["stsa.binary.train", "stsa.binary.dev", "stsa.binary.test"]


def test_layout_without_dev_has_no_validation(tmp_path):
    folder = write_sst(tmp_path / "sst2", dev=None)
    check_dataset(folder)
    data = load_reviews(folder)
    assert data.validation is None
    assert (len(data.train), len(data.test), data.kind, data.name) == (len(TRAIN), len(TEST), "sentences", "sst2")


def test_blank_lines_are_skipped_and_line_numbers_count_them(tmp_path):
    folder = write_sst(tmp_path / "sst2", train=["", TRAIN[0], "   ", TRAIN[1], "", "2 bad"])
    with pytest.raises(DataError, match=r"stsa\.binary\.train line 6"):
        load_reviews(folder)
    write_sst(folder, train=["", TRAIN[0], "\r", TRAIN[1], ""])
    assert len(load_reviews(folder).train) == 2


def test_crlf_line_ends_are_read(tmp_path):
    folder = tmp_path / "sst2"
    write_sst(folder)
    (folder / "stsa.binary.train").write_bytes(b"1 a fine film .\r\n0 a bad one .\r\n")
    assert load_reviews(folder).train.texts == ["a fine film.", "a bad one."]


def test_sample_and_drop_empty_treat_validation(tmp_path):
    folder = write_sst(tmp_path / "sst2", dev=DEV * 5)
    data = load_reviews(folder)
    before = copy.deepcopy(data)
    data.sample(2, seed=1)
    assert data.validation is not None and len(data.validation) == 2
    assert sorted(data.validation.labels) == [0, 1]
    assert len(data.train) == 2 and len(data.test) == 2
    before.validation.texts[0] = "  "
    before.drop_empty()
    assert before.empty == 1 and len(before.validation) == len(DEV) * 5 - 1


def test_accepted_layouts_name_sst2():
    assert any("stsa.binary.train" in layout for layout in ACCEPTED_LAYOUTS)


# --- bad data ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad_line, message", [
    ("a film without its label .", r"stsa\.binary\.test line 2 does not start with a label"),
    ("2 a film with a third class .", r"stsa\.binary\.test line 2: label '2' is not 0 or 1"),
    ("1", r"stsa\.binary\.test line 2 has the label 1 but no sentence"),
    ("0    ", r"stsa\.binary\.test line 2 has the label 0 but no sentence"),
    ("1\ta tab instead of a space", r"stsa\.binary\.test line 2 does not start with a label"),
])
def test_bad_lines_name_the_file_and_line(tmp_path, bad_line, message):
    folder = write_sst(tmp_path / "sst2", test=[TEST[0], bad_line, TEST[1]])
    with pytest.raises(DataError, match=message) as error:
        load_reviews(folder)
    assert "\n" not in str(error.value)


def test_check_dataset_reads_only_up_to_the_first_sentence(tmp_path):
    folder = write_sst(tmp_path / "sst2", test=[TEST[0], "2 a bad label far down"])
    check_dataset(folder)  # the full read is the step's to do
    write_sst(folder, test=["7 a bad first line"])
    with pytest.raises(DataError, match=r"stsa\.binary\.test line 1"):
        check_dataset(folder)


def test_undecodable_lines_are_counted_and_skipped(tmp_path):
    folder = write_sst(tmp_path / "sst2")
    (folder / "stsa.binary.train").write_bytes(b"1 good .\n0 caf\xe9 bad .\n0 bad .\n")
    data = load_reviews(folder)
    assert data.train.texts == ["good.", "bad."]
    assert data.undecodable == 1


@pytest.mark.parametrize("missing, split", [("test", "test"), ("train", "train")])
def test_a_folder_without_train_or_test_is_refused(tmp_path, missing, split):
    folder = write_sst(tmp_path / "sst2", **{missing: None})
    for reader in (check_dataset, load_reviews):
        with pytest.raises(DataError, match=rf"the {split} split in .*holds no usable reviews.*stsa\.binary\.{missing} is missing"):
            reader(folder)


@pytest.mark.parametrize("split_file, split", [("train", "train"), ("test", "test"), ("dev", "validation")])
def test_an_empty_file_is_an_empty_split(tmp_path, split_file, split):
    folder = write_sst(tmp_path / "sst2", **{split_file: ["", ""]})
    for reader in (check_dataset, load_reviews):
        with pytest.raises(DataError, match=rf"the {split} split in .* holds no usable reviews"):
            reader(folder)


# --- other layouts -------------------------------------------------------------------------------------


def test_json_lines_still_read_as_reviews(tmp_path):
    reviews = make_reviews(20, seed=3)
    folder = write_jsonl(tmp_path / "jsonl", reviews[:12], reviews[12:])
    check_dataset(folder)
    data = load_reviews(folder)
    assert (data.kind, data.name, data.validation) == ("reviews", "imdb", None)
    assert data.train.texts == [r["text"] for r in reviews[:12]]


def test_json_lines_win_over_sst_files_in_the_same_folder(tmp_path):
    reviews = make_reviews(20, seed=3)
    folder = write_jsonl(tmp_path / "both", reviews[:12], reviews[12:])
    write_sst(folder)
    assert load_reviews(folder).kind == "reviews"
