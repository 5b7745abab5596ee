/* PLACEHOLDER: being written; replaced before landing. */
#include "dfq-op-private.h"

void dfq_op_relu_forward (DfqTensor *dst) { (void) dst; g_assert_not_reached (); }
void dfq_op_relu_backward (DfqTensor *dst, DfqArena *scratch) { (void) dst; (void) scratch; g_assert_not_reached (); }
void dfq_op_relu6_forward (DfqTensor *dst) { (void) dst; g_assert_not_reached (); }
void dfq_op_relu6_backward (DfqTensor *dst, DfqArena *scratch) { (void) dst; (void) scratch; g_assert_not_reached (); }
void dfq_op_leaky_relu_forward (DfqTensor *dst) { (void) dst; g_assert_not_reached (); }
void dfq_op_leaky_relu_backward (DfqTensor *dst, DfqArena *scratch) { (void) dst; (void) scratch; g_assert_not_reached (); }
void dfq_op_tanh_forward (DfqTensor *dst) { (void) dst; g_assert_not_reached (); }
void dfq_op_tanh_backward (DfqTensor *dst, DfqArena *scratch) { (void) dst; (void) scratch; g_assert_not_reached (); }
void dfq_op_sigmoid_forward (DfqTensor *dst) { (void) dst; g_assert_not_reached (); }
void dfq_op_sigmoid_backward (DfqTensor *dst, DfqArena *scratch) { (void) dst; (void) scratch; g_assert_not_reached (); }
void dfq_op_dropout_forward (DfqTensor *dst) { (void) dst; g_assert_not_reached (); }
void dfq_op_dropout_backward (DfqTensor *dst, DfqArena *scratch) { (void) dst; (void) scratch; g_assert_not_reached (); }
