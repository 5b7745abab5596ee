/* Tensors (core/tensor): creation in arenas, naming, parameters and small
 * whole-tensor helpers. Ops live in core/ops/. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <dfq/dfq-tensor.h>

#include "dfq-tensor-private.h"

static guint64 dfq_tensor_next_seq = 1;

guint64
dfq_priv_tensor_next_seq (void)
{
    return __atomic_fetch_add (&dfq_tensor_next_seq, 1, __ATOMIC_RELAXED);
}

static gsize
dfq_tensor_dtype_size (DfqDType dtype)
{
    switch (dtype) {
    case DFQ_DTYPE_F32:
        return sizeof (float);
    case DFQ_DTYPE_I32:
        return sizeof (gint32);
    default:
        g_assert_not_reached ();
    }
    return 0;
}

DfqTensor *
dfq_priv_tensor_new_header (DfqArena *arena, DfqDType dtype, int n_dims, const gint64 *shape)
{
    g_return_val_if_fail (arena != NULL, NULL);
    g_return_val_if_fail (n_dims >= 1 && n_dims <= DFQ_MAX_DIMS, NULL);
    DfqTensor *t = dfq_arena_alloc (arena, sizeof (DfqTensor));
    t->dtype = dtype;
    t->n_dims = n_dims;
    t->arena = arena;
    t->seq = dfq_priv_tensor_next_seq ();
    for (int d = 0; d < n_dims; d++) {
        g_return_val_if_fail (shape[d] >= 0, NULL);
        t->shape[d] = shape[d];
    }
    gint64 stride = 1;
    for (int d = n_dims - 1; d >= 0; d--) {
        t->stride[d] = stride;
        stride *= shape[d];
    }
    return t;
}

DfqTensor *
dfq_tensor_new (DfqArena *arena, DfqDType dtype, int n_dims, const gint64 *shape)
{
    DfqTensor *t = dfq_priv_tensor_new_header (arena, dtype, n_dims, shape);
    if (t == NULL)
        return NULL;
    t->data = dfq_arena_alloc (arena, (gsize) dfq_tensor_numel (t) * dfq_tensor_dtype_size (dtype));
    return t;
}

DfqTensor *
dfq_priv_tensor_new_uninit (DfqArena *arena, DfqDType dtype, int n_dims, const gint64 *shape)
{
    DfqTensor *t = dfq_priv_tensor_new_header (arena, dtype, n_dims, shape);
    if (t == NULL)
        return NULL;
    t->data = dfq_arena_alloc_uninit (arena, (gsize) dfq_tensor_numel (t) * dfq_tensor_dtype_size (dtype));
    return t;
}

DfqTensor *
dfq_tensor_new_1d (DfqArena *arena, DfqDType dtype, gint64 n0)
{
    gint64 shape[1] = { n0 };
    return dfq_tensor_new (arena, dtype, 1, shape);
}

DfqTensor *
dfq_tensor_new_2d (DfqArena *arena, DfqDType dtype, gint64 n0, gint64 n1)
{
    gint64 shape[2] = { n0, n1 };
    return dfq_tensor_new (arena, dtype, 2, shape);
}

DfqTensor *
dfq_tensor_new_4d (DfqArena *arena, DfqDType dtype, gint64 n0, gint64 n1, gint64 n2, gint64 n3)
{
    gint64 shape[4] = { n0, n1, n2, n3 };
    return dfq_tensor_new (arena, dtype, 4, shape);
}

DfqTensor *
dfq_tensor_new_scalar (DfqArena *arena, float value)
{
    DfqTensor *t = dfq_tensor_new_1d (arena, DFQ_DTYPE_F32, 1);
    dfq_tensor_f32 (t)[0] = value;
    return t;
}

DfqTensor *
dfq_tensor_new_like (DfqArena *arena, const DfqTensor *like)
{
    return dfq_tensor_new (arena, like->dtype, like->n_dims, like->shape);
}

DfqTensor *
dfq_tensor_dup (DfqArena *arena, const DfqTensor *src)
{
    DfqTensor *t = dfq_tensor_new_like (arena, src);
    memcpy (t->data, src->data, (gsize) dfq_tensor_numel (src) * dfq_tensor_dtype_size (src->dtype));
    g_strlcpy (t->name, src->name, sizeof t->name);
    return t;
}

gint64
dfq_tensor_numel (const DfqTensor *t)
{
    gint64 n = 1;
    for (int d = 0; d < t->n_dims; d++)
        n *= t->shape[d];
    return n;
}

gboolean
dfq_tensor_same_shape (const DfqTensor *a, const DfqTensor *b)
{
    if (a->n_dims != b->n_dims)
        return FALSE;
    for (int d = 0; d < a->n_dims; d++)
        if (a->shape[d] != b->shape[d])
            return FALSE;
    return TRUE;
}

gboolean
dfq_tensor_is_contiguous (const DfqTensor *t)
{
    gint64 stride = 1;
    for (int d = t->n_dims - 1; d >= 0; d--) {
        if (t->shape[d] != 1 && t->stride[d] != stride)
            return FALSE;
        stride *= t->shape[d];
    }
    return TRUE;
}

const char *
dfq_tensor_shape_string (const DfqTensor *t, char *buf, gsize buf_size)
{
    gsize off = 0;
    off += g_snprintf (buf + off, buf_size - off, "[");
    for (int d = 0; d < t->n_dims && off < buf_size; d++)
        off += g_snprintf (buf + off, buf_size - off, "%s%" G_GINT64_FORMAT, d ? ", " : "", t->shape[d]);
    if (off < buf_size)
        g_snprintf (buf + off, buf_size - off, "]");
    return buf;
}

void
dfq_tensor_set_name (DfqTensor *t, const char *format, ...)
{
    va_list args;
    va_start (args, format);
    g_vsnprintf (t->name, sizeof t->name, format, args);
    va_end (args);
}

void
dfq_tensor_fill (DfqTensor *t, float value)
{
    g_return_if_fail (t->dtype == DFQ_DTYPE_F32);
    float *d = dfq_tensor_f32 (t);
    gint64 n = dfq_tensor_numel (t);
    for (gint64 i = 0; i < n; i++)
        d[i] = value;
}

void
dfq_tensor_copy_data (DfqTensor *dst, const DfqTensor *src)
{
    g_return_if_fail (dfq_tensor_numel (dst) == dfq_tensor_numel (src));
    g_return_if_fail (dst->dtype == src->dtype);
    memmove (dst->data, src->data, (gsize) dfq_tensor_numel (src) * dfq_tensor_dtype_size (src->dtype));
}

void
dfq_tensor_set_param (DfqTensor *t)
{
    g_return_if_fail (t->dtype == DFQ_DTYPE_F32);
    g_return_if_fail (t->op == DFQ_OP_NONE);
    t->flags |= DFQ_TENSOR_FLAG_PARAM | DFQ_TENSOR_FLAG_REQUIRES_GRAD;
    if (t->grad == NULL)
        t->grad = dfq_tensor_new_like (t->arena, t);
}

gboolean
dfq_tensor_requires_grad (const DfqTensor *t)
{
    return t != NULL && (t->flags & DFQ_TENSOR_FLAG_REQUIRES_GRAD) != 0;
}

void
dfq_tensor_zero_grad (DfqTensor *t)
{
    if (t->grad != NULL)
        memset (t->grad->data, 0, (gsize) dfq_tensor_numel (t) * sizeof (float));
}

float
dfq_tensor_max_abs_diff (const DfqTensor *a, const DfqTensor *b)
{
    g_return_val_if_fail (dfq_tensor_numel (a) == dfq_tensor_numel (b), INFINITY);
    const float *x = dfq_tensor_f32 (a), *y = dfq_tensor_f32 (b);
    float m = 0.0f;
    for (gint64 i = 0; i < dfq_tensor_numel (a); i++) {
        float d = fabsf (x[i] - y[i]);
        if (!(d <= m)) /* also catches NaN */
            m = isnan (d) ? INFINITY : d;
    }
    return m;
}

gboolean
dfq_tensor_all_finite (const DfqTensor *t)
{
    if (t->dtype != DFQ_DTYPE_F32)
        return TRUE;
    const float *x = dfq_tensor_f32 (t);
    for (gint64 i = 0; i < dfq_tensor_numel (t); i++)
        if (!isfinite (x[i]))
            return FALSE;
    return TRUE;
}
