"""How `make test` spreads the suite over two xdist workers (`-n 2 --dist loadfile`, refined
here; tests/conftest.py hooks it in): a unit of work runs whole on one worker.

A unit is a test file (its module-scoped fixtures start once), except in the folders of
`SHARED`, whose conftest starts a `tether serve` once for all its files (session- or
package-scoped fixtures): there the folder is the unit, or each worker would start its own.
xdist's `loadgroup` would do this with `xdist_group` marks, but xdist 3.8 cannot tag the tests
with pytest 9.2's node ids and silently spreads them one by one (pytest-xdist issue 1386), so the
unit is told by the node id here, which the controller sees without collecting.

`FIRST` starts first: the units that take longest, so that none of them is left for the end on
one worker while the other has nothing to do. It only orders the work: a stale entry costs
balance, never a test.
"""

from __future__ import annotations

from typing import Any

import pytest
from xdist.scheduler import LoadScopeScheduling

SHARED = ("tests/gateway", "tests/integrations")

# the longest units of a `make test` (its --durations list and the suite's own run time per
# unit), longest first
FIRST = (
    "tests/integrations",
    "tests/gateway",
    "tests/ui/test_console_demo_browser.py",
    "tests/cli/test_demo.py",
)


def unit_of(nodeid: str) -> str:
    path = nodeid.split("::", 1)[0]
    folder = path.rpartition("/")[0]
    return folder if folder in SHARED else path


class Units(LoadScopeScheduling):
    """loadfile with `SHARED` folders as units, in the order the workers collected them."""

    def __init__(self, config: pytest.Config, log: Any = None) -> None:
        super().__init__(config, log)
        # keep the collection's order (`FIRST` first, see `order`), not units by test count
        config.option.loadscopereorder = False

    def _split_scope(self, nodeid: str) -> str:
        return unit_of(nodeid)


def order(items: list[pytest.Item]) -> None:
    """`FIRST` units to the front; otherwise (and within a unit) the collection's order."""
    rank = {unit: i for i, unit in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(unit_of(item.nodeid), len(FIRST)))


def check_shared(items: list[pytest.Item]) -> None:
    """A test using a session- or package-scoped fixture of a conftest outside its unit would
    start that fixture on every worker that runs such a test: says so at collection."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        for defs in info.name2fixturedefs.values() if info is not None else ():
            fixture, unit = defs[-1], unit_of(item.nodeid)
            home = fixture.baseid  # a conftest's folder, a test module, or "" (a plugin's)
            conftest = home.startswith("tests/") and not home.endswith(".py")
            if fixture.scope in ("session", "package") and conftest and home != unit:
                raise pytest.UsageError(
                    f"{item.nodeid} uses {fixture.argname} ({fixture.scope} scope) of "
                    f"{home}/conftest.py but runs in the unit {unit}: add {home!r} to SHARED "
                    "in tests/xdist_units.py, so that its files run on one xdist worker"
                )
