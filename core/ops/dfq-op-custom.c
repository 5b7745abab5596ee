/* Custom ops (core/ops): the one table row DFQ_OP_CUSTOM dispatches to the
 * forward and backward of the DfqCustomOp a result carries in op_aux, so a
 * plugin's op is walked by dfq_backward() like any built-in op and allocates
 * only from the arenas (public API: dfq-custom-op.h). */
#include "dfq-op-private.h"

DfqTensor *
dfq_custom_op (DfqArena *arena, const DfqCustomOp *op, int n_dims, const gint64 *shape, int n_src,
               DfqTensor *const *srcs, int n_params, const float *params, gpointer user_data)
{
    g_return_val_if_fail (arena != NULL, NULL);
    g_return_val_if_fail (op != NULL && op->forward != NULL, NULL);
    g_return_val_if_fail (n_dims >= 1 && n_dims <= DFQ_MAX_DIMS && shape != NULL, NULL);
    g_return_val_if_fail (n_src >= 0 && n_src <= DFQ_MAX_SRC && (n_src == 0 || srcs != NULL), NULL);
    g_return_val_if_fail (n_params >= 0 && n_params <= DFQ_MAX_OP_PARAMS && (n_params == 0 || params != NULL), NULL);
    for (int d = 0; d < n_dims; d++)
        g_return_val_if_fail (shape[d] >= 0, NULL);
    for (int i = 0; i < n_src; i++)
        g_return_val_if_fail (srcs[i] != NULL, NULL);

    DfqTensor *t = dfq_priv_op_new (arena, DFQ_OP_CUSTOM, DFQ_DTYPE_F32, n_dims, shape, n_src, srcs);
    if (op->backward == NULL)
        t->flags &= ~(guint32) DFQ_TENSOR_FLAG_REQUIRES_GRAD;
    for (int i = 0; i < n_params; i++)
        t->op_fparams[i] = params[i];
    DfqCustomOpCall *call = dfq_arena_alloc (arena, sizeof *call);
    call->op = op;
    call->user_data = user_data;
    t->op_aux = call;
    return dfq_priv_op_run (t);
}

DfqCustomOpCall *
dfq_custom_op_call (const DfqTensor *t)
{
    g_return_val_if_fail (t != NULL, NULL);
    /* A result that needs no gradient is a leaf once its forward has run. */
    return t->op == DFQ_OP_CUSTOM ? t->op_aux : NULL;
}

void
dfq_op_custom_forward (DfqTensor *dst)
{
    DfqCustomOpCall *call = dst->op_aux;
    call->op->forward (dst, call);
}

void
dfq_op_custom_backward (DfqTensor *dst, DfqArena *scratch)
{
    DfqCustomOpCall *call = dst->op_aux;
    float *grads[DFQ_MAX_SRC] = { NULL };
    gboolean any = FALSE;
    for (int i = 0; i < DFQ_MAX_SRC; i++) {
        DfqTensor *src = dst->src[i];
        if (src == NULL || src->dtype != DFQ_DTYPE_F32)
            continue;
        grads[i] = dfq_priv_grad_of (src, scratch);
        any = any || grads[i] != NULL;
    }
    if (any)
        call->op->backward (dst, call, grads, scratch);
}
