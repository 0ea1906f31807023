"""ONNX export, shaped like ``torch.onnx.export``: ``tinyalex.onnx.export(model, args, f,
input_names=..., output_names=..., dynamic_axes=...)``. docs/onnx.md has the op table.

Design: a trace, as torch.onnx.export does. The model runs forward once, in eval mode and
under no_grad, inside :func:`tinyalex.autograd.trace_ops`, which reports every Function
applied with its inputs, its params (stride, padding, ...) and its output. The recorded
graph of Nodes would not do: under no_grad nothing is recorded, and a Node keeps no params
(they are only in the kernel set's cache, if at all). Tracing the ops, not walking the
module tree, covers a model's own forward (AlexNet's features -> avgpool -> flatten ->
classifier) and functional calls (F.relu, x.flatten(1), x + y) alike. Tensors are told
apart by identity: the call's args are the graph inputs, the model's parameters and
buffers become initializers under their state_dict names, an op's output is a value, and
any other tensor an op reads (a constant made in forward) is baked in as an initializer.
Only the ops the outputs depend on are exported.

The graph is built with the ``onnx`` package's helper API, imported inside export(), so
that ``import tinyalex`` does not load it (``pip install 'tinyalex[onnx]'``). Opset 18.

Each mapping is exact at every batch size: a reshape keeps the dynamic leading axes as
ONNX's ``0`` (copy that dim); ceil_mode pooling becomes floor mode with the extra end
padding torch's rule implies (ONNX's own ceil_mode output shape differs from torch's in
the opset's shape inference). An op without a mapping is refused, naming the op.
"""
import numbers
import os

import numpy as np

from tinyalex import autograd
from tinyalex import device as _device
from tinyalex.errors import ValueRuntimeError
from tinyalex.tensor import Tensor
from tinyalex.ops import basic
from tinyalex.ops.conv import Conv2d
from tinyalex.ops.linear import Linear
from tinyalex.ops.lrn import LocalResponseNorm
from tinyalex.ops.pad import ZeroPad2d
from tinyalex.ops.pool import AvgPool2d, MaxPool2d
from tinyalex.ops.relu import ReLU
from tinyalex.nn.module import _GradientTap

__all__ = ["export", "OPSET"]

#: The ONNX opset every export states (default domain).
OPSET = 18


class UnsupportedOperatorError(ValueRuntimeError):
    """An op (a tinyalex Function) with no ONNX mapping, or a use of one ONNX cannot express:
    a ValueError, and the RuntimeError torch.onnx's UnsupportedOperatorError is."""


def export(model, args, f, input_names=None, output_names=None, dynamic_axes=None,
           opset_version=None):
    """Export `model` to ONNX at `f` by tracing ``model(*args)``; returns the onnx.ModelProto.

    model: a tinyalex.nn.Module (traced in eval mode, its training flags restored after) or
    a function of tensors. args: a Tensor or a tuple of Tensors, the example inputs.
    f: a path or a binary file object. input_names / output_names: names of the graph's
    inputs and outputs, in order (default 'input', 'output'; 'input_0', ... for several).
    dynamic_axes: torch's form, {name: {axis: 'dim name'}} or {name: [axis, ...]}, e.g.
    ``{'input': {0: 'batch'}, 'output': {0: 'batch'}}`` for a dynamic batch.
    opset_version: None or 18 (OPSET).
    """
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError as exc:
        raise ImportError("tinyalex.onnx.export needs the onnx package, expected it installed "
                          f"(pip install 'tinyalex[onnx]'), got {type(exc).__name__}: {exc}") from exc
    if opset_version is not None and opset_version != OPSET:
        raise ValueError(f"tinyalex.onnx.export: opset_version: expected None or {OPSET}, "
                         f"got {opset_version!r}")
    if not callable(model):
        raise TypeError(f"tinyalex.onnx.export: model: expected a tinyalex.nn.Module or a function,"
                        f" got {type(model).__name__}")
    inputs = _check_args(args)
    if not (isinstance(f, (str, os.PathLike)) or hasattr(f, "write")):
        raise TypeError(f"tinyalex.onnx.export: f: expected a path or a binary file object, "
                        f"got {type(f).__name__}")

    records, outputs = _trace(model, inputs)
    input_names = _names("input_names", input_names, len(inputs), "input")
    output_names = _names("output_names", output_names, len(outputs), "output")
    if set(input_names) & set(output_names):
        raise ValueError(f"tinyalex.onnx.export: output_names: expected names other than the "
                         f"input names {input_names}, got {output_names}")
    dynamic = _check_dynamic_axes(dynamic_axes, dict(zip(input_names, inputs)),
                                  dict(zip(output_names, outputs)))

    named = {}
    if hasattr(model, "named_parameters"):
        named.update((id(t), n) for n, t in model.named_buffers())
        named.update((id(t), n) for n, t in model.named_parameters())
    graph = _Graph(helper, numpy_helper, named)
    for name, t in zip(input_names, inputs):
        graph.values[id(t)] = name
        graph.dynamic[name] = dynamic.get(name, {})
    for record in _needed(records, outputs, inputs):
        function, ins, params, out = record
        mapping = _MAPPINGS.get(function)
        if mapping is None:
            raise UnsupportedOperatorError(_unsupported(function))
        mapping(graph, ins, params, out)

    graph_outputs = []
    for name, t in zip(output_names, outputs):
        value = graph.value_of(t)
        graph.node("Identity", [value], name)
        axes = dict(graph.dynamic.get(value, {}))
        axes.update(dynamic.get(name, {}))
        graph_outputs.append(_value_info(helper, name, t, axes))
    graph_inputs = [_value_info(helper, name, t, dynamic.get(name, {}))
                    for name, t in zip(input_names, inputs)]
    proto = helper.make_model(
        helper.make_graph(graph.nodes, type(model).__name__ if hasattr(model, "forward") else
                          getattr(model, "__name__", "model"),
                          graph_inputs, graph_outputs, graph.initializers),
        opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tinyalex")
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    if hasattr(f, "write"):
        f.write(data)
    else:
        with open(os.fspath(f), "wb") as out:
            out.write(data)
    return proto


# --- arguments ---------------------------------------------------------------------------
def _check_args(args):
    inputs = (args,) if isinstance(args, Tensor) else args
    if not isinstance(inputs, (tuple, list)) or not inputs or not all(isinstance(t, Tensor) for t in inputs):
        got = type(args).__name__ if not isinstance(args, (tuple, list)) else \
            "(" + ", ".join(type(a).__name__ for a in args) + ")"
        raise TypeError(f"tinyalex.onnx.export: args: expected a Tensor or a non-empty tuple of "
                        f"Tensors (the example inputs), got {got}")
    if len({id(t) for t in inputs}) != len(inputs):
        raise ValueError("tinyalex.onnx.export: args: expected distinct tensors, got one tensor twice")
    return tuple(inputs)


def _names(argument, names, count, default):
    if names is None:
        names = []
    if isinstance(names, str) or not all(isinstance(n, str) and n for n in names):
        raise TypeError(f"tinyalex.onnx.export: {argument}: expected a list of non-empty strings, "
                        f"got {names!r}")
    names = list(names)
    if len(names) > count:
        raise ValueError(f"tinyalex.onnx.export: {argument}: expected at most {count} names (the "
                         f"model has {count}), got {len(names)}: {names}")
    defaults = [default] if count == 1 else [f"{default}_{i}" for i in range(count)]
    names += defaults[len(names):]
    if len(set(names)) != len(names):
        raise ValueError(f"tinyalex.onnx.export: {argument}: expected distinct names, got {names}")
    return names


def _check_dynamic_axes(dynamic_axes, inputs, outputs):
    """{name: {axis: dim name}} from torch's forms, each name an input or an output and each
    axis in range of that tensor."""
    if dynamic_axes is None:
        return {}
    if not isinstance(dynamic_axes, dict):
        raise TypeError(f"tinyalex.onnx.export: dynamic_axes: expected a dict {{name: {{axis: 'dim"
                        f" name'}}}} or {{name: [axis, ...]}}, got {type(dynamic_axes).__name__}")
    tensors = dict(inputs, **outputs)
    checked = {}
    for name, axes in dynamic_axes.items():
        if name not in tensors:
            raise ValueError(f"tinyalex.onnx.export: dynamic_axes: expected input or output names "
                             f"{list(tensors)}, got {name!r}")
        if isinstance(axes, (list, tuple)):
            axes = {axis: f"{name}_dynamic_axes_{i + 1}" for i, axis in enumerate(axes)}
        if not isinstance(axes, dict):
            raise TypeError(f"tinyalex.onnx.export: dynamic_axes[{name!r}]: expected a dict "
                            f"{{axis: 'dim name'}} or a list of axes, got {axes!r}")
        ndim = tensors[name].ndim
        checked[name] = {}
        for axis, dim in axes.items():
            if not isinstance(axis, numbers.Integral) or isinstance(axis, bool) or not -ndim <= axis < ndim:
                raise ValueError(f"tinyalex.onnx.export: dynamic_axes[{name!r}]: expected axes in "
                                 f"[{-ndim}, {ndim - 1}] ({name} has shape {tensors[name].shape}), "
                                 f"got {axis!r}")
            if not isinstance(dim, str) or not dim:
                raise TypeError(f"tinyalex.onnx.export: dynamic_axes[{name!r}][{axis}]: expected a "
                                f"dim name (a non-empty string), got {dim!r}")
            checked[name][int(axis) % ndim] = dim
    return checked


# --- the trace ---------------------------------------------------------------------------
def _trace(model, inputs):
    """[(function, inputs, params, output)] of every op that ``model(*inputs)`` applies,
    and the output tensors. Modules run in eval mode; their flags are restored after."""
    records = []
    modules = list(model.modules()) if hasattr(model, "modules") else []
    training = [m.training for m in modules]
    try:
        for m in modules:
            m.training = False
        with autograd.no_grad(), autograd.trace_ops(
                lambda function, ins, params, out: records.append((function, ins, params, out))):
            result = model(*inputs)
    finally:
        for m, flag in zip(modules, training):
            m.training = flag
    outputs = (result,) if isinstance(result, Tensor) else result
    if not isinstance(outputs, (tuple, list)) or not outputs or not all(isinstance(t, Tensor) for t in outputs):
        raise TypeError(f"tinyalex.onnx.export: model: expected a forward that returns a Tensor or a"
                        f" tuple of Tensors, got {type(result).__name__}")
    return records, tuple(outputs)


def _needed(records, outputs, inputs):
    """The records the outputs depend on, in the order they ran."""
    produced = {id(r[3]): r for r in records}
    wanted, stack = set(), [t for t in outputs if id(t) in produced]
    while stack:
        t = stack.pop()
        if id(t) in wanted:
            continue
        wanted.add(id(t))
        stack.extend(x for x in produced[id(t)][1] if id(x) in produced and id(x) not in wanted)
    return [r for r in records if id(r[3]) in wanted]


def _unsupported(function):
    name = function.__name__
    hint = {"Dropout": " (training-mode dropout: export runs modules in eval mode, where "
                       "dropout is the identity; a forward calling F.dropout(x, training=True) "
                       "is refused)"}.get(name, "")
    supported = ", ".join(sorted(f.__name__ for f in _MAPPINGS if not f.__name__.startswith("_")))
    return f"tinyalex.onnx.export: op '{name}' has no ONNX mapping{hint} (supported: {supported})"


# --- the graph ---------------------------------------------------------------------------
class _Graph:
    """The ONNX nodes and initializers so far, and each tensor's value name. ``dynamic``:
    value name -> {axis: dim name} of its dynamic axes, to keep reshapes exact."""

    def __init__(self, helper, numpy_helper, named):
        self.helper, self.numpy_helper = helper, numpy_helper
        self.named = named            # id(parameter or buffer) -> its state_dict name
        self.values = {}              # id(tensor) -> value name (the trace keeps every tensor alive)
        self.dynamic = {}
        self.nodes, self.initializers = [], []
        self.count = 0

    def fresh(self, prefix):
        self.count += 1
        return f"{prefix}_{self.count}"

    def value_of(self, t):
        """The value name of tensor t; a parameter, a buffer or a constant becomes an
        initializer the first time it is read."""
        name = self.values.get(id(t))
        if name is None:
            name = self.named.get(id(t)) or self.fresh("constant")
            self.constant(_device.to_device(t.array, "cpu"), name)
            self.values[id(t)] = name
        return name

    def constant(self, array, name=None):
        name = name or self.fresh("constant")
        self.initializers.append(self.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op_type, inputs, output=None, **attributes):
        output = output or self.fresh(op_type)
        self.nodes.append(self.helper.make_node(op_type, inputs, [output],
                                                name=f"{op_type}_{len(self.nodes)}", **attributes))
        return output

    def emit(self, op_type, ins, out, axes=None, names=None, **attributes):
        """One node from the op's inputs to its output tensor, whose dynamic axes are those
        of the first input unless `axes` is given."""
        names = names if names is not None else [self.value_of(t) for t in ins]
        name = self.node(op_type, names, **attributes)
        self.values[id(out)] = name
        self.dynamic[name] = dict(self.axes(ins[0])) if axes is None else axes
        return name

    def axes(self, t):
        return self.dynamic.get(self.values.get(id(t)), {})


def _value_info(helper, name, t, axes):
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(t.dtype))
    shape = [axes.get(i, n) for i, n in enumerate(t.shape)]
    return helper.make_tensor_value_info(name, elem, shape)


def _refuse(op, why):
    raise UnsupportedOperatorError(f"tinyalex.onnx.export: op '{op}': {why}")


# --- the mappings: one function per tinyalex Function -------------------------------------
def _conv(g, ins, params, out):
    (ph, pw), weight = params["padding"], ins[1]
    g.emit("Conv", ins, out, kernel_shape=list(weight.shape[2:]), strides=list(params["stride"]),
           pads=[ph, pw, ph, pw], dilations=list(params["dilation"]), group=params["groups"])


def _zero_pad(g, ins, params, out):
    top, bottom, left, right = params["pads"]
    lead = ins[0].ndim - 2
    pads = g.constant(np.array([0] * lead + [top, left] + [0] * lead + [bottom, right], np.int64))
    g.emit("Pad", ins, out, names=[g.value_of(ins[0]), pads], mode="constant")


def _pool(g, ins, params, out, op):
    """MaxPool / AveragePool in floor mode: torch's ceil_mode output size comes from extra
    end padding, which neither op counts (AveragePool with count_include_pad=0); torch
    counts the symmetric padding with count_include_pad=True, so that padding is then an
    explicit zero Pad in front."""
    x = ins[0]
    kernel, stride, padding = params["kernel_size"], params["stride"], params["padding"]
    spatial = x.shape[2:]
    extra = [max(0, (o - 1) * s + k - (n + 2 * p))
             for o, s, k, n, p in zip(out.shape[2:], stride, kernel, spatial, padding)]
    dynamic_spatial = sorted(a for a in g.axes(x) if a >= 2)
    if any(extra) and dynamic_spatial:
        _refuse(op, f"ceil_mode=True adds end padding that depends on the input's size, and axes"
                    f" {dynamic_spatial} are dynamic; export them as fixed sizes")
    if op == "AvgPool2d" and params.get("divisor_override") is not None:
        _refuse(op, f"divisor_override={params['divisor_override']} has no ONNX equivalent")
    attributes = dict(kernel_shape=list(kernel), strides=list(stride))
    if op == "MaxPool2d":
        g.emit("MaxPool", ins, out, pads=list(padding) + [p + e for p, e in zip(padding, extra)],
               **attributes)
        return
    include_pad = params["count_include_pad"]
    if tuple(kernel) == tuple(spatial) and not any(padding) and not dynamic_spatial:
        g.emit("GlobalAveragePool", ins, out)
    elif include_pad and any(extra):
        source = g.value_of(x)
        if any(padding):
            pads = g.constant(np.array([0, 0, *padding, 0, 0, *padding], np.int64))
            source = g.node("Pad", [source, pads], mode="constant")
        g.emit("AveragePool", ins, out, names=[source], pads=[0, 0, *extra], count_include_pad=0,
               **attributes)
    else:
        g.emit("AveragePool", ins, out, pads=list(padding) + [p + e for p, e in zip(padding, extra)],
               count_include_pad=int(include_pad), **attributes)


def _lrn(g, ins, params, out):
    size = params["size"]
    if size % 2 == 0:
        _refuse("LocalResponseNorm", f"size {size}: ONNX's LRN window for an even size is one "
                "channel later than torch's (c - size//2 + 1 to c + size//2, not c - size//2 to"
                " c + size//2 - 1); expected an odd size")
    g.emit("LRN", ins, out, size=size, alpha=float(params["alpha"]), beta=float(params["beta"]),
           bias=float(params["k"]))


def _linear(g, ins, params, out):
    g.emit("Gemm", ins, out, axes={0: g.axes(ins[0])[0]} if 0 in g.axes(ins[0]) else {}, transB=1)


def _unary(op_type):
    def mapping(g, ins, params, out):
        g.emit(op_type, ins, out)
    return mapping


def _binary(op_type):
    def mapping(g, ins, params, out):
        g.emit(op_type, ins, out, axes=_broadcast_axes(g, ins, out.ndim))
    return mapping


def _broadcast_axes(g, ins, ndim):
    axes = {}
    for t in reversed(ins):                      # the first operand's names win
        axes.update({a + ndim - t.ndim: d for a, d in g.axes(t).items()})
    return axes


def _matmul(g, ins, params, out):
    a, b = ins
    axes = {}
    for t, dropped in ((b, b.ndim - 2), (a, a.ndim - 1)):    # b's rows and a's columns are summed
        axes.update({i + out.ndim - t.ndim: d for i, d in g.axes(t).items() if i != dropped})
    g.emit("MatMul", ins, out, axes=axes)


def _reshape(g, ins, params, out):
    """Dynamic leading axes stay as ONNX's 0 (copy the input's dim); a reshape that moves or
    merges a dynamic axis is refused (its shape would be fixed at the traced size)."""
    x, shape = ins[0], list(out.shape)
    axes = g.axes(x)
    lead = max(axes) + 1 if axes else 0
    if tuple(shape[:lead]) != tuple(x.shape[:lead]):
        names = {a: axes[a] for a in sorted(axes)}
        _refuse("Reshape", f"reshape of shape {x.shape} to {tuple(shape)} changes the dynamic "
                f"axes {names} (a reshape keeps the dims up to the last dynamic axis, as "
                "x.flatten(1) keeps the batch); expected those dims kept")
    target = g.constant(np.array([0] * lead + shape[lead:], np.int64))
    g.emit("Reshape", ins, out, names=[g.value_of(x), target], axes=dict(axes))


def _permute(g, ins, params, out):
    dims = list(params["dims"])
    axes = g.axes(ins[0])
    g.emit("Transpose", ins, out, axes={j: axes[d] for j, d in enumerate(dims) if d in axes},
           perm=dims)


def _reduce(op_type):
    def mapping(g, ins, params, out):
        reduced, keep = params["axes"], params["keepdim"]
        if not reduced:              # an empty reduction (of a 0-d tensor): the input itself
            g.emit("Identity", ins, out)
            return
        axes, kept = g.axes(ins[0]), [a for a in range(ins[0].ndim) if a not in reduced]
        new = {(a if keep else kept.index(a)): d for a, d in axes.items() if a not in reduced}
        names = [g.value_of(ins[0]), g.constant(np.array(reduced, np.int64))]
        g.emit(op_type, ins, out, axes=new, names=names, keepdims=int(keep))
    return mapping


def _pow(g, ins, params, out):
    exponent = g.constant(np.array(params["exponent"], dtype=ins[0].dtype))
    g.emit("Pow", ins, out, names=[g.value_of(ins[0]), exponent])


def _convert(g, ins, params, out):
    g.emit("Cast", ins, out, to=g.helper.np_dtype_to_tensor_dtype(np.dtype(params["dtype"])))


def _max_pool(g, ins, params, out):
    _pool(g, ins, params, out, "MaxPool2d")


def _avg_pool(g, ins, params, out):
    _pool(g, ins, params, out, "AvgPool2d")


#: tinyalex Function -> its mapping. docs/onnx.md shows this table.
_MAPPINGS = {
    Conv2d: _conv, ZeroPad2d: _zero_pad, MaxPool2d: _max_pool, AvgPool2d: _avg_pool,
    LocalResponseNorm: _lrn, ReLU: _unary("Relu"), Linear: _linear,
    basic.Reshape: _reshape, basic.Permute: _permute, basic.MatMul: _matmul,
    basic.Add: _binary("Add"), basic.Sub: _binary("Sub"), basic.Mul: _binary("Mul"),
    basic.Div: _binary("Div"), basic.Neg: _unary("Neg"), basic.Exp: _unary("Exp"),
    basic.Log: _unary("Log"), basic.Abs: _unary("Abs"), basic.Pow: _pow,
    basic.Sum: _reduce("ReduceSum"), basic.Mean: _reduce("ReduceMean"),
    basic.Clone: _unary("Identity"), basic.Convert: _convert,
    _GradientTap: _unary("Identity"),   # a full backward hook's tap: the identity forward
}
