/* Shape ops (core/ops): nearest upsampling, reflection padding, cropping,
 * embedding lookup, reshape (a view that shares its source's data) and concat
 * along dim 1. They move values without arithmetic, so each backward routes the
 * gradient along the same index map; scatter-adds run per plane (or in a fixed
 * order) so results do not depend on the thread count. */
#include <string.h>

#include "../tensor/dfq-tensor-private.h"
#include "dfq-op-private.h"

/* Below this many elements a loop is not worth waking the thread pool. */
#define DFQ_PAR_MIN 32768

static gboolean
dfq_shape_is_image (const DfqTensor *x)
{
    return x != NULL && x->dtype == DFQ_DTYPE_F32 && x->n_dims == 4;
}

/* ---- nearest upsampling by an integer factor (op_params[0]):
 * y[n,c,i,j] = x[n,c,i/s,j/s]; backward sums each s x s block. ---- */
/* Factor 2 rows: y[2k] = y[2k+1] = x[k], and its adjoint, which adds in the
 * same order as the general loop (left to right). */
DFQ_PRIV_SIMD_CLONES static void
dfq_upsample2_row (const float *restrict xr, float *restrict yr, gint64 w)
{
#pragma omp simd
    for (gint64 k = 0; k < w; k++) {
        yr[2 * k] = xr[k];
        yr[2 * k + 1] = xr[k];
    }
}

DFQ_PRIV_SIMD_CLONES static void
dfq_upsample2_row_backward (const float *restrict gr, float *restrict gxr, gint64 w)
{
#pragma omp simd
    for (gint64 k = 0; k < w; k++)
        gxr[k] = (gxr[k] + gr[2 * k]) + gr[2 * k + 1];
}

DfqTensor *
dfq_upsample_nearest (DfqArena *arena, DfqTensor *x, int scale)
{
    g_return_val_if_fail (arena != NULL, NULL);
    g_return_val_if_fail (dfq_shape_is_image (x), NULL);
    g_return_val_if_fail (scale >= 1, NULL);
    gint64 shape[4] = { x->shape[0], x->shape[1], x->shape[2] * scale, x->shape[3] * scale };
    DfqTensor *srcs[1] = { x };
    DfqTensor *t = dfq_priv_op_new_uninit (arena, DFQ_OP_UPSAMPLE_NEAREST, DFQ_DTYPE_F32, 4, shape, 1, srcs);
    t->op_params[0] = scale;
    return dfq_priv_op_run (t);
}

void
dfq_op_upsample_nearest_forward (DfqTensor *dst)
{
    const DfqTensor *xt = dst->src[0];
    const float *x = dfq_tensor_f32 (xt);
    float *y = dfq_tensor_f32 (dst);
    gint64 s = dst->op_params[0];
    gint64 planes = xt->shape[0] * xt->shape[1], h = xt->shape[2], w = xt->shape[3];
    gint64 oh = h * s, ow = w * s;
#pragma omp parallel for schedule(static) if (planes * oh * ow > DFQ_PAR_MIN)
    for (gint64 p = 0; p < planes; p++)
        for (gint64 oy = 0; oy < oh; oy++) {
            const float *restrict xr = x + (p * h + oy / s) * w;
            float *restrict yr = y + (p * oh + oy) * ow;
            if (s == 2) /* the generators' case: no division per element */
                dfq_upsample2_row (xr, yr, w);
            else
                for (gint64 ox = 0; ox < ow; ox++)
                    yr[ox] = xr[ox / s];
        }
}

void
dfq_op_upsample_nearest_backward (DfqTensor *dst, DfqArena *scratch)
{
    const DfqTensor *xt = dst->src[0];
    gboolean fresh;
    float *gx = dfq_priv_grad_of_fresh (dst->src[0], scratch, &fresh);
    if (gx == NULL)
        return;
    const float *gy = dfq_tensor_f32 (dst->grad);
    gint64 s = dst->op_params[0];
    gint64 planes = xt->shape[0] * xt->shape[1], h = xt->shape[2], w = xt->shape[3];
    gint64 oh = h * s, ow = w * s;
#pragma omp parallel for schedule(static) if (planes * oh * ow > DFQ_PAR_MIN)
    for (gint64 p = 0; p < planes; p++) {
        if (fresh) /* a new buffer: clear the plane just before it is summed into */
            memset (gx + p * h * w, 0, (gsize) (h * w) * sizeof (float));
        for (gint64 oy = 0; oy < oh; oy++) {
            const float *restrict gr = gy + (p * oh + oy) * ow;
            float *restrict gxr = gx + (p * h + oy / s) * w;
            if (s == 2)
                dfq_upsample2_row_backward (gr, gxr, w);
            else
                for (gint64 ox = 0; ox < ow; ox++)
                    gxr[ox / s] += gr[ox];
        }
    }
}

/* ---- reflection padding of H and W by op_params[0] on both sides (PyTorch
 * ReflectionPad2d: the edge is not repeated, so pad < H and pad < W). ---- */
static inline gint64
dfq_reflect_index (gint64 i, gint64 n)
{
    if (i < 0)
        return -i;
    if (i >= n)
        return 2 * (n - 1) - i;
    return i;
}

DfqTensor *
dfq_reflect_pad (DfqArena *arena, DfqTensor *x, int pad)
{
    g_return_val_if_fail (arena != NULL, NULL);
    g_return_val_if_fail (dfq_shape_is_image (x), NULL);
    g_return_val_if_fail (pad >= 0 && pad < x->shape[2] && pad < x->shape[3], NULL);
    gint64 shape[4] = { x->shape[0], x->shape[1], x->shape[2] + 2 * pad, x->shape[3] + 2 * pad };
    DfqTensor *srcs[1] = { x };
    DfqTensor *t = dfq_priv_op_new_uninit (arena, DFQ_OP_REFLECT_PAD, DFQ_DTYPE_F32, 4, shape, 1, srcs);
    t->op_params[0] = pad;
    return dfq_priv_op_run (t);
}

void
dfq_op_reflect_pad_forward (DfqTensor *dst)
{
    const DfqTensor *xt = dst->src[0];
    const float *x = dfq_tensor_f32 (xt);
    float *y = dfq_tensor_f32 (dst);
    gint64 pad = dst->op_params[0];
    gint64 planes = xt->shape[0] * xt->shape[1], h = xt->shape[2], w = xt->shape[3];
    gint64 oh = dst->shape[2], ow = dst->shape[3];
#pragma omp parallel for schedule(static) if (planes * oh * ow > DFQ_PAR_MIN)
    for (gint64 p = 0; p < planes; p++)
        for (gint64 oy = 0; oy < oh; oy++) {
            const float *restrict xr = x + (p * h + dfq_reflect_index (oy - pad, h)) * w;
            float *restrict yr = y + (p * oh + oy) * ow;
            for (gint64 ox = 0; ox < ow; ox++)
                yr[ox] = xr[dfq_reflect_index (ox - pad, w)];
        }
}

void
dfq_op_reflect_pad_backward (DfqTensor *dst, DfqArena *scratch)
{
    const DfqTensor *xt = dst->src[0];
    float *gx = dfq_priv_grad_of (dst->src[0], scratch);
    if (gx == NULL)
        return;
    const float *gy = dfq_tensor_f32 (dst->grad);
    gint64 pad = dst->op_params[0];
    gint64 planes = xt->shape[0] * xt->shape[1], h = xt->shape[2], w = xt->shape[3];
    gint64 oh = dst->shape[2], ow = dst->shape[3];
    /* Several outputs read the same input near the edges: one thread per plane
     * adds them in output order. */
#pragma omp parallel for schedule(static) if (planes * oh * ow > DFQ_PAR_MIN)
    for (gint64 p = 0; p < planes; p++)
        for (gint64 oy = 0; oy < oh; oy++) {
            const float *restrict gr = gy + (p * oh + oy) * ow;
            float *restrict gxr = gx + (p * h + dfq_reflect_index (oy - pad, h)) * w;
            for (gint64 ox = 0; ox < ow; ox++)
                gxr[dfq_reflect_index (ox - pad, w)] += gr[ox];
        }
}

/* ---- crop: the window [top, top+height) x [left, left+width) of H x W;
 * op_params = top, left. ---- */
DfqTensor *
dfq_crop (DfqArena *arena, DfqTensor *x, int top, int left, int height, int width)
{
    g_return_val_if_fail (arena != NULL, NULL);
    g_return_val_if_fail (dfq_shape_is_image (x), NULL);
    g_return_val_if_fail (top >= 0 && left >= 0 && height >= 1 && width >= 1, NULL);
    g_return_val_if_fail (top + height <= x->shape[2] && left + width <= x->shape[3], NULL);
    gint64 shape[4] = { x->shape[0], x->shape[1], height, width };
    DfqTensor *srcs[1] = { x };
    DfqTensor *t = dfq_priv_op_new_uninit (arena, DFQ_OP_CROP, DFQ_DTYPE_F32, 4, shape, 1, srcs);
    t->op_params[0] = top;
    t->op_params[1] = left;
    return dfq_priv_op_run (t);
}

void
dfq_op_crop_forward (DfqTensor *dst)
{
    const DfqTensor *xt = dst->src[0];
    const float *x = dfq_tensor_f32 (xt);
    float *y = dfq_tensor_f32 (dst);
    gint64 top = dst->op_params[0], left = dst->op_params[1];
    gint64 planes = xt->shape[0] * xt->shape[1], h = xt->shape[2], w = xt->shape[3];
    gint64 oh = dst->shape[2], ow = dst->shape[3];
#pragma omp parallel for schedule(static) if (planes * oh * ow > DFQ_PAR_MIN)
    for (gint64 p = 0; p < planes; p++)
        for (gint64 oy = 0; oy < oh; oy++)
            memcpy (y + (p * oh + oy) * ow, x + (p * h + top + oy) * w + left, (gsize) ow * sizeof (float));
}

void
dfq_op_crop_backward (DfqTensor *dst, DfqArena *scratch)
{
    const DfqTensor *xt = dst->src[0];
    float *gx = dfq_priv_grad_of (dst->src[0], scratch);
    if (gx == NULL)
        return;
    const float *gy = dfq_tensor_f32 (dst->grad);
    gint64 top = dst->op_params[0], left = dst->op_params[1];
    gint64 planes = xt->shape[0] * xt->shape[1], h = xt->shape[2], w = xt->shape[3];
    gint64 oh = dst->shape[2], ow = dst->shape[3];
#pragma omp parallel for schedule(static) if (planes * oh * ow > DFQ_PAR_MIN)
    for (gint64 p = 0; p < planes; p++)
        for (gint64 oy = 0; oy < oh; oy++) {
            const float *restrict gr = gy + (p * oh + oy) * ow;
            float *restrict gxr = gx + (p * h + top + oy) * w + left;
            for (gint64 ox = 0; ox < ow; ox++)
                gxr[ox] += gr[ox];
        }
}

/* ---- embedding: rows of weight [K,D] picked by I32 indices [N] -> [N,D]
 * (GDFQ's label embedding). Backward scatter-adds into the weight rows; the
 * indices get no gradient. ---- */
DfqTensor *
dfq_embedding (DfqArena *arena, DfqTensor *weight, DfqTensor *indices)
{
    g_return_val_if_fail (arena != NULL, NULL);
    g_return_val_if_fail (weight != NULL && weight->dtype == DFQ_DTYPE_F32 && weight->n_dims == 2, NULL);
    g_return_val_if_fail (indices != NULL && indices->dtype == DFQ_DTYPE_I32 && indices->n_dims == 1, NULL);
    const gint32 *idx = dfq_tensor_i32 (indices);
    for (gint64 i = 0; i < indices->shape[0]; i++)
        g_return_val_if_fail (idx[i] >= 0 && idx[i] < weight->shape[0], NULL);
    gint64 shape[2] = { indices->shape[0], weight->shape[1] };
    DfqTensor *srcs[2] = { weight, indices };
    return dfq_priv_op_run (dfq_priv_op_new_uninit (arena, DFQ_OP_EMBEDDING, DFQ_DTYPE_F32, 2, shape, 2, srcs));
}

void
dfq_op_embedding_forward (DfqTensor *dst)
{
    const float *wt = dfq_tensor_f32 (dst->src[0]);
    const gint32 *idx = dfq_tensor_i32 (dst->src[1]);
    float *y = dfq_tensor_f32 (dst);
    gint64 n = dst->shape[0], d = dst->shape[1];
#pragma omp parallel for schedule(static) if (n * d > DFQ_PAR_MIN)
    for (gint64 i = 0; i < n; i++)
        memcpy (y + i * d, wt + (gint64) idx[i] * d, (gsize) d * sizeof (float));
}

void
dfq_op_embedding_backward (DfqTensor *dst, DfqArena *scratch)
{
    float *gw = dfq_priv_grad_of (dst->src[0], scratch);
    if (gw == NULL)
        return;
    const gint32 *idx = dfq_tensor_i32 (dst->src[1]);
    const float *gy = dfq_tensor_f32 (dst->grad);
    gint64 n = dst->shape[0], d = dst->shape[1];
    /* Repeated indices add into the same row: sequential, in index order. */
    for (gint64 i = 0; i < n; i++) {
        const float *restrict gr = gy + i * d;
        float *restrict gwr = gw + (gint64) idx[i] * d;
        for (gint64 k = 0; k < d; k++)
            gwr[k] += gr[k];
    }
}

/* ---- reshape: a header over the source's data (no copy). It is linked into the
 * graph only when it needs a gradient, like every op result (dfq_priv_op_run);
 * writes through either tensor are seen by both. ---- */
DfqTensor *
dfq_reshape (DfqArena *arena, DfqTensor *x, int n_dims, const gint64 *shape)
{
    g_return_val_if_fail (arena != NULL, NULL);
    g_return_val_if_fail (x != NULL, NULL);
    g_return_val_if_fail (n_dims >= 1 && n_dims <= DFQ_MAX_DIMS && shape != NULL, NULL);
    gint64 numel = 1;
    for (int d = 0; d < n_dims; d++) {
        g_return_val_if_fail (shape[d] >= 0, NULL);
        numel *= shape[d];
    }
    g_return_val_if_fail (numel == dfq_tensor_numel (x), NULL);
    g_return_val_if_fail (dfq_tensor_is_contiguous (x), NULL);
    DfqTensor *t = dfq_priv_tensor_new_header (arena, x->dtype, n_dims, shape);
    t->data = x->data;
    t->view_src = x;
    if (dfq_tensor_requires_grad (x) && dfq_grad_enabled ()) {
        t->op = DFQ_OP_RESHAPE;
        t->src[0] = x;
        t->flags |= DFQ_TENSOR_FLAG_REQUIRES_GRAD;
    }
    return t;
}

void
dfq_op_reshape_forward (DfqTensor *dst)
{
    /* The data is the source's: nothing to compute. */
    (void) dst;
}

void
dfq_op_reshape_backward (DfqTensor *dst, DfqArena *scratch)
{
    float *gx = dfq_priv_grad_of (dst->src[0], scratch);
    if (gx == NULL)
        return;
    const float *restrict gy = dfq_tensor_f32 (dst->grad);
    gint64 n = dfq_tensor_numel (dst);
#pragma omp parallel for schedule(static) if (n > DFQ_PAR_MIN)
    for (gint64 i = 0; i < n; i++)
        gx[i] += gy[i];
}

/* ---- concat along dim 1 of two 2-d or 4-d tensors whose other dims agree:
 * for each n, a's Ca*inner values, then b's Cb*inner values. ---- */
DfqTensor *
dfq_concat (DfqArena *arena, DfqTensor *a, DfqTensor *b)
{
    g_return_val_if_fail (arena != NULL, NULL);
    g_return_val_if_fail (a != NULL && b != NULL, NULL);
    g_return_val_if_fail (a->dtype == DFQ_DTYPE_F32 && b->dtype == DFQ_DTYPE_F32, NULL);
    g_return_val_if_fail (a->n_dims == b->n_dims && (a->n_dims == 2 || a->n_dims == 4), NULL);
    gint64 shape[DFQ_MAX_DIMS];
    for (int d = 0; d < a->n_dims; d++) {
        g_return_val_if_fail (d == 1 || a->shape[d] == b->shape[d], NULL);
        shape[d] = a->shape[d];
    }
    shape[1] = a->shape[1] + b->shape[1];
    DfqTensor *srcs[2] = { a, b };
    return dfq_priv_op_run (dfq_priv_op_new_uninit (arena, DFQ_OP_CONCAT, DFQ_DTYPE_F32, a->n_dims, shape, 2, srcs));
}

void
dfq_op_concat_forward (DfqTensor *dst)
{
    const DfqTensor *at = dst->src[0], *bt = dst->src[1];
    const float *a = dfq_tensor_f32 (at), *b = dfq_tensor_f32 (bt);
    float *y = dfq_tensor_f32 (dst);
    gint64 n = dst->shape[0], inner = dfq_priv_inner_size (dst, 1);
    gint64 la = at->shape[1] * inner, lb = bt->shape[1] * inner;
#pragma omp parallel for schedule(static) if (n * (la + lb) > DFQ_PAR_MIN)
    for (gint64 i = 0; i < n; i++) {
        memcpy (y + i * (la + lb), a + i * la, (gsize) la * sizeof (float));
        memcpy (y + i * (la + lb) + la, b + i * lb, (gsize) lb * sizeof (float));
    }
}

void
dfq_op_concat_backward (DfqTensor *dst, DfqArena *scratch)
{
    const DfqTensor *at = dst->src[0], *bt = dst->src[1];
    const float *gy = dfq_tensor_f32 (dst->grad);
    gint64 n = dst->shape[0], inner = dfq_priv_inner_size (dst, 1);
    gint64 la = at->shape[1] * inner, lb = bt->shape[1] * inner;
    /* a and b may be the same tensor (concat (x, x)): then ga == gb, and the two
     * loops, one after the other, add both halves. */
    float *ga = dfq_priv_grad_of (dst->src[0], scratch);
    float *gb = dfq_priv_grad_of (dst->src[1], scratch);
    if (ga != NULL) {
#pragma omp parallel for schedule(static) if (n * la > DFQ_PAR_MIN)
        for (gint64 i = 0; i < n; i++)
            for (gint64 k = 0; k < la; k++)
                ga[i * la + k] += gy[i * (la + lb) + k];
    }
    if (gb != NULL) {
#pragma omp parallel for schedule(static) if (n * lb > DFQ_PAR_MIN)
        for (gint64 i = 0; i < n; i++)
            for (gint64 k = 0; k < lb; k++)
                gb[i * lb + k] += gy[i * (la + lb) + la + k];
    }
}
