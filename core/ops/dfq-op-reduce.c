/* Reduction ops (core/ops): sum and mean of a whole tensor, per-channel mean and
 * variance (BN statistics), per-sample spatial variance (ZeroQ statistics), row
 * sums and row L2 normalisation. Sums accumulate in double in a fixed order, and
 * a parallel loop gives each output element (or each fixed-size block) to one
 * thread, so results are identical for every thread count (STYLE.md B.13). */
#include <math.h>

#include "dfq-op-private.h"

/* Below this many elements a loop is not worth waking the thread pool. */
#define DFQ_PAR_MIN 32768
/* Whole-tensor sums add fixed blocks of this size, then the block sums in
 * order: the blocks do not depend on the thread count, so neither does the sum. */
#define DFQ_REDUCE_BLOCK 16384

static double
dfq_reduce_sum_f64 (DfqArena *arena, const float *restrict x, gint64 n)
{
    gint64 n_blocks = (n + DFQ_REDUCE_BLOCK - 1) / DFQ_REDUCE_BLOCK;
    double s = 0.0;
    if (n_blocks <= 1) {
        for (gint64 i = 0; i < n; i++)
            s += x[i];
        return s;
    }
    double *part = dfq_arena_alloc_uninit (arena, (gsize) n_blocks * sizeof (double));
#pragma omp parallel for schedule(static) if (n > DFQ_PAR_MIN)
    for (gint64 b = 0; b < n_blocks; b++) {
        gint64 end = MIN (n, (b + 1) * DFQ_REDUCE_BLOCK);
        double acc = 0.0;
        for (gint64 i = b * DFQ_REDUCE_BLOCK; i < end; i++)
            acc += x[i];
        part[b] = acc;
    }
    for (gint64 b = 0; b < n_blocks; b++)
        s += part[b];
    return s;
}

/* gx[i] += g for every element (backward of sum and mean). */
static void
dfq_reduce_broadcast_add (float *restrict gx, gint64 n, float g)
{
#pragma omp parallel for schedule(static) if (n > DFQ_PAR_MIN)
    for (gint64 i = 0; i < n; i++)
        gx[i] += g;
}

static DfqTensor *
dfq_op_reduce_new (DfqArena *arena, DfqOp op, DfqTensor *x, int n_dims, const gint64 *shape)
{
    DfqTensor *srcs[1] = { x };
    return dfq_priv_op_new (arena, op, DFQ_DTYPE_F32, n_dims, shape, 1, srcs);
}

/* ---- sum: all elements -> [1] ---- */
DfqTensor *
dfq_sum (DfqArena *arena, DfqTensor *x)
{
    g_return_val_if_fail (arena != NULL, NULL);
    g_return_val_if_fail (x != NULL && x->dtype == DFQ_DTYPE_F32, NULL);
    gint64 shape[1] = { 1 };
    return dfq_priv_op_run (dfq_op_reduce_new (arena, DFQ_OP_SUM, x, 1, shape));
}

void
dfq_op_sum_forward (DfqTensor *dst)
{
    const DfqTensor *x = dst->src[0];
    dfq_tensor_f32 (dst)[0] = (float) dfq_reduce_sum_f64 (dst->arena, dfq_tensor_f32 (x), dfq_tensor_numel (x));
}

void
dfq_op_sum_backward (DfqTensor *dst, DfqArena *scratch)
{
    float *gx = dfq_priv_grad_of (dst->src[0], scratch);
    if (gx == NULL)
        return;
    dfq_reduce_broadcast_add (gx, dfq_tensor_numel (dst->src[0]), dfq_tensor_f32 (dst->grad)[0]);
}

/* ---- mean: all elements -> [1] ---- */
DfqTensor *
dfq_mean (DfqArena *arena, DfqTensor *x)
{
    g_return_val_if_fail (arena != NULL, NULL);
    g_return_val_if_fail (x != NULL && x->dtype == DFQ_DTYPE_F32, NULL);
    g_return_val_if_fail (dfq_tensor_numel (x) > 0, NULL);
    gint64 shape[1] = { 1 };
    return dfq_priv_op_run (dfq_op_reduce_new (arena, DFQ_OP_MEAN, x, 1, shape));
}

void
dfq_op_mean_forward (DfqTensor *dst)
{
    const DfqTensor *x = dst->src[0];
    gint64 n = dfq_tensor_numel (x);
    dfq_tensor_f32 (dst)[0] = (float) (dfq_reduce_sum_f64 (dst->arena, dfq_tensor_f32 (x), n) / (double) n);
}

void
dfq_op_mean_backward (DfqTensor *dst, DfqArena *scratch)
{
    float *gx = dfq_priv_grad_of (dst->src[0], scratch);
    if (gx == NULL)
        return;
    gint64 n = dfq_tensor_numel (dst->src[0]);
    dfq_reduce_broadcast_add (gx, n, (float) (dfq_tensor_f32 (dst->grad)[0] / (double) n));
}

/* ---- per-channel statistics over every dim but 1: [N,C,...] -> [C] ----
 * The layout is N blocks of C planes of `inner` contiguous values. */
static DfqTensor *
dfq_op_channel_stat_new (DfqArena *arena, DfqOp op, DfqTensor *x, gboolean unbiased)
{
    g_return_val_if_fail (arena != NULL, NULL);
    g_return_val_if_fail (x != NULL && x->dtype == DFQ_DTYPE_F32, NULL);
    g_return_val_if_fail (x->n_dims >= 2, NULL);
    gint64 m = dfq_tensor_numel (x) / MAX (x->shape[1], 1);
    g_return_val_if_fail (x->shape[1] > 0 && m > (unbiased ? 1 : 0), NULL);
    gint64 shape[1] = { x->shape[1] };
    DfqTensor *t = dfq_op_reduce_new (arena, op, x, 1, shape);
    t->op_params[0] = unbiased ? 1 : 0;
    return t;
}

/* Mean of channel @j into double, in the fixed order n, k. */
static double
dfq_channel_mean_of (const float *x, gint64 n, gint64 c, gint64 inner, gint64 j)
{
    double s = 0.0;
    for (gint64 i = 0; i < n; i++) {
        const float *restrict xp = x + (i * c + j) * inner;
        for (gint64 k = 0; k < inner; k++)
            s += xp[k];
    }
    return s / (double) (n * inner);
}

/* Channels are reduced in groups of this many: one double sum per channel,
 * each in the same order n, k as dfq_channel_mean_of (so the same value), but
 * interleaved, so that the CPU overlaps the add chains of the group instead
 * of waiting for each add of one chain in turn. */
#define DFQ_CHANNEL_GROUP 8

/* The means of channels [j0, j0 + DFQ_CHANNEL_GROUP), bit for bit
 * dfq_channel_mean_of of each. */
static void
dfq_channel_mean_group (const float *x, gint64 n, gint64 c, gint64 inner, gint64 j0, double *mean)
{
    double s[DFQ_CHANNEL_GROUP] = { 0 };
    for (gint64 i = 0; i < n; i++) {
        const float *restrict xp = x + (i * c + j0) * inner;
        for (gint64 k = 0; k < inner; k++)
#pragma GCC unroll 8
            for (int g = 0; g < DFQ_CHANNEL_GROUP; g++)
                s[g] += xp[g * inner + k];
    }
    for (int g = 0; g < DFQ_CHANNEL_GROUP; g++)
        mean[g] = s[g] / (double) (n * inner);
}

/* sum((x - mean)^2) of channels [j0, j0 + DFQ_CHANNEL_GROUP), each in the
 * order n, k. */
static void
dfq_channel_ss_group (const float *x, gint64 n, gint64 c, gint64 inner, gint64 j0, const double *mean,
                      double *ss)
{
    double a[DFQ_CHANNEL_GROUP] = { 0 };
    for (gint64 i = 0; i < n; i++) {
        const float *restrict xp = x + (i * c + j0) * inner;
        for (gint64 k = 0; k < inner; k++)
#pragma GCC unroll 8
            for (int g = 0; g < DFQ_CHANNEL_GROUP; g++) {
                double d = xp[g * inner + k] - mean[g];
                a[g] += d * d;
            }
    }
    for (int g = 0; g < DFQ_CHANNEL_GROUP; g++)
        ss[g] = a[g];
}

/* sum((x - mean)^2) of channel @j alone, as dfq_channel_ss_group. */
static double
dfq_channel_ss_of (const float *x, gint64 n, gint64 c, gint64 inner, gint64 j, double mean)
{
    double ss = 0.0;
    for (gint64 i = 0; i < n; i++) {
        const float *restrict xp = x + (i * c + j) * inner;
        for (gint64 k = 0; k < inner; k++) {
            double d = xp[k] - mean;
            ss += d * d;
        }
    }
    return ss;
}

/* Channel groups of [0, c): full groups of DFQ_CHANNEL_GROUP, then one
 * channel per group. Group @q starts at channel dfq_channel_group_start. */
static inline gint64
dfq_channel_n_groups (gint64 c)
{
    return c / DFQ_CHANNEL_GROUP + c % DFQ_CHANNEL_GROUP;
}

static inline gint64
dfq_channel_group_start (gint64 c, gint64 q, int *size)
{
    gint64 full = c / DFQ_CHANNEL_GROUP;
    if (q < full) {
        *size = DFQ_CHANNEL_GROUP;
        return q * DFQ_CHANNEL_GROUP;
    }
    *size = 1;
    return full * DFQ_CHANNEL_GROUP + (q - full);
}

/* gp += g over one plane; with @fresh the buffer is new (not zero-filled):
 * gp = 0 + g, what adding to zeros gave (-0 becomes +0). */
DFQ_PRIV_SIMD_CLONES static void
dfq_channel_mean_backward_plane (float *restrict gp, gint64 n, float g, gboolean fresh)
{
    if (fresh)
#pragma omp simd
        for (gint64 k = 0; k < n; k++)
            gp[k] = 0.0f + g;
    else
#pragma omp simd
        for (gint64 k = 0; k < n; k++)
            gp[k] += g;
}

/* gp += (float) (g (x - mu)) over one plane (in double, rounded to float
 * before the add, so there is nothing to contract: the clones compute the
 * same bits); with @fresh gp = 0 + that, as for the mean. */
DFQ_PRIV_SIMD_CLONES static void
dfq_channel_var_backward_plane (const float *restrict xp, float *restrict gp, gint64 n, double g, double mu,
                                gboolean fresh)
{
    if (fresh)
#pragma omp simd
        for (gint64 k = 0; k < n; k++)
            gp[k] = 0.0f + (float) (g * (xp[k] - mu));
    else
#pragma omp simd
        for (gint64 k = 0; k < n; k++)
            gp[k] += (float) (g * (xp[k] - mu));
}

DfqTensor *
dfq_channel_mean (DfqArena *arena, DfqTensor *x)
{
    DfqTensor *t = dfq_op_channel_stat_new (arena, DFQ_OP_CHANNEL_MEAN, x, FALSE);
    return t ? dfq_priv_op_run (t) : NULL;
}

void
dfq_op_channel_mean_forward (DfqTensor *dst)
{
    const DfqTensor *xt = dst->src[0];
    const float *x = dfq_tensor_f32 (xt);
    float *restrict y = dfq_tensor_f32 (dst);
    gint64 n = xt->shape[0], c = xt->shape[1], inner = dfq_priv_inner_size (xt, 1);
    gint64 n_groups = dfq_channel_n_groups (c);
#pragma omp parallel for schedule(static) if (n * c * inner > DFQ_PAR_MIN)
    for (gint64 q = 0; q < n_groups; q++) {
        int size;
        gint64 j0 = dfq_channel_group_start (c, q, &size);
        if (size == 1) {
            y[j0] = (float) dfq_channel_mean_of (x, n, c, inner, j0);
            continue;
        }
        double mean[DFQ_CHANNEL_GROUP];
        dfq_channel_mean_group (x, n, c, inner, j0, mean);
        for (int g = 0; g < DFQ_CHANNEL_GROUP; g++)
            y[j0 + g] = (float) mean[g];
    }
}

void
dfq_op_channel_mean_backward (DfqTensor *dst, DfqArena *scratch)
{
    const DfqTensor *xt = dst->src[0];
    gboolean fresh;
    float *gx = dfq_priv_src_grad_of_fresh (dst, 0, scratch, &fresh);
    if (gx == NULL)
        return;
    const float *gy = dfq_tensor_f32 (dst->grad);
    gint64 n = xt->shape[0], c = xt->shape[1], inner = dfq_priv_inner_size (xt, 1);
    double inv_m = 1.0 / (double) (n * inner);
#pragma omp parallel for collapse(2) schedule(static) if (n * c * inner > DFQ_PAR_MIN)
    for (gint64 i = 0; i < n; i++)
        for (gint64 j = 0; j < c; j++) {
            float g = (float) (gy[j] * inv_m);
            dfq_channel_mean_backward_plane (gx + (i * c + j) * inner, inner, g, fresh);
        }
}

/* ---- channel variance: biased (/M) or unbiased (/(M-1), op_params[0] = 1).
 * The per-channel means (double) are saved in op_aux for the backward:
 * d var / d x = 2 (x - mu) / D (the mean's own dependence on x sums to 0). ---- */
DfqTensor *
dfq_channel_var (DfqArena *arena, DfqTensor *x, gboolean unbiased)
{
    DfqTensor *t = dfq_op_channel_stat_new (arena, DFQ_OP_CHANNEL_VAR, x, unbiased);
    return t ? dfq_priv_op_run (t) : NULL;
}

void
dfq_op_channel_var_forward (DfqTensor *dst)
{
    const DfqTensor *xt = dst->src[0];
    const float *x = dfq_tensor_f32 (xt);
    float *restrict y = dfq_tensor_f32 (dst);
    gint64 n = xt->shape[0], c = xt->shape[1], inner = dfq_priv_inner_size (xt, 1);
    gint64 m = n * inner;
    double denom = (double) (dst->op_params[0] ? m - 1 : m);
    double *mu = dfq_arena_alloc_uninit (dst->arena, (gsize) c * sizeof (double));
    dst->op_aux = mu;
    gint64 n_groups = dfq_channel_n_groups (c);
#pragma omp parallel for schedule(static) if (n * c * inner > DFQ_PAR_MIN)
    for (gint64 q = 0; q < n_groups; q++) {
        /* Two passes: the mean first, then squared deviations (no cancellation). */
        int size;
        gint64 j0 = dfq_channel_group_start (c, q, &size);
        if (size == 1) {
            double mean = dfq_channel_mean_of (x, n, c, inner, j0);
            double ss = dfq_channel_ss_of (x, n, c, inner, j0, mean);
            mu[j0] = mean;
            y[j0] = (float) (ss / denom);
            continue;
        }
        double ss[DFQ_CHANNEL_GROUP];
        dfq_channel_mean_group (x, n, c, inner, j0, mu + j0);
        dfq_channel_ss_group (x, n, c, inner, j0, mu + j0, ss);
        for (int g = 0; g < DFQ_CHANNEL_GROUP; g++)
            y[j0 + g] = (float) (ss[g] / denom);
    }
}

void
dfq_op_channel_var_backward (DfqTensor *dst, DfqArena *scratch)
{
    const DfqTensor *xt = dst->src[0];
    gboolean fresh;
    float *gx = dfq_priv_src_grad_of_fresh (dst, 0, scratch, &fresh);
    if (gx == NULL)
        return;
    const float *x = dfq_tensor_f32 (xt);
    const float *gy = dfq_tensor_f32 (dst->grad);
    const double *mu = dst->op_aux;
    gint64 n = xt->shape[0], c = xt->shape[1], inner = dfq_priv_inner_size (xt, 1);
    gint64 m = n * inner;
    double denom = (double) (dst->op_params[0] ? m - 1 : m);
#pragma omp parallel for collapse(2) schedule(static) if (n * c * inner > DFQ_PAR_MIN)
    for (gint64 i = 0; i < n; i++)
        for (gint64 j = 0; j < c; j++) {
            double g = 2.0 * gy[j] / denom;
            gint64 o = (i * c + j) * inner;
            dfq_channel_var_backward_plane (x + o, gx + o, inner, g, mu[j], fresh);
        }
}

/* ---- spatial variance: [N,C,H,W] -> [N,C], over H,W of each plane (ZeroQ
 * batch statistics per image). Same rule as channel_var, per plane; the plane
 * means are saved in op_aux. ---- */
DfqTensor *
dfq_spatial_var (DfqArena *arena, DfqTensor *x, gboolean unbiased)
{
    g_return_val_if_fail (arena != NULL, NULL);
    g_return_val_if_fail (x != NULL && x->dtype == DFQ_DTYPE_F32, NULL);
    g_return_val_if_fail (x->n_dims == 4, NULL);
    g_return_val_if_fail (x->shape[2] * x->shape[3] > (unbiased ? 1 : 0), NULL);
    gint64 shape[2] = { x->shape[0], x->shape[1] };
    DfqTensor *t = dfq_op_reduce_new (arena, DFQ_OP_SPATIAL_VAR, x, 2, shape);
    t->op_params[0] = unbiased ? 1 : 0;
    return dfq_priv_op_run (t);
}

void
dfq_op_spatial_var_forward (DfqTensor *dst)
{
    const DfqTensor *xt = dst->src[0];
    const float *x = dfq_tensor_f32 (xt);
    float *restrict y = dfq_tensor_f32 (dst);
    gint64 rows = xt->shape[0] * xt->shape[1], len = xt->shape[2] * xt->shape[3];
    double denom = (double) (dst->op_params[0] ? len - 1 : len);
    double *mu = dfq_arena_alloc_uninit (dst->arena, (gsize) rows * sizeof (double));
    dst->op_aux = mu;
#pragma omp parallel for schedule(static) if (rows * len > DFQ_PAR_MIN)
    for (gint64 r = 0; r < rows; r++) {
        const float *restrict xp = x + r * len;
        double s = 0.0, ss = 0.0;
        for (gint64 k = 0; k < len; k++)
            s += xp[k];
        double mean = s / (double) len;
        for (gint64 k = 0; k < len; k++) {
            double d = xp[k] - mean;
            ss += d * d;
        }
        mu[r] = mean;
        y[r] = (float) (ss / denom);
    }
}

void
dfq_op_spatial_var_backward (DfqTensor *dst, DfqArena *scratch)
{
    const DfqTensor *xt = dst->src[0];
    float *gx = dfq_priv_grad_of (dst->src[0], scratch);
    if (gx == NULL)
        return;
    const float *x = dfq_tensor_f32 (xt);
    const float *gy = dfq_tensor_f32 (dst->grad);
    const double *mu = dst->op_aux;
    gint64 rows = xt->shape[0] * xt->shape[1], len = xt->shape[2] * xt->shape[3];
    double denom = (double) (dst->op_params[0] ? len - 1 : len);
#pragma omp parallel for schedule(static) if (rows * len > DFQ_PAR_MIN)
    for (gint64 r = 0; r < rows; r++) {
        double g = 2.0 * gy[r] / denom;
        const float *restrict xp = x + r * len;
        float *restrict gp = gx + r * len;
        for (gint64 k = 0; k < len; k++)
            gp[k] += (float) (g * (xp[k] - mu[r]));
    }
}

/* ---- row sum: [N,K] -> [N] ---- */
DfqTensor *
dfq_row_sum (DfqArena *arena, DfqTensor *x)
{
    g_return_val_if_fail (arena != NULL, NULL);
    g_return_val_if_fail (x != NULL && x->dtype == DFQ_DTYPE_F32, NULL);
    g_return_val_if_fail (x->n_dims == 2, NULL);
    gint64 shape[1] = { x->shape[0] };
    return dfq_priv_op_run (dfq_op_reduce_new (arena, DFQ_OP_ROW_SUM, x, 1, shape));
}

void
dfq_op_row_sum_forward (DfqTensor *dst)
{
    const DfqTensor *xt = dst->src[0];
    const float *x = dfq_tensor_f32 (xt);
    float *restrict y = dfq_tensor_f32 (dst);
    gint64 rows = xt->shape[0], len = xt->shape[1];
#pragma omp parallel for schedule(static) if (rows * len > DFQ_PAR_MIN)
    for (gint64 r = 0; r < rows; r++) {
        const float *restrict xp = x + r * len;
        double s = 0.0;
        for (gint64 k = 0; k < len; k++)
            s += xp[k];
        y[r] = (float) s;
    }
}

void
dfq_op_row_sum_backward (DfqTensor *dst, DfqArena *scratch)
{
    const DfqTensor *xt = dst->src[0];
    float *gx = dfq_priv_grad_of (dst->src[0], scratch);
    if (gx == NULL)
        return;
    const float *gy = dfq_tensor_f32 (dst->grad);
    gint64 rows = xt->shape[0], len = xt->shape[1];
#pragma omp parallel for schedule(static) if (rows * len > DFQ_PAR_MIN)
    for (gint64 r = 0; r < rows; r++) {
        float *restrict gp = gx + r * len;
        for (gint64 k = 0; k < len; k++)
            gp[k] += gy[r];
    }
}

/* ---- L2 normalisation of the rows of [N,K]: y = x / sqrt(sum x^2 + eps), eps in
 * op_fparams[0]. op_aux saves r = 1/sqrt(sum x^2 + eps) per row (double); with
 * y = r x the backward is gx = r (gy - y <gy, y>). ---- */
DfqTensor *
dfq_l2_normalize (DfqArena *arena, DfqTensor *x, float eps)
{
    g_return_val_if_fail (arena != NULL, NULL);
    g_return_val_if_fail (x != NULL && x->dtype == DFQ_DTYPE_F32, NULL);
    g_return_val_if_fail (x->n_dims == 2, NULL);
    g_return_val_if_fail (eps >= 0.0f, NULL);
    DfqTensor *t = dfq_op_reduce_new (arena, DFQ_OP_L2_NORMALIZE, x, 2, x->shape);
    t->op_fparams[0] = eps;
    return dfq_priv_op_run (t);
}

void
dfq_op_l2_normalize_forward (DfqTensor *dst)
{
    const DfqTensor *xt = dst->src[0];
    const float *x = dfq_tensor_f32 (xt);
    float *restrict y = dfq_tensor_f32 (dst);
    gint64 rows = xt->shape[0], len = xt->shape[1];
    double eps = dst->op_fparams[0];
    double *rinv = dfq_arena_alloc_uninit (dst->arena, (gsize) MAX (rows, 1) * sizeof (double));
    dst->op_aux = rinv;
#pragma omp parallel for schedule(static) if (rows * len > DFQ_PAR_MIN)
    for (gint64 r = 0; r < rows; r++) {
        const float *restrict xp = x + r * len;
        float *restrict yp = y + r * len;
        double ss = 0.0;
        for (gint64 k = 0; k < len; k++)
            ss += (double) xp[k] * xp[k];
        /* An all-zero row with eps = 0 stays zero instead of becoming NaN. */
        double inv = ss + eps > 0.0 ? 1.0 / sqrt (ss + eps) : 0.0;
        rinv[r] = inv;
        for (gint64 k = 0; k < len; k++)
            yp[k] = (float) (xp[k] * inv);
    }
}

void
dfq_op_l2_normalize_backward (DfqTensor *dst, DfqArena *scratch)
{
    const DfqTensor *xt = dst->src[0];
    float *gx = dfq_priv_grad_of (dst->src[0], scratch);
    if (gx == NULL)
        return;
    const float *y = dfq_tensor_f32 (dst);
    const float *gy = dfq_tensor_f32 (dst->grad);
    const double *rinv = dst->op_aux;
    gint64 rows = xt->shape[0], len = xt->shape[1];
#pragma omp parallel for schedule(static) if (rows * len > DFQ_PAR_MIN)
    for (gint64 r = 0; r < rows; r++) {
        const float *restrict yp = y + r * len;
        const float *restrict gp = gy + r * len;
        float *restrict gxp = gx + r * len;
        double dot = 0.0;
        for (gint64 k = 0; k < len; k++)
            dot += (double) gp[k] * yp[k];
        for (gint64 k = 0; k < len; k++)
            gxp[k] += (float) (rinv[r] * (gp[k] - yp[k] * dot));
    }
}
