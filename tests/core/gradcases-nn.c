/* Gradcheck cases: nn ops (linear, conv2d, batchnorm, pooling). Small shapes
 * that still reach every code path: conv through im2col + GEMM (groups, stride
 * 2 on odd sizes, 1x1 with and without column copy, one image), through the
 * direct loops (depthwise, channel multiplier, single input channel), and
 * batchnorm in training (affine or not, GDFQ's eps 0.8, [N,C]) and eval. */
#include "dfq-test-util.h"

/* clang-format off */
#define IN4(a, b, c, d, init_, grad_) { .n_dims = 4, .shape = { a, b, c, d }, .init = init_, .grad = grad_ }
#define IN2(a, b, init_, grad_) { .n_dims = 2, .shape = { a, b }, .init = init_, .grad = grad_ }
#define IN1(a, init_, grad_) { .n_dims = 1, .shape = { a }, .init = init_, .grad = grad_ }

/* clang-format on */

/* ---- linear ---- */
static DfqTensor *
build_linear_bias (DfqArena *arena, DfqTensor **in)
{
    return dfq_linear (arena, in[0], in[1], in[2]);
}

static DfqTensor *
build_linear_nobias (DfqArena *arena, DfqTensor **in)
{
    return dfq_linear (arena, in[0], in[1], NULL);
}

/* clang-format off */
/* ---- conv2d: in[0] x, in[1] w, in[2] b (the _nb builders pass no bias) ---- */
#define CONV_BUILDER(tag, stride, pad, groups)                                  \
    static DfqTensor *build_conv_##tag (DfqArena *arena, DfqTensor **in)        \
    {                                                                           \
        return dfq_conv2d (arena, in[0], in[1], in[2], stride, pad, groups);   \
    }
#define CONV_BUILDER_NB(tag, stride, pad, groups)                               \
    static DfqTensor *build_conv_##tag##_nb (DfqArena *arena, DfqTensor **in)   \
    {                                                                           \
        return dfq_conv2d (arena, in[0], in[1], NULL, stride, pad, groups);    \
    }

CONV_BUILDER (s1p1, 1, 1, 1)
CONV_BUILDER (s2p1, 2, 1, 1)
CONV_BUILDER (s1p0, 1, 0, 1)
CONV_BUILDER (s2p2, 2, 2, 1)
CONV_BUILDER (s1p1g2, 1, 1, 2)
CONV_BUILDER (s1p1g3, 1, 1, 3)
CONV_BUILDER (s1p1g4, 1, 1, 4)
CONV_BUILDER (s2p1g4, 2, 1, 4)
CONV_BUILDER_NB (s1p1, 1, 1, 1)
CONV_BUILDER_NB (s2p0, 2, 0, 1)
CONV_BUILDER_NB (s2p1g2, 2, 1, 2)
CONV_BUILDER_NB (s2p1g3, 2, 1, 3)

/* clang-format on */

/* First-write gradients around the 3x3 kernel: h = leaky_relu(x) feeds the
 * conv and an add (the add's backward runs first and writes h's new gradient
 * buffer, the conv adds to it); with a mul(h, h) made before the conv, the
 * conv writes the new buffer and the mul adds to it twice. */
static DfqTensor *
build_conv3_shared_add (DfqArena *arena, DfqTensor **in)
{
    DfqTensor *h = dfq_leaky_relu (arena, in[0], 0.2f);
    DfqTensor *y = dfq_conv2d (arena, h, in[1], in[2], 1, 1, 1);
    return dfq_add (arena, y, h);
}

/* The same around a 1x1 stride-1 conv (its input gradient from the AVX-512
 * 1x1 kernel with W^T: written fresh, or added to the add's). */
static DfqTensor *
build_conv1_shared_add (DfqArena *arena, DfqTensor **in)
{
    DfqTensor *h = dfq_leaky_relu (arena, in[0], 0.2f);
    DfqTensor *y = dfq_conv2d (arena, h, in[1], in[2], 1, 0, 1);
    return dfq_add (arena, y, h);
}

static DfqTensor *
build_conv3_shared_mul (DfqArena *arena, DfqTensor **in)
{
    DfqTensor *h = dfq_leaky_relu (arena, in[0], 0.2f);
    DfqTensor *hh = dfq_mul (arena, h, h);
    DfqTensor *y = dfq_conv2d (arena, h, in[1], in[2], 1, 1, 1);
    return dfq_add (arena, y, hh);
}

/* The same around a depthwise 3x3 stride-1 conv (4 channels): h feeding the
 * conv alone, whose dX is then written fresh plane by plane by the AVX-512
 * kernels (no zero-fill; stride 1 and 2), and h shared with an add (the conv
 * adds to it). */
static DfqTensor *
build_dw3_fresh (DfqArena *arena, DfqTensor **in)
{
    DfqTensor *h = dfq_leaky_relu (arena, in[0], 0.2f);
    return dfq_conv2d (arena, h, in[1], in[2], 1, 1, 4);
}

static DfqTensor *
build_dw3_s2_fresh (DfqArena *arena, DfqTensor **in)
{
    DfqTensor *h = dfq_leaky_relu (arena, in[0], 0.2f);
    return dfq_conv2d (arena, h, in[1], in[2], 2, 1, 4);
}

static DfqTensor *
build_dw3_shared_add (DfqArena *arena, DfqTensor **in)
{
    DfqTensor *h = dfq_leaky_relu (arena, in[0], 0.2f);
    DfqTensor *y = dfq_conv2d (arena, h, in[1], in[2], 1, 1, 4);
    return dfq_add (arena, y, h);
}

/* ---- batchnorm: in[0] x, then gamma, beta, running mean, running var as listed ---- */
static DfqTensor *
build_bn_train_affine (DfqArena *arena, DfqTensor **in)
{
    return dfq_batchnorm (arena, in[0], in[1], in[2], in[3], in[4], TRUE, 0.1f, 1e-5f);
}

static DfqTensor *
build_bn_train_noaffine (DfqArena *arena, DfqTensor **in)
{
    return dfq_batchnorm (arena, in[0], NULL, NULL, in[1], in[2], TRUE, 0.1f, 1e-5f);
}

static DfqTensor *
build_bn_train_eps08 (DfqArena *arena, DfqTensor **in)
{
    return dfq_batchnorm (arena, in[0], in[1], in[2], NULL, NULL, TRUE, 0.1f, 0.8f);
}

static DfqTensor *
build_bn_eval (DfqArena *arena, DfqTensor **in)
{
    return dfq_batchnorm (arena, in[0], in[1], in[2], in[3], in[4], FALSE, 0.1f, 1e-5f);
}

static DfqTensor *
build_bn_eval_noaffine (DfqArena *arena, DfqTensor **in)
{
    return dfq_batchnorm (arena, in[0], NULL, NULL, in[1], in[2], FALSE, 0.1f, 1e-5f);
}

static DfqTensor *
build_bn_2d (DfqArena *arena, DfqTensor **in)
{
    return dfq_batchnorm (arena, in[0], in[1], in[2], NULL, NULL, TRUE, 0.1f, 1e-5f);
}

/* ---- pooling ---- */
static DfqTensor *
build_avg_pool_k2s2 (DfqArena *arena, DfqTensor **in)
{
    return dfq_avg_pool (arena, in[0], 2, 2);
}

static DfqTensor *
build_avg_pool_k3s2 (DfqArena *arena, DfqTensor **in)
{
    return dfq_avg_pool (arena, in[0], 3, 2);
}

static DfqTensor *
build_global_avg_pool (DfqArena *arena, DfqTensor **in)
{
    return dfq_global_avg_pool (arena, in[0]);
}

/* clang-format off */
#define NORMAL GRAD_INIT_NORMAL
#define POS GRAD_INIT_POSITIVE

const GradCase dfq_gradcases_nn[] = {
    /* linear */
    { .name = "linear/bias", .op = DFQ_OP_LINEAR, .n_inputs = 3, .build = build_linear_bias,
      .inputs = { IN2 (3, 5, NORMAL, TRUE), IN2 (4, 5, NORMAL, TRUE), IN1 (4, NORMAL, TRUE) } },
    { .name = "linear/nobias", .op = DFQ_OP_LINEAR, .n_inputs = 2, .build = build_linear_nobias,
      .inputs = { IN2 (2, 6, NORMAL, TRUE), IN2 (3, 6, NORMAL, TRUE) } },
    { .name = "linear/batch1", .op = DFQ_OP_LINEAR, .n_inputs = 3, .build = build_linear_bias,
      .inputs = { IN2 (1, 7, NORMAL, TRUE), IN2 (2, 7, NORMAL, TRUE), IN1 (2, NORMAL, TRUE) } },

    /* conv2d through im2col + GEMM */
    { .name = "conv2d/3x3-s1-p1", .op = DFQ_OP_CONV2D, .n_inputs = 3, .build = build_conv_s1p1,
      .inputs = { IN4 (2, 3, 5, 5, NORMAL, TRUE), IN4 (4, 3, 3, 3, NORMAL, TRUE), IN1 (4, NORMAL, TRUE) } },
    { .name = "conv2d/3x3-s1-p1-nobias", .op = DFQ_OP_CONV2D, .n_inputs = 2, .build = build_conv_s1p1_nb,
      .inputs = { IN4 (3, 2, 4, 6, NORMAL, TRUE), IN4 (3, 2, 3, 3, NORMAL, TRUE) } },
    { .name = "conv2d/3x3-s2-p1-odd", .op = DFQ_OP_CONV2D, .n_inputs = 3, .build = build_conv_s2p1,
      .inputs = { IN4 (2, 2, 7, 7, NORMAL, TRUE), IN4 (3, 2, 3, 3, NORMAL, TRUE), IN1 (3, NORMAL, TRUE) } },
    { .name = "conv2d/3x3-s2-p0-odd", .op = DFQ_OP_CONV2D, .n_inputs = 2, .build = build_conv_s2p0_nb,
      .inputs = { IN4 (2, 2, 7, 5, NORMAL, TRUE), IN4 (2, 2, 3, 3, NORMAL, TRUE) } },
    { .name = "conv2d/5x5-s2-p2", .op = DFQ_OP_CONV2D, .n_inputs = 3, .build = build_conv_s2p2,
      .inputs = { IN4 (2, 2, 9, 9, NORMAL, TRUE), IN4 (2, 2, 5, 5, NORMAL, TRUE), IN1 (2, NORMAL, TRUE) } },
    { .name = "conv2d/1x1-s1", .op = DFQ_OP_CONV2D, .n_inputs = 3, .build = build_conv_s1p0,
      .inputs = { IN4 (3, 4, 3, 3, NORMAL, TRUE), IN4 (5, 4, 1, 1, NORMAL, TRUE), IN1 (5, NORMAL, TRUE) } },
    /* 1x1 stride 1 on small planes as one GEMM over the batch: two column blocks (256 + 64) */
    { .name = "conv2d/1x1-s1-batched-blocks", .op = DFQ_OP_CONV2D, .n_inputs = 3, .build = build_conv_s1p0,
      .inputs = { IN4 (5, 3, 8, 8, NORMAL, TRUE), IN4 (4, 3, 1, 1, NORMAL, TRUE), IN1 (4, NORMAL, TRUE) } },
    { .name = "conv2d/1x1-s2", .op = DFQ_OP_CONV2D, .n_inputs = 2, .build = build_conv_s2p0_nb,
      .inputs = { IN4 (2, 4, 5, 5, NORMAL, TRUE), IN4 (3, 4, 1, 1, NORMAL, TRUE) } },
    { .name = "conv2d/groups2", .op = DFQ_OP_CONV2D, .n_inputs = 3, .build = build_conv_s1p1g2,
      .inputs = { IN4 (2, 4, 5, 5, NORMAL, TRUE), IN4 (6, 2, 3, 3, NORMAL, TRUE), IN1 (6, NORMAL, TRUE) } },
    { .name = "conv2d/groups2-s2-nobias", .op = DFQ_OP_CONV2D, .n_inputs = 2, .build = build_conv_s2p1g2_nb,
      .inputs = { IN4 (3, 4, 5, 5, NORMAL, TRUE), IN4 (4, 2, 3, 3, NORMAL, TRUE) } },
    { .name = "conv2d/nonsquare-1x3", .op = DFQ_OP_CONV2D, .n_inputs = 3, .build = build_conv_s1p1,
      .inputs = { IN4 (2, 2, 4, 5, NORMAL, TRUE), IN4 (3, 2, 1, 3, NORMAL, TRUE), IN1 (3, NORMAL, TRUE) } },
    { .name = "conv2d/batch1", .op = DFQ_OP_CONV2D, .n_inputs = 3, .build = build_conv_s1p1,
      .inputs = { IN4 (1, 3, 6, 5, NORMAL, TRUE), IN4 (2, 3, 3, 3, NORMAL, TRUE), IN1 (2, NORMAL, TRUE) } },
    { .name = "conv2d/input-grad-only", .op = DFQ_OP_CONV2D, .n_inputs = 3, .build = build_conv_s2p1,
      .inputs = { IN4 (3, 3, 5, 5, NORMAL, TRUE), IN4 (4, 3, 3, 3, NORMAL, FALSE), IN1 (4, NORMAL, FALSE) } },
    { .name = "conv2d/weight-grad-only", .op = DFQ_OP_CONV2D, .n_inputs = 3, .build = build_conv_s1p1,
      .inputs = { IN4 (3, 3, 5, 5, NORMAL, FALSE), IN4 (4, 3, 3, 3, NORMAL, TRUE), IN1 (4, NORMAL, TRUE) } },

    /* conv2d 3x3 stride 1 padding 1 through the AVX-512 kernel (where the CPU
     * has it): at least 8 channels and 36 positions; 9 and 10 channels pad a
     * tile of 8 */
    { .name = "conv2d/3x3-kernel", .op = DFQ_OP_CONV2D, .n_inputs = 3, .build = build_conv_s1p1,
      .inputs = { IN4 (2, 9, 6, 7, NORMAL, TRUE), IN4 (10, 9, 3, 3, NORMAL, TRUE), IN1 (10, NORMAL, TRUE) } },
    { .name = "conv2d/3x3-kernel-wgrad", .op = DFQ_OP_CONV2D, .n_inputs = 3, .build = build_conv_s1p1,
      .inputs = { IN4 (2, 3, 6, 7, NORMAL, TRUE), IN4 (16, 3, 3, 3, NORMAL, TRUE), IN1 (16, NORMAL, TRUE) } },
    { .name = "conv2d/3x3-kernel-s2", .op = DFQ_OP_CONV2D, .n_inputs = 3, .build = build_conv_s2p1,
      .inputs = { IN4 (2, 3, 13, 12, NORMAL, TRUE), IN4 (8, 3, 3, 3, NORMAL, TRUE), IN1 (8, NORMAL, TRUE) } },
    { .name = "conv2d/3x3-kernel-shared-input-add", .op = DFQ_OP_CONV2D, .n_inputs = 3,
      .build = build_conv3_shared_add,
      .inputs = { IN4 (2, 9, 6, 7, NORMAL, TRUE), IN4 (9, 9, 3, 3, NORMAL, TRUE), IN1 (9, NORMAL, TRUE) } },
    /* 1x1 stride 1 through the AVX-512 kernel, input gradient included (Ci >= 8) */
    { .name = "conv2d/1x1-kernel", .op = DFQ_OP_CONV2D, .n_inputs = 3, .build = build_conv_s1p0,
      .inputs = { IN4 (3, 9, 5, 7, NORMAL, TRUE), IN4 (10, 9, 1, 1, NORMAL, TRUE), IN1 (10, NORMAL, TRUE) } },
    { .name = "conv2d/1x1-kernel-shared-input-add", .op = DFQ_OP_CONV2D, .n_inputs = 3,
      .build = build_conv1_shared_add,
      .inputs = { IN4 (2, 8, 4, 5, NORMAL, TRUE), IN4 (8, 8, 1, 1, NORMAL, TRUE), IN1 (8, NORMAL, TRUE) } },
    { .name = "conv2d/3x3-kernel-shared-input-mul", .op = DFQ_OP_CONV2D, .n_inputs = 3,
      .build = build_conv3_shared_mul,
      .inputs = { IN4 (2, 9, 6, 7, NORMAL, TRUE), IN4 (9, 9, 3, 3, NORMAL, TRUE), IN1 (9, NORMAL, TRUE) } },

    /* conv2d through the direct loops (one input channel per group) */
    { .name = "conv2d/depthwise", .op = DFQ_OP_CONV2D, .n_inputs = 3, .build = build_conv_s1p1g3,
      .inputs = { IN4 (3, 3, 6, 6, NORMAL, TRUE), IN4 (3, 1, 3, 3, NORMAL, TRUE), IN1 (3, NORMAL, TRUE) } },
    { .name = "conv2d/depthwise-s2-odd-nobias", .op = DFQ_OP_CONV2D, .n_inputs = 2, .build = build_conv_s2p1g3_nb,
      .inputs = { IN4 (2, 3, 7, 7, NORMAL, TRUE), IN4 (3, 1, 3, 3, NORMAL, TRUE) } },
    { .name = "conv2d/depthwise-multiplier", .op = DFQ_OP_CONV2D, .n_inputs = 3, .build = build_conv_s1p1g4,
      .inputs = { IN4 (2, 4, 5, 5, NORMAL, TRUE), IN4 (8, 1, 3, 3, NORMAL, TRUE), IN1 (8, NORMAL, TRUE) } },
    { .name = "conv2d/depthwise-1x1-p1", .op = DFQ_OP_CONV2D, .n_inputs = 3, .build = build_conv_s1p1g3,
      .inputs = { IN4 (2, 3, 4, 4, NORMAL, TRUE), IN4 (3, 1, 1, 1, NORMAL, TRUE), IN1 (3, NORMAL, TRUE) } },
    { .name = "conv2d/depthwise-batch1", .op = DFQ_OP_CONV2D, .n_inputs = 3, .build = build_conv_s1p1g3,
      .inputs = { IN4 (1, 3, 5, 7, NORMAL, TRUE), IN4 (3, 1, 3, 3, NORMAL, TRUE), IN1 (3, NORMAL, TRUE) } },
    /* the depthwise 3x3 pad-1 kernel (issue 15): stride 2 on even and tiny planes with bias, wide and
     * one-row planes at stride 1 */
    { .name = "conv2d/depthwise3-s2-even", .op = DFQ_OP_CONV2D, .n_inputs = 3, .build = build_conv_s2p1g4,
      .inputs = { IN4 (2, 4, 8, 6, NORMAL, TRUE), IN4 (4, 1, 3, 3, NORMAL, TRUE), IN1 (4, NORMAL, TRUE) } },
    { .name = "conv2d/depthwise3-s2-2x3", .op = DFQ_OP_CONV2D, .n_inputs = 3, .build = build_conv_s2p1g4,
      .inputs = { IN4 (3, 4, 2, 3, NORMAL, TRUE), IN4 (4, 1, 3, 3, NORMAL, TRUE), IN1 (4, NORMAL, TRUE) } },
    { .name = "conv2d/depthwise3-s1-wide", .op = DFQ_OP_CONV2D, .n_inputs = 3, .build = build_conv_s1p1g3,
      .inputs = { IN4 (2, 3, 3, 19, NORMAL, TRUE), IN4 (3, 1, 3, 3, NORMAL, TRUE), IN1 (3, NORMAL, TRUE) } },
    { .name = "conv2d/depthwise3-s1-one-row", .op = DFQ_OP_CONV2D, .n_inputs = 3, .build = build_conv_s1p1g4,
      .inputs = { IN4 (2, 4, 1, 4, NORMAL, TRUE), IN4 (4, 1, 3, 3, NORMAL, TRUE), IN1 (4, NORMAL, TRUE) } },
    { .name = "conv2d/depthwise3-s1-input-grad-fresh", .op = DFQ_OP_CONV2D, .n_inputs = 3, .build = build_dw3_fresh,
      .inputs = { IN4 (3, 4, 6, 7, NORMAL, TRUE), IN4 (4, 1, 3, 3, NORMAL, TRUE), IN1 (4, NORMAL, TRUE) } },
    { .name = "conv2d/depthwise3-s2-input-grad-fresh", .op = DFQ_OP_CONV2D, .n_inputs = 3,
      .build = build_dw3_s2_fresh,
      .inputs = { IN4 (3, 4, 7, 20, NORMAL, TRUE), IN4 (4, 1, 3, 3, NORMAL, TRUE), IN1 (4, NORMAL, TRUE) } },
    { .name = "conv2d/depthwise3-s1-shared-input-add", .op = DFQ_OP_CONV2D, .n_inputs = 3,
      .build = build_dw3_shared_add,
      .inputs = { IN4 (2, 4, 5, 18, NORMAL, TRUE), IN4 (4, 1, 3, 3, NORMAL, TRUE), IN1 (4, NORMAL, TRUE) } },
    { .name = "conv2d/single-input-channel", .op = DFQ_OP_CONV2D, .n_inputs = 3, .build = build_conv_s1p0,
      .inputs = { IN4 (2, 1, 6, 6, NORMAL, TRUE), IN4 (3, 1, 3, 3, NORMAL, TRUE), IN1 (3, NORMAL, TRUE) } },

    /* batchnorm */
    { .name = "batchnorm/train-affine", .op = DFQ_OP_BATCHNORM, .n_inputs = 5, .build = build_bn_train_affine,
      .inputs = { IN4 (3, 2, 3, 3, NORMAL, TRUE), IN1 (2, POS, TRUE), IN1 (2, NORMAL, TRUE),
                  IN1 (2, NORMAL, FALSE), IN1 (2, POS, FALSE) } },
    { .name = "batchnorm/train-noaffine", .op = DFQ_OP_BATCHNORM, .n_inputs = 3, .build = build_bn_train_noaffine,
      .inputs = { IN4 (2, 3, 3, 2, NORMAL, TRUE), IN1 (3, NORMAL, FALSE), IN1 (3, POS, FALSE) } },
    { .name = "batchnorm/train-eps0.8", .op = DFQ_OP_BATCHNORM, .n_inputs = 3, .build = build_bn_train_eps08,
      .inputs = { IN4 (3, 2, 2, 3, NORMAL, TRUE), IN1 (2, POS, TRUE), IN1 (2, NORMAL, TRUE) } },
    { .name = "batchnorm/eval", .op = DFQ_OP_BATCHNORM, .n_inputs = 5, .build = build_bn_eval,
      .inputs = { IN4 (2, 3, 3, 3, NORMAL, TRUE), IN1 (3, POS, TRUE), IN1 (3, NORMAL, TRUE),
                  IN1 (3, NORMAL, FALSE), IN1 (3, POS, FALSE) } },
    { .name = "batchnorm/eval-noaffine", .op = DFQ_OP_BATCHNORM, .n_inputs = 3, .build = build_bn_eval_noaffine,
      .inputs = { IN4 (2, 2, 3, 3, NORMAL, TRUE), IN1 (2, NORMAL, FALSE), IN1 (2, POS, FALSE) } },
    { .name = "batchnorm/2d", .op = DFQ_OP_BATCHNORM, .n_inputs = 3, .build = build_bn_2d,
      .inputs = { IN2 (6, 3, NORMAL, TRUE), IN1 (3, POS, TRUE), IN1 (3, NORMAL, TRUE) } },

    /* pooling */
    { .name = "avg_pool/k2-s2", .op = DFQ_OP_AVG_POOL, .n_inputs = 1, .build = build_avg_pool_k2s2,
      .inputs = { IN4 (2, 3, 4, 6, NORMAL, TRUE) } },
    { .name = "avg_pool/k3-s2-odd", .op = DFQ_OP_AVG_POOL, .n_inputs = 1, .build = build_avg_pool_k3s2,
      .inputs = { IN4 (2, 2, 7, 7, NORMAL, TRUE) } },
    { .name = "global_avg_pool", .op = DFQ_OP_GLOBAL_AVG_POOL, .n_inputs = 1, .build = build_global_avg_pool,
      .inputs = { IN4 (2, 3, 3, 5, NORMAL, TRUE) } },
};
const guint dfq_n_gradcases_nn = G_N_ELEMENTS (dfq_gradcases_nn);
/* clang-format on */
