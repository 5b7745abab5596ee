/* PLACEHOLDER: being written; replaced before landing. */
#include "dfq-op-private.h"

void dfq_op_fake_quant_forward (DfqTensor *dst) { (void) dst; g_assert_not_reached (); }
void dfq_op_fake_quant_backward (DfqTensor *dst, DfqArena *scratch) { (void) dst; (void) scratch; g_assert_not_reached (); }
void dfq_op_fake_quant_lsq_forward (DfqTensor *dst) { (void) dst; g_assert_not_reached (); }
void dfq_op_fake_quant_lsq_backward (DfqTensor *dst, DfqArena *scratch) { (void) dst; (void) scratch; g_assert_not_reached (); }
void dfq_op_fake_quant_clip_forward (DfqTensor *dst) { (void) dst; g_assert_not_reached (); }
void dfq_op_fake_quant_clip_backward (DfqTensor *dst, DfqArena *scratch) { (void) dst; (void) scratch; g_assert_not_reached (); }
void dfq_op_softbit_quant_forward (DfqTensor *dst) { (void) dst; g_assert_not_reached (); }
void dfq_op_softbit_quant_backward (DfqTensor *dst, DfqArena *scratch) { (void) dst; (void) scratch; g_assert_not_reached (); }
void dfq_op_round_reg_forward (DfqTensor *dst) { (void) dst; g_assert_not_reached (); }
void dfq_op_round_reg_backward (DfqTensor *dst, DfqArena *scratch) { (void) dst; (void) scratch; g_assert_not_reached (); }
