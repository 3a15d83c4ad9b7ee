"""The case registry (issue 16): people of a case, confidential details, shielded cases.

Staff record who belongs to a case (IA 3.3: names identify), what about it is confidential and
who may receive it (RRP 2.2), and which cases are shielded and who may handle them (RRP 5.1,
5.2). The gateway then recognises mail about the case even when it names no case number.

Privacy of the registry itself (issue 16, item 5): names, dates of birth and detail texts never
reach the database. They are hashed here with `policies.cases.RecordKey` (HMAC-SHA256 of the
normalised form, under the key in `case-index.key`, 32 random bytes in the data directory, mode
0600, made on first use) and only the hashes are stored, with what a person needs to recognise
an entry: initials, role or kind, an id (`P7`, `D3`), who recorded it and when. Removing an entry
keeps that record and who removed it, and erases its hashes (on SQLite `secure_delete` overwrites
them in the file; PostgreSQL has no equivalent: see `CaseStore.__init__`).

The engine never reads this module: `CaseStore.index()` hands out an immutable
`policies.cases.CaseIndex`, built once per database version and kept while nothing changes (as
`Registry.active` does), and `cached()` answers from memory without waiting for the store's lock.
On SQLite the store has a file of its own (`cases.sqlite3`) so that nothing else written there
can be mistaken for registry content, and so that writes elsewhere never make it rebuild the
index; the version is `PRAGMA data_version`. On PostgreSQL, which several nodes share, the
version is a one-row change counter (`case_changes`) bumped in the same transaction as every
write, so a person recorded through one node is in every node's next index.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import threading
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from email_validator import EmailNotValidError, validate_email

from policies.cases import (
    POSSESSIVE,
    CaseIndex,
    CasePerson,
    ConfidentialDetail,
    DetailKind,
    PersonRole,
    RecordKey,
    ShieldedCase,
    tokens,
)
from transports.database import Database, migrate, schema_version

CASES_DB_FILE = "cases.sqlite3"
KEY_FILE = "case-index.key"
KEY_BYTES = 32
HASH_BYTES = 32  # one HMAC-SHA256 digest (policies.cases.RecordKey)
COMPONENT = "cases"
MAX_NAME = 200  # characters of a person's name
MAX_DETAIL = 500  # characters of a confidential detail
MAX_RECIPIENTS = 50  # addresses or domains a detail may go to; staff on an access list

# The tables, the same on both engines (DDL types are translated for PostgreSQL). Hashes are
# RecordKey's 32-byte HMAC-SHA256 digests, one per normalised token, concatenated in order (a
# BLOB); NULL once the entry is removed.
_TABLES = """
    CREATE TABLE case_people (
        id INTEGER PRIMARY KEY,               -- shown as P<id>
        case_number TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('child', 'party', 'other')),
        name_hashes BLOB,                     -- keyed hashes of the name's tokens, in order
        dob_hash BLOB,                        -- keyed hash of the date of birth, if given
        initials TEXT NOT NULL,               -- what staff recognise the entry by
        source TEXT NOT NULL,                 -- 'cli', 'http' or 'verification'
        recorded_by TEXT NOT NULL,
        recorded_at TEXT NOT NULL,            -- ISO 8601, UTC
        removed_by TEXT,
        removed_at TEXT,
        CHECK ((removed_at IS NULL) = (name_hashes IS NOT NULL))
    );
    CREATE INDEX case_people_case ON case_people (case_number);
    CREATE TABLE case_details (
        id INTEGER PRIMARY KEY,               -- shown as D<id>
        case_number TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN
            ('address', 'school', 'nursery', 'gp', 'placement', 'other')),
        text_hashes BLOB,                     -- keyed hashes of the text's tokens, in order
        may_go_to TEXT NOT NULL,              -- JSON list of lower-case addresses or domains
        recorded_by TEXT NOT NULL,
        recorded_at TEXT NOT NULL,
        removed_by TEXT,
        removed_at TEXT,
        CHECK ((removed_at IS NULL) = (text_hashes IS NOT NULL))
    );
    CREATE INDEX case_details_case ON case_details (case_number);
    CREATE TABLE case_shields (
        id INTEGER PRIMARY KEY,
        case_number TEXT NOT NULL,
        access TEXT NOT NULL,                 -- JSON list of lower-case staff addresses
        recorded_by TEXT NOT NULL,
        recorded_at TEXT NOT NULL,
        removed_by TEXT,                      -- lifted, or replaced by a new access list
        removed_at TEXT
    );
    CREATE UNIQUE INDEX case_shields_one ON case_shields (case_number)
        WHERE removed_at IS NULL;
"""

# Each entry moves the schema one version up; never change what one does once it has shipped,
# add another. SQLite: the "same entry twice" indexes on the hashes themselves.
_MIGRATIONS: tuple[str, ...] = (
    _TABLES + """
    CREATE UNIQUE INDEX case_people_once
        ON case_people (case_number, name_hashes, COALESCE(dob_hash, x''))
        WHERE removed_at IS NULL;
    CREATE UNIQUE INDEX case_details_once ON case_details (case_number, text_hashes)
        WHERE removed_at IS NULL;
    """,
)

# PostgreSQL (its own list: it never had SQLite's first version). There a btree entry holds at
# most about 2,700 bytes, and a 500-character detail is up to 250 hashes of 32 bytes, so the
# "once" indexes hold the SHA-256 of the hashes, not the hashes themselves. `case_changes` is
# the change counter the nodes' cached indexes are checked against: every write transaction
# adds one to it (SQLite's `PRAGMA data_version` has no PostgreSQL form).
_PG_ONCE_AND_CHANGES = """
    CREATE UNIQUE INDEX case_people_once
        ON case_people (case_number, sha256(name_hashes), COALESCE(dob_hash, '\\x'::bytea))
        WHERE removed_at IS NULL;
    CREATE UNIQUE INDEX case_details_once ON case_details (case_number, sha256(text_hashes))
        WHERE removed_at IS NULL;
    CREATE TABLE case_changes (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        counter INTEGER NOT NULL
    );
    INSERT INTO case_changes (id, counter) VALUES (1, 0);
"""
_PG_MIGRATIONS: tuple[str, ...] = (_TABLES + _PG_ONCE_AND_CHANGES,)


class CaseError(Exception):
    """A change to the case registry cannot be made as asked; the message is one sentence."""


class AlreadyRecorded(CaseError):
    """The same person or detail is already recorded for the case."""


class NotRecorded(CaseError):
    """There is no such entry in force to take back (or the case is not shielded)."""


class CaseKeyError(RuntimeError):
    """`case-index.key` exists but cannot be used (wrong size, or readable by others)."""


# -- what staff see of an entry ------------------------------------------------------------


@dataclass(frozen=True)
class PersonEntry:
    """A person of a case as staff see it: never the name or the date of birth."""

    id: int
    case_number: str
    role: PersonRole
    initials: str
    has_date_of_birth: bool
    source: str
    recorded_by: str
    recorded_at: datetime
    removed_by: str | None = None
    removed_at: datetime | None = None

    @property
    def person_id(self) -> str:
        return f"P{self.id}"

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.person_id, "case_number": self.case_number, "role": self.role.value,
            "initials": self.initials, "date_of_birth_recorded": self.has_date_of_birth,
            "source": self.source, "recorded_by": self.recorded_by,
            "recorded_at": self.recorded_at.isoformat(), "removed_by": self.removed_by,
            "removed_at": self.removed_at.isoformat() if self.removed_at else None,
        }


@dataclass(frozen=True)
class DetailEntry:
    """A confidential detail as staff see it: its kind and who may receive it, never its text."""

    id: int
    case_number: str
    kind: DetailKind
    may_go_to: tuple[str, ...]
    recorded_by: str
    recorded_at: datetime
    removed_by: str | None = None
    removed_at: datetime | None = None

    @property
    def detail_id(self) -> str:
        return f"D{self.id}"

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.detail_id, "case_number": self.case_number, "kind": self.kind.value,
            "may_go_to": list(self.may_go_to), "recorded_by": self.recorded_by,
            "recorded_at": self.recorded_at.isoformat(), "removed_by": self.removed_by,
            "removed_at": self.removed_at.isoformat() if self.removed_at else None,
        }


@dataclass(frozen=True)
class ShieldEntry:
    """A case's shield: the staff who may handle it, who set it and when."""

    case_number: str
    access: tuple[str, ...]
    recorded_by: str
    recorded_at: datetime
    removed_by: str | None = None
    removed_at: datetime | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "case_number": self.case_number, "access": list(self.access),
            "recorded_by": self.recorded_by, "recorded_at": self.recorded_at.isoformat(),
            "removed_by": self.removed_by,
            "removed_at": self.removed_at.isoformat() if self.removed_at else None,
        }


@dataclass(frozen=True)
class CaseRecord:
    """Everything in force for one case (`casegate case show`)."""

    case_number: str
    people: tuple[PersonEntry, ...]
    details: tuple[DetailEntry, ...]
    shield: ShieldEntry | None

    @property
    def empty(self) -> bool:
        return not self.people and not self.details and self.shield is None

    def to_json(self) -> dict[str, object]:
        return {
            "case_number": self.case_number,
            "people": [p.to_json() for p in self.people],
            "details": [d.to_json() for d in self.details],
            "shielded": self.shield is not None,
            "shield": self.shield.to_json() if self.shield else None,
        }


@dataclass(frozen=True)
class CaseSummary:
    """One line of `casegate case list`."""

    case_number: str
    people: int
    details: int
    shielded: bool

    def to_json(self) -> dict[str, object]:
        return {"case_number": self.case_number, "people": self.people,
                "details": self.details, "shielded": self.shielded}


# -- input checks: one plain sentence each -------------------------------------------------


def clean_name(name: str) -> str:
    """A person's full name, spaces tidied; CaseError when empty, one word, too long, or holding
    control characters."""
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in name):
        raise CaseError("the name holds control characters; type it as plain text")
    cleaned = " ".join(name.split())
    if not cleaned:
        raise CaseError("give the person's full name (first and last name)")
    if len([t for t in tokens(cleaned) if t != POSSESSIVE]) < 2:
        raise CaseError("give the person's full name (first and last name), not one word")
    if len(cleaned) > MAX_NAME:
        raise CaseError(f"the name is longer than {MAX_NAME} characters")
    return cleaned


def parse_date_of_birth(text: str, today: date) -> date:
    """A date of birth written YYYY-MM-DD, not after `today`; CaseError otherwise."""
    try:
        value = date.fromisoformat(text.strip())
    except ValueError:
        raise CaseError(f"{text.strip()[:40]!r} is not a date written YYYY-MM-DD") from None
    if len(text.strip()) != 10:
        raise CaseError(f"{text.strip()[:40]!r} is not a date written YYYY-MM-DD")
    if value > today:
        raise CaseError(f"the date of birth {value.isoformat()} is in the future")
    if value.year < 1900:
        raise CaseError(f"the date of birth {value.isoformat()} is before 1900")
    return value


def clean_detail(text: str) -> str:
    """A confidential detail's text, spaces tidied; CaseError when empty or too long."""
    if any(unicodedata.category(ch) in ("Cc", "Cf") and ch not in "\n\r\t" for ch in text):
        raise CaseError("the detail holds control characters; type it as plain text")
    cleaned = " ".join(text.split())
    if not cleaned:
        raise CaseError("give the text of the confidential detail")
    if len(cleaned) > MAX_DETAIL:
        raise CaseError(f"the detail is longer than {MAX_DETAIL} characters")
    return cleaned


def clean_recipient(value: str) -> str:
    """An address (`name@example.org`) or a domain (`example.org`, `@example.org`) a detail may
    go to, lower-case; CaseError when it is neither."""
    text = value.strip()
    if "@" in text and not text.startswith("@"):
        try:
            return validate_email(text, check_deliverability=False).normalized.lower()
        except EmailNotValidError:
            raise CaseError(f"{text[:80]!r} is not an email address or a domain") from None
    domain = text.removeprefix("@")
    try:
        checked = validate_email(f"x@{domain}", check_deliverability=False)
    except EmailNotValidError:
        raise CaseError(f"{text[:80]!r} is not an email address or a domain") from None
    return checked.ascii_domain.lower()


def clean_list(values: Iterable[str], what: str) -> tuple[str, ...]:
    """`values` lower-cased, in order, without repeats; CaseError past MAX_RECIPIENTS."""
    cleaned = tuple(dict.fromkeys(v.strip().lower() for v in values if v.strip()))
    if len(cleaned) > MAX_RECIPIENTS:
        raise CaseError(f"at most {MAX_RECIPIENTS} {what} can be listed")
    return cleaned


def initials_of(name: str) -> str:
    """What staff recognise a person by: the first letter of each word, upper-case ("E.M.S")."""
    letters = [next((ch for ch in word if ch.isalnum()), "") for word in name.split()]
    return ".".join(letter.upper() for letter in letters if letter)


def parse_entry_id(text: str, prefix: str) -> int:
    """`P7`, `p7` or `7` -> 7 (prefix "P"); CaseError for anything else."""
    raw = text.strip()
    if raw[:1].upper() == prefix:
        raw = raw[1:]
    if not raw.isdigit() or len(raw) > 12 or int(raw) == 0:
        raise CaseError(f"{text.strip()[:20]!r} is not an id like {prefix}7")
    return int(raw)


# -- the key ---------------------------------------------------------------------------------


def load_or_create_key(data_dir: Path) -> bytes:
    """The HMAC key of the case registry, `case-index.key` in `data_dir`, made on first use.

    It is created atomically (written aside with mode 0600, then hard-linked into place), so two
    processes starting together never see half a key: the loser reads the winner's.
    """
    path = data_dir / KEY_FILE
    if not path.exists():
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(secrets.token_bytes(KEY_BYTES))
                handle.flush()
                os.fsync(handle.fileno())
            os.link(temporary, path)
        except FileExistsError:
            pass
        finally:
            temporary.unlink(missing_ok=True)
    if path.stat().st_mode & 0o077:
        raise CaseKeyError(f"{path}: must be readable by its owner only (chmod 600)")
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise CaseKeyError(f"{path}: must hold exactly {KEY_BYTES} bytes")
    return key


# -- the store -------------------------------------------------------------------------------


class CaseStore:
    """People, confidential details and shields of cases, as keyed hashes, in the database.

    One connection, shared by threads under a lock (on SQLite WAL: readers do not block the
    writer). Every method may wait for the lock or the database: call them off the event loop
    (`cached` never waits for the lock, but on PostgreSQL it reads the change counter).
    """

    def __init__(self, database: Database, key: RecordKey) -> None:
        self.database = database
        self.key = key
        self.where = database.describe() if not database.is_sqlite else str(
            database.data_dir / CASES_DB_FILE)
        self._sqlite = database.is_sqlite
        self._lock = threading.Lock()
        self._db = database.connect(CASES_DB_FILE, autocommit=True, timeout=10.0)
        if isinstance(self._db, sqlite3.Connection):
            self._db.row_factory = sqlite3.Row  # PostgreSQL's rows answer to names already
        self._index: tuple[tuple[int, int], CaseIndex] | None = None
        self._building = threading.Lock()  # one thread builds the index at a time
        with self._lock:
            if self._sqlite:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA busy_timeout=10000")
                self._db.execute("PRAGMA secure_delete=ON")  # erased hashes are overwritten
            # PostgreSQL has no secure_delete: an UPDATE that erases the hashes writes a new row
            # version, and the old one (hashes included) stays in the table's pages until VACUUM
            # reuses the space and in the WAL and its archives for as long as they are kept;
            # VACUUM makes the space reusable, it does not overwrite it. The hashes are keyed
            # (useless without case-index.key, which is never in the database), but an operator
            # who needs them gone from the disk must rely on the server's storage (encryption at
            # rest, retention of WAL archives and backups), not on casegate.
            self._migrate()

    def _migrate(self) -> None:
        migrate(self._db, COMPONENT, _MIGRATIONS if self._sqlite else _PG_MIGRATIONS,
                lambda version: CaseError(
                    f"{self.where} was written by a newer casegate (case registry schema "
                    f"{version})"))

    def schema_version(self) -> int:
        with self._lock:
            return schema_version(self._db, COMPONENT)

    @contextmanager
    def _writing(self, *, transaction: bool = False) -> Iterator[None]:
        """One write, with the lock held: on PostgreSQL a transaction that also bumps the change
        counter (every node's cached index is checked against it); on SQLite the statements
        as they are (one autocommitted statement, or with `transaction` one BEGIN IMMEDIATE),
        `PRAGMA data_version` and `total_changes` telling the caches."""
        with self._lock:
            if self._db.in_transaction:  # inside `bulk`'s transaction: it counts once
                yield
                return
            if self._sqlite and not transaction:
                yield
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
                self._count()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    @contextmanager
    def bulk(self) -> Iterator[None]:
        """Many writes in one transaction (loading a registry; the benchmark): one commit and,
        on PostgreSQL, one bump of the change counter, not one per row (each bump is a new
        version of the counter's row, and in one transaction their chain grows with every
        write). Another thread's write meanwhile joins the transaction."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            with self._lock:
                self._count()
                self._db.execute("COMMIT")
        except BaseException:
            with self._lock:
                self._db.execute("ROLLBACK")
            raise

    def _count(self) -> None:
        """Bump the change counter (PostgreSQL), in the write's transaction."""
        if not self._sqlite:
            self._db.execute("UPDATE case_changes SET counter = counter + 1 WHERE id = 1")

    # -- people ----------------------------------------------------------------------------

    def add_person(self, case_number: str, *, name: str, role: PersonRole,
                   date_of_birth: date | None, by: str, now: datetime,
                   source: str = "cli") -> PersonEntry:
        """Record a person of a case; CaseError for a bad name or when already recorded."""
        case = normalise_case(case_number)
        cleaned = clean_name(name)
        try:
            hashes = self.key.name(cleaned)
        except ValueError:
            raise CaseError("give the person's full name (first and last name), not one "
                            "word") from None
        dob = _joined((self.key.date_of_birth(date_of_birth),)) if date_of_birth else None
        with self._writing():
            if not self._sqlite:
                self._person_once(case, _joined(hashes), dob)  # see _person_once
            try:
                row = self._db.execute(
                    "INSERT INTO case_people (case_number, role, name_hashes, dob_hash, "
                    "initials, source, recorded_by, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                    "RETURNING *",
                    (case, PersonRole(role).value, _joined(hashes), dob, initials_of(cleaned),
                     source, by.strip().lower(), _iso(now))).fetchone()
            except sqlite3.IntegrityError:
                self._person_once(case, _joined(hashes), dob)
                raise AlreadyRecorded(f"that person is already recorded for case {case} as "
                                      "P?") from None
        return _person(row)

    def _person_once(self, case: str, name_hashes: bytes, dob: bytes | None) -> None:
        """AlreadyRecorded when the person is in force for the case. On PostgreSQL this is
        asked before the INSERT (the write lock held), because a refused INSERT spends a number
        of the identity column and the next person would skip one (P1, P3); on SQLite, after
        the unique index refused it."""
        born = "dob_hash IS NULL" if dob is None else "dob_hash = ?"
        same = self._db.execute(
            "SELECT id FROM case_people WHERE case_number = ? AND name_hashes = ? "  # noqa: S608
            f"AND {born} AND removed_at IS NULL",
            (case, name_hashes) + ((dob,) if dob is not None else ())).fetchone()
        if same is not None:
            raise AlreadyRecorded(f"that person is already recorded for case {case} as "
                                  f"P{same['id']}")

    def remove_person(self, case_number: str, person_id: int, *, by: str,
                      now: datetime) -> PersonEntry:
        """Take a person off a case: the record of the entry stays, its hashes are erased."""
        case = normalise_case(case_number)
        with self._writing():
            row = self._db.execute(
                "UPDATE case_people SET name_hashes = NULL, dob_hash = NULL, removed_by = ?, "
                "removed_at = ? WHERE id = ? AND case_number = ? AND removed_at IS NULL "
                "RETURNING *", (by.strip().lower(), _iso(now), person_id, case)).fetchone()
        if row is None:
            raise NotRecorded(f"case {case} has no person P{person_id} to remove")
        return _person(row)

    # -- confidential details ----------------------------------------------------------------

    def add_detail(self, case_number: str, *, text: str, kind: DetailKind,
                   may_go_to: Sequence[str], by: str, now: datetime) -> DetailEntry:
        """Record a confidential detail and who (besides Cafcass) may receive it."""
        case = normalise_case(case_number)
        cleaned = clean_detail(text)
        allowed = clean_list((clean_recipient(r) for r in may_go_to), "recipients")
        try:
            hashes = self.key.detail(cleaned)
        except ValueError:
            raise CaseError("give the text of the confidential detail") from None
        with self._writing():
            if not self._sqlite:
                self._detail_once(case, _joined(hashes))  # as _person_once
            try:
                row = self._db.execute(
                    "INSERT INTO case_details (case_number, kind, text_hashes, may_go_to, "
                    "recorded_by, recorded_at) VALUES (?, ?, ?, ?, ?, ?) RETURNING *",
                    (case, DetailKind(kind).value, _joined(hashes), json.dumps(list(allowed)),
                     by.strip().lower(), _iso(now))).fetchone()
            except sqlite3.IntegrityError:
                self._detail_once(case, _joined(hashes))
                raise AlreadyRecorded(f"that detail is already recorded for case {case} as "
                                      "D?; remove it first to change who it may go to") from None
        return _detail(row)

    def _detail_once(self, case: str, text_hashes: bytes) -> None:
        """AlreadyRecorded when the detail is in force for the case (see `_person_once`)."""
        same = self._db.execute(
            "SELECT id FROM case_details WHERE case_number = ? AND text_hashes = ? "
            "AND removed_at IS NULL", (case, text_hashes)).fetchone()
        if same is not None:
            raise AlreadyRecorded(f"that detail is already recorded for case {case} as "
                                  f"D{same['id']}; remove it first to change who it may go to")

    def remove_detail(self, case_number: str, detail_id: int, *, by: str,
                      now: datetime) -> DetailEntry:
        """Take a confidential detail off a case: its record stays, its hashes are erased."""
        case = normalise_case(case_number)
        with self._writing():
            row = self._db.execute(
                "UPDATE case_details SET text_hashes = NULL, removed_by = ?, removed_at = ? "
                "WHERE id = ? AND case_number = ? AND removed_at IS NULL RETURNING *",
                (by.strip().lower(), _iso(now), detail_id, case)).fetchone()
        if row is None:
            raise NotRecorded(f"case {case} has no confidential detail D{detail_id} to remove")
        return _detail(row)

    # -- shields -----------------------------------------------------------------------------

    def shield(self, case_number: str, *, access: Sequence[str], by: str,
               now: datetime) -> tuple[ShieldEntry, ShieldEntry | None]:
        """Shield a case for the staff in `access` (replacing the access list of a case already
        shielded); returns the new shield and the one it replaced, if any."""
        case = normalise_case(case_number)
        staff = clean_list(access, "staff")
        if not staff:
            raise CaseError("a shielded case needs at least one member of staff with access "
                            "(--access)")
        moment, who = _iso(now), by.strip().lower()
        with self._writing(transaction=True):
            old = self._db.execute(
                "UPDATE case_shields SET removed_by = ?, removed_at = ? "
                "WHERE case_number = ? AND removed_at IS NULL RETURNING *",
                (who, moment, case)).fetchone()
            row = self._db.execute(
                "INSERT INTO case_shields (case_number, access, recorded_by, recorded_at) "
                "VALUES (?, ?, ?, ?) RETURNING *",
                (case, json.dumps(list(staff)), who, moment)).fetchone()
        return _shield(row), (_shield(old) if old is not None else None)

    def unshield(self, case_number: str, *, by: str, now: datetime) -> ShieldEntry:
        """Lift a case's shield; CaseError when it is not shielded."""
        case = normalise_case(case_number)
        with self._writing():
            row = self._db.execute(
                "UPDATE case_shields SET removed_by = ?, removed_at = ? "
                "WHERE case_number = ? AND removed_at IS NULL RETURNING *",
                (by.strip().lower(), _iso(now), case)).fetchone()
        if row is None:
            raise NotRecorded(f"case {case} is not shielded")
        return _shield(row)

    # -- reading -----------------------------------------------------------------------------

    def case(self, case_number: str, *, removed: bool = False) -> CaseRecord:
        """What is recorded for one case (with `removed`, also what was taken back)."""
        case = normalise_case(case_number)
        live = "" if removed else " AND removed_at IS NULL"
        with self._lock:
            people = self._db.execute(
                f"SELECT * FROM case_people WHERE case_number = ?{live} ORDER BY id",  # noqa: S608
                (case,)).fetchall()
            details = self._db.execute(
                f"SELECT * FROM case_details WHERE case_number = ?{live} ORDER BY id",  # noqa: S608
                (case,)).fetchall()
            shield = self._db.execute(
                "SELECT * FROM case_shields WHERE case_number = ? AND removed_at IS NULL",
                (case,)).fetchone()
        return CaseRecord(case, tuple(_person(r) for r in people),
                          tuple(_detail(r) for r in details),
                          _shield(shield) if shield is not None else None)

    def shield_of(self, case_number: str) -> ShieldEntry | None:
        """The shield in force for a case, if any."""
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM case_shields WHERE case_number = ? AND removed_at IS NULL",
                (normalise_case(case_number),)).fetchone()
        return _shield(row) if row is not None else None

    def cases(self) -> list[CaseSummary]:
        """Every case with something in force, by case number (in code-point order, whatever
        the database's collation)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT case_number, SUM(person) AS people, SUM(detail) AS details, "
                "SUM(shield) AS shields FROM ("
                " SELECT case_number, 1 AS person, 0 AS detail, 0 AS shield FROM case_people"
                "  WHERE removed_at IS NULL"
                " UNION ALL SELECT case_number, 0, 1, 0 FROM case_details"
                "  WHERE removed_at IS NULL"
                " UNION ALL SELECT case_number, 0, 0, 1 FROM case_shields"
                "  WHERE removed_at IS NULL"
                ") AS entries GROUP BY case_number ORDER BY case_number").fetchall()
        return sorted((CaseSummary(r["case_number"], int(r["people"]), int(r["details"]),
                                   bool(r["shields"])) for r in rows),
                      key=lambda summary: summary.case_number)

    def index(self) -> CaseIndex:
        """What the engine matches against: every entry in force, as one immutable CaseIndex.

        Read on every message, so it is built once per database version (`_version`) and the
        same object comes back while nothing changes. After a change one thread builds it (a
        second of CPU at 100,000 people) while the others wanting it wait for that one; the
        store's lock is held only while the rows are read, so writes are not held up.
        """
        cached = self._fresh()
        if cached is not None:
            return cached
        with self._building:
            cached = self._fresh()  # built by another thread while this one waited
            return cached if cached is not None else self._build()

    def _fresh(self) -> CaseIndex | None:
        with self._lock:
            if self._index is not None and self._index[0] == self._version():
                return self._index[1]
        return None

    def _build(self) -> CaseIndex:
        """Read every entry in force and build the index (with `_building` held)."""
        with self._lock:
            version, people, details, shields = (
                self._read_sqlite() if self._sqlite else self._read_postgresql())
        roles = {r.value: r for r in PersonRole}
        kinds = {k.value: k for k in DetailKind}
        index = CaseIndex.build(
            self.key,
            (CasePerson(case_number=case, person_id=f"P{number}", role=roles[role],
                        name=_split(name), date_of_birth=dob, initials=initials)
             for number, case, role, name, dob, initials in people),
            (ConfidentialDetail(case_number=case, detail_id=f"D{number}", kind=kinds[kind],
                                text=_split(text), may_go_to=tuple(json.loads(may_go_to)))
             for number, case, kind, text, may_go_to in details),
            (ShieldedCase(case_number=case, access=tuple(json.loads(access)))
             for case, access in shields),
        )
        with self._lock:
            # Kept only if nothing was written while it was built (else the next call rebuilds).
            if version is not None and self._version() == version:
                self._index = (version, index)
        return index

    def _read_sqlite(self) -> _Entries:
        """The entries in force, the three tables as of one moment (one read transaction)."""
        assert isinstance(self._db, sqlite3.Connection)
        version = self._version()
        rows = self._db.cursor()
        rows.row_factory = None  # plain tuples: 100,000 of them are read here
        rows.execute("BEGIN")
        try:
            return (version, rows.execute(_PEOPLE).fetchall(), rows.execute(_DETAILS).fetchall(),
                    rows.execute(_SHIELDS).fetchall())
        finally:
            rows.execute("COMMIT")

    def _read_postgresql(self) -> _Entries:
        """The entries in force as of one counter value. Each statement of a READ COMMITTED
        transaction sees the latest commits, so the counter is read before and after the
        tables: unchanged, no write committed in between (every write bumps it in its own
        transaction) and the rows are that version's; changed, they are read again, and after
        a few tries used once without being kept (version None), as SQLite's build is when a
        write lands meanwhile."""
        version: tuple[int, int] | None = None
        for _ in range(3):
            self._db.execute("BEGIN")  # one pooled connection for the reads
            try:
                before = self._version()
                people = self._db.execute(_PEOPLE).fetchall()
                details = self._db.execute(_DETAILS).fetchall()
                shields = self._db.execute(_SHIELDS).fetchall()
                after = self._version()
            finally:
                self._db.execute("COMMIT")
            if before == after:
                version = before
                break
        return version, people, details, shields

    def cached(self) -> CaseIndex | None:
        """`index()` when it can be answered from memory at once, else None (then call `index`
        off the event loop). Never a wait for the lock; on SQLite one PRAGMA read, on
        PostgreSQL one read of the change counter (a round trip to the server: call it off
        the event loop there, as `App.snapshot_async` does, in the stores' worker)."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            if self._index is None or self._index[0] != self._version():
                return None
            return self._index[1]
        finally:
            self._lock.release()

    def _version(self) -> tuple[int, int]:
        """Changes whenever anything was written. On SQLite `PRAGMA data_version` moves when
        another connection (another process) commits, `total_changes` when this one writes; on
        PostgreSQL the change counter every write transaction bumps, whichever node wrote.
        With the lock held."""
        if self._sqlite:
            data_version = self._db.execute("PRAGMA data_version").fetchone()[0]
            return int(data_version), self._db.total_changes
        row = self._db.execute("SELECT counter FROM case_changes WHERE id = 1").fetchone()
        if row is None:
            raise sqlite3.OperationalError("the case registry's change counter is missing")
        return int(row[0]), 0

    def close(self) -> None:
        with self._lock:
            self._db.close()


_PEOPLE = ("SELECT id, case_number, role, name_hashes, dob_hash, initials "
           "FROM case_people WHERE removed_at IS NULL ORDER BY id")
_DETAILS = ("SELECT id, case_number, kind, text_hashes, may_go_to FROM case_details "
            "WHERE removed_at IS NULL ORDER BY id")
_SHIELDS = ("SELECT case_number, access FROM case_shields WHERE removed_at IS NULL "
            "ORDER BY case_number")
# The rows an index is built from, and the version they are of (None: not one version).
_Entries = tuple[tuple[int, int] | None, list[Any], list[Any], list[Any]]


def normalise_case(case_number: str) -> str:
    return case_number.strip().upper()



def _joined(hashes: Sequence[bytes]) -> bytes:
    """Keyed hashes as stored: 32 bytes each, concatenated in order."""
    if any(len(h) != HASH_BYTES for h in hashes):
        raise ValueError(f"record hashes must be {HASH_BYTES} bytes each")
    return b"".join(hashes)


def _split(stored: bytes) -> tuple[bytes, ...]:
    return tuple(stored[i:i + HASH_BYTES] for i in range(0, len(stored), HASH_BYTES))


def _iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("case registry times must be timezone-aware")
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _recorded(row: sqlite3.Row) -> datetime:
    moment = _time(row["recorded_at"])
    assert moment is not None  # NOT NULL in the schema
    return moment


def _person(row: sqlite3.Row) -> PersonEntry:
    return PersonEntry(
        id=row["id"], case_number=row["case_number"], role=PersonRole(row["role"]),
        initials=row["initials"], has_date_of_birth=row["dob_hash"] is not None,
        source=row["source"], recorded_by=row["recorded_by"], recorded_at=_recorded(row),
        removed_by=row["removed_by"], removed_at=_time(row["removed_at"]))


def _detail(row: sqlite3.Row) -> DetailEntry:
    return DetailEntry(
        id=row["id"], case_number=row["case_number"], kind=DetailKind(row["kind"]),
        may_go_to=tuple(json.loads(row["may_go_to"])), recorded_by=row["recorded_by"],
        recorded_at=_recorded(row), removed_by=row["removed_by"],
        removed_at=_time(row["removed_at"]))


def _shield(row: sqlite3.Row) -> ShieldEntry:
    return ShieldEntry(
        case_number=row["case_number"], access=tuple(json.loads(row["access"])),
        recorded_by=row["recorded_by"], recorded_at=_recorded(row),
        removed_by=row["removed_by"], removed_at=_time(row["removed_at"]))
