"""gradcheck's report shows, for the worst elements, the input's value, both partial
derivatives and their ratio, so a missing factor or sign and where it strikes are visible."""
import re

import numpy as np
import pytest

import tinyalex as ta


class LeakyReLUMissingSlope(ta.Function):
    """y = x for x > 0, 0.1 x otherwise; the backward forgets the 0.1 (a student's bug)."""

    @staticmethod
    def forward(x):
        return np.where(x > 0, x, 0.1 * x), x

    @staticmethod
    def backward(gy, x, needs_input_grad):
        return (gy,)


def test_the_report_shows_each_failing_elements_input_and_ratio():
    x = ta.tensor(np.random.default_rng(5).standard_normal((4, 5)) + 0.05, requires_grad=True)
    with pytest.raises(ta.GradcheckError) as info:
        ta.gradcheck(LeakyReLUMissingSlope.apply, (x,), n_elements=20)
    lines = str(info.value).splitlines()
    assert lines[0].startswith("gradcheck failed: ") and "L = <gy, fn(inputs)>" in lines[0]
    elements = [line for line in lines if " element (" in line]
    assert elements, lines
    for line in elements:       # every failing element: x < 0, and the factor 10 shows
        x_value = float(re.search(r"x = (\S+),", line).group(1))
        ratio = float(re.search(r"ratio (\S+)$", line).group(1))
        assert x_value < 0 and ratio == pytest.approx(10.0, rel=1e-6), line
    worst = [abs(float(re.search(r"analytical (\S+),", line).group(1))
                 - float(re.search(r"numerical (\S+),", line).group(1))) for line in elements]
    assert worst == sorted(worst, reverse=True)             # worst first


def test_no_more_than_the_reported_number_of_elements_are_listed():
    from tinyalex.gradcheck import REPORTED_ELEMENTS
    x = ta.tensor(-np.random.default_rng(1).random((6, 6)) - 0.1, requires_grad=True)  # all x < 0
    with pytest.raises(ta.GradcheckError) as info:
        ta.gradcheck(LeakyReLUMissingSlope.apply, (x,), n_elements=30)
    lines = str(info.value).splitlines()
    assert sum(" element (" in line for line in lines) == REPORTED_ELEMENTS
    assert lines[-1] == f"  ... and {30 - REPORTED_ELEMENTS} more elements"
