"""The sgd_update kernel: the numba set's fused SGD step gives the bits of the numpy set's
array expressions."""
import numpy as np
import pytest

import tinyalex as ta
from tinyalex import optim


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("settings", [dict(momentum=0.9, weight_decay=5e-4),
                                      dict(momentum=0.9, nesterov=True, weight_decay=1e-3),
                                      dict(momentum=0.5, dampening=0.3), dict(), dict(weight_decay=0.1)])
def test_fused_sgd_gives_the_bits_of_the_array_expressions(dtype, settings):
    start = np.random.default_rng(10).standard_normal((37, 5)).astype(dtype)
    results = []
    for kernel_set in ("numpy", "numba"):                          # array expressions, then fused
        with ta.use_kernels(kernel_set):
            p = ta.tensor(start.copy(), requires_grad=True)
            opt = optim.SGD([p], lr=0.1, **settings)
            grads = np.random.default_rng(11)
            for _ in range(4):
                p.grad = ta.tensor(grads.standard_normal((37, 5)).astype(dtype))
                opt.step()
            results.append(p.detach().numpy())
    assert not np.array_equal(results[0], start)
    np.testing.assert_array_equal(results[1], results[0])
