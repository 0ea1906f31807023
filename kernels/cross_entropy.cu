// cross_entropy.cu: fused softmax cross-entropy, forward and backward
// (tinyalex/kernels/cupy/cross_entropy.py), with torch's options: class weights w, label
// smoothing eps, ignore_index, and class-probability targets.
//
//   lse_n  = m_n + log sum_c exp(z_nc - m_n),   m_n = max_c z_nc   (no overflow: every exponent <= 0)
//   nlp_nc = lse_n - z_nc                        (= -log softmax)
//   loss_n = sum_c q_nc * nlp_nc
//   glogits_nc = (Q_n * exp(z_nc - lse_n) - q_nc) * g_n,   Q_n = sum_c q_nc
//
// with the target distribution q (never stored):
//   class indices t_n:   q_nc = kept_n ((1 - eps) w[t_n] [c == t_n] + eps/C w_c),
//                        Q_n  = kept_n ((1 - eps) w[t_n] + eps/C W),  W = sum_c w_c,
//                        kept_n = (t_n != ignore_index); an ignored row has loss 0, gradient 0
//   probabilities T_nc:  q_nc = w_c ((1 - eps) T_nc + eps/C),  Q_n summed in the forward
//
// Kernels, each templated on T = float or double; logits (N, C) C-contiguous, target (N,)
// int64 (the launcher has checked 0 <= target < C or target == ignore_index) or (N, C) T,
// weight (C,) T (ones when the caller gave none):
//   cross_entropy_forward<T>        logits, target, weight -> loss (N,) and lse (N,), saved
//                                   for the backward. One block per row; the block strides
//                                   over the row for the max, then the sum of exponentials,
//                                   then (eps != 0 only) the weighted sum of nlp, each reduced
//                                   with warp shuffles and one shared value per warp: a fixed
//                                   tree, deterministic. The passes after the first take the
//                                   logits from registers (CE_CACHED per thread).
//   cross_entropy_backward<T>       -> glogits (N, C). One thread per element, a grid-stride
//                                   loop over N*C; each block first stages the factors of
//                                   its rows in shared memory. g_n = g[n * g_stride]: g_stride
//                                   0 broadcasts one scalar ('mean': gloss/D, 'sum': gloss),
//                                   g_stride 1 reads gloss per row ('none'). W is read from a
//                                   one-element device array; weighted = 0 means no class
//                                   weights (every w_c = 1, and `weight` is not read).
//   soft_cross_entropy_forward<T>   logits, probabilities T, weight -> loss (N,), lse (N,)
//                                   and q_sum (N,) = Q_n. One block per row, as above, with
//                                   two more reductions (sum q*(m - z) and sum q).
//   soft_cross_entropy_backward<T>  -> glogits (N, C). One thread per element, as above.
// Launch: the forwards, grid = N blocks of min(256, C rounded up to a multiple of 32)
// threads (any multiple of 32 up to 1024 works); the backwards, 1-D, 256 threads per
// block, grid = min(ceil(N*C / 256), 2^20) blocks.

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

// The forwards keep the logits this thread reads, z[threadIdx.x + i * blockDim.x] for
// i < CE_CACHED, in registers, so each pass after the first reads registers, not global
// memory: a row of up to CE_CACHED * blockDim.x logits (2048 at 256 threads) is read once.
inline constexpr int CE_CACHED = 8;

// f(c, z[c]) for each logit c of this thread, in ascending order (the order the sums add in).
template <typename T, typename F>
__device__ void for_each_logit(const T* z, int C, const T (&cached)[CE_CACHED], F f)
{
    for (int i = 0; i < CE_CACHED; ++i) {
        const int c = threadIdx.x + i * blockDim.x;
        if (c < C) {
            f(c, cached[i]);
        }
    }
    for (int c = threadIdx.x + CE_CACHED * blockDim.x; c < C; c += blockDim.x) {
        f(c, z[c]);                                       // a row longer than the cache
    }
}

// Fills `cached` with the row's logits; the row's maximum m and lse = m + log sum_c
// exp(z_c - m), on every thread of the block.
template <typename T>
__device__ void row_lse(const T* z, int C, T (&cached)[CE_CACHED], T* partials, T& m, T& lse)
{
    for (int i = 0; i < CE_CACHED; ++i) {
        const int c = threadIdx.x + i * blockDim.x;
        if (c < C) {
            cached[i] = z[c];
        }
    }
    // z[0] is a neutral start for the max: the row's max is at least z[0].
    T v = z[0];
    for_each_logit(z, C, cached, [&](int, T zc) { v = MaxOp()(v, zc); });
    m = block_reduce(v, MaxOp(), z[0], partials);
    T sum = T(0);
    for_each_logit(z, C, cached, [&](int, T zc) { sum += exp(zc - m); });
    sum = block_reduce(sum, SumOp(), T(0), partials);
    lse = m + log(sum);
}

template <typename T>
__global__ void cross_entropy_forward(const T* __restrict__ logits,
                                      const long long* __restrict__ target,
                                      const T* __restrict__ weight, long long ignore_index,
                                      T smoothing, T* __restrict__ loss, T* __restrict__ lse,
                                      int C)
{
    __shared__ T partials[32];
    const long long row = blockIdx.x;
    const T* z = logits + row * C;
    T cached[CE_CACHED];
    T m, row_lse_value;
    row_lse(z, C, cached, partials, m, row_lse_value);
    // sum_c w_c * nlp_c, the label-smoothing term; smoothing is the same for the whole
    // block, so every thread takes this branch or none does (block_reduce syncs).
    T smooth = T(0);
    if (smoothing != T(0)) {
        for_each_logit(z, C, cached, [&](int c, T zc) { smooth += weight[c] * (row_lse_value - zc); });
        smooth = block_reduce(smooth, SumOp(), T(0), partials);
    }
    if (threadIdx.x == 0) {
        const long long t = target[row];
        lse[row] = row_lse_value;
        if (t == ignore_index) {
            loss[row] = T(0);
        } else {
            loss[row] = (T(1) - smoothing) * weight[t] * (row_lse_value - z[t])
                        + smoothing / T(C) * smooth;
        }
    }
}

// The backward's blocks stage the per-row factors of the rows their elements lie in (at
// most one per thread: blockDim.x <= CE_ROWS), read once per block instead of once per
// element.
inline constexpr int CE_ROWS = 256;

template <typename T>
__global__ void cross_entropy_backward(const T* __restrict__ logits,
                                       const long long* __restrict__ target,
                                       const T* __restrict__ weight, int weighted,
                                       long long ignore_index, T smoothing,
                                       const T* __restrict__ weight_sum,
                                       const T* __restrict__ lse, const T* __restrict__ g,
                                       long long g_stride, T* __restrict__ glogits,
                                       int N, int C)
{
    __shared__ long long row_target[CE_ROWS];
    __shared__ T row_picked[CE_ROWS];                     // q[n, t] without the smoothing
    __shared__ T row_total_q[CE_ROWS];
    __shared__ T row_lse[CE_ROWS];
    __shared__ T row_g[CE_ROWS];
    const long long total = (long long)N * C;
    const T spread = smoothing / T(C);
    for (long long i0 = (long long)blockIdx.x * blockDim.x; i0 < total;
         i0 += (long long)gridDim.x * blockDim.x) {
        const long long first_row = i0 / C;
        const int rows = (int)((min(i0 + (long long)blockDim.x, total) - 1) / C - first_row) + 1;
        if ((int)threadIdx.x < rows) {
            const long long row = first_row + threadIdx.x;
            const long long t = target[row];
            row_target[threadIdx.x] = t;
            if (t != ignore_index) {
                const T picked = (T(1) - smoothing) * (weighted ? weight[t] : T(1));
                row_picked[threadIdx.x] = picked;
                row_total_q[threadIdx.x] = picked + spread * weight_sum[0];
                row_lse[threadIdx.x] = lse[row];
                row_g[threadIdx.x] = g[row * g_stride];
            }
        }
        __syncthreads();
        const long long i = i0 + threadIdx.x;
        if (i < total) {
            const long long row = i / C;
            const int c = (int)(i - row * C);
            const int r = (int)(row - first_row);
            const long long t = row_target[r];
            if (t == ignore_index) {
                glogits[i] = T(0);                        // not 0 * (gloss / 0): torch gives 0
            } else {
                const T q = (c == t ? row_picked[r] : T(0)) + spread * (weighted ? weight[c] : T(1));
                glogits[i] = (row_total_q[r] * exp(logits[i] - row_lse[r]) - q) * row_g[r];
            }
        }
        __syncthreads();                                  // all have read before the next rows
    }
}

template <typename T>
__global__ void soft_cross_entropy_forward(const T* __restrict__ logits,
                                           const T* __restrict__ target,
                                           const T* __restrict__ weight, T smoothing,
                                           T* __restrict__ loss, T* __restrict__ lse,
                                           T* __restrict__ q_sum, int C)
{
    __shared__ T partials[32];
    const long long row = blockIdx.x;
    const T* z = logits + row * C;
    const T* probs = target + row * C;
    T cached[CE_CACHED];
    T m, row_lse_value;
    row_lse(z, C, cached, partials, m, row_lse_value);
    T weighted = T(0);
    T total_q = T(0);
    for_each_logit(z, C, cached, [&](int c, T zc) {
        const T q = weight[c] * ((T(1) - smoothing) * probs[c] + smoothing / T(C));
        weighted += q * (row_lse_value - zc);
        total_q += q;
    });
    weighted = block_reduce(weighted, SumOp(), T(0), partials);
    total_q = block_reduce(total_q, SumOp(), T(0), partials);
    if (threadIdx.x == 0) {
        lse[row] = row_lse_value;
        loss[row] = weighted;
        q_sum[row] = total_q;
    }
}

template <typename T>
__global__ void soft_cross_entropy_backward(const T* __restrict__ logits,
                                            const T* __restrict__ target,
                                            const T* __restrict__ weight, T smoothing,
                                            const T* __restrict__ lse,
                                            const T* __restrict__ q_sum,
                                            const T* __restrict__ g, long long g_stride,
                                            T* __restrict__ glogits, int N, int C)
{
    const long long total = (long long)N * C;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        const long long row = i / C;
        const int c = (int)(i - row * C);
        const T q = weight[c] * ((T(1) - smoothing) * target[i] + smoothing / T(C));
        glogits[i] = (q_sum[row] * exp(logits[i] - lse[row]) - q) * g[row * g_stride];
    }
}
