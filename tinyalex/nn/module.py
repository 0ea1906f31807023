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
        if "_parameters" not in self.__dict__:
            raise AttributeError("cannot assign before Module.__init__() call")
        for registry in (self._parameters, self._buffers, self._modules):
            registry.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        for registry in ("_parameters", "_buffers", "_modules"):
            entries = self.__dict__.get(registry, {})
            if name in entries:
                return entries[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def register_buffer(self, name, tensor):
        """A non-trainable tensor that is saved in the state_dict (like running stats)."""
        self._buffers[name] = tensor

    def register_parameter(self, name, param):
        if param is None:
            self._parameters.pop(name, None)
            object.__setattr__(self, name, None)
        else:
            setattr(self, name, param)

    # --- traversal --------------------------------------------------------------------
    def named_modules(self, prefix=""):
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        return (m for _, m in self.named_modules())

    def named_children(self):
        return iter(self._modules.items())

    def children(self):
        return iter(self._modules.values())

    def named_parameters(self, prefix="", recurse=True):
        seen = set()
        modules = self.named_modules(prefix) if recurse else [(prefix, self)]
        for module_prefix, module in modules:
            for name, param in module._parameters.items():
                if param is not None and id(param) not in seen:
                    seen.add(id(param))
                    yield (f"{module_prefix}.{name}" if module_prefix else name), param

    def parameters(self, recurse=True):
        return (p for _, p in self.named_parameters(recurse=recurse))

    def named_buffers(self):
        for module_prefix, module in self.named_modules():
            for name, buf in module._buffers.items():
                yield (f"{module_prefix}.{name}" if module_prefix else name), buf

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
        for module_prefix, module in self.named_modules():
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
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self):
        return self.train(False)

    def to(self, *args, **kwargs):
        """Move (and/or cast) every parameter and buffer in place; returns self. Takes
        torch's forms: ``to(device)``, ``to(dtype)``, ``to(device, dtype)``, ``to(tensor)``;
        only floating tensors change dtype."""
        device, dtype, _ = parse_to_args(args, kwargs)
        for t in itertools.chain(self.parameters(), (b for _, b in self.named_buffers())):
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
