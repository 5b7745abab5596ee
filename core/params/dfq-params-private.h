/* Internals shared by the host (core/params, core/pipeline, core/plugin, core/cli):
 * scalar resolution, message helpers, param-table validation and feature
 * construction. Not installed, so plugins cannot reach them; they are exported
 * from libdfq (DFQ_API) only for the dfq CLI and the host tests. */
#pragma once

#include <dfq/dfq.h>

G_BEGIN_DECLS

/* Scalars (YAML 1.2 core schema, restricted to what pipelines need). */
typedef enum {
    DFQ_PRIV_NUM_OK,
    DFQ_PRIV_NUM_INVALID,  /* not a number */
    DFQ_PRIV_NUM_RANGE,    /* a number, but the C type cannot hold it */
    DFQ_PRIV_NUM_FRACTION, /* a number with a fractional part where an integer is wanted */
} DfqPrivNumStatus;

DFQ_API DfqPrivNumStatus dfq_priv_parse_int (const char *text, gint *out);
DFQ_API DfqPrivNumStatus dfq_priv_parse_double (const char *text, gdouble *out);
DFQ_API gboolean dfq_priv_parse_bool (const char *text, gboolean *out);
/* "", "~", "null", "Null", "NULL" */
DFQ_API gboolean dfq_priv_scalar_is_null (const char *text);
/* TRUE if @text, written plain, would read as null, a bool or a number. */
DFQ_API gboolean dfq_priv_scalar_looks_typed (const char *text);
/* Shortest text that reads back as exactly @v, always with '.' or 'e'. */
DFQ_API char *dfq_priv_format_double (gdouble v);
/* Number for messages and docs: integral values without ".0". */
DFQ_API char *dfq_priv_format_number (gdouble v);

/* User text for messages: control characters escaped, at most 60 characters. */
DFQ_API char *dfq_priv_quote (const char *text);
/* The candidate closest to @word by (optimal string alignment) edit distance,
 * if close enough to be a likely typo; else NULL. (transfer none) */
DFQ_API const char *dfq_priv_suggest (const char *word, const char *const *candidates, guint n_candidates);
/* "a, b, c" of the params of @specs. */
DFQ_API char *dfq_priv_params_names (const DfqParamSpec *specs, guint n_specs);
/* The range of a numeric spec as "1 .. 4096", or NULL when unbounded. */
DFQ_API char *dfq_priv_param_range_string (const DfqParamSpec *spec);
/* min == max == 0: no range. */
DFQ_API gboolean dfq_priv_param_has_range (const DfqParamSpec *spec);
/* Bytes the value of @spec takes in its struct (STRUCT: the extent of its table). */
DFQ_API gsize dfq_priv_param_size (const DfqParamSpec *spec);
DFQ_API gsize dfq_priv_params_extent (const DfqParamSpec *specs, guint n_specs);

/**
 * dfq_priv_params_validate:
 * Checks a param table as dfq_registry_add_feature documents. @region_size: the
 * bytes available at the table's base; @header_size: bytes at the start no
 * param may overlap (sizeof (DfqFeature) for a feature, 0 for a struct);
 * @owner: "feature 'zeroq'" for messages. Error: DFQ_PLUGIN_ERROR_BAD_FEATURE.
 */
DFQ_API gboolean dfq_priv_params_validate (const DfqParamSpec *specs, guint n_specs, gsize region_size,
                                   gsize header_size, gboolean feature_table, const char *owner,
                                   GError **error);

/* Feature construction with a nesting depth guard (a default that names its
 * own feature would otherwise recurse forever). */
DFQ_API DfqFeature *dfq_priv_feature_new (DfqRegistry *registry, const DfqFeatureClass *klass,
                                  const DfqConfigNode *node, gboolean allow_weight,
                                  const char *label, guint depth, GError **error);

/* Sets every mark in @node's tree to @mark (defaults take the mark of the
 * place they fill). */
DFQ_API void dfq_priv_config_remark (DfqConfigNode *node, const DfqConfigMark *mark);
/* "mapping", "list", "string 'abc'", "null" ... for "expected X, got Y". */
DFQ_API char *dfq_priv_config_describe (const DfqConfigNode *node);

/* The names the registry knows for @kind, sorted ("a, b"), and a suggestion. */
DFQ_API char *dfq_priv_registry_names (DfqRegistry *registry, DfqFeatureKind kind);

G_END_DECLS
