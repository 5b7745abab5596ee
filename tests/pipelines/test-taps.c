/* Taps and quantization sites (core/model/dfq-model-probe.c) and the tap
 * check of pipelines (core/pipeline/dfq-pipeline-taps.c): a model lists the
 * taps losses can read and its sites, with shapes; a loss's tap pattern that
 * matches nothing is a validation error at the pattern's file:line:col that
 * lists the model's taps. Uses the tiny-cnn and ca-kd plugins. */
#include <string.h>

#include "dfq-test-util.h"

static const DfqModelPoint *
find_point (GPtrArray *points, const char *name)
{
    for (guint i = 0; i < points->len; i++)
        if (g_str_equal (((DfqModelPoint *) points->pdata[i])->name, name))
            return points->pdata[i];
    return NULL;
}

static void
test_list_taps (void)
{
    g_autoptr (DfqRegistry) registry = dfq_test_registry_new ();
    g_autoptr (DfqFeature) model =
        dfq_test_make_feature (registry, DFQ_FEATURE_MODEL, "{use: tiny-cnn, width: 4, classes: 7}");
    g_autoptr (GError) error = NULL;
    g_autoptr (GPtrArray) taps = dfq_model_list_taps ((DfqModel *) model, 3, &error);
    g_assert_no_error (error);
    /* In forward order: the input first, the logits last. */
    g_assert_cmpuint (taps->len, ==, 9);
    g_assert_cmpstr (((DfqModelPoint *) taps->pdata[0])->name, ==, "input");
    g_assert_cmpstr (((DfqModelPoint *) taps->pdata[taps->len - 1])->name, ==, "logits");
    const DfqModelPoint *logits = find_point (taps, "logits");
    g_assert_cmpint (logits->kind, ==, DFQ_TAP_LOGITS);
    g_assert_cmpint (logits->n_dims, ==, 2);
    g_assert_cmpint (logits->shape[0], ==, 3);
    g_assert_cmpint (logits->shape[1], ==, 7);
    const DfqModelPoint *bn2 = find_point (taps, "bn2:in");
    g_assert_nonnull (bn2);
    g_assert_cmpint (bn2->kind, ==, DFQ_TAP_BN_IN);
    g_assert_cmpint (bn2->n_dims, ==, 4);
    g_assert_cmpint (bn2->shape[0], ==, 3);
    g_assert_cmpint (bn2->shape[1], ==, 8); /* twice the width */
    g_assert_cmpstr (dfq_tap_kind_name (DFQ_TAP_BN_IN), ==, "bn-in");
    /* No tap twice. */
    for (guint i = 0; i < taps->len; i++)
        for (guint j = i + 1; j < taps->len; j++)
            g_assert_cmpstr (((DfqModelPoint *) taps->pdata[i])->name, !=, ((DfqModelPoint *) taps->pdata[j])->name);
}

static void
test_list_sites (void)
{
    g_autoptr (DfqRegistry) registry = dfq_test_registry_new ();
    g_autoptr (DfqFeature) model = dfq_test_make_feature (registry, DFQ_FEATURE_MODEL, "{use: tiny-cnn, width: 4}");
    g_autoptr (GError) error = NULL;
    g_autoptr (GPtrArray) sites = dfq_model_list_sites ((DfqModel *) model, 2, &error);
    g_assert_no_error (error);
    guint n_weight = 0, n_act = 0;
    for (guint i = 0; i < sites->len; i++) {
        const DfqModelPoint *s = sites->pdata[i];
        if (s->kind == DFQ_SITE_WEIGHT) {
            n_weight++;
            /* A weight site has the weight's shape: no batch dimension. */
            g_autofree char *weight = g_strdup_printf ("%s.weight", s->name);
            DfqTensor *w = dfq_model_get ((DfqModel *) model, weight);
            g_assert_nonnull (w);
            g_assert_cmpint (s->n_dims, ==, w->n_dims);
            g_assert_cmpint (s->shape[0], ==, w->shape[0]);
        } else {
            n_act++;
            g_assert_cmpint (s->shape[0], ==, 2);
        }
    }
    g_assert_cmpuint (n_weight, ==, 3); /* conv1, conv2, fc */
    g_assert_cmpuint (n_act, >=, 2);
    g_assert_cmpint (((DfqModelPoint *) sites->pdata[0])->kind, ==, DFQ_SITE_WEIGHT);
}

/* Not a model: a loss (a feature that is no DfqModel) is refused, not run. */
static void
test_not_a_model (void)
{
    g_autoptr (DfqRegistry) registry = dfq_test_registry_new ();
    g_autoptr (DfqFeature) loss = dfq_test_make_feature (registry, DFQ_FEATURE_LOSS, "{use: ce}");
    g_assert_false (dfq_model_is_built (loss));
}

static const char taps_pipeline[] = "version: 1\n"
                                    "teacher:\n"
                                    "  model: {use: tiny-cnn, width: 4}\n"
                                    "train:\n"
                                    "  losses:\n"
                                    "    - {use: kd}\n"
                                    "    - {use: ca-kd, taps: ['bn1:out', '%s']}\n";

static DfqPipeline *
load_taps_pipeline (DfqRegistry *registry, const char *pattern, GError **error)
{
    g_autofree char *text = g_strdup_printf (taps_pipeline, pattern);
    return dfq_pipeline_new_from_data (registry, text, -1, "taps.yaml", NULL, error);
}

static void
test_check_taps_ok (void)
{
    g_autoptr (DfqRegistry) registry = dfq_test_registry_new ();
    g_autoptr (GError) error = NULL;
    g_autoptr (DfqPipeline) pipeline = load_taps_pipeline (registry, "bn*:in", &error);
    g_assert_no_error (error);
    g_assert_true (dfq_pipeline_check_taps (pipeline, &error));
    g_assert_no_error (error);
}

static void
test_check_taps_no_match (void)
{
    g_autoptr (DfqRegistry) registry = dfq_test_registry_new ();
    g_autoptr (GError) error = NULL;
    /* Binding accepts it: the pattern is a well-formed string. */
    g_autoptr (DfqPipeline) pipeline = load_taps_pipeline (registry, "layers.*:body", &error);
    g_assert_no_error (error);
    g_assert_false (dfq_pipeline_check_taps (pipeline, &error));
    g_assert_error (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_BAD_VALUE);
    /* At the pattern itself: line 7, column 38 (the opening quote). */
    const char *at = "taps.yaml:7:38: ";
    if (!g_str_has_prefix (error->message, at))
        g_error ("expected the location %s in: %s", at, error->message);
    g_assert_nonnull (strstr (error->message, "train.losses[1] (ca-kd): tap pattern 'layers.*:body'"));
    /* The loss is named once, and every tap of the model is listed. */
    g_assert_null (strstr (strstr (error->message, "(ca-kd)") + 1, "(ca-kd)"));
    g_assert_nonnull (strstr (error->message, "(taps: input, conv1:out, bn1:in, bn1:out, conv2:out, bn2:in, "
                                              "bn2:out, feature, logits)"));
    g_assert_nonnull (strstr (error->message, "dfq inspect tiny-cnn --taps"));
}

/* Patterns from a loss's defaults are checked too (ca-kd's default
 * ['*bn1:out', '*bn2:out'] matches tiny-cnn's bn1:out and bn2:out), and a
 * pattern given by --set is located at the --set. */
static void
test_check_taps_defaults_and_set (void)
{
    g_autoptr (DfqRegistry) registry = dfq_test_registry_new ();
    g_autoptr (GError) error = NULL;
    static const char text[] = "version: 1\n"
                               "teacher: {model: {use: tiny-cnn}}\n"
                               "train:\n"
                               "  losses: [kd, {use: ca-kd}]\n";
    g_autoptr (DfqPipeline) ok = dfq_pipeline_new_from_data (registry, text, -1, "d.yaml", NULL, &error);
    g_assert_no_error (error);
    g_assert_true (dfq_pipeline_check_taps (ok, &error));
    g_assert_no_error (error);
    static const char *const sets[] = { "train.losses[1].taps=[conv3:out]", NULL };
    g_autoptr (DfqPipeline) bad = dfq_pipeline_new_from_data (registry, text, -1, "d.yaml", sets, &error);
    g_assert_no_error (error);
    g_assert_false (dfq_pipeline_check_taps (bad, &error));
    g_assert_error (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_BAD_VALUE);
    if (!g_str_has_prefix (error->message, "--set train.losses[1].taps: "))
        g_error ("expected the --set as location in: %s", error->message);
    g_assert_nonnull (strstr (error->message, "'conv3:out'"));
}

int
main (int argc, char **argv)
{
    g_test_init (&argc, &argv, NULL);
    g_test_add_func ("/model/taps/list", test_list_taps);
    g_test_add_func ("/model/sites/list", test_list_sites);
    g_test_add_func ("/model/taps/not-a-model", test_not_a_model);
    g_test_add_func ("/pipeline/taps/ok", test_check_taps_ok);
    g_test_add_func ("/pipeline/taps/no-match", test_check_taps_no_match);
    g_test_add_func ("/pipeline/taps/defaults-and-set", test_check_taps_defaults_and_set);
    return g_test_run ();
}
