"""A small AlexNet-shaped model built in tinyalex and in torch with copied weights: logits,
every parameter's gradient, and 5 SGD steps of losses must match, dropout included."""
import numpy as np
import pytest
import torch
import torch.nn as tnn

import tinyalex as ta
import tinyalex.nn as nn
import tinyalex.optim as optim
from tinyalex.random import counter_uniform
from tinyalex import random as ta_random
from helpers import assert_close


def build(lib, dropout):
    return lib.Sequential(
        lib.Conv2d(3, 8, 5, stride=2, padding=2), lib.ReLU(),
        lib.LocalResponseNorm(5, alpha=0.5, beta=0.75, k=2.0), lib.MaxPool2d(3, 2),
        lib.Conv2d(8, 12, 3, padding=1, groups=2), lib.ReLU(),
        lib.LocalResponseNorm(4, alpha=0.3, beta=0.75, k=1.0), lib.MaxPool2d(3, 2),
        lib.Flatten(),
        lib.Linear(12 * 2 * 2, 20), lib.ReLU(), dropout(),
        lib.Linear(20, 5))


class SeededDropout(tnn.Module):
    """torch twin of tinyalex's dropout: the same counter-RNG mask from the same seed."""

    def __init__(self, seeds, p=0.5):
        super().__init__()
        self.seeds, self.p = seeds, p

    def forward(self, x):
        u = counter_uniform(self.seeds.pop(0), x.numel()).reshape(x.shape)
        return x * torch.tensor(u >= self.p, dtype=x.dtype) / (1 - self.p)


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-10), (np.float32, 2e-4)])
def test_alexnet_shaped_model_matches_torch_for_five_sgd_steps(kernels, monkeypatch, dtype, rtol):
    seeds = []
    draw_seed = ta_random.next_seed
    monkeypatch.setattr(ta_random, "next_seed", lambda: seeds.append(draw_seed()) or seeds[-1])

    ta.manual_seed(0)
    ours = build(nn, nn.Dropout).to(kernels.device, dtype=dtype)
    torch_seeds = []
    theirs = build(tnn, lambda: SeededDropout(torch_seeds)).double()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    theirs.load_state_dict({k: torch.tensor(kernels.to_numpy(v.array)).double()
                            for k, v in ours.state_dict().items()})

    opt = optim.SGD(ours.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    topt = torch.optim.SGD(theirs.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    rng = np.random.default_rng(0)
    for step in range(5):
        x, t = rng.standard_normal((4, 3, 21, 25)), rng.integers(0, 5, 4)
        logits = ours(ta.tensor(kernels.to_device(x.astype(dtype))))
        loss = nn.CrossEntropyLoss()(logits, ta.tensor(kernels.to_device(t)))
        torch_seeds.append(seeds[-1])
        tlogits = theirs(torch.tensor(x))
        tloss = tnn.CrossEntropyLoss()(tlogits, torch.tensor(t))
        assert_close(kernels.to_numpy(logits.array), tlogits.detach().numpy(), rtol, f"step {step} logits")
        assert_close(loss.item(), tloss.item(), rtol, f"step {step} loss")

        opt.zero_grad()
        topt.zero_grad()
        loss.backward()
        tloss.backward()
        for (name, p), tp in zip(ours.named_parameters(), theirs.parameters()):
            assert_close(kernels.to_numpy(p.grad.array), tp.grad.numpy(), 10 * rtol, f"step {step} grad {name}")
        opt.step()
        topt.step()
    for (name, p), tp in zip(ours.named_parameters(), theirs.parameters()):
        assert_close(kernels.to_numpy(p.array), tp.detach().numpy(), 10 * rtol, f"final {name}")
