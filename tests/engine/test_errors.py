"""Bad input raises ValueError or TypeError naming the argument, the expectation and what was
given — never a silent wrong answer or a numpy traceback from deep inside a kernel."""
import numpy as np
import pytest

import tinyalex as ta
import tinyalex.functional as F


def t(*shape, dtype=np.float32):
    return ta.tensor(np.ones(shape, dtype=dtype))


CASES = [
    # (call, error type, words the message must contain)
    (lambda: F.conv2d(t(2, 3, 8, 8, 1), t(4, 3, 3, 3)), ValueError, ["input", "4-D", "(2, 3, 8, 8, 1)"]),
    (lambda: F.conv2d(t(2, 3, 8, 8), t(4, 3, 3)), ValueError, ["weight", "4-D"]),
    (lambda: F.conv2d(t(2, 3, 8, 8), t(4, 2, 3, 3)), ValueError, ["weight", "3 channels", "(4, 2, 3, 3)"]),
    (lambda: F.conv2d(t(2, 4, 8, 8), t(4, 4, 3, 3), groups=2), ValueError, ["weight", "groups=2", "(4, 4, 3, 3)"]),
    (lambda: F.conv2d(t(2, 4, 8, 8), t(3, 2, 3, 3), groups=2), ValueError, ["out_channels", "groups=2"]),
    (lambda: F.conv2d(t(2, 3, 8, 8), t(4, 3, 3, 3), t(5)), ValueError, ["bias", "(4,)", "(5,)"]),
    (lambda: F.conv2d(t(2, 3, 4, 5), t(4, 3, 7, 3)), ValueError, ["kernel_size", "kernel_size 7", "input of size 4 with padding 0"]),
    (lambda: F.conv2d(t(2, 3, 8, 8), t(4, 3, 3, 3), stride=0), ValueError, ["stride", ">= 1"]),
    (lambda: F.conv2d(t(2, 3, 8, 8), t(4, 3, 3, 3), padding=1.5), TypeError, ["padding", "int"]),
    (lambda: F.conv2d(t(2, 3, 8, 8), t(4, 3, 3, 3, dtype=np.float64)), TypeError, ["weight", "float32", "float64"]),
    (lambda: F.conv2d(t(2, 3, 8, 8, dtype=np.int64), t(4, 3, 3, 3)), TypeError, ["input", "float32 or float64", "int64"]),
    (lambda: F.conv2d(np.ones((2, 3, 8, 8)), t(4, 3, 3, 3)), TypeError, ["input", "tinyalex.Tensor", "ndarray"]),
    (lambda: F.conv2d(t(2, 3, 8, 8), t(4, 3, 3, 3), stride=2, padding="same"), ValueError, ["padding='same'", "strided", "(2, 2)"]),
    (lambda: F.conv2d(t(2, 3, 8, 8), t(4, 3, 3, 3), padding="full"), ValueError, ["padding", "'same' or 'valid'", "'full'"]),
    (lambda: F.conv2d(t(2, 3, 8, 8), t(4, 3, 3, 3), dilation=0), ValueError, ["dilation", ">= 1"]),
    (lambda: F.conv2d(t(2, 3, 8, 8), t(4, 3, 3, 3), dilation=4), ValueError, ["kernel_size 3 with dilation 4, which spans 9 pixels", "input of size 8"]),
    # the case: the message names the kernel the user wrote and its dilation, not the span alone
    (lambda: F.conv2d(t(1, 1, 5, 5), t(1, 1, 3, 3), dilation=3), RuntimeError, ["kernel_size 3 with dilation 3, which spans 7 pixels", "input of size 5 with padding 0 (5 pixels)"]),
    (lambda: F.conv2d(t(1, 1, 5, 5), t(1, 1, 3, 3), padding=(1, 1, 1)), RuntimeError, ["padding", "pair", "3 values"]),
    (lambda: F.max_pool2d(t(2, 3, 8, 8), 2, ceil_mode="yes"), TypeError, ["ceil_mode", "True or False", "'yes'"]),
    (lambda: F.max_pool2d(t(2, 3, 8, 8), 2, return_indices=1), TypeError, ["return_indices", "True or False"]),
    (lambda: F.max_pool2d(t(2, 3, 2, 5), 3), ValueError, ["max_pool2d: kernel_size", "kernel_size 3", "input of size 2 with padding 0"]),
    (lambda: F.max_pool2d(t(2, 3, 8, 8), 3, padding=(1, 1, 1)), RuntimeError, ["max_pool2d: padding", "3 values"]),
    (lambda: F.cross_entropy(t(4, 10), ta.tensor([[1], [2], [3], [0]])), RuntimeError, ["target", "multi-target", "(4, 1)"]),
    (lambda: F.max_pool2d(t(2, 3, 8, 8), 3, 2, padding=2), ValueError, ["padding", "half"]),
    (lambda: F.max_pool2d(t(8, 8), 2), ValueError, ["input", "4-D", "(8, 8)"]),
    (lambda: F.local_response_norm(t(2, 3, 4, 4), 0), ValueError, ["size", ">= 1", "0"]),
    (lambda: F.local_response_norm(t(2, 3), 3), ValueError, ["input", "at least 3", "(2, 3)"]),
    (lambda: F.dropout(t(2, 3), 1.5), ValueError, ["p", "[0, 1]", "1.5"]),
    (lambda: F.linear(t(2, 5), t(4, 3)), ValueError, ["input", "last dimension 3", "(2, 5)"]),
    (lambda: F.linear(t(2, 3), t(4, 3), t(3)), ValueError, ["bias", "(4,)", "(3,)"]),
    (lambda: F.cross_entropy(t(4, 10), ta.tensor([1, 2, 3, 10])), ValueError, ["target", "[0, 10)", "10"]),
    (lambda: F.cross_entropy(t(4, 10), ta.tensor([1, 2, -1, 0])), ValueError, ["target", "[0, 10)", "-1"]),
    (lambda: F.cross_entropy(t(4, 10), ta.tensor([1.0, 2.0, 3.0, 0.0])), TypeError, ["target", "integer", "float32"]),
    (lambda: F.cross_entropy(t(4, 10), ta.tensor([1, 2, 3])), ValueError, ["target", "(4,)", "(3,)"]),
    (lambda: F.cross_entropy(t(4, 10), ta.tensor([1, 2, 3, 0]), reduction="avg"), ValueError, ["reduction", "'avg'"]),
    (lambda: F.cross_entropy(t(4, 10, 2), ta.tensor([1, 2, 3, 0])), ValueError, ["input", "2-D"]),
    (lambda: t(2, 3) + t(2, 3, dtype=np.float64), TypeError, ["dtype", "float32", "float64"]),
    (lambda: t(2, 3) @ t(2, 3), ValueError, ["matmul", "(2, 3) @ (2, 3)"]),
]


@pytest.mark.parametrize("call, error, words", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_bad_input_is_refused_with_a_clear_message(call, error, words):
    with pytest.raises(error) as info:
        call()
    for word in words:
        assert word in str(info.value), f"{word!r} not in {str(info.value)!r}"
