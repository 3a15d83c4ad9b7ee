"""Configuration: one TOML file, validated on load, every default in this module.

The CLI (the composition root) calls `load_config` once and passes the result down; no other
module reads the config file or the environment. Each section is a frozen dataclass whose field
defaults are the defaults the README's config reference lists.

A bad file is a `ConfigError` whose message names the file, the key and what is wrong: its type
when it is read, then its range or syntax (`CHECKS`), so a mistake stops `casegate serve` before
it binds a port, with one sentence.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, fields, is_dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, get_type_hints

from policies.loader import GRADES
from policies.model import MultipleExternal
from transports.dkim import DEFAULT_HEADERS

DEFAULT_DATA_DIR = Path("casegate-data")
MIN_TOKEN_LENGTH = 16  # a metrics bearer token shorter than this is refused as guessable


class ConfigError(ValueError):
    """The configuration cannot be used; the message says where and why."""


class StartupError(Exception):
    """Something the config names cannot be used when the gateway starts (a port taken, a
    certificate that does not load): one sentence for the operator, never a traceback."""


def os_reason(exc: OSError) -> str:
    """The plain reason of an OS error, e.g. "address already in use", "permission denied"."""
    if exc.errno is not None and exc.errno > 0:
        return os.strerror(exc.errno).lower()
    return (exc.strerror or exc.__class__.__name__).lower()


@dataclass(frozen=True)
class SmtpConfig:
    host: str = "127.0.0.1"  # address to listen on; loopback by default
    port: int = 2525  # submission with STARTTLS
    tls_port: int = 2465  # implicit TLS submission; 0 disables
    hostname: str = "casegate.localhost"  # name in the greeting and on the generated certificate
    max_message_size: int = 35 * 1024 * 1024  # bytes; announced in EHLO, enforced while reading
    max_recipients: int = 100  # per message; more get 452
    idle_timeout: float = 300.0  # seconds a client may stay silent (then 421 4.4.2, closed)
    relay_from: tuple[str, ...] = ()  # trusted relay peers (CIDR), e.g. an Exchange connector
    relay_client_cert_fingerprints: tuple[str, ...] = ()  # optional: sha256 hex of peer certs
    relay_client_ca_file: str = ""  # CAs for relay peers' client certs (default: the system's)
    auth_max_failures: int = 5  # per client address, then locked
    auth_lockout_seconds: float = 900.0  # how long a locked client address stays locked
    auth_failure_delay: float = 1.0  # extra seconds before each 535 after the first two failures
    drain_seconds: float = 30.0  # on SIGTERM: how long messages in DATA may take to finish
    # Open SMTP connections (both ports); one more is answered 421 4.7.0 and closed at once.
    max_connections: int = 200  # open SMTP connections in total; 0: no limit
    max_connections_per_client: int = 20  # open SMTP connections per client address; 0: no limit
    # An Exchange connector carries a whole office's mail: addresses inside relay_from get this.
    max_connections_per_relay_peer: int = 200  # per address inside relay_from; 0: no limit
    # Message bytes held in memory at once, across all connections (from DATA to its reply);
    # a DATA over it waits a second, then gets 452 4.3.1. At least max_message_size.
    max_buffered_bytes: int = 256 * 1024 * 1024
    # Commands without progress (Postfix smtpd_junk_command_limit): past this many NOOP, RSET,
    # HELP, VRFY, EXPN or repeated EHLO/HELO in one connection, each counts as an error; 0: none
    junk_command_limit: int = 100
    # Errors a connection may make before a message is accepted (replies 4xx/5xx, except a
    # policy's refusal of one recipient or message); then 421 4.7.0 and close (Postfix
    # smtpd_hard_error_limit). Both counts start again when a message is accepted; 0: no limit
    hard_error_limit: int = 20
    # Open connections from outside relay_from that have not authenticated, in total (both
    # ports); one more is answered 421 4.7.0 and closed; 0: no limit
    max_unauthenticated_connections: int = 100
    # seconds a client outside relay_from may stay silent before it authenticates (at most
    # idle_timeout)
    unauthenticated_idle_timeout: float = 30.0


@dataclass(frozen=True)
class HttpConfig:
    host: str = "127.0.0.1"  # address to listen on; loopback by default
    port: int = 8025  # staff pages, API, portal and verification pages
    public_url: str = ""  # base URL of links in emails; default http(s)://host:port by tls
    tls: bool = True  # serve HTTPS with the data directory's certificate


@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool = True  # serve /metrics, /healthz and /readyz on a listener of their own
    host: str = "127.0.0.1"  # any address but loopback needs bearer_token_file
    port: int = 9025  # plain HTTP; 0 picks a free port
    # file holding the token scrapers must send (Authorization: Bearer); relative to the
    # config file's folder; empty: no token
    bearer_token_file: str = ""


@dataclass(frozen=True)
class ProxyConfig:
    # Load balancers (IP addresses or CIDR networks) in front of the SMTP and HTTP listeners
    # that send the PROXY protocol (HAProxy send-proxy or send-proxy-v2): a connection from
    # one must begin with a PROXY header, whose client address the gateway then uses for
    # everything (relay_from, limits, throttles, logs, audit); one from anywhere else is never
    # read for a header. Empty: the PROXY protocol is off. Not the metrics listener.
    trusted: tuple[str, ...] = ()
    header_timeout: float = 5.0  # seconds a load balancer in trusted has to send the header


@dataclass(frozen=True)
class UpstreamConfig:
    host: str = ""  # empty: deliver into the outbox directory (Maildir) in the data directory
    port: int = 25  # the smarthost's port
    tls: str = "starttls"  # "starttls", "implicit" or "none" (only for loopback test sinks)
    verify_certificate: bool = True  # check the smarthost's certificate and name
    ca_file: str = ""  # extra CA bundle for a private smarthost
    username: str = ""  # AUTH to the smarthost (only over TLS); empty: no AUTH
    password: str = ""  # keep this file readable by casegate only
    timeout: float = 60.0  # seconds for connecting and for each SMTP command
    pool_size: int = 4  # connections kept open and reused
    remember_days: float = 7.0  # how long accepted copies are remembered, so retries never resend
    # seconds to wait for the reply to the end of a message's data (RFC 5321 4.5.3.2.6: 10 min)
    data_done_timeout: float = 600.0


@dataclass(frozen=True)
class PolicyConfig:
    # Extra TOML files that override or extend policies/data/policy.toml, applied in order.
    files: tuple[str, ...] = ()
    # What to do with protected mail to several external recipients: "split" or "refuse".
    multiple_external: MultipleExternal = MultipleExternal.SPLIT
    # Processes that classify messages beside the gateway, on the machine's other cores (a
    # message from classifier_min_bytes to classifier_max_bytes); 0: every message is
    # classified in the gateway process. Each holds its own index of the case registry.
    classifier_processes: int = 0
    # A smaller message is classified in the gateway process: sending it costs more than that.
    classifier_min_bytes: int = 16 * 1024
    # A larger one too: sent to a process, it would be one more copy of itself in memory.
    classifier_max_bytes: int = 4 * 1024 * 1024


@dataclass(frozen=True)
class AuditConfig:
    governance_address: str = ""  # mailbox for breach alerts and the digest; empty: no mail
    alert_grades: tuple[str, ...] = ("high",)  # mailed at once
    digest_grades: tuple[str, ...] = ("low", "medium")  # listed in the daily digest
    digest_time: str = "07:00"  # UTC, HH:MM
    alert_from: str = ""  # sender of alert mail; default casegate@<smtp.hostname>
    notify_overrides: bool = False  # copy override notices to governance_address (RRP 1.2)
    checkpoint_every: int = 1000  # sign a checkpoint of the chain every N events; 0: on demand
    # An append-only file (on another mount) that receives the signed chain head as JSON lines;
    # relative to the config file; empty: none
    anchor_file: str = ""
    # Syslog that receives the signed chain head: a socket path (/dev/log) or host:port (UDP);
    # empty: none
    anchor_syslog: str = ""
    # Seconds between heads sent to anchor_file and anchor_syslog (every checkpoint goes at once)
    anchor_seconds: float = 10.0
    mail_checkpoints: bool = True  # mail each signed checkpoint to governance_address (when set)


@dataclass(frozen=True)
class VerificationConfig:
    address: str = ""  # where staff send verification requests; default verify@<smtp.hostname>
    valid_days: float = 365.0  # a confirmed verification lapses after this many days; 0: never
    link_hours: float = 72.0  # how long the recipient's link and out-of-band code work
    max_attempts: int = 5  # wrong codes before the request locks
    dns_servers: tuple[str, ...] = ()  # resolvers for the deliverability check; empty: system
    dns_port: int = 53  # port of the resolvers in dns_servers
    dns_timeout: float = 3.0  # seconds for the whole MX, A and AAAA lookup
    # The organisation's own texts: emails (.txt, $name placeholders) and pages (.html, Jinja2),
    # read when casegate starts; empty: built-in
    templates_dir: str = ""


@dataclass(frozen=True)
class PortalConfig:
    expiry_days: float = 30.0  # portal copies are destroyed, with their keys, after this
    notify_subject: bool = False  # put the original subject in the notification email
    from_address: str = ""  # sender of codes and secure replies; default casegate@<smtp.hostname>
    # Wrong one-time codes in total for one copy (any number of codes); then the copy is locked
    # until its sender re-issues it with a new link (`casegate messages reissue ID`)
    max_wrong_codes: int = 20


@dataclass(frozen=True)
class DkimConfig:
    # Signing domain (d=) for the mail casegate writes or rewrites; empty: nothing is signed.
    domain: str = ""
    selector: str = "casegate"  # the key is published at <selector>._domainkey.<domain>
    # PEM private key, relative to the data directory; empty: dkim-<selector>.pem there.
    key_file: str = ""
    headers: tuple[str, ...] = DEFAULT_HEADERS  # header fields signed; must include from


@dataclass(frozen=True)
class DatabaseConfig:
    # Where the stores are: empty for SQLite files in the data directory (one node); a
    # postgresql://user@host/db URL for one PostgreSQL database that several nodes share.
    # CASEGATE_DATABASE_URL in the environment overrides it (keeps a password out of the file).
    url: str = ""
    node: str = ""  # this node's name in the audit trail and the database; empty: the host name
    pool_size: int = 10  # PostgreSQL connections this node may hold at once
    connect_timeout: float = 10.0  # seconds to reach PostgreSQL, or to wait for a connection


@dataclass(frozen=True)
class Config:
    source: str = "<defaults>"
    data_dir: str = str(DEFAULT_DATA_DIR)  # SQLite files, keys, certificate, outbox
    organisation: str = "Cafcass"  # the agency's name in emails and pages
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    portal: PortalConfig = field(default_factory=PortalConfig)
    verification: VerificationConfig = field(default_factory=VerificationConfig)
    dkim: DkimConfig = field(default_factory=DkimConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)


def load_config(path: Path | None) -> Config:
    """Read and validate the config file; no file means every default."""
    if path is None:
        return Config()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: the config file does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.__class__.__name__})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: is not valid TOML ({exc})") from None
    config = _build(Config, raw, str(path), "")
    _check_choices(config, str(path))
    check_values(config, str(path))
    _check_metrics(config.metrics, str(path))
    _check_dkim(config.dkim, str(path))
    _check_buffers(config.smtp, str(path))
    _check_classifiers(config.policy, str(path))
    return replace(config, source=str(path))


def _check_classifiers(policy: PolicyConfig, source: str) -> None:
    """The sizes sent to the classifier processes must be a range."""
    if policy.classifier_min_bytes > policy.classifier_max_bytes:
        raise ConfigError(
            f"{source}: 'policy.classifier_min_bytes' ({policy.classifier_min_bytes}) is larger "
            f"than 'policy.classifier_max_bytes' ({policy.classifier_max_bytes}): no message "
            "would be sent to the classifier processes")


def _check_buffers(smtp: SmtpConfig, source: str) -> None:
    """The buffer cap must hold at least one message of the largest size taken."""
    if smtp.max_buffered_bytes < smtp.max_message_size:
        raise ConfigError(
            f"{source}: 'smtp.max_buffered_bytes' ({smtp.max_buffered_bytes}) is smaller than "
            f"'smtp.max_message_size' ({smtp.max_message_size}): a message of the largest size "
            "could never be taken; raise it (or lower max_message_size)")


# Keys whose value must be one of a few words.
CHOICES: dict[str, tuple[str, ...]] = {
    "upstream.tls": ("starttls", "implicit", "none"),
}


def _check_choices(config: Config, source: str) -> None:
    for key, allowed in CHOICES.items():
        section, _, name = key.partition(".")
        value = getattr(getattr(config, section), name)
        if value not in allowed:
            raise ConfigError(
                f"{source}: '{key}' must be one of {', '.join(allowed)} (not {value!r})")


def is_loopback(host: str) -> bool:
    """Whether `host` is a loopback address (or "localhost"); any name else is not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_metrics(metrics: MetricsConfig, source: str) -> None:
    """Metrics reveal traffic and policy hits: off loopback, only to scrapers with the token."""
    if metrics.enabled and not metrics.bearer_token_file and not is_loopback(metrics.host):
        raise ConfigError(
            f"{source}: 'metrics.host' {metrics.host!r} is not a loopback address; set "
            "'metrics.bearer_token_file' so that only authorised scrapers read the metrics")


def read_bearer_token(config: Config) -> bytes | None:
    """The metrics listener's token from `bearer_token_file` (None when there is none); a
    listener off loopback without one is a ConfigError."""
    metrics = config.metrics
    _check_metrics(metrics, config.source)
    if not metrics.bearer_token_file:
        return None
    path = Path(metrics.bearer_token_file)
    if not path.is_absolute() and config.source != Config.source:
        path = Path(config.source).parent / path
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"'metrics.bearer_token_file' {path} cannot be read "
                          f"({exc.__class__.__name__})") from None
    if len(token) < MIN_TOKEN_LENGTH or any(c.isspace() for c in token):
        raise ConfigError(f"'metrics.bearer_token_file' {path} must hold one token of at least "
                          f"{MIN_TOKEN_LENGTH} characters, without spaces")
    return token.encode()


# -- ranges and syntax ------------------------------------------------------------------------
# Each check returns what is wrong with a value ("" when it is right), as the end of a sentence
# that starts with the file and the key.

Check = Callable[[Any], str]

_HOSTNAME = re.compile(
    r"(?=.{1,253}$)(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")
_HH_MM = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")
_FINGERPRINT = re.compile(r"[0-9a-f]{64}")


def port(*, zero: str = "") -> Check:
    """A TCP port, 1-65535; 0 too when `zero` says what it means."""
    low = 0 if zero else 1

    def check(value: int) -> str:
        if low <= value <= 65535:
            return ""
        return (f"must be a port number from 1 to 65535 (0: {zero})" if zero
                else "must be a port number from 1 to 65535")
    return check


def process_count(value: int) -> str:
    """A count of processes to start (0: none); negative values are refused on reading."""
    return "" if value <= MAX_CLASSIFIER_PROCESSES else (
        f"must be from 0 to {MAX_CLASSIFIER_PROCESSES}")


MAX_CLASSIFIER_PROCESSES = 64


def positive(value: float) -> str:
    return "" if value > 0 else "must be more than 0"


def database_url_problem(value: str) -> str:
    """Empty (SQLite) or a postgresql:// URL."""
    if not value or value.startswith(("postgresql://", "postgres://")):
        return ""
    return "must be empty (SQLite in the data directory) or a postgresql:// URL"


def node_name(value: str) -> str:
    """Empty (the host name) or a short name of letters, digits, dots, dashes, underscores."""
    if re.fullmatch(r"[A-Za-z0-9._-]{0,63}", value):
        return ""
    return f"{value!r} must be up to 63 letters, digits, dots, dashes or underscores"


def hostname(value: str) -> str:
    return "" if _is_host(value, ip=False) else f"{value!r} is not a host name"


def listen_address(value: str) -> str:
    return "" if _is_host(value) else f"{value!r} is not an IP address or host name"


def host_or_empty(value: str) -> str:
    return "" if not value or _is_host(value) else f"{value!r} is not a host name or IP address"


def address_or_empty(value: str) -> str:
    """An email address (local@domain, no spaces or angle brackets), or "" for the default."""
    local, at, domain = value.rpartition("@")
    if not value or (at and local and not re.search(r"[\s<>@]", local)
                     and _is_host(domain, ip=False)):
        return ""
    return f"{value!r} is not an email address"


def network_list(what: str) -> Check:
    """A list of IP networks (CIDR; an address alone is a network of one); `what` names an
    entry in the sentence about a bad one."""
    def check(values: tuple[str, ...]) -> str:
        for value in values:
            try:
                ipaddress.ip_network(value.strip(), strict=False)
            except ValueError:
                return f"has {value!r}, which is not {what}"
        return ""
    return check


def fingerprint_list(values: tuple[str, ...]) -> str:
    for value in values:
        if not _FINGERPRINT.fullmatch(value.replace(":", "").replace(" ", "").lower()):
            return f"has {value!r}, which is not a SHA-256 fingerprint (64 hex digits)"
    return ""


def grade_list(values: tuple[str, ...]) -> str:
    for value in values:
        if value not in GRADES:
            return f"has {value!r}; use {', '.join(GRADES)}"
    return ""


def ip_list(values: tuple[str, ...]) -> str:
    for value in values:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            return f"has {value!r}, which is not an IP address"
    return ""


def hh_mm(value: str) -> str:
    return "" if _HH_MM.fullmatch(value) else f"must be HH:MM, 24-hour UTC (not {value!r})"


def url_or_empty(value: str) -> str:
    if not value or re.fullmatch(r"https?://[^\s/?#]+(/\S*)?", value):
        return ""
    return f"{value!r} must be an http:// or https:// URL"


def _is_host(value: str, *, ip: bool = True) -> bool:
    if ip:
        try:
            ipaddress.ip_address(value)
            return True
        except ValueError:
            pass
    return _HOSTNAME.fullmatch(value) is not None


CHECKS: dict[str, Check] = {
    "smtp.host": listen_address,
    "smtp.port": port(zero="any free port"),
    "smtp.tls_port": port(zero="no implicit-TLS port"),
    "smtp.hostname": hostname,
    "smtp.max_message_size": positive,
    "smtp.max_buffered_bytes": positive,
    "smtp.max_recipients": positive,
    "smtp.idle_timeout": positive,
    "smtp.relay_from": network_list("an address range (CIDR)"),
    "smtp.relay_client_cert_fingerprints": fingerprint_list,
    "smtp.auth_max_failures": positive,
    "smtp.unauthenticated_idle_timeout": positive,
    "policy.classifier_processes": process_count,
    "policy.classifier_min_bytes": positive,
    "policy.classifier_max_bytes": positive,
    "http.host": listen_address,
    "http.port": port(zero="any free port"),
    "http.public_url": url_or_empty,
    "proxy.trusted": network_list("an IP address or network (CIDR)"),
    "proxy.header_timeout": positive,
    "upstream.host": host_or_empty,
    "upstream.port": port(),
    "upstream.timeout": positive,
    "upstream.pool_size": positive,
    "upstream.remember_days": positive,
    "upstream.data_done_timeout": positive,
    "audit.governance_address": address_or_empty,
    "audit.alert_grades": grade_list,
    "audit.digest_grades": grade_list,
    "audit.digest_time": hh_mm,
    "audit.alert_from": address_or_empty,
    "audit.anchor_seconds": positive,
    "verification.address": address_or_empty,
    "verification.link_hours": positive,
    "verification.max_attempts": positive,
    "verification.dns_servers": ip_list,
    "verification.dns_port": port(),
    "verification.dns_timeout": positive,
    "portal.expiry_days": positive,
    "portal.from_address": address_or_empty,
    "portal.max_wrong_codes": positive,
    "metrics.host": listen_address,
    "metrics.port": port(zero="any free port"),
    "database.url": database_url_problem,
    "database.node": node_name,
    "database.pool_size": positive,
    "database.connect_timeout": positive,
}


def check_values(config: Config, source: str) -> None:
    """Range and syntax of every key in `CHECKS`; the first problem is a ConfigError."""
    for key, check in CHECKS.items():
        section, _, name = key.partition(".")
        problem = check(getattr(getattr(config, section), name))
        if problem:
            raise ConfigError(f"{source}: '{key}' {problem}")


_DNS_LABELS = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*")


def _check_dkim(dkim: DkimConfig, source: str) -> None:
    """With a signing domain: a selector and domain DNS can hold, and From among the headers."""
    if not dkim.domain:
        return
    for key, value in (("dkim.domain", dkim.domain.rstrip(".")), ("dkim.selector", dkim.selector)):
        if not _DNS_LABELS.fullmatch(value):
            raise ConfigError(f"{source}: '{key}' must be a DNS name in ASCII (not {value!r})")
    if "from" not in {h.lower() for h in dkim.headers}:
        raise ConfigError(f"{source}: 'dkim.headers' must include from (RFC 6376 5.4)")


def _build(cls: type, raw: dict[str, Any], source: str, prefix: str) -> Any:
    """Build dataclass `cls` from a TOML table, naming the file and key in every error."""
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls) if f.name != "source"}
    for key in raw:
        if key not in known:
            raise ConfigError(f"{source}: unknown key '{prefix}{key}'")
    values: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in raw:
            continue
        value = raw[f.name]
        key = f"{prefix}{f.name}"
        hint = hints[f.name]
        if is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: '{key}' must be a table")
            values[f.name] = _build(hint, value, source, f"{key}.")  # type: ignore[arg-type]
        else:
            values[f.name] = _coerce(value, hint, source, key)
    return cls(**values)


def _coerce(value: Any, hint: Any, source: str, key: str) -> Any:
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: '{key}' must be true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: '{key}' must be a whole number")
        if value < 0:
            raise ConfigError(f"{source}: '{key}' must not be negative")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{source}: '{key}' must be a number")
        if value < 0:
            raise ConfigError(f"{source}: '{key}' must not be negative")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: '{key}' must be a string")
        return value
    if isinstance(hint, type) and issubclass(hint, StrEnum):
        if value not in set(hint):
            raise ConfigError(f"{source}: '{key}' must be one of {', '.join(hint)} "
                              f"(not {value!r})")
        return hint(value)
    if hint == tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{source}: '{key}' must be a list of strings")
        return tuple(value)
    raise ConfigError(f"{source}: '{key}' has a type casegate cannot read")  # pragma: no cover


# ---- where links in emails point ----------------------------------------------------------

# Listen addresses that name no host: links use the SMTP host name (on the generated
# certificate) instead.
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 - compared, never bound


def public_url(config: Config, port: int | None = None) -> str:
    """The base of links in emails, without a trailing slash.

    `port` is the HTTP port actually bound, when known (it differs from `http.port` when
    that is 0); it is ignored when `http.public_url` is set.
    """
    if config.http.public_url:
        return config.http.public_url.rstrip("/")
    scheme = "https" if config.http.tls else "http"
    host = config.http.host.strip()
    if host in WILDCARD_HOSTS:
        host = config.smtp.hostname
    if ":" in host:  # an IPv6 literal goes in brackets
        host = f"[{host}]"
    return f"{scheme}://{host}:{port or config.http.port}"


def verification_address(config: Config) -> str:
    """Where staff send verification requests (default `verify@<smtp.hostname>`)."""
    return (config.verification.address or f"verify@{config.smtp.hostname}").strip().lower()
