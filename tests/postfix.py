"""A real Postfix (Debian's package) as the organisation's MTA in front of casegate, for tests.

    with running_postfix(relay_port=gateway_port, local_domains=["cafcass.gov.uk"]) as mta:
        mta.submit(sender, recipients, data)       # smtplib to Postfix's loopback listener
        bounce = await mta.next_mail()             # what Postfix delivered to a local mailbox

The instance lives in a temporary directory of its own: config_directory (main.cf and a
master.cf without chroot), queue_directory, data_directory and a log file; it listens on a free
loopback port and relays everything to `[127.0.0.1]:relay_port` (casegate, which must list
127.0.0.1 in `smtp.relay_from`) in plain SMTP. Mail for `local_domains` (the senders' own, so
the bounces Postfix writes) goes into one Maildir that the test reads. The system instance
(/etc/postfix, which has no main.cf) is never touched.

It runs as `postfix -c DIR start-fg`, a child process of the test: `stop()` asks Postfix to stop
and waits for it; if it will not, `postfix abort` and then the process group are ended, so
nothing is left running, even when a test fails. Postfix needs root (CI runs as root).

When /usr/sbin/postfix is missing the tests skip, unless $CI is set: then they fail, so a CI
machine without Postfix is noticed (.ci/run installs it).
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

POSTFIX = Path("/usr/sbin/postfix")
START_TIMEOUT = 30.0  # seconds for the listener to greet
STOP_TIMEOUT = 20.0
MAIL_TIMEOUT = 30.0  # seconds for a message to reach the Maildir
POLL = 0.05  # seconds between looks at the Maildir while waiting for mail

# Every daemon the tests need, none chrooted (the queue directory is a temporary one).
MASTER_CF = """\
{listen} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def require_postfix() -> None:
    """Skip when Postfix is not installed, except on CI ($CI set), where that is a failure."""
    if POSTFIX.exists():
        return
    if os.environ.get("CI"):
        pytest.fail(f"{POSTFIX} is missing on CI: .ci/run must install Debian's postfix")
    pytest.skip(f"{POSTFIX} is not installed (apt-get install postfix)")


def free_port() -> int:
    """A loopback port free at this moment (Postfix must be told a number)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def main_cf(root: Path, relay_port: int, local_domains: Sequence[str]) -> str:
    """Postfix's main.cf: its own directories, relay everything to casegate, local Maildir."""
    owner = pwd.getpwnam("postfix")
    return "\n".join([
        "compatibility_level = 3.6",
        f"queue_directory = {root / 'queue'}",
        f"data_directory = {root / 'data'}",
        "mail_owner = postfix",
        "setgid_group = postdrop",
        "myhostname = postfix.test",
        "mydomain = postfix.test",
        "myorigin = postfix.test",
        "mydestination =",
        "inet_interfaces = 127.0.0.1",
        "inet_protocols = ipv4",
        "mynetworks = 127.0.0.0/8",
        f"relayhost = [127.0.0.1]:{relay_port}",
        "smtp_tls_security_level = none",
        "smtpd_tls_security_level = none",
        "smtp_dns_support_level = disabled",
        f"virtual_mailbox_domains = {', '.join(local_domains)}",
        f"virtual_mailbox_base = {root / 'mail'}",
        "virtual_mailbox_maps = static:inbox/",  # one Maildir for every local address
        f"virtual_uid_maps = static:{owner.pw_uid}",
        f"virtual_gid_maps = static:{owner.pw_gid}",
        f"maillog_file = {root / 'maillog'}",
        f"maillog_file_prefixes = {root}",
        "alias_maps =",
        "alias_database =",
        "biff = no",
        # A bounce that cannot be returned (its sender was <>) goes to the local postmaster, so
        # a test sees it at once instead of waiting for mail that will never come.
        "notify_classes = 2bounce",
        f"2bounce_notice_recipient = postmaster@{local_domains[0]}",
        "",
    ])


class Postfix:
    """One running instance; see the module docstring."""

    def __init__(self, root: Path, relay_port: int, local_domains: Sequence[str]) -> None:
        self.root = root
        self.port = free_port()
        self.config_dir = root / "etc"
        self.maildir = root / "mail" / "inbox"
        self._seen: set[str] = set()
        self._process: subprocess.Popen[bytes] | None = None
        self.config_dir.mkdir(parents=True)
        (root / "queue").mkdir()
        (root / "mail").mkdir()
        data = root / "data"
        data.mkdir()
        owner = pwd.getpwnam("postfix")
        os.chown(data, owner.pw_uid, owner.pw_gid)
        os.chown(root / "mail", owner.pw_uid, owner.pw_gid)
        (self.config_dir / "main.cf").write_text(
            main_cf(root, relay_port, local_domains), encoding="utf-8")
        (self.config_dir / "master.cf").write_text(
            MASTER_CF.format(listen=f"127.0.0.1:{self.port}"), encoding="utf-8")

    def _postfix(self, *command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(POSTFIX), "-c", str(self.config_dir), *command],
                              capture_output=True, text=True, timeout=STOP_TIMEOUT, check=False)

    def start(self) -> None:
        """Start the master in the foreground (a child of ours) and wait for the greeting."""
        self._process = subprocess.Popen(
            [str(POSTFIX), "-c", str(self.config_dir), "start-fg"], cwd=self.root,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"postfix exited at start:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as conn:
                    if conn.recv(512).startswith(b"220"):
                        return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"postfix did not listen in time:\n{self.log()}") from None
                # Not listening yet: the master binds its listener right after it starts.
                time.sleep(POLL)

    def stop(self) -> None:
        """Stop Postfix and wait until its master is gone; force it if it will not go."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        self._postfix("stop")
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._postfix("abort")
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(STOP_TIMEOUT)

    def submit(self, sender: str, recipients: Sequence[str], data: bytes,
               mail_options: Sequence[str] = (),
               rcpt_options: Sequence[str] = ()) -> dict[str, tuple[int, bytes]]:
        """Hand one message to Postfix over SMTP (blocking: call it in a worker thread)."""
        with smtplib.SMTP("127.0.0.1", self.port, local_hostname="client.test",
                          timeout=30) as client:
            return client.sendmail(sender, list(recipients), data, list(mail_options),
                                   list(rcpt_options))

    async def next_mail(self) -> bytes:
        """The next message Postfix delivers into the local Maildir (oldest first), within
        MAIL_TIMEOUT seconds."""
        deadline = time.monotonic() + MAIL_TIMEOUT
        new = self.maildir / "new"
        while True:
            names = sorted(n for n in (os.listdir(new) if new.exists() else ())
                           if n not in self._seen)
            if names:
                self._seen.add(names[0])
                return (new / names[0]).read_bytes()
            if time.monotonic() > deadline:
                raise TimeoutError(f"no mail in {new} after {MAIL_TIMEOUT} s:\n{self.log()}")
            # Postfix writes the file when its queue manager gets to it: look again shortly.
            await asyncio.sleep(POLL)

    def log(self) -> str:
        """Postfix's own log (for failure messages)."""
        try:
            return (self.root / "maillog").read_text("utf-8", "replace")
        except OSError:
            return "(no log)"


@contextmanager
def running_postfix(relay_port: int, local_domains: Sequence[str]) -> Iterator[Postfix]:
    """A started instance in a fresh temporary directory; stopped and removed at the end."""
    require_postfix()
    # Not pytest's tmp_path: Postfix's unprivileged daemons must be able to reach it.
    root = Path(tempfile.mkdtemp(prefix="casegate-postfix-"))
    root.chmod(0o755)
    instance = Postfix(root, relay_port, local_domains)
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()
        shutil.rmtree(root, ignore_errors=True)
