"""``tinyalex exercise check FILE``: grade a learner's backward functions (docs/exercises).

An exercise file is a kernel set (tinyalex.register_kernels): one op's forward, given, and
its backward, left as a marked blank, ``raise NotImplementedError("exercise: ...")``. The
linear exercise is the exception: the contract's linear kernel is a GEMM (``matmul``), so
its file holds the layer's own pair, ``linear_forward`` and ``linear_backward``, which the
check runs as the autograd Function of every linear layer (:func:`your_linear`).

For each op the file defines, :func:`check`:

1. registers the file (a mistake against the contract is one line, exit 2);
2. reports a function still blank as not done yet: that op keeps the reference's kernels;
3. compares each function written with the numpy reference on gradcheck's inputs
   (tinyalex/train/opcheck.py's case for the op) and a random gy, element by element, and
   names the first wrong element (row-major) with the input value there;
4. runs the op's gradcheck on the file's kernels: float64 finite differences, then torch
   when it is installed;
5. trains cpu-alexnet for one epoch on 512 Fashion-MNIST images with every op filled in;

and ends with a table, op by op: correct, wrong (where), or blank. Exit status: 0 when
every op is filled in and correct, 1 when one is wrong (or the training run failed), 3
when none is wrong but some are still blank.
"""
import contextlib
import dataclasses
import inspect
import os
import tempfile
import traceback
import types

import numpy as np

from tinyalex.errors import TrainingError

#: What a blank still holds (the learner replaces it).
BLANK = 'NotImplementedError("exercise:'
#: Where the derivation of each op's backward is.
PAGE = "docs/ops/{op}.md#2-backward-step-by-step"
#: Exit statuses beside 0 (correct) and 2 (a usage error).
WRONG, BLANKS_LEFT = 1, 3
#: Kernel functions whose op (the opcheck case) is not their prefix.
KERNEL_OPS = {"im2col": "conv2d", "col2im": "conv2d", "lrn": "local_response_norm", "matmul": "linear"}
#: Gradient names, by the input they belong to.
GRAD_NAMES = {"x": "gx", "weight": "gW", "bias": "gb", "logits": "glogits"}


@dataclasses.dataclass(frozen=True)
class Exercise:
    """One exercise: the op (its opcheck case and docs/ops page), the file's functions and how
    to call them on the case's inputs."""
    op: str
    file: str                 # docs/exercises/FILE
    forward: str
    backward: str
    given: tuple              # the file's functions that come written
    blanks: tuple             # the functions the learner writes, in the order to write them
    call: object              # the case's inputs -> forward's arguments
    grads: tuple = ("x",)     # the inputs whose gradients backward returns, in order
    backward_extra: tuple = ()

    @property
    def functions(self):
        return self.given + self.blanks


#: The exercises in the order docs/exercises/README.md suggests doing them.
EXERCISES = (
    Exercise("relu", "relu.py", "relu_forward", "relu_backward", ("relu_forward",), ("relu_backward",),
             lambda x: (x,)),
    Exercise("linear", "linear.py", "linear_forward", "linear_backward", ("linear_forward",),
             ("linear_backward",), lambda x, w, b: (x, w, b), grads=("x", "weight", "bias")),
    Exercise("max_pool2d", "max_pool2d.py", "max_pool2d_forward", "max_pool2d_backward",
             ("max_pool2d_forward", "max_pool2d_indices"), ("max_pool2d_backward",),
             lambda x: (x, (3, 3), (2, 2), (1, 1), False)),
    Exercise("cross_entropy", "cross_entropy.py", "cross_entropy_forward", "cross_entropy_backward",
             ("cross_entropy_forward",), ("cross_entropy_backward",), lambda z, t: (z, t, "mean"),
             grads=("logits",)),
    Exercise("local_response_norm", "local_response_norm.py", "lrn_forward", "lrn_backward",
             ("lrn_forward",), ("lrn_backward",), lambda x: (x, 4, 0.5, 0.75, 1.0)),
    Exercise("conv2d", "conv2d.py", "conv2d_forward", "conv2d_backward", ("im2col", "conv2d_forward"),
             ("col2im", "conv2d_backward"), lambda x, w, b: (x, w, b, (2, 1), (1, 1), 2, (1, 1)),
             grads=("x", "weight", "bias"), backward_extra=(True,)),
)


# --- the linear layer's pair ------------------------------------------------------------------

def _linear_forward(x, weight, bias):
    y = x @ weight.T
    return (y if bias is None else y + bias), (x, weight, bias is not None)


def _linear_backward(gy, cache):
    x, weight, has_bias = cache
    return gy @ weight, gy.T @ x, gy.sum(axis=0) if has_bias else None


#: The linear exercise's reference: tinyalex/ops/linear.py's Linear as a kernel pair.
LINEAR_REFERENCE = types.SimpleNamespace(linear_forward=_linear_forward, linear_backward=_linear_backward)


@contextlib.contextmanager
def your_linear(module):
    """Inside the block every linear layer (tinyalex.functional.linear) runs `module`'s
    linear_forward and linear_backward as its autograd Function."""
    from tinyalex import functional
    from tinyalex.autograd import Function

    class YourLinear(Function):
        @staticmethod
        def forward(x, weight, bias=None):
            return module.linear_forward(x, weight, bias)

        @staticmethod
        def backward(gy, cache, needs_input_grad):
            return tuple(module.linear_backward(gy, cache))[:len(needs_input_grad)]

    saved, functional.Linear = functional.Linear, YourLinear
    try:
        yield
    finally:
        functional.Linear = saved


# --- reading the file -------------------------------------------------------------------------

def _load(path):
    """The learner's module, registered as the kernel set `path`; a mistake is a TrainingError."""
    from tinyalex.kernels import register_kernels
    from tinyalex.kernels.own_sets import load_file, read_file
    try:
        read_file(path)
    except ValueError as exc:
        raise TrainingError(str(exc)) from exc
    try:
        module = load_file(path)
    except Exception as exc:                                       # the learner's file, any error
        raise TrainingError(f"{path}: cannot be loaded, expected a Python file of kernel functions:"
                            f" {type(exc).__name__}: {exc}{_where(exc, path)}") from exc
    try:
        register_kernels(path, module, base=getattr(module, "BASE", "numpy"))
    except ValueError as exc:
        raise TrainingError(str(exc)) from exc
    signatures = {"linear_forward": "(x, weight, bias)", "linear_backward": "(gy, cache)"}
    present = [n for n in signatures if callable(getattr(module, n, None))]
    if len(present) == 1:
        missing = next(n for n in signatures if n not in present)
        raise TrainingError(f"{path}: {present[0]} without {missing}: the linear exercise's pair"
                            " shares a cache, so define both")
    for name in present:
        given = str(inspect.signature(getattr(module, name)))
        if given != signatures[name]:
            raise TrainingError(f"{path}: {name}{given} differs from the exercise's {name}{signatures[name]}")
    return module


def _where(exc, path):
    """', line N of PATH' for the deepest frame of `exc`'s traceback in the learner's file."""
    lines = [f.lineno for f in traceback.extract_tb(exc.__traceback__)
             if os.path.abspath(f.filename) == os.path.abspath(path)]
    if isinstance(exc, SyntaxError) and exc.lineno and not lines:
        lines = [exc.lineno]
    return f" (line {lines[-1]} of {path})" if lines else ""


def is_blank(function):
    """True if `function` still raises the exercise's NotImplementedError."""
    try:
        return BLANK in inspect.getsource(function)
    except (OSError, TypeError):
        return False


def kernel_op(name):
    """The op (opcheck case) of contract function `name`, None for those beside the ops."""
    from tinyalex.kernels.contract import KERNEL_API
    if name not in KERNEL_API:
        return None
    base = name
    for suffix in ("_forward", "_backward", "_indices"):
        base = base[:-len(suffix)] if base.endswith(suffix) else base
    return KERNEL_OPS.get(base, base)


# --- comparing with the reference --------------------------------------------------------------

def _case(op):
    from tinyalex.train import opcheck
    return next(case for case in opcheck.CASES if case.op == op)


def _first_wrong(label, yours, expected, at=None):
    """None if `yours` matches `expected`, else a phrase naming the first wrong element
    (row-major) and, where `at` = (name, array) has the gradient's shape, the input there."""
    if expected is None or yours is None:
        return None if yours is expected else (
            f"{label} is None, expected an array of shape {expected.shape}" if yours is None
            else f"{label} is an array, expected None")
    yours = np.asarray(yours)
    if yours.shape != expected.shape:
        return f"{label} has shape {yours.shape}, expected {expected.shape}"
    if yours.dtype != expected.dtype:
        return f"{label} has dtype {yours.dtype}, expected {expected.dtype}"
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    close = np.isclose(yours, expected, rtol=1e-6, atol=1e-9 * scale)
    if close.all():
        return None
    wrong = np.argwhere(~close)
    index = tuple(int(i) for i in wrong[0])
    value = f"{at[0]} = {at[1][index]:.6g}, " if at is not None and at[1].shape == yours.shape else ""
    return (f"wrong at {label}[{', '.join(map(str, index))}]: {value}yours {yours[index]:.6g},"
            f" expected {expected[index]:.6g} ({len(wrong)} of {yours.size} elements wrong)")


def _run(what, path, function, *args):
    """function(*args), or raise _Raised naming `what` and the line of the learner's file."""
    try:
        return function(*args)
    except Exception as exc:                                       # the learner's code, any error
        raise _Raised(f"{what} raised {type(exc).__name__}: {' '.join(str(exc).split())}"
                      f"{_where(exc, path)}") from exc


class _Raised(Exception):
    """The learner's function raised; the message says which and where."""


def compare(exercise, function, module, path):
    """None if the learner's `function` (one of exercise.blanks) agrees with the reference on
    the op's gradcheck inputs, else a phrase saying where it does not."""
    import tinyalex.kernels.numpy as numpy_set
    reference = LINEAR_REFERENCE if exercise.op == "linear" else numpy_set
    rng = np.random.default_rng(0)
    inputs = [np.asarray(a) for a in _case(exercise.op).make_inputs(rng)]
    args = exercise.call(*inputs)
    try:
        if function == "col2im":                                   # graded alone: the adjoint of im2col
            x, weight, _, stride, padding, _, dilation = args
            geometry = (x.shape, weight.shape[2:], stride, padding, dilation)
            cols = rng.standard_normal(reference.im2col(x, *geometry[1:]).shape)
            yours = _run("col2im", path, module.col2im, cols.copy(), *geometry)
            return _first_wrong("col2im(cols)", yours, reference.col2im(cols, *geometry))
        y, cache = _run(exercise.forward, path, getattr(module, exercise.forward), *args)
        y_ref, cache_ref = getattr(reference, exercise.forward)(*args)
        problem = _first_wrong("y", y, y_ref)
        if problem:
            return f"{exercise.forward} (given) is changed: {problem}; start again from {exercise.file}"
        gy = np.asarray(rng.standard_normal(np.shape(y_ref)))
        yours = _run(exercise.backward, path, getattr(module, exercise.backward), gy.copy(), cache,
                     *exercise.backward_extra)
    except _Raised as raised:
        return str(raised)
    expected = getattr(reference, exercise.backward)(gy, cache_ref, *exercise.backward_extra)
    several = len(exercise.grads) > 1
    if several and (not isinstance(yours, (tuple, list)) or len(yours) != len(expected)):
        return f"{exercise.backward} returns {type(yours).__name__}, expected a tuple of {len(expected)}" \
               f" ({', '.join(GRAD_NAMES[g] for g in exercise.grads)})"
    yours, expected = (tuple(yours), tuple(expected)) if several else ((yours,), (expected,))
    floats = [a for a in inputs if a.dtype.kind == "f"]
    for name, mine, ref, value in zip(exercise.grads, yours, expected, floats):
        problem = _first_wrong(GRAD_NAMES[name], mine, ref, (name, value))
        if problem:
            return problem
    return None


# --- the check ---------------------------------------------------------------------------------

@dataclasses.dataclass
class Grade:
    op: str
    blanks: list = dataclasses.field(default_factory=list)   # functions not written yet
    problems: list = dataclasses.field(default_factory=list)  # what is wrong, one phrase each
    graded: list = dataclasses.field(default_factory=list)    # functions compared and correct

    def result(self):
        if self.blanks:
            done = [f"{f} correct" for f in self.graded] + self.problems
            return (f"blank: {', '.join(self.blanks)} not written yet (see {PAGE.format(op=self.op)})"
                    + (f"; {'; '.join(done)}" if done else ""))
        return self.problems[0] if self.problems else "correct"


def _gradcheck(path, op, kernel_set, linear_module, log):
    """opcheck's case for `op` on `kernel_set` (float64 finite differences, then torch), the
    linear layers running `linear_module`'s pair unless it is None: None if it passes, else
    a phrase saying what failed or raised."""
    from tinyalex.train import opcheck
    context = contextlib.nullcontext() if linear_module is None else your_linear(linear_module)
    try:
        with context:
            results = opcheck.check_case(_case(op), kernel_set, np.float64)
    except Exception as exc:                                       # the learner's code, any error
        return f"gradcheck raised {type(exc).__name__}: {' '.join(str(exc).split())}{_where(exc, path)}"
    log("  gradcheck (float64):")
    for line in opcheck.format_table(results).splitlines():
        log("    " + line)
    failed = [r for r in results if not r.passed]
    return (None if not failed else "gradcheck failed: " + ", ".join(
        f"{r.check} (max rel err {r.max_rel_error:.2e})" for r in failed))


def _grade_op(path, module, op, functions, exercise, log):
    """The Grade of one op whose `functions` the file defines: blanks, the comparison of each
    function written with the reference, then gradcheck on the op's kernels of the file."""
    from tinyalex.kernels import register_kernels
    grade = Grade(op, blanks=[f for f in functions if is_blank(getattr(module, f))])
    log(f"\n{op}: {', '.join(functions)}" + (f" ({', '.join(grade.blanks)} not written yet)"
                                             if grade.blanks else ""))
    for function in exercise.blanks if exercise else ():
        # col2im stands alone; a backward waits for every blank of its op
        if function in functions and function not in grade.blanks and (function == "col2im" or not grade.blanks):
            problem = compare(exercise, function, module, path)
            log(f"  {function} against the reference, element by element: {problem or 'correct'}")
            if problem:
                grade.problems.append((f"{function}: " if len(exercise.blanks) > 1 else "") + problem)
            else:
                grade.graded.append(function)
    if not grade.blanks:
        kernels = {f: getattr(module, f) for f in functions if not f.startswith("linear_")}
        register_kernels(f"{path} ({op})", types.SimpleNamespace(**kernels), base=getattr(module, "BASE", "numpy"))
        linear = module if exercise is not None and exercise.op == "linear" else None
        problem = _gradcheck(path, op, f"{path} ({op})", linear, log)
        if problem:
            log(f"  {problem}")
            if not grade.problems:
                grade.problems.append(problem)
    return grade


def _grade(path, module, log):
    """[(label, Grade)] for every op the file defines."""
    from tinyalex.kernels.contract import SET_API, WINOGRAD_API
    defined = [n for n in {**SET_API, **WINOGRAD_API} if callable(getattr(module, n, None))]
    exercises = [e for e in EXERCISES if any(callable(getattr(module, f, None)) for f in e.functions)]
    covered = {f for e in exercises for f in e.functions}
    others = list(dict.fromkeys(kernel_op(n) for n in defined if n not in covered and kernel_op(n)))
    beside = [n for n in defined if kernel_op(n) is None]
    if not exercises and not others:
        raise TrainingError(f"{path}: expected the functions of an exercise (docs/exercises: relu_forward"
                            " and relu_backward, ...), got none")
    if beside:
        log(f"not graded (no gradcheck case): {', '.join(beside)}")
    grades = []
    for exercise in exercises:
        functions = [f for f in exercise.functions if callable(getattr(module, f, None))]
        grades.append((exercise.op, _grade_op(path, module, exercise.op, functions, exercise, log)))
    for op in others:
        functions = [n for n in defined if kernel_op(n) == op and n not in covered]
        label = op + (" (matmul)" if op == "linear" else "")
        grades.append((label, _grade_op(path, module, op, functions, None, log)))
    return grades


def check(path, train=True, train_images=512, test_images=512, data_dir=None, log=print):
    """Grade the exercise file `path` (see the module docstring); returns the exit status.
    A usage error (no such file, a mistake against the contract, no data) is a TrainingError."""
    from tinyalex.kernels import register_kernels
    from tinyalex.kernels.contract import SET_API
    from tinyalex.train.data.fashion_mnist import DEFAULT_FASHION_MNIST_DIR
    if train and not os.path.isdir(data_dir or DEFAULT_FASHION_MNIST_DIR):
        raise TrainingError(f"--data-dir: expected a directory holding the Fashion-MNIST files, got"
                            f" {data_dir or DEFAULT_FASHION_MNIST_DIR!r}, which is not one (or pass --no-train)")
    module = _load(path)
    log(f"tinyalex exercise check {path}")
    grades = _grade(path, module, log)
    done = {label for label, grade in grades if not grade.blanks}
    filled = {n: getattr(module, n) for n in SET_API if callable(getattr(module, n, None))
              and ({kernel_op(n), "linear (matmul)" if n == "matmul" else None} & done)}
    linear = "linear" in done and callable(getattr(module, "linear_backward", None))
    trained = None
    if train and (filled or linear):
        register_kernels(f"{path} (filled in)", types.SimpleNamespace(**filled),
                         base=getattr(module, "BASE", "numpy"))
        trained = _train(path, f"{path} (filled in)", module if linear else None, train_images, test_images,
                         data_dir, log)
    elif train:
        log("\ntraining: skipped, nothing is filled in yet")
    _table([(label, grade.result()) for label, grade in grades]
           + ([("training", trained)] if trained else []), log)
    if any(grade.problems for _, grade in grades) or (trained or "").startswith("failed"):
        return WRONG
    return BLANKS_LEFT if any(grade.blanks for _, grade in grades) else 0


def _train(path, kernel_set, linear_module, train_images, test_images, data_dir, log):
    """One epoch of cpu-alexnet on `train_images` Fashion-MNIST images with `kernel_set`;
    a phrase with the result."""
    from tinyalex.kernels import use_kernels
    from tinyalex.train.config import TrainConfig
    from tinyalex.train.loop import train
    log(f"\ntraining cpu-alexnet for 1 epoch on {train_images} Fashion-MNIST images with your kernels"
        f" (the rest from the reference), testing on {test_images}:")
    with tempfile.TemporaryDirectory(prefix="tinyalex-exercise-") as out:
        config = TrainConfig(model="cpu-alexnet", dataset="fashion-mnist", data_dir=data_dir, epochs=1,
                             device="cpu", out=out, limit_train=train_images, limit_test=test_images)
        context = your_linear(linear_module) if linear_module is not None else contextlib.nullcontext()
        try:
            with use_kernels(kernel_set), context:
                (metrics,) = train(config, log=lambda line: log("  " + line))
        except TrainingError as exc:                               # diverged: say where, not the run's advice
            return f"failed: {' '.join(str(exc).split(';')[0].split())}"
        except Exception as exc:                                   # the learner's kernels, any error
            return f"failed: {type(exc).__name__}: {' '.join(str(exc).split())}{_where(exc, path)}"
    return (f"train loss {metrics['train_loss']:.4f}, accuracy {metrics['train_acc']:.4f};"
            f" test loss {metrics['test_loss']:.4f}, accuracy {metrics['test_acc']:.4f}")


def _table(rows, log):
    width = max(len("op"), *(len(label) for label, _ in rows))
    log("")
    log(f"{'op':<{width}}  result")
    log(f"{'-' * width}  {'-' * max(len(r) for _, r in rows)}")
    for label, result in rows:
        log(f"{label:<{width}}  {result}")
