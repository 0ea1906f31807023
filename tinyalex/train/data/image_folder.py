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

#: How each format's files end: a file that ends otherwise was probably cut short.
_TRAILERS = {"JPEG": (b"\xff\xd9",), "PNG": (b"IEND\xaeB`\x82",)}


class UnreadableImageError(ValueError):
    """An image file that Pillow cannot decode; the message names the file."""


class ImageFolder:
    """JPEG/PNG images in class sub-directories of `root`, decoded with Pillow.

    resize: the side of the square images get_batch returns (default 256, as in the paper).
    skip_bad: if True, get_batch leaves out an image that fails to decode (the batch is one
        smaller) and records it in ``skipped`` (path -> reason); else it raises
        UnreadableImageError naming the file.

    Attributes: ``classes`` (sorted names), ``class_to_idx`` (name -> label) and
    ``samples`` (list of (path, label)), as in torchvision.
    """

    def __init__(self, root, resize=256, skip_bad=False):
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
        self.skip_bad = bool(skip_bad)
        self.skipped = {}

    def __len__(self):
        return len(self.samples)

    def get_batch(self, indices):
        """Decode samples `indices`: uint8 images (B, resize, resize, 3), int64 labels (B,)."""
        indices = np.asarray(indices)
        images = np.empty((len(indices), self.resize, self.resize, 3), np.uint8)
        kept = []
        for index in indices.tolist():
            try:
                images[len(kept)] = self.load_image(index)
            except UnreadableImageError as exc:
                if not self.skip_bad:
                    raise
                self.skipped[self.samples[index][0]] = str(exc)
                continue
            kept.append(index)
        return images[:len(kept)], self.targets[np.asarray(kept, dtype=np.int64)]

    def find_unreadable(self):
        """[(path, reason)] for the samples that fail a fast check: the header must parse
        and the file must end as its format ends (a JPEG with its end-of-image marker, a
        PNG with its IEND chunk). A file that ends otherwise (cut short, or with bytes
        appended) is decoded in full, and listed only if that fails. So one pass over a
        large folder reads a few bytes of most files, and catches what Pillow would fail
        on mid-epoch except damage in the middle of otherwise whole files."""
        bad = []
        for index, (path, _) in enumerate(self.samples):
            try:
                with Image.open(path) as image:
                    trailers = _TRAILERS.get(image.format, ())
                if trailers and not _ends_with(path, trailers):
                    self.load_image(index)
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
                cause = exc.__cause__ if isinstance(exc, UnreadableImageError) else exc
                bad.append((path, f"{type(cause).__name__}: {cause}"))
        return bad

    def remove(self, paths):
        """Leave the samples at `paths` out of the data set (labels keep their meaning)."""
        paths = set(paths)
        self.samples = [(path, label) for path, label in self.samples if path not in paths]
        self.targets = np.array([label for _, label in self.samples], dtype=np.int64)

    def load_image(self, index):
        """Decode sample `index` to uint8 (resize, resize, 3) RGB: shorter side scaled to
        `resize` (bilinear, antialiased), then the central square cropped out."""
        path = self.samples[index][0]
        try:
            with Image.open(path) as image:
                image = image.convert("RGB")  # forces the full decode inside the try
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise UnreadableImageError(f"{path}: cannot decode image: {type(exc).__name__}: {exc}") \
                from exc
        return np.asarray(_resize_and_center_crop(image, self.resize))


def _ends_with(path, trailers):
    """True if the file at `path` ends with one of `trailers` (bytes), ignoring trailing
    whitespace and NULs some writers pad with."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 64))
        tail = f.read().rstrip(b"\x00\r\n ")
    return tail.endswith(trailers)


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
