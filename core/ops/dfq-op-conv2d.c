/* 2-d convolution op (core/ops), the hot path of the engine: NCHW, zero padding
 * on all sides, stride, groups (depthwise included), dilation 1.
 *
 * Dense and grouped convs go through im2col + OpenBLAS sgemm, one image at a
 * time: the columns of one image (Ci*kh*kw x Ho*Wo) stay in cache between the
 * im2col that writes them and the GEMM that reads them. A batch spreads its
 * images over the OpenMP threads; an sgemm called inside that parallel region
 * runs on one thread with the OpenMP OpenBLAS we link, so only one threading
 * layer is ever active. A single image splits each step (im2col by channel,
 * GEMMs by blocks of columns or rows) over the threads instead.
 * With OpenBLAS's AVX-512 cores the per-image GEMMs are cut into column blocks
 * small enough for its unpacked "small matrix" kernels (see
 * dfq_conv2d_small_gemm_blocks).
 * Backward: dW from the same columns (recomputed), dX as W^T dY then col2im;
 * 1x1 stride-1 convs use x itself as the column matrix and skip both copies;
 * on AVX-512 CPUs their forward runs a kernel of its own (dfq-op-conv1x1.c).
 * 3x3 convs with padding 1 (stride 1, and stride 2 forward) skip im2col: see
 * "3x3 convs with padding 1" below (AVX-512 CPUs). In eval mode without a
 * graph, that kernel can also apply BN, a residual add and ReLU to each tile
 * before storing it (dfq_priv_conv2d_fused, called by dfq_layer_conv_bn).
 * A new input-gradient buffer (dfq_priv_grad_of_fresh) is written, not
 * zero-filled and then added to.
 *
 * Convs with one input channel per group (depthwise, or a single-channel first
 * layer) would give GEMMs with K = kh*kw, far too thin for BLAS: they run
 * direct, vectorised loops; at stride 1 their dX is itself such a convolution
 * (of dY with the flipped kernel); at stride 2 it is a scatter, which the
 * depthwise 3x3 layers run as a gather on AVX-512 (dfq-op-depthwise.c).
 *
 * Memory: column buffers come from the result's arena in the forward and from
 * the scratch arena in the backward (one per thread), never from malloc. The
 * forward columns are not kept for the backward: at batch 128 they are 9x the
 * activations of every layer (about 1 GiB for a ResNet-20), while redoing
 * im2col costs one pass over the input. The backward reuses its buffer for the
 * columns (weight gradient) and then for their gradient (col2im).
 *
 * Determinism, for any thread count: the forward of an image does not depend
 * on the thread that runs it, and a single image is cut into blocks fixed by
 * the shapes. The weight gradient is summed over chunks of images (a count
 * fixed by the shapes), each chunk into its own partial buffer, and the
 * partials are added in chunk order. Bias gradients are double sums in a fixed
 * order. tests/core/test-ops-reference.c checks 1 vs 2 threads bit for bit. */
#include <math.h>
#include <string.h>

#include <cblas.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "dfq-op-private.h"

/* At most this many partial weight-gradient buffers (chunks of images), and at
 * most this many floats for all of them together. */
#define DFQ_CONV2D_WGRAD_CHUNKS 16
#define DFQ_CONV2D_WGRAD_BUDGET (8 * 1024 * 1024)
#define DFQ_CONV2D_WGRAD_BATCH_PLANE 256 /* planes up to 16x16: a GEMM per chunk of images */
/* Kernels up to this size per side may take the direct loops. */
#define DFQ_CONV2D_DIRECT_MAX_K 16

/* The direct loops are plain C that the compiler vectorises; the build targets
 * baseline x86-64 (SSE2), so let them also be compiled for AVX2/FMA machines and
 * picked at load time (GCC function multiversioning). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define DFQ_CONV2D_SIMD_CLONES __attribute__ ((target_clones ("arch=x86-64-v3", "default")))
#else
#define DFQ_CONV2D_SIMD_CLONES
#endif

typedef struct {
    gint64 n, ci, h, w;  /* input [N, Ci, H, W] */
    gint64 co, kh, kw;   /* weight [Co, Ci/g, kh, kw] */
    gint64 ho, wo;       /* output spatial size */
    gint64 s, p, g;      /* stride, padding, groups */
    gint64 cig, cog;     /* input / output channels per group */
    gint64 kg;           /* rows of one group's column matrix: cig*kh*kw */
    gint64 k_all;        /* rows of the whole column matrix: ci*kh*kw */
    gint64 p_out;        /* ho*wo */
    gboolean cols_are_x; /* 1x1, stride 1, no padding: x is its own column matrix */
    gboolean direct;     /* one input channel per group: direct loops, no GEMM */
} DfqConv2dGeom;

static void
dfq_conv2d_geom (const DfqTensor *dst, DfqConv2dGeom *g)
{
    const DfqTensor *x = dst->src[0], *w = dst->src[1];
    g->n = x->shape[0];
    g->ci = x->shape[1];
    g->h = x->shape[2];
    g->w = x->shape[3];
    g->co = w->shape[0];
    g->kh = w->shape[2];
    g->kw = w->shape[3];
    g->ho = dst->shape[2];
    g->wo = dst->shape[3];
    g->s = dst->op_params[0];
    g->p = dst->op_params[1];
    g->g = dst->op_params[2];
    g->cig = g->ci / g->g;
    g->cog = g->co / g->g;
    g->kg = g->cig * g->kh * g->kw;
    g->k_all = g->ci * g->kh * g->kw;
    g->p_out = g->ho * g->wo;
    g->cols_are_x = g->kh == 1 && g->kw == 1 && g->s == 1 && g->p == 0;
    g->direct = g->cig == 1 && g->kh <= DFQ_CONV2D_DIRECT_MAX_K && g->kw <= DFQ_CONV2D_DIRECT_MAX_K;
}

/* The output columns wo whose input column wo*s - p + j lies inside [0, W):
 * [*lo, *hi), possibly empty. */
static inline void
dfq_conv2d_valid_range (const DfqConv2dGeom *g, gint64 j, gint64 *lo, gint64 *hi)
{
    gint64 first = g->p - j; /* wo*s >= p - j */
    gint64 last = g->w - 1 + g->p - j;
    *lo = first <= 0 ? 0 : (first + g->s - 1) / g->s;
    *hi = last < 0 ? 0 : MIN (g->wo, last / g->s + 1);
    if (*hi < *lo)
        *hi = *lo;
}

static inline gboolean
dfq_conv2d_row_valid (const DfqConv2dGeom *g, gint64 ho, gint64 i, gint64 *iy)
{
    *iy = ho * g->s - g->p + i;
    return *iy >= 0 && *iy < g->h;
}

/* Sum of n floats: vectorised, in an order fixed for a given build. */
static inline float
dfq_conv2d_sum (const float *restrict a, gint64 n)
{
    float sum = 0.0f;
    /* clang-format off */
#pragma omp simd reduction(+:sum)
    /* clang-format on */
    for (gint64 k = 0; k < n; k++)
        sum += a[k];
    return sum;
}

/* ---- im2col / col2im, one input channel at a time ---- */

/* The output rows ho whose input row ho*s - p + i lies inside [0, H): [*lo, *hi). */
static inline void
dfq_conv2d_valid_rows (const DfqConv2dGeom *g, gint64 i, gint64 *lo, gint64 *hi)
{
    gint64 first = g->p - i, last = g->h - 1 + g->p - i;
    *lo = first <= 0 ? 0 : (first + g->s - 1) / g->s;
    *hi = last < 0 ? 0 : MIN (g->ho, last / g->s + 1);
    if (*hi < *lo)
        *hi = *lo;
}

/* Rows (c*kh + i)*kw + j of the column matrix of one image:
 * col[row][ho*Wo + wo] = x[c][ho*s - p + i][wo*s - p + j], 0 outside.
 * The edge columns of a row are the padding, a float or two: without
 * DFQ_PRIV_NO_LOOP_MEMSET each of those little zeroing loops became a memset
 * call (two per output row, tens of millions per epoch for the stem). */
DFQ_PRIV_NO_LOOP_MEMSET static void
dfq_conv2d_im2col_channel (const DfqConv2dGeom *g, const float *restrict x, float *restrict col, gint64 c)
{
    const gint64 wo = g->wo, s = g->s;
    const float *xc = x + c * g->h * g->w;
    for (gint64 i = 0; i < g->kh; i++) {
        gint64 rlo, rhi;
        dfq_conv2d_valid_rows (g, i, &rlo, &rhi);
        for (gint64 j = 0; j < g->kw; j++) {
            float *restrict row = col + ((c * g->kh + i) * g->kw + j) * g->p_out;
            gint64 lo, hi;
            dfq_conv2d_valid_range (g, j, &lo, &hi);
            const gint64 off = j - g->p; /* input column = wo*s + off */
            if (rlo > 0)
                memset (row, 0, (gsize) (rlo * wo) * sizeof (float));
            if (rhi < g->ho)
                memset (row + rhi * wo, 0, (gsize) ((g->ho - rhi) * wo) * sizeof (float));
            if (rhi <= rlo)
                continue;
            if (s == 1 && wo == g->w && hi > lo) {
                /* Same-size output: the valid block of this row is the input plane
                 * shifted by a constant, so copy it in one run and then clear the
                 * edge columns, which received the neighbouring input rows. */
                const float *src = xc + (rlo - g->p + i) * g->w + lo + off;
                gint64 count = (rhi - 1 - rlo) * wo + hi - lo;
                memcpy (row + rlo * wo + lo, src, (gsize) count * sizeof (float));
                for (gint64 ho = rlo; ho < rhi; ho++) {
                    float *restrict r = row + ho * wo;
                    for (gint64 k = 0; k < lo; k++)
                        r[k] = 0.0f;
                    for (gint64 k = hi; k < wo; k++)
                        r[k] = 0.0f;
                }
                continue;
            }
            for (gint64 ho = rlo; ho < rhi; ho++) {
                float *restrict r = row + ho * wo;
                const float *restrict xr = xc + (ho * s - g->p + i) * g->w + off;
                for (gint64 k = 0; k < lo; k++)
                    r[k] = 0.0f;
                if (s == 1)
#pragma omp simd
                    for (gint64 k = lo; k < hi; k++)
                        r[k] = xr[k];
                else
#pragma omp simd
                    for (gint64 k = lo; k < hi; k++)
                        r[k] = xr[k * s];
                for (gint64 k = hi; k < wo; k++)
                    r[k] = 0.0f;
            }
        }
    }
}

static void
dfq_conv2d_im2col (const DfqConv2dGeom *g, const float *x, float *col)
{
    for (gint64 c = 0; c < g->ci; c++)
        dfq_conv2d_im2col_channel (g, x, col, c);
}

/* The adjoint of im2col for channel c: gx[c][iy][ix] += col[row][ho*Wo + wo].
 * May clear entries of @col that fall on the padding (they are not needed). */
static void
dfq_conv2d_col2im_channel (const DfqConv2dGeom *g, float *restrict col, float *restrict gx, gint64 c)
{
    const gint64 wo = g->wo, s = g->s;
    float *gc = gx + c * g->h * g->w;
    for (gint64 i = 0; i < g->kh; i++) {
        gint64 rlo, rhi;
        dfq_conv2d_valid_rows (g, i, &rlo, &rhi);
        for (gint64 j = 0; j < g->kw; j++) {
            float *restrict row = col + ((c * g->kh + i) * g->kw + j) * g->p_out;
            gint64 lo, hi;
            dfq_conv2d_valid_range (g, j, &lo, &hi);
            const gint64 off = j - g->p;
            if (rhi <= rlo || hi <= lo)
                continue;
            if (s == 1 && wo == g->w) {
                /* As in im2col: one contiguous run, after clearing the padding
                 * columns that would otherwise land on the neighbouring rows. */
                for (gint64 ho = rlo; ho < rhi; ho++) {
                    float *restrict r = row + ho * wo;
                    for (gint64 k = 0; k < lo; k++)
                        r[k] = 0.0f;
                    for (gint64 k = hi; k < wo; k++)
                        r[k] = 0.0f;
                }
                float *restrict dst = gc + (rlo - g->p + i) * g->w + lo + off;
                const float *restrict src = row + rlo * wo + lo;
                gint64 count = (rhi - 1 - rlo) * wo + hi - lo;
#pragma omp simd
                for (gint64 k = 0; k < count; k++)
                    dst[k] += src[k];
                continue;
            }
            for (gint64 ho = rlo; ho < rhi; ho++) {
                const float *restrict r = row + ho * wo;
                float *restrict gr = gc + (ho * s - g->p + i) * g->w + off;
                if (s == 1)
#pragma omp simd
                    for (gint64 k = lo; k < hi; k++)
                        gr[k] += r[k];
                else
#pragma omp simd
                    for (gint64 k = lo; k < hi; k++)
                        gr[k * s] += r[k];
            }
        }
    }
}

static void
dfq_conv2d_col2im (const DfqConv2dGeom *g, float *col, float *gx)
{
    for (gint64 c = 0; c < g->ci; c++)
        dfq_conv2d_col2im_channel (g, col, gx, c);
}

/* ---- builder ---- */

DfqTensor *
dfq_conv2d (DfqArena *arena, DfqTensor *x, DfqTensor *weight, DfqTensor *bias,
            int stride, int padding, int groups)
{
    g_return_val_if_fail (arena != NULL, NULL);
    g_return_val_if_fail (x != NULL && weight != NULL, NULL);
    g_return_val_if_fail (x->dtype == DFQ_DTYPE_F32 && weight->dtype == DFQ_DTYPE_F32, NULL);
    g_return_val_if_fail (x->n_dims == 4 && weight->n_dims == 4, NULL);
    g_return_val_if_fail (dfq_tensor_is_contiguous (x) && dfq_tensor_is_contiguous (weight), NULL);
    g_return_val_if_fail (stride >= 1 && padding >= 0 && groups >= 1, NULL);
    g_return_val_if_fail (x->shape[1] % groups == 0 && weight->shape[0] % groups == 0, NULL);
    g_return_val_if_fail (weight->shape[1] == x->shape[1] / groups, NULL);
    g_return_val_if_fail (weight->shape[2] >= 1 && weight->shape[3] >= 1, NULL);
    g_return_val_if_fail (x->shape[2] + 2 * padding >= weight->shape[2], NULL);
    g_return_val_if_fail (x->shape[3] + 2 * padding >= weight->shape[3], NULL);
    g_return_val_if_fail (bias == NULL || (bias->dtype == DFQ_DTYPE_F32 && dfq_tensor_numel (bias) == weight->shape[0]), NULL);

    gint64 shape[4] = {
        x->shape[0],
        weight->shape[0],
        (x->shape[2] + 2 * padding - weight->shape[2]) / stride + 1,
        (x->shape[3] + 2 * padding - weight->shape[3]) / stride + 1,
    };
    DfqTensor *srcs[3] = { x, weight, bias };
    DfqTensor *t = dfq_priv_op_new_uninit (arena, DFQ_OP_CONV2D, DFQ_DTYPE_F32, 4, shape, 3, srcs);
    t->op_params[0] = stride;
    t->op_params[1] = padding;
    t->op_params[2] = groups;
    return dfq_priv_op_run (t);
}

/* ---- direct loops (one input channel per group) ---- */

/* One output plane of a single-input-channel convolution with zero padding
 * (ph, pw): yp[ho][wo] = init + sum_ij wk[i][j] xp[ho*s - ph + i][wo*s - pw + j],
 * init = yp[ho][wo] when @accumulate, else @bias. Each tap is one vectorised
 * pass over the output row (in L1) for the columns whose taps all fall inside
 * the input, plus a checked loop for the few edge columns. */
DFQ_CONV2D_SIMD_CLONES static void
dfq_conv2d_direct_plane (const float *restrict xp, gint64 h, gint64 w, const float *restrict wk,
                         gint64 kh, gint64 kw, gint64 s, gint64 ph, gint64 pw,
                         float *restrict yp, gint64 ho_n, gint64 wo_n, float bias, gboolean accumulate)
{
    gint64 klo = MIN ((pw + s - 1) / s, wo_n);
    gint64 khi = w - kw + pw >= 0 ? MIN (wo_n, (w - kw + pw) / s + 1) : 0;
    if (khi < klo)
        khi = klo;
    for (gint64 ho = 0; ho < ho_n; ho++) {
        const gint64 y0 = ho * s - ph;
        const gint64 i0 = MAX (0, -y0), i1 = MIN (kh, h - y0);
        float *restrict yr = yp + ho * wo_n;
        if (!accumulate)
#pragma omp simd
            for (gint64 k = 0; k < wo_n; k++)
                yr[k] = bias;
        for (gint64 i = i0; i < i1; i++) {
            const float *xr = xp + (y0 + i) * w - pw; /* xr[k*s + j] = x[y0 + i][k*s - pw + j] */
            for (gint64 j = 0; j < kw; j++) {
                const float wv = wk[i * kw + j];
                const float *restrict xj = xr + j;
                if (s == 1)
#pragma omp simd
                    for (gint64 k = klo; k < khi; k++)
                        yr[k] += wv * xj[k];
                else
#pragma omp simd
                    for (gint64 k = klo; k < khi; k++)
                        yr[k] += wv * xj[k * s];
                for (gint64 k = 0; k < klo; k++)
                    if (k * s - pw + j >= 0 && k * s - pw + j < w)
                        yr[k] += wv * xj[k * s];
                for (gint64 k = khi; k < wo_n; k++)
                    if (k * s - pw + j >= 0 && k * s - pw + j < w)
                        yr[k] += wv * xj[k * s];
            }
        }
    }
}

/* ---- depthwise 3x3, padding 1, stride 1 or 2 (MobileNet) ----
 * The loops above make nine read-modify-write passes over each output row,
 * with scalar edge columns; on the small planes of a MobileNetV2 (28x28 down
 * to 4x4) that overhead is most of the work. Here the plane is copied once,
 * zero-padded, into s*s phase planes (row and column parities for stride 2) of
 * width wq, so that tap (i, j) of output position q = ho*wq + wo is element
 * q + (i/s)*wq + j/s of phase (i%s, j%s): one flat vectorised loop over all
 * positions with the nine taps in registers; columns wo >= Wo of that grid are
 * computed and dropped. Each output is bias + the taps in (i, j) order, as in
 * dfq_conv2d_direct_plane (a tap in the padding adds w*0, which changes no
 * sum that starts at +0). Buffers are on the stack: planes up to 64x64. */
#define DFQ_DW3_MAX_HW 64
#define DFQ_DW3_WQ_MAX (DFQ_DW3_MAX_HW + 2)
#define DFQ_DW3_SLACK 32

static inline gboolean
dfq_dw3_usable (const DfqConv2dGeom *g)
{
    return g->direct && g->kh == 3 && g->kw == 3 && g->p == 1 && (g->s == 1 || g->s == 2) &&
           g->h <= DFQ_DW3_MAX_HW && g->w <= DFQ_DW3_MAX_HW;
}

/* The padded phases of one h x w plane: phase (pi, pj) row r, column c holds
 * padded x[r*s + pi][c*s + pj]; hq x wq each, then DFQ_DW3_SLACK zeros. */
static void
dfq_dw3_phases (const float *restrict x, gint64 h, gint64 w, gint64 s, gint64 hq, gint64 wq, float *restrict ph)
{
    memset (ph, 0, (gsize) (s * s * hq * wq + DFQ_DW3_SLACK) * sizeof (float));
    if (s == 1) {
        for (gint64 r = 0; r < h; r++)
            memcpy (ph + (r + 1) * wq + 1, x + r * w, (gsize) w * sizeof (float));
        return;
    }
    for (gint64 r = 0; r < h; r++) {
        const gint64 pr = r + 1;
        float *e = ph + ((pr % 2) * 2 + 1) * hq * wq + (pr / 2) * wq;     /* padded column 2c + 1 */
        float *o = ph + ((pr % 2) * 2 + 0) * hq * wq + (pr / 2) * wq + 1; /* padded column 2c + 2 */
        const float *xr = x + r * w;
        for (gint64 c = 0; 2 * c < w; c++)
            e[c] = xr[2 * c];
        for (gint64 c = 0; 2 * c + 1 < w; c++)
            o[c] = xr[2 * c + 1];
    }
}

/* grid[q] = bias + sum over the taps, q < nq. */
DFQ_CONV2D_SIMD_CLONES static void
dfq_dw3_grid (const float *restrict ph, gint64 s, gint64 hq, gint64 wq, const float *restrict wk, float bias,
              float *restrict grid, gint64 nq)
{
    const float *t[9];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            t[i * 3 + j] = ph + ((i % s) * s + (j % s)) * hq * wq + (i / s) * wq + j / s;
    const float *restrict t0 = t[0], *restrict t1 = t[1], *restrict t2 = t[2], *restrict t3 = t[3];
    const float *restrict t4 = t[4], *restrict t5 = t[5], *restrict t6 = t[6], *restrict t7 = t[7];
    const float *restrict t8 = t[8];
    const float w0 = wk[0], w1 = wk[1], w2 = wk[2], w3 = wk[3], w4 = wk[4], w5 = wk[5], w6 = wk[6], w7 = wk[7],
                w8 = wk[8];
#pragma omp simd
    for (gint64 q = 0; q < nq; q++) {
        float a = bias;
        a += w0 * t0[q];
        a += w1 * t1[q];
        a += w2 * t2[q];
        a += w3 * t3[q];
        a += w4 * t4[q];
        a += w5 * t5[q];
        a += w6 * t6[q];
        a += w7 * t7[q];
        a += w8 * t8[q];
        grid[q] = a;
    }
}

/* One output plane (ho x wo) of a depthwise 3x3 pad-1 conv of the h x w plane
 * @x: y = it, or y += it with @accumulate. */
DFQ_CONV2D_SIMD_CLONES static void
dfq_dw3_plane (const float *restrict x, gint64 h, gint64 w, gint64 s, const float *restrict wk, float bias,
               float *restrict y, gint64 ho, gint64 wo, gboolean accumulate)
{
    float ph[4 * (DFQ_DW3_WQ_MAX / 2 + 1) * (DFQ_DW3_WQ_MAX / 2 + 1) + DFQ_DW3_WQ_MAX * DFQ_DW3_WQ_MAX +
             DFQ_DW3_SLACK] __attribute__ ((aligned (64)));
    float grid[DFQ_DW3_WQ_MAX * DFQ_DW3_WQ_MAX] __attribute__ ((aligned (64)));
    const gint64 hq = (h + 2 + s - 1) / s, wq = (w + 2 + s - 1) / s;
    dfq_dw3_phases (x, h, w, s, hq, wq, ph);
    dfq_dw3_grid (ph, s, hq, wq, wk, bias, grid, ho * wq);
    for (gint64 r = 0; r < ho; r++) {
        const float *restrict gr = grid + r * wq;
        float *restrict yr = y + r * wo;
        if (accumulate)
#pragma omp simd
            for (gint64 k = 0; k < wo; k++)
                yr[k] += gr[k];
        else
            memcpy (yr, gr, (gsize) wo * sizeof (float));
    }
}

/* Weight gradient of one depthwise 3x3 pad-1 plane pair: t[tap] = sum_q dY
 * grid[q] * tap[q], dY put on the phases' grid (zero in the dropped columns);
 * vectorised sums in an order fixed by the build, as dfq_conv2d_sum. */
DFQ_CONV2D_SIMD_CLONES static void
dfq_dw3_wgrad_sums (const float *restrict ph, gint64 s, gint64 hq, gint64 wq, const float *restrict gyg, gint64 nq,
                    float *restrict t)
{
    const float *p[9];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            p[i * 3 + j] = ph + ((i % s) * s + (j % s)) * hq * wq + (i / s) * wq + j / s;
    const float *restrict p0 = p[0], *restrict p1 = p[1], *restrict p2 = p[2], *restrict p3 = p[3];
    const float *restrict p4 = p[4], *restrict p5 = p[5], *restrict p6 = p[6], *restrict p7 = p[7];
    const float *restrict p8 = p[8];
    float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f, a4 = 0.0f, a5 = 0.0f, a6 = 0.0f, a7 = 0.0f, a8 = 0.0f;
    /* clang-format off */
#pragma omp simd reduction(+:a0, a1, a2, a3, a4, a5, a6, a7, a8)
    /* clang-format on */
    for (gint64 q = 0; q < nq; q++) {
        const float gq = gyg[q];
        a0 += gq * p0[q];
        a1 += gq * p1[q];
        a2 += gq * p2[q];
        a3 += gq * p3[q];
        a4 += gq * p4[q];
        a5 += gq * p5[q];
        a6 += gq * p6[q];
        a7 += gq * p7[q];
        a8 += gq * p8[q];
    }
    t[0] = a0, t[1] = a1, t[2] = a2, t[3] = a3, t[4] = a4, t[5] = a5, t[6] = a6, t[7] = a7, t[8] = a8;
}

/* dfq_conv2d_direct_wgrad_channel for the depthwise 3x3 pad-1 convs: the
 * weight sums of output channel co over all images in order, one double add
 * per tap and image. */
static void
dfq_dw3_wgrad_channel (const DfqConv2dGeom *g, const float *x, const float *gy, gint64 co, double *aw)
{
    float ph[4 * (DFQ_DW3_WQ_MAX / 2 + 1) * (DFQ_DW3_WQ_MAX / 2 + 1) + DFQ_DW3_WQ_MAX * DFQ_DW3_WQ_MAX +
             DFQ_DW3_SLACK] __attribute__ ((aligned (64)));
    float gyg[DFQ_DW3_WQ_MAX * DFQ_DW3_WQ_MAX] __attribute__ ((aligned (64)));
    const gint64 s = g->s, hq = (g->h + 2 + s - 1) / s, wq = (g->w + 2 + s - 1) / s;
    memset (gyg, 0, sizeof gyg);
    for (gint64 n = 0; n < g->n; n++) {
        dfq_dw3_phases (x + (n * g->ci + co / g->cog) * g->h * g->w, g->h, g->w, s, hq, wq, ph);
        const float *gyc = gy + (n * g->co + co) * g->p_out;
        for (gint64 r = 0; r < g->ho; r++)
            memcpy (gyg + r * wq, gyc + r * g->wo, (gsize) g->wo * sizeof (float));
        float t[9];
        dfq_dw3_wgrad_sums (ph, s, hq, wq, gyg, g->ho * wq, t);
        for (int k = 0; k < 9; k++)
            aw[k] += t[k];
    }
}

/* ---- the fused eval epilogue outside the 3x3 kernels ----
 * y = act (fma (y - mean, scale, shift) + res) over one output plane, right
 * after the conv wrote it (in cache): the eval BN op's rounding (a fused
 * multiply-add, which dfq_priv_conv2d_fusable requires), the add op's sum and
 * the relu / relu6 ops' selects, so the bits are those of the separate ops. */
static inline float
dfq_conv2d_act (float r, gboolean relu, gboolean relu6)
{
    if (relu6)
        return r > 0.0f ? (r < 6.0f ? r : 6.0f) : 0.0f;
    return relu ? (r > 0.0f ? r : 0.0f) : r;
}

DFQ_CONV2D_SIMD_CLONES static void
dfq_conv2d_epilogue_plane (float *restrict y, const float *restrict res, gint64 n, float m, float a, float b,
                           gboolean relu, gboolean relu6)
{
    if (res != NULL)
#pragma omp simd
        for (gint64 k = 0; k < n; k++)
            y[k] = dfq_conv2d_act (fmaf (y[k] - m, a, b) + res[k], relu, relu6);
    else
#pragma omp simd
        for (gint64 k = 0; k < n; k++)
            y[k] = dfq_conv2d_act (fmaf (y[k] - m, a, b), relu, relu6);
}

/* The epilogue of output channel co of image n. */
static inline void
dfq_conv2d_epilogue (const DfqConv2dGeom *g, const DfqPrivConvEpilogue *ep, float *y, gint64 n, gint64 co)
{
    const gint64 off = (n * g->co + co) * g->p_out;
    dfq_conv2d_epilogue_plane (y + off, ep->residual != NULL ? ep->residual + off : NULL, g->p_out, ep->mean[co],
                               ep->scale[co], ep->shift[co], ep->relu, ep->relu6);
}

/* One (image, output channel) plane per iteration, a static schedule over the
 * planes (the work of a plane depends on its shape only). */
static void
dfq_conv2d_direct_forward (const DfqConv2dGeom *g, const float *x, const float *w,
                           const float *b, float *y, const DfqPrivConvEpilogue *ep)
{
    const gint64 kk = g->kh * g->kw;
    const gboolean dw3 = dfq_dw3_usable (g), dw3_fast = dw3 && dfq_priv_dw3_fast_usable (g->w, g->s);
    DfqPrivDw3Plan plan;
    if (dw3_fast)
        dfq_priv_dw3_fast_plan (g->h, g->w, g->s, &plan);
#pragma omp parallel for collapse(2) schedule(static) if (g->n * g->co > 1 && g->n * g->co * g->p_out * kk > 32768)
    for (gint64 n = 0; n < g->n; n++)
        for (gint64 co = 0; co < g->co; co++) {
            const float *xc = x + (n * g->ci + co / g->cog) * g->h * g->w;
            float *yc = y + (n * g->co + co) * g->p_out;
            if (dw3_fast) {
                const float *res = ep != NULL && ep->residual != NULL ? ep->residual + (n * g->co + co) * g->p_out
                                                                      : NULL;
                dfq_priv_dw3_fast_plane (&plan, xc, w + co * kk, b != NULL ? b[co] : 0.0f, yc, ep, co, res);
                continue;
            }
            if (dw3)
                dfq_dw3_plane (xc, g->h, g->w, g->s, w + co * kk, b != NULL ? b[co] : 0.0f, yc, g->ho, g->wo, FALSE);
            else
                dfq_conv2d_direct_plane (xc, g->h, g->w, w + co * kk, g->kh, g->kw, g->s, g->p, g->p, yc, g->ho, g->wo,
                                         b != NULL ? b[co] : 0.0f, FALSE);
            if (ep != NULL)
                dfq_conv2d_epilogue (g, ep, y, n, co);
        }
}

/* Weight (into aw[kh*kw], when @a) and bias (into *ab, when not NULL) gradient
 * sums of output channel co over all images, in double. Within an image each
 * tap accumulates elementwise products in a row of floats a[tap][wo] (a
 * vectorised multiply-add, no horizontal sum per row); the rows are added in
 * double once per image. */
DFQ_CONV2D_SIMD_CLONES static void
dfq_conv2d_direct_wgrad_channel (const DfqConv2dGeom *g, const float *x, const float *gy, gint64 co,
                                 float *a, double *aw, double *ab)
{
    const gint64 kk = g->kh * g->kw, wo = g->wo, s = g->s;
    gint64 jlo[DFQ_CONV2D_DIRECT_MAX_K], jhi[DFQ_CONV2D_DIRECT_MAX_K];
    for (gint64 j = 0; j < g->kw; j++)
        dfq_conv2d_valid_range (g, j, &jlo[j], &jhi[j]);
    for (gint64 n = 0; n < g->n; n++) {
        const float *xc = x + (n * g->ci + co / g->cog) * g->h * g->w;
        const float *gyc = gy + (n * g->co + co) * g->p_out;
        if (a != NULL)
            memset (a, 0, (gsize) (kk * wo) * sizeof (float));
        for (gint64 ho = 0; ho < g->ho; ho++) {
            const float *restrict gyr = gyc + ho * wo;
            if (ab != NULL)
                *ab += dfq_conv2d_sum (gyr, wo);
            if (a == NULL)
                continue;
            for (gint64 i = 0; i < g->kh; i++) {
                gint64 iy;
                if (!dfq_conv2d_row_valid (g, ho, i, &iy))
                    continue;
                for (gint64 j = 0; j < g->kw; j++) {
                    const float *restrict xj = xc + iy * g->w + j - g->p;
                    float *restrict aj = a + (i * g->kw + j) * wo;
                    if (s == 1)
#pragma omp simd
                        for (gint64 k = jlo[j]; k < jhi[j]; k++)
                            aj[k] += gyr[k] * xj[k];
                    else
#pragma omp simd
                        for (gint64 k = jlo[j]; k < jhi[j]; k++)
                            aj[k] += gyr[k] * xj[k * s];
                }
            }
        }
        if (a != NULL)
            for (gint64 t = 0; t < kk; t++) {
                double sum = 0.0;
                for (gint64 k = 0; k < wo; k++)
                    sum += a[t * wo + k];
                aw[t] += sum;
            }
    }
}

/* The depthwise 3x3 weight sums of every channel on AVX-512
 * (dfq_priv_dw3_fast_wgrad) into acc[co * @stride + k], images outermost:
 * each thread keeps a fixed range of channels and walks the images in order,
 * reading its channels' planes of an image in memory order, which the
 * hardware prefetchers follow (channel-outermost jumped an image's stride
 * per plane and ran at a third of the speed of the dX pass over the same
 * planes). Each channel still adds its images' sums in order: the same bits
 * for any thread count. */
static void
dfq_conv2d_dw3_fast_wgrad_all (const DfqConv2dGeom *g, const DfqPrivDw3Plan *plan, const float *x,
                               const float *gy, double *acc, gint64 stride)
{
#pragma omp parallel if (g->co > 1)
    {
        const gint64 nt = dfq_priv_team_size (), t = dfq_priv_thread_id ();
        const gint64 lo = g->co * t / nt, hi = g->co * (t + 1) / nt;
        for (gint64 n = 0; n < g->n; n++)
            for (gint64 co = lo; co < hi; co++) {
                float s[9];
                const float *xn = x + (n * g->ci + co / g->cog) * g->h * g->w;
                const float *gyn = gy + (n * g->co + co) * g->p_out;
                /* next: this image's next channel, or the next image's first */
                const gint64 nn = co + 1 < hi ? n : n + 1, nc = co + 1 < hi ? co + 1 : lo;
                const gboolean more = nn < g->n;
                dfq_priv_dw3_fast_wgrad (plan, xn, gyn, more ? x + (nn * g->ci + nc / g->cog) * g->h * g->w : NULL,
                                         more ? gy + (nn * g->co + nc) * g->p_out : NULL, s);
                double *aw = acc + co * stride;
                for (int k = 0; k < 9; k++)
                    aw[k] += s[k];
            }
    }
}

/* Whether dfq_conv2d_direct_backward writes every value of a fresh dX
 * itself (no zero-fill first): depthwise 3x3 convs on AVX-512 (stride 1, or
 * stride 2 on planes up to 32 wide), whose dX planes each come from one
 * output channel's kernel pass. */
static gboolean
dfq_conv2d_direct_dx_writes (const DfqConv2dGeom *g)
{
    if (g->cog != 1 || !dfq_dw3_usable (g))
        return FALSE;
    if (g->s == 2) /* dfq_priv_dw3_fast_dx_s2 */
        return g->w <= 32 && dfq_priv_dw3_fast_usable (g->w, 2);
    return dfq_priv_dw3_fast_usable (g->wo, 1);
}

/* @gx_fresh: @gx is a new buffer, not zeroed; only where
 * dfq_conv2d_direct_dx_writes says so. */
static void
dfq_conv2d_direct_backward (const DfqConv2dGeom *g, DfqArena *scratch, const float *x,
                            const float *w, const float *gy, float *gx, gboolean gx_fresh, float *gw, float *gb)
{
    const gint64 kk = g->kh * g->kw, s = g->s;
    /* Stride 1: dX is the convolution of dY with the flipped kernel and padding
     * k-1-p (a gather: vectorised, each gx written once per output channel).
     * Otherwise scatter dY back through the taps. */
    const gboolean transposed = s == 1 && g->p <= g->kh - 1 && g->p <= g->kw - 1;
    const gboolean dw3 = transposed && dfq_dw3_usable (g); /* then 3x3 pad 1 again */
    /* on AVX-512 both gradients of those take the depthwise kernels of
     * dfq-op-depthwise.c: dX on dY's planes (stride 1), dW on x's */
    const gboolean dw3_fast = dw3 && dfq_priv_dw3_fast_usable (g->wo, 1);
    /* stride 2: dX by the stride-2 scatter kernel (dfq_priv_dw3_fast_dx_s2) */
    const gboolean dx2_fast = s == 2 && dfq_conv2d_direct_dx_writes (g);
    DfqPrivDw3Plan plan, plan_w;
    if (dw3_fast)
        dfq_priv_dw3_fast_plan (g->ho, g->wo, 1, &plan);
    if (dx2_fast)
        dfq_priv_dw3_fast_plan (g->h, g->w, 2, &plan);
    const gboolean dw3_w_fast = gw != NULL && dfq_dw3_usable (g) && dfq_priv_dw3_fast_usable (g->w, s);
    if (dw3_w_fast)
        dfq_priv_dw3_fast_plan (g->h, g->w, s, &plan_w);

    if (gx != NULL) {
        float *flipped = transposed ? dfq_arena_alloc_uninit (scratch, (gsize) (g->co * kk) * sizeof (float)) : NULL;
        if (flipped != NULL) {
            for (gint64 co = 0; co < g->co; co++)
                for (gint64 k = 0; k < kk; k++)
                    flipped[co * kk + k] = w[co * kk + kk - 1 - k];
        }
        /* One (image, group) plane of gx per iteration: the cog output channels
         * of a group all feed the same input plane, so they stay in one thread. */
#pragma omp parallel for collapse(2) schedule(static) if (g->n * g->g > 1)
        for (gint64 n = 0; n < g->n; n++)
            for (gint64 grp = 0; grp < g->g; grp++) {
                float *gxc = gx + (n * g->ci + grp) * g->h * g->w;
                for (gint64 co = grp * g->cog; co < (grp + 1) * g->cog; co++) {
                    const float *gyc = gy + (n * g->co + co) * g->p_out;
                    if (flipped != NULL && dw3_fast) { /* gx (+)= the plane (residual without epilogue) */
                        dfq_priv_dw3_fast_plane (&plan, gyc, flipped + co * kk, 0.0f, gxc, NULL, co,
                                                 gx_fresh ? NULL : gxc);
                        continue;
                    }
                    if (flipped != NULL && dw3) {
                        dfq_dw3_plane (gyc, g->ho, g->wo, 1, flipped + co * kk, 0.0f, gxc, g->h, g->w, TRUE);
                        continue;
                    }
                    if (flipped != NULL) {
                        dfq_conv2d_direct_plane (gyc, g->ho, g->wo, flipped + co * kk, g->kh, g->kw, 1,
                                                 g->kh - 1 - g->p, g->kw - 1 - g->p, gxc, g->h, g->w, 0.0f, TRUE);
                        continue;
                    }
                    if (dx2_fast) {
                        dfq_priv_dw3_fast_dx_s2 (&plan, gyc, w + co * kk, gxc, gx_fresh);
                        continue;
                    }
                    const float *wk = w + co * kk;
                    for (gint64 j = 0; j < g->kw; j++) {
                        gint64 lo, hi;
                        dfq_conv2d_valid_range (g, j, &lo, &hi);
                        for (gint64 ho = 0; ho < g->ho; ho++) {
                            const float *restrict gyr = gyc + ho * g->wo;
                            for (gint64 i = 0; i < g->kh; i++) {
                                gint64 iy;
                                if (!dfq_conv2d_row_valid (g, ho, i, &iy))
                                    continue;
                                const float wv = wk[i * g->kw + j];
                                float *restrict gxr = gxc + iy * g->w + j - g->p;
#pragma omp simd
                                for (gint64 k = lo; k < hi; k++)
                                    gxr[k * s] += wv * gyr[k];
                            }
                        }
                    }
                }
            }
    }

    if (gw != NULL || gb != NULL) {
        /* One output channel per iteration, images in order: the sums do not
         * depend on the thread count. */
        double *acc = dfq_arena_alloc (scratch, (gsize) (g->co * (kk + 1)) * sizeof (double));
        const gboolean dw3_w = gw != NULL && dfq_dw3_usable (g);
        float *rows = gw != NULL && !dw3_w ? dfq_arena_alloc_uninit (scratch, (gsize) (g->co * kk * g->wo) * sizeof (float))
                                           : NULL;
        if (dw3_w_fast)
            dfq_conv2d_dw3_fast_wgrad_all (g, &plan_w, x, gy, acc, kk + 1);
#pragma omp parallel for schedule(static) if (g->co > 1)
        for (gint64 co = 0; co < g->co; co++) {
            double *aw = acc + co * (kk + 1);
            if (dw3_w_fast) { /* the weight sums are in aw already */
                if (gb != NULL)
                    dfq_conv2d_direct_wgrad_channel (g, x, gy, co, NULL, aw, aw + kk);
            } else if (dw3_w) {
                dfq_dw3_wgrad_channel (g, x, gy, co, aw);
                if (gb != NULL)
                    dfq_conv2d_direct_wgrad_channel (g, x, gy, co, NULL, aw, aw + kk);
            } else {
                dfq_conv2d_direct_wgrad_channel (g, x, gy, co, rows != NULL ? rows + co * kk * g->wo : NULL,
                                                 aw, gb != NULL ? aw + kk : NULL);
            }
            if (gw != NULL)
                for (gint64 k = 0; k < kk; k++)
                    gw[co * kk + k] += (float) aw[k];
            if (gb != NULL)
                gb[co] += (float) aw[kk];
        }
    }
}

/* y += a over n floats (the weight-gradient reduction). */
#define DFQ_CONV2D_REDUCE_BLOCK 4096
DFQ_CONV2D_SIMD_CLONES static void
dfq_conv2d_acc (const float *restrict a, float *restrict y, gint64 n)
{
#pragma omp simd
    for (gint64 k = 0; k < n; k++)
        y[k] += a[k];
}

/* ---- im2col + GEMM ----
 *
 * Each GEMM step takes a block (a range of columns of the output, or of rows of
 * the column matrix). A batch runs every step of an image on one thread with a
 * single block; a single image splits the steps into blocks over the threads.
 * The blocks depend on the shapes only, so every GEMM call, and hence every
 * result bit, is the same for any thread count. */

/* Block b of @nb over [0, total), boundaries on multiples of 16 floats. */
static inline void
dfq_conv2d_block (gint64 total, gint64 nb, gint64 b, gint64 *lo, gint64 *hi)
{
    *lo = b == 0 ? 0 : (b * total / nb) & ~(gint64) 15;
    *hi = b + 1 == nb ? total : ((b + 1) * total / nb) & ~(gint64) 15;
}

/* Blocks for a single image: at least 256 columns or 32 rows each, at most 16. */
static inline gint64
dfq_conv2d_n_blocks (gint64 total, gint64 min_size)
{
    return CLAMP (total / min_size, 1, 16);
}

static void
dfq_conv2d_fill_bias (const DfqConv2dGeom *g, const float *b, float *yn, gint64 co)
{
    float *restrict yr = yn + co * g->p_out;
    const float v = b[co];
#pragma omp simd
    for (gint64 k = 0; k < g->p_out; k++)
        yr[k] = v;
}

/* Forward, group grp, output columns [lo, hi): y_n (+)= W_grp cols_grp. */
static inline void
dfq_conv2d_fwd_gemm (const DfqConv2dGeom *g, gint64 grp, gint64 lo, gint64 hi, const float *w,
                     const float *cols, float beta, float *yn)
{
    if (hi <= lo)
        return;
    cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasNoTrans,
                 (blasint) g->cog, (blasint) (hi - lo), (blasint) g->kg,
                 1.0f, w + grp * g->cog * g->kg, (blasint) g->kg,
                 cols + grp * g->kg * g->p_out + lo, (blasint) g->p_out,
                 beta, yn + grp * g->cog * g->p_out + lo, (blasint) g->p_out);
}

/* Weight gradient, group grp, column-matrix rows [r0, r1), transposed:
 * wt[grp][r][co] += sum_p cols_grp[r][p] dY_grp[co][p]. With the short Co side
 * as the GEMM's N this runs about 25% faster than dY cols^T on OpenBLAS. */
static inline void
dfq_conv2d_wgrad_gemm (const DfqConv2dGeom *g, gint64 grp, gint64 r0, gint64 r1, const float *cols,
                       const float *gyn, float beta, float *wt)
{
    if (r1 <= r0)
        return;
    cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans,
                 (blasint) (r1 - r0), (blasint) g->cog, (blasint) g->p_out,
                 1.0f, cols + (grp * g->kg + r0) * g->p_out, (blasint) g->p_out,
                 gyn + grp * g->cog * g->p_out, (blasint) g->p_out,
                 beta, wt + (grp * g->kg + r0) * g->cog, (blasint) g->cog);
}

/* Column gradient, group grp, columns [lo, hi): dcols_grp (+)= W_grp^T dY_grp. */
static inline void
dfq_conv2d_dcol_gemm (const DfqConv2dGeom *g, gint64 grp, gint64 lo, gint64 hi, const float *w,
                      const float *gyn, float beta, float *dcols)
{
    if (hi <= lo)
        return;
    cblas_sgemm (CblasRowMajor, CblasTrans, CblasNoTrans,
                 (blasint) g->kg, (blasint) (hi - lo), (blasint) g->cog,
                 1.0f, w + grp * g->cog * g->kg, (blasint) g->kg,
                 gyn + grp * g->cog * g->p_out + lo, (blasint) g->p_out,
                 beta, dcols + grp * g->kg * g->p_out + lo, (blasint) g->p_out);
}

/* OpenBLAS (0.3.21) has "small matrix" sgemm kernels for its AVX-512 cores
 * (SkylakeX, CooperLake, SapphireRapids) that work on the operands in place,
 * without packing them, and it takes them when M*N*K <= 1e6 (NN and TN here).
 * The per-image GEMMs of a small conv are just above that (16x784x144 for the
 * first stage of a ResNet-20 on 28x28), so cutting their columns in two or
 * three blocks that fit runs them at about 1.5x the speed (tests/bench). Other
 * cores have no such kernels: there a cut only adds calls. The number of blocks
 * depends on the shapes and the BLAS core only, never on the thread count. */
#define DFQ_CONV2D_SMALL_GEMM_MNK 950000.0 /* a margin under 1e6: block edges round to 16 */
#define DFQ_CONV2D_SMALL_GEMM_MIN_COLS 64

static gboolean
dfq_conv2d_blas_has_small_kernels (void)
{
    static gsize once = 0;
    static gboolean has = FALSE;
    if (g_once_init_enter (&once)) {
        const char *core = openblas_get_corename ();
        g_autofree char *lower = g_ascii_strdown (core != NULL ? core : "", -1);
        has = strstr (lower, "skylakex") != NULL || strstr (lower, "cooperlake") != NULL ||
              strstr (lower, "sapphirerapids") != NULL;
        g_once_init_leave (&once, 1);
    }
    return has;
}

/* How many blocks to cut the @cols columns of a rows x cols x k GEMM into. */
static gint64
dfq_conv2d_small_gemm_blocks (gint64 rows, gint64 cols, gint64 k)
{
    if (!dfq_conv2d_blas_has_small_kernels ())
        return 1;
    double mnk = (double) rows * (double) cols * (double) k;
    gint64 nb = (gint64) ceil (mnk / DFQ_CONV2D_SMALL_GEMM_MNK);
    if (nb <= 1 || cols / nb < DFQ_CONV2D_SMALL_GEMM_MIN_COLS)
        return 1;
    return nb;
}

/* ---- 3x3 convs with padding 1: direct AVX-512 kernels ----
 *
 * The 3x3 convs of a ResNet or a GDFQ generator keep the plane size (stride 1,
 * padding 1) or halve it (stride 2). For them im2col writes nine copies of the
 * input and the GEMM reads them again (OpenBLAS packs them once more); about a
 * third of a ResNet-20 inference went to those copies. These kernels read a
 * zero-padded copy of the image instead (one copy, not nine): with the padded
 * plane flattened, output position q = ho*Wp + wo (Wp = W + 2) reads input
 * q + i*Wp + j for tap (i, j), so every tap of a tile of consecutive positions
 * is one unaligned vector load. The positions wo >= W of that flattened grid
 * are computed and thrown away (2 of every W + 2). A tile is 8 output channels
 * x 48 positions (32 for small planes) in 24 (16) AVX-512 accumulators; each
 * output is a sum over (input channel, i, j) in that order, the same for any
 * tile, any image and any thread, so results do not depend on the thread count.
 *
 * - Stride 2 splits the padded input into its four row/column parity phases,
 *   in which every tap is again a shift of the flattened output grid.
 * - The input gradient of a stride-1 conv is the same kind of conv (of dY, with
 *   the kernel flipped and its channel axes swapped): the same kernel.
 * - The weight gradient of a stride-1 conv (Co a multiple of 16) sums
 *   xp[c][q + i*Wp + j] dY[q][co] over the grid with dY transposed onto it
 *   (zero in the thrown-away columns): 16 or 32 output channels x the 9 taps
 *   of 1 or 2 input channels per tile, no im2col.
 *
 * Used only when the CPU has AVX-512F (checked at run time; the environment
 * variable DFQ_CONV_NO_AVX512 turns them off, for comparisons), with at least 8
 * output channels (of the kernel) and 36 output positions; otherwise, and for
 * every other shape, im2col + GEMM. The forward takes them for any batch (a
 * single image on one thread); the backward only for batches (a single image
 * keeps the GEMM path, whose steps split over the threads). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define DFQ_CONV3_AVX512 1
#include <immintrin.h>
#endif

#define DFQ_CONV3_COT 8 /* output channels per tile */
#define DFQ_CONV3_NV 3  /* vectors of 16 positions per tile (2 for small planes) */

typedef struct {
    gint64 cin, cout;   /* channels in and out, as the kernel sees them */
    gint64 s;           /* stride: 1, or 2 (forward only) */
    gint64 in_h, in_w;  /* input plane */
    gint64 h, w;        /* output plane (the input's at stride 1) */
    gint64 wp, pplane;  /* grid width, size of one padded (phase) plane */
    gint64 plane;       /* floats per input channel: one plane, or 4 phase planes */
    gint64 nv;          /* vectors of 16 positions per tile: 3, or 2 when that wastes less */
    gint64 q, qpad;     /* flattened output grid h * wp, rounded up to a tile */
    gint64 cout_pad;    /* cout rounded up to DFQ_CONV3_COT */
    gint64 xp_size;     /* floats of the padded input, slack included */
} DfqConv3Geom;

static void
dfq_conv3_geom (DfqConv3Geom *k, gint64 cin, gint64 cout, gint64 h, gint64 w, gint64 s)
{
    k->cin = cin;
    k->cout = cout;
    k->s = s;
    k->in_h = h;
    k->in_w = w;
    if (s == 1) {
        k->h = h;
        k->w = w;
        k->wp = w + 2;
        k->pplane = (h + 2) * k->wp;
        k->plane = k->pplane;
    } else {
        /* Stride 2: the padded input split into its four (row, column) parity
         * phases, each (Ho + 1) x (Wo + 1); tap (i, j) reads phase (i%2, j%2)
         * at (ho + i/2, wo + j/2), again a shift of the flattened grid. */
        k->h = (h - 1) / 2 + 1;
        k->w = (w - 1) / 2 + 1;
        k->wp = k->w + 1;
        k->pplane = (k->h + 1) * k->wp;
        k->plane = 4 * k->pplane;
    }
    k->q = k->h * k->wp;
    /* Tiles of 48 positions, or of 32 where 48 would leave much more of the
     * last tile empty (a 7x7 plane: 63 positions, 96 with tiles of 48). */
    gint64 q3 = (k->q + 47) / 48 * 48, q2 = (k->q + 31) / 32 * 32;
    k->nv = q2 * 10 < q3 * 9 ? 2 : 3;
    k->qpad = k->nv == 2 ? q2 : q3;
    k->cout_pad = (cout + DFQ_CONV3_COT - 1) / DFQ_CONV3_COT * DFQ_CONV3_COT;
    /* The last tile of the last channel reads up to qpad + 2 wp + 2 floats past
     * the start of that channel's plane. */
    k->xp_size = (cin - 1) * k->plane + (k->plane - k->pplane) + k->qpad + 2 * k->wp + 2 + 16;
    k->xp_size = (k->xp_size + 15) & ~(gint64) 15;
}

gboolean
dfq_priv_cpu_avx512 (void)
{
#ifdef DFQ_CONV3_AVX512
    static gsize once = 0;
    static gboolean ok = FALSE;
    if (g_once_init_enter (&once)) {
        __builtin_cpu_init ();
        ok = __builtin_cpu_supports ("avx512f") && g_getenv ("DFQ_CONV_NO_AVX512") == NULL;
        g_once_init_leave (&once, 1);
    }
    return ok;
#else
    return FALSE;
#endif
}

/* Whether a conv (its forward when @for_dx is FALSE, else its input gradient)
 * takes the 3x3 kernel. Below 8 output channels (the kernel's: Co for the
 * forward, Ci for dX) a tile would be mostly padding, and so would tiny planes. */
static gboolean
dfq_conv3_usable (const DfqConv2dGeom *g, gboolean for_dx)
{
    return g->kh == 3 && g->kw == 3 && g->s == 1 && g->p == 1 && g->g == 1 && !g->direct && g->ci >= 2 &&
           (for_dx ? g->ci : g->co) >= DFQ_CONV3_COT && g->h * g->w >= 36 && dfq_priv_cpu_avx512 ();
}

/* The same for the forward of a 3x3 stride-2 conv with padding 1 (the first
 * conv of a ResNet stage), through the phase planes. */
static gboolean
dfq_conv3_usable_s2 (const DfqConv2dGeom *g)
{
    return g->kh == 3 && g->kw == 3 && g->s == 2 && g->p == 1 && g->g == 1 && !g->direct && g->ci >= 2 &&
           g->co >= DFQ_CONV3_COT && g->ho * g->wo >= 36 && dfq_priv_cpu_avx512 ();
}

/* Weights for the forward: wp[cb][c][tap][t] = w[cb + t][c][tap] (0 past Co). */
static void
dfq_conv3_pack_forward (const DfqConv3Geom *k, const float *w, float *wp)
{
    for (gint64 cb = 0; cb < k->cout_pad; cb += DFQ_CONV3_COT)
        for (gint64 c = 0; c < k->cin; c++)
            for (gint64 tap = 0; tap < 9; tap++)
                for (gint64 t = 0; t < DFQ_CONV3_COT; t++) {
                    gint64 co = cb + t;
                    *wp++ = co < k->cout ? w[(co * k->cin + c) * 9 + tap] : 0.0f;
                }
}

/* Weights for the input gradient, a conv of dY (Co channels in) to Ci channels
 * out with the kernel flipped: wp[cb][co][tap][t] = w[co][cb + t][8 - tap]. */
static void
dfq_conv3_pack_dx (const DfqConv3Geom *k, const float *w, float *wp)
{
    for (gint64 cb = 0; cb < k->cout_pad; cb += DFQ_CONV3_COT)
        for (gint64 co = 0; co < k->cin; co++)
            for (gint64 tap = 0; tap < 9; tap++)
                for (gint64 t = 0; t < DFQ_CONV3_COT; t++) {
                    gint64 ci = cb + t;
                    *wp++ = ci < k->cout ? w[(co * k->cout + ci) * 9 + 8 - tap] : 0.0f;
                }
}

/* Stride 2: phase (a, b) of channel c, P[u][v] = x[2u + a - 1][2v + b - 1]
 * (0 outside). */
static void
dfq_conv3_pad_s2 (const DfqConv3Geom *k, const float *restrict x, float *restrict xp)
{
    const gint64 wp = k->wp, ih = k->in_h, iw = k->in_w;
    for (gint64 c = 0; c < k->cin; c++) {
        const float *restrict xc = x + c * ih * iw;
        for (int a = 0; a < 2; a++)
            for (int b = 0; b < 2; b++) {
                float *restrict pp = xp + c * k->plane + (a * 2 + b) * k->pplane;
                for (gint64 u = 0; u <= k->h; u++) {
                    float *restrict pr = pp + u * wp;
                    const gint64 iy = 2 * u + a - 1;
                    if (iy < 0 || iy >= ih) {
                        for (gint64 v = 0; v < wp; v++)
                            pr[v] = 0.0f;
                        continue;
                    }
                    const float *restrict xr = xc + iy * iw;
                    for (gint64 v = 0; v < wp; v++) {
                        const gint64 ix = 2 * v + b - 1;
                        pr[v] = ix >= 0 && ix < iw ? xr[ix] : 0.0f;
                    }
                }
            }
    }
    gint64 used = k->cin * k->plane;
    memset (xp + used, 0, (gsize) (k->xp_size - used) * sizeof (float));
}

#ifdef DFQ_CONV3_AVX512
/* Lanes [0, n) of a vector, n clamped to [0, 16]. */
static inline __mmask16
dfq_conv3_lanes (gint64 n)
{
    return n >= 16 ? (__mmask16) 0xffff : n <= 0 ? (__mmask16) 0 : (__mmask16) ((1u << n) - 1u);
}

/* Stride 2 with AVX-512: each input row gives one row of two phases, its even
 * columns (phase b = 1: P[v] = x[2v]) and its odd ones (b = 0: P[v] =
 * x[2v - 1], P[0] = 0), split by two permutes of 32 loaded floats. */
__attribute__ ((target ("avx512f"))) static void
dfq_conv3_pad_s2_avx512 (const DfqConv3Geom *k, const float *restrict x, float *restrict xp)
{
    const gint64 wp = k->wp, ih = k->in_h, iw = k->in_w;
    const __m512i even = _mm512_setr_epi32 (0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_setr_epi32 (1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    const __m512 zero = _mm512_setzero_ps ();
    for (gint64 c = 0; c < k->cin; c++) {
        const float *restrict xc = x + c * ih * iw;
        for (int a = 0; a < 2; a++) {
            float *restrict p0 = xp + c * k->plane + (a * 2 + 0) * k->pplane; /* odd columns */
            float *restrict p1 = xp + c * k->plane + (a * 2 + 1) * k->pplane; /* even columns */
            for (gint64 u = 0; u <= k->h; u++) {
                float *restrict r0 = p0 + u * wp, *restrict r1 = p1 + u * wp;
                const gint64 iy = 2 * u + a - 1;
                if (iy < 0 || iy >= ih) {
                    for (gint64 v = 0; v < wp; v += 16) {
                        _mm512_mask_storeu_ps (r0 + v, dfq_conv3_lanes (wp - v), zero);
                        _mm512_mask_storeu_ps (r1 + v, dfq_conv3_lanes (wp - v), zero);
                    }
                    continue;
                }
                const float *restrict xr = xc + iy * iw;
                r0[0] = 0.0f;
                for (gint64 v = 0; v < wp; v += 16) {
                    const gint64 n_in = iw - 2 * v; /* input floats left from column 2v */
                    const __m512 lo = _mm512_maskz_loadu_ps (dfq_conv3_lanes (n_in), xr + 2 * v);
                    const __m512 hi = _mm512_maskz_loadu_ps (dfq_conv3_lanes (n_in - 16), xr + 2 * v + 16);
                    _mm512_mask_storeu_ps (r1 + v, dfq_conv3_lanes (wp - v), _mm512_permutex2var_ps (lo, even, hi));
                    _mm512_mask_storeu_ps (r0 + v + 1, dfq_conv3_lanes (wp - v - 1),
                                           _mm512_permutex2var_ps (lo, odd, hi));
                }
            }
        }
    }
    gint64 used = k->cin * k->plane;
    memset (xp + used, 0, (gsize) (k->xp_size - used) * sizeof (float));
}

/* Stride 1 with AVX-512 (the kernels run only there): rows of a few dozen
 * floats, where the plain loop below became a memcpy call per row. Each row
 * is copied into place with vectors (the tail masked), row r at
 * pc + (r + 1) wp + 1, and only the border around it is zeroed: the top and
 * bottom rows, and the two floats between consecutive rows (right border of
 * one, left border of the next). Every float of the plane is stored once
 * (zeroing the whole plane first compiled to a memset call per plane). */
__attribute__ ((target ("avx512f"))) static void
dfq_conv3_pad_s1 (const DfqConv3Geom *k, const float *restrict x, float *restrict xp)
{
    const gint64 wp = k->wp, w = k->w, h = k->h;
    const __m512 zero = _mm512_setzero_ps ();
    const __mmask16 tail = (__mmask16) ((1u << (w % 16)) - 1u);
    for (gint64 c = 0; c < k->cin; c++) {
        float *restrict pc = xp + c * k->plane;
        const float *restrict xc = x + c * h * w;
        /* The top row and the left border of row 1. */
        for (gint64 q = 0; q < wp + 1; q += 16)
            _mm512_mask_storeu_ps (pc + q, dfq_conv3_lanes (wp + 1 - q), zero);
        for (gint64 r = 0; r < h; r++) {
            float *restrict pr = pc + (r + 1) * wp + 1;
            const float *restrict xr = xc + r * w;
            gint64 v = 0;
            for (; v + 16 <= w; v += 16)
                _mm512_storeu_ps (pr + v, _mm512_loadu_ps (xr + v));
            if (tail != 0)
                _mm512_mask_storeu_ps (pr + v, tail, _mm512_maskz_loadu_ps (tail, xr + v));
            pr[w] = 0.0f;     /* right border of this row */
            pr[w + 1] = 0.0f; /* left border of the next (or the bottom row's first) */
        }
        /* The rest of the bottom row. */
        for (gint64 q = 1; q < wp; q += 16)
            _mm512_mask_storeu_ps (pc + (h + 1) * wp + q, dfq_conv3_lanes (wp - q), zero);
    }
    gint64 used = k->cin * k->plane;
    memset (xp + used, 0, (gsize) (k->xp_size - used) * sizeof (float));
}
#endif

/* The zero-padded copy of one image's planes (and zeros in the slack). */
static void
dfq_conv3_pad (const DfqConv3Geom *k, const float *restrict x, float *restrict xp)
{
#ifdef DFQ_CONV3_AVX512
    if (k->s == 2) {
        dfq_conv3_pad_s2_avx512 (k, x, xp);
        return;
    }
#endif
    if (k->s == 2) {
        dfq_conv3_pad_s2 (k, x, xp);
        return;
    }
#ifdef DFQ_CONV3_AVX512
    dfq_conv3_pad_s1 (k, x, xp);
    return;
#endif
    const gint64 wp = k->wp, w = k->w;
    for (gint64 c = 0; c < k->cin; c++) {
        float *restrict pc = xp + c * k->plane;
        const float *restrict xc = x + c * k->h * w;
        for (gint64 q = 0; q < wp; q++)
            pc[q] = 0.0f;
        for (gint64 r = 0; r < k->h; r++) {
            float *restrict pr = pc + (r + 1) * wp;
            const float *restrict xr = xc + r * w;
            pr[0] = 0.0f;
#pragma omp simd
            for (gint64 q = 0; q < w; q++)
                pr[q + 1] = xr[q];
            pr[w + 1] = 0.0f;
        }
        for (gint64 q = 0; q < wp; q++)
            pc[(k->h + 1) * wp + q] = 0.0f;
    }
    gint64 used = k->cin * k->plane;
    memset (xp + used, 0, (gsize) (k->xp_size - used) * sizeof (float));
}

#ifdef DFQ_CONV3_AVX512
/* The output rows that grid positions [q, q + 16) fall on: for each, the mask
 * of the positions that are real outputs (wo < W, row < H) and the offset in
 * the output plane of position q + 0 under that row's mapping
 * (ho*W + wo = q + k - ho*(Wp - W)). Returns how many (at most
 * DFQ_CONV3_MAX_SEG: a row holds at least 2 positions of the grid). */
#define DFQ_CONV3_MAX_SEG 16
static inline int
dfq_conv3_segments (const DfqConv3Geom *k, gint64 q, guint16 *mask, gint64 *base)
{
    int n = 0;
    gint64 r = q / k->wp, k0 = -(q % k->wp); /* vector lane where row r starts */
    for (; k0 < 16 && r < k->h; r++, k0 += k->wp) {
        gint64 lo = MAX (k0, 0), hi = MIN (k0 + k->w, 16);
        if (hi <= lo)
            continue;
        mask[n] = (guint16) (((1u << (hi - lo)) - 1u) << lo);
        base[n] = r * k->w - k0;
        n++;
    }
    return n;
}

/* Stores one tile (@nv vectors at grid position @q0, channels cb..cb + n_t)
 * through the epilogue: see dfq_conv3_tiles_nv. */
__attribute__ ((target ("avx512f"), noinline)) static void
dfq_conv3_store_fused (const DfqConv3Geom *k, const __m512 (*tile)[DFQ_CONV3_NV], int nv, gint64 q0, gint64 cb,
                       int n_t, float *restrict y, const float *b, const DfqPrivConvEpilogue *ep,
                       const float *res)
{
    const gint64 out_plane = k->h * k->w;
    __mmask16 seg_mask[DFQ_CONV3_NV][DFQ_CONV3_MAX_SEG];
    gint64 seg_base[DFQ_CONV3_NV][DFQ_CONV3_MAX_SEG];
    int n_seg[DFQ_CONV3_NV];
    for (int v = 0; v < nv; v++)
        n_seg[v] = dfq_conv3_segments (k, q0 + 16 * v, seg_mask[v], seg_base[v]);
    const __m512 zero = _mm512_setzero_ps (), six = _mm512_set1_ps (6.0f);
    const gboolean relu = ep->relu || ep->relu6, relu6 = ep->relu6;
    for (int t = 0; t < n_t; t++) {
        const gint64 co = cb + t;
        float *yc = y + co * out_plane;
        const float *rc = res != NULL ? res + co * out_plane : NULL;
        const __m512 bv = _mm512_set1_ps (b != NULL ? b[co] : 0.0f);
        const __m512 mv = _mm512_set1_ps (ep->mean[co]);
        const __m512 av = _mm512_set1_ps (ep->scale[co]);
        const __m512 sv = _mm512_set1_ps (ep->shift[co]);
        for (int v = 0; v < nv; v++)
            for (int sg = 0; sg < n_seg[v]; sg++) {
                const __mmask16 m = seg_mask[v][sg];
                __m512 r = _mm512_add_ps (tile[t][v], bv);          /* the conv op's store */
                r = _mm512_fmadd_ps (_mm512_sub_ps (r, mv), av, sv); /* eval BN */
                if (rc != NULL)
                    r = _mm512_add_ps (r, _mm512_maskz_loadu_ps (m, rc + seg_base[v][sg])); /* add */
                if (relu)
                    r = _mm512_max_ps (r, zero); /* relu (NaN -> 0 as the op's select) */
                if (relu6)
                    r = _mm512_min_ps (r, six); /* relu6: min (max (r, 0), 6) */
                _mm512_mask_storeu_ps (yc + seg_base[v][sg], m, r);
            }
    }
}

/* The epilogue of a tile reads the residual and writes rows of the output
 * that are seldom in cache (a batch's activations do not fit): ask for those
 * lines before the tile's sums, which take far longer than fetching them. */
__attribute__ ((target ("avx512f"), always_inline)) static inline void
dfq_conv3_prefetch_tile (const DfqConv3Geom *k, gint64 q0, int nv, gint64 cb, int n_t, const float *y,
                         const float *res)
{
    const gint64 out_plane = k->h * k->w;
    const gint64 r0 = q0 / k->wp, r1 = MIN (k->h, (q0 + 16 * nv - 1) / k->wp + 1);
    if (r1 <= r0)
        return;
    const gint64 lo = r0 * k->w, n_bytes = (r1 - r0) * k->w * (gint64) sizeof (float);
    for (int t = 0; t < n_t; t++) {
        const char *yc = (const char *) (y + (cb + t) * out_plane + lo);
        const char *rc = res != NULL ? (const char *) (res + (cb + t) * out_plane + lo) : NULL;
        for (gint64 off = 0; off < n_bytes + 63; off += 64) {
            __builtin_prefetch (yc + MIN (off, n_bytes - 1), 1, 3);
            if (rc != NULL)
                __builtin_prefetch (rc + MIN (off, n_bytes - 1), 0, 3);
        }
    }
}

/* y[co][ho][wo] (+)= sum_{c,i,j} wt[co][c][i][j] xp[c][q + i*wp + j] (+ b[co])
 * at q = ho*wp + wo, all Co channels, tile by tile over the flattened grid
 * (y = when @store, else +=); @nv vectors per tile and the stride @s are
 * constants in each caller, so that the accumulators stay in registers.
 * With an epilogue @ep (@store only), each stored value v = acc + b[co] becomes
 * relu ((v - mean) * scale + shift + res[co][ho][wo]) first, in the order and
 * rounding of the separate eval BN (fused multiply-add, see
 * dfq_priv_bn_eval_rounding), add and relu ops (relu: v > 0 ? v : 0, which is
 * what vmaxps (v, 0) returns, NaN included). */
__attribute__ ((target ("avx512f"), always_inline)) static inline void
dfq_conv3_tiles_nv (const DfqConv3Geom *k, const float *restrict xp, const float *restrict wpack,
                    float *restrict y, const float *b, gboolean store, const DfqPrivConvEpilogue *ep,
                    const float *res, const float *next, gint64 next_bytes, const int nv, const int s,
                    const int fused)
{
    const gint64 wp = k->wp, pplane = k->pplane, plane = k->plane, cin = k->cin, qpad = k->qpad;
    const gint64 out_plane = k->h * k->w;
    /* the fused path also spreads over its tiles prefetches (to L2) of @next,
     * the next image's input, which its padded copy will read */
    const gint64 n_tiles = k->cout_pad / DFQ_CONV3_COT * (qpad / (16 * nv));
    const gint64 next_chunk = (next_bytes / MAX (n_tiles, 1) + 64) & ~(gint64) 63;
    gint64 next_off = 0;
    for (gint64 cb = 0; cb < k->cout_pad; cb += DFQ_CONV3_COT) {
        const float *wb = wpack + cb * cin * 9;
        const int n_t = (int) MIN (DFQ_CONV3_COT, k->cout - cb);
        for (gint64 q0 = 0; q0 < qpad; q0 += 16 * nv) {
            if (fused) {
                dfq_conv3_prefetch_tile (k, q0, nv, cb, n_t, y, res);
                for (gint64 end = MIN (next_off + next_chunk, next_bytes); next_off < end; next_off += 64)
                    __builtin_prefetch ((const char *) next + next_off, 0, 2);
            }
            __m512 acc[DFQ_CONV3_COT][DFQ_CONV3_NV];
#pragma GCC unroll 8
            for (int t = 0; t < DFQ_CONV3_COT; t++)
#pragma GCC unroll 4
                for (int v = 0; v < nv; v++)
                    acc[t][v] = _mm512_setzero_ps ();
            const float *xc = xp + q0;
            const float *wk = wb;
            for (gint64 c = 0; c < cin; c++, xc += plane) {
                for (int i = 0; i < 3; i++) {
                    for (int j = 0; j < 3; j++, wk += DFQ_CONV3_COT) {
                        const float *xt = xc + (s == 1 ? i * wp + j
                                                       : ((i & 1) * 2 + (j & 1)) * pplane + (i >> 1) * wp + (j >> 1));
                        __m512 xv[DFQ_CONV3_NV];
#pragma GCC unroll 4
                        for (int v = 0; v < nv; v++)
                            xv[v] = _mm512_loadu_ps (xt + 16 * v);
#pragma GCC unroll 8
                        for (int t = 0; t < DFQ_CONV3_COT; t++) {
                            __m512 wv = _mm512_set1_ps (wk[t]);
#pragma GCC unroll 4
                            for (int v = 0; v < nv; v++)
                                acc[t][v] = _mm512_fmadd_ps (xv[v], wv, acc[t][v]);
                        }
                    }
                }
            }
            if (fused) {
                /* through memory: the epilogue's constants next to the 24
                 * accumulators would make the compiler spill in the loop */
                __m512 tile[DFQ_CONV3_COT][DFQ_CONV3_NV];
#pragma GCC unroll 8
                for (int t = 0; t < DFQ_CONV3_COT; t++)
#pragma GCC unroll 4
                    for (int v = 0; v < nv; v++)
                        tile[t][v] = acc[t][v];
                dfq_conv3_store_fused (k, tile, nv, q0, cb, n_t, y, b, ep, res);
                continue;
            }
            /* Straight into y: the 16 grid positions of a vector fall on a
             * few output rows; each row's valid part is one masked store at
             * y + base (element k of the vector to y[base + k]). */
            __mmask16 seg_mask[DFQ_CONV3_NV][DFQ_CONV3_MAX_SEG];
            gint64 seg_base[DFQ_CONV3_NV][DFQ_CONV3_MAX_SEG];
            int n_seg[DFQ_CONV3_NV];
            for (int v = 0; v < nv; v++)
                n_seg[v] = dfq_conv3_segments (k, q0 + 16 * v, seg_mask[v], seg_base[v]);
#pragma GCC unroll 8
            for (int t = 0; t < DFQ_CONV3_COT; t++) {
                if (t >= n_t)
                    break;
                float *yc = y + (cb + t) * out_plane;
                const __m512 bv = _mm512_set1_ps (b != NULL ? b[cb + t] : 0.0f);
#pragma GCC unroll 4
                for (int v = 0; v < nv; v++)
                    for (int sg = 0; sg < n_seg[v]; sg++) {
                        float *d = yc + seg_base[v][sg];
                        const __mmask16 m = seg_mask[v][sg];
                        __m512 r = store ? _mm512_add_ps (acc[t][v], bv)
                                         : _mm512_add_ps (_mm512_maskz_loadu_ps (m, d), acc[t][v]);
                        _mm512_mask_storeu_ps (d, m, r);
                    }
            }
        }
    }
}

__attribute__ ((target ("avx512f"))) static void
dfq_conv3_tiles (const DfqConv3Geom *k, const float *restrict xp, const float *restrict wpack,
                 float *restrict y, const float *b, gboolean store)
{
    if (k->s == 1 && k->nv == 2)
        dfq_conv3_tiles_nv (k, xp, wpack, y, b, store, NULL, NULL, NULL, 0, 2, 1, FALSE);
    else if (k->s == 1)
        dfq_conv3_tiles_nv (k, xp, wpack, y, b, store, NULL, NULL, NULL, 0, DFQ_CONV3_NV, 1, FALSE);
    else if (k->nv == 2)
        dfq_conv3_tiles_nv (k, xp, wpack, y, b, store, NULL, NULL, NULL, 0, 2, 2, FALSE);
    else
        dfq_conv3_tiles_nv (k, xp, wpack, y, b, store, NULL, NULL, NULL, 0, DFQ_CONV3_NV, 2, FALSE);
}

/* The same with the epilogue @ep (store only): separate instances, so that
 * the plain kernel stays as it was. */
__attribute__ ((target ("avx512f"))) static void
dfq_conv3_tiles_fused (const DfqConv3Geom *k, const float *restrict xp, const float *restrict wpack,
                       float *restrict y, const float *b, const DfqPrivConvEpilogue *ep, const float *res,
                       const float *next, gint64 next_bytes)
{
    if (k->s == 1 && k->nv == 2)
        dfq_conv3_tiles_nv (k, xp, wpack, y, b, TRUE, ep, res, next, next_bytes, 2, 1, TRUE);
    else if (k->s == 1)
        dfq_conv3_tiles_nv (k, xp, wpack, y, b, TRUE, ep, res, next, next_bytes, DFQ_CONV3_NV, 1, TRUE);
    else if (k->nv == 2)
        dfq_conv3_tiles_nv (k, xp, wpack, y, b, TRUE, ep, res, next, next_bytes, 2, 2, TRUE);
    else
        dfq_conv3_tiles_nv (k, xp, wpack, y, b, TRUE, ep, res, next, next_bytes, DFQ_CONV3_NV, 2, TRUE);
}
#else
static void
dfq_conv3_tiles (const DfqConv3Geom *k, const float *xp, const float *wpack, float *y, const float *b,
                 gboolean store)
{
    (void) k, (void) xp, (void) wpack, (void) y, (void) b, (void) store;
    g_assert_not_reached ();
}

static void
dfq_conv3_tiles_fused (const DfqConv3Geom *k, const float *xp, const float *wpack, float *y, const float *b,
                       const DfqPrivConvEpilogue *ep, const float *res, const float *next, gint64 next_bytes)
{
    (void) k, (void) xp, (void) wpack, (void) y, (void) b, (void) ep, (void) res, (void) next, (void) next_bytes;
    g_assert_not_reached ();
}
#endif

/* One image: y_n = conv3 (x_n) (+ b), or y_n += it; with the epilogue @ep
 * (residual image @res_n; the input of the image to come, @next, to
 * prefetch, or NULL) when not NULL. @ws: xp_size floats. */
static void
dfq_conv3_image (const DfqConv3Geom *k, const float *xn, const float *wpack, const float *b, float *yn,
                 gboolean store, const DfqPrivConvEpilogue *ep, const float *res_n, const float *next, float *ws)
{
    dfq_conv3_pad (k, xn, ws);
    if (ep != NULL)
        dfq_conv3_tiles_fused (k, ws, wpack, yn, b, ep, res_n, next,
                               next != NULL ? k->cin * k->in_h * k->in_w * (gint64) sizeof (float) : 0);
    else
        dfq_conv3_tiles (k, ws, wpack, yn, b, store);
}

/* Weight gradient of a 3x3 "same" conv without im2col: over the flattened grid,
 * wt[c*9 + tap][co] (+)= sum_q xp[c][q + i*wp + j] dYg[q][co], the transposed
 * layout of the GEMM path's partials. dYg is dY transposed onto the grid
 * (positions x channels), zero in the thrown-away columns so that they add
 * nothing. A tile is 16*cov output channels (cov vectors) x the 9 taps of nch
 * input channels, 18 accumulators, each summing over q in order. Needs Co a
 * multiple of 16. */
static gboolean
dfq_conv3_wgrad_usable (const DfqConv2dGeom *g)
{
    return dfq_conv3_usable (g, FALSE) && g->co % 16 == 0;
}

/* dYg[q][co] for q < h*wp (@k: the forward geometry, cout = Co). */
static void
dfq_conv3_dy_grid (const DfqConv3Geom *k, const float *restrict gy, float *restrict gyt)
{
    const gint64 co_n = k->cout, w = k->w, hw = k->h * k->w;
    for (gint64 r = 0; r < k->h; r++) {
        for (gint64 q = 0; q < w; q++) {
            float *restrict d = gyt + (r * k->wp + q) * co_n;
            const float *restrict s = gy + r * w + q;
            for (gint64 co = 0; co < co_n; co++)
                d[co] = s[co * hw];
        }
        memset (gyt + (r * k->wp + w) * co_n, 0, (gsize) ((k->wp - w) * co_n) * sizeof (float));
    }
}

#ifdef DFQ_CONV3_AVX512
__attribute__ ((target ("avx512f"), always_inline)) static inline void
dfq_conv3_wgrad_tile (const DfqConv3Geom *k, const float *restrict xc, const float *restrict gyt, gint64 cb,
                      float *restrict wt, gboolean store, const int cov, const int nch)
{
    const gint64 co_n = k->cout, wp = k->wp, plane = k->plane, q_n = k->q;
    __m512 acc[2][9][2];
#pragma GCC unroll 2
    for (int c = 0; c < nch; c++)
#pragma GCC unroll 9
        for (int t = 0; t < 9; t++)
#pragma GCC unroll 2
            for (int v = 0; v < cov; v++)
                acc[c][t][v] = _mm512_setzero_ps ();
    const float *gq = gyt + cb;
    for (gint64 q = 0; q < q_n; q++, gq += co_n) {
        __m512 gv[2];
#pragma GCC unroll 2
        for (int v = 0; v < cov; v++)
            gv[v] = _mm512_loadu_ps (gq + 16 * v);
#pragma GCC unroll 2
        for (int c = 0; c < nch; c++)
#pragma GCC unroll 3
            for (int i = 0; i < 3; i++) {
                const float *xr = xc + c * plane + i * wp + q;
#pragma GCC unroll 3
                for (int j = 0; j < 3; j++) {
                    __m512 xv = _mm512_set1_ps (xr[j]);
#pragma GCC unroll 2
                    for (int v = 0; v < cov; v++)
                        acc[c][i * 3 + j][v] = _mm512_fmadd_ps (xv, gv[v], acc[c][i * 3 + j][v]);
                }
            }
    }
#pragma GCC unroll 2
    for (int c = 0; c < nch; c++)
#pragma GCC unroll 9
        for (int t = 0; t < 9; t++)
#pragma GCC unroll 2
            for (int v = 0; v < cov; v++) {
                float *d = wt + (c * 9 + t) * co_n + cb + 16 * v;
                _mm512_storeu_ps (d, store ? acc[c][t][v] : _mm512_add_ps (_mm512_loadu_ps (d), acc[c][t][v]));
            }
}

/* All tiles of one image: @xp the padded x, @gyt its dYg; wt = (store ? 0 : wt) + the image's sums. */
__attribute__ ((target ("avx512f"))) static void
dfq_conv3_wgrad_tiles (const DfqConv3Geom *k, const float *restrict xp, const float *restrict gyt,
                       float *restrict wt, gboolean store)
{
    const gint64 co_n = k->cout;
    if (co_n % 32 == 0) {
        for (gint64 c = 0; c < k->cin; c++)
            for (gint64 cb = 0; cb < co_n; cb += 32)
                dfq_conv3_wgrad_tile (k, xp + c * k->plane, gyt, cb, wt + c * 9 * co_n, store, 2, 1);
        return;
    }
    gint64 c = 0;
    for (; c + 2 <= k->cin; c += 2)
        for (gint64 cb = 0; cb < co_n; cb += 16)
            dfq_conv3_wgrad_tile (k, xp + c * k->plane, gyt, cb, wt + c * 9 * co_n, store, 1, 2);
    for (; c < k->cin; c++)
        for (gint64 cb = 0; cb < co_n; cb += 16)
            dfq_conv3_wgrad_tile (k, xp + c * k->plane, gyt, cb, wt + c * 9 * co_n, store, 1, 1);
}
#else
static void
dfq_conv3_wgrad_tiles (const DfqConv3Geom *k, const float *xp, const float *gyt, float *wt, gboolean store)
{
    (void) k, (void) xp, (void) gyt, (void) wt, (void) store;
    g_assert_not_reached ();
}
#endif

/* y_n = W cols(x_n) (+ b) for one image, on the calling thread. */
static void
dfq_conv2d_gemm_image (const DfqConv2dGeom *g, const float *xn, const float *w, const float *b,
                       float *yn, float *col)
{
    const float *cols = xn;
    if (!g->cols_are_x) {
        dfq_conv2d_im2col (g, xn, col);
        cols = col;
    }
    if (b != NULL)
        for (gint64 co = 0; co < g->co; co++)
            dfq_conv2d_fill_bias (g, b, yn, co);
    const gint64 nb = dfq_conv2d_small_gemm_blocks (g->cog, g->p_out, g->kg);
    for (gint64 grp = 0; grp < g->g; grp++)
        for (gint64 blk = 0; blk < nb; blk++) {
            gint64 lo, hi;
            dfq_conv2d_block (g->p_out, nb, blk, &lo, &hi);
            dfq_conv2d_fwd_gemm (g, grp, lo, hi, w, cols, b != NULL ? 1.0f : 0.0f, yn);
        }
}

/* The same for a single image, with every step spread over the threads. */
static void
dfq_conv2d_gemm_single (const DfqConv2dGeom *g, const float *x, const float *w, const float *b,
                        float *y, float *col, int n_threads)
{
    const float *cols = g->cols_are_x ? x : col;
    const gint64 nb = dfq_conv2d_n_blocks (g->p_out, 256);
#pragma omp parallel num_threads(n_threads)
    {
        if (!g->cols_are_x) {
#pragma omp for schedule(static) nowait
            for (gint64 c = 0; c < g->ci; c++)
                dfq_conv2d_im2col_channel (g, x, col, c);
        }
        if (b != NULL) {
#pragma omp for schedule(static) nowait
            for (gint64 co = 0; co < g->co; co++)
                dfq_conv2d_fill_bias (g, b, y, co);
        }
#pragma omp barrier
#pragma omp for schedule(static) collapse(2)
        for (gint64 grp = 0; grp < g->g; grp++)
            for (gint64 blk = 0; blk < nb; blk++) {
                gint64 lo, hi;
                dfq_conv2d_block (g->p_out, nb, blk, &lo, &hi);
                dfq_conv2d_fwd_gemm (g, grp, lo, hi, w, cols, b != NULL ? 1.0f : 0.0f, y);
            }
    }
}

static gboolean dfq_conv3_fused_usable (const DfqConv2dGeom *g, gboolean has_bias);

/* ---- 1x1 stride-1 convs on small planes: one GEMM over the batch ----
 * Per image, a 1x1 conv on a 7x7 or 4x4 plane is a GEMM with 49 or 16
 * columns: OpenBLAS packs the whole weight matrix again for every image (the
 * 320 -> 1280 head of a MobileNetV2 on 4x4: 1.6 MB per image) to use it for a
 * handful of columns. Instead the batch is gathered channel-major,
 * xt[ci][n*P + p] = x[n][ci][p], multiplied in column blocks of fixed size
 * (DFQ_CONV2D_BT_COLS, one single-threaded GEMM each, so the bits do not
 * depend on the thread count) and scattered back image by image, with the
 * epilogue applied to each plane as it lands. */
#define DFQ_CONV2D_BT_MAX_P 64
#define DFQ_CONV2D_BT_COLS 256

static inline gboolean
dfq_conv2d_batched_usable (const DfqConv2dGeom *g)
{
    return g->cols_are_x && g->g == 1 && g->n > 1 && g->p_out <= DFQ_CONV2D_BT_MAX_P;
}

static void
dfq_conv2d_batched_forward (const DfqConv2dGeom *g, DfqArena *arena, const float *x, const float *w, const float *b,
                            float *y, const DfqPrivConvEpilogue *ep, int n_threads)
{
    const gint64 P = g->p_out, np = g->n * P;
    float *xt = dfq_arena_alloc_uninit (arena, (gsize) (g->ci * np) * sizeof (float));
    float *yt = dfq_arena_alloc_uninit (arena, (gsize) (g->co * np) * sizeof (float));
    const gint64 nb = (np + DFQ_CONV2D_BT_COLS - 1) / DFQ_CONV2D_BT_COLS;
#pragma omp parallel num_threads(n_threads)
    {
#pragma omp for schedule(static)
        for (gint64 n = 0; n < g->n; n++)
            for (gint64 c = 0; c < g->ci; c++)
                memcpy (xt + c * np + n * P, x + (n * g->ci + c) * P, (gsize) P * sizeof (float));
#pragma omp for schedule(static)
        for (gint64 blk = 0; blk < nb; blk++) {
            const gint64 lo = blk * DFQ_CONV2D_BT_COLS, cols = MIN (np - lo, DFQ_CONV2D_BT_COLS);
            if (b != NULL)
                for (gint64 co = 0; co < g->co; co++)
                    for (gint64 k = 0; k < cols; k++)
                        yt[co * np + lo + k] = b[co];
            cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint) g->co, (blasint) cols,
                         (blasint) g->ci, 1.0f, w, (blasint) g->ci, xt + lo, (blasint) np, b != NULL ? 1.0f : 0.0f,
                         yt + lo, (blasint) np);
        }
#pragma omp for schedule(static)
        for (gint64 n = 0; n < g->n; n++)
            for (gint64 co = 0; co < g->co; co++) {
                memcpy (y + (n * g->co + co) * P, yt + co * np + n * P, (gsize) P * sizeof (float));
                if (ep != NULL)
                    dfq_conv2d_epilogue (g, ep, y, n, co);
            }
    }
}

/* The 3x3 kernels, one image per iteration (the epilogue in their registers). */
static void
dfq_conv2d_conv3_forward (const DfqConv2dGeom *g, DfqArena *arena, const float *x, const float *w, const float *b,
                          float *y, const DfqPrivConvEpilogue *ep, int n_threads)
{
    DfqConv3Geom k;
    dfq_conv3_geom (&k, g->ci, g->co, g->h, g->w, g->s);
    float *wpack = dfq_arena_alloc_uninit (arena, (gsize) (k.cout_pad * k.cin * 9) * sizeof (float));
    dfq_conv3_pack_forward (&k, w, wpack);
    const gsize ws_size = (gsize) k.xp_size;
    float *ws = dfq_arena_alloc_uninit (arena, (gsize) n_threads * ws_size * sizeof (float));
    const gint64 x_step = g->ci * g->h * g->w, y_step = g->co * g->p_out;
#pragma omp parallel for schedule(dynamic, 1) num_threads(n_threads) if (g->n > 1)
    for (gint64 n = 0; n < g->n; n++)
        dfq_conv3_image (&k, x + n * x_step, wpack, b, y + n * y_step, TRUE, ep,
                         ep != NULL && ep->residual != NULL ? ep->residual + n * y_step : NULL,
                         n + 1 < g->n ? x + (n + 1) * x_step : NULL,
                         ws + (gsize) dfq_priv_thread_id () * ws_size);
}

/* The forward, with an epilogue only where dfq_priv_conv2d_fusable said so. */
static void
dfq_conv2d_forward_with (DfqTensor *dst, const DfqPrivConvEpilogue *ep)
{
    DfqConv2dGeom g;
    dfq_conv2d_geom (dst, &g);
    const float *x = dfq_tensor_f32 (dst->src[0]);
    const float *w = dfq_tensor_f32 (dst->src[1]);
    const float *b = dst->src[2] != NULL ? dfq_tensor_f32 (dst->src[2]) : NULL;
    float *y = dfq_tensor_f32 (dst);

    if (g.n == 0 || g.co == 0 || g.p_out == 0)
        return;
    const int n_threads = dfq_get_num_threads ();
    /* The epilogue runs in the 3x3 kernel where it can, else after each image. */
    const gboolean conv3 = ep != NULL ? dfq_conv3_fused_usable (&g, b != NULL)
                                      : dfq_conv3_usable (&g, FALSE) || dfq_conv3_usable_s2 (&g);
    if (conv3) {
        dfq_conv2d_conv3_forward (&g, dst->arena, x, w, b, y, ep, n_threads);
        return;
    }
    if (g.direct) {
        dfq_conv2d_direct_forward (&g, x, w, b, y, ep);
        return;
    }
    if (g.cols_are_x && g.g == 1 && dfq_priv_conv1x1_usable (g.ci, g.co, g.p_out)) {
        dfq_priv_conv1x1_forward (dst->arena, x, w, b, y, g.n, g.ci, g.co, g.p_out, ep, n_threads);
        return;
    }
    if (dfq_conv2d_batched_usable (&g)) {
        dfq_conv2d_batched_forward (&g, dst->arena, x, w, b, y, ep, n_threads);
        return;
    }
    const gsize col_size = g.cols_are_x ? 0 : (gsize) (g.k_all * g.p_out);
    if (g.n == 1) {
        float *col = col_size > 0 ? dfq_arena_alloc_uninit (dst->arena, col_size * sizeof (float)) : NULL;
        dfq_conv2d_gemm_single (&g, x, w, b, y, col, n_threads);
        if (ep != NULL) {
#pragma omp parallel for schedule(static) num_threads(n_threads) if (g.co * g.p_out > 32768)
            for (gint64 co = 0; co < g.co; co++)
                dfq_conv2d_epilogue (&g, ep, y, 0, co);
        }
        return;
    }
    /* One column buffer per thread (the GEMMs run single-threaded in here). */
    const gint64 x_step = g.ci * g.h * g.w, y_step = g.co * g.p_out;
    float *ws = col_size > 0 ? dfq_arena_alloc_uninit (dst->arena, (gsize) n_threads * col_size * sizeof (float))
                             : NULL;
#pragma omp parallel for schedule(dynamic, 1) num_threads(n_threads)
    for (gint64 n = 0; n < g.n; n++) {
        float *col = ws != NULL ? ws + (gsize) dfq_priv_thread_id () * col_size : NULL;
        dfq_conv2d_gemm_image (&g, x + n * x_step, w, b, y + n * y_step, col);
        if (ep != NULL)
            for (gint64 co = 0; co < g.co; co++)
                dfq_conv2d_epilogue (&g, ep, y, n, co);
    }
}

void
dfq_op_conv2d_forward (DfqTensor *dst)
{
    dfq_conv2d_forward_with (dst, NULL);
}

/* Whether the 3x3 kernel computes a 1-input-channel conv (which the direct
 * loops run) with the same bits: the direct loops add the taps in the same
 * order, starting from the bias, and skip the taps in the padding, where the
 * kernel adds zeros (which change nothing: its sums start at +0 and never
 * become -0) and then the bias (0: no bias only). What remains is whether
 * the loader's clone of the direct loops fuses each multiply-add, as the
 * kernel does: run both once on the same data and compare. */
static gboolean
dfq_conv3_direct_same_bits (void)
{
#ifdef DFQ_CONV3_AVX512
    static gsize once = 0;
    static gboolean same = FALSE;
    if (g_once_init_enter (&once)) {
        enum { H = 9, W = 11, CO = DFQ_CONV3_COT };
        float x[H * W], wt[CO * 9], y_direct[CO * H * W], y_kernel[CO * H * W];
        guint32 state = 12345u;
        for (int i = 0; i < H * W; i++) {
            state = state * 1664525u + 1013904223u;
            x[i] = ldexpf ((float) (state >> 8) / 16777216.0f - 0.5f, (int) (state % 7) - 3);
        }
        for (int i = 0; i < CO * 9; i++) {
            state = state * 1664525u + 1013904223u;
            wt[i] = (float) (state >> 8) / 16777216.0f - 0.5f;
        }
        for (int co = 0; co < CO; co++)
            dfq_conv2d_direct_plane (x, H, W, wt + co * 9, 3, 3, 1, 1, 1, y_direct + co * H * W, H, W, 0.0f, FALSE);
        DfqConv3Geom k;
        dfq_conv3_geom (&k, 1, CO, H, W, 1);
        float wpack[CO * 9], ws[512];
        g_assert (k.cout_pad == CO && k.xp_size <= (gint64) G_N_ELEMENTS (ws));
        dfq_conv3_pack_forward (&k, wt, wpack);
        dfq_conv3_image (&k, x, wpack, NULL, y_kernel, TRUE, NULL, NULL, NULL, ws);
        same = memcmp (y_direct, y_kernel, sizeof y_direct) == 0;
        g_once_init_leave (&once, 1);
    }
    return same;
#else
    return FALSE;
#endif
}

/* The convs that the fused path runs in the 3x3 kernel: those that take it
 * anyway, and 1-input-channel stems without bias (see above). */
static gboolean
dfq_conv3_fused_usable (const DfqConv2dGeom *g, gboolean has_bias)
{
    if (dfq_conv3_usable (g, FALSE) || dfq_conv3_usable_s2 (g))
        return TRUE;
    return g->ci == 1 && g->g == 1 && g->kh == 3 && g->kw == 3 && g->s == 1 && g->p == 1 && !has_bias &&
           g->co >= DFQ_CONV3_COT && g->h * g->w >= 36 && dfq_priv_cpu_avx512 () && dfq_conv3_direct_same_bits ();
}

gboolean
dfq_priv_conv2d_fusable (const DfqTensor *x, const DfqTensor *weight, const DfqTensor *bias, int stride, int padding,
                         int groups)
{
    if (x == NULL || weight == NULL || x->dtype != DFQ_DTYPE_F32 || weight->dtype != DFQ_DTYPE_F32 ||
        x->n_dims != 4 || weight->n_dims != 4 || !dfq_tensor_is_contiguous (x) ||
        !dfq_tensor_is_contiguous (weight) || stride < 1 || padding < 0 || groups < 1 ||
        x->shape[0] == 0 || weight->shape[0] == 0 || x->shape[1] % groups != 0 || weight->shape[0] % groups != 0 ||
        weight->shape[1] != x->shape[1] / groups || weight->shape[2] < 1 || weight->shape[3] < 1 ||
        x->shape[2] + 2 * padding < weight->shape[2] || x->shape[3] + 2 * padding < weight->shape[3])
        return FALSE;
    if (bias != NULL && (bias->dtype != DFQ_DTYPE_F32 || dfq_tensor_numel (bias) != weight->shape[0]))
        return FALSE;
    /* Every path applies the BN step as one fused multiply-add. */
    return dfq_priv_bn_eval_rounding () == DFQ_PRIV_BN_ROUNDING_FMA;
}

DfqTensor *
dfq_priv_conv2d_fused (DfqArena *arena, DfqTensor *x, DfqTensor *weight, DfqTensor *bias, int stride, int padding,
                       int groups, const DfqPrivConvEpilogue *epilogue)
{
    g_return_val_if_fail (dfq_priv_conv2d_fusable (x, weight, bias, stride, padding, groups), NULL);
    g_return_val_if_fail (epilogue != NULL && epilogue->mean != NULL && epilogue->scale != NULL &&
                          epilogue->shift != NULL, NULL);
    gint64 shape[4] = { x->shape[0], weight->shape[0], (x->shape[2] + 2 * padding - weight->shape[2]) / stride + 1,
                        (x->shape[3] + 2 * padding - weight->shape[3]) / stride + 1 };
    DfqTensor *srcs[3] = { x, weight, bias };
    DfqTensor *t = dfq_priv_op_new_uninit (arena, DFQ_OP_CONV2D, DFQ_DTYPE_F32, 4, shape, 3, srcs);
    g_return_val_if_fail (!dfq_tensor_requires_grad (t), NULL);
    t->op_params[0] = stride;
    t->op_params[1] = padding;
    t->op_params[2] = groups;
    dfq_conv2d_forward_with (t, epilogue);
    /* a leaf, as dfq_priv_op_run leaves a result that needs no gradient */
    t->op = DFQ_OP_NONE;
    memset (t->src, 0, sizeof t->src);
    return t;
}

/* Backward of one image on the calling thread: wt = wbeta wt + (cols(x_n) dY_n^T)
 * and gx_n += col2im (W^T dY_n). @buf holds the columns, then their gradient. */
static void
dfq_conv2d_gemm_image_backward (const DfqConv2dGeom *g, const float *xn, const float *w,
                                const float *gyn, float *gxn, gboolean gx_fresh, float *wt, float wbeta,
                                float *buf, const DfqConv3Geom *k3, const float *wpack3, const DfqConv3Geom *k3w,
                                const float *wpack1)
{
    if (wt != NULL && k3w != NULL) {
        float *gyt = buf + k3w->xp_size;
        dfq_conv3_pad (k3w, xn, buf);
        dfq_conv3_dy_grid (k3w, gyn, gyt);
        dfq_conv3_wgrad_tiles (k3w, buf, gyt, wt, wbeta == 0.0f);
    } else if (wt != NULL) {
        const float *cols = xn;
        if (!g->cols_are_x) {
            dfq_conv2d_im2col (g, xn, buf);
            cols = buf;
        }
        for (gint64 grp = 0; grp < g->g; grp++)
            dfq_conv2d_wgrad_gemm (g, grp, 0, g->kg, cols, gyn, wbeta, wt);
    }
    if (gxn != NULL && k3 != NULL) {
        dfq_conv3_image (k3, gyn, wpack3, NULL, gxn, gx_fresh, NULL, NULL, NULL, buf);
    } else if (gxn != NULL && wpack1 != NULL) {
        /* 1x1 stride 1 on AVX-512: dX is the 1x1 conv of dY with W^T */
        dfq_priv_conv1x1_image (wpack1, gyn, gxn, g->co, g->ci, g->p_out, !gx_fresh);
    } else if (gxn != NULL) {
        /* 1x1 stride 1: the column gradient is the input gradient itself. */
        const gint64 nb = dfq_conv2d_small_gemm_blocks (g->kg, g->p_out, g->cog);
        for (gint64 grp = 0; grp < g->g; grp++)
            for (gint64 blk = 0; blk < nb; blk++) {
                gint64 lo, hi;
                dfq_conv2d_block (g->p_out, nb, blk, &lo, &hi);
                dfq_conv2d_dcol_gemm (g, grp, lo, hi, w, gyn, g->cols_are_x && !gx_fresh ? 1.0f : 0.0f,
                                      g->cols_are_x ? gxn : buf);
            }
        if (!g->cols_are_x) {
            if (gx_fresh)
                memset (gxn, 0, (gsize) (g->ci * g->h * g->w) * sizeof (float));
            dfq_conv2d_col2im (g, buf, gxn);
        }
    }
}

/* The weight gradient of a 1x1 stride-1 conv (one group) for @ni images from
 * @x and @gy: their planes copied channel-major into @buf ([ci][ni p] then
 * [co][ni p]), then wt[ci][co] = cols dY^T in one GEMM (written, beta 0). */
static void
dfq_conv2d_wgrad_chunk (const DfqConv2dGeom *g, const float *x, const float *gy, gint64 ni, float *buf, float *wt)
{
    const gint64 p = g->p_out, k = ni * p;
    float *xc = buf, *dc = buf + g->ci * k;
    for (gint64 i = 0; i < ni; i++) {
        for (gint64 c = 0; c < g->ci; c++)
            memcpy (xc + c * k + i * p, x + (i * g->ci + c) * p, (gsize) p * sizeof (float));
        for (gint64 o = 0; o < g->co; o++)
            memcpy (dc + o * k + i * p, gy + (i * g->co + o) * p, (gsize) p * sizeof (float));
    }
    cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans, (blasint) g->ci, (blasint) g->co, (blasint) k, 1.0f, xc,
                 (blasint) k, dc, (blasint) k, 0.0f, wt, (blasint) g->co);
}

/* The same for a single image, every step spread over the threads. */
static void
dfq_conv2d_gemm_single_backward (const DfqConv2dGeom *g, const float *x, const float *w,
                                 const float *gy, float *gx, float *wt, float *buf, int n_threads)
{
    const float *cols = g->cols_are_x ? x : buf;
    const gint64 nb_rows = dfq_conv2d_n_blocks (g->kg, 32);
    const gint64 nb_cols = dfq_conv2d_n_blocks (g->p_out, 256);
#pragma omp parallel num_threads(n_threads)
    {
        if (wt != NULL) {
            if (!g->cols_are_x) {
#pragma omp for schedule(static)
                for (gint64 c = 0; c < g->ci; c++)
                    dfq_conv2d_im2col_channel (g, x, buf, c);
            }
#pragma omp for schedule(static) collapse(2)
            for (gint64 grp = 0; grp < g->g; grp++)
                for (gint64 blk = 0; blk < nb_rows; blk++) {
                    gint64 r0, r1;
                    dfq_conv2d_block (g->kg, nb_rows, blk, &r0, &r1);
                    dfq_conv2d_wgrad_gemm (g, grp, r0, r1, cols, gy, 1.0f, wt);
                }
        }
        if (gx != NULL) {
#pragma omp for schedule(static) collapse(2)
            for (gint64 grp = 0; grp < g->g; grp++)
                for (gint64 blk = 0; blk < nb_cols; blk++) {
                    gint64 lo, hi;
                    dfq_conv2d_block (g->p_out, nb_cols, blk, &lo, &hi);
                    dfq_conv2d_dcol_gemm (g, grp, lo, hi, w, gy, g->cols_are_x ? 1.0f : 0.0f,
                                          g->cols_are_x ? gx : buf);
                }
            if (!g->cols_are_x) {
#pragma omp for schedule(static)
                for (gint64 c = 0; c < g->ci; c++)
                    dfq_conv2d_col2im_channel (g, buf, gx, c);
            }
        }
    }
}

void
dfq_op_conv2d_backward (DfqTensor *dst, DfqArena *scratch)
{
    DfqConv2dGeom g;
    dfq_conv2d_geom (dst, &g);
    const float *x = dfq_tensor_f32 (dst->src[0]);
    const float *w = dfq_tensor_f32 (dst->src[1]);
    const float *gy = dfq_tensor_f32 (dst->grad);
    /* A new input-gradient buffer is written, not added to, by the batched
     * paths below (per image, while it is in cache); the others clear it first. */
    gboolean gx_fresh;
    float *gx = dfq_priv_src_grad_of_fresh (dst, 0, scratch, &gx_fresh);
    float *gw = dfq_priv_grad_of (dst->src[1], scratch);
    float *gb = dfq_priv_grad_of (dst->src[2], scratch);

    if (gx_fresh && g.direct && g.n > 0 && dfq_conv2d_direct_dx_writes (&g)) {
        /* written plane by plane below */
    } else if (gx_fresh && (g.n <= 1 || g.direct || g.co == 0 || g.p_out == 0)) {
        memset (gx, 0, (gsize) dfq_tensor_numel (dst->src[0]) * sizeof (float));
        gx_fresh = FALSE;
    }
    if (g.n == 0 || g.co == 0 || g.p_out == 0)
        return;
    if (g.direct) {
        dfq_conv2d_direct_backward (&g, scratch, x, w, gy, gx, gx_fresh, gw, gb);
        return;
    }

    if (gb != NULL) {
        double *acc = dfq_arena_alloc (scratch, (gsize) g.co * sizeof (double));
#pragma omp parallel for schedule(static) if (g.co * g.n * g.p_out > 32768)
        for (gint64 co = 0; co < g.co; co++) {
            for (gint64 n = 0; n < g.n; n++) {
                acc[co] += dfq_conv2d_sum (gy + (n * g.co + co) * g.p_out, g.p_out);
            }
            gb[co] += (float) acc[co];
        }
    }
    if (gx == NULL && gw == NULL)
        return;

    const int n_threads = dfq_get_num_threads ();
    const gint64 x_step = g.ci * g.h * g.w, y_step = g.co * g.p_out;
    const gint64 w_numel = g.co * g.kg;
    gsize buf_size = g.cols_are_x ? 0 : (gsize) (g.k_all * g.p_out);
    /* A 3x3 "same" conv takes its input gradient from the direct kernel (a conv
     * of dY with the flipped kernel); its buffer then also holds that kernel's
     * padded dY and output grid. */
    DfqConv3Geom k3;
    float *wpack3 = NULL;
    if (gx != NULL && g.n > 1 && dfq_conv3_usable (&g, TRUE)) {
        dfq_conv3_geom (&k3, g.co, g.ci, g.h, g.w, 1);
        wpack3 = dfq_arena_alloc_uninit (scratch, (gsize) (k3.cout_pad * k3.cin * 9) * sizeof (float));
        dfq_conv3_pack_dx (&k3, w, wpack3);
        buf_size = MAX (buf_size, (gsize) k3.xp_size);
    }
    /* A 1x1 stride-1 conv's input gradient is the 1x1 conv of dY with W^T. */
    const float *wpack1 = NULL;
    if (gx != NULL && g.n > 1 && g.cols_are_x && g.g == 1 && dfq_priv_conv1x1_usable (g.co, g.ci, g.p_out))
        wpack1 = dfq_priv_conv1x1_pack (scratch, w, g.ci, g.co, TRUE);
    /* Chunks of images, each with its own (transposed) weight-gradient partial:
     * their number depends on the shapes only. */
    gint64 n_chunks = MIN (g.n, DFQ_CONV2D_WGRAD_CHUNKS);
    n_chunks = MAX (1, MIN (n_chunks, DFQ_CONV2D_WGRAD_BUDGET / MAX (w_numel, 1)));
    if (gw == NULL)
        n_chunks = g.n; /* images are independent: one task each */
    /* A 1x1 stride-1 conv on small planes takes its weight gradient from one
     * GEMM per chunk of images, K = the chunk's positions (copied channel-major,
     * the largest chunk's copy within the same budget), not one per image with
     * K = a plane of 16 or 49 positions. */
    const gint64 chunk_max = (g.n + n_chunks - 1) / n_chunks;
    const gboolean wgrad_batched = gw != NULL && g.n > 1 && g.cols_are_x && g.g == 1 &&
                                   g.p_out <= DFQ_CONV2D_WGRAD_BATCH_PLANE && chunk_max > 1 &&
                                   (g.ci + g.co) * chunk_max * g.p_out <= DFQ_CONV2D_WGRAD_BUDGET;
    if (wgrad_batched)
        buf_size = MAX (buf_size, (gsize) ((g.ci + g.co) * chunk_max * g.p_out));
    /* A 3x3 conv's weight gradient from the padded x and dY on the grid. */
    DfqConv3Geom k3w;
    gboolean use_k3w = gw != NULL && g.n > 1 && dfq_conv3_wgrad_usable (&g);
    if (use_k3w) {
        dfq_conv3_geom (&k3w, g.ci, g.co, g.h, g.w, 1);
        buf_size = MAX (buf_size, (gsize) (k3w.xp_size + k3w.q * g.co));
    }
    /* The first image of a chunk overwrites its partial (beta 0): only the
     * single-image path, which accumulates into it, needs it zeroed. */
    float *partials = NULL;
    if (gw != NULL) {
        gsize bytes = (gsize) (n_chunks * w_numel) * sizeof (float);
        partials = g.n == 1 ? dfq_arena_alloc (scratch, bytes) : dfq_arena_alloc_uninit (scratch, bytes);
    }

    if (g.n == 1) {
        float *buf = buf_size > 0 ? dfq_arena_alloc_uninit (scratch, buf_size * sizeof (float)) : NULL;
        dfq_conv2d_gemm_single_backward (&g, x, w, gy, gx, partials, buf, n_threads);
    } else {
        float *ws = buf_size > 0 ? dfq_arena_alloc_uninit (scratch, (gsize) n_threads * buf_size * sizeof (float))
                                 : NULL;
#pragma omp parallel for schedule(dynamic, 1) num_threads(n_threads)
        for (gint64 c = 0; c < n_chunks; c++) {
            float *buf = ws != NULL ? ws + (gsize) dfq_priv_thread_id () * buf_size : NULL;
            float *wt = partials != NULL ? partials + c * w_numel : NULL;
            gint64 n0 = c * g.n / n_chunks, n1 = (c + 1) * g.n / n_chunks;
            if (wgrad_batched && n1 - n0 > 1) {
                dfq_conv2d_wgrad_chunk (&g, x + n0 * x_step, gy + n0 * y_step, n1 - n0, buf, wt);
                wt = NULL;
            }
            for (gint64 n = n0; n < n1 && (wt != NULL || gx != NULL); n++)
                dfq_conv2d_gemm_image_backward (&g, x + n * x_step, w, gy + n * y_step,
                                                gx != NULL ? gx + n * x_step : NULL, gx_fresh, wt,
                                                n == n0 ? 0.0f : 1.0f,
                                                buf, wpack3 != NULL ? &k3 : NULL, wpack3, use_k3w ? &k3w : NULL,
                                                wpack1);
        }
    }

    if (partials != NULL) {
        /* gw[grp][co][r] += sum over chunks, in chunk order, of wt[grp][r][co]:
         * first the chunks into the first partial (contiguous, vectorised, one
         * block of elements per iteration: every element is summed in chunk
         * order whatever the thread count), then one transposed pass. */
        const gint64 nblk = (w_numel + DFQ_CONV2D_REDUCE_BLOCK - 1) / DFQ_CONV2D_REDUCE_BLOCK;
        if (n_chunks > 1) {
#pragma omp parallel for schedule(static) if (w_numel * n_chunks > 32768)
            for (gint64 b = 0; b < nblk; b++) {
                const gint64 lo = b * DFQ_CONV2D_REDUCE_BLOCK, len = MIN (w_numel - lo, DFQ_CONV2D_REDUCE_BLOCK);
                for (gint64 c = 1; c < n_chunks; c++)
                    dfq_conv2d_acc (partials + c * w_numel + lo, partials + lo, len);
            }
        }
#pragma omp parallel for schedule(static) if (w_numel > 32768)
        for (gint64 row = 0; row < g.co; row++) {
            const gint64 grp = row / g.cog, co = row % g.cog;
            for (gint64 r = 0; r < g.kg; r++)
                gw[row * g.kg + r] += partials[(grp * g.kg + r) * g.cog + co];
        }
    }
}
