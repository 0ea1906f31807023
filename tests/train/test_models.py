"""The AlexNet variants: shapes, torchvision's keys, the paper's init, weight import."""
import numpy as np
import pytest
import torch

import tinyalex as ta
from tinyalex.train import models
from tinyalex import nn

# torchvision.models.alexnet().state_dict() keys (torchvision is not a dependency)
TORCHVISION_KEYS = [f"{block}.{i}.{p}" for block, layers in
                    (("features", (0, 3, 6, 8, 10)), ("classifier", (1, 4, 6)))
                    for i in layers for p in ("weight", "bias")]


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_every_model_runs_forward_and_backward_at_its_input_size(name):
    ta.manual_seed(0)
    model = models.create_model(name, num_classes=7)
    shape = models.MODELS[name][1]
    x = ta.tensor(np.random.default_rng(0).standard_normal((2, *shape)).astype(np.float32))
    logits = model(x)
    assert logits.shape == (2, 7)
    ta.functional.cross_entropy(logits, ta.tensor([1, 5])).backward()
    assert all(p.grad is not None and np.isfinite(p.grad.numpy()).all() for p in model.parameters())


def test_torchvision_layout_has_torchvision_keys_and_shapes():
    state = models.torchvision_alexnet().state_dict()
    assert list(state) == TORCHVISION_KEYS
    assert state["features.0.weight"].shape == (64, 3, 11, 11)
    assert state["features.3.weight"].shape == (192, 64, 5, 5)
    assert state["classifier.1.weight"].shape == (4096, 256 * 6 * 6)


def test_paper_model_has_the_papers_init_groups_and_lrn():
    ta.manual_seed(0)
    model = models.alexnet2012()
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    fcs = [m for m in model.classifier if isinstance(m, nn.Linear)]
    assert [c.groups for c in convs] == [1, 2, 1, 2, 2]
    lrns = [m for m in model.features if isinstance(m, nn.LocalResponseNorm)]
    assert [(m.size, m.alpha, m.beta, m.k) for m in lrns] == [(5, 5e-4, 0.75, 2.0)] * 2
    for i, layer in enumerate(convs + fcs):
        w = layer.weight.detach().numpy()
        assert abs(w.std() - 0.01) < 0.001 and abs(w.mean()) < 0.001, f"layer {i} weights"
        expected_bias = 1.0 if i in (1, 3, 4, 5, 6) else 0.0   # conv2, conv4, conv5, fc6, fc7
        assert np.all(layer.bias.detach().numpy() == expected_bias), f"layer {i} bias"


@pytest.mark.parametrize("suffix", [".npz", ".pth"])
def test_load_weights_from_npz_and_torch_files(tmp_path, suffix):
    source = models.torchvision_alexnet(num_classes=10)
    state = {k: v.numpy() for k, v in source.state_dict().items()}
    path = tmp_path / f"alexnet{suffix}"
    if suffix == ".npz":
        np.savez(path, **state)
    else:
        torch.save({k: torch.tensor(v) for k, v in state.items()}, path)
    target = models.torchvision_alexnet(num_classes=10)
    models.load_weights(target, path)
    for key, value in target.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), state[key], err_msg=key)
    with pytest.raises(ValueError, match="classifier.6.weight: expected shape"):
        models.load_weights(models.torchvision_alexnet(num_classes=1000), path)
