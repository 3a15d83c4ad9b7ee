"""Where links in emails point: one base URL for portal, verification and alert emails.

`public_url(config)` is `http.public_url` when it is set, else this server's own address: the
scheme follows `http.tls`, then the HTTP host and port. It depends on the config alone, so
every module that writes a link can use it without importing the HTTP front.
"""

from __future__ import annotations

from gateway.config import Config

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
