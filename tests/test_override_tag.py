"""The override tag in the Subject (RRP 1.2): parsed, judged by the engine, removed from copies;
and the manager recorded on a staff account."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from email.header import Header
from email.policy import default as default_policy
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.stages.copies import HeaderError, without_override_tags
from gateway.stores.users import UserError, UserStore
from policies.header_signals import strip_subject_tags, subject_overrides
from policies.model import Override, Role, Snapshot, Verdict, Verification
from tests.test_engine_evaluate import NOW, _run, message
from transports.database import Database

TAG = "override"
REASON = "the court asked for both siblings' reports together"
SUBJECT = f"Reports [override other-case-information: {REASON}] for Monday"
TWO_CASES = "Joint hearing for ZC12C00123 and ZC12C00456."
PASSWORD = "correct horse battery staple"


def _decoded(raw_field: bytes) -> str:
    value = raw_field.partition(b":")[2].decode().replace("\r\n", "").strip()
    return str(default_policy.header_factory("subject", value))


# ---- the parser (pure) -------------------------------------------------------------------


def test_tag_is_parsed_anywhere_in_the_subject_in_any_case() -> None:
    """Rule id lower-cased, justification with its whitespace squashed, position free."""
    assert subject_overrides(SUBJECT, TAG) == (Override("other-case-information", REASON),)
    shouty = f"[ OVERRIDE Other-Case-Information :  {REASON}  ]"
    assert subject_overrides(shouty, TAG) == (Override("other-case-information", REASON),)
    assert subject_overrides("Reports for Monday", TAG) == ()
    assert subject_overrides("[overrides x: not our tag at all]", TAG) == ()
    assert subject_overrides(f"[waiver fax: {REASON}]", "waiver") == (Override("fax", REASON),)


def test_strip_keeps_everything_but_the_tag() -> None:
    """Removing a tag leaves one space between the words it separated, none at the ends."""
    assert strip_subject_tags(SUBJECT, TAG) == "Reports for Monday"
    assert strip_subject_tags(f"[override a: {REASON}] Reports", TAG) == "Reports"
    assert strip_subject_tags(f"Reports  [override a: {REASON}]", TAG) == "Reports"
    assert strip_subject_tags("Reports [draft] v2", TAG) == "Reports [draft] v2"


@given(st.text(max_size=300), st.sampled_from(["override", "waiver", "x-1"]))
def test_parser_never_raises_and_strip_leaves_no_tag(subject: str, tag: str) -> None:
    """On arbitrary subjects the parser never raises, and a stripped subject shows no tag."""
    found = subject_overrides(subject, tag)
    stripped = strip_subject_tags(subject, tag)
    assert subject_overrides(stripped, tag) == ()
    assert all(o.rule_id == o.rule_id.lower() for o in found)
    assert len(stripped) <= len(subject)


# ---- the engine ---------------------------------------------------------------------------


def _decide(subject: str) -> tuple[Verdict, list[str], list[str]]:
    clerk = "clerk@smith-law.co.uk"
    snapshot = Snapshot(now=NOW, verified=(Verification(clerk, None, Role.PROFESSIONAL),))
    decision = _run(message(TWO_CASES, subject=subject, to=clerk), [clerk], snapshot)
    return decision.verdict, [o.rule_id for o in decision.overrides_applied], decision.reasons()


def test_tag_lifts_the_other_cases_refusal() -> None:
    """A justified tag for an overridable rule lifts it, as the header does."""
    verdict, applied, _ = _decide(SUBJECT)
    assert verdict is Verdict.DELIVER and applied == ["other-case-information"]


def test_refusal_tells_how_to_add_the_tag() -> None:
    """Without a tag, the sentence the sender reads shows the tag to type."""
    verdict, _, reasons = _decide("Reports for Monday")
    assert verdict is Verdict.REFUSE
    assert "[override other-case-information: your reason]" in reasons[0]


def test_tag_for_a_rule_that_cannot_be_overridden_has_no_effect() -> None:
    """The refusal stands and the sender reads that the named rule cannot be overridden."""
    verdict, applied, reasons = _decide(f"Reports [override fax: {REASON}]")
    assert verdict is Verdict.REFUSE and applied == []
    assert "The override for fax was not applied: that rule cannot be overridden." in reasons


def test_too_short_justification_is_not_applied() -> None:
    """Below the policy's minimum the refusal stands, and the sender is told the minimum."""
    verdict, applied, reasons = _decide("Reports [override other-case-information: court]")
    assert verdict is Verdict.REFUSE and applied == []
    assert any("justification must be at least 15 characters" in r for r in reasons)


# ---- removing the tag from the raw Subject --------------------------------------------------


def test_raw_subject_loses_only_the_tag_bytes() -> None:
    """Outside encoded words the rest of the field is byte-identical, folds included."""
    field = b"Subject: Reports =?utf-8?q?f=C3=BCr?= Monday\r\n [override other-case-info: x y]\r\n"
    assert without_override_tags(field, TAG) == b"Subject: Reports =?utf-8?q?f=C3=BCr?= Monday\r\n"
    folded = (b"Subject: [override other-case-information: the court asked\r\n for both]"
              b"\r\n Reports\r\n")
    assert without_override_tags(folded, TAG) == b"Subject: Reports\r\n"
    plain = b"Subject: Reports\r\n\tfor Monday\r\n"
    assert without_override_tags(plain, TAG) is plain


def test_tag_inside_an_encoded_word_is_removed_and_the_rest_re_encoded() -> None:
    """A tag inside RFC 2047 encoded words is removed and the Subject re-encoded correctly."""
    text = f"Rapport für Montag {SUBJECT[8:]}"
    encoded = Header(text, "utf-8").encode(linesep="\r\n")
    rewritten = without_override_tags(f"Subject: {encoded}\r\n".encode(), TAG)
    assert _decoded(rewritten) == "Rapport für Montag for Monday"
    assert b"override" not in rewritten and rewritten.isascii()
    straddling = b"Subject: =?utf-8?q?R=C3=A9port_=5Boverride?= fax: the court asked us]\r\n"
    assert _decoded(without_override_tags(straddling, TAG)) == "R\u00e9port"
    eight_bit = b"Subject: \xff =?utf-8?q?=5Boverride_fax:_abcdefghijkl=5D?=\r\n"
    assert without_override_tags(eight_bit, TAG) == b"Subject: =?utf-8?b?77+9?=\r\n"  # U+FFFD


def test_rewrite_that_would_write_a_line_break_or_an_overlong_line_is_refused() -> None:
    """A decoded line break, or lines joined beyond 998 octets: refused, never written."""
    injected = (b"Subject: =?utf-8?q?A=0D=0ABcc:_x@evil.example_=5Boverride_fax:_abcdefghijkl"
                b"=5D?=\r\n")
    with pytest.raises(HeaderError):
        without_override_tags(injected, TAG)
    long = b"Subject: " + b"a" * 600 + b"\r\n [override fax: " + b"b" * 20 + b"]\r\n " + \
        b"c" * 600 + b"\r\n"
    with pytest.raises(HeaderError):
        without_override_tags(long, TAG)


# ---- the manager on a staff account -------------------------------------------------------


def test_manager_is_stored_checked_and_changed(tmp_path: Path) -> None:
    """`manager` is a normalised address, never the user's own, and can be set or cleared."""
    store = UserStore(Database.open(tmp_path))
    try:
        user = store.add("jo@cafcass.gov.uk", PASSWORD, manager="Boss@Cafcass.gov.uk")
        assert user.manager == "boss@cafcass.gov.uk"
        stored = store.get("jo@cafcass.gov.uk")
        assert stored is not None and stored.manager == "boss@cafcass.gov.uk"
        assert store.set_manager("jo@cafcass.gov.uk", "").manager == ""
        with pytest.raises(UserError, match="own manager"):
            store.set_manager("jo@cafcass.gov.uk", "jo@cafcass.gov.uk")
        with pytest.raises(UserError, match="no account"):
            store.set_manager("al@cafcass.gov.uk", "boss@cafcass.gov.uk")
    finally:
        store.close()


def test_store_made_before_the_manager_column_gains_it(tmp_path: Path) -> None:
    """An existing database without `manager` (nor a schema version) is migrated on opening;
    its accounts keep working."""
    path = tmp_path / "casegate.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE staff_user (address TEXT PRIMARY KEY, password_hash TEXT NOT "
                   "NULL, roles TEXT NOT NULL, send_as TEXT NOT NULL, disabled INTEGER NOT NULL "
                   "DEFAULT 0, created TEXT NOT NULL)")
        db.execute("INSERT INTO staff_user VALUES ('jo@cafcass.gov.uk', 'x', '[\"staff\"]', "
                   "'[]', 0, '2026-01-01')")
    db.close()
    store = UserStore(Database.open(tmp_path))
    try:
        migrated = store.get("jo@cafcass.gov.uk")
        assert migrated is not None and migrated.manager == ""
        assert store.set_manager("jo@cafcass.gov.uk", "boss@cafcass.gov.uk").manager
    finally:
        store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM schema_version WHERE component = 'users'"
                          ).fetchone() == (1,)
    db.close()


def test_cli_add_with_manager_and_set_manager(tmp_path: Path) -> None:
    """`users add --manager` and `users set-manager` record the manager; `list` shows it."""
    def casegate(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gateway", *args, "--data",
                               str(tmp_path / "data")], input=stdin, capture_output=True,
                              text=True, timeout=60, check=False)

    added = casegate("users", "add", "jo@cafcass.gov.uk", "--manager", "boss@cafcass.gov.uk",
                     stdin=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    changed = casegate("users", "set-manager", "jo@cafcass.gov.uk", "lead@cafcass.gov.uk")
    assert changed.returncode == 0, changed.stderr
    listing = casegate("users", "list")
    assert listing.stdout.splitlines() == [
        "jo@cafcass.gov.uk\tstaff\t-\tenabled\tmanager=lead@cafcass.gov.uk"]
