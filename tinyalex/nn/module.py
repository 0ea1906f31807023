"""Module and Parameter, with PyTorch's names: parameters are registered by assigning them
as attributes, submodules likewise, and ``state_dict`` keys are their dotted paths."""
import collections
import itertools

import numpy as np

from tinyalex import device as _device
from tinyalex.autograd import Function, RemovableHandle
from tinyalex.tensor import Tensor, _as_array, parse_to_args
from tinyalex.errors import KeyRuntimeError, ValueRuntimeError


class Parameter(Tensor):
    """A Tensor that a Module registers as trainable (requires_grad=True by default)."""

    def __init__(self, data, requires_grad=True):
        array = data.array if isinstance(data, Tensor) else _as_array(data, None, _device.device_of(data))
        super().__init__(array, requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


_hook_ids = itertools.count()


class Module:
    """Base class of layers and models (like torch.nn.Module)."""

    def __init__(self):
        object.__setattr__(self, "_parameters", collections.OrderedDict())
        object.__setattr__(self, "_buffers", collections.OrderedDict())
        object.__setattr__(self, "_modules", collections.OrderedDict())
        object.__setattr__(self, "_forward_hooks", collections.OrderedDict())
        object.__setattr__(self, "_backward_hooks", collections.OrderedDict())
        object.__setattr__(self, "training", True)

    # --- registration -----------------------------------------------------------------
    def __setattr__(self, name, value):
        """torch's rules: a Parameter, a Module or a buffer's Tensor replacing an entry of the
        same kind keeps its place (so a swapped layer runs where the old one did); one of
        another kind moves to its own registry; a registered name takes only its kind or None."""
        params = self.__dict__.get("_parameters")
        if isinstance(value, Parameter):
            if params is None:
                raise AttributeError("cannot assign parameters before Module.__init__() call")
            _remove(name, self.__dict__, self._buffers, self._modules)
            self.register_parameter(name, value)
        elif params is not None and name in params:
            if value is not None:
                raise TypeError(f"cannot assign '{_typename(value)}' as parameter '{name}'"
                                " (tinyalex.nn.Parameter or None expected)")
            self.register_parameter(name, value)
        elif isinstance(value, Module):
            if "_modules" not in self.__dict__:
                raise AttributeError("cannot assign module before Module.__init__() call")
            _remove(name, self.__dict__, self._parameters, self._buffers)
            self._modules[name] = value
        elif name in self.__dict__.get("_modules", ()):
            if value is not None:
                raise TypeError(f"cannot assign '{_typename(value)}' as child module '{name}'"
                                " (tinyalex.nn.Module or None expected)")
            self._modules[name] = value
        elif name in self.__dict__.get("_buffers", ()):
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign '{_typename(value)}' as buffer '{name}'"
                                " (tinyalex.Tensor or None expected)")
            self.register_buffer(name, value)
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        for registry in ("_parameters", "_buffers", "_modules"):
            entries = self.__dict__.get(registry, {})
            if name in entries:
                return entries[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        for registry in (self._parameters, self._buffers, self._modules):
            if name in registry:
                del registry[name]
                return
        object.__delattr__(self, name)

    def _check_name(self, kind, name, registry):
        """torch's checks on a name being registered: a non-empty str without '.', not
        already an attribute of another kind (a method, a plain attribute, ...)."""
        if not isinstance(name, str):
            raise TypeError(f"{kind} name should be a string. Got {_typename(name)}")
        if "." in name:
            raise KeyError(f'{kind} name can\'t contain ".", got: {name}')
        if name == "":
            raise KeyError(f'{kind} name can\'t be empty string ""')
        if hasattr(self, name) and name not in registry:
            raise KeyError(f"attribute '{name}' already exists")

    def register_buffer(self, name, tensor, persistent=True):
        """A non-trainable tensor (or None) saved in the state_dict, like running stats."""
        if "_buffers" not in self.__dict__:
            raise AttributeError("cannot assign buffer before Module.__init__() call")
        if persistent is not True:
            raise ValueError(f"register_buffer: persistent: only True is supported (every buffer"
                             f" is saved in the state_dict), got {persistent!r}")
        self._check_name("buffer", name, self._buffers)
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"cannot assign '{_typename(tensor)}' object to buffer '{name}'"
                            " (tinyalex.Tensor or None required)")
        self._buffers[name] = tensor

    def register_parameter(self, name, param):
        """A Parameter, or None (an absent one, like Linear's bias=False), under `name`."""
        if "_parameters" not in self.__dict__:
            raise AttributeError("cannot assign parameter before Module.__init__() call")
        self._check_name("parameter", name, self._parameters)
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"cannot assign '{_typename(param)}' object to parameter '{name}'"
                            " (tinyalex.nn.Parameter or None required)")
        self._parameters[name] = param

    def add_module(self, name, module):
        """Register `module` (or None) as the child `name`; the containers build on this."""
        if not isinstance(module, Module) and module is not None:
            raise TypeError(f"{_typename(module)} is not a Module subclass")
        if "_modules" not in self.__dict__:
            raise AttributeError("cannot assign module before Module.__init__() call")
        self._check_name("module", name, self._modules)
        self._modules[name] = module

    register_module = add_module

    # --- traversal --------------------------------------------------------------------
    def named_modules(self, memo=None, prefix="", remove_duplicate=True):
        """(dotted name, module) of self and every descendant, depth first in registration
        order; a module registered twice comes once unless remove_duplicate=False."""
        memo = set() if memo is None else memo
        if self in memo:
            return
        if remove_duplicate:
            memo.add(self)
        yield prefix, self
        for name, child in self._modules.items():
            if child is not None:
                yield from child.named_modules(memo, f"{prefix}.{name}" if prefix else name,
                                               remove_duplicate)

    def modules(self):
        return (m for _, m in self.named_modules())

    def named_children(self):
        seen = set()
        for name, child in self._modules.items():
            if child is not None and child not in seen:
                seen.add(child)
                yield name, child

    def children(self):
        return (child for _, child in self.named_children())

    def _named_members(self, registry, prefix, recurse, remove_duplicate):
        seen = set()
        modules = (self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate)
                   if recurse else [(prefix, self)])
        for module_prefix, module in modules:
            for name, t in getattr(module, registry).items():
                if t is None or id(t) in seen:
                    continue
                if remove_duplicate:
                    seen.add(id(t))
                yield (f"{module_prefix}.{name}" if module_prefix else name), t

    def named_parameters(self, prefix="", recurse=True, remove_duplicate=True):
        return self._named_members("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse=True):
        return (p for _, p in self.named_parameters(recurse=recurse))

    def named_buffers(self, prefix="", recurse=True, remove_duplicate=True):
        return self._named_members("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse=True):
        return (b for _, b in self.named_buffers(recurse=recurse))

    def apply(self, fn):
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    # --- state ------------------------------------------------------------------------
    def state_dict(self):
        """Ordered name -> Tensor (detached, sharing data) of every parameter and buffer,
        with PyTorch's key names ('features.0.weight', ...)."""
        state = collections.OrderedDict()
        for module_prefix, module in self.named_modules(remove_duplicate=False):
            for name, t in itertools.chain(module._parameters.items(), module._buffers.items()):
                if t is not None:
                    state[f"{module_prefix}.{name}" if module_prefix else name] = t.detach()
        return state

    def load_state_dict(self, state_dict, strict=True):
        """Copy values (Tensors or arrays) into the parameters and buffers in place, casting to
        each one's dtype and device. Nothing is copied unless every check passes:

        - with strict, a missing or unexpected key raises KeyRuntimeError (a KeyError and,
          as in torch, a RuntimeError), listing all of them in torch's words;
        - a shape mismatch raises ValueRuntimeError (a ValueError and a RuntimeError),
          naming the key and both shapes.
        Returns (missing_keys, unexpected_keys), like torch.
        """
        if not (hasattr(state_dict, "keys") and hasattr(state_dict, "__getitem__")):
            raise TypeError(f"load_state_dict: state_dict: expected a dict-like mapping of names to"
                            f" tensors, got {type(state_dict).__name__}")
        own = self.state_dict()
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        if strict and (missing or unexpected):
            lines = [f"load_state_dict: Error(s) in loading state_dict for {type(self).__name__}:"]
            for what, keys in (("Missing", missing), ("Unexpected", unexpected)):
                if keys:
                    lines.append(f"\t{what} key(s) in state_dict: "
                                 + ", ".join(f'"{k}"' for k in keys) + ".")
            raise KeyRuntimeError("\n".join(lines))
        values = {}
        for key, target in own.items():
            if key not in state_dict:
                continue
            value = _raw_array(state_dict[key])
            if tuple(value.shape) != target.shape:
                raise ValueRuntimeError(
                    f"load_state_dict: {key}: expected shape {target.shape} (the shape in the"
                    f" current model), got {tuple(value.shape)} (size mismatch)")
            values[key] = value
        for key, value in values.items():
            target = own[key].array
            target[...] = _device.to_device(value, _device.device_of(target)).astype(target.dtype, copy=False)
        return collections.namedtuple("IncompatibleKeys", "missing_keys unexpected_keys")(missing, unexpected)

    def train(self, mode=True):
        """Set training mode here and, through each child's own train(), below."""
        if not isinstance(mode, bool):
            raise ValueError(f"train(): mode: training mode is expected to be boolean, got"
                             f" {_typename(mode)} {mode!r}")
        self.training = mode
        for child in self.children():
            child.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def to(self, *args, **kwargs):
        """Move (and/or cast) every parameter and buffer in place; returns self. Takes
        torch's forms: ``to(device)``, ``to(dtype)``, ``to(device, dtype)``, ``to(tensor)``;
        only floating tensors change dtype."""
        device, dtype, _ = parse_to_args(args, kwargs)
        for t in itertools.chain(self.parameters(), self.buffers()):
            array = t.array if device is None else _device.to_device(t.array, device)
            if dtype is not None and array.dtype.kind == "f":
                array = array.astype(dtype, copy=False)
            t.array = array
            if t.grad is not None:
                t.grad = Tensor(_device.to_device(t.grad.array, _device.device_of(array)).astype(array.dtype))
        return self

    def float(self):
        return self.to(dtype=np.float32)

    def double(self):
        return self.to(dtype=np.float64)

    def cuda(self):
        return self.to("cuda")

    def cpu(self):
        return self.to("cpu")

    def zero_grad(self, set_to_none=True):
        for p in self.parameters():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.array[...] = 0

    # --- calling and hooks ------------------------------------------------------------
    def forward(self, *args):
        raise NotImplementedError(f"{type(self).__name__} has no forward()")

    def __call__(self, *args, **kwargs):
        if self._backward_hooks:
            args = _attach_backward_hooks(self, args)
        output = self.forward(*args, **kwargs)
        for hook in list(self._forward_hooks.values()):
            replaced = hook(self, args, output)
            if replaced is not None:
                output = replaced
        if self._backward_hooks:
            output = _GradientTap.around(output, self._pending_hook_call)
        return output

    def register_forward_hook(self, hook):
        """``hook(module, args, output)`` runs after forward; a returned value replaces the
        output (like torch)."""
        key = next(_hook_ids)
        self._forward_hooks[key] = hook
        return RemovableHandle(self._forward_hooks, key)

    def register_full_backward_hook(self, hook):
        """``hook(module, grad_input, grad_output)`` runs when the gradients with respect to
        the module's tensor inputs are computed; grad_input holds None for inputs that need
        no gradient; a returned tuple replaces grad_input (like torch)."""
        key = next(_hook_ids)
        self._backward_hooks[key] = hook
        return RemovableHandle(self._backward_hooks, key)

    # --- printing ---------------------------------------------------------------------
    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"({name}): " + repr(m).replace("\n", "\n  ") for name, m in self._modules.items()]
        head = f"{type(self).__name__}({self.extra_repr()}"
        return head + ")" if not lines else head + "\n  " + "\n  ".join(lines) + "\n)"


def _remove(name, *registries):
    for registry in registries:
        registry.pop(name, None)


def _typename(value):
    """torch.typename: how error messages name a value ('int', 'tinyalex.FloatTensor',
    'tinyalex.nn.layers.ReLU')."""
    if isinstance(value, Tensor):
        return value.type()
    module = getattr(value, "__module__", "") or ""
    qualname = getattr(value, "__qualname__", None) or getattr(value, "__name__", None)
    if qualname is None:
        module, qualname = type(value).__module__ or "", type(value).__qualname__
    return qualname if module in ("", "builtins") else f"{module}.{qualname}"


def _raw_array(value):
    """The array behind a state_dict value: a tinyalex Tensor, an array, or a torch tensor
    (so that weights exported from torch load directly)."""
    if isinstance(value, Tensor):
        return value.array
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return value if _device.device_of(value) == "cuda" else np.asarray(value)


class _GradientTap(Function):
    """Identity whose backward hands the gradient passing through to a callback, which may
    return a replacement. Used to implement full backward hooks."""

    @staticmethod
    def forward(x, *, callback):
        return x, callback

    @staticmethod
    def backward(gy, callback, needs_input_grad):
        return (callback(gy),)

    @classmethod
    def around(cls, t, callback):
        return cls.apply(t, callback=callback) if isinstance(t, Tensor) and t.requires_grad else t


def _attach_backward_hooks(module, args):
    """Tap the module's tensor inputs and arrange for its output tap to fire the hooks.

    The output's gradient arrives first (grad_output); the hooks run when the last input
    gradient arrives, or straight away when no input needs one.
    """
    tensor_positions = [i for i, a in enumerate(args) if isinstance(a, Tensor)]
    waiting = [i for i in tensor_positions if args[i].requires_grad]
    state = {"grad_output": None, "grad_input": {i: None for i in tensor_positions}}

    def fire():
        grad_input = tuple(None if g is None else Tensor(g) for g in state["grad_input"].values())
        for hook in list(module._backward_hooks.values()):
            replaced = hook(module, grad_input, (Tensor(state["grad_output"]),))
            if replaced is not None:
                grad_input = tuple(replaced)
        return {i: (None if g is None else g.array) for i, g in zip(state["grad_input"], grad_input)}

    def on_output(gy):
        state["grad_output"] = gy
        if not waiting:
            fire()
        return gy

    def on_input(position):
        def callback(gx):
            state["grad_input"][position] = gx
            if position == waiting[0]:  # inputs' gradients arrive newest input first
                return fire()[position]
            return gx
        return callback

    object.__setattr__(module, "_pending_hook_call", on_output)
    args = list(args)
    for i in waiting:
        args[i] = _GradientTap.around(args[i], on_input(i))
    return tuple(args)
