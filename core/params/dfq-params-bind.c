/* Binding (core/params): a config-tree mapping checked against a DfqParamSpec
 * table and stored into a C struct by offset, with defaults filled from their
 * YAML text by the same code; features are instantiated by `use:` name. The
 * reverse direction (struct -> tree) serves --print-config. Errors carry the
 * file:line:col of the offending node and list what would have been valid. */
#include <math.h>
#include <string.h>

#include <dfq/dfq.h>
#include "dfq-params-private.h"

/* Features inside features (a default may name a feature whose default names
 * another...): deeper than this is a loop. */
#define DFQ_BIND_MAX_FEATURE_DEPTH 16

typedef struct {
    DfqRegistry *registry; /* NULL: validating a param table (features: shape only) */
    guint depth;           /* feature nesting */
} DfqBind;

static gboolean dfq_bind_mapping (DfqBind *b, const DfqParamSpec *specs, guint n_specs, gpointer base,
                                  const DfqConfigNode *node, const DfqConfigNode *where,
                                  const char *context, const char *path, DfqFeature *feature,
                                  gboolean allow_weight, GError **error);

static char *
dfq_bind_child_path (const char *path, const char *key)
{
    return path != NULL && path[0] != '\0' ? g_strdup_printf ("%s.%s", path, key) : g_strdup (key);
}

/* The text of @spec's default as a tree marked like @where (defaults fill the
 * place where the key would have been written). */
static DfqConfigNode *
dfq_bind_parse_default (const DfqParamSpec *spec, const DfqConfigNode *where, GError **error)
{
    g_autoptr (GError) local = NULL;
    DfqConfigNode *node = dfq_config_parse (spec->default_value, -1, "<default>", &local);
    if (node == NULL) {
        /* Tables are validated at registration; only hand-made tables get here. */
        dfq_config_set_error (error, where, DFQ_PIPELINE_ERROR_BAD_VALUE,
                              "the default of '%s' is not valid YAML: %s", spec->name, local->message);
        return NULL;
    }
    dfq_priv_config_remark (node, &where->mark);
    return node;
}

static gboolean
dfq_bind_number (const DfqParamSpec *spec, const DfqConfigNode *value, gboolean integer,
                 const char *path, gdouble *out, GError **error)
{
    const char *what = integer ? "an integer" : "a number";
    if (value->kind != DFQ_CONFIG_SCALAR || value->quoted) {
        g_autofree char *got = dfq_priv_config_describe (value);
        dfq_config_set_error (error, value, DFQ_PIPELINE_ERROR_BAD_VALUE, "%s: expected %s, got %s", path,
                              what, got);
        return FALSE;
    }
    g_autofree char *range = dfq_priv_param_range_string (spec);
    g_autofree char *q = dfq_priv_quote (value->scalar);
    DfqPrivNumStatus status;
    gdouble v = 0.0;
    if (integer) {
        gint i = 0;
        status = dfq_priv_parse_int (value->scalar, &i);
        v = i;
    } else {
        status = dfq_priv_parse_double (value->scalar, &v);
    }
    switch (status) {
    case DFQ_PRIV_NUM_OK:
        break;
    case DFQ_PRIV_NUM_RANGE:
        dfq_config_set_error (error, value, DFQ_PIPELINE_ERROR_BAD_VALUE, "%s: %s is too large for %s%s%s%s",
                              path, q, integer ? "an integer" : "a double", range != NULL ? " (range " : "",
                              range != NULL ? range : "", range != NULL ? ")" : "");
        return FALSE;
    case DFQ_PRIV_NUM_FRACTION:
    case DFQ_PRIV_NUM_INVALID:
    default:
        dfq_config_set_error (error, value, DFQ_PIPELINE_ERROR_BAD_VALUE, "%s: expected %s, got %s", path,
                              what, q);
        return FALSE;
    }
    if (range != NULL && (v < spec->min || v > spec->max)) {
        dfq_config_set_error (error, value, DFQ_PIPELINE_ERROR_BAD_VALUE, "%s: %s is out of range (%s)", path,
                              q, range);
        return FALSE;
    }
    *out = v;
    return TRUE;
}

static gboolean
dfq_bind_number_list (const DfqParamSpec *spec, const DfqConfigNode *value, gboolean integer,
                      const char *path, DfqNumberList *out, GError **error)
{
    memset (out, 0, sizeof *out);
    if (value->kind == DFQ_CONFIG_NULL)
        return TRUE;
    if (value->kind != DFQ_CONFIG_SEQUENCE) {
        g_autofree char *got = dfq_priv_config_describe (value);
        dfq_config_set_error (error, value, DFQ_PIPELINE_ERROR_BAD_VALUE, "%s: expected a list like %s, got %s",
                              path, integer ? "[15, 30]" : "[0.9, 0.999]", got);
        return FALSE;
    }
    if (value->values->len > DFQ_NUMBER_LIST_MAX) {
        dfq_config_set_error (error, value, DFQ_PIPELINE_ERROR_BAD_VALUE, "%s: %u values, at most %d allowed",
                              path, value->values->len, DFQ_NUMBER_LIST_MAX);
        return FALSE;
    }
    for (guint i = 0; i < value->values->len; i++) {
        g_autofree char *item_path = g_strdup_printf ("%s[%u]", path, i);
        if (!dfq_bind_number (spec, value->values->pdata[i], integer, item_path, &out->v[i], error))
            return FALSE;
    }
    out->n = value->values->len;
    return TRUE;
}

static char *
dfq_bind_feature_context (const DfqFeatureClass *klass)
{
    return g_strdup_printf ("for %s '%s'", dfq_feature_kind_name (klass->kind), klass->name);
}

/* A feature given as `name` or `{use: name, ...}`; NULL-kind gives NULL. */
static gboolean
dfq_bind_feature (DfqBind *b, DfqFeatureKind kind, const DfqConfigNode *value, gboolean allow_weight,
                  const char *path, DfqFeature **out, GError **error)
{
    const char *kind_name = dfq_feature_kind_name (kind);
    const DfqConfigNode *name_node = NULL;
    const DfqConfigNode *params = NULL;

    *out = NULL;
    if (value->kind == DFQ_CONFIG_NULL)
        return TRUE;
    if (value->kind == DFQ_CONFIG_SCALAR) {
        name_node = value;
    } else if (value->kind == DFQ_CONFIG_MAPPING) {
        name_node = dfq_config_mapping_get (value, "use");
        params = value;
        if (name_node == NULL) {
            g_autofree char *known = b->registry != NULL ? dfq_priv_registry_names (b->registry, kind) : NULL;
            dfq_config_set_error (error, value, DFQ_PIPELINE_ERROR_MISSING_PARAM,
                                  "%s: missing 'use:' naming the %s%s%s%s", path, kind_name,
                                  known != NULL ? " (known: " : "", known != NULL ? known : "",
                                  known != NULL ? ")" : "");
            return FALSE;
        }
        if (name_node->kind != DFQ_CONFIG_SCALAR) {
            g_autofree char *got = dfq_priv_config_describe (name_node);
            dfq_config_set_error (error, name_node, DFQ_PIPELINE_ERROR_BAD_VALUE,
                                  "%s.use: expected a %s name, got %s", path, kind_name, got);
            return FALSE;
        }
    } else {
        dfq_config_set_error (error, value, DFQ_PIPELINE_ERROR_BAD_VALUE,
                              "%s: expected a %s (a name, or a mapping with 'use:'), got a list", path, kind_name);
        return FALSE;
    }
    if (b->registry == NULL)
        return TRUE; /* validating a default: the feature may register later */

    const char *name = name_node->scalar;
    const DfqFeatureClass *klass = dfq_registry_find (b->registry, kind, name);
    if (klass == NULL) {
        g_autofree char *q = dfq_priv_quote (name);
        g_autofree char *known = dfq_priv_registry_names (b->registry, kind);
        g_autoptr (GPtrArray) classes = dfq_registry_list (b->registry, kind);
        g_autofree const char **names = g_new0 (const char *, classes->len + 1);
        for (guint i = 0; i < classes->len; i++)
            names[i] = ((const DfqFeatureClass *) classes->pdata[i])->name;
        const char *suggestion = dfq_priv_suggest (name, names, classes->len);
        const DfqFeatureClass *other = dfq_registry_find_any (b->registry, name);
        g_autofree char *hint = NULL;
        if (other != NULL)
            hint = g_strdup_printf ("; %s is a %s, not a %s", q, dfq_feature_kind_name (other->kind), kind_name);
        else if (suggestion != NULL)
            hint = g_strdup_printf ("; did you mean '%s'?", suggestion);
        /* "train.losses[1]: unknown loss ...", but not "synthesizer: unknown synthesizer". */
        g_autofree char *where = strcmp (path, kind_name) != 0 ? g_strdup_printf ("%s: ", path) : g_strdup ("");
        if (known[0] == '\0')
            dfq_config_set_error (error, name_node, DFQ_PIPELINE_ERROR_UNKNOWN_FEATURE,
                                  "%sunknown %s %s (no %s is registered: check the plugin path)%s", where,
                                  kind_name, q, kind_name, hint != NULL ? hint : "");
        else
            dfq_config_set_error (error, name_node, DFQ_PIPELINE_ERROR_UNKNOWN_FEATURE,
                                  "%sunknown %s %s (known: %s)%s", where, kind_name, q, known,
                                  hint != NULL ? hint : "");
        return FALSE;
    }
    g_autofree char *label = g_strdup_printf ("%s (%s)", path, klass->name);
    *out = dfq_priv_feature_new (b->registry, klass, params != NULL ? params : value, allow_weight,
                                 label, b->depth + 1, error);
    return *out != NULL;
}

static gboolean
dfq_bind_run_check (const DfqParamSpec *spec, gconstpointer field, const DfqConfigNode *where,
                    const char *path, GError **error)
{
    if (spec->check == NULL)
        return TRUE;
    g_autoptr (GError) local = NULL;
    if (spec->check (spec, field, &local))
        return TRUE;
    dfq_config_set_error (error, where, DFQ_PIPELINE_ERROR_BAD_VALUE, "%s: %s", path,
                          local != NULL ? local->message : "invalid value");
    return FALSE;
}

static gboolean
dfq_bind_string (DfqBind *b, const DfqParamSpec *spec, char **str, const DfqConfigNode *value, const char *path,
                 GError **error)
{
    if (value->kind != DFQ_CONFIG_SCALAR && value->kind != DFQ_CONFIG_NULL) {
        g_autofree char *got = dfq_priv_config_describe (value);
        dfq_config_set_error (error, value, DFQ_PIPELINE_ERROR_BAD_VALUE, "%s: expected a string, got %s", path, got);
        return FALSE;
    }
    g_clear_pointer (str, g_free);
    if (value->kind == DFQ_CONFIG_NULL)
        return TRUE;
    if ((spec->flags & DFQ_PARAM_FLAG_PATH) && value->scalar[0] != '\0' && b->registry != NULL) {
        /* Relative to the file that wrote it (includes and defaults alike). */
        g_autofree char *dir = value->mark.line > 0 ? g_path_get_dirname (value->mark.file) : NULL;
        g_autofree char *abs_dir = g_canonicalize_filename (dir != NULL ? dir : ".", NULL);
        *str = g_canonicalize_filename (value->scalar, abs_dir);
    } else {
        *str = g_strdup (value->scalar);
    }
    return TRUE;
}

static gboolean
dfq_bind_enum (const DfqParamSpec *spec, gint *field, const DfqConfigNode *value, const char *path, GError **error)
{
    const char *const *values = spec->enum_values;
    guint n = g_strv_length ((char **) values);
    for (guint i = 0; value->kind == DFQ_CONFIG_SCALAR && i < n; i++)
        if (strcmp (values[i], value->scalar) == 0) {
            *field = (gint) i;
            return TRUE;
        }
    g_autofree char *got = dfq_priv_config_describe (value);
    g_autofree char *valid = g_strjoinv (", ", (char **) values);
    const char *suggestion = value->kind == DFQ_CONFIG_SCALAR ? dfq_priv_suggest (value->scalar, values, n) : NULL;
    if (value->kind == DFQ_CONFIG_SCALAR)
        dfq_config_set_error (error, value, DFQ_PIPELINE_ERROR_BAD_VALUE, "%s: invalid value %s (valid: %s)%s%s%s",
                              path, got, valid, suggestion != NULL ? "; did you mean '" : "",
                              suggestion != NULL ? suggestion : "", suggestion != NULL ? "'?" : "");
    else
        dfq_config_set_error (error, value, DFQ_PIPELINE_ERROR_BAD_VALUE, "%s: expected one of %s, got %s", path, valid,
                              got);
    return FALSE;
}

static gboolean
dfq_bind_string_list (char ***strv, const DfqConfigNode *value, const char *path, GError **error)
{
    g_clear_pointer (strv, g_strfreev);
    if (value->kind == DFQ_CONFIG_NULL)
        return TRUE;
    if (value->kind != DFQ_CONFIG_SEQUENCE) {
        g_autofree char *got = dfq_priv_config_describe (value);
        dfq_config_set_error (error, value, DFQ_PIPELINE_ERROR_BAD_VALUE,
                              "%s: expected a list of strings like [a, b], got %s", path, got);
        return FALSE;
    }
    for (guint i = 0; i < value->values->len; i++) {
        const DfqConfigNode *item = value->values->pdata[i];
        if (item->kind != DFQ_CONFIG_SCALAR) {
            g_autofree char *got = dfq_priv_config_describe (item);
            dfq_config_set_error (error, item, DFQ_PIPELINE_ERROR_BAD_VALUE, "%s[%u]: expected a string, got %s", path,
                                  i, got);
            return FALSE;
        }
    }
    if (value->values->len == 0)
        return TRUE; /* NULL when empty */
    *strv = g_new0 (char *, value->values->len + 1);
    for (guint i = 0; i < value->values->len; i++)
        (*strv)[i] = g_strdup (((const DfqConfigNode *) value->values->pdata[i])->scalar);
    return TRUE;
}

static gboolean
dfq_bind_feature_list (DfqBind *b, const DfqParamSpec *spec, GPtrArray **list, const DfqConfigNode *value,
                       const char *path, GError **error)
{
    g_clear_pointer (list, g_ptr_array_unref);
    if (value->kind != DFQ_CONFIG_SEQUENCE && value->kind != DFQ_CONFIG_NULL) {
        g_autofree char *got = dfq_priv_config_describe (value);
        dfq_config_set_error (error, value, DFQ_PIPELINE_ERROR_BAD_VALUE,
                              "%s: expected a list of %s features like [{use: name, weight: 1}], got %s", path,
                              dfq_feature_kind_name (spec->feature_kind), got);
        return FALSE;
    }
    *list = g_ptr_array_new_with_free_func ((GDestroyNotify) dfq_feature_free);
    for (guint i = 0; value->kind == DFQ_CONFIG_SEQUENCE && i < value->values->len; i++) {
        const DfqConfigNode *item = value->values->pdata[i];
        g_autofree char *item_path = g_strdup_printf ("%s[%u]", path, i);
        DfqFeature *feature = NULL;
        if (item->kind == DFQ_CONFIG_NULL) {
            dfq_config_set_error (error, item, DFQ_PIPELINE_ERROR_BAD_VALUE, "%s: expected a %s, got null", item_path,
                                  dfq_feature_kind_name (spec->feature_kind));
            return FALSE;
        }
        if (!dfq_bind_feature (b, spec->feature_kind, item, TRUE, item_path, &feature, error))
            return FALSE;
        if (feature != NULL)
            g_ptr_array_add (*list, feature);
    }
    return TRUE;
}

static gboolean
dfq_bind_struct (DfqBind *b, const DfqParamSpec *spec, gpointer field, const DfqConfigNode *value, const char *path,
                 GError **error)
{
    if (value->kind != DFQ_CONFIG_MAPPING && value->kind != DFQ_CONFIG_NULL) {
        g_autofree char *got = dfq_priv_config_describe (value);
        g_autofree char *keys = dfq_priv_params_names (spec->sub_params, spec->n_sub_params);
        dfq_config_set_error (error, value, DFQ_PIPELINE_ERROR_BAD_VALUE, "%s: expected a mapping (keys: %s), got %s",
                              path, keys, got);
        return FALSE;
    }
    /* A STRUCT default is a mapping under the written one. */
    g_autoptr (DfqConfigNode) merged = NULL;
    const DfqConfigNode *m = value;
    if (spec->default_value != NULL) {
        merged = dfq_bind_parse_default (spec, value, error);
        if (merged == NULL)
            return FALSE;
        if (value->kind == DFQ_CONFIG_MAPPING)
            merged = dfq_config_merge (merged, dfq_config_node_copy (value));
        m = merged;
    }
    g_autofree char *context = g_strdup_printf ("in '%s'", path);
    return dfq_bind_mapping (b, spec->sub_params, spec->n_sub_params, field, m, value, context, path, NULL, FALSE,
                             error);
}

/* Binds one value (never NULL; NULL-kind for null) into the field of @spec. */
static gboolean
dfq_bind_value (DfqBind *b, const DfqParamSpec *spec, gpointer base, const DfqConfigNode *value,
                const char *path, GError **error)
{
    gpointer field = G_STRUCT_MEMBER_P (base, spec->offset);
    gboolean required = (spec->flags & DFQ_PARAM_FLAG_REQUIRED) != 0;
    gdouble v = 0.0;
    gboolean ok = TRUE;

    if (value->kind == DFQ_CONFIG_NULL && required) {
        dfq_config_set_error (error, value, DFQ_PIPELINE_ERROR_MISSING_PARAM, "%s: required, cannot be null", path);
        return FALSE;
    }
    switch (spec->type) {
    case DFQ_PARAM_TYPE_INT:
        ok = dfq_bind_number (spec, value, TRUE, path, &v, error);
        if (ok)
            *(gint *) field = (gint) v;
        break;
    case DFQ_PARAM_TYPE_DOUBLE:
        ok = dfq_bind_number (spec, value, FALSE, path, &v, error);
        if (ok)
            *(gdouble *) field = v;
        break;
    case DFQ_PARAM_TYPE_BOOL: {
        gboolean flag = FALSE;
        if (value->kind != DFQ_CONFIG_SCALAR || value->quoted || !dfq_priv_parse_bool (value->scalar, &flag)) {
            g_autofree char *got = dfq_priv_config_describe (value);
            dfq_config_set_error (error, value, DFQ_PIPELINE_ERROR_BAD_VALUE,
                                  "%s: expected true or false, got %s", path, got);
            return FALSE;
        }
        *(gboolean *) field = flag;
        break;
    }
    case DFQ_PARAM_TYPE_STRING:
        ok = dfq_bind_string (b, spec, field, value, path, error);
        break;
    case DFQ_PARAM_TYPE_ENUM:
        ok = dfq_bind_enum (spec, field, value, path, error);
        break;
    case DFQ_PARAM_TYPE_INT_LIST:
    case DFQ_PARAM_TYPE_DOUBLE_LIST:
        ok = dfq_bind_number_list (spec, value, spec->type == DFQ_PARAM_TYPE_INT_LIST, path, field, error);
        break;
    case DFQ_PARAM_TYPE_STRING_LIST:
        ok = dfq_bind_string_list (field, value, path, error);
        break;
    case DFQ_PARAM_TYPE_FEATURE: {
        DfqFeature **feature = field;
        g_clear_pointer (feature, dfq_feature_free);
        ok = dfq_bind_feature (b, spec->feature_kind, value, FALSE, path, feature, error);
        break;
    }
    case DFQ_PARAM_TYPE_FEATURE_LIST:
        ok = dfq_bind_feature_list (b, spec, field, value, path, error);
        break;
    case DFQ_PARAM_TYPE_STRUCT:
        ok = dfq_bind_struct (b, spec, field, value, path, error);
        break;
    default:
        g_assert_not_reached ();
    }
    return ok && dfq_bind_run_check (spec, field, value, path, error);
}

static gboolean
dfq_bind_default (DfqBind *b, const DfqParamSpec *spec, gpointer base, const DfqConfigNode *where,
                  const char *path, GError **error)
{
    if (spec->default_value == NULL) {
        if (spec->type == DFQ_PARAM_TYPE_STRUCT) {
            g_autoptr (DfqConfigNode) empty = dfq_config_node_new (DFQ_CONFIG_NULL, &where->mark);
            return dfq_bind_value (b, spec, base, empty, path, error);
        }
        if (spec->type == DFQ_PARAM_TYPE_FEATURE_LIST && b->registry != NULL) {
            /* Never NULL once bound: an empty list. */
            GPtrArray **list = G_STRUCT_MEMBER_P (base, spec->offset);
            if (*list == NULL)
                *list = g_ptr_array_new_with_free_func ((GDestroyNotify) dfq_feature_free);
        }
        return TRUE; /* zero/NULL */
    }
    g_autoptr (DfqConfigNode) value = dfq_bind_parse_default (spec, where, error);
    if (value == NULL)
        return FALSE;
    if (dfq_bind_value (b, spec, base, value, path, error))
        return TRUE;
    if (error != NULL && *error != NULL) {
        char *message = g_strdup_printf ("%s (the default value of '%s')", (*error)->message, spec->name);
        g_free ((*error)->message);
        (*error)->message = message;
    }
    return FALSE;
}

static gboolean
dfq_bind_mapping (DfqBind *b, const DfqParamSpec *specs, guint n_specs, gpointer base,
                  const DfqConfigNode *node, const DfqConfigNode *where, const char *context,
                  const char *path, DfqFeature *feature, gboolean allow_weight, GError **error)
{
    if (node != NULL && node->kind != DFQ_CONFIG_MAPPING && node->kind != DFQ_CONFIG_NULL) {
        g_autofree char *got = dfq_priv_config_describe (node);
        dfq_config_set_error (error, node, DFQ_PIPELINE_ERROR_BAD_VALUE, "%s%sexpected a mapping, got %s",
                              path != NULL ? path : "", path != NULL ? ": " : "", got);
        return FALSE;
    }
    if (node != NULL)
        where = node;
    g_autofree gboolean *seen = g_new0 (gboolean, MAX (n_specs, 1));

    for (guint k = 0; node != NULL && node->kind == DFQ_CONFIG_MAPPING && k < node->keys->len; k++) {
        const DfqConfigNode *key = node->keys->pdata[k];
        const DfqConfigNode *value = node->values->pdata[k];
        if (feature != NULL && strcmp (key->scalar, "use") == 0)
            continue; /* resolved by the caller */
        if (feature != NULL && strcmp (key->scalar, "weight") == 0) {
            g_autofree char *weight_path = dfq_bind_child_path (path, "weight");
            if (!allow_weight) {
                dfq_config_set_error (error, key, DFQ_PIPELINE_ERROR_UNKNOWN_PARAM,
                                      "'weight' %s: only items of a feature list (like train.losses) have a weight",
                                      context);
                return FALSE;
            }
            static const DfqParamSpec weight_spec = { .name = "weight", .type = DFQ_PARAM_TYPE_DOUBLE,
                                                      .description = "weight", .min = -1e9, .max = 1e9 };
            if (!dfq_bind_number (&weight_spec, value, FALSE, weight_path, &feature->weight, error))
                return FALSE;
            continue;
        }
        const DfqParamSpec *spec = NULL;
        guint index = 0;
        for (guint i = 0; i < n_specs; i++) {
            if (strcmp (specs[i].name, key->scalar) == 0) {
                spec = &specs[i];
                index = i;
                break;
            }
        }
        if (spec == NULL) {
            g_autofree char *q = dfq_priv_quote (key->scalar);
            g_autofree char *known = dfq_priv_params_names (specs, n_specs);
            /* `use:` and `weight:` are implied in the list, but typos of them are caught too. */
            g_autofree const char **names = g_new0 (const char *, n_specs + 3);
            guint n_names = 0;
            for (guint i = 0; i < n_specs; i++)
                names[n_names++] = specs[i].name;
            if (feature != NULL)
                names[n_names++] = "use";
            if (feature != NULL && allow_weight)
                names[n_names++] = "weight";
            const char *suggestion = dfq_priv_suggest (key->scalar, names, n_names);
            dfq_config_set_error (error, key, DFQ_PIPELINE_ERROR_UNKNOWN_PARAM,
                                  "unknown parameter %s %s (known: %s)%s%s%s", q, context,
                                  n_specs > 0 ? known : "none", suggestion != NULL ? "; did you mean '" : "",
                                  suggestion != NULL ? suggestion : "", suggestion != NULL ? "'?" : "");
            return FALSE;
        }
        seen[index] = TRUE;
        g_autofree char *child = dfq_bind_child_path (path, spec->name);
        if (!dfq_bind_value (b, spec, base, value, child, error))
            return FALSE;
    }

    for (guint i = 0; i < n_specs; i++) {
        if (seen[i])
            continue;
        const DfqParamSpec *spec = &specs[i];
        g_autofree char *child = dfq_bind_child_path (path, spec->name);
        if (spec->flags & DFQ_PARAM_FLAG_REQUIRED) {
            const char *desc = spec->type == DFQ_PARAM_TYPE_FEATURE || spec->type == DFQ_PARAM_TYPE_FEATURE_LIST
                                   ? dfq_feature_kind_name (spec->feature_kind)
                                   : dfq_param_type_name (spec->type);
            dfq_config_set_error (error, where, DFQ_PIPELINE_ERROR_MISSING_PARAM,
                                  "missing required parameter '%s' %s (%s: %s)", spec->name, context, desc,
                                  spec->description);
            return FALSE;
        }
        if (!dfq_bind_default (b, spec, base, where, child, error))
            return FALSE;
    }
    return TRUE;
}

gboolean
dfq_params_bind (DfqRegistry *registry, const DfqParamSpec *specs, guint n_specs, gpointer base,
                 const DfqConfigNode *node, const char *context, const char *path, GError **error)
{
    g_return_val_if_fail (specs != NULL || n_specs == 0, FALSE);
    g_return_val_if_fail (base != NULL, FALSE);
    g_return_val_if_fail (error == NULL || *error == NULL, FALSE);
    DfqBind b = { registry, 0 };
    DfqConfigNode start = { 0 };
    start.mark.file = "";
    return dfq_bind_mapping (&b, specs, n_specs, base, node, node != NULL ? node : &start,
                             context != NULL ? context : "", path, NULL, FALSE, error);
}

/* Features ------------------------------------------------------------------- */

static void
dfq_feature_destroy (DfqFeature *feature, gboolean finalize)
{
    const DfqFeatureClass *klass = feature->klass;
    if (finalize && klass->finalize != NULL)
        klass->finalize (feature);
    dfq_params_clear (klass->params, klass->n_params, feature);
    g_free (feature->label);
    g_free (feature);
}

void
dfq_feature_free (DfqFeature *feature)
{
    if (feature == NULL)
        return;
    dfq_feature_destroy (feature, TRUE);
}

void
dfq_feature_list_free (GPtrArray *features)
{
    if (features != NULL)
        g_ptr_array_unref (features);
}

DfqFeature *
dfq_priv_feature_new (DfqRegistry *registry, const DfqFeatureClass *klass, const DfqConfigNode *node,
                      gboolean allow_weight, const char *label, guint depth, GError **error)
{
    DfqConfigNode start = { 0 };
    start.mark.file = "";
    const DfqConfigNode *where = node != NULL ? node : &start;
    if (depth > DFQ_BIND_MAX_FEATURE_DEPTH) {
        dfq_config_set_error (error, where, DFQ_PIPELINE_ERROR_LIMIT,
                              "%s: features nested deeper than %d (does a default name its own feature?)",
                              label, DFQ_BIND_MAX_FEATURE_DEPTH);
        return NULL;
    }
    DfqFeature *feature = g_malloc0 (klass->instance_size);
    feature->klass = klass;
    feature->weight = 1.0;
    feature->label = g_strdup (label);

    /* The path of its params: the label without " (name)". */
    g_autofree char *path = g_strdup (label);
    char *paren = strstr (path, " (");
    if (paren != NULL)
        *paren = '\0';
    g_autofree char *context = dfq_bind_feature_context (klass);
    DfqBind b = { registry, depth };
    if (!dfq_bind_mapping (&b, klass->params, klass->n_params, feature,
                           node != NULL && node->kind != DFQ_CONFIG_SCALAR ? node : NULL, where, context, path,
                           feature, allow_weight, error)) {
        dfq_feature_destroy (feature, FALSE);
        return NULL;
    }
    if (klass->init != NULL) {
        g_autoptr (GError) local = NULL;
        if (!klass->init (feature, &local)) {
            if (local != NULL && local->domain == DFQ_PIPELINE_ERROR)
                dfq_config_set_error (error, where, (DfqPipelineError) local->code, "%s %s: %s",
                                      dfq_feature_kind_name (klass->kind), klass->name, local->message);
            else
                dfq_config_set_error (error, where, DFQ_PIPELINE_ERROR_INIT_FAILED, "%s %s: %s",
                                      dfq_feature_kind_name (klass->kind), klass->name,
                                      local != NULL ? local->message : "init() failed without a message");
            dfq_feature_destroy (feature, FALSE);
            return NULL;
        }
    }
    return feature;
}

DfqFeature *
dfq_feature_new_from_config (DfqRegistry *registry, const DfqFeatureClass *klass, const DfqConfigNode *node,
                             gboolean allow_weight, const char *label, GError **error)
{
    g_return_val_if_fail (registry != NULL, NULL);
    g_return_val_if_fail (klass != NULL, NULL);
    g_return_val_if_fail (error == NULL || *error == NULL, NULL);
    return dfq_priv_feature_new (registry, klass, node, allow_weight, label != NULL ? label : klass->name, 0,
                                 error);
}

DfqFeature *
dfq_feature_new_default (DfqRegistry *registry, const DfqFeatureClass *klass, GError **error)
{
    return dfq_feature_new_from_config (registry, klass, NULL, FALSE, klass->name, error);
}

/* Struct -> tree ----------------------------------------------------------------- */

static DfqConfigNode *dfq_params_feature_to_config (const DfqFeature *feature, gboolean with_weight);

static DfqConfigNode *
dfq_params_value_to_config (const DfqParamSpec *spec, gconstpointer base)
{
    gconstpointer field = G_STRUCT_MEMBER_P (base, spec->offset);
    switch (spec->type) {
    case DFQ_PARAM_TYPE_INT: {
        g_autofree char *text = g_strdup_printf ("%d", *(const gint *) field);
        return dfq_config_node_new_scalar (text, FALSE, NULL);
    }
    case DFQ_PARAM_TYPE_DOUBLE: {
        g_autofree char *text = dfq_priv_format_double (*(const gdouble *) field);
        return dfq_config_node_new_scalar (text, FALSE, NULL);
    }
    case DFQ_PARAM_TYPE_BOOL:
        return dfq_config_node_new_scalar (*(const gboolean *) field ? "true" : "false", FALSE, NULL);
    case DFQ_PARAM_TYPE_STRING: {
        const char *s = *(char *const *) field;
        return s != NULL ? dfq_config_node_new_scalar (s, TRUE, NULL) : dfq_config_node_new (DFQ_CONFIG_NULL, NULL);
    }
    case DFQ_PARAM_TYPE_ENUM: {
        gint v = *(const gint *) field;
        guint n = g_strv_length ((char **) spec->enum_values);
        if (v >= 0 && (guint) v < n)
            return dfq_config_node_new_scalar (spec->enum_values[v], TRUE, NULL);
        g_autofree char *text = g_strdup_printf ("%d", v);
        return dfq_config_node_new_scalar (text, FALSE, NULL);
    }
    case DFQ_PARAM_TYPE_INT_LIST:
    case DFQ_PARAM_TYPE_DOUBLE_LIST: {
        const DfqNumberList *list = field;
        DfqConfigNode *seq = dfq_config_node_new (DFQ_CONFIG_SEQUENCE, NULL);
        for (guint i = 0; i < MIN (list->n, DFQ_NUMBER_LIST_MAX); i++) {
            g_autofree char *text = spec->type == DFQ_PARAM_TYPE_INT_LIST
                                        ? g_strdup_printf ("%.0f", list->v[i])
                                        : dfq_priv_format_double (list->v[i]);
            g_ptr_array_add (seq->values, dfq_config_node_new_scalar (text, FALSE, NULL));
        }
        return seq;
    }
    case DFQ_PARAM_TYPE_STRING_LIST: {
        char *const *strv = *(char **const *) field;
        DfqConfigNode *seq = dfq_config_node_new (DFQ_CONFIG_SEQUENCE, NULL);
        for (guint i = 0; strv != NULL && strv[i] != NULL; i++)
            g_ptr_array_add (seq->values, dfq_config_node_new_scalar (strv[i], TRUE, NULL));
        return seq;
    }
    case DFQ_PARAM_TYPE_FEATURE: {
        const DfqFeature *feature = *(DfqFeature *const *) field;
        return feature != NULL ? dfq_params_feature_to_config (feature, FALSE)
                               : dfq_config_node_new (DFQ_CONFIG_NULL, NULL);
    }
    case DFQ_PARAM_TYPE_FEATURE_LIST: {
        const GPtrArray *list = *(GPtrArray *const *) field;
        DfqConfigNode *seq = dfq_config_node_new (DFQ_CONFIG_SEQUENCE, NULL);
        for (guint i = 0; list != NULL && i < list->len; i++)
            g_ptr_array_add (seq->values, dfq_params_feature_to_config (list->pdata[i], TRUE));
        return seq;
    }
    case DFQ_PARAM_TYPE_STRUCT:
        return dfq_params_to_config (spec->sub_params, spec->n_sub_params, field);
    default:
        g_assert_not_reached ();
    }
}

static DfqConfigNode *
dfq_params_feature_to_config (const DfqFeature *feature, gboolean with_weight)
{
    const DfqFeatureClass *klass = feature->klass;
    DfqConfigNode *mapping = dfq_params_to_config (klass->params, klass->n_params, feature);
    /* `use:` (and `weight:`) first, as people write them. */
    g_ptr_array_insert (mapping->keys, 0, dfq_config_node_new_scalar ("use", FALSE, NULL));
    g_ptr_array_insert (mapping->values, 0, dfq_config_node_new_scalar (klass->name, TRUE, NULL));
    if (with_weight) {
        g_autofree char *text = dfq_priv_format_double (feature->weight);
        g_ptr_array_insert (mapping->keys, 1, dfq_config_node_new_scalar ("weight", FALSE, NULL));
        g_ptr_array_insert (mapping->values, 1, dfq_config_node_new_scalar (text, FALSE, NULL));
    }
    return mapping;
}

/* Same tree, quoting aside (a default is written unquoted, a value is printed
 * quoted when it is a string). */
static gboolean
dfq_params_node_equal (const DfqConfigNode *a, const DfqConfigNode *b)
{
    if (a->kind != b->kind)
        return FALSE;
    if (a->kind == DFQ_CONFIG_SCALAR)
        return g_strcmp0 (a->scalar, b->scalar) == 0;
    if (a->kind == DFQ_CONFIG_NULL)
        return TRUE;
    guint n = dfq_config_node_n_children (a);
    if (n != dfq_config_node_n_children (b))
        return FALSE;
    for (guint i = 0; i < n; i++) {
        if (a->kind == DFQ_CONFIG_MAPPING && !dfq_params_node_equal (a->keys->pdata[i], b->keys->pdata[i]))
            return FALSE;
        if (!dfq_params_node_equal (a->values->pdata[i], b->values->pdata[i]))
            return FALSE;
    }
    return TRUE;
}

/* DFQ_PARAM_FLAG_OMIT_DEFAULT: @value (as printed) is the default. */
static gboolean
dfq_params_is_default (const DfqParamSpec *spec, const DfqConfigNode *value)
{
    if (spec->type == DFQ_PARAM_TYPE_STRUCT)
        return value->kind == DFQ_CONFIG_MAPPING && dfq_config_node_n_children (value) == 0;
    if (spec->default_value == NULL)
        return value->kind == DFQ_CONFIG_NULL;
    g_autoptr (DfqConfigNode) def = dfq_config_parse (spec->default_value, -1, "<default>", NULL);
    return def != NULL && dfq_params_node_equal (def, value);
}

DfqConfigNode *
dfq_params_to_config (const DfqParamSpec *specs, guint n_specs, gconstpointer base)
{
    g_return_val_if_fail (specs != NULL || n_specs == 0, NULL);
    g_return_val_if_fail (base != NULL, NULL);
    DfqConfigNode *mapping = dfq_config_node_new (DFQ_CONFIG_MAPPING, NULL);
    for (guint i = 0; i < n_specs; i++) {
        DfqConfigNode *value = dfq_params_value_to_config (&specs[i], base);
        if ((specs[i].flags & DFQ_PARAM_FLAG_OMIT_DEFAULT) && dfq_params_is_default (&specs[i], value)) {
            dfq_config_node_free (value);
            continue;
        }
        g_ptr_array_add (mapping->keys, dfq_config_node_new_scalar (specs[i].name, FALSE, NULL));
        g_ptr_array_add (mapping->values, value);
    }
    return mapping;
}
