"""Every refusal against torch 2.13's: one bad call, two libraries (issue 20).

Each row is a bad call written once, as a lambda of the library module (`torch` or
`tinyalex`, which share their names) and a maker of that library's tensors, and the name of
the argument at fault as the user wrote it. The test runs the call on torch (on the CPU) and
on tinyalex (on each kernel set's device, for the rows that reach a kernel set) and asserts:

- torch refuses the call (otherwise the row is no refusal, and wrong);
- tinyalex's exception is an instance of torch's class. torch's class is taken as the
  nearest built-in class of its MRO: torch raises its own subclasses at times
  (torch.OutOfMemoryError, torch.AcceleratorError, pickle.UnpicklingError), which tinyalex
  does not define, and a caller catches the built-in base. NotImplementedError and
  IndexError stay what they are: tinyalex raises them too (TypeNotImplementedError for a
  dtype it has no kernel for, ValueIndexError for a class index out of range);
- where that class is RuntimeError itself (torch's "bad value" class), tinyalex raises the
  row's dual class: ValueRuntimeError for a bad value (a shape, a size, a range, a length),
  TypeRuntimeError for a bad dtype, KeyRuntimeError for a missing or unexpected
  state_dict key. Each is a RuntimeError for code written against torch and the
  ValueError, TypeError or KeyError that tinyalex's own callers catch;
- tinyalex's message names the argument: the row's `argument`, as the user wrote it, as a
  word of its own ('p' in "dropout: p: expected ...", not the p of "probability").

This is what README.md ("The API is PyTorch's") states about error classes. The few calls
where tinyalex departs from torch on purpose are listed in DEPARTURES, with the reason, and
checked too, so that a change on either side shows.
"""
import dataclasses
import os
import re
import tempfile
import typing
import warnings

import numpy as np
import pytest
import torch
import torch.utils.data  # noqa: F401  (torch.utils.data is not imported by `import torch`)

import tinyalex
import tinyalex.utils.data  # noqa: F401
from tinyalex.errors import KeyRuntimeError, TypeNotImplementedError, TypeRuntimeError, ValueRuntimeError

class Make:
    """One library's tensors on one device: `ones(*shape)`, `tensor(values)`."""

    def __init__(self, lib, device="cpu"):
        self.lib, self.device = lib, device

    def ones(self, *shape, dtype="float32", requires_grad=False):
        return self.tensor(np.ones(shape, dtype), requires_grad=requires_grad)

    def tensor(self, values, dtype=None, requires_grad=False):
        array = np.asarray(values, dtype=dtype)
        return self.lib.tensor(array, requires_grad=requires_grad, device=self.device)


@dataclasses.dataclass(frozen=True)
class Refusal:
    id: str
    call: typing.Callable        # call(lib, make): the bad call
    argument: str                # the argument at fault, as the user wrote it
    dual: type = ValueRuntimeError  # tinyalex's class where torch raises RuntimeError


def F(lib):
    return lib.nn.functional


def conv(lib, make, x=(2, 3, 8, 8), w=(4, 3, 3, 3), bias=None, **kwargs):
    b = None if bias is None else make.ones(*bias)
    return F(lib).conv2d(make.ones(*x), make.ones(*w), b, **kwargs)


def logits(make):
    return make.ones(4, 10)


def labels(make, values=(1, 2, 3, 0), dtype="int64"):
    return make.tensor(values, dtype=dtype)


def backward_twice(lib, make):
    x = make.ones(3, requires_grad=True)
    loss = (x * x).sum()
    loss.backward()
    loss.backward()


def dataset(lib, n=4):
    return lib.utils.data.TensorDataset(lib.ones(n, 2), lib.arange(n))


# --- ops: each runs on every kernel set ----------------------------------------------------
OPS = [
    # conv2d
    Refusal("conv2d-input-5d", lambda lib, m: conv(lib, m, x=(2, 3, 8, 8, 1)), "input"),
    Refusal("conv2d-input-2d", lambda lib, m: conv(lib, m, x=(8, 8)), "input"),
    Refusal("conv2d-weight-3d", lambda lib, m: conv(lib, m, w=(4, 3, 3)), "weight"),
    Refusal("conv2d-channels", lambda lib, m: conv(lib, m, w=(4, 2, 3, 3)), "weight"),
    Refusal("conv2d-groups-channels", lambda lib, m: conv(lib, m, x=(2, 4, 8, 8), w=(4, 4, 3, 3), groups=2), "groups"),
    Refusal("conv2d-groups-out-channels", lambda lib, m: conv(lib, m, x=(2, 4, 8, 8), w=(3, 2, 3, 3), groups=2), "groups"),
    Refusal("conv2d-groups-zero", lambda lib, m: conv(lib, m, groups=0), "groups"),
    Refusal("conv2d-bias-shape", lambda lib, m: conv(lib, m, bias=(5,)), "bias"),
    Refusal("conv2d-kernel-larger", lambda lib, m: conv(lib, m, x=(2, 3, 4, 5), w=(4, 3, 7, 3)), "kernel_size"),
    Refusal("conv2d-kernel-larger-padded", lambda lib, m: conv(lib, m, x=(2, 3, 4, 4), w=(4, 3, 7, 7), padding=1), "padding"),
    Refusal("conv2d-dilated-kernel", lambda lib, m: conv(lib, m, x=(2, 3, 5, 5), dilation=3), "dilation"),
    Refusal("conv2d-stride-zero", lambda lib, m: conv(lib, m, stride=0), "stride"),
    Refusal("conv2d-stride-negative", lambda lib, m: conv(lib, m, stride=(1, -1)), "stride"),
    Refusal("conv2d-stride-triple", lambda lib, m: conv(lib, m, stride=(1, 1, 1)), "stride"),
    Refusal("conv2d-padding-triple", lambda lib, m: conv(lib, m, padding=(1, 1, 1)), "padding"),
    Refusal("conv2d-padding-negative", lambda lib, m: conv(lib, m, padding=-1), "padding"),
    Refusal("conv2d-padding-float", lambda lib, m: conv(lib, m, padding=1.5), "padding"),
    Refusal("conv2d-padding-string", lambda lib, m: conv(lib, m, padding="full"), "padding"),
    Refusal("conv2d-padding-same-strided", lambda lib, m: conv(lib, m, stride=2, padding="same"), "padding"),
    Refusal("conv2d-dilation-zero", lambda lib, m: conv(lib, m, dilation=0), "dilation"),
    Refusal("conv2d-dilation-triple", lambda lib, m: conv(lib, m, dilation=(1, 1, 1)), "dilation"),
    Refusal("conv2d-weight-dtype", lambda lib, m: F(lib).conv2d(m.ones(2, 3, 8, 8), m.ones(4, 3, 3, 3, dtype="float64")),
            "weight", TypeRuntimeError),
    Refusal("conv2d-bias-dtype", lambda lib, m: F(lib).conv2d(m.ones(2, 3, 8, 8), m.ones(4, 3, 3, 3), m.ones(4, dtype="float64")),
            "bias", TypeRuntimeError),
    Refusal("conv2d-int-weight", lambda lib, m: F(lib).conv2d(m.ones(2, 3, 8, 8), m.ones(4, 3, 3, 3, dtype="int64")),
            "weight", TypeRuntimeError),
    Refusal("conv2d-not-a-tensor", lambda lib, m: F(lib).conv2d(np.ones((2, 3, 8, 8), np.float32), m.ones(4, 3, 3, 3)), "input"),
    # max_pool2d
    Refusal("max_pool2d-padding-triple", lambda lib, m: F(lib).max_pool2d(m.ones(2, 3, 8, 8), 3, padding=(1, 1, 1)), "padding"),
    Refusal("max_pool2d-kernel-triple", lambda lib, m: F(lib).max_pool2d(m.ones(2, 3, 8, 8), (2, 2, 2)), "kernel_size"),
    Refusal("max_pool2d-stride-triple", lambda lib, m: F(lib).max_pool2d(m.ones(2, 3, 8, 8), 2, (2, 2, 2)), "stride"),
    Refusal("max_pool2d-kernel-zero", lambda lib, m: F(lib).max_pool2d(m.ones(2, 3, 8, 8), 0), "kernel_size"),
    Refusal("max_pool2d-stride-zero", lambda lib, m: F(lib).max_pool2d(m.ones(2, 3, 8, 8), 2, 0), "stride"),
    Refusal("max_pool2d-padding-negative", lambda lib, m: F(lib).max_pool2d(m.ones(2, 3, 8, 8), 3, 1, -1), "padding"),
    Refusal("max_pool2d-padding-over-half", lambda lib, m: F(lib).max_pool2d(m.ones(2, 3, 8, 8), 3, 2, padding=2), "padding"),
    Refusal("max_pool2d-kernel-larger", lambda lib, m: F(lib).max_pool2d(m.ones(2, 3, 2, 5), 3), "kernel_size"),
    Refusal("max_pool2d-input-2d", lambda lib, m: F(lib).max_pool2d(m.ones(8, 8), 2), "input"),
    Refusal("max_pool2d-input-5d", lambda lib, m: F(lib).max_pool2d(m.ones(1, 2, 3, 8, 8), 2), "input"),
    Refusal("max_pool2d-dilation-zero", lambda lib, m: F(lib).max_pool2d(m.ones(2, 3, 8, 8), 2, dilation=0), "dilation"),
    Refusal("max_pool2d-ceil-mode-str", lambda lib, m: F(lib).max_pool2d(m.ones(2, 3, 8, 8), 2, ceil_mode="yes"), "ceil_mode"),
    Refusal("max_pool2d-padding-float", lambda lib, m: F(lib).max_pool2d(m.ones(2, 3, 8, 8), 2, padding=0.5), "padding"),
    # avg_pool2d
    Refusal("avg_pool2d-padding-triple", lambda lib, m: F(lib).avg_pool2d(m.ones(2, 3, 8, 8), 3, padding=(1, 1, 1)), "padding"),
    Refusal("avg_pool2d-kernel-triple", lambda lib, m: F(lib).avg_pool2d(m.ones(2, 3, 8, 8), (2, 2, 2)), "kernel_size"),
    Refusal("avg_pool2d-stride-zero", lambda lib, m: F(lib).avg_pool2d(m.ones(2, 3, 8, 8), 2, 0), "stride"),
    Refusal("avg_pool2d-padding-over-half", lambda lib, m: F(lib).avg_pool2d(m.ones(2, 3, 8, 8), 2, padding=2), "padding"),
    Refusal("avg_pool2d-kernel-larger", lambda lib, m: F(lib).avg_pool2d(m.ones(2, 3, 4, 4), 5), "kernel_size"),
    Refusal("avg_pool2d-input-5d", lambda lib, m: F(lib).avg_pool2d(m.ones(1, 2, 3, 8, 8), 2), "input"),
    Refusal("avg_pool2d-padding-negative", lambda lib, m: F(lib).avg_pool2d(m.ones(2, 3, 8, 8), 3, 1, -1), "padding"),
    Refusal("avg_pool2d-divisor-float", lambda lib, m: F(lib).avg_pool2d(m.ones(2, 3, 8, 8), 2, divisor_override=1.5),
            "divisor_override"),
    Refusal("avg_pool2d-divisor-zero", lambda lib, m: F(lib).avg_pool2d(m.ones(2, 3, 8, 8), 2, divisor_override=0), "divisor_override"),
    Refusal("avg_pool2d-kernel-float", lambda lib, m: F(lib).avg_pool2d(m.ones(2, 3, 8, 8), 2.5), "kernel_size"),
    # local_response_norm
    Refusal("lrn-input-2d", lambda lib, m: F(lib).local_response_norm(m.ones(2, 3), 3), "input"),
    Refusal("lrn-input-1d", lambda lib, m: F(lib).local_response_norm(m.ones(3), 3), "input"),
    Refusal("lrn-module-input-2d", lambda lib, m: lib.nn.LocalResponseNorm(3)(m.ones(2, 3)), "input"),
    Refusal("lrn-size-zero", lambda lib, m: F(lib).local_response_norm(m.ones(2, 3, 4, 4), 0), "size"),
    Refusal("lrn-module-size-zero", lambda lib, m: lib.nn.LocalResponseNorm(0)(m.ones(2, 3, 4, 4)), "size"),
    # dropout
    Refusal("dropout-p-above-one", lambda lib, m: F(lib).dropout(m.ones(2, 3), 1.5), "p"),
    Refusal("dropout-p-negative", lambda lib, m: F(lib).dropout(m.ones(2, 3), -0.1), "p"),
    Refusal("dropout-p-eval", lambda lib, m: F(lib).dropout(m.ones(2, 3), 2.0, training=False), "p"),
    Refusal("dropout-p-string", lambda lib, m: F(lib).dropout(m.ones(2, 3), "half"), "p"),
    Refusal("dropout-int-input", lambda lib, m: F(lib).dropout(m.ones(2, 3, dtype="int64"), 0.5), "input", TypeRuntimeError),
    Refusal("dropout-module-p", lambda lib, m: lib.nn.Dropout(-0.5), "p"),
    Refusal("dropout-not-a-tensor", lambda lib, m: F(lib).dropout(np.ones((2, 3), np.float32), 0.5), "input"),
    # linear
    Refusal("linear-in-features", lambda lib, m: F(lib).linear(m.ones(2, 5), m.ones(4, 3)), "input"),
    Refusal("linear-bias-shape", lambda lib, m: F(lib).linear(m.ones(2, 3), m.ones(4, 3), m.ones(3)), "bias"),
    Refusal("linear-weight-dtype", lambda lib, m: F(lib).linear(m.ones(2, 3), m.ones(4, 3, dtype="float64")),
            "weight", TypeRuntimeError),
    Refusal("linear-module-in-features", lambda lib, m: lib.nn.Linear(3, 4).to(m.device)(m.ones(2, 5)), "input"),
    Refusal("linear-weight-3d", lambda lib, m: F(lib).linear(m.ones(2, 3), m.ones(4, 3, 1)), "weight"),
    Refusal("linear-input-0d", lambda lib, m: F(lib).linear(m.tensor(1.0, "float32"), m.ones(4, 3)), "input"),
    Refusal("linear-not-a-tensor", lambda lib, m: F(lib).linear(np.ones((2, 3), np.float32), m.ones(4, 3)), "input"),
    # cross_entropy
    Refusal("cross_entropy-target-n-by-1", lambda lib, m: F(lib).cross_entropy(logits(m), m.tensor([[1], [2], [3], [0]])), "target"),
    Refusal("cross_entropy-target-out-of-range", lambda lib, m: F(lib).cross_entropy(logits(m), labels(m, (1, 2, 3, 10))), "target"),
    Refusal("cross_entropy-target-negative", lambda lib, m: F(lib).cross_entropy(logits(m), labels(m, (1, 2, -1, 0))), "target"),
    Refusal("cross_entropy-target-float", lambda lib, m: F(lib).cross_entropy(logits(m), labels(m, dtype="float32")),
            "target", TypeRuntimeError),
    Refusal("cross_entropy-target-length", lambda lib, m: F(lib).cross_entropy(logits(m), labels(m, (1, 2, 3))), "target"),
    Refusal("cross_entropy-reduction", lambda lib, m: F(lib).cross_entropy(logits(m), labels(m), reduction="avg"), "reduction"),
    Refusal("cross_entropy-weight-shape", lambda lib, m: F(lib).cross_entropy(logits(m), labels(m), m.ones(5)), "weight"),
    Refusal("cross_entropy-input-3d", lambda lib, m: F(lib).cross_entropy(m.ones(4, 10, 2), labels(m)), "input"),
    Refusal("cross_entropy-probabilities-shape", lambda lib, m: F(lib).cross_entropy(logits(m), m.ones(4, 9)), "target"),
    Refusal("cross_entropy-probabilities-batch", lambda lib, m: F(lib).cross_entropy(logits(m), m.ones(3, 10)), "target"),
    Refusal("cross_entropy-target-bool", lambda lib, m: F(lib).cross_entropy(logits(m), labels(m, (1, 0, 1, 1), "bool")),
            "target", TypeRuntimeError),
    Refusal("cross_entropy-target-list", lambda lib, m: F(lib).cross_entropy(logits(m), [1, 2, 3, 0]), "target"),
    Refusal("cross_entropy-int-logits", lambda lib, m: F(lib).cross_entropy(m.ones(4, 10, dtype="int64"), labels(m)), "input"),
    Refusal("cross_entropy-weight-dtype", lambda lib, m: F(lib).cross_entropy(logits(m), labels(m), m.ones(10, dtype="float64")),
            "weight", TypeRuntimeError),
    Refusal("cross_entropy-label-smoothing", lambda lib, m: F(lib).cross_entropy(logits(m), labels(m), label_smoothing=1.5),
            "label_smoothing"),
    Refusal("cross_entropy-ignore-index-float", lambda lib, m: F(lib).cross_entropy(logits(m), labels(m), ignore_index=1.5),
            "ignore_index"),
    Refusal("cross_entropy-module-target-n-by-1",
            lambda lib, m: lib.nn.CrossEntropyLoss()(logits(m), m.tensor([[1], [2], [3], [0]])), "target"),
    # mse_loss
    Refusal("mse_loss-target-shape", lambda lib, m: F(lib).mse_loss(m.ones(2, 3), m.ones(3, 2)), "target"),
    Refusal("mse_loss-reduction", lambda lib, m: F(lib).mse_loss(m.ones(2, 3), m.ones(2, 3), reduction="avg"), "reduction"),
    Refusal("mse_loss-int-input", lambda lib, m: F(lib).mse_loss(m.ones(2, 3, dtype="int64"), m.ones(2, 3, dtype="int64")),
            "input", TypeRuntimeError),
    Refusal("mse_loss-weight-shape", lambda lib, m: F(lib).mse_loss(m.ones(2, 3), m.ones(2, 3), weight=m.ones(3, 2)), "weight"),
    Refusal("mse_loss-module-target-shape", lambda lib, m: lib.nn.MSELoss()(m.ones(2, 3), m.ones(2, 4)), "target"),
    # view and reshape
    Refusal("view-size", lambda lib, m: m.ones(2, 3).view(4, 2), "shape"),
    Refusal("view-two-inferred", lambda lib, m: m.ones(2, 3).view(-1, -1), "shape"),
    Refusal("reshape-two-inferred", lambda lib, m: m.ones(2, 3).reshape(-1, 3, -1), "shape"),
    Refusal("reshape-size", lambda lib, m: m.ones(2, 3).reshape(5), "shape"),
    Refusal("reshape-negative", lambda lib, m: m.ones(2, 3).reshape(-2, 3), "shape"),
    Refusal("view-float-size", lambda lib, m: m.ones(2, 3).view(2.0, 3), "shape"),
    Refusal("view-as", lambda lib, m: m.ones(2, 3).view_as(m.ones(4)), "shape"),
    # backward
    Refusal("backward-non-scalar", lambda lib, m: (m.ones(3, requires_grad=True) * 2).backward(), "gradient"),
    Refusal("backward-gradient-shape", lambda lib, m: (m.ones(2, requires_grad=True) * 2).backward(m.ones(3)), "gradient"),
    Refusal("backward-no-grad", lambda lib, m: m.ones(2).sum().backward(), "requires_grad"),
    Refusal("backward-twice", backward_twice, "retain_graph"),
]


# --- the rest: nothing there depends on the kernel set ------------------------------------
def load_state_dict(lib, state):
    return lib.nn.Linear(3, 2).load_state_dict(state)


def linear_state(lib, **changes):
    state = dict(lib.nn.Linear(3, 2).state_dict())
    state.update(changes)
    return {k: v for k, v in state.items() if v is not None}


def sgd(lib, **kwargs):
    return lib.optim.SGD(lib.nn.Linear(3, 2).parameters(), **{"lr": 0.1, **kwargs})


def saved_and_loaded(lib, **kwargs):
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "w.pth")
        lib.save({"w": lib.ones(2)}, path)
        return lib.load(path, **kwargs)


def save_to_missing_folder(lib, make):
    lib.save({"w": lib.ones(2)}, os.path.join(os.sep, "no-such-folder-tinyalex", "x.pth"))


ONCE = [
    # nn modules
    Refusal("Conv2d-groups", lambda lib, m: lib.nn.Conv2d(3, 4, 3, groups=2), "groups"),
    Refusal("Conv2d-groups-zero", lambda lib, m: lib.nn.Conv2d(3, 4, 3, groups=0), "groups"),
    Refusal("Conv2d-padding-string", lambda lib, m: lib.nn.Conv2d(3, 4, 3, padding="full"), "padding"),
    Refusal("Conv2d-padding-same-strided", lambda lib, m: lib.nn.Conv2d(3, 4, 3, stride=2, padding="same"), "padding"),
    Refusal("Conv2d-padding-triple", lambda lib, m: lib.nn.Conv2d(3, 4, 3, padding=(1, 1, 1))(m.ones(2, 3, 8, 8)), "padding"),
    Refusal("Linear-negative", lambda lib, m: lib.nn.Linear(-1, 2), "in_features"),
    Refusal("Linear-float", lambda lib, m: lib.nn.Linear(2.5, 2), "in_features"),
    Refusal("Conv2d-negative", lambda lib, m: lib.nn.Conv2d(-1, 4, 3), "in_channels"),
    Refusal("Conv2d-stride-zero", lambda lib, m: lib.nn.Conv2d(3, 4, 3, stride=0)(m.ones(1, 3, 8, 8)), "stride"),
    Refusal("Dropout-p", lambda lib, m: lib.nn.Dropout(1.5), "p"),
    Refusal("MaxPool2d-padding-over-half", lambda lib, m: lib.nn.MaxPool2d(2, padding=2)(m.ones(1, 1, 8, 8)), "padding"),
    # load_state_dict
    Refusal("load_state_dict-missing", lambda lib, m: load_state_dict(lib, linear_state(lib, bias=None)),
            "bias", KeyRuntimeError),
    Refusal("load_state_dict-unexpected", lambda lib, m: load_state_dict(lib, linear_state(lib, extra=lib.ones(2))),
            "extra", KeyRuntimeError),
    Refusal("load_state_dict-shape", lambda lib, m: load_state_dict(lib, linear_state(lib, weight=lib.ones(3, 2))),
            "weight"),
    Refusal("load_state_dict-not-a-dict", lambda lib, m: load_state_dict(lib, [lib.ones(2)]), "state_dict"),
    Refusal("load_state_dict-not-a-tensor", lambda lib, m: load_state_dict(lib, linear_state(lib, weight="abc")), "weight"),
    # optim.SGD
    Refusal("SGD-lr-negative", lambda lib, m: sgd(lib, lr=-0.1), "lr"),
    Refusal("SGD-momentum-negative", lambda lib, m: sgd(lib, momentum=-0.5), "momentum"),
    Refusal("SGD-weight-decay-negative", lambda lib, m: sgd(lib, weight_decay=-1e-4), "weight_decay"),
    Refusal("SGD-nesterov-no-momentum", lambda lib, m: sgd(lib, nesterov=True), "nesterov"),
    Refusal("SGD-nesterov-dampening", lambda lib, m: sgd(lib, momentum=0.9, dampening=0.1, nesterov=True), "nesterov"),
    Refusal("SGD-empty-params", lambda lib, m: lib.optim.SGD([], lr=0.1), "params"),
    Refusal("SGD-params-a-tensor", lambda lib, m: lib.optim.SGD(lib.ones(3, requires_grad=True), lr=0.1), "params"),
    Refusal("SGD-lr-string", lambda lib, m: sgd(lib, lr="fast"), "lr"),
    Refusal("SGD-non-leaf", lambda lib, m: lib.optim.SGD([lib.ones(2, requires_grad=True) * 2], lr=0.1), "params"),
    Refusal("SGD-group-without-params", lambda lib, m: lib.optim.SGD([{"lr": 0.1}], lr=0.1), "params"),
    Refusal("SGD-load-state-dict-groups", lambda lib, m: sgd(lib).load_state_dict(
        {"state": {}, "param_groups": [{**sgd(lib).state_dict()["param_groups"][0], "params": [0]}]}), "state_dict"),
    # utils.data.DataLoader
    Refusal("DataLoader-batch-size-zero", lambda lib, m: lib.utils.data.DataLoader(dataset(lib), batch_size=0), "batch_size"),
    Refusal("DataLoader-batch-size-negative", lambda lib, m: lib.utils.data.DataLoader(dataset(lib), batch_size=-2), "batch_size"),
    Refusal("DataLoader-batch-size-float", lambda lib, m: lib.utils.data.DataLoader(dataset(lib), batch_size=1.5), "batch_size"),
    Refusal("DataLoader-sampler-and-shuffle",
            lambda lib, m: lib.utils.data.DataLoader(dataset(lib), sampler=[0, 1], shuffle=True), "sampler"),
    Refusal("DataLoader-batch-sampler-and-batch-size",
            lambda lib, m: lib.utils.data.DataLoader(dataset(lib), batch_sampler=[[0, 1]], batch_size=2), "batch_sampler"),
    Refusal("DataLoader-num-workers-negative", lambda lib, m: lib.utils.data.DataLoader(dataset(lib), num_workers=-1), "num_workers"),
    Refusal("DataLoader-batch-sampler-and-drop-last",
            lambda lib, m: lib.utils.data.DataLoader(dataset(lib), batch_sampler=[[0]], drop_last=True), "batch_sampler"),
    # save and load
    Refusal("save-missing-folder", save_to_missing_folder, "no-such-folder-tinyalex"),
    Refusal("load-missing-file", lambda lib, m: lib.load(os.path.join(os.sep, "no-such-file-tinyalex.pth")),
            "no-such-file-tinyalex.pth"),
    Refusal("load-map-location", lambda lib, m: saved_and_loaded(lib, map_location="gpu"), "map_location"),
    Refusal("save-to-a-folder", lambda lib, m: lib.save({"w": lib.ones(2)}, tempfile.gettempdir()), "f"),
    Refusal("load-a-folder", lambda lib, m: lib.load(tempfile.gettempdir()), tempfile.gettempdir()),
    Refusal("save-to-a-number", lambda lib, m: lib.save({"w": lib.ones(2)}, 123), "f"),
    Refusal("load-from-a-number", lambda lib, m: lib.load(123), "f"),
    Refusal("device-name", lambda lib, m: lib.device("gpu"), "device"),
]


def raised(call):
    try:
        with warnings.catch_warnings():                            # torch warns before some refusals
            warnings.simplefilter("ignore")
            call()
    except Exception as exc:                                       # noqa: BLE001 (any refusal)
        return exc
    return None


def builtin_class(exc):
    """The nearest built-in class of exc's MRO: what a caller of torch catches."""
    return next(c for c in type(exc).__mro__ if c.__module__ == "builtins")


def names(message, argument):
    """Whether message holds argument as a word of its own."""
    return re.search(rf"(?<![\w.]){re.escape(argument)}(?!\w)", message) is not None


def check(row, device):
    theirs = raised(lambda: row.call(torch, Make(torch)))
    assert theirs is not None, f"{row.id}: torch accepts the call: not a refusal"
    ours = raised(lambda: row.call(tinyalex, Make(tinyalex, device)))
    assert ours is not None, f"{row.id}: tinyalex accepts what torch refuses ({theirs!r})"
    expected = builtin_class(theirs)
    assert isinstance(ours, expected), (f"{row.id}: tinyalex raised {type(ours).__name__}: {ours},"
                                        f" torch {type(theirs).__name__}: {theirs}")
    if expected is RuntimeError:
        assert isinstance(ours, row.dual), (f"{row.id}: torch raises RuntimeError ({theirs}); tinyalex"
                                            f" must raise {row.dual.__name__}, raised {type(ours).__name__}")
    assert names(str(ours), row.argument), f"{row.id}: {row.argument!r} not named in {str(ours)!r}"


@pytest.mark.parametrize("row", OPS, ids=[row.id for row in OPS])
def test_op_refusals_match_torch(row, kernels):
    check(row, kernels.device)


@pytest.mark.parametrize("row", ONCE, ids=[row.id for row in ONCE])
def test_refusals_match_torch(row):
    check(row, "cpu")


# --- where tinyalex departs from torch on purpose --------------------------------------------
@dataclasses.dataclass(frozen=True)
class Departure:
    id: str
    call: typing.Callable
    torch: type                  # the built-in class torch raises, or None where it accepts
    tinyalex: type               # tinyalex's class, or None where it accepts
    why: str


DEPARTURES = [
    Departure("avg_pool2d-input-2d", lambda lib, m: F(lib).avg_pool2d(m.ones(8, 8), 2), IndexError, ValueRuntimeError,
              "torch's IndexError comes from indexing dim -3 of a 2-D input; tinyalex names the input's"
              " shape, as torch's max_pool2d does with RuntimeError"),
    Departure("lrn-not-a-tensor", lambda lib, m: F(lib).local_response_norm(np.ones((2, 3, 4, 4), np.float32), 3),
              AttributeError, TypeError, "torch calls input.dim() on the array; tinyalex says what input must be"),
    Departure("mse_loss-target-a-number", lambda lib, m: F(lib).mse_loss(m.ones(2, 3), 1.0), AttributeError, TypeError,
              "torch calls target.size() on the number; tinyalex says what target must be"),
    Departure("TensorDataset-sizes", lambda lib, m: lib.utils.data.TensorDataset(lib.ones(3), lib.ones(2)),
              AssertionError, ValueError, "torch asserts, which python -O skips; tinyalex raises"),
    Departure("mse_loss-int-target", lambda lib, m: F(lib).mse_loss(m.ones(2, 3), m.ones(2, 3, dtype="int64")),
              None, TypeNotImplementedError, "torch promotes the target; tinyalex's losses take one float dtype"),
    Departure("conv2d-int-input", lambda lib, m: F(lib).conv2d(m.ones(1, 1, 3, 3, dtype="int64"), m.ones(1, 1, 3, 3, dtype="int64")),
              None, TypeNotImplementedError, "tinyalex has float32 and float64 kernels only"),
    Departure("view-non-contiguous", lambda lib, m: m.ones(2, 3).t().view(6), RuntimeError, None,
              "tinyalex tensors have no strides of their own: view is reshape"),
    Departure("backward-gradient-a-list", lambda lib, m: (m.ones(2, requires_grad=True) * 2).backward([1.0, 1.0]),
              TypeError, None, "tinyalex takes any array-like gradient (tests pass NumPy arrays)"),
]


@pytest.mark.parametrize("row", DEPARTURES, ids=[row.id for row in DEPARTURES])
def test_departures_from_torch_are_the_documented_ones(row):
    theirs = raised(lambda: row.call(torch, Make(torch)))
    ours = raised(lambda: row.call(tinyalex, Make(tinyalex)))
    assert (None if theirs is None else builtin_class(theirs)) is row.torch, f"torch: {theirs!r}"
    assert (None if ours is None else type(ours)) is row.tinyalex, f"tinyalex: {ours!r}"


def test_names_finds_the_argument_as_a_word():
    assert names("dropout: p: expected a probability in [0, 1], got 1.5", "p")
    assert not names("dropout: expected a probability in [0, 1], got 1.5", "p")
    assert names("load_state_dict: state_dict: expected a mapping", "state_dict")
    assert not names("load_state_dict: expected a mapping", "state_dict")
    assert names("conv2d: padding='same' is not supported", "padding")


def test_ids_are_unique():
    ids = [row.id for row in OPS + ONCE + DEPARTURES]
    assert len(ids) == len(set(ids))
