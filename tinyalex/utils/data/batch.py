"""One batch as the network takes it, built the same way in the loader's thread and in its
worker processes: load the samples, transform them with their positions' draws, and turn
them into float32 NCHW images and int64 labels."""
import numpy as np

from tinyalex.random import SampleRNG


def build_batch(dataset, transform, seed, epoch, indices, positions, collate=None):
    """Load samples `indices` and transform them with the draws of their epoch positions:
    float32 (B, C, H, W) images and int64 (B,) labels. The same in a worker process.
    With `collate`, its result on get_batch's is returned as is (no transform)."""
    batch = dataset.get_batch(indices)
    if collate is not None:
        return collate(batch)
    images, labels = batch
    if transform is not None:
        if len(labels) != len(positions):  # the dataset left out unreadable images
            positions = positions[:len(labels)]
        images = transform(images, SampleRNG(seed, epoch, positions))
    return _as_network_input(images, labels)


def _as_network_input(images, labels):
    """float32 (B, C, H, W) images and int64 (B,) labels, checked to agree in B."""
    if images.dtype == np.uint8:
        images = uint8_to_float32(images)
        images *= np.float32(1 / 255)
    if not np.issubdtype(images.dtype, np.floating) or images.ndim != 4:
        raise ValueError("transform: expected float (B, C, H, W) images or uint8 ones,"
                         f" got {images.dtype} {images.shape}")
    labels = np.asarray(labels, dtype=np.int64)
    if len(images) != len(labels):
        raise ValueError(f"transform: returned {len(images)} images for {len(labels)} labels"
                         " (apply TenCrop to the loader's output, not inside it)")
    return images.astype(np.float32, copy=False), labels


def uint8_to_float32(images):
    """uint8 (N, H, W) or (N, H, W, C) -> float32 (N, C, H, W), values unchanged (0..255)."""
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise TypeError("images: expected uint8 (N, H, W) or (N, H, W, C),"
                        f" got {images.dtype} {images.shape}")
    x = images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x).astype(np.float32)  # transpose the bytes, not the floats
