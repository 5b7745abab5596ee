/* YAML in and out of the config tree (core/pipeline): libyaml's event parser
 * builds DfqConfigNode trees with 1-based file:line:col marks, its emitter
 * writes them back; files are read here and their `include:` resolved. */
#include <string.h>
#include <sys/stat.h>
#include <yaml.h>
#include <glib/gstdio.h>

#include <dfq/dfq.h>
#include "../params/dfq-params-private.h"

typedef struct {
    yaml_parser_t parser;
    yaml_event_t event;
    gboolean have_event;
    const char *file; /* interned */
    const guchar *text;
    gsize length;
} DfqConfigReader;

/* libyaml counts these as line breaks (IS_BREAK): \r\n, \r, \n, NEL, LS, PS. */
static gsize
dfq_config_break_length (const guchar *p, const guchar *end)
{
    if (p[0] == '\r')
        return p + 1 < end && p[1] == '\n' ? 2 : 1;
    if (p[0] == '\n')
        return 1;
    if (p[0] == 0xC2 && p + 1 < end && p[1] == 0x85)
        return 2;
    if (p[0] == 0xE2 && p + 2 < end && p[1] == 0x80 && (p[2] == 0xA8 || p[2] == 0xA9))
        return 3;
    return 0;
}

/* Start of 0-based line @line in the text, or NULL past the end. */
static const guchar *
dfq_config_line_start (const DfqConfigReader *r, gsize line)
{
    const guchar *p = r->text, *end = r->text + r->length;
    while (line > 0 && p < end) {
        gsize b = dfq_config_break_length (p, end);
        if (b > 0) {
            p += b;
            line--;
        } else {
            p++;
        }
    }
    return line == 0 ? p : NULL;
}

/* 1-based line and column (in characters) of byte @offset. */
static DfqConfigMark
dfq_config_mark_at_offset (const DfqConfigReader *r, gsize offset)
{
    DfqConfigMark mark = { r->file, 1, 1 };
    const guchar *p = r->text, *end = r->text + MIN (offset, r->length);
    while (p < end) {
        gsize b = dfq_config_break_length (p, r->text + r->length);
        if (b > 0) {
            p += b;
            mark.line++;
            mark.column = 1;
        } else {
            if ((*p & 0xC0) != 0x80)
                mark.column++;
            p++;
        }
    }
    /* The column counted one past each character started before @offset. */
    return mark;
}

static DfqConfigMark
dfq_config_mark_from_yaml (const DfqConfigReader *r, yaml_mark_t m)
{
    DfqConfigMark mark = { r->file, (guint) MIN (m.line, G_MAXUINT - 1) + 1,
                           (guint) MIN (m.column, G_MAXUINT - 1) + 1 };
    return mark;
}

static void
dfq_config_reader_error (DfqConfigReader *r, GError **error)
{
    yaml_parser_t *p = &r->parser;
    const char *problem = p->problem != NULL ? p->problem : "unknown error";
    DfqConfigNode where = { 0 };

    if (p->error == YAML_READER_ERROR) {
        where.mark = dfq_config_mark_at_offset (r, p->problem_offset);
        if (p->problem_value >= 0 && p->problem_value != 0)
            dfq_config_set_error (error, &where, DFQ_PIPELINE_ERROR_SYNTAX,
                                  "%s (byte 0x%02x): pipeline files must be UTF-8 text", problem,
                                  (guint) p->problem_value & 0xFF);
        else
            dfq_config_set_error (error, &where, DFQ_PIPELINE_ERROR_SYNTAX,
                                  "%s: pipeline files must be UTF-8 text", problem);
        return;
    }
    if (p->error == YAML_MEMORY_ERROR) {
        where.mark.file = r->file;
        dfq_config_set_error (error, &where, DFQ_PIPELINE_ERROR_LIMIT, "out of memory parsing YAML");
        return;
    }
    where.mark = dfq_config_mark_from_yaml (r, p->problem_mark);

    /* Tabs as indentation give libyaml's cryptic "found character that cannot
     * start any token": say what it is and where the tab is. */
    const guchar *line = dfq_config_line_start (r, p->problem_mark.line);
    if (line != NULL) {
        const guchar *end = r->text + r->length;
        guint column = 1;
        for (const guchar *c = line; c < end && (*c == ' ' || *c == '\t'); c++, column++) {
            if (*c == '\t') {
                where.mark.column = column;
                dfq_config_set_error (error, &where, DFQ_PIPELINE_ERROR_SYNTAX,
                                      "tab character in indentation: YAML indents with spaces only");
                return;
            }
        }
    }
    if (p->context != NULL)
        dfq_config_set_error (error, &where, DFQ_PIPELINE_ERROR_SYNTAX, "YAML syntax error: %s %s",
                              problem, p->context);
    else
        dfq_config_set_error (error, &where, DFQ_PIPELINE_ERROR_SYNTAX, "YAML syntax error: %s", problem);
}

static gboolean
dfq_config_reader_next (DfqConfigReader *r, GError **error)
{
    if (r->have_event) {
        yaml_event_delete (&r->event);
        r->have_event = FALSE;
    }
    if (!yaml_parser_parse (&r->parser, &r->event)) {
        dfq_config_reader_error (r, error);
        return FALSE;
    }
    r->have_event = TRUE;
    return TRUE;
}

static gboolean
dfq_config_check_node_props (DfqConfigReader *r, const yaml_char_t *anchor, const yaml_char_t *tag,
                             GError **error)
{
    DfqConfigNode where = { 0 };
    where.mark = dfq_config_mark_from_yaml (r, r->event.start_mark);
    if (anchor != NULL) {
        dfq_config_set_error (error, &where, DFQ_PIPELINE_ERROR_SYNTAX,
                              "YAML anchors (&name) are not supported: use include: to share settings");
        return FALSE;
    }
    if (tag != NULL) {
        g_autofree char *q = dfq_priv_quote ((const char *) tag);
        dfq_config_set_error (error, &where, DFQ_PIPELINE_ERROR_SYNTAX,
                              "YAML tags (%s) are not supported: quote strings instead", q);
        return FALSE;
    }
    return TRUE;
}

static gboolean
dfq_config_check_scalar_text (DfqConfigReader *r, GError **error)
{
    if (memchr (r->event.data.scalar.value, '\0', r->event.data.scalar.length) != NULL) {
        DfqConfigNode where = { 0 };
        where.mark = dfq_config_mark_from_yaml (r, r->event.start_mark);
        dfq_config_set_error (error, &where, DFQ_PIPELINE_ERROR_SYNTAX, "NUL character in a string");
        return FALSE;
    }
    return TRUE;
}

/* Builds the node of the current event (consuming the events of its children). */
static DfqConfigNode *
dfq_config_read_node (DfqConfigReader *r, guint depth, GError **error)
{
    yaml_event_t *ev = &r->event;
    DfqConfigMark mark = dfq_config_mark_from_yaml (r, ev->start_mark);
    DfqConfigNode where = { 0 };
    where.mark = mark;

    switch (ev->type) {
    case YAML_ALIAS_EVENT:
        dfq_config_set_error (error, &where, DFQ_PIPELINE_ERROR_SYNTAX,
                              "YAML aliases (*name) are not supported: use include: to share settings");
        return NULL;
    case YAML_SCALAR_EVENT: {
        if (!dfq_config_check_node_props (r, ev->data.scalar.anchor, ev->data.scalar.tag, error) ||
            !dfq_config_check_scalar_text (r, error))
            return NULL;
        const char *text = (const char *) ev->data.scalar.value;
        gboolean plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
        if (plain && dfq_priv_scalar_is_null (text))
            return dfq_config_node_new (DFQ_CONFIG_NULL, &mark);
        return dfq_config_node_new_scalar (text, !plain, &mark);
    }
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT: {
        gboolean is_map = ev->type == YAML_MAPPING_START_EVENT;
        if (is_map ? !dfq_config_check_node_props (r, ev->data.mapping_start.anchor,
                                                   ev->data.mapping_start.tag, error)
                   : !dfq_config_check_node_props (r, ev->data.sequence_start.anchor,
                                                   ev->data.sequence_start.tag, error))
            return NULL;
        if (depth >= DFQ_CONFIG_MAX_DEPTH) {
            dfq_config_set_error (error, &where, DFQ_PIPELINE_ERROR_LIMIT,
                                  "nesting deeper than %d levels", DFQ_CONFIG_MAX_DEPTH);
            return NULL;
        }
        g_autoptr (DfqConfigNode) node =
            dfq_config_node_new (is_map ? DFQ_CONFIG_MAPPING : DFQ_CONFIG_SEQUENCE, &mark);
        g_autoptr (GHashTable) seen =
            is_map ? g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free) : NULL;
        yaml_event_type_t end = is_map ? YAML_MAPPING_END_EVENT : YAML_SEQUENCE_END_EVENT;
        while (TRUE) {
            if (!dfq_config_reader_next (r, error))
                return NULL;
            if (ev->type == end)
                break;
            if (is_map) {
                DfqConfigMark key_mark = dfq_config_mark_from_yaml (r, ev->start_mark);
                DfqConfigNode key_where = { 0 };
                key_where.mark = key_mark;
                if (ev->type != YAML_SCALAR_EVENT) {
                    dfq_config_set_error (error, &key_where, DFQ_PIPELINE_ERROR_SYNTAX,
                                          "mapping keys must be plain names, not %s",
                                          ev->type == YAML_ALIAS_EVENT ? "aliases" : "collections");
                    return NULL;
                }
                if (!dfq_config_check_node_props (r, ev->data.scalar.anchor, ev->data.scalar.tag, error) ||
                    !dfq_config_check_scalar_text (r, error))
                    return NULL;
                const char *text = (const char *) ev->data.scalar.value;
                const DfqConfigMark *first = g_hash_table_lookup (seen, text);
                if (first != NULL) {
                    g_autofree char *q = dfq_priv_quote (text);
                    dfq_config_set_error (error, &key_where, DFQ_PIPELINE_ERROR_SYNTAX,
                                          "duplicate key %s (first at line %u, column %u)", q,
                                          first->line, first->column);
                    return NULL;
                }
                g_hash_table_insert (seen, g_strdup (text), g_memdup2 (&key_mark, sizeof key_mark));
                g_ptr_array_add (node->keys, dfq_config_node_new_scalar (text, FALSE, &key_mark));
                if (!dfq_config_reader_next (r, error))
                    return NULL;
            }
            DfqConfigNode *child = dfq_config_read_node (r, depth + 1, error);
            if (child == NULL)
                return NULL;
            g_ptr_array_add (node->values, child);
        }
        return g_steal_pointer (&node);
    }
    default:
        dfq_config_set_error (error, &where, DFQ_PIPELINE_ERROR_SYNTAX, "unexpected YAML structure");
        return NULL;
    }
}

DfqConfigNode *
dfq_config_parse (const char *text, gssize length, const char *filename, GError **error)
{
    g_return_val_if_fail (text != NULL || length == 0, NULL);
    g_return_val_if_fail (error == NULL || *error == NULL, NULL);

    gsize len = length < 0 ? strlen (text) : (gsize) length;
    DfqConfigReader r = { 0 };
    r.file = g_intern_string (filename != NULL ? filename : "<input>");
    r.text = (const guchar *) (text != NULL ? text : "");
    r.length = len;
    DfqConfigNode start = { 0 };
    start.mark.file = r.file;
    start.mark.line = 1;
    start.mark.column = 1;

    if (len > DFQ_CONFIG_MAX_FILE_SIZE) {
        dfq_config_set_error (error, &start, DFQ_PIPELINE_ERROR_LIMIT,
                              "file too large (%" G_GSIZE_FORMAT " bytes; at most %d)", len,
                              DFQ_CONFIG_MAX_FILE_SIZE);
        return NULL;
    }
    if (!yaml_parser_initialize (&r.parser)) {
        dfq_config_set_error (error, &start, DFQ_PIPELINE_ERROR_LIMIT, "out of memory");
        return NULL;
    }
    yaml_parser_set_input_string (&r.parser, r.text, len);
    /* UTF-8 only: a UTF-16 byte-order mark is then an encoding error, not a
     * silent switch. */
    yaml_parser_set_encoding (&r.parser, YAML_UTF8_ENCODING);

    DfqConfigNode *root = NULL;
    gboolean ok = dfq_config_reader_next (&r, error) && dfq_config_reader_next (&r, error);
    if (ok && r.event.type == YAML_STREAM_END_EVENT) {
        root = dfq_config_node_new (DFQ_CONFIG_NULL, &start.mark); /* empty file */
    } else if (ok && r.event.type == YAML_DOCUMENT_START_EVENT) {
        ok = dfq_config_reader_next (&r, error);
        if (ok)
            root = dfq_config_read_node (&r, 0, error);
        ok = root != NULL && dfq_config_reader_next (&r, error) && dfq_config_reader_next (&r, error);
        if (ok && r.event.type == YAML_DOCUMENT_START_EVENT) {
            DfqConfigNode where = { 0 };
            where.mark = dfq_config_mark_from_yaml (&r, r.event.start_mark);
            dfq_config_set_error (error, &where, DFQ_PIPELINE_ERROR_SYNTAX,
                                  "a second YAML document ('---'): a pipeline file holds one");
            ok = FALSE;
        }
    } else if (ok) {
        dfq_config_set_error (error, &start, DFQ_PIPELINE_ERROR_SYNTAX, "unexpected YAML structure");
        ok = FALSE;
    }
    if (r.have_event)
        yaml_event_delete (&r.event);
    yaml_parser_delete (&r.parser);
    if (!ok) {
        dfq_config_node_free (root);
        return NULL;
    }
    return root;
}

/* Emission ------------------------------------------------------------------ */

static int
dfq_config_write_handler (void *data, unsigned char *buffer, size_t size)
{
    g_string_append_len (data, (const char *) buffer, (gssize) size);
    return 1;
}

static gboolean
dfq_config_emit_scalar (yaml_emitter_t *emitter, const char *text, gboolean is_string, gboolean plain)
{
    yaml_event_t event;
    yaml_scalar_style_t style = YAML_ANY_SCALAR_STYLE;
    if (plain)
        style = YAML_PLAIN_SCALAR_STYLE;
    else if (is_string && (text[0] == '\0' || dfq_priv_scalar_looks_typed (text)))
        style = YAML_DOUBLE_QUOTED_SCALAR_STYLE; /* "true", "1", "null" stay strings */
    yaml_scalar_event_initialize (&event, NULL, NULL, (yaml_char_t *) text, (int) strlen (text), 1, 1, style);
    return yaml_emitter_emit (emitter, &event) != 0;
}

static gboolean
dfq_config_emit_node (yaml_emitter_t *emitter, const DfqConfigNode *node)
{
    yaml_event_t event;
    switch (node->kind) {
    case DFQ_CONFIG_NULL:
        return dfq_config_emit_scalar (emitter, "null", FALSE, TRUE);
    case DFQ_CONFIG_SCALAR:
        return dfq_config_emit_scalar (emitter, node->scalar, node->quoted, FALSE);
    case DFQ_CONFIG_SEQUENCE: {
        gboolean flow = TRUE;
        for (guint i = 0; i < node->values->len; i++) {
            const DfqConfigNode *item = node->values->pdata[i];
            if (item->kind == DFQ_CONFIG_MAPPING || item->kind == DFQ_CONFIG_SEQUENCE)
                flow = FALSE;
        }
        yaml_sequence_start_event_initialize (&event, NULL, NULL, 1,
                                              flow ? YAML_FLOW_SEQUENCE_STYLE : YAML_BLOCK_SEQUENCE_STYLE);
        if (!yaml_emitter_emit (emitter, &event))
            return FALSE;
        for (guint i = 0; i < node->values->len; i++)
            if (!dfq_config_emit_node (emitter, node->values->pdata[i]))
                return FALSE;
        yaml_sequence_end_event_initialize (&event);
        return yaml_emitter_emit (emitter, &event) != 0;
    }
    case DFQ_CONFIG_MAPPING:
    default: {
        yaml_mapping_start_event_initialize (&event, NULL, NULL, 1,
                                             node->keys->len == 0 ? YAML_FLOW_MAPPING_STYLE
                                                                  : YAML_BLOCK_MAPPING_STYLE);
        if (!yaml_emitter_emit (emitter, &event))
            return FALSE;
        for (guint i = 0; i < node->keys->len; i++) {
            const DfqConfigNode *key = node->keys->pdata[i];
            if (!dfq_config_emit_scalar (emitter, key->scalar, TRUE, FALSE) ||
                !dfq_config_emit_node (emitter, node->values->pdata[i]))
                return FALSE;
        }
        yaml_mapping_end_event_initialize (&event);
        return yaml_emitter_emit (emitter, &event) != 0;
    }
    }
}

char *
dfq_config_to_yaml (const DfqConfigNode *node)
{
    g_return_val_if_fail (node != NULL, NULL);
    GString *out = g_string_new (NULL);
    yaml_emitter_t emitter;
    yaml_event_t event;
    gboolean ok = yaml_emitter_initialize (&emitter) != 0;
    if (ok) {
        yaml_emitter_set_output (&emitter, dfq_config_write_handler, out);
        yaml_emitter_set_unicode (&emitter, 1);
        yaml_emitter_set_width (&emitter, -1);
        yaml_emitter_set_indent (&emitter, 2);
        yaml_stream_start_event_initialize (&event, YAML_UTF8_ENCODING);
        ok = yaml_emitter_emit (&emitter, &event) != 0;
        if (ok) {
            yaml_document_start_event_initialize (&event, NULL, NULL, NULL, 1);
            ok = yaml_emitter_emit (&emitter, &event) != 0;
        }
        ok = ok && dfq_config_emit_node (&emitter, node);
        if (ok) {
            yaml_document_end_event_initialize (&event, 1);
            ok = yaml_emitter_emit (&emitter, &event) != 0;
        }
        if (ok) {
            yaml_stream_end_event_initialize (&event);
            ok = yaml_emitter_emit (&emitter, &event) != 0;
        }
        yaml_emitter_delete (&emitter);
    }
    /* Every string in a tree came through the parser (valid UTF-8) or from a
     * validated param table, so the emitter has nothing to refuse. */
    if (!ok)
        g_critical ("dfq_config_to_yaml: libyaml refused the tree (invalid UTF-8 in a string?)");
    return g_string_free (out, FALSE);
}

/* Files and includes -------------------------------------------------------- */

static DfqConfigNode *
dfq_config_read_file (const char *path, const DfqConfigNode *included_from, GError **error)
{
    DfqPipelineError code = included_from != NULL ? DFQ_PIPELINE_ERROR_INCLUDE : DFQ_PIPELINE_ERROR_IO;
    const char *what = included_from != NULL ? "cannot include" : "cannot read pipeline";
    struct stat st;

    if (g_stat (path, &st) != 0) {
        int err = errno;
        dfq_config_set_error (error, included_from, code, "%s '%s': %s", what, path, g_strerror (err));
        return NULL;
    }
    if (!S_ISREG (st.st_mode)) {
        dfq_config_set_error (error, included_from, code, "%s '%s': not a regular file", what, path);
        return NULL;
    }
    if (st.st_size > DFQ_CONFIG_MAX_FILE_SIZE) {
        dfq_config_set_error (error, included_from, DFQ_PIPELINE_ERROR_LIMIT,
                              "%s '%s': file too large (%lld bytes; at most %d)", what, path,
                              (long long) st.st_size, DFQ_CONFIG_MAX_FILE_SIZE);
        return NULL;
    }
    g_autofree char *text = NULL;
    gsize length = 0;
    g_autoptr (GError) local = NULL;
    if (!g_file_get_contents (path, &text, &length, &local)) {
        dfq_config_set_error (error, included_from, code, "%s: %s", what, local->message);
        return NULL;
    }
    return dfq_config_parse (text, (gssize) length, path, error);
}

static gboolean
dfq_config_include (DfqConfigNode **root, const char *filename, GPtrArray *stack, GError **error)
{
    if ((*root)->kind != DFQ_CONFIG_MAPPING)
        return TRUE; /* the binder says what is wrong with it */
    DfqConfigNode *include = dfq_config_mapping_get (*root, "include");
    if (include == NULL)
        return TRUE;

    g_autoptr (GPtrArray) items = g_ptr_array_new ();
    if (include->kind == DFQ_CONFIG_SCALAR) {
        g_ptr_array_add (items, include);
    } else if (include->kind == DFQ_CONFIG_SEQUENCE) {
        for (guint i = 0; i < include->values->len; i++)
            g_ptr_array_add (items, include->values->pdata[i]);
    } else if (include->kind != DFQ_CONFIG_NULL) {
        dfq_config_set_error (error, include, DFQ_PIPELINE_ERROR_INCLUDE,
                              "include: expects a file name or a list of file names");
        return FALSE;
    }
    if (items->len > 0 && stack->len > DFQ_CONFIG_MAX_INCLUDE_DEPTH) {
        dfq_config_set_error (error, include, DFQ_PIPELINE_ERROR_INCLUDE,
                              "includes nested deeper than %d files", DFQ_CONFIG_MAX_INCLUDE_DEPTH);
        return FALSE;
    }

    g_autofree char *dir = g_path_get_dirname (filename);
    DfqConfigNode *merged = NULL;
    for (guint i = 0; i < items->len; i++) {
        const DfqConfigNode *item = items->pdata[i];
        if (item->kind != DFQ_CONFIG_SCALAR || item->scalar[0] == '\0') {
            dfq_config_node_free (merged);
            dfq_config_set_error (error, item, DFQ_PIPELINE_ERROR_INCLUDE,
                                  "include: expects file names, not %s",
                                  item->kind == DFQ_CONFIG_SCALAR ? "an empty string"
                                  : item->kind == DFQ_CONFIG_NULL ? "null" : "collections");
            return FALSE;
        }
        /* Relative to the including file, as C's #include "x". */
        g_autofree char *path = g_path_is_absolute (item->scalar)
                                    ? g_strdup (item->scalar)
                                    : g_build_filename (dir, item->scalar, NULL);
        g_autofree char *canonical = g_canonicalize_filename (path, NULL);
        for (guint s = 0; s < stack->len; s++) {
            if (strcmp (stack->pdata[s], canonical) == 0) {
                GString *chain = g_string_new (NULL);
                for (guint c = s; c < stack->len; c++)
                    g_string_append_printf (chain, "%s -> ", (const char *) stack->pdata[c]);
                g_string_append (chain, canonical);
                dfq_config_node_free (merged);
                dfq_config_set_error (error, item, DFQ_PIPELINE_ERROR_INCLUDE, "include cycle: %s", chain->str);
                g_string_free (chain, TRUE);
                return FALSE;
            }
        }
        DfqConfigNode *sub = dfq_config_read_file (path, item, error);
        if (sub == NULL) {
            dfq_config_node_free (merged);
            return FALSE;
        }
        g_ptr_array_add (stack, g_steal_pointer (&canonical));
        gboolean ok = dfq_config_include (&sub, path, stack, error);
        g_free (g_ptr_array_steal_index (stack, stack->len - 1));
        if (!ok) {
            dfq_config_node_free (sub);
            dfq_config_node_free (merged);
            return FALSE;
        }
        if (sub->kind != DFQ_CONFIG_MAPPING && sub->kind != DFQ_CONFIG_NULL) {
            dfq_config_set_error (error, sub, DFQ_PIPELINE_ERROR_INCLUDE,
                                  "an included file must hold a mapping");
            dfq_config_node_free (sub);
            dfq_config_node_free (merged);
            return FALSE;
        }
        merged = dfq_config_merge (merged, sub);
    }
    dfq_config_mapping_remove (*root, "include");
    if (merged != NULL && merged->kind == DFQ_CONFIG_MAPPING)
        *root = dfq_config_merge (merged, *root);
    else
        dfq_config_node_free (merged);
    return TRUE;
}

gboolean
dfq_config_resolve_includes (DfqConfigNode **root, const char *filename, GError **error)
{
    g_return_val_if_fail (root != NULL && *root != NULL, FALSE);
    g_return_val_if_fail (error == NULL || *error == NULL, FALSE);
    g_autoptr (GPtrArray) stack = g_ptr_array_new_with_free_func (g_free);
    g_ptr_array_add (stack, g_canonicalize_filename (filename != NULL ? filename : "<input>", NULL));
    return dfq_config_include (root, filename != NULL ? filename : "<input>", stack, error);
}

DfqConfigNode *
dfq_config_load_file (const char *path, GError **error)
{
    g_return_val_if_fail (path != NULL, NULL);
    g_return_val_if_fail (error == NULL || *error == NULL, NULL);
    g_autoptr (DfqConfigNode) root = dfq_config_read_file (path, NULL, error);
    if (root == NULL)
        return NULL;
    if (!dfq_config_resolve_includes (&root, path, error))
        return NULL;
    return g_steal_pointer (&root);
}
