"""How `make test` splits the suite over its xdist workers (tests/xdist_units.py): a file is a
unit, a folder whose conftest starts a shared server is one, and the longest units go first."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest

from tests.xdist_units import FIRST, order, unit_of


def test_a_unit_is_a_file_or_a_folder_sharing_a_server() -> None:
    assert unit_of("tests/cli/test_demo.py::test_x[sqlite]") == "tests/cli/test_demo.py"
    assert unit_of("tests/gateway/test_llm_kill.py::test_a") == "tests/gateway"
    assert unit_of("tests/integrations/test_crewai.py::T::t[a::b]") == "tests/integrations"
    # a subfolder's conftest of its own: its files are units of their own
    assert unit_of("tests/gateway/mcp/test_gateway.py::t") == "tests/gateway/mcp/test_gateway.py"


def test_the_longest_units_go_first_and_the_rest_keep_their_order() -> None:
    ids = ["tests/cli/test_a.py::t1", "tests/gateway/test_llm_x.py::t[sqlite]",
           "tests/cli/test_a.py::t2", "tests/integrations/test_y.py::t",
           "tests/gateway/test_llm_x.py::t[postgresql]", "tests/core/test_b.py::t"]  # fmt: skip
    items = cast("list[pytest.Item]", [SimpleNamespace(nodeid=i) for i in ids])
    order(items)
    got = [cast("Any", item).nodeid for item in items]
    assert FIRST[:2] == ("tests/integrations", "tests/gateway")
    assert got == ["tests/integrations/test_y.py::t", "tests/gateway/test_llm_x.py::t[sqlite]",
                   "tests/gateway/test_llm_x.py::t[postgresql]", "tests/cli/test_a.py::t1",
                   "tests/cli/test_a.py::t2", "tests/core/test_b.py::t"]  # fmt: skip
