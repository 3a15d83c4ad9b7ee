"""Postal decisions as the gateway takes them: the policy's answer, recorded as an audit event.

The CLI (`casegate post`) calls `decide_and_record`, the staff API (`POST /api/post`) and the
business-services form its twin for the event loop, so they give the same answer and leave the
same trail. Each is given the office directory as read from its store (`App.offices`), so a team
name means its office. Bad input raises `PostInputError` before anything is recorded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.printed.offices import DispatchStore
from policies.events import EventKind
from policies.post import (
    NO_OFFICES,
    OfficeDirectory,
    PostDecision,
    PostItem,
    PostOptions,
    decide_post,
)

if TYPE_CHECKING:
    from gateway.app import App
    from gateway.audit.trail import AuditLog

AUDIT_KIND = EventKind.POST_DECISION


class PostUnavailable(RuntimeError):
    """The loaded policy has no [post] table: no postal answer can be given (fail closed)."""


def post_options(app: App) -> PostOptions:
    """The post options of the loaded policy."""
    options = app.policy.post
    if options is None:
        raise PostUnavailable("the policy has no [post] table (policies/data/post.toml)")
    return options


def decide_and_record(
    options: PostOptions, audit: AuditLog, item: PostItem, *, sender: str = "",
    offices: OfficeDirectory = NO_OFFICES,
) -> PostDecision:
    """Decide for `item` and record the decision (facts as metadata, no content)."""
    decision = decide_post(item, options, offices)
    audit.record(AUDIT_KIND, **_event(decision, item, sender, options, offices))
    return decision


async def decide_and_record_async(
    options: PostOptions, audit: AuditLog, item: PostItem, *, sender: str = "",
    offices: OfficeDirectory = NO_OFFICES,
) -> PostDecision:
    """`decide_and_record` on the event loop: the event is awaited, not waited for. (Read
    `offices` in a worker thread first: `OfficeRegistry.directory`.)"""
    decision = decide_post(item, options, offices)
    await audit.record_async(AUDIT_KIND, **_event(decision, item, sender, options, offices))
    return decision


def _event(decision: PostDecision, item: PostItem, sender: str, options: PostOptions,
           offices: OfficeDirectory) -> dict[str, Any]:
    """The audit event's fields for a postal decision: the facts as given, and the offices
    the names given turned out to be."""
    resolved = {
        f"{end}_office_resolved": offices.resolve(name, options).name
        for end, name in (("from", item.from_office), ("to", item.to_office)) if name.strip()
    }
    return {"rule": decision.rule, "citation": decision.citation, "sender": sender,
            "decision": decision.decision.value, "methods": list(decision.methods),
            "applied": list(decision.applied), **item.summary(), **resolved}


def open_dispatches(app: App) -> DispatchStore:
    """The store of paper movements between offices, in the app's database, naming offices
    through the app's office directory."""
    return DispatchStore(app.database, post_options(app), app.audit, offices=app.offices)
