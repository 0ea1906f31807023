"""Tensor: an array (NumPy on "cpu", CuPy on "cuda") that records the ops applied to it.

The torch surface lives here: properties, conversions, in-place updates, operators and
the methods that are ops (each a one-line call into tinyalex/ops/basic.py). What a Tensor
records, and how backward walks it, is tinyalex/autograd.py.
"""
import numpy as np

from tinyalex import device as _device
from tinyalex import random as _random
from tinyalex.errors import ValueRuntimeError

float32 = np.dtype(np.float32)
float64 = np.dtype(np.float64)
int64 = np.dtype(np.int64)
bool_ = np.dtype(np.bool_)
FLOAT_DTYPES = (float32, float64)
DTYPES = FLOAT_DTYPES + (int64, bool_)


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
    _post_accumulate_hooks = None  # a dict once a hook is registered (most tensors have none)

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
        key = next(_autograd.hook_ids)
        hooks[key] = hook
        return _autograd.RemovableHandle(hooks, key)

    def register_post_accumulate_grad_hook(self, hook):
        """Call ``hook(tensor)`` on this leaf each time backward has added a gradient into
        its ``.grad`` (torch.Tensor.register_post_accumulate_grad_hook). Torch sums a leaf's
        incoming gradients first and calls the hook once per backward; tinyalex adds each
        as it arrives, so a leaf used k times in the graph calls it k times. Returns a handle."""
        if not (self.is_leaf and self.requires_grad):
            raise ValueRuntimeError("register_post_accumulate_grad_hook(): expected a leaf tensor that "
                                    "requires grad, got " + ("a non-leaf" if not self.is_leaf else
                                                             "one that does not require grad"))
        if self._post_accumulate_hooks is None:
            self._post_accumulate_hooks = {}
        key = next(_autograd.hook_ids)
        self._post_accumulate_hooks[key] = hook
        return _autograd.RemovableHandle(self._post_accumulate_hooks, key)

    def retain_grad(self):
        """Keep ``.grad`` for this non-leaf tensor after backward."""
        if not self.is_leaf:
            self.grad_fn.retained = self

    def backward(self, gradient=None, retain_graph=False):
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad``, weighted by ``gradient``
        (required unless self has one element, as in PyTorch)."""
        if not self.requires_grad:
            raise ValueRuntimeError("backward(): expected a tensor with requires_grad=True (or a"
                                    " grad_fn), got one that does not require grad")
        if gradient is None:
            if self.numel() != 1:
                raise ValueRuntimeError(f"backward(): gradient can be omitted only for a tensor with"
                                        f" one element, got shape {self.shape}")
            gy = _device.array_module(self.array).ones_like(self.array)
        else:
            gy = _as_array(gradient, self.dtype, self.device)
            if gy.shape != self.array.shape:
                raise ValueRuntimeError(f"backward(): gradient: expected shape {self.shape} (the"
                                        f" shape of the tensor), got {tuple(gy.shape)}")
        _autograd.backward(self, gy, retain_graph)

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
        if self.requires_grad and _autograd.is_grad_enabled():
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
        self._check_writable("normal_")
        return self._fill_from(_random.generator().normal(mean, std, self.shape))

    def uniform_(self, a=0.0, b=1.0):
        self._check_writable("uniform_")
        return self._fill_from(_random.generator().uniform(a, b, self.shape))

    def _fill_from(self, values):
        """Overwrite with float64 `values` drawn on the CPU (the global generator's), in place."""
        self.array[...] = _device.to_device(values.astype(self.dtype), self.device)
        return self

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

    def view(self, *shape):
        return _basic.reshape(self, *shape, op="view")

    def view_as(self, other):
        return _basic.reshape(self, other.shape, op="view_as")

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
        from tinyalex.ops.relu import ReLU  # the ops import this module (see its end)
        if self.dtype not in FLOAT_DTYPES:
            raise TypeError(f"relu: input: expected float32 or float64, got {self.dtype}")
        return ReLU.apply(self)

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



# The one import circle of the engine: a Tensor's methods are ops (tinyalex/ops/basic.py)
# and its backward is the autograd sweep, and both make Tensors. It closes here, after
# Tensor is defined; `import tinyalex` imports this module before either of them.
from tinyalex import autograd as _autograd  # noqa: E402
from tinyalex.ops import basic as _basic  # noqa: E402
