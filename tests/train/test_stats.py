"""--grad-stats: the sampling interval follows the run's length, and every panel of
grad_stats.png shows data, even for a run of one step."""
import io

import matplotlib.image
import numpy as np
import pytest

import tinyalex as ta
import tinyalex.functional as F
from tinyalex import nn, optim
from tinyalex.train.stats import PANELS_BOTTOM, GradStats, sampling_interval


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
    counts = colored_pixels_per_panel(png.getvalue(), 4)
    assert min(counts) > 10, f"a blank panel: coloured pixels per panel {counts}"
