// sgd.cu: one fused SGD step with momentum and weight decay, in place
// (tinyalex/kernels/cupy/sgd.py). PyTorch's rule (torch.optim.SGD):
//
//   g   = grad + weight_decay * param
//   buf = g                                          at the first step
//   buf = momentum * buf + (1 - dampening) * g       afterwards
//   g   = g + momentum * buf                         with Nesterov momentum, else g = buf
//   param -= lr * g
//
// With momentum == 0 there is no buffer: buf is never read or written, and g stays
// grad + weight_decay * param.
//
// Kernels, templated on T = float or double; param, grad and buf C-contiguous, n elements:
//   sgd_update<T>  updates param (and buf) in place. One thread per element, a
//                  grid-stride loop over n: one read of each array and one write of param
//                  and buf, where the unfused update makes five passes over memory.
// Launch: 1-D, 256 threads per block, grid = min(ceil(n / 256), 2^20) blocks.

template <typename T>
__global__ void sgd_update(T* __restrict__ param, const T* __restrict__ grad,
                           T* __restrict__ buf, long long n,
                           T lr, T momentum, T one_minus_dampening, T weight_decay,
                           int nesterov, int first_step)
{
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        const T p = param[i];
        T g = grad[i] + weight_decay * p;
        if (momentum != T(0)) {
            const T b = first_step ? g : momentum * buf[i] + one_minus_dampening * g;
            buf[i] = b;
            g = nesterov ? g + momentum * b : b;
        }
        param[i] = p - lr * g;
    }
}
