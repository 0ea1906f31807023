"""A class-per-directory image dataset, laid out like torchvision's ImageFolder::

    root/dog/xxx.png
    root/dog/nested/xxy.jpeg
    root/cat/123.jpg

Class names are the sorted sub-directory names of ``root`` and label i is ``classes[i]``;
samples are listed in the same order torchvision uses (class by class, walking each class
directory in sorted order). Images are decoded lazily, one batch at a time, as the 2012
paper prepares ImageNet (§2): "given a rectangular image, we first rescaled the image
such that the shorter side was of length 256, and then cropped out the central 256×256
patch". So every decoded image is uint8 (resize, resize, 3) RGB and batches stack.
"""
import os

import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


class ImageFolder:
    """JPEG/PNG images in class sub-directories of `root`, decoded with Pillow.

    resize: the side of the square images get_batch returns (default 256, as in the paper).

    Attributes: ``classes`` (sorted names), ``class_to_idx`` (name -> label) and
    ``samples`` (list of (path, label)), as in torchvision.
    """

    def __init__(self, root, resize=256):
        root = os.fspath(root)
        if isinstance(resize, bool) or not isinstance(resize, int) or resize < 1:
            raise ValueError(f"resize: expected a positive int, got {resize!r}")
        if not os.path.isdir(root):
            raise FileNotFoundError(f"root: {root} is not a directory")
        classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
        if not classes:
            raise ValueError(f"root: {root} has no class sub-directories: expected"
                             " root/CLASS/IMAGE.{jpg,jpeg,png}")
        self.root = root
        self.resize = resize
        self.classes = classes
        self.class_to_idx = {name: i for i, name in enumerate(classes)}
        self.samples = _list_samples(root, classes)
        self.targets = np.array([label for _, label in self.samples], dtype=np.int64)

    def __len__(self):
        return len(self.samples)

    def get_batch(self, indices):
        """Decode samples `indices`: uint8 images (B, resize, resize, 3), int64 labels (B,)."""
        indices = np.asarray(indices)
        images = np.empty((len(indices), self.resize, self.resize, 3), np.uint8)
        for row, index in enumerate(indices.tolist()):
            images[row] = self.load_image(index)
        return images, self.targets[indices]

    def load_image(self, index):
        """Decode sample `index` to uint8 (resize, resize, 3) RGB: shorter side scaled to
        `resize` (bilinear, antialiased), then the central square cropped out."""
        path = self.samples[index][0]
        try:
            with Image.open(path) as image:
                image = image.convert("RGB")  # forces the full decode inside the try
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise ValueError(f"{path}: cannot decode image: {type(exc).__name__}: {exc}") \
                from exc
        return np.asarray(_resize_and_center_crop(image, self.resize))


def _list_samples(root, classes):
    """[(path, label)] in torchvision's order; ValueError if a class has no image."""
    samples, empty = [], []
    for label, name in enumerate(classes):
        found = [(os.path.join(directory, filename), label)
                 for directory, _, filenames in sorted(os.walk(os.path.join(root, name),
                                                               followlinks=True))
                 for filename in sorted(filenames)
                 if filename.lower().endswith(IMAGE_EXTENSIONS)]
        if not found:
            empty.append(name)
        samples += found
    if empty:
        raise ValueError(f"root: {root} has no images in class director"
                         f"{'y' if len(empty) == 1 else 'ies'} {', '.join(empty)}:"
                         f" expected files ending in {', '.join(IMAGE_EXTENSIONS)}")
    return samples


def _resize_and_center_crop(image, size):
    """Scale the shorter side of a PIL image to `size`, then crop the central size x size."""
    width, height = image.size
    scale = size / min(width, height)
    new_width, new_height = max(size, round(width * scale)), max(size, round(height * scale))
    image = image.resize((new_width, new_height), Image.BILINEAR)
    left, top = (new_width - size) // 2, (new_height - size) // 2
    return image.crop((left, top, left + size, top + size))
