"""What the repository's tree promises, as numbers: the files a student reads in an
afternoon (the autograd core and the reference kernels), their line budget, and the size
of the whole package. tests/engine/test_layout.py checks them; conftest.py prints them at
the end of every run."""
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "tinyalex"

#: The afternoon: how a Function records the graph and how backward walks it, every op's
#: Function, the kernel contract, and the numpy set's forward/backward pairs. Not in it: the
#: Tensor's torch surface (tensor.py, ops/basic.py), the second conv algorithm
#: (kernels/numpy/conv_winograd.py) and the fast sets.
AFTERNOON_FILES = (
    ["autograd.py", "kernels/contract.py"]
    + [f"ops/{op}.py" for op in ("conv", "pool", "lrn", "relu", "dropout", "linear", "cross_entropy",
                                 "mse_loss", "pad")]
    + [f"kernels/numpy/{op}.py" for op in ("conv", "pool", "lrn", "relu", "dropout", "linear",
                                           "cross_entropy", "mse_loss", "sgd")]
)

#: Lines the afternoon may take: today's ~1330 and room for one more op (a Function of ~20
#: lines, a reference kernel of ~100, its contract entry).
AFTERNOON_BUDGET = 1500


def lines(path):
    with open(path, encoding="utf-8") as f:
        return sum(1 for _ in f)


def afternoon_lines():
    return sum(lines(PACKAGE / name) for name in AFTERNOON_FILES)


def package_lines():
    return sum(lines(p) for p in PACKAGE.rglob("*.py"))
