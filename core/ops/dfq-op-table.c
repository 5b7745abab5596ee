/* The op table: the single place that wires every op's forward and backward
 * together (STYLE.md B.6). The static assert forces whoever adds an op to come
 * back here and to tests/core/test-ops.c. */
#include "dfq-op-private.h"

G_STATIC_ASSERT (DFQ_OP_COUNT == 48); /* bump when adding an op; then fix every table */

#define ROW(op, name) [op] = { #name, dfq_op_##name##_forward, dfq_op_##name##_backward }

static const DfqOpInfo dfq_op_info_table[DFQ_OP_COUNT] = {
    [DFQ_OP_NONE] = { "leaf", NULL, NULL },
    ROW (DFQ_OP_ADD, add),
    ROW (DFQ_OP_SUB, sub),
    ROW (DFQ_OP_MUL, mul),
    ROW (DFQ_OP_AFFINE, affine),
    ROW (DFQ_OP_ABS, abs),
    ROW (DFQ_OP_SQRT, sqrt),
    ROW (DFQ_OP_LOG, log),
    ROW (DFQ_OP_CHANNEL_AFFINE, channel_affine),
    ROW (DFQ_OP_RELU, relu),
    ROW (DFQ_OP_RELU6, relu6),
    ROW (DFQ_OP_LEAKY_RELU, leaky_relu),
    ROW (DFQ_OP_TANH, tanh),
    ROW (DFQ_OP_SIGMOID, sigmoid),
    ROW (DFQ_OP_DROPOUT, dropout),
    ROW (DFQ_OP_SUM, sum),
    ROW (DFQ_OP_MEAN, mean),
    ROW (DFQ_OP_CHANNEL_MEAN, channel_mean),
    ROW (DFQ_OP_CHANNEL_VAR, channel_var),
    ROW (DFQ_OP_SPATIAL_VAR, spatial_var),
    ROW (DFQ_OP_ROW_SUM, row_sum),
    ROW (DFQ_OP_L2_NORMALIZE, l2_normalize),
    ROW (DFQ_OP_SOFTMAX, softmax),
    ROW (DFQ_OP_LOG_SOFTMAX, log_softmax),
    ROW (DFQ_OP_CROSS_ENTROPY, cross_entropy),
    ROW (DFQ_OP_KL_DIV, kl_div),
    ROW (DFQ_OP_MSE, mse),
    ROW (DFQ_OP_ENTROPY, entropy),
    ROW (DFQ_OP_LINEAR, linear),
    ROW (DFQ_OP_CONV2D, conv2d),
    ROW (DFQ_OP_BATCHNORM, batchnorm),
    ROW (DFQ_OP_AVG_POOL, avg_pool),
    ROW (DFQ_OP_GLOBAL_AVG_POOL, global_avg_pool),
    ROW (DFQ_OP_UPSAMPLE_NEAREST, upsample_nearest),
    ROW (DFQ_OP_REFLECT_PAD, reflect_pad),
    ROW (DFQ_OP_CROP, crop),
    ROW (DFQ_OP_EMBEDDING, embedding),
    ROW (DFQ_OP_RESHAPE, reshape),
    ROW (DFQ_OP_CONCAT, concat),
    ROW (DFQ_OP_FAKE_QUANT, fake_quant),
    ROW (DFQ_OP_FAKE_QUANT_LSQ, fake_quant_lsq),
    ROW (DFQ_OP_FAKE_QUANT_CLIP, fake_quant_clip),
    ROW (DFQ_OP_SOFTBIT_QUANT, softbit_quant),
    ROW (DFQ_OP_ROUND_REG, round_reg),
    ROW (DFQ_OP_POW, pow),
    ROW (DFQ_OP_EXP, exp),
    ROW (DFQ_OP_MEAN_AXIS, mean_axis),
    ROW (DFQ_OP_CUSTOM, custom),
};

const DfqOpInfo *
dfq_priv_op_info (DfqOp op)
{
    g_return_val_if_fail (op >= 0 && op < DFQ_OP_COUNT, NULL);
    return &dfq_op_info_table[op];
}

const char *
dfq_op_name (DfqOp op)
{
    if (op < 0 || op >= DFQ_OP_COUNT)
        return "invalid";
    return dfq_op_info_table[op].name;
}
