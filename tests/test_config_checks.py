"""Config values are range- and syntax-checked on load, each error naming the file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config

BAD_VALUES = [
    ("[smtp]\nport = 65536", "'smtp.port' must be a port number from 1 to 65535"),
    ("[smtp]\ntls_port = 70000", "'smtp.tls_port'"),
    ("[http]\nport = 100000", "'http.port'"),
    ("[upstream]\nport = 0", "'upstream.port' must be a port number from 1 to 65535"),
    ("[verification]\ndns_port = 0", "'verification.dns_port'"),
    ("[smtp]\nmax_message_size = 0", "'smtp.max_message_size' must be more than 0"),
    ("[smtp]\nidle_timeout = 0", "'smtp.idle_timeout' must be more than 0"),
    ("[upstream]\ntimeout = 0", "'upstream.timeout' must be more than 0"),
    ("[upstream]\npool_size = 0", "'upstream.pool_size'"),
    ("[smtp]\nhostname = \"mail_gw..example\"", "'smtp.hostname'"),
    ("[smtp]\nhost = \"not an address\"", "'smtp.host'"),
    ("[upstream]\nhost = \"-relay.example\"", "'upstream.host'"),
    ("[smtp]\nrelay_from = [\"10.0.0.0/33\"]", "'smtp.relay_from' has '10.0.0.0/33'"),
    ("[smtp]\nrelay_client_cert_fingerprints = [\"abc\"]", "SHA-256 fingerprint"),
    ("[audit]\ngovernance_address = \"governance\"", "'audit.governance_address'"),
    ("[audit]\nalert_from = \"a b@cafcass.gov.uk\"", "'audit.alert_from'"),
    ("[portal]\nfrom_address = \"portal@\"", "'portal.from_address'"),
    ("[audit]\ndigest_time = \"24:00\"", "'audit.digest_time' must be HH:MM"),
    ("[audit]\ndigest_time = \"7:00\"", "'audit.digest_time'"),
    ("[audit]\nalert_grades = [\"urgent\"]", "'audit.alert_grades' has 'urgent'"),
    ("[audit]\ndigest_grades = [\"none\"]", "'audit.digest_grades'"),
    ("[http]\npublic_url = \"secure.cafcass.example\"", "'http.public_url'"),
    ("[verification]\ndns_servers = [\"dns.example\"]", "'verification.dns_servers'"),
    ("[portal]\nexpiry_days = 0", "'portal.expiry_days'"),
    ("[smtp]\nunauthenticated_idle_timeout = 0",
     "'smtp.unauthenticated_idle_timeout' must be more than 0"),
    ("[smtp]\nhard_error_limit = -1", "'smtp.hard_error_limit' must not be negative"),
    ("[smtp]\njunk_command_limit = 1.5", "'smtp.junk_command_limit' must be a whole number"),
    ("[smtp]\nmax_unauthenticated_connections = -2",
     "'smtp.max_unauthenticated_connections' must not be negative"),
    ("[portal]\nmax_wrong_codes = 0", "'portal.max_wrong_codes' must be more than 0"),
    ("[policy]\nclassifier_processes = -1", "'policy.classifier_processes' must not be negative"),
    ("[policy]\nclassifier_processes = 65", "'policy.classifier_processes' must be from 0 to 64"),
    ("[policy]\nclassifier_min_bytes = 0", "'policy.classifier_min_bytes' must be more than 0"),
    ("[policy]\nclassifier_min_bytes = 2000\nclassifier_max_bytes = 1000",
     "'policy.classifier_min_bytes' (2000) is larger than 'policy.classifier_max_bytes' (1000)"),
]


@pytest.mark.parametrize(("text", "message"), BAD_VALUES)
def test_a_value_out_of_range_names_file_and_key(tmp_path: Path, text: str,
                                                 message: str) -> None:
    """Each value out of its range or syntax is a ConfigError naming the file and the key."""
    path = tmp_path / "casegate.toml"
    path.write_text(text + "\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)


def test_values_at_the_edges_of_their_ranges_load(tmp_path: Path) -> None:
    """Zero where it means "any" or "disabled", the highest port, IPv6, and full addresses load."""
    path = tmp_path / "casegate.toml"
    path.write_text("\n".join([
        "[smtp]", "port = 0", "tls_port = 0", 'host = "::1"', 'hostname = "gw.cafcass.gov.uk"',
        'relay_from = ["10.1.0.0/16", "2001:db8::/32"]', "max_connections = 0",
        "junk_command_limit = 0", "hard_error_limit = 0", "max_unauthenticated_connections = 0",
        "[http]", "port = 65535", 'host = "0.0.0.0"', 'public_url = "https://secure.example/"',
        "[upstream]", 'host = "2001:db8::1"', "port = 587",
        "[audit]", 'governance_address = "information.governance@cafcass.gov.uk"',
        'digest_time = "23:59"', 'alert_grades = ["high", "medium"]', "checkpoint_every = 0",
        "[verification]", "valid_days = 0", 'dns_servers = ["127.0.0.1"]',
    ]) + "\n", encoding="utf-8")
    config = load_config(path)
    assert (config.smtp.port, config.http.port, config.upstream.port) == (0, 65535, 587)
