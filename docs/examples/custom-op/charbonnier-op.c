/* An op of one's own: forward and backward of the Charbonnier penalty as a
 * DfqCustomOp (dfq-custom-op.h). dfq_custom_op() allocates the result in the
 * arena given, links it to its source and runs the forward; dfq_backward()
 * calls the backward in its walk like any built-in op's, handing it the
 * gradient buffer of every source that needs one (NULL otherwise): the
 * backward ADDS into it. */
#include <math.h>

#include "charbonnier-op.h"

static void
charbonnier_forward (DfqTensor *dst, DfqCustomOpCall *call)
{
    const float *x = dfq_tensor_f32 (dst->src[0]);
    float eps = dst->op_fparams[0];
    float *y = dfq_tensor_f32 (dst);
    for (gint64 i = 0; i < dfq_tensor_numel (dst); i++)
        y[i] = sqrtf (x[i] * x[i] + eps * eps) - eps;
}

/* dy/dx = x / sqrt(x^2 + eps^2) = x / (y + eps) */
static void
charbonnier_backward (DfqTensor *dst, DfqCustomOpCall *call, float *const *src_grads, DfqArena *scratch)
{
    float *gx = src_grads[0];
    if (gx == NULL)
        return;
    const float *x = dfq_tensor_f32 (dst->src[0]), *y = dfq_tensor_f32 (dst), *gy = dfq_tensor_f32 (dst->grad);
    float eps = dst->op_fparams[0];
    for (gint64 i = 0; i < dfq_tensor_numel (dst); i++)
        gx[i] += gy[i] * x[i] / (y[i] + eps);
}

static const DfqCustomOp charbonnier_op = {
    .name = "charbonnier",
    .forward = charbonnier_forward,
    .backward = charbonnier_backward,
};

DfqTensor *
charbonnier (DfqArena *arena, DfqTensor *x, float eps)
{
    g_return_val_if_fail (x != NULL && x->dtype == DFQ_DTYPE_F32 && eps > 0, NULL);
    return dfq_custom_op (arena, &charbonnier_op, x->n_dims, x->shape, 1, &x, 1, &eps, NULL);
}
