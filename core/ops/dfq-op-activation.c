/* Activation ops (core/ops): relu, relu6, leaky relu, tanh, sigmoid and inverted
 * dropout. All are elementwise and keep the shape; forward and backward side by
 * side, backward accumulates into the source gradient. */
#include <math.h>

#include "dfq-op-private.h"

/* Below this many elements a loop is not worth waking the thread pool. */
#define DFQ_PAR_MIN 32768

static DfqTensor *
dfq_op_activation_new (DfqArena *arena, DfqOp op, DfqTensor *x)
{
    g_return_val_if_fail (arena != NULL, NULL);
    g_return_val_if_fail (x != NULL && x->dtype == DFQ_DTYPE_F32, NULL);
    DfqTensor *srcs[1] = { x };
    return dfq_priv_op_new_uninit (arena, op, DFQ_DTYPE_F32, x->n_dims, x->shape, 1, srcs);
}

/* ---- relu ---- */
DfqTensor *
dfq_relu (DfqArena *arena, DfqTensor *x)
{
    DfqTensor *t = dfq_op_activation_new (arena, DFQ_OP_RELU, x);
    return t ? dfq_priv_op_run (t) : NULL;
}

DFQ_PRIV_SIMD_CLONES static void
dfq_relu_forward_chunk (const float *restrict x, float *restrict y, gint64 n)
{
#pragma omp simd
    for (gint64 i = 0; i < n; i++)
        y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

/* gx += gy where x > 0: written as an unconditional add of a select, which
 * vectorises (a conditional store does not, without masked stores). With
 * @fresh the buffer is new: gx = the select (no zero fill beforehand). */
DFQ_PRIV_SIMD_CLONES static void
dfq_relu_backward_chunk (const float *restrict x, const float *restrict gy, float *restrict gx, gint64 n,
                         gboolean fresh)
{
    if (fresh)
#pragma omp simd
        for (gint64 i = 0; i < n; i++) {
            const float g = gy[i]; /* read unconditionally: a select, not a masked load */
            gx[i] = x[i] > 0.0f ? g : 0.0f;
        }
    else
#pragma omp simd
        for (gint64 i = 0; i < n; i++) {
            const float g = gy[i]; /* read unconditionally: a select, not a masked load */
            gx[i] += x[i] > 0.0f ? g : 0.0f;
        }
}

void
dfq_op_relu_forward (DfqTensor *dst)
{
    const float *x = dfq_tensor_f32 (dst->src[0]);
    float *y = dfq_tensor_f32 (dst);
    gint64 n = dfq_tensor_numel (dst), nc = dfq_priv_n_chunks (n);
#pragma omp parallel for schedule(dynamic, 1) if (n > DFQ_PAR_MIN)
    for (gint64 c = 0; c < nc; c++) {
        gint64 lo = c * DFQ_PRIV_CHUNK;
        dfq_relu_forward_chunk (x + lo, y + lo, MIN (n - lo, DFQ_PRIV_CHUNK));
    }
}

void
dfq_op_relu_backward (DfqTensor *dst, DfqArena *scratch)
{
    gboolean fresh;
    float *gx = dfq_priv_grad_of_fresh (dst->src[0], scratch, &fresh);
    if (gx == NULL)
        return;
    const float *gy = dfq_tensor_f32 (dst->grad);
    const float *x = dfq_tensor_f32 (dst->src[0]);
    gint64 n = dfq_tensor_numel (dst), nc = dfq_priv_n_chunks (n);
#pragma omp parallel for schedule(dynamic, 1) if (n > DFQ_PAR_MIN)
    for (gint64 c = 0; c < nc; c++) {
        gint64 lo = c * DFQ_PRIV_CHUNK;
        dfq_relu_backward_chunk (x + lo, gy + lo, gx + lo, MIN (n - lo, DFQ_PRIV_CHUNK), fresh);
    }
}

/* ---- relu6: min(max(x, 0), 6) (MobileNet) ---- */
DfqTensor *
dfq_relu6 (DfqArena *arena, DfqTensor *x)
{
    DfqTensor *t = dfq_op_activation_new (arena, DFQ_OP_RELU6, x);
    return t ? dfq_priv_op_run (t) : NULL;
}

DFQ_PRIV_SIMD_CLONES static void
dfq_relu6_forward_chunk (const float *restrict x, float *restrict y, gint64 n)
{
#pragma omp simd
    for (gint64 i = 0; i < n; i++)
        y[i] = x[i] > 0.0f ? (x[i] < 6.0f ? x[i] : 6.0f) : 0.0f;
}

/* gx (+)= gy strictly inside (0, 6) (PyTorch's hardtanh rule), as a select. */
DFQ_PRIV_SIMD_CLONES static void
dfq_relu6_backward_chunk (const float *restrict x, const float *restrict gy, float *restrict gx, gint64 n,
                          gboolean fresh)
{
    if (fresh)
#pragma omp simd
        for (gint64 i = 0; i < n; i++) {
            const float g = gy[i]; /* read unconditionally: a select, not a masked load */
            gx[i] = x[i] > 0.0f && x[i] < 6.0f ? g : 0.0f;
        }
    else
#pragma omp simd
        for (gint64 i = 0; i < n; i++) {
            const float g = gy[i]; /* read unconditionally: a select, not a masked load */
            gx[i] += x[i] > 0.0f && x[i] < 6.0f ? g : 0.0f;
        }
}

/* Chunks of DFQ_PRIV_CHUNK elements, a static schedule: one loop iteration per
 * element with a dynamic schedule (as before issue 15) cost an atomic per
 * element, and two threads fighting over that counter ran 2-3x slower than one. */
void
dfq_op_relu6_forward (DfqTensor *dst)
{
    const float *x = dfq_tensor_f32 (dst->src[0]);
    float *y = dfq_tensor_f32 (dst);
    gint64 n = dfq_tensor_numel (dst), nc = dfq_priv_n_chunks (n);
#pragma omp parallel for schedule(static) if (n > DFQ_PAR_MIN)
    for (gint64 c = 0; c < nc; c++) {
        gint64 lo = c * DFQ_PRIV_CHUNK;
        dfq_relu6_forward_chunk (x + lo, y + lo, MIN (n - lo, DFQ_PRIV_CHUNK));
    }
}

void
dfq_op_relu6_backward (DfqTensor *dst, DfqArena *scratch)
{
    gboolean fresh;
    float *gx = dfq_priv_grad_of_fresh (dst->src[0], scratch, &fresh);
    if (gx == NULL)
        return;
    const float *gy = dfq_tensor_f32 (dst->grad);
    const float *x = dfq_tensor_f32 (dst->src[0]);
    gint64 n = dfq_tensor_numel (dst), nc = dfq_priv_n_chunks (n);
#pragma omp parallel for schedule(static) if (n > DFQ_PAR_MIN)
    for (gint64 c = 0; c < nc; c++) {
        gint64 lo = c * DFQ_PRIV_CHUNK;
        dfq_relu6_backward_chunk (x + lo, gy + lo, gx + lo, MIN (n - lo, DFQ_PRIV_CHUNK), fresh);
    }
}

/* ---- leaky relu: x > 0 ? x : slope * x; slope in op_fparams[0] ---- */
DfqTensor *
dfq_leaky_relu (DfqArena *arena, DfqTensor *x, float slope)
{
    DfqTensor *t = dfq_op_activation_new (arena, DFQ_OP_LEAKY_RELU, x);
    if (t == NULL)
        return NULL;
    t->op_fparams[0] = slope;
    return dfq_priv_op_run (t);
}

DFQ_PRIV_SIMD_CLONES static void
dfq_leaky_relu_forward_chunk (const float *restrict x, float *restrict y, float slope, gint64 n)
{
#pragma omp simd
    for (gint64 i = 0; i < n; i++)
        y[i] = x[i] > 0.0f ? x[i] : slope * x[i];
}

DFQ_PRIV_SIMD_CLONES static void
dfq_leaky_relu_backward_chunk (const float *restrict x, const float *restrict gy, float *restrict gx,
                               float slope, gint64 n, gboolean fresh)
{
    if (fresh)
#pragma omp simd
        for (gint64 i = 0; i < n; i++)
            gx[i] = x[i] > 0.0f ? gy[i] : slope * gy[i];
    else
#pragma omp simd
        for (gint64 i = 0; i < n; i++)
            gx[i] += x[i] > 0.0f ? gy[i] : slope * gy[i];
}

void
dfq_op_leaky_relu_forward (DfqTensor *dst)
{
    const float *x = dfq_tensor_f32 (dst->src[0]);
    float *y = dfq_tensor_f32 (dst);
    float slope = dst->op_fparams[0];
    gint64 n = dfq_tensor_numel (dst), nc = dfq_priv_n_chunks (n);
#pragma omp parallel for schedule(static) if (n > DFQ_PAR_MIN)
    for (gint64 c = 0; c < nc; c++) {
        gint64 lo = c * DFQ_PRIV_CHUNK;
        dfq_leaky_relu_forward_chunk (x + lo, y + lo, slope, MIN (n - lo, DFQ_PRIV_CHUNK));
    }
}

void
dfq_op_leaky_relu_backward (DfqTensor *dst, DfqArena *scratch)
{
    gboolean fresh;
    float *gx = dfq_priv_grad_of_fresh (dst->src[0], scratch, &fresh);
    if (gx == NULL)
        return;
    const float *gy = dfq_tensor_f32 (dst->grad);
    const float *x = dfq_tensor_f32 (dst->src[0]);
    float slope = dst->op_fparams[0];
    gint64 n = dfq_tensor_numel (dst), nc = dfq_priv_n_chunks (n);
#pragma omp parallel for schedule(static) if (n > DFQ_PAR_MIN)
    for (gint64 c = 0; c < nc; c++) {
        gint64 lo = c * DFQ_PRIV_CHUNK;
        dfq_leaky_relu_backward_chunk (x + lo, gy + lo, gx + lo, slope, MIN (n - lo, DFQ_PRIV_CHUNK), fresh);
    }
}

/* ---- tanh; backward reads the saved output: 1 - y^2 ---- */
DfqTensor *
dfq_tanh (DfqArena *arena, DfqTensor *x)
{
    DfqTensor *t = dfq_op_activation_new (arena, DFQ_OP_TANH, x);
    return t ? dfq_priv_op_run (t) : NULL;
}

void
dfq_op_tanh_forward (DfqTensor *dst)
{
    const float *restrict x = dfq_tensor_f32 (dst->src[0]);
    float *restrict y = dfq_tensor_f32 (dst);
    gint64 n = dfq_tensor_numel (dst);
#pragma omp parallel for schedule(static) if (n > DFQ_PAR_MIN)
    for (gint64 i = 0; i < n; i++)
        y[i] = tanhf (x[i]);
}

void
dfq_op_tanh_backward (DfqTensor *dst, DfqArena *scratch)
{
    float *restrict gx = dfq_priv_grad_of (dst->src[0], scratch);
    if (gx == NULL)
        return;
    const float *restrict gy = dfq_tensor_f32 (dst->grad);
    const float *restrict y = dfq_tensor_f32 (dst);
    gint64 n = dfq_tensor_numel (dst);
#pragma omp parallel for schedule(static) if (n > DFQ_PAR_MIN)
    for (gint64 i = 0; i < n; i++)
        gx[i] += gy[i] * (1.0f - y[i] * y[i]);
}

/* ---- sigmoid; backward reads the saved output: y (1 - y) ---- */
DfqTensor *
dfq_sigmoid (DfqArena *arena, DfqTensor *x)
{
    DfqTensor *t = dfq_op_activation_new (arena, DFQ_OP_SIGMOID, x);
    return t ? dfq_priv_op_run (t) : NULL;
}

void
dfq_op_sigmoid_forward (DfqTensor *dst)
{
    const float *restrict x = dfq_tensor_f32 (dst->src[0]);
    float *restrict y = dfq_tensor_f32 (dst);
    gint64 n = dfq_tensor_numel (dst);
    /* Two branches so that expf never overflows for large |x|. */
#pragma omp parallel for schedule(static) if (n > DFQ_PAR_MIN)
    for (gint64 i = 0; i < n; i++) {
        if (x[i] >= 0.0f) {
            y[i] = 1.0f / (1.0f + expf (-x[i]));
        } else {
            float e = expf (x[i]);
            y[i] = e / (1.0f + e);
        }
    }
}

void
dfq_op_sigmoid_backward (DfqTensor *dst, DfqArena *scratch)
{
    float *restrict gx = dfq_priv_grad_of (dst->src[0], scratch);
    if (gx == NULL)
        return;
    const float *restrict gy = dfq_tensor_f32 (dst->grad);
    const float *restrict y = dfq_tensor_f32 (dst);
    gint64 n = dfq_tensor_numel (dst);
#pragma omp parallel for schedule(static) if (n > DFQ_PAR_MIN)
    for (gint64 i = 0; i < n; i++)
        gx[i] += gy[i] * y[i] * (1.0f - y[i]);
}

/* ---- dropout (inverted): element i is kept iff u(seed, stream, i) >= p and
 * kept values are scaled by 1/(1-p), so evaluation needs no rescaling. The mask
 * is a pure function of (seed, stream, i): backward recomputes it instead of
 * saving it, and any thread count gives the same mask. op_params hold seed and
 * stream as 32-bit halves (low first); op_fparams[0] holds p. ---- */
DfqTensor *
dfq_dropout (DfqArena *arena, DfqTensor *x, float p, guint64 seed, guint64 stream)
{
    g_return_val_if_fail (p >= 0.0f && p < 1.0f, NULL);
    DfqTensor *t = dfq_op_activation_new (arena, DFQ_OP_DROPOUT, x);
    if (t == NULL)
        return NULL;
    t->op_params[0] = (gint32) (guint32) seed;
    t->op_params[1] = (gint32) (guint32) (seed >> 32);
    t->op_params[2] = (gint32) (guint32) stream;
    t->op_params[3] = (gint32) (guint32) (stream >> 32);
    t->op_fparams[0] = p;
    return dfq_priv_op_run (t);
}

static void
dfq_op_dropout_key (const DfqTensor *dst, guint64 *seed, guint64 *stream)
{
    *seed = (guint64) (guint32) dst->op_params[0] | ((guint64) (guint32) dst->op_params[1] << 32);
    *stream = (guint64) (guint32) dst->op_params[2] | ((guint64) (guint32) dst->op_params[3] << 32);
}

void
dfq_op_dropout_forward (DfqTensor *dst)
{
    const float *restrict x = dfq_tensor_f32 (dst->src[0]);
    float *restrict y = dfq_tensor_f32 (dst);
    float p = dst->op_fparams[0];
    gint64 n = dfq_tensor_numel (dst);
    if (p == 0.0f) {
        /* Nothing is dropped: identity, without drawing random numbers. */
#pragma omp parallel for schedule(static) if (n > DFQ_PAR_MIN)
        for (gint64 i = 0; i < n; i++)
            y[i] = x[i];
        return;
    }
    guint64 seed, stream;
    dfq_op_dropout_key (dst, &seed, &stream);
    float scale = 1.0f / (1.0f - p);
    /* Philox per element is expensive enough to thread earlier. */
#pragma omp parallel for schedule(static) if (n > DFQ_PAR_MIN / 8)
    for (gint64 i = 0; i < n; i++)
        y[i] = dfq_rand_uniform_at (seed, stream, (guint64) i) >= p ? x[i] * scale : 0.0f;
}

void
dfq_op_dropout_backward (DfqTensor *dst, DfqArena *scratch)
{
    float *restrict gx = dfq_priv_grad_of (dst->src[0], scratch);
    if (gx == NULL)
        return;
    const float *restrict gy = dfq_tensor_f32 (dst->grad);
    float p = dst->op_fparams[0];
    gint64 n = dfq_tensor_numel (dst);
    if (p == 0.0f) {
#pragma omp parallel for schedule(static) if (n > DFQ_PAR_MIN)
        for (gint64 i = 0; i < n; i++)
            gx[i] += gy[i];
        return;
    }
    guint64 seed, stream;
    dfq_op_dropout_key (dst, &seed, &stream);
    float scale = 1.0f / (1.0f - p);
#pragma omp parallel for schedule(static) if (n > DFQ_PAR_MIN / 8)
    for (gint64 i = 0; i < n; i++)
        if (dfq_rand_uniform_at (seed, stream, (guint64) i) >= p)
            gx[i] += gy[i] * scale;
}
