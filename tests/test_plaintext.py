"""Email texts are re-flowed after filling: lines of at most 78 characters, links never broken."""

from __future__ import annotations

import re
import textwrap
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from string import Template

import pytest

from tests.certs import ServerCert
from tests.portalweb import PortalWeb, protected_message
from tests.portalweb import text_of as portal_text
from tests.sink import Sink
from tests.verifykit import RECIPIENT, VerifyKit, text_of
from transports.plaintext import WIDTH, fill_and_flow, is_prose
from verification.texts import Texts
from verification.workflow import Outcome

LONG_LINK = "https://casegate.cafcass.example/v/" + "Ab3-_x" * 20
LONG_NAME = "Josephine Alexandra Fitzwilliam-Montgomery"
BUILT_IN = [("transports", name) for name in ("code.txt", "notification.txt", "reply.txt")] + [
    ("verification", path.name)
    for path in resources.files("verification").joinpath("templates").iterdir()
    if path.name.endswith(".txt")
]


def _paragraphs(text: str) -> list[str]:
    """Each paragraph of `text` as one line (how a reader takes it in)."""
    return [" ".join(block.split()) for block in re.split(r"\r?\n\s*\r?\n", text)]


def _overlong(text: str, allowed: str) -> list[str]:
    """Lines longer than WIDTH, other than `allowed` (an unbreakable link) standing alone."""
    return [line for line in text.splitlines() if len(line) > WIDTH and line != allowed]


def test_paragraphs_are_rewrapped_after_filling() -> None:
    """A hard-wrapped template filled with long values comes out re-wrapped at 78 columns."""
    template = Template("$who at $org sent you a message. It is emailed to this address. Enter\n"
                        "the code to read it.\n\nOpen it here:\n$link\n\n    $code\n---------\n")
    text = fill_and_flow(template, {"who": LONG_NAME, "org": "Cafcass", "link": LONG_LINK,
                                    "code": "123456"})
    assert _overlong(text, LONG_LINK) == []
    assert f"{LONG_NAME} at Cafcass sent you a message. It is emailed to this address. Enter " \
           "the code to read it." in _paragraphs(text)
    assert f"Open it here:\n{LONG_LINK}\n" in text  # the link alone on its line, whole
    assert "\n    123456\n---------\n" in text  # indented and ruler lines kept as written


def test_text_written_by_someone_else_is_kept() -> None:
    """A value alone on its line (a reply's text) keeps its own line breaks and indentation."""
    reply = "First line\n\n   indented " + "word " * 30
    text = fill_and_flow(Template("Their reply follows.\n\n$text\n"), {"text": reply})
    assert text == f"Their reply follows.\n\n{reply}\n"


def test_a_missing_value_is_an_error() -> None:
    """A template naming a value nobody gave is a bug, not a silent gap."""
    with pytest.raises(KeyError):
        fill_and_flow(Template("Hello $name,\n"), {})


@pytest.mark.parametrize(("package", "name"), BUILT_IN)
def test_every_built_in_email_template_fits(package: str, name: str) -> None:
    """Each built-in email template, filled with long values, has no line over 78 characters."""
    source = resources.files(package).joinpath("templates", name).read_text("utf-8")
    values = {key: LONG_NAME for key in Template(source).get_identifiers()}
    values |= {"link": LONG_LINK, "code": "123456", "text": "A short reply."}
    if package == "verification":
        text = Texts().mail(name, sender="verify@x.example", to="a@x.example", **values).body
    else:
        text = fill_and_flow(Template(source), values)
    assert _overlong(text, LONG_LINK) == []
    assert "$" not in text


def test_an_organisations_one_line_paragraphs_are_wrapped(tmp_path: Path) -> None:
    """An organisation's template written one paragraph per line is wrapped the same way."""
    (tmp_path / "practitioner-sent.txt").write_text(
        "Subject: Code for $address\n\nThe verification email has been sent to $address "
        "($scope). Give the recipient this code by telephone or in person, never by email:\n"
        "\n    $code\n", encoding="utf-8")
    mail = Texts(tmp_path).mail("practitioner-sent.txt", sender="v@x.example", to="a@x.example",
                                address="mum@example.org", scope="case FD24P01234",
                                code="654321")
    assert mail.subject == "Code for mum@example.org"
    assert _overlong(mail.body, "") == [] and "\n    654321\n" in mail.body
    assert _paragraphs(mail.body)[0].endswith("in person, never by email:")


@pytest.fixture
async def kit(tmp_path: Path) -> AsyncIterator[VerifyKit]:
    async with VerifyKit.running(tmp_path) as opened:
        yield opened


async def test_the_invitation_received_upstream_is_wrapped(kit: VerifyKit) -> None:
    """The verification email as the upstream receives it: short lines, the link whole."""
    result = await kit.workflow.request(kit.ask())
    assert result.outcome is Outcome.SENT
    text = text_of(await kit.mail_to(RECIPIENT))
    (link,) = re.findall(r"https?://\S+/v/\S+", text)
    assert _overlong(text, link) == []
    assert any(p.startswith("On that page, enter the code that") and "by telephone or in "
               "person, and your full name. The link works once, until" in p
               for p in _paragraphs(text))


async def test_the_portal_notification_received_upstream_is_wrapped(
        tmp_path: Path, sink: Sink, server_cert: ServerCert) -> None:
    """The portal notification as the upstream receives it: sentences unbroken, link whole."""
    async with PortalWeb(tmp_path, sink, server_cert) as web:
        await web.deliver(protected_message())
        text = portal_text(sink.messages[-1])
    (link,) = re.findall(r"https://\S+/portal/\S+", text)
    assert _overlong(text, link) == [] and f"\n{link}\n" in text.replace("\r\n", "\n")
    assert any("is emailed to this address. Enter the code to read the message" in p
               for p in _paragraphs(text))


def reference_fill_and_flow(template: Template, values: dict[str, str]) -> str:
    """`fill_and_flow` as first written: the template read and every paragraph wrapped on
    every call."""
    kind, lines, prose = type(template), [], []

    def flush() -> None:
        if prose:
            filled = kind(" ".join(prose)).substitute(values)
            lines.extend(textwrap.wrap(filled, WIDTH, break_long_words=False,
                                       break_on_hyphens=False) or [""])
            prose.clear()

    for line in template.template.splitlines():
        if is_prose(line):
            prose.append(line.strip())
            continue
        flush()
        lines.append(kind(line).substitute(values) if line.strip() else "")
    flush()
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(("package", "name"), BUILT_IN)
@pytest.mark.parametrize("value", ["", "x", LONG_NAME, LONG_LINK, "two  spaces", "a $ sign"])
def test_a_template_read_once_fills_as_one_read_each_time(package: str, name: str,
                                                           value: str) -> None:
    """The blocks of a template are read (and those naming no value wrapped) once; the mail
    is the one reading the template for each mail made, twice in a row too."""
    source = resources.files(package).joinpath("templates", name).read_text("utf-8")
    template = Template(source.partition("\n\n")[2] if package == "verification" else source)
    values = {key: value for key in template.get_identifiers()}
    expected = reference_fill_and_flow(template, values)
    assert fill_and_flow(template, values) == expected
    assert fill_and_flow(template, values) == expected


def test_a_template_with_a_stray_dollar_is_an_error_every_time() -> None:
    template = Template("Costs are $ 5 each.\n\nThanks.\n")
    for _ in range(2):
        with pytest.raises(ValueError, match="Invalid placeholder"):
            fill_and_flow(template, {})
