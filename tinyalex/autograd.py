"""The autograd core: Function, the graph it records, and the backward sweep.

Define-by-run: every Function applied to tensors that require gradients records a Node
(the Function, its inputs, the op-produced ones by their Node and shape only, and its
private ``cache``). :func:`backward` walks those nodes in reverse topological order,
calls each ``Function.backward(gy, cache, needs_input_grad)`` with plain arrays, and
accumulates the returned arrays into the inputs' gradients. Nothing here knows which
kernel set or device computed the arrays. Tensor, the user-facing array, is in
tinyalex/tensor.py. :func:`trace_ops` lets an exporter (tinyalex.onnx) see every op applied,
with its parameters, which a Node does not keep.
"""
import contextlib
import itertools
import sys
import weakref

import numpy as np

from tinyalex import device as _device
from tinyalex.errors import ValueRuntimeError
from tinyalex.tensor import Tensor

_grad_enabled = True


def is_grad_enabled():
    return _grad_enabled


@contextlib.contextmanager
def _set_grad_enabled(mode):
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, mode
    try:
        yield
    finally:
        _grad_enabled = previous


def no_grad():
    """Context manager that stops recording the graph (like torch.no_grad)."""
    return _set_grad_enabled(False)


def enable_grad():
    return _set_grad_enabled(True)


_tracer = None  # trace_ops's callback, or None


@contextlib.contextmanager
def trace_ops(callback):
    """Call ``callback(function, inputs, params, output)`` for every Function applied inside,
    recorded or not (no_grad too): how tinyalex.onnx.export sees a forward pass. A Node keeps
    no params (stride, padding, ...; a kernel set may keep them in its cache, or not)."""
    global _tracer
    previous, _tracer = _tracer, callback
    try:
        yield
    finally:
        _tracer = previous


class Function:
    """One differentiable op. Subclasses define two static methods on raw arrays::

        forward(*arrays, **params) -> (y, cache)
        backward(gy, cache, needs_input_grad) -> one gradient array (or None) per input

    ``cache`` holds exactly what backward needs; it is freed after backward unless
    ``retain_graph=True``. ``needs_input_grad`` lets backward skip gradients nobody uses.
    """

    @classmethod
    def apply(cls, *inputs, **params):
        y, cache = _checked_forward(cls, cls.forward(*(t.array for t in inputs), **params))
        requires_grad = _grad_enabled and any(t.requires_grad for t in inputs)
        out = Tensor(y, requires_grad=requires_grad)
        if requires_grad:
            out.grad_fn = Node(cls, inputs, cache, out.shape)
        if _tracer is not None:
            _tracer(cls, inputs, params, out)
        return out

    @staticmethod
    def forward(*arrays, **params):
        raise NotImplementedError

    @staticmethod
    def backward(gy, cache, needs_input_grad):
        raise NotImplementedError


class Node:
    """A recorded application of a Function: the graph edge back to its inputs.

    ``next_functions`` is torch's view of the edges, kept after backward frees the inputs:
    one ``(node, 0)`` pair per input, where node is the input's own Node, an
    :class:`AccumulateGrad` for a leaf that requires grad, or None for a constant.
    """
    _ids = itertools.count()

    def __init__(self, function, inputs, cache, shape):
        self.function = function
        self.inputs = tuple(t if t.grad_fn is None else _Produced(t) for t in inputs)
        self.next_functions = tuple((_edge_to(t), 0) for t in inputs)
        self.shape = shape         # of the output, for graph dumps
        self.needs_input_grad = tuple(t.requires_grad for t in inputs)
        self.cache = cache
        self.freed = False
        self.hooks = {}            # hooks of the tensor this node produced
        self.retained = None       # that tensor, when it called retain_grad()
        self.order = next(self._ids)

    def name(self):
        return self.function.__name__

    def __repr__(self):
        return f"<{self.name()}Backward>"


class _Produced:
    """What a Node keeps of an input that an op produced: its Node and shape, not its array.
    As in torch, the graph holds only what backward saved (the Node's cache), so an
    activation that nothing saved (a conv output before its ReLU) is freed during forward."""
    __slots__ = ("grad_fn", "shape", "dtype")
    requires_grad = True
    is_leaf = False

    def __init__(self, t):
        self.grad_fn, self.shape, self.dtype = t.grad_fn, t.shape, t.dtype


class AccumulateGrad:
    """The end of a graph edge at a leaf that requires grad (torch's AccumulateGrad):
    backward adds the incoming gradient into ``variable.grad``."""

    def __init__(self, variable):
        self.variable = variable
        self.next_functions = ()

    def name(self):
        return "AccumulateGrad"

    def __repr__(self):
        return "<AccumulateGrad>"


def _edge_to(t):
    """The node at the other end of an edge to t. A leaf's AccumulateGrad is shared by all
    edges to it while any graph holds it; the leaf refers to it weakly (as in torch), so
    no reference cycle keeps a leaf's array alive."""
    if t.grad_fn is not None:
        return t.grad_fn
    if not t.requires_grad:
        return None
    accumulator = t._accumulator and t._accumulator()
    if accumulator is None:
        accumulator = AccumulateGrad(t)
        t._accumulator = weakref.ref(accumulator)
    return accumulator


class RemovableHandle:
    def __init__(self, hooks, key):
        self._hooks, self._key = hooks, key

    def remove(self):
        self._hooks.pop(self._key, None)


hook_ids = itertools.count()  # keys of Tensor.register_hook's handles


def backward(root, gy, retain_graph=False):
    """Reverse-mode sweep from ``root`` with its gradient ``gy`` (an array of root's shape,
    checked by Tensor.backward): nodes in reverse topological order, each called once with
    the sum of the gradients of all its consumers."""
    if root.is_leaf:
        _accumulate_leaf(root, gy)
        return

    grads = {root.grad_fn: gy}
    for node in _topological_order(root.grad_fn):
        gy = grads.pop(node)
        gy = _run_hooks(node.hooks, gy)
        if node.retained is not None:  # after the hooks, as in torch
            node.retained.grad = Tensor(gy)
        if node.freed:
            raise ValueRuntimeError(f"backward(): trying to go through {node.name()} a second time, "
                                    "but its saved arrays were freed; pass retain_graph=True")
        returned = node.function.backward(gy, node.cache, node.needs_input_grad)
        input_grads = _checked_gradients(node, returned)
        del returned                  # the list alone holds the arrays (_accumulate_leaf)
        inputs = node.inputs
        if not retain_graph:  # free the saved arrays and the edges to the activations now
            node.cache, node.inputs, node.freed = None, (), True
        for i, t in enumerate(inputs):
            g, input_grads[i] = input_grads[i], None  # g alone holds it (_accumulate_leaf)
            if g is None or not t.requires_grad:
                continue
            if t.grad_fn is None:
                _accumulate_leaf(t, g)
            elif t.grad_fn in grads:
                grads[t.grad_fn] = grads[t.grad_fn] + g  # out of place: g may be shared
            else:
                grads[t.grad_fn] = g


def _checked_forward(function, returned):
    """(y, cache) from `function`.forward's result, or one sentence saying what is wrong."""
    if not (isinstance(returned, tuple) and len(returned) == 2):
        raise TypeError(f"{function.__name__}.forward returned {_described(returned)}; expected a"
                        " tuple (y, cache): the output array and what backward needs")
    y = returned[0]
    if not _is_array(y):
        raise TypeError(f"{function.__name__}.forward returned {_described(y)} as y; expected an"
                        " array (NumPy or CuPy; a Tensor's is its .array)")
    return returned


def _checked_gradients(node, returned):
    """`node`.function.backward's result as a list, one entry per input, each None or an
    array of that input's shape and dtype; else one sentence saying what is wrong."""
    name, inputs = node.name(), node.inputs
    expected = (f"expected a tuple with one gradient (an array, or None) per input: {len(inputs)}"
                f" for {name}")
    if not isinstance(returned, (tuple, list)):
        raise TypeError(f"{name}.backward returned {_described(returned)}; {expected}")
    if len(returned) != len(inputs):
        raise TypeError(f"{name}.backward returned {len(returned)} gradient"
                        f"{'s' if len(returned) != 1 else ''}; {expected}")
    for i, (g, t) in enumerate(zip(returned, inputs)):
        if g is None:
            continue
        if not _is_array(g) or tuple(g.shape) != tuple(t.shape) or g.dtype != t.dtype:
            raise TypeError(f"{name}.backward returned {_described(g)} as the gradient of input {i};"
                            f" expected None or an array of that input's shape {tuple(t.shape)} and"
                            f" dtype {t.dtype}")
    return list(returned)


def _is_array(value):
    return isinstance(value, (np.ndarray, np.generic)) or _device.device_of(value) == "cuda"


def _described(value):
    """A value in a few words, for contract errors: 'an array of shape (2, 3), float64'."""
    if isinstance(value, Tensor):
        return f"a Tensor of shape {tuple(value.shape)}"
    if _is_array(value):
        return f"an array of shape {tuple(value.shape)}, {value.dtype}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} item{'s' if len(value) != 1 else ''}"
    return "None" if value is None else f"a {type(value).__name__}"


def _topological_order(root_node):
    """Nodes reachable from root_node, newest first. A node is always created after the
    nodes of its inputs, so creation order is a topological order of the graph."""
    reachable, stack = {root_node}, [root_node]
    while stack:
        for t in stack.pop().inputs:
            parent = t.grad_fn
            if parent is not None and parent not in reachable:
                reachable.add(parent)
                stack.append(parent)
    return sorted(reachable, key=lambda node: node.order, reverse=True)


def _run_hooks(hooks, g):
    for hook in list(hooks.values()):
        replaced = hook(Tensor(g))
        if replaced is not None:
            g = replaced.array if isinstance(replaced, Tensor) else replaced
    return g


def _accumulate_leaf(t, g):
    """Add g into t.grad. A first gradient becomes t.grad without a copy when nothing else
    refers to it or its memory (torch's AccumulateGrad steals it too); a shared one (another
    input's gradient, a saved or user's array, a view of gy) is copied."""
    if t._hooks:
        g, owned = _run_hooks(t._hooks, g), False
    else:
        owned = _SOLE_ARGUMENT_REFS > 0 and _refcount(g) <= _SOLE_ARGUMENT_REFS and _owns_memory(g)
    if t.grad is None:
        t.grad = Tensor(g if owned else g.copy())
    else:
        t.grad.array += g
    if t._post_accumulate_hooks:      # Tensor.register_post_accumulate_grad_hook
        for hook in list(t._post_accumulate_hooks.values()):
            hook(t)


def _refcount(obj):
    return sys.getrefcount(obj)


def _owns_memory(g):
    """True when g is C-contiguous and writeable and its memory is its own, or all of that
    of an array of its type (g = out[0], a reshape) or of a lease (memory a caching
    allocator lent to g alone) that nothing but g refers to."""
    flags = g.flags
    if not (flags.c_contiguous and getattr(flags, "writeable", True)):
        return False
    base = g.base
    if base is None:
        return True
    if getattr(base, "lent_whole_to_one_array", False):
        return _refcount(base) <= _SOLE_BASE_REFS
    if type(base) is not type(g) or base.base is not None or base.nbytes != g.nbytes:
        return False                         # another object's memory (Numba's), or a slice
    return _refcount(base) <= _SOLE_BASE_REFS


def _sole_argument_refs():
    """_refcount of an object held by one caller variable and one parameter: backward's g
    in _accumulate_leaf (the count differs between Python versions, so it is measured)."""
    def callee(obj):
        return _refcount(obj)
    obj = object()
    return callee(obj)


def _sole_base_refs():
    """_refcount of an array's base held by that array and one variable, as in _owns_memory."""
    view = np.empty(2)[:]
    base = view.base
    return _refcount(base)


if hasattr(sys, "getrefcount"):
    _SOLE_ARGUMENT_REFS, _SOLE_BASE_REFS = _sole_argument_refs(), _sole_base_refs()
else:  # no reference counts to trust: always copy
    _SOLE_ARGUMENT_REFS = _SOLE_BASE_REFS = -1
