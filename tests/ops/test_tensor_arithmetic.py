"""The Tensor's arithmetic (+ - * / ** exp log @ sum mean reshape flatten indexing) through
float64 finite differences, on every kernel set."""
import numpy as np

from op_helpers import gradcheck


def test_tensor_arithmetic_finite_differences(kernels):
    rng = np.random.default_rng(0)
    a, b, c = rng.uniform(0.5, 2.0, (3, 4)), rng.uniform(0.5, 2.0, (4,)), rng.standard_normal((4, 2))

    def fn(a, b, c):
        d = (a * b - a / b + 2.0) ** 2 - (-a).exp() + a.log()
        return (d @ c).sum(dim=1, keepdim=True) * 0.5 + d.mean() - d.reshape(2, 6).flatten()[3]

    gradcheck(kernels, fn, [a, b, c])
