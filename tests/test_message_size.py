"""The largest message: the SMTP front and the policy agree on it, and a larger one gets a size
reply (552 5.3.4) with the message-format rule's sentence, never the policy's "could not read
this message safely" (issue 14).

The front's limit is `smtp.max_message_size`, but never more than the policy's
`[content.limits] max_message_bytes`; it counts the message's lines as sent, without the "."
end line, so a message of exactly the limit is taken and one octet more is refused.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from gateway.audit.store import EventFilter
from gateway.stages.pipeline import check_size, message_size_limit
from policies.loader import EMBEDDED_FILES, Policy, parse_policy
from tests.gateway_harness import STAFF, running_gateway
from tests.sink import Sink

COLLEAGUE = "colleague@cafcass.gov.uk"
HEAD = (b"From: <jo.smith@cafcass.gov.uk>\r\nTo: <colleague@cafcass.gov.uk>\r\n"
        b"Subject: size\r\n\r\n")


def message_of(size: int) -> bytes:
    """A message of exactly `size` octets (CRLF line endings, no line starting with a dot)."""
    line = b"x" * 76 + b"\r\n"
    body = line * ((size - len(HEAD)) // len(line))
    rest = size - len(HEAD) - len(body)
    body += b"" if rest == 0 else b"y" * (rest - 2) + b"\r\n" if rest >= 2 else b""
    if len(HEAD) + len(body) < size:  # one octet left over: lengthen the last full line
        body = body[:-2] + b"z" + body[-2:]
    whole = HEAD + body
    assert len(whole) == size
    return whole


def policy_with_limit(limit: int) -> Policy:
    """The embedded policy with `[content.limits] max_message_bytes = limit`."""
    data = resources.files("policies").joinpath("data")
    documents = [(name, data.joinpath(name).read_text("utf-8")) for name in EMBEDDED_FILES]
    return parse_policy([*documents, ("limits.toml",
                                      f"[content.limits]\nmax_message_bytes = {limit}\n")])


# (smtp.max_message_size, [content.limits] max_message_bytes, the SIZE the front announces)
LIMITS = [
    (100_000, 20_000, 20_000),  # the policy reads less than the front was told: its limit rules
    (20_000, 36_700_160, 20_000),  # the front's own limit, under the policy's
    (20_000, 20_000, 20_000),
]


@pytest.mark.parametrize(("front", "policy", "announced"), LIMITS)
async def test_front_and_policy_agree_on_the_largest_message(
        tmp_path: Path, sink: Sink, front: int, policy: int, announced: int) -> None:
    """SIZE announces the smaller limit; a message of exactly it is delivered; one octet more is
    refused 552 5.3.4 with a sentence about size, audited under message-format."""
    (tmp_path / "limits.toml").write_text(f"[content.limits]\nmax_message_bytes = {policy}\n",
                                          encoding="utf-8")
    async with running_gateway(tmp_path, sink, max_message_size=front,
                               extra_config='[policy]\nfiles = ["limits.toml"]\n') as gw:
        assert gw.app.policy.content.limits.max_message_bytes == policy

        def features() -> str:
            with gw.connect() as client:
                return client.ehlo_resp.decode() if client.ehlo_resp else ""

        assert f"SIZE {announced}" in await gw.run(features)
        code, text = await gw.run(gw.send_raw_data, STAFF, [COLLEAGUE],
                                  message_of(announced) + b".\r\n")
        assert code == 250, text
        assert len(sink.messages) == 1
        code, text = await gw.run(gw.send_raw_data, STAFF, [COLLEAGUE],
                                  message_of(announced + 1) + b".\r\n")
        sentence = gw.app.policy.rule("message-format").sentence
        assert code == 552
        assert text.startswith(b"5.3.4 Message too big for this gateway.\n")
        assert b"could not read this message safely" not in text
        assert b" ".join(text.split(b"\n")[1:]).replace(b"5.3.4 ", b"") == sentence.encode()
        assert len(sink.messages) == 1  # nothing more left
        refusals = [e for e in gw.app.audit.iterate(EventFilter()) if e.kind == "refusal"]
        assert [(e.rule, e.metadata["reply"]) for e in refusals] == [("message-format", "552")]
        decisions = [e for e in gw.app.audit.iterate(EventFilter()) if e.kind == "decision"]
        assert len(decisions) == 1  # the one delivered: the policy never saw the larger one


@pytest.mark.parametrize(("size", "refused"), [(0, False), (1000, False), (1001, True)])
def test_check_size_guards_every_way_in(size: int, refused: bool) -> None:
    """The pipeline's own check (for a way in other than the SMTP front): over the policy's
    limit is 552 5.3.4 saying how big, at or under it nothing."""
    policy = policy_with_limit(1000)
    reply = check_size(b"x" * size, policy)
    if not refused:
        assert reply is None
    else:
        assert reply is not None and (reply.code, reply.status) == (552, "5.3.4")
        assert reply.lines == ("Message too big for this gateway: 1001 bytes, over the limit "
                               "of 1000.",)


def test_front_limit_is_never_more_than_the_policy_reads() -> None:
    policy = policy_with_limit(1000)
    assert [message_size_limit(n, policy) for n in (10, 1000, 10**9)] == [10, 1000, 1000]
