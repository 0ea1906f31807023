"""``tinyalex show filters|activations``: the PNGs have the expected size and content, and a
mistake is one line and exit code 2."""
import io

import numpy as np
import pytest
from PIL import Image

import tinyalex as ta
from tinyalex import nn, optim
from tinyalex.train import show
from tinyalex.train.checkpoint import save_checkpoint
from tinyalex.train.cli import main
from tinyalex.train.data.fashion_mnist import FASHION_MNIST_CLASSES
from tinyalex.train.data.run_data import transforms_for
from tinyalex.train.models import cpu_alexnet


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A cpu-alexnet checkpoint whose conv1 weights are known: (path, conv1 weights)."""
    ta.manual_seed(0)
    model = cpu_alexnet()
    weights = np.random.default_rng(1).standard_normal(model.features[0].weight.shape).astype(np.float32)
    weights[3] = 0.25                                   # a constant filter: mid-grey
    model.features[0].weight.array[...] = weights
    path = tmp_path_factory.mktemp("show") / "best.npz"
    meta = dict(config=dict(model="cpu-alexnet"), classes=list(FASHION_MNIST_CLASSES))
    save_checkpoint(str(path), model, optim.SGD(model.parameters(), lr=0.1), None, meta)
    return path, weights


def read_png(path):
    with Image.open(path) as image:
        return np.asarray(image)


def test_the_filter_grid_shows_each_normalised_filter_in_its_tile(checkpoint, tmp_path, capsys):
    path, weights = checkpoint
    out = tmp_path / "filters.png"
    assert main(["show", "filters", "--checkpoint", str(path), "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert f"wrote {out}" in said and "features.0" in said and "32x1x5x5" in said
    image = read_png(out)
    scale = show.filter_scale((5, 5))                   # 9: 45 px tiles
    tile = 5 * scale
    columns, rows = 8, 4                                # 32 filters
    gap = show.GAP_PX
    assert image.shape == (gap + rows * (tile + gap), gap + columns * (tile + gap))
    for i in (0, 3, 13, 31):
        w = weights[i, 0].astype(np.float64)
        span = w.max() - w.min()
        expected = np.round((w - w.min()) / span * 255) if span else np.full((5, 5), 128)
        top, left = show.tile_origin(i, columns, (tile, tile))
        got = image[top:top + tile, left:left + tile]
        np.testing.assert_array_equal(got, np.kron(expected, np.ones((scale, scale))), err_msg=f"tile {i}")
    assert (image[:gap] == show.GAP_VALUE).all() and (image[:, :gap] == show.GAP_VALUE).all()


def test_default_out_is_beside_the_checkpoint(checkpoint, tmp_path, capsys):
    path, _ = checkpoint
    copy = tmp_path / "run" / "best.npz"
    copy.parent.mkdir()
    copy.write_bytes(path.read_bytes())
    assert main(["show", "filters", "--checkpoint", str(copy)]) == 0
    assert (tmp_path / "run" / "filters.png").read_bytes().startswith(b"\x89PNG")


def test_rgb_filters_are_colour_tiles_normalised_over_all_three_channels():
    weights = np.random.default_rng(2).standard_normal((96, 3, 11, 11))
    image = show.filter_grid(weights)
    scale, columns = show.filter_scale((11, 11)), show.grid_columns(96)
    assert (scale, columns) == (4, 16)
    tile = 11 * scale
    assert image.shape == (2 + 6 * (tile + 2), 2 + 16 * (tile + 2), 3) and image.dtype == np.uint8
    w = weights[37]
    expected = np.round((w - w.min()) / (w.max() - w.min()) * 255).transpose(1, 2, 0)
    top, left = show.tile_origin(37, columns, (tile, tile))
    np.testing.assert_array_equal(image[top:top + tile:scale, left:left + tile:scale], expected)
    # one scale for the filter's three channels, not one each: only one channel reaches 255
    assert (expected == 255).sum() == 1 and (expected == 0).sum() == 1


def test_activations_show_every_conv_layer_after_its_relu(checkpoint, tmp_path, capsys):
    path, _ = checkpoint
    picture = tmp_path / "shirt.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(picture)
    out = tmp_path / "acts.png"
    assert main(["show", "activations", str(picture), "--checkpoint", str(path), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"wrote {out}"
    assert lines[1:] == ["features.0: 32x28x28 maps after ReLU, 32 shown",
                         "features.4: 64x13x13 maps after ReLU, 64 shown",
                         "features.8: 96x6x6 maps after ReLU, 64 shown",
                         "features.10: 96x6x6 maps after ReLU, 64 shown",
                         "features.12: 64x6x6 maps after ReLU, 64 shown"]
    image = read_png(out)
    width, height = show.activation_figure_size(5)
    assert (width, height) == (1500, 1080) and image.shape[:2] == (height, width)


def test_activation_maps_are_the_relu_of_each_conv_output():
    ta.manual_seed(0)
    model = cpu_alexnet().eval()
    images = np.random.default_rng(4).integers(0, 255, (2, 28, 28), dtype=np.uint8)
    x = transforms_for("cpu-alexnet", train=False)(images, np.random.default_rng(0))
    logits, layers = show.activation_maps(model, x)
    assert [name for name, _, _ in layers] == ["features.0", "features.4", "features.8", "features.10",
                                               "features.12"]
    assert logits.shape == (2, 10) and all(after for _, after, _ in layers)
    conv1 = model.features[0](ta.tensor(x)).array[0]
    np.testing.assert_array_equal(layers[0][2], np.maximum(conv1, 0))
    assert not model.features[0]._forward_hooks                  # the hooks are removed


def test_a_conv_without_a_relu_shows_its_own_output():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 3), nn.ReLU())
    _, layers = show.activation_maps(model, np.ones((1, 1, 7, 7), np.float32))
    assert [(name, after) for name, after, _ in layers] == [("0", False), ("1", True)]


@pytest.mark.parametrize("case", ["no checkpoint", "not an image", "unwritable out"])
def test_a_mistake_is_one_line_and_exit_code_2(checkpoint, tmp_path, capsys, case):
    path, _ = checkpoint
    image = tmp_path / "photo.png"
    image.write_bytes(b"plain text, not an image\n")
    if case == "no checkpoint":
        argv = ["show", "filters", "--checkpoint", str(tmp_path / "missing.npz")]
        words = ["checkpoint:", "missing.npz does not exist", "expected a .npz file"]
    elif case == "not an image":
        argv = ["show", "activations", str(image), "--checkpoint", str(path)]
        words = [f"activations: {image}: cannot read the image, expected an image file"]
    else:
        argv = ["show", "filters", "--checkpoint", str(path), "--out", str(tmp_path / "no" / "f.png")]
        words = ["--out", "cannot write the PNG, expected a writable path", "No such file"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("tinyalex show: error: "), captured.err
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not list(tmp_path.glob("*.png.*")) and "wrote" not in captured.out
