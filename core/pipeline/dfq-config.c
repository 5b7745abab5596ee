/* The config tree (core/pipeline): YAML nodes that remember file:line:col, the
 * deep merge used by includes and --set, and error formatting. Parsing and
 * emission with libyaml are in dfq-config-yaml.c; binding to param tables in
 * core/params/dfq-params-bind.c. */
#include <string.h>

#include <dfq/dfq.h>
#include "../params/dfq-params-private.h"

G_DEFINE_QUARK (dfq-pipeline-error-quark, dfq_pipeline_error)

static const DfqConfigMark dfq_config_no_mark = { "", 0, 0 };

DfqConfigNode *
dfq_config_node_new (DfqConfigKind kind, const DfqConfigMark *mark)
{
    DfqConfigNode *node = g_new0 (DfqConfigNode, 1);
    node->kind = kind;
    node->mark = mark != NULL ? *mark : dfq_config_no_mark;
    if (node->mark.file == NULL)
        node->mark.file = "";
    if (kind == DFQ_CONFIG_MAPPING) {
        node->keys = g_ptr_array_new_with_free_func ((GDestroyNotify) dfq_config_node_free);
        node->values = g_ptr_array_new_with_free_func ((GDestroyNotify) dfq_config_node_free);
    } else if (kind == DFQ_CONFIG_SEQUENCE) {
        node->values = g_ptr_array_new_with_free_func ((GDestroyNotify) dfq_config_node_free);
    }
    return node;
}

DfqConfigNode *
dfq_config_node_new_scalar (const char *text, gboolean quoted, const DfqConfigMark *mark)
{
    g_return_val_if_fail (text != NULL, NULL);
    DfqConfigNode *node = dfq_config_node_new (DFQ_CONFIG_SCALAR, mark);
    node->scalar = g_strdup (text);
    node->quoted = quoted;
    return node;
}

void
dfq_config_node_free (DfqConfigNode *node)
{
    if (node == NULL)
        return;
    g_clear_pointer (&node->keys, g_ptr_array_unref);
    g_clear_pointer (&node->values, g_ptr_array_unref);
    g_free (node->scalar);
    g_free (node);
}

DfqConfigNode *
dfq_config_node_copy (const DfqConfigNode *node)
{
    g_return_val_if_fail (node != NULL, NULL);
    DfqConfigNode *copy = dfq_config_node_new (node->kind, &node->mark);
    copy->scalar = g_strdup (node->scalar);
    copy->quoted = node->quoted;
    if (node->keys != NULL)
        for (guint i = 0; i < node->keys->len; i++)
            g_ptr_array_add (copy->keys, dfq_config_node_copy (node->keys->pdata[i]));
    if (node->values != NULL)
        for (guint i = 0; i < node->values->len; i++)
            g_ptr_array_add (copy->values, dfq_config_node_copy (node->values->pdata[i]));
    return copy;
}

guint
dfq_config_node_n_children (const DfqConfigNode *node)
{
    g_return_val_if_fail (node != NULL, 0);
    return node->values != NULL ? node->values->len : 0;
}

static gint
dfq_config_mapping_index (const DfqConfigNode *mapping, const char *key)
{
    for (guint i = 0; i < mapping->keys->len; i++) {
        const DfqConfigNode *k = mapping->keys->pdata[i];
        if (g_strcmp0 (k->scalar, key) == 0)
            return (gint) i;
    }
    return -1;
}

DfqConfigNode *
dfq_config_mapping_get (const DfqConfigNode *mapping, const char *key)
{
    g_return_val_if_fail (mapping != NULL && mapping->kind == DFQ_CONFIG_MAPPING, NULL);
    g_return_val_if_fail (key != NULL, NULL);
    gint i = dfq_config_mapping_index (mapping, key);
    return i < 0 ? NULL : mapping->values->pdata[i];
}

void
dfq_config_mapping_set (DfqConfigNode *mapping, const char *key, DfqConfigNode *value)
{
    g_return_if_fail (mapping != NULL && mapping->kind == DFQ_CONFIG_MAPPING);
    g_return_if_fail (key != NULL && value != NULL);
    gint i = dfq_config_mapping_index (mapping, key);
    if (i >= 0) {
        dfq_config_node_free (mapping->values->pdata[i]);
        mapping->values->pdata[i] = value;
        return;
    }
    g_ptr_array_add (mapping->keys, dfq_config_node_new_scalar (key, FALSE, &value->mark));
    g_ptr_array_add (mapping->values, value);
}

gboolean
dfq_config_mapping_remove (DfqConfigNode *mapping, const char *key)
{
    g_return_val_if_fail (mapping != NULL && mapping->kind == DFQ_CONFIG_MAPPING, FALSE);
    gint i = dfq_config_mapping_index (mapping, key);
    if (i < 0)
        return FALSE;
    g_ptr_array_remove_index (mapping->keys, (guint) i);
    g_ptr_array_remove_index (mapping->values, (guint) i);
    return TRUE;
}

char *
dfq_config_mark_to_string (const DfqConfigMark *mark)
{
    g_return_val_if_fail (mark != NULL, NULL);
    const char *file = mark->file != NULL && mark->file[0] != '\0' ? mark->file : "<input>";
    if (mark->line == 0)
        return g_strdup (file);
    return g_strdup_printf ("%s:%u:%u", file, mark->line, mark->column);
}

/* "a.b[0].c" and "a.b.0.c" alike: "a.b.0.c". (transfer full) */
static char *
dfq_config_normalize_path (const char *path, gsize len)
{
    GString *out = g_string_sized_new (len);
    for (gsize i = 0; i < len; i++) {
        if (path[i] == '[')
            g_string_append_c (out, '.');
        else if (path[i] != ']')
            g_string_append_c (out, path[i]);
    }
    return g_string_free (out, FALSE);
}

/* The length of the "KEY: " @message starts with when KEY is the path of the
 * --set @mark names (it says the key once, as "--set KEY: "), else 0. */
static gsize
dfq_config_repeated_key (const DfqConfigMark *mark, const char *message)
{
    if (mark->line != 0 || mark->file == NULL || !g_str_has_prefix (mark->file, "--set "))
        return 0;
    const char *colon = strstr (message, ": ");
    if (colon == NULL)
        return 0;
    g_autofree char *key = dfq_config_normalize_path (mark->file + 6, strlen (mark->file + 6));
    g_autofree char *head = dfq_config_normalize_path (message, (gsize) (colon - message));
    return g_str_equal (key, head) ? (gsize) (colon - message) + 2 : 0;
}

void
dfq_config_set_error (GError **error, const DfqConfigNode *node, DfqPipelineError code,
                      const char *format, ...)
{
    va_list args;
    va_start (args, format);
    g_autofree char *message = g_strdup_vprintf (format, args);
    va_end (args);
    /* No place to point at (built-in defaults, trees made in code). */
    if (node == NULL || (node->mark.line == 0 && (node->mark.file == NULL || node->mark.file[0] == '\0'))) {
        g_set_error_literal (error, DFQ_PIPELINE_ERROR, code, message);
        return;
    }
    g_autofree char *where = dfq_config_mark_to_string (&node->mark);
    g_set_error (error, DFQ_PIPELINE_ERROR, code, "%s: %s", where,
                 message + dfq_config_repeated_key (&node->mark, message));
}

void
dfq_priv_config_remark (DfqConfigNode *node, const DfqConfigMark *mark)
{
    node->mark = *mark;
    if (node->keys != NULL)
        for (guint i = 0; i < node->keys->len; i++)
            dfq_priv_config_remark (node->keys->pdata[i], mark);
    if (node->values != NULL)
        for (guint i = 0; i < node->values->len; i++)
            dfq_priv_config_remark (node->values->pdata[i], mark);
}

char *
dfq_priv_config_describe (const DfqConfigNode *node)
{
    if (node == NULL)
        return g_strdup ("nothing");
    switch (node->kind) {
    case DFQ_CONFIG_NULL:
        return g_strdup ("null");
    case DFQ_CONFIG_MAPPING:
        return g_strdup ("a mapping");
    case DFQ_CONFIG_SEQUENCE:
        return g_strdup ("a list");
    case DFQ_CONFIG_SCALAR:
    default: {
        g_autofree char *q = dfq_priv_quote (node->scalar);
        return g_strdup_printf (node->quoted ? "the string %s" : "%s", q);
    }
    }
}

/* A mapping's `use:` value, or NULL. */
static const char *
dfq_config_use_name (const DfqConfigNode *node)
{
    if (node->kind != DFQ_CONFIG_MAPPING)
        return NULL;
    const DfqConfigNode *use = dfq_config_mapping_get (node, "use");
    return use != NULL && use->kind == DFQ_CONFIG_SCALAR ? use->scalar : NULL;
}

DfqConfigNode *
dfq_config_merge (DfqConfigNode *base, DfqConfigNode *over)
{
    if (base == NULL)
        return over;
    if (over == NULL)
        return base;
    if (base->kind != DFQ_CONFIG_MAPPING || over->kind != DFQ_CONFIG_MAPPING) {
        dfq_config_node_free (base);
        return over;
    }
    /* A different `use:` is a different feature whose params do not carry over. */
    const char *base_use = dfq_config_use_name (base);
    const char *over_use = dfq_config_use_name (over);
    if (base_use != NULL && over_use != NULL && strcmp (base_use, over_use) != 0) {
        dfq_config_node_free (base);
        return over;
    }
    for (guint i = 0; i < over->keys->len; i++) {
        DfqConfigNode *key = over->keys->pdata[i];
        DfqConfigNode *value = g_steal_pointer (&over->values->pdata[i]);
        gint j = dfq_config_mapping_index (base, key->scalar);
        if (j < 0) {
            g_ptr_array_add (base->keys, g_steal_pointer (&over->keys->pdata[i]));
            g_ptr_array_add (base->values, value);
        } else {
            base->values->pdata[j] = dfq_config_merge (base->values->pdata[j], value);
            /* The key now points where the winning value was written. */
            DfqConfigNode *old_key = base->keys->pdata[j];
            base->keys->pdata[j] = g_steal_pointer (&over->keys->pdata[i]);
            dfq_config_node_free (old_key);
        }
    }
    dfq_config_node_free (over);
    return base;
}

/* --set --------------------------------------------------------------------- */

typedef struct {
    char *key;   /* mapping key, or NULL for an index */
    guint index;
} DfqConfigPathSegment;

static void
dfq_config_path_segment_clear (gpointer data)
{
    DfqConfigPathSegment *seg = data;
    g_free (seg->key);
}

static gboolean
dfq_config_parse_index (const char *text, gsize len, guint *index)
{
    if (len == 0 || len > 6)
        return FALSE;
    guint v = 0;
    for (gsize i = 0; i < len; i++) {
        if (!g_ascii_isdigit (text[i]))
            return FALSE;
        v = v * 10 + (guint) (text[i] - '0');
    }
    *index = v;
    return TRUE;
}

/* "a.b[1].c" or "a.b.1.c" -> segments. A purely numeric dotted segment is an
 * index (keys of the schema are never numbers). */
static GArray *
dfq_config_parse_path (const char *path, const char *what, GError **error)
{
    g_autoptr (GArray) segments = g_array_new (FALSE, TRUE, sizeof (DfqConfigPathSegment));
    g_array_set_clear_func (segments, dfq_config_path_segment_clear);
    const char *p = path;
    while (TRUE) {
        gsize len = strcspn (p, ".[");
        if (len == 0 && *p != '[') {
            dfq_config_set_error (error, NULL, DFQ_PIPELINE_ERROR_SYNTAX,
                                  "%s: empty key in path '%s'", what, path);
            return NULL;
        }
        if (len > 0) {
            DfqConfigPathSegment seg = { NULL, 0 };
            if (!dfq_config_parse_index (p, len, &seg.index))
                seg.key = g_strndup (p, len);
            g_array_append_val (segments, seg);
        }
        p += len;
        while (*p == '[') {
            const char *close = strchr (p, ']');
            DfqConfigPathSegment seg = { NULL, 0 };
            if (close == NULL || !dfq_config_parse_index (p + 1, (gsize) (close - p - 1), &seg.index)) {
                dfq_config_set_error (error, NULL, DFQ_PIPELINE_ERROR_SYNTAX,
                                      "%s: bad index in path '%s' (expected [N])", what, path);
                return NULL;
            }
            g_array_append_val (segments, seg);
            p = close + 1;
        }
        if (*p == '\0')
            break;
        if (*p != '.') {
            dfq_config_set_error (error, NULL, DFQ_PIPELINE_ERROR_SYNTAX,
                                  "%s: unexpected '%c' in path '%s'", what, *p, path);
            return NULL;
        }
        p++;
        if (*p == '\0') {
            dfq_config_set_error (error, NULL, DFQ_PIPELINE_ERROR_SYNTAX,
                                  "%s: path '%s' ends with '.'", what, path);
            return NULL;
        }
    }
    return g_steal_pointer (&segments);
}

gboolean
dfq_config_apply_override (DfqConfigNode **root, const char *assignment, GError **error)
{
    g_return_val_if_fail (root != NULL && *root != NULL, FALSE);
    g_return_val_if_fail (assignment != NULL, FALSE);
    g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

    const char *eq = strchr (assignment, '=');
    if (eq == NULL || eq == assignment) {
        g_autofree char *q = dfq_priv_quote (assignment);
        dfq_config_set_error (error, NULL, DFQ_PIPELINE_ERROR_SYNTAX,
                              "--set %s: expected KEY=VALUE (e.g. --set train.epochs=2)", q);
        return FALSE;
    }
    g_autofree char *path = g_strndup (assignment, (gsize) (eq - assignment));
    g_strstrip (path);
    if (!g_utf8_validate (path, -1, NULL)) {
        dfq_config_set_error (error, NULL, DFQ_PIPELINE_ERROR_SYNTAX, "--set: the key is not UTF-8 text");
        return FALSE;
    }
    g_autofree char *what = g_strdup_printf ("--set %s", path);
    g_autoptr (GArray) segments = dfq_config_parse_path (path, what, error);
    if (segments == NULL)
        return FALSE;
    if (segments->len > DFQ_CONFIG_MAX_DEPTH) {
        dfq_config_set_error (error, NULL, DFQ_PIPELINE_ERROR_LIMIT,
                              "%s: path deeper than %d keys", what, DFQ_CONFIG_MAX_DEPTH);
        return FALSE;
    }

    /* The value is YAML in its own right; its marks say where it came from. */
    g_autoptr (GError) local = NULL;
    g_autoptr (DfqConfigNode) value = dfq_config_parse (eq + 1, -1, "", &local);
    if (value == NULL) {
        /* "<input>:1:3: YAML syntax error: ..." -> "--set a.b: YAML syntax error: ..." */
        const char *message = local->message;
        const char *after_mark = g_str_has_prefix (message, "<input>:") ? strstr (message, ": ") : NULL;
        dfq_config_set_error (error, NULL, (DfqPipelineError) local->code, "%s: %s", what,
                              after_mark != NULL ? after_mark + 2 : message);
        return FALSE;
    }
    DfqConfigMark mark = { g_intern_string (what), 0, 0 };
    dfq_priv_config_remark (value, &mark);

    if ((*root)->kind == DFQ_CONFIG_NULL) {
        DfqConfigMark root_mark = (*root)->mark;
        dfq_config_node_free (*root);
        *root = dfq_config_node_new (DFQ_CONFIG_MAPPING, &root_mark);
    }
    DfqConfigNode **slot = root;
    for (guint s = 0; s < segments->len; s++) {
        const DfqConfigPathSegment *seg = &g_array_index (segments, DfqConfigPathSegment, s);
        DfqConfigNode *node = *slot;
        if (seg->key == NULL) {
            if (node->kind != DFQ_CONFIG_SEQUENCE) {
                g_autofree char *got = dfq_priv_config_describe (node);
                dfq_config_set_error (error, NULL, DFQ_PIPELINE_ERROR_BAD_VALUE,
                                      "%s: index [%u] into %s, not a list", what, seg->index, got);
                return FALSE;
            }
            if (seg->index >= node->values->len) {
                dfq_config_set_error (error, NULL, DFQ_PIPELINE_ERROR_BAD_VALUE,
                                      "%s: index [%u] out of range (the list has %u items)", what,
                                      seg->index, node->values->len);
                return FALSE;
            }
            slot = (DfqConfigNode **) &node->values->pdata[seg->index];
            continue;
        }
        if (node->kind == DFQ_CONFIG_NULL) {
            /* `student: ~` then --set student.quantizer.use=x: grow the path. */
            DfqConfigNode *mapping = dfq_config_node_new (DFQ_CONFIG_MAPPING, &mark);
            dfq_config_node_free (node);
            *slot = node = mapping;
        } else if (node->kind == DFQ_CONFIG_SCALAR) {
            /* A feature written by name (`losses: [kd]`): --set losses[0].weight=2
             * means {use: kd, weight: 2}. (Any other scalar then fails to bind
             * as a mapping, with this --set's mark.) */
            DfqConfigNode *mapping = dfq_config_node_new (DFQ_CONFIG_MAPPING, &mark);
            g_ptr_array_add (mapping->keys, dfq_config_node_new_scalar ("use", FALSE, &node->mark));
            g_ptr_array_add (mapping->values, node);
            *slot = node = mapping;
        } else if (node->kind != DFQ_CONFIG_MAPPING) {
            g_autofree char *got = dfq_priv_config_describe (node);
            g_autofree char *q = dfq_priv_quote (seg->key);
            dfq_config_set_error (error, NULL, DFQ_PIPELINE_ERROR_BAD_VALUE,
                                  "%s: cannot set key %s inside %s", what, q, got);
            return FALSE;
        }
        gint i = dfq_config_mapping_index (node, seg->key);
        if (i < 0) {
            g_ptr_array_add (node->keys, dfq_config_node_new_scalar (seg->key, FALSE, &mark));
            g_ptr_array_add (node->values, dfq_config_node_new (DFQ_CONFIG_NULL, &mark));
            i = (gint) node->values->len - 1;
        } else if (s + 1 == segments->len) {
            /* The key's mark now says who set the value. */
            DfqConfigNode *key = node->keys->pdata[i];
            key->mark = mark;
        }
        slot = (DfqConfigNode **) &node->values->pdata[i];
    }
    *slot = dfq_config_merge (*slot, g_steal_pointer (&value));
    return TRUE;
}
