"""Batch transforms: vectorised NumPy, one call per batch, never a Python loop over images.

Every transform is a callable ``t(images, rng) -> images``; ``rng`` is either a
``np.random.Generator`` or the :class:`SampleRNG` the loader made for this batch
(deterministic transforms ignore it). A SampleRNG draws each sample's numbers from a
counter RNG keyed by the sample's position in the epoch, so a sample gets the same crop,
flip and lighting whichever batch, data-parallel rank or worker process handles it.
Two layouts are in play, and the dtype tells them apart:

- uint8 images are channel-last, as datasets store them: (N, H, W) or (N, H, W, C);
- float images are (N, C, H, W), as the network takes them.

Resize, the crops and the flip accept both layouts and keep the one they get; ToFloat goes
from uint8 channel-last to float32 NCHW; Normalize and PCALighting take float NCHW.

Pipelines (the 2012 paper's augmentation is §4.1):

- Fashion-MNIST at AlexNet's size, as d2l does: ``Compose([ToFloat(FASHION_MNIST_MEAN,
  FASHION_MNIST_STD), Resize(224)])`` (d2l resizes first; converting first is twice as fast
  and skips rounding the 224x224 result to uint8).
- ImageNet training: ``Compose([RandomCrop(224), RandomHorizontalFlip(), ToFloat(),
  PCALighting(), Normalize(IMAGENET_MEAN, IMAGENET_STD)])`` on 256x256 images; PCALighting's
  eigen-pairs are in [0, 1] pixel units, so it goes after ToFloat() and before Normalize.
- ImageNet testing: ``CenterCrop(224)``, or the paper's ``TenCrop(224)`` followed by
  :func:`average_ten_crops` on the network's softmax outputs.
"""
import functools
import numbers

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from tinyalex.random import SampleRNG
from tinyalex.utils.data.batch import uint8_to_float32

#: torchvision's ImageNet channel statistics for pixels in [0, 1] (RGB).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Eigenvalues and eigenvectors (columns) of the covariance of ImageNet's RGB pixels in
#: [0, 1], as published with fb.resnet.torch; the paper's §4.1 PCA.
IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVEC = ((-0.5675, 0.7192, 0.4009),
                   (-0.5808, -0.0045, -0.8140),
                   (-0.5836, -0.6948, 0.4203))


class Compose:
    """Apply `transforms` in order, all with the batch's rng."""

    def __init__(self, transforms):
        transforms = list(transforms)
        for i, t in enumerate(transforms):
            if not callable(t):
                raise TypeError(f"transforms[{i}]: expected a callable t(images, rng),"
                                f" got {type(t).__name__}")
        self.transforms = transforms

    def __call__(self, images, rng=None):
        for t in self.transforms:
            images = t(images, rng)
        return images


class Resize:
    """Bilinear resize to `size` (an int for a square, or (height, width)).

    Each output pixel is a weighted sum of input pixels, separable in rows and columns, so
    the whole batch is two matrix products: y = R_h @ x @ R_w.T with R of shape
    (out, in) from :func:`resize_matrix`, each done as one large GEMM (NumPy's stacked
    matmul of small matrices is many times slower). Upsampling (28 -> 224, as d2l feeds
    Fashion-MNIST to AlexNet) is ordinary bilinear interpolation with half-pixel centres;
    downsampling widens the triangle filter so every input pixel contributes
    (antialiasing). Both match PIL's BILINEAR and torch's
    ``interpolate(mode="bilinear", align_corners=False, antialias=True)``.
    uint8 results are rounded and clipped to [0, 255]; float results keep their dtype.
    When upsampling, ToFloat before Resize saves that rounding pass over the large output.
    """

    def __init__(self, size):
        self.size = _pair(size, "size")

    def __call__(self, images, rng=None):
        h_axis, w_axis = _spatial_axes(images)
        work = np.float64 if images.dtype == np.float64 else np.float32
        rows = resize_matrix(images.shape[h_axis], self.size[0]).astype(work)
        cols = resize_matrix(images.shape[w_axis], self.size[1]).astype(work)
        y = _apply_along(images.astype(work), cols, w_axis)
        y = np.ascontiguousarray(_apply_along(y, rows, h_axis))
        if images.dtype == np.uint8:
            np.clip(np.rint(y, out=y), 0, 255, out=y)
        return y.astype(images.dtype, copy=False)


def _apply_along(x, matrix, axis):
    """Contract `axis` of x with the rows of `matrix` (out, in): x's axis becomes `out` long."""
    return np.moveaxis(np.tensordot(x, matrix, axes=(axis, 1)), -1, axis)


@functools.lru_cache(maxsize=64)
def resize_matrix(in_size, out_size):
    """The (out_size, in_size) float64 matrix of bilinear weights, PIL's algorithm.

    Output pixel i sits at centre c = (i + 0.5) * s in input coordinates, s = in/out.
    Input pixel j (centre j + 0.5) gets weight max(0, 1 - |j + 0.5 - c| / max(s, 1)),
    then each row is normalised to sum to 1 (which also handles the borders).
    """
    scale = in_size / out_size
    support = max(scale, 1.0)  # >1 only when shrinking: the filter covers every input pixel
    centres = (np.arange(out_size) + 0.5)[:, None] * scale
    weights = np.maximum(0.0, 1.0 - np.abs(np.arange(in_size) + 0.5 - centres) / support)
    weights /= weights.sum(axis=1, keepdims=True)
    weights.flags.writeable = False  # shared by the cache
    return weights


class RandomCrop:
    """A random `size` window per image, after zero-padding each side by `padding`.

    Offsets are uniform over all windows that fit: top ~ U{0..H+2p-h}, left ~ U{0..W+2p-w}.
    The paper trains on random 224x224 patches of the 256x256 images (§4.1).
    """

    def __init__(self, size, padding=0):
        self.size = _pair(size, "size")
        if not _is_int(padding) or padding < 0:
            raise ValueError(f"padding: expected a non-negative int, got {padding!r}")
        self.padding = int(padding)

    def __call__(self, images, rng):
        h_axis, w_axis = _spatial_axes(images)
        _check_rng(rng)
        if self.padding:
            widths = [(0, 0)] * images.ndim
            widths[h_axis] = widths[w_axis] = (self.padding, self.padding)
            images = np.pad(images, widths)
        height, width = _check_fits(images, h_axis, w_axis, self.size)
        n = len(images)
        top = rng.integers(0, images.shape[h_axis] - height + 1, size=n)
        left = rng.integers(0, images.shape[w_axis] - width + 1, size=n)
        return _crop_each(images, h_axis, top, left, height, width)


class RandomHorizontalFlip:
    """Mirror each image left-right with probability p (the paper's reflections, §4.1)."""

    def __init__(self, p=0.5):
        if not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
            raise ValueError(f"p: expected a probability in [0, 1], got {p!r}")
        self.p = float(p)

    def __call__(self, images, rng):
        _, w_axis = _spatial_axes(images)
        _check_rng(rng)
        flip = rng.random(len(images)) < self.p
        out = images.copy()
        out[flip] = np.flip(images[flip], axis=w_axis)  # 2x faster than a broadcast np.where
        return out


class CenterCrop:
    """The central `size` window: top = (H - h) // 2, left = (W - w) // 2."""

    def __init__(self, size):
        self.size = _pair(size, "size")

    def __call__(self, images, rng=None):
        h_axis, w_axis = _spatial_axes(images)
        height, width = _check_fits(images, h_axis, w_axis, self.size)
        top = (images.shape[h_axis] - height) // 2
        left = (images.shape[w_axis] - width) // 2
        return np.ascontiguousarray(_window(images, h_axis, w_axis, top, left, height, width))


class TenCrop:
    """The paper's test-time crops (§4.1): the four corner windows and the centre window,
    then the same five mirrored: (N, ...) -> (10 * N, ...).

    Row 10 * n + k is crop k of image n, with k = 0..4 for top-left, top-right,
    bottom-left, bottom-right, centre, and k + 5 for the mirror of crop k. Average the
    network's predictions over the crops with :func:`average_ten_crops`.
    """

    def __init__(self, size):
        self.size = _pair(size, "size")

    def __call__(self, images, rng=None):
        h_axis, w_axis = _spatial_axes(images)
        height, width = _check_fits(images, h_axis, w_axis, self.size)
        bottom, right = images.shape[h_axis] - height, images.shape[w_axis] - width
        corners = [(0, 0), (0, right), (bottom, 0), (bottom, right), (bottom // 2, right // 2)]
        crop_shape = list(images.shape[1:])
        crop_shape[h_axis - 1], crop_shape[w_axis - 1] = height, width
        crops = np.empty((len(images), 10, *crop_shape), images.dtype)
        for k, (top, left) in enumerate(corners):
            window = _window(images, h_axis, w_axis, top, left, height, width)
            crops[:, k] = window
            crops[:, k + 5] = np.flip(window, axis=w_axis)
        return crops.reshape(-1, *crop_shape)


def average_ten_crops(predictions):
    """Average (10 * N, ...) predictions made on TenCrop's output into (N, ...).

    Works on NumPy and CuPy arrays alike (it only uses array methods).
    """
    if predictions.ndim < 1 or len(predictions) % 10:
        raise ValueError("predictions: expected a leading dimension of 10 * N (TenCrop's"
                         f" layout), got shape {tuple(predictions.shape)}")
    return predictions.reshape((-1, 10) + tuple(predictions.shape[1:])).mean(axis=1)


class ToFloat:
    """uint8 (N, H, W) or (N, H, W, C) -> float32 (N, C, H, W): y = (x / 255 - mean) / std.

    mean and std are scalars or one value per channel; the defaults leave pixels in [0, 1].
    """

    def __init__(self, mean=0.0, std=1.0):
        self.mean = _per_channel(mean, "mean")
        self.std = _per_channel(std, "std")
        if np.any(self.std <= 0):
            raise ValueError(f"std: expected positive values, got {std!r}")

    def __call__(self, images, rng=None):
        y = uint8_to_float32(images)
        channels = y.shape[1]
        mean = _broadcast_channels(self.mean, channels, "mean")
        std = _broadcast_channels(self.std, channels, "std")
        # (x / 255 - mean) / std as one in-place scale and one in-place shift
        y *= (1.0 / (255.0 * std)).astype(np.float32)
        y -= (mean / std).astype(np.float32)
        return y


class Normalize:
    """float (N, C, H, W): y = (x - mean) / std, per channel; the dtype is kept."""

    def __init__(self, mean, std):
        self.mean = _per_channel(mean, "mean")
        self.std = _per_channel(std, "std")
        if np.any(self.std <= 0):
            raise ValueError(f"std: expected positive values, got {std!r}")

    def __call__(self, images, rng=None):
        _check_float_nchw(images)
        channels = images.shape[1]
        mean = _broadcast_channels(self.mean, channels, "mean").astype(images.dtype)
        std = _broadcast_channels(self.std, channels, "std").astype(images.dtype)
        y = np.subtract(images, mean)
        return np.divide(y, std, out=y)  # same rounding as (x - mean) / std, one array less


class PCALighting:
    """The 2012 paper's colour augmentation (§4.1), on float (N, C, H, W) pixels in [0, 1].

    For each image draw alpha_i ~ N(0, alphastd) once, and add to every pixel
    sum_i alpha_i * lambda_i * p_i, where (lambda_i, p_i) are the eigenvalues and
    eigenvectors (the columns of `eigvec`) of the covariance of the dataset's RGB pixels.
    This shifts the intensity along the principal colour directions, which the paper says
    makes the network invariant to the intensity and colour of the illumination.
    The defaults are ImageNet's; :func:`pca_from_images` computes them for another dataset.
    """

    def __init__(self, alphastd=0.1, eigval=IMAGENET_EIGVAL, eigvec=IMAGENET_EIGVEC):
        if not isinstance(alphastd, numbers.Real) or alphastd < 0:
            raise ValueError(f"alphastd: expected a non-negative number, got {alphastd!r}")
        eigval = np.asarray(eigval, dtype=np.float64)
        eigvec = np.asarray(eigvec, dtype=np.float64)
        if eigval.ndim != 1 or eigvec.shape != (len(eigval), len(eigval)):
            raise ValueError(f"eigval, eigvec: expected shapes (C,) and (C, C),"
                             f" got {eigval.shape} and {eigvec.shape}")
        self.alphastd = float(alphastd)
        self.eigval = eigval
        self.eigvec = eigvec

    def __call__(self, images, rng):
        _check_float_nchw(images)
        _check_rng(rng)
        if images.shape[1] != len(self.eigval):
            raise ValueError(f"images: expected {len(self.eigval)} channels to match eigval,"
                             f" got {images.shape[1]}")
        alpha = rng.normal(0.0, self.alphastd, size=(len(images), len(self.eigval)))
        shift = (alpha * self.eigval) @ self.eigvec.T  # (N, C): sum_i alpha_i lambda_i p_i
        return images + shift.astype(images.dtype)[:, :, None, None]


def pca_from_images(images, chunk_pixels=1 << 20):
    """Eigenvalues (C,) descending and eigenvectors (C, C), one per column, of the
    covariance of the pixel colours of `images`, for :class:`PCALighting`.

    images: uint8 channel-last (scaled to [0, 1] first) or float (N, C, H, W) (used as is).
    The covariance is accumulated in float64 over chunks of `chunk_pixels` pixels, so a
    whole training set never needs a float copy. Eigenvector signs are arbitrary, which
    PCALighting does not mind since alpha is symmetric about 0.
    """
    if images.dtype == np.uint8 and images.ndim in (3, 4):
        pixels = images.reshape(-1, 1 if images.ndim == 3 else images.shape[-1])
        scale = 1.0 / 255.0
    else:
        _check_float_nchw(images)
        pixels = images.transpose(0, 2, 3, 1).reshape(-1, images.shape[1])
        scale = 1.0
    if len(pixels) == 0:
        raise ValueError("images: expected at least one pixel, got an empty batch")
    total = np.zeros(pixels.shape[1])
    products = np.zeros((pixels.shape[1], pixels.shape[1]))
    for start in range(0, len(pixels), chunk_pixels):
        chunk = pixels[start:start + chunk_pixels].astype(np.float64) * scale
        total += chunk.sum(axis=0)
        products += chunk.T @ chunk
    mean = total / len(pixels)
    covariance = products / len(pixels) - np.outer(mean, mean)
    eigval, eigvec = np.linalg.eigh(covariance)
    order = np.argsort(eigval)[::-1]
    return np.maximum(eigval[order], 0.0), eigvec[:, order]  # clip rounding below zero


def _spatial_axes(images):
    """(h_axis, w_axis): (1, 2) for uint8 channel-last, (2, 3) for float NCHW."""
    if not isinstance(images, np.ndarray):
        raise TypeError(f"images: expected a NumPy array, got {type(images).__name__}")
    if images.dtype == np.uint8 and images.ndim in (3, 4):
        return 1, 2
    if np.issubdtype(images.dtype, np.floating) and images.ndim == 4:
        return 2, 3
    raise ValueError("images: expected uint8 (N, H, W) or (N, H, W, C), or float"
                     f" (N, C, H, W), got {images.dtype} {images.shape}")


def _check_float_nchw(images):
    if _spatial_axes(images) != (2, 3):
        raise TypeError(f"images: expected float (N, C, H, W), got {images.dtype}"
                        f" {images.shape} (apply ToFloat first)")


def _check_rng(rng):
    if not isinstance(rng, (np.random.Generator, SampleRNG)):
        raise TypeError("rng: expected a numpy.random.Generator or a SampleRNG, got "
                        f"{type(rng).__name__}")


def _check_fits(images, h_axis, w_axis, size):
    height, width = size
    if height > images.shape[h_axis] or width > images.shape[w_axis]:
        raise ValueError(f"size: a {height}x{width} crop does not fit images of"
                         f" {images.shape[h_axis]}x{images.shape[w_axis]}")
    return height, width


def _window(images, h_axis, w_axis, top, left, height, width):
    """The same window of every image, as a view."""
    window = [slice(None)] * images.ndim
    window[h_axis] = slice(top, top + height)
    window[w_axis] = slice(left, left + width)
    return images[tuple(window)]


def _crop_each(images, h_axis, top, left, height, width):
    """A different window per image: image n's starts at (top[n], left[n]).

    sliding_window_view exposes every window without copying, as axes
    (..., top, left, ..., height, width); one fancy index then picks image n's window
    (10x faster than indexing each pixel's row and column).
    """
    windows = sliding_window_view(images, (height, width), axis=(h_axis, h_axis + 1))
    channel_axes = (slice(None),) * (h_axis - 1)  # keeps C of NCHW in place
    crops = windows[(np.arange(len(images)),) + channel_axes + (top, left)]
    if images.ndim == 4 and h_axis == 1:  # NHWC windows come out (N, C, height, width)
        crops = crops.transpose(0, 2, 3, 1)
    return np.ascontiguousarray(crops)


def _pair(size, name):
    """An int or a pair of ints -> (height, width), both positive."""
    pair = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
    if len(pair) != 2 or not all(_is_int(v) and v >= 1 for v in pair):
        raise ValueError(f"{name}: expected a positive int or (height, width), got {size!r}")
    return int(pair[0]), int(pair[1])


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _per_channel(values, name):
    values = np.atleast_1d(np.asarray(values, dtype=np.float64))
    if values.ndim != 1 or len(values) == 0:
        raise ValueError(f"{name}: expected a number or one number per channel, got {values!r}")
    return values


def _broadcast_channels(values, channels, name):
    """Per-channel values as (C, 1, 1) for NCHW arithmetic; a single value serves all."""
    if len(values) not in (1, channels):
        raise ValueError(f"{name}: expected 1 or {channels} values for {channels}-channel"
                         f" images, got {len(values)}")
    return np.broadcast_to(values, (channels,))[:, None, None]
