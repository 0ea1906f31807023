// lrn.cu: local response normalisation across channels, forward and backward
// (tinyalex/kernels/cupy/lrn.py), in PyTorch's convention:
//
//   s_c = k + alpha/size * sum_{c' in window(c)} x_{c'}^2,  window(c) = [c - size/2, c + (size-1)/2]
//   y_c = x_c * s_c^(-beta)
//
// clipped to [0, C); for an even size the window is asymmetric, as in PyTorch.
//
// Kernels, each templated on T = float or double; NCHW, C-contiguous:
//   lrn_forward<T>   x -> y and s (the scale, saved for the backward). One thread per
//                    element, a grid-stride loop over N*C*H*W; each thread sums the squares
//                    of its channel window (stride H*W apart in memory).
//   lrn_backward<T>  gy, x, y, s -> gx. One thread per element, a grid-stride loop over
//                    N*C*H*W; each thread gathers over the TRANSPOSED window
//                    [j - (size-1)/2, j + size/2], the channels c whose window holds j:
//                      gx_j = gy_j s_j^(-beta) - (2 alpha beta / size) x_j sum_c gy_c y_c / s_c
//                    using y_c / s_c = x_c s_c^(-beta-1), so the loop needs no pow.
//                    Pure gathers: deterministic, no atomics.
// Launch: 1-D, 256 threads per block, grid = min(ceil(total / 256), 2^20) blocks.
// The launcher passes alpha_over_size = alpha/size and two_alpha_beta_over_size =
// 2*alpha*beta/size, computed in double and rounded to T once.

template <typename T>
__global__ void lrn_forward(const T* __restrict__ x, T* __restrict__ y, T* __restrict__ s,
                            int N, int C, int H, int W, int size,
                            T alpha_over_size, T beta, T k)
{
    const long long HW = (long long)H * W;
    const long long total = (long long)N * C * HW;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)gridDim.x * blockDim.x) {
        const long long plane = t / HW;                   // n*C + c
        const long long hw = t - plane * HW;
        const int n = (int)(plane / C);
        const int c = (int)(plane - (long long)n * C);
        const T* xn = x + (long long)n * C * HW + hw;     // x[n, 0, h, w]; channels HW apart
        const int c_lo = max(c - size / 2, 0);
        const int c_hi = min(c + (size - 1) / 2, C - 1);
        T sum = T(0);
        for (int cc = c_lo; cc <= c_hi; ++cc) {
            const T v = xn[cc * HW];
            sum += v * v;
        }
        const T scale = k + alpha_over_size * sum;
        s[t] = scale;
        y[t] = x[t] * pow(scale, -beta);
    }
}

template <typename T>
__global__ void lrn_backward(const T* __restrict__ gy, const T* __restrict__ x,
                             const T* __restrict__ y, const T* __restrict__ s,
                             T* __restrict__ gx,
                             int N, int C, int H, int W, int size,
                             T beta, T two_alpha_beta_over_size)
{
    const long long HW = (long long)H * W;
    const long long total = (long long)N * C * HW;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)gridDim.x * blockDim.x) {
        const long long plane = t / HW;                   // n*C + j
        const long long hw = t - plane * HW;
        const int n = (int)(plane / C);
        const int j = (int)(plane - (long long)n * C);
        const long long first = (long long)n * C * HW + hw;   // element (n, 0, h, w)
        // The channels c with j in window(c): c - size/2 <= j <= c + (size-1)/2.
        const int c_lo = max(j - (size - 1) / 2, 0);
        const int c_hi = min(j + size / 2, C - 1);
        T cross = T(0);                                   // sum_c gy_c x_c s_c^(-beta-1)
        for (int c = c_lo; c <= c_hi; ++c) {
            const long long e = first + c * HW;
            cross += gy[e] * y[e] / s[e];
        }
        gx[t] = gy[t] * pow(s[t], -beta) - two_alpha_beta_over_size * x[t] * cross;
    }
}
