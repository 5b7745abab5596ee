/* Gradcheck cases for the math ops (core/ops/dfq-op-math.c: pow, exp,
 * mean over one axis) and for a custom op (DFQ_OP_CUSTOM, dfq-custom-op.h):
 * y = s * a * exp(b), two sources and a float parameter, the op
 * tests/core/test-custom-op.c also drives through dfq_gradcheck(). */
#include <math.h>

#include "dfq-test-util.h"

/* clang-format off */
#define T1(a, init_, grad_) { .n_dims = 1, .shape = { a }, .init = init_, .grad = grad_ }
#define T2(a, b, init_, grad_) { .n_dims = 2, .shape = { a, b }, .init = init_, .grad = grad_ }
#define T3(a, b, c, init_, grad_) { .n_dims = 3, .shape = { a, b, c }, .init = init_, .grad = grad_ }
#define T4(a, b, c, d, init_, grad_) { .n_dims = 4, .shape = { a, b, c, d }, .init = init_, .grad = grad_ }
#define R2(a, b, lo, hi) \
    { .n_dims = 2, .shape = { a, b }, .init = GRAD_INIT_RANGE, .grad = TRUE, .aux_f = { lo, hi } }
#define N GRAD_INIT_NORMAL
#define AWAY GRAD_INIT_AWAY
#define POS GRAD_INIT_POSITIVE
/* clang-format on */

#define EPS_LIN 1e-2

/* ---- the custom op: y = s * a * exp(b) ---- */
static void
scaled_exp_forward (DfqTensor *dst, DfqCustomOpCall *call G_GNUC_UNUSED)
{
    const float *a = dfq_tensor_f32 (dst->src[0]), *b = dfq_tensor_f32 (dst->src[1]);
    float s = dst->op_fparams[0];
    float *y = dfq_tensor_f32 (dst);
    for (gint64 i = 0; i < dfq_tensor_numel (dst); i++)
        y[i] = s * a[i] * expf (b[i]);
}

static void
scaled_exp_backward (DfqTensor *dst, DfqCustomOpCall *call G_GNUC_UNUSED, float *const *src_grads,
                     DfqArena *scratch G_GNUC_UNUSED)
{
    const float *b = dfq_tensor_f32 (dst->src[1]);
    const float *gy = dfq_tensor_f32 (dst->grad), *y = dfq_tensor_f32 (dst);
    float s = dst->op_fparams[0];
    for (gint64 i = 0; i < dfq_tensor_numel (dst); i++) {
        if (src_grads[0] != NULL)
            src_grads[0][i] += gy[i] * s * expf (b[i]);
        if (src_grads[1] != NULL)
            src_grads[1][i] += gy[i] * y[i];
    }
}

const DfqCustomOp dfq_test_scaled_exp_op = {
    .name = "test.scaled-exp",
    .forward = scaled_exp_forward,
    .backward = scaled_exp_backward,
};

DfqTensor *
dfq_test_scaled_exp (DfqArena *arena, DfqTensor *a, DfqTensor *b, float s)
{
    DfqTensor *srcs[2] = { a, b };
    return dfq_custom_op (arena, &dfq_test_scaled_exp_op, a->n_dims, a->shape, 2, srcs, 1, &s, NULL);
}

/* ---- builders ---- */
static DfqTensor *
b_pow_half (DfqArena *a, DfqTensor **in)
{
    return dfq_pow (a, in[0], 0.5f);
}

static DfqTensor *
b_pow_real (DfqArena *a, DfqTensor **in)
{
    return dfq_pow (a, in[0], 2.7f);
}

static DfqTensor *
b_pow_int_negative_base (DfqArena *a, DfqTensor **in)
{
    return dfq_pow (a, in[0], 3.0f);
}

static DfqTensor *
b_pow_negative_exp (DfqArena *a, DfqTensor **in)
{
    return dfq_pow (a, in[0], -1.5f);
}

static DfqTensor *
b_exp (DfqArena *a, DfqTensor **in)
{
    return dfq_exp (a, in[0]);
}

static DfqTensor *
b_mean_axis0 (DfqArena *a, DfqTensor **in)
{
    return dfq_mean_axis (a, in[0], 0);
}

static DfqTensor *
b_mean_axis1 (DfqArena *a, DfqTensor **in)
{
    return dfq_mean_axis (a, in[0], 1);
}

static DfqTensor *
b_mean_axis_last (DfqArena *a, DfqTensor **in)
{
    return dfq_mean_axis (a, in[0], -1);
}

/* Per-sample channel mean of a feature map: mean over W, then over H. */
static DfqTensor *
b_mean_axis_spatial (DfqArena *a, DfqTensor **in)
{
    return dfq_mean_axis (a, dfq_mean_axis (a, in[0], 3), 2);
}

static DfqTensor *
b_custom (DfqArena *a, DfqTensor **in)
{
    return dfq_test_scaled_exp (a, in[0], in[1], 0.7f);
}

/* The custom op inside a graph of built-in ops, one source used twice. */
static DfqTensor *
b_custom_in_graph (DfqArena *a, DfqTensor **in)
{
    DfqTensor *t = dfq_tanh (a, in[0]);
    return dfq_mean_axis (a, dfq_test_scaled_exp (a, t, t, -1.3f), 1);
}

/* clang-format off */
const GradCase dfq_gradcases_math[] = {
    { "pow/sqrt-4d-odd", DFQ_OP_POW, 1, { T4 (2, 3, 5, 7, POS, TRUE) }, b_pow_half },
    { "pow/real-2d", DFQ_OP_POW, 1, { T2 (3, 4, POS, TRUE) }, b_pow_real },
    { "pow/cube-negative-base", DFQ_OP_POW, 1, { T2 (3, 5, N, TRUE) }, b_pow_int_negative_base },
    { "pow/negative-exponent", DFQ_OP_POW, 1, { T1 (7, POS, TRUE) }, b_pow_negative_exp },
    { "exp/4d-odd", DFQ_OP_EXP, 1, { T4 (2, 3, 5, 7, N, TRUE) }, b_exp },
    { "exp/2d-wide", DFQ_OP_EXP, 1, { R2 (3, 4, -4.0f, 3.0f) }, b_exp },
    { "mean_axis/axis0-3d", DFQ_OP_MEAN_AXIS, 1, { T3 (4, 3, 5, N, TRUE) }, b_mean_axis0, .eps = EPS_LIN },
    { "mean_axis/axis1-4d", DFQ_OP_MEAN_AXIS, 1, { T4 (2, 3, 5, 7, N, TRUE) }, b_mean_axis1, .eps = EPS_LIN },
    { "mean_axis/last-2d", DFQ_OP_MEAN_AXIS, 1, { T2 (3, 5, N, TRUE) }, b_mean_axis_last, .eps = EPS_LIN },
    { "mean_axis/1d-to-scalar", DFQ_OP_MEAN_AXIS, 1, { T1 (9, N, TRUE) }, b_mean_axis0, .eps = EPS_LIN },
    { "mean_axis/spatial-per-sample", DFQ_OP_MEAN_AXIS, 1, { T4 (2, 3, 4, 5, N, TRUE) }, b_mean_axis_spatial, .eps = EPS_LIN },
    { "custom/two-sources-and-a-param", DFQ_OP_CUSTOM, 2, { T2 (3, 4, N, TRUE), R2 (3, 4, -1.0f, 1.0f) }, b_custom },
    { "custom/one-source-constant", DFQ_OP_CUSTOM, 2, { T2 (2, 5, N, FALSE), R2 (2, 5, -1.0f, 1.0f) }, b_custom },
    { "custom/in-a-graph-source-twice", DFQ_OP_CUSTOM, 1, { T2 (3, 6, N, TRUE) }, b_custom_in_graph },
};
/* clang-format on */
const guint dfq_n_gradcases_math = G_N_ELEMENTS (dfq_gradcases_math);
