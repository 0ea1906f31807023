"""Kernel sets of your own, assembled and checked for tinyalex.register_kernels.

A learner who has written `relu_backward` (or a whole conv2d) registers it as a set; every
function of the contract it does not define comes from `base`, so the network runs with
the learner's kernels where they exist and the reference everywhere else. The set is then
selected like the built-in ones: ``use_kernels(name)``, ``TINYALEX_CPU=name``, or
``TINYALEX_CPU=path/to/file.py`` (the file is registered under that path on first use).

tinyalex/kernels/__init__.py keeps the registry and the choice; this module builds a set and
checks what it is given against tinyalex/kernels/contract.py, so a mistake is
named before any op runs: a function whose signature differs from the contract's, a
public function whose name is one letter off a contract name, or one half of a
forward/backward pair (each set's cache is private to it, so a forward of yours cannot
feed the base set's backward).
"""
import difflib
import importlib.util
import inspect
import os
import types

from tinyalex.errors import ValueRuntimeError
from tinyalex.kernels.contract import SET_API, WINOGRAD_API

#: Functions that share a cache: a set defines all of a group or none of it.
PAIRS = (("conv2d_forward", "conv2d_backward"),
         ("conv2d_winograd_forward", "conv2d_winograd_backward"),
         ("max_pool2d_forward", "max_pool2d_backward", "max_pool2d_indices"),
         ("avg_pool2d_forward", "avg_pool2d_backward"),
         ("lrn_forward", "lrn_backward"), ("relu_forward", "relu_backward"),
         ("dropout_forward", "dropout_backward"),
         ("cross_entropy_forward", "cross_entropy_backward"),
         ("mse_loss_forward", "mse_loss_backward"))

CONTRACT = {**SET_API, **WINOGRAD_API}



def assemble(name, kernels, base_set):
    """The kernel set `name`: `kernels`' contract functions, the rest from `base_set` (a set
    module). Raises ValueRuntimeError naming every mistake at once: a signature that differs
    from the contract's, a misspelt name, half a forward/backward pair."""
    given = {n: getattr(kernels, n) for n in CONTRACT if callable(getattr(kernels, n, None))}
    problems = _problems(kernels, given)
    if problems:
        raise ValueRuntimeError(f"register_kernels({name!r}): " + "; ".join(problems))
    kernel_set = types.ModuleType(name, f"kernel set {name!r}: {', '.join(sorted(given)) or 'nothing'}"
                                        f" of its own, the rest from {base_set.__name__}")
    for n in SET_API:
        setattr(kernel_set, n, given.get(n, getattr(base_set, n)))
    # Winograd: the set's own pair, or the base's unless the set has a conv of its own (which
    # the base's Winograd would bypass)
    own_conv = "conv2d_forward" in given and "conv2d_winograd_forward" not in given
    kernel_set.CONV2D_ALGORITHMS = ("gemm",) if own_conv else (
        ("gemm", "winograd") if "conv2d_winograd_forward" in given else base_set.CONV2D_ALGORITHMS)
    if "winograd" in kernel_set.CONV2D_ALGORITHMS:
        for n in WINOGRAD_API:
            setattr(kernel_set, n, given.get(n, getattr(base_set, n, None)))
    kernel_set.own = tuple(sorted(given))
    return kernel_set


def read_file(path):
    """The text of the Python file `path` of kernels, or an error saying it is not one."""
    if not os.path.isfile(path):
        raise ValueRuntimeError(f"kernels: expected a Python file of kernel functions, got {path!r},"
                                " which is not a file")
    with open(path, encoding="utf-8") as f:
        return f.read()


def load_file(path):
    """The module defined by the Python file `path` (a learner's kernels)."""
    spec = importlib.util.spec_from_file_location(
        "tinyalex_user_kernels_" + os.path.splitext(os.path.basename(path))[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _problems(kernels, given):
    """Every way `given` (name -> function) breaks the contract, one phrase each."""
    problems = []
    for n, fn in given.items():
        try:
            signature = inspect.signature(fn)
        except (TypeError, ValueError):
            continue                      # a builtin or C function: nothing to compare
        if signature != inspect.signature(CONTRACT[n]):
            problems.append(f"{n}{signature} differs from the contract's {n}{inspect.signature(CONTRACT[n])}")
    for attribute in dir(kernels):
        if attribute.startswith("_") or attribute in CONTRACT or not inspect.isfunction(getattr(kernels, attribute)):
            continue
        close = difflib.get_close_matches(attribute, CONTRACT, n=1, cutoff=0.85)
        if close:
            problems.append(f"{attribute} is not a function of the contract; did you mean {close[0]}?")
    for group in PAIRS:
        present = [n for n in group if n in given]
        if present and len(present) < len(group):
            missing = [n for n in group if n not in given]
            problems.append(f"{', '.join(present)} without {', '.join(missing)}: a forward and its"
                            " backward share a cache, so define both (or neither)")
    return problems
