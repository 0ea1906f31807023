"""Optimisers with torch.optim's names and update rules."""
import numbers

from tinyalex import device as _device
from tinyalex.tensor import Tensor
from tinyalex.kernels import kernels_for
from tinyalex.optim import lr_scheduler


class SGD:
    """Stochastic gradient descent with momentum, exactly PyTorch's rule (per parameter p):

        g = grad + weight_decay * p
        buf = g                              (first step)
        buf = momentum * buf + (1 - dampening) * g   (later steps)
        g = g + momentum * buf  if nesterov  else  buf
        p = p - lr * g

    Note this is not the 2012 paper's form (v = 0.9 v - 5e-4 lr w - lr g), which puts lr
    inside the velocity; the two agree while lr is constant.

    Each parameter is updated by the sgd_update of its array's kernel set: array
    expressions in the numpy set (tinyalex/kernels/numpy/sgd.py), one fused pass over memory
    instead of five in the numba set and on CUDA (kernels/sgd.cu). All round alike, so
    they give the same bits.
    """

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        for name, value in (("lr", lr), ("momentum", momentum), ("dampening", dampening),
                            ("weight_decay", weight_decay)):
            if not isinstance(value, numbers.Real) or isinstance(value, bool):
                raise TypeError(f"SGD: {name}: expected a number >= 0, got {value!r}")
            if name != "dampening" and value < 0:
                raise ValueError(f"SGD: {name}: expected a number >= 0, got {value!r}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError(f"SGD: nesterov: expected momentum > 0 and dampening == 0 with"
                             f" nesterov=True, got momentum={momentum}, dampening={dampening}")
        if isinstance(params, Tensor):
            raise TypeError("SGD: params: expected an iterable of Tensors or dicts (such as"
                            " model.parameters()), got a Tensor")
        params = list(params)
        if not params:
            raise ValueError("SGD: params: expected at least one parameter, got an empty list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        checked = []
        for group in groups:
            if "params" not in group:
                raise KeyError(f"SGD: params: expected a 'params' key in every parameter group,"
                               f" got keys {sorted(group)}")
            group_params = group["params"]
            group_params = [group_params] if isinstance(group_params, Tensor) else group_params
            for p in group_params:
                if not isinstance(p, Tensor):
                    raise TypeError(f"SGD: params: expected Tensors, got {type(p).__name__}")
                if not p.is_leaf:
                    raise ValueError("SGD: params: can't optimize a non-leaf Tensor (expected"
                                     " leaf tensors such as model.parameters())")
            checked.append({**group, "params": list(group_params)})
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov)
        self.param_groups = [{**defaults, **g} for g in checked]
        self.state = {}  # parameter -> {"momentum_buffer": array}

    def zero_grad(self, set_to_none=True):
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.array[...] = 0

    def step(self):
        """One update of every parameter with a gradient, by the sgd_update of the kernel set
        its array lives on (tinyalex/kernels/numpy/sgd.py states the rule)."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf, first_step = None, False
                if group["momentum"]:
                    buf = self.state.setdefault(p, {}).get("momentum_buffer")
                    if buf is None:                    # sgd_update sets it to g on this step
                        buf = _device.array_module(p.array).empty_like(p.array)
                        self.state[p]["momentum_buffer"], first_step = buf, True
                kernels_for(p.array).sgd_update(
                    p.array, p.grad.array, buf, group["lr"], group["momentum"],
                    group["weight_decay"], group["nesterov"], first_step, group["dampening"])

    def state_dict(self):
        """Hyperparameters and momentum buffers (as CPU arrays), parameters by index."""
        index = {p: i for i, p in enumerate(p for g in self.param_groups for p in g["params"])}
        return {
            "state": {index[p]: {k: _device.to_device(v, "cpu") for k, v in s.items()}
                      for p, s in self.state.items()},
            "param_groups": [{**{k: v for k, v in g.items() if k != "params"},
                              "params": [index[p] for p in g["params"]]}
                             for g in self.param_groups],
        }

    def load_state_dict(self, state_dict):
        params = [p for g in self.param_groups for p in g["params"]]
        groups = state_dict["param_groups"]
        if [len(g["params"]) for g in groups] != [len(g["params"]) for g in self.param_groups]:
            raise ValueError("SGD.load_state_dict: state_dict: the saved parameter groups do not"
                             " match this optimizer's")
        for group, saved in zip(self.param_groups, groups):
            group.update({k: v for k, v in saved.items() if k != "params"})
        self.state = {}
        for i, s in state_dict["state"].items():
            p = params[int(i)]
            # arrays as state_dict() gives them, or Tensors as tinyalex.load / torch files hold them
            self.state[p] = {k: _device.to_device(v.array if isinstance(v, Tensor) else v, p.device)
                             .astype(p.dtype) for k, v in s.items()}
