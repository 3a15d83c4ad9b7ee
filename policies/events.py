"""Every kind of audit event: a closed vocabulary. Governance filters and grades events by
these names (the policy's `[grades]` table names them too), so a misspelt kind would be an
event nobody finds; `gateway.audit.trail.AuditLog.record` takes only these."""

from __future__ import annotations

from enum import StrEnum


class EventKind(StrEnum):
    """An audit event's kind (its `kind` field)."""

    # one message through the SMTP front (gateway/stages)
    DECISION = "decision"
    REFUSAL = "refusal"
    RELAY = "relay"
    OVERRIDE = "override"
    OVERRIDE_NOTIFIED = "override-notified"
    OVERRIDE_NOT_NOTIFIED = "override-not-notified"
    SHIELDED_CASE_MAIL = "shielded-case-mail"  # a message about a shielded case (ruling 19)
    # a copy left but what follows could not be written down (journal, ledger, relay event)
    DELIVERY_FAULT = "delivery-fault"
    # the SMTP front's own refusals and logins (gateway/smtp)
    PROTOCOL_REFUSAL = "protocol-refusal"
    CONNECTION_LIMIT = "connection-limit"
    AUTH_FAILURE = "auth-failure"
    AUTH_LOCKOUT = "auth-lockout"
    # staff web pages (gateway/web)
    LOGIN = "login"
    LOGOUT = "logout"
    LOGIN_FAILURE = "login-failure"
    LOGIN_LOCKOUT = "login-lockout"
    LOGIN_REFUSED = "login-refused"
    ACCESS_DENIED = "access-denied"
    # recipient verification (verification/workflow.py, the CLI)
    VERIFICATION_REQUESTED = "verification-requested"
    VERIFICATION_SENT = "verification-sent"
    VERIFICATION_NOTICE_FAILED = "verification-notice-failed"
    VERIFICATION_CONFIRMED = "verification-confirmed"
    VERIFICATION_DECLINED = "verification-declined"
    VERIFICATION_CODE_WRONG = "verification-code-wrong"
    VERIFICATION_LOCKED = "verification-locked"
    VERIFICATION_EXPIRED = "verification-expired"
    VERIFICATION_REVOKED = "verification-revoked"
    VERIFICATION_REFUSED = "verification-refused"
    VERIFICATION_LINK_REFUSED = "verification-link-refused"
    VERIFICATION_ADDED = "verification-added"
    # staff verified an address casegate reads as a lookalike, deliberately, with a reason
    VERIFICATION_LOOKALIKE_CONFIRMED = "verification-lookalike-confirmed"
    STAFF_PERSONAL_ADDED = "staff-personal-added"
    # staff accounts (the CLI)
    USER_ADDED = "user-added"
    USER_DISABLED = "user-disabled"
    USER_MANAGER_SET = "user-manager-set"
    # printed items (gateway/printed)
    POST_DECISION = "post-decision"
    DISPATCH_RECORDED = "dispatch-recorded"
    DISPATCH_RECEIVED = "dispatch-received"
    DISPATCH_REFUSED = "dispatch-refused"  # the post options do not allow it (e.g. DX)
    OFFICE_ADDED = "office-added"  # the office directory (gateway/stores/offices.py)
    OFFICE_CHANGED = "office-changed"
    # the secure portal (transports/portal.py, gateway/web/portal.py)
    PORTAL_STORED = "portal-stored"
    PORTAL_CODE_SENT = "portal-code-sent"
    PORTAL_CODE_FAILURE = "portal-code-failure"
    PORTAL_LOGIN = "portal-login"
    PORTAL_LOCKOUT = "portal-lockout"
    PORTAL_REFUSED = "portal-refused"
    PORTAL_VIEW = "portal-view"
    PORTAL_DOWNLOAD = "portal-download"
    PORTAL_REPLY = "portal-reply"
    PORTAL_REVOKE = "portal-revoke"
    PORTAL_EXPIRY = "portal-expiry"
    PORTAL_COPY_LOCKED = "portal-copy-locked"  # too many wrong codes in total for one copy
    PORTAL_REISSUE = "portal-reissue"  # the sender gave a copy a new link (and unlocked it)
    # the case registry (verification/casework.py): case and kind of entry, never names/text
    CASE_PERSON_RECORDED = "case-person-recorded"
    CASE_PERSON_REMOVED = "case-person-removed"
    CASE_DETAIL_RECORDED = "case-detail-recorded"
    CASE_DETAIL_REMOVED = "case-detail-removed"
    CASE_SHIELDED = "case-shielded"
    CASE_UNSHIELDED = "case-unshielded"
    # the trail itself (gateway/audit)
    KEY_CREATED = "key-created"
    KEY_ROTATED = "key-rotated"
    KEY_RELOADED = "key-reloaded"  # a running gateway took up a rotated portal keyring (SIGHUP)
    AUDIT_REANCHORED = "audit-reanchored"  # the trail accepted as it stands after a restore
    AUDIT_EXPORT = "audit-export"
