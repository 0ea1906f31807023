"""tinyalex.save_safetensors / load_safetensors: safetensors.torch reads what tinyalex
writes, tinyalex reads what safetensors.torch writes, and `import tinyalex` does not import
the safetensors package."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import tinyalex as ta
from tinyalex import nn
from tinyalex.train import models

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_safetensors_torch_reads_what_tinyalex_writes(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Linear(4, 2))
    state = {**model.state_dict(), "steps": ta.tensor([3, -1]), "mask": ta.tensor([True, False]),
             "double": ta.tensor(np.linspace(0, 1, 4)), "scalar": ta.tensor(0.5), "empty": ta.zeros(0, 2),
             "transposed": ta.tensor(np.arange(6, dtype=np.float32).reshape(2, 3)).t(),
             "array": np.arange(3.0)}
    ta.save_safetensors(state, tmp_path / "w.safetensors")
    loaded = load_file(tmp_path / "w.safetensors")
    assert sorted(loaded) == sorted(state)
    for key, value in state.items():
        array = value.detach().numpy() if isinstance(value, ta.Tensor) else value
        assert tuple(loaded[key].shape) == array.shape and str(loaded[key].dtype) == f"torch.{array.dtype}", key
        np.testing.assert_array_equal(loaded[key].numpy(), array, err_msg=key)
    back = ta.load_safetensors(tmp_path / "w.safetensors")
    assert all(isinstance(v, ta.Tensor) for v in back.values())
    np.testing.assert_array_equal(back["transposed"].numpy(), [[0, 3], [1, 4], [2, 5]])


def test_tinyalex_reads_what_safetensors_torch_writes_and_load_weights_takes_it(tmp_path):
    torch.manual_seed(0)
    source = models.torchvision_alexnet(num_classes=10)
    state = {k: torch.randn(*v.shape) for k, v in source.state_dict().items()}
    save_file(state, tmp_path / "alexnet.safetensors")
    loaded = ta.load_safetensors(tmp_path / "alexnet.safetensors")
    for key, value in state.items():
        np.testing.assert_array_equal(loaded[key].numpy(), value.numpy(), err_msg=key)
    target = models.torchvision_alexnet(num_classes=10)
    models.load_weights(target, tmp_path / "alexnet.safetensors")
    for key, value in target.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), state[key].numpy(), err_msg=key)


def test_refusals_name_the_argument(tmp_path):
    save_file({"h": torch.zeros(2, dtype=torch.float16)}, tmp_path / "half.safetensors")
    with pytest.raises(TypeError, match=r"half.safetensors: 'h' has dtype float16; tinyalex has float32"):
        ta.load_safetensors(tmp_path / "half.safetensors")
    with pytest.raises(TypeError, match=r"state_dict\['w'\]: expected a Tensor or an array, got str"):
        ta.save_safetensors({"w": "abc"}, tmp_path / "x.safetensors")
    with pytest.raises(TypeError, match="state_dict: expected a dict of names to tensors, got list"):
        ta.save_safetensors([ta.ones(2)], tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


def test_import_tinyalex_does_not_import_safetensors_and_a_missing_package_says_what_to_install():
    code = ("import sys, tinyalex; assert 'safetensors' not in sys.modules, 'imported'\n"
            "sys.modules['safetensors'] = None\n"
            "try:\n    tinyalex.load_safetensors('w.safetensors')\n"
            "except ImportError as exc:\n    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert done.returncode == 0, done.stderr
    assert "load_safetensors: needs the safetensors package" in done.stdout
    assert "tinyalex[safetensors]" in done.stdout
