"""The kernel-set contract (tinyalex/kernels/contract.py): every set implements every
function of it, with the contract's parameters and defaults; the contract itself is not a
kernel set. Each op's kernels are tested in tests/ops/test_<op>.py."""
import inspect

import numpy as np
import pytest

from tinyalex.kernels.contract import KERNEL_API, SET_API, WINOGRAD_API
from tinyalex.kernels import KERNEL_SETS, load_kernel_set


@pytest.mark.parametrize("set_name", list(KERNEL_SETS))
def test_kernel_set_implements_the_contract(set_name):
    """Every function of the contract, with the contract's parameters and defaults (and
    the Winograd pair where the set lists 'winograd')."""
    module = load_kernel_set(set_name)  # a missing set fails here (cupy imports without a GPU)
    api = dict(SET_API, **(WINOGRAD_API if "winograd" in module.CONV2D_ALGORITHMS else {}))
    for name, stub in api.items():
        fn = getattr(module, name, None)
        assert callable(fn) and fn is not stub, f"kernel set {set_name!r} lacks {name}"
        assert inspect.signature(fn) == inspect.signature(stub), f"{set_name}.{name} signature"
    assert set(module.__all__) == set(api) | {"CONV2D_ALGORITHMS"}


def test_the_contract_is_not_callable_as_a_kernel():
    with pytest.raises(NotImplementedError, match="call a kernel set's relu_forward"):
        KERNEL_API["relu_forward"](np.ones(3))
