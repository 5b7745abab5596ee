/* The pipeline (core/pipeline): a YAML file loaded with its includes and
 * --set overrides, bound against the core schema (dfq-pipeline-schema.c) into a
 * DfqPipelineConfig, all of it validated before anything runs. */
#include <dfq/dfq.h>

struct _DfqPipeline {
    DfqRegistry *registry; /* not owned; features point into its plugins */
    char *filename;
    DfqConfigNode *tree;   /* as written (includes and overrides applied) */
    DfqPipelineConfig config;
};

void
dfq_pipeline_free (DfqPipeline *pipeline)
{
    if (pipeline == NULL)
        return;
    dfq_params_clear (dfq_pipeline_param_specs, dfq_pipeline_n_param_specs, &pipeline->config);
    dfq_config_node_free (pipeline->tree);
    g_free (pipeline->filename);
    g_free (pipeline);
}

static gboolean
dfq_pipeline_apply_overrides (DfqConfigNode **tree, const char *const *overrides, GError **error)
{
    for (guint i = 0; overrides != NULL && overrides[i] != NULL; i++)
        if (!dfq_config_apply_override (tree, overrides[i], error))
            return FALSE;
    return TRUE;
}

DfqPipeline *
dfq_pipeline_new_from_tree (DfqRegistry *registry, DfqConfigNode *tree, GError **error)
{
    g_autoptr (DfqConfigNode) owned = tree;
    g_return_val_if_fail (registry != NULL, NULL);
    g_return_val_if_fail (tree != NULL, NULL);
    g_return_val_if_fail (error == NULL || *error == NULL, NULL);

    if (tree->kind == DFQ_CONFIG_NULL) {
        dfq_config_set_error (error, tree, DFQ_PIPELINE_ERROR_SYNTAX,
                              "empty pipeline: a pipeline needs at least 'version: %d' and a teacher",
                              DFQ_PIPELINE_VERSION);
        return NULL;
    }
    g_autoptr (DfqPipeline) pipeline = g_new0 (DfqPipeline, 1);
    pipeline->registry = registry;
    pipeline->filename = tree->mark.file != NULL && tree->mark.file[0] != '\0' ? g_strdup (tree->mark.file) : NULL;
    pipeline->tree = g_steal_pointer (&owned);
    if (pipeline->tree->kind != DFQ_CONFIG_MAPPING) {
        g_autofree char *known = NULL;
        GString *names = g_string_new (NULL);
        for (guint i = 0; i < dfq_pipeline_n_param_specs; i++)
            g_string_append_printf (names, "%s%s", i > 0 ? ", " : "", dfq_pipeline_param_specs[i].name);
        known = g_string_free (names, FALSE);
        dfq_config_set_error (error, pipeline->tree, DFQ_PIPELINE_ERROR_BAD_VALUE,
                              "a pipeline is a mapping of keys (%s), not %s", known,
                              pipeline->tree->kind == DFQ_CONFIG_SEQUENCE ? "a list" : "a single value");
        return NULL;
    }
    if (!dfq_params_bind (registry, dfq_pipeline_param_specs, dfq_pipeline_n_param_specs, &pipeline->config,
                          pipeline->tree, "in the pipeline", NULL, error))
        return NULL;
    return g_steal_pointer (&pipeline);
}

DfqPipeline *
dfq_pipeline_new_from_file (DfqRegistry *registry, const char *path, const char *const *overrides,
                            GError **error)
{
    g_return_val_if_fail (registry != NULL, NULL);
    g_return_val_if_fail (path != NULL, NULL);
    g_return_val_if_fail (error == NULL || *error == NULL, NULL);
    g_autoptr (DfqConfigNode) tree = dfq_config_load_file (path, error);
    if (tree == NULL || !dfq_pipeline_apply_overrides (&tree, overrides, error))
        return NULL;
    return dfq_pipeline_new_from_tree (registry, g_steal_pointer (&tree), error);
}

DfqPipeline *
dfq_pipeline_new_from_data (DfqRegistry *registry, const char *text, gssize length, const char *filename,
                            const char *const *overrides, GError **error)
{
    g_return_val_if_fail (registry != NULL, NULL);
    g_return_val_if_fail (text != NULL || length == 0, NULL);
    g_return_val_if_fail (error == NULL || *error == NULL, NULL);
    g_autoptr (DfqConfigNode) tree = dfq_config_parse (text, length, filename, error);
    if (tree == NULL || !dfq_config_resolve_includes (&tree, filename, error) ||
        !dfq_pipeline_apply_overrides (&tree, overrides, error))
        return NULL;
    return dfq_pipeline_new_from_tree (registry, g_steal_pointer (&tree), error);
}

const DfqPipelineConfig *
dfq_pipeline_get_config (const DfqPipeline *pipeline)
{
    g_return_val_if_fail (pipeline != NULL, NULL);
    return &pipeline->config;
}

const DfqConfigNode *
dfq_pipeline_get_tree (const DfqPipeline *pipeline)
{
    g_return_val_if_fail (pipeline != NULL, NULL);
    return pipeline->tree;
}

const char *
dfq_pipeline_get_filename (const DfqPipeline *pipeline)
{
    g_return_val_if_fail (pipeline != NULL, NULL);
    return pipeline->filename;
}

char *
dfq_pipeline_to_yaml (const DfqPipeline *pipeline)
{
    g_return_val_if_fail (pipeline != NULL, NULL);
    g_autoptr (DfqConfigNode) resolved =
        dfq_params_to_config (dfq_pipeline_param_specs, dfq_pipeline_n_param_specs, &pipeline->config);
    return dfq_config_to_yaml (resolved);
}
