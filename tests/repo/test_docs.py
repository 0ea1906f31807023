"""The docs are executed and checked, so they cannot drift from the code.

- every ```python block of docs/ and README.md runs (a page's blocks in order, sharing one
  namespace, in a temporary folder);
- every `#Lx-Ly` line anchor starts at the def, class or assignment its link text names
  and ends where that definition ends;
- every relative link, every `name.md` the repository mentions, every repository path in a
  code span of the README and docs, and every pitfalls anchor points at something the
  repository contains;
- every op of KERNEL_API has what docs/adding-an-op.md lists: a docs page in the ops
  table, an opcheck case, a functional entry, an implementation in each kernel set, and
  its tests;
- every pitfall names a test that exists.

When code moves, `python tests/repo/test_docs.py --fix-anchors` rewrites each anchor to the
lines where its name is defined now (then read the diff).
"""
import ast
import importlib
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MARKDOWN = [README] + sorted((ROOT / "docs").rglob("*.md"))
ALL_MARKDOWN = MARKDOWN + [ROOT / "kernels" / "README.md", ROOT / "benchmarks" / "README.md"]
TEXT_FOLDERS = ("tinyalex", "tests", "docs", "benchmarks", "kernels")
TEXT_SUFFIXES = {".py", ".md", ".cu", ".h", ".cc", ".toml", ".sh"}

ANCHOR = re.compile(r"\[([^\]\[\n]+)\]\(([^)#\s]+)#L(\d+)-L(\d+)\)")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def relative(path):
    return path.relative_to(ROOT).as_posix()


def blocks(language, text):
    """The fenced blocks of `language` in markdown `text`, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def text_files():
    files = [README, ROOT / "pyproject.toml"]
    for folder in TEXT_FOLDERS:
        files += [p for p in (ROOT / folder).rglob("*") if p.suffix in TEXT_SUFFIXES
                  and "__pycache__" not in p.parts and p.is_file()]
    return files


# --- executed docs -------------------------------------------------------------------------

def executed_pages():
    """The pages with python blocks; those that run CUDA C on the emulator carry its marker."""
    pages = [p for p in MARKDOWN if blocks("python", p.read_text())]
    return [pytest.param(p, id=relative(p), marks=[pytest.mark.cuda_emulated]
                         if "cuda_emulator" in "".join(blocks("python", p.read_text())) else [])
            for p in pages]


@pytest.mark.parametrize("page", executed_pages())
def test_python_blocks_run(page, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace = {"__name__": "__docs__"}
    for number, code in enumerate(blocks("python", page.read_text()), 1):
        try:
            exec(compile(code, f"{relative(page)} (python block {number})", "exec"), namespace)
        except Exception as exc:
            raise AssertionError(f"{relative(page)}: python block {number} raised"
                                 f" {type(exc).__name__}: {exc}\n{code}") from exc


def test_the_tour_prints_one_line_per_layer_and_says_which_conv_algorithm_ran(tmp_path, monkeypatch):
    import contextlib
    import io
    monkeypatch.chdir(tmp_path)
    printed, namespace = io.StringIO(), {"__name__": "__docs__"}
    with contextlib.redirect_stdout(printed):
        for code in blocks("python", (ROOT / "docs" / "tour.md").read_text()):
            exec(compile(code, "docs/tour.md", "exec"), namespace)
    lines = printed.getvalue().splitlines()
    names = [name for name, _ in namespace["layers"]]
    layers = [line for line in lines if " saves: " in line and line.split()[0] in names]
    assert [line.split()[0] for line in layers] == names, "one line per layer, and one only"
    assert len(lines) <= 90 and max(map(len, lines)) <= 220, (len(lines), max(map(len, lines)))
    conv_lines = [line for line in layers if " Conv2d " in line]
    assert all("('gemm'," in line or "('winograd', WinogradCache(" in line for line in conv_lines)
    assert any("winograd" in line for line in conv_lines) and any("gemm" in line for line in conv_lines)


def test_readme_gives_exactly_two_commands_and_ci_runs_the_test_command():
    commands = [b.strip() for b in blocks("bash", README.read_text())]
    assert len(commands) == 2, commands
    main_job, tests = commands
    assert main_job.endswith("tinyalex train")
    assert tests.endswith("pytest")
    assert tests in (ROOT / ".ci" / "run").read_text()


def test_the_readmes_broken_op_example_prints_which_direction_failed(capsys):
    """The README's "Write and check your own op" ends by printing gradcheck's finding."""
    section = README.read_text().split("### Write and check your own op", 1)[1].split("\n## ", 1)[0]
    namespace = {}
    for code in blocks("python", section):
        exec(compile(code, "README.md", "exec"), namespace)
    printed = capsys.readouterr().out
    assert "input 0" in printed or "random direction" in printed


def test_the_figures_script_draws_every_figure_the_pages_show(tmp_path):
    """docs/figures.py runs and draws non-blank PNGs; each is committed and shown on a page."""
    import matplotlib.image
    done = subprocess.run([sys.executable, str(ROOT / "docs" / "figures.py"), str(tmp_path)],
                          capture_output=True, text=True, env=dict(os.environ, MPLBACKEND="Agg"))
    assert done.returncode == 0, done.stderr
    pages = "".join(p.read_text() for p in MARKDOWN)
    drawn = sorted(p.name for p in tmp_path.glob("*.png"))
    assert len(drawn) == 3, drawn
    for name in drawn:
        image = matplotlib.image.imread(tmp_path / name)[..., :3]
        assert image.std() > 0.05, f"{name} is blank"
        assert (ROOT / "docs" / "figures" / name).is_file(), f"docs/figures/{name} is not committed"
        assert f"(../figures/{name})" in pages, f"no page shows {name}"


# --- line anchors ----------------------------------------------------------------------------

def anchor_name(link_text):
    """The name a link's text gives: `tinyalex.gradcheck(fn, inputs)` -> 'gradcheck'."""
    dotted = link_text.strip().strip("`").split("(")[0]
    name = dotted.split(".")[-1]
    return name if name.isidentifier() else None


def definitions(path):
    """[(name, qualified name, first line, last line)] of every def, class and assignment."""
    found = []

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                found.append((child.name, prefix + child.name, child.lineno, child.end_lineno))
                visit(child, prefix + child.name + ".")
            elif isinstance(child, (ast.Assign, ast.AnnAssign)):
                targets = child.targets if isinstance(child, ast.Assign) else [child.target]
                for target in targets:
                    if isinstance(target, ast.Name):
                        found.append((target.id, prefix + target.id, child.lineno, child.end_lineno))
    visit(ast.parse(path.read_text()), "")
    return found


def anchors():
    """(markdown file, line number, link text, target file, first, last) of every anchor."""
    for page in ALL_MARKDOWN:
        for number, line in enumerate(page.read_text().splitlines(), 1):
            for text, target, first, last in ANCHOR.findall(line):
                yield page, number, text, (page.parent / target).resolve(), int(first), int(last)


def where_defined(text, path, near):
    """(first, last) of the definition `text` names in `path`, the one nearest `near` when
    the name is defined more than once (a qualified name such as Linear.forward decides)."""
    name, dotted = anchor_name(text), text.strip().strip("`").split("(")[0]
    matches = [d for d in definitions(path) if d[0] == name]
    qualified = [d for d in matches if dotted.endswith(d[1])]
    candidates = qualified or matches
    if not candidates:
        return None
    best = min(candidates, key=lambda d: abs(d[2] - near))
    return best[2], best[3]


def test_every_line_anchor_spans_the_definition_it_names():
    problems = []
    count = 0
    for page, number, text, path, first, last in anchors():
        count += 1
        where = f"{relative(page)}:{number}: [{text}](...#L{first}-L{last})"
        name = anchor_name(text)
        if name is None:
            problems.append(f"{where}: the link text names no def or class")
            continue
        if not path.is_file():
            problems.append(f"{where}: {path} does not exist")
            continue
        spans = {(d[2], d[3]) for d in definitions(path) if d[0] == name}
        if (first, last) not in spans:
            now = where_defined(text, path, first)
            problems.append(f"{where}: {name} is defined at "
                            + (f"#L{now[0]}-L{now[1]}" if now else "no line of that file"))
    assert count > 30, "the anchors were not found"
    assert not problems, "\n".join(problems)


def fix_anchors():
    """Rewrite every anchor to where its name is defined now; print what moved."""
    for page in ALL_MARKDOWN:
        text = page.read_text()

        def move(match):
            link_text, target, first, last = match.groups()
            path = (page.parent / target).resolve()
            now = where_defined(link_text, path, int(first)) if path.is_file() else None
            if now is None or now == (int(first), int(last)):
                return match.group(0)
            print(f"{relative(page)}: {link_text}: L{first}-L{last} -> L{now[0]}-L{now[1]}")
            return f"[{link_text}]({target}#L{now[0]}-L{now[1]})"
        page.write_text(ANCHOR.sub(move, text))


# --- links and file names ----------------------------------------------------------------------

def test_every_relative_link_resolves():
    problems = []
    for page in ALL_MARKDOWN:
        for target in LINK.findall(page.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            file = target.split("#")[0]
            if not (page.parent / file).exists():
                problems.append(f"{relative(page)}: ({target})")
    assert not problems, "links to nothing:\n" + "\n".join(problems)


def test_the_repository_names_no_document_it_lacks():
    """A document named in code, docs or tests (an upper-case name ending in .md, or a page under
    docs/) must be a file of the repository. Lower-case reports that scripts write are
    outputs, not references."""
    present = {relative(p) for p in ROOT.rglob("*.md") if ".venv" not in p.parts}
    problems = []
    for file in text_files():
        text = file.read_text(errors="replace")
        for name in set(re.findall(r"[\w./-]*\b[A-Z][A-Z_]+\.md\b|[\w./-]*docs/[\w./-]+\.md\b", text)):
            bare = re.sub(r"^(\.\.?/)+", "", name)
            if not any(p == bare or p.endswith("/" + bare) for p in present):
                problems.append(f"{relative(file)}: {name}")
    assert not problems, "\n".join(problems)


#: A repository path written in a code span: starts at a top-level folder of the repo (or is
#: a root file) and names a file or folder, e.g. `tinyalex/kernels/numpy/pool.py`,
#: `tests/ops/`, `kernels/*.cu`. Globs must match something.
REPO_PATH = re.compile(r"`((?:tinyalex|tests|docs|benchmarks|kernels)/[\w./*-]*|(?:README|pyproject)\.\w+)"
                       r"(?:#[\w-]+)?`")
#: Paths that a run writes, not files of the repository.
WRITTEN_BY_RUNS = ("benchmarks/results/gpu-",)


def code_span_paths(text):
    """Repository paths in the code spans of markdown `text` (fenced blocks left out)."""
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return set(REPO_PATH.findall(prose))


def test_every_repo_path_in_a_code_span_exists():
    problems = []
    for page in ALL_MARKDOWN:
        for name in sorted(code_span_paths(page.read_text())):
            if name.startswith(WRITTEN_BY_RUNS):
                continue
            found = list(ROOT.glob(name.rstrip("/"))) if "*" in name else [ROOT / name.rstrip("/")]
            if not found or not all(p.exists() for p in found):
                problems.append(f"{relative(page)}: `{name}`")
    assert not problems, "code spans that name no file or folder of the repository:\n" + "\n".join(problems)


def test_a_code_span_path_that_does_not_exist_is_found():
    assert code_span_paths("see `tinyalex/reference/pool.py` and `tests/ops/`\n```\n`docs/ops/nowhere.py`\n```\n") \
        == {"tinyalex/reference/pool.py", "tests/ops/"}


def pitfall_entries():
    """{anchor: entry text} of docs/pitfalls.md (### headings are the anchors)."""
    parts = re.split(r"^### (\S+)\n", (ROOT / "docs" / "pitfalls.md").read_text(), flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def test_every_pitfalls_anchor_that_is_cited_exists():
    entries = pitfall_entries()
    problems = []
    for file in text_files():
        for anchor in re.findall(r"pitfalls\.md#([\w-]+)", file.read_text(errors="replace")):
            if anchor not in entries:
                problems.append(f"{relative(file)}: pitfalls.md#{anchor}")
    assert not problems, "\n".join(problems)


def defined_tests():
    return set(re.findall(r"^\s*def (test_\w+)", "\n".join(
        p.read_text() for p in (ROOT / "tests").rglob("test_*.py")), flags=re.M))


# The MPI entries' tests come with the data-parallel training work (issue 11).
ENTRIES_AWAITING_TESTS = {"mpi-hang", "rank-threads"}


def test_every_pitfall_names_tests_that_exist():
    tests = defined_tests()
    problems = []
    for anchor, entry in pitfall_entries().items():
        named = set(re.findall(r"`(test_\w+)`", entry))
        if not named and anchor not in ENTRIES_AWAITING_TESTS:
            problems.append(f"#{anchor}: names no test")
        problems += [f"#{anchor}: {t} does not exist" for t in sorted(named - tests)]
    assert not problems, "\n".join(problems)


def test_every_test_the_docs_name_exists():
    """Test names cited in docs/ (the README's `test_acc` and such are metrics)."""
    tests = defined_tests()
    problems = [f"{relative(page)}: {name}" for page in ALL_MARKDOWN if page != README
                for name in set(re.findall(r"`(test_\w+)`", page.read_text())) - tests]
    assert not problems, "\n".join(problems)


# --- the add-an-op checklist ---------------------------------------------------------------------

# Kernel functions whose op (functional name, docs page, opcheck case) is not their prefix.
KERNEL_OPS = {"im2col": "conv2d", "col2im": "conv2d", "lrn": "local_response_norm", "matmul": "linear"}


def public_op(kernel_name):
    base = re.sub(r"_(forward|backward|indices)$", "", kernel_name)
    return KERNEL_OPS.get(base, base)


def kernel_api():
    from tinyalex.kernels.contract import KERNEL_API
    return list(KERNEL_API)


@pytest.mark.parametrize("kernel", kernel_api())
def test_every_kernel_has_each_item_of_the_checklist(kernel):
    from tinyalex import functional
    from tinyalex.train import opcheck
    from tinyalex.kernels import KERNEL_SETS
    op = public_op(kernel)
    page = ROOT / "docs" / "ops" / f"{op}.md"
    assert page.is_file(), f"{kernel}: no docs page docs/ops/{op}.md"
    assert f"]({op}.md)" in (ROOT / "docs" / "ops" / "README.md").read_text(), \
        f"{kernel}: docs/ops/README.md's table does not link {op}.md"
    assert op in {case.op for case in opcheck.CASES}, f"{kernel}: no opcheck case named {op!r}"
    assert op in functional.__all__, f"{kernel}: tinyalex.functional has no {op}"
    for set_name, package in KERNEL_SETS.items():
        function = getattr(importlib.import_module(package), kernel, None)
        assert callable(function), f"{kernel}: missing from the {set_name} set ({package})"
        assert function.__module__.startswith(package + "."), \
            f"{kernel}: the {set_name} set borrows {function.__module__}.{kernel}"
    own_file = ROOT / "tests" / "ops" / f"test_{op}.py"             # every check of the op, on every set
    assert own_file.is_file(), f"{kernel}: no tests/ops/test_{op}.py"
    text = own_file.read_text()
    for what, call in (("a kernel-level test over the kernels fixture", rf"\bK\.{kernel}\("),
                       ("a numba-against-reference test", rf"\bnumba_kernels\.{kernel}\("),
                       ("an API-level test", rf"\bF\.{op}\b")):               # F.relu is passed, not called
        assert re.search(call, text), f"{kernel}: tests/ops/test_{op}.py has no {what} ({call!r})"
    assert f"K.{kernel}(" in (ROOT / "benchmarks" / "gpu_kernels_smoke.py").read_text(), \
        f"{kernel}: benchmarks/gpu_kernels_smoke.py (the GPU smoke run) never calls it"


def test_every_ops_page_is_in_the_table_and_belongs_to_an_op():
    from tinyalex import functional
    table = (ROOT / "docs" / "ops" / "README.md").read_text()
    for page in (ROOT / "docs" / "ops").glob("*.md"):
        if page.name != "README.md":
            assert f"]({page.name})" in table, f"docs/ops/README.md does not list {page.name}"
            # an op's page, or a page on one of its algorithms (conv2d_winograd.md)
            assert any(page.stem == op or page.stem.startswith(op + "_") for op in functional.__all__), \
                f"{page.name}: no functional op {page.stem}"


def test_the_checklist_names_files_that_exist():
    text = (ROOT / "docs" / "adding-an-op.md").read_text()
    named = set(re.findall(r"`((?:tinyalex|kernels|tests|docs|benchmarks)/[\w./-]+)`", text))
    assert len(named) >= 15, named
    missing = sorted(n for n in named if not (ROOT / n.split("#")[0]).exists())
    assert not missing, missing


if __name__ == "__main__":
    if sys.argv[1:] != ["--fix-anchors"]:
        sys.exit("usage: python tests/repo/test_docs.py --fix-anchors")
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    fix_anchors()
