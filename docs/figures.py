"""Draw the figures of the derivation pages from the reference kernels themselves, so that a
picture cannot drift from the code: every number and arrow below is computed by a call
into tinyalex.kernels.numpy.

    python docs/figures.py [OUT_DIR]        (default: docs/figures/)

- im2col_columns.png (docs/ops/conv2d.md): which input pixel each entry of im2col's
  column matrix holds, the rows c*kh*kw + i*kw + j, the columns oh*OW + ow.
- lrn_window.png (docs/ops/local_response_norm.md): which channels reach y_c, read off
  the nonzero pattern of the LRN backward's Jacobian, for an odd and an even size.
- pool_argmax_routing.png (docs/ops/max_pool2d.md): each window of an overlapping 3/2
  max-pool and the input pixel its gradient is routed to (the saved argmax), with ties.
- model_parallel.png (docs/model-parallel.md): the two columns of alexnet2012 that
  `--model-parallel 2` puts on two ranks, read off tinyalex.train.parallel.model_parallel's
  column models and a forward through them: each rank's layers and weight shapes, and the
  maps the ranks exchange.
"""
import pathlib
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from tinyalex.kernels import numpy as reference

HERE = pathlib.Path(__file__).resolve().parent


def _grid(ax, values, labels, title, cmap="Blues", highlight=None):
    """A table of cells coloured by `values`, each labelled; `highlight` cells outlined."""
    ax.imshow(values, cmap=cmap, vmin=0, vmax=max(1, np.max(values) * 1.6))
    for (r, c), text in np.ndenumerate(labels):
        ax.text(c, r, text, ha="center", va="center", fontsize=7)
    for r, c in highlight or []:
        ax.add_patch(plt.Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, ec="crimson", lw=2))
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def im2col_columns(path):
    """x (1, 2, 3, 4) numbered 1..24 (0 is padding), kernel 2x2, stride 1, padding 1."""
    C, H, W, (kh, kw), padding = 2, 3, 4, (2, 2), (1, 1)
    x = np.arange(1, C * H * W + 1, dtype=np.float64).reshape(1, C, H, W)
    cols = reference.im2col(x, (kh, kw), (1, 1), padding)[0]          # (C*kh*kw, OH*OW)
    OW = W + 2 * padding[1] - kw + 1
    column = 6                                                         # one window: (oh, ow) = (1, 1)
    held = {int(v) for v in cols[:, column] if v}
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), gridspec_kw=dict(width_ratios=[1, 1, 3.2]))
    for c in range(C):
        plane = x[0, c].astype(int)
        marks = [(r, q) for (r, q), v in np.ndenumerate(plane) if v in held]
        _grid(axes[c], plane, plane, f"x[0, {c}]  (pixel ids; padding is 0)", highlight=marks)
    rows = [f"c={r // (kh * kw)} i={r // kw % kh} j={r % kw}" for r in range(cols.shape[0])]
    _grid(axes[2], cols, cols.astype(int),
          f"im2col: cols[0] ({cols.shape[0]} rows c*kh*kw + i*kw + j, {cols.shape[1]} columns"
          f" oh*OW + ow); column {column} = window (oh, ow) = ({column // OW}, {column % OW})",
          highlight=[(r, column) for r in range(cols.shape[0])])
    axes[2].set_yticks(range(len(rows)), rows, fontsize=7)
    axes[2].set_xticks(range(cols.shape[1]), range(cols.shape[1]), fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def lrn_window(path):
    """|dy_c / dx_c'| from lrn_backward at x = 1 (one pixel, C = 8): nonzero exactly where
    c' is in the window of c (or c' = c)."""
    C = 8
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.4))
    for ax, size in zip(axes, (5, 4)):
        x = np.ones((1, C, 1, 1))
        _, cache = reference.lrn_forward(x, size, 0.5, 0.75, 1.0)
        jacobian = np.stack([reference.lrn_backward(np.eye(C)[c].reshape(1, C, 1, 1), cache).ravel()
                             for c in range(C)])                       # row c: d y_c / d x
        reached = np.abs(jacobian) > 1e-12
        _grid(ax, reached.astype(float), np.where(reached, "x", ""),
              f"size={size}: window [c - {size // 2}, c + {(size - 1) // 2}]")
        ax.set_xticks(range(C), [f"c'={c}" for c in range(C)], fontsize=7)
        ax.set_yticks(range(C), [f"y_{c}" for c in range(C)], fontsize=7)
    fig.suptitle("LRN: the input channels c' that each output y_c depends on "
                 "(nonzero dy_c/dx_c', from lrn_backward)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def pool_argmax_routing(path):
    """An overlapping 3/2 max-pool with padding 1 on integer values (ties): an arrow from
    each output cell's window centre to the pixel that receives its gradient."""
    x = np.array([[3, 1, 3, 0, 2, 2],
                  [0, 3, 1, 1, 2, 0],
                  [2, 0, 0, 4, 1, 1],
                  [1, 2, 4, 0, 3, 3],
                  [0, 1, 1, 2, 0, 3]], dtype=np.float64)[None, None]
    y, cache = reference.max_pool2d_forward(x, (3, 3), (2, 2), (1, 1))
    argmax = reference.max_pool2d_indices(cache)[0, 0]
    gx = reference.max_pool2d_backward(np.ones_like(y), cache)[0, 0]    # windows per pixel
    fig, ax = plt.subplots(figsize=(7, 5.8))
    _grid(ax, gx, x[0, 0].astype(int), "max_pool2d 3x3, stride 2, padding 1: each window's "
          "gradient goes to its first maximum\n(ring: a window's centre; arrow: to its argmax;"
          " shade: how many windows route to the pixel)",
          cmap="Oranges")
    W = x.shape[3]
    for (oh, ow), index in np.ndenumerate(argmax):
        centre = (ow * 2, oh * 2)                                      # window centre, unpadded
        target = (index % W, index // W)
        ax.annotate("", xy=target, xytext=centre,
                    arrowprops=dict(arrowstyle="->", color=f"C{(oh * argmax.shape[1] + ow) % 10}", lw=1.5))
        ax.plot(*centre, "o", mfc="none", color=f"C{(oh * argmax.shape[1] + ow) % 10}",
                markersize=14)                                         # a ring: the value stays readable
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


class _RecordedExchange:
    """A column's view of the other ranks for drawing: the allgather returns zeros for the
    others' blocks and records the shape each rank sends (no MPI)."""

    def __init__(self, column, count=2):
        self.column, self.count, self.sent = column, count, []

    def allgather(self, local, sizes):
        self.sent.append(tuple(local.shape[1:]))
        return [local if q == self.column else np.zeros((local.shape[0], sizes[q], *local.shape[2:]), local.dtype)
                for q in range(self.count)]


def _column_rows(model, sent):
    """The rows of one column, top to bottom: ["box", text] for a weight layer and the
    layers after it, ("share", text, backward) where the ranks exchange maps."""
    from tinyalex import nn
    names = {nn.ReLU: "ReLU", nn.LocalResponseNorm: "LRN (own maps)", nn.MaxPool2d: "max-pool 3/2",
             nn.Dropout: "dropout 0.5 (the same mask on both ranks)"}
    reduce = "backward: each sends the other its part of the gradient, both add (reduce-scatter)"
    rows, sent, count, shared = [], iter(sent), {"conv": 0, "fc": 0}, True
    for block in ("features", "classifier"):
        for index, layer in enumerate(getattr(model, block)):
            if index in model.shares[block]:
                shape = "x".join(map(str, next(sent)))
                rows.append(("share", f"allgather: each rank sends its {shape} per image", reduce))
                shared = True
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                kind = "conv" if isinstance(layer, nn.Conv2d) else "fc"
                count[kind] += 1
                name = f"conv{count['conv']}" if kind == "conv" else f"fc{5 + count['fc']}"
                reads = "" if shared else " (own maps only)"
                rows.append(["box", f"{name}{reads}  weight {'x'.join(map(str, layer.weight.shape))}"])
                shared = False
            elif type(layer) in names:
                if rows and rows[-1][0] == "box" and not isinstance(layer, nn.Dropout):
                    rows[-1][1] += ", " + names[type(layer)]
                else:
                    rows.append(["box", names[type(layer)]])
    shape = "x".join(map(str, next(sent)))
    rows.append(("share", f"allgather of the logits: each rank sends its {shape} per image",
                 "backward: each keeps its own columns of the loss gradient (no message)"))
    rows.append(["box", "softmax cross-entropy: the same loss on both ranks"])
    return rows


def model_parallel(path):
    """alexnet2012 (1000 classes) split in two columns: each rank's layers with their
    weight shapes, and the exchanges (forward: allgather; backward: the gradient's
    reduce-scatter), from the column models and one image through them."""
    from tinyalex import random as _random
    from tinyalex.autograd import no_grad
    from tinyalex.tensor import tensor
    from tinyalex.train import models
    from tinyalex.train.parallel import model_parallel as mp
    columns = []
    for c in range(2):
        _random.manual_seed(0)
        exchange = _RecordedExchange(c)
        model = mp.column_model(models.create_model("alexnet2012", 1000, model_parallel=2), exchange)
        model.eval()
        with no_grad():
            model(tensor(np.zeros((1, 3, 227, 227), np.float32)))
        columns.append(_column_rows(model, exchange.sent))
    rows = [("box", "image 3x227x227: both ranks read the same batch")] + columns[0]
    fig, ax = plt.subplots(figsize=(11, 0.62 * len(rows) + 1))
    xs, y = (0.27, 0.73), 0.0
    box = dict(boxstyle="round,pad=0.3", fc="#e8f0fb", ec="#4a6fa5")
    for i, (kind, *_) in enumerate(rows):
        y = -i
        if kind == "box":
            for c, x in enumerate(xs):
                text = rows[i][1] if i == 0 else columns[c][i - 1][1]
                ax.text(x, y, text, ha="center", va="center", fontsize=8, bbox=box)
                if i + 1 < len(rows) and rows[i + 1][0] == "box":
                    ax.annotate("", xy=(x, y - 0.72), xytext=(x, y - 0.28),
                                arrowprops=dict(arrowstyle="->", color="#4a6fa5"))
        else:
            for x in xs:                                               # own maps go on down
                ax.annotate("", xy=(x, y - 0.72), xytext=(x, y + 0.72),
                            arrowprops=dict(arrowstyle="->", color="#4a6fa5"))
            for a, b in ((xs[0], xs[1]), (xs[1], xs[0])):              # and cross to the other rank
                ax.annotate("", xy=(b, y - 0.72), xytext=(a, y + 0.72),
                            arrowprops=dict(arrowstyle="->", color="crimson", lw=1.6))
            ax.text(0.5, y + 0.12, rows[i][1], ha="center", va="bottom", fontsize=8, color="crimson",
                    bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="none"))
            ax.text(0.5, y - 0.12, rows[i][2], ha="center", va="top", fontsize=7, color="crimson",
                    bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="none"))
    for c, x in enumerate(xs):
        ax.text(x, 0.9, f"rank {c}: column {c}", ha="center", va="bottom", fontsize=11, weight="bold")
    ax.set_xlim(0, 1)
    ax.set_ylim(y - 0.6, 1.5)
    ax.axis("off")
    ax.set_title("alexnet2012 in two columns (tinyalex train --model-parallel 2): half of every "
                 "layer per rank; red: the messages", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


FIGURES = {"im2col_columns.png": im2col_columns, "lrn_window.png": lrn_window,
           "pool_argmax_routing.png": pool_argmax_routing, "model_parallel.png": model_parallel}


def main(out_dir=HERE / "figures"):
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, draw in FIGURES.items():
        draw(out_dir / name)
        print(out_dir / name)


if __name__ == "__main__":
    main(*sys.argv[1:])
