"""Tests for serve.text: HTML removal, tokenization, stemming, stopwords, TextConfig and the stem cache."""
from __future__ import annotations

import pytest

import serve.text as text_module
from serve.text import (
    NLTK_ENGLISH_STOPWORDS,
    STOPWORDS,
    TextConfig,
    TextNormalizer,
    is_negation,
    strip_html,
)

RAW = TextConfig(stem=False, remove_stopwords=False)
NO_STOPWORDS_RAW = TextConfig(stem=False, remove_stopwords=True)


def _no_soup(*args, **kwargs):
    raise AssertionError("BeautifulSoup must not run on text whose only markup is <br />")


# --- strip_html -------------------------------------------------------------------------------------


@pytest.mark.parametrize("br", ["<br />", "<br/>", "<br>", "<BR />", "< br / >", "<Br>"])
def test_line_breaks_are_removed_without_the_html_parser(monkeypatch, br):
    monkeypatch.setattr(text_module, "BeautifulSoup", _no_soup)
    out = strip_html(f"great film{br}{br}loved it")
    assert "<" not in out and ">" not in out
    assert out.split() == ["great", "film", "loved", "it"]


def test_line_break_separates_words_that_touch_it():
    assert TextNormalizer(RAW).tokens("end<br />start") == ["end", "start"]


def test_other_tags_go_through_the_html_parser(monkeypatch):
    calls = []
    real = text_module.BeautifulSoup

    def spy(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(text_module, "BeautifulSoup", spy)
    out = strip_html('<p>A <i>truly</i> <a href="x">great</a> film</p>')
    assert calls, "tags other than <br /> need the parser"
    assert out.split() == ["A", "truly", "great", "film"]


def test_tags_between_words_do_not_glue_them_together():
    assert TextNormalizer(RAW).tokens("<b>bold</b><i>italic</i>") == ["bold", "italic"]


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Tom &amp; Jerry", "Tom & Jerry"),
        ("it&#39;s &quot;fine&quot;", "it's \"fine\""),
        ("a &lt; b", "a < b"),
        ("<p>Tom &amp; Jerry</p>", "Tom & Jerry"),  # entities inside markup: the parser decodes them
        ("x<br />Tom &amp; Jerry", "x Tom & Jerry"),  # after the fast path
    ],
)
def test_entities_are_decoded(raw, expected):
    assert " ".join(strip_html(raw).split()) == expected


def test_plain_text_is_returned_unchanged():
    text = "No markup here, just 3 < 5 and nothing else"
    assert strip_html(text) == text


def test_entity_decoding_keeps_an_apostrophe_word_whole():
    assert TextNormalizer(RAW).tokens("I don&#39;t care") == ["i", "don't", "care"]


# --- tokenization ------------------------------------------------------------------------------------


def test_lowercases_and_drops_punctuation():
    assert TextNormalizer(RAW).tokens("GREAT Movie!!! Loved IT, 10/10.") == ["great", "movie", "loved", "it", "10", "10"]


@pytest.mark.parametrize("word", ["don't", "isn't", "wasn't", "couldn't", "won't", "can't"])
def test_contractions_stay_one_token(word):
    assert TextNormalizer(RAW).tokens(f"I {word.upper()} like it") == ["i", word, "like", "it"]


@pytest.mark.parametrize("apostrophe", ["\u2019", "\u2018", "`"])
def test_curly_apostrophes_are_normalized(apostrophe):
    tokens = TextNormalizer(RAW).tokens(f"I don{apostrophe}t like it and it isn{apostrophe}t good")
    assert tokens == ["i", "don't", "like", "it", "and", "it", "isn't", "good"]


def test_curly_and_straight_apostrophes_give_the_same_tokens():
    normalizer = TextNormalizer()
    assert normalizer.tokens("This wasn\u2019t the film\u2019s best") == normalizer.tokens("This wasn't the film's best")


def test_empty_and_markup_only_text_give_no_tokens():
    normalizer = TextNormalizer()
    assert normalizer.tokens("") == []
    assert normalizer.tokens("<br /><br />") == []
    assert normalizer.tokens("!!! ... ???") == []


# --- stemming ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("word, stem", [("movies", "movi"), ("loved", "love"), ("acting", "act"), ("wonderful", "wonder")])
def test_porter_stemming(word, stem):
    assert TextNormalizer(TextConfig(stem=True)).tokens(word) == [stem]


def test_stemming_can_be_turned_off():
    assert TextNormalizer(TextConfig(stem=False)).tokens("movies loved") == ["movies", "loved"]


def test_default_config_stems_and_keeps_stopwords():
    config = TextConfig()
    assert config.stem is True and config.remove_stopwords is False
    assert TextNormalizer().tokens("The movies and the actors") == ["the", "movi", "and", "the", "actor"]


# --- stopwords and negations -------------------------------------------------------------------------


def test_nltk_stopword_list_has_179_distinct_words():
    assert len(NLTK_ENGLISH_STOPWORDS) == 179
    assert len(set(NLTK_ENGLISH_STOPWORDS)) == 179
    assert all(w == w.lower() and w.strip() == w and w for w in NLTK_ENGLISH_STOPWORDS)


def test_stopword_removal_drops_ordinary_stopwords():
    tokens = TextNormalizer(NO_STOPWORDS_RAW).tokens("The plot and the acting were brilliant")
    assert tokens == ["plot", "acting", "brilliant"]


@pytest.mark.parametrize("negation", ["not", "no", "nor", "never", "don't", "isn't", "didn", "wasn", "aren't", "won't", "cannot", "nothing"])
def test_stopword_removal_never_drops_negations(negation):
    for config in (NO_STOPWORDS_RAW, TextConfig(stem=True, remove_stopwords=True)):
        tokens = TextNormalizer(config).tokens(f"the film was {negation} good")
        assert len(tokens) == 3, tokens
        assert tokens[0] == "film" and tokens[-1] == "good"  # "the" and "was" dropped, the negation kept
        if not config.stem:
            assert tokens[1] == negation


def test_every_negation_in_the_nltk_list_survives():
    negations = [w for w in NLTK_ENGLISH_STOPWORDS if "n't" in w or w in ("not", "no", "nor")]
    negations += "ain aren couldn didn doesn don hadn hasn haven isn mightn mustn needn shan shouldn wasn weren won wouldn".split()
    assert len(negations) == 3 + 18 + 19 and set(negations) <= set(NLTK_ENGLISH_STOPWORDS)
    normalizer = TextNormalizer(NO_STOPWORDS_RAW)
    for word in negations:
        assert is_negation(word), word
        assert word not in STOPWORDS, word
        assert normalizer.tokens(word) == [word], word


def test_stopword_set_is_the_nltk_list_without_negations():
    assert STOPWORDS < frozenset(NLTK_ENGLISH_STOPWORDS)
    assert {"the", "and", "a", "is", "was", "i"} <= STOPWORDS
    assert not any(is_negation(w) for w in STOPWORDS)
    assert not any(w.endswith("n't") for w in STOPWORDS)
    # Every removed word really is a negation; nothing else was dropped from the list.
    assert all(is_negation(w) for w in set(NLTK_ENGLISH_STOPWORDS) - STOPWORDS)


@pytest.mark.parametrize("word", ["good", "movie", "the", "and", "nothingness", "know"])
def test_is_negation_rejects_ordinary_words(word):
    assert not is_negation(word)


def test_stopwords_are_matched_before_stemming():
    # "was" stems to "wa" and "has" to "ha": the stopword check must see the raw word.
    tokens = TextNormalizer(TextConfig(stem=True, remove_stopwords=True)).tokens("It was what he has done")
    assert tokens == ["done"]


def test_stopwords_are_kept_unless_asked():
    assert TextNormalizer(RAW).tokens("the and a") == ["the", "and", "a"]


# --- TextConfig --------------------------------------------------------------------------------------


@pytest.mark.parametrize("max_len", [0, -1, -400])
def test_config_rejects_max_len_below_one(max_len):
    with pytest.raises(ValueError, match="max_len"):
        TextConfig(max_len=max_len)


@pytest.mark.parametrize("truncate", ["middle", "", "Tail", "left"])
def test_config_rejects_unknown_truncate_side(truncate):
    with pytest.raises(ValueError, match="truncate"):
        TextConfig(truncate=truncate)


def test_config_accepts_the_smallest_length_and_both_sides():
    assert TextConfig(max_len=1, truncate="head").max_len == 1
    assert TextConfig(truncate="tail").truncate == "tail"


def test_config_dict_round_trip():
    config = TextConfig(stem=False, remove_stopwords=True, max_len=123, truncate="head")
    data = config.to_dict()
    assert data == {"stem": False, "remove_stopwords": True, "max_len": 123, "truncate": "head"}
    assert TextConfig.from_dict(data) == config


def test_config_from_dict_ignores_unknown_keys_and_defaults_missing_ones():
    config = TextConfig.from_dict({"max_len": 50, "unknown_future_field": 1})
    assert config == TextConfig(max_len=50)


def test_config_from_dict_still_validates():
    with pytest.raises(ValueError):
        TextConfig.from_dict({"max_len": 0})


def test_config_is_frozen():
    from dataclasses import FrozenInstanceError

    with pytest.raises(FrozenInstanceError):
        TextConfig().max_len = 5


# --- the stem cache ----------------------------------------------------------------------------------


def test_cache_stays_bounded_and_results_stay_correct(monkeypatch):
    monkeypatch.setattr(text_module, "_MAX_CACHE_ENTRIES", 16)
    normalizer = TextNormalizer(TextConfig(stem=True, remove_stopwords=True))
    reference = TextNormalizer(TextConfig(stem=True, remove_stopwords=True))
    words = [f"word{i}ing" for i in range(200)] + ["the", "movies", "not"]
    sizes = []
    outputs = []
    for word in words:
        outputs.extend(normalizer.tokens(word))
        sizes.append(len(normalizer._cache))
    assert max(sizes) <= 16
    assert len(set(words)) > 16  # the bound really was exercised
    monkeypatch.setattr(text_module, "_MAX_CACHE_ENTRIES", 10_000)
    assert outputs == reference.tokens(" ".join(words))
    assert outputs[-2:] == ["movi", "not"]


def test_cache_reuses_results_for_repeated_words():
    normalizer = TextNormalizer()
    normalizer.tokens("movies movies movies loved")
    assert len(normalizer._cache) == 2
