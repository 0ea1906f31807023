// relu.cu: the rectified linear unit, y = max(0, x), forward and backward
// (tinyalex/kernels/cupy/relu.py).
//
// Kernels, each templated on T = float or double; any shape, C-contiguous, n elements:
//   relu_forward<T>   x -> y = max(0, x); a NaN passes through (as np.maximum and PyTorch).
//   relu_backward<T>  gy, y -> gx = gy where y > 0, else 0. The saved output decides:
//                     y > 0 exactly where x > 0, so no mask is stored.
// Both: one thread per element, a grid-stride loop over n.
// Launch: 1-D, 256 threads per block, grid = min(ceil(n / 256), 2^20) blocks.

template <typename T>
__global__ void relu_forward(const T* __restrict__ x, T* __restrict__ y, long long n)
{
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        const T v = x[i];
        y[i] = (v > T(0) || isnan(v)) ? v : T(0);
    }
}

template <typename T>
__global__ void relu_backward(const T* __restrict__ gy, const T* __restrict__ y,
                              T* __restrict__ gx, long long n)
{
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        gx[i] = y[i] > T(0) ? gy[i] : T(0);               // the gradient at x == 0 is 0
    }
}
