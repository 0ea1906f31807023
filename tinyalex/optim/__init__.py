"""Optimisers with torch.optim's names and update rules."""
from .. import device as _device
from ..dispatch import cpu_kernel_set_name
from . import lr_scheduler


def _numba_cpu():
    """True when CPU parameters are updated by the numba set's fused kernel."""
    return cpu_kernel_set_name() == "numba"


class SGD:
    """Stochastic gradient descent with momentum, exactly PyTorch's rule (per parameter p):

        g = grad + weight_decay * p
        buf = g                              (first step)
        buf = momentum * buf + (1 - dampening) * g   (later steps)
        g = g + momentum * buf  if nesterov  else  buf
        p = p - lr * g

    Note this is not the 2012 paper's form (v = 0.9 v - 5e-4 lr w - lr g), which puts lr
    inside the velocity; the two agree while lr is constant.

    A parameter on the CPU is updated with array expressions under the numpy kernel set,
    and with the fused kernel tinyalex.cpu.sgd_update under the numba set; one on CUDA
    with tinyalex.cuda.sgd_update (kernels/sgd.cu): the same rule, in one pass over
    memory instead of five. All round alike, so they give the same bits.
    """

    def __init__(self, params, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"SGD: expected lr, momentum and weight_decay >= 0, got lr={lr}, "
                             f"momentum={momentum}, weight_decay={weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: nesterov needs momentum > 0 and dampening == 0")
        params = list(params)
        if not params:
            raise ValueError("SGD: params: expected at least one parameter, got an empty list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov)
        self.param_groups = [{**defaults, **g, "params": list(g["params"])} for g in groups]
        self.state = {}  # parameter -> {"momentum_buffer": array}

    def zero_grad(self, set_to_none=True):
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.array[...] = 0

    def step(self):
        for group in self.param_groups:
            lr, momentum, dampening = group["lr"], group["momentum"], group["dampening"]
            weight_decay, nesterov = group["weight_decay"], group["nesterov"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.device == "cuda" or _numba_cpu():
                    self._fused_step(p, group)
                    continue
                # At most one parameter-sized temporary at a time: the update of the largest
                # layer (fc6) would otherwise hold several copies of it at once.
                g, owned = p.grad.array, False    # owned: g is our temporary, scalable in place
                if weight_decay:
                    g = p.array * weight_decay
                    g += p.grad.array
                    owned = True
                if momentum:
                    buf = self.state.setdefault(p, {}).get("momentum_buffer")
                    if buf is None:
                        buf = self.state[p]["momentum_buffer"] = g.copy()
                    else:
                        buf *= momentum
                        buf += g if dampening == 0 else (1 - dampening) * g
                    if nesterov:
                        g, owned = (g if owned else g.copy()), True
                        g += momentum * buf
                    else:
                        g, owned = buf, False
                if owned:
                    g *= lr
                    p.array -= g
                else:
                    p.array -= lr * g

    def _fused_step(self, p, group):
        """One step of parameter p with the fused kernel of its kernel set: tinyalex/cuda/sgd.py
        on CUDA, tinyalex/cpu/sgd.py on the CPU with the numba set (same bits as below)."""
        if p.device == "cuda":
            from ..cuda import sgd_update              # never imported by `import tinyalex`
        else:
            from ..cpu.sgd import sgd_update
        buf, first_step = None, False
        if group["momentum"]:
            buf = self.state.setdefault(p, {}).get("momentum_buffer")
            if buf is None:                            # the kernel sets it to g on this step
                buf = _device.array_module(p.array).empty_like(p.array)
                self.state[p]["momentum_buffer"], first_step = buf, True
        sgd_update(p.array, p.grad.array, buf, group["lr"], group["momentum"], group["weight_decay"],
                   group["nesterov"], first_step, group["dampening"])

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
            raise ValueError("SGD.load_state_dict: the saved parameter groups do not match this "
                             "optimizer's")
        for group, saved in zip(self.param_groups, groups):
            group.update({k: v for k, v in saved.items() if k != "params"})
        self.state = {}
        for i, s in state_dict["state"].items():
            p = params[int(i)]
            self.state[p] = {k: _device.to_device(v, p.device).astype(p.dtype) for k, v in s.items()}
