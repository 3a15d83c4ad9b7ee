"""The rules of the house (docs/architecture.md), read from the source: which room may import
which, no import circles, no imports hidden inside functions, and only the App and its config
at the root of gateway/. `scripts/architecture` prints the same figures."""

from __future__ import annotations

import pytest

from tests.imports import ROOT, circles, deferred_imports, graph

# Bottom to top: a module may import its own room and the rooms of lower layers, never higher.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("policies",),  # the policy as data and the pure engine
    ("transports",),  # the ways out
    ("verification",),  # the registry and the verification workflow
    ("gateway.config", "gateway.configref"),  # the config, read and checked
    ("gateway.observe", "gateway.audit"),  # metrics and log lines; the audit trail
    ("gateway.stores",),  # staff accounts, web sessions, portal copies, throttles
    ("gateway.app",),  # the App: config, policy, stores, ways out
    ("gateway.stages", "gateway.printed"),  # one message's stages; printed items
    ("gateway.smtp", "gateway.web"),  # the fronts
    ("gateway.runtime",),  # the composition root of the running gateway
    ("gateway.cli", "gateway.__main__"),  # the commands
)
ROOT_FILES = {"__init__.py", "__main__.py", "app.py", "config.py", "configref.py"}


def room(module: str) -> str:
    """The room a module lives in: `gateway.<room>` inside gateway/, else its package."""
    parts = module.split(".")
    if parts[0] != "gateway":
        return parts[0]
    return ".".join(parts[:2]) if len(parts) > 1 else "gateway"


def layer(module: str) -> int:
    name = room(module)
    for index, rooms in enumerate(LAYERS):
        if name in rooms:
            return index
    raise AssertionError(f"{module} is in no layer: add its room to LAYERS and to "
                         "docs/architecture.md")


def test_no_room_imports_upwards() -> None:
    """Every import goes to the module's own room or to a lower layer (TYPE_CHECKING too)."""
    edges = graph(include_deferred=True, include_type_checking=True)
    upwards = sorted(f"{module} imports {target}"
                     for module, targets in edges.items() for target in targets
                     if room(module) != room(target) and layer(target) > layer(module))
    assert upwards == [], "imports against the layers:\n" + "\n".join(upwards)


def test_rooms_of_the_same_layer_do_not_import_each_other() -> None:
    """The fronts do not reach into each other, nor the stages into printed items."""
    edges = graph(include_deferred=True, include_type_checking=True)
    sideways = sorted(f"{module} imports {target}"
                      for module, targets in edges.items() for target in targets
                      if room(module) != room(target) and layer(target) == layer(module)
                      and room(module) != "gateway.configref"
                      and room(module) != "gateway.__main__")
    assert sideways == [], "\n".join(sideways)


def test_there_are_no_import_circles() -> None:
    found = circles(graph(include_deferred=True, include_type_checking=True))
    assert found == [], "import circles: " + "; ".join(" -> ".join(c) for c in found)


def test_no_first_party_import_is_hidden_in_a_function() -> None:
    assert deferred_imports() == []


def test_the_root_of_gateway_holds_only_the_app_and_its_config() -> None:
    assert {p.name for p in (ROOT / "gateway").glob("*.py")} == ROOT_FILES


@pytest.mark.parametrize("package", ["policies", "verification"])
def test_lower_packages_take_only_what_they_need_from_transports(package: str) -> None:
    """policies imports nothing of ours but itself; verification only the Transport protocol,
    the plain-text mail filler and the stores' engine."""
    allowed = {"policies": set(),
               "verification": {"transports.base", "transports.plaintext", "transports.database"}}
    edges = graph(include_deferred=True, include_type_checking=True)
    taken = {target for module, targets in edges.items() if room(module) == package
             for target in targets if room(target) == "transports"}
    assert taken <= allowed[package]
