/* The table-driven gradient check: every op's backward against central finite
 * differences, on the cases of tests/core/gradcases-*.c (several shapes, odd
 * sizes, stride 2, groups = channels, every learnable quantizer parameter). */
#include <string.h>

#include "dfq-test-util.h"

typedef struct {
    const GradCase *cases;
    const guint *n;
} GradGroup;

static const GradGroup grad_groups[] = {
    { dfq_gradcases_elementwise, &dfq_n_gradcases_elementwise },
    { dfq_gradcases_nn, &dfq_n_gradcases_nn },
    { dfq_gradcases_quant, &dfq_n_gradcases_quant },
    { dfq_gradcases_math, &dfq_n_gradcases_math },
};

static void
test_gradcheck_case (gconstpointer data)
{
    const GradCase *c = data;
    char where[256];
    for (guint64 seed = 1; seed <= 2; seed++) {
        double worst = dfq_test_gradcheck (c, seed, where, sizeof where);
        g_test_message ("%s seed %" G_GUINT64_FORMAT ": worst error ratio %.3g (%s)", c->name, seed, worst, where);
        if (!(worst < 1.0)) {
            g_test_fail_printf ("%s seed %" G_GUINT64_FORMAT ": gradient mismatch, ratio %.3g at %s",
                                c->name, seed, worst, where);
            return;
        }
    }
}

static void
test_gradcheck_every_op_covered (void)
{
    g_test_summary ("Every op in DfqOp (but the leaf) has at least one gradcheck case");
    gboolean seen[DFQ_OP_COUNT] = { FALSE };
    for (guint g = 0; g < G_N_ELEMENTS (grad_groups); g++)
        for (guint i = 0; i < *grad_groups[g].n; i++)
            seen[grad_groups[g].cases[i].op] = TRUE;
    for (int op = 1; op < DFQ_OP_COUNT; op++)
        if (!seen[op])
            g_test_fail_printf ("op '%s' has no gradcheck case", dfq_op_name (op));
}

int
main (int argc, char **argv)
{
    g_test_init (&argc, &argv, NULL);
    dfq_set_num_threads (1);
    g_test_add_func ("/ops/gradcheck/every-op-covered", test_gradcheck_every_op_covered);
    for (guint g = 0; g < G_N_ELEMENTS (grad_groups); g++)
        for (guint i = 0; i < *grad_groups[g].n; i++) {
            g_autofree char *path = g_strdup_printf ("/ops/gradcheck/%s", grad_groups[g].cases[i].name);
            g_test_add_data_func (path, &grad_groups[g].cases[i], test_gradcheck_case);
        }
    return g_test_run ();
}
