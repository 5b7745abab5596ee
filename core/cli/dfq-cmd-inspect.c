/* `dfq inspect` (core/cli), like gst-inspect: every feature by kind, or one
 * feature with every parameter (type, range or values, default, description),
 * as text, JSON (--json) or Markdown (--markdown: the text of docs/plugins.md).
 * Everything here is read from the param tables: plugins write none of it. */
#include <stdio.h>
#include <string.h>
#include <json-glib/json-glib.h>

#include "dfq-cli.h"
#include "../params/dfq-params-private.h"

static const char *const dfq_inspect_kind_titles[DFQ_FEATURE_KIND_COUNT] = {
    [DFQ_FEATURE_MODEL] = "Models",
    [DFQ_FEATURE_SYNTHESIZER] = "Synthesizers",
    [DFQ_FEATURE_LOSS] = "Losses",
    [DFQ_FEATURE_QUANTIZER] = "Quantizers",
    [DFQ_FEATURE_TRANSFORM] = "Transforms",
};

static const char dfq_cmd_inspect_description[] =
    "Without FEATURE: every feature on the plugin path, by kind.\n"
    "With FEATURE: its parameters (the YAML keys of {use: FEATURE, ...}).\n"
    "--schema: the keys of a pipeline file itself.\n"
    "MODEL --taps: the tap names a loss's patterns match, with shapes; --sites: the\n"
    "quantization sites. The model is built with its defaults, or is the teacher of\n"
    "--pipeline FILE (MODEL may then be left out).\n"
    "\n"
    "Examples:\n"
    "  dfq inspect\n"
    "  dfq inspect zeroq\n"
    "  dfq inspect resnet-cifar --taps\n"
    "  dfq inspect --taps --pipeline pipelines/gdfq-r20-fmnist-w4a4.yaml\n"
    "  dfq inspect --sites --json --pipeline pipelines/gdfq-r20-fmnist-w4a4.yaml\n"
    "  dfq inspect --markdown > docs/plugins.md\n";

/* Parameter rows -------------------------------------------------------------- */

/* A node as YAML flow text: "32", "[15, 30]", "{use: kd}". */
static void
dfq_inspect_flow_text (GString *out, const DfqConfigNode *node)
{
    switch (node->kind) {
    case DFQ_CONFIG_NULL:
        g_string_append (out, "null");
        break;
    case DFQ_CONFIG_SCALAR:
        g_string_append (out, node->scalar);
        break;
    case DFQ_CONFIG_SEQUENCE:
        g_string_append_c (out, '[');
        for (guint i = 0; i < node->values->len; i++) {
            if (i > 0)
                g_string_append (out, ", ");
            dfq_inspect_flow_text (out, node->values->pdata[i]);
        }
        g_string_append_c (out, ']');
        break;
    case DFQ_CONFIG_MAPPING:
    default:
        g_string_append_c (out, '{');
        for (guint i = 0; i < node->keys->len; i++) {
            g_string_append_printf (out, "%s%s: ", i > 0 ? ", " : "",
                                    ((const DfqConfigNode *) node->keys->pdata[i])->scalar);
            dfq_inspect_flow_text (out, node->values->pdata[i]);
        }
        g_string_append_c (out, '}');
        break;
    }
}

/* The defaults a STRUCT row gives its sub-params: its own default text, under
 * what the enclosing struct's default says for it. (transfer full), or NULL. */
static DfqConfigNode *
dfq_inspect_struct_defaults (const DfqParamSpec *spec, const DfqConfigNode *parent_defaults)
{
    DfqConfigNode *defaults = NULL;
    if (spec->default_value != NULL)
        defaults = dfq_config_parse (spec->default_value, -1, "<default>", NULL);
    if (parent_defaults != NULL && parent_defaults->kind == DFQ_CONFIG_MAPPING) {
        const DfqConfigNode *over = dfq_config_mapping_get (parent_defaults, spec->name);
        if (over != NULL && over->kind == DFQ_CONFIG_MAPPING)
            defaults = dfq_config_merge (defaults, dfq_config_node_copy (over));
    }
    return defaults;
}

/* The effective default of @spec as text, or NULL if it has none. */
static char *
dfq_inspect_default_text (const DfqParamSpec *spec, const DfqConfigNode *parent_defaults)
{
    if (parent_defaults != NULL && parent_defaults->kind == DFQ_CONFIG_MAPPING) {
        const DfqConfigNode *over = dfq_config_mapping_get (parent_defaults, spec->name);
        if (over != NULL && over->kind != DFQ_CONFIG_MAPPING) {
            GString *out = g_string_new (NULL);
            dfq_inspect_flow_text (out, over);
            return g_string_free (out, FALSE);
        }
    }
    if (spec->flags & DFQ_PARAM_FLAG_REQUIRED)
        return NULL;
    if (spec->default_value != NULL)
        return g_strdup (spec->default_value);
    switch (spec->type) {
    case DFQ_PARAM_TYPE_STRING:
    case DFQ_PARAM_TYPE_FEATURE:
        return g_strdup ("null");
    case DFQ_PARAM_TYPE_STRING_LIST:
    case DFQ_PARAM_TYPE_FEATURE_LIST:
    case DFQ_PARAM_TYPE_INT_LIST:
    case DFQ_PARAM_TYPE_DOUBLE_LIST:
        return g_strdup ("[]");
    default:
        return NULL;
    }
}

static char *
dfq_inspect_type_text (const DfqParamSpec *spec)
{
    switch (spec->type) {
    case DFQ_PARAM_TYPE_FEATURE:
        return g_strdup (dfq_feature_kind_name (spec->feature_kind));
    case DFQ_PARAM_TYPE_FEATURE_LIST:
        return g_strdup_printf ("%s-list", dfq_feature_kind_name (spec->feature_kind));
    default:
        return g_strdup (dfq_param_type_name (spec->type));
    }
}

/* "1 .. 4096", "sgd, adam", or NULL. */
static char *
dfq_inspect_range_text (const DfqParamSpec *spec)
{
    if (spec->type == DFQ_PARAM_TYPE_ENUM)
        return g_strjoinv (", ", (char **) spec->enum_values);
    return dfq_priv_param_range_string (spec);
}

typedef struct {
    const DfqParamSpec *spec;
    char *name; /* dotted for struct members: optimizer.lr */
    guint depth;
    char *type;
    char *range;
    char *default_text;
} DfqInspectRow;

static void
dfq_inspect_row_free (DfqInspectRow *row)
{
    g_free (row->name);
    g_free (row->type);
    g_free (row->range);
    g_free (row->default_text);
    g_free (row);
}

static void
dfq_inspect_collect_rows (const DfqParamSpec *specs, guint n_specs, const char *prefix, guint depth,
                          const DfqConfigNode *parent_defaults, GPtrArray *rows)
{
    for (guint i = 0; i < n_specs; i++) {
        const DfqParamSpec *spec = &specs[i];
        DfqInspectRow *row = g_new0 (DfqInspectRow, 1);
        row->spec = spec;
        row->name = prefix != NULL ? g_strdup_printf ("%s.%s", prefix, spec->name) : g_strdup (spec->name);
        row->depth = depth;
        row->type = dfq_inspect_type_text (spec);
        row->range = dfq_inspect_range_text (spec);
        row->default_text = spec->type == DFQ_PARAM_TYPE_STRUCT ? NULL : dfq_inspect_default_text (spec, parent_defaults);
        g_ptr_array_add (rows, row);
        if (spec->type == DFQ_PARAM_TYPE_STRUCT) {
            g_autoptr (DfqConfigNode) defaults = dfq_inspect_struct_defaults (spec, parent_defaults);
            dfq_inspect_collect_rows (spec->sub_params, spec->n_sub_params, row->name, depth + 1, defaults, rows);
        }
    }
}

static GPtrArray *
dfq_inspect_rows (const DfqParamSpec *specs, guint n_specs)
{
    GPtrArray *rows = g_ptr_array_new_with_free_func ((GDestroyNotify) dfq_inspect_row_free);
    dfq_inspect_collect_rows (specs, n_specs, NULL, 0, NULL, rows);
    return rows;
}

/* Text ------------------------------------------------------------------------ */

static void
dfq_inspect_print_params_text (GString *out, const DfqParamSpec *specs, guint n_specs, gboolean feature,
                               gboolean in_list)
{
    g_autoptr (GPtrArray) rows = dfq_inspect_rows (specs, n_specs);
    g_string_append (out, "\nParameters:\n");
    if (feature)
        g_string_append_printf (out, "  %-24s %-14s %s\n", "use", "name", "This feature's name (required)");
    if (feature && in_list)
        g_string_append_printf (out, "  %-24s %-14s %s\n", "weight", "double",
                                "Weight of this item in a feature list (default 1)");
    if (rows->len == 0 && !feature)
        g_string_append (out, "  (none)\n");
    for (guint i = 0; i < rows->len; i++) {
        const DfqInspectRow *row = rows->pdata[i];
        g_autofree char *indent = g_strnfill (row->depth * 2, ' ');
        g_autofree char *key = g_strdup_printf ("%s%s", indent, row->spec->name);
        g_string_append_printf (out, "  %-24s %-14s %s\n", key, row->type, row->spec->description);
        GString *details = g_string_new (NULL);
        if (row->spec->flags & DFQ_PARAM_FLAG_REQUIRED)
            g_string_append (details, "required");
        if (row->range != NULL)
            g_string_append_printf (details, "%s%s %s", details->len > 0 ? "; " : "",
                                    row->spec->type == DFQ_PARAM_TYPE_ENUM ? "values" : "range", row->range);
        if (row->default_text != NULL)
            g_string_append_printf (details, "%sdefault %s", details->len > 0 ? "; " : "", row->default_text);
        if (row->spec->flags & DFQ_PARAM_FLAG_PATH)
            g_string_append_printf (details, "%spath, relative to the pipeline file", details->len > 0 ? "; " : "");
        if (details->len > 0)
            g_string_append_printf (out, "  %-24s %-14s %s\n", "", "", details->str);
        g_string_free (details, TRUE);
    }
}

static void
dfq_inspect_feature_text (GString *out, DfqRegistry *registry, const DfqFeatureClass *klass)
{
    DfqPluginInfo info = { 0 };
    dfq_registry_get_plugin_info (registry, klass, &info);
    g_string_append_printf (out, "Feature:      %s\n", klass->name);
    g_string_append_printf (out, "Kind:         %s\n", dfq_feature_kind_name (klass->kind));
    g_string_append_printf (out, "Description:  %s\n", klass->description);
    if (info.plugin_name != NULL) {
        g_string_append_printf (out, "Plugin:       %s %s (%s)\n", info.plugin_name, info.plugin_version,
                                info.plugin_description);
        g_string_append_printf (out, "File:         %s\n", info.path);
        g_string_append_printf (out, "SHA-256:      %s\n", info.sha256);
    } else {
        g_string_append (out, "Plugin:       (built in)\n");
    }
    dfq_inspect_print_params_text (out, klass->params, klass->n_params, TRUE,
                                   klass->kind == DFQ_FEATURE_LOSS);
}

static void
dfq_inspect_list_text (GString *out, DfqCli *cli, DfqRegistry *registry)
{
    g_auto (GStrv) path = dfq_registry_get_search_path (cli->plugin_path);
    g_string_append (out, "Plugin path:\n");
    for (guint i = 0; path[i] != NULL; i++)
        g_string_append_printf (out, "  %s\n", path[i]);
    if (path[0] == NULL)
        g_string_append (out, "  (empty)\n");
    guint total = 0;
    for (guint k = 0; k < DFQ_FEATURE_KIND_COUNT; k++) {
        g_autoptr (GPtrArray) list = dfq_registry_list (registry, (DfqFeatureKind) k);
        g_string_append_printf (out, "\n%s (%u):\n", dfq_inspect_kind_titles[k], list->len);
        if (list->len == 0)
            g_string_append (out, "  (none)\n");
        for (guint i = 0; i < list->len; i++) {
            const DfqFeatureClass *klass = list->pdata[i];
            DfqPluginInfo info = { 0 };
            dfq_registry_get_plugin_info (registry, klass, &info);
            g_string_append_printf (out, "  %-20s %s [%s]\n", klass->name, klass->description,
                                    info.plugin_name != NULL ? info.plugin_name : "built in");
        }
        total += list->len;
    }
    g_autoptr (GPtrArray) plugins = dfq_registry_list_plugins (registry);
    g_string_append_printf (out, "\n%u feature%s from %u plugin%s.\n", total, total == 1 ? "" : "s", plugins->len,
                            plugins->len == 1 ? "" : "s");
}

/* Markdown -------------------------------------------------------------------- */

static void
dfq_inspect_md_cell (GString *out, const char *text)
{
    g_string_append (out, " ");
    for (const char *p = text; p != NULL && *p != '\0'; p++) {
        if (*p == '|')
            g_string_append (out, "\\|");
        else if (*p == '\n')
            g_string_append_c (out, ' ');
        else
            g_string_append_c (out, *p);
    }
    g_string_append (out, " |");
}

static void
dfq_inspect_params_markdown (GString *out, const DfqParamSpec *specs, guint n_specs, gboolean feature,
                             gboolean in_list)
{
    g_autoptr (GPtrArray) rows = dfq_inspect_rows (specs, n_specs);
    if (rows->len == 0) {
        g_string_append (out, "No parameters");
        g_string_append (out, feature ? " besides `use:`.\n\n" : ".\n\n");
        return;
    }
    g_string_append (out, "| Key | Type | Default | Range / values | Description |\n");
    g_string_append (out, "|---|---|---|---|---|\n");
    if (feature && in_list)
        g_string_append (out, "| `weight` | double | `1` |  | Weight of this item in a feature list |\n");
    for (guint i = 0; i < rows->len; i++) {
        const DfqInspectRow *row = rows->pdata[i];
        g_autofree char *key = g_strdup_printf ("`%s`", row->name);
        g_string_append (out, "|");
        dfq_inspect_md_cell (out, key);
        dfq_inspect_md_cell (out, row->type);
        g_autofree char *def = row->spec->flags & DFQ_PARAM_FLAG_REQUIRED ? g_strdup ("required")
                               : row->default_text != NULL                ? g_strdup_printf ("`%s`", row->default_text)
                                                                          : g_strdup ("");
        dfq_inspect_md_cell (out, def);
        dfq_inspect_md_cell (out, row->range != NULL ? row->range : "");
        g_autofree char *desc = row->spec->flags & DFQ_PARAM_FLAG_PATH
                                    ? g_strdup_printf ("%s (path, relative to the pipeline file)", row->spec->description)
                                    : g_strdup (row->spec->description);
        dfq_inspect_md_cell (out, desc);
        g_string_append_c (out, '\n');
    }
    g_string_append_c (out, '\n');
}

static void
dfq_inspect_feature_markdown (GString *out, DfqRegistry *registry, const DfqFeatureClass *klass)
{
    DfqPluginInfo info = { 0 };
    dfq_registry_get_plugin_info (registry, klass, &info);
    g_string_append_printf (out, "### `%s`\n\n%s", klass->name, klass->description);
    if (info.plugin_name != NULL)
        g_string_append_printf (out, " (plugin `%s` %s)", info.plugin_name, info.plugin_version);
    g_string_append (out, "\n\n");
    dfq_inspect_params_markdown (out, klass->params, klass->n_params, TRUE, klass->kind == DFQ_FEATURE_LOSS);
}

static void
dfq_inspect_list_markdown (GString *out, DfqRegistry *registry)
{
    g_string_append (out, "# Plugins\n\n"
                          "<!-- Generated by `dfq inspect --markdown` from the plugins' parameter tables: "
                          "do not edit by hand. -->\n\n"
                          "Every feature the plugins register, by kind. A feature is used in a pipeline as\n"
                          "`{use: <name>, <key>: <value>, ...}`; every key below is optional unless marked\n"
                          "required. See docs/pipeline-reference.md for the file format.\n\n");
    for (guint k = 0; k < DFQ_FEATURE_KIND_COUNT; k++) {
        g_autoptr (GPtrArray) list = dfq_registry_list (registry, (DfqFeatureKind) k);
        g_string_append_printf (out, "## %s\n\n", dfq_inspect_kind_titles[k]);
        if (list->len == 0)
            g_string_append (out, "_None registered._\n\n");
        for (guint i = 0; i < list->len; i++)
            dfq_inspect_feature_markdown (out, registry, list->pdata[i]);
    }
}

/* JSON ------------------------------------------------------------------------ */

static void
dfq_inspect_params_json (JsonBuilder *b, const DfqParamSpec *specs, guint n_specs,
                         const DfqConfigNode *parent_defaults)
{
    json_builder_begin_array (b);
    for (guint i = 0; i < n_specs; i++) {
        const DfqParamSpec *spec = &specs[i];
        json_builder_begin_object (b);
        json_builder_set_member_name (b, "name");
        json_builder_add_string_value (b, spec->name);
        json_builder_set_member_name (b, "type");
        json_builder_add_string_value (b, dfq_param_type_name (spec->type));
        json_builder_set_member_name (b, "description");
        json_builder_add_string_value (b, spec->description);
        json_builder_set_member_name (b, "required");
        json_builder_add_boolean_value (b, (spec->flags & DFQ_PARAM_FLAG_REQUIRED) != 0);
        if (spec->flags & DFQ_PARAM_FLAG_PATH) {
            json_builder_set_member_name (b, "path");
            json_builder_add_boolean_value (b, TRUE);
        }
        if (spec->type != DFQ_PARAM_TYPE_STRUCT) {
            g_autofree char *def = dfq_inspect_default_text (spec, parent_defaults);
            json_builder_set_member_name (b, "default");
            if (def != NULL)
                json_builder_add_string_value (b, def);
            else
                json_builder_add_null_value (b);
        }
        g_autofree char *range_text = dfq_priv_param_range_string (spec);
        if (range_text != NULL) {
            json_builder_set_member_name (b, "min");
            json_builder_add_double_value (b, spec->min);
            json_builder_set_member_name (b, "max");
            json_builder_add_double_value (b, spec->max);
        }
        if (spec->type == DFQ_PARAM_TYPE_ENUM) {
            json_builder_set_member_name (b, "values");
            json_builder_begin_array (b);
            for (guint v = 0; spec->enum_values[v] != NULL; v++)
                json_builder_add_string_value (b, spec->enum_values[v]);
            json_builder_end_array (b);
        }
        if (spec->type == DFQ_PARAM_TYPE_FEATURE || spec->type == DFQ_PARAM_TYPE_FEATURE_LIST) {
            json_builder_set_member_name (b, "feature_kind");
            json_builder_add_string_value (b, dfq_feature_kind_name (spec->feature_kind));
        }
        if (spec->type == DFQ_PARAM_TYPE_STRUCT) {
            g_autoptr (DfqConfigNode) defaults = dfq_inspect_struct_defaults (spec, parent_defaults);
            json_builder_set_member_name (b, "params");
            dfq_inspect_params_json (b, spec->sub_params, spec->n_sub_params, defaults);
        }
        json_builder_end_object (b);
    }
    json_builder_end_array (b);
}

static void
dfq_inspect_feature_json (JsonBuilder *b, DfqRegistry *registry, const DfqFeatureClass *klass)
{
    DfqPluginInfo info = { 0 };
    dfq_registry_get_plugin_info (registry, klass, &info);
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "name");
    json_builder_add_string_value (b, klass->name);
    json_builder_set_member_name (b, "kind");
    json_builder_add_string_value (b, dfq_feature_kind_name (klass->kind));
    json_builder_set_member_name (b, "description");
    json_builder_add_string_value (b, klass->description);
    json_builder_set_member_name (b, "plugin");
    if (info.plugin_name != NULL)
        json_builder_add_string_value (b, info.plugin_name);
    else
        json_builder_add_null_value (b);
    json_builder_set_member_name (b, "params");
    dfq_inspect_params_json (b, klass->params, klass->n_params, NULL);
    json_builder_end_object (b);
}

static char *
dfq_inspect_json_text (JsonBuilder *b)
{
    g_autoptr (JsonNode) root = json_builder_get_root (b);
    g_autoptr (JsonGenerator) gen = json_generator_new ();
    json_generator_set_pretty (gen, TRUE);
    json_generator_set_root (gen, root);
    char *text = json_generator_to_data (gen, NULL);
    char *with_newline = g_strconcat (text, "\n", NULL);
    g_free (text);
    return with_newline;
}

static void
dfq_inspect_list_json (JsonBuilder *b, DfqRegistry *registry)
{
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "dfq_version");
    json_builder_add_string_value (b, DFQ_VERSION_STRING);
    json_builder_set_member_name (b, "plugin_abi");
    json_builder_add_int_value (b, DFQ_PLUGIN_ABI_VERSION);
    json_builder_set_member_name (b, "plugins");
    json_builder_begin_array (b);
    g_autoptr (GPtrArray) plugins = dfq_registry_list_plugins (registry);
    for (guint i = 0; i < plugins->len; i++) {
        const DfqPluginInfo *info = plugins->pdata[i];
        json_builder_begin_object (b);
        json_builder_set_member_name (b, "name");
        json_builder_add_string_value (b, info->plugin_name);
        json_builder_set_member_name (b, "version");
        json_builder_add_string_value (b, info->plugin_version);
        json_builder_set_member_name (b, "description");
        json_builder_add_string_value (b, info->plugin_description);
        json_builder_set_member_name (b, "path");
        json_builder_add_string_value (b, info->path);
        json_builder_set_member_name (b, "sha256");
        json_builder_add_string_value (b, info->sha256);
        json_builder_end_object (b);
    }
    json_builder_end_array (b);
    json_builder_set_member_name (b, "features");
    json_builder_begin_array (b);
    for (guint k = 0; k < DFQ_FEATURE_KIND_COUNT; k++) {
        g_autoptr (GPtrArray) list = dfq_registry_list (registry, (DfqFeatureKind) k);
        for (guint i = 0; i < list->len; i++)
            dfq_inspect_feature_json (b, registry, list->pdata[i]);
    }
    json_builder_end_array (b);
    json_builder_end_object (b);
}

/* Taps and quantization sites of a model ---------------------------------------- */

/* The model to probe: the teacher of @pipeline_path (with @sets), or @name
 * built with its defaults. @owned / @pipeline keep it alive. */
static DfqModel *
dfq_inspect_get_model (DfqRegistry *registry, const char *name, const char *pipeline_path, char **sets,
                       DfqPipeline **pipeline, DfqFeature **owned, GError **error)
{
    if (pipeline_path != NULL) {
        *pipeline = dfq_pipeline_new_from_file (registry, pipeline_path, (const char *const *) sets, error);
        if (*pipeline == NULL)
            return NULL;
        DfqFeature *teacher = dfq_pipeline_get_config (*pipeline)->teacher.model;
        if (name != NULL && g_strcmp0 (teacher->klass->name, name) != 0) {
            g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                         "%s: the teacher is '%s', not '%s' (leave MODEL out with --pipeline)", pipeline_path,
                         teacher->klass->name, name);
            return NULL;
        }
        return (DfqModel *) teacher;
    }
    const DfqFeatureClass *klass = dfq_registry_find (registry, DFQ_FEATURE_MODEL, name);
    if (klass == NULL) {
        g_autofree char *known = dfq_priv_registry_names (registry, DFQ_FEATURE_MODEL);
        g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                     "--taps and --sites take a model; '%s' is not one (models: %s)", name, known);
        return NULL;
    }
    *owned = dfq_feature_new_default (registry, klass, error);
    return (DfqModel *) *owned;
}

static void
dfq_inspect_shape_text (GString *out, const DfqModelPoint *p)
{
    g_string_append_c (out, '[');
    for (int d = 0; d < p->n_dims; d++)
        g_string_append_printf (out, "%s%" G_GINT64_FORMAT, d > 0 ? ", " : "", p->shape[d]);
    g_string_append_c (out, ']');
}

static const char *
dfq_inspect_point_kind (const DfqModelPoint *p, gboolean sites)
{
    if (sites)
        return p->kind == DFQ_SITE_WEIGHT ? "weight" : "activation";
    return dfq_tap_kind_name ((DfqTapKind) p->kind);
}

static void
dfq_inspect_points_text (GString *out, const DfqModel *model, const char *source, GPtrArray *points,
                         gboolean sites)
{
    const char *name = ((const DfqFeature *) model)->klass->name;
    g_string_append_printf (out, "%s of %s (%s); activation shapes for a batch of 1:\n",
                            sites ? "Quantization sites" : "Taps", name, source);
    for (guint i = 0; i < points->len; i++) {
        const DfqModelPoint *p = points->pdata[i];
        g_string_append_printf (out, "  %-28s %-10s ", p->name, dfq_inspect_point_kind (p, sites));
        dfq_inspect_shape_text (out, p);
        g_string_append_c (out, '\n');
    }
    if (sites)
        g_string_append_printf (out, "%u sites; quantizer overrides name them (w:<site>=8, a:<site>=8)\n",
                                points->len);
    else
        g_string_append_printf (out,
                                "%u taps; losses name them by glob patterns, e.g. '*:in' (every BN input), "
                                "'logits'\n",
                                points->len);
}

static void
dfq_inspect_points_json (GString *out, const DfqModel *model, GPtrArray *points, gboolean sites)
{
    g_autoptr (JsonBuilder) b = json_builder_new ();
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "model");
    json_builder_add_string_value (b, ((const DfqFeature *) model)->klass->name);
    json_builder_set_member_name (b, sites ? "sites" : "taps");
    json_builder_begin_array (b);
    for (guint i = 0; i < points->len; i++) {
        const DfqModelPoint *p = points->pdata[i];
        json_builder_begin_object (b);
        json_builder_set_member_name (b, "name");
        json_builder_add_string_value (b, p->name);
        json_builder_set_member_name (b, "kind");
        json_builder_add_string_value (b, dfq_inspect_point_kind (p, sites));
        json_builder_set_member_name (b, "shape");
        json_builder_begin_array (b);
        for (int d = 0; d < p->n_dims; d++)
            json_builder_add_int_value (b, p->shape[d]);
        json_builder_end_array (b);
        json_builder_end_object (b);
    }
    json_builder_end_array (b);
    json_builder_end_object (b);
    g_autofree char *text = dfq_inspect_json_text (b);
    g_string_append (out, text);
}

/* dfq inspect [MODEL] --taps|--sites [--pipeline FILE [--set K=V]] */
static gboolean
dfq_inspect_model_points (DfqRegistry *registry, const char *name, const char *pipeline_path, char **sets,
                          gboolean sites, gboolean json, GString *out, GError **error)
{
    g_autoptr (DfqPipeline) pipeline = NULL;
    g_autoptr (DfqFeature) owned = NULL;
    DfqModel *model = dfq_inspect_get_model (registry, name, pipeline_path, sets, &pipeline, &owned, error);
    if (model == NULL)
        return FALSE;
    g_autoptr (GPtrArray) points = sites ? dfq_model_list_sites (model, 1, error)
                                         : dfq_model_list_taps (model, 1, error);
    if (points == NULL)
        return FALSE;
    g_autofree char *source = pipeline_path != NULL ? g_strdup_printf ("the teacher of %s", pipeline_path)
                                                    : g_strdup ("its defaults");
    if (json)
        dfq_inspect_points_json (out, model, points, sites);
    else
        dfq_inspect_points_text (out, model, source, points, sites);
    return TRUE;
}

/* The command ------------------------------------------------------------------ */

gboolean
dfq_cmd_inspect (DfqCli *cli, int argc, char **argv, GError **error)
{
    gboolean json = FALSE, markdown = FALSE, schema = FALSE, help = FALSE, taps = FALSE, sites = FALSE;
    g_autofree char *pipeline_path = NULL;
    g_auto (GStrv) sets = NULL;
    const GOptionEntry entries[] = {
        { "json", 'j', 0, G_OPTION_ARG_NONE, &json, "Print JSON", NULL },
        { "markdown", 'm', 0, G_OPTION_ARG_NONE, &markdown, "Print Markdown (docs/plugins.md)", NULL },
        { "schema", 0, 0, G_OPTION_ARG_NONE, &schema, "Describe the keys of a pipeline file instead", NULL },
        { "taps", 't', 0, G_OPTION_ARG_NONE, &taps, "List the tap names of MODEL (what losses read) with shapes",
          NULL },
        { "sites", 0, 0, G_OPTION_ARG_NONE, &sites, "List the quantization sites of MODEL with shapes", NULL },
        { "pipeline", 'p', 0, G_OPTION_ARG_FILENAME, &pipeline_path,
          "With --taps/--sites: the model of this pipeline's teacher section", "FILE" },
        { "set", 's', 0, G_OPTION_ARG_STRING_ARRAY, &sets, "With --pipeline: override a key", "KEY=VALUE" },
        { NULL }
    };
    if (!dfq_cli_parse (cli, "inspect", "[FEATURE]", "describe features and their parameters",
                        dfq_cmd_inspect_description, entries, &argc, &argv, &help, error))
        return FALSE;
    if (help)
        return TRUE;
    if (taps || sites) {
        if ((taps && sites) || markdown || schema || argc > 2 || (argc < 2 && pipeline_path == NULL)) {
            g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                         "--taps or --sites takes a MODEL or --pipeline FILE (one of the two options; --json "
                         "allowed; see dfq inspect --help)");
            return FALSE;
        }
        g_autoptr (GString) points = g_string_new (NULL);
        if (!dfq_inspect_model_points (dfq_cli_get_registry (cli), argc == 2 ? argv[1] : NULL, pipeline_path, sets,
                                       sites, json, points, error))
            return FALSE;
        fputs (points->str, stdout);
        return TRUE;
    }
    if (pipeline_path != NULL || sets != NULL) {
        g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE, "--pipeline and --set go with --taps or --sites");
        return FALSE;
    }
    if (argc > 2 || (json && markdown) || (schema && argc > 1)) {
        g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                     "expected at most one FEATURE, one of --json/--markdown, and no FEATURE with --schema "
                     "(see dfq inspect --help)");
        return FALSE;
    }

    g_autoptr (GString) out = g_string_new (NULL);
    if (schema) {
        if (json) {
            g_autoptr (JsonBuilder) b = json_builder_new ();
            dfq_inspect_params_json (b, dfq_pipeline_param_specs, dfq_pipeline_n_param_specs, NULL);
            g_autofree char *text = dfq_inspect_json_text (b);
            g_string_append (out, text);
        } else if (markdown) {
            dfq_inspect_params_markdown (out, dfq_pipeline_param_specs, dfq_pipeline_n_param_specs, FALSE, FALSE);
        } else {
            g_string_append_printf (out, "Pipeline file, version %d: top-level keys\n", DFQ_PIPELINE_VERSION);
            dfq_inspect_print_params_text (out, dfq_pipeline_param_specs, dfq_pipeline_n_param_specs, FALSE, FALSE);
        }
        fputs (out->str, stdout);
        return TRUE;
    }

    DfqRegistry *registry = dfq_cli_get_registry (cli);
    if (argc == 2) {
        const DfqFeatureClass *klass = dfq_registry_find_any (registry, argv[1]);
        if (klass == NULL) {
            g_autoptr (GPtrArray) all = g_ptr_array_new ();
            for (guint k = 0; k < DFQ_FEATURE_KIND_COUNT; k++) {
                g_autoptr (GPtrArray) list = dfq_registry_list (registry, (DfqFeatureKind) k);
                for (guint i = 0; i < list->len; i++)
                    g_ptr_array_add (all, (gpointer) ((const DfqFeatureClass *) list->pdata[i])->name);
            }
            const char *suggestion = dfq_priv_suggest (argv[1], (const char *const *) all->pdata, all->len);
            g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                         "no feature named '%s'%s%s%s (dfq inspect lists them)", argv[1],
                         suggestion != NULL ? "; did you mean '" : "", suggestion != NULL ? suggestion : "",
                         suggestion != NULL ? "'?" : "");
            return FALSE;
        }
        if (json) {
            g_autoptr (JsonBuilder) b = json_builder_new ();
            dfq_inspect_feature_json (b, registry, klass);
            g_autofree char *text = dfq_inspect_json_text (b);
            g_string_append (out, text);
        } else if (markdown) {
            dfq_inspect_feature_markdown (out, registry, klass);
        } else {
            dfq_inspect_feature_text (out, registry, klass);
        }
    } else if (json) {
        g_autoptr (JsonBuilder) b = json_builder_new ();
        dfq_inspect_list_json (b, registry);
        g_autofree char *text = dfq_inspect_json_text (b);
        g_string_append (out, text);
    } else if (markdown) {
        dfq_inspect_list_markdown (out, registry);
    } else {
        dfq_inspect_list_text (out, cli, registry);
    }
    fputs (out->str, stdout);
    return TRUE;
}
