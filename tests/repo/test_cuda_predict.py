"""benchmarks/cuda_predict.py: the predicted H100 time of each kernel from the emulator's
counts (no GPU). The counts themselves are tested in tests/kernels/test_cuda_traffic.py;
here, what the prediction makes of them: the extrapolation from two small batches, the
ideal bytes, the work handed to cuBLAS and CuPy, the thresholds, and the committed table."""
import importlib.util
import json
import math
from pathlib import Path

import pytest

import cuda_emulator

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("cuda_predict", ROOT / "benchmarks" / "cuda_predict.py")
cuda_predict = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cuda_predict)
bench_cuda = cuda_predict.bench_cuda



def emulated(test):
    """Marks a test that counts on the CUDA emulator (skipped without g++)."""
    reason = cuda_emulator.compiler_missing_reason()
    return pytest.mark.cuda_emulated(pytest.mark.skipif(reason is not None, reason=str(reason))(test))


def rows_of(name, batch=128):
    return {(r.direction, r.kernel): r for r in cuda_predict.predict_case(cuda_predict.cases_at(batch)[name])}


def test_extrapolation_follows_the_line_through_two_counts():
    assert cuda_predict.extrapolate([(1, 10.0), (2, 16.0)], 128) == 10 + 127 * 6
    assert cuda_predict.extrapolate([(2**15, 1.0), (2**16, 2.0)], 2**20) == 32.0


@emulated
def test_a_coalesced_kernel_moves_its_ideal_bytes():
    rows = rows_of("relu6/7")
    n = 128 * 4096
    forward, backward = rows[("forward", "relu_forward")], rows[("backward", "relu_backward")]
    assert forward.q["ideal_bytes"] == forward.q["moved_bytes"] == 2 * 4 * n      # x in, y out
    assert backward.q["ideal_bytes"] == 3 * 4 * n                                  # gy, y in, gx out
    assert forward.sectors_per_request("load") == forward.sectors_per_request("store") == 4
    assert forward.q["flops"] == n and not forward.flags()
    assert forward.predicted_s == forward.ideal_s == 2 * 4 * n / cuda_predict.H100_BYTES_PER_S


@emulated
def test_weights_are_counted_once_not_once_per_sample():
    """A GEMM's weight does not grow with the batch: the two-point extrapolation keeps it as
    the intercept (scaling batch 2's bytes by 64 would count fc8's 16 MB weight 64 times)."""
    rows = rows_of("fc8")
    gemm = rows[("forward", "cuBLAS GEMM")]
    M, K, N = 128, 4096, 1000
    assert not gemm.ours
    assert gemm.q["flops"] == 2 * M * K * N
    assert gemm.q["ideal_bytes"] == gemm.q["moved_bytes"] == 4 * (M * K + K * N + M * N)
    assert math.isclose(gemm.predicted_s, 2 * M * K * N / cuda_predict.H100_FLOP_PER_S)   # compute-bound
    assert rows[("backward", "cuBLAS GEMM")].q["flops"] == 2 * gemm.q["flops"]
    assert rows[("forward", "CuPy elementwise")].q["ideal_bytes"] == 4 * (2 * M * N + N)   # y += b


@emulated
def test_an_in_place_update_reads_and_writes_its_arrays():
    (row,) = cuda_predict.predict_case(cuda_predict.cases_at(128)["sgd"])
    n = bench_cuda.alexnet_parameter_count()
    assert row.kernel == "sgd_update" and row.direction == "step"
    assert row.q["ideal_bytes"] == row.q["moved_bytes"] == 5 * 4 * n      # param, buf in and out; grad in


def test_thresholds_name_what_they_exceed():
    q = dict.fromkeys(cuda_predict.QUANTITIES, 0)
    sample = dict(q, load_requests=10, load_sectors=45, store_requests=10, store_sectors=40)
    row = cuda_predict.Row(None, "forward", "k", True, dict(q, ideal_bytes=100, moved_bytes=151), sample)
    assert row.flags() == ["moved > 1.5x ideal", "> 4 sectors/request"]
    row = cuda_predict.Row(None, "forward", "k", True, dict(q, ideal_bytes=100, moved_bytes=150, replays=1),
                           dict(sample, load_sectors=40))
    assert row.flags() == ["bank conflicts"]
    assert cuda_predict.Row(None, "forward", "GEMM", False, dict(q, ideal_bytes=1, moved_bytes=9), q).flags() == []


@pytest.mark.nvrtc
@emulated
def test_the_report_and_its_json(tmp_path, capsys):
    assert cuda_predict.main(["--only", "relu6", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "cuda-predicted.md").read_text()
    assert "L1 and L2 hits are not modelled" in text and "Latency is not modelled" in text
    assert "| relu6/7 | forward | relu_forward | 4.2 | 4.2 | 1.00 | 4.00 | 4.00 | 0 |" in text
    data = json.loads((tmp_path / "cuda-predicted.json").read_text())
    entry = data["cases"]["relu6/7 backward"]
    assert entry["kernels"]["relu_backward"]["ours"] and entry["predicted_us"] > 0
    with pytest.raises(SystemExit):
        cuda_predict.parse_args(["--batch", "2"])
    assert "--batch: expected more than 2" in capsys.readouterr().err


def test_the_committed_prediction_covers_every_case_and_kernel():
    """benchmarks/results/cuda-predicted.json is current: every case and direction of
    bench_cuda.py at batch 128, and every kernel AlexNet launches, with its numbers."""
    data = json.loads((ROOT / "benchmarks" / "results" / "cuda-predicted.json").read_text())
    expected = {f"{c.name} {d}" for c in bench_cuda.alexnet_cases(128) for d in bench_cuda.directions(c)}
    assert data["batch"] == 128 and set(data["cases"]) == expected
    kernels = {k for case in data["cases"].values() for k, v in case["kernels"].items() if v["ours"]}
    assert kernels == set(cuda_predict.FLOPS_PER_ITEM)
    text = (ROOT / "benchmarks" / "results" / "cuda-predicted.md").read_text()
    for kernel in kernels:
        assert f"| {kernel} |" in text
