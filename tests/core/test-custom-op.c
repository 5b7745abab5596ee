/* Custom ops (dfq-custom-op.h) and the public gradient check
 * (dfq-gradcheck.h): a plugin's op takes part in autograd and the arenas like
 * a built-in op, and dfq_gradcheck() accepts a right backward and reports a
 * wrong one with the element and both values. */
#include <math.h>
#include <string.h>

#include "dfq-test-util.h"

static DfqTensor *
scaled_exp_fn (DfqArena *arena, DfqTensor *const *in, gpointer user_data G_GNUC_UNUSED)
{
    return dfq_test_scaled_exp (arena, in[0], in[1], 0.5f);
}

static void
make_inputs (DfqArena *arena, DfqTensor **in, gboolean params)
{
    in[0] = dfq_tensor_new_2d (arena, DFQ_DTYPE_F32, 4, 5);
    in[1] = dfq_tensor_new_2d (arena, DFQ_DTYPE_F32, 4, 5);
    dfq_rand_normal_fill (in[0], 3, 1, 0.0f, 1.0f);
    dfq_rand_uniform_fill (in[1], 3, 2, -1.0f, 1.0f);
    if (params) {
        dfq_tensor_set_param (in[0]);
        dfq_tensor_set_param (in[1]);
    }
}

static void
test_gradcheck_passes (void)
{
    g_autoptr (DfqArena) arena = dfq_arena_new (0);
    DfqTensor *in[2];
    make_inputs (arena, in, TRUE);
    g_autoptr (GError) error = NULL;
    double worst = -1;
    DfqGradcheckOptions options = { .seed = 7 };
    gboolean ok = dfq_gradcheck (scaled_exp_fn, NULL, in, 2, &options, &worst, &error);
    g_assert_no_error (error);
    g_assert_true (ok);
    g_assert_cmpfloat (worst, >=, 0.0);
    g_assert_cmpfloat (worst, <, 1.0);
}

/* The same op with its backward off by a factor of 2 on source 0. */
static void
bad_forward (DfqTensor *dst, DfqCustomOpCall *call G_GNUC_UNUSED)
{
    const float *a = dfq_tensor_f32 (dst->src[0]);
    float *y = dfq_tensor_f32 (dst);
    for (gint64 i = 0; i < dfq_tensor_numel (dst); i++)
        y[i] = a[i] * a[i];
}

static void
bad_backward (DfqTensor *dst, DfqCustomOpCall *call G_GNUC_UNUSED, float *const *g, DfqArena *scratch G_GNUC_UNUSED)
{
    const float *a = dfq_tensor_f32 (dst->src[0]), *gy = dfq_tensor_f32 (dst->grad);
    for (gint64 i = 0; i < dfq_tensor_numel (dst); i++)
        g[0][i] += gy[i] * 4.0f * a[i]; /* should be 2a */
}

static const DfqCustomOp bad_square_op = { .name = "test.bad-square", .forward = bad_forward, .backward = bad_backward };

static DfqTensor *
bad_square_fn (DfqArena *arena, DfqTensor *const *in, gpointer user_data G_GNUC_UNUSED)
{
    return dfq_custom_op (arena, &bad_square_op, in[0]->n_dims, in[0]->shape, 1, in, 0, NULL, NULL);
}

static void
test_gradcheck_catches_wrong_backward (void)
{
    g_autoptr (DfqArena) arena = dfq_arena_new (0);
    DfqTensor *in[2];
    make_inputs (arena, in, TRUE);
    g_autoptr (GError) error = NULL;
    double worst = 0;
    g_assert_false (dfq_gradcheck (bad_square_fn, NULL, in, 1, NULL, &worst, &error));
    g_assert_error (error, DFQ_GRADCHECK_ERROR, DFQ_GRADCHECK_ERROR_MISMATCH);
    g_assert_nonnull (strstr (error->message, "input 0 element"));
    g_assert_nonnull (strstr (error->message, "analytic gradient"));
    g_assert_cmpfloat (worst, >, 1.0);
    /* The inputs are restored after the check. */
    DfqTensor *again = dfq_tensor_new_2d (arena, DFQ_DTYPE_F32, 4, 5);
    dfq_rand_normal_fill (again, 3, 1, 0.0f, 1.0f);
    g_assert_cmpfloat (dfq_tensor_max_abs_diff (again, in[0]), ==, 0.0f);
}

static void
test_gradcheck_no_param (void)
{
    g_autoptr (DfqArena) arena = dfq_arena_new (0);
    DfqTensor *in[2];
    make_inputs (arena, in, FALSE);
    g_autoptr (GError) error = NULL;
    g_assert_false (dfq_gradcheck (scaled_exp_fn, NULL, in, 2, NULL, NULL, &error));
    g_assert_error (error, DFQ_GRADCHECK_ERROR, DFQ_GRADCHECK_ERROR_BAD_INPUT);
}

/* A training loop through the custom op: results live in the scratch arena,
 * gradients reach the PARAM, and from the second step on the loop makes no
 * system allocation (the arena's steady state, as for built-in ops). */
static void
test_arena_and_autograd (void)
{
    g_autoptr (DfqArena) params = dfq_arena_new (0);
    g_autoptr (DfqArena) scratch = dfq_arena_new (0);
    DfqTensor *in[2];
    make_inputs (params, in, FALSE);
    dfq_tensor_set_param (in[0]);
    guint allocs_after_first = 0;
    for (int step = 0; step < 4; step++) {
        dfq_arena_reset (scratch);
        dfq_tensor_zero_grad (in[0]);
        DfqTensor *y = dfq_test_scaled_exp (scratch, in[0], in[1], 2.0f);
        g_assert_true (y->arena == scratch);
        g_assert_cmpint (y->op, ==, DFQ_OP_CUSTOM);
        g_assert_true (dfq_tensor_requires_grad (y));
        g_assert_nonnull (dfq_custom_op_call (y));
        g_assert_true (dfq_custom_op_call (y)->op == &dfq_test_scaled_exp_op);
        DfqTensor *loss = dfq_sum (scratch, y);
        dfq_backward (loss, scratch);
        /* d/da sum(2 a exp(b)) = 2 exp(b) */
        const float *g = dfq_tensor_f32 (in[0]->grad), *b = dfq_tensor_f32 (in[1]);
        for (gint64 i = 0; i < dfq_tensor_numel (in[0]); i++)
            g_assert_cmpfloat_with_epsilon (g[i], 2.0f * expf (b[i]), 1e-5f);
        g_assert_null (in[1]->grad); /* not a PARAM: no gradient */
        if (step == 0)
            allocs_after_first = dfq_arena_n_system_allocs (scratch);
        else
            g_assert_cmpuint (dfq_arena_n_system_allocs (scratch), ==, allocs_after_first);
    }
}

static void
no_backward_forward (DfqTensor *dst, DfqCustomOpCall *call)
{
    const float *a = dfq_tensor_f32 (dst->src[0]);
    float k = *(const float *) call->user_data;
    for (gint64 i = 0; i < dfq_tensor_numel (dst); i++)
        dfq_tensor_f32 (dst)[i] = k * a[i];
}

static const DfqCustomOp no_backward_op = { .name = "test.no-backward", .forward = no_backward_forward };

/* An op without a backward is not differentiable: its results are leaves
 * even from a PARAM; grad mode off records nothing for any op. */
static void
test_no_backward_and_grad_mode (void)
{
    g_autoptr (DfqArena) arena = dfq_arena_new (0);
    DfqTensor *in[2];
    make_inputs (arena, in, TRUE);
    static const float k = 3.0f;
    DfqTensor *y = dfq_custom_op (arena, &no_backward_op, 2, in[0]->shape, 1, in, 0, NULL, (gpointer) &k);
    g_assert_false (dfq_tensor_requires_grad (y));
    g_assert_cmpint (y->op, ==, DFQ_OP_NONE);
    g_assert_cmpfloat (dfq_tensor_f32 (y)[3], ==, 3.0f * dfq_tensor_f32 (in[0])[3]);
    gboolean prev = dfq_set_grad_enabled (FALSE);
    DfqTensor *z = dfq_test_scaled_exp (arena, in[0], in[1], 1.0f);
    dfq_set_grad_enabled (prev);
    g_assert_false (dfq_tensor_requires_grad (z));
    g_assert_null (dfq_custom_op_call (z));
    g_assert_cmpstr (dfq_op_name (DFQ_OP_CUSTOM), ==, "custom");
}

int
main (int argc, char **argv)
{
    g_test_init (&argc, &argv, NULL);
    dfq_set_num_threads (1);
    g_test_add_func ("/custom-op/gradcheck/passes", test_gradcheck_passes);
    g_test_add_func ("/custom-op/gradcheck/catches-wrong-backward", test_gradcheck_catches_wrong_backward);
    g_test_add_func ("/custom-op/gradcheck/no-param", test_gradcheck_no_param);
    g_test_add_func ("/custom-op/arena-and-autograd", test_arena_and_autograd);
    g_test_add_func ("/custom-op/no-backward-and-grad-mode", test_no_backward_and_grad_mode);
    return g_test_run ();
}
