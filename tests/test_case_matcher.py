"""The case registry's matcher (policies/cases.py): the [[match]] rows of
tests/cases/case_registry.toml, the keyed hashing the store relies on, and what an index holds."""

from __future__ import annotations

import hashlib
import hmac
from datetime import date
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies import cases
from policies.cases import (
    CaseIndex,
    CaseMatches,
    CasePerson,
    PersonRole,
    RecordKey,
    tokens,
)
from policies.content_rules import ContentRules
from policies.identifiers import compile_cues
from policies.normalise import fold
from tests import case_matcher_reference as reference
from tests.caseregistry import KEY, TABLE, index

# Every test here runs under each scan engine (policies/scan.py).
pytestmark = pytest.mark.usefixtures("each_scan_engine")

INDEX = index()
CUES = compile_cues(ContentRules.__dataclass_fields__["date_of_birth_cues"].default)  # type: ignore[arg-type]


def _match(row: dict[str, Any]) -> CaseMatches:
    return INDEX.match([fold(row["text"])], dob_cues=CUES, sender_name=row.get("sender_name", ""))


@pytest.mark.parametrize("row", TABLE["match"], ids=lambda r: r["name"][:70])
def test_match_row(row: dict[str, Any]) -> None:
    """Each row's text is tied to the cases, people and details it lists, and no others."""
    found = _match(row)
    expect = row["expect"]
    assert list(found.case_numbers) == expect["cases"]
    assert [p.person_id for p in found.people] == expect.get("people", [])
    if "signals" in expect:
        assert [p.signal.value for p in found.people] == expect["signals"]
    assert [d.detail_id for d in found.details] == expect.get("details", [])
    assert list(found.possible_cases) == expect.get("possible", [])


def test_the_rows_cover_every_signal() -> None:
    """Full name, first name with a relationship word, first name with the case, date of birth,
    a detail and an ambiguous name all appear among the rows' results."""
    signals = {p.signal.value for row in TABLE["match"] for p in _match(row).people}
    assert signals == {"full-name", "first-name-relationship", "first-name-with-case",
                       "date-of-birth"}
    assert any(_match(row).details for row in TABLE["match"])
    assert any(_match(row).possible_cases for row in TABLE["match"])


def test_several_texts_are_one_message() -> None:
    """A first name in the body and its relation's full name in an attachment name go together,
    as classification passes every text of one message."""
    found = INDEX.match([fold("Mark Robinson notes.pdf"), fold("Ellie is settling in well.")])
    assert [p.person_id for p in found.people] == ["P1", "P2"]


@pytest.mark.parametrize("text", [
    "Ellie Robinson", "ELLIE ROBINSON", "Éllie Robinson", "Ellie\nRobinson", "Ellie  Robinson",
    "Ｅｌｌｉｅ Ｒｏｂｉｎｓｏｎ",  # fullwidth letters, folded by NFKC
    "Еllie Robinson",  # a Cyrillic Е, folded as a confusable
])
def test_a_name_is_the_same_name_however_written(text: str) -> None:
    """Case, accents, spacing, line breaks, fullwidth and lookalike letters do not matter."""
    assert INDEX.match([fold(text)]).case_numbers == ("ZC12C00123",)


@pytest.mark.parametrize(("a", "b"), [
    ("Flat 2, 14 Acacia Avenue, Leeds LS1 4AB", "flat 2 14 ACACIA avenue\nleeds\nls14ab"),
    ("Flat 2, 14 Acacia Avenue, Leeds LS1 4AB", "Flat 2 / 14 Acacia Avenue / Leeds / L S1 4AB"),
    ("O'Brien", "O’Brien"),
    ("Zoë", "ZOE"),
    ("LS1 4AB", "ls14ab"),
    ("SW1A 1AA", "sw1a1aa"),
])
def test_record_key_hashes_normalised_forms(a: str, b: str) -> None:
    """The store's hash of a detail is the matcher's hash of it written any other way
    (postcodes spaced or not). ("L S1 4AB" is not a postcode, so it differs.)"""
    same = KEY.detail(a) == KEY.detail(b)
    assert same is ("L S1" not in b)


def test_record_key_is_keyed_and_refuses_what_it_cannot_hash() -> None:
    """Another key gives other hashes; a one-word name and an empty detail are refused."""
    other = RecordKey(bytes(32))
    assert other.name("Ellie Robinson") != KEY.name("Ellie Robinson")
    assert len(KEY.name("Ellie Mae Robinson")) == 3
    assert all(len(h) == 32 for h in KEY.name("Ellie Robinson"))
    assert KEY.date_of_birth(date(2015, 4, 3)) != other.date_of_birth(date(2015, 4, 3))
    with pytest.raises(ValueError):
        KEY.name("Ellie")
    with pytest.raises(ValueError):
        KEY.detail(" ,. ")
    with pytest.raises(ValueError):
        RecordKey(b"short")


@given(st.binary(min_size=32, max_size=32), st.text(max_size=40))
@settings(max_examples=200, deadline=None)
def test_a_token_hash_is_hmac_sha256_over_its_domain(key: bytes, token: str) -> None:
    """A token's hash, made from keyed states set up once, is HMAC-SHA256 of the token
    domain and the token's UTF-8 bytes: what the store holds from before (and what
    `hmac.digest` gives) is still what the matcher looks up."""
    expected = hmac.digest(key, b"token\x00" + token.encode("utf-8"), hashlib.sha256)
    assert RecordKey(key).token(token) == expected


def test_tokens_split_possessives_and_drop_punctuation() -> None:
    assert tokens("Ellie's mum, O'Brien-Smith!") == ["ellie", "'s", "mum", "obrien", "smith"]


def test_an_index_holds_hashes_only() -> None:
    """Nothing recorded in plain text reaches the index (its people, details, tables; the
    shields hold staff addresses, which are not case content)."""
    held = repr({k: v for k, v in vars(INDEX).items() if k != "_shields"}).lower()
    for p in TABLE["person"]:
        for word in p["name"].lower().split():
            assert word not in held
    assert "acacia" not in held and "meadowbank" not in held and "2015" not in held


def test_a_match_holds_metadata_only() -> None:
    """What a match returns names cases, ids, roles, kinds and signals: never matched text."""
    found = INDEX.match([fold("Ellie's mum lives at Flat 2, 14 Acacia Avenue, Leeds LS1 4AB")])
    assert found.people and found.details
    held = repr(found).lower()
    assert "ellie" not in held and "acacia" not in held


def test_the_empty_index_matches_nothing() -> None:
    """CaseIndex.EMPTY (no registry, no key) finds nothing and reads nothing."""
    assert CaseIndex.EMPTY.match(["Ellie Robinson"]) == CaseMatches.NONE
    assert CaseIndex.EMPTY.is_empty
    assert CaseIndex.EMPTY.shielded("ZC12C00789") is None
    assert INDEX.shielded("ZC12C00789") is not None


def test_matching_is_one_pass_whatever_the_number_of_people() -> None:
    """The work per text does not grow with the registry: the same text against an index of
    one person and of 20,000 makes the same number of keyed-hash computations (one per
    distinct word), and finds the one person in both."""
    key = RecordKey(bytes(range(1, 33)))
    one = CasePerson("ZC12C00123", "P1", PersonRole.CHILD, key.name("Ellie Robinson"), None, "ER")
    many = [one] + [CasePerson(f"ZC12C{n:05d}", f"P{n}", PersonRole.PARTY,
                               key.name(f"Given{n} Family{n}"), None, "GF")
                    for n in range(2, 20_001)]
    text = fold("Ellie Robinson's mum rang about contact. " * 50)
    counts = []
    for people in ([one], many):
        built = CaseIndex.build(key, people, (), ())
        key.token.cache_clear()  # type: ignore[attr-defined]
        found = built.match([text])
        counts.append(key.token.cache_info().misses)  # type: ignore[attr-defined]
        assert [p.person_id for p in found.people] == ["P1"]
    assert counts[0] == counts[1] == len(set(tokens(text)))


# Pieces of case mail: the table's texts, the registry's names and details word by word, and
# what stands between them (relationship words, commas, sentence ends, blank lines).
WINDOW_PIECES = [*(row["text"] for row in TABLE["match"]),
                 *(w for p in TABLE["person"] for w in p["name"].split()),
                 *(w for d in TABLE["detail"] for w in d["text"].split()),
                 "mum", "brother", "sister of", "'s", "and", ",", ".", "\n", "\n\n",
                 "born 03/04/2015", "DOB: 14/02/2012"]


@pytest.mark.parametrize(("window", "text_slice"), [(1, 1), (2, 5), (3, 64), (7, 1 << 16)])
@settings(max_examples=400)
@given(st.lists(st.sampled_from(WINDOW_PIECES), max_size=80).map(" ".join))
def test_a_long_text_read_a_window_of_tokens_at_a_time_matches_as_one_pass(
        window: int, text_slice: int, text: str) -> None:
    """The tokens of a text are read in windows (each with the tokens around it that a name, a
    detail or a relationship word needs), so that a long text's tokens are never all held at
    once: what the windows find together, however small, is what one window over all of them
    finds: the same names, details, first names, pairs and dates of birth."""
    folded = fold(text)
    whole = cases._Found()
    INDEX._scan(folded, whole, CUES)
    windowed = cases._Found()
    with mock.patch.object(cases, "_WINDOW_TOKENS", window), \
            mock.patch.object(cases, "_TOKEN_SLICE", text_slice):
        INDEX._scan(folded, windowed, CUES)
    assert windowed == whole


# ASCII text dense in what the regex reads with care: apostrophes (a possessive, one inside a
# word, one alone), "_" (a word character, but not a token's), sentence ends, commas, blank lines
# and white space of every kind.
ASCII_PIECES = ["ellie", "s", "x1", "Z", "'", "'s", "''", "o'brien", "s'", "_", ",", ".", ";",
                " ", "  ", "\n", "\n\n", " \n \n", "\t", "\x0b", "\x1c", "-", "/", "(", "7"]


@settings(max_examples=2000)
@given(st.lists(st.sampled_from(ASCII_PIECES), max_size=40).map("".join))
def test_ascii_text_is_read_into_tokens_as_the_regex_reads_it(text: str) -> None:
    """`_ascii_gaps_and_words` (str.split at C speed) gives the tokens `_GAP_TOKEN` gives, with
    apostrophes inside a word dropped, and the same kind of separator before each."""
    pairs = cases._GAP_TOKEN.findall(text)
    expected = [(cases._gap_kind(gap), word if "'" not in word or word == cases.POSSESSIVE
                 else word.replace("'", "")) for gap, word in pairs]
    gaps, words = cases._ascii_gaps_and_words(text)
    assert list(zip(map(cases._gap_kind, gaps), words, strict=True)) == expected


# A registry whose names, first names, details and dates of birth overlap as badly as they can:
# first names in several cases, a surname that is a first name and a detail's word, a name with
# a number in it, a detail inside another, a detail of one word, one date of birth in two cases.
DENSE_PEOPLE = [*TABLE["person"],
                {"case": "ZC12C00321", "role": "child", "name": "Ellie Jones", "dob": "2015-04-03"},
                {"case": "ZC12C00123", "role": "child", "name": "Jack Robinson",
                 "dob": "2016-09-01"},
                {"case": "ZC12C00654", "role": "party", "name": "Mark Leeds"},
                {"case": "ZC12C00654", "role": "child", "name": "Robinson Ellies 14"},
                {"case": "ZC12C00321", "role": "party", "name": "Sarah Jones", "dob": "1986-11-20"}]
DENSE_DETAILS = [*TABLE["detail"],
                 {"case": "ZC12C00321", "kind": "address", "text": "14 Acacia Avenue"},
                 {"case": "ZC12C00654", "kind": "school", "text": "Meadowbank"},
                 {"case": "ZC12C00654", "kind": "other", "text": "2 14 Robinson"}]


def _dense(index_class: Any) -> Any:
    return index_class.build(
        KEY,
        (CasePerson(p["case"], f"P{n}", PersonRole(p["role"]), KEY.name(p["name"]),
                    KEY.date_of_birth(date.fromisoformat(p["dob"])) if "dob" in p else None,
                    "") for n, p in enumerate(DENSE_PEOPLE, start=1)),
        (cases.ConfidentialDetail(d["case"], f"D{n}", cases.DetailKind(d["kind"]),
                                  KEY.detail(d["text"]), ())
         for n, d in enumerate(DENSE_DETAILS, start=1)),
        ())


DENSE = _dense(CaseIndex)
REFERENCE = _dense(reference.ReferenceIndex)
DENSE_PIECES = [
    *(w for p in DENSE_PEOPLE for w in p["name"].split()), *(p["name"] for p in DENSE_PEOPLE),
    *(w for d in DENSE_DETAILS for w in d["text"].split()), *(d["text"] for d in DENSE_DETAILS),
    "Ellies", "Marks", "mum", "brother", "sister", "father", "carer", "of", "to", "and", "her",
    "'s", "'", "’s", "_", ",", ".", ";", "\n", "\n\n", "  ", "-", "ls14ab", "LS1  4AB", "hg12ab",
    "03/04/2015", "3/4/15", "3rd April 2015", "2015-04-03", "April 3, 2015", "20.11.1986",
    "20 Nov 1986", "01/09/2016", "1st Sept. 2016", "31/02/2015", "20/01/2012", "14", "2",
    "DOB", "DOB:", "D.O.B", "born", "born on", "date of birth", "Zoë", "Éllie", "the", "at",
    "12345", "10am", "2026",
]


@pytest.mark.parametrize(("window", "piece", "joiner"),
                         [(3, 5, " "), (1 << 11, 1 << 16, " "), (7, 11, "")])
@settings(max_examples=600)
@given(pieces=st.lists(st.lists(st.sampled_from(DENSE_PIECES), max_size=60), min_size=1,
                       max_size=3),
       sender=st.sampled_from(["", "Mark Robinson", "Jones, Sarah", "Ellie"]),
       dated=st.booleans())
def test_the_matcher_answers_as_it_did_before_it_was_made_faster(
        window: int, piece: int, joiner: str, pieces: list[list[str]], sender: str,
        dated: bool) -> None:
    """On text dense with names, first names, relationship words, possessives, details,
    postcodes, dates and cues, read against a registry where all of them overlap, the matcher
    finds what the frozen copy of it before it was made faster finds
    (tests/case_matcher_reference.py): the same raw hits and the same answer; with windows of
    a few tokens and the text normalised a few characters at a time too (`piece`), and with
    the pieces run together (no blank between them: the dates' neighbourhoods then begin at
    other characters)."""
    folded = [fold(joiner.join(p)) for p in pieces]
    flags = [dated] * len(folded)
    with mock.patch.object(cases, "_WINDOW_TOKENS", window), \
            mock.patch.object(cases, "_NORMALISE_SLICE", piece):
        assert DENSE.match(folded, dob_cues=CUES, sender_name=sender, dated=flags) \
            == REFERENCE.match(folded, dob_cues=CUES, sender_name=sender, dated=flags)
        for text in folded:
            new, old = cases._Found(), reference._Found()
            DENSE._scan(text, new, CUES, dated)
            REFERENCE._scan(text, old, CUES, dated)
            assert vars(new) == vars(old)


@pytest.mark.parametrize("text", [
    "01/09/2016ls14ab the Jack",  # a postcode glued to the date is not spaced: Jack is near
    "Jack, DOB 01/09/2016 hg12ab ls14ab.",
    "x" * 95 + "ls14ab born 01/09/2016 Jack",  # a postcode where the stretch before is cut
    "hg12ab" * 30 + " DOB: 20 Nov 1986 (Sarah)",
])
def test_a_date_is_read_in_what_the_whole_text_normalised_holds_around_it(text: str) -> None:
    """A date found in the folded text is read for its cue and its neighbouring words in the
    normalised text around it (`_ascii_around`): what the matcher before it read in the whole
    normalised text."""
    new, old = cases._Found(), reference._Found()
    DENSE._scan(fold(text), new, CUES)
    REFERENCE._scan(fold(text), old, CUES)
    assert vars(new) == vars(old)
    assert new.dob_any


@settings(max_examples=1000)
@given(st.text(alphabet="ab LS14Ab12cd3é\u212a,.-\n'_9", max_size=40))
def test_postcodes_are_spaced_only_where_a_letter_stands_before_a_digit(text: str) -> None:
    """The postcode pattern is tried only where an ASCII letter stands just before a digit
    (every postcode has one in its first three characters): the same normalised text as
    substituting everywhere."""
    folded = text.casefold()
    assert cases._spaced_postcodes(folded) == cases._POSTCODE.sub(r"\1 \2", folded)
    if folded.isascii():
        assert cases._normalised(text) == cases._POSTCODE.sub(r"\1 \2", folded)


@settings(max_examples=300)
@given(st.lists(st.sampled_from(["ls14ab", "ls1 4ab", "sw1a1aa", "zc12c00123", "b1", "a11aa",
                                 " ", "\n", "x", "_", "9", "é"]), max_size=30).map("".join),
       st.integers(min_value=0, max_value=600))
def test_postcodes_in_a_long_text_are_spaced_as_by_substituting_everywhere(
        text: str, prose: int) -> None:
    """In long text with few places a postcode may start, each is tried on its own (and in
    text with many, the whole text is substituted): the same text either way."""
    long = "the case notes " * prose + text + " and more" * (prose // 3)
    assert cases._spaced_postcodes(long) == cases._POSTCODE.sub(r"\1 \2", long)
