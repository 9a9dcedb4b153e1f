// The selective scan of Mamba-1 on CPU, forward and backward, with the delta bias and softplus, the
// D skip and the SiLU(z) gate fused in: each direction is one pass over time, the state held in
// registers. Compiled at first use by framework/models/selective_scan_kernel.py (the system C++
// compiler, no PyTorch headers) and called through ctypes on the tensors' memory.
//
// Layouts (X innermost): delta, u, y, gout, du, ddelta, dz: (B, L, D) contiguous; z: (B, L, D) with
// rows ldz apart (a view into Mamba's in_proj output); Bm, Cm, dB, dC: (B, L, N); At, dAt: (N, D)
// (A transposed); bias, Dskip, dbias, dD: (D,); last, dlast: (B, N, D). Per batch b, channel d and
// state n:
//
//     dt_t = softplus(delta_t + bias)    a_t = exp(dt_t A_n)    h_t = a_t h_{t-1} + dt_t u_t B_t
//     y_t = (sum_n C_t h_t + Dskip u_t) * silu(z_t)
//
// Channels are walked in blocks of W = 16 or 8 floats (one vector register, below) as GCC/Clang
// vector types: the block's N x W state stays in registers for the whole sequence. The backward
// recomputes the block's states, decays, dt and pre-gate output into an L x N x W scratch (94 KiB at
// L = 93, N = 16, W = 16: in L2), then runs the adjoint g_t = C_t gy_t + a_{t+1} g_{t+1} backwards in time (the formulas
// of _SelectiveScanFn in selective_scan.py). Threads split the batch; dB and dC of one b are summed
// over its channel blocks lane-wise and reduced once; dA, dD and dbias are summed per thread.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include <omp.h>

namespace {

// W = 16 where the compiler targets AVX-512 (one zmm register of floats), else 8 (one AVX2 register).
// Measured on the 2-core AMD EPYC (AVX-512), one thread: 16 lanes made the forward + backward 1.3x to
// 1.8x faster than 8 (14.3 against 21.7 ms at B, D, N, L = 32, 164, 16, 93; benchmarks/README.md).
#if defined(__AVX512F__)
constexpr int W = 16;
#else
constexpr int W = 8;
#endif
constexpr int MAX_N = 64;

template <typename T>
struct VecOf;
template <>
struct VecOf<float> {
    typedef float type __attribute__((vector_size(W * sizeof(float))));
};
template <>
struct VecOf<double> {
    typedef double type __attribute__((vector_size(W * sizeof(double))));
};
template <typename T>
using V = typename VecOf<T>::type;
typedef int32_t VI __attribute__((vector_size(W * sizeof(int32_t))));

// exp for float: Cephes' expf range reduction and polynomial (relative error ~1e-7), on all lanes.
// Inputs are clamped to [-87, 88]: exp(-87) = 1.6e-38 stands in for anything smaller (the decays
// multiply states, so the difference is below 1e-37).
inline V<float> exp_of(V<float> x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    V<float> k = x * 1.44269504088896341f;
    k = (k + 12582912.0f) - 12582912.0f;  // round to nearest (1.5 * 2^23)
    V<float> r = x - k * 0.693359375f;
    r = r - k * -2.12194440e-4f;
    V<float> p = r * 1.9875691500e-4f + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    VI bits = (__builtin_convertvector(k, VI) + 127) << 23;
    return p * __builtin_bit_cast(V<float>, bits);
}

// log for float on x >= 1 (here 1 + exp(.)): Cephes' logf (relative error ~1e-7).
inline V<float> log_ge1(V<float> x) {
    VI bits = __builtin_bit_cast(VI, x);
    V<float> e = __builtin_convertvector(((bits >> 23) & 0xff) - 126, V<float>);
    V<float> m = __builtin_bit_cast(V<float>, (bits & 0x007fffff) | 0x3f000000);  // in [0.5, 1)
    const auto low = m < 0.707106781186547524f;
    e = low ? e - 1.0f : e;
    m = low ? m + m - 1.0f : m - 1.0f;
    const V<float> z = m * m;
    V<float> y = m * 7.0376836292e-2f - 1.1514610310e-1f;
    y = y * m + 1.1676998740e-1f;
    y = y * m - 1.2420140846e-1f;
    y = y * m + 1.4249322787e-1f;
    y = y * m - 1.6668057665e-1f;
    y = y * m + 2.0000714765e-1f;
    y = y * m - 2.4999993993e-1f;
    y = y * m + 3.3333331174e-1f;
    y = y * m * z + e * -2.12194440e-4f - 0.5f * z;
    return m + y + e * 0.693359375f;
}

// softplus with PyTorch's threshold (x > 20: x). log1p(e) as log(1 + e) e / ((1 + e) - 1), which
// keeps its relative accuracy for small e (Goldberg's trick).
inline V<float> softplus_of(V<float> x) {
    const V<float> e = exp_of(x), u = 1.0f + e;
    const V<float> lp = u == 1.0f ? e : log_ge1(u) * (e / (u - 1.0f));
    return x > 20.0f ? x : lp;
}

// float64 (the tests): the C library's functions, lane by lane, exact.
inline V<double> exp_of(V<double> x) {
    for (int j = 0; j < W; ++j) x[j] = std::exp(x[j]);
    return x;
}

inline V<double> softplus_of(V<double> x) {
    for (int j = 0; j < W; ++j) x[j] = x[j] > 20.0 ? x[j] : std::log1p(std::exp(x[j]));
    return x;
}

template <typename T>
inline V<T> sigmoid_of(V<T> x) {
    return T(1) / (T(1) + exp_of(-x));
}

// Lanes j < width of p (the rest 0), and back.
template <typename T>
inline V<T> load(const T* p, int width) {
    V<T> v = {};
    if (width == W) {
        std::memcpy(&v, p, sizeof(v));
    } else {
        for (int j = 0; j < width; ++j) v[j] = p[j];
    }
    return v;
}

template <typename T>
inline void store(T* p, V<T> v, int width) {
    if (width == W) {
        std::memcpy(p, &v, sizeof(v));
    } else {
        for (int j = 0; j < width; ++j) p[j] = v[j];
    }
}

template <typename T>
inline T lane_sum(V<T> v) {
    T acc = 0;
    for (int j = 0; j < W; ++j) acc += v[j];
    return acc;
}

}  // namespace

// What one call takes; mirrored by ScanArgs in selective_scan_kernel.py. Optional inputs and the
// outputs a call does not write are null.
extern "C" struct ScanArgs {
    int64_t B, L, D, N, ldz;
    int32_t softplus, threads;
    const void *delta, *bias, *u, *At, *Bm, *Cm, *Dskip, *z;  // inputs
    const void *gout, *dlast;  // the backward's incoming gradients (null: zero)
    void *y, *last;  // forward outputs
    void *du, *ddelta, *dz, *dB, *dC, *dAt, *dD, *dbias;  // backward outputs
};

namespace {

// One batch row b and channel block d0 .. d0 + width; the pointers of ScanArgs, typed.
template <typename T>
struct Block {
    const ScanArgs& a;
    int64_t b, d0;
    int width;

    const T* in(const void* p) const { return static_cast<const T*>(p); }
    int64_t row(int64_t t) const { return (b * a.L + t) * a.D + d0; }
    V<T> vec(const void* p, int64_t t) const { return load(in(p) + row(t), width); }
    V<T> param(const void* p) const { return p != nullptr ? load(in(p) + d0, width) : V<T>{}; }
    V<T> z_at(int64_t t) const { return load(in(a.z) + (b * a.L + t) * a.ldz + d0, width); }
    V<T> dt_at(int64_t t, V<T> bias) const {
        const V<T> raw = vec(a.delta, t) + bias;
        return a.softplus ? softplus_of(raw) : raw;
    }
};

// The forward from a zero state. Writes y and the last state where ScanArgs has them; with kKeep
// every step's state and decay into Hs, As (L x N), and its dt and pre-gate output into dts, ys (L).
template <typename T, bool kKeep>
void forward_block(const Block<T>& k, V<T>* Hs, V<T>* As, V<T>* dts, V<T>* ys) {
    const ScanArgs& a = k.a;
    const int64_t L = a.L, N = a.N;
    V<T> h[MAX_N], A[MAX_N];
    for (int64_t n = 0; n < N; ++n) {
        h[n] = V<T>{};
        A[n] = load(k.in(a.At) + n * a.D + k.d0, k.width);
    }
    const V<T> bias = k.param(a.bias), Dv = k.param(a.Dskip);
    for (int64_t t = 0; t < L; ++t) {
        const V<T> dt = k.dt_at(t, bias), u = k.vec(a.u, t);
        const V<T> du = dt * u;
        V<T> y = {};
        const T* Bt = k.in(a.Bm) + (k.b * L + t) * N;
        const T* Ct = k.in(a.Cm) + (k.b * L + t) * N;
        for (int64_t n = 0; n < N; ++n) {
            const V<T> decay = exp_of(dt * A[n]);
            h[n] = decay * h[n] + du * Bt[n];  // h_t = a_t h_{t-1} + dt_t u_t B_t
            y += h[n] * Ct[n];
            if (kKeep) {
                Hs[t * N + n] = h[n];
                As[t * N + n] = decay;
            }
        }
        y += Dv * u;
        if (kKeep) {
            dts[t] = dt;
            ys[t] = y;
        } else if (a.y != nullptr) {
            if (a.z != nullptr) {
                const V<T> z = k.z_at(t);
                y = y * (z * sigmoid_of<T>(z));
            }
            store(static_cast<T*>(a.y) + k.row(t), y, k.width);
        }
    }
    if (!kKeep && a.last != nullptr)
        for (int64_t n = 0; n < N; ++n) store(static_cast<T*>(a.last) + (k.b * N + n) * a.D + k.d0, h[n], k.width);
}

// Per-thread scratch and accumulators of the backward.
template <typename T>
struct Scratch {
    std::vector<V<T>> Hs, As, dBv, dCv, dts, ys;
    T *dA, *dD, *dbias;  // this thread's shares, (N, D), (D,), (D,)
};

// The backward of one block: du, ddelta, dz (its rows); its shares of dB and dC (into s.dBv, s.dCv,
// summed over channels lane-wise), dA, dD and dbias (into the thread's accumulators).
template <typename T>
void backward_block(const Block<T>& k, Scratch<T>& s) {
    const ScanArgs& a = k.a;
    const int64_t L = a.L, N = a.N, D = a.D;
    forward_block<T, true>(k, s.Hs.data(), s.As.data(), s.dts.data(), s.ys.data());
    V<T> g[MAX_N], A[MAX_N], dAv[MAX_N];
    for (int64_t n = 0; n < N; ++n) {
        g[n] = a.dlast != nullptr ? load(k.in(a.dlast) + (k.b * N + n) * D + k.d0, k.width) : V<T>{};
        A[n] = load(k.in(a.At) + n * D + k.d0, k.width);
        dAv[n] = V<T>{};
    }
    const V<T> bias = k.param(a.bias), Dv = k.param(a.Dskip);
    V<T> dDv = {}, dbv = {};
    for (int64_t t = L - 1; t >= 0; --t) {
        const V<T> dt = s.dts[t], u = k.vec(a.u, t);
        const V<T> du = dt * u;
        V<T> gy = a.gout != nullptr ? k.vec(a.gout, t) : V<T>{};
        if (a.z != nullptr) {  // y = ypre silu(z)
            const V<T> z = k.z_at(t), sig = sigmoid_of<T>(z);
            store(static_cast<T*>(a.dz) + k.row(t), gy * s.ys[t] * sig * (T(1) + z * (T(1) - sig)), k.width);
            gy = gy * (z * sig);
        }
        dDv += gy * u;
        V<T> GB = {}, XA = {};
        const T* Bt = k.in(a.Bm) + (k.b * L + t) * N;
        const T* Ct = k.in(a.Cm) + (k.b * L + t) * N;
        V<T>* dBt = s.dBv.data() + t * N;
        V<T>* dCt = s.dCv.data() + t * N;
        const V<T>* Ht = s.Hs.data() + t * N;  // h_t; Ht[n - N] is h_{t-1}
        const V<T>* At_ = s.As.data() + t * N;  // a_t
        for (int64_t n = 0; n < N; ++n) {
            g[n] += gy * Ct[n];  // g_t = C_t gy_t + a_{t+1} g_{t+1}
            dCt[n] += gy * Ht[n];  // dC_t = sum_d gy_t h_t
            dBt[n] += g[n] * du;  // dB_t = sum_d g_t dt_t u_t
            GB += g[n] * Bt[n];  // sum_n g_t B_t
            const V<T> q = At_[n] * g[n];  // a_t g_t: what the adjoint carries to t - 1
            if (t > 0) {  // h_0 = 0
                const V<T> X = q * Ht[n - N];  // a_t g_t h_{t-1}: d loss / d (dt_t A)
                XA += X * A[n];
                dAv[n] += X * dt;
            }
            g[n] = q;
        }
        store(static_cast<T*>(a.du) + k.row(t), dt * GB + Dv * gy, k.width);
        V<T> dd = u * GB + XA;  // d loss / d dt
        if (a.softplus) {  // PyTorch's softplus_backward: e / (e + 1), e = exp(x), below the threshold
            const V<T> raw = k.vec(a.delta, t) + bias, e = exp_of(raw);
            dd = raw > T(20) ? dd : dd * (e / (e + T(1)));
        }
        store(static_cast<T*>(a.ddelta) + k.row(t), dd, k.width);
        dbv += dd;
    }
    for (int64_t n = 0; n < N; ++n) {
        T* p = s.dA + n * D + k.d0;
        store(p, load(p, k.width) + dAv[n], k.width);
    }
    store(s.dD + k.d0, load(s.dD + k.d0, k.width) + dDv, k.width);
    store(s.dbias + k.d0, load(s.dbias + k.d0, k.width) + dbv, k.width);
}

// body(b_begin, b_end, worker) on up to `threads` OpenMP threads, splitting the batch. Built with
// -fopenmp and loaded into a process where torch has loaded its libgomp.so.1, the library binds to
// that same runtime (one soname), so these regions run on torch's own thread pool: no threads of
// ours competing with torch's idle ones, which spin for a while after every parallel op.
template <typename F>
void over_batch(int64_t B, int threads, F body) {
    if (threads == 1) {
        body(0, B, 0);
        return;
    }
#pragma omp parallel num_threads(threads)
    {
        const int64_t w = omp_get_thread_num(), nt = omp_get_num_threads();
        body(B * w / nt, B * (w + 1) / nt, static_cast<int>(w));
    }
}

int clamp_threads(const ScanArgs& a) {
    return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(a.threads, a.B)));
}

template <typename T>
void forward(const ScanArgs& a) {
    over_batch(a.B, clamp_threads(a), [&](int64_t b0, int64_t b1, int) {
        for (int64_t b = b0; b < b1; ++b)
            for (int64_t d0 = 0; d0 < a.D; d0 += W)
                forward_block<T, false>(Block<T>{a, b, d0, static_cast<int>(std::min<int64_t>(W, a.D - d0))},
                                        nullptr, nullptr, nullptr, nullptr);
    });
}

// Sum the threads' (n,) shares into out (when not null).
template <typename T>
void reduce(const std::vector<T>& parts, int threads, size_t n, void* out) {
    if (out == nullptr) return;
    T* o = static_cast<T*>(out);
    for (size_t i = 0; i < n; ++i) {
        T acc = 0;
        for (int w = 0; w < threads; ++w) acc += parts[w * n + i];
        o[i] = acc;
    }
}

template <typename T>
void backward(const ScanArgs& a) {
    const int threads = clamp_threads(a);
    const size_t L = a.L, N = a.N, D = a.D, LN = L * N;
    std::vector<T> dA_part(threads * N * D, T(0)), dD_part(threads * D, T(0)), db_part(threads * D, T(0));
    over_batch(a.B, threads, [&](int64_t b0, int64_t b1, int w) {
        Scratch<T> s{std::vector<V<T>>(LN), std::vector<V<T>>(LN), std::vector<V<T>>(LN),
                     std::vector<V<T>>(LN), std::vector<V<T>>(L), std::vector<V<T>>(L),
                     dA_part.data() + w * N * D, dD_part.data() + w * D, db_part.data() + w * D};
        for (int64_t b = b0; b < b1; ++b) {
            std::fill(s.dBv.begin(), s.dBv.end(), V<T>{});
            std::fill(s.dCv.begin(), s.dCv.end(), V<T>{});
            for (int64_t d0 = 0; d0 < a.D; d0 += W)
                backward_block<T>(Block<T>{a, b, d0, static_cast<int>(std::min<int64_t>(W, a.D - d0))}, s);
            T* dB = static_cast<T*>(a.dB) + b * LN;
            T* dC = static_cast<T*>(a.dC) + b * LN;
            for (size_t i = 0; i < LN; ++i) {
                dB[i] = lane_sum<T>(s.dBv[i]);
                dC[i] = lane_sum<T>(s.dCv[i]);
            }
        }
    });
    reduce(dA_part, threads, N * D, a.dAt);
    reduce(dD_part, threads, D, a.dD);
    reduce(db_part, threads, D, a.dbias);
}

}  // namespace

extern "C" {

int scan_max_state() { return MAX_N; }
int64_t scan_args_size() { return sizeof(ScanArgs); }  // checked against the ctypes mirror
void scan_forward_f32(const ScanArgs* a) { forward<float>(*a); }
void scan_forward_f64(const ScanArgs* a) { forward<double>(*a); }
void scan_backward_f32(const ScanArgs* a) { backward<float>(*a); }
void scan_backward_f64(const ScanArgs* a) { backward<double>(*a); }

}  // extern "C"
