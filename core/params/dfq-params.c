/* Parameter specs (core/params): names of types and kinds, YAML scalar
 * resolution, message helpers ("did you mean"), releasing bound values and the
 * validation of a feature's param table when it registers. Binding itself is
 * in dfq-params-bind.c. */
#include <errno.h>
#include <math.h>
#include <string.h>

#include <dfq/dfq.h>
#include "dfq-params-private.h"

static const char *const dfq_param_type_names[DFQ_PARAM_TYPE_COUNT] = {
    [DFQ_PARAM_TYPE_INT] = "int",
    [DFQ_PARAM_TYPE_DOUBLE] = "double",
    [DFQ_PARAM_TYPE_BOOL] = "bool",
    [DFQ_PARAM_TYPE_STRING] = "string",
    [DFQ_PARAM_TYPE_ENUM] = "enum",
    [DFQ_PARAM_TYPE_INT_LIST] = "int-list",
    [DFQ_PARAM_TYPE_DOUBLE_LIST] = "double-list",
    [DFQ_PARAM_TYPE_FEATURE] = "feature",
    [DFQ_PARAM_TYPE_FEATURE_LIST] = "feature-list",
    [DFQ_PARAM_TYPE_STRUCT] = "struct",
    [DFQ_PARAM_TYPE_STRING_LIST] = "string-list",
};

static const char *const dfq_feature_kind_names[DFQ_FEATURE_KIND_COUNT] = {
    [DFQ_FEATURE_MODEL] = "model",
    [DFQ_FEATURE_SYNTHESIZER] = "synthesizer",
    [DFQ_FEATURE_LOSS] = "loss",
    [DFQ_FEATURE_QUANTIZER] = "quantizer",
    [DFQ_FEATURE_TRANSFORM] = "transform",
};

const char *
dfq_param_type_name (DfqParamType type)
{
    g_return_val_if_fail ((guint) type < DFQ_PARAM_TYPE_COUNT, "invalid");
    return dfq_param_type_names[type];
}

const char *
dfq_feature_kind_name (DfqFeatureKind kind)
{
    g_return_val_if_fail ((guint) kind < DFQ_FEATURE_KIND_COUNT, "invalid");
    return dfq_feature_kind_names[kind];
}

gboolean
dfq_feature_kind_from_name (const char *name, DfqFeatureKind *kind)
{
    g_return_val_if_fail (name != NULL, FALSE);
    for (guint k = 0; k < DFQ_FEATURE_KIND_COUNT; k++) {
        if (strcmp (name, dfq_feature_kind_names[k]) == 0) {
            if (kind != NULL)
                *kind = (DfqFeatureKind) k;
            return TRUE;
        }
    }
    return FALSE;
}

const DfqParamSpec *
dfq_param_spec_find (const DfqParamSpec *specs, guint n_specs, const char *name)
{
    g_return_val_if_fail (specs != NULL || n_specs == 0, NULL);
    g_return_val_if_fail (name != NULL, NULL);
    for (guint i = 0; i < n_specs; i++)
        if (specs[i].name != NULL && strcmp (specs[i].name, name) == 0)
            return &specs[i];
    return NULL;
}

void
dfq_params_clear (const DfqParamSpec *specs, guint n_specs, gpointer base)
{
    g_return_if_fail (specs != NULL || n_specs == 0);
    g_return_if_fail (base != NULL);
    for (guint i = 0; i < n_specs; i++) {
        const DfqParamSpec *spec = &specs[i];
        gpointer field = G_STRUCT_MEMBER_P (base, spec->offset);
        switch (spec->type) {
        case DFQ_PARAM_TYPE_STRING:
            g_clear_pointer ((char **) field, g_free);
            break;
        case DFQ_PARAM_TYPE_STRING_LIST:
            g_clear_pointer ((char ***) field, g_strfreev);
            break;
        case DFQ_PARAM_TYPE_FEATURE:
            g_clear_pointer ((DfqFeature **) field, dfq_feature_free);
            break;
        case DFQ_PARAM_TYPE_FEATURE_LIST:
            g_clear_pointer ((GPtrArray **) field, g_ptr_array_unref);
            break;
        case DFQ_PARAM_TYPE_STRUCT:
            dfq_params_clear (spec->sub_params, spec->n_sub_params, field);
            break;
        default:
            break;
        }
    }
}

/* Scalars ------------------------------------------------------------------- */

gboolean
dfq_priv_scalar_is_null (const char *text)
{
    return text[0] == '\0' || strcmp (text, "~") == 0 || strcmp (text, "null") == 0 ||
           strcmp (text, "Null") == 0 || strcmp (text, "NULL") == 0;
}

gboolean
dfq_priv_parse_bool (const char *text, gboolean *out)
{
    if (strcmp (text, "true") == 0 || strcmp (text, "True") == 0 || strcmp (text, "TRUE") == 0) {
        *out = TRUE;
        return TRUE;
    }
    if (strcmp (text, "false") == 0 || strcmp (text, "False") == 0 || strcmp (text, "FALSE") == 0) {
        *out = FALSE;
        return TRUE;
    }
    return FALSE;
}

/* YAML 1.2 core schema floats: [-+]? ( . [0-9]+ | [0-9]+ ( . [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?
 * (plus .inf/.nan, which no parameter accepts). Stricter than strtod: no hex,
 * no "inf", no leading blanks. */
static gboolean
dfq_priv_is_decimal (const char *text, gboolean *integral)
{
    const char *p = text;
    gboolean digits = FALSE;
    *integral = TRUE;
    if (*p == '-' || *p == '+')
        p++;
    while (g_ascii_isdigit (*p)) {
        p++;
        digits = TRUE;
    }
    if (*p == '.') {
        *integral = FALSE;
        p++;
        while (g_ascii_isdigit (*p)) {
            p++;
            digits = TRUE;
        }
    }
    if (!digits)
        return FALSE;
    if (*p == 'e' || *p == 'E') {
        *integral = FALSE;
        p++;
        if (*p == '-' || *p == '+')
            p++;
        if (!g_ascii_isdigit (*p))
            return FALSE;
        while (g_ascii_isdigit (*p))
            p++;
    }
    return *p == '\0';
}

DfqPrivNumStatus
dfq_priv_parse_double (const char *text, gdouble *out)
{
    gboolean integral;
    if (!dfq_priv_is_decimal (text, &integral))
        return DFQ_PRIV_NUM_INVALID;
    errno = 0;
    gdouble v = g_ascii_strtod (text, NULL);
    if (!isfinite (v))
        return DFQ_PRIV_NUM_RANGE;
    *out = v;
    return DFQ_PRIV_NUM_OK;
}

DfqPrivNumStatus
dfq_priv_parse_int (const char *text, gint *out)
{
    gboolean integral;
    if (!dfq_priv_is_decimal (text, &integral))
        return DFQ_PRIV_NUM_INVALID;
    if (integral) {
        gint64 v = 0;
        if (!g_ascii_string_to_signed (text, 10, G_MININT, G_MAXINT, &v, NULL))
            return DFQ_PRIV_NUM_RANGE;
        *out = (gint) v;
        return DFQ_PRIV_NUM_OK;
    }
    /* "1e4" is an integer written as a float: accept exact integral values. */
    gdouble d = g_ascii_strtod (text, NULL);
    if (!isfinite (d) || d < (gdouble) G_MININT || d > (gdouble) G_MAXINT)
        return DFQ_PRIV_NUM_RANGE;
    if (d != floor (d))
        return DFQ_PRIV_NUM_FRACTION;
    *out = (gint) d;
    return DFQ_PRIV_NUM_OK;
}

gboolean
dfq_priv_scalar_looks_typed (const char *text)
{
    gboolean b, integral;
    if (dfq_priv_scalar_is_null (text) || dfq_priv_parse_bool (text, &b) ||
        dfq_priv_is_decimal (text, &integral))
        return TRUE;
    /* Other YAML 1.1/1.2 spellings other tools read as non-strings. */
    static const char *const other[] = { "yes", "Yes", "YES", "no", "No", "NO", "on", "On", "ON",
                                         "off", "Off", "OFF", ".inf", ".Inf",
                                         ".INF", "-.inf", "+.inf", ".nan", ".NaN", ".NAN" };
    for (guint i = 0; i < G_N_ELEMENTS (other); i++)
        if (strcmp (text, other[i]) == 0)
            return TRUE;
    /* 0x1F, 0o17 (YAML 1.2 core integers). */
    if (text[0] == '0' && (text[1] == 'x' || text[1] == 'o') && text[2] != '\0') {
        for (const char *p = text + 2; *p != '\0'; p++)
            if (text[1] == 'x' ? !g_ascii_isxdigit (*p) : (*p < '0' || *p > '7'))
                return FALSE;
        return TRUE;
    }
    return FALSE;
}

char *
dfq_priv_format_double (gdouble v)
{
    char buf[G_ASCII_DTOSTR_BUF_SIZE];
    /* Shortest of %.15g .. %.17g that reads back exactly. */
    for (int precision = 15; precision <= 17; precision++) {
        g_ascii_formatd (buf, sizeof buf, precision == 15 ? "%.15g" : precision == 16 ? "%.16g" : "%.17g", v);
        if (g_ascii_strtod (buf, NULL) == v)
            break;
    }
    if (strpbrk (buf, ".eEn") == NULL)
        g_strlcat (buf, ".0", sizeof buf);
    return g_strdup (buf);
}

char *
dfq_priv_format_number (gdouble v)
{
    if (v == floor (v) && fabs (v) < 1e15)
        return g_strdup_printf ("%.0f", v);
    char *s = dfq_priv_format_double (v);
    return s;
}

/* Messages ------------------------------------------------------------------ */

char *
dfq_priv_quote (const char *text)
{
    GString *out = g_string_new ("'");
    gsize len = strlen (text), i = 0;
    guint n = 0;
    while (i < len) {
        if (++n > 60) {
            g_string_append (out, "...");
            break;
        }
        guchar c = (guchar) text[i];
        if (c < 0x20 || c == 0x7f) {
            g_string_append_printf (out, "\\x%02x", c);
            i++;
        } else if (c < 0x80) {
            g_string_append_c (out, (char) c);
            i++;
        } else if (g_utf8_get_char_validated (text + i, (gssize) (len - i)) < (gunichar) -2) {
            gsize w = (gsize) (g_utf8_next_char (text + i) - (text + i));
            g_string_append_len (out, text + i, (gssize) w);
            i += w;
        } else {
            g_string_append_printf (out, "\\x%02x", c); /* not UTF-8 (argv) */
            i++;
        }
    }
    g_string_append_c (out, '\'');
    return g_string_free (out, FALSE);
}

/* Optimal string alignment distance (Levenshtein plus adjacent swaps, so
 * "itres" is 1 from "iters"). Words are short: cap their length. */
static guint
dfq_priv_edit_distance (const char *a, const char *b)
{
    gsize la = MIN (strlen (a), 64), lb = MIN (strlen (b), 64);
    guint d[65][65];
    for (gsize i = 0; i <= la; i++)
        d[i][0] = (guint) i;
    for (gsize j = 0; j <= lb; j++)
        d[0][j] = (guint) j;
    for (gsize i = 1; i <= la; i++) {
        for (gsize j = 1; j <= lb; j++) {
            guint cost = a[i - 1] == b[j - 1] ? 0 : 1;
            guint v = MIN (d[i - 1][j] + 1, d[i][j - 1] + 1);
            v = MIN (v, d[i - 1][j - 1] + cost);
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
                v = MIN (v, d[i - 2][j - 2] + 1);
            d[i][j] = v;
        }
    }
    return d[la][lb];
}

const char *
dfq_priv_suggest (const char *word, const char *const *candidates, guint n_candidates)
{
    gsize len = strlen (word);
    if (len == 0 || len > 64)
        return NULL;
    /* Allow about one typo per three characters. */
    guint limit = len <= 3 ? 1 : len <= 8 ? 2 : 3;
    const char *best = NULL;
    guint best_d = G_MAXUINT;
    for (guint i = 0; i < n_candidates; i++) {
        guint d = dfq_priv_edit_distance (word, candidates[i]);
        if (d < best_d) {
            best_d = d;
            best = candidates[i];
        }
    }
    return best_d > 0 && best_d <= limit ? best : NULL;
}

char *
dfq_priv_params_names (const DfqParamSpec *specs, guint n_specs)
{
    GString *out = g_string_new (NULL);
    for (guint i = 0; i < n_specs; i++)
        g_string_append_printf (out, "%s%s", i > 0 ? ", " : "", specs[i].name);
    return g_string_free (out, FALSE);
}

gboolean
dfq_priv_param_has_range (const DfqParamSpec *spec)
{
    return !(spec->min == 0.0 && spec->max == 0.0);
}

char *
dfq_priv_param_range_string (const DfqParamSpec *spec)
{
    switch (spec->type) {
    case DFQ_PARAM_TYPE_INT:
    case DFQ_PARAM_TYPE_DOUBLE:
    case DFQ_PARAM_TYPE_INT_LIST:
    case DFQ_PARAM_TYPE_DOUBLE_LIST:
        break;
    default:
        return NULL;
    }
    if (!dfq_priv_param_has_range (spec))
        return NULL;
    g_autofree char *lo = dfq_priv_format_number (spec->min);
    g_autofree char *hi = dfq_priv_format_number (spec->max);
    return g_strdup_printf ("%s .. %s", lo, hi);
}

/* Table validation ------------------------------------------------------------ */

gsize
dfq_priv_param_size (const DfqParamSpec *spec)
{
    switch (spec->type) {
    case DFQ_PARAM_TYPE_INT:
    case DFQ_PARAM_TYPE_ENUM:
        return sizeof (gint);
    case DFQ_PARAM_TYPE_DOUBLE:
        return sizeof (gdouble);
    case DFQ_PARAM_TYPE_BOOL:
        return sizeof (gboolean);
    case DFQ_PARAM_TYPE_STRING:
    case DFQ_PARAM_TYPE_STRING_LIST:
    case DFQ_PARAM_TYPE_FEATURE:
    case DFQ_PARAM_TYPE_FEATURE_LIST:
        return sizeof (gpointer);
    case DFQ_PARAM_TYPE_INT_LIST:
    case DFQ_PARAM_TYPE_DOUBLE_LIST:
        return sizeof (DfqNumberList);
    case DFQ_PARAM_TYPE_STRUCT:
        return dfq_priv_params_extent (spec->sub_params, spec->n_sub_params);
    default:
        return 0;
    }
}

static gsize
dfq_priv_param_align (const DfqParamSpec *spec)
{
    switch (spec->type) {
    case DFQ_PARAM_TYPE_INT:
    case DFQ_PARAM_TYPE_ENUM:
        return G_ALIGNOF (gint);
    case DFQ_PARAM_TYPE_BOOL:
        return G_ALIGNOF (gboolean);
    case DFQ_PARAM_TYPE_DOUBLE:
    case DFQ_PARAM_TYPE_INT_LIST:
    case DFQ_PARAM_TYPE_DOUBLE_LIST:
        return G_ALIGNOF (gdouble);
    case DFQ_PARAM_TYPE_STRUCT:
        return 1;
    default:
        return G_ALIGNOF (gpointer);
    }
}

gsize
dfq_priv_params_extent (const DfqParamSpec *specs, guint n_specs)
{
    gsize extent = 0;
    if (specs == NULL)
        return 0;
    for (guint i = 0; i < n_specs; i++)
        extent = MAX (extent, specs[i].offset + dfq_priv_param_size (&specs[i]));
    return extent;
}

static gboolean
dfq_priv_is_param_name (const char *name)
{
    if (!g_ascii_islower (name[0]) && name[0] != '_')
        return FALSE;
    for (const char *p = name; *p != '\0'; p++)
        if (!g_ascii_islower (*p) && !g_ascii_isdigit (*p) && *p != '_')
            return FALSE;
    return TRUE;
}

/* A FEATURE default is a name or {use: name, ...}; checked for shape only,
 * since the feature it names may register later. */
static gboolean
dfq_priv_feature_default_ok (const DfqConfigNode *node)
{
    if (node->kind == DFQ_CONFIG_SCALAR)
        return TRUE;
    if (node->kind != DFQ_CONFIG_MAPPING)
        return FALSE;
    const DfqConfigNode *use = dfq_config_mapping_get (node, "use");
    return use != NULL && use->kind == DFQ_CONFIG_SCALAR;
}

static gboolean
dfq_priv_param_validate_default (const DfqParamSpec *spec, const char *where, GError **error)
{
    g_autoptr (GError) local = NULL;
    g_autoptr (DfqConfigNode) node = dfq_config_parse (spec->default_value, -1, "", &local);
    if (node == NULL) {
        g_set_error (error, DFQ_PLUGIN_ERROR, DFQ_PLUGIN_ERROR_BAD_FEATURE,
                     "%s: default %s is not valid YAML (%s)", where, spec->default_value, local->message);
        return FALSE;
    }
    DfqConfigMark nowhere = { "", 0, 0 };
    dfq_priv_config_remark (node, &nowhere);
    if (spec->type == DFQ_PARAM_TYPE_FEATURE || spec->type == DFQ_PARAM_TYPE_FEATURE_LIST) {
        gboolean ok;
        if (spec->type == DFQ_PARAM_TYPE_FEATURE) {
            ok = dfq_priv_feature_default_ok (node);
        } else {
            ok = node->kind == DFQ_CONFIG_SEQUENCE || node->kind == DFQ_CONFIG_NULL;
            for (guint i = 0; ok && node->kind == DFQ_CONFIG_SEQUENCE && i < node->values->len; i++)
                ok = dfq_priv_feature_default_ok (node->values->pdata[i]);
        }
        if (!ok)
            g_set_error (error, DFQ_PLUGIN_ERROR, DFQ_PLUGIN_ERROR_BAD_FEATURE,
                         "%s: default %s is not a feature name, {use: name, ...} or a list of them",
                         where, spec->default_value);
        return ok;
    }
    /* Bind the default alone into scratch memory, with the code that binds
     * pipelines (no registry: nested features are checked for shape only). */
    gsize size = spec->offset + dfq_priv_param_size (spec);
    gpointer scratch = g_malloc0 (MAX (size, 1));
    g_autoptr (DfqConfigNode) mapping = dfq_config_node_new (DFQ_CONFIG_MAPPING, &node->mark);
    dfq_config_mapping_set (mapping, spec->name, g_steal_pointer (&node));
    gboolean ok = dfq_params_bind (NULL, spec, 1, scratch, mapping, "its default", NULL, &local);
    dfq_params_clear (spec, 1, scratch);
    g_free (scratch);
    if (!ok)
        g_set_error (error, DFQ_PLUGIN_ERROR, DFQ_PLUGIN_ERROR_BAD_FEATURE, "%s: bad default %s: %s",
                     where, spec->default_value, local->message);
    return ok;
}

gboolean
dfq_priv_params_validate (const DfqParamSpec *specs, guint n_specs, gsize region_size,
                          gsize header_size, gboolean feature_table, const char *owner,
                          GError **error)
{
    if (n_specs > 0 && specs == NULL) {
        g_set_error (error, DFQ_PLUGIN_ERROR, DFQ_PLUGIN_ERROR_BAD_FEATURE,
                     "%s: n_params is %u but params is NULL", owner, n_specs);
        return FALSE;
    }
    for (guint i = 0; i < n_specs; i++) {
        const DfqParamSpec *spec = &specs[i];
        if (spec->name == NULL || !dfq_priv_is_param_name (spec->name)) {
            g_set_error (error, DFQ_PLUGIN_ERROR, DFQ_PLUGIN_ERROR_BAD_FEATURE,
                         "%s: param #%u has %s name (want snake_case)", owner, i,
                         spec->name == NULL ? "a NULL" : "an invalid");
            return FALSE;
        }
        g_autofree char *where = g_strdup_printf ("%s param '%s'", owner, spec->name);
        if (feature_table && (strcmp (spec->name, "use") == 0 || strcmp (spec->name, "weight") == 0)) {
            g_set_error (error, DFQ_PLUGIN_ERROR, DFQ_PLUGIN_ERROR_BAD_FEATURE,
                         "%s: 'use' and 'weight' are reserved keys of a feature", where);
            return FALSE;
        }
        for (guint j = 0; j < i; j++) {
            if (strcmp (specs[j].name, spec->name) == 0) {
                g_set_error (error, DFQ_PLUGIN_ERROR, DFQ_PLUGIN_ERROR_BAD_FEATURE,
                             "%s: duplicate param name (rows %u and %u)", where, j, i);
                return FALSE;
            }
        }
        if ((guint) spec->type >= DFQ_PARAM_TYPE_COUNT) {
            g_set_error (error, DFQ_PLUGIN_ERROR, DFQ_PLUGIN_ERROR_BAD_FEATURE,
                         "%s: invalid type %d", where, (int) spec->type);
            return FALSE;
        }
        if (spec->description == NULL || spec->description[0] == '\0') {
            g_set_error (error, DFQ_PLUGIN_ERROR, DFQ_PLUGIN_ERROR_BAD_FEATURE,
                         "%s: missing description", where);
            return FALSE;
        }
        if (spec->type == DFQ_PARAM_TYPE_STRUCT) {
            if (spec->sub_params == NULL || spec->n_sub_params == 0) {
                g_set_error (error, DFQ_PLUGIN_ERROR, DFQ_PLUGIN_ERROR_BAD_FEATURE,
                             "%s: STRUCT without sub_params", where);
                return FALSE;
            }
        }
        gsize size = dfq_priv_param_size (spec);
        if (spec->offset < header_size || spec->offset > region_size || size > region_size - spec->offset ||
            spec->offset % dfq_priv_param_align (spec) != 0) {
            g_set_error (error, DFQ_PLUGIN_ERROR, DFQ_PLUGIN_ERROR_BAD_FEATURE,
                         "%s: offset %" G_GSIZE_FORMAT " (size %" G_GSIZE_FORMAT
                         ") is outside the instance (%" G_GSIZE_FORMAT " bytes after a %" G_GSIZE_FORMAT
                         "-byte header) or misaligned",
                         where, spec->offset, size, region_size, header_size);
            return FALSE;
        }
        if (spec->type == DFQ_PARAM_TYPE_STRUCT) {
            g_autofree char *sub_owner = g_strdup_printf ("%s.%s", owner, spec->name);
            if (!dfq_priv_params_validate (spec->sub_params, spec->n_sub_params, region_size - spec->offset,
                                           0, FALSE, sub_owner, error))
                return FALSE;
        }
        if (spec->type == DFQ_PARAM_TYPE_ENUM &&
            (spec->enum_values == NULL || spec->enum_values[0] == NULL)) {
            g_set_error (error, DFQ_PLUGIN_ERROR, DFQ_PLUGIN_ERROR_BAD_FEATURE,
                         "%s: ENUM without values", where);
            return FALSE;
        }
        if ((spec->type == DFQ_PARAM_TYPE_FEATURE || spec->type == DFQ_PARAM_TYPE_FEATURE_LIST) &&
            (guint) spec->feature_kind >= DFQ_FEATURE_KIND_COUNT) {
            g_set_error (error, DFQ_PLUGIN_ERROR, DFQ_PLUGIN_ERROR_BAD_FEATURE,
                         "%s: invalid feature kind %d", where, (int) spec->feature_kind);
            return FALSE;
        }
        g_autofree char *range_text = dfq_priv_param_range_string (spec);
        if (range_text != NULL) {
            gboolean ok = isfinite (spec->min) && isfinite (spec->max) && spec->min <= spec->max;
            if (ok && (spec->type == DFQ_PARAM_TYPE_INT || spec->type == DFQ_PARAM_TYPE_INT_LIST))
                ok = spec->min >= (gdouble) G_MININT && spec->max <= (gdouble) G_MAXINT;
            if (!ok) {
                g_set_error (error, DFQ_PLUGIN_ERROR, DFQ_PLUGIN_ERROR_BAD_FEATURE,
                             "%s: bad range [%g, %g]", where, spec->min, spec->max);
                return FALSE;
            }
        }
        gboolean required = (spec->flags & DFQ_PARAM_FLAG_REQUIRED) != 0;
        if (required && spec->default_value != NULL) {
            g_set_error (error, DFQ_PLUGIN_ERROR, DFQ_PLUGIN_ERROR_BAD_FEATURE,
                         "%s: REQUIRED but has a default (%s)", where, spec->default_value);
            return FALSE;
        }
        if (!required && spec->default_value == NULL) {
            switch (spec->type) {
            case DFQ_PARAM_TYPE_INT:
            case DFQ_PARAM_TYPE_DOUBLE:
            case DFQ_PARAM_TYPE_BOOL:
            case DFQ_PARAM_TYPE_ENUM:
                g_set_error (error, DFQ_PLUGIN_ERROR, DFQ_PLUGIN_ERROR_BAD_FEATURE,
                             "%s: no default (give one, or flag it DFQ_PARAM_FLAG_REQUIRED)", where);
                return FALSE;
            default:
                break; /* NULL string/feature, empty list, struct of defaults */
            }
        }
        if (spec->default_value != NULL && !dfq_priv_param_validate_default (spec, where, error))
            return FALSE;
    }
    return TRUE;
}
