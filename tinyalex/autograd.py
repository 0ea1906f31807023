"""The autograd core: Tensor, Function, and the topological backward pass.

Define-by-run: every Function applied to tensors that require gradients records a Node
(the Function, its inputs, the op-produced ones by their Node and shape only, and its
private ``cache``). ``Tensor.backward`` walks
those nodes in reverse topological order, calls each ``Function.backward(gy, cache,
needs_input_grad)`` with plain arrays, and accumulates the returned arrays into the
inputs' gradients. Nothing here knows which kernel set or device computed the arrays.
"""
import contextlib
import itertools
import sys
import weakref

import numpy as np

from . import device as _device
from .errors import ValueRuntimeError

float32 = np.dtype(np.float32)
float64 = np.dtype(np.float64)
int64 = np.dtype(np.int64)
bool_ = np.dtype(np.bool_)
FLOAT_DTYPES = (float32, float64)
DTYPES = FLOAT_DTYPES + (int64, bool_)


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


class Function:
    """One differentiable op. Subclasses define two static methods on raw arrays::

        forward(*arrays, **params) -> (y, cache)
        backward(gy, cache, needs_input_grad) -> one gradient array (or None) per input

    ``cache`` holds exactly what backward needs; it is freed after backward unless
    ``retain_graph=True``. ``needs_input_grad`` lets backward skip gradients nobody uses.
    """

    @classmethod
    def apply(cls, *inputs, **params):
        y, cache = cls.forward(*(t.array for t in inputs), **params)
        requires_grad = _grad_enabled and any(t.requires_grad for t in inputs)
        out = Tensor(y, requires_grad=requires_grad)
        if requires_grad:
            out.grad_fn = Node(cls, inputs, cache, out.shape)
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
    __slots__ = ("grad_fn", "shape")
    requires_grad = True
    is_leaf = False

    def __init__(self, t):
        self.grad_fn, self.shape = t.grad_fn, t.shape


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


_hook_ids = itertools.count()


def _as_array(data, dtype, device):
    """Turn user data into an array with PyTorch's dtype rules: Python floats -> float32,
    NumPy arrays keep float32/float64, integers -> int64, bools -> bool."""
    if isinstance(data, Tensor):
        data = data.array
    array = data if _device.device_of(data) == "cuda" else np.asarray(data)
    if dtype is not None:
        array = array.astype(check_dtype(dtype), copy=False)
    elif array.dtype.kind == "f":
        if array.dtype not in FLOAT_DTYPES:
            raise TypeError(f"data: expected float32 or float64 values, got {array.dtype}")
        if not isinstance(data, (np.ndarray, np.generic)) and _device.device_of(data) == "cpu":
            array = array.astype(float32)  # Python floats and lists default to float32
    elif array.dtype.kind in "iu":
        array = array.astype(int64, copy=False)
    elif array.dtype.kind != "b":
        raise TypeError(f"data: expected numbers, got an array of {array.dtype}")
    return array if device is None else _device.to_device(array, device)


def check_dtype(dtype, name="dtype"):
    """`dtype` as a NumPy dtype, one of the four tinyalex computes with."""
    try:
        checked = np.dtype(dtype)
    except TypeError:
        checked = None
    if checked not in DTYPES:
        raise TypeError(f"{name}: expected float32, float64, int64 or bool, got {dtype!r}")
    return checked


def _is_dtype(value):
    return isinstance(value, np.dtype) or (isinstance(value, type) and issubclass(value, np.generic))


def parse_to_args(args, kwargs):
    """(device, dtype, copy) from the forms of torch's ``Tensor.to`` and ``Module.to``:
    ``to(device)``, ``to(dtype)``, ``to(device, dtype)``, ``to(other_tensor)``, with the
    keywords ``device``, ``dtype``, ``non_blocking`` (accepted; copies here are synchronous)
    and ``copy``. None means unchanged."""
    unknown = set(kwargs) - {"device", "dtype", "non_blocking", "copy"}
    if unknown:
        raise TypeError(f"to(): unexpected keyword argument {sorted(unknown)[0]!r}")
    device, dtype = kwargs.get("device"), kwargs.get("dtype")
    args = list(args)
    if args and isinstance(args[0], Tensor):
        other = args.pop(0)
        device, dtype = other.device, other.dtype
    elif args and not _is_dtype(args[0]):
        device = args.pop(0)
    if args and _is_dtype(args[0]):
        dtype = args.pop(0)
    if args and isinstance(args[0], bool):                  # non_blocking, positional
        args.pop(0)
    if args:
        raise TypeError(f"to(): expected (device, dtype), (dtype) or (tensor), got an extra "
                        f"argument {args[0]!r}")
    device = None if device is None else _device.parse_device(device)
    dtype = None if dtype is None else check_dtype(dtype)
    return device, dtype, bool(kwargs.get("copy", False))


_TYPE_NAMES = {float32: "FloatTensor", float64: "DoubleTensor", int64: "LongTensor",
               bool_: "BoolTensor"}


def _check_differentiable(dtype, where):
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"{where}: only float32/float64 tensors can require gradients, got {dtype}")


class Tensor:
    """An n-dimensional array that can record the ops applied to it.

    ``array`` is the raw array (NumPy on "cpu", CuPy on "cuda"): what the kernels read
    and write. ``data`` is torch's: a Tensor that shares ``array`` and records no graph, so
    ``p.data.sub_(lr * p.grad.data)`` updates ``p`` in place. ``grad`` is a Tensor filled
    by ``backward`` for leaves with ``requires_grad``; ``grad_fn`` is the Node that
    produced a non-leaf tensor.
    """
    __array_priority__ = 1000  # make ndarray + Tensor call Tensor.__radd__

    def __init__(self, data, requires_grad=False):
        if isinstance(data, np.generic):  # NumPy ufuncs on 0-d arrays return scalars
            data = np.asarray(data)
        self.array = data
        self.grad = None
        self.grad_fn = None
        self._hooks = {}
        self._accumulator = None   # weak reference to a leaf's AccumulateGrad (next_functions)
        if requires_grad:
            _check_differentiable(data.dtype, "requires_grad")
        self.requires_grad = requires_grad

    # --- properties -------------------------------------------------------------------
    @property
    def data(self):
        """This tensor's values as a new leaf that shares its array and needs no grad."""
        return Tensor(self.array)

    @data.setter
    def data(self, value):
        """Replace the values (torch's ``t.data = other``), keeping the graph and grad."""
        if not isinstance(value, Tensor):
            raise TypeError(f"data: expected a Tensor, got {type(value).__name__}")
        if self.requires_grad:
            _check_differentiable(value.dtype, "data")
        self.array = value.array

    @property
    def shape(self):
        return tuple(self.array.shape)

    @property
    def dtype(self):
        return self.array.dtype

    @property
    def device(self):
        """A :class:`tinyalex.device.Device`: device('cpu') or device('cuda:0'). It is a str
        ('cpu' or 'cuda'), so ``t.device == 'cuda'`` works."""
        return _device.tensor_device(self.array)

    @property
    def is_cuda(self):
        return _device.device_of(self.array) == "cuda"

    @property
    def ndim(self):
        return self.array.ndim

    @property
    def is_leaf(self):
        return self.grad_fn is None

    def size(self, dim=None):
        return self.shape if dim is None else self.shape[dim]

    def dim(self):
        return self.ndim

    def numel(self):
        return int(self.array.size)

    # --- Python protocols, with torch's rules and error types -------------------------
    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __iter__(self):
        """The rows along dim 0, as tensors (differentiable, like torch's unbind)."""
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self.shape[0]))

    def __bool__(self):
        """The truth of a one-element tensor (``if label == prediction:``); ambiguous, and a
        RuntimeError as in torch, for any other size."""
        if self.numel() != 1:
            amount = "no values" if self.numel() == 0 else "more than one value"
            raise ValueRuntimeError(f"Boolean value of Tensor with {amount} is ambiguous")
        return bool(self._scalar())

    def __float__(self):
        return float(self._scalar("float()"))

    def __int__(self):
        return int(self._scalar("int()"))

    def __index__(self):
        """A one-element integer (or bool) tensor as a list index (``classes[label]``)."""
        if self.dtype.kind not in "iub" or self.numel() != 1:
            raise TypeError("only integer tensors of a single element can be converted to an "
                            f"index, got dtype {self.dtype} and shape {self.shape}")
        return int(self._scalar())

    def __array__(self, dtype=None, copy=None):
        """For ``np.asarray(t)``; the rules of :meth:`numpy` (a CPU tensor needing no grad)."""
        array = self.numpy()
        if dtype is not None:
            array = array.astype(dtype, copy=False)
        return array.copy() if copy else array

    def __format__(self, spec):
        """A 0-d tensor formats as its value (``f"{loss:.3f}"``), as in torch."""
        if spec and self.ndim == 0:
            return format(self.item(), spec)
        return super().__format__(spec) if spec else str(self)

    def _scalar(self, what=None):
        if self.numel() != 1:
            raise ValueError(f"{what}: only one element tensors can be converted to Python "
                             f"scalars, got shape {self.shape}")
        return _device.to_device(self.array, "cpu").reshape(()).item()

    def __repr__(self):
        extra = f", grad_fn={self.grad_fn!r}" if self.grad_fn else (
            ", requires_grad=True" if self.requires_grad else "")
        dev = ", device='cuda'" if self.device == "cuda" else ""
        body = np.array2string(np.asarray(_device.to_device(self.array, "cpu")), precision=4,
                               separator=", ", prefix="tensor(")
        return f"tensor({body}, dtype={self.dtype}{dev}{extra})"

    # --- conversion -------------------------------------------------------------------
    def numpy(self):
        """The data as a NumPy array sharing memory (CPU tensors that need no grad only,
        like torch: use ``.detach().cpu().numpy()``)."""
        if self.requires_grad:
            raise RuntimeError("numpy(): this tensor requires grad; use tensor.detach().numpy()")
        if self.device != "cpu":
            raise TypeError("numpy(): the tensor is on 'cuda'; use tensor.cpu().numpy()")
        return self.array

    def item(self):
        if self.numel() != 1:
            raise ValueRuntimeError(f"item(): expected a tensor with one element, got shape {self.shape}")
        return self._scalar()

    def tolist(self):
        return _device.to_device(self.array, "cpu").tolist()

    def detach(self):
        """A new leaf sharing this tensor's data, cut from the graph."""
        return Tensor(self.array)

    def to(self, *args, **kwargs):
        """Copy to another device and/or dtype, as torch's forms allow: ``to(device)``,
        ``to(dtype)``, ``to(device, dtype)``, ``to(other)``. Differentiable (the gradient
        flows back). Returns self when nothing changes, unless ``copy=True``."""
        device, dtype, copy = parse_to_args(args, kwargs)
        out = _basic.convert(self, device, dtype)
        return _basic.clone(out) if copy and out is self else out

    def type(self, dtype=None):
        """With no argument, the type name ('tinyalex.FloatTensor', as torch says
        'torch.FloatTensor'); else this tensor converted to `dtype` (``x.type(y.dtype)``)."""
        if dtype is None:
            return "tinyalex." + _TYPE_NAMES[self.dtype]
        if isinstance(dtype, str):
            names = {f"{lib}.{name}": d for d, name in _TYPE_NAMES.items()
                     for lib in ("tinyalex", "torch")}
            if dtype not in names:
                raise TypeError(f"type(): expected a dtype or one of {sorted(names)}, got {dtype!r}")
            dtype = names[dtype]
        return self.to(dtype=dtype)

    def clone(self):
        """A copy with its own storage; differentiable."""
        return _basic.clone(self)

    def contiguous(self):
        return self

    def cpu(self):
        return self.to("cpu")

    def cuda(self):
        return self.to("cuda")

    def float(self):
        return self.to(dtype=float32)

    def double(self):
        return self.to(dtype=float64)

    def long(self):
        return self.to(dtype=int64)

    def bool(self):
        return self.to(dtype=bool_)

    # --- gradients --------------------------------------------------------------------
    def requires_grad_(self, mode=True):
        if not self.is_leaf:
            raise RuntimeError("requires_grad_(): only leaf tensors can change requires_grad")
        if mode:
            _check_differentiable(self.array.dtype, "requires_grad_()")
        self.requires_grad = bool(mode)
        return self

    def register_hook(self, hook):
        """Call ``hook(grad)`` when this tensor's gradient is computed; a returned Tensor
        replaces the gradient (like torch.Tensor.register_hook). Returns a handle."""
        if not self.requires_grad:
            raise RuntimeError("register_hook(): the tensor does not require grad")
        hooks = self._hooks if self.is_leaf else self.grad_fn.hooks
        key = next(_hook_ids)
        hooks[key] = hook
        return RemovableHandle(hooks, key)

    def retain_grad(self):
        """Keep ``.grad`` for this non-leaf tensor after backward."""
        if not self.is_leaf:
            self.grad_fn.retained = self

    def backward(self, gradient=None, retain_graph=False):
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad``, weighted by ``gradient``
        (required unless self has one element, as in PyTorch)."""
        backward(self, gradient, retain_graph)

    # --- ops (defined in tinyalex.ops.basic; these are the PyTorch-named entry points) -
    def __add__(self, other):
        return _basic.add(self, other)

    def __radd__(self, other):
        return _basic.add(other, self)

    def __sub__(self, other):
        return _basic.sub(self, other)

    def __rsub__(self, other):
        return _basic.sub(other, self)

    def __mul__(self, other):
        return _basic.mul(self, other)

    def __rmul__(self, other):
        return _basic.mul(other, self)

    def __truediv__(self, other):
        return _basic.div(self, other)

    def __rtruediv__(self, other):
        return _basic.div(other, self)

    def __neg__(self):
        return _basic.neg(self)

    def __pow__(self, exponent):
        return _basic.pow(self, exponent)

    def __matmul__(self, other):
        return _basic.matmul(self, other)

    def __getitem__(self, index):
        return _basic.getitem(self, index)

    # --- in place: only where no graph is recorded -------------------------------------
    def _check_writable(self, op):
        """Autograd cannot see in-place writes, so they are refused while this tensor is
        being recorded (it requires grad and grad mode is on). Write into ``t.data``, or
        inside ``tinyalex.no_grad()``, as optimisers do. torch also allows in-place ops on
        non-leaf tensors by tracking versions; tinyalex does not."""
        if self.requires_grad and _grad_enabled:
            raise RuntimeError(f"{op}: a tensor that requires grad cannot be changed in place; "
                               "change tensor.data, or work inside tinyalex.no_grad()")

    def _in_place(self, op, ufunc, other):
        self._check_writable(op)
        if isinstance(other, Tensor):
            if other.device != self.device:
                raise ValueRuntimeError(f"{op}: expected other on device '{self.device}', got "
                                  f"'{other.device}'")
            other = other.array
        try:
            ufunc(self.array, other, out=self.array, casting="same_kind")
        except ValueError as exc:  # a shape that does not broadcast to self's
            raise ValueRuntimeError(f"{op}: other of shape {tuple(getattr(other, 'shape', ()))} does "
                              f"not broadcast to this tensor's shape {self.shape}") from exc
        return self

    def __setitem__(self, index, value):
        """In-place assignment into the array, for tensors that record no graph (like
        ``p.data[...] = 0`` or under ``no_grad``): autograd cannot see in-place writes."""
        self._check_writable("__setitem__")
        self.array[_basic.raw_index(index)] = value.array if isinstance(value, Tensor) else value

    def add_(self, other, alpha=1):
        """self += alpha * other, in place (no graph recorded); returns self."""
        return self._in_place("add_", np.add, other if alpha == 1 else other * alpha)

    def sub_(self, other, alpha=1):
        """self -= alpha * other, in place: ``p.data.sub_(lr * p.grad.data)``."""
        return self._in_place("sub_", np.subtract, other if alpha == 1 else other * alpha)

    def mul_(self, other):
        return self._in_place("mul_", np.multiply, other)

    def div_(self, other):
        return self._in_place("div_", np.true_divide, other)

    def fill_(self, value):
        self._check_writable("fill_")
        self.array[...] = value.item() if isinstance(value, Tensor) else value
        return self

    def zero_(self):
        return self.fill_(0)

    def copy_(self, src):
        """Copy src's values into self (casting to self's dtype and device), in place."""
        self._check_writable("copy_")
        if not isinstance(src, Tensor):
            raise TypeError(f"copy_(): src: expected a Tensor, got {type(src).__name__}")
        try:
            self.array[...] = _device.to_device(src.array, self.device).astype(self.dtype, copy=False)
        except ValueError as exc:
            raise ValueRuntimeError(f"copy_(): src of shape {src.shape} does not broadcast to "
                              f"{self.shape}") from exc
        return self

    def normal_(self, mean=0.0, std=1.0):
        from .nn import init
        self._check_writable("normal_")
        return init.normal_(self, mean, std)

    def uniform_(self, a=0.0, b=1.0):
        from .nn import init
        self._check_writable("uniform_")
        return init.uniform_(self, a, b)

    def __eq__(self, other):
        return _basic.compare(self, other, "equal")

    def __ne__(self, other):
        return _basic.compare(self, other, "not_equal")

    def __lt__(self, other):
        return _basic.compare(self, other, "less")

    def __le__(self, other):
        return _basic.compare(self, other, "less_equal")

    def __gt__(self, other):
        return _basic.compare(self, other, "greater")

    def __ge__(self, other):
        return _basic.compare(self, other, "greater_equal")

    __hash__ = object.__hash__

    def matmul(self, other):
        return _basic.matmul(self, other)

    def pow(self, exponent):
        return _basic.pow(self, exponent)

    def exp(self):
        return _basic.exp(self)

    def log(self):
        return _basic.log(self)

    def abs(self):
        return _basic.abs(self)

    def sqrt(self):
        return _basic.pow(self, 0.5)

    def eq(self, other):
        return _basic.compare(self, other, "equal")

    def ne(self, other):
        return _basic.compare(self, other, "not_equal")

    def lt(self, other):
        return _basic.compare(self, other, "less")

    def le(self, other):
        return _basic.compare(self, other, "less_equal")

    def gt(self, other):
        return _basic.compare(self, other, "greater")

    def ge(self, other):
        return _basic.compare(self, other, "greater_equal")

    def sum(self, dim=None, keepdim=False, *, axis=None):
        return _basic.sum(self, _basic.dim_or_axis(dim, axis), keepdim)

    def mean(self, dim=None, keepdim=False, *, axis=None):
        return _basic.mean(self, _basic.dim_or_axis(dim, axis), keepdim)

    def max(self, dim=None, keepdim=False, *, axis=None):
        """The largest element, or with ``dim`` the named tuple (values, indices)."""
        return _basic.max(self, _basic.dim_or_axis(dim, axis), keepdim)

    def min(self, dim=None, keepdim=False, *, axis=None):
        return _basic.min(self, _basic.dim_or_axis(dim, axis), keepdim)

    def reshape(self, *shape):
        return _basic.reshape(self, *shape)

    view = reshape

    def view_as(self, other):
        return _basic.reshape(self, other.shape)

    def squeeze(self, dim=None):
        return _basic.squeeze(self, dim)

    def unsqueeze(self, dim):
        return _basic.unsqueeze(self, dim)

    def flatten(self, start_dim=0, end_dim=-1):
        return _basic.flatten(self, start_dim, end_dim)

    def t(self):
        return _basic.transpose(self, 0, 1)

    def transpose(self, dim0, dim1):
        return _basic.transpose(self, dim0, dim1)

    @property
    def T(self):
        return _basic.permute(self, tuple(reversed(range(self.ndim))))

    def permute(self, *dims):
        return _basic.permute(self, dims[0] if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims)

    def relu(self):
        from .functional import relu
        return relu(self)

    def argmax(self, dim=None, keepdim=False, *, axis=None):
        return _basic.argmax(self, _basic.dim_or_axis(dim, axis), keepdim)

    def argmin(self, dim=None, keepdim=False, *, axis=None):
        return _basic.argmin(self, _basic.dim_or_axis(dim, axis), keepdim)


def tensor(data, dtype=None, requires_grad=False, device=None):
    """Build a Tensor from a copy of data (like torch.tensor). Python floats become float32.
    device None keeps the data where it is (a CuPy array stays on 'cuda'), else 'cpu'."""
    array = _as_array(data, dtype, device)
    if array is (data.array if isinstance(data, Tensor) else data):  # never alias the caller's array
        array = array.copy()
    return Tensor(array, requires_grad=requires_grad)


def _unit_like(y):
    return _device.array_module(y.array).ones_like(y.array)


def backward(root, gradient=None, retain_graph=False):
    """Reverse-mode sweep from ``root``: nodes in reverse topological order, each called once
    with the sum of the gradients of all its consumers."""
    if not root.requires_grad:
        raise RuntimeError("backward(): the tensor does not require grad and has no grad_fn")
    if gradient is None:
        if root.numel() != 1:
            raise RuntimeError(f"backward(): gradient can be omitted only for a tensor with one "
                               f"element, got shape {root.shape}")
        gy = _unit_like(root)
    else:
        gy = _as_array(gradient, root.dtype, root.device)
        if gy.shape != root.array.shape:
            raise ValueError(f"gradient: expected shape {root.shape}, got {tuple(gy.shape)}")
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
            raise RuntimeError(f"backward(): trying to go through {node.name()} a second time, "
                               "but its saved arrays were freed; pass retain_graph=True")
        input_grads = list(node.function.backward(gy, node.cache, node.needs_input_grad))
        inputs = node.inputs
        if not retain_graph:  # free the saved arrays and the edges to the activations now
            node.cache, node.inputs, node.freed = None, (), True
        for i, t in enumerate(inputs[:len(input_grads)]):
            g, input_grads[i] = input_grads[i], None  # g alone holds it (_accumulate_leaf)
            if g is None or not t.requires_grad:
                continue
            if tuple(g.shape) != t.shape:
                raise RuntimeError(f"{node.name()}.backward returned a gradient of shape "
                                   f"{tuple(g.shape)} for an input of shape {t.shape}")
            if t.grad_fn is None:
                _accumulate_leaf(t, g)
            elif t.grad_fn in grads:
                grads[t.grad_fn] = grads[t.grad_fn] + g  # out of place: g may be shared
            else:
                grads[t.grad_fn] = g


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


def _refcount(obj):
    return sys.getrefcount(obj)


def _owns_memory(g):
    """True when g is C-contiguous and writeable and its memory is its own, or all of that
    of an array of its type (g = out[0], a reshape) that nothing but g refers to."""
    flags = g.flags
    if not (flags.c_contiguous and getattr(flags, "writeable", True)):
        return False
    base = g.base
    if base is None:
        return True
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


from .ops import basic as _basic  # noqa: E402  (the ops need Tensor and Function defined)
