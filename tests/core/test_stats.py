from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.core.stats import success_rate, wilson_interval


@given(st.integers(1, 10_000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_bounds_contain_the_rate(pair: tuple[int, int]) -> None:
    k, n = pair
    low, high = wilson_interval(k, n)
    assert 0.0 <= low <= k / n <= high <= 1.0


def test_known_values() -> None:
    # Reference values for 95 % (z = 1.96): 8/10 -> [0.4902, 0.9433]
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    assert wilson_interval(0, 5)[0] == 0.0 and wilson_interval(5, 5)[1] == 1.0


def test_more_trials_narrow_the_interval() -> None:
    small, big = wilson_interval(9, 10), wilson_interval(900, 1000)
    assert big[1] - big[0] < small[1] - small[0]


def test_no_trials_is_unknown_and_bad_input_raises() -> None:
    assert success_rate(0, 0).rate is None
    assert success_rate(3, 4).to_dict()["rate"] == 0.75
    with pytest.raises(ValueError):
        wilson_interval(5, 4)
