"""--grad-stats: the sampling interval follows the run's length, every panel of
grad_stats.png and grad_hist.png shows data, even for a run of one step; dead units,
histograms and activation gradients are what they say, and a resumed run keeps each
sampled step once."""
import io

import matplotlib.image
import numpy as np
import pytest

import tinyalex as ta
import tinyalex.functional as F
from tinyalex import nn, optim
from tinyalex.train.stats import (HIST_EDGES, PANELS_BOTTOM, GradStats, histogram, histogram_steps,
                                  sampling_interval)


@pytest.mark.parametrize("total_steps, every", [(1, 1), (32, 1), (150, 2), (938, 9), (93800, 938)])
def test_the_interval_gives_about_a_hundred_points_or_every_step(total_steps, every):
    assert sampling_interval(total_steps) == every
    points = -(-total_steps // every)
    assert points == total_steps or 50 <= points <= 200


def colored_pixels_per_panel(png, panels):
    """Pixels of a saturated colour (data lines and markers; axes, grid and text are grey)
    in each of the `panels` equal columns of the figure above the legend."""
    image = matplotlib.image.imread(io.BytesIO(png), format="png")[..., :3]
    top = image[: int(image.shape[0] * (1 - PANELS_BOTTOM))]
    colored = (top.max(axis=-1) - top.min(axis=-1)) > 0.25
    return [int(part.sum()) for part in np.array_split(colored, panels, axis=1)]


@pytest.mark.parametrize("steps", [1, 4])
def test_every_panel_of_the_plot_shows_data(tmp_path, steps):
    ta.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 3))
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    stats = GradStats(model, str(tmp_path / "grad_stats.jsonl"), total_steps=steps)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        x = ta.tensor(rng.standard_normal((8, 1, 6, 6)).astype(np.float32))
        loss = F.cross_entropy(model(x), ta.tensor(rng.integers(0, 3, 8)))
        optimizer.zero_grad()
        loss.backward()
        stats.before_step()
        optimizer.step()
        stats.after_step()
    assert len(stats.samples) == 2 * steps                             # two layers, every step
    png = io.BytesIO()
    stats.plot(png)
    counts = colored_pixels_per_panel(png.getvalue(), 5)
    assert min(counts) > 10, f"a blank panel: coloured pixels per panel {counts}"


# ---------------------------------------------------------------------------- dead units, gradients, histograms

def train_steps(model, stats, batches, micro=None):
    """SGD steps on `batches` (x, y) through the loop's one_step, in micro-batches of `micro`."""
    from tinyalex.train.loop import one_step
    from tinyalex.train.parallel.data_parallel import BatchGradient
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    gradient = BatchGradient(model, micro) if micro else None
    for x, y in batches:
        one_step(model, optimizer, x, y, "cpu", stats, gradient)


def small_model():
    ta.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 6 * 6, 6), nn.ReLU(), nn.Linear(6, 3))


def batches(steps, n=8, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((n, 1, 6, 6)).astype(np.float32), rng.integers(0, 3, n))
            for _ in range(steps)]


def test_dead_units_are_channels_zero_for_every_image_of_the_batch(tmp_path):
    """Conv channels 1 and 3 are dead (bias -5, no weight); channel 2 is zero for the second
    micro-batch's images only, so it is alive; 5 of the Linear's 6 features are dead."""
    model = small_model()
    conv, fc = model[0], model[3]
    conv.weight.array[...] = 0
    conv.bias.array[...] = [1.0, -5.0, 0.0, -5.0]
    conv.weight.array[2, 0, 1, 1] = 1.0                   # channel 2 copies the input
    fc.weight.array[1:] = 0
    fc.bias.array[...] = [10.0, -1, -1, -1, -1, -1]
    x = np.full((8, 1, 6, 6), -1.0, np.float32)           # micro-batch 2: channel 2 all zero
    x[:4] = 1.0                                            # micro-batch 1: channel 2 positive
    stats = GradStats(model, str(tmp_path / "g.jsonl"), total_steps=1, summed_loss=True)
    train_steps(model, stats, [(x, np.zeros(8, np.int64))], micro=4)
    rows = {row["layer"]: row for row in stats.samples}
    assert rows["0"]["dead_frac"] == 0.5
    assert rows["3"]["dead_frac"] == 5 / 6
    assert "dead_frac" not in rows["5"]                   # no ReLU after the output layer


def test_the_histograms_count_every_element(tmp_path):
    values = np.array([0.0, -0.0, 1e-13, -2e-12, 1.5e-12, 3e-7, -0.5, 7.0, 9e3, -2e4, np.inf, np.nan])
    h = histogram(values)
    assert (h["zero"], h["below"], h["above"], h["nonfinite"]) == (2, 1, 1, 2)
    counts = np.asarray(h["counts"])
    assert len(counts) == len(HIST_EDGES) - 1 and counts.sum() == 6
    assert counts[np.searchsorted(HIST_EDGES, 0.5, side="right") - 1] == 1
    model = small_model()
    stats = GradStats(model, str(tmp_path / "g.jsonl"), total_steps=3, summed_loss=True)
    train_steps(model, stats, batches(3), micro=4)         # two micro-batches add their counts
    assert sorted({r["step"] for r in stats.samples if "act_hist" in r}) == [0, 1, 2]
    sizes = {"0": 8 * 4 * 6 * 6, "3": 8 * 6, "5": 8 * 3}   # the elements of each layer's output
    for row in stats.samples:
        for key in ("act_hist", "act_grad_hist"):
            h = row[key]
            assert h["zero"] + h["below"] + sum(h["counts"]) + h["above"] + h["nonfinite"] == sizes[row["layer"]]
        zeros_after_relu = row["act_hist"]["zero"] / sizes[row["layer"]]
        assert zeros_after_relu == pytest.approx(row.get("relu_zero_frac", 0.0), abs=0.3)


def test_histograms_are_recorded_at_a_few_steps_spread_over_the_run():
    assert histogram_steps(1000, 10) == {0, 250, 500, 740, 990}
    assert histogram_steps(3, 1) == {0, 1, 2}
    assert histogram_steps(1, 1) == {0}


def test_activation_gradients_are_per_image_whatever_the_micro_batches(tmp_path):
    """The summed loss of micro-batches and the mean loss of one batch give one gradient per
    image: the same mean |d loss / d output| and norm, which are those of torch-free
    arithmetic on the output layer: d loss_i / d logits_i = softmax - onehot."""
    rows = []
    for micro in (None, 4):
        model = small_model()
        stats = GradStats(model, str(tmp_path / f"g{micro}.jsonl"), total_steps=1, summed_loss=bool(micro))
        data = batches(1)
        train_steps(model, stats, data, micro=micro)
        rows.append({r["layer"]: r for r in stats.samples})
    for layer in ("0", "3", "5"):
        for key in ("act_grad_abs_mean", "act_grad_norm"):
            assert rows[0][layer][key] == pytest.approx(rows[1][layer][key], rel=1e-5), (layer, key)
    model = small_model()
    x, y = data[0]
    logits = model(ta.tensor(x)).array.astype(np.float64)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(y)), y] -= 1
    assert rows[0]["5"]["act_grad_abs_mean"] == pytest.approx(np.abs(p).mean(), rel=1e-5)
    assert rows[0]["5"]["act_grad_norm"] == pytest.approx(np.sqrt((p ** 2).sum(axis=1).mean()), rel=1e-5)


def test_a_resumed_run_keeps_each_sampled_step_once_with_its_histograms(tmp_path):
    """Steps 0-3 written, then a resume from step 2 (rows of steps 2 and 3 redone): the file
    equals that of the run never stopped."""
    data = batches(6)
    model = small_model()
    straight = GradStats(model, str(tmp_path / "straight.jsonl"), total_steps=6)
    train_steps(model, straight, data)
    path = tmp_path / "resumed.jsonl"
    model = small_model()
    first = GradStats(model, str(path), total_steps=6)
    train_steps(model, first, data[:2])
    saved = {k: v.array.copy() for k, v in model.state_dict().items()}
    train_steps(model, first, data[2:4])                   # written, then "killed"
    model = small_model()
    model.load_state_dict(saved)
    second = GradStats(model, str(path), total_steps=6, start_step=2)
    assert [r["step"] for r in second.samples] == [0, 0, 0, 1, 1, 1]
    train_steps(model, second, data[2:])
    assert path.read_text() == (tmp_path / "straight.jsonl").read_text()
    assert sum("act_hist" in r for r in second.samples) == 3 * len(histogram_steps(6, 1))


def test_the_histogram_figure_shows_every_layer(tmp_path):
    model = small_model()
    stats = GradStats(model, str(tmp_path / "g.jsonl"), total_steps=2)
    train_steps(model, stats, batches(2))
    png = io.BytesIO()
    stats.plot_histograms(png)
    image = matplotlib.image.imread(io.BytesIO(png.getvalue()), format="png")[..., :3]
    assert image.shape[:2] == (640, 3 * 260)
    top = image[: int(image.shape[0] * 0.78)]
    colored = (top.max(axis=-1) - top.min(axis=-1)) > 0.25
    counts = [int(part.sum()) for row in np.array_split(colored, 2, axis=0)
              for part in np.array_split(row, 3, axis=1)]
    assert min(counts) > 10, f"a blank panel: coloured pixels per panel {counts}"
