"""curves.png: a run's curves, drawn with matplotlib.

Three panels share one axis of steps, with the epochs' boundaries marked and named on top:

- loss: the training loss of each row of steps.jsonl (raw, light) and smoothed (an
  exponential moving average, debiased, as TensorBoard's smoothing slider draws it), and
  the test loss after each epoch;
- accuracy: the same for the training accuracy, with the test top-1 and top-5;
- the learning rate of each row (log scale when it spans a decade or more).

A run from before steps.jsonl (no rows) is drawn per epoch instead, one point an epoch.
"""
import numpy as np

#: Curves of up to this many points are drawn unsmoothed; longer ones are averaged over
#: about a thirtieth of their length (smoothing_weight).
SMOOTHING_POINTS = 30
TRAIN_COLOUR, TEST_COLOUR = "tab:blue", "tab:orange"


def smoothing_weight(points):
    """The EMA's weight for a curve of `points` values: 0 (none) up to SMOOTHING_POINTS,
    then 1 - SMOOTHING_POINTS / points (0.9 for 300 rows: a window of about 10 rows, a
    thirtieth of the run), at most 0.98."""
    return min(0.98, max(0.0, 1.0 - SMOOTHING_POINTS / max(points, 1)))


def smooth(values, weight):
    """The debiased exponential moving average of `values`: s_i = weight * s_(i-1) +
    (1 - weight) * v_i from s = 0, divided by 1 - weight^(i+1), so the first values are
    not pulled toward 0."""
    out, last = [], 0.0
    for i, value in enumerate(values):
        last = weight * last + (1 - weight) * value
        out.append(last / (1 - weight ** (i + 1)) if weight else value)
    return out


def plot_curves(history, steps, steps_per_epoch, path):
    """curves.png of `history` (metrics.jsonl's rows) and `steps` (steps.jsonl's), a run of
    `steps_per_epoch` steps an epoch (path: a file name or a binary file); nothing without
    an epoch done."""
    if not history:
        return
    fig = curves_figure(history, steps, steps_per_epoch)
    import matplotlib.pyplot as plt
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)


def curves_figure(history, steps, steps_per_epoch):
    """The matplotlib figure of plot_curves (panels: loss, accuracy, learning rate)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    if steps:
        per_epoch, unit = steps_per_epoch, "step"
        x = [row["step"] for row in steps]
        train = {key: [row[key] for row in steps] for key in ("loss", "acc", "lr")}
    else:  # one point an epoch, at its end
        per_epoch, unit = 1, "epoch"
        x = [m["epoch"] - 1 for m in history]
        train = dict(loss=[m["train_loss"] for m in history], acc=[m["train_acc"] for m in history],
                     lr=[m.get("lr") for m in history])
    epoch_x = [m["epoch"] * per_epoch - 1 for m in history]  # each epoch's last step
    weight = smoothing_weight(len(x))
    fig, (ax_loss, ax_acc, ax_lr) = plt.subplots(3, 1, figsize=(12, 8.5), sharex=True,
                                                 gridspec_kw=dict(height_ratios=[3, 3, 1.4]))
    markers = dict(marker="o", markersize=3) if len(x) <= 30 else {}
    for ax, key, test_key, name in ((ax_loss, "loss", "test_loss", "cross-entropy"),
                                    (ax_acc, "acc", "test_acc", "accuracy")):
        if weight:
            ax.plot(x, train[key], color=TRAIN_COLOUR, alpha=0.3, lw=0.8, label=f"train, each {unit}")
            ax.plot(x, smooth(train[key], weight), color=TRAIN_COLOUR, lw=1.8,
                    label=f"train, smoothed (EMA {weight:.2f})")
        else:
            ax.plot(x, train[key], color=TRAIN_COLOUR, lw=1.5, label=f"train, each {unit}", **markers)
        ax.plot(epoch_x, [m[test_key] for m in history], color=TEST_COLOUR, marker="o", lw=1.5,
                label="test, each epoch")
        ax.set_ylabel(name)
    ax_acc.plot(epoch_x, [m["test_top5"] for m in history], color=TEST_COLOUR, marker=".", ls=":",
                lw=1.2, label="test top-5, each epoch")
    ax_acc.set_ylim(0, 1.02)
    for ax in (ax_loss, ax_acc):  # beside the panel: never over the curves
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    lr_points = [(at, lr) for at, lr in zip(x, train["lr"]) if lr is not None]
    if lr_points:
        ax_lr.step(*zip(*lr_points), where="post", color="tab:green", lw=1.5)
        low, high = min(lr for _, lr in lr_points), max(lr for _, lr in lr_points)
        if high >= 10 * low:
            ax_lr.set_yscale("log")
        else:
            ax_lr.set_ylim(0, high * 1.25)
    ax_lr.set(ylabel="learning rate", xlabel=unit)
    if not steps:
        ax_lr.set_xticks(epoch_x, labels=[str(m["epoch"]) for m in history])
    _mark_epochs(ax_loss, (ax_loss, ax_acc, ax_lr), len(history), per_epoch, x)
    best = max(history, key=lambda m: m["test_acc"])
    every = x[1] - x[0] if steps and len(x) > 1 else None
    rows = (f", {per_epoch} steps an epoch, a row every " + ("step" if every == 1 else f"{every} steps")
            if every else "")
    fig.suptitle(f"{len(history)} epoch{'s' if len(history) > 1 else ''}{rows}: best test accuracy "
                 f"{best['test_acc']:.4f} (epoch {best['epoch']}), last test loss "
                 f"{history[-1]['test_loss']:.4f}", fontsize=11)
    fig.tight_layout()
    return fig


def _mark_epochs(top, axes, epochs, per_epoch, x):
    """Dashed lines between the epochs on every panel, and each epoch's name above the top
    panel, over its steps."""
    for ax in axes:
        for e in range(1, epochs):
            ax.axvline(e * per_epoch - 0.5, color="0.5", ls="--", lw=0.8)
        ax.grid(alpha=0.3)
    left, right = min([-0.5] + x), max(epochs * per_epoch - 0.5, max(x, default=0) + 0.5)
    margin = 0.01 * (right - left)  # the first and last markers show whole
    top.set_xlim(left - margin, right + margin)
    above = top.secondary_xaxis("top")
    above.set_ticks([(e - 0.5) * per_epoch - 0.5 for e in range(1, epochs + 1)],
                    labels=[f"epoch {e}" for e in range(1, epochs + 1)])
    above.tick_params(length=0, labelsize=9)
