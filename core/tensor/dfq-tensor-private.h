/* Tensor internals shared inside core. */
#pragma once

#include <dfq/dfq-tensor.h>

G_BEGIN_DECLS

guint64 dfq_priv_tensor_next_seq (void);
/* A tensor header with shape and strides but no data (views, ops that alias). */
DfqTensor *dfq_priv_tensor_new_header (DfqArena *arena, DfqDType dtype, int n_dims, const gint64 *shape);

/* dfq_tensor_new() without the zero fill, for results whose every element is
 * written before it is read (op forwards that overwrite their output). */
DfqTensor *dfq_priv_tensor_new_uninit (DfqArena *arena, DfqDType dtype, int n_dims, const gint64 *shape);

G_END_DECLS
