/* Gradcheck cases for the elementwise, activation, reduction, softmax/loss and
 * shape ops (core/ops/dfq-op-{elementwise,activation,reduce,loss,shape}.c).
 * Several shapes per op, odd sizes included; inputs of non-smooth ops stay away
 * from their kinks (GRAD_INIT_AWAY, or ranges that avoid 0 and 6 for relu6).
 * Linear and quadratic ops (and log-softmax of large logits) use a larger
 * finite-difference step: central differences are exact (or nearly) for them
 * and the bigger step keeps float rounding of the forward small next to the
 * difference. */
#include "dfq-test-util.h"

/* Input specs: shape, init, whether the gradient to this input is checked. */
/* clang-format off */
#define T1(a, init_, grad_) { .n_dims = 1, .shape = { a }, .init = init_, .grad = grad_ }
#define T2(a, b, init_, grad_) { .n_dims = 2, .shape = { a, b }, .init = init_, .grad = grad_ }
#define T4(a, b, c, d, init_, grad_) { .n_dims = 4, .shape = { a, b, c, d }, .init = init_, .grad = grad_ }
#define R2(a, b, lo, hi) \
    { .n_dims = 2, .shape = { a, b }, .init = GRAD_INIT_RANGE, .grad = TRUE, .aux_f = { lo, hi } }
#define R4(a, b, c, d, lo, hi) \
    { .n_dims = 4, .shape = { a, b, c, d }, .init = GRAD_INIT_RANGE, .grad = TRUE, .aux_f = { lo, hi } }
#define LABELS(n, k) { .n_dims = 1, .shape = { n }, .init = GRAD_INIT_LABELS, .grad = FALSE, .aux = k }

#define N GRAD_INIT_NORMAL
#define AWAY GRAD_INIT_AWAY
#define POS GRAD_INIT_POSITIVE
#define PROBS GRAD_INIT_PROBS
/* clang-format on */

/* Step for ops that are linear or quadratic in their inputs. */
#define EPS_LIN 1e-2

/* ---- builders ---- */
static DfqTensor *
b_add (DfqArena *a, DfqTensor **in)
{
    return dfq_add (a, in[0], in[1]);
}

static DfqTensor *
b_sub (DfqArena *a, DfqTensor **in)
{
    return dfq_sub (a, in[0], in[1]);
}

static DfqTensor *
b_mul (DfqArena *a, DfqTensor **in)
{
    return dfq_mul (a, in[0], in[1]);
}

static DfqTensor *
b_affine (DfqArena *a, DfqTensor **in)
{
    return dfq_affine (a, in[0], 1.7f, -0.3f);
}

static DfqTensor *
b_affine_neg (DfqArena *a, DfqTensor **in)
{
    return dfq_affine (a, in[0], -0.5f, 2.0f);
}

static DfqTensor *
b_abs (DfqArena *a, DfqTensor **in)
{
    return dfq_abs (a, in[0]);
}

static DfqTensor *
b_sqrt (DfqArena *a, DfqTensor **in)
{
    return dfq_sqrt (a, in[0]);
}

static DfqTensor *
b_log (DfqArena *a, DfqTensor **in)
{
    return dfq_log (a, in[0]);
}

static DfqTensor *
b_chaff (DfqArena *a, DfqTensor **in)
{
    return dfq_channel_affine (a, in[0], in[1], in[2]);
}

static DfqTensor *
b_chaff_scale (DfqArena *a, DfqTensor **in)
{
    return dfq_channel_affine (a, in[0], in[1], NULL);
}

static DfqTensor *
b_chaff_shift (DfqArena *a, DfqTensor **in)
{
    return dfq_channel_affine (a, in[0], NULL, in[1]);
}

static DfqTensor *
b_relu (DfqArena *a, DfqTensor **in)
{
    return dfq_relu (a, in[0]);
}

static DfqTensor *
b_relu6 (DfqArena *a, DfqTensor **in)
{
    return dfq_relu6 (a, in[0]);
}

static DfqTensor *
b_leaky01 (DfqArena *a, DfqTensor **in)
{
    return dfq_leaky_relu (a, in[0], 0.1f);
}

static DfqTensor *
b_leaky02 (DfqArena *a, DfqTensor **in)
{
    return dfq_leaky_relu (a, in[0], 0.2f);
}

static DfqTensor *
b_tanh (DfqArena *a, DfqTensor **in)
{
    return dfq_tanh (a, in[0]);
}

static DfqTensor *
b_sigmoid (DfqArena *a, DfqTensor **in)
{
    return dfq_sigmoid (a, in[0]);
}

static DfqTensor *
b_dropout0 (DfqArena *a, DfqTensor **in)
{
    return dfq_dropout (a, in[0], 0.0f, 7, 3);
}

static DfqTensor *
b_dropout03 (DfqArena *a, DfqTensor **in)
{
    return dfq_dropout (a, in[0], 0.3f, 7, 3);
}

static DfqTensor *
b_dropout05 (DfqArena *a, DfqTensor **in)
{
    return dfq_dropout (a, in[0], 0.5f, G_GUINT64_CONSTANT (0x123456789), 1ull << 40);
}

static DfqTensor *
b_sum (DfqArena *a, DfqTensor **in)
{
    return dfq_sum (a, in[0]);
}

static DfqTensor *
b_mean (DfqArena *a, DfqTensor **in)
{
    return dfq_mean (a, in[0]);
}

static DfqTensor *
b_chmean (DfqArena *a, DfqTensor **in)
{
    return dfq_channel_mean (a, in[0]);
}

static DfqTensor *
b_chvar (DfqArena *a, DfqTensor **in)
{
    return dfq_channel_var (a, in[0], FALSE);
}

static DfqTensor *
b_chvar_unb (DfqArena *a, DfqTensor **in)
{
    return dfq_channel_var (a, in[0], TRUE);
}

static DfqTensor *
b_spvar (DfqArena *a, DfqTensor **in)
{
    return dfq_spatial_var (a, in[0], FALSE);
}

static DfqTensor *
b_spvar_unb (DfqArena *a, DfqTensor **in)
{
    return dfq_spatial_var (a, in[0], TRUE);
}

static DfqTensor *
b_rowsum (DfqArena *a, DfqTensor **in)
{
    return dfq_row_sum (a, in[0]);
}

static DfqTensor *
b_l2n (DfqArena *a, DfqTensor **in)
{
    return dfq_l2_normalize (a, in[0], 1e-6f);
}

static DfqTensor *
b_l2n_eps (DfqArena *a, DfqTensor **in)
{
    return dfq_l2_normalize (a, in[0], 0.5f);
}

static DfqTensor *
b_softmax (DfqArena *a, DfqTensor **in)
{
    return dfq_softmax (a, in[0]);
}

static DfqTensor *
b_logsoftmax (DfqArena *a, DfqTensor **in)
{
    return dfq_log_softmax (a, in[0]);
}

static DfqTensor *
b_ce (DfqArena *a, DfqTensor **in)
{
    return dfq_cross_entropy (a, in[0], in[1]);
}

static DfqTensor *
b_kl_mean (DfqArena *a, DfqTensor **in)
{
    return dfq_kl_div (a, in[0], in[1], DFQ_REDUCTION_MEAN);
}

static DfqTensor *
b_kl_bmean (DfqArena *a, DfqTensor **in)
{
    return dfq_kl_div (a, in[0], in[1], DFQ_REDUCTION_BATCHMEAN);
}

static DfqTensor *
b_kl_sum (DfqArena *a, DfqTensor **in)
{
    return dfq_kl_div (a, in[0], in[1], DFQ_REDUCTION_SUM);
}

static DfqTensor *
b_mse (DfqArena *a, DfqTensor **in)
{
    return dfq_mse (a, in[0], in[1]);
}

static DfqTensor *
b_entropy (DfqArena *a, DfqTensor **in)
{
    return dfq_entropy (a, in[0]);
}

static DfqTensor *
b_up1 (DfqArena *a, DfqTensor **in)
{
    return dfq_upsample_nearest (a, in[0], 1);
}

static DfqTensor *
b_up2 (DfqArena *a, DfqTensor **in)
{
    return dfq_upsample_nearest (a, in[0], 2);
}

static DfqTensor *
b_up3 (DfqArena *a, DfqTensor **in)
{
    return dfq_upsample_nearest (a, in[0], 3);
}

static DfqTensor *
b_pad1 (DfqArena *a, DfqTensor **in)
{
    return dfq_reflect_pad (a, in[0], 1);
}

static DfqTensor *
b_pad2 (DfqArena *a, DfqTensor **in)
{
    return dfq_reflect_pad (a, in[0], 2);
}

static DfqTensor *
b_pad3 (DfqArena *a, DfqTensor **in)
{
    return dfq_reflect_pad (a, in[0], 3);
}

static DfqTensor *
b_crop (DfqArena *a, DfqTensor **in)
{
    return dfq_crop (a, in[0], 1, 2, 4, 3);
}

static DfqTensor *
b_crop_full (DfqArena *a, DfqTensor **in)
{
    return dfq_crop (a, in[0], 0, 0, (int) in[0]->shape[2], (int) in[0]->shape[3]);
}

static DfqTensor *
b_crop_corner (DfqArena *a, DfqTensor **in)
{
    return dfq_crop (a, in[0], (int) in[0]->shape[2] - 2, (int) in[0]->shape[3] - 1, 2, 1);
}

static DfqTensor *
b_embedding (DfqArena *a, DfqTensor **in)
{
    return dfq_embedding (a, in[0], in[1]);
}

static DfqTensor *
b_concat (DfqArena *a, DfqTensor **in)
{
    return dfq_concat (a, in[0], in[1]);
}

/* [N,C,H,W] -> [N, C*H*W] */
static DfqTensor *
b_reshape_flatten (DfqArena *a, DfqTensor **in)
{
    const gint64 *s = in[0]->shape;
    gint64 shape[2] = { s[0], s[1] * s[2] * s[3] };
    return dfq_reshape (a, in[0], 2, shape);
}

/* [A,B] -> [1, A, B, 1] */
static DfqTensor *
b_reshape_to4d (DfqArena *a, DfqTensor **in)
{
    gint64 shape[4] = { 1, in[0]->shape[0], in[0]->shape[1], 1 };
    return dfq_reshape (a, in[0], 4, shape);
}

/* anything -> 1-d */
static DfqTensor *
b_reshape_1d (DfqArena *a, DfqTensor **in)
{
    gint64 shape[1] = { dfq_tensor_numel (in[0]) };
    return dfq_reshape (a, in[0], 1, shape);
}

/* The view feeding a further op: x [N,C,H,W] -> [N, CHW], times w [N, CHW]. */
static DfqTensor *
b_reshape_then_mul (DfqArena *a, DfqTensor **in)
{
    return dfq_mul (a, b_reshape_flatten (a, in), in[1]);
}

const GradCase dfq_gradcases_elementwise[] = {
    /* ---- elementwise ---- */
    { "add/4d-odd", DFQ_OP_ADD, 2, { T4 (3, 5, 7, 7, N, TRUE), T4 (3, 5, 7, 7, N, TRUE) }, b_add, .eps = EPS_LIN },
    { "add/2d", DFQ_OP_ADD, 2, { T2 (2, 3, N, TRUE), T2 (2, 3, N, TRUE) }, b_add, .eps = EPS_LIN },
    { "add/one-grad", DFQ_OP_ADD, 2, { T2 (4, 6, N, FALSE), T2 (4, 6, N, TRUE) }, b_add, .eps = EPS_LIN },
    { "sub/4d-odd", DFQ_OP_SUB, 2, { T4 (3, 5, 7, 7, N, TRUE), T4 (3, 5, 7, 7, N, TRUE) }, b_sub, .eps = EPS_LIN },
    { "sub/2d", DFQ_OP_SUB, 2, { T2 (2, 3, N, TRUE), T2 (2, 3, N, TRUE) }, b_sub, .eps = EPS_LIN },
    { "mul/4d-odd", DFQ_OP_MUL, 2, { T4 (3, 5, 7, 7, N, TRUE), T4 (3, 5, 7, 7, N, TRUE) }, b_mul, .eps = EPS_LIN },
    { "mul/2d", DFQ_OP_MUL, 2, { T2 (2, 3, N, TRUE), T2 (2, 3, N, TRUE) }, b_mul, .eps = EPS_LIN },
    { "mul/1d-one-grad", DFQ_OP_MUL, 2, { T1 (9, N, TRUE), T1 (9, N, FALSE) }, b_mul, .eps = EPS_LIN },
    { "affine/4d-odd", DFQ_OP_AFFINE, 1, { T4 (3, 5, 7, 7, N, TRUE) }, b_affine, .eps = EPS_LIN },
    { "affine/1d-negative-alpha", DFQ_OP_AFFINE, 1, { T1 (5, N, TRUE) }, b_affine_neg, .eps = EPS_LIN },
    { "abs/4d-odd", DFQ_OP_ABS, 1, { T4 (3, 5, 7, 7, AWAY, TRUE) }, b_abs },
    { "abs/2d", DFQ_OP_ABS, 1, { T2 (2, 3, AWAY, TRUE) }, b_abs },
    { "sqrt/4d-odd", DFQ_OP_SQRT, 1, { T4 (3, 5, 7, 7, POS, TRUE) }, b_sqrt },
    { "sqrt/2d", DFQ_OP_SQRT, 1, { T2 (2, 3, POS, TRUE) }, b_sqrt },
    { "log/4d-odd", DFQ_OP_LOG, 1, { T4 (3, 5, 7, 7, POS, TRUE) }, b_log },
    { "log/2d", DFQ_OP_LOG, 1, { T2 (2, 3, POS, TRUE) }, b_log },
    { "channel_affine/4d-scale-shift", DFQ_OP_CHANNEL_AFFINE, 3, { T4 (3, 5, 7, 7, N, TRUE), T1 (5, N, TRUE), T1 (5, N, TRUE) }, b_chaff, .eps = EPS_LIN },
    { "channel_affine/4d-scale-only", DFQ_OP_CHANNEL_AFFINE, 2, { T4 (2, 3, 4, 5, N, TRUE), T1 (3, N, TRUE) }, b_chaff_scale, .eps = EPS_LIN },
    { "channel_affine/4d-shift-only", DFQ_OP_CHANNEL_AFFINE, 2, { T4 (2, 3, 4, 5, N, TRUE), T1 (3, N, TRUE) }, b_chaff_shift, .eps = EPS_LIN },
    { "channel_affine/2d-scale-shift", DFQ_OP_CHANNEL_AFFINE, 3, { T2 (4, 6, N, TRUE), T1 (6, N, TRUE), T1 (6, N, TRUE) }, b_chaff, .eps = EPS_LIN },
    { "channel_affine/2d-scale-only", DFQ_OP_CHANNEL_AFFINE, 2, { T2 (2, 3, N, TRUE), T1 (3, N, TRUE) }, b_chaff_scale, .eps = EPS_LIN },
    { "channel_affine/4d-params-only", DFQ_OP_CHANNEL_AFFINE, 3, { T4 (2, 3, 4, 5, N, FALSE), T1 (3, N, TRUE), T1 (3, N, TRUE) }, b_chaff, .eps = EPS_LIN },

    /* ---- activations ---- */
    { "relu/4d-odd", DFQ_OP_RELU, 1, { T4 (3, 5, 7, 7, AWAY, TRUE) }, b_relu },
    { "relu/2d", DFQ_OP_RELU, 1, { T2 (2, 3, AWAY, TRUE) }, b_relu },
    { "relu6/4d-inside", DFQ_OP_RELU6, 1, { R4 (3, 5, 7, 7, 0.3f, 5.5f) }, b_relu6 },
    { "relu6/2d-negative", DFQ_OP_RELU6, 1, { R2 (4, 6, -3.0f, -0.3f) }, b_relu6 },
    { "relu6/2d-above-six", DFQ_OP_RELU6, 1, { R2 (2, 3, 6.3f, 9.0f) }, b_relu6 },
    { "relu6/4d-away", DFQ_OP_RELU6, 1, { T4 (2, 3, 4, 5, AWAY, TRUE) }, b_relu6 },
    { "leaky_relu/4d-odd", DFQ_OP_LEAKY_RELU, 1, { T4 (3, 5, 7, 7, AWAY, TRUE) }, b_leaky01 },
    { "leaky_relu/2d-slope0.2", DFQ_OP_LEAKY_RELU, 1, { T2 (2, 3, AWAY, TRUE) }, b_leaky02 },
    { "tanh/4d-odd", DFQ_OP_TANH, 1, { T4 (3, 5, 7, 7, N, TRUE) }, b_tanh },
    { "tanh/2d", DFQ_OP_TANH, 1, { T2 (2, 3, N, TRUE) }, b_tanh },
    { "sigmoid/4d-odd", DFQ_OP_SIGMOID, 1, { T4 (3, 5, 7, 7, N, TRUE) }, b_sigmoid },
    { "sigmoid/2d-wide", DFQ_OP_SIGMOID, 1, { R2 (4, 6, -8.0f, 8.0f) }, b_sigmoid },
    { "dropout/4d-p0.3", DFQ_OP_DROPOUT, 1, { T4 (3, 5, 7, 7, N, TRUE) }, b_dropout03, .eps = EPS_LIN },
    { "dropout/2d-p0.5", DFQ_OP_DROPOUT, 1, { T2 (6, 9, N, TRUE) }, b_dropout05, .eps = EPS_LIN },
    { "dropout/2d-p0", DFQ_OP_DROPOUT, 1, { T2 (2, 3, N, TRUE) }, b_dropout0, .eps = EPS_LIN },

    /* ---- reductions ---- */
    { "sum/4d-odd", DFQ_OP_SUM, 1, { T4 (3, 5, 7, 7, N, TRUE) }, b_sum, .eps = EPS_LIN },
    { "sum/2d", DFQ_OP_SUM, 1, { T2 (2, 3, N, TRUE) }, b_sum, .eps = EPS_LIN },
    { "sum/1d", DFQ_OP_SUM, 1, { T1 (7, N, TRUE) }, b_sum, .eps = EPS_LIN },
    { "mean/4d-odd", DFQ_OP_MEAN, 1, { T4 (3, 5, 7, 7, N, TRUE) }, b_mean, .eps = EPS_LIN },
    { "mean/2d", DFQ_OP_MEAN, 1, { T2 (2, 3, N, TRUE) }, b_mean, .eps = EPS_LIN },
    { "channel_mean/4d-odd", DFQ_OP_CHANNEL_MEAN, 1, { T4 (3, 5, 7, 7, N, TRUE) }, b_chmean, .eps = EPS_LIN },
    { "channel_mean/2d", DFQ_OP_CHANNEL_MEAN, 1, { T2 (6, 5, N, TRUE) }, b_chmean, .eps = EPS_LIN },
    { "channel_var/4d-odd-biased", DFQ_OP_CHANNEL_VAR, 1, { T4 (3, 5, 7, 7, N, TRUE) }, b_chvar, .eps = EPS_LIN },
    { "channel_var/4d-odd-unbiased", DFQ_OP_CHANNEL_VAR, 1, { T4 (3, 5, 7, 7, N, TRUE) }, b_chvar_unb, .eps = EPS_LIN },
    { "channel_var/2d-biased", DFQ_OP_CHANNEL_VAR, 1, { T2 (6, 5, N, TRUE) }, b_chvar, .eps = EPS_LIN },
    { "channel_var/2d-unbiased", DFQ_OP_CHANNEL_VAR, 1, { T2 (2, 3, N, TRUE) }, b_chvar_unb, .eps = EPS_LIN },
    { "spatial_var/4d-odd-biased", DFQ_OP_SPATIAL_VAR, 1, { T4 (3, 5, 7, 7, N, TRUE) }, b_spvar, .eps = EPS_LIN },
    { "spatial_var/4d-odd-unbiased", DFQ_OP_SPATIAL_VAR, 1, { T4 (3, 5, 7, 7, N, TRUE) }, b_spvar_unb, .eps = EPS_LIN },
    { "spatial_var/4d-thin-unbiased", DFQ_OP_SPATIAL_VAR, 1, { T4 (2, 3, 1, 5, N, TRUE) }, b_spvar_unb, .eps = EPS_LIN },
    { "row_sum/2d", DFQ_OP_ROW_SUM, 1, { T2 (3, 5, N, TRUE) }, b_rowsum, .eps = EPS_LIN },
    { "row_sum/2d-one-row", DFQ_OP_ROW_SUM, 1, { T2 (1, 7, N, TRUE) }, b_rowsum, .eps = EPS_LIN },
    { "l2_normalize/2d", DFQ_OP_L2_NORMALIZE, 1, { T2 (3, 5, N, TRUE) }, b_l2n },
    { "l2_normalize/2d-wide", DFQ_OP_L2_NORMALIZE, 1, { T2 (2, 17, N, TRUE) }, b_l2n },
    { "l2_normalize/2d-large-eps", DFQ_OP_L2_NORMALIZE, 1, { T2 (4, 3, N, TRUE) }, b_l2n_eps },

    /* ---- softmax family and losses ---- */
    { "softmax/2d", DFQ_OP_SOFTMAX, 1, { T2 (3, 5, N, TRUE) }, b_softmax },
    { "softmax/2d-small", DFQ_OP_SOFTMAX, 1, { T2 (2, 3, N, TRUE) }, b_softmax },
    { "softmax/2d-wide-logits", DFQ_OP_SOFTMAX, 1, { R2 (4, 10, -6.0f, 6.0f) }, b_softmax },
    { "log_softmax/2d", DFQ_OP_LOG_SOFTMAX, 1, { T2 (3, 5, N, TRUE) }, b_logsoftmax },
    { "log_softmax/2d-small", DFQ_OP_LOG_SOFTMAX, 1, { T2 (2, 3, N, TRUE) }, b_logsoftmax },
    { "log_softmax/2d-large-logits", DFQ_OP_LOG_SOFTMAX, 1, { R2 (4, 10, -30.0f, 30.0f) }, b_logsoftmax, .eps = EPS_LIN },
    { "cross_entropy/hard", DFQ_OP_CROSS_ENTROPY, 2, { T2 (3, 5, N, TRUE), LABELS (3, 5) }, b_ce },
    { "cross_entropy/hard-many-classes", DFQ_OP_CROSS_ENTROPY, 2, { T2 (8, 10, N, TRUE), LABELS (8, 10) }, b_ce },
    { "cross_entropy/soft", DFQ_OP_CROSS_ENTROPY, 2, { T2 (3, 5, N, TRUE), T2 (3, 5, PROBS, FALSE) }, b_ce },
    { "cross_entropy/soft-label-grad", DFQ_OP_CROSS_ENTROPY, 2, { T2 (4, 7, N, TRUE), T2 (4, 7, PROBS, TRUE) }, b_ce },
    { "kl_div/mean", DFQ_OP_KL_DIV, 2, { T2 (3, 5, N, TRUE), T2 (3, 5, PROBS, TRUE) }, b_kl_mean },
    { "kl_div/batchmean", DFQ_OP_KL_DIV, 2, { T2 (3, 5, N, TRUE), T2 (3, 5, PROBS, TRUE) }, b_kl_bmean },
    { "kl_div/sum", DFQ_OP_KL_DIV, 2, { T2 (3, 5, N, TRUE), T2 (3, 5, PROBS, TRUE) }, b_kl_sum },
    { "kl_div/batchmean-fixed-target", DFQ_OP_KL_DIV, 2, { T2 (6, 10, N, TRUE), T2 (6, 10, PROBS, FALSE) }, b_kl_bmean },
    { "kl_div/sum-target-only", DFQ_OP_KL_DIV, 2, { T2 (2, 3, N, FALSE), T2 (2, 3, PROBS, TRUE) }, b_kl_sum },
    { "mse/4d-odd", DFQ_OP_MSE, 2, { T4 (3, 5, 7, 7, N, TRUE), T4 (3, 5, 7, 7, N, TRUE) }, b_mse, .eps = EPS_LIN },
    { "mse/2d", DFQ_OP_MSE, 2, { T2 (2, 3, N, TRUE), T2 (2, 3, N, TRUE) }, b_mse, .eps = EPS_LIN },
    { "mse/one-grad", DFQ_OP_MSE, 2, { T2 (4, 6, N, FALSE), T2 (4, 6, N, TRUE) }, b_mse, .eps = EPS_LIN },
    { "entropy/2d", DFQ_OP_ENTROPY, 1, { T2 (3, 5, N, TRUE) }, b_entropy },
    { "entropy/2d-many-classes", DFQ_OP_ENTROPY, 1, { T2 (4, 10, N, TRUE) }, b_entropy },

    /* ---- shape ---- */
    { "upsample_nearest/x2-odd", DFQ_OP_UPSAMPLE_NEAREST, 1, { T4 (2, 3, 5, 7, N, TRUE) }, b_up2, .eps = EPS_LIN },
    { "upsample_nearest/x3", DFQ_OP_UPSAMPLE_NEAREST, 1, { T4 (1, 2, 3, 3, N, TRUE) }, b_up3, .eps = EPS_LIN },
    { "upsample_nearest/x1", DFQ_OP_UPSAMPLE_NEAREST, 1, { T4 (2, 3, 4, 5, N, TRUE) }, b_up1, .eps = EPS_LIN },
    { "reflect_pad/p1-odd", DFQ_OP_REFLECT_PAD, 1, { T4 (2, 3, 5, 7, N, TRUE) }, b_pad1, .eps = EPS_LIN },
    { "reflect_pad/p2", DFQ_OP_REFLECT_PAD, 1, { T4 (1, 2, 3, 4, N, TRUE) }, b_pad2, .eps = EPS_LIN },
    { "reflect_pad/p3-max", DFQ_OP_REFLECT_PAD, 1, { T4 (1, 1, 4, 5, N, TRUE) }, b_pad3, .eps = EPS_LIN },
    { "crop/inner", DFQ_OP_CROP, 1, { T4 (2, 3, 7, 7, N, TRUE) }, b_crop, .eps = EPS_LIN },
    { "crop/full", DFQ_OP_CROP, 1, { T4 (2, 3, 4, 5, N, TRUE) }, b_crop_full, .eps = EPS_LIN },
    { "crop/corner", DFQ_OP_CROP, 1, { T4 (1, 2, 5, 3, N, TRUE) }, b_crop_corner, .eps = EPS_LIN },
    { "embedding/repeated-indices", DFQ_OP_EMBEDDING, 2, { T2 (5, 4, N, TRUE), LABELS (9, 5) }, b_embedding, .eps = EPS_LIN },
    { "embedding/wide", DFQ_OP_EMBEDDING, 2, { T2 (10, 7, N, TRUE), LABELS (4, 10) }, b_embedding, .eps = EPS_LIN },
    { "reshape/4d-to-2d", DFQ_OP_RESHAPE, 1, { T4 (3, 5, 7, 7, N, TRUE) }, b_reshape_flatten, .eps = EPS_LIN },
    { "reshape/2d-to-4d", DFQ_OP_RESHAPE, 1, { T2 (2, 3, N, TRUE) }, b_reshape_to4d, .eps = EPS_LIN },
    { "reshape/2d-to-1d", DFQ_OP_RESHAPE, 1, { T2 (4, 6, N, TRUE) }, b_reshape_1d, .eps = EPS_LIN },
    { "reshape/then-mul", DFQ_OP_RESHAPE, 2, { T4 (2, 3, 4, 5, N, TRUE), T2 (2, 60, N, TRUE) }, b_reshape_then_mul, .eps = EPS_LIN },
    { "concat/2d", DFQ_OP_CONCAT, 2, { T2 (3, 4, N, TRUE), T2 (3, 2, N, TRUE) }, b_concat, .eps = EPS_LIN },
    { "concat/4d-odd", DFQ_OP_CONCAT, 2, { T4 (2, 3, 5, 7, N, TRUE), T4 (2, 1, 5, 7, N, TRUE) }, b_concat, .eps = EPS_LIN },
    { "concat/4d-one-grad", DFQ_OP_CONCAT, 2, { T4 (3, 2, 3, 3, N, FALSE), T4 (3, 4, 3, 3, N, TRUE) }, b_concat, .eps = EPS_LIN },
};
const guint dfq_n_gradcases_elementwise = G_N_ELEMENTS (dfq_gradcases_elementwise);
