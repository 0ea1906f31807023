"""Check an op's backward against float64 central finite differences.

For y = fn(*inputs) and a fixed random upstream gradient gy, the scalar L(x) = <gy, fn(x)>
has dL/dx = the vector-Jacobian product that backward computes. gradcheck compares it with

    dL/dx . d  ~=  (L(x + eps d) - L(x - eps d)) / (2 eps)

along random unit directions d (all inputs at once: catches errors anywhere) and along
single elements e_i (names the exact element that is wrong). A random gy, never all
ones, is essential: the gradient of sum(softmax(x)) is zero everywhere, so an all-ones gy
would pass a wrong softmax backward.

The report lists the failing directions, then the worst failing elements with the input's
value there, both partial derivatives of L and their ratio: a ratio of 2 or -1 shows a
missing factor or sign, and the input values show where it goes wrong (all x < 0, say).
"""
import collections

import numpy as np

from tinyalex import device as _device
from tinyalex.tensor import Tensor, float64


class GradcheckError(AssertionError):
    """Raised by gradcheck with a report naming the input, the element and the error."""


#: One check: what was compared, dL/d(direction or element) both ways, and for an element
#: the input's value there (None for a random direction).
Comparison = collections.namedtuple("Comparison", "what analytical numerical value")

#: How many failing elements the report shows, worst first.
REPORTED_ELEMENTS = 8


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
    failed = [c for c in comparisons if abs(c.analytical - c.numerical) > atol + rtol * abs(c.numerical)]
    if not failed:
        return True
    if raise_exception:
        raise GradcheckError(failure_report(comparisons, failed, atol, rtol))
    return False


def failure_report(comparisons, failed, atol, rtol):
    """The lines of a failed gradcheck: the failing random directions, then the worst
    failing elements with the input value, both partial derivatives and their ratio."""
    directions = [c for c in failed if c.value is None]
    elements = sorted((c for c in failed if c.value is not None),
                      key=lambda c: abs(c.analytical - c.numerical), reverse=True)
    lines = [f"gradcheck failed: {len(failed)} of {len(comparisons)} checks differ by more than"
             f" atol {atol:g} + rtol {rtol:g} * |numerical| (L = <gy, fn(inputs)>, gy random)"]
    lines += [f"  {c.what}: analytical {c.analytical:.8g}, numerical {c.numerical:.8g},"
              f" ratio {_ratio(c)}" for c in directions]
    if elements:
        lines.append("  worst elements (dL/dx there, and x):")
        lines += [f"  {c.what}: x = {c.value:.6g}, analytical {c.analytical:.8g}, numerical"
                  f" {c.numerical:.8g}, ratio {_ratio(c)}" for c in elements[:REPORTED_ELEMENTS]]
        if len(elements) > REPORTED_ELEMENTS:
            lines.append(f"  ... and {len(elements) - REPORTED_ELEMENTS} more elements")
    return "\n".join(lines)


def _ratio(c):
    """analytical / numerical, the number that shows a missing factor or sign."""
    return f"{c.analytical / c.numerical:.4g}" if c.numerical != 0 else "inf (numerical 0)"


def compare_with_finite_differences(fn, inputs, eps=1e-6, n_directions=4, n_elements=24, seed=0):
    """[Comparison] for random directions and sampled elements."""
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
    originals_cpu = {i: _device.to_device(originals[i], "cpu") for i in checked}

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
        comparisons.append(Comparison(f"random direction {k} (all inputs)", a, numeric(directions), None))

    per_input = max(1, n_elements // len(checked))
    for i in checked:
        size = inputs[i].numel()
        for flat in rng.choice(size, size=min(per_input, size), replace=False):
            e = np.zeros(size)
            e[flat] = 1.0
            element = tuple(int(v) for v in np.unravel_index(flat, inputs[i].shape))
            value = float(originals_cpu[i].reshape(-1)[flat])
            comparisons.append(Comparison(f"input {i} {inputs[i].shape} element {element}",
                                          float(analytic[i].reshape(-1)[flat]),
                                          numeric({i: e.reshape(inputs[i].shape)}), value))
    return comparisons
