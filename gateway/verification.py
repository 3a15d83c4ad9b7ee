"""The gateway's side of recipient verification: building the workflow, and the SMTP entry point.

`build_workflow(app, transport)` wires `verification.workflow.Workflow` to the App's registry,
audit log and policy, the outbound transport, the link key in the data directory and a DNS
resolver from `[verification]`. The CLI, the HTTP front and the SMTP front all use it.

The SMTP entry point: a message whose only recipient is the verification address (default
`verify@<smtp.hostname>`) is a request, not mail to deliver. Its plain-text body holds lines

    Address: jane.doe@example.org
    Name: Jane Doe
    Role: party
    Case: ZC12C00123

The requester is the authenticated envelope sender. A refused request is a 550 (the sender's
client or Exchange shows its sentence), a DNS or upstream problem a 451 (the client retries);
otherwise 250, and the practitioner gets an email with the out-of-band code (or "already
verified").
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import TYPE_CHECKING

import dns.asyncresolver

from gateway.config import Config
from gateway.links import public_url
from policies.model import Role
from transports.base import Transport
from verification.dns import make_resolver
from verification.texts import Texts
from verification.tokens import LinkSigner, load_or_create_key
from verification.workflow import Ask, Settings, Workflow

if TYPE_CHECKING:
    from gateway.app import App
    from gateway.pipeline import Reply, Services, Submission

MAX_REQUEST_BYTES = 64 * 1024
_FIELD = re.compile(r"^\s*(address|email|name|role|case|case number)\s*:\s*(.*?)\s*$",
                    re.IGNORECASE)
# Outlook's plain-text alternative writes a linked address as "a@b.org <mailto:a@b.org>".
_MAILTO = re.compile(r"^<?([^<>\s]+?)>?(?:\s*<mailto:[^>]*>)?$", re.IGNORECASE)


def verification_address(config: Config) -> str:
    """Where staff send verification requests."""
    return (config.verification.address or f"verify@{config.smtp.hostname}").strip().lower()


def is_request_address(config: Config, address: str) -> bool:
    """Whether an envelope recipient is the verification address (taken at RCPT, not relayed)."""
    return address.strip().lower() == verification_address(config)


def settings_from(config: Config) -> Settings:
    section = config.verification
    return Settings(
        organisation=config.organisation,
        sender=verification_address(config),
        public_url=public_url(config),
        link_lifetime=timedelta(hours=section.link_hours),
        valid_for=timedelta(days=section.valid_days) if section.valid_days else None,
        max_attempts=max(1, section.max_attempts),
        dns_timeout=section.dns_timeout,
    )


def build_workflow(
    app: App,
    transport: Transport,
    *,
    clock: Callable[[], datetime] | None = None,
    resolver: dns.asyncresolver.Resolver | None = None,
) -> Workflow:
    section = app.config.verification
    templates = Path(section.templates_dir) if section.templates_dir else None
    return Workflow(
        registry=app.registry,
        policy=app.policy,
        audit=app.audit,
        transport=transport,
        signer=LinkSigner(load_or_create_key(app.data_dir)),
        resolver=resolver or make_resolver(section.dns_servers, section.dns_port,
                                           section.dns_timeout),
        settings=settings_from(app.config),
        clock=clock or (lambda: datetime.now(UTC)),
        snapshot=app.snapshot,
        texts=Texts(templates),
    )


# ---- the SMTP entry point ----------------------------------------------------------------


def parse_request(raw: bytes) -> dict[str, str] | None:
    """The `Key: value` lines of the message's plain-text body; None if it has none."""
    message = message_from_bytes(raw, policy=default_policy)
    if not isinstance(message, EmailMessage):  # pragma: no cover - default policy gives these
        return None
    body = message.get_body(preferencelist=("plain",))
    if body is None:
        return None
    try:
        text = body.get_content()
    except (LookupError, ValueError):
        return None
    fields: dict[str, str] = {}
    for line in str(text).splitlines():
        match = _FIELD.match(line)
        if match:
            key = match.group(1).lower().replace("email", "address").replace("case number",
                                                                             "case")
            fields.setdefault(key, match.group(2))
    if "address" in fields:
        plain = _MAILTO.match(fields["address"])
        fields["address"] = plain.group(1) if plain else fields["address"]
    return fields


async def intake(services: Services, submission: Submission) -> Reply | None:
    """The pipeline hook: None unless the message is addressed to the verification address."""
    from gateway.pipeline import Reply

    address = verification_address(services.app.config)
    recipients = [r.strip().lower() for r in submission.recipients]
    if address not in recipients:
        return None
    if len(recipients) != 1:
        return Reply.of(550, "5.7.1", f"Send verification requests to {address} on their own, "
                        "with no other recipients.")
    if len(submission.raw) > MAX_REQUEST_BYTES:
        return Reply.of(552, "5.3.4", "A verification request must be a short plain-text "
                        "message.")
    fields = parse_request(submission.raw) or {}
    missing = [k for k in ("address", "name", "role", "case") if not fields.get(k)]
    if missing:
        return Reply.of(550, "5.6.0", "The request needs these lines in a plain-text body: "
                        "Address:, Name:, Role: (party or professional) and Case:. Missing: "
                        + ", ".join(missing) + ".")
    role = fields["role"].strip().lower()
    if role not in {r.value for r in Role}:
        return Reply.of(550, "5.6.0", "Role: must be party or professional.")
    workflow = build_workflow(services.app, services.transport, clock=services.clock)
    result = await workflow.request(Ask(
        address=fields["address"], case_number=fields["case"], name=fields["name"],
        role=Role(role), requested_by=submission.sender, channel="smtp"))
    if result.temporary:
        return Reply.of(451, "4.4.3", result.sentence)
    if not result.ok:
        return Reply.of(550, "5.7.1", result.sentence)
    mail = workflow.practitioner_mail(result, submission.sender.strip().lower())
    if mail is not None:
        if not await workflow.tell(f"verify-reply-{uuid.uuid4().hex}", mail):
            # Without the code the request is useless: withdraw it so that a retry starts anew.
            workflow.revoke(result.address, by=submission.sender,
                            case_number=result.case_number)
            return Reply.of(451, "4.4.3", "The reply with the code could not be sent, so the "
                            "request was withdrawn; please try again later.")
    return Reply.of(250, "2.0.0", "Verification request taken; the reply is in your mailbox.")
