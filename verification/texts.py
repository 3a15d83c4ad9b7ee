"""The words of the workflow: email and page texts from templates an organisation can change.

Templates are files in `verification/templates/`; an organisation puts its own copy of any of
them in `[verification] templates_dir` and that one is used instead. Mail templates (`.txt`) are
plain text in `string.Template` form (`$name`): one starts with a `Subject:` line and a blank
line; its paragraphs are re-wrapped after filling (`transports.plaintext`), so they may be
written on one line or wrapped anywhere. Page templates (`page-*.html`) are Jinja2 HTML
fragments (`{{ name }}`), auto-escaped; the web front puts them inside the site layout.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from importlib import resources
from pathlib import Path
from string import Template

import jinja2
from markupsafe import Markup

from transports.plaintext import fill_and_flow

TEMPLATE_SUFFIXES = (".txt", ".html")  # mail and page templates
_UNSAFE = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")


def one_line(value: str, limit: int = 300) -> str:
    """A value safe for a header or a single line: no control characters, bounded."""
    return _UNSAFE.sub(" ", value).strip()[:limit]


def when(moment: datetime) -> str:
    """A time as the texts show it, e.g. '25 November 2026 at 14:05 UTC'."""
    return moment.strftime("%d %B %Y at %H:%M UTC").lstrip("0")


@dataclass(frozen=True)
class Mail:
    """One message the workflow sends."""

    sender: str
    to: str
    subject: str
    body: str

    def as_bytes(self, now: datetime) -> bytes:
        """Plain text, CRLF line endings, every header value on one line."""
        message = EmailMessage(policy=SMTP)
        message["From"] = one_line(self.sender)
        message["To"] = one_line(self.to)
        message["Subject"] = one_line(self.subject)
        message["Date"] = format_datetime(now)
        message["Message-ID"] = make_msgid("casegate-verify", self.sender.rpartition("@")[2])
        message["Auto-Submitted"] = "auto-generated"
        message.set_content(self.body)
        return message.as_bytes()


class Texts:
    """The templates: the organisation's directory first, then the built-in ones, all read when
    the Texts are made (a mail or a page never reads a file; a changed template is used from
    the next start)."""

    def __init__(self, override_dir: Path | None = None) -> None:
        self.override_dir = override_dir
        self._sources: dict[str, str] = {}
        if override_dir is not None and override_dir.is_dir():
            for own in sorted(override_dir.rglob("*")):
                if own.is_file() and own.suffix in TEMPLATE_SUFFIXES:
                    name = own.relative_to(override_dir).as_posix()
                    self._sources[name] = own.read_text(encoding="utf-8")
        for builtin in resources.files("verification").joinpath("templates").iterdir():
            if builtin.is_file():
                self._sources.setdefault(builtin.name, builtin.read_text("utf-8"))
        self._pages = jinja2.Environment(
            loader=jinja2.DictLoader(self._sources), autoescape=True,
            undefined=jinja2.StrictUndefined)  # a value the page needs and nobody gave: a bug

    def template(self, name: str) -> Template:
        if name not in self._sources:
            raise FileNotFoundError(f"no template {name}")
        return Template(self._sources[name])

    def mail(self, template: str, /, *, sender: str, to: str, **values: object) -> Mail:
        """A mail from `template` (a missing value is a bug: KeyError)."""
        strings = {k: str(v) for k, v in values.items()}
        first, _, rest = self.template(template).template.partition("\n")
        if not first.startswith("Subject:"):
            raise ValueError(f"mail template {template} must start with a Subject: line")
        subject = Template(first.removeprefix("Subject:")).substitute(strings).strip()
        body = fill_and_flow(Template(rest.lstrip("\n")), strings)
        return Mail(sender=sender, to=to, subject=subject, body=body)

    def page(self, template: str, /, **values: object) -> Markup:
        """An HTML fragment from `template`, every value escaped unless it is `Markup`."""
        # The text comes from an auto-escaping environment (S704), so it is safe HTML.
        return Markup(self._pages.get_template(template).render(values))  # noqa: S704
