/* 2-d convolution op (core/ops), the hot path of the engine: NCHW, zero padding
 * on all sides, stride, groups (depthwise included), dilation 1.
 *
 * Grouped and dense convs go through im2col + OpenBLAS sgemm, one image at a
 * time: the columns of one image (Ci*kh*kw x Ho*Wo) stay in cache between the
 * im2col that writes them and the GEMM that reads them. Images are spread over
 * the OpenMP threads; an sgemm called inside that parallel region runs on one
 * thread with the OpenMP OpenBLAS we link, so only one threading layer is ever
 * active. A single image (N == 1) runs outside any region and lets OpenBLAS
 * thread the GEMM instead.
 *
 * Convs with one input channel per group (depthwise, or a single-channel first
 * layer) have GEMMs with K = kh*kw, far too thin for BLAS: they use direct loops.
 *
 * Memory: column buffers come from the result's arena in the forward and from
 * the scratch arena in the backward (per thread), never from malloc. The forward
 * columns are not kept for the backward: for a ResNet at batch 128 they are
 * 9x the activations of every layer (about 1 GiB), while redoing im2col costs
 * one pass over the input. The backward reuses one buffer per thread for the
 * columns (weight gradient) and then for their gradient (col2im).
 *
 * Determinism: the forward of an image does not depend on which thread runs it.
 * The weight gradient is summed over fixed chunks of images (a count that
 * depends on the shapes only), each chunk into its own partial buffer, and the
 * partials are added in chunk order: the result is the same for any thread
 * count. Bias gradients are double sums in a fixed order. */
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

typedef struct {
    gint64 n, ci, h, w;   /* input [N, Ci, H, W] */
    gint64 co, kh, kw;    /* weight [Co, Ci/g, kh, kw] */
    gint64 ho, wo;        /* output spatial size */
    gint64 s, p, g;       /* stride, padding, groups */
    gint64 cig, cog;      /* input / output channels per group */
    gint64 kg;            /* rows of one group's column matrix: cig*kh*kw */
    gint64 k_all;         /* rows of the whole column matrix: ci*kh*kw */
    gint64 p_out;         /* ho*wo */
    gboolean cols_are_x;  /* 1x1, stride 1, no padding: x is its own column matrix */
    gboolean direct;      /* one input channel per group: direct loops, no GEMM */
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
    g->direct = g->cig == 1;
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

static inline int
dfq_conv2d_thread_id (void)
{
#ifdef _OPENMP
    return omp_get_thread_num ();
#else
    return 0;
#endif
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
 * col[row][ho*Wo + wo] = x[c][ho*s - p + i][wo*s - p + j], 0 outside. */
static void
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
            memset (row, 0, (gsize) (rlo * wo) * sizeof (float));
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
    g_return_val_if_fail (bias == NULL || (bias->dtype == DFQ_DTYPE_F32 &&
                                           dfq_tensor_numel (bias) == weight->shape[0]), NULL);

    gint64 shape[4] = {
        x->shape[0], weight->shape[0],
        (x->shape[2] + 2 * padding - weight->shape[2]) / stride + 1,
        (x->shape[3] + 2 * padding - weight->shape[3]) / stride + 1,
    };
    DfqTensor *srcs[3] = { x, weight, bias };
    DfqTensor *t = dfq_priv_op_new (arena, DFQ_OP_CONV2D, DFQ_DTYPE_F32, 4, shape, 3, srcs);
    t->op_params[0] = stride;
    t->op_params[1] = padding;
    t->op_params[2] = groups;
    return dfq_priv_op_run (t);
}

/* ---- direct loops (one input channel per group) ---- */

static void
dfq_conv2d_direct_forward (const DfqConv2dGeom *g, const float *x, const float *w,
                           const float *b, float *y)
{
    const gint64 kk = g->kh * g->kw, s = g->s;
#pragma omp parallel for collapse(2) schedule(static) if (g->n * g->co > 1)
    for (gint64 n = 0; n < g->n; n++)
        for (gint64 co = 0; co < g->co; co++) {
            const float *xc = x + (n * g->ci + co / g->cog) * g->h * g->w;
            const float *wk = w + co * kk;
            float *yc = y + (n * g->co + co) * g->p_out;
            float bias = b != NULL ? b[co] : 0.0f;
            for (gint64 ho = 0; ho < g->ho; ho++) {
                float *restrict yr = yc + ho * g->wo;
#pragma omp simd
                for (gint64 k = 0; k < g->wo; k++)
                    yr[k] = bias;
                for (gint64 i = 0; i < g->kh; i++) {
                    gint64 iy;
                    if (!dfq_conv2d_row_valid (g, ho, i, &iy))
                        continue;
                    for (gint64 j = 0; j < g->kw; j++) {
                        gint64 lo, hi;
                        dfq_conv2d_valid_range (g, j, &lo, &hi);
                        const float wv = wk[i * g->kw + j];
                        const float *restrict xr = xc + iy * g->w + j - g->p;
                        if (s == 1)
#pragma omp simd
                            for (gint64 k = lo; k < hi; k++)
                                yr[k] += wv * xr[k];
                        else
#pragma omp simd
                            for (gint64 k = lo; k < hi; k++)
                                yr[k] += wv * xr[k * s];
                    }
                }
            }
        }
}

static void
dfq_conv2d_direct_backward (const DfqConv2dGeom *g, DfqArena *scratch, const float *x,
                            const float *w, const float *gy, float *gx, float *gw, float *gb)
{
    const gint64 kk = g->kh * g->kw, s = g->s;

    if (gx != NULL) {
        /* One (image, group) plane of gx per iteration: the cog output channels
         * of a group all feed the same input plane, so they stay in one thread. */
#pragma omp parallel for collapse(2) schedule(static) if (g->n * g->g > 1)
        for (gint64 n = 0; n < g->n; n++)
            for (gint64 grp = 0; grp < g->g; grp++) {
                float *gxc = gx + (n * g->ci + grp) * g->h * g->w;
                for (gint64 co = grp * g->cog; co < (grp + 1) * g->cog; co++) {
                    const float *gyc = gy + (n * g->co + co) * g->p_out;
                    const float *wk = w + co * kk;
                    for (gint64 ho = 0; ho < g->ho; ho++) {
                        const float *restrict gyr = gyc + ho * g->wo;
                        for (gint64 i = 0; i < g->kh; i++) {
                            gint64 iy;
                            if (!dfq_conv2d_row_valid (g, ho, i, &iy))
                                continue;
                            for (gint64 j = 0; j < g->kw; j++) {
                                gint64 lo, hi;
                                dfq_conv2d_valid_range (g, j, &lo, &hi);
                                const float wv = wk[i * g->kw + j];
                                float *restrict gxr = gxc + iy * g->w + j - g->p;
                                if (s == 1)
#pragma omp simd
                                    for (gint64 k = lo; k < hi; k++)
                                        gxr[k] += wv * gyr[k];
                                else
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
         * depend on the thread count. Row dot products in float, summed in double. */
        double *acc = dfq_arena_alloc (scratch, (gsize) (g->co * (kk + 1)) * sizeof (double));
#pragma omp parallel for schedule(static) if (g->co > 1)
        for (gint64 co = 0; co < g->co; co++) {
            double *aw = acc + co * (kk + 1);
            double *ab = aw + kk;
            for (gint64 n = 0; n < g->n; n++) {
                const float *xc = x + (n * g->ci + co / g->cog) * g->h * g->w;
                const float *gyc = gy + (n * g->co + co) * g->p_out;
                for (gint64 ho = 0; ho < g->ho; ho++) {
                    const float *restrict gyr = gyc + ho * g->wo;
                    if (gb != NULL) {
                        float sb = 0.0f;
#pragma omp simd reduction(+:sb)
                        for (gint64 k = 0; k < g->wo; k++)
                            sb += gyr[k];
                        *ab += sb;
                    }
                    if (gw == NULL)
                        continue;
                    for (gint64 i = 0; i < g->kh; i++) {
                        gint64 iy;
                        if (!dfq_conv2d_row_valid (g, ho, i, &iy))
                            continue;
                        for (gint64 j = 0; j < g->kw; j++) {
                            gint64 lo, hi;
                            dfq_conv2d_valid_range (g, j, &lo, &hi);
                            const float *restrict xr = xc + iy * g->w + j - g->p;
                            float d = 0.0f;
                            if (s == 1)
#pragma omp simd reduction(+:d)
                                for (gint64 k = lo; k < hi; k++)
                                    d += gyr[k] * xr[k];
                            else
                                for (gint64 k = lo; k < hi; k++)
                                    d += gyr[k] * xr[k * s];
                            aw[i * g->kw + j] += d;
                        }
                    }
                }
            }
            if (gw != NULL)
                for (gint64 k = 0; k < kk; k++)
                    gw[co * kk + k] += (float) aw[k];
            if (gb != NULL)
                gb[co] += (float) *ab;
        }
    }
}

/* ---- im2col + GEMM ---- */

/* y_n = W * cols(x_n) (+ b), group by group. */
static void
dfq_conv2d_gemm_image (const DfqConv2dGeom *g, const float *xn, const float *w, const float *b,
                       float *yn, float *col)
{
    const float *cols = xn;
    if (!g->cols_are_x) {
        dfq_conv2d_im2col (g, xn, col);
        cols = col;
    }
    float beta = 0.0f;
    if (b != NULL) {
        for (gint64 co = 0; co < g->co; co++) {
            float *restrict yr = yn + co * g->p_out;
#pragma omp simd
            for (gint64 k = 0; k < g->p_out; k++)
                yr[k] = b[co];
        }
        beta = 1.0f;
    }
    for (gint64 grp = 0; grp < g->g; grp++)
        cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasNoTrans,
                     (blasint) g->cog, (blasint) g->p_out, (blasint) g->kg,
                     1.0f, w + grp * g->cog * g->kg, (blasint) g->kg,
                     cols + grp * g->kg * g->p_out, (blasint) g->p_out,
                     beta, yn + grp * g->cog * g->p_out, (blasint) g->p_out);
}

void
dfq_op_conv2d_forward (DfqTensor *dst)
{
    DfqConv2dGeom g;
    dfq_conv2d_geom (dst, &g);
    const float *x = dfq_tensor_f32 (dst->src[0]);
    const float *w = dfq_tensor_f32 (dst->src[1]);
    const float *b = dst->src[2] != NULL ? dfq_tensor_f32 (dst->src[2]) : NULL;
    float *y = dfq_tensor_f32 (dst);

    if (g.n == 0 || g.co == 0 || g.p_out == 0)
        return;
    if (g.direct) {
        dfq_conv2d_direct_forward (&g, x, w, b, y);
        return;
    }

    const gint64 x_step = g.ci * g.h * g.w, y_step = g.co * g.p_out;
    const int n_threads = g.n > 1 ? dfq_get_num_threads () : 1;
    const gsize col_size = g.cols_are_x ? 0 : (gsize) (g.k_all * g.p_out);
    float *ws = col_size > 0 ? dfq_arena_alloc_uninit (dst->arena, (gsize) n_threads * col_size * sizeof (float))
                             : NULL;

    if (g.n == 1) {
        dfq_conv2d_gemm_image (&g, x, w, b, y, ws); /* OpenBLAS threads the GEMM */
        return;
    }
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (gint64 n = 0; n < g.n; n++) {
        float *col = ws != NULL ? ws + (gsize) dfq_conv2d_thread_id () * col_size : NULL;
        dfq_conv2d_gemm_image (&g, x + n * x_step, w, b, y + n * y_step, col);
    }
}

/* Backward of one image: gw_part += dY_n cols(x_n)^T, then gx_n += col2im (W^T dY_n). */
static void
dfq_conv2d_gemm_image_backward (const DfqConv2dGeom *g, const float *xn, const float *w,
                                const float *gyn, float *gxn, float *gw_part, float *buf)
{
    if (gw_part != NULL) {
        const float *cols = xn;
        if (!g->cols_are_x) {
            dfq_conv2d_im2col (g, xn, buf);
            cols = buf;
        }
        for (gint64 grp = 0; grp < g->g; grp++)
            cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans,
                         (blasint) g->cog, (blasint) g->kg, (blasint) g->p_out,
                         1.0f, gyn + grp * g->cog * g->p_out, (blasint) g->p_out,
                         cols + grp * g->kg * g->p_out, (blasint) g->p_out,
                         1.0f, gw_part + grp * g->cog * g->kg, (blasint) g->kg);
    }
    if (gxn != NULL) {
        /* 1x1 stride 1: the column gradient is the input gradient itself. */
        float *dcols = g->cols_are_x ? gxn : buf;
        float beta = g->cols_are_x ? 1.0f : 0.0f;
        for (gint64 grp = 0; grp < g->g; grp++)
            cblas_sgemm (CblasRowMajor, CblasTrans, CblasNoTrans,
                         (blasint) g->kg, (blasint) g->p_out, (blasint) g->cog,
                         1.0f, w + grp * g->cog * g->kg, (blasint) g->kg,
                         gyn + grp * g->cog * g->p_out, (blasint) g->p_out,
                         beta, dcols + grp * g->kg * g->p_out, (blasint) g->p_out);
        if (!g->cols_are_x)
            dfq_conv2d_col2im (g, buf, gxn);
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
    float *gx = dfq_priv_grad_of (dst->src[0], scratch);
    float *gw = dfq_priv_grad_of (dst->src[1], scratch);
    float *gb = dfq_priv_grad_of (dst->src[2], scratch);

    if (g.n == 0 || g.co == 0 || g.p_out == 0)
        return;
    if (g.direct) {
        dfq_conv2d_direct_backward (&g, scratch, x, w, gy, gx, gw, gb);
        return;
    }

    if (gb != NULL) {
        double *acc = dfq_arena_alloc (scratch, (gsize) g.co * sizeof (double));
#pragma omp parallel for schedule(static) if (g.co * g.n * g.p_out > 32768)
        for (gint64 co = 0; co < g.co; co++) {
            for (gint64 n = 0; n < g.n; n++) {
                const float *restrict r = gy + (n * g.co + co) * g.p_out;
                float sb = 0.0f;
#pragma omp simd reduction(+:sb)
                for (gint64 k = 0; k < g.p_out; k++)
                    sb += r[k];
                acc[co] += sb;
            }
            gb[co] += (float) acc[co];
        }
    }
    if (gx == NULL && gw == NULL)
        return;

    const gint64 x_step = g.ci * g.h * g.w, y_step = g.co * g.p_out;
    const gint64 w_numel = g.co * g.kg;
    /* Chunks of images for the weight gradient: a function of the shapes only. */
    gint64 n_chunks = MIN (g.n, DFQ_CONV2D_WGRAD_CHUNKS);
    n_chunks = MAX (1, MIN (n_chunks, DFQ_CONV2D_WGRAD_BUDGET / MAX (w_numel, 1)));
    if (gw == NULL)
        n_chunks = g.n; /* images are independent: one per task */
    const int n_threads = n_chunks > 1 ? dfq_get_num_threads () : 1;
    const gboolean need_buf = !g.cols_are_x;
    const gsize buf_size = need_buf ? (gsize) (g.k_all * g.p_out) : 0;
    float *ws = need_buf ? dfq_arena_alloc_uninit (scratch, (gsize) n_threads * buf_size * sizeof (float)) : NULL;
    /* With one chunk, accumulate straight into gw (images in order). */
    float *partials = gw != NULL && n_chunks > 1
                          ? dfq_arena_alloc (scratch, (gsize) (n_chunks * w_numel) * sizeof (float))
                          : NULL;

#pragma omp parallel for schedule(dynamic, 1) num_threads(n_threads) if (n_chunks > 1)
    for (gint64 c = 0; c < n_chunks; c++) {
        float *buf = ws != NULL ? ws + (gsize) dfq_conv2d_thread_id () * buf_size : NULL;
        float *gw_part = gw == NULL ? NULL : partials != NULL ? partials + c * w_numel : gw;
        gint64 n0 = c * g.n / n_chunks, n1 = (c + 1) * g.n / n_chunks;
        for (gint64 n = n0; n < n1; n++)
            dfq_conv2d_gemm_image_backward (&g, x + n * x_step, w, gy + n * y_step,
                                            gx != NULL ? gx + n * x_step : NULL, gw_part, buf);
    }

    if (partials != NULL) {
#pragma omp parallel for schedule(static) if (w_numel > 32768)
        for (gint64 k = 0; k < w_numel; k++) {
            float sum = partials[k];
            for (gint64 c = 1; c < n_chunks; c++)
                sum += partials[c * w_numel + k];
            gw[k] += sum;
        }
    }
}
