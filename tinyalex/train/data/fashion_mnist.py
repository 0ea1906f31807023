"""Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017): 70,000 28x28 grayscale images of
clothing in 10 classes, 60,000 for training and 10,000 for testing, stored as IDX files.

tinyalex never downloads: the files come from the Debian package ``dataset-fashion-mnist``
(installed under :data:`DEFAULT_FASHION_MNIST_DIR`) or from any directory holding the
four standard files, gzipped or not.
"""
import os

import numpy as np

from tinyalex.train.data.dataset import ArrayDataset
from tinyalex.train.data.idx import read_idx

DEFAULT_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

#: Label i names class i.
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

#: Mean and standard deviation of the training pixels scaled to [0, 1] (for ToFloat).
FASHION_MNIST_MEAN = 0.2860
FASHION_MNIST_STD = 0.3530

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def load_fashion_mnist(split="train", data_dir=None):
    """Load one split as an :class:`ArrayDataset`: images uint8 (N, 28, 28), labels int64 (N,).

    split: "train" (N = 60000) or "test" (N = 10000).
    data_dir: the directory with the IDX files (default :data:`DEFAULT_FASHION_MNIST_DIR`);
    each file may be gzipped (``NAME.gz``, preferred) or raw (``NAME``).

    Raises FileNotFoundError, saying how to install the data, when a file is missing, and
    ValueError, naming the file, when a file is corrupt or the two files disagree.
    """
    if split not in _FILES:
        raise ValueError(f"split: expected one of {tuple(_FILES)}, got {split!r}")
    data_dir = os.fspath(DEFAULT_FASHION_MNIST_DIR if data_dir is None else data_dir)
    images_path, labels_path = (_find(data_dir, name) for name in _FILES[split])

    images = read_idx(images_path, ndim=3)
    labels = read_idx(labels_path, ndim=1)
    if images.dtype != np.uint8 or images.shape[1:] != (28, 28):
        raise ValueError(f"{images_path}: expected uint8 images of shape (N, 28, 28),"
                         f" found {images.dtype} {images.shape}")
    if labels.dtype != np.uint8:
        raise ValueError(f"{labels_path}: expected uint8 labels, found {labels.dtype}")
    if len(images) != len(labels):
        raise ValueError(f"{images_path} holds {len(images)} images but {labels_path}"
                         f" holds {len(labels)} labels: expected the same count")
    if len(labels) and labels.max() >= len(FASHION_MNIST_CLASSES):
        raise ValueError(f"{labels_path}: expected labels in [0, {len(FASHION_MNIST_CLASSES)}),"
                         f" found {labels.max()}")
    return ArrayDataset(images, labels, classes=FASHION_MNIST_CLASSES)


def _find(data_dir, name):
    """The path of NAME.gz or NAME in data_dir, else FileNotFoundError with install hints."""
    candidates = [os.path.join(data_dir, name + ".gz"), os.path.join(data_dir, name)]
    for path in candidates:
        if os.path.isfile(path):
            return path
    wanted = " or ".join(candidates)
    raise FileNotFoundError(
        f"Fashion-MNIST not found: looked for {wanted}. Install it with"
        " `sudo apt-get update && sudo apt-get install dataset-fashion-mnist`"
        f" (it goes to {DEFAULT_FASHION_MNIST_DIR}), or pass --data-dir DIR"
        " naming a directory that holds train-images-idx3-ubyte, train-labels-idx1-ubyte,"
        " t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (each optionally .gz).")
