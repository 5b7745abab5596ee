/* Fake-quantization ops (core/ops): the GDFQ min/max quantizer (METHODS.md 1.3),
 * LSQ with a learnable step, ACD learnable clipping (12.2), AdaRound/GENIE-M soft
 * bits (9, 11) and the AdaRound rounding regulariser. Forward and backward side
 * by side; backward accumulates.
 *
 * Rounding is nearbyintf() in the default rounding mode, i.e. round half to
 * even, which is what torch.round does (and what GDFQ, LSQ and GENIE call).
 * C's roundf() rounds halves away from zero and would disagree on ties.
 *
 * Per-channel parameters: a tensor x is cut into blocks of contiguous elements
 * that share one parameter index. Per channel along @axis a block is one
 * (outer, channel) slab of `inner` values; per tensor the blocks are fixed-size
 * chunks. Forward and the elementwise part of backward run blocks in parallel;
 * parameter gradients are summed per block in double and then added in block
 * order, so they are identical for every thread count (STYLE.md B.13). */
#include <math.h>

#include "dfq-op-private.h"

/* Below this many elements a loop is not worth waking the thread pool. */
#define DFQ_PAR_MIN 32768
/* Block size of per-tensor layouts (independent of the thread count). */
#define DFQ_QUANT_CHUNK 8192
/* GDFQ: S = (2^k - 1) / max(xmax - xmin, 1e-8); the same guard keeps the ACD
 * step finite when lo == hi. */
#define DFQ_QUANT_MIN_RANGE 1e-8f
/* Rectified sigmoid of AdaRound: h = clamp(sigmoid(v) * (zeta - gamma) + gamma, 0, 1). */
#define DFQ_SOFTBIT_ZETA 1.1f
#define DFQ_SOFTBIT_GAMMA (-0.1f)

typedef struct {
    gint64 n;          /* elements of x */
    gint64 n_blocks;
    gint64 block_len;  /* the last block of a per-tensor layout may be shorter */
    gint64 n_channels; /* block b belongs to channel b % n_channels */
} DfqQuantLayout;

static void
dfq_quant_layout_init (DfqQuantLayout *l, const DfqTensor *x, int axis)
{
    l->n = dfq_tensor_numel (x);
    if (axis < 0) {
        l->n_channels = 1;
        l->block_len = DFQ_QUANT_CHUNK;
        l->n_blocks = (l->n + DFQ_QUANT_CHUNK - 1) / DFQ_QUANT_CHUNK;
    } else {
        l->n_channels = x->shape[axis];
        l->block_len = dfq_priv_inner_size (x, axis);
        l->n_blocks = l->block_len > 0 ? l->n / l->block_len : 0;
    }
}

static inline gint64
dfq_quant_block_end (const DfqQuantLayout *l, gint64 b)
{
    return MIN (l->n, (b + 1) * l->block_len);
}

/* The value of a 1-or-C parameter for block @b. */
static inline gint64
dfq_quant_param_index (const DfqQuantLayout *l, const DfqTensor *p, gint64 b)
{
    return dfq_tensor_numel (p) == 1 ? 0 : b % l->n_channels;
}

/* Adds the per-block partial sums @part (stride @stride, offset @off) into the
 * parameter gradient @gp, in block order, scaled by @scale. */
static void
dfq_quant_reduce_param_grad (const DfqQuantLayout *l, const DfqTensor *p, float *gp,
                             const double *part, int stride, int off, double scale)
{
    gint64 np = dfq_tensor_numel (p);
    if (np == 1) {
        double acc = 0.0;
        for (gint64 b = 0; b < l->n_blocks; b++)
            acc += part[b * stride + off];
        gp[0] += (float) (acc * scale);
        return;
    }
    /* Per channel: blocks of channel c are c, c + C, c + 2C, ... in order. */
    for (gint64 c = 0; c < np; c++) {
        double acc = 0.0;
        for (gint64 b = c; b < l->n_blocks; b += l->n_channels)
            acc += part[b * stride + off];
        gp[c] += (float) (acc * scale);
    }
}

/* Shared argument checks of the per-channel parameter tensors. */
static gboolean
dfq_quant_param_ok (const DfqTensor *x, const DfqTensor *p, int axis)
{
    if (p == NULL || p->dtype != DFQ_DTYPE_F32)
        return FALSE;
    gint64 np = dfq_tensor_numel (p);
    if (axis < 0)
        return np == 1;
    return np == 1 || np == x->shape[axis];
}

static gboolean
dfq_quant_x_ok (const DfqTensor *x, int axis)
{
    return x != NULL && x->dtype == DFQ_DTYPE_F32 && dfq_tensor_is_contiguous (x) &&
           axis >= -1 && axis < x->n_dims;
}

/* ---- GDFQ asymmetric min/max quantizer (METHODS.md 1.3) ----
 * op_params: [0] axis, [1] bits, [2] DfqSteMode. Sources: x, lo, hi. */
DfqTensor *
dfq_fake_quant (DfqArena *arena, DfqTensor *x, DfqTensor *lo, DfqTensor *hi,
                int axis, int bits, DfqSteMode ste)
{
    g_return_val_if_fail (arena != NULL, NULL);
    g_return_val_if_fail (dfq_quant_x_ok (x, axis), NULL);
    g_return_val_if_fail (dfq_quant_param_ok (x, lo, axis), NULL);
    g_return_val_if_fail (dfq_quant_param_ok (x, hi, axis), NULL);
    g_return_val_if_fail (bits >= 1 && bits <= 16, NULL);
    g_return_val_if_fail (ste == DFQ_STE_PLAIN || ste == DFQ_STE_CLIPPED, NULL);
    DfqTensor *srcs[3] = { x, lo, hi };
    /* Not zero-filled: the blocks of the forward cover every element. */
    DfqTensor *t = dfq_priv_op_new_uninit (arena, DFQ_OP_FAKE_QUANT, DFQ_DTYPE_F32, x->n_dims, x->shape, 3, srcs);
    t->op_params[0] = axis;
    t->op_params[1] = bits;
    t->op_params[2] = ste;
    return dfq_priv_op_run (t);
}

/* fminf (fmaxf (v, lo), hi) as glibc computes them on x86-64 (maxss / minss
 * behind a NaN check): the first argument when it compares greater (less),
 * else the second, so a NaN v gives @lo and -0 against +0 gives the second
 * (checked on this machine); exact as long as @lo and @hi are not NaN.
 * Written as selects so that the loops vectorise (the libm calls do not). */
static inline float
dfq_quant_clamp (float v, float lo, float hi)
{
    v = v > lo ? v : lo;
    return v < hi ? v : hi;
}

/* g + gy where the straight-through estimator passes the gradient, else g
 * unchanged: adding -0, which is the identity for every g, so that the
 * conditional add becomes a select GCC vectorises. */
static inline float
dfq_quant_ste_add (float g, float gy, gboolean pass)
{
    return g + (pass ? gy : -0.0f);
}

/* The elementwise part of the forward over one block:
 * y = (clamp (nearbyintf (s x - zp), -half, half - 1) + zp) / s.
 *
 * Bit for bit what the plain loop with libm calls computed, for every input:
 * - s x - zp is rounded twice (product, then difference):
 *   DFQ_PRIV_NO_FP_CONTRACT keeps GCC from fusing it into one FMA in the
 *   AVX2 clone (tests/core/test-quant.c fails if it does).
 * - nearbyintf in the AVX2 clone is inlined as roundps with the current
 *   rounding mode and no inexact flag (immediate 0xc), exactly nearbyintf.
 * - fmaxf (q, -half) is q > -half ? q : -half: both return -half for a NaN q
 *   and differ nowhere else (-half is never zero: half >= 1).
 * - fminf (q, half - 1) is q < half - 1 ? q : half - 1 (q is no longer NaN);
 *   for q = -0 and half - 1 = +0 (1 bit) the two may disagree on the sign of
 *   the zero, but q + zp is then the same (zp is never -0: an integer plus
 *   half >= 1, rounded to nearest), so y is too.
 * The loop vectorises (roundps, maxps, minps, divps), which the libm calls
 * prevented. */
DFQ_PRIV_SIMD_CLONES DFQ_PRIV_NO_FP_CONTRACT static void
dfq_fake_quant_block (const float *restrict x, float *restrict y, gint64 n, float s, float zp, float half)
{
#ifdef __clang__
#pragma clang fp contract(off)
#endif
    const float qlo = -half, qhi = half - 1.0f;
#pragma omp simd
    for (gint64 i = 0; i < n; i++) {
        const float q = dfq_quant_clamp (nearbyintf (s * x[i] - zp), qlo, qhi);
        y[i] = (q + zp) / s;
    }
}

void
dfq_op_fake_quant_forward (DfqTensor *dst)
{
    const DfqTensor *lot = dst->src[1], *hit = dst->src[2];
    const float *restrict x = dfq_tensor_f32 (dst->src[0]);
    const float *lo = dfq_tensor_f32 (lot), *hi = dfq_tensor_f32 (hit);
    float *restrict y = dfq_tensor_f32 (dst);
    int bits = dst->op_params[1];
    DfqQuantLayout l;
    dfq_quant_layout_init (&l, dst->src[0], dst->op_params[0]);
    const float levels = (float) ((1 << bits) - 1);
    const float half = (float) (1 << (bits - 1));

#pragma omp parallel for schedule(static) if (l.n > DFQ_PAR_MIN)
    for (gint64 b = 0; b < l.n_blocks; b++) {
        float xmin = lo[dfq_quant_param_index (&l, lot, b)];
        float xmax = hi[dfq_quant_param_index (&l, hit, b)];
        /* S is levels per unit (the inverse step); zp shifts the signed grid
         * [-2^(k-1), 2^(k-1)-1] onto [xmin, xmax]. */
        float s = levels / fmaxf (xmax - xmin, DFQ_QUANT_MIN_RANGE);
        float zp = nearbyintf (s * xmin) + half;
        gint64 i0 = b * l.block_len;
        dfq_fake_quant_block (x + i0, y + i0, dfq_quant_block_end (&l, b) - i0, s, zp, half);
    }
}

/* gx += gy where lo <= x <= hi (all of it when @x is NULL: the plain STE).
 * With @fresh the buffer is new and not zero-filled: gx = 0 + gy, which is
 * what adding to zeros gave (0 + -0 is +0, so not a plain copy). Selects
 * instead of a conditional add, so that the loop vectorises; a NaN x is in no
 * range, as before. */
DFQ_PRIV_SIMD_CLONES static void
dfq_fake_quant_backward_block (const float *restrict x, const float *restrict gy, float *restrict gx, gint64 n,
                               float xmin, float xmax, gboolean fresh)
{
    if (x == NULL && fresh) {
#pragma omp simd
        for (gint64 i = 0; i < n; i++)
            gx[i] = 0.0f + gy[i];
    } else if (x == NULL) {
#pragma omp simd
        for (gint64 i = 0; i < n; i++)
            gx[i] += gy[i];
    } else if (fresh) {
#pragma omp simd
        for (gint64 i = 0; i < n; i++)
            gx[i] = x[i] >= xmin && x[i] <= xmax ? 0.0f + gy[i] : 0.0f;
    } else {
#pragma omp simd
        for (gint64 i = 0; i < n; i++)
            gx[i] = x[i] >= xmin && x[i] <= xmax ? gx[i] + gy[i] : gx[i];
    }
}

void
dfq_op_fake_quant_backward (DfqTensor *dst, DfqArena *scratch)
{
    /* lo/hi are statistics of the input (min/max or their EMA): no gradient. */
    gboolean fresh;
    float *restrict gx = dfq_priv_src_grad_of_fresh (dst, 0, scratch, &fresh);
    if (gx == NULL)
        return;
    const float *restrict gy = dfq_tensor_f32 (dst->grad);
    gint64 n = dfq_tensor_numel (dst);
    if (dst->op_params[2] == DFQ_STE_PLAIN) {
        gint64 nc = dfq_priv_n_chunks (n);
#pragma omp parallel for schedule(static) if (n > DFQ_PAR_MIN)
        for (gint64 c = 0; c < nc; c++) {
            gint64 lo = c * DFQ_PRIV_CHUNK;
            dfq_fake_quant_backward_block (NULL, gy + lo, gx + lo, MIN (n - lo, DFQ_PRIV_CHUNK), 0.0f, 0.0f, fresh);
        }
        return;
    }
    const DfqTensor *lot = dst->src[1], *hit = dst->src[2];
    const float *restrict x = dfq_tensor_f32 (dst->src[0]);
    const float *lo = dfq_tensor_f32 (lot), *hi = dfq_tensor_f32 (hit);
    DfqQuantLayout l;
    dfq_quant_layout_init (&l, dst->src[0], dst->op_params[0]);
#pragma omp parallel for schedule(static) if (l.n > DFQ_PAR_MIN)
    for (gint64 b = 0; b < l.n_blocks; b++) {
        float xmin = lo[dfq_quant_param_index (&l, lot, b)];
        float xmax = hi[dfq_quant_param_index (&l, hit, b)];
        gint64 i0 = b * l.block_len;
        dfq_fake_quant_backward_block (x + i0, gy + i0, gx + i0, dfq_quant_block_end (&l, b) - i0, xmin, xmax,
                                       fresh);
    }
}

/* ---- LSQ: x^ = s * round(clamp(x/s, qn, qp)) (Esser et al. 2020) ----
 * op_params: [0] axis, [1] qn, [2] qp; op_fparams: [0] grad_scale. Sources: x, s. */
DfqTensor *
dfq_fake_quant_lsq (DfqArena *arena, DfqTensor *x, DfqTensor *scale,
                    int axis, int qn, int qp, float grad_scale)
{
    g_return_val_if_fail (arena != NULL, NULL);
    g_return_val_if_fail (dfq_quant_x_ok (x, axis), NULL);
    g_return_val_if_fail (dfq_quant_param_ok (x, scale, axis), NULL);
    g_return_val_if_fail (qn < qp, NULL);
    DfqTensor *srcs[2] = { x, scale };
    DfqTensor *t = dfq_priv_op_new_uninit (arena, DFQ_OP_FAKE_QUANT_LSQ, DFQ_DTYPE_F32, x->n_dims, x->shape, 2, srcs);
    t->op_params[0] = axis;
    t->op_params[1] = qn;
    t->op_params[2] = qp;
    t->op_fparams[0] = grad_scale;
    return dfq_priv_op_run (t);
}

/* y = s round(clamp(x / s, qn, qp)) over one block. */
DFQ_PRIV_SIMD_CLONES static void
dfq_lsq_forward_block (const float *restrict x, float *restrict y, gint64 n, float s, float qn, float qp)
{
#pragma omp simd
    for (gint64 i = 0; i < n; i++)
        y[i] = s * nearbyintf (dfq_quant_clamp (x[i] / s, qn, qp));
}

void
dfq_op_fake_quant_lsq_forward (DfqTensor *dst)
{
    const DfqTensor *st = dst->src[1];
    const float *restrict x = dfq_tensor_f32 (dst->src[0]);
    const float *sp = dfq_tensor_f32 (st);
    float *restrict y = dfq_tensor_f32 (dst);
    const float qn = (float) dst->op_params[1], qp = (float) dst->op_params[2];
    DfqQuantLayout l;
    dfq_quant_layout_init (&l, dst->src[0], dst->op_params[0]);

#pragma omp parallel for schedule(static) if (l.n > DFQ_PAR_MIN)
    for (gint64 b = 0; b < l.n_blocks; b++) {
        const gint64 i0 = b * l.block_len;
        dfq_lsq_forward_block (x + i0, y + i0, dfq_quant_block_end (&l, b) - i0, sp[dfq_quant_param_index (&l, st, b)],
                               qn, qp);
    }
}

#define DFQ_LSQ_SUB 256 /* elements of a backward sub-block (a stack buffer) */

/* The backward of one sub-block of at most DFQ_LSQ_SUB elements: gx += gy
 * inside the range (the STE), and the factor of gy in d/ds, qn below, qp
 * above, round(v) - v inside (LSQ eq. 3), into @f. Written so that GCC
 * vectorises it: round(v) - v for every element in a loop of its own (used
 * on one branch only, it was sunk into that branch, which GCC will not
 * if-convert), then only selects between values already computed
 * (dfq_quant_ste_add for gx). */
DFQ_PRIV_SIMD_CLONES static void
dfq_lsq_backward_sub (const float *restrict x, const float *restrict gy, float *restrict gx, float *restrict f,
                      gint64 n, float s, float qn, float qp)
{
#pragma omp simd
    for (gint64 i = 0; i < n; i++) {
        const float v = x[i] / s;
        f[i] = nearbyintf (v) - v;
    }
#pragma omp simd
    for (gint64 i = 0; i < n; i++) {
        const float v = x[i] / s;
        const gboolean below = v < qn, above = v > qp;
        const float t = above ? qp : f[i];
        f[i] = below ? qn : t;
        if (gx != NULL)
            gx[i] = dfq_quant_ste_add (gx[i], gy[i], !(below | above));
    }
}

/* One block: the sub-blocks' elementwise part vectorised, the scale's sum
 * in double element by element, in order (the bits do not depend on the
 * vector width). */
static double
dfq_lsq_backward_block (const float *x, const float *gy, float *gx, gint64 n, float s, float qn, float qp)
{
    float f[DFQ_LSQ_SUB];
    double acc = 0.0;
    for (gint64 k = 0; k < n; k += DFQ_LSQ_SUB) {
        const gint64 m = MIN (DFQ_LSQ_SUB, n - k);
        dfq_lsq_backward_sub (x + k, gy + k, gx != NULL ? gx + k : NULL, f, m, s, qn, qp);
        for (gint64 i = 0; i < m; i++)
            acc += (double) gy[k + i] * (double) f[i];
    }
    return acc;
}

void
dfq_op_fake_quant_lsq_backward (DfqTensor *dst, DfqArena *scratch)
{
    const DfqTensor *st = dst->src[1];
    const float *restrict x = dfq_tensor_f32 (dst->src[0]);
    const float *sp = dfq_tensor_f32 (st);
    const float *restrict gy = dfq_tensor_f32 (dst->grad);
    float *restrict gx = dfq_priv_grad_of (dst->src[0], scratch);
    float *gs = dfq_priv_grad_of (dst->src[1], scratch);
    if (gx == NULL && gs == NULL)
        return;
    const float qn = (float) dst->op_params[1], qp = (float) dst->op_params[2];
    DfqQuantLayout l;
    dfq_quant_layout_init (&l, dst->src[0], dst->op_params[0]);
    double *part = gs ? dfq_arena_alloc_uninit (scratch, (gsize) MAX (l.n_blocks, 1) * sizeof (double)) : NULL;

#pragma omp parallel for schedule(static) if (l.n > DFQ_PAR_MIN)
    for (gint64 b = 0; b < l.n_blocks; b++) {
        const gint64 i0 = b * l.block_len;
        const double acc = dfq_lsq_backward_block (x + i0, gy + i0, gx != NULL ? gx + i0 : NULL,
                                                   dfq_quant_block_end (&l, b) - i0,
                                                   sp[dfq_quant_param_index (&l, st, b)], qn, qp);
        if (part != NULL)
            part[b] = acc;
    }
    if (gs != NULL)
        dfq_quant_reduce_param_grad (&l, st, gs, part, 1, 0, dst->op_fparams[0]);
}

/* ---- ACD learnable clipping (METHODS.md 12.2) ----
 * xc = clamp(x, l, u), s = (u - l)/(2^k - 1), q = round((xc - l)/s), x^ = q s + l.
 * op_params: [0] axis, [1] bits, [2] in_range_grad. Sources: x, lo, hi. */
DfqTensor *
dfq_fake_quant_clip (DfqArena *arena, DfqTensor *x, DfqTensor *lo, DfqTensor *hi,
                     int axis, int bits, gboolean in_range_grad)
{
    g_return_val_if_fail (arena != NULL, NULL);
    g_return_val_if_fail (dfq_quant_x_ok (x, axis), NULL);
    g_return_val_if_fail (dfq_quant_param_ok (x, lo, axis), NULL);
    g_return_val_if_fail (dfq_quant_param_ok (x, hi, axis), NULL);
    g_return_val_if_fail (bits >= 1 && bits <= 16, NULL);
    DfqTensor *srcs[3] = { x, lo, hi };
    DfqTensor *t = dfq_priv_op_new_uninit (arena, DFQ_OP_FAKE_QUANT_CLIP, DFQ_DTYPE_F32, x->n_dims, x->shape, 3, srcs);
    t->op_params[0] = axis;
    t->op_params[1] = bits;
    t->op_params[2] = in_range_grad ? 1 : 0;
    return dfq_priv_op_run (t);
}

/* The forward of one block: xc = clamp(x, l, u), y = round((xc - l) / s) s +
 * l, bit for bit what the plain loop with libm calls computed:
 * - the clamp is dfq_quant_clamp, exact unless l or u is a NaN (a diverged
 *   run: then the caller takes the libm loop);
 * - DFQ_PRIV_NO_FP_CONTRACT keeps the product and the sum rounded apart, as
 *   the baseline build computes them;
 * - nearbyintf is roundps with the current rounding mode in the AVX2 clone.
 * The loop vectorises, which the libm calls prevented. */
DFQ_PRIV_SIMD_CLONES DFQ_PRIV_NO_FP_CONTRACT static void
dfq_fake_quant_clip_block (const float *restrict x, float *restrict y, gint64 n, float cl, float cu, float s)
{
#ifdef __clang__
#pragma clang fp contract(off)
#endif
#pragma omp simd
    for (gint64 i = 0; i < n; i++) {
        const float xc = dfq_quant_clamp (x[i], cl, cu);
        y[i] = nearbyintf ((xc - cl) / s) * s + cl;
    }
}

void
dfq_op_fake_quant_clip_forward (DfqTensor *dst)
{
    const DfqTensor *lot = dst->src[1], *hit = dst->src[2];
    const float *restrict x = dfq_tensor_f32 (dst->src[0]);
    const float *lo = dfq_tensor_f32 (lot), *hi = dfq_tensor_f32 (hit);
    float *restrict y = dfq_tensor_f32 (dst);
    const float levels = (float) ((1 << dst->op_params[1]) - 1);
    DfqQuantLayout l;
    dfq_quant_layout_init (&l, dst->src[0], dst->op_params[0]);

#pragma omp parallel for schedule(static) if (l.n > DFQ_PAR_MIN)
    for (gint64 b = 0; b < l.n_blocks; b++) {
        float cl = lo[dfq_quant_param_index (&l, lot, b)];
        float cu = hi[dfq_quant_param_index (&l, hit, b)];
        float s = fmaxf (cu - cl, DFQ_QUANT_MIN_RANGE) / levels;
        const gint64 i0 = b * l.block_len, i1 = dfq_quant_block_end (&l, b);
        if (!isnan (cl) && !isnan (cu)) {
            dfq_fake_quant_clip_block (x + i0, y + i0, i1 - i0, cl, cu, s);
            continue;
        }
        for (gint64 i = i0; i < i1; i++) {
            float xc = fminf (fmaxf (x[i], cl), cu);
            y[i] = nearbyintf ((xc - cl) / s) * s + cl;
        }
    }
}

#define DFQ_CLIP_SUB 256 /* elements of a backward sub-block (stack buffers) */

/* The elementwise part of the clip backward over one sub-block: gx += gy
 * strictly inside (l, u) (dfq_quant_ste_add), and each element's
 * terms of the two parameter sums into @tl / @tu: gy below (resp. above) the
 * range, and inside, with @in_range, -gy du / gy du, du = q / (2^k - 1) -
 * (x - l) / (u - l) (0 otherwise: adding +0 to a sum that starts at +0
 * changes nothing). The same double operations as the plain loop. */
DFQ_PRIV_SIMD_CLONES DFQ_PRIV_NO_FP_CONTRACT static void
dfq_clip_backward_sub (const float *restrict x, const float *restrict gy, float *restrict gx, double *restrict tl,
                       double *restrict tu, gint64 n, float cl, float cu, float s, float range, float levels,
                       gboolean in_range)
{
#ifdef __clang__
#pragma clang fp contract(off)
#endif
    float q[DFQ_CLIP_SUB];
#pragma omp simd
    for (gint64 i = 0; i < n; i++)
        q[i] = nearbyintf ((x[i] - cl) / s);
#pragma omp simd
    for (gint64 i = 0; i < n; i++) {
        const gboolean below = x[i] <= cl, above = x[i] >= cu;
        const double g = gy[i];
        const double du = (double) q[i] / levels - ((double) x[i] - cl) / range;
        const double p = in_range ? g * du : 0.0;
        const double mid_l = -p, mid_u = p;
        const double tl_a = above ? 0.0 : mid_l, tu_a = above ? g : mid_u;
        tl[i] = below ? g : tl_a;
        tu[i] = below ? 0.0 : tu_a;
        if (gx != NULL)
            gx[i] = dfq_quant_ste_add (gx[i], gy[i], !(below | above));
    }
}

void
dfq_op_fake_quant_clip_backward (DfqTensor *dst, DfqArena *scratch)
{
    const DfqTensor *lot = dst->src[1], *hit = dst->src[2];
    const float *restrict x = dfq_tensor_f32 (dst->src[0]);
    const float *lo = dfq_tensor_f32 (lot), *hi = dfq_tensor_f32 (hit);
    const float *restrict gy = dfq_tensor_f32 (dst->grad);
    float *restrict gx = dfq_priv_grad_of (dst->src[0], scratch);
    float *gl = dfq_priv_grad_of (dst->src[1], scratch);
    float *gu = dfq_priv_grad_of (dst->src[2], scratch);
    if (gx == NULL && gl == NULL && gu == NULL)
        return;
    const float levels = (float) ((1 << dst->op_params[1]) - 1);
    const gboolean in_range = dst->op_params[2] != 0;
    const gboolean want_clip = gl != NULL || gu != NULL;
    DfqQuantLayout l;
    dfq_quant_layout_init (&l, dst->src[0], dst->op_params[0]);
    /* Two partial sums per block: [0] d/dl, [1] d/du. */
    double *part = want_clip ? dfq_arena_alloc_uninit (scratch, (gsize) MAX (l.n_blocks, 1) * 2 * sizeof (double)) : NULL;

#pragma omp parallel for schedule(static) if (l.n > DFQ_PAR_MIN)
    for (gint64 b = 0; b < l.n_blocks; b++) {
        float cl = lo[dfq_quant_param_index (&l, lot, b)];
        float cu = hi[dfq_quant_param_index (&l, hit, b)];
        float range = fmaxf (cu - cl, DFQ_QUANT_MIN_RANGE);
        float s = range / levels;
        double acc_l = 0.0, acc_u = 0.0, tl[DFQ_CLIP_SUB], tu[DFQ_CLIP_SUB];
        const gint64 i0 = b * l.block_len, i1 = dfq_quant_block_end (&l, b);
        for (gint64 k = i0; k < i1; k += DFQ_CLIP_SUB) {
            const gint64 m = MIN (DFQ_CLIP_SUB, i1 - k);
            dfq_clip_backward_sub (x + k, gy + k, gx != NULL ? gx + k : NULL, tl, tu, m, cl, cu, s, range, levels,
                                   in_range);
            for (gint64 i = 0; i < m; i++) { /* in element order, as the plain loop */
                acc_l += tl[i];
                acc_u += tu[i];
            }
        }
        if (part != NULL) {
            part[2 * b] = acc_l;
            part[2 * b + 1] = acc_u;
        }
    }
    if (gl != NULL)
        dfq_quant_reduce_param_grad (&l, lot, gl, part, 2, 0, 1.0);
    if (gu != NULL)
        dfq_quant_reduce_param_grad (&l, hit, gu, part, 2, 1, 1.0);
}

/* ---- soft bits (METHODS.md 9, 11) ----
 * W^ = s (clamp(B + h(V) + zp, 0, 2^k - 1) - zp).
 * op_params: [0] axis, [1] bits, [2] hard. Sources: B, V, s, zp (zp may be NULL). */
float
dfq_softbit_h (float v)
{
    float sig = 1.0f / (1.0f + expf (-v));
    return fminf (fmaxf (sig * (DFQ_SOFTBIT_ZETA - DFQ_SOFTBIT_GAMMA) + DFQ_SOFTBIT_GAMMA, 0.0f), 1.0f);
}

/* dh/dv; zero where the rectifying clamp is active (PyTorch clamp passes the
 * gradient at the bounds themselves, and so do we). */
static inline float
dfq_softbit_dh (float v)
{
    float sig = 1.0f / (1.0f + expf (-v));
    float raw = sig * (DFQ_SOFTBIT_ZETA - DFQ_SOFTBIT_GAMMA) + DFQ_SOFTBIT_GAMMA;
    if (raw < 0.0f || raw > 1.0f)
        return 0.0f;
    return (DFQ_SOFTBIT_ZETA - DFQ_SOFTBIT_GAMMA) * sig * (1.0f - sig);
}

DfqTensor *
dfq_softbit_quant (DfqArena *arena, DfqTensor *base, DfqTensor *v, DfqTensor *scale,
                   DfqTensor *zero_point, int axis, int bits, gboolean hard)
{
    g_return_val_if_fail (arena != NULL, NULL);
    g_return_val_if_fail (dfq_quant_x_ok (base, axis), NULL);
    g_return_val_if_fail (v != NULL && v->dtype == DFQ_DTYPE_F32 && dfq_tensor_same_shape (base, v), NULL);
    g_return_val_if_fail (dfq_tensor_is_contiguous (v), NULL);
    g_return_val_if_fail (dfq_quant_param_ok (base, scale, axis), NULL);
    g_return_val_if_fail (zero_point == NULL || dfq_quant_param_ok (base, zero_point, axis), NULL);
    g_return_val_if_fail (bits >= 1 && bits <= 16, NULL);
    DfqTensor *srcs[4] = { base, v, scale, zero_point };
    DfqTensor *t = dfq_priv_op_new_uninit (arena, DFQ_OP_SOFTBIT_QUANT, DFQ_DTYPE_F32, base->n_dims, base->shape, 4, srcs);
    t->op_params[0] = axis;
    t->op_params[1] = bits;
    t->op_params[2] = hard ? 1 : 0;
    return dfq_priv_op_run (t);
}

void
dfq_op_softbit_quant_forward (DfqTensor *dst)
{
    const DfqTensor *st = dst->src[2], *zt = dst->src[3];
    const float *restrict bq = dfq_tensor_f32 (dst->src[0]);
    const float *restrict v = dfq_tensor_f32 (dst->src[1]);
    const float *sp = dfq_tensor_f32 (st);
    const float *zp = zt ? dfq_tensor_f32 (zt) : NULL;
    float *restrict y = dfq_tensor_f32 (dst);
    const float qmax = (float) ((1 << dst->op_params[1]) - 1);
    const gboolean hard = dst->op_params[2] != 0;
    DfqQuantLayout l;
    dfq_quant_layout_init (&l, dst->src[0], dst->op_params[0]);

#pragma omp parallel for schedule(static) if (l.n > DFQ_PAR_MIN)
    for (gint64 b = 0; b < l.n_blocks; b++) {
        float s = sp[dfq_quant_param_index (&l, st, b)];
        float z = zp ? zp[dfq_quant_param_index (&l, zt, b)] : 0.0f;
        for (gint64 i = b * l.block_len; i < dfq_quant_block_end (&l, b); i++) {
            /* Hard rounding after optimisation: h = [V >= 0] (AdaRound). */
            float h = hard ? (v[i] >= 0.0f ? 1.0f : 0.0f) : dfq_softbit_h (v[i]);
            float q = fminf (fmaxf (bq[i] + h + z, 0.0f), qmax);
            y[i] = s * (q - z);
        }
    }
}

void
dfq_op_softbit_quant_backward (DfqTensor *dst, DfqArena *scratch)
{
    const DfqTensor *st = dst->src[2], *zt = dst->src[3];
    const float *restrict bq = dfq_tensor_f32 (dst->src[0]);
    const float *restrict v = dfq_tensor_f32 (dst->src[1]);
    const float *sp = dfq_tensor_f32 (st);
    const float *zp = zt ? dfq_tensor_f32 (zt) : NULL;
    const float *restrict gy = dfq_tensor_f32 (dst->grad);
    const gboolean hard = dst->op_params[2] != 0;
    /* B and zp are fixed integers: no gradient. In hard mode h is a step
     * function, whose derivative is zero almost everywhere: V gets nothing. */
    float *restrict gv = hard ? NULL : dfq_priv_grad_of (dst->src[1], scratch);
    float *gs = dfq_priv_grad_of (dst->src[2], scratch);
    if (gv == NULL && gs == NULL)
        return;
    const float qmax = (float) ((1 << dst->op_params[1]) - 1);
    DfqQuantLayout l;
    dfq_quant_layout_init (&l, dst->src[0], dst->op_params[0]);
    double *part = gs ? dfq_arena_alloc_uninit (scratch, (gsize) MAX (l.n_blocks, 1) * sizeof (double)) : NULL;

#pragma omp parallel for schedule(static) if (l.n > DFQ_PAR_MIN)
    for (gint64 b = 0; b < l.n_blocks; b++) {
        float s = sp[dfq_quant_param_index (&l, st, b)];
        float z = zp ? zp[dfq_quant_param_index (&l, zt, b)] : 0.0f;
        double acc = 0.0;
        for (gint64 i = b * l.block_len; i < dfq_quant_block_end (&l, b); i++) {
            float h = hard ? (v[i] >= 0.0f ? 1.0f : 0.0f) : dfq_softbit_h (v[i]);
            float t = bq[i] + h + z;
            float q = fminf (fmaxf (t, 0.0f), qmax);
            /* B is frozen, so W^ is linear in s: dW^/ds = q - zp, no STE. */
            acc += (double) gy[i] * (q - z);
            if (gv != NULL && t >= 0.0f && t <= qmax)
                gv[i] += gy[i] * s * dfq_softbit_dh (v[i]);
        }
        if (part != NULL)
            part[b] = acc;
    }
    if (gs != NULL)
        dfq_quant_reduce_param_grad (&l, st, gs, part, 1, 0, 1.0);
}

/* ---- AdaRound rounding regulariser: sum(1 - |2h(V) - 1|^beta) -> [1] ----
 * op_fparams: [0] beta. Source: V. */
DfqTensor *
dfq_round_reg (DfqArena *arena, DfqTensor *v, float beta)
{
    g_return_val_if_fail (arena != NULL, NULL);
    g_return_val_if_fail (v != NULL && v->dtype == DFQ_DTYPE_F32 && dfq_tensor_is_contiguous (v), NULL);
    g_return_val_if_fail (beta > 0.0f, NULL);
    gint64 shape[1] = { 1 };
    DfqTensor *srcs[1] = { v };
    DfqTensor *t = dfq_priv_op_new (arena, DFQ_OP_ROUND_REG, DFQ_DTYPE_F32, 1, shape, 1, srcs);
    t->op_fparams[0] = beta;
    return dfq_priv_op_run (t);
}

void
dfq_op_round_reg_forward (DfqTensor *dst)
{
    const float *restrict v = dfq_tensor_f32 (dst->src[0]);
    const float beta = dst->op_fparams[0];
    gint64 n = dfq_tensor_numel (dst->src[0]);
    /* One sequential double sum: the soft-bit tensors are weight-sized, and a
     * fixed order keeps the value independent of the thread count. */
    double acc = 0.0;
    for (gint64 i = 0; i < n; i++)
        acc += 1.0 - (double) powf (fabsf (2.0f * dfq_softbit_h (v[i]) - 1.0f), beta);
    dfq_tensor_f32 (dst)[0] = (float) acc;
}

void
dfq_op_round_reg_backward (DfqTensor *dst, DfqArena *scratch)
{
    float *restrict gv = dfq_priv_grad_of (dst->src[0], scratch);
    if (gv == NULL)
        return;
    const float *restrict v = dfq_tensor_f32 (dst->src[0]);
    const float beta = dst->op_fparams[0];
    const float g = dfq_tensor_f32 (dst->grad)[0];
    gint64 n = dfq_tensor_numel (dst->src[0]);
#pragma omp parallel for schedule(static) if (n > DFQ_PAR_MIN)
    for (gint64 i = 0; i < n; i++) {
        float a = 2.0f * dfq_softbit_h (v[i]) - 1.0f;
        if (a == 0.0f)
            continue; /* d|a|^beta/da = 0 at a = 0 for beta > 1; sign(0) = 0 for beta = 1 */
        /* d/dv (1 - |a|^beta) = -beta |a|^(beta-1) sign(a) * 2 h'(v) */
        float d = -beta * powf (fabsf (a), beta - 1.0f) * (a > 0.0f ? 1.0f : -1.0f) * 2.0f * dfq_softbit_dh (v[i]);
        gv[i] += g * d;
    }
}
