/* Depthwise 3x3 convs with padding 1, stride 1 or 2, on AVX-512 CPUs: the
 * forward of one plane straight from the input (also the stride-1 dX, with
 * the flipped taps), the weight-gradient sums of a plane pair, and the
 * stride-2 dX of a plane (core/ops/dfq-op-conv2d.c calls them for
 * MobileNetV2's depthwise layers).
 *
 * The portable path (dfq_dw3_plane in dfq-op-conv2d.c) copies each plane
 * zero-padded into phase planes, computes a grid with dropped columns, copies
 * the valid part out and, in eval, runs the BN + ReLU6 epilogue as one more
 * pass: five passes over a plane that is often only 7x7 or 4x4. Here each
 * output row is one or two vectors of 16 columns; a tap is a masked load of
 * the input row shifted by the tap's column (stride 2: two loads and a
 * permute picking every second column), with the lanes that fall in the
 * padding zeroed by the mask, so no copy is made. Each output is the bias
 * plus the nine taps in (i, j) order as fused multiply-adds, a tap in the
 * padding adding w * 0: the same operations as the portable grid where the
 * compiler contracts it (its x86-64-v3 clone), hence the same bits; the
 * epilogue then is the one of dfq_conv2d_epilogue_plane (eval BN as one fused
 * multiply-add, residual add, ReLU / ReLU6). Rows wider than 32 outputs take
 * the portable path. */
#include <string.h>

#include "dfq-op-private.h"

#define DFQ_DW3_FAST_MAX_WO (16 * DFQ_DW3_FAST_ROW_BLOCKS)

gboolean
dfq_priv_dw3_fast_usable (gint64 w, gint64 s)
{
    return (s == 1 || s == 2) && (w - 1) / s + 1 <= DFQ_DW3_FAST_MAX_WO && dfq_priv_cpu_avx512 ();
}

/* Lanes l of a load at column @c0 + l that lie inside [0, @w). */
static guint16
dfq_dw3_fast_lanes (gint64 c0, gint64 w)
{
    guint32 m = 0;
    for (int l = 0; l < 16; l++)
        if (c0 + l >= 0 && c0 + l < w)
            m |= 1u << l;
    return (guint16) m;
}

/* The masks of the loads dfq_dw3_fast_row_taps makes for output columns
 * c0 .. c0 + 15 (stride 1: columns c0 + j - 1; stride 2: 32 columns from
 * 2 c0 - 1 and 32 from 2 c0 + 1, 16 at a time), and of the block's outputs. */
static void
dfq_dw3_fast_row_masks (DfqPrivDw3Plan *plan)
{
    const gint64 w = plan->w;
    for (gint64 b = 0; b < DFQ_DW3_FAST_ROW_BLOCKS && b * 16 < plan->wo; b++) {
        const gint64 c0 = 16 * b;
        plan->row_out[b] = dfq_dw3_fast_lanes (c0, plan->wo);
        if (plan->s == 1)
            for (int j = 0; j < 3; j++)
                plan->row_load[b][j] = dfq_dw3_fast_lanes (c0 + j - 1, w);
        else
            for (int k = 0; k < 4; k++)
                plan->row_load[b][k] = dfq_dw3_fast_lanes (2 * c0 - 1 + (k / 2) * 2 + (k % 2) * 16, w);
    }
}

void
dfq_priv_dw3_fast_plan (gint64 h, gint64 w, gint64 s, DfqPrivDw3Plan *plan)
{
    memset (plan, 0, sizeof *plan);
    plan->h = h;
    plan->w = w;
    plan->s = s;
    plan->ho = (h - 1) / s + 1;
    plan->wo = (w - 1) / s + 1;
    /* Small stride-1 planes (7x7, 4x4): rows would fill a quarter to a half of
     * each vector, so the plane is taken flat, 16 positions q at a time, tap
     * (i, j) at q + (i - 1) w + j - 1 with the lanes whose neighbour lies in
     * the padding (or past the plane) masked off. */
    plan->dx2 = s == 2 && w <= 32;
    for (int b = 0; plan->dx2 && b < 2; b++)
        for (int l = 0; l < 16; l++) {
            const gint64 ix = 16 * b + l;
            if (ix >= w)
                continue;
            plan->dx2_in[b] |= (guint16) (1u << l);
            if (ix % 2 == 0 || (ix + 1) / 2 < plan->wo)
                plan->dx2_j01[b] |= (guint16) (1u << l);
            if (ix % 2 == 1)
                plan->dx2_odd[b] |= (guint16) (1u << l);
            if (8 * b + l < plan->wo)
                plan->dx2_dy[b] |= (guint16) (1u << l);
        }
    plan->flat = s == 1 && h * w <= 16 * DFQ_DW3_FAST_FLAT_VECS;
    if (!plan->flat) {
        dfq_dw3_fast_row_masks (plan);
        return;
    }
    plan->n_vec = (int) ((h * w + 15) / 16);
    for (int v = 0; v < plan->n_vec; v++)
        for (int l = 0; l < 16; l++) {
            const gint64 q = 16 * v + l, r = q / w, c = q % w;
            if (q >= h * w)
                continue;
            plan->out_mask[v] |= (guint16) (1u << l);
            for (int k = 0; k < 9; k++) {
                const gint64 rr = r + k / 3 - 1, cc = c + k % 3 - 1;
                if (rr >= 0 && rr < h && cc >= 0 && cc < w)
                    plan->tap_mask[v][k] |= (guint16) (1u << l);
            }
        }
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#include <immintrin.h>

/* The three taps (j = 0, 1, 2) of input row @xr for output columns c0 .. c0 + 15. */
__attribute__ ((target ("avx512f"), always_inline)) static inline void
dfq_dw3_fast_row_taps (const float *xr, gint64 s, gint64 c0, const __mmask16 *m, __m512 tap[3])
{
    if (s == 1) {
        for (int j = 0; j < 3; j++)
            tap[j] = _mm512_maskz_loadu_ps (m[j], xr + c0 + j - 1);
        return;
    }
    /* input column 2 (c0 + l) + j - 1: the even elements of the 32 from
     * 2 c0 - 1 (j = 0), their odd ones (j = 1), the even ones of the 32 from
     * 2 c0 + 1 (j = 2) */
    const __m512i even = _mm512_set_epi32 (30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odd = _mm512_set_epi32 (31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    const float *b0 = xr + 2 * c0 - 1, *b1 = xr + 2 * c0 + 1;
    const __m512 a0 = _mm512_maskz_loadu_ps (m[0], b0), a1 = _mm512_maskz_loadu_ps (m[1], b0 + 16);
    const __m512 d0 = _mm512_maskz_loadu_ps (m[2], b1), d1 = _mm512_maskz_loadu_ps (m[3], b1 + 16);
    tap[0] = _mm512_permutex2var_ps (a0, even, a1);
    tap[1] = _mm512_permutex2var_ps (a0, odd, a1);
    tap[2] = _mm512_permutex2var_ps (d0, even, d1);
}

/* Output row @r's vector at column @c0, finished: through the epilogue, stored. */
__attribute__ ((target ("avx512f"), always_inline)) static inline void
dfq_dw3_fast_store (__m512 a, float *y, gint64 r, gint64 wo, gint64 c0, __mmask16 out,
                    const DfqPrivConvEpilogue *ep, gint64 co, const float *res)
{
    if (ep != NULL) {
        const __m512 zero = _mm512_setzero_ps ();
        a = _mm512_fmadd_ps (_mm512_sub_ps (a, _mm512_set1_ps (ep->mean[co])), _mm512_set1_ps (ep->scale[co]),
                             _mm512_set1_ps (ep->shift[co]));
        if (res != NULL)
            a = _mm512_add_ps (a, _mm512_maskz_loadu_ps (out, res + r * wo + c0));
        if (ep->relu || ep->relu6)
            a = _mm512_max_ps (a, zero);
        if (ep->relu6)
            a = _mm512_min_ps (a, _mm512_set1_ps (6.0f));
    } else if (res != NULL) {
        a = _mm512_add_ps (a, _mm512_maskz_loadu_ps (out, res + r * wo + c0));
    }
    _mm512_mask_storeu_ps (y + r * wo + c0, out, a);
}

/* a = fma (w[3i + j], tap[j], a) for j = 0, 1, 2. */
__attribute__ ((target ("avx512f"), always_inline)) static inline __m512
dfq_dw3_fast_fma_row (__m512 a, const __m512 *wv, int i, const __m512 tap[3])
{
    for (int j = 0; j < 3; j++)
        a = _mm512_fmadd_ps (wv[i * 3 + j], tap[j], a);
    return a;
}

/* The input rows are read once each, in order, and each adds its taps to the
 * outputs that use it: output r takes row r s - 1 (i = 0), then r s (i = 1),
 * then r s + 1 (i = 2), the order of the sum. Two or three outputs are in
 * flight at a time, so their chains of multiply-adds overlap. */
__attribute__ ((target ("avx512f"))) void
dfq_priv_dw3_fast_plane (const DfqPrivDw3Plan *plan, const float *x, const float *wk, float bias, float *y,
                         const DfqPrivConvEpilogue *ep, gint64 co, const float *res)
{
    const gint64 h = plan->h, w = plan->w, s = plan->s, ho = plan->ho, wo = plan->wo;
    const __m512 zero = _mm512_setzero_ps (), bv = _mm512_set1_ps (bias);
    __m512 wv[9];
    for (int k = 0; k < 9; k++)
        wv[k] = _mm512_set1_ps (wk[k]);
    /* the next plane, which the caller most often runs next (a batch's
     * activations do not fit in cache): ask for it now */
    dfq_priv_prefetch (x + h * w, h * w);
    if (plan->flat) {
        for (int v = 0; v < plan->n_vec; v++) {
            __m512 a = bv;
            for (int k = 0; k < 9; k++) {
                const __m512 t = _mm512_maskz_loadu_ps (plan->tap_mask[v][k], x + 16 * v + (k / 3 - 1) * w + k % 3 - 1);
                a = _mm512_fmadd_ps (wv[k], t, a);
            }
            dfq_dw3_fast_store (a, y, 0, wo, 16 * v, plan->out_mask[v], ep, co, res);
        }
        return;
    }
    for (gint64 c0 = 0; c0 < wo; c0 += 16) {
        const __mmask16 out = plan->row_out[c0 / 16];
        const __mmask16 *m = plan->row_load[c0 / 16];
        __m512 tap[3] = { zero, zero, zero }; /* row -1: the padding */
        if (s == 1) {
            /* before row ri: prev = output ri - 1 (rows ri - 2, ri - 1 added), cur = output ri (row ri - 1) */
            __m512 prev = bv, cur = dfq_dw3_fast_fma_row (bv, wv, 0, tap);
            for (gint64 ri = 0; ri <= h; ri++) {
                if (ri < h)
                    dfq_dw3_fast_row_taps (x + ri * w, 1, c0, m, tap);
                else
                    tap[0] = tap[1] = tap[2] = zero;
                __m512 next = bv;
                if (ri + 1 < ho)
                    next = dfq_dw3_fast_fma_row (bv, wv, 0, tap);
                if (ri < ho)
                    cur = dfq_dw3_fast_fma_row (cur, wv, 1, tap);
                if (ri >= 1) {
                    prev = dfq_dw3_fast_fma_row (prev, wv, 2, tap);
                    dfq_dw3_fast_store (prev, y, ri - 1, wo, c0, out, ep, co, res);
                }
                prev = cur;
                cur = next;
            }
            continue;
        }
        /* stride 2: output r takes rows 2r - 1 (kept from output r - 1), 2r and 2r + 1 */
        __m512 below[3] = { zero, zero, zero };
        for (gint64 r = 0; r < ho; r++) {
            __m512 a = dfq_dw3_fast_fma_row (bv, wv, 0, below);
            const gint64 r1 = 2 * r, r2 = 2 * r + 1;
            tap[0] = tap[1] = tap[2] = zero;
            if (r1 < h)
                dfq_dw3_fast_row_taps (x + r1 * w, 2, c0, m, tap);
            a = dfq_dw3_fast_fma_row (a, wv, 1, tap);
            below[0] = below[1] = below[2] = zero;
            if (r2 < h)
                dfq_dw3_fast_row_taps (x + r2 * w, 2, c0, m, below);
            a = dfq_dw3_fast_fma_row (a, wv, 2, below);
            dfq_dw3_fast_store (a, y, r, wo, c0, out, ep, co, res);
        }
    }
}
/* Each output row's dY vector times the taps of the input rows it read. */
__attribute__ ((target ("avx512f"))) void
dfq_priv_dw3_fast_wgrad (const DfqPrivDw3Plan *plan, const float *x, const float *dy, const float *x_next,
                         const float *dy_next, float t[9])
{
    const gint64 h = plan->h, w = plan->w, s = plan->s, ho = plan->ho, wo = plan->wo;
    if (x_next != NULL)
        dfq_priv_prefetch (x_next, h * w);
    if (dy_next != NULL)
        dfq_priv_prefetch (dy_next, ho * wo);
    __m512 acc[9];
    for (int k = 0; k < 9; k++)
        acc[k] = _mm512_setzero_ps ();
    if (plan->flat) {
        for (int v = 0; v < plan->n_vec; v++) {
            const __m512 g = _mm512_maskz_loadu_ps (plan->out_mask[v], dy + 16 * v);
            for (int k = 0; k < 9; k++) {
                const __m512 tp = _mm512_maskz_loadu_ps (plan->tap_mask[v][k], x + 16 * v + (k / 3 - 1) * w + k % 3 - 1);
                acc[k] = _mm512_fmadd_ps (g, tp, acc[k]);
            }
        }
    } else if (s == 1) {
        /* each input row ri loaded once and multiplied into the dY rows that
         * read it (output ri + 1 - i for tap row i): every acc[k] still takes
         * its terms by output row in order, so the sums are those of the
         * output-row order below */
        for (gint64 c0 = 0; c0 < wo; c0 += 16) {
            const __mmask16 out = plan->row_out[c0 / 16];
            const __mmask16 *m = plan->row_load[c0 / 16];
            for (gint64 ri = 0; ri < h; ri++) {
                __m512 tap[3];
                dfq_dw3_fast_row_taps (x + ri * w, 1, c0, m, tap);
                for (int i = 0; i < 3; i++) {
                    const gint64 r = ri + 1 - i;
                    if (r < 0 || r >= ho)
                        continue;
                    const __m512 g = _mm512_maskz_loadu_ps (out, dy + r * wo + c0);
                    for (int j = 0; j < 3; j++)
                        acc[i * 3 + j] = _mm512_fmadd_ps (g, tap[j], acc[i * 3 + j]);
                }
            }
        }
    } else {
        /* stride 2: output r reads rows 2r - 1 (kept from output r - 1), 2r, 2r + 1 */
        for (gint64 c0 = 0; c0 < wo; c0 += 16) {
            const __mmask16 out = plan->row_out[c0 / 16];
            const __mmask16 *m = plan->row_load[c0 / 16];
            __m512 above[3] = { _mm512_setzero_ps (), _mm512_setzero_ps (), _mm512_setzero_ps () };
            for (gint64 r = 0; r < ho; r++) {
                const __m512 g = _mm512_maskz_loadu_ps (out, dy + r * wo + c0);
                __m512 tap[3];
                if (r > 0) /* row 2r - 1; row -1 is the padding */
                    for (int j = 0; j < 3; j++)
                        acc[j] = _mm512_fmadd_ps (g, above[j], acc[j]);
                for (int i = 1; i < 3; i++) {
                    const gint64 ri = 2 * r + i - 1;
                    if (ri >= h)
                        continue;
                    dfq_dw3_fast_row_taps (x + ri * w, 2, c0, m, tap);
                    for (int j = 0; j < 3; j++)
                        acc[i * 3 + j] = _mm512_fmadd_ps (g, tap[j], acc[i * 3 + j]);
                    if (i == 2)
                        for (int j = 0; j < 3; j++)
                            above[j] = tap[j];
                }
            }
        }
    }
    for (int k = 0; k < 9; k++)
        t[k] = _mm512_reduce_add_ps (acc[k]);
}

/* g (masked to @m) += wv * (the dY vector @d permuted by @idx): a product
 * rounded on its own, then the masked add (a builtin: never contracted). */
__attribute__ ((target ("avx512f"), always_inline)) static inline __m512
dfq_dw3_dx2_term (__m512 g, __mmask16 m, __m512 wv, __m512i idx, __m512 d)
{
    return _mm512_mask_add_ps (g, m, g, _mm512_mul_ps (wv, _mm512_permutexvar_ps (idx, d)));
}

__attribute__ ((target ("avx512f"))) void
dfq_priv_dw3_fast_dx_s2 (const DfqPrivDw3Plan *plan, const float *dy, const float *wk, float *gx,
                         gboolean fresh)
{
    const gint64 h = plan->h, w = plan->w, ho = plan->ho, wo = plan->wo;
    /* lane l (column ix0 + l) reads dY column ix0 / 2 + l / 2 + (l odd) for
     * taps j = 0 (odd l) and 1 (even l), and ix0 / 2 + l / 2 for j = 2 */
    const __m512i p01 = _mm512_set_epi32 (8, 7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0);
    const __m512i p2 = _mm512_set_epi32 (7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
    const __mmask16 odd = 0xaaaa;
    /* per tap row i: the weight of j = 1 on even lanes and of j = 0 on odd ones; of j = 2 */
    __m512 w01[3], w2[3];
    for (int i = 0; i < 3; i++) {
        w01[i] = _mm512_mask_blend_ps (odd, _mm512_set1_ps (wk[3 * i + 1]), _mm512_set1_ps (wk[3 * i]));
        w2[i] = _mm512_set1_ps (wk[3 * i + 2]);
    }
    for (gint64 iy = 0; iy < h; iy++)
        for (int b = 0; b < 2 && 16 * b < w; b++) {
            float *gr = gx + iy * w + 16 * b;
            const __mmask16 in = plan->dx2_in[b], j01 = plan->dx2_j01[b], j2 = plan->dx2_odd[b];
            __m512 g = fresh ? _mm512_setzero_ps () : _mm512_maskz_loadu_ps (in, gr);
            if (iy % 2 == 0) { /* tap row 1 of output row iy / 2 */
                const __m512 d = _mm512_maskz_loadu_ps (plan->dx2_dy[b], dy + (iy / 2) * wo + 8 * b);
                g = dfq_dw3_dx2_term (g, j01, w01[1], p01, d);
                g = dfq_dw3_dx2_term (g, j2, w2[1], p2, d);
            } else { /* tap row 2 of output row (iy - 1) / 2, then tap row 0 of the next */
                const gint64 ra = (iy - 1) / 2, rb = (iy + 1) / 2;
                const __m512 da = _mm512_maskz_loadu_ps (plan->dx2_dy[b], dy + ra * wo + 8 * b);
                const __m512 db = rb < ho ? _mm512_maskz_loadu_ps (plan->dx2_dy[b], dy + rb * wo + 8 * b)
                                          : _mm512_setzero_ps ();
                g = dfq_dw3_dx2_term (g, j01, w01[2], p01, da);
                if (rb < ho)
                    g = dfq_dw3_dx2_term (g, j01, w01[0], p01, db);
                g = dfq_dw3_dx2_term (g, j2, w2[2], p2, da);
                if (rb < ho)
                    g = dfq_dw3_dx2_term (g, j2, w2[0], p2, db);
            }
            _mm512_mask_storeu_ps (gr, in, g);
        }
}
#else
void
dfq_priv_dw3_fast_dx_s2 (const DfqPrivDw3Plan *plan, const float *dy, const float *wk, float *gx,
                         gboolean fresh)
{
    (void) plan, (void) dy, (void) wk, (void) gx, (void) fresh;
    g_assert_not_reached ();
}

void
dfq_priv_dw3_fast_plane (const DfqPrivDw3Plan *plan, const float *x, const float *wk, float bias, float *y,
                         const DfqPrivConvEpilogue *ep, gint64 co, const float *res)
{
    (void) plan, (void) x, (void) wk, (void) bias, (void) y, (void) ep, (void) co, (void) res;
    g_assert_not_reached ();
}

void
dfq_priv_dw3_fast_wgrad (const DfqPrivDw3Plan *plan, const float *x, const float *dy, const float *x_next,
                         const float *dy_next, float t[9])
{
    (void) plan, (void) x, (void) dy, (void) x_next, (void) dy_next, (void) t;
    g_assert_not_reached ();
}
#endif
