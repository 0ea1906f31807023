"""curves.png: a run's loss and accuracy per epoch, drawn with matplotlib."""


def plot_curves(history, path):
    """Loss and accuracy per epoch, train and test, as a PNG (path: a file name or a binary
    file)."""
    if not history:
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    epochs = [m["epoch"] for m in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for split in ("train", "test"):
        ax_loss.plot(epochs, [m[f"{split}_loss"] for m in history], marker="o", label=split)
        ax_acc.plot(epochs, [m[f"{split}_acc"] for m in history], marker="o", label=split)
    ax_acc.plot(epochs, [m["test_top5"] for m in history], marker=".", linestyle=":", label="test top-5")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.set_xticks(epochs)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)
