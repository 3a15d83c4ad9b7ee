"""The verify@ intake: a message to the verification address is a request, not mail to deliver.

The SMTP front sees the verification address (default `verify@<smtp.hostname>`) at RCPT
(`gateway.stages.envelope.is_request_address`) and routes the message here at DATA
(`take_request`), after the checks every message passes; an ordinary message never comes here.
The request must have the verification address as its only recipient. Its plain-text body holds
lines

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

import asyncio
import re
import uuid
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy

from gateway.config import verification_address
from gateway.stages.context import Record, Stages
from gateway.stages.message import Reply, Submission
from policies.model import Role
from verification.workflow import Ask

MAX_REQUEST_BYTES = 64 * 1024
_FIELD = re.compile(r"^\s*(address|email|name|role|case|case number)\s*:\s*(.*?)\s*$",
                    re.IGNORECASE)
# Outlook's plain-text alternative writes a linked address as "a@b.org <mailto:a@b.org>".
_MAILTO = re.compile(r"^<?([^<>\s]+?)>?(?:\s*<mailto:[^>]*>)?$", re.IGNORECASE)


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


async def take_request(stages: Stages, record: Record, submission: Submission) -> Reply:
    """The route of a message to the verification address (its events are the workflow's)."""
    address = verification_address(stages.app.config)
    recipients = [r.strip().lower() for r in submission.recipients]
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
    workflow = stages.workflow
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
            await asyncio.to_thread(workflow.revoke, result.address, by=submission.sender,
                                    case_number=result.case_number)
            return Reply.of(451, "4.4.3", "The reply with the code could not be sent, so the "
                            "request was withdrawn; please try again later.")
    return Reply.of(250, "2.0.0", "Verification request taken; the reply is in your mailbox.")
