"""The wheel: it builds, installs and imports, carries the CUDA sources inside the package as
data (where the loader finds them), and makes no top-level `kernels` package."""
import pathlib
import subprocess
import sys
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]

# `python -m build` installs hatchling into an isolated environment from the package index.
pytestmark = pytest.mark.network


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    pytest.importorskip("build", reason="the 'build' package (in the test extras) builds the wheel")
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(ROOT)],
                   check=True, capture_output=True)
    (path,) = out.glob("tinyalex-*.whl")
    return path


def test_wheel_carries_every_cuda_source_inside_the_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    sources = sorted(p.name for p in (ROOT / "kernels").glob("*.cu"))
    assert sources
    shipped = "tinyalex/kernels/cupy/sources/"
    assert sorted(n[len(shipped):] for n in names if n.startswith(shipped) and n.endswith(".cu")) == sources
    assert not [n for n in names if n.startswith("kernels/")], "kernels/ must not be a top-level package"
    assert not [n for n in names if n.startswith(shipped) and n.endswith(".py")]


def test_installed_wheel_imports_and_finds_its_kernels(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
                    str(target), str(wheel)], check=True)
    probe = ("import tinyalex, tinyalex.kernels.cupy.loader as l; "
             "print(tinyalex.__file__); print(l.kernels_dir()); print(sorted(p.name for p in l.kernels_dir().glob('*.cu')))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                            env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}, check=True)
    module_file, kernels_dir, listed = result.stdout.splitlines()
    assert module_file.startswith(str(target))
    assert kernels_dir == str(target / "tinyalex" / "kernels" / "cupy" / "sources")
    assert listed == str(sorted(p.name for p in (ROOT / "kernels").glob("*.cu")))
