"""policies/restricted.py's fast paths give exactly what the simple ones gave (issue 14).

Differential: `words` against the straightforward version it replaced, and the phrase search
fed in slices (`_hits`, to keep pyahocorasick's 4-bytes-a-character copy small) against one
pass over the whole text, on a seeded corpus of agency-check mail (tests/corpus_checks.py), on
seeded random texts, and with every phrase placed across, at and beside a slice's edge; then
the signals of long texts read with small slices against one pass.
"""

from __future__ import annotations

import random
import re
import tracemalloc
from collections.abc import Iterator
from email import message_from_bytes
from functools import cache
from itertools import pairwise
from typing import Any

import pytest

from policies import restricted
from policies.restricted import Segment
from tests.corpus_checks import corpus
from tests.fixtures_content import default_rules

MARKS = default_rules().agency_checks
LEGAL = default_rules().legal_advice

_NOT_WORD = re.compile(r"[^a-z0-9]+")
_PLURAL = re.compile(r"s(?= |$)(?<=[a-z0-9]{2}[a-rt-z0-9]s)")


def reference_words(text: str) -> str:
    """`words` as first written: str operations and regexes only."""
    lowered = text.lower().replace("&", " and ")
    return _PLURAL.sub("", _NOT_WORD.sub(" ", lowered).strip())


def one_pass(automaton: Any, padded: str) -> list[tuple[int, int, str, frozenset[str]]]:
    """`_hits` as first written: the automaton over the whole text at once."""
    if not len(automaton):
        return []
    return [(last - len(phrase), last, phrase, groups)
            for last, (phrase, groups) in automaton.iter(padded)]


@cache
def corpus_texts() -> tuple[str, ...]:
    """The text parts of two seeds' corpus messages (attached messages' parts included)."""
    texts = []
    for seed in (1, 2):
        for sample in corpus(seed, negatives=150, positives=80):
            for part in message_from_bytes(sample.raw).walk():
                payload = part.get_payload(decode=True)
                if part.get_content_maintype() == "text" and isinstance(payload, bytes):
                    texts.append(payload.decode("utf-8", "replace"))
    return tuple(texts)


def random_texts(seed: int, count: int) -> Iterator[str]:
    """Texts of phrase words, case changes, punctuation runs, "&", plurals and non-ASCII."""
    r = random.Random(seed)
    vocabulary = [w for phrase in (*MARKS.outcomes, *MARKS.origin_marks, *MARKS.results,
                                   *MARKS.handing_over, *LEGAL.markings)
                  for w in phrase.split()]
    vocabulary += ["cats", "class", "bus", "its", "1234s", "Ks", "ss", "s", "&", "x"]
    gaps = [" ", "  ", ", ", ".\n", " - ", "\t", "/", "&", "’", " \u00e9 ", "\u212a", "::"]
    for _ in range(count):
        pieces = []
        for _ in range(r.randrange(1, 60)):
            word = r.choice(vocabulary)
            word = r.choice([word, word.upper(), word.title(), word + "s", word + "S"])
            pieces += [word, r.choice(gaps)]
        yield "".join(pieces[:-1] if r.random() < 0.5 else pieces)


def test_words_matches_the_reference_on_the_corpus_and_random_texts() -> None:
    texts = [*corpus_texts(), *random_texts(7, 3000), "", " ", "&", "A&B", "Cats  & DOGS."]
    for text in texts:
        assert restricted.words(text) == reference_words(text), text
        ascii_only = text.encode("ascii", "ignore").decode("ascii")
        assert restricted.words(ascii_only) == reference_words(ascii_only), ascii_only


@pytest.mark.parametrize("slice_size", [1, 2, 3, 5, 17, 64])
def test_words_dropping_plurals_a_slice_at_a_time_is_one_pass(
        monkeypatch: pytest.MonkeyPatch, slice_size: int) -> None:
    """`_ascii_words` drops plurals a slice at a time, cut after a space: with slices far
    shorter than the texts, every cut (in a word, after "s", at the end) gives the same."""
    monkeypatch.setattr(restricted, "_WORDS_SLICE", slice_size)
    texts = [*random_texts(11, 800), "cats dogs", "cats  ", " boss buses its Ks", "s s s"]
    for text in texts:
        ascii_only = text.encode("ascii", "ignore").decode("ascii")
        assert restricted.words(ascii_only) == reference_words(ascii_only), ascii_only


@pytest.mark.parametrize("slice_size", [1, 2, 5, 17, 1 << 16])
def test_words_of_stretches_cut_anywhere_are_words_of_the_text(
        monkeypatch: pytest.MonkeyPatch, slice_size: int) -> None:
    """A long text's words are written from the stretches it is read in (a segment of a body,
    a subject before it, a record field's value in place of its line), a slice at a time, as
    pieces that are never joined: joined, they are `words` of the text, wherever the stretches
    and the slices are cut (in a word, in a run of blanks, beside "&" or a plural "s", in
    non-ASCII text); and the padded text read from the pieces (`_Padded`) is, slice by slice,
    the padded text joined."""
    monkeypatch.setattr(restricted, "_WORDS_SLICE", slice_size)
    r = random.Random(slice_size)
    for text in [*random_texts(13, 400), "cats dogs", "  cats  ", "s", "", "\u212a&s"]:
        cuts = sorted(r.sample(range(len(text) + 1), min(len(text) + 1, r.randrange(4))))
        ends = [0, *cuts, len(text)]
        host = f"<{text}>"  # each stretch read within a longer string
        spans = [(host, 1 + a, 1 + b) for a, b in pairwise(ends)]
        pieces = restricted._words_pieces(spans)
        assert "".join(pieces) == reference_words(text), (text, cuts)
        padded = restricted._Padded([" ", *pieces, " "])
        whole = f" {reference_words(text)} "
        assert len(padded) == len(whole)
        for _ in range(20):
            a, b = sorted(r.randrange(len(whole) + 2) for _ in range(2))
            assert padded[a:b] == whole[a:b]


@pytest.mark.parametrize("mark", ["> ", ">", "> > ", ">> ", "  > "])
def test_quote_marks_change_no_agency_signal(mark: str) -> None:
    """A text quoted in a reply gives the signals it gives unquoted: the record fields skip
    the marks at a line's start and `words` makes them spaces, so no copy of a long quoted
    text without its marks is made (issue 14: a quoted reply's memory)."""
    for text in [*corpus_texts(), *random_texts(5, 300)]:
        quoted = "\n".join(mark + line for line in text.split("\n"))
        for author in (restricted.OWN, "someone@example.org"):
            for phrases in (True, False):
                expected = restricted._agency_signals(
                    restricted.Segment(author, "", text), MARKS, True, phrases)
                assert restricted._agency_signals(
                    restricted.Segment(author, "", quoted), MARKS, True, phrases) == expected


def long_padded(seed: int, size: int) -> str:
    """Corpus texts in a seeded order, written by `words`, until `size` characters."""
    r = random.Random(seed)
    texts = list(corpus_texts())
    parts, length = [], 0
    while length < size:
        text = restricted.words(r.choice(texts))
        parts.append(text)
        length += len(text) + 1
    return f" {' '.join(parts)} "


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sliced_phrase_search_equals_one_pass_on_long_texts(seed: int) -> None:
    padded = long_padded(seed, 4 * restricted._HITS_SLICE + 1234)
    expected = one_pass(MARKS._automaton, padded)
    assert len(expected) > 100  # the corpus is full of phrases
    assert list(restricted._hits(MARKS._automaton, padded)) == expected


@pytest.mark.parametrize("slice_size", [16, 64])
def test_every_phrase_across_and_beside_a_slice_edge_is_found_once(
        slice_size: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each phrase put so that it ends from just before to just after each of two slice
    edges (so some straddle one, some are longer than a slice), in words of no phrase."""
    monkeypatch.setattr(restricted, "_HITS_SLICE", slice_size)
    phrases = sorted({phrase for _, (phrase, _) in MARKS._automaton.items()})
    longest = max(map(len, phrases)) + 2
    checked = 0
    for phrase in phrases:
        for edge in (slice_size, 2 * slice_size + longest):
            for shift in range(-longest, 3):
                end = edge + shift  # the index of the phrase's trailing space
                start = end - len(phrase)
                if start < 2:
                    continue
                padded = f" {'x' * (start - 2)} {phrase} {'y ' * (slice_size + longest)}"
                assert padded[start:end] == phrase
                expected = one_pass(MARKS._automaton, padded)
                assert (start, end, phrase) in [hit[:3] for hit in expected]
                assert list(restricted._hits(MARKS._automaton, padded)) == expected
                checked += 1
    assert checked > len(phrases)


@pytest.mark.parametrize(("slice_size", "words_slice"), [(16, 5), (64, 40), (997, 1 << 14)])
def test_phrases_found_in_the_words_as_they_are_written_are_those_of_one_pass(
        slice_size: int, words_slice: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The padded words given as parts as they are written (`_padded_parts`, never joined),
    cut anywhere, in slices of any size: joined, they are the padded text `_padded_words`
    gives; read by `_parts_hits`, the phrases of one pass over it, in its order."""
    monkeypatch.setattr(restricted, "_HITS_SLICE", slice_size)
    monkeypatch.setattr(restricted, "_WORDS_SLICE", words_slice)
    r = random.Random(slice_size)
    texts = list(corpus_texts())
    for text in [*r.sample(texts, 20), "\n\n".join(r.sample(texts, 30)), "", "  ", "s"]:
        cuts = sorted(r.sample(range(len(text) + 1), min(len(text) + 1, r.randrange(5))))
        spans = [(text, a, b) for a, b in pairwise([0, *cuts, len(text)])]
        parts = list(restricted._padded_parts(spans))
        padded = restricted._padded_words(spans)
        whole = padded[0:len(padded)]
        assert "".join(parts) == whole == f" {reference_words(text)} "
        assert list(restricted._parts_hits(MARKS._automaton, parts)) \
            == one_pass(MARKS._automaton, whole)
        # parts cut anywhere else, some of them empty
        at = sorted(r.choices(range(len(whole) + 1), k=r.randrange(6)))
        recut = [whole[a:b] for a, b in pairwise([0, *at, len(whole)])]
        assert list(restricted._parts_hits(MARKS._automaton, recut)) \
            == one_pass(MARKS._automaton, whole)


def test_the_agency_check_does_not_hold_a_long_text_s_words_whole() -> None:
    """The agency check reads a long text's words as they are written: held whole, with the
    pieces a regex substitution makes, they were 1.26 times 1 MB of case notes beside it for
    a moment; now a slice of them is (16K characters)."""
    note = ("Home visit today. Ellie's mum said the police checks came back with no trace "
            "and the school reports are good; the children's plans are on the file.\n")
    text = note * ((1 << 20) // len(note))
    piece = Segment("pc@kent.pnn.police.uk", "", text)
    restricted._agency_signals(piece, MARKS, own=False)  # warm: nothing cached is counted
    tracemalloc.start()
    try:
        restricted._agency_signals(piece, MARKS, own=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 0.3 * len(text), f"{peak / len(text):.2f}x the text"


@pytest.mark.parametrize("slice_size", [7, 50, 997])
def test_signals_of_long_texts_do_not_depend_on_the_slice(slice_size: int,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """`_agency_signals` of each corpus text and of long concatenations, read with a slice
    larger than any text (one pass, as before) and with small slices, agree."""
    r = random.Random(slice_size)
    texts = list(corpus_texts())
    long = ["\n\n".join(r.sample(texts, 40)) for _ in range(4)]
    cases = [(Segment(author, "", text), own)
             for text in [*texts[:300], *long]
             for author, own in ((restricted.OWN, True), ("pc@kent.pnn.police.uk", False))]
    monkeypatch.setattr(restricted, "_HITS_SLICE", 1 << 40)
    expected = [restricted._agency_signals(piece, MARKS, own=own) for piece, own in cases]
    assert any(expected)
    monkeypatch.setattr(restricted, "_HITS_SLICE", slice_size)
    assert [restricted._agency_signals(piece, MARKS, own=own) for piece, own in cases] \
        == expected


def joined(spans: list[restricted.Span]) -> str:
    return "".join(text[start:end] for text, start, end in spans)


def field_lines(seed: int, count: int) -> Iterator[str]:
    """Lines that are, nearly are, or are not record fields: labels in any case, after quote
    and list marks, with non-ASCII look-alikes (the Kelvin sign, the long s) and without."""
    r = random.Random(seed)
    labels = [*MARKS.record_fields, "Dear Ms Patel", "further to our call", "18:30"]
    for _ in range(count):
        label = r.choice(labels)
        label = r.choice([label, label.upper(), label.title(), label.replace("k", "\u212a"),
                          label.replace("s", "\u017f"), "\u00e9" + label])
        mark = r.choice(["", " ", "> ", "\t* ", "| ", "- ", "1. "])
        value = r.choice(["No trace", "", "Yes / No", "TBC", "12/03/2024", "see below"])
        yield f"{mark}{label}{r.choice(['', ' (s)', 's'])}{r.choice([':', ' :', ' -'])} {value}"


def test_skipping_lines_no_label_starts_changes_no_field_found() -> None:
    """`_sub_fields` with the labels' first letters (lines skipped) and without (every line
    with a colon tried), on corpus texts and on seeded field-like lines."""
    lines = list(field_lines(3, 4000))
    r = random.Random(5)
    texts = [*corpus_texts(), *("\n".join(r.sample(lines, 30)) for _ in range(300))]

    def value_only(match: re.Match[str]) -> str:
        return f"<{match.group(1)}|{match.group(2)}>"

    changed = 0
    for text in texts:
        whole = [(text, 0, len(text))]
        expected = joined(restricted._sub_fields(MARKS._fields, value_only, whole))
        assert joined(restricted._sub_fields(MARKS._fields, value_only, whole,
                                             MARKS._field_starts)) == expected
        changed += expected != text
    assert changed > 100


@pytest.mark.parametrize(("phrases", "looked_for"), [
    (["PNC number"], ["pnc", "number"]),  # three letters: looked for
    (["no trace"], ["trace"]),  # two letters: not
    (["further to your request"], ["further", "your", "request"]),  # "to": not
    (["not known to the police"], ["known", "police"]),  # common three-letter words: not
    (["the"], ["the"]),  # a phrase of common words only keeps them
    (["S47"], ["s47"]),
])
def test_the_phrase_gate_looks_for_telling_words(phrases: list[str],
                                                 looked_for: list[str]) -> None:
    gate = restricted.PhraseGate.of({"origin": phrases})
    assert [w.pattern for w in gate.words] == looked_for


@pytest.mark.parametrize(("text", "open_"), [
    ("our reference is SR/2025/0481 and the invoice number INV-20931", False),
    ("PNC number: 12/345678A", True),
    ("pnc NUMBER", True),
])
def test_a_number_alone_does_not_open_the_gate_of_pnc_number(text: str, open_: bool) -> None:
    gate = restricted.PhraseGate.of({"origin": ["PNC number", "CRO number"]})
    assert gate.open(lambda word: word.search(text) is not None) is open_
