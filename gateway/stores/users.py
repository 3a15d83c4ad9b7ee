"""Staff accounts that may submit mail: a slow salted hash, roles, send-as addresses.

Passwords are kept as scrypt hashes (memory-hard, stdlib `hashlib.scrypt`) with a random salt per
account. `authenticate` takes the same time whether the address is unknown, disabled or the
password wrong, and answers only "this user" or `None`, so nothing about accounts leaks through it.

The store is one table, in the data directory's `casegate.sqlite3` or in the shared PostgreSQL
database. It is safe to call from worker threads (`asyncio.to_thread`): every database access
holds a lock, and the slow hash runs outside it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from email_validator import EmailNotValidError, validate_email

from transports.database import Database, migrate

# scrypt cost: 2**14 * 8 * 128 bytes = 16 MiB of memory and ~50 ms per check on one core.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_MAXMEM = 64 * 1024 * 1024
HASH_LENGTH = 32
SALT_LENGTH = 16
MAX_PASSWORD_BYTES = 1024  # longer input is refused before hashing (no hash-time amplification)
MIN_PASSWORD_CHARS = 12

FILE_NAME = "casegate.sqlite3"  # shared with the registry (verification/registry.py)
COMPONENT = "users"

# Each entry moves the schema one version up; never edit one that has shipped, add another.
# The first is idempotent: SQLite files made before versioning have the table already.
_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS staff_user (
        address TEXT PRIMARY KEY,
        password_hash TEXT NOT NULL,
        roles TEXT NOT NULL,
        send_as TEXT NOT NULL,
        disabled INTEGER NOT NULL DEFAULT 0,
        created TEXT NOT NULL,
        manager TEXT NOT NULL DEFAULT ''
    );
    """,
)
# Columns added before the schema was versioned: an SQLite file made then gains them on opening.
_ADDED_COLUMNS = {"manager": "ALTER TABLE staff_user ADD COLUMN manager TEXT NOT NULL DEFAULT ''"}
_SELECT = "SELECT address, password_hash, roles, send_as, disabled, manager FROM staff_user"


class UserRole(StrEnum):
    """What a staff member may do beyond sending mail."""

    STAFF = "staff"
    GOVERNANCE = "governance"
    BUSINESS_SERVICES = "business-services"


class UserError(ValueError):
    """A user cannot be added or changed; the message says why, in one sentence."""


@dataclass(frozen=True)
class User:
    """One staff account as the gateway sees it (never the hash)."""

    address: str
    roles: tuple[UserRole, ...]
    send_as: tuple[str, ...]
    disabled: bool = False
    manager: str = ""  # told when this user delivers a message under an override (RRP 1.2)

    def may_send_as(self, address: str) -> bool:
        """The envelope or header sender is this user's own address or one they may send as."""
        wanted = address.strip().lower()
        return wanted == self.address or wanted in self.send_as


def normalise_address(address: str) -> str:
    """The address in the form accounts are stored under: syntax-checked, lower-case."""
    try:
        valid = validate_email(address, check_deliverability=False)
    except EmailNotValidError:
        raise UserError(f"'{address}' is not a valid email address") from None
    return valid.normalized.lower()


def hash_password(password: str, salt: bytes | None = None) -> str:
    """The stored form: scrypt$n$r$p$salt$hash, salt and hash in base64."""
    salt = salt if salt is not None else secrets.token_bytes(SALT_LENGTH)
    digest = _scrypt(password.encode("utf-8"), salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return "$".join(
        ("scrypt", str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P), _b64(salt), _b64(digest))
    )


def verify_password(password: bytes, stored: str) -> bool:
    """Whether `password` matches the stored hash, compared in constant time."""
    try:
        scheme, n, r, p, salt, expected = stored.split("$")
        if scheme != "scrypt":
            return False
        digest = _scrypt(password, base64.b64decode(salt), int(n), int(r), int(p))
        return hmac.compare_digest(digest, base64.b64decode(expected))
    except (ValueError, TypeError):
        return False


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password, salt=salt, n=n, r=r, p=p, maxmem=SCRYPT_MAXMEM, dklen=HASH_LENGTH
    )


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


# Checked when the address is unknown or disabled, so every failure costs one full hash.
_DUMMY_HASH = hash_password(secrets.token_urlsafe(24))


class UserStore:
    """Staff accounts: `casegate.sqlite3`, or the shared PostgreSQL database."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._lock = threading.Lock()
        self._db = database.connect(FILE_NAME, autocommit=True, timeout=10.0)
        with self._lock:
            if database.is_sqlite:
                self._add_columns()
            migrate(self._db, COMPONENT, _MIGRATIONS, lambda version: UserError(
                f"{database.describe()} was written by a newer casegate "
                f"(users schema {version})"))

    def _add_columns(self) -> None:
        """An SQLite table made before a column was added gains it (PostgreSQL never had
        such tables)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            present = {row[1] for row in self._db.execute("PRAGMA table_info(staff_user)")}
            if present:  # the table exists (else the first migration makes it whole)
                for column, statement in _ADDED_COLUMNS.items():
                    if column not in present:
                        self._db.execute(statement)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def add(
        self,
        address: str,
        password: str,
        roles: tuple[UserRole, ...] = (UserRole.STAFF,),
        send_as: tuple[str, ...] = (),
        manager: str = "",
    ) -> User:
        """Create an account; the password must be at least MIN_PASSWORD_CHARS characters."""
        normalised = normalise_address(address)
        manager = _manager_of(normalised, manager) if manager else ""
        if len(password) < MIN_PASSWORD_CHARS:
            raise UserError(f"the password must be at least {MIN_PASSWORD_CHARS} characters")
        if len(password.encode("utf-8")) > MAX_PASSWORD_BYTES:
            raise UserError(f"the password must be at most {MAX_PASSWORD_BYTES} bytes")
        aliases = tuple(sorted({normalise_address(a) for a in send_as} - {normalised}))
        user = User(address=normalised, roles=tuple(dict.fromkeys(roles)), send_as=aliases,
                    manager=manager)
        row = (
            user.address,
            hash_password(password),
            json.dumps([r.value for r in user.roles]),
            json.dumps(list(user.send_as)),
            datetime.now(UTC).isoformat(),
            user.manager,
        )
        try:
            with self._lock:
                self._db.execute(
                    "INSERT INTO staff_user"
                    " (address, password_hash, roles, send_as, created, manager)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    row,
                )
        except sqlite3.IntegrityError:
            raise UserError(f"{user.address} already has an account") from None
        return user

    def disable(self, address: str) -> User:
        """Stop an account from authenticating; its history stays."""
        normalised = normalise_address(address)
        with self._lock:
            changed = self._db.execute(
                "UPDATE staff_user SET disabled = 1 WHERE address = ?", (normalised,)
            ).rowcount
        return self._changed(normalised, changed)

    def set_manager(self, address: str, manager: str) -> User:
        """Record (or, with "", clear) the manager told of this user's overrides."""
        normalised = normalise_address(address)
        value = _manager_of(normalised, manager) if manager else ""
        with self._lock:
            changed = self._db.execute(
                "UPDATE staff_user SET manager = ? WHERE address = ?", (value, normalised)
            ).rowcount
        return self._changed(normalised, changed)

    def _changed(self, normalised: str, rows: int) -> User:
        """The account an UPDATE just changed; UserError when there was no such account."""
        found = self.get(normalised) if rows else None
        if found is None:
            raise UserError(f"{normalised} has no account")
        return found

    def get(self, address: str) -> User | None:
        """The account for `address`, disabled or not."""
        row = self._row(address.strip().lower())
        return None if row is None else _user(row)

    def list(self) -> tuple[User, ...]:
        """Every account, by address."""
        with self._lock:
            rows = self._db.execute(
                _SELECT + " ORDER BY address"
            ).fetchall()
        return tuple(_user(row) for row in rows)

    def authenticate(self, address: str | bytes, password: str | bytes) -> User | None:
        """The enabled user whose password this is, else None; one full hash either way."""
        login = address.decode("utf-8", "replace") if isinstance(address, bytes) else address
        secret = password if isinstance(password, bytes) else password.encode("utf-8")
        if len(secret) > MAX_PASSWORD_BYTES:
            secret = b""  # still hashed below, so the answer takes the usual time
        row = self._row(login.strip().lower())
        usable = row is not None and not row[4]
        matched = verify_password(secret, row[1] if usable and row else _DUMMY_HASH)
        if usable and matched and row is not None:
            return _user(row)
        return None

    def ping(self) -> None:
        """Raise if the store cannot be read (readiness check)."""
        with self._lock:
            self._db.execute("SELECT 1 FROM staff_user LIMIT 1").fetchall()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _row(self, address: str) -> tuple[str, str, str, str, int, str] | None:
        with self._lock:
            row = self._db.execute(
                _SELECT + " WHERE address = ?",
                (address,),
            ).fetchone()
        return row


def _user(row: tuple[str, str, str, str, int, str]) -> User:
    return User(
        address=row[0],
        roles=tuple(UserRole(r) for r in json.loads(row[2])),
        send_as=tuple(json.loads(row[3])),
        disabled=bool(row[4]),
        manager=row[5],
    )


def _manager_of(address: str, manager: str) -> str:
    """A manager address, checked: valid, and not the user's own."""
    normalised = normalise_address(manager)
    if normalised == address:
        raise UserError("a user cannot be their own manager")
    return normalised
