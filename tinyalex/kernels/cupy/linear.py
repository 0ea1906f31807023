"""The linear layer's matrix product on the GPU: cuBLAS through CuPy's matmul.

The float32 mode (strict or TF32) is cuBLAS's, chosen once in loader.py.
"""


def matmul(a, b):
    """a @ b for 2-D CuPy float arrays: (M, K) @ (K, N) -> (M, N)."""
    return a @ b
