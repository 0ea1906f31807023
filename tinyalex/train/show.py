"""``tinyalex show``: pictures of what a trained network learned.

- :func:`filter_grid`: the first conv layer's filters as a grid of tiles, as in the 2012
  paper's Figure 3. Each filter is normalised to its own min..max (0..255): a 3-channel
  filter is a colour tile (its input channels as R, G, B), a 1-channel one (Fashion-MNIST
  models) a grey one.
- :func:`activation_maps` and :func:`plot_activations`: every conv layer's output maps for one
  image, after the ReLU that follows the layer, a grid per layer beside the input as the
  network sees it.

The command (``tinyalex show filters|activations``, tinyalex/train/cli.py) loads the
checkpoint and writes the PNG atomically.
"""
import io
import math

import numpy as np

from tinyalex import device as _device
from tinyalex import nn

#: A filter tile is scaled up (nearest neighbour) to about this many pixels a side.
FILTER_TILE_PX = 48
#: Pixels between tiles, and their value (white).
GAP_PX = 2
GAP_VALUE = 255
#: At most this many maps of a layer are drawn (the first ones).
MAX_MAPS = 64
#: The activations figure: panels per row, inches per panel, dots per inch.
PANELS_PER_ROW = 3
PANEL_INCHES = (5.0, 5.4)
DPI = 100


def first_conv(model):
    """(name, module) of the model's first Conv2d."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    raise ValueError(f"model: expected a network with a Conv2d layer, got {type(model).__name__} without one")


def grid_columns(count):
    """Tiles per row of a grid of `count`: 8 up to 64 tiles, then 16 (96 filters: 16 x 6)."""
    return max(1, min(count, 8 if count <= 64 else 16))


def filter_scale(kernel_size):
    """The integer scale-up of a kh x kw filter tile: about FILTER_TILE_PX pixels a side."""
    return max(1, FILTER_TILE_PX // max(kernel_size))


def normalised_filters(weights):
    """(OC, C, kh, kw) weights -> uint8 tiles, each filter scaled to its own min..max over all
    its channels: (OC, kh, kw, 3) for C = 3, else (OC, kh, kw) (C = 1; other counts: the
    mean over the channels). A constant filter is mid-grey."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 4:
        raise ValueError(f"weights: expected (out, in, kh, kw), got shape {w.shape}")
    if w.shape[1] != 3:
        w = w.mean(axis=1, keepdims=True)
    low = w.min(axis=(1, 2, 3), keepdims=True)
    span = w.max(axis=(1, 2, 3), keepdims=True) - low
    norm = np.where(span > 0, (w - low) / np.where(span > 0, span, 1.0), 0.5)
    tiles = np.round(norm * 255).astype(np.uint8)
    return tiles.transpose(0, 2, 3, 1) if tiles.shape[1] == 3 else tiles[:, 0]


def tile_grid(tiles, columns, scale=1, gap=GAP_PX, fill=GAP_VALUE):
    """Tiles (n, h, w) or (n, h, w, 3) scaled up `scale` times (nearest) in a grid of
    `columns`, `gap` pixels of `fill` around and between them."""
    tiles = np.asarray(tiles)
    n, h, w = tiles.shape[:3]
    tiles = tiles.repeat(scale, axis=1).repeat(scale, axis=2)
    h, w = h * scale, w * scale
    rows = math.ceil(n / columns)
    grid = np.full((gap + rows * (h + gap), gap + columns * (w + gap)) + tiles.shape[3:], fill,
                   dtype=tiles.dtype)
    for i, tile in enumerate(tiles):
        top, left = tile_origin(i, columns, (h, w), gap)
        grid[top:top + h, left:left + w] = tile
    return grid


def tile_origin(index, columns, tile_shape, gap=GAP_PX):
    """The (top, left) pixel of tile `index` in a tile_grid of `columns`."""
    row, column = divmod(index, columns)
    return gap + row * (tile_shape[0] + gap), gap + column * (tile_shape[1] + gap)


def filter_grid(weights):
    """The filters (OC, C, kh, kw) as one uint8 image (tile_grid of normalised_filters)."""
    tiles = normalised_filters(weights)
    return tile_grid(tiles, grid_columns(len(tiles)), filter_scale(tiles.shape[1:3]))


def png_bytes(image):
    """A uint8 (H, W) or (H, W, 3) array as PNG bytes."""
    from PIL import Image
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(out, format="PNG")
    return out.getvalue()


def activation_maps(model, x):
    """Run `model` on the batch `x` (eval mode, no gradient); returns (logits, layers), layers a
    list of (name, after_relu, maps (C, H, W) of the first image) for every Conv2d: its output
    after the ReLU that follows it (after_relu True), or its own output where none does."""
    from tinyalex.autograd import no_grad
    from tinyalex.tensor import tensor
    found, handles, owner = {}, [], None
    convs = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]

    def keep(name, after_relu):
        def hook(module, args, output):
            found[name] = (after_relu, _device.to_device(output.array[0], "cpu"))
        return hook
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            owner = name if isinstance(module, nn.Conv2d) else None
            if owner:
                handles.append(module.register_forward_hook(keep(name, False)))
        elif isinstance(module, nn.ReLU) and owner is not None:
            handles.append(module.register_forward_hook(keep(owner, True)))
            owner = None      # the first ReLU after a conv is its own
    try:
        with no_grad():
            logits = model(tensor(x))
    finally:
        for handle in handles:
            handle.remove()
    return _device.to_device(logits.array, "cpu"), [(name, *found[name]) for name in convs if name in found]


def activation_figure_size(layers):
    """The activations PNG's (width, height) in pixels for `layers` conv layers."""
    panels = layers + 1
    columns = min(panels, PANELS_PER_ROW)
    rows = math.ceil(panels / columns)
    return round(columns * PANEL_INCHES[0] * DPI), round(rows * PANEL_INCHES[1] * DPI)


def plot_activations(image, layers, title, path):
    """The input `image` (C, H, W as the network sees it) and each layer's maps (a list from
    activation_maps), a grid of at most MAX_MAPS maps a layer on one scale per layer, 0 black
    to the layer's largest value white, as a PNG to `path` (a file name or binary file)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    width, height = activation_figure_size(len(layers))
    columns = min(len(layers) + 1, PANELS_PER_ROW)
    rows = math.ceil((len(layers) + 1) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(width / DPI, height / DPI), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    image = np.asarray(image, dtype=np.float64)
    shown = (image - image.min()) / max(image.max() - image.min(), 1e-12)
    ax = axes[0, 0]
    if shown.shape[0] == 3:
        ax.imshow(shown.transpose(1, 2, 0), interpolation="nearest")
    else:
        ax.imshow(shown[0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title("input, as the network sees it\n"
                 f"{'x'.join(map(str, image.shape))}, after the preprocessing", fontsize=9)
    cmap = plt.get_cmap("gray").with_extremes(bad="#4a6fb5")  # bad: the gaps between maps
    for i, (name, after_relu, maps) in enumerate(layers, start=1):
        ax = axes[divmod(i, columns)]
        maps = np.asarray(maps, dtype=np.float64)
        count = min(len(maps), MAX_MAPS)
        top = float(maps.max()) if maps.size else 0.0
        grid = tile_grid(maps[:count], grid_columns(count), gap=1, fill=np.nan)
        ax.imshow(grid, cmap=cmap, vmin=min(0.0, float(maps.min())), vmax=top if top > 0 else 1.0,
                  interpolation="nearest")
        silent = int((maps.reshape(len(maps), -1).max(axis=1) <= 0).sum())
        ax.set_title(f"{name}: conv output {'x'.join(map(str, maps.shape))}, "
                     f"{'after ReLU' if after_relu else 'no ReLU after it'}\n"
                     f"{'first ' if count < len(maps) else ''}{count} of {len(maps)} maps, "
                     f"black 0 .. white {top:.3g}; {silent} all zero", fontsize=9)
    fig.suptitle(title, fontsize=11, y=1 - 0.12 / (height / DPI), va="top")
    fig.subplots_adjust(left=0.02, right=0.98, top=1 - 0.95 / (height / DPI), bottom=0.02,
                        hspace=0.3, wspace=0.08)
    fig.savefig(path, dpi=DPI, format="png")
    plt.close(fig)
