/* 1x1 stride-1 convolutions (pointwise convs) on AVX-512 CPUs: the forward of
 * the conv op (core/ops/dfq-op-conv2d.c) without BLAS.
 *
 * A 1x1 conv is y[n][co][p] = sum_c w[co][c] x[n][c][p] (+ b[co]): a GEMM per
 * image with K = Ci, which on MobileNetV2's planes is skinny (K = 16-320,
 * 16-784 columns). OpenBLAS ran those at about half the core's peak, packed
 * the same weights again for every image, zeroed y for beta = 0, and needed a
 * gather / scatter of the batch for small planes; the eval BN + ReLU6 was a
 * second pass over y. Here a tile is 8 output channels x 3 vectors of 16
 * positions (24 accumulators), where each vector holds 16 consecutive
 * positions of one image's plane (the last vector of a plane masked): the
 * vectors of the whole batch are numbered image by image, so small planes
 * need no copies. Each output is a sum over the input channels in order,
 * starting from +0, then the bias is added: the same for any tile, image and
 * thread, so the bits do not depend on the thread count. With an epilogue the
 * tile goes through BN, residual add and ReLU / ReLU6 before it is stored, in
 * the float operations of the separate ops (see dfq_priv_conv2d_fused).
 *
 * The weights are packed once per call, wpack[cb][c][t] = w[cb + t][c] (zero
 * past Co), from the result's arena. */
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "dfq-op-private.h"

#define DFQ_CONV1X1_COT 8 /* output channels per tile */
#define DFQ_CONV1X1_NV 3  /* vectors of 16 positions per tile */
#define DFQ_CONV1X1_PREFETCH 8 /* input channels ahead to prefetch */

typedef struct {
    gint64 n, ci, co, plane; /* images, channels in / out, positions per plane */
    gint64 vpp;              /* vectors per plane: ceil (plane / 16) */
    gint64 n_vec;            /* vectors in the batch: n * vpp */
    gint64 co_pad;           /* co rounded up to DFQ_CONV1X1_COT */
    gboolean accumulate;     /* y += the sums (no bias, no epilogue), else y = */
} DfqConv1x1Geom;

static void
dfq_conv1x1_geom (DfqConv1x1Geom *k, gint64 n, gint64 ci, gint64 co, gint64 plane, gboolean accumulate)
{
    k->n = n;
    k->ci = ci;
    k->co = co;
    k->plane = plane;
    k->vpp = (plane + 15) / 16;
    k->n_vec = n * k->vpp;
    k->co_pad = (co + DFQ_CONV1X1_COT - 1) / DFQ_CONV1X1_COT * DFQ_CONV1X1_COT;
    k->accumulate = accumulate;
}

gboolean
dfq_priv_conv1x1_usable (gint64 ci, gint64 co, gint64 plane)
{
    return ci >= 1 && co >= DFQ_CONV1X1_COT && plane >= 1 && dfq_priv_cpu_avx512 ();
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#include <immintrin.h>

/* Where vector @j of the batch reads and writes: the offsets of its first
 * position in x and y, and its lanes (0 past the batch: a padding vector). */
typedef struct {
    gint64 x_off, y_off;
    __mmask16 mask;
} DfqConv1x1Vec;

static inline void
dfq_conv1x1_vec (const DfqConv1x1Geom *k, gint64 j, DfqConv1x1Vec *v)
{
    if (j >= k->n_vec) {
        v->x_off = v->y_off = 0;
        v->mask = 0;
        return;
    }
    const gint64 img = j / k->vpp, p = (j % k->vpp) * 16, lanes = MIN (16, k->plane - p);
    v->x_off = img * k->ci * k->plane + p;
    v->y_off = img * k->co * k->plane + p;
    v->mask = (__mmask16) ((1u << lanes) - 1u);
}

/* Stores one tile: y = acc + b[co], then through the epilogue @ep when not
 * NULL, in the order and rounding of the separate ops (the conv op's store, the
 * eval BN as one fused multiply-add, the add op, relu: vmaxps (v, 0), which
 * is the op's select, NaN included; relu6: min (max (v, 0), 6)). */
__attribute__ ((target ("avx512f"), noinline)) static void
dfq_conv1x1_store (const DfqConv1x1Geom *k, const __m512 (*tile)[DFQ_CONV1X1_NV], const DfqConv1x1Vec *vec,
                   int nv, gint64 cb, float *restrict y, const float *b, const DfqPrivConvEpilogue *ep)
{
    const int n_t = (int) MIN (DFQ_CONV1X1_COT, k->co - cb);
    const __m512 zero = _mm512_setzero_ps (), six = _mm512_set1_ps (6.0f);
    for (int t = 0; t < n_t; t++) {
        const gint64 co = cb + t, c_off = co * k->plane;
        const __m512 bv = _mm512_set1_ps (b != NULL ? b[co] : 0.0f);
        for (int v = 0; v < nv; v++) {
            const __mmask16 m = vec[v].mask;
            if (m == 0)
                continue;
            float *d = y + vec[v].y_off + c_off;
            __m512 r = k->accumulate ? _mm512_add_ps (_mm512_maskz_loadu_ps (m, d), tile[t][v])
                                     : _mm512_add_ps (tile[t][v], bv);
            if (ep != NULL) {
                r = _mm512_fmadd_ps (_mm512_sub_ps (r, _mm512_set1_ps (ep->mean[co])), _mm512_set1_ps (ep->scale[co]),
                                     _mm512_set1_ps (ep->shift[co]));
                if (ep->residual != NULL)
                    r = _mm512_add_ps (r, _mm512_maskz_loadu_ps (m, ep->residual + vec[v].y_off + c_off));
                if (ep->relu || ep->relu6)
                    r = _mm512_max_ps (r, zero);
                if (ep->relu6)
                    r = _mm512_min_ps (r, six);
            }
            _mm512_mask_storeu_ps (d, m, r);
        }
    }
}

/* The tile of vectors j0 .. j0 + nv - 1 and output channels cb .. cb + 7;
 * @nv is a constant in each caller, so the accumulators stay in registers. */
__attribute__ ((target ("avx512f"), always_inline)) static inline void
dfq_conv1x1_tile_nv (const DfqConv1x1Geom *k, const float *restrict x, const float *restrict wpack,
                     float *restrict y, const float *b, const DfqPrivConvEpilogue *ep, gint64 j0, gint64 cb,
                     const int nv)
{
    DfqConv1x1Vec vec[DFQ_CONV1X1_NV];
    const float *xs[DFQ_CONV1X1_NV];
#pragma GCC unroll 4
    for (int v = 0; v < nv; v++) {
        dfq_conv1x1_vec (k, j0 + v, &vec[v]);
        xs[v] = x + vec[v].x_off;
    }
    __m512 acc[DFQ_CONV1X1_COT][DFQ_CONV1X1_NV];
#pragma GCC unroll 8
    for (int t = 0; t < DFQ_CONV1X1_COT; t++)
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++)
            acc[t][v] = _mm512_setzero_ps ();
    /* the lines this tile will store (and the residual's) are seldom in
     * cache: ask for them now, the sums take far longer */
    const int n_t = (int) MIN (DFQ_CONV1X1_COT, k->co - cb);
    for (int t = 0; t < n_t; t++)
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) {
            const gint64 o = vec[v].y_off + (cb + t) * k->plane;
            __builtin_prefetch (y + o, 1, 3);
            if (ep != NULL && ep->residual != NULL)
                __builtin_prefetch (ep->residual + o, 0, 3);
        }
    const float *wk = wpack + cb * k->ci;
    const gint64 plane = k->plane, pf = DFQ_CONV1X1_PREFETCH * plane;
    for (gint64 c = 0, off = 0; c < k->ci; c++, off += plane, wk += DFQ_CONV1X1_COT) {
        __m512 xv[DFQ_CONV1X1_NV];
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) {
            xv[v] = _mm512_maskz_loadu_ps (vec[v].mask, xs[v] + off);
            __builtin_prefetch (xs[v] + off + pf, 0, 3);
        }
#pragma GCC unroll 8
        for (int t = 0; t < DFQ_CONV1X1_COT; t++) {
            const __m512 wv = _mm512_set1_ps (wk[t]);
#pragma GCC unroll 4
            for (int v = 0; v < nv; v++)
                acc[t][v] = _mm512_fmadd_ps (xv[v], wv, acc[t][v]);
        }
    }
    /* through memory: the epilogue's constants next to the 24 accumulators
     * would make the compiler spill in the loop */
    __m512 tile[DFQ_CONV1X1_COT][DFQ_CONV1X1_NV];
#pragma GCC unroll 8
    for (int t = 0; t < DFQ_CONV1X1_COT; t++)
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++)
            tile[t][v] = acc[t][v];
    dfq_conv1x1_store (k, (const __m512 (*)[DFQ_CONV1X1_NV]) tile, vec, nv, cb, y, b, ep);
}

/* Tile (jg, cbi): vectors jg * nv .. and output channels 8 cbi .. */
__attribute__ ((target ("avx512f"))) static void
dfq_conv1x1_tile (const DfqConv1x1Geom *k, const float *x, const float *wpack, float *y, const float *b,
                  const DfqPrivConvEpilogue *ep, int nv, gint64 jg, gint64 cbi)
{
    const gint64 j0 = jg * nv, cb = cbi * DFQ_CONV1X1_COT;
    if (nv == 3)
        dfq_conv1x1_tile_nv (k, x, wpack, y, b, ep, j0, cb, 3);
    else if (nv == 2)
        dfq_conv1x1_tile_nv (k, x, wpack, y, b, ep, j0, cb, 2);
    else
        dfq_conv1x1_tile_nv (k, x, wpack, y, b, ep, j0, cb, 1);
}
#else
static void
dfq_conv1x1_tile (const DfqConv1x1Geom *k, const float *x, const float *wpack, float *y, const float *b,
                  const DfqPrivConvEpilogue *ep, int nv, gint64 jg, gint64 cbi)
{
    (void) k, (void) x, (void) wpack, (void) y, (void) b, (void) ep, (void) nv, (void) jg, (void) cbi;
    g_assert_not_reached ();
}
#endif

/* Every tile, over @n_threads threads (1: on the calling thread). Consecutive
 * tiles of a thread share their vectors: the input columns stay in cache
 * while every output channel block passes over them. */
static void
dfq_conv1x1_tiles (const DfqConv1x1Geom *k, const float *x, const float *wpack, float *y, const float *b,
                   const DfqPrivConvEpilogue *ep, int n_threads)
{
    const int nv = (int) MIN (DFQ_CONV1X1_NV, k->n_vec);
    const gint64 n_groups = (k->n_vec + nv - 1) / nv, n_cb = k->co_pad / DFQ_CONV1X1_COT;
    if (n_threads <= 1) {
        for (gint64 jg = 0; jg < n_groups; jg++)
            for (gint64 cbi = 0; cbi < n_cb; cbi++)
                dfq_conv1x1_tile (k, x, wpack, y, b, ep, nv, jg, cbi);
        return;
    }
#pragma omp parallel for collapse(2) schedule(static) num_threads(n_threads) if (n_groups * n_cb > 1)
    for (gint64 jg = 0; jg < n_groups; jg++)
        for (gint64 cbi = 0; cbi < n_cb; cbi++)
            dfq_conv1x1_tile (k, x, wpack, y, b, ep, nv, jg, cbi);
}

float *
dfq_priv_conv1x1_pack (DfqArena *arena, const float *w, gint64 cout, gint64 cin, gboolean transposed)
{
    const gint64 co_pad = (cout + DFQ_CONV1X1_COT - 1) / DFQ_CONV1X1_COT * DFQ_CONV1X1_COT;
    float *wpack = dfq_arena_alloc_uninit (arena, (gsize) (co_pad * cin) * sizeof (float));
    for (gint64 cb = 0; cb < co_pad; cb += DFQ_CONV1X1_COT)
        for (gint64 c = 0; c < cin; c++)
            for (gint64 t = 0; t < DFQ_CONV1X1_COT; t++) {
                const gint64 o = cb + t;
                wpack[cb * cin + c * DFQ_CONV1X1_COT + t] =
                    o >= cout ? 0.0f : transposed ? w[c * cout + o] : w[o * cin + c];
            }
    return wpack;
}

void
dfq_priv_conv1x1_forward (DfqArena *arena, const float *x, const float *w, const float *b, float *y, gint64 n,
                          gint64 ci, gint64 co, gint64 plane, const DfqPrivConvEpilogue *ep, int n_threads)
{
    DfqConv1x1Geom k;
    dfq_conv1x1_geom (&k, n, ci, co, plane, FALSE);
    if (k.n_vec == 0)
        return;
    const float *wpack = dfq_priv_conv1x1_pack (arena, w, co, ci, FALSE);
    dfq_conv1x1_tiles (&k, x, wpack, y, b, ep, n_threads);
}

void
dfq_priv_conv1x1_image (const float *wpack, const float *x, float *y, gint64 cin, gint64 cout, gint64 plane,
                        gboolean accumulate)
{
    DfqConv1x1Geom k;
    dfq_conv1x1_geom (&k, 1, cin, cout, plane, accumulate);
    if (k.n_vec > 0)
        dfq_conv1x1_tiles (&k, x, wpack, y, NULL, NULL, 1);
}
