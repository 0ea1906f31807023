"""Data for tinyalex: datasets, the 2012 paper's augmentation, and a prefetching loader.

- :func:`load_fashion_mnist` reads Fashion-MNIST's IDX files (:func:`read_idx`) into an
  :class:`ArrayDataset`; :class:`ImageFolder` decodes class-per-directory JPEG/PNG files
  (ImageNet-style) lazily, at the paper's 256x256.
- :mod:`tinyalex.data.transforms` holds vectorised batch transforms: Resize, RandomCrop,
  RandomHorizontalFlip, CenterCrop, TenCrop, ToFloat, Normalize and PCALighting.
- :class:`DataLoader` batches a dataset, applies a transform with a random generator
  derived from (seed, epoch, batch), and prefetches on a background thread.

A dataset is anything with ``len()`` and ``get_batch(indices) -> (uint8 images, int64 labels)``.
"""
from .dataset import ArrayDataset
from .fashion_mnist import (DEFAULT_FASHION_MNIST_DIR, FASHION_MNIST_CLASSES,
                            FASHION_MNIST_MEAN, FASHION_MNIST_STD, load_fashion_mnist)
from .idx import read_idx, write_idx
from .image_folder import ImageFolder, UnreadableImageError
from .loader import DataLoader
from .transforms import (IMAGENET_EIGVAL, IMAGENET_EIGVEC, IMAGENET_MEAN, IMAGENET_STD,
                         CenterCrop, Compose, Normalize, PCALighting, RandomCrop,
                         RandomHorizontalFlip, Resize, TenCrop, ToFloat, average_ten_crops,
                         pca_from_images)

__all__ = [
    "ArrayDataset", "ImageFolder", "UnreadableImageError", "DataLoader",
    "load_fashion_mnist", "DEFAULT_FASHION_MNIST_DIR", "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_MEAN", "FASHION_MNIST_STD", "read_idx", "write_idx",
    "Compose", "Resize", "RandomCrop", "RandomHorizontalFlip", "CenterCrop", "TenCrop",
    "average_ten_crops", "ToFloat", "Normalize", "PCALighting", "pca_from_images",
    "IMAGENET_MEAN", "IMAGENET_STD", "IMAGENET_EIGVAL", "IMAGENET_EIGVEC",
]
