/* PLACEHOLDER: being written; replaced before landing. */
#include "dfq-op-private.h"

void dfq_op_upsample_nearest_forward (DfqTensor *dst) { (void) dst; g_assert_not_reached (); }
void dfq_op_upsample_nearest_backward (DfqTensor *dst, DfqArena *scratch) { (void) dst; (void) scratch; g_assert_not_reached (); }
void dfq_op_reflect_pad_forward (DfqTensor *dst) { (void) dst; g_assert_not_reached (); }
void dfq_op_reflect_pad_backward (DfqTensor *dst, DfqArena *scratch) { (void) dst; (void) scratch; g_assert_not_reached (); }
void dfq_op_crop_forward (DfqTensor *dst) { (void) dst; g_assert_not_reached (); }
void dfq_op_crop_backward (DfqTensor *dst, DfqArena *scratch) { (void) dst; (void) scratch; g_assert_not_reached (); }
void dfq_op_embedding_forward (DfqTensor *dst) { (void) dst; g_assert_not_reached (); }
void dfq_op_embedding_backward (DfqTensor *dst, DfqArena *scratch) { (void) dst; (void) scratch; g_assert_not_reached (); }
void dfq_op_reshape_forward (DfqTensor *dst) { (void) dst; g_assert_not_reached (); }
void dfq_op_reshape_backward (DfqTensor *dst, DfqArena *scratch) { (void) dst; (void) scratch; g_assert_not_reached (); }
void dfq_op_concat_forward (DfqTensor *dst) { (void) dst; g_assert_not_reached (); }
void dfq_op_concat_backward (DfqTensor *dst, DfqArena *scratch) { (void) dst; (void) scratch; g_assert_not_reached (); }
