"""In-memory datasets. Every dataset in tinyalex.train.data offers the same two calls, which is
all :class:`~tinyalex.utils.data.loader.DataLoader` needs:

- ``len(dataset)``: the number of samples;
- ``dataset.get_batch(indices) -> (images, labels)``: uint8 images, channel-last
  ((B, H, W) or (B, H, W, C)), and int64 labels (B,).

Whole batches rather than single samples keep the per-sample Python overhead out of the
loader: for an in-memory array a batch is one fancy-indexing call.
"""
import numpy as np


class ArrayDataset:
    """Images and labels held in memory, e.g. all of Fashion-MNIST (47 MB as uint8).

    images: uint8 (N, H, W) or (N, H, W, C). labels: integers (N,), stored as int64.
    classes: optional list of class names (label i is classes[i]).
    """

    def __init__(self, images, labels, classes=None):
        images = np.asarray(images)
        labels = np.asarray(labels)
        if images.dtype != np.uint8 or images.ndim not in (3, 4):
            raise ValueError("images: expected uint8 (N, H, W) or (N, H, W, C),"
                             f" got {images.dtype} {images.shape}")
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels: expected integers of shape (N,),"
                             f" got {labels.dtype} {labels.shape}")
        if len(labels) != len(images):
            raise ValueError(f"labels: expected {len(images)} labels (one per image),"
                             f" got {len(labels)}")
        if classes is not None:
            classes = list(classes)
            if len(labels) and not 0 <= labels.min() <= labels.max() < len(classes):
                raise ValueError(f"labels: expected values in [0, {len(classes)}) to index"
                                 f" classes, got [{labels.min()}, {labels.max()}]")
        self.images = images
        self.labels = labels.astype(np.int64, copy=False)
        self.classes = classes

    def __len__(self):
        return len(self.images)

    def get_batch(self, indices):
        """(images[indices], labels[indices]): uint8 images and int64 labels."""
        indices = np.asarray(indices)
        return self.images[indices], self.labels[indices]
