/* Elementwise ops (core/ops): add, sub, mul, affine, abs, sqrt, log and the
 * per-channel affine. Forward and backward side by side; backward accumulates. */
#include <math.h>
#include <string.h>

#include "dfq-op-private.h"

/* Below this many elements a loop is not worth waking the thread pool. */
#define DFQ_PAR_MIN 32768

static DfqTensor *
dfq_op_unary (DfqArena *arena, DfqOp op, DfqTensor *x)
{
    g_return_val_if_fail (x != NULL && x->dtype == DFQ_DTYPE_F32, NULL);
    DfqTensor *srcs[1] = { x };
    return dfq_priv_op_new_uninit (arena, op, DFQ_DTYPE_F32, x->n_dims, x->shape, 1, srcs);
}

static DfqTensor *
dfq_op_binary (DfqArena *arena, DfqOp op, DfqTensor *a, DfqTensor *b)
{
    g_return_val_if_fail (a != NULL && b != NULL, NULL);
    g_return_val_if_fail (a->dtype == DFQ_DTYPE_F32 && b->dtype == DFQ_DTYPE_F32, NULL);
    g_return_val_if_fail (dfq_tensor_same_shape (a, b), NULL);
    DfqTensor *srcs[2] = { a, b };
    return dfq_priv_op_new_uninit (arena, op, DFQ_DTYPE_F32, a->n_dims, a->shape, 2, srcs);
}

/* ---- add ---- */
DfqTensor *
dfq_add (DfqArena *arena, DfqTensor *a, DfqTensor *b)
{
    DfqTensor *t = dfq_op_binary (arena, DFQ_OP_ADD, a, b);
    return t ? dfq_priv_op_run (t) : NULL;
}

DFQ_PRIV_SIMD_CLONES static void
dfq_add_chunk (const float *restrict a, const float *restrict b, float *restrict y, gint64 n)
{
#pragma omp simd
    for (gint64 i = 0; i < n; i++)
        y[i] = a[i] + b[i];
}

/* y += a; @y may not alias @a. */
DFQ_PRIV_SIMD_CLONES static void
dfq_acc_chunk (const float *restrict a, float *restrict y, gint64 n)
{
#pragma omp simd
    for (gint64 i = 0; i < n; i++)
        y[i] += a[i];
}

void
dfq_op_add_forward (DfqTensor *dst)
{
    const float *a = dfq_tensor_f32 (dst->src[0]);
    const float *b = dfq_tensor_f32 (dst->src[1]);
    float *y = dfq_tensor_f32 (dst);
    gint64 n = dfq_tensor_numel (dst), nc = dfq_priv_n_chunks (n);
#pragma omp parallel for schedule(dynamic, 1) if (n > DFQ_PAR_MIN)
    for (gint64 c = 0; c < nc; c++) {
        gint64 lo = c * DFQ_PRIV_CHUNK;
        dfq_add_chunk (a + lo, b + lo, y + lo, MIN (n - lo, DFQ_PRIV_CHUNK));
    }
}

void
dfq_op_add_backward (DfqTensor *dst, DfqArena *scratch)
{
    const float *gy = dfq_tensor_f32 (dst->grad);
    gint64 n = dfq_tensor_numel (dst), nc = dfq_priv_n_chunks (n);
    for (int s = 0; s < 2; s++) {
        /* A new buffer takes a copy (add(x, x): the second pass adds to it). */
        gboolean fresh;
        float *gx = dfq_priv_grad_of_fresh (dst->src[s], scratch, &fresh);
        if (gx == NULL)
            continue;
#pragma omp parallel for schedule(dynamic, 1) if (n > DFQ_PAR_MIN)
        for (gint64 c = 0; c < nc; c++) {
            gint64 lo = c * DFQ_PRIV_CHUNK;
            if (fresh)
                memcpy (gx + lo, gy + lo, (gsize) MIN (n - lo, DFQ_PRIV_CHUNK) * sizeof (float));
            else
                dfq_acc_chunk (gy + lo, gx + lo, MIN (n - lo, DFQ_PRIV_CHUNK));
        }
    }
}

/* ---- sub ---- */
DfqTensor *
dfq_sub (DfqArena *arena, DfqTensor *a, DfqTensor *b)
{
    DfqTensor *t = dfq_op_binary (arena, DFQ_OP_SUB, a, b);
    return t ? dfq_priv_op_run (t) : NULL;
}

void
dfq_op_sub_forward (DfqTensor *dst)
{
    const float *restrict a = dfq_tensor_f32 (dst->src[0]);
    const float *restrict b = dfq_tensor_f32 (dst->src[1]);
    float *restrict y = dfq_tensor_f32 (dst);
    gint64 n = dfq_tensor_numel (dst);
#pragma omp parallel for schedule(static) if (n > DFQ_PAR_MIN)
    for (gint64 i = 0; i < n; i++)
        y[i] = a[i] - b[i];
}

void
dfq_op_sub_backward (DfqTensor *dst, DfqArena *scratch)
{
    const float *restrict gy = dfq_tensor_f32 (dst->grad);
    gint64 n = dfq_tensor_numel (dst);
    float *restrict ga = dfq_priv_grad_of (dst->src[0], scratch);
    float *restrict gb = dfq_priv_grad_of (dst->src[1], scratch);
    if (ga != NULL)
        for (gint64 i = 0; i < n; i++)
            ga[i] += gy[i];
    if (gb != NULL)
        for (gint64 i = 0; i < n; i++)
            gb[i] -= gy[i];
}

/* ---- mul ---- */
DfqTensor *
dfq_mul (DfqArena *arena, DfqTensor *a, DfqTensor *b)
{
    DfqTensor *t = dfq_op_binary (arena, DFQ_OP_MUL, a, b);
    return t ? dfq_priv_op_run (t) : NULL;
}

void
dfq_op_mul_forward (DfqTensor *dst)
{
    const float *restrict a = dfq_tensor_f32 (dst->src[0]);
    const float *restrict b = dfq_tensor_f32 (dst->src[1]);
    float *restrict y = dfq_tensor_f32 (dst);
    gint64 n = dfq_tensor_numel (dst);
#pragma omp parallel for schedule(static) if (n > DFQ_PAR_MIN)
    for (gint64 i = 0; i < n; i++)
        y[i] = a[i] * b[i];
}

void
dfq_op_mul_backward (DfqTensor *dst, DfqArena *scratch)
{
    const float *restrict gy = dfq_tensor_f32 (dst->grad);
    const float *a = dfq_tensor_f32 (dst->src[0]);
    const float *b = dfq_tensor_f32 (dst->src[1]);
    gint64 n = dfq_tensor_numel (dst);
    float *ga = dfq_priv_grad_of (dst->src[0], scratch);
    float *gb = dfq_priv_grad_of (dst->src[1], scratch);
    /* a and b may be the same tensor (x*x): then ga == gb and both terms add up. */
    if (ga != NULL)
        for (gint64 i = 0; i < n; i++)
            ga[i] += gy[i] * b[i];
    if (gb != NULL)
        for (gint64 i = 0; i < n; i++)
            gb[i] += gy[i] * a[i];
}

/* ---- affine: alpha * x + beta ---- */
DfqTensor *
dfq_affine (DfqArena *arena, DfqTensor *x, float alpha, float beta)
{
    DfqTensor *t = dfq_op_unary (arena, DFQ_OP_AFFINE, x);
    if (t == NULL)
        return NULL;
    t->op_fparams[0] = alpha;
    t->op_fparams[1] = beta;
    return dfq_priv_op_run (t);
}

void
dfq_op_affine_forward (DfqTensor *dst)
{
    const float *restrict x = dfq_tensor_f32 (dst->src[0]);
    float *restrict y = dfq_tensor_f32 (dst);
    float alpha = dst->op_fparams[0], beta = dst->op_fparams[1];
    gint64 n = dfq_tensor_numel (dst);
#pragma omp parallel for schedule(static) if (n > DFQ_PAR_MIN)
    for (gint64 i = 0; i < n; i++)
        y[i] = alpha * x[i] + beta;
}

void
dfq_op_affine_backward (DfqTensor *dst, DfqArena *scratch)
{
    float *restrict gx = dfq_priv_grad_of (dst->src[0], scratch);
    if (gx == NULL)
        return;
    const float *restrict gy = dfq_tensor_f32 (dst->grad);
    float alpha = dst->op_fparams[0];
    gint64 n = dfq_tensor_numel (dst);
    for (gint64 i = 0; i < n; i++)
        gx[i] += alpha * gy[i];
}

/* ---- abs ---- */
DfqTensor *
dfq_abs (DfqArena *arena, DfqTensor *x)
{
    DfqTensor *t = dfq_op_unary (arena, DFQ_OP_ABS, x);
    return t ? dfq_priv_op_run (t) : NULL;
}

void
dfq_op_abs_forward (DfqTensor *dst)
{
    const float *restrict x = dfq_tensor_f32 (dst->src[0]);
    float *restrict y = dfq_tensor_f32 (dst);
    gint64 n = dfq_tensor_numel (dst);
    for (gint64 i = 0; i < n; i++)
        y[i] = fabsf (x[i]);
}

void
dfq_op_abs_backward (DfqTensor *dst, DfqArena *scratch)
{
    float *restrict gx = dfq_priv_grad_of (dst->src[0], scratch);
    if (gx == NULL)
        return;
    const float *restrict gy = dfq_tensor_f32 (dst->grad);
    const float *restrict x = dfq_tensor_f32 (dst->src[0]);
    gint64 n = dfq_tensor_numel (dst);
    for (gint64 i = 0; i < n; i++)
        gx[i] += x[i] > 0.0f ? gy[i] : (x[i] < 0.0f ? -gy[i] : 0.0f);
}

/* ---- sqrt ---- */
DfqTensor *
dfq_sqrt (DfqArena *arena, DfqTensor *x)
{
    DfqTensor *t = dfq_op_unary (arena, DFQ_OP_SQRT, x);
    return t ? dfq_priv_op_run (t) : NULL;
}

void
dfq_op_sqrt_forward (DfqTensor *dst)
{
    const float *restrict x = dfq_tensor_f32 (dst->src[0]);
    float *restrict y = dfq_tensor_f32 (dst);
    gint64 n = dfq_tensor_numel (dst);
    for (gint64 i = 0; i < n; i++)
        y[i] = sqrtf (x[i]);
}

void
dfq_op_sqrt_backward (DfqTensor *dst, DfqArena *scratch)
{
    float *restrict gx = dfq_priv_grad_of (dst->src[0], scratch);
    if (gx == NULL)
        return;
    const float *restrict gy = dfq_tensor_f32 (dst->grad);
    const float *restrict y = dfq_tensor_f32 (dst);
    gint64 n = dfq_tensor_numel (dst);
    for (gint64 i = 0; i < n; i++)
        gx[i] += gy[i] * 0.5f / y[i];
}

/* ---- log ---- */
DfqTensor *
dfq_log (DfqArena *arena, DfqTensor *x)
{
    DfqTensor *t = dfq_op_unary (arena, DFQ_OP_LOG, x);
    return t ? dfq_priv_op_run (t) : NULL;
}

void
dfq_op_log_forward (DfqTensor *dst)
{
    const float *restrict x = dfq_tensor_f32 (dst->src[0]);
    float *restrict y = dfq_tensor_f32 (dst);
    gint64 n = dfq_tensor_numel (dst);
    for (gint64 i = 0; i < n; i++)
        y[i] = logf (x[i]);
}

void
dfq_op_log_backward (DfqTensor *dst, DfqArena *scratch)
{
    float *restrict gx = dfq_priv_grad_of (dst->src[0], scratch);
    if (gx == NULL)
        return;
    const float *restrict gy = dfq_tensor_f32 (dst->grad);
    const float *restrict x = dfq_tensor_f32 (dst->src[0]);
    gint64 n = dfq_tensor_numel (dst);
    for (gint64 i = 0; i < n; i++)
        gx[i] += gy[i] / x[i];
}

/* ---- channel affine: y[n,c,...] = x * s[c] + t[c] ---- */
DfqTensor *
dfq_channel_affine (DfqArena *arena, DfqTensor *x, DfqTensor *scale, DfqTensor *shift)
{
    g_return_val_if_fail (x != NULL && x->n_dims >= 2, NULL);
    gint64 c = x->shape[1];
    g_return_val_if_fail (scale == NULL || dfq_tensor_numel (scale) == c, NULL);
    g_return_val_if_fail (shift == NULL || dfq_tensor_numel (shift) == c, NULL);
    DfqTensor *srcs[3] = { x, scale, shift };
    DfqTensor *t = dfq_priv_op_new_uninit (arena, DFQ_OP_CHANNEL_AFFINE, DFQ_DTYPE_F32, x->n_dims, x->shape, 3, srcs);
    return dfq_priv_op_run (t);
}

void
dfq_op_channel_affine_forward (DfqTensor *dst)
{
    const DfqTensor *xt = dst->src[0];
    const float *restrict x = dfq_tensor_f32 (xt);
    const float *s = dst->src[1] ? dfq_tensor_f32 (dst->src[1]) : NULL;
    const float *sh = dst->src[2] ? dfq_tensor_f32 (dst->src[2]) : NULL;
    float *restrict y = dfq_tensor_f32 (dst);
    gint64 n = xt->shape[0], c = xt->shape[1], inner = dfq_priv_inner_size (xt, 1);
#pragma omp parallel for collapse(2) schedule(static) if (n * c * inner > DFQ_PAR_MIN)
    for (gint64 i = 0; i < n; i++)
        for (gint64 j = 0; j < c; j++) {
            float a = s ? s[j] : 1.0f, b = sh ? sh[j] : 0.0f;
            const float *xp = x + (i * c + j) * inner;
            float *yp = y + (i * c + j) * inner;
            for (gint64 k = 0; k < inner; k++)
                yp[k] = xp[k] * a + b;
        }
}

void
dfq_op_channel_affine_backward (DfqTensor *dst, DfqArena *scratch)
{
    const DfqTensor *xt = dst->src[0];
    const float *x = dfq_tensor_f32 (xt);
    const float *s = dst->src[1] ? dfq_tensor_f32 (dst->src[1]) : NULL;
    const float *gy = dfq_tensor_f32 (dst->grad);
    float *gx = dfq_priv_grad_of (dst->src[0], scratch);
    float *gs = dfq_priv_grad_of (dst->src[1], scratch);
    float *gt = dfq_priv_grad_of (dst->src[2], scratch);
    gint64 n = xt->shape[0], c = xt->shape[1], inner = dfq_priv_inner_size (xt, 1);
    for (gint64 j = 0; j < c; j++) {
        double acc_s = 0.0, acc_t = 0.0;
        float a = s ? s[j] : 1.0f;
        for (gint64 i = 0; i < n; i++) {
            const float *xp = x + (i * c + j) * inner;
            const float *gp = gy + (i * c + j) * inner;
            if (gx != NULL) {
                float *gxp = gx + (i * c + j) * inner;
                for (gint64 k = 0; k < inner; k++)
                    gxp[k] += gp[k] * a;
            }
            for (gint64 k = 0; k < inner; k++) {
                acc_s += (double) gp[k] * xp[k];
                acc_t += gp[k];
            }
        }
        if (gs != NULL)
            gs[j] += (float) acc_s;
        if (gt != NULL)
            gt[j] += (float) acc_t;
    }
}
