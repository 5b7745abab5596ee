/* Average pooling ops (core/ops): avg_pool (square window, stride, no padding)
 * and global_avg_pool ([N,C,H,W] -> [N,C]). Each (image, channel) plane is
 * independent, so planes are spread over threads in both directions. */
#include "dfq-op-private.h"

#define DFQ_POOL_PAR_MIN 32768

/* ---- avg_pool ---- */
DfqTensor *
dfq_avg_pool (DfqArena *arena, DfqTensor *x, int kernel, int stride)
{
    g_return_val_if_fail (arena != NULL && x != NULL, NULL);
    g_return_val_if_fail (x->dtype == DFQ_DTYPE_F32 && x->n_dims == 4, NULL);
    g_return_val_if_fail (dfq_tensor_is_contiguous (x), NULL);
    g_return_val_if_fail (kernel >= 1 && stride >= 1, NULL);
    g_return_val_if_fail (x->shape[2] >= kernel && x->shape[3] >= kernel, NULL);

    gint64 shape[4] = { x->shape[0], x->shape[1],
                        (x->shape[2] - kernel) / stride + 1, (x->shape[3] - kernel) / stride + 1 };
    DfqTensor *srcs[1] = { x };
    DfqTensor *t = dfq_priv_op_new_uninit (arena, DFQ_OP_AVG_POOL, DFQ_DTYPE_F32, 4, shape, 1, srcs);
    t->op_params[0] = kernel;
    t->op_params[1] = stride;
    return dfq_priv_op_run (t);
}

void
dfq_op_avg_pool_forward (DfqTensor *dst)
{
    const DfqTensor *xt = dst->src[0];
    const float *x = dfq_tensor_f32 (xt);
    float *y = dfq_tensor_f32 (dst);
    const gint64 k = dst->op_params[0], s = dst->op_params[1];
    const gint64 planes = xt->shape[0] * xt->shape[1], h = xt->shape[2], w = xt->shape[3];
    const gint64 ho = dst->shape[2], wo = dst->shape[3];
    const float scale = 1.0f / (float) (k * k);

#pragma omp parallel for schedule(static) if (planes * h * w > DFQ_POOL_PAR_MIN)
    for (gint64 pl = 0; pl < planes; pl++) {
        const float *xp = x + pl * h * w;
        float *yp = y + pl * ho * wo;
        for (gint64 oy = 0; oy < ho; oy++)
            for (gint64 ox = 0; ox < wo; ox++) {
                float acc = 0.0f;
                for (gint64 i = 0; i < k; i++) {
                    const float *xr = xp + (oy * s + i) * w + ox * s;
                    for (gint64 j = 0; j < k; j++)
                        acc += xr[j];
                }
                yp[oy * wo + ox] = acc * scale;
            }
    }
}

void
dfq_op_avg_pool_backward (DfqTensor *dst, DfqArena *scratch)
{
    float *gx = dfq_priv_grad_of (dst->src[0], scratch);
    if (gx == NULL)
        return;
    const DfqTensor *xt = dst->src[0];
    const float *gy = dfq_tensor_f32 (dst->grad);
    const gint64 k = dst->op_params[0], s = dst->op_params[1];
    const gint64 planes = xt->shape[0] * xt->shape[1], h = xt->shape[2], w = xt->shape[3];
    const gint64 ho = dst->shape[2], wo = dst->shape[3];
    const float scale = 1.0f / (float) (k * k);

#pragma omp parallel for schedule(static) if (planes * h * w > DFQ_POOL_PAR_MIN)
    for (gint64 pl = 0; pl < planes; pl++) {
        float *gxp = gx + pl * h * w;
        const float *gyp = gy + pl * ho * wo;
        for (gint64 oy = 0; oy < ho; oy++)
            for (gint64 ox = 0; ox < wo; ox++) {
                const float g = gyp[oy * wo + ox] * scale;
                for (gint64 i = 0; i < k; i++) {
                    float *gr = gxp + (oy * s + i) * w + ox * s;
                    for (gint64 j = 0; j < k; j++)
                        gr[j] += g;
                }
            }
    }
}

/* ---- global_avg_pool: [N,C,H,W] -> [N,C] ---- */
DfqTensor *
dfq_global_avg_pool (DfqArena *arena, DfqTensor *x)
{
    g_return_val_if_fail (arena != NULL && x != NULL, NULL);
    g_return_val_if_fail (x->dtype == DFQ_DTYPE_F32 && x->n_dims == 4, NULL);
    g_return_val_if_fail (dfq_tensor_is_contiguous (x), NULL);
    g_return_val_if_fail (x->shape[2] * x->shape[3] >= 1, NULL);

    gint64 shape[2] = { x->shape[0], x->shape[1] };
    DfqTensor *srcs[1] = { x };
    DfqTensor *t = dfq_priv_op_new_uninit (arena, DFQ_OP_GLOBAL_AVG_POOL, DFQ_DTYPE_F32, 2, shape, 1, srcs);
    return dfq_priv_op_run (t);
}

void
dfq_op_global_avg_pool_forward (DfqTensor *dst)
{
    const DfqTensor *xt = dst->src[0];
    const float *x = dfq_tensor_f32 (xt);
    float *y = dfq_tensor_f32 (dst);
    const gint64 planes = xt->shape[0] * xt->shape[1], hw = xt->shape[2] * xt->shape[3];

#pragma omp parallel for schedule(static) if (planes * hw > DFQ_POOL_PAR_MIN)
    for (gint64 pl = 0; pl < planes; pl++) {
        const float *restrict xp = x + pl * hw;
        double acc = 0.0;
        for (gint64 k = 0; k < hw; k++)
            acc += xp[k];
        y[pl] = (float) (acc / (double) hw);
    }
}

void
dfq_op_global_avg_pool_backward (DfqTensor *dst, DfqArena *scratch)
{
    float *gx = dfq_priv_grad_of (dst->src[0], scratch);
    if (gx == NULL)
        return;
    const DfqTensor *xt = dst->src[0];
    const float *gy = dfq_tensor_f32 (dst->grad);
    const gint64 planes = xt->shape[0] * xt->shape[1], hw = xt->shape[2] * xt->shape[3];
    const float scale = 1.0f / (float) hw;

#pragma omp parallel for schedule(static) if (planes * hw > DFQ_POOL_PAR_MIN)
    for (gint64 pl = 0; pl < planes; pl++) {
        float *restrict gxp = gx + pl * hw;
        const float g = gy[pl] * scale;
        for (gint64 k = 0; k < hw; k++)
            gxp[k] += g;
    }
}
