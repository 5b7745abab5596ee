/* Math ops (core/ops): pow with a real exponent, exp, and the mean over one
 * axis. Shapes are documented in dfq-ops.h; forward and backward of each op
 * sit side by side, as in the other op families. */
#include <math.h>

#include "dfq-op-private.h"

static DfqTensor *
dfq_op_math_unary (DfqArena *arena, DfqOp op, DfqTensor *x)
{
    g_return_val_if_fail (arena != NULL, NULL);
    g_return_val_if_fail (x != NULL && x->dtype == DFQ_DTYPE_F32, NULL);
    return dfq_priv_op_new_uninit (arena, op, DFQ_DTYPE_F32, x->n_dims, x->shape, 1, &x);
}

/* ---- pow: y = x^p (real p) ---- */
DfqTensor *
dfq_pow (DfqArena *arena, DfqTensor *x, float p)
{
    DfqTensor *t = dfq_op_math_unary (arena, DFQ_OP_POW, x);
    if (t == NULL)
        return NULL;
    t->op_fparams[0] = p;
    return dfq_priv_op_run (t);
}

void
dfq_op_pow_forward (DfqTensor *dst)
{
    const float *restrict x = dfq_tensor_f32 (dst->src[0]);
    float *restrict y = dfq_tensor_f32 (dst);
    float p = dst->op_fparams[0];
    gint64 n = dfq_tensor_numel (dst);
    for (gint64 i = 0; i < n; i++)
        y[i] = powf (x[i], p);
}

void
dfq_op_pow_backward (DfqTensor *dst, DfqArena *scratch)
{
    float *restrict gx = dfq_priv_grad_of (dst->src[0], scratch);
    if (gx == NULL)
        return;
    const float *restrict gy = dfq_tensor_f32 (dst->grad);
    const float *restrict x = dfq_tensor_f32 (dst->src[0]);
    float p = dst->op_fparams[0];
    gint64 n = dfq_tensor_numel (dst);
    /* d/dx x^p = p x^(p-1); p == 0 gives 0 everywhere (also at x = 0). */
    if (p == 0.0f)
        return;
    for (gint64 i = 0; i < n; i++)
        gx[i] += gy[i] * p * powf (x[i], p - 1.0f);
}

/* ---- exp ---- */
DfqTensor *
dfq_exp (DfqArena *arena, DfqTensor *x)
{
    DfqTensor *t = dfq_op_math_unary (arena, DFQ_OP_EXP, x);
    return t ? dfq_priv_op_run (t) : NULL;
}

void
dfq_op_exp_forward (DfqTensor *dst)
{
    const float *restrict x = dfq_tensor_f32 (dst->src[0]);
    float *restrict y = dfq_tensor_f32 (dst);
    gint64 n = dfq_tensor_numel (dst);
    for (gint64 i = 0; i < n; i++)
        y[i] = expf (x[i]);
}

void
dfq_op_exp_backward (DfqTensor *dst, DfqArena *scratch)
{
    float *restrict gx = dfq_priv_grad_of (dst->src[0], scratch);
    if (gx == NULL)
        return;
    const float *restrict gy = dfq_tensor_f32 (dst->grad);
    const float *restrict y = dfq_tensor_f32 (dst);
    gint64 n = dfq_tensor_numel (dst);
    for (gint64 i = 0; i < n; i++)
        gx[i] += gy[i] * y[i];
}

/* ---- mean over one axis: [d0, .., d_axis, ..] -> the shape without d_axis
 * (a 1-d input gives a scalar [1]). The input is outer x d_axis x inner. */
DfqTensor *
dfq_mean_axis (DfqArena *arena, DfqTensor *x, int axis)
{
    g_return_val_if_fail (arena != NULL, NULL);
    g_return_val_if_fail (x != NULL && x->dtype == DFQ_DTYPE_F32, NULL);
    if (axis < 0)
        axis += x->n_dims;
    g_return_val_if_fail (axis >= 0 && axis < x->n_dims, NULL);
    g_return_val_if_fail (x->shape[axis] > 0, NULL);
    gint64 shape[DFQ_MAX_DIMS] = { 1 };
    int n_dims = 0;
    for (int d = 0; d < x->n_dims; d++)
        if (d != axis)
            shape[n_dims++] = x->shape[d];
    DfqTensor *t = dfq_priv_op_new_uninit (arena, DFQ_OP_MEAN_AXIS, DFQ_DTYPE_F32, MAX (n_dims, 1), shape, 1, &x);
    t->op_params[0] = axis;
    return dfq_priv_op_run (t);
}

static void
dfq_op_mean_axis_sizes (const DfqTensor *dst, gint64 *outer, gint64 *len, gint64 *inner)
{
    const DfqTensor *x = dst->src[0];
    int axis = dst->op_params[0];
    *outer = 1;
    for (int d = 0; d < axis; d++)
        *outer *= x->shape[d];
    *len = x->shape[axis];
    *inner = dfq_priv_inner_size (x, axis);
}

void
dfq_op_mean_axis_forward (DfqTensor *dst)
{
    gint64 outer, len, inner;
    dfq_op_mean_axis_sizes (dst, &outer, &len, &inner);
    const float *restrict x = dfq_tensor_f32 (dst->src[0]);
    float *restrict y = dfq_tensor_f32 (dst);
    /* Sums in double, in the fixed order of the axis: the same bits for any
     * thread count. */
#pragma omp parallel for if (outer * inner * len > 65536) schedule(static)
    for (gint64 o = 0; o < outer; o++)
        for (gint64 i = 0; i < inner; i++) {
            double s = 0.0;
            for (gint64 k = 0; k < len; k++)
                s += x[(o * len + k) * inner + i];
            y[o * inner + i] = (float) (s / (double) len);
        }
}

void
dfq_op_mean_axis_backward (DfqTensor *dst, DfqArena *scratch)
{
    float *restrict gx = dfq_priv_grad_of (dst->src[0], scratch);
    if (gx == NULL)
        return;
    gint64 outer, len, inner;
    dfq_op_mean_axis_sizes (dst, &outer, &len, &inner);
    const float *restrict gy = dfq_tensor_f32 (dst->grad);
    float scale = 1.0f / (float) len;
    for (gint64 o = 0; o < outer; o++)
        for (gint64 k = 0; k < len; k++)
            for (gint64 i = 0; i < inner; i++)
                gx[(o * len + k) * inner + i] += gy[o * inner + i] * scale;
}
