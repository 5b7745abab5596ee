/* PLACEHOLDER: being written; replaced before landing. */
#include "dfq-op-private.h"

void dfq_op_softmax_forward (DfqTensor *dst) { (void) dst; g_assert_not_reached (); }
void dfq_op_softmax_backward (DfqTensor *dst, DfqArena *scratch) { (void) dst; (void) scratch; g_assert_not_reached (); }
void dfq_op_log_softmax_forward (DfqTensor *dst) { (void) dst; g_assert_not_reached (); }
void dfq_op_log_softmax_backward (DfqTensor *dst, DfqArena *scratch) { (void) dst; (void) scratch; g_assert_not_reached (); }
void dfq_op_cross_entropy_forward (DfqTensor *dst) { (void) dst; g_assert_not_reached (); }
void dfq_op_cross_entropy_backward (DfqTensor *dst, DfqArena *scratch) { (void) dst; (void) scratch; g_assert_not_reached (); }
void dfq_op_kl_div_forward (DfqTensor *dst) { (void) dst; g_assert_not_reached (); }
void dfq_op_kl_div_backward (DfqTensor *dst, DfqArena *scratch) { (void) dst; (void) scratch; g_assert_not_reached (); }
void dfq_op_mse_forward (DfqTensor *dst) { (void) dst; g_assert_not_reached (); }
void dfq_op_mse_backward (DfqTensor *dst, DfqArena *scratch) { (void) dst; (void) scratch; g_assert_not_reached (); }
void dfq_op_entropy_forward (DfqTensor *dst) { (void) dst; g_assert_not_reached (); }
void dfq_op_entropy_backward (DfqTensor *dst, DfqArena *scratch) { (void) dst; (void) scratch; g_assert_not_reached (); }
