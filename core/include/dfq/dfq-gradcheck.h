/* The gradient check, public so that a plugin's own tests can run it on its
 * custom ops (dfq-custom-op.h) and on any function built from ops: analytic
 * gradients of sum(r * f(inputs)), r a random tensor, from dfq_backward(),
 * against central differences of the same projection (sums in double). It is
 * the check tests/core/test-ops.c runs on every built-in op. */
#pragma once

#include <glib.h>
#include <dfq/dfq-macros.h>
#include <dfq/dfq-tensor.h>

G_BEGIN_DECLS

#define DFQ_GRADCHECK_ERROR (dfq_gradcheck_error_quark ())
typedef enum {
    DFQ_GRADCHECK_ERROR_MISMATCH,   /* an analytic gradient differs from the numeric one */
    DFQ_GRADCHECK_ERROR_NOT_FINITE, /* the function's output is NaN or Inf */
    DFQ_GRADCHECK_ERROR_NO_GRADIENT,/* a checked input got no gradient (the graph does not reach it) */
    DFQ_GRADCHECK_ERROR_BAD_INPUT,  /* no input to check, or the build function returned NULL */
} DfqGradcheckError;

DFQ_API GQuark dfq_gradcheck_error_quark (void);

/* Builds f(inputs) in @arena from ops (grad mode is on or off as the check
 * needs; do not change it). Must be deterministic. */
typedef DfqTensor *(*DfqGradcheckFn) (DfqArena *arena, DfqTensor *const *inputs, gpointer user_data);

typedef struct {
    double eps;           /* finite-difference step; 0: 1e-3 */
    double atol;          /* 0: 5e-3 */
    double rtol;          /* 0: 2e-2; an element passes when |analytic - numeric| <= atol + rtol |numeric| */
    guint64 seed;         /* of the random projection r */
    gint64 max_elements;  /* elements checked per input (spread over it); 0: 96 */
    gpointer reserved[4];
} DfqGradcheckOptions;

/**
 * dfq_gradcheck:
 * @fn: builds the function under test.
 * @inputs: (array length=n_inputs) F32 leaves with their values set. Those
 *   marked with dfq_tensor_set_param() are checked; the others stay constant.
 *   Their values are perturbed during the check and restored.
 * @options: (nullable) NULL: the defaults.
 * @worst: (out) (optional) the worst |analytic - numeric| / (atol + rtol |numeric|) (pass < 1).
 *
 * Returns: TRUE if every checked element passes; else FALSE with @error
 * (DFQ_GRADCHECK_ERROR_*) naming the input, the element and both values.
 */
DFQ_API gboolean dfq_gradcheck (DfqGradcheckFn fn, gpointer user_data, DfqTensor *const *inputs, int n_inputs,
                                const DfqGradcheckOptions *options, double *worst, GError **error);

G_END_DECLS
