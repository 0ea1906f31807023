"""The tree shows the architecture: `import tinyalex` loads the engine only, the engine's one
import circle is Tensor <-> ops, and the afternoon's files stay within their line budget."""
import ast
import subprocess
import sys

from tree import AFTERNOON_BUDGET, AFTERNOON_FILES, PACKAGE, ROOT, afternoon_lines

#: The one import circle: a Tensor's methods are ops and its backward is the autograd sweep,
#: and the ops (built on autograd's Function) make Tensors (see the end of tinyalex/tensor.py).
TENSOR_OPS_CIRCLE = {"tinyalex.tensor", "tinyalex.autograd", "tinyalex.ops.basic", "tinyalex.ops.relu"}

APPLICATION = ("mpi4py", "tinyalex.train", "distributed", "data_parallel")


def test_import_tinyalex_loads_no_training_data_parallel_or_mpi_code():
    code = ("import sys, tinyalex; print([m for m in sys.modules if m.split('.')[0] == 'mpi4py'"
            " or m.startswith('tinyalex.train') or 'distributed' in m or 'data_parallel' in m])")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout


def test_the_package_top_level_holds_engine_modules_only():
    top = sorted(p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
                 if (p.suffix == ".py" or (p / "__init__.py").is_file()))
    assert top == ["__init__", "__main__", "autograd", "cuda", "device", "errors", "functional",
                   "gradcheck", "kernels", "nn", "onnx", "ops", "optim", "random", "serialization", "shapes",
                   "tensor", "threads", "torch_compat", "train", "utils", "viz"]
    engine = [name for name in top if name != "train"]
    for name in engine:
        path = PACKAGE / f"{name}.py" if (PACKAGE / f"{name}.py").exists() else PACKAGE / name
        files = [path] if path.is_file() else list(path.rglob("*.py"))
        for file in files:
            if name == "__main__":   # `python -m tinyalex` is the command
                continue
            for module in imported_modules(file):
                assert not module.startswith("tinyalex.train"), f"{file} imports {module}"


def module_name(path):
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path):
    """Every tinyalex module `path` imports, at its top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {f"{node.module}.{a.name}" for a in node.names} | {node.module}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {m for m in found if m.split(".")[0] == "tinyalex"}


def import_graph():
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        edges = set()
        for module in imported_modules(path):
            while module not in modules:       # `from package import name`: the package
                module = module.rpartition(".")[0]
            if module and module != name and not name.startswith(module + "."):  # a parent package runs first anyway
                edges.add(module)
        graph[name] = edges
    return graph


def circles(graph):
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while not component or v not in component:
                component.add(stack.pop())
            on_stack.difference_update(component)
            if len(component) > 1:
                found.append(component)

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_only_import_circle_is_tensor_and_ops():
    assert circles(import_graph()) == [TENSOR_OPS_CIRCLE]


def test_a_planted_circle_is_found():
    graph = import_graph()
    graph["tinyalex.device"] = graph["tinyalex.device"] | {"tinyalex.functional"}
    assert any("tinyalex.device" in c for c in circles(graph))


def test_the_afternoon_fits_its_line_budget():
    assert all((PACKAGE / name).is_file() for name in AFTERNOON_FILES)
    assert afternoon_lines() <= AFTERNOON_BUDGET, (
        f"the afternoon's files ({', '.join(AFTERNOON_FILES)}) take {afternoon_lines()} lines, "
        f"expected at most {AFTERNOON_BUDGET}")
