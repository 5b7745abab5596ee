/* `dfq validate` (core/cli): loads a pipeline with its includes and --set
 * overrides, binds it against the schema and every feature's params, and
 * reports the first problem with file:line:col; --print-config prints the
 * resolved config. */
#include <stdio.h>

#include "dfq-cli.h"

static const char dfq_cmd_validate_description[] =
    "Checks every key of PIPELINE: unknown keys, wrong types, out-of-range values and\n"
    "unknown features are errors with file:line:col, and so is a loss's tap pattern that\n"
    "matches no tap of the teacher's model (the message lists the model's taps).\n"
    "Exit status: 0 valid, 2 invalid.\n"
    "\n"
    "Examples:\n"
    "  dfq validate pipelines/quickstart.yaml\n"
    "  dfq validate pipelines/quickstart.yaml --set train.epochs=2 --set seed=3 --print-config\n";

static char *
dfq_cmd_validate_summary (const DfqPipelineConfig *config)
{
    GString *out = g_string_new (NULL);
    const DfqFeature *model = config->teacher.model;
    g_string_append_printf (out, "teacher %s", model != NULL ? model->klass->name : "(none)");
    g_string_append_printf (out, ", synthesizer %s",
                            config->synthesizer != NULL ? config->synthesizer->klass->name : "(none)");
    g_string_append_printf (out, ", quantizer %s",
                            config->student.quantizer != NULL ? config->student.quantizer->klass->name
                                                              : "(none: full precision)");
    guint n_losses = config->train.losses != NULL ? config->train.losses->len : 0;
    g_string_append_printf (out, ", %u loss%s", n_losses, n_losses == 1 ? "" : "es");
    return g_string_free (out, FALSE);
}

void
dfq_cli_hint_sweep_file (const char *path, GError **error)
{
    if (error == NULL || *error == NULL ||
        !g_error_matches (*error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_UNKNOWN_PARAM))
        return;
    g_autoptr (DfqConfigNode) tree = dfq_config_load_file (path, NULL);
    if (tree == NULL || tree->kind != DFQ_CONFIG_MAPPING || dfq_config_mapping_get (tree, "pipeline") == NULL)
        return;
    g_autofree char *message = g_strdup ((*error)->message);
    g_clear_error (error);
    g_set_error (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_UNKNOWN_PARAM,
                 "%s\n%s is a sweep file (its 'pipeline:' names the base pipeline): check it with "
                 "`dfq sweep --dry-run %s`, run it with `dfq sweep %s` (docs/sweeps.md)",
                 message, path, path, path);
}

gboolean
dfq_cmd_validate (DfqCli *cli, int argc, char **argv, GError **error)
{
    g_auto (GStrv) overrides = NULL;
    gboolean print_config = FALSE;
    gboolean help = FALSE;
    const GOptionEntry entries[] = {
        { "set", 's', 0, G_OPTION_ARG_STRING_ARRAY, &overrides,
          "Override a key (a.b.c=value, value in YAML); repeatable", "KEY=VALUE" },
        { "print-config", 'p', 0, G_OPTION_ARG_NONE, &print_config,
          "Print the resolved config (defaults filled) as YAML", NULL },
        { NULL }
    };
    if (!dfq_cli_parse (cli, "validate", "PIPELINE.yaml", "check a pipeline file", dfq_cmd_validate_description,
                        entries, &argc, &argv, &help, error))
        return FALSE;
    if (help)
        return TRUE;
    if (argc != 2) {
        g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                     "expected one pipeline file, got %d arguments (see dfq validate --help)", argc - 1);
        return FALSE;
    }

    DfqRegistry *registry = dfq_cli_get_registry (cli);
    g_autoptr (DfqPipeline) pipeline =
        dfq_pipeline_new_from_file (registry, argv[1], (const char *const *) overrides, error);
    if (pipeline == NULL) {
        dfq_cli_hint_sweep_file (argv[1], error);
        return FALSE;
    }
    if (!dfq_pipeline_check_taps (pipeline, error))
        return FALSE;
    if (print_config) {
        g_autofree char *yaml = dfq_pipeline_to_yaml (pipeline);
        fputs (yaml, stdout);
    } else {
        g_autofree char *summary = dfq_cmd_validate_summary (dfq_pipeline_get_config (pipeline));
        printf ("%s: valid (%s)\n", argv[1], summary);
    }
    return TRUE;
}
