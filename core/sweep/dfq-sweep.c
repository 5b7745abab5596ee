/* Sweep files (core/sweep): a base pipeline plus axes (grid:, zip:, seeds:)
 * and fixed overrides (set:), read with the pipeline loader's config tree so
 * every problem has a file:line:col, and expanded into trials. Each trial's
 * overrides are applied to the base pipeline's tree with the sweep file's
 * marks and bound with the registry before anything runs; its id is a hash
 * of the resolved config, so it names the same trial whatever the axes
 * around it. The format is documented in docs/sweeps.md. */
#include <string.h>

#include "../params/dfq-params-private.h"
#include "dfq-sweep-private.h"

G_DEFINE_QUARK (dfq - sweep - error - quark, dfq_sweep_error)

static const char *const dfq_sweep_keys[] = { "version", "name", "pipeline", "set", "grid", "zip", "seeds",
                                              "eval_limit" };

/* One axis: keys whose lists advance together (one key for grid:, several
 * for a zip: group, "seed" for seeds:). Nodes are borrowed from the sweep
 * file's tree. */
typedef struct {
    GPtrArray *keys;  /* const DfqConfigNode *: SCALAR key nodes */
    GPtrArray *lists; /* const DfqConfigNode *: SEQUENCE of the values */
    guint n;
    gboolean seeds;
} DfqSweepAxis;

static void
dfq_sweep_axis_free (DfqSweepAxis *axis)
{
    g_ptr_array_unref (axis->keys);
    g_ptr_array_unref (axis->lists);
    g_free (axis);
}

static DfqSweepAxis *
dfq_sweep_axis_new (gboolean seeds)
{
    DfqSweepAxis *axis = g_new0 (DfqSweepAxis, 1);
    axis->keys = g_ptr_array_new ();
    axis->lists = g_ptr_array_new ();
    axis->seeds = seeds;
    return axis;
}

static void
dfq_sweep_trial_free (DfqSweepTrial *trial)
{
    g_free (trial->id);
    g_free (trial->label);
    g_free (trial->dir_name);
    g_clear_pointer (&trial->overrides, g_ptr_array_unref);
    g_clear_pointer (&trial->axis_keys, g_ptr_array_unref);
    g_clear_pointer (&trial->axis_values, g_ptr_array_unref);
    g_free (trial->config_yaml);
    g_free (trial);
}

void
dfq_sweep_free (DfqSweep *sweep)
{
    if (sweep == NULL)
        return;
    g_free (sweep->path);
    g_free (sweep->dir);
    g_free (sweep->name);
    g_free (sweep->pipeline);
    g_clear_pointer (&sweep->trials, g_ptr_array_unref);
    g_free (sweep);
}

/* Flow YAML and JSON ------------------------------------------------------- */

/* A scalar that reads back as the same plain scalar in flow context. */
static gboolean
dfq_sweep_scalar_is_plain_safe (const char *s)
{
    if (s[0] == '\0' || s[0] == ' ' || s[strlen (s) - 1] == ' ')
        return FALSE;
    if (!g_ascii_isalnum (s[0]) && strchr ("_./+-($", s[0]) == NULL)
        return FALSE;
    if (s[0] == '-' && (s[1] == '\0' || s[1] == ' '))
        return FALSE;
    for (const char *p = s; *p; p++) {
        if (!g_ascii_isalnum (*p) && strchr ("_./+-=()$<>^; ", *p) == NULL)
            return FALSE;
    }
    return TRUE;
}

static void
dfq_sweep_append_flow (GString *out, const DfqConfigNode *node)
{
    switch (node->kind) {
    case DFQ_CONFIG_NULL:
        g_string_append (out, "null");
        break;
    case DFQ_CONFIG_SCALAR:
        if (!node->quoted && dfq_sweep_scalar_is_plain_safe (node->scalar)) {
            g_string_append (out, node->scalar);
        } else {
            g_string_append_c (out, '"');
            for (const char *p = node->scalar; *p; p++) {
                guchar c = (guchar) *p;
                if (c == '"' || c == '\\')
                    g_string_append_printf (out, "\\%c", c);
                else if (c == '\n')
                    g_string_append (out, "\\n");
                else if (c == '\t')
                    g_string_append (out, "\\t");
                else if (c < 0x20 || c == 0x7f)
                    g_string_append_printf (out, "\\x%02x", c);
                else
                    g_string_append_c (out, (char) c);
            }
            g_string_append_c (out, '"');
        }
        break;
    case DFQ_CONFIG_MAPPING:
        g_string_append_c (out, '{');
        for (guint i = 0; i < node->keys->len; i++) {
            if (i > 0)
                g_string_append (out, ", ");
            dfq_sweep_append_flow (out, node->keys->pdata[i]);
            g_string_append (out, ": ");
            dfq_sweep_append_flow (out, node->values->pdata[i]);
        }
        g_string_append_c (out, '}');
        break;
    case DFQ_CONFIG_SEQUENCE:
        g_string_append_c (out, '[');
        for (guint i = 0; i < node->values->len; i++) {
            if (i > 0)
                g_string_append (out, ", ");
            dfq_sweep_append_flow (out, node->values->pdata[i]);
        }
        g_string_append_c (out, ']');
        break;
    }
}

char *
dfq_sweep_config_to_flow (const DfqConfigNode *node)
{
    g_return_val_if_fail (node != NULL, NULL);
    GString *out = g_string_new (NULL);
    dfq_sweep_append_flow (out, node);
    return g_string_free (out, FALSE);
}

JsonNode *
dfq_sweep_config_to_json (const DfqConfigNode *node)
{
    g_return_val_if_fail (node != NULL, NULL);
    switch (node->kind) {
    case DFQ_CONFIG_NULL:
        return json_node_new (JSON_NODE_NULL);
    case DFQ_CONFIG_SCALAR: {
        JsonNode *j = json_node_new (JSON_NODE_VALUE);
        gint i;
        gdouble d;
        gboolean b;
        if (!node->quoted && dfq_priv_scalar_is_null (node->scalar)) {
            json_node_free (j);
            return json_node_new (JSON_NODE_NULL);
        } else if (!node->quoted && dfq_priv_parse_int (node->scalar, &i) == DFQ_PRIV_NUM_OK) {
            json_node_set_int (j, i);
        } else if (!node->quoted && dfq_priv_parse_double (node->scalar, &d) == DFQ_PRIV_NUM_OK) {
            json_node_set_double (j, d);
        } else if (!node->quoted && dfq_priv_parse_bool (node->scalar, &b)) {
            json_node_set_boolean (j, b);
        } else {
            json_node_set_string (j, node->scalar);
        }
        return j;
    }
    case DFQ_CONFIG_MAPPING: {
        JsonObject *o = json_object_new ();
        for (guint k = 0; k < node->keys->len; k++)
            json_object_set_member (o, ((DfqConfigNode *) node->keys->pdata[k])->scalar,
                                    dfq_sweep_config_to_json (node->values->pdata[k]));
        JsonNode *j = json_node_new (JSON_NODE_OBJECT);
        json_node_take_object (j, o);
        return j;
    }
    case DFQ_CONFIG_SEQUENCE: {
        JsonArray *a = json_array_new ();
        for (guint k = 0; k < node->values->len; k++)
            json_array_add_element (a, dfq_sweep_config_to_json (node->values->pdata[k]));
        JsonNode *j = json_node_new (JSON_NODE_ARRAY);
        json_node_take_array (j, a);
        return j;
    }
    }
    return json_node_new (JSON_NODE_NULL);
}

JsonObject *
dfq_sweep_json_load_object (const char *path, JsonParser **parser)
{
    g_return_val_if_fail (path != NULL && parser != NULL, NULL);
    *parser = NULL;
    g_autofree char *text = NULL;
    if (!g_file_get_contents (path, &text, NULL, NULL))
        return NULL;
    g_autoptr (JsonParser) p = json_parser_new ();
    if (!json_parser_load_from_data (p, text, -1, NULL)) {
        g_autoptr (GRegex) re = g_regex_new ("(?<=[:\\[,])(\\s*)-?(nan|inf)(\\.0)?(?=\\s*[,}\\]])", 0, 0, NULL);
        g_autofree char *fixed = g_regex_replace (re, text, -1, 0, "\\1null", 0, NULL);
        if (fixed == NULL || !json_parser_load_from_data (p, fixed, -1, NULL))
            return NULL;
    }
    JsonNode *root = json_parser_get_root (p);
    if (root == NULL || !JSON_NODE_HOLDS_OBJECT (root))
        return NULL;
    *parser = g_steal_pointer (&p);
    return json_node_get_object (root);
}

/* Trial ids ------------------------------------------------------------------ */

char *
dfq_sweep_config_id (const char *config_yaml, gint eval_limit)
{
    g_return_val_if_fail (config_yaml != NULL, NULL);
    g_autoptr (DfqConfigNode) tree = dfq_config_parse (config_yaml, -1, "config.yaml", NULL);
    if (tree == NULL || tree->kind != DFQ_CONFIG_MAPPING)
        return NULL;
    /* The thread count follows -j and the output directory --out: neither
     * changes the experiment, so neither changes its id. */
    dfq_config_mapping_remove (tree, "threads");
    dfq_config_mapping_remove (tree, "output_dir");
    g_autofree char *yaml = dfq_config_to_yaml (tree);
    g_autoptr (GString) text = g_string_new (yaml);
    if (eval_limit > 0)
        g_string_append_printf (text, "# eval_limit: %d\n", eval_limit);
    g_autofree char *sha = g_compute_checksum_for_string (G_CHECKSUM_SHA256, text->str, (gssize) text->len);
    return g_strndup (sha, DFQ_SWEEP_ID_LENGTH);
}

/* Applying one value ------------------------------------------------------- */

/* The slot of dotted @path in @root, which dfq_config_apply_override() has
 * just grown; keys on the way that this override created (marked
 * "--set <path>") take @key's mark, so later errors point into the sweep file. */
static DfqConfigNode **
dfq_sweep_find_slot (DfqConfigNode **root, const char *path, const DfqConfigNode *key)
{
    g_autofree char *set_mark = g_strdup_printf ("--set %s", path);
    g_autofree char *normal = g_strdup (path);
    /* "a[1].b" -> "a.1.b" */
    GString *flat = g_string_new (NULL);
    for (const char *p = normal; *p; p++) {
        if (*p == '[')
            g_string_append_c (flat, '.');
        else if (*p != ']')
            g_string_append_c (flat, *p);
    }
    g_auto (GStrv) segments = g_strsplit (flat->str, ".", -1);
    g_string_free (flat, TRUE);
    DfqConfigNode **slot = root;
    for (guint s = 0; segments[s] != NULL; s++) {
        DfqConfigNode *node = *slot;
        if (segments[s][0] == '\0')
            continue;
        if (node->kind == DFQ_CONFIG_SEQUENCE) {
            guint64 index = g_ascii_strtoull (segments[s], NULL, 10);
            g_assert (index < node->values->len); /* apply_override checked it */
            slot = (DfqConfigNode **) &node->values->pdata[index];
            continue;
        }
        g_assert (node->kind == DFQ_CONFIG_MAPPING);
        guint i;
        for (i = 0; i < node->keys->len; i++)
            if (g_str_equal (((DfqConfigNode *) node->keys->pdata[i])->scalar, segments[s]))
                break;
        g_assert (i < node->keys->len);
        DfqConfigNode *k = node->keys->pdata[i];
        if (k->mark.line == 0 && g_strcmp0 (k->mark.file, set_mark) == 0)
            k->mark = key->mark;
        slot = (DfqConfigNode **) &node->values->pdata[i];
    }
    return slot;
}

/* Sets dotted key @key (a SCALAR node of the sweep file) to a copy of @value
 * in @tree, as `--set key=<value>` would (a mapping merges into the mapping
 * there), keeping the sweep file's marks. */
static gboolean
dfq_sweep_apply (DfqConfigNode **tree, const DfqConfigNode *key, const DfqConfigNode *value, GError **error)
{
    gboolean mapping = value->kind == DFQ_CONFIG_MAPPING;
    g_autofree char *assignment = g_strdup_printf ("%s=%s", key->scalar, mapping ? "{}" : "~");
    GError *local = NULL;
    if (!dfq_config_apply_override (tree, assignment, &local)) {
        const char *message = local->message;
        if (g_str_has_prefix (message, "--set "))
            message += strlen ("--set ");
        dfq_config_set_error (error, key, (DfqPipelineError) local->code, "%s", message);
        g_error_free (local);
        return FALSE;
    }
    DfqConfigNode **slot = dfq_sweep_find_slot (tree, key->scalar, key);
    if (mapping) {
        *slot = dfq_config_merge (*slot, dfq_config_node_copy (value));
    } else {
        dfq_config_node_free (*slot);
        *slot = dfq_config_node_copy (value);
    }
    return TRUE;
}

/* Labels --------------------------------------------------------------------- */

/* The `use:` of a feature written as a mapping or a bare name, or NULL. */
static const char *
dfq_sweep_feature_name (const DfqConfigNode *node)
{
    if (node->kind == DFQ_CONFIG_MAPPING) {
        const DfqConfigNode *use = dfq_config_mapping_get (node, "use");
        return use != NULL && use->kind == DFQ_CONFIG_SCALAR ? use->scalar : NULL;
    }
    return NULL;
}

/* "w_bits=4", "bag", "kd+ce+ca-kd", "s3" or "synthesizer2". */
static char *
dfq_sweep_label_part (const char *key, const DfqConfigNode *value, guint index, gboolean seeds)
{
    const char *leaf = strrchr (key, '.');
    leaf = leaf != NULL ? leaf + 1 : key;
    if (seeds)
        return g_strdup_printf ("s%s", value->scalar);
    if (value->kind == DFQ_CONFIG_SCALAR)
        return g_strdup_printf ("%s=%s", leaf, value->scalar);
    if (value->kind == DFQ_CONFIG_NULL)
        return g_strdup_printf ("%s=null", leaf);
    const char *use = dfq_sweep_feature_name (value);
    if (use != NULL)
        return g_strdup (use);
    if (value->kind == DFQ_CONFIG_MAPPING && value->keys->len > 0 && value->keys->len <= 3) {
        /* {w_bits: 4, a_bits: 4} -> "w_bits=4,a_bits=4" */
        GString *pairs = g_string_new (NULL);
        for (guint i = 0; i < value->keys->len && pairs != NULL; i++) {
            const DfqConfigNode *v = value->values->pdata[i];
            if (v->kind != DFQ_CONFIG_SCALAR) {
                g_string_free (pairs, TRUE);
                pairs = NULL;
                break;
            }
            g_string_append_printf (pairs, "%s%s=%s", i ? "," : "", ((DfqConfigNode *) value->keys->pdata[i])->scalar,
                                    v->scalar);
        }
        if (pairs != NULL)
            return g_string_free (pairs, FALSE);
    }
    if (value->kind == DFQ_CONFIG_SEQUENCE && value->values->len > 0) {
        GString *names = g_string_new (NULL);
        for (guint i = 0; i < value->values->len; i++) {
            const DfqConfigNode *item = value->values->pdata[i];
            const char *name = item->kind == DFQ_CONFIG_SCALAR ? item->scalar : dfq_sweep_feature_name (item);
            if (name == NULL) {
                g_string_free (names, TRUE);
                return g_strdup_printf ("%s%u", leaf, index + 1);
            }
            g_string_append_printf (names, "%s%s", i ? "+" : "", name);
        }
        return g_string_free (names, FALSE);
    }
    return g_strdup_printf ("%s%u", leaf, index + 1);
}

/* Letters, digits and ._+=,- stay; anything else becomes '_'; at most 80 bytes. */
static char *
dfq_sweep_safe_name (const char *label)
{
    GString *out = g_string_new (NULL);
    for (const char *p = label; *p && out->len < 80; p++)
        g_string_append_c (out, g_ascii_isalnum (*p) || strchr ("._+=,-", *p) != NULL ? *p : '_');
    if (out->len == 0 || out->str[0] == '.' || out->str[0] == '-')
        g_string_prepend (out, "t");
    return g_string_free (out, FALSE);
}

/* Reading the sweep file ----------------------------------------------------- */

typedef struct {
    DfqRegistry *registry;
    const DfqConfigNode *root;
    GPtrArray *set_keys; /* const DfqConfigNode * */
    GPtrArray *set_values;
    GPtrArray *axes;       /* DfqSweepAxis * */
    GHashTable *seen_keys; /* key text -> const DfqConfigNode * (first occurrence) */
} DfqSweepReader;

static gboolean
dfq_sweep_check_key (DfqSweepReader *r, const DfqConfigNode *key, GError **error)
{
    if (key->scalar[0] == '\0') {
        dfq_config_set_error (error, key, DFQ_PIPELINE_ERROR_SYNTAX, "empty key");
        return FALSE;
    }
    const DfqConfigNode *before = g_hash_table_lookup (r->seen_keys, key->scalar);
    if (before != NULL) {
        g_autofree char *where = dfq_config_mark_to_string (&before->mark);
        dfq_config_set_error (error, key, DFQ_PIPELINE_ERROR_BAD_VALUE,
                              "'%s' is already set or swept at %s: a key may appear once in a sweep", key->scalar,
                              where);
        return FALSE;
    }
    g_hash_table_insert (r->seen_keys, key->scalar, (gpointer) key);
    return TRUE;
}

static gboolean
dfq_sweep_check_list (const char *what, const DfqConfigNode *key, const DfqConfigNode *value, GError **error)
{
    if (value->kind != DFQ_CONFIG_SEQUENCE || value->values->len == 0) {
        g_autofree char *got = dfq_priv_config_describe (value);
        dfq_config_set_error (error, value->kind == DFQ_CONFIG_NULL ? key : value, DFQ_PIPELINE_ERROR_BAD_VALUE,
                              "%s.%s: expected a non-empty list of values (e.g. [4, 3]), got %s", what, key->scalar,
                              got);
        return FALSE;
    }
    return TRUE;
}

static gboolean
dfq_sweep_read_mapping_of_lists (DfqSweepReader *r, const char *what, const DfqConfigNode *node, gboolean zip,
                                 GError **error)
{
    if (node->kind != DFQ_CONFIG_MAPPING || node->keys->len == 0) {
        g_autofree char *got = dfq_priv_config_describe (node);
        dfq_config_set_error (error, node, DFQ_PIPELINE_ERROR_BAD_VALUE,
                              "%s: expected a mapping of dotted keys to lists of values, got %s", what, got);
        return FALSE;
    }
    DfqSweepAxis *group = zip ? dfq_sweep_axis_new (FALSE) : NULL;
    if (group != NULL)
        g_ptr_array_add (r->axes, group);
    for (guint i = 0; i < node->keys->len; i++) {
        const DfqConfigNode *key = node->keys->pdata[i];
        const DfqConfigNode *list = node->values->pdata[i];
        if (!dfq_sweep_check_key (r, key, error) || !dfq_sweep_check_list (what, key, list, error))
            return FALSE;
        if (!zip) {
            DfqSweepAxis *axis = dfq_sweep_axis_new (FALSE);
            g_ptr_array_add (r->axes, axis);
            g_ptr_array_add (axis->keys, (gpointer) key);
            g_ptr_array_add (axis->lists, (gpointer) list);
            axis->n = list->values->len;
            continue;
        }
        if (group->keys->len > 0 && list->values->len != group->n) {
            const DfqConfigNode *first = group->keys->pdata[0];
            dfq_config_set_error (error, list, DFQ_PIPELINE_ERROR_BAD_VALUE,
                                  "zip: '%s' has %u values but '%s' has %u: the lists of a zip group advance "
                                  "together and need the same length",
                                  key->scalar, list->values->len, first->scalar, group->n);
            return FALSE;
        }
        g_ptr_array_add (group->keys, (gpointer) key);
        g_ptr_array_add (group->lists, (gpointer) list);
        group->n = list->values->len;
    }
    return TRUE;
}

static gboolean
dfq_sweep_read_seeds (DfqSweepReader *r, const DfqConfigNode *key, const DfqConfigNode *value, GError **error)
{
    if (value->kind != DFQ_CONFIG_SEQUENCE || value->values->len == 0) {
        g_autofree char *got = dfq_priv_config_describe (value);
        dfq_config_set_error (error, value->kind == DFQ_CONFIG_NULL ? key : value, DFQ_PIPELINE_ERROR_BAD_VALUE,
                              "seeds: expected a non-empty list of seeds (e.g. [1, 2, 3]), got %s", got);
        return FALSE;
    }
    g_autoptr (GHashTable) seen = g_hash_table_new (g_direct_hash, g_direct_equal);
    for (guint i = 0; i < value->values->len; i++) {
        const DfqConfigNode *item = value->values->pdata[i];
        gint seed = -1;
        if (item->kind != DFQ_CONFIG_SCALAR || item->quoted || dfq_priv_parse_int (item->scalar, &seed) != DFQ_PRIV_NUM_OK
            || seed < 0) {
            g_autofree char *got = dfq_priv_config_describe (item);
            dfq_config_set_error (error, item, DFQ_PIPELINE_ERROR_BAD_VALUE,
                                  "seeds[%u]: expected an integer in 0 .. 2147483647, got %s", i, got);
            return FALSE;
        }
        if (!g_hash_table_add (seen, GINT_TO_POINTER (seed))) {
            dfq_config_set_error (error, item, DFQ_PIPELINE_ERROR_BAD_VALUE, "seeds[%u]: seed %d is listed twice", i,
                                  seed);
            return FALSE;
        }
    }
    if (g_hash_table_contains (r->seen_keys, "seed")) {
        g_autofree char *where = dfq_config_mark_to_string (&((DfqConfigNode *) g_hash_table_lookup (r->seen_keys, "seed"))->mark);
        dfq_config_set_error (error, key, DFQ_PIPELINE_ERROR_BAD_VALUE,
                              "seeds: 'seed' is already set or swept at %s", where);
        return FALSE;
    }
    g_hash_table_insert (r->seen_keys, (gpointer) "seed", (gpointer) key);
    DfqSweepAxis *axis = dfq_sweep_axis_new (TRUE);
    g_ptr_array_add (axis->keys, (gpointer) key);
    g_ptr_array_add (axis->lists, (gpointer) value);
    axis->n = value->values->len;
    g_ptr_array_add (r->axes, axis);
    return TRUE;
}

static gboolean
dfq_sweep_read_scalar_string (const DfqConfigNode *key, const DfqConfigNode *value, const char **out, GError **error)
{
    if (value->kind != DFQ_CONFIG_SCALAR || value->scalar[0] == '\0') {
        g_autofree char *got = dfq_priv_config_describe (value);
        dfq_config_set_error (error, value->kind == DFQ_CONFIG_NULL ? key : value, DFQ_PIPELINE_ERROR_BAD_VALUE,
                              "%s: expected a string, got %s", key->scalar, got);
        return FALSE;
    }
    *out = value->scalar;
    return TRUE;
}

static gboolean
dfq_sweep_read_int (const DfqConfigNode *key, const DfqConfigNode *value, gint min, gint *out, GError **error)
{
    if (value->kind != DFQ_CONFIG_SCALAR || value->quoted || dfq_priv_parse_int (value->scalar, out) != DFQ_PRIV_NUM_OK
        || *out < min) {
        g_autofree char *got = dfq_priv_config_describe (value);
        dfq_config_set_error (error, value->kind == DFQ_CONFIG_NULL ? key : value, DFQ_PIPELINE_ERROR_BAD_VALUE,
                              "%s: expected an integer >= %d, got %s", key->scalar, min, got);
        return FALSE;
    }
    return TRUE;
}

/* Builds trial @index: overrides, label, the bound pipeline and its id. */
static DfqSweepTrial *
dfq_sweep_make_trial (DfqSweepReader *r, DfqSweep *sweep, const DfqConfigNode *base, guint index, GError **error)
{
    DfqSweepTrial *trial = g_new0 (DfqSweepTrial, 1);
    trial->index = index;
    trial->overrides = g_ptr_array_new_with_free_func (g_free);
    trial->axis_keys = g_ptr_array_new_with_free_func (g_free);
    trial->axis_values = g_ptr_array_new_with_free_func ((GDestroyNotify) dfq_config_node_free);
    g_autoptr (DfqConfigNode) tree = dfq_config_node_copy (base);
    g_autofree guint *pos = g_new0 (guint, r->axes->len + 1);
    g_autofree char *safe = NULL;
    GError *local = NULL;

    /* Mixed radix: the last axis varies fastest. */
    guint rest = index;
    for (guint a = r->axes->len; a-- > 0;) {
        DfqSweepAxis *axis = r->axes->pdata[a];
        pos[a] = rest % axis->n;
        rest /= axis->n;
    }
    GString *label = g_string_new (NULL);
    for (guint a = 0; a < r->axes->len; a++) {
        DfqSweepAxis *axis = r->axes->pdata[a];
        for (guint k = 0; k < axis->keys->len; k++) {
            const DfqConfigNode *key = axis->keys->pdata[k];
            const DfqConfigNode *list = axis->lists->pdata[k];
            const DfqConfigNode *value = list->values->pdata[pos[a]];
            const char *name = axis->seeds ? "seed" : key->scalar;
            if (axis->seeds) {
                DfqConfigNode seed_key = *key;
                seed_key.scalar = (char *) "seed";
                if (!dfq_sweep_apply (&tree, &seed_key, value, &local))
                    break;
            } else if (!dfq_sweep_apply (&tree, key, value, &local)) {
                break;
            }
            g_autofree char *flow = dfq_sweep_config_to_flow (value);
            g_ptr_array_add (trial->overrides, g_strdup_printf ("%s=%s", name, flow));
            g_ptr_array_add (trial->axis_keys, g_strdup (name));
            g_ptr_array_add (trial->axis_values, dfq_config_node_copy (value));
            if (g_str_equal (name, "threads"))
                trial->sets_threads = TRUE;
            g_autofree char *part = dfq_sweep_label_part (name, value, pos[a], axis->seeds);
            g_string_append_printf (label, "%s%s", label->len ? "," : "", part);
        }
        if (local != NULL)
            break;
    }
    trial->label = g_string_free (label, FALSE);
    if (trial->label[0] == '\0') {
        g_free (trial->label);
        trial->label = g_strdup ("trial");
    }
    if (local != NULL)
        goto fail;
    /* set: last, so it adjusts whatever the axes put in place */
    for (guint i = 0; i < r->set_keys->len; i++) {
        const DfqConfigNode *key = r->set_keys->pdata[i], *value = r->set_values->pdata[i];
        if (!dfq_sweep_apply (&tree, key, value, &local))
            goto fail;
        g_autofree char *flow = dfq_sweep_config_to_flow (value);
        g_ptr_array_add (trial->overrides, g_strdup_printf ("%s=%s", key->scalar, flow));
        if (g_str_equal (key->scalar, "threads"))
            trial->sets_threads = TRUE;
    }

    {
        DfqPipeline *pipeline = dfq_pipeline_new_from_tree (r->registry, g_steal_pointer (&tree), &local);
        if (pipeline == NULL)
            goto fail;
        trial->config_yaml = dfq_pipeline_to_yaml (pipeline);
        dfq_pipeline_free (pipeline);
    }
    trial->id = dfq_sweep_config_id (trial->config_yaml, sweep->eval_limit);
    g_assert (trial->id != NULL); /* dfq_pipeline_to_yaml() always reads back */
    safe = dfq_sweep_safe_name (trial->label);
    trial->dir_name = g_strdup_printf ("%s-%s", safe, trial->id);
    return trial;

fail:
    /* Pipeline messages start with file:line:col: name the trial after them. */
    g_set_error (error, local->domain, local->code, "%s (in trial %u of the sweep: %s)", local->message, index + 1,
                 trial->label != NULL ? trial->label : "");
    g_error_free (local);
    dfq_sweep_trial_free (trial);
    return NULL;
}

/* The top-level keys of a sweep file into @sweep and @r (axes, set:); the
 * pipeline: key and value are handed back for the caller to resolve. */
static gboolean
dfq_sweep_read_keys (DfqSweepReader *r, DfqSweep *sweep, const DfqConfigNode *root,
                     const DfqConfigNode **pipeline_key, const DfqConfigNode **pipeline_value, GError **error)
{
    for (guint i = 0; i < root->keys->len; i++) {
        const DfqConfigNode *key = root->keys->pdata[i];
        const DfqConfigNode *value = root->values->pdata[i];
        const char *k = key->scalar;
        if (g_str_equal (k, "version")) {
            gint version = 0;
            if (!dfq_sweep_read_int (key, value, 1, &version, error))
                return FALSE;
            if (version != DFQ_SWEEP_VERSION) {
                dfq_config_set_error (error, value, DFQ_PIPELINE_ERROR_BAD_VALUE,
                                      "version: this dfq reads sweep files of version %d, not %d", DFQ_SWEEP_VERSION,
                                      version);
                return FALSE;
            }
        } else if (g_str_equal (k, "name")) {
            const char *name;
            if (!dfq_sweep_read_scalar_string (key, value, &name, error))
                return FALSE;
            sweep->name = dfq_sweep_safe_name (name);
        } else if (g_str_equal (k, "pipeline")) {
            *pipeline_key = key;
            *pipeline_value = value;
        } else if (g_str_equal (k, "eval_limit")) {
            if (!dfq_sweep_read_int (key, value, 0, &sweep->eval_limit, error))
                return FALSE;
        } else if (g_str_equal (k, "set")) {
            if (value->kind == DFQ_CONFIG_NULL)
                continue;
            if (value->kind != DFQ_CONFIG_MAPPING) {
                g_autofree char *got = dfq_priv_config_describe (value);
                dfq_config_set_error (error, value, DFQ_PIPELINE_ERROR_BAD_VALUE,
                                      "set: expected a mapping of dotted keys to values, got %s", got);
                return FALSE;
            }
            for (guint j = 0; j < value->keys->len; j++) {
                if (!dfq_sweep_check_key (r, value->keys->pdata[j], error))
                    return FALSE;
                g_ptr_array_add (r->set_keys, value->keys->pdata[j]);
                g_ptr_array_add (r->set_values, value->values->pdata[j]);
            }
        } else if (g_str_equal (k, "grid")) {
            if (!dfq_sweep_read_mapping_of_lists (r, "grid", value, FALSE, error))
                return FALSE;
        } else if (g_str_equal (k, "zip")) {
            if (value->kind == DFQ_CONFIG_SEQUENCE) {
                for (guint j = 0; j < value->values->len; j++)
                    if (!dfq_sweep_read_mapping_of_lists (r, "zip", value->values->pdata[j], TRUE, error))
                        return FALSE;
            } else if (!dfq_sweep_read_mapping_of_lists (r, "zip", value, TRUE, error)) {
                return FALSE;
            }
        } else if (g_str_equal (k, "seeds")) {
            if (!dfq_sweep_read_seeds (r, key, value, error))
                return FALSE;
        } else {
            const char *suggestion = dfq_priv_suggest (k, dfq_sweep_keys, G_N_ELEMENTS (dfq_sweep_keys));
            g_autoptr (GString) known = g_string_new (NULL);
            for (guint j = 0; j < G_N_ELEMENTS (dfq_sweep_keys); j++)
                g_string_append_printf (known, "%s%s", j ? ", " : "", dfq_sweep_keys[j]);
            dfq_config_set_error (error, key, DFQ_PIPELINE_ERROR_UNKNOWN_PARAM,
                                  "unknown key '%s' in the sweep file (known: %s)%s%s%s", k, known->str,
                                  suggestion != NULL ? "; did you mean '" : "", suggestion != NULL ? suggestion : "",
                                  suggestion != NULL ? "'?" : "");
            return FALSE;
        }
    }

    return TRUE;
}

DfqSweep *
dfq_sweep_new_from_file (DfqRegistry *registry, const char *path, GError **error)
{
    g_return_val_if_fail (registry != NULL && path != NULL, NULL);
    g_autofree char *text = NULL;
    gsize length = 0;
    GError *local = NULL;
    if (!g_file_get_contents (path, &text, &length, &local)) {
        g_set_error (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_IO, "cannot read sweep file %s: %s", path,
                     local->message);
        g_error_free (local);
        return NULL;
    }
    g_autoptr (DfqConfigNode) root = dfq_config_parse (text, (gssize) length, path, error);
    if (root == NULL)
        return NULL;
    if (root->kind != DFQ_CONFIG_MAPPING) {
        g_autofree char *got = dfq_priv_config_describe (root);
        dfq_config_set_error (error, root, DFQ_PIPELINE_ERROR_BAD_VALUE,
                              "a sweep file is a mapping with pipeline:, and grid:, zip:, seeds:, set:; got %s", got);
        return NULL;
    }

    g_autoptr (DfqSweep) sweep = g_new0 (DfqSweep, 1);
    sweep->path = g_strdup (path);
    g_autofree char *dir = g_path_get_dirname (path);
    sweep->dir = g_canonicalize_filename (dir, NULL);
    sweep->trials = g_ptr_array_new_with_free_func ((GDestroyNotify) dfq_sweep_trial_free);

    DfqSweepReader r = { registry, root, NULL, NULL, NULL, NULL };
    g_autoptr (GPtrArray) set_keys = r.set_keys = g_ptr_array_new ();
    g_autoptr (GPtrArray) set_values = r.set_values = g_ptr_array_new ();
    g_autoptr (GPtrArray) axes = r.axes = g_ptr_array_new_with_free_func ((GDestroyNotify) dfq_sweep_axis_free);
    g_autoptr (GHashTable) seen = r.seen_keys = g_hash_table_new (g_str_hash, g_str_equal);
    const DfqConfigNode *pipeline_key = NULL, *pipeline_value = NULL;

    if (!dfq_sweep_read_keys (&r, sweep, root, &pipeline_key, &pipeline_value, error))
        return NULL;

    /* the base pipeline, relative to the sweep file */
    if (pipeline_value == NULL) {
        dfq_config_set_error (error, root, DFQ_PIPELINE_ERROR_MISSING_PARAM,
                              "the sweep file names no base pipeline (pipeline: FILE.yaml, relative to the sweep file)");
        return NULL;
    }
    const char *pipeline_text = NULL;
    if (!dfq_sweep_read_scalar_string (pipeline_key, pipeline_value, &pipeline_text, error))
        return NULL;
    sweep->pipeline = g_canonicalize_filename (pipeline_text, sweep->dir);
    if (!g_file_test (sweep->pipeline, G_FILE_TEST_IS_REGULAR)) {
        dfq_config_set_error (error, pipeline_value, DFQ_PIPELINE_ERROR_IO, "pipeline: %s is not a readable file",
                              sweep->pipeline);
        return NULL;
    }
    if (sweep->name == NULL) {
        g_autofree char *base = g_path_get_basename (path);
        if (g_str_has_suffix (base, ".yaml"))
            base[strlen (base) - strlen (".yaml")] = '\0';
        sweep->name = dfq_sweep_safe_name (base);
    }

    guint64 n_trials = 1;
    for (guint a = 0; a < axes->len; a++) {
        n_trials *= ((DfqSweepAxis *) axes->pdata[a])->n;
        if (n_trials > DFQ_SWEEP_MAX_TRIALS) {
            dfq_config_set_error (error, root, DFQ_PIPELINE_ERROR_LIMIT,
                                  "the axes expand to more than %d trials", DFQ_SWEEP_MAX_TRIALS);
            return NULL;
        }
    }

    g_autoptr (DfqConfigNode) base = dfq_config_load_file (sweep->pipeline, error);
    if (base == NULL)
        return NULL;
    g_autoptr (GHashTable) ids = g_hash_table_new (g_str_hash, g_str_equal);
    for (guint i = 0; i < (guint) n_trials; i++) {
        DfqSweepTrial *trial = dfq_sweep_make_trial (&r, sweep, base, i, error);
        if (trial == NULL)
            return NULL;
        g_ptr_array_add (sweep->trials, trial);
        DfqSweepTrial *twin = g_hash_table_lookup (ids, trial->id);
        if (twin != NULL) {
            dfq_config_set_error (error, root, DFQ_PIPELINE_ERROR_BAD_VALUE,
                                  "trials %u (%s) and %u (%s) resolve to the same configuration: an axis value "
                                  "changes nothing",
                                  twin->index + 1, twin->label, trial->index + 1, trial->label);
            return NULL;
        }
        g_hash_table_insert (ids, trial->id, trial);
    }
    return g_steal_pointer (&sweep);
}
