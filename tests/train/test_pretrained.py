"""Pretrained weights, shown equal: torchvision's AlexNet, built in plain torch (torchvision
is not needed) and saved with torch.save, loads into tinyalex's torchvision-alexnet in a
process where torch cannot be imported, and gives torch's logits; ``tinyalex predict
--weights alexnet.pth --model torchvision-alexnet --labels FILE`` prints torch's top 5."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from tinyalex.train import models
from tinyalex.train.cli import _open_images
from tinyalex.train.data.run_data import transforms_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

WITHOUT_TORCH = """
import sys
sys.modules['torch'] = None                     # `import torch` raises ImportError from here on
import numpy as np
from tinyalex import tensor, no_grad
from tinyalex.train import models
from tinyalex.train.cli import main
weights, inputs, logits, image, labels = sys.argv[1:]
model = models.create_model('torchvision-alexnet', 1000)
models.load_weights(model, weights)
model.eval()
with no_grad():
    np.save(logits, model(tensor(np.load(inputs))).numpy())
code = main(['predict', image, '--weights', weights, '--model', 'torchvision-alexnet',
             '--labels', labels, '--device', 'cpu'])
assert 'torch' not in sys.modules or sys.modules['torch'] is None
sys.exit(code)
"""


class TorchvisionAlexNet(torch.nn.Module):
    """torchvision.models.AlexNet, written out: the same layers under the same names."""

    def __init__(self, num_classes=1000):
        super().__init__()
        nn = torch.nn
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2))
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=0.5), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),
            nn.Dropout(p=0.5), nn.Linear(4096, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


@pytest.fixture(scope="module")
def alexnet(tmp_path_factory):
    """The torch model, in eval mode, with He-initialised weights (so that the logits are of
    order 1, not vanishing) and small random biases, saved to alexnet.pth with torch.save."""
    torch.manual_seed(0)
    model = TorchvisionAlexNet()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                module.bias.uniform_(-0.1, 0.1)
    path = tmp_path_factory.mktemp("pretrained") / "alexnet.pth"
    torch.save(model.state_dict(), path)
    return model.eval(), path


def test_tinyalex_has_torchvisions_keys_and_shapes(alexnet):
    ours = models.create_model("torchvision-alexnet", 1000).state_dict()
    theirs = alexnet[0].state_dict()
    assert list(ours) == list(theirs)
    assert [tuple(v.shape) for v in ours.values()] == [tuple(v.shape) for v in theirs.values()]


def test_weights_saved_by_torch_give_torchs_logits_and_predictions_with_torch_blocked(alexnet, tmp_path):
    model, weights = alexnet
    rng = np.random.default_rng(0)
    inputs = rng.standard_normal((2, 3, 224, 224)).astype(np.float32)
    np.save(tmp_path / "inputs.npy", inputs)
    image = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 256, (300, 260, 3), dtype=np.uint8)).save(image)
    names = [f"class-{i:04d} name" for i in range(1000)]
    (tmp_path / "labels.txt").write_text("\n".join(names) + "\n")

    done = subprocess.run([sys.executable, "-c", WITHOUT_TORCH, str(weights), str(tmp_path / "inputs.npy"),
                           str(tmp_path / "logits.npy"), str(image), str(tmp_path / "labels.txt")],
                          cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT),
                          timeout=600)
    assert done.returncode == 0, done.stderr

    # the logits: float32 sums of up to 9216 products in 8 layers, in another order than
    # torch's (im2col + BLAS against oneDNN), differ by float32 rounding that grows with the
    # sums' lengths: 1.6e-6 of the logits' largest magnitude (20.6) measured here; allowed
    # 1e-5 of it (a single float32 ulp is 6e-8 relative, a 9216-term sum's error ~sqrt(9216) ulps)
    with torch.no_grad():
        expected = model(torch.from_numpy(inputs)).numpy()
    logits = np.load(tmp_path / "logits.npy")
    scale = np.abs(expected).max()
    assert scale > 0.1                                          # not vanishing: a real comparison
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5 * scale)
    assert (logits.argmax(1) == expected.argmax(1)).all()

    # predict: the same image, preprocessed as predict does, through torch
    x = transforms_for("torchvision-alexnet", train=False)(_open_images([str(image)], 3)[0][None],
                                                           np.random.default_rng(0))
    with torch.no_grad():
        probs = torch.softmax(model(torch.from_numpy(np.asarray(x))).double(), 1)[0].numpy()
    top = np.argsort(-probs)[:5]
    printed = re.fullmatch(rf"{re.escape(str(image))}: (.*)\n", done.stdout)
    assert printed, done.stdout
    pairs = [p.rsplit(" ", 1) for p in printed.group(1).split(", ")]
    assert [name for name, _ in pairs] == [names[i] for i in top]
    np.testing.assert_allclose([float(p) for _, p in pairs], probs[top], atol=1e-3)
