"""Per-layer statistics during training (``tinyalex train --grad-stats``).

Every `every` steps (chosen from the run's length: about TARGET_POINTS samples per run,
every step of a short one), for each Conv2d and Linear layer:

- ``act_mean``, ``act_std``: the mean and std of the layer's output (before its ReLU);
- ``relu_zero_frac``: the fraction of zeros after the ReLU that follows it;
- ``dead_frac``: the fraction of dead units, units whose ReLU output is zero for every image
  of the batch (a unit: one channel of a conv output, at every position, or one feature of
  a linear output). Zeros after a ReLU are normal (about half of them); a dead unit passes
  no gradient to its weights, so it stays dead;
- ``grad_mean``, ``grad_std``: the mean and std of its weight gradient;
- ``act_grad_abs_mean`` and ``act_grad_norm``: the mean |d loss / d output| of the layer's
  output (before the ReLU) and the root mean square over the images of its norm
  ||d loss_i / d output_i||, each of one image's own loss (so the batch size does not change
  them). Layer by layer from the output back to the input, the norm is where vanishing
  gradients show (the mean per element also falls with the layer's width: 10 logits against
  25088 values of a 32x28x28 conv output);
- ``update_ratio``: ||dW|| / ||W|| of the SGD step.

At HIST_POINTS of the sampled steps spread over the run (the first and the last among
them), a row also holds ``act_hist`` and ``act_grad_hist``: histograms of |activation|
(after the ReLU where one follows) and of |d loss / d output| (as above), on fixed log10 bins
(:func:`histogram`). Collected with forward hooks, gradient hooks on the layers' outputs
and by reading gradients around ``optimizer.step()``; one JSON object per layer and sample
goes to ``grad_stats.jsonl``. :meth:`GradStats.plot` draws the curves with reference bands
(``grad_stats.png``), :meth:`GradStats.plot_histograms` the histograms (``grad_hist.png``).
"""
import json
import os

import numpy as np

from tinyalex import device as _device
from tinyalex import nn
from tinyalex.train.run_dir import read_rows

#: Samples per run the interval aims at: a readable curve whatever the run's length.
TARGET_POINTS = 100
#: Sampled steps per run that also record histograms (fewer in a shorter run).
HIST_POINTS = 5
#: The histograms' bins: log10|x| from HIST_LOG10[0] to HIST_LOG10[1], HIST_PER_DECADE bins a
#: decade, the same for every layer and step so that they compare.
HIST_LOG10 = (-12, 4)
HIST_PER_DECADE = 4
HIST_EDGES = 10.0 ** np.linspace(*HIST_LOG10, (HIST_LOG10[1] - HIST_LOG10[0]) * HIST_PER_DECADE + 1)
#: Lines with at most this many points are drawn with markers: a lone point shows.
MARKERS_UP_TO = 30
#: The panels' lower edge, as a fraction of the figure's height: the legends live below.
PANELS_BOTTOM = 0.36

#: The reference bands of grad_stats.png: key -> (low, high, what the band means). Light
#: colours, so a band is never mistaken for data.
HEALTHY_BANDS = {
    "update_ratio": (1e-4, 1e-2, "update / weight: around 1e-3 (cs231n's rule of thumb; band "
                                 "1e-4..1e-2). Far above: the learning rate is too high; far "
                                 "below: too low."),
    "act_std": (0.1, 10.0, "activation std: order 1, as He/Xavier init keeps it layer after "
                           "layer for normalised inputs (band 0.1..10, our choice). Shrinking "
                           "toward 0 or growing without end layer after layer is unhealthy."),
}
#: dead_frac above this is drawn in a warning band (our threshold, not a standard: a few dead
#: units are normal; a fifth of a layer dead is lost capacity, often from a too-high lr).
DEAD_WARNING = 0.2
GRADIENT_NOTE = ("||d loss / d output|| per image: no fixed scale; healthy: the layers stay within "
                 "a decade or two of each other. The layers near the input falling decades below "
                 "the last layers' is a vanishing gradient (the per-element mean, act_grad_abs_mean, "
                 "falls with a layer's width anyway).")
GRAD_STD_NOTE = "weight-gradient std: no fixed scale; watch for one layer drifting decades from the rest."
DEAD_NOTE = (f"dead units: a few are normal; above {DEAD_WARNING:g} (shaded, our threshold) the "
             "layer is losing capacity; usually a too-high learning rate.")


def sampling_interval(total_steps, points=TARGET_POINTS):
    """Steps between samples so that `total_steps` give about `points` of them (between half
    and twice as many), and every step when the run is shorter than that."""
    return max(1, round(total_steps / points))


def histogram_steps(total_steps, every, points=HIST_POINTS):
    """The sampled steps (multiples of `every` below `total_steps`) that record histograms:
    `points` of them spread evenly from the first to the last (fewer if there are fewer)."""
    sampled = np.arange(0, max(total_steps, 1), every)
    picks = np.round(np.linspace(0, len(sampled) - 1, min(points, len(sampled)))).astype(int)
    return {int(sampled[i]) for i in picks}


def histogram(array):
    """Counts of |array| on HIST_EDGES: ``zero`` (exactly 0), ``below`` (under the first
    edge), ``counts`` (one per bin), ``above`` (over the last edge), ``nonfinite`` (inf,
    nan); they add up to array.size."""
    a = np.abs(_host(array).ravel().astype(np.float64))
    finite = np.isfinite(a)
    a = a[finite]
    low, high = HIST_EDGES[0], HIST_EDGES[-1]
    inside = a[(a >= low) & (a <= high)]
    return dict(zero=int((a == 0).sum()), below=int(((a > 0) & (a < low)).sum()),
                counts=np.histogram(inside, HIST_EDGES)[0].tolist(), above=int((a > high).sum()),
                nonfinite=int((~finite).sum()))


def add_histograms(h, other):
    """Two histograms of the same bins, added (the micro-batches of one step)."""
    if h is None:
        return other
    return {k: [a + b for a, b in zip(v, other[k])] if k == "counts" else v + other[k] for k, v in h.items()}


def dead_fraction(alive):
    """The fraction of units that are not `alive` (a boolean per unit)."""
    return float(1.0 - np.asarray(alive).mean())


def alive_units(output):
    """Per unit of a ReLU's output (N, C, ...) (a channel, over every image and position, or a
    feature of (N, F)): whether any value is non-zero."""
    y = output != 0
    return _host(y.any(axis=tuple(i for i in range(y.ndim) if i != 1)))


def _host(array):
    return _device.to_device(array, "cpu")


class GradStats:
    """Collects the statistics of `model` into the JSON lines file `path`, every
    sampling_interval(total_steps) steps of a run of `total_steps`.

    summed_loss: True when the backward runs on the batch's summed loss (micro-batches,
    several ranks), False for its mean; the activation gradients are rescaled to each
    image's own loss either way.

    A run resumed at step `start_step` (epoch `start_epoch`) keeps the rows of the steps
    before it and drops any later ones (written before a kill, and about to be redone), so
    the file holds each sampled step once and the step numbers run on."""

    def __init__(self, model, path, total_steps, start_step=0, start_epoch=0, summed_loss=False):
        self.every = sampling_interval(total_steps)
        self.hist_steps = histogram_steps(total_steps, self.every)
        self.path, self.step, self.epoch, self.summed_loss = path, start_step, start_epoch, summed_loss
        self.layers = [(name, m) for name, m in model.named_modules()
                       if isinstance(m, (nn.Conv2d, nn.Linear))]
        self.current = {}
        self.weights_before = {}
        self.with_relu = set()
        owner = None  # each ReLU reports to the last Conv2d/Linear before it
        for name, module in model.named_modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                owner = name
                module.register_forward_hook(self._activation_hook(name))
            elif isinstance(module, nn.ReLU) and owner is not None:
                self.with_relu.add(owner)
                module.register_forward_hook(self._relu_hook(owner))
        self.samples = read_rows(path, before_step=start_step)
        tmp = os.path.join(os.path.dirname(path), ".tmp-" + os.path.basename(path))
        with open(tmp, "w") as f:  # then renamed: a kill leaves the old rows or the new
            f.writelines(json.dumps(row) + "\n" for row in self.samples)
        os.replace(tmp, path)

    def sampling(self):
        return self.step % self.every == 0

    def _entry(self, name):
        return self.current.setdefault(name, {})

    def _activation_hook(self, name):
        def hook(module, args, output):
            if not (module.training and self.sampling()):
                return
            y = output.array
            entry = self._entry(name)
            entry.update(act_mean=float(y.mean()), act_std=float(y.std()))
            if self.step in self.hist_steps and name not in self.with_relu:
                entry["act_hist"] = add_histograms(entry.get("act_hist"), histogram(y))
            if output.requires_grad:
                output.register_hook(self._gradient_hook(name, 1 if self.summed_loss else y.shape[0]))
        return hook

    def _gradient_hook(self, name, scale):
        def hook(grad):
            g = grad.array
            entry = self._entry(name)
            entry["_abs_sum"] = entry.get("_abs_sum", 0.0) + float(abs(g).sum()) * scale
            entry["_count"] = entry.get("_count", 0) + g.size
            squares = (g.reshape(g.shape[0], -1).astype("float64") ** 2).sum()
            entry["_square_sum"] = entry.get("_square_sum", 0.0) + float(squares) * scale ** 2
            entry["_images"] = entry.get("_images", 0) + g.shape[0]
            if self.step in self.hist_steps:
                entry["act_grad_hist"] = add_histograms(entry.get("act_grad_hist"), histogram(g * scale))
        return hook

    def _relu_hook(self, owner):
        def hook(module, args, output):
            if not (module.training and self.sampling()):
                return
            y = output.array
            entry = self._entry(owner)
            entry["relu_zero_frac"] = float((y == 0).mean())
            alive = alive_units(y)
            entry["_alive"] = alive | entry["_alive"] if "_alive" in entry else alive
            if self.step in self.hist_steps:
                entry["act_hist"] = add_histograms(entry.get("act_hist"), histogram(y))
        return hook

    def before_step(self):
        """After backward, before the update: gradient statistics and a copy of W."""
        if not self.sampling():
            return
        for name, layer in self.layers:
            g = layer.weight.grad.array
            self._entry(name).update(grad_mean=float(g.mean()), grad_std=float(g.std()))
            self.weights_before[name] = layer.weight.array.copy()

    def after_step(self):
        """After the update: ||W_new - W_old|| / ||W_old||, then write this sample."""
        if self.sampling():
            with open(self.path, "a") as f:
                for name, layer in self.layers:
                    w_old = self.weights_before.pop(name)
                    ratio = float(np.linalg.norm(_host(layer.weight.array - w_old)) /
                                  max(float(np.linalg.norm(_host(w_old))), 1e-30))
                    entry = self.current.get(name, {})
                    derived = {}
                    if "_alive" in entry:
                        derived["dead_frac"] = dead_fraction(entry["_alive"])
                    if entry.get("_count"):
                        derived["act_grad_abs_mean"] = entry["_abs_sum"] / entry["_count"]
                        derived["act_grad_norm"] = (entry["_square_sum"] / entry["_images"]) ** 0.5
                    row = dict(epoch=self.epoch + 1, step=self.step, layer=name, update_ratio=ratio,
                               **{k: v for k, v in entry.items() if not k.startswith("_")}, **derived)
                    self.samples.append(row)
                    f.write(json.dumps(row) + "\n")
            self.current = {}
        self.step += 1

    def end_epoch(self, epoch):
        self.epoch = epoch

    def plot(self, path):
        """grad_stats.png: update ratio, weight-gradient std, activation std, mean |activation
        gradient| and dead units per layer, one panel each, with reference bands; below
        them the layers' legend and what healthy looks like (path: a file name or a binary
        file). Markers when a line has few points."""
        if not self.samples:
            return
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        keys = [("update_ratio", "update / weight", True), ("grad_std", "weight-gradient std", True),
                ("act_std", "activation std (before ReLU)", True),
                ("act_grad_norm", "||d loss / d output|| per image", True),
                ("dead_frac", "dead units (after ReLU)", False)]
        fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 5.6))
        for ax, (key, title, log) in zip(axes, keys):
            for name, _ in self.layers:
                rows = [r for r in self.samples if r["layer"] == name and key in r]
                if rows:
                    ax.plot([r["step"] for r in rows], [r[key] for r in rows], label=name,
                            marker="o" if len(rows) <= MARKERS_UP_TO else None, markersize=3)
            if key in HEALTHY_BANDS:
                low, high, _ = HEALTHY_BANDS[key]
                ax.axhspan(low, high, color="tab:green", alpha=0.1, lw=0)
                ax.axhline((low * high) ** 0.5, color="grey", ls="--", lw=0.8)
            if key == "dead_frac":
                ax.axhspan(DEAD_WARNING, 1.0, color="tab:red", alpha=0.08, lw=0)
                ax.set_ylim(-0.02, 1.02)
            ax.set(title=title, xlabel="step", yscale="log" if log else "linear")
            ax.title.set_fontsize(10)
            ax.grid(alpha=0.3)
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, 0.2),
                   ncol=min(len(labels), 8), fontsize=7)
        notes = [HEALTHY_BANDS["update_ratio"][2], GRAD_STD_NOTE, HEALTHY_BANDS["act_std"][2],
                 GRADIENT_NOTE, DEAD_NOTE]
        fig.text(0.05, 0.015, "What healthy looks like (green: healthy band, red: warning band):\n"
                 + "\n".join("- " + note for note in notes), fontsize=7.5, va="bottom", color="0.2")
        fig.subplots_adjust(left=0.05, right=0.98, top=0.93, bottom=PANELS_BOTTOM, wspace=0.3)
        fig.savefig(path, dpi=100, format="png")
        plt.close(fig)

    def plot_histograms(self, path):
        """grad_hist.png: for each layer (a column), the histograms of |activation| (top
        row) and of |d loss / d output| per image (bottom row) on log10 bins, one line per
        recorded step from dark (early) to light (late); the share of exact zeros in the
        title. Nothing is written when no step recorded histograms."""
        rows = [r for r in self.samples if "act_hist" in r or "act_grad_hist" in r]
        if not rows:
            return
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        steps = sorted({r["step"] for r in rows})
        colours = plt.get_cmap("viridis")(np.linspace(0, 0.85, len(steps)))
        centres = np.log10(HIST_EDGES[:-1] * HIST_EDGES[1:]) / 2
        names = [name for name, _ in self.layers]
        fig, axes = plt.subplots(2, len(names), figsize=(2.6 * len(names), 6.4), sharex="row",
                                 squeeze=False)
        for column, name in enumerate(names):
            for row_i, (key, what) in enumerate((("act_hist", "|activation|"),
                                                 ("act_grad_hist", "|d loss / d output|"))):
                ax = axes[row_i, column]
                last_zero = None
                for colour, step in zip(colours, steps):
                    found = [r[key] for r in rows if r["step"] == step and r["layer"] == name and key in r]
                    if not found:
                        continue
                    h = found[0]
                    total = h["zero"] + h["below"] + sum(h["counts"]) + h["above"] + h["nonfinite"]
                    epoch = next(r["epoch"] for r in rows if r["step"] == step)
                    ax.plot(centres, np.asarray(h["counts"]) / max(total, 1), color=colour,
                            label=f"step {step} (epoch {epoch})")
                    last_zero = h["zero"] / max(total, 1)
                title = name if row_i == 0 else ""
                if last_zero is not None:
                    title += ("\n" if title else "") + f"zeros {100 * last_zero:.0f}% (last step)"
                ax.set_title(title, fontsize=8)
                ax.set_xlabel(f"log10 {what}", fontsize=8)
                ax.tick_params(labelsize=7)
                ax.grid(alpha=0.3)
            axes[0, 0].set_ylabel("share of the elements")
            axes[1, 0].set_ylabel("share of the elements")
        for row_i, key in enumerate(("act_hist", "act_grad_hist")):  # the bins in use, +- a decade
            used = np.zeros(len(centres), bool)
            for r in rows:
                if key in r:
                    used |= np.asarray(r[key]["counts"]) > 0
            if used.any():
                axes[row_i, 0].set_xlim(centres[used][0] - 1, centres[used][-1] + 1)
        handles, labels = [], []
        for ax in axes.ravel():  # the legend of the panel with the most steps
            h, l = ax.get_legend_handles_labels()
            if len(l) > len(labels):
                handles, labels = h, l
        fig.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, 0.07),
                   ncol=len(labels), fontsize=8)
        fig.text(0.02, 0.01, "Healthy: the activations keep their place and width from step to "
                 "step, and layer to layer; the gradients of the layers overlap within a couple "
                 "of decades. Histograms that slide left, layer after layer toward the input, "
                 "are vanishing gradients; a growing share of zeros is ReLUs going silent.",
                 fontsize=8, color="0.2")
        fig.subplots_adjust(left=0.05, right=0.99, top=0.9, bottom=0.22, hspace=0.55, wspace=0.25)
        fig.savefig(path, dpi=100, format="png")
        plt.close(fig)

