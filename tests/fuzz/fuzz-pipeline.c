/* libFuzzer target: the pipeline loader from memory (libyaml parse into the
 * config tree, --set overrides, emission, binding against the core schema and
 * the test features' param tables, --print-config round trip). Besides the
 * sanitizers it checks two properties and abort()s when one fails:
 *   1. any tree the parser accepts is emitted as YAML that parses again to
 *      the same YAML (emission is a fixed point);
 *   2. any pipeline that binds prints a resolved config that binds again and
 *      prints the same text.
 * Includes are not resolved (no file access); a top-level `include:` is then
 * just an unknown key.
 *
 *   build-fuzz/tests/fuzz/fuzz-pipeline -workers=1 -dict=tests/fuzz/pipeline.dict \
 *     corpus-dir tests/host/pipelines tests/host/bad-pipelines */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dfq/dfq.h>
#include "../host/host-test-features.h"

int LLVMFuzzerInitialize (int *argc, char ***argv);
int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

static DfqRegistry *fuzz_registry;

static void
fuzz_silence (const gchar *log_domain, GLogLevelFlags log_level, const gchar *message, gpointer user_data)
{
    /* Criticals are programmer errors: a finding. Debug noise is dropped. */
    if (log_level & (G_LOG_LEVEL_ERROR | G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_WARNING)) {
        fprintf (stderr, "%s: %s\n", log_domain != NULL ? log_domain : "?", message);
        abort ();
    }
}

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
    g_log_set_default_handler (fuzz_silence, NULL);
    fuzz_registry = dfq_registry_new ();
    GError *error = NULL;
    if (!host_test_register_features (fuzz_registry, &error)) {
        fprintf (stderr, "%s\n", error->message);
        abort ();
    }
    return 0;
}

/* Property 1: emit, parse, emit gives the same text. */
static void
fuzz_check_emission (const DfqConfigNode *tree)
{
    char *yaml = dfq_config_to_yaml (tree);
    GError *error = NULL;
    DfqConfigNode *back = dfq_config_parse (yaml, -1, "emitted.yaml", &error);
    if (back == NULL) {
        fprintf (stderr, "emitted YAML does not parse: %s\n---\n%s\n", error->message, yaml);
        abort ();
    }
    char *again = dfq_config_to_yaml (back);
    if (strcmp (yaml, again) != 0) {
        fprintf (stderr, "emission is not a fixed point:\n---\n%s\n---\n%s\n", yaml, again);
        abort ();
    }
    g_free (again);
    dfq_config_node_free (back);
    g_free (yaml);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    GError *error = NULL;
    DfqConfigNode *tree = dfq_config_parse ((const char *) data, (gssize) size, "fuzz.yaml", &error);
    if (tree == NULL) {
        /* Every rejection is a located pipeline error. */
        if (error == NULL || error->domain != DFQ_PIPELINE_ERROR)
            abort ();
        g_error_free (error);
        return 0;
    }
    fuzz_check_emission (tree);

    /* Overrides on a copy: paths into whatever shape the input has. */
    static const char *const overrides[] = { "train.epochs=3", "train.losses[0].weight=0.5",
                                             "synthesizer.optimizer={lr: 0.1}", "teacher.model.depth=8", "a.b.c.d=[1, {x: y}]" };
    DfqConfigNode *copy = dfq_config_node_copy (tree);
    for (guint i = 0; i < G_N_ELEMENTS (overrides); i++) {
        if (!dfq_config_apply_override (&copy, overrides[i], &error))
            g_clear_error (&error);
    }
    fuzz_check_emission (copy);
    dfq_config_node_free (copy);

    DfqPipeline *pipeline = dfq_pipeline_new_from_tree (fuzz_registry, tree, &error);
    if (pipeline == NULL) {
        if (error == NULL || error->domain != DFQ_PIPELINE_ERROR)
            abort ();
        g_error_free (error);
        return 0;
    }
    /* Property 2: the resolved config round-trips. */
    char *printed = dfq_pipeline_to_yaml (pipeline);
    DfqPipeline *again = dfq_pipeline_new_from_data (fuzz_registry, printed, -1, "printed.yaml", NULL, &error);
    if (again == NULL) {
        fprintf (stderr, "printed config does not load: %s\n---\n%s\n", error->message, printed);
        abort ();
    }
    char *printed2 = dfq_pipeline_to_yaml (again);
    if (strcmp (printed, printed2) != 0) {
        fprintf (stderr, "print-config is not a fixed point:\n---\n%s\n---\n%s\n", printed, printed2);
        abort ();
    }
    g_free (printed2);
    g_free (printed);
    dfq_pipeline_free (again);
    dfq_pipeline_free (pipeline);
    return 0;
}
