"""A Function that breaks the forward/backward contract gets one sentence naming the Function,
what it returned and what was expected, instead of an unpacking error or a silent None grad."""
import numpy as np
import pytest

import tinyalex as ta


def op(forward=None, backward=None):
    """A Function whose forward and backward are the given callables (defaults: y = 2x)."""
    return type("Doubling", (ta.Function,), {
        "forward": staticmethod(forward or (lambda x, w: (2.0 * x * w, (x, w)))),
        "backward": staticmethod(backward or (lambda gy, cache, needs: (2.0 * gy * cache[1],
                                                                        2.0 * gy * cache[0])))})


def inputs():
    """Two rows, so that an unchecked `y, cache = y` would silently unpack the rows."""
    rng = np.random.default_rng(0)
    return (ta.tensor(rng.standard_normal((2, 3)), requires_grad=True),
            ta.tensor(rng.standard_normal((2, 3)), requires_grad=True))


def test_the_contract_as_written_passes_gradcheck():
    assert ta.gradcheck(op().apply, inputs())


@pytest.mark.parametrize("forward, returned", [
    (lambda x, w: 2.0 * x * w, r"returned an array of shape \(2, 3\), float64"),
    (lambda x, w: (2.0 * x * w,), r"returned a tuple of 1 item"),
    (lambda x, w: (2.0 * x, w, x), r"returned a tuple of 3 items"),
    (lambda x, w: (ta.tensor(x), None), r"returned a Tensor of shape \(2, 3\) as y"),
    (lambda x, w: ([1.0, 2.0], None), r"returned a list of 2 items as y"),
])
def test_a_forward_that_breaks_the_contract_is_named(forward, returned):
    with pytest.raises(TypeError, match=r"^Doubling\.forward " + returned + r"; expected"):
        op(forward=forward).apply(*inputs())


@pytest.mark.parametrize("backward, returned", [
    (lambda gy, cache, needs: 2.0 * gy, r"returned an array of shape \(2, 3\), float64; expected a"
                                        r" tuple with one gradient \(an array, or None\) per input: 2"),
    (lambda gy, cache, needs: (2.0 * gy,), r"returned 1 gradient; expected a tuple with one gradient"),
    (lambda gy, cache, needs: (gy, gy, gy), r"returned 3 gradients; expected"),
    (lambda gy, cache, needs: (gy, gy[:1]), r"returned an array of shape \(1, 3\), float64 as the"
                                            r" gradient of input 1; expected None or an array of"
                                            r" that input's shape \(2, 3\) and dtype float64"),
    (lambda gy, cache, needs: (gy, gy.astype(np.float32)), r"returned an array of shape \(2, 3\),"
                                                           r" float32 as the gradient of input 1"),
    (lambda gy, cache, needs: (gy, 2.0), r"returned a float as the gradient of input 1"),
])
def test_a_backward_that_breaks_the_contract_is_named(backward, returned):
    x, w = inputs()
    y = op(backward=backward).apply(x, w)
    with pytest.raises(TypeError, match=r"^Doubling\.backward " + returned):
        y.sum().backward()
    assert x.grad is None and w.grad is None          # nothing half-accumulated


def test_none_for_an_input_is_allowed():
    x, w = inputs()
    op(backward=lambda gy, cache, needs: (2.0 * gy * cache[1], None)).apply(x, w).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), 2.0 * w.detach().numpy())
    assert w.grad is None
