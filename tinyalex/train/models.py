"""AlexNet variants.

- :func:`alexnet2012`: the 2012 paper (Krizhevsky, Sutskever, Hinton): 3x227 input, conv
  96-256-384-384-256, LRN after the ReLUs of conv1 and conv2, overlapping 3/2 max-pooling,
  dropout 0.5 in fc6 and fc7, the two-GPU split as ``groups=2`` in conv2, conv4 and conv5,
  and the paper's init (section 5). ``column_lrn=True`` normalises within each GPU's half of
  the channels, the one-process twin of the two-rank split (parallel/model_parallel.py).
- :class:`AlexNet`: the container every variant uses, with torchvision's block names
  (``features``, ``avgpool``, ``classifier``), so state_dict keys read 'features.0.weight'
  as in torchvision.
- :func:`torchvision_alexnet`: torchvision's layout, which follows the 2014 "one weird
  trick" paper rather than the 2012 one: conv 64-192-384-256-256, no LRN, no groups,
  3x224 input, dropout before fc6 and fc7; weights exported from torchvision load
  (:func:`load_weights`).
- :func:`fashion_alexnet`: Dive into Deep Learning's AlexNet for Fashion-MNIST: 1x224
  input, 96-256-384-384-256, no LRN, 10 classes, Xavier init.
- :func:`cpu_alexnet`: the same 8-layer topology (5 conv with LRN after conv1 and conv2, 3
  fc with dropout) scaled to 28x28 Fashion-MNIST so a 2-core CPU trains it in minutes.
"""
import numpy as np

from tinyalex import nn
from tinyalex.nn import init


class AlexNet(nn.Module):
    """AlexNet with named ``features`` / ``avgpool`` / ``classifier`` blocks. The layer
    indices inside each block give the state_dict keys ('features.0.weight', ...). avgpool
    is torchvision's nn.AdaptiveAvgPool2d: the identity when the features already are
    pool_size x pool_size, as they are at each variant's own input size."""

    def __init__(self, features, classifier, pool_size=6):
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d(pool_size)
        self.classifier = classifier

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


def torchvision_alexnet(num_classes=1000, dropout=0.5):
    """torchvision.models.alexnet's layout and keys (input 3x224)."""
    features = nn.Sequential(
        nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2))
    return AlexNet(features, _classifier(256 * 6 * 6, 4096, num_classes, dropout))


def _classifier(in_features, hidden, num_classes, dropout):
    """fc6, fc7 with dropout before each (torchvision's order), then the output layer."""
    return nn.Sequential(
        nn.Dropout(dropout), nn.Linear(in_features, hidden), nn.ReLU(),
        nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.ReLU(),
        nn.Linear(hidden, num_classes))


class ColumnLocalResponseNorm(nn.LocalResponseNorm):
    """LRN within each of `columns` equal groups of channels: a window never reaches into the
    next group, as on the paper's two GPUs, which each normalised the maps they held. The
    (N, C, H, W) input is rearranged to (N, C / columns, columns, H * W), so each group's
    maps sit at their own spatial positions of one channel axis and the ordinary LRN sees
    zeros beyond each group's edges. (The batch axis stays first, so ONNX export keeps it
    dynamic.)"""

    def __init__(self, size, alpha=1e-4, beta=0.75, k=1.0, columns=2):
        super().__init__(size, alpha, beta, k)
        self.columns = columns

    def forward(self, x):
        n, c, h, w = x.shape
        if c % self.columns:
            raise ValueError(f"ColumnLocalResponseNorm: input: expected channels that {self.columns} "
                             f"columns divide, got {c}")
        grouped = x.reshape(n, self.columns, c // self.columns, h * w).transpose(1, 2)
        return super().forward(grouped).transpose(1, 2).reshape(n, c, h, w)

    def extra_repr(self):
        return super().extra_repr() + f", columns={self.columns}"


def _paper_lrn(columns=1):
    # the paper's LRN in PyTorch's convention (docs/ops/local_response_norm.md#5-constants-pytorch-the-2012-paper-tinyalex)
    if columns > 1:
        return ColumnLocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0, columns=columns)
    return nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)


def alexnet2012(num_classes=1000, groups=2, dropout=0.5, column_lrn=False):
    """The 2012 paper's network for 3x227 inputs (section 3.5, figure 2).

    groups=2 reproduces the two-GPU split: conv2, conv4 and conv5 see only the half of the
    previous layer's channels that lived on their GPU; groups=1 connects all channels.
    column_lrn=True: each LRN normalises within each of the `groups` halves of its channels,
    as each GPU did with its own maps (the one-process twin of ``--model-parallel 2``);
    False: across all channels, a window straddling the halves.
    Init (section 5): weights N(0, 0.01); biases 1 in conv2, conv4, conv5, fc6 and fc7
    (to give the ReLUs positive inputs early on), 0 elsewhere.
    """
    lrn_columns = groups if column_lrn else 1
    features = nn.Sequential(
        nn.Conv2d(3, 96, 11, stride=4), nn.ReLU(), _paper_lrn(lrn_columns), nn.MaxPool2d(3, 2),
        nn.Conv2d(96, 256, 5, padding=2, groups=groups), nn.ReLU(), _paper_lrn(lrn_columns), nn.MaxPool2d(3, 2),
        nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 384, 3, padding=1, groups=groups), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1, groups=groups), nn.ReLU(), nn.MaxPool2d(3, 2))
    model = AlexNet(features, _classifier(256 * 6 * 6, 4096, num_classes, dropout))
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    fcs = [m for m in model.classifier if isinstance(m, nn.Linear)]
    for i, layer in enumerate(convs + fcs):
        init.normal_(layer.weight, 0.0, 0.01)
        init.constant_(layer.bias, 1.0 if i in (1, 3, 4, 5, 6) else 0.0)
    return model


def fashion_alexnet(num_classes=10, dropout=0.5):
    """Dive into Deep Learning's AlexNet for 1x224 Fashion-MNIST (no LRN, Xavier init)."""
    features = nn.Sequential(
        nn.Conv2d(1, 96, 11, stride=4, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(96, 256, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2))
    model = AlexNet(features, _classifier(256 * 5 * 5, 4096, num_classes, dropout), pool_size=5)
    _xavier(model)
    return model


def cpu_alexnet(num_classes=10, dropout=0.3):
    """The 8-layer AlexNet topology scaled for 1x28 Fashion-MNIST on a 2-core CPU:
    conv 32-64-96-96-64 with LRN after conv1 and conv2 and overlapping 3/2 pooling,
    fc 256-512-512-classes with dropout. About 11 M multiply-adds per image (AlexNet: 720 M).
    Scaled with it, for a run of a few epochs: dropout 0.3 on fc layers 8x narrower than
    AlexNet's (0.5 cost ~5 points of accuracy after a third of an epoch), and He (Kaiming)
    normal init, so the deep ReLU stack keeps its signal's scale from the first step."""
    features = nn.Sequential(
        nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), _paper_lrn(), nn.MaxPool2d(3, 2),       # 28 -> 13
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), _paper_lrn(), nn.MaxPool2d(3, 2),      # 13 -> 6
        nn.Conv2d(64, 96, 3, padding=1), nn.ReLU(),
        nn.Conv2d(96, 96, 3, padding=1), nn.ReLU(),
        nn.Conv2d(96, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2))                    # 6 -> 2
    model = AlexNet(features, _classifier(64 * 2 * 2, 512, num_classes, dropout), pool_size=2)
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            init.kaiming_normal_(module.weight, nonlinearity="relu")
            init.zeros_(module.bias)
    return model


def _xavier(model):
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            init.xavier_uniform_(module.weight)
            init.zeros_(module.bias)


#: name -> (constructor, input shape (C, H, W), what it is)
MODELS = {
    "cpu-alexnet": (cpu_alexnet, (1, 28, 28), "AlexNet's 8-layer topology scaled for 28x28 Fashion-MNIST on a CPU"),
    "fashion-alexnet": (fashion_alexnet, (1, 224, 224), "d2l's AlexNet for Fashion-MNIST resized to 224"),
    "alexnet2012": (alexnet2012, (3, 227, 227), "the 2012 paper's AlexNet with LRN and groups=2"),
    "torchvision-alexnet": (torchvision_alexnet, (3, 224, 224), "torchvision's AlexNet layout (64-192-384-256-256)"),
}


#: The paper's recipe (section 5): batch 128, learning rate 0.01 divided by 10 when the
#: validation error stops improving.
_PAPER = dict(batch_size=128, lr=0.01, lr_schedule="plateau", lr_step=30)
#: model -> the settings it trains with unless told otherwise. The paper's recipe, except
#: cpu-alexnet, which must reach 0.88 on Fashion-MNIST within minutes on 2 cores: more,
#: smaller steps (batch 64, lr 0.02) and one epoch at lr/10 at the end, in micro-batches of
#: 32 so that 1 and 2 ranks train the same bits (tinyalex.train.parallel.data_parallel).
PRESETS = {
    "cpu-alexnet": dict(epochs=3, batch_size=64, micro_batch=32, lr=0.02, lr_schedule="step", lr_step=2),
    "fashion-alexnet": dict(_PAPER, epochs=10),
    "alexnet2012": dict(_PAPER, epochs=90),
    "torchvision-alexnet": dict(_PAPER, epochs=90),
}


def create_model(name, num_classes, model_parallel=1):
    """The model `name`; model_parallel=2 gives alexnet2012's one-process twin of the
    two-column split (per-column LRN, tinyalex.train.parallel.model_parallel)."""
    if name not in MODELS:
        raise ValueError(f"model: expected one of {sorted(MODELS)}, got {name!r}")
    if model_parallel in (None, 1):
        return MODELS[name][0](num_classes=num_classes)
    if (name, model_parallel) != ("alexnet2012", 2):
        raise ValueError(f"model_parallel: expected 1, or 2 with alexnet2012 (the paper's two "
                         f"columns), got {model_parallel!r} with {name}")
    return alexnet2012(num_classes=num_classes, column_lrn=True)


def read_weights(path):
    """A state_dict from a file: ``.pth``/``.pt`` written by torch.save (e.g. torchvision's
    AlexNet weights) or tinyalex.save, read by tinyalex's weights-only reader (no torch
    needed); ``.safetensors`` (needs the safetensors package); or ``.npz``. Nothing is
    downloaded."""
    from tinyalex import serialization
    path = str(path)
    if path.endswith(".npz"):
        with np.load(path) as archive:
            return {k: archive[k] for k in archive.files}
    if path.endswith((".pth", ".pt")):
        return serialization.load(path, map_location="cpu")
    if path.endswith(".safetensors"):
        return serialization.load_safetensors(path)
    raise ValueError(f"path: expected a .pth, .pt, .safetensors or .npz file, got {path!r}")


def load_weights(model, path):
    """Load the state_dict in `path` (see :func:`read_weights`) into `model`."""
    return model.load_state_dict(read_weights(path))
