/* Batch normalisation op (core/ops), PyTorch semantics: per channel (dim 1) of
 * [N,C,...] inputs ([N,C] included). Training normalises with the batch mean and
 * biased variance and, when running stats are given, updates them in place
 * (running_var gets the unbiased variance); eval normalises with the running
 * statistics. Without running stats, eval also uses the batch statistics
 * (track_running_stats=False).
 *
 * op_params[0]: 1 when the batch statistics normalise (training or no running
 * stats); op_params[2]: the activation fused after the normalisation
 * (DfqPrivBnAct: none, ReLU or ReLU6, dfq_priv_batchnorm_act); op_fparams:
 * momentum, eps. op_aux: float[2C], the mean then 1/sqrt(var
 * + eps) that normalised each channel, for the backward (and for anyone who
 * wants to see them).
 *
 * Each channel is handled by one thread (channels go in pairs, whose sums run
 * side by side), its planes visited in order, with sums in double over fixed
 * lanes: results do not depend on the thread count. The backward with a fused
 * activation recomputes its mask from x (the forward's expression) rather
 * than reading y, where a probe finds that this gives the same bits
 * (dfq_bn_act_from_x_exact). */
#include <math.h>
#include <string.h>

#include "dfq-op-private.h"

#define DFQ_BN_LANES 8
#define DFQ_BN_PAR_MIN 32768

/* The planes of the next image that a sums pass asks for while it reads the
 * current ones (up to three streams of a channel pair), NULL where none. */
typedef struct {
    const float *p[6];
    int n;
} DfqBnNext;

/* Every stream of @nx in one burst (the portable paths). */
static void
dfq_bn_prefetch_all (const DfqBnNext *nx, gint64 len)
{
    for (int s = 0; s < nx->n; s++)
        dfq_priv_prefetch (nx->p[s], len);
}

/* sum(a) and sum(a*b) (or sum(a*a) when b == NULL) over n floats, in double.
 * Lanes keep independent accumulators so the loop vectorises without reordering
 * any sum (the compiler may not reassociate): same result every run. */
DFQ_PRIV_SIMD_CLONES static void
dfq_bn_sums (const float *restrict a, const float *restrict b, gint64 n, double *restrict sa, double *restrict sab)
{
    double la[DFQ_BN_LANES] = { 0 }, lab[DFQ_BN_LANES] = { 0 };
    gint64 k = 0;
    if (b == NULL) {
        for (; k + DFQ_BN_LANES <= n; k += DFQ_BN_LANES)
            for (int l = 0; l < DFQ_BN_LANES; l++) {
                double v = a[k + l];
                la[l] += v;
                lab[l] += v * v;
            }
        for (; k < n; k++) {
            double v = a[k];
            la[0] += v;
            lab[0] += v * v;
        }
    } else {
        for (; k + DFQ_BN_LANES <= n; k += DFQ_BN_LANES)
            for (int l = 0; l < DFQ_BN_LANES; l++) {
                double v = a[k + l];
                la[l] += v;
                lab[l] += v * (double) b[k + l];
            }
        for (; k < n; k++) {
            double v = a[k];
            la[0] += v;
            lab[0] += v * (double) b[k];
        }
    }
    /* Lane order, through locals: *sa and *sab never alias, and a load and
     * a store around each add would lengthen this chain of dependent adds. */
    double ta = *sa, tab = *sab;
    for (int l = 0; l < DFQ_BN_LANES; l++) {
        ta += la[l];
        tab += lab[l];
    }
    *sa = ta;
    *sab = tab;
}

/* Two channels' lane accumulators into their totals, in lane order, through
 * locals (as in dfq_bn_sums). */
static inline void
dfq_bn_lanes_into (const double *la0, const double *lab0, const double *la1, const double *lab1,
                   double *restrict sa0, double *restrict sab0, double *restrict sa1, double *restrict sab1)
{
    double t0 = *sa0, tb0 = *sab0, t1 = *sa1, tb1 = *sab1;
    for (int l = 0; l < DFQ_BN_LANES; l++) {
        t0 += la0[l];
        tb0 += lab0[l];
        t1 += la1[l];
        tb1 += lab1[l];
    }
    *sa0 = t0;
    *sab0 = tb0;
    *sa1 = t1;
    *sab1 = tb1;
}

/* dfq_bn_sums of two planes of the same length that belong to two channels:
 * @a0 (with @b0) into *sa0 / *sab0 and @a1 (with @b1) into *sa1 / *sab1. Each
 * plane's lanes and their sum into its channel's totals are exactly those of
 * dfq_bn_sums, so the result is bit for bit that of two calls. One loop over
 * both keeps twice as many independent add chains in flight: one plane's
 * lanes are bound by the add latency, and so is the lane-order sum into the
 * channel's total (the whole of it for small planes, 7x7 say). */
DFQ_PRIV_SIMD_CLONES static void
dfq_bn_sums2 (const float *restrict a0, const float *restrict b0, const float *restrict a1,
              const float *restrict b1, gint64 n, double *restrict sa0, double *restrict sab0,
              double *restrict sa1, double *restrict sab1)
{
    double la0[DFQ_BN_LANES] = { 0 }, lab0[DFQ_BN_LANES] = { 0 };
    double la1[DFQ_BN_LANES] = { 0 }, lab1[DFQ_BN_LANES] = { 0 };
    gint64 k = 0;
    if (b0 == NULL) {
        for (; k + DFQ_BN_LANES <= n; k += DFQ_BN_LANES)
            for (int l = 0; l < DFQ_BN_LANES; l++) {
                double v0 = a0[k + l], v1 = a1[k + l];
                la0[l] += v0;
                lab0[l] += v0 * v0;
                la1[l] += v1;
                lab1[l] += v1 * v1;
            }
        for (; k < n; k++) {
            double v0 = a0[k], v1 = a1[k];
            la0[0] += v0;
            lab0[0] += v0 * v0;
            la1[0] += v1;
            lab1[0] += v1 * v1;
        }
    } else {
        for (; k + DFQ_BN_LANES <= n; k += DFQ_BN_LANES)
            for (int l = 0; l < DFQ_BN_LANES; l++) {
                double v0 = a0[k + l], v1 = a1[k + l];
                la0[l] += v0;
                lab0[l] += v0 * (double) b0[k + l];
                la1[l] += v1;
                lab1[l] += v1 * (double) b1[k + l];
            }
        for (; k < n; k++) {
            double v0 = a0[k], v1 = a1[k];
            la0[0] += v0;
            lab0[0] += v0 * (double) b0[k];
            la1[0] += v1;
            lab1[0] += v1 * (double) b1[k];
        }
    }
    dfq_bn_lanes_into (la0, lab0, la1, lab1, sa0, sab0, sa1, sab1);
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#include <immintrin.h>

/* dfq_bn_sums2 with AVX-512: lane l of a vector of 8 doubles is the lane
 * accumulator la[l] (lab[l]) of the loop above, and the products are added in
 * one fused multiply-add, as the compiler contracts them in the x86-64-v3
 * clone that AVX-512 machines would run otherwise: the same sums bit for bit
 * (the compiled clone spilled its lanes and converted floats one at a time). */
__attribute__ ((target ("avx512f,fma"))) static void
dfq_bn_sums2_avx512 (const float *restrict a0, const float *restrict b0, const float *restrict a1,
                     const float *restrict b1, gint64 n, double *restrict sa0, double *restrict sab0,
                     double *restrict sa1, double *restrict sab1, const DfqBnNext *nx)
{
    __m512d va0 = _mm512_setzero_pd (), vab0 = _mm512_setzero_pd ();
    __m512d va1 = _mm512_setzero_pd (), vab1 = _mm512_setzero_pd ();
    gint64 k = 0;
    for (; k + DFQ_BN_LANES <= n; k += DFQ_BN_LANES) {
        if (k % 16 == 0) /* one line of each next plane per line read */
            for (int s = 0; s < nx->n; s++)
                __builtin_prefetch (nx->p[s] + k, 0, 3);
        const __m512d v0 = _mm512_cvtps_pd (_mm256_loadu_ps (a0 + k));
        const __m512d v1 = _mm512_cvtps_pd (_mm256_loadu_ps (a1 + k));
        const __m512d w0 = b0 != NULL ? _mm512_cvtps_pd (_mm256_loadu_ps (b0 + k)) : v0;
        const __m512d w1 = b1 != NULL ? _mm512_cvtps_pd (_mm256_loadu_ps (b1 + k)) : v1;
        va0 = _mm512_add_pd (va0, v0);
        vab0 = _mm512_fmadd_pd (v0, w0, vab0);
        va1 = _mm512_add_pd (va1, v1);
        vab1 = _mm512_fmadd_pd (v1, w1, vab1);
    }
    double la0[DFQ_BN_LANES], lab0[DFQ_BN_LANES], la1[DFQ_BN_LANES], lab1[DFQ_BN_LANES];
    _mm512_storeu_pd (la0, va0);
    _mm512_storeu_pd (lab0, vab0);
    _mm512_storeu_pd (la1, va1);
    _mm512_storeu_pd (lab1, vab1);
    for (; k < n; k++) {
        const double v0 = a0[k], v1 = a1[k];
        la0[0] += v0;
        lab0[0] = fma (v0, b0 != NULL ? (double) b0[k] : v0, lab0[0]);
        la1[0] += v1;
        lab1[0] = fma (v1, b1 != NULL ? (double) b1[k] : v1, lab1[0]);
    }
    dfq_bn_lanes_into (la0, lab0, la1, lab1, sa0, sab0, sa1, sab1);
}
#define DFQ_BN_HAVE_AVX512 1
#endif

/* dfq_bn_sums2 through the fastest path this CPU has, asking for the planes
 * of @nx meanwhile: on AVX-512 a line of each per line read (a burst of the
 * whole next planes up front stalled on the outstanding misses), else all
 * of them first. */
static inline void
dfq_bn_sums2_any (const float *a0, const float *b0, const float *a1, const float *b1, gint64 n, double *sa0,
                  double *sab0, double *sa1, double *sab1, const DfqBnNext *nx)
{
#ifdef DFQ_BN_HAVE_AVX512
    if (dfq_priv_cpu_avx512 ()) {
        dfq_bn_sums2_avx512 (a0, b0, a1, b1, n, sa0, sab0, sa1, sab1, nx);
        return;
    }
#endif
    dfq_bn_prefetch_all (nx, n);
    dfq_bn_sums2 (a0, b0, a1, b1, n, sa0, sab0, sa1, sab1);
}

/* The gradient that reaches the normalisation through the fused activation:
 * gy where the activation passed it (0 < y < 6 for ReLU6, y > 0 for ReLU, read
 * off its output y, which is inside those bounds exactly where its input was),
 * 0 elsewhere: the values the relu / relu6 backward would have written. */
DFQ_PRIV_SIMD_CLONES static void
dfq_bn_act_mask_plane (const float *restrict yp, const float *restrict gyp, float *restrict out, gint64 n, int act)
{
    /* gyp[k] read unconditionally: a select, not a masked load (slow on AMD) */
    if (act == DFQ_PRIV_BN_ACT_RELU6)
#pragma omp simd
        for (gint64 k = 0; k < n; k++) {
            const float g = gyp[k];
            out[k] = yp[k] > 0.0f && yp[k] < 6.0f ? g : 0.0f;
        }
    else
#pragma omp simd
        for (gint64 k = 0; k < n; k++) {
            const float g = gyp[k];
            out[k] = yp[k] > 0.0f ? g : 0.0f;
        }
}

/* The per-channel constants of the forward's normalisation, for the two
 * channels of a pair: the backward recomputes the activation's mask from x
 * with them (dfq_bn_act_mask_x_plane) instead of reading y. */
typedef struct {
    float m[2], a[2], b[2];
} DfqBnAffine2;

/* The largest pre-activation value the fused activation passes a gradient
 * through: below 6 for ReLU6, any for ReLU (+inf included, as y > 0 would). */
static inline float
dfq_bn_act_hi (int act)
{
    return act == DFQ_PRIV_BN_ACT_RELU6 ? nextafterf (6.0f, 0.0f) : INFINITY;
}

/* The gradient the activation passes at input x: gy where v = (x - m) a + b,
 * the expression of dfq_bn_normalize_plane, lies in (0, @hi], which is
 * exactly where its output y lies strictly inside the activation's range;
 * else 0. */
static inline float
dfq_bn_act_pass (float x, float gy, float m, float a, float b, float hi)
{
    const float v = (x - m) * a + b;
    return v > 0.0f && v <= hi ? gy : 0.0f;
}

/* dfq_bn_act_mask_plane with the mask recomputed from the input
 * (dfq_bn_act_pass): reads x and gy, not y, one stream less. Used only where
 * dfq_bn_act_from_x_exact says the clones agree with the path through y. */
DFQ_PRIV_SIMD_CLONES static void
dfq_bn_act_mask_x_plane (const float *restrict xp, const float *restrict gyp, float *restrict out, gint64 n,
                         float m, float a, float b, int act)
{
    const float hi = dfq_bn_act_hi (act);
#pragma omp simd
    for (gint64 k = 0; k < n; k++)
        out[k] = dfq_bn_act_pass (xp[k], gyp[k], m, a, b, hi);
}

/* The backward of the normalisation (dfq_bn_backward_plane) through the fused
 * activation, its mask recomputed from x (dfq_bn_act_pass): gx (+)= a (g -
 * mdy) - kx (x - m). One pass reading x and gy, where the masked gradient was
 * written first and read back. */
DFQ_PRIV_SIMD_CLONES static void
dfq_bn_act_backward_plane (const float *restrict xp, const float *restrict gyp, float *restrict gxp, gint64 n,
                           float m, float a, float b, float mdy, float kx, int act, gboolean fresh)
{
    const float hi = dfq_bn_act_hi (act);
    if (fresh)
#pragma omp simd
        for (gint64 k = 0; k < n; k++) {
            const float g = dfq_bn_act_pass (xp[k], gyp[k], m, a, b, hi);
            gxp[k] = a * (g - mdy) - kx * (xp[k] - m);
        }
    else
#pragma omp simd
        for (gint64 k = 0; k < n; k++) {
            const float g = dfq_bn_act_pass (xp[k], gyp[k], m, a, b, hi);
            gxp[k] += a * (g - mdy) - kx * (xp[k] - m);
        }
}

/* Where the backward puts the gradient masked by the fused activation: plane
 * (channel k of the pair, image i) at base + i img_stride + k ch_stride. */
typedef struct {
    float *base;
    gint64 img_stride, ch_stride;
} DfqBnMasked;

/* The sums of the @nj (1 or 2) channels from @j0 over their @n planes of
 * @inner values (of @a, and with @b when not NULL), plane by plane in order:
 * dfq_bn_sums per plane and channel, two channels at a time. With @mk, @a is
 * first masked by the fused activation @act into the planes @mk describes:
 * the mask read off the output @y (dfq_bn_act_mask_plane), or with @af (and
 * @y NULL) recomputed from @b, the input (dfq_bn_act_mask_x_plane). */
static void
dfq_bn_channel_sums (const float *a, const float *b, gint64 n, gint64 c, gint64 inner, gint64 j0, int nj,
                     const float *y, int act, const DfqBnMasked *mk, const DfqBnAffine2 *af, double *sa,
                     double *sab)
{
    for (gint64 i = 0; i < n; i++) {
        const gint64 o = (i * c + j0) * inner;
        const float *a0 = a + o, *a1 = a + o + inner;
        DfqBnNext nx = { { NULL }, 0 };
        if (i + 1 < n)
            for (int k = 0; k < nj; k++) {
                const gint64 on = o + c * inner + k * inner;
                nx.p[nx.n++] = a + on;
                if (b != NULL)
                    nx.p[nx.n++] = b + on;
                if (y != NULL)
                    nx.p[nx.n++] = y + on;
            }
        if (mk != NULL) {
            float *m0 = mk->base + i * mk->img_stride;
            for (int k = 0; k < nj; k++) {
                const gint64 ok = o + k * inner;
                if (af != NULL)
                    dfq_bn_act_mask_x_plane (b + ok, a + ok, m0 + k * mk->ch_stride, inner, af->m[k], af->a[k],
                                             af->b[k], act);
                else
                    dfq_bn_act_mask_plane (y + ok, a + ok, m0 + k * mk->ch_stride, inner, act);
            }
            a0 = m0;
            a1 = m0 + mk->ch_stride;
        }
        if (nj == 2) {
            dfq_bn_sums2_any (a0, b ? b + o : NULL, a1, b ? b + o + inner : NULL, inner, &sa[0], &sab[0], &sa[1],
                              &sab[1], &nx);
        } else {
            dfq_bn_prefetch_all (&nx, inner);
            dfq_bn_sums (a0, b ? b + o : NULL, inner, &sa[0], &sab[0]);
        }
    }
}

/* y = (x - m) a + b over one plane, then the fused activation @act: the
 * expressions of the relu / relu6 ops, so the values are theirs bit for bit
 * (the normalisation is the same expression in every branch, and so rounds
 * the same way). */
DFQ_PRIV_SIMD_CLONES static void
dfq_bn_normalize_plane (const float *restrict xp, float *restrict yp, gint64 n, float m, float a, float b, int act)
{
    if (act == DFQ_PRIV_BN_ACT_RELU6)
#pragma omp simd
        for (gint64 k = 0; k < n; k++) {
            const float v = (xp[k] - m) * a + b;
            yp[k] = v > 0.0f ? (v < 6.0f ? v : 6.0f) : 0.0f;
        }
    else if (act == DFQ_PRIV_BN_ACT_RELU)
#pragma omp simd
        for (gint64 k = 0; k < n; k++) {
            const float v = (xp[k] - m) * a + b;
            yp[k] = v > 0.0f ? v : 0.0f;
        }
    else
#pragma omp simd
        for (gint64 k = 0; k < n; k++)
            yp[k] = (xp[k] - m) * a + b;
}

/* gx += a (gy - mdy) - kx (x - m) over one plane (gx = ... when @fresh). */
DFQ_PRIV_SIMD_CLONES static void
dfq_bn_backward_plane (const float *restrict xp, const float *restrict gyp, float *restrict gxp, gint64 n,
                       float m, float a, float mdy, float kx, gboolean fresh)
{
    if (fresh)
#pragma omp simd
        for (gint64 k = 0; k < n; k++)
            gxp[k] = a * (gyp[k] - mdy) - kx * (xp[k] - m);
    else
#pragma omp simd
        for (gint64 k = 0; k < n; k++)
            gxp[k] += a * (gyp[k] - mdy) - kx * (xp[k] - m);
}

/* dfq_bn_backward_plane, fresh, with gy in gx's place: gx = a (gx - mdy) -
 * kx (x - m), the same expression. */
DFQ_PRIV_SIMD_CLONES static void
dfq_bn_backward_plane_in_place (const float *restrict xp, float *restrict gxp, gint64 n, float m, float a, float mdy,
                                float kx)
{
#pragma omp simd
    for (gint64 k = 0; k < n; k++)
        gxp[k] = a * (gxp[k] - mdy) - kx * (xp[k] - m);
}

/* The per-channel constants of the normalisation y = (x - fm) a + b from the
 * channel's mean and variance: one function for the op and for the fused
 * epilogue of dfq_priv_bn_eval_coeffs, so that both compute the same bits. */
static inline void
dfq_bn_coeffs (double mean, double var, float eps, const float *gamma, const float *beta,
               float *fm, float *istd, float *a, float *b)
{
    *fm = (float) mean;
    *istd = (float) (1.0 / sqrt (var + (double) eps));
    *a = gamma ? *gamma * *istd : *istd;
    *b = beta ? *beta : 0.0f;
}

void
dfq_priv_bn_eval_coeffs (const DfqTensor *gamma, const DfqTensor *beta, const DfqTensor *running_mean,
                         const DfqTensor *running_var, float eps, float *mean, float *scale, float *shift)
{
    const float *g = gamma ? dfq_tensor_f32 (gamma) : NULL;
    const float *be = beta ? dfq_tensor_f32 (beta) : NULL;
    const float *rm = dfq_tensor_f32 (running_mean), *rv = dfq_tensor_f32 (running_var);
    const gint64 c = dfq_tensor_numel (running_mean);
    for (gint64 j = 0; j < c; j++) {
        float istd;
        dfq_bn_coeffs (rm[j], rv[j], eps, g ? &g[j] : NULL, be ? &be[j] : NULL, &mean[j], &istd, &scale[j],
                       &shift[j]);
    }
}

/* Which rounding dfq_bn_normalize_plane does, found once by running it: the
 * clone the loader picked and the compiler's contraction decide, not this
 * file. (x - m) a + b with x = 1 + 2^-12, m = 0, a = 1 + 2^-12,
 * b = -(1 + 2^-11): the exact value 2^-24 survives only a fused multiply-add. */
DfqPrivBnRounding
dfq_priv_bn_eval_rounding (void)
{
    static gsize once = 0;
    static DfqPrivBnRounding rounding = DFQ_PRIV_BN_ROUNDING_UNKNOWN;
    if (g_once_init_enter (&once)) {
        enum { N = 67 }; /* a vector body and a remainder in every clone */
        float x[N], y[N];
        const float one = 1.0f, e12 = ldexpf (1.0f, -12), e11 = ldexpf (1.0f, -11);
        for (int k = 0; k < N; k++)
            x[k] = one + e12;
        dfq_bn_normalize_plane (x, y, N, 0.0f, one + e12, -(one + e11), DFQ_PRIV_BN_ACT_NONE);
        const float want_fma = fmaf (one + e12, one + e12, -(one + e11));
        volatile float prod = (one + e12) * (one + e12); /* rounded on its own */
        const float want_sep = prod + -(one + e11);
        int n_fma = 0, n_sep = 0;
        for (int k = 0; k < N; k++) {
            n_fma += y[k] == want_fma;
            n_sep += y[k] == want_sep;
        }
        if (want_fma != want_sep && n_fma == N)
            rounding = DFQ_PRIV_BN_ROUNDING_FMA;
        else if (want_fma != want_sep && n_sep == N)
            rounding = DFQ_PRIV_BN_ROUNDING_SEPARATE;
        g_once_init_leave (&once, 1);
    }
    return rounding;
}

/* One probe of dfq_bn_act_from_x_exact: the mask and both backward forms
 * through x against those through y, on one set of values (@boundary: the
 * values where a fused multiply-add and a separate product round apart at 0,
 * see dfq_priv_bn_eval_rounding; else values straddling 0 and 6). */
static gboolean
dfq_bn_act_probe (int act, gboolean boundary)
{
    enum { N = 67 }; /* a vector body and a remainder in every clone */
    float x[N], gy[N], y[N], g_y[N], g_x[N], dx_y[N], dx_x[N], acc_y[N], acc_x[N];
    const float one = 1.0f, e12 = ldexpf (1.0f, -12), e11 = ldexpf (1.0f, -11);
    const float m = boundary ? 0.0f : 0.25f, a = boundary ? one + e12 : 1.5f, b = boundary ? -(one + e11) : 0.5f;
    const float mdy = 0.03125f, kx = 0.0211f;
    for (int k = 0; k < N; k++) {
        x[k] = boundary ? one + e12 : (float) (k - 20) * 0.37f;
        gy[k] = (k % 2 ? -0.5f : 0.75f) + 0.01f * (float) k;
        acc_y[k] = acc_x[k] = 0.1f * (float) k;
    }
    dfq_bn_normalize_plane (x, y, N, m, a, b, act);
    dfq_bn_act_mask_plane (y, gy, g_y, N, act);
    dfq_bn_act_mask_x_plane (x, gy, g_x, N, m, a, b, act);
    memcpy (dx_y, g_y, sizeof dx_y);
    dfq_bn_backward_plane_in_place (x, dx_y, N, m, a, mdy, kx);
    dfq_bn_act_backward_plane (x, gy, dx_x, N, m, a, b, mdy, kx, act, TRUE);
    dfq_bn_backward_plane (x, g_y, acc_y, N, m, a, mdy, kx, FALSE);
    dfq_bn_act_backward_plane (x, gy, acc_x, N, m, a, b, mdy, kx, act, FALSE);
    return memcmp (g_y, g_x, sizeof g_y) == 0 && memcmp (dx_y, dx_x, sizeof dx_y) == 0 &&
           memcmp (acc_y, acc_x, sizeof acc_y) == 0;
}

/* Whether the backward may recompute the fused activation's mask from x
 * (dfq_bn_act_mask_x_plane, dfq_bn_act_backward_plane) and get the bits of
 * the path that reads y: the clones the loader picked and the compiler's
 * contraction decide, so it is found once by running both. Otherwise the
 * path through y runs. */
static gboolean
dfq_bn_act_from_x_exact (void)
{
    static gsize once = 0;
    static gboolean exact = FALSE;
    if (g_once_init_enter (&once)) {
        gboolean ok = TRUE;
        for (int act = DFQ_PRIV_BN_ACT_RELU; act <= DFQ_PRIV_BN_ACT_RELU6; act++)
            ok = ok && dfq_bn_act_probe (act, TRUE) && dfq_bn_act_probe (act, FALSE);
        exact = ok;
        if (!ok)
            g_info ("batchnorm: the backward reads the fused activation's mask off its output (recomputed from "
                    "the input, it would not give the same bits with this build's rounding)");
        g_once_init_leave (&once, 1);
    }
    return exact;
}

DfqTensor *
dfq_priv_batchnorm_act (DfqArena *arena, DfqTensor *x, DfqTensor *gamma, DfqTensor *beta,
                        DfqTensor *running_mean, DfqTensor *running_var, gboolean training, float momentum,
                        float eps, DfqPrivBnAct act)
{
    g_return_val_if_fail (arena != NULL && x != NULL, NULL);
    g_return_val_if_fail (x->dtype == DFQ_DTYPE_F32 && x->n_dims >= 2, NULL);
    g_return_val_if_fail (dfq_tensor_is_contiguous (x), NULL);
    const gint64 c = x->shape[1];
    g_return_val_if_fail (gamma == NULL || (gamma->dtype == DFQ_DTYPE_F32 && dfq_tensor_numel (gamma) == c), NULL);
    g_return_val_if_fail (beta == NULL || (beta->dtype == DFQ_DTYPE_F32 && dfq_tensor_numel (beta) == c), NULL);
    g_return_val_if_fail ((running_mean == NULL) == (running_var == NULL), NULL);
    g_return_val_if_fail (running_mean == NULL || (running_mean->dtype == DFQ_DTYPE_F32 && dfq_tensor_numel (running_mean) == c), NULL);
    g_return_val_if_fail (running_var == NULL || (running_var->dtype == DFQ_DTYPE_F32 && dfq_tensor_numel (running_var) == c), NULL);
    g_return_val_if_fail (eps >= 0.0f && momentum >= 0.0f && momentum <= 1.0f, NULL);
    g_return_val_if_fail (act >= DFQ_PRIV_BN_ACT_NONE && act <= DFQ_PRIV_BN_ACT_RELU6, NULL);

    DfqTensor *srcs[5] = { x, gamma, beta, running_mean, running_var };
    DfqTensor *t = dfq_priv_op_new_uninit (arena, DFQ_OP_BATCHNORM, DFQ_DTYPE_F32, x->n_dims, x->shape, 5, srcs);
    t->op_params[0] = training || running_mean == NULL;
    t->op_params[1] = training ? 1 : 0;
    t->op_params[2] = act;
    t->op_fparams[0] = momentum;
    t->op_fparams[1] = eps;
    t->op_aux = dfq_arena_alloc_uninit (arena, (gsize) (2 * MAX (c, 1)) * sizeof (float));
    return dfq_priv_op_run (t);
}

DfqTensor *
dfq_batchnorm (DfqArena *arena, DfqTensor *x, DfqTensor *gamma, DfqTensor *beta,
               DfqTensor *running_mean, DfqTensor *running_var,
               gboolean training, float momentum, float eps)
{
    return dfq_priv_batchnorm_act (arena, x, gamma, beta, running_mean, running_var, training, momentum, eps,
                                   DFQ_PRIV_BN_ACT_NONE);
}

void
dfq_op_batchnorm_forward (DfqTensor *dst)
{
    const DfqTensor *xt = dst->src[0];
    const float *x = dfq_tensor_f32 (xt);
    const float *gamma = dst->src[1] ? dfq_tensor_f32 (dst->src[1]) : NULL;
    const float *beta = dst->src[2] ? dfq_tensor_f32 (dst->src[2]) : NULL;
    float *rmean = dst->src[3] ? dfq_tensor_f32 (dst->src[3]) : NULL;
    float *rvar = dst->src[4] ? dfq_tensor_f32 (dst->src[4]) : NULL;
    const gboolean batch_stats = dst->op_params[0] != 0;
    const gboolean update = dst->op_params[1] != 0 && rmean != NULL;
    const float momentum = dst->op_fparams[0], eps = dst->op_fparams[1];
    const int act = dst->op_params[2];
    const gint64 n = xt->shape[0], c = xt->shape[1], inner = dfq_priv_inner_size (xt, 1);
    const gint64 m = n * inner;
    float *mean_out = dst->op_aux, *istd_out = (float *) dst->op_aux + c;
    float *y = dfq_tensor_f32 (dst);

    /* Channels in pairs (their sums side by side, see dfq_bn_sums2); each
     * channel's values are the same as when it is handled alone. */
    const gint64 n_pairs = (c + 1) / 2;
#pragma omp parallel for schedule(dynamic, 1) if (n * c * inner > DFQ_BN_PAR_MIN)
    for (gint64 jp = 0; jp < n_pairs; jp++) {
        const gint64 j0 = 2 * jp;
        const int nj = (int) MIN (2, c - j0);
        double s2[2] = { 0.0, 0.0 }, ss2[2] = { 0.0, 0.0 };
        if (batch_stats && inner != 1)
            dfq_bn_channel_sums (x, NULL, n, c, inner, j0, nj, NULL, DFQ_PRIV_BN_ACT_NONE, NULL, NULL, s2, ss2);
        for (gint64 j = j0; j < j0 + nj; j++) {
            double mean, var;
            if (batch_stats) {
                double s = s2[j - j0], ss = ss2[j - j0];
                if (inner == 1) {
                    for (gint64 i = 0; i < n; i++) { /* [N,C]: a strided column */
                        double v = x[i * c + j];
                        s += v;
                        ss += v * v;
                    }
                }
                mean = m > 0 ? s / (double) m : 0.0;
                var = m > 0 ? MAX (ss / (double) m - mean * mean, 0.0) : 0.0;
                if (update) {
                    double unbiased = m > 1 ? var * (double) m / (double) (m - 1) : var;
                    rmean[j] = (float) ((1.0 - momentum) * rmean[j] + momentum * mean);
                    rvar[j] = (float) ((1.0 - momentum) * rvar[j] + momentum * unbiased);
                }
            } else {
                mean = rmean[j];
                var = rvar[j];
            }
            float fm, istd, a, b;
            dfq_bn_coeffs (mean, var, eps, gamma ? &gamma[j] : NULL, beta ? &beta[j] : NULL, &fm, &istd, &a, &b);
            mean_out[j] = fm;
            istd_out[j] = istd;
            for (gint64 i = 0; i < n; i++) {
                const gint64 o = (i * c + j) * inner;
                dfq_bn_normalize_plane (x + o, y + o, inner, fm, a, b, act);
            }
        }
    }
}

/* The per-channel constants of the forward for the @nj channels from @j0. */
static void
dfq_bn_affine2 (const float *mean, const float *istd, const float *gamma, const float *beta, gint64 j0, int nj,
                DfqBnAffine2 *af)
{
    for (int k = 0; k < nj; k++) {
        const gint64 j = j0 + k;
        af->m[k] = mean[j];
        af->a[k] = gamma ? gamma[j] * istd[j] : istd[j];
        af->b[k] = beta ? beta[j] : 0.0f;
    }
}

void
dfq_op_batchnorm_backward (DfqTensor *dst, DfqArena *scratch)
{
    const DfqTensor *xt = dst->src[0];
    const float *x = dfq_tensor_f32 (xt);
    const float *gamma = dst->src[1] ? dfq_tensor_f32 (dst->src[1]) : NULL;
    const float *beta = dst->src[2] ? dfq_tensor_f32 (dst->src[2]) : NULL;
    const float *gy = dfq_tensor_f32 (dst->grad);
    gboolean fresh;
    float *gx = dfq_priv_src_grad_of_fresh (dst, 0, scratch, &fresh);
    float *ggamma = dfq_priv_grad_of (dst->src[1], scratch);
    float *gbeta = dfq_priv_grad_of (dst->src[2], scratch);
    const gboolean batch_stats = dst->op_params[0] != 0;
    const int act = dst->op_params[2];
    const gint64 n = xt->shape[0], c = xt->shape[1], inner = dfq_priv_inner_size (xt, 1);
    const gint64 m = n * inner;
    const float *mean = dst->op_aux, *istd = (const float *) dst->op_aux + c;

    if (m == 0)
        return;
    /* With a fused activation, the incoming gradient masked by it. Where the
     * mask recomputed from x is exact (dfq_bn_act_from_x_exact), the sums
     * pass masks into two planes per thread and the second pass masks again,
     * neither reading y; else the mask is read off y, written once into the
     * input gradient's own planes where those are written fresh (then
     * updated in place), else into two planes per thread and masked again. */
    const gboolean from_x = act != DFQ_PRIV_BN_ACT_NONE && dfq_bn_act_from_x_exact ();
    const float *y = act != DFQ_PRIV_BN_ACT_NONE && !from_x ? dfq_tensor_f32 (dst) : NULL;
    const gboolean in_gx = y != NULL && gx != NULL && fresh;
    float *masked = NULL;
    if (from_x || (y != NULL && !in_gx))
        masked = dfq_arena_alloc_uninit (scratch, (gsize) dfq_get_num_threads () * 2 * (gsize) inner * sizeof (float));
    const gint64 n_pairs = (c + 1) / 2; /* as in the forward */
#pragma omp parallel for schedule(dynamic, 1) if (n * c * inner > DFQ_BN_PAR_MIN)
    for (gint64 jp = 0; jp < n_pairs; jp++) {
        const gint64 j0 = 2 * jp;
        const int nj = (int) MIN (2, c - j0);
        float *buf = masked != NULL ? masked + (gsize) dfq_priv_thread_id () * 2 * (gsize) inner : NULL;
        DfqBnMasked mk = { buf, 0, inner };
        if (in_gx)
            mk = (DfqBnMasked) { gx + j0 * inner, c * inner, inner };
        DfqBnAffine2 af;
        dfq_bn_affine2 (mean, istd, gamma, beta, j0, nj, &af);
        /* sum(dy) and sum(dy * x), then sum(dy * xhat) = istd (sum(dy x) - mean sum(dy)) */
        double sdy2[2] = { 0.0, 0.0 }, sdyx2[2] = { 0.0, 0.0 };
        dfq_bn_channel_sums (gy, x, n, c, inner, j0, nj, y, act, act != DFQ_PRIV_BN_ACT_NONE ? &mk : NULL,
                             from_x ? &af : NULL, sdy2, sdyx2);
        for (gint64 j = j0; j < j0 + nj; j++) {
            const double sdy = sdy2[j - j0], sdyx = sdyx2[j - j0];
            const double sdyxhat = (double) istd[j] * (sdyx - (double) mean[j] * sdy);
            if (ggamma != NULL)
                ggamma[j] += (float) sdyxhat;
            if (gbeta != NULL)
                gbeta[j] += (float) sdy;
            if (gx == NULL)
                continue;
            const float fm = mean[j], a = af.a[j - j0];
            /* Batch statistics: dx = a (dy - mean(dy) - xhat mean(dy xhat)), since
             * the mean and variance depend on x too. Running statistics are
             * constants: dx = a dy. */
            const float mdy = batch_stats ? (float) (sdy / (double) m) : 0.0f;
            const float kx = batch_stats ? (float) ((double) a * istd[j] * sdyxhat / (double) m) : 0.0f;
            for (gint64 i = 0; i < n; i++) {
                const gint64 o = (i * c + j) * inner;
                if (from_x) {
                    dfq_bn_act_backward_plane (x + o, gy + o, gx + o, inner, fm, a, af.b[j - j0], mdy, kx, act,
                                               fresh);
                    continue;
                }
                if (in_gx) {
                    dfq_bn_backward_plane_in_place (x + o, gx + o, inner, fm, a, mdy, kx);
                    continue;
                }
                const float *gyp = gy + o;
                if (buf != NULL) {
                    dfq_bn_act_mask_plane (y + o, gyp, buf, inner, act);
                    gyp = buf;
                }
                dfq_bn_backward_plane (x + o, gyp, gx + o, inner, fm, a, mdy, kx, fresh);
            }
        }
    }
}
