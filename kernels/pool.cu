// pool.cu: 2-D max and average pooling, forward and backward (tinyalex/kernels/cupy/pool.py).
//
// Kernels, each templated on T = float or double; NCHW, C-contiguous:
//   max_pool2d_forward<T>   x (N, C, H, W) -> y (N, C, OH, OW) and argmax (N, C, OH, OW)
//                           int32. One thread per output pixel, a grid-stride loop over
//                           N*C*OH*OW; each thread scans its kh x kw window in row-major order.
//   max_pool2d_backward<T>  gy (N, C, OH, OW), argmax -> gx (N, C, H, W). One thread per
//                           input pixel, a grid-stride loop over N*C*H*W; each thread loops
//                           over the output windows that cover its pixel and adds gy where
//                           that window's argmax is this pixel. Overlapping windows (stride
//                           < kernel) therefore add in a fixed order: deterministic, no atomics.
//   avg_pool2d_forward<T>   x (N, C, H, W), divisor (OH, OW) -> y (N, C, OH, OW). One thread
//                           per output pixel, a grid-stride loop over N*C*OH*OW; each thread
//                           sums its window's real pixels and divides by its divisor.
//   avg_pool2d_backward<T>  gy (N, C, OH, OW), divisor (OH, OW) -> gx (N, C, H, W). One
//                           thread per input pixel, a grid-stride loop over N*C*H*W, adding
//                           gy / divisor of every window that covers the pixel: a gather in
//                           a fixed order, no atomics.
// Launch: 1-D, 256 threads per block, grid = min(ceil(total / 256), 2^20) blocks.
//
// Semantics (PyTorch's): the launcher computes OH and OW (tinyalex.shapes.pool_output_size,
// floor or ceil mode; either way every window starts inside the image or the top/left
// padding, and padding <= kernel / 2, so every window holds a real pixel). Max pooling
// pads with -inf, so padding never wins. argmax is the flat index h*W + w into the
// unpadded input plane of the FIRST maximum in row-major window order (a later tie does
// not replace it); the scan starts at the first real pixel, so it is never padding, even
// in a window of -inf. A NaN always takes over, as in PyTorch, so a window with a NaN
// gives NaN. Average pooling pads with zeros, so its windows are clipped to the image too;
// the launcher computes torch's divisors (count_include_pad, divisor_override) once, on
// the host (tinyalex.shapes.avg_pool_divisors), and passes them as an (OH, OW) array.

template <typename T>
__global__ void max_pool2d_forward(const T* __restrict__ x, T* __restrict__ y,
                                   int* __restrict__ argmax,
                                   int N, int C, int H, int W, int kh, int kw, int sh, int sw,
                                   int ph, int pw, int OH, int OW)
{
    const long long L = (long long)OH * OW;
    const long long total = (long long)N * C * L;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)gridDim.x * blockDim.x) {
        const long long plane = t / L;                    // n*C + c
        const int l = (int)(t - plane * L);
        const int oh = l / OW;
        const int ow = l - oh * OW;
        const T* xc = x + plane * H * W;                  // x[n, c]
        // The window clipped to the real pixels: -inf padding could never win.
        const int h_lo = max(oh * sh - ph, 0);
        const int h_hi = min(oh * sh - ph + kh, H);
        const int w_lo = max(ow * sw - pw, 0);
        const int w_hi = min(ow * sw - pw + kw, W);
        int best_index = h_lo * W + w_lo;
        T best = xc[best_index];
        for (int h = h_lo; h < h_hi; ++h) {
            for (int w = w_lo; w < w_hi; ++w) {
                const T v = xc[h * W + w];
                if (v > best || isnan(v)) {               // strict: the first maximum stays
                    best = v;
                    best_index = h * W + w;
                }
            }
        }
        y[t] = best;
        argmax[t] = best_index;
    }
}

template <typename T>
__global__ void max_pool2d_backward(const T* __restrict__ gy, const int* __restrict__ argmax,
                                    T* __restrict__ gx,
                                    int N, int C, int H, int W, int kh, int kw, int sh, int sw,
                                    int ph, int pw, int OH, int OW)
{
    const long long HW = (long long)H * W;
    const long long total = (long long)N * C * HW;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)gridDim.x * blockDim.x) {
        const long long plane = t / HW;                   // n*C + c
        const int hw = (int)(t - plane * HW);             // this pixel's index in its plane
        const int hp = hw / W + ph;                       // padded coordinates
        const int wp = hw % W + pw;
        // Window oh covers padded rows [oh*sh, oh*sh + kh), so it covers hp for
        // oh in [oh_lo, oh_hi). Likewise for columns.
        const int oh_lo = hp < kh ? 0 : (hp - kh) / sh + 1;
        const int oh_hi = min(hp / sh + 1, OH);
        const int ow_lo = wp < kw ? 0 : (wp - kw) / sw + 1;
        const int ow_hi = min(wp / sw + 1, OW);
        const long long base = plane * OH * OW;           // gy[n, c] and argmax[n, c]
        T sum = T(0);
        for (int oh = oh_lo; oh < oh_hi; ++oh) {
            for (int ow = ow_lo; ow < ow_hi; ++ow) {
                const long long o = base + oh * OW + ow;
                if (argmax[o] == hw) {
                    sum += gy[o];
                }
            }
        }
        gx[t] = sum;
    }
}


template <typename T>
__global__ void avg_pool2d_forward(const T* __restrict__ x, const T* __restrict__ divisor,
                                   T* __restrict__ y,
                                   int N, int C, int H, int W, int kh, int kw, int sh, int sw,
                                   int ph, int pw, int OH, int OW)
{
    const long long L = (long long)OH * OW;
    const long long total = (long long)N * C * L;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)gridDim.x * blockDim.x) {
        const long long plane = t / L;                    // n*C + c
        const int l = (int)(t - plane * L);               // oh*OW + ow
        const int oh = l / OW;
        const int ow = l - oh * OW;
        const T* xc = x + plane * H * W;                  // x[n, c]
        const int h_lo = max(oh * sh - ph, 0);            // zero padding adds nothing
        const int h_hi = min(oh * sh - ph + kh, H);
        const int w_lo = max(ow * sw - pw, 0);
        const int w_hi = min(ow * sw - pw + kw, W);
        T sum = T(0);
        for (int h = h_lo; h < h_hi; ++h) {
            for (int w = w_lo; w < w_hi; ++w) {
                sum += xc[h * W + w];
            }
        }
        y[t] = sum / divisor[l];
    }
}

template <typename T>
__global__ void avg_pool2d_backward(const T* __restrict__ gy, const T* __restrict__ divisor,
                                    T* __restrict__ gx,
                                    int N, int C, int H, int W, int kh, int kw, int sh, int sw,
                                    int ph, int pw, int OH, int OW)
{
    const long long HW = (long long)H * W;
    const long long total = (long long)N * C * HW;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)gridDim.x * blockDim.x) {
        const long long plane = t / HW;                   // n*C + c
        const int hw = (int)(t - plane * HW);
        const int hp = hw / W + ph;                       // padded coordinates
        const int wp = hw % W + pw;
        // Window oh covers padded rows [oh*sh, oh*sh + kh); likewise columns.
        const int oh_lo = hp < kh ? 0 : (hp - kh) / sh + 1;
        const int oh_hi = min(hp / sh + 1, OH);
        const int ow_lo = wp < kw ? 0 : (wp - kw) / sw + 1;
        const int ow_hi = min(wp / sw + 1, OW);
        const T* gyc = gy + plane * OH * OW;              // gy[n, c]
        T sum = T(0);
        for (int oh = oh_lo; oh < oh_hi; ++oh) {
            for (int ow = ow_lo; ow < ow_hi; ++ow) {
                sum += gyc[oh * OW + ow] / divisor[oh * OW + ow];
            }
        }
        gx[t] = sum;
    }
}
