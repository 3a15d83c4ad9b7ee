"""The transfer policy as data and the pure decision engine.

Nothing in this package does I/O: callers read files, the registry and the clock, and pass
what they read in. The public entry points are re-exported here.
"""

from policies.content import ContentRules, classify_message
from policies.engine import decide, decide_at_rcpt, evaluate
from policies.errors import MessageError, PolicyError
from policies.loader import EMBEDDED_FILES, InformationType, Policy, parse_policy
from policies.recipients import classify_recipient

__all__ = [
    "EMBEDDED_FILES",
    "ContentRules",
    "InformationType",
    "MessageError",
    "Policy",
    "PolicyError",
    "classify_message",
    "classify_recipient",
    "decide",
    "decide_at_rcpt",
    "evaluate",
    "parse_policy",
]
