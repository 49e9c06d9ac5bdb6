"""The Stanford Sentiment Treebank's binary sentence split (SST-2), as Yoon Kim prepared it.

Socher et al. (EMNLP 2013) labeled movie-review sentences; Kim (2014) dropped the neutral ones
and wrote the rest as ``stsa.binary.train``, ``stsa.binary.dev`` and ``stsa.binary.test``, the
copies most people download. Each line is ``LABEL SENTENCE``: ``0`` (negative) or ``1``
(positive), one space, then the sentence, lower-cased and tokenized the Penn Treebank way
(``-lrb-`` for ``(``, ``do n't``, ``it 's``, spaces around punctuation, ````` `` ````` and ``''``
for quotes).

The model learns from and serves text as people type it on the web, so every sentence is
detokenized (``detokenize``) when it is read: a model trained on ``do n't`` would see
different tokens from the ``don't`` it is sent. ``steps/sources.py`` finds this layout and
calls the readers here; this module builds on its types, which is why that module imports
this one only when it needs it.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from serve.text import SENTENCES
from steps.sources import DataError, ReviewData, Split

log = logging.getLogger(__name__)

TRAIN_FILE = "stsa.binary.train"
DEV_FILE = "stsa.binary.dev"
TEST_FILE = "stsa.binary.test"
DATASET_NAME = "sst2"
KIND = SENTENCES  # one sentence per record, not a whole review
LAYOUT = "SST-2 stsa.binary files"
_SST_LABELS = {"0": 0, "1": 1}

# --- detokenization -----------------------------------------------------------------------------------
# Each rule undoes one thing the Penn Treebank tokenizer did, in this order (later rules rely on the
# earlier ones: the quote rules see `` and '' before the single-quote rules could split them, and the
# spacing rules see the brackets and quotes the first rules put back).

# Brackets were written as words so that parsers could not mistake them for tree syntax. Only whole
# tokens: a hyphenated word is never touched.
_BRACKET_WORDS = {"lrb": "(", "rrb": ")", "lsb": "[", "rsb": "]", "lcb": "{", "rcb": "}"}
_BRACKET = re.compile(r"(?<!\S)-(lrb|rrb|lsb|rsb|lcb|rcb)-(?!\S)", re.IGNORECASE)
# "/" and "*" were escaped with a backslash ("writer\/director") for the same reason.
_ESCAPED = re.compile(r"\\([/*])")
# Double quotes became `` (opening) and '' (closing): the direction says which side the space goes.
_OPEN_DOUBLE = re.compile(r"``\s*")
_CLOSE_DOUBLE = re.compile(r"\s*''")
# Contractions were split off their word: "do n't", "ca n't", "wo n't", "it 's", "you 're", "i 'm".
# Gluing n't back gives don't, can't and won't alike.
_CLITIC = re.compile(r"\s+(n't|'s|'re|'ve|'ll|'d|'m)(?!\S)", re.IGNORECASE)
# A single opening quote became ` ; a lone ' closes a quote or ends a plural possessive ("actors '"):
# both belong to the word before it.
_OPEN_SINGLE = re.compile(r"`\s*")
_CLOSE_SINGLE = re.compile(r"\s+'(?!\S)")
# Punctuation was split from the words around it: nothing goes before , . ; : ! ? % and closing
# brackets (so "..." ends the word before it: "huppert... is"), nothing after opening brackets or $.
_NO_SPACE_BEFORE = re.compile(r"\s+([,.;:!?%)\]}])")
_NO_SPACE_AFTER = re.compile(r"([(\[{$])\s+")
_SPACES = re.compile(r"\s+")


def detokenize(sentence: str) -> str:
    """The PTB-tokenized ``sentence`` written back as a person would type it.

    Undone: bracket words (-lrb- -rrb- -lsb- -rsb- -lcb- -rcb-), the backslash in \\/ and \\*,
    `` and '' (to "), ` and a lone ' (to ', attached to the quoted words), split contractions
    (n't 's 're 've 'll 'd 'm), and the spaces before , . ; : ! ? % and closing brackets and after
    opening brackets and $. Kept as they are: "...", "--", hyphenated words, "can not" (PTB's
    split of "cannot", which reads fine), and the lower case (the first letter and "i" stay
    lower-case: the tokenizer lower-cases everything anyway).
    """
    text = _BRACKET.sub(lambda match: _BRACKET_WORDS[match.group(1).lower()], sentence)
    text = _ESCAPED.sub(r"\1", text)
    text = _OPEN_DOUBLE.sub('"', text)
    text = _CLOSE_DOUBLE.sub('"', text)
    text = _CLITIC.sub(r"\1", text)
    text = _OPEN_SINGLE.sub("'", text)
    text = _CLOSE_SINGLE.sub("'", text)
    text = _NO_SPACE_BEFORE.sub(r"\1", text)
    text = _NO_SPACE_AFTER.sub(r"\1", text)
    return _SPACES.sub(" ", text).strip()


# --- the layout ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SstFiles:
    """The SST-2 files a folder holds; a missing one is None (the caller refuses a missing train or test)."""

    train: Path | None
    test: Path | None
    dev: Path | None


def find_sst(folder: Path) -> SstFiles | None:
    """The SST-2 files in ``folder``, or None when it has neither a train nor a test file (another layout)."""
    found = [folder / name if (folder / name).is_file() else None for name in (TRAIN_FILE, TEST_FILE, DEV_FILE)]
    if found[0] is None and found[1] is None:
        return None
    return SstFiles(*found)


def parse_line(line: str, path: Path, number: int) -> tuple[int, str]:
    """The label and the detokenized sentence of one non-blank line; a malformed line is refused
    with its file and number, since a line that lost its label would otherwise teach the wrong class."""
    label_text, _, sentence = line.rstrip("\r\n").partition(" ")
    if label_text not in _SST_LABELS:
        if label_text.isdigit():
            raise DataError(f"{path.name} line {number}: label {label_text!r} is not 0 or 1")
        raise DataError(f"{path.name} line {number} does not start with a label: expected 'LABEL sentence', "
                        "label 0 or 1 and one space")
    if not sentence.strip():
        raise DataError(f"{path.name} line {number} has the label {label_text} but no sentence")
    return _SST_LABELS[label_text], detokenize(sentence)


def _lines(path: Path) -> list[bytes]:
    """The file's lines as bytes, split at "\n" only so that line numbers match an editor's
    (each is decoded on its own, so one bad line spoils only itself)."""
    try:
        return path.read_bytes().split(b"\n")
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc


def read_split(path: Path) -> tuple[Split, int]:
    """Every sentence of one file, and how many lines were not valid UTF-8 (skipped and counted,
    as the other readers do with undecodable reviews). Blank lines are skipped."""
    split, undecodable = Split(), 0
    for number, raw in enumerate(_lines(path), start=1):
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            undecodable += 1
            continue
        label, sentence = parse_line(line, path, number)
        split.add(sentence, label)
    return split, undecodable


def read_sst(train: Path, test: Path, dev: Path | None) -> ReviewData:
    """The three splits, the dev file (when present) as the validation split."""
    data = ReviewData(Split(), Split(), LAYOUT, kind=KIND, name=DATASET_NAME,
                      sources=[str(p) for p in (train, dev, test) if p is not None])
    data.train, bad_train = read_split(train)
    data.test, bad_test = read_split(test)
    data.undecodable = bad_train + bad_test
    if dev is not None:
        data.validation, bad_dev = read_split(dev)
        data.undecodable += bad_dev
    log.info("read SST-2: %d train, %d test, %s validation sentences", len(data.train), len(data.test),
             len(data.validation) if data.validation is not None else "no")
    return data


def has_sentence(path: Path) -> bool:
    """Whether ``path`` holds a sentence; reads up to its first non-blank line, which must be well formed."""
    try:
        with open(path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if raw.strip():  # undecodable bytes are the reader's to count: only the form is checked here
                    line = raw.decode("utf-8", errors="replace")
                    parse_line(line, path, number)
                    return True
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    return False

