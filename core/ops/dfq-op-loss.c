/* Softmax family and losses (core/ops): softmax and log-softmax over the last dim
 * of [N,K], cross-entropy with hard or soft labels, KL divergence to a target
 * distribution, MSE and per-row entropy. Every softmax subtracts the row max
 * first (no overflow). Per-row work goes to one thread each and the row results
 * are added in row order in double, so losses do not depend on the thread count.
 * The backward of each loss needs only the row log-sum-exp, saved in op_aux. */
#include <math.h>

#include "dfq-op-private.h"

/* Below this many elements a loop is not worth waking the thread pool. */
#define DFQ_PAR_MIN 32768
/* MSE sums fixed blocks of this size, then the block sums in order. */
#define DFQ_LOSS_BLOCK 16384

/* log(sum_k exp(x_k)) of one row, stable: max + log(sum exp(x - max)). */
static double
dfq_loss_row_lse (const float *restrict x, gint64 k)
{
    float m = x[0];
    for (gint64 j = 1; j < k; j++)
        m = x[j] > m ? x[j] : m;
    double s = 0.0;
    for (gint64 j = 0; j < k; j++)
        s += expf (x[j] - m);
    return (double) m + log (s);
}

static gboolean
dfq_loss_is_logits (const DfqTensor *x)
{
    return x != NULL && x->dtype == DFQ_DTYPE_F32 && x->n_dims == 2 && x->shape[1] > 0;
}

/* Sum of @n row values in row order (deterministic). */
static double
dfq_loss_sum_rows (const double *v, gint64 n)
{
    double s = 0.0;
    for (gint64 i = 0; i < n; i++)
        s += v[i];
    return s;
}

/* ---- softmax over the last dim; backward: gx = y (gy - <gy, y>) ---- */
DfqTensor *
dfq_softmax (DfqArena *arena, DfqTensor *x)
{
    g_return_val_if_fail (arena != NULL, NULL);
    g_return_val_if_fail (dfq_loss_is_logits (x), NULL);
    DfqTensor *srcs[1] = { x };
    return dfq_priv_op_run (dfq_priv_op_new (arena, DFQ_OP_SOFTMAX, DFQ_DTYPE_F32, 2, x->shape, 1, srcs));
}

void
dfq_op_softmax_forward (DfqTensor *dst)
{
    const float *x = dfq_tensor_f32 (dst->src[0]);
    float *y = dfq_tensor_f32 (dst);
    gint64 n = dst->shape[0], k = dst->shape[1];
#pragma omp parallel for schedule(static) if (n * k > DFQ_PAR_MIN)
    for (gint64 i = 0; i < n; i++) {
        const float *restrict xp = x + i * k;
        float *restrict yp = y + i * k;
        float m = xp[0];
        for (gint64 j = 1; j < k; j++)
            m = xp[j] > m ? xp[j] : m;
        double s = 0.0;
        for (gint64 j = 0; j < k; j++) {
            yp[j] = expf (xp[j] - m);
            s += yp[j];
        }
        float inv = (float) (1.0 / s);
        for (gint64 j = 0; j < k; j++)
            yp[j] *= inv;
    }
}

void
dfq_op_softmax_backward (DfqTensor *dst, DfqArena *scratch)
{
    float *gx = dfq_priv_grad_of (dst->src[0], scratch);
    if (gx == NULL)
        return;
    const float *y = dfq_tensor_f32 (dst);
    const float *gy = dfq_tensor_f32 (dst->grad);
    gint64 n = dst->shape[0], k = dst->shape[1];
#pragma omp parallel for schedule(static) if (n * k > DFQ_PAR_MIN)
    for (gint64 i = 0; i < n; i++) {
        const float *restrict yp = y + i * k;
        const float *restrict gp = gy + i * k;
        float *restrict gxp = gx + i * k;
        double dot = 0.0;
        for (gint64 j = 0; j < k; j++)
            dot += (double) gp[j] * yp[j];
        for (gint64 j = 0; j < k; j++)
            gxp[j] += (float) (yp[j] * (gp[j] - dot));
    }
}

/* ---- log-softmax over the last dim; backward: gx = gy - softmax * sum(gy) ---- */
DfqTensor *
dfq_log_softmax (DfqArena *arena, DfqTensor *x)
{
    g_return_val_if_fail (arena != NULL, NULL);
    g_return_val_if_fail (dfq_loss_is_logits (x), NULL);
    DfqTensor *srcs[1] = { x };
    return dfq_priv_op_run (dfq_priv_op_new (arena, DFQ_OP_LOG_SOFTMAX, DFQ_DTYPE_F32, 2, x->shape, 1, srcs));
}

void
dfq_op_log_softmax_forward (DfqTensor *dst)
{
    const float *x = dfq_tensor_f32 (dst->src[0]);
    float *y = dfq_tensor_f32 (dst);
    gint64 n = dst->shape[0], k = dst->shape[1];
#pragma omp parallel for schedule(static) if (n * k > DFQ_PAR_MIN)
    for (gint64 i = 0; i < n; i++) {
        const float *restrict xp = x + i * k;
        float *restrict yp = y + i * k;
        double lse = dfq_loss_row_lse (xp, k);
        for (gint64 j = 0; j < k; j++)
            yp[j] = (float) (xp[j] - lse);
    }
}

void
dfq_op_log_softmax_backward (DfqTensor *dst, DfqArena *scratch)
{
    float *gx = dfq_priv_grad_of (dst->src[0], scratch);
    if (gx == NULL)
        return;
    const float *y = dfq_tensor_f32 (dst);
    const float *gy = dfq_tensor_f32 (dst->grad);
    gint64 n = dst->shape[0], k = dst->shape[1];
#pragma omp parallel for schedule(static) if (n * k > DFQ_PAR_MIN)
    for (gint64 i = 0; i < n; i++) {
        const float *restrict yp = y + i * k;
        const float *restrict gp = gy + i * k;
        float *restrict gxp = gx + i * k;
        double sg = 0.0;
        for (gint64 j = 0; j < k; j++)
            sg += gp[j];
        for (gint64 j = 0; j < k; j++)
            gxp[j] += (float) (gp[j] - expf (yp[j]) * sg);
    }
}

/* ---- cross-entropy, mean over N (op_params[0] = 1 for hard labels).
 *   hard: l_n = lse_n - x[n, y_n]         dl/dx = p - onehot(y_n)
 *   soft: l_n = -sum_k t_k (x_k - lse_n)  dl/dx = p sum_k t_k - t,  dl/dt = -(x - lse_n)
 * op_aux: lse per row (double [N]). ---- */
DfqTensor *
dfq_cross_entropy (DfqArena *arena, DfqTensor *logits, DfqTensor *labels)
{
    g_return_val_if_fail (arena != NULL, NULL);
    g_return_val_if_fail (dfq_loss_is_logits (logits), NULL);
    g_return_val_if_fail (labels != NULL, NULL);
    gint64 n = logits->shape[0], k = logits->shape[1];
    g_return_val_if_fail (n > 0, NULL);
    gboolean hard = labels->dtype == DFQ_DTYPE_I32;
    if (hard) {
        g_return_val_if_fail (labels->n_dims == 1 && labels->shape[0] == n, NULL);
        const gint32 *lab = dfq_tensor_i32 (labels);
        for (gint64 i = 0; i < n; i++)
            g_return_val_if_fail (lab[i] >= 0 && lab[i] < k, NULL);
    } else {
        g_return_val_if_fail (labels->dtype == DFQ_DTYPE_F32, NULL);
        g_return_val_if_fail (dfq_tensor_same_shape (labels, logits), NULL);
    }
    gint64 shape[1] = { 1 };
    DfqTensor *srcs[2] = { logits, labels };
    DfqTensor *t = dfq_priv_op_new (arena, DFQ_OP_CROSS_ENTROPY, DFQ_DTYPE_F32, 1, shape, 2, srcs);
    t->op_params[0] = hard ? 1 : 0;
    return dfq_priv_op_run (t);
}

void
dfq_op_cross_entropy_forward (DfqTensor *dst)
{
    const DfqTensor *lt = dst->src[0], *yt = dst->src[1];
    const float *x = dfq_tensor_f32 (lt);
    gint64 n = lt->shape[0], k = lt->shape[1];
    gboolean hard = dst->op_params[0] != 0;
    double *lse = dfq_arena_alloc_uninit (dst->arena, (gsize) n * sizeof (double));
    double *row = dfq_arena_alloc_uninit (dst->arena, (gsize) n * sizeof (double));
    dst->op_aux = lse;
#pragma omp parallel for schedule(static) if (n * k > DFQ_PAR_MIN)
    for (gint64 i = 0; i < n; i++) {
        const float *restrict xp = x + i * k;
        lse[i] = dfq_loss_row_lse (xp, k);
        if (hard) {
            row[i] = lse[i] - xp[dfq_tensor_i32 (yt)[i]];
        } else {
            const float *restrict tp = dfq_tensor_f32 (yt) + i * k;
            double s = 0.0;
            for (gint64 j = 0; j < k; j++)
                s -= (double) tp[j] * (xp[j] - lse[i]);
            row[i] = s;
        }
    }
    dfq_tensor_f32 (dst)[0] = (float) (dfq_loss_sum_rows (row, n) / (double) n);
}

void
dfq_op_cross_entropy_backward (DfqTensor *dst, DfqArena *scratch)
{
    const DfqTensor *lt = dst->src[0], *yt = dst->src[1];
    const float *x = dfq_tensor_f32 (lt);
    const double *lse = dst->op_aux;
    gint64 n = lt->shape[0], k = lt->shape[1];
    gboolean hard = dst->op_params[0] != 0;
    double g = dfq_tensor_f32 (dst->grad)[0] / (double) n;
    float *gx = dfq_priv_grad_of (dst->src[0], scratch);
    float *gt = hard ? NULL : dfq_priv_grad_of (dst->src[1], scratch);
    if (gx != NULL) {
#pragma omp parallel for schedule(static) if (n * k > DFQ_PAR_MIN)
        for (gint64 i = 0; i < n; i++) {
            const float *restrict xp = x + i * k;
            float *restrict gxp = gx + i * k;
            if (hard) {
                for (gint64 j = 0; j < k; j++)
                    gxp[j] += (float) (g * exp (xp[j] - lse[i]));
                gxp[dfq_tensor_i32 (yt)[i]] -= (float) g;
            } else {
                const float *restrict tp = dfq_tensor_f32 (yt) + i * k;
                double st = 0.0;
                for (gint64 j = 0; j < k; j++)
                    st += tp[j];
                for (gint64 j = 0; j < k; j++)
                    gxp[j] += (float) (g * (exp (xp[j] - lse[i]) * st - tp[j]));
            }
        }
    }
    if (gt != NULL) {
#pragma omp parallel for schedule(static) if (n * k > DFQ_PAR_MIN)
        for (gint64 i = 0; i < n; i++) {
            const float *restrict xp = x + i * k;
            float *restrict gtp = gt + i * k;
            for (gint64 j = 0; j < k; j++)
                gtp[j] -= (float) (g * (xp[j] - lse[i]));
        }
    }
}

/* ---- KL(p || softmax(x)) = sum p (log p - log_softmax(x)), 0 log 0 = 0, as
 * PyTorch's kl_div(log_softmax(x), p): xlogy(p, p) - p * log_softmax(x).
 * op_params[0] = reduction: MEAN / (N*K), BATCHMEAN / N, SUM.
 *   dl/dx_j = softmax_j sum_k p_k - p_j
 *   dl/dp_k = log p_k + 1 - log_softmax_k   (0 where p_k <= 0, as PyTorch)
 * op_aux: lse per row (double [N]). ---- */
static double
dfq_kl_div_denom (const DfqTensor *dst)
{
    const DfqTensor *lt = dst->src[0];
    switch ((DfqReduction) dst->op_params[0]) {
    case DFQ_REDUCTION_MEAN:
        return (double) lt->shape[0] * (double) lt->shape[1];
    case DFQ_REDUCTION_BATCHMEAN:
        return (double) lt->shape[0];
    case DFQ_REDUCTION_SUM:
    default:
        return 1.0;
    }
}

DfqTensor *
dfq_kl_div (DfqArena *arena, DfqTensor *logits, DfqTensor *target, DfqReduction reduction)
{
    g_return_val_if_fail (arena != NULL, NULL);
    g_return_val_if_fail (dfq_loss_is_logits (logits) && logits->shape[0] > 0, NULL);
    g_return_val_if_fail (target != NULL && target->dtype == DFQ_DTYPE_F32, NULL);
    g_return_val_if_fail (dfq_tensor_same_shape (logits, target), NULL);
    g_return_val_if_fail ((guint) reduction <= DFQ_REDUCTION_SUM, NULL);
    gint64 shape[1] = { 1 };
    DfqTensor *srcs[2] = { logits, target };
    DfqTensor *t = dfq_priv_op_new (arena, DFQ_OP_KL_DIV, DFQ_DTYPE_F32, 1, shape, 2, srcs);
    t->op_params[0] = (gint32) reduction;
    return dfq_priv_op_run (t);
}

void
dfq_op_kl_div_forward (DfqTensor *dst)
{
    const DfqTensor *lt = dst->src[0];
    const float *x = dfq_tensor_f32 (lt);
    const float *p = dfq_tensor_f32 (dst->src[1]);
    gint64 n = lt->shape[0], k = lt->shape[1];
    double *lse = dfq_arena_alloc_uninit (dst->arena, (gsize) n * sizeof (double));
    double *row = dfq_arena_alloc_uninit (dst->arena, (gsize) n * sizeof (double));
    dst->op_aux = lse;
#pragma omp parallel for schedule(static) if (n * k > DFQ_PAR_MIN)
    for (gint64 i = 0; i < n; i++) {
        const float *restrict xp = x + i * k;
        const float *restrict pp = p + i * k;
        lse[i] = dfq_loss_row_lse (xp, k);
        double s = 0.0;
        for (gint64 j = 0; j < k; j++) {
            double ls = xp[j] - lse[i];
            s -= (double) pp[j] * ls;
            if (pp[j] > 0.0f)
                s += (double) pp[j] * log ((double) pp[j]);
        }
        row[i] = s;
    }
    dfq_tensor_f32 (dst)[0] = (float) (dfq_loss_sum_rows (row, n) / dfq_kl_div_denom (dst));
}

void
dfq_op_kl_div_backward (DfqTensor *dst, DfqArena *scratch)
{
    const DfqTensor *lt = dst->src[0];
    const float *x = dfq_tensor_f32 (lt);
    const float *p = dfq_tensor_f32 (dst->src[1]);
    const double *lse = dst->op_aux;
    gint64 n = lt->shape[0], k = lt->shape[1];
    double g = dfq_tensor_f32 (dst->grad)[0] / dfq_kl_div_denom (dst);
    float *gx = dfq_priv_grad_of (dst->src[0], scratch);
    float *gp = dfq_priv_grad_of (dst->src[1], scratch);
    if (gx != NULL) {
#pragma omp parallel for schedule(static) if (n * k > DFQ_PAR_MIN)
        for (gint64 i = 0; i < n; i++) {
            const float *restrict xp = x + i * k;
            const float *restrict pp = p + i * k;
            float *restrict gxp = gx + i * k;
            double sp = 0.0;
            for (gint64 j = 0; j < k; j++)
                sp += pp[j];
            for (gint64 j = 0; j < k; j++)
                gxp[j] += (float) (g * (exp (xp[j] - lse[i]) * sp - pp[j]));
        }
    }
    if (gp != NULL) {
#pragma omp parallel for schedule(static) if (n * k > DFQ_PAR_MIN)
        for (gint64 i = 0; i < n; i++) {
            const float *restrict xp = x + i * k;
            const float *restrict pp = p + i * k;
            float *restrict gpp = gp + i * k;
            for (gint64 j = 0; j < k; j++)
                if (pp[j] > 0.0f)
                    gpp[j] += (float) (g * (log ((double) pp[j]) + 1.0 - (xp[j] - lse[i])));
        }
    }
}

/* ---- mse: mean((a - b)^2) -> [1]; dl/da = 2 (a - b) / n = -dl/db ---- */
DfqTensor *
dfq_mse (DfqArena *arena, DfqTensor *a, DfqTensor *b)
{
    g_return_val_if_fail (arena != NULL, NULL);
    g_return_val_if_fail (a != NULL && b != NULL, NULL);
    g_return_val_if_fail (a->dtype == DFQ_DTYPE_F32 && b->dtype == DFQ_DTYPE_F32, NULL);
    g_return_val_if_fail (dfq_tensor_same_shape (a, b), NULL);
    g_return_val_if_fail (dfq_tensor_numel (a) > 0, NULL);
    gint64 shape[1] = { 1 };
    DfqTensor *srcs[2] = { a, b };
    return dfq_priv_op_run (dfq_priv_op_new (arena, DFQ_OP_MSE, DFQ_DTYPE_F32, 1, shape, 2, srcs));
}

void
dfq_op_mse_forward (DfqTensor *dst)
{
    const float *a = dfq_tensor_f32 (dst->src[0]);
    const float *b = dfq_tensor_f32 (dst->src[1]);
    gint64 n = dfq_tensor_numel (dst->src[0]);
    /* Fixed blocks summed in order: the same result for every thread count. */
    gint64 n_blocks = (n + DFQ_LOSS_BLOCK - 1) / DFQ_LOSS_BLOCK;
    double *part = dfq_arena_alloc_uninit (dst->arena, (gsize) n_blocks * sizeof (double));
#pragma omp parallel for schedule(static) if (n > DFQ_PAR_MIN)
    for (gint64 blk = 0; blk < n_blocks; blk++) {
        gint64 end = MIN (n, (blk + 1) * DFQ_LOSS_BLOCK);
        double acc = 0.0;
        for (gint64 i = blk * DFQ_LOSS_BLOCK; i < end; i++) {
            double d = (double) a[i] - b[i];
            acc += d * d;
        }
        part[blk] = acc;
    }
    dfq_tensor_f32 (dst)[0] = (float) (dfq_loss_sum_rows (part, n_blocks) / (double) n);
}

void
dfq_op_mse_backward (DfqTensor *dst, DfqArena *scratch)
{
    const float *a = dfq_tensor_f32 (dst->src[0]);
    const float *b = dfq_tensor_f32 (dst->src[1]);
    gint64 n = dfq_tensor_numel (dst->src[0]);
    float g = (float) (2.0 * dfq_tensor_f32 (dst->grad)[0] / (double) n);
    /* a and b may be the same tensor: then ga == gb and the two terms cancel. */
    float *ga = dfq_priv_grad_of (dst->src[0], scratch);
    float *gb = dfq_priv_grad_of (dst->src[1], scratch);
    if (ga != NULL) {
#pragma omp parallel for schedule(static) if (n > DFQ_PAR_MIN)
        for (gint64 i = 0; i < n; i++)
            ga[i] += g * (a[i] - b[i]);
    }
    if (gb != NULL) {
#pragma omp parallel for schedule(static) if (n > DFQ_PAR_MIN)
        for (gint64 i = 0; i < n; i++)
            gb[i] -= g * (a[i] - b[i]);
    }
}

/* ---- entropy of softmax per row: [N,K] -> [N].
 *   H = -sum p_k log p_k = lse - sum p_k x_k,   dH/dx_j = -p_j (log p_j + H)
 * op_aux: lse and H per row (double [2N]). ---- */
DfqTensor *
dfq_entropy (DfqArena *arena, DfqTensor *logits)
{
    g_return_val_if_fail (arena != NULL, NULL);
    g_return_val_if_fail (dfq_loss_is_logits (logits), NULL);
    gint64 shape[1] = { logits->shape[0] };
    DfqTensor *srcs[1] = { logits };
    return dfq_priv_op_run (dfq_priv_op_new (arena, DFQ_OP_ENTROPY, DFQ_DTYPE_F32, 1, shape, 1, srcs));
}

void
dfq_op_entropy_forward (DfqTensor *dst)
{
    const DfqTensor *lt = dst->src[0];
    const float *x = dfq_tensor_f32 (lt);
    float *y = dfq_tensor_f32 (dst);
    gint64 n = lt->shape[0], k = lt->shape[1];
    double *aux = dfq_arena_alloc_uninit (dst->arena, (gsize) MAX (n, 1) * 2 * sizeof (double));
    dst->op_aux = aux;
#pragma omp parallel for schedule(static) if (n * k > DFQ_PAR_MIN)
    for (gint64 i = 0; i < n; i++) {
        const float *restrict xp = x + i * k;
        double lse = dfq_loss_row_lse (xp, k);
        double spx = 0.0;
        for (gint64 j = 0; j < k; j++)
            spx += exp (xp[j] - lse) * xp[j];
        aux[2 * i] = lse;
        aux[2 * i + 1] = lse - spx;
        y[i] = (float) (lse - spx);
    }
}

void
dfq_op_entropy_backward (DfqTensor *dst, DfqArena *scratch)
{
    float *gx = dfq_priv_grad_of (dst->src[0], scratch);
    if (gx == NULL)
        return;
    const DfqTensor *lt = dst->src[0];
    const float *x = dfq_tensor_f32 (lt);
    const float *gy = dfq_tensor_f32 (dst->grad);
    const double *aux = dst->op_aux;
    gint64 n = lt->shape[0], k = lt->shape[1];
#pragma omp parallel for schedule(static) if (n * k > DFQ_PAR_MIN)
    for (gint64 i = 0; i < n; i++) {
        const float *restrict xp = x + i * k;
        float *restrict gxp = gx + i * k;
        double lse = aux[2 * i], h = aux[2 * i + 1];
        for (gint64 j = 0; j < k; j++) {
            double ls = xp[j] - lse;
            gxp[j] += (float) (-gy[i] * exp (ls) * (ls + h));
        }
    }
}
