"""`casegate service-unit`: print the shipped systemd unit with this installation's paths.

The unit (gateway/cli/deploy/casegate.service) runs `casegate serve` as a dedicated user with
systemd's hardening: no new privileges, a read-only system but for the data directory, a private
/tmp, no home directories, no capabilities. When the config asks for a port below 1024 (port 25
behind Exchange), the unit keeps exactly one capability, CAP_NET_BIND_SERVICE.

    casegate service-unit --config /etc/casegate/casegate.toml --data /var/lib/casegate \\
        > /etc/systemd/system/casegate.service
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from importlib import resources
from pathlib import Path

from gateway.app import resolve_data_dir
from gateway.cli.common import UsageError
from gateway.config import Config, ConfigError, load_config

DEFAULT_CONFIG = Path("/etc/casegate/casegate.toml")
DEFAULT_USER = "casegate"
STOP_MARGIN_SECONDS = 30  # beyond the drain and the hand-overs: closing the stores and listeners
PRIVILEGED_PORTS = range(1, 1024)
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_NO_CAPABILITIES = "CapabilityBoundingSet=\nAmbientCapabilities=\n"
_BIND_CAPABILITY = ("#CapabilityBoundingSet=CAP_NET_BIND_SERVICE\n"
                    "#AmbientCapabilities=CAP_NET_BIND_SERVICE\n")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "service-unit",
        help="print a hardened systemd unit for this installation",
        description="Print the systemd unit that runs `casegate serve` as a dedicated user, "
        "with this installation's casegate, config and data directory filled in.",
    )
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                        help=f"the config file the service reads (default {DEFAULT_CONFIG})")
    parser.add_argument("--data", type=Path, default=None,
                        help="data directory (default: the config's data_dir)")
    parser.add_argument("--user", default=DEFAULT_USER,
                        help=f"the account it runs as (default {DEFAULT_USER})")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not _USER.fullmatch(args.user):
        raise UsageError(f"--user {args.user!r} is not a system account name")
    config_path = args.config.absolute()
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise UsageError(f"{exc} (write one with `casegate init {config_path}`)") from None
    data_dir = resolve_data_dir(config, config_path, args.data).absolute()
    sys.stdout.write(render_unit(config, config_path, data_dir, args.user, casegate_command()))
    return 0


def casegate_command() -> str:
    """This installation's `casegate`: the script beside the running Python (a venv's bin)."""
    script = Path(sys.executable).with_name("casegate")
    return str(script) if script.is_file() else f"{sys.executable} -m gateway"


def stop_timeout(config: Config) -> int:
    """How long systemd waits after SIGTERM before it kills: the drain, then a hand-over that
    sent its end of data waiting for the upstream's reply (up to `upstream.data_done_timeout`;
    killed meanwhile, the acceptance would go unrecorded and the client's retry could deliver
    a second copy), then the margin for closing the stores and the listeners."""
    handing_over = config.upstream.data_done_timeout if config.upstream.host else 0.0
    return math.ceil(config.smtp.drain_seconds + handing_over) + STOP_MARGIN_SECONDS


def render_unit(config: Config, config_path: Path, data_dir: Path, user: str,
                casegate: str) -> str:
    """The shipped unit with the paths filled in, and CAP_NET_BIND_SERVICE only when a port
    the config listens on is below 1024."""
    for path in (config_path, data_dir):
        if re.search(r"[\s%$\\\"']", str(path)):
            raise UsageError(f"{path}: a path in a systemd unit must not hold spaces, quotes, "
                             "'%', '$' or '\\'")
    text = (resources.files("gateway.cli") / "deploy" / "casegate.service").read_text("utf-8")
    ports = (config.smtp.port, config.smtp.tls_port, config.http.port)
    if any(port in PRIVILEGED_PORTS for port in ports):
        text = text.replace(_NO_CAPABILITIES, "").replace(
            _BIND_CAPABILITY, _BIND_CAPABILITY.replace("#", ""))
    stop_seconds = stop_timeout(config)
    for name, value in (("@USER@", user), ("@CASEGATE@", casegate),
                        ("@CONFIG@", str(config_path)), ("@DATA_DIR@", str(data_dir)),
                        ("@STOP_SECONDS@", f"{stop_seconds}s")):
        text = text.replace(name, value)
    return text
