// cross_entropy.cu: fused softmax cross-entropy, forward and backward
// (tinyalex/cuda/cross_entropy.py).
//
//   lse_n  = m_n + log sum_c exp(z_nc - m_n),   m_n = max_c z_nc   (no overflow: every exponent <= 0)
//   loss_n = lse_n - z_n,target_n
//   glogits_nc = (exp(z_nc - lse_n) - [c == target_n]) * g_n
//
// Kernels, each templated on T = float or double; logits (N, C) C-contiguous, target (N,)
// int64 (the launcher has checked 0 <= target < C):
//   cross_entropy_forward<T>   logits, target -> loss (N,) and lse (N,), saved for the
//                              backward. One block per row; the block strides over the row
//                              twice, reducing the max, then the sum of exponentials, with
//                              warp shuffles and one shared value per warp: a fixed tree,
//                              deterministic.
//   cross_entropy_backward<T>  logits, target, lse, g -> glogits (N, C). One thread per
//                              element, a grid-stride loop over N*C. g_n = g[n * g_stride]:
//                              g_stride 0 broadcasts one scalar ('mean': gloss/N, 'sum':
//                              gloss), g_stride 1 reads gloss per row ('none').
// Launch: forward, grid = N blocks of min(256, C rounded up to a multiple of 32) threads
// (any multiple of 32 up to 1024 works); backward, 1-D, 256 threads per block,
// grid = min(ceil(N*C / 256), 2^20) blocks.

struct MaxOp {
    template <typename T>
    __device__ T operator()(T a, T b) const { return b > a ? b : a; }
};

struct SumOp {
    template <typename T>
    __device__ T operator()(T a, T b) const { return a + b; }
};

// Reduce v over the block; every thread gets the result. `identity` fills the lanes of
// the last round that have no warp behind them. `partials` holds one value per warp (32).
template <typename T, typename Op>
__device__ T block_reduce(T v, Op op, T identity, T* partials)
{
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    for (int offset = 16; offset > 0; offset >>= 1) {
        v = op(v, __shfl_down_sync(0xffffffffu, v, offset));
    }
    if (lane == 0) {
        partials[warp] = v;
    }
    __syncthreads();
    if (warp == 0) {
        v = lane < (int)(blockDim.x >> 5) ? partials[lane] : identity;
        for (int offset = 16; offset > 0; offset >>= 1) {
            v = op(v, __shfl_down_sync(0xffffffffu, v, offset));
        }
        if (lane == 0) {
            partials[0] = v;
        }
    }
    __syncthreads();
    const T result = partials[0];
    __syncthreads();                                      // all have read before partials is reused
    return result;
}

template <typename T>
__global__ void cross_entropy_forward(const T* __restrict__ logits,
                                      const long long* __restrict__ target,
                                      T* __restrict__ loss, T* __restrict__ lse, int C)
{
    __shared__ T partials[32];
    const long long row = blockIdx.x;
    const T* z = logits + row * C;
    // z[0] is a neutral start for the max: the row's max is at least z[0].
    T m = z[0];
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        m = MaxOp()(m, z[c]);
    }
    m = block_reduce(m, MaxOp(), z[0], partials);
    T sum = T(0);
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        sum += exp(z[c] - m);
    }
    sum = block_reduce(sum, SumOp(), T(0), partials);
    if (threadIdx.x == 0) {
        const T row_lse = m + log(sum);
        lse[row] = row_lse;
        loss[row] = row_lse - z[target[row]];
    }
}

template <typename T>
__global__ void cross_entropy_backward(const T* __restrict__ logits,
                                       const long long* __restrict__ target,
                                       const T* __restrict__ lse, const T* __restrict__ g,
                                       long long g_stride, T* __restrict__ glogits,
                                       int N, int C)
{
    const long long total = (long long)N * C;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        const long long row = i / C;
        const int c = (int)(i - row * C);
        const T one_hot = c == target[row] ? T(1) : T(0);
        glogits[i] = (exp(logits[i] - lse[row]) - one_hot) * g[row * g_stride];
    }
}
