/* Reverse-mode autograd over the graph recorded by the ops of one step. */
#pragma once

#include <glib.h>
#include <dfq/dfq-macros.h>
#include <dfq/dfq-tensor.h>

G_BEGIN_DECLS

/**
 * dfq_backward:
 * @loss: a scalar (one element) tensor.
 * @scratch: arena for the gradients of intermediate tensors.
 *
 * Accumulates d(loss)/d(t) into t->grad for every tensor t that requires a
 * gradient and that @loss depends on. PARAM leaves keep their persistent .grad
 * (add across calls until zeroed); intermediate gradients live in @scratch.
 */
DFQ_API void dfq_backward (DfqTensor *loss, DfqArena *scratch);
/* Same, seeded with @grad_output (shape of @output) instead of 1. */
DFQ_API void dfq_backward_with_grad (DfqTensor *output, const DfqTensor *grad_output, DfqArena *scratch);

/* Name of an op ("conv2d"), for messages. */
DFQ_API const char *dfq_op_name (DfqOp op);

G_END_DECLS
