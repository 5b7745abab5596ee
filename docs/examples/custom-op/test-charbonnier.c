/* The custom op's own test, built and run out of tree (make check): its
 * backward against central differences with dfq_gradcheck(), at points
 * around 0 and far from it, for two values of eps; and the forward at a few
 * known values. Exit status 0: pass. */
#include <math.h>
#include <stdio.h>

#include "charbonnier-op.h"

static DfqTensor *
build (DfqArena *arena, DfqTensor *const *inputs, gpointer user_data)
{
    return charbonnier (arena, inputs[0], *(const float *) user_data);
}

int
main (void)
{
    int failures = 0;
    static const float eps_values[] = { 0.1f, 1.0f };
    for (guint e = 0; e < G_N_ELEMENTS (eps_values); e++) {
        g_autoptr (DfqArena) arena = dfq_arena_new (0);
        DfqTensor *x = dfq_tensor_new_2d (arena, DFQ_DTYPE_F32, 4, 9);
        dfq_rand_normal_fill (x, 1, e, 0.0f, 2.0f); /* seed 1, stream e */
        dfq_tensor_set_param (x); /* the input whose gradient is checked */
        g_autoptr (GError) error = NULL;
        double worst = 0;
        DfqGradcheckOptions options = { .seed = 5 };
        if (!dfq_gradcheck (build, (gpointer) &eps_values[e], &x, 1, &options, &worst, &error)) {
            fprintf (stderr, "not ok: eps %g: %s\n", eps_values[e], error->message);
            failures++;
        } else {
            printf ("ok: gradient check, eps %g (worst error ratio %.3g)\n", eps_values[e], worst);
        }
    }
    g_autoptr (DfqArena) arena = dfq_arena_new (0);
    DfqTensor *x = dfq_tensor_new_1d (arena, DFQ_DTYPE_F32, 3);
    dfq_tensor_f32 (x)[0] = 0.0f;
    dfq_tensor_f32 (x)[1] = 3.0f;
    dfq_tensor_f32 (x)[2] = -4.0f;
    DfqTensor *y = charbonnier (arena, x, 1.0f);
    const float want[] = { 0.0f, sqrtf (10.0f) - 1.0f, sqrtf (17.0f) - 1.0f };
    for (int i = 0; i < 3; i++)
        if (fabsf (dfq_tensor_f32 (y)[i] - want[i]) > 1e-6f) {
            fprintf (stderr, "not ok: charbonnier(%g) = %g, want %g\n", dfq_tensor_f32 (x)[i], dfq_tensor_f32 (y)[i],
                     want[i]);
            failures++;
        }
    if (failures == 0)
        printf ("ok: forward values\n");
    return failures == 0 ? 0 : 1;
}
