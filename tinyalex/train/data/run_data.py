"""The data a training run reads: the --dataset choices (Fashion-MNIST, an image folder,
shards written by `tinyalex prepare`), the check of an image folder's files
(--skip-bad-images), --limit-train/--limit-test, one rank's part of the test set, and each
model's preprocessing and augmentation (transforms_for).

The datasets and transforms themselves are in data/, and the loader is the engine's
(tinyalex/utils/data/loader.py); neither knows of settings. This module turns a TrainConfig
into them and says what is wrong as a TrainingError.
"""
import os

import numpy as np

from tinyalex.train import models
from tinyalex.train.data import transforms as T
from tinyalex.train.data.fashion_mnist import FASHION_MNIST_MEAN, FASHION_MNIST_STD, load_fashion_mnist
from tinyalex.train.data.image_folder import ImageFolder
from tinyalex.errors import TrainingError
from tinyalex.train.config import check_data_location


def load_datasets(config, log=None):
    """(train, test) datasets for config.dataset, limited if asked. An ImageFolder's files
    are checked first (ImageFolder.find_unreadable): any undecodable image refuses the run,
    listed, unless config.skip_bad_images, which leaves them out and logs how many."""
    check_data_location(config.dataset, config.data_dir)
    if config.dataset == "fashion-mnist":
        try:
            train, test = (load_fashion_mnist(split, config.data_dir) for split in ("train", "test"))
        except (OSError, ValueError) as exc:  # missing, unreadable or corrupt files: say which
            raise TrainingError(str(exc)) from exc
    elif config.dataset.startswith("shards:"):
        from tinyalex.train.data.shards import ShardDataset
        root = config.dataset.split(":", 1)[1]
        try:
            train, test = (ShardDataset(os.path.join(root, split)) for split in ("train", "val"))
        except (OSError, ValueError, KeyError) as exc:
            raise TrainingError(f"--dataset {config.dataset}: {exc}") from exc
    else:
        root = config.dataset.split(":", 1)[1]
        try:
            train, test = (ImageFolder(os.path.join(root, split), skip_bad=bool(config.skip_bad_images))
                           for split in ("train", "val"))
        except (OSError, ValueError) as exc:
            raise TrainingError(str(exc)) from exc
        for folder in (train, test):
            _drop_unreadable(folder, config, log or (lambda line: None))
    return _limit(train, config.limit_train), _limit(test, config.limit_test)


def _drop_unreadable(folder, config, log):
    """Refuse an ImageFolder holding undecodable images, or leave them out with a warning."""
    bad = folder.find_unreadable()
    if not bad:
        return
    listed = ", ".join(f"{path} ({reason})" if i == 0 else path for i, (path, reason) in enumerate(bad[:3]))
    listed += f" and {len(bad) - 3} more" if len(bad) > 3 else ""
    if not config.skip_bad_images:
        raise TrainingError(f"--dataset {config.dataset}: expected only decodable images, got "
                            f"{len(bad)} that {'is' if len(bad) == 1 else 'are'} not: {listed}; "
                            "remove them, or pass --skip-bad-images to train without them")
    folder.remove(path for path, _ in bad)
    if not folder.samples:
        raise TrainingError(f"--dataset {config.dataset}: expected decodable images in "
                            f"{folder.root}, got none")
    log(f"warning: --skip-bad-images: left out {len(bad)} undecodable image"
        f"{'' if len(bad) == 1 else 's'} of {folder.root}: {listed}")


def skipped_images(dataset):
    """{path: reason} of the images an ImageFolder (or a limit of one) left out mid-epoch."""
    return getattr(getattr(dataset, "dataset", dataset), "skipped", {})


class _Subset:
    def __init__(self, dataset, n):
        self.dataset, self.n, self.classes = dataset, n, dataset.classes

    def __len__(self):
        return self.n

    def get_batch(self, indices):
        return self.dataset.get_batch(indices)


class Shard:
    """Samples [first, stop) of a dataset: one rank's part of the test set."""

    def __init__(self, dataset, first, stop):
        self.dataset, self.first, self.stop = dataset, first, stop
        self.classes = dataset.classes

    def __len__(self):
        return self.stop - self.first

    def get_batch(self, indices):
        return self.dataset.get_batch(np.asarray(indices) + self.first)


def _limit(dataset, n):
    return dataset if n is None or n >= len(dataset) else _Subset(dataset, n)


def transforms_for(model_name, train, ten_crop=False):
    """The preprocessing of each model: normalise, resize or crop, augment in training.
    With ten_crop the test images stay whole (256 px) for TenCrop after the loader."""
    channels, height, _ = models.MODELS[model_name][1]
    if channels == 1:  # Fashion-MNIST, as d2l prepares it: normalised, resized, no augmentation
        steps = [T.ToFloat(FASHION_MNIST_MEAN, FASHION_MNIST_STD)]
        return T.Compose(steps + ([T.Resize(height)] if height != 28 else []))
    # RGB (ImageFolder gives 256x256): the paper's random crops, flips and PCA lighting
    crop = [T.RandomCrop(height)] if train else ([] if ten_crop else [T.CenterCrop(height)])
    steps = crop + ([T.RandomHorizontalFlip()] if train else []) + [T.ToFloat()]
    steps += [T.PCALighting()] if train else []
    return T.Compose(steps + [T.Normalize(T.IMAGENET_MEAN, T.IMAGENET_STD)])
