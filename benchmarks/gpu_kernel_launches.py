"""Launch tinyalex's side of every AlexNet case of bench_cuda.py once, for a profiler to count.

The driver of the GPU check's ncu step (benchmarks/gpu_check.py): each case and direction
runs once on the cupy kernel set (benchmarks/cuda_predict.py's tinyalex_calls, the calls
the prediction counted on the emulator), and every kernel launch of ours is printed in
launch order, so that a profiler which numbers the launches of these kernels (ncu with
--kernel-name) can attribute each one to its case:

    LAUNCH <case> | <direction> | <kernel>      ('setup' for launches that build a case's inputs)
    LAUNCHES OK <count>

Sectors per request do not depend on the batch, so a small batch (--batch 8) keeps the
profiler's replays short.

    PYTHONPATH=. python benchmarks/gpu_kernel_launches.py [--batch 8] [--sgd-elements N] [--only lrn]
"""
import argparse
import dataclasses
import sys

import numpy as np

import bench_cuda
import cuda_predict
from gpu_kernels_smoke import kernel_requests

SETUP = "setup"


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--sgd-elements", type=int, default=0,
                        help="sgd_update's elements (default: all of AlexNet's parameters)")
    parser.add_argument("--only", nargs="*", default=[], help="cases whose name contains one of these words")
    args = parser.parse_args(argv)
    if args.batch < 1 or args.sgd_elements < 0:
        parser.error(f"--batch: expected >= 1, got {args.batch}; --sgd-elements: expected >= 0,"
                     f" got {args.sgd_elements}")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from tinyalex.device import cupy_module
    cp = cupy_module()
    rng = np.random.default_rng(0)
    count = 0
    for case in bench_cuda.alexnet_cases(args.batch):
        if args.only and not any(word in case.name for word in args.only):
            continue
        if case.op == "sgd" and args.sgd_elements:
            case = dataclasses.replace(case, shape=(args.sgd_elements,))
        launched = []
        with kernel_requests(launched):
            calls = cuda_predict.tinyalex_calls(case, cp, rng)
            labels = [SETUP] * len(launched)
            for direction, call in calls.items():
                call()
                labels += [direction] * (len(launched) - len(labels))
        cp.cuda.Device().synchronize()
        for label, kernel in zip(labels, launched):
            print(f"LAUNCH {case.name} | {label} | {kernel}", flush=True)
        count += len(launched)
    print(f"LAUNCHES OK {count}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
