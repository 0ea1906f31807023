"""Kernel sets of your own: tinyalex.register_kernels checks a learner's functions against the
contract, fills the rest from a base set, and use_kernels / TINYALEX_CPU select it."""
import types

import numpy as np
import pytest

import tinyalex as ta
import tinyalex.functional as F
from tinyalex.kernels import kernels_for, registered, use_kernels

calls = []


def relu_forward(x):
    calls.append("relu_forward")
    keep = x > 0
    return x * keep, keep


def relu_backward(gy, cache):
    calls.append("relu_backward")
    return gy * cache


def own(**functions):
    return types.SimpleNamespace(**functions)


def test_a_registered_set_runs_its_own_kernels_and_the_base_for_the_rest():
    kernel_set = ta.register_kernels("relu-of-mine", own(relu_forward=relu_forward, relu_backward=relu_backward))
    assert kernel_set.own == ("relu_backward", "relu_forward")
    x = ta.tensor(np.random.default_rng(0).standard_normal((2, 3, 4, 5)) + 0.05, requires_grad=True)
    calls.clear()
    with use_kernels("relu-of-mine"):
        assert kernels_for(x.array) is kernel_set
        F.max_pool2d(F.relu(x), 2).sum().backward()               # max-pool: the numpy set's
    assert calls == ["relu_forward", "relu_backward"]
    expected = ta.tensor(x.detach().numpy(), requires_grad=True)
    with use_kernels("numpy"):
        F.max_pool2d(F.relu(expected), 2).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), expected.grad.numpy())
    assert kernel_set.max_pool2d_forward.__module__ == "tinyalex.kernels.numpy.pool"


def test_the_set_passes_gradcheck_through_the_api():
    ta.register_kernels("relu-of-mine-2", own(relu_forward=relu_forward, relu_backward=relu_backward))
    x = ta.tensor(np.random.default_rng(1).standard_normal((3, 4)) + 0.05, requires_grad=True)
    with use_kernels("relu-of-mine-2"):
        assert ta.gradcheck(F.relu, (x,))


@pytest.mark.parametrize("functions, message", [
    (dict(relu_forward=lambda inputs: None, relu_backward=relu_backward),
     r"relu_forward\(inputs\) differs from the contract's relu_forward\(x\)"),
    (dict(relu_forward=relu_forward, relu_backwards=relu_backward),
     r"relu_backwards is not a function of the contract; did you mean relu_backward\?"),
    (dict(relu_forward=relu_forward),
     r"relu_forward without relu_backward: a forward and its backward share a cache"),
    (dict(max_pool2d_forward=lambda x, kernel_size, stride, padding, ceil_mode=False: None,
          max_pool2d_backward=lambda gy, cache: None),
     r"max_pool2d_forward, max_pool2d_backward without max_pool2d_indices"),
])
def test_a_mistake_is_refused_at_registration_naming_it(functions, message):
    with pytest.raises(ValueError, match=message) as info:
        ta.register_kernels("broken", own(**functions))
    assert isinstance(info.value, RuntimeError)                  # ValueRuntimeError, as elsewhere
    assert registered("broken") is None


def test_every_mistake_is_named_at_once():
    with pytest.raises(ValueError) as info:
        ta.register_kernels("broken", own(relu_forward=lambda inputs: None, lrn_forwad=lambda: None))
    message = str(info.value)
    assert "relu_forward(inputs)" in message and "did you mean lrn_forward" in message
    assert "relu_forward without relu_backward" in message


@pytest.mark.parametrize("name, base, message", [("numpy", "numpy", "name: expected a new set name"),
                                                 ("mine", "cupy", "base: expected a CPU kernel set"),
                                                 ("mine", "nowhere", "base: expected a CPU kernel set")])
def test_names_and_bases_are_checked(name, base, message):
    with pytest.raises(ValueError, match=message):
        ta.register_kernels(name, own(), base=base)


def test_a_conv_of_ones_own_is_not_bypassed_by_the_base_winograd():
    from tinyalex.kernels.numpy import conv
    kernel_set = ta.register_kernels("conv-of-mine", own(conv2d_forward=conv.conv2d_forward,
                                                         conv2d_backward=conv.conv2d_backward))
    assert kernel_set.CONV2D_ALGORITHMS == ("gemm",) and not hasattr(kernel_set, "conv2d_winograd_forward")
    assert ta.register_kernels("relu-only", own(relu_forward=relu_forward, relu_backward=relu_backward)) \
        .CONV2D_ALGORITHMS == ("gemm", "winograd")                 # the base's, with its pair


def test_a_file_is_registered_by_its_path(tmp_path, monkeypatch):
    mine = tmp_path / "mine.py"
    mine.write_text("import numpy as np\n\n\ndef relu_forward(x):\n    keep = x > 0\n"
                    "    return np.where(keep, x, 0.0), keep\n\n\ndef relu_backward(gy, cache):\n"
                    "    return gy * cache\n")
    monkeypatch.setenv("TINYALEX_CPU", str(mine))
    y = F.relu(ta.tensor([-1.0, 2.0]))
    assert kernels_for(y.array) is registered(str(mine))
    np.testing.assert_array_equal(y.numpy(), [0.0, 2.0])
    monkeypatch.setenv("TINYALEX_CPU", str(tmp_path / "missing.py"))
    with pytest.raises(ValueError, match="expected a Python file of kernel functions"):
        F.relu(ta.tensor([1.0]))
