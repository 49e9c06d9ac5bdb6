"""Review text normalization: the one function that preprocessing, training and serving share.

It lives in ``serve/`` because the deployed model must turn raw text into tokens exactly as the
preprocessing step did; the pipeline's other jobs import it from here (see docs/ARCHITECTURE.md).
"""
from __future__ import annotations

import html
import re
from dataclasses import asdict, dataclass

from bs4 import BeautifulSoup

from serve.vocab import TRUNCATE_SIDES

# NLTK's English stopword list (nltk_data corpora/stopwords/english, 179 words).  It is written out
# here because loading it through ``nltk.corpus`` needs a download at run time, which neither the
# containers nor an offline machine can count on.
NLTK_ENGLISH_STOPWORDS: tuple[str, ...] = tuple(
    """i me my myself we our ours ourselves you you're you've you'll you'd your yours yourself
    yourselves he him his himself she she's her hers herself it it's its itself they them their
    theirs themselves what which who whom this that that'll these those am is are was were be been
    being have has had having do does did doing a an the and but if or because as until while of at
    by for with about against between into through during before after above below to from up down
    in out on off over under again further then once here there when where why how all any both each
    few more most other some such no nor not only own same so than too very s t can will just don
    don't should should've now d ll m o re ve y ain aren aren't couldn couldn't didn didn't doesn
    doesn't hadn hadn't hasn hasn't haven haven't isn isn't ma mightn mightn't mustn mustn't needn
    needn't shan shan't shouldn shouldn't wasn wasn't weren weren't won won't wouldn wouldn't""".split()
)


def is_negation(word: str) -> bool:
    """Negations flip sentiment ("not good"), so stopword removal must never drop them.

    NLTK's list holds "not", "no", "nor", every "n't" form and the stems a naive tokenizer leaves
    of them ("didn", "wasn", ...): all of them count as negations here.
    """
    if word in ("no", "not", "nor", "never", "none", "nothing", "nobody", "nowhere", "neither", "cannot"):
        return True
    if word.endswith("n't"):
        return True
    return word in {"ain", "aren", "couldn", "didn", "doesn", "don", "hadn", "hasn", "haven", "isn",
                    "mightn", "mustn", "needn", "shan", "shouldn", "wasn", "weren", "won", "wouldn"}


STOPWORDS: frozenset[str] = frozenset(w for w in NLTK_ENGLISH_STOPWORDS if not is_negation(w))

# The kinds of labelled text a dataset holds: whole reviews (IMDb), or a sentence or two (SST-2,
# and what web users type). Preprocess records each dataset's kind, training can weigh them, and
# the gate holds each kind to its own threshold; here because every bundle and the model carry serve/.
REVIEWS, SENTENCES = "reviews", "sentences"
TEXT_KINDS = (REVIEWS, SENTENCES)

BREAK_TAG = re.compile(r"<\s*br\s*/?\s*>", re.IGNORECASE)
# Words (any script, so "naïve" stays whole) with an optional apostrophe suffix, so that "don't"
# stays one token and keeps its negation.
_TOKEN = re.compile(r"[^\W_]+(?:'[^\W_]+)?")
# A stem cache bigger than this is dropped and rebuilt: serving sees unbounded vocabularies.
_MAX_CACHE_ENTRIES = 500_000


@dataclass(frozen=True)
class TextConfig:
    """How raw reviews become tokens; saved in the model's config.json so serving matches training."""

    stem: bool = True
    remove_stopwords: bool = False
    max_len: int = 1000
    truncate: str = "tail"

    def __post_init__(self) -> None:
        if self.max_len < 1:
            raise ValueError(f"max_len must be at least 1, got {self.max_len}")
        if self.truncate not in TRUNCATE_SIDES:
            raise ValueError(f"truncate must be one of {TRUNCATE_SIDES}, got {self.truncate!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TextConfig:
        known = {f: data[f] for f in cls.__dataclass_fields__ if f in data}
        return cls(**known)


def strip_html(text: str) -> str:
    """Remove markup, paying for a parser only when the text has markup other than line breaks.

    IMDb reviews hold ``<br />`` and little else; a regex handles those, and BeautifulSoup runs
    only on the rare review with other tags.
    """
    if "<" in text:
        text = BREAK_TAG.sub(" ", text)
        if "<" in text and ">" in text:
            return BeautifulSoup(text, "html.parser").get_text(" ")
    if "&" in text:
        text = html.unescape(text)
    return text


def has_words(text: str) -> bool:
    """Whether anything a tokenizer would keep is left once markup is removed: a review of
    ``<br /><br /><p></p>`` has none, and scoring it would score the padding."""
    return _TOKEN.search(strip_html(text)) is not None


def _porter_stem():
    """NLTK's Porter stemmer, imported on first use: importing NLTK takes over a second, and the
    preprocessing step's main process never stems (its workers do)."""
    from nltk.stem.porter import PorterStemmer

    return PorterStemmer().stem


class _TokenCache(dict):
    """Maps a raw word to its normalized form ('' when it is a dropped stopword), computed once."""

    def __init__(self, config: TextConfig) -> None:
        super().__init__()
        self._stem = _porter_stem() if config.stem else None
        self._stopwords = STOPWORDS if config.remove_stopwords else frozenset()

    def __missing__(self, word: str) -> str:
        if len(self) >= _MAX_CACHE_ENTRIES:
            self.clear()
        if word in self._stopwords:
            value = ""
        elif self._stem is not None:
            value = self._stem(word)
        else:
            value = word
        self[word] = value
        return value


class TextNormalizer:
    """Turns a raw review into tokens: HTML removed, lowercased, tokenized, optionally stemmed
    and stripped of stopwords (never of negations)."""

    def __init__(self, config: TextConfig | None = None) -> None:
        self.config = config or TextConfig()
        self._cache = _TokenCache(self.config)

    def tokens(self, text: str) -> list[str]:
        # str.replace is some 50x faster than str.translate here, and tokenizing is the step's hot loop.
        lowered = strip_html(text).lower().replace("\u2019", "'").replace("\u2018", "'").replace("`", "'")
        words = _TOKEN.findall(lowered)
        return list(filter(None, map(self._cache.__getitem__, words)))
