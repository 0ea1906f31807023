"""The CUDA C sources compile, and the loader asks for kernels that exist.

No GPU is needed: nvcc compiles each kernels/*.cu to PTX for sm_80 and sm_90 with every
warning an error. A template body is only checked once it is instantiated, so each file
is compiled through a generated unit that takes the address of name<float> and
name<double> for every kernel the loader lists (tinyalex.kernels.cupy.loader.KERNEL_FILES): a
kernel renamed in the .cu but not in the loader fails to compile here instead of at run
time on a GPU.

NVRTC, the compiler CuPy runs on a GPU machine, compiles every file here too (marker
`nvrtc`), through cuda-python's bindings and the NVRTC 13 wheel of the test extra, so no
GPU and no CuPy are needed: the exact source, options and name expressions that
tinyalex.kernels.cupy.loader hands cupy.RawModule, plus the two options CuPy adds (-ftz=true and
the GPU's architecture, here sm_90, the lent machines' H100/H200), down to a cubin. These
tests fail, never skip, when the bindings are missing: they are a test dependency.
The compile helper lives in tests/cuda_resources.py, which also reads ptxas's report
(tests/kernels/test_kernel_resources.py).
"""
import re
import shutil
import subprocess
import sys

import pytest

from cuda_resources import CUPY_ADDED_OPTIONS, NvrtcError, _check, nvrtc_compile
from tinyalex.kernels.cupy import loader

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


@needs_nvcc
@pytest.mark.parametrize("file", sorted(loader.KERNEL_FILES))
def test_compiles_alone_with_nvcc_without_warnings(file, tmp_path):
    """`nvcc -ptx kernels/x.cu` as a reader would try it, no template instantiated: a
    constant only templates use must not warn as unused."""
    command = [NVCC, "-std=c++17", "-ptx", "-arch=sm_90", "-Werror", "all-warnings",
               "-o", str(tmp_path / "out.ptx"), str(loader.kernels_dir() / file)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout}{result.stderr}"


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


@pytest.mark.parametrize("file", ["im2col.cu", "pool.cu"])
def test_the_loader_inlines_included_headers_with_their_line_numbers(file):
    """One self-contained text (NVRTC's cache key covers the header), whose #line directives
    map every line back to its file: after the header, line k of the text is line k of `file`."""
    original = (loader.kernels_dir() / file).read_text().splitlines()
    text = loader.source(file)
    assert '#include "windows.cuh"' in original and "#include" not in text
    header = (loader.kernels_dir() / "windows.cuh").read_text().splitlines()
    lines = text.splitlines()
    start = lines.index('#line 1 "windows.cuh"')
    assert lines[start + 1:start + 1 + len(header)] == header
    resume = re.fullmatch(r'#line (\d+) "(.+)"', lines[start + 1 + len(header)])
    assert resume.group(2) == file
    after = int(resume.group(1))
    assert lines[start + 2 + len(header):] == original[after - 1:]


def test_tile_sizes_come_from_the_source(emulated_cuda):
    assert loader.constant("lrn.cu", "LRN_PIXELS") == 32
    with pytest.raises(ValueError, match="LRN_TILE"):
        loader.constant("lrn.cu", "LRN_TILE")


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
    code = "import sys, tinyalex; assert 'tinyalex.kernels.cupy' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.nvrtc
def test_nvrtc_is_version_13():
    from cuda.bindings import nvrtc
    major, minor = _check(nvrtc.nvrtcVersion(), "version")
    assert major == 13, f"expected NVRTC 13 (CUDA 13, as on the lent GPU machines), got {major}.{minor}"


@pytest.mark.nvrtc
@pytest.mark.parametrize("file", sorted(loader.KERNEL_FILES))
def test_compiles_with_nvrtc_as_cupy_does(file):
    expressions = loader.name_expressions(file)
    lowered, cubin, _ = nvrtc_compile(loader.source(file), file, loader.COMPILE_OPTIONS + CUPY_ADDED_OPTIONS,
                                      expressions)
    assert cubin.startswith(b"\x7fELF"), "NVRTC's cubin is an ELF image"
    itanium = {"float": "f", "double": "d"}                      # how each C type is mangled
    for name in loader.KERNEL_FILES[file]:
        for c_type in loader.C_TYPES.values():
            mangled = itanium[c_type]
            symbol = lowered[f"{name}<{c_type}>"]
            assert re.fullmatch(rf"_Z\d+{name}I{mangled}Ev\w*", symbol), f"{name}<{c_type}> lowered to {symbol}"
            assert symbol.encode() in cubin, f"{symbol} is not in the cubin"


@pytest.mark.nvrtc
def test_nvrtc_failure_carries_its_message():
    broken = "template <typename T> __global__ void broken(T* x) { x[threadIdx.x] = ; }\n"
    with pytest.raises(NvrtcError, match=r"broken\.cu.*expected an expression"):
        nvrtc_compile(broken, "broken.cu", loader.COMPILE_OPTIONS + CUPY_ADDED_OPTIONS, ["broken<float>"])
