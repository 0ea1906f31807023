"""Check an op's backward against float64 central finite differences.

For y = fn(*inputs) and a fixed random upstream gradient gy, the scalar L(x) = <gy, fn(x)>
has dL/dx = the vector-Jacobian product that backward computes. gradcheck compares it with

    dL/dx . d  ~=  (L(x + eps d) - L(x - eps d)) / (2 eps)

along random unit directions d (all inputs at once: catches errors anywhere) and along
single elements e_i (names the exact element that is wrong). A random gy, never all
ones, is essential: the gradient of sum(softmax(x)) is zero everywhere, so an all-ones gy
would pass a wrong softmax backward.
"""
import numpy as np

from tinyalex import device as _device
from tinyalex.tensor import Tensor, float64


class GradcheckError(AssertionError):
    """Raised by gradcheck with a report naming the input, the element and the error."""


def _loss(fn, inputs, gy):
    y = fn(*inputs)
    return float((_device.to_device(y.array, "cpu").astype(np.float64) * gy).sum())


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, n_directions=4, n_elements=24,
              seed=0, raise_exception=True):
    """Return True if fn's analytical gradients match central differences, else raise
    GradcheckError (or return False when raise_exception=False).

    fn: a callable on Tensors returning one Tensor; it must be deterministic (re-seed
    dropout inside fn). inputs: a Tensor or a tuple of Tensors; those with requires_grad
    are checked and must be float64 (float32 differences are too noisy to prove anything).
    """
    comparisons = compare_with_finite_differences(fn, inputs, eps, n_directions, n_elements, seed)
    failures = [f"{what}: analytical {a:.8g}, numerical {n:.8g}, error {abs(a - n):.3g} > "
                f"atol {atol:g} + rtol {rtol:g} * |numerical|"
                for what, a, n in comparisons if abs(a - n) > atol + rtol * abs(n)]
    if failures:
        if raise_exception:
            raise GradcheckError("gradcheck failed:\n  " + "\n  ".join(failures))
        return False
    return True


def compare_with_finite_differences(fn, inputs, eps=1e-6, n_directions=4, n_elements=24, seed=0):
    """[(what, analytical, numerical)] for random directions and sampled elements."""
    inputs = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
    checked = [i for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]
    if not checked:
        raise ValueError("gradcheck: inputs: expected at least one Tensor with requires_grad=True")
    for i in checked:
        if inputs[i].dtype != float64:
            raise TypeError(f"gradcheck: input {i}: expected float64 for finite differences, "
                            f"got {inputs[i].dtype}")
    rng = np.random.default_rng(seed)

    y = fn(*inputs)
    gy = rng.standard_normal(y.shape)
    for i in checked:
        inputs[i].grad = None
    y.backward(_device.to_device(gy.astype(y.dtype), y.device))
    analytic = {i: np.zeros(inputs[i].shape) if inputs[i].grad is None
                else _device.to_device(inputs[i].grad.array, "cpu").astype(np.float64) for i in checked}
    originals = {i: inputs[i].array.copy() for i in checked}

    def numeric(perturbations):
        """(L(x + eps d) - L(x - eps d)) / 2 eps for {input index: direction d}."""
        values = []
        for sign in (1.0, -1.0):
            shifted = list(inputs)
            for i, d in perturbations.items():
                shifted[i] = Tensor(originals[i] + sign * eps * _device.to_device(d, inputs[i].device))
            values.append(_loss(fn, shifted, gy))
        return (values[0] - values[1]) / (2 * eps)

    comparisons = []
    for k in range(n_directions):
        directions = {}
        for i in checked:
            d = rng.standard_normal(inputs[i].shape)
            directions[i] = d / max(np.linalg.norm(d), 1e-30)
        a = sum(float((analytic[i] * directions[i]).sum()) for i in checked)
        comparisons.append((f"random direction {k} (all inputs)", a, numeric(directions)))

    per_input = max(1, n_elements // len(checked))
    for i in checked:
        size = inputs[i].numel()
        for flat in rng.choice(size, size=min(per_input, size), replace=False):
            e = np.zeros(size)
            e[flat] = 1.0
            element = tuple(int(v) for v in np.unravel_index(flat, inputs[i].shape))
            comparisons.append((f"input {i} {inputs[i].shape} element {element}",
                                float(analytic[i].reshape(-1)[flat]), numeric({i: e.reshape(inputs[i].shape)})))
    return comparisons
