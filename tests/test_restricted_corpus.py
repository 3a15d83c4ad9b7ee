"""False positives and detection of the agency-check recogniser on the generated corpus.

tests/corpus_checks.py builds ordinary mail that only mentions checks, and original results in
every way they travel; these tests hold the figures measured when the signals were chosen
(policies/restricted.py says how), so a change of phrase lists that lets ordinary mail be
refused, or originals through, fails here. `bench/bench_agency_checks.py` prints the figures
with their breakdown.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from functools import cache
from importlib import resources

import pytest

from policies.content import classify_message
from policies.engine import decide
from policies.loader import EMBEDDED_FILES, Policy, parse_policy
from policies.model import Snapshot
from tests.corpus_checks import COUNCILS, STAFF, Sample, holdout
from tests.corpus_checks import corpus as generate

SNAPSHOT = Snapshot(now=datetime(2026, 1, 5, tzinfo=UTC))


@cache
def policy(councils_listed: bool) -> Policy:
    """The embedded policy; with the corpus's councils listed as check agencies, as an
    organisation that works with them would list them."""
    data = resources.files("policies").joinpath("data")
    documents = [(name, data.joinpath(name).read_text("utf-8")) for name in EMBEDDED_FILES]
    if councils_listed:
        listed = ", ".join(f'"{domain}"' for _, domain in COUNCILS)
        documents.append(("org.toml", f"[domains]\ncheck_agencies = {{ extend = [{listed}] }}\n"))
    return parse_policy(documents)


@cache
def corpus(seed: int) -> tuple[Sample, ...]:
    return tuple(generate(seed))


def found(sample: Sample, councils_listed: bool = False) -> bool:
    """Whether the message is decided an original agency check result (and so refused)."""
    chosen = policy(councils_listed)
    facts = classify_message(sample.raw, chosen.content, time.monotonic)
    decision = decide(facts, STAFF, sample.recipients, chosen, SNAPSHOT)
    refused = any(r.rule.id == "agency-check-result-leaves" for r in decision.refusals)
    assert refused is (decision.facts.information_type == "agency-check-result")
    return refused


@pytest.mark.parametrize("seed", [1, 2])
def test_ordinary_mail_that_mentions_checks_is_never_refused(seed: int) -> None:
    """600 ordinary messages: requests and their blank forms, chasers, letters to parents,
    Cafcass's safeguarding letters and analyses, forwarded acknowledgements, court orders,
    solicitors' letters, other senses of "check": none is taken for a result."""
    samples = [s for s in corpus(seed) if not s.positive]
    assert len(samples) == 600
    wrong = [(s.kind, s.channel) for s in samples if found(s, councils_listed=True)]
    assert wrong == []


@pytest.mark.parametrize("seed", [1, 2])
def test_original_results_are_refused(seed: int) -> None:
    """300 originals: at least 93% with the default lists (the misses are councils' emails
    from plain gov.uk addresses, which the organisation lists), 99% with the councils listed."""
    samples = [s for s in corpus(seed) if s.positive]
    by_default = sum(found(s) for s in samples)
    listed = sum(found(s, councils_listed=True) for s in samples)
    assert by_default >= 0.93 * len(samples)
    assert listed >= 0.99 * len(samples)
    missed = {s.kind for s in samples if not found(s)}
    assert missed <= {"council-email"}


def test_hand_written_hold_out_sets() -> None:
    """Mail in words nobody tuned the lists on: no false positive in either set; the first
    set was used to add vocabulary (9 of 10 found after), the second measured untouched but
    for the plural rule (6 of 10: prose without system names, caveats or record fields, and a
    quotation pasted into the sender's own words, are the misses)."""
    for batch, least in ((1, 9), (2, 6)):
        samples = holdout(batch)
        assert not [s for s in samples if not s.positive and found(s)]
        assert sum(found(s) for s in samples if s.positive) >= least
