"""The CUDA C sources compile, and the loader asks for kernels that exist.

No GPU is needed: nvcc compiles each kernels/*.cu to PTX for sm_80 and sm_90 with every
warning an error. A template body is only checked once it is instantiated, so each file
is compiled through a generated unit that takes the address of name<float> and
name<double> for every kernel the loader lists (tinyalex.cuda.loader.KERNEL_FILES): a
kernel renamed in the .cu but not in the loader fails to compile here instead of at run
time on a GPU. Where CuPy and NVRTC are installed, the exact source and name expressions
the loader hands cupy.RawModule also go through NVRTC, the compiler used at run time.
"""
import re
import shutil
import subprocess
import sys

import pytest

from tinyalex.cuda import loader

ARCHS = ("sm_80", "sm_90")
NVCC = shutil.which("nvcc")
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc (the CUDA toolkit) is not installed")

KERNEL_DEFINITION = re.compile(r"template\s*<\s*typename\s+T\s*>\s*__global__\s+void\s+(\w+)\s*\(")


def _instantiating_unit(file):
    """C++ that includes kernels/`file` and instantiates each of its kernels for float and double."""
    lines = [f'#include "{loader.kernels_dir() / file}"', "void tinyalex_instantiate_all()", "{"]
    for expression in loader.name_expressions(file):
        lines.append(f"    (void)&{expression};")
    lines.append("}")
    return "\n".join(lines) + "\n"


@needs_nvcc
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("file", sorted(loader.KERNEL_FILES))
def test_compiles_with_nvcc_without_warnings(file, arch, tmp_path):
    unit = tmp_path / f"instantiate_{file}"
    unit.write_text(_instantiating_unit(file))
    command = [NVCC, "-std=c++17", "-ptx", f"-arch={arch}", "-Werror", "all-warnings",
               "-o", str(tmp_path / "out.ptx"), str(unit)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout}{result.stderr}"
    ptx = (tmp_path / "out.ptx").read_text()
    for name in loader.KERNEL_FILES[file]:
        for c_type in ("f", "d"):                                  # Itanium mangling of float, double
            assert re.search(rf"\.entry\s+_Z\d+{name}I{c_type}E", ptx), f"{name}<{c_type}> missing in PTX"


def test_every_source_is_listed_and_nothing_else_is_in_kernels():
    folder = loader.kernels_dir()
    assert sorted(p.name for p in folder.glob("*.cu")) == sorted(loader.KERNEL_FILES)
    assert not (folder / "__init__.py").exists(), "kernels/ holds CUDA sources, not a Python package"
    assert (folder / "README.md").is_file()


@pytest.mark.parametrize("file", sorted(loader.KERNEL_FILES))
def test_the_loader_names_exactly_the_kernels_the_source_defines(file):
    defined = KERNEL_DEFINITION.findall(loader.source(file))
    assert sorted(defined) == sorted(loader.KERNEL_FILES[file])
    assert "__global__" not in KERNEL_DEFINITION.sub("", loader.source(file)), \
        "every kernel is a template on T (float, double)"


@pytest.mark.parametrize("file", sorted(loader.KERNEL_FILES))
def test_each_source_opens_with_a_header_naming_its_kernels_and_launch(file):
    text = loader.source(file)
    assert text.startswith(f"// {file}: ")
    header = "\n".join(line for line in text.splitlines()[:40] if line.startswith("//"))
    for name in loader.KERNEL_FILES[file]:
        assert f"{name}<T>" in header, f"the header of {file} does not describe {name}<T>"
    assert "Launch:" in header, f"the header of {file} gives no launch geometry"


def test_the_loader_refuses_other_dtypes_and_unknown_names():
    with pytest.raises(ValueError, match="file"):
        loader.name_expressions("gemm.cu")
    with pytest.raises(ValueError, match="name"):
        loader.get_kernel("relu.cu", "relu", "float32")
    with pytest.raises(TypeError, match="float16"):
        loader.get_kernel("relu.cu", "relu_forward", "float16")


def test_tf32_setting_is_read_from_the_environment(monkeypatch):
    for value, expected in (("1", True), ("0", False), ("", False)):
        monkeypatch.setenv("TINYALEX_TF32", value)
        assert loader.tf32_enabled() is expected
    monkeypatch.setenv("TINYALEX_TF32", "yes")
    with pytest.raises(ValueError, match="TINYALEX_TF32"):
        loader.tf32_enabled()


def test_import_tinyalex_does_not_import_the_cuda_set():
    code = "import sys, tinyalex; assert 'tinyalex.cuda' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def _nvrtc_compiler():
    """cupy.cuda.compiler where CuPy and its NVRTC library load, else None."""
    try:
        from cupy.cuda import compiler
        compiler._get_nvrtc_version()
    except Exception:                                                # ImportError, missing libnvrtc
        return None
    return compiler


@pytest.mark.parametrize("arch", ("80", "90"))
@pytest.mark.parametrize("file", sorted(loader.KERNEL_FILES))
def test_compiles_with_nvrtc_as_cupy_does(file, arch):
    compiler = _nvrtc_compiler()
    if compiler is None:
        pytest.skip("CuPy with its NVRTC library is not installed")
    # LTO-IR output needs no GPU to pick the architecture; the C++ front end is the one
    # RawModule runs. -ftz=true is the option CuPy adds to every RawModule compilation.
    options = loader.COMPILE_OPTIONS + ("-ftz=true", "-dlto")
    _, mapping = compiler.compile_using_nvrtc(loader.source(file), options, arch=arch,
                                             name_expressions=loader.name_expressions(file),
                                             method="lto")
    assert sorted(mapping) == sorted(loader.name_expressions(file))
