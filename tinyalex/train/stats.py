"""Per-layer statistics during training (``tinyalex train --grad-stats``).

Every `every` steps (chosen from the run's length: about TARGET_POINTS samples per run,
every step of a short one), for each Conv2d and Linear layer: the mean and std of its output, the
fraction of zeros after the ReLU that follows it (dead units), the mean and std of its
weight gradient, and the update-to-weight ratio ||dW|| / ||W|| of the SGD step (around
1e-3 is healthy; much larger means the learning rate is too high). Collected with forward
hooks and by reading gradients around ``optimizer.step()``; one JSON object per layer and
sample goes to ``grad_stats.jsonl``.
"""
import json
import os

import numpy as np

from tinyalex import device as _device
from tinyalex import nn

#: Samples per run the interval aims at: a readable curve whatever the run's length.
TARGET_POINTS = 100
#: Lines with at most this many points are drawn with markers: a lone point shows.
MARKERS_UP_TO = 30
#: The panels' lower edge, as a fraction of the figure's height: the legend lives below.
PANELS_BOTTOM = 0.3


def sampling_interval(total_steps, points=TARGET_POINTS):
    """Steps between samples so that `total_steps` give about `points` of them (between half
    and twice as many), and every step when the run is shorter than that."""
    return max(1, round(total_steps / points))


def _host(array):
    return _device.to_device(array, "cpu")


class GradStats:
    """Collects the statistics of `model` into the JSON lines file `path`, every
    sampling_interval(total_steps) steps of a run of `total_steps`.

    A run resumed at step `start_step` (epoch `start_epoch`) keeps the rows of the steps
    before it and drops any later ones (written before a kill, and about to be redone), so
    the file holds each sampled step once and the step numbers run on."""

    def __init__(self, model, path, total_steps, start_step=0, start_epoch=0):
        self.every = sampling_interval(total_steps)
        self.path, self.step, self.epoch = path, start_step, start_epoch
        self.layers = [(name, m) for name, m in model.named_modules()
                       if isinstance(m, (nn.Conv2d, nn.Linear))]
        self.current = {}
        self.weights_before = {}
        owner = None  # each ReLU reports to the last Conv2d/Linear before it
        for name, module in model.named_modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                owner = name
                module.register_forward_hook(self._activation_hook(name))
            elif isinstance(module, nn.ReLU) and owner is not None:
                module.register_forward_hook(self._relu_hook(owner))
        self.samples = _rows_before(path, start_step) if start_step else []
        tmp = os.path.join(os.path.dirname(path), ".tmp-" + os.path.basename(path))
        with open(tmp, "w") as f:  # then renamed: a kill leaves the old rows or the new
            f.writelines(json.dumps(row) + "\n" for row in self.samples)
        os.replace(tmp, path)

    def sampling(self):
        return self.step % self.every == 0

    def _activation_hook(self, name):
        def hook(module, args, output):
            if module.training and self.sampling():
                y = output.array
                self.current.setdefault(name, {}).update(
                    act_mean=float(y.mean()), act_std=float(y.std()))
        return hook

    def _relu_hook(self, owner):
        def hook(module, args, output):
            if module.training and self.sampling():
                self.current.setdefault(owner, {})["relu_zero_frac"] = float((output.array == 0).mean())
        return hook

    def before_step(self):
        """After backward, before the update: gradient statistics and a copy of W."""
        if not self.sampling():
            return
        for name, layer in self.layers:
            g = layer.weight.grad.array
            self.current.setdefault(name, {}).update(grad_mean=float(g.mean()), grad_std=float(g.std()))
            self.weights_before[name] = layer.weight.array.copy()

    def after_step(self):
        """After the update: ||W_new - W_old|| / ||W_old||, then write this sample."""
        if self.sampling():
            with open(self.path, "a") as f:
                for name, layer in self.layers:
                    w_old = self.weights_before.pop(name)
                    ratio = float(np.linalg.norm(_host(layer.weight.array - w_old)) /
                                  max(float(np.linalg.norm(_host(w_old))), 1e-30))
                    row = dict(epoch=self.epoch + 1, step=self.step, layer=name,
                               update_ratio=ratio, **self.current.get(name, {}))
                    self.samples.append(row)
                    f.write(json.dumps(row) + "\n")
            self.current = {}
        self.step += 1

    def end_epoch(self, epoch):
        self.epoch = epoch

    def plot(self, path):
        """Update ratio, gradient std, activation std and dead-ReLU fraction per layer, as
        a PNG (path: a file name or a binary file). One panel each, the layers' legend below
        them; markers when a line has few points."""
        if not self.samples:
            return
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        keys = [("update_ratio", "update / weight", True), ("grad_std", "weight-gradient std", True),
                ("act_std", "activation std", True), ("relu_zero_frac", "zeros after ReLU", False)]
        fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 4.4))
        for ax, (key, title, log) in zip(axes, keys):
            for name, _ in self.layers:
                rows = [r for r in self.samples if r["layer"] == name and key in r]
                if rows:
                    ax.plot([r["step"] for r in rows], [r[key] for r in rows], label=name,
                            marker="o" if len(rows) <= MARKERS_UP_TO else None, markersize=3)
            ax.set(title=title, xlabel="step", yscale="log" if log else "linear")
            ax.grid(alpha=0.3)
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 8), fontsize=7)
        fig.subplots_adjust(left=0.05, right=0.98, top=0.9, bottom=PANELS_BOTTOM, wspace=0.3)
        fig.savefig(path, dpi=100, format="png")
        plt.close(fig)


def _rows_before(path, step):
    """The rows of a grad_stats.jsonl for steps before `step` (none if there is no file)."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    rows = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:  # a line cut short by a kill
            continue
        if row.get("step", step) < step:
            rows.append(row)
    return rows
