/* Dense layer op (core/ops): y = x W^T + b on row-major [N,in] inputs, one
 * OpenBLAS sgemm each way. OpenBLAS threads the GEMMs itself, so this file runs
 * no OpenMP loop around them (one threading layer, STYLE.md B.13). */
#include <cblas.h>

#include "dfq-op-private.h"

DfqTensor *
dfq_linear (DfqArena *arena, DfqTensor *x, DfqTensor *weight, DfqTensor *bias)
{
    g_return_val_if_fail (arena != NULL, NULL);
    g_return_val_if_fail (x != NULL && weight != NULL, NULL);
    g_return_val_if_fail (x->dtype == DFQ_DTYPE_F32 && weight->dtype == DFQ_DTYPE_F32, NULL);
    g_return_val_if_fail (x->n_dims == 2 && weight->n_dims == 2, NULL);
    g_return_val_if_fail (x->shape[1] == weight->shape[1], NULL);
    g_return_val_if_fail (bias == NULL || (bias->dtype == DFQ_DTYPE_F32 && dfq_tensor_numel (bias) == weight->shape[0]), NULL);
    g_return_val_if_fail (dfq_tensor_is_contiguous (x) && dfq_tensor_is_contiguous (weight), NULL);

    gint64 shape[2] = { x->shape[0], weight->shape[0] };
    DfqTensor *srcs[3] = { x, weight, bias };
    DfqTensor *t = dfq_priv_op_new_uninit (arena, DFQ_OP_LINEAR, DFQ_DTYPE_F32, 2, shape, 3, srcs);
    return dfq_priv_op_run (t);
}

void
dfq_op_linear_forward (DfqTensor *dst)
{
    const DfqTensor *xt = dst->src[0], *wt = dst->src[1], *bt = dst->src[2];
    const gint64 n = xt->shape[0], in = xt->shape[1], out = wt->shape[0];
    float *restrict y = dfq_tensor_f32 (dst);

    if (n == 0 || out == 0)
        return;
    if (in == 0) {
        /* an empty sum: y = b */
        for (gint64 i = 0; i < n * out; i++)
            y[i] = 0.0f;
    } else {
        cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans, (blasint) n, (blasint) out, (blasint) in,
                     1.0f, dfq_tensor_f32 (xt), (blasint) in, dfq_tensor_f32 (wt), (blasint) in,
                     0.0f, y, (blasint) out);
    }
    if (bt != NULL) {
        const float *restrict b = dfq_tensor_f32 (bt);
        for (gint64 i = 0; i < n; i++) {
            float *restrict yr = y + i * out;
            for (gint64 o = 0; o < out; o++)
                yr[o] += b[o];
        }
    }
}

void
dfq_op_linear_backward (DfqTensor *dst, DfqArena *scratch)
{
    DfqTensor *xt = dst->src[0], *wt = dst->src[1], *bt = dst->src[2];
    const gint64 n = xt->shape[0], in = xt->shape[1], out = wt->shape[0];
    const float *gy = dfq_tensor_f32 (dst->grad);
    float *gx = dfq_priv_grad_of (xt, scratch);
    float *gw = dfq_priv_grad_of (wt, scratch);
    float *gb = dfq_priv_grad_of (bt, scratch);

    if (n == 0 || out == 0)
        return;
    if (gx != NULL && in > 0) /* dX += dY W */
        cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint) n, (blasint) in, (blasint) out,
                     1.0f, gy, (blasint) out, dfq_tensor_f32 (wt), (blasint) in,
                     1.0f, gx, (blasint) in);
    if (gw != NULL && in > 0) /* dW += dY^T X */
        cblas_sgemm (CblasRowMajor, CblasTrans, CblasNoTrans, (blasint) out, (blasint) in, (blasint) n,
                     1.0f, gy, (blasint) out, dfq_tensor_f32 (xt), (blasint) in,
                     1.0f, gw, (blasint) in);
    if (gb != NULL) {
        /* Column sums in double, row by row (cache-friendly and always in the
         * same order: deterministic). */
        double *restrict acc = dfq_arena_alloc (scratch, (gsize) out * sizeof (double));
        for (gint64 i = 0; i < n; i++) {
            const float *restrict gr = gy + i * out;
            for (gint64 o = 0; o < out; o++)
                acc[o] += gr[o];
        }
        for (gint64 o = 0; o < out; o++)
            gb[o] += (float) acc[o];
    }
}
