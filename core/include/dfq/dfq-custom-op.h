/* Custom ops: an op of a plugin's own, with a forward and a backward, that
 * takes part in autograd and in the arenas exactly like a built-in op (the
 * references are ggml's custom ops and PyTorch's autograd.Function). A plugin
 * describes the op once, as a static const DfqCustomOp, and builds results with
 * dfq_custom_op(): the result lives in the arena given, remembers its sources,
 * and dfq_backward() calls the op's backward in the same topological walk as
 * every other op. dfq_gradcheck() (dfq-gradcheck.h) checks the backward
 * against central differences in the plugin's own tests. */
#pragma once

#include <glib.h>
#include <dfq/dfq-macros.h>
#include <dfq/dfq-tensor.h>

G_BEGIN_DECLS

typedef struct _DfqCustomOp DfqCustomOp;

/* What one result of a custom op carries (in its arena, at dst->op_aux; get it
 * with dfq_custom_op_call()). */
typedef struct {
    const DfqCustomOp *op;
    gpointer user_data; /* as given to dfq_custom_op(); not owned: must outlive the backward */
    gpointer saved;     /* the forward may keep memory for the backward here: allocate it
                         * with dfq_arena_alloc (dst->arena, ...) so it dies with the result */
    gpointer reserved[2];
} DfqCustomOpCall;

/* Fills every element of @dst (F32, contiguous, the shape given to
 * dfq_custom_op()) from its sources dst->src[0..n_src-1] and the float
 * parameters dst->op_fparams[0..n_params-1]. */
typedef void (*DfqCustomForwardFn) (DfqTensor *dst, DfqCustomOpCall *call);
/* Reads dst->grad (dL/d dst) and ADDS (+=) dL/d src[i] into @src_grads[i] (as
 * many floats as src[i] has elements), for every i whose @src_grads[i] is not
 * NULL; NULL means that source needs no gradient. Temporary buffers: @scratch
 * (dfq_arena_alloc). Never free anything. */
typedef void (*DfqCustomBackwardFn) (DfqTensor *dst, DfqCustomOpCall *call, float *const *src_grads,
                                     DfqArena *scratch);

struct _DfqCustomOp {
    const char *name;             /* "my-plugin.softplus", for messages */
    DfqCustomForwardFn forward;   /* required */
    DfqCustomBackwardFn backward; /* NULL: not differentiable (results never require a gradient) */
    gpointer reserved[4];
};

/**
 * dfq_custom_op:
 * @arena: where the result (and its DfqCustomOpCall) is allocated.
 * @op: the op (static: it must outlive every result of the op).
 * @n_dims: (in) rank of the result, 1..DFQ_MAX_DIMS; @shape its sizes.
 * @n_src: number of sources, 0..DFQ_MAX_SRC; @srcs the sources (F32 or I32).
 * @n_params: float parameters copied into the result's op_fparams, 0..DFQ_MAX_OP_PARAMS.
 * @user_data: (nullable) handed to forward and backward.
 *
 * Allocates the F32 result, links it to its sources (it requires a gradient
 * iff grad mode is on, @op has a backward and a source requires one), runs the
 * forward at once and returns the result. A result that needs no gradient is
 * a leaf, as for built-in ops.
 * Returns: (transfer none) the result, or NULL on a programmer error (bad
 * shape or counts: g_return_val_if_fail).
 */
DFQ_API DfqTensor *dfq_custom_op (DfqArena *arena, const DfqCustomOp *op, int n_dims, const gint64 *shape, int n_src,
                                  DfqTensor *const *srcs, int n_params, const float *params, gpointer user_data);

/* The call record of a result of dfq_custom_op() that requires a gradient,
 * or NULL (not a custom op's result, or a leaf). (transfer none) */
DFQ_API DfqCustomOpCall *dfq_custom_op_call (const DfqTensor *t);

G_END_DECLS
