// emulator.h: CUDA's device-side vocabulary for the host C++ compiler.
//
// The CUDA emulator (tests/cuda_emulator) compiles each kernels/*.cu file unchanged with
// g++, force-including this header (-include emulator.h). It maps the CUDA keywords onto
// plain C++ and the built-in variables and intrinsics onto calls into the emulator's
// runtime (runtime.cc), which runs every CUDA thread as a fiber:
//
//   __global__, __device__, __host__   nothing: a kernel is an ordinary function template
//   __shared__                         static: one object per kernel instantiation, shared
//                                      by the fibers of the block that is running
//   threadIdx, blockIdx, blockDim,     the running fiber's coordinates, by value
//   gridDim
//   __syncthreads()                    a barrier across the block's fibers
//   __shfl_sync, __shfl_up_sync,       an exchange among the 32 lanes of a warp
//   __shfl_down_sync, __shfl_xor_sync
//   min, max, exp, log, pow, ...       the float overload for float and the double one
//                                      for double, as in CUDA's math library
//
// The end of this file holds the templates of the generated trailer that exports each
// kernel instantiation to Python (see build.py).
#pragma once

#include <math.h>      // in C++ this brings std::exp(float), std::isnan, ... into scope
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <type_traits>
#include <utility>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __shared__ static
#define __launch_bounds__(...)

struct uint3 {
    unsigned int x, y, z;
};
typedef uint3 dim3;

constexpr int warpSize = 32;

extern "C" {
// The runtime (runtime.cc, not instrumented) answers for the fiber that is running.
uint3 emu_thread_idx(void);
uint3 emu_block_idx(void);
uint3 emu_block_dim(void);
uint3 emu_grid_dim(void);
void emu_syncthreads(void);
unsigned long long emu_shuffle(int kind, unsigned int mask, unsigned long long bits,
                               int lane_argument, int width);
}

#define threadIdx (emu_thread_idx())
#define blockIdx (emu_block_idx())
#define blockDim (emu_block_dim())
#define gridDim (emu_grid_dim())
#define __syncthreads() emu_syncthreads()

// --- warp shuffles: the value travels as its bytes, so any type of up to 8 bytes works ---
enum { EMU_SHFL_IDX = 0, EMU_SHFL_UP = 1, EMU_SHFL_DOWN = 2, EMU_SHFL_XOR = 3 };

template <typename T>
inline T emu_shuffle_value(int kind, unsigned int mask, T var, int lane_argument, int width)
{
    static_assert(sizeof(T) <= 8, "warp shuffles move values of at most 8 bytes");
    unsigned long long bits = 0;
    memcpy(&bits, &var, sizeof(T));
    bits = emu_shuffle(kind, mask, bits, lane_argument, width);
    memcpy(&var, &bits, sizeof(T));
    return var;
}

template <typename T>
inline T __shfl_sync(unsigned int mask, T var, int src_lane, int width = warpSize)
{
    return emu_shuffle_value(EMU_SHFL_IDX, mask, var, src_lane, width);
}

template <typename T>
inline T __shfl_up_sync(unsigned int mask, T var, unsigned int delta, int width = warpSize)
{
    return emu_shuffle_value(EMU_SHFL_UP, mask, var, (int)delta, width);
}

template <typename T>
inline T __shfl_down_sync(unsigned int mask, T var, unsigned int delta, int width = warpSize)
{
    return emu_shuffle_value(EMU_SHFL_DOWN, mask, var, (int)delta, width);
}

template <typename T>
inline T __shfl_xor_sync(unsigned int mask, T var, int lane_mask, int width = warpSize)
{
    return emu_shuffle_value(EMU_SHFL_XOR, mask, var, lane_mask, width);
}

// --- math: CUDA's overloads (min/max for integers and floats, the fast-math spellings) ---
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned int min(unsigned int a, unsigned int b) { return a < b ? a : b; }
inline unsigned int max(unsigned int a, unsigned int b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __fdividef(float x, float y) { return x / y; }

// --- the exports the generated trailer instantiates per kernel (see build.py) -----------
namespace emu {

// The C type of a kernel parameter, as Python checks it: "const float*", "int", ...
template <typename T> struct type_name;  // undefined: a parameter type the emulator cannot pass
template <> struct type_name<bool> { static constexpr const char* value = "bool"; };
template <> struct type_name<int> { static constexpr const char* value = "int"; };
template <> struct type_name<unsigned int> { static constexpr const char* value = "unsigned int"; };
template <> struct type_name<long long> { static constexpr const char* value = "long long"; };
template <> struct type_name<unsigned long long> {
    static constexpr const char* value = "unsigned long long";
};
template <> struct type_name<float> { static constexpr const char* value = "float"; };
template <> struct type_name<double> { static constexpr const char* value = "double"; };

inline void append(char* out, int capacity, int& used, const char* text)
{
    for (; *text != '\0' && used + 1 < capacity; ++text) {
        out[used++] = *text;
    }
    out[used] = '\0';
}

template <typename P>
void append_type(char* out, int capacity, int& used)
{
    if constexpr (std::is_pointer<P>::value) {
        using Pointee = typename std::remove_pointer<P>::type;
        if (std::is_const<Pointee>::value) {
            append(out, capacity, used, "const ");
        }
        append(out, capacity, used, type_name<typename std::remove_cv<Pointee>::type>::value);
        append(out, capacity, used, "*");
    } else {
        append(out, capacity, used, type_name<P>::value);
    }
}

// Writes the parameter types, comma-separated, into out; returns the count.
template <typename... P>
int describe(void (*)(P...), char* out, int capacity)
{
    int used = 0;
    int index = 0;
    out[0] = '\0';
    ((append(out, capacity, used, index++ ? "," : ""), append_type<P>(out, capacity, used)), ...);
    return (int)sizeof...(P);
}

// Parameter I of the kernel, read from its 8-byte slot of the launch's parameter space.
template <typename P>
P parameter(const unsigned long long* slot)
{
    P value;
    memcpy(&value, slot, sizeof(P));
    return value;
}

template <typename... P, size_t... I>
void call(void (*kernel)(P...), const unsigned long long* slots, std::index_sequence<I...>)
{
    kernel(parameter<P>(slots + I)...);
}

template <typename... P>
void call(void (*kernel)(P...), const unsigned long long* slots)
{
    call(kernel, slots, std::index_sequence_for<P...>{});
}

}  // namespace emu

// One kernel instantiation, exported as emu_run_<i> (the body of every thread) and
// emu_describe_<i> (its parameter types).
#define EMU_PUBLIC extern "C" __attribute__((visibility("default")))
#define EMU_EXPORT(i, ...)                                                                  \
    EMU_PUBLIC void emu_run_##i(const unsigned long long* slots)                            \
    {                                                                                       \
        emu::call(&__VA_ARGS__, slots);                                                     \
    }                                                                                       \
    EMU_PUBLIC int emu_describe_##i(char* out, int capacity)                                \
    {                                                                                       \
        return emu::describe(&__VA_ARGS__, out, capacity);                                  \
    }
