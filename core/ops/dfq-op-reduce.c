/* PLACEHOLDER: being written; replaced before landing. */
#include "dfq-op-private.h"

void dfq_op_sum_forward (DfqTensor *dst) { (void) dst; g_assert_not_reached (); }
void dfq_op_sum_backward (DfqTensor *dst, DfqArena *scratch) { (void) dst; (void) scratch; g_assert_not_reached (); }
void dfq_op_mean_forward (DfqTensor *dst) { (void) dst; g_assert_not_reached (); }
void dfq_op_mean_backward (DfqTensor *dst, DfqArena *scratch) { (void) dst; (void) scratch; g_assert_not_reached (); }
void dfq_op_channel_mean_forward (DfqTensor *dst) { (void) dst; g_assert_not_reached (); }
void dfq_op_channel_mean_backward (DfqTensor *dst, DfqArena *scratch) { (void) dst; (void) scratch; g_assert_not_reached (); }
void dfq_op_channel_var_forward (DfqTensor *dst) { (void) dst; g_assert_not_reached (); }
void dfq_op_channel_var_backward (DfqTensor *dst, DfqArena *scratch) { (void) dst; (void) scratch; g_assert_not_reached (); }
void dfq_op_spatial_var_forward (DfqTensor *dst) { (void) dst; g_assert_not_reached (); }
void dfq_op_spatial_var_backward (DfqTensor *dst, DfqArena *scratch) { (void) dst; (void) scratch; g_assert_not_reached (); }
void dfq_op_row_sum_forward (DfqTensor *dst) { (void) dst; g_assert_not_reached (); }
void dfq_op_row_sum_backward (DfqTensor *dst, DfqArena *scratch) { (void) dst; (void) scratch; g_assert_not_reached (); }
void dfq_op_l2_normalize_forward (DfqTensor *dst) { (void) dst; g_assert_not_reached (); }
void dfq_op_l2_normalize_backward (DfqTensor *dst, DfqArena *scratch) { (void) dst; (void) scratch; g_assert_not_reached (); }
