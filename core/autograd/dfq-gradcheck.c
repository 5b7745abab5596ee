/* The public gradient check (core/autograd, dfq-gradcheck.h): what
 * tests/core/test-ops.c does for every built-in op, for plugins' own tests of
 * their custom ops. */
#include <math.h>

#include <dfq/dfq.h>

G_DEFINE_QUARK (dfq-gradcheck-error-quark, dfq_gradcheck_error)

/* sum(r * out) in double, with grad mode off. */
static double
dfq_gradcheck_eval (DfqGradcheckFn fn, gpointer user_data, DfqArena *arena, DfqTensor *const *inputs,
                    const DfqTensor *r)
{
    dfq_arena_reset (arena);
    gboolean prev = dfq_set_grad_enabled (FALSE);
    DfqTensor *out = fn (arena, inputs, user_data);
    dfq_set_grad_enabled (prev);
    if (out == NULL || dfq_tensor_numel (out) != dfq_tensor_numel (r))
        return NAN;
    const float *o = dfq_tensor_f32 (out), *w = dfq_tensor_f32 (r);
    double s = 0.0;
    for (gint64 i = 0; i < dfq_tensor_numel (out); i++)
        s += (double) o[i] * (double) w[i];
    return s;
}

/* Checks input @i against central differences; updates *worst. */
static gboolean
dfq_gradcheck_input (DfqGradcheckFn fn, gpointer user_data, DfqArena *arena, DfqTensor *const *inputs, int i,
                     const DfqTensor *r, const DfqGradcheckOptions *o, double *worst, GError **error)
{
    DfqTensor *in = inputs[i];
    gint64 n = dfq_tensor_numel (in);
    gint64 n_check = MIN (n, o->max_elements);
    float *x = dfq_tensor_f32 (in);
    const float *g = dfq_tensor_f32 (in->grad);
    for (gint64 k = 0; k < n_check; k++) {
        gint64 idx = n_check == n ? k : (gint64) (((guint64) k * 2654435761u) % (guint64) n);
        float saved = x[idx];
        x[idx] = saved + (float) o->eps;
        double fp = dfq_gradcheck_eval (fn, user_data, arena, inputs, r);
        x[idx] = saved - (float) o->eps;
        double fm = dfq_gradcheck_eval (fn, user_data, arena, inputs, r);
        x[idx] = saved;
        double numeric = (fp - fm) / (2.0 * o->eps);
        double err = fabs (numeric - g[idx]) / (o->atol + o->rtol * fabs (numeric));
        if (isnan (err))
            err = INFINITY;
        *worst = MAX (*worst, err);
        if (!(err <= 1.0)) {
            g_set_error (error, DFQ_GRADCHECK_ERROR, DFQ_GRADCHECK_ERROR_MISMATCH,
                         "input %d element %" G_GINT64_FORMAT ": analytic gradient %.6g, numeric %.6g "
                         "(tolerance %.3g + %.3g * |numeric|)",
                         i, idx, (double) g[idx], numeric, o->atol, o->rtol);
            return FALSE;
        }
    }
    return TRUE;
}

gboolean
dfq_gradcheck (DfqGradcheckFn fn, gpointer user_data, DfqTensor *const *inputs, int n_inputs,
               const DfqGradcheckOptions *options, double *worst, GError **error)
{
    g_return_val_if_fail (fn != NULL, FALSE);
    g_return_val_if_fail (n_inputs >= 0 && (n_inputs == 0 || inputs != NULL), FALSE);
    g_return_val_if_fail (error == NULL || *error == NULL, FALSE);
    DfqGradcheckOptions o = options != NULL ? *options : (DfqGradcheckOptions) { 0 };
    o.eps = o.eps > 0 ? o.eps : 1e-3;
    o.atol = o.atol > 0 ? o.atol : 5e-3;
    o.rtol = o.rtol > 0 ? o.rtol : 2e-2;
    o.max_elements = o.max_elements > 0 ? o.max_elements : 96;
    double w = 0.0;
    if (worst != NULL)
        *worst = 0.0;

    int n_checked = 0;
    for (int i = 0; i < n_inputs; i++) {
        g_return_val_if_fail (inputs[i] != NULL, FALSE);
        if (inputs[i]->flags & DFQ_TENSOR_FLAG_PARAM) {
            g_return_val_if_fail (inputs[i]->dtype == DFQ_DTYPE_F32, FALSE);
            dfq_tensor_zero_grad (inputs[i]);
            n_checked++;
        }
    }
    if (n_checked == 0) {
        g_set_error (error, DFQ_GRADCHECK_ERROR, DFQ_GRADCHECK_ERROR_BAD_INPUT,
                     "no input to check: mark the inputs to differentiate with dfq_tensor_set_param()");
        return FALSE;
    }
    g_autoptr (DfqArena) scratch = dfq_arena_new (0);
    g_autoptr (DfqArena) keep = dfq_arena_new (0);
    gboolean prev = dfq_set_grad_enabled (TRUE);
    DfqTensor *out = fn (scratch, inputs, user_data);
    dfq_set_grad_enabled (prev);
    if (out == NULL || out->dtype != DFQ_DTYPE_F32) {
        g_set_error (error, DFQ_GRADCHECK_ERROR, DFQ_GRADCHECK_ERROR_BAD_INPUT,
                     "the function returned %s", out == NULL ? "NULL" : "an integer tensor");
        return FALSE;
    }
    if (!dfq_tensor_all_finite (out)) {
        g_set_error (error, DFQ_GRADCHECK_ERROR, DFQ_GRADCHECK_ERROR_NOT_FINITE,
                     "the function's output is not finite at the inputs given");
        return FALSE;
    }
    DfqTensor *r = dfq_tensor_new_like (keep, out);
    dfq_rand_normal_fill (r, o.seed, 99, 0.0f, 1.0f);
    /* @out lives in @scratch, which every evaluation below resets. */
    gboolean connected = dfq_tensor_requires_grad (out);
    if (connected)
        dfq_backward_with_grad (out, r, scratch);
    for (int i = 0; i < n_inputs; i++) {
        if (!(inputs[i]->flags & DFQ_TENSOR_FLAG_PARAM))
            continue;
        if (inputs[i]->grad == NULL || !connected) {
            g_set_error (error, DFQ_GRADCHECK_ERROR, DFQ_GRADCHECK_ERROR_NO_GRADIENT,
                         "input %d gets no gradient: the output does not depend on it through ops with a backward",
                         i);
            return FALSE;
        }
        gboolean ok = dfq_gradcheck_input (fn, user_data, scratch, inputs, i, r, &o, &w, error);
        if (worst != NULL)
            *worst = w;
        if (!ok)
            return FALSE;
    }
    return TRUE;
}
