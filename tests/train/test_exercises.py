"""The exercises of docs/exercises and `tinyalex exercise check`: each file as shipped reports
its blanks, filled with the reference it passes, and with a planted mistake it fails naming
the op and the first wrong element with its input value; a file filled in trains."""
import pathlib
import re
import textwrap

import numpy as np
import pytest

from tinyalex.train import exercise
from tinyalex.train.cli import main

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXERCISES = ROOT / "docs" / "exercises"
FASHION_MNIST = pathlib.Path("/usr/share/datasets/fashion-mnist")

#: exercise file -> {function: the reference body of its blank}
SOLUTIONS = {
    "relu.py": {"relu_backward": "return np.where(positive, gy, 0)"},
    "linear.py": {"linear_backward": """
        gx = gy @ weight
        gW = gy.T @ x
        gb = gy.sum(axis=0) if has_bias else None
        return gx, gW, gb"""},
    "max_pool2d.py": {"max_pool2d_backward": """
        n = np.arange(N)[:, None, None, None]
        c = np.arange(C)[None, :, None, None]
        gx = np.zeros((N, C, H * W), dtype=gy.dtype)
        np.add.at(gx, (n, c, argmax), gy)
        return gx.reshape(N, C, H, W)"""},
    "cross_entropy.py": {"cross_entropy_backward": """
        if reduction == "mean":
            g = gloss / p.dtype.type(N)
        else:
            g = gloss[:, None] if reduction == "none" else gloss
        onehot = np.zeros_like(p)
        onehot[np.arange(N), target] = 1
        return (p - onehot) * g"""},
    "local_response_norm.py": {"lrn_backward": """
        s_pow = s ** -beta
        t = gy * x * s_pow / s
        t_sum = _channel_window_sum(t, (size - 1) // 2, size // 2)
        return gy * s_pow - (2 * alpha * beta / size) * x * t_sum"""},
    "conv2d.py": {"col2im": """
        cols = cols.reshape(N, C, kh, kw, OH, OW)
        x_pad = np.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=cols.dtype)
        for i in range(kh):
            for j in range(kw):
                x_pad[:, :, i * dh:i * dh + sh * OH:sh, j * dw:j * dw + sw * OW:sw] += cols[:, :, i, j]
        return np.ascontiguousarray(x_pad[:, :, ph:ph + H, pw:pw + W])""",
                  "conv2d_backward": """
        gy_g = gy.reshape(N, G, OC // G, OH * OW)
        cols = im2col(x, (kh, kw), stride, padding, dilation).reshape(N, G, Cg * kh * kw, OH * OW)
        gb = gy.sum(axis=(0, 2, 3)) if has_bias else None
        gW = (gy_g @ cols.transpose(0, 1, 3, 2)).sum(axis=0).reshape(weight.shape)
        if not need_gx:
            return None, gW, gb
        weight_g = weight.reshape(G, OC // G, Cg * kh * kw)
        gcols = (weight_g.transpose(0, 2, 1) @ gy_g).reshape(N, G * Cg * kh * kw, OH * OW)
        return col2im(gcols, x.shape, (kh, kw), stride, padding, dilation), gW, gb"""},
}

#: (exercise file, function, (old, new) in its solution, the op, what the report names)
MISTAKES = [
    ("relu.py", "relu_backward", ("np.where(positive, gy, 0)", "gy"), "relu",      # forgot the mask
     r"wrong at gx\[[\d, ]+\]: x = -"),
    ("linear.py", "linear_backward", ("gy.sum(axis=0)", "gy.mean(axis=0)"), "linear",  # a missing factor
     r"wrong at gb\[0\]: bias = "),
    ("max_pool2d.py", "max_pool2d_backward", ("np.add.at(gx, (n, c, argmax), gy)",  # overlaps dropped
                                              "gx[n, c, argmax] += gy"), "max_pool2d",
     r"wrong at gx\[[\d, ]+\]: x = "),
    ("cross_entropy.py", "cross_entropy_backward", ("gloss / p.dtype.type(N)", "gloss"),  # forgot 1/N
     "cross_entropy", r"wrong at glogits\[[\d, ]+\]: logits = "),
    ("local_response_norm.py", "lrn_backward", ("(t, (size - 1) // 2, size // 2)",   # the forward's window
                                                "(t, size // 2, (size - 1) // 2)"), "local_response_norm",
     r"wrong at gx\[[\d, ]+\]: x = "),
    ("conv2d.py", "col2im", ("] += cols", "] = cols"), "conv2d",                      # overlaps overwritten
     r"col2im: wrong at col2im\(cols\)\[[\d, ]+\]: yours"),
    ("conv2d.py", "conv2d_backward", (".sum(axis=0).reshape", "[0].reshape"), "conv2d",  # only sample 0
     r"conv2d_backward: wrong at gW\[[\d, ]+\]: weight = "),
]


def fill(text, function, body):
    """`text` with the blank of `function` (between its markers) replaced by `body`."""
    start = text.index(f"def {function}(")
    begin = text.index("    # --- your code here ---\n", start)
    end = text.index("    # --- end of your code ---\n", begin) + len("    # --- end of your code ---\n")
    return text[:begin] + textwrap.indent(textwrap.dedent(body).strip("\n"), "    ") + "\n" + text[end:]


def solved(name, change=None):
    """The exercise file `name` with every blank filled by the reference (and `change`, a
    (function, (old, new)) pair, planted in one of them)."""
    text = (EXERCISES / name).read_text()
    for function, body in SOLUTIONS[name].items():
        if change and change[0] == function:
            assert change[1][0] in body
            body = body.replace(*change[1])
        text = fill(text, function, body)
    return text


def check(tmp_path, capsys, text, *options, name="mine.py"):
    path = tmp_path / name
    path.write_text(text)
    status = main(["exercise", "check", str(path), *(options or ("--no-train",))])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def table_row(out, op):
    """The result column of `op` in the final table."""
    table = out.rsplit("\nop ", 1)[1]
    (row,) = [line for line in table.splitlines() if line.split("  ")[0].strip() == op]
    return row[len(op):].strip()


OPS = {"relu.py": "relu", "linear.py": "linear", "max_pool2d.py": "max_pool2d",
       "cross_entropy.py": "cross_entropy", "local_response_norm.py": "local_response_norm",
       "conv2d.py": "conv2d"}


def test_every_exercise_file_has_a_solution_here_and_an_op():
    assert sorted(p.name for p in EXERCISES.glob("*.py")) == sorted(SOLUTIONS) == sorted(OPS)
    assert [e.file for e in exercise.EXERCISES] == list(OPS)
    for name, solution in SOLUTIONS.items():
        (spec,) = [e for e in exercise.EXERCISES if e.file == name]
        assert tuple(solution) == spec.blanks


@pytest.mark.parametrize("name", sorted(OPS))
def test_an_exercise_as_shipped_reports_its_blanks(name, tmp_path, capsys):
    status, out, err = check(tmp_path, capsys, (EXERCISES / name).read_text())
    assert status == exercise.BLANKS_LEFT, out + err
    row = table_row(out, OPS[name])
    assert row.startswith("blank: ") and f"see docs/ops/{OPS[name]}.md#2-backward-step-by-step" in row
    for function in SOLUTIONS[name]:
        assert function in row
    assert "Traceback" not in err


@pytest.mark.parametrize("name", sorted(OPS))
def test_an_exercise_filled_with_the_reference_passes(name, tmp_path, capsys):
    status, out, err = check(tmp_path, capsys, solved(name))
    assert status == 0, out + err
    assert table_row(out, OPS[name]) == "correct"
    assert "finite differences" in out and "FAIL" not in out


@pytest.mark.parametrize("name, function, change, op, report", MISTAKES,
                         ids=[f"{m[0][:-3]}-{m[1]}" for m in MISTAKES])
def test_a_planted_mistake_is_caught_and_named(name, function, change, op, report, tmp_path, capsys):
    status, out, err = check(tmp_path, capsys, solved(name, (function, change)))
    assert status == exercise.WRONG, out + err
    assert re.search(report, table_row(out, op)), table_row(out, op)
    assert "elements wrong)" in table_row(out, op)


def test_col2im_is_graded_while_the_conv_backward_is_still_blank(tmp_path, capsys):
    text = fill((EXERCISES / "conv2d.py").read_text(), "col2im", SOLUTIONS["conv2d.py"]["col2im"])
    status, out, _ = check(tmp_path, capsys, text)
    assert status == exercise.BLANKS_LEFT
    assert table_row(out, "conv2d") == ("blank: conv2d_backward not written yet (see "
                                        "docs/ops/conv2d.md#2-backward-step-by-step); col2im correct")


def test_a_backward_that_raises_is_reported_with_its_line(tmp_path, capsys):
    text = fill((EXERCISES / "relu.py").read_text(), "relu_backward", "return gy * mask")
    status, out, err = check(tmp_path, capsys, text)
    line = text.splitlines().index("    return gy * mask") + 1
    assert status == exercise.WRONG
    assert table_row(out, "relu") == (f"relu_backward raised NameError: name 'mask' is not defined"
                                      f" (line {line} of {tmp_path / 'mine.py'})")


@pytest.mark.parametrize("text, message", [
    ("def relu_forward(x):\n    return x, None\n", "relu_forward without relu_backward"),
    ("import numpy\n", "expected the functions of an exercise"),
    ("def relu_forward(x:\n", "cannot be loaded, expected a Python file of kernel functions: SyntaxError"),
    ("def linear_forward(x, weight, bias):\n    return x, None\n", "linear_forward without linear_backward"),
    ("def linear_forward(x, w, b):\n    pass\n\n\ndef linear_backward(gy, cache):\n    pass\n",
     r"linear_forward\(x, w, b\) differs from the exercise's linear_forward\(x, weight, bias\)"),
])
def test_a_file_that_cannot_be_graded_is_one_line_and_exit_2(text, message, tmp_path, capsys):
    status, out, err = check(tmp_path, capsys, text)
    assert status == 2 and err.startswith("tinyalex exercise: error: ") and err.count("\n") == 1
    assert re.search(message, err), err


def test_a_missing_file_or_data_is_a_usage_error(tmp_path, capsys):
    assert main(["exercise", "check", str(tmp_path / "missing.py"), "--no-train"]) == 2
    assert "expected a Python file of kernel functions" in capsys.readouterr().err
    (tmp_path / "mine.py").write_text(solved("relu.py"))
    assert main(["exercise", "check", str(tmp_path / "mine.py"), "--data-dir", str(tmp_path / "none")]) == 2
    assert "--data-dir: expected a directory holding the Fashion-MNIST files" in capsys.readouterr().err


def test_your_linear_is_the_linear_layer_only_inside_the_block(tmp_path):
    import tinyalex.functional as F
    from tinyalex.kernels.own_sets import load_file
    from tinyalex.tensor import tensor
    (tmp_path / "mine.py").write_text(solved("linear.py"))
    module = load_file(str(tmp_path / "mine.py"))
    before = F.Linear
    x, w = tensor(np.ones((2, 3)), requires_grad=True), tensor(np.ones((4, 3)), requires_grad=True)
    with exercise.your_linear(module):
        assert F.Linear is not before and F.Linear.__name__ == "YourLinear"
        F.linear(x, w).sum().backward()
    assert F.Linear is before
    np.testing.assert_array_equal(x.grad.numpy(), np.full((2, 3), 4.0))


def test_the_max_pool_exercise_forward_is_the_reference_s():
    """The exercise's tap-by-tap forward picks the reference's argmax: first maximum, real
    pixels only, the last NaN, ceil mode."""
    from tinyalex.kernels.numpy import pool
    from tinyalex.kernels.own_sets import load_file
    mine = load_file(str(EXERCISES / "max_pool2d.py"))
    rng = np.random.default_rng(0)
    for _ in range(60):
        x = rng.integers(-2, 2, (2, 2, 7, 6)).astype(np.float32)   # ties everywhere
        x[rng.random(x.shape) < 0.1] = -np.inf
        x[rng.random(x.shape) < 0.03] = np.nan
        geometry = ((3, 2), (2, 2), (1, 1), bool(rng.integers(2)))
        (y, (argmax, _)), (y_ref, cache) = mine.max_pool2d_forward(x, *geometry), pool.max_pool2d_forward(x, *geometry)
        np.testing.assert_array_equal(y, y_ref)
        np.testing.assert_array_equal(argmax, pool.max_pool2d_indices(cache))


def test_the_hints_point_at_sections_that_exist():
    def slug(heading):
        return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
    cited = set()
    for path in EXERCISES.glob("*.py"):
        cited |= set(re.findall(r"docs/ops/(\w+\.md)#([\w-]+)", path.read_text()))
    assert len(cited) == 6, cited
    for page, anchor in cited:
        headings = re.findall(r"^#+ (.*)$", (ROOT / "docs" / "ops" / page).read_text(), flags=re.M)
        assert anchor in {slug(h) for h in headings}, (page, anchor)


@pytest.mark.skipif(not (FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file(),
                    reason="Fashion-MNIST is not installed at /usr/share/datasets/fashion-mnist")
def test_every_exercise_filled_in_grades_and_trains_512_fashion_mnist_images(tmp_path, capsys):
    """One file holding all six exercises, filled in: every op correct, and cpu-alexnet trains
    an epoch of 512 images on the learner's conv, LRN, ReLU, max-pool, linear and loss."""
    text = "\n\n".join(solved(name) for name in OPS)
    status, out, err = check(tmp_path, capsys, text, "--train-images", "512", "--test-images", "512")
    assert status == 0, out + err
    for op in OPS.values():
        assert table_row(out, op) == "correct"
    from tinyalex.kernels import registered
    from tinyalex.kernels.contract import KERNEL_API
    trained_on = registered(f"{tmp_path / 'mine.py'} (filled in)")
    assert set(trained_on.own) == {n for n in KERNEL_API if exercise.kernel_op(n) in OPS.values()} - {"matmul"}
    result = re.fullmatch(r"train loss ([\d.]+), accuracy ([\d.]+); test loss ([\d.]+), accuracy ([\d.]+)",
                          table_row(out, "training"))
    assert result, table_row(out, "training")
    train_loss, _, test_loss, test_acc = map(float, result.groups())
    assert 0 < train_loss < 2.6 and 0 < test_loss < 2.5 and test_acc > 0.1   # learns something: chance is 0.1
