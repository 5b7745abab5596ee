/* Parameters as data (STYLE.md B.8, the vips lesson). A feature declares a table
 * of DfqParamSpec; from it alone the core binds YAML with type and range checks,
 * reports unknown keys with the valid ones, fills defaults, prints `dfq inspect`,
 * generates docs/plugins.md and runs the conformance test. Values are stored in
 * the feature's instance struct at the given offset. */
#pragma once

#include <glib.h>
#include <dfq/dfq-macros.h>

G_BEGIN_DECLS

typedef enum {
    DFQ_FEATURE_MODEL,
    DFQ_FEATURE_SYNTHESIZER,
    DFQ_FEATURE_LOSS,
    DFQ_FEATURE_QUANTIZER,
    DFQ_FEATURE_TRANSFORM,
    DFQ_FEATURE_KIND_COUNT
} DfqFeatureKind;

typedef enum {
    DFQ_PARAM_TYPE_INT,          /* C type: gint */
    DFQ_PARAM_TYPE_DOUBLE,       /* gdouble */
    DFQ_PARAM_TYPE_BOOL,         /* gboolean */
    DFQ_PARAM_TYPE_STRING,       /* char * (owned by the instance; NULL allowed when the default is NULL) */
    DFQ_PARAM_TYPE_ENUM,         /* gint: index into enum_values */
    DFQ_PARAM_TYPE_INT_LIST,     /* DfqNumberList, every value integral */
    DFQ_PARAM_TYPE_DOUBLE_LIST,  /* DfqNumberList */
    DFQ_PARAM_TYPE_FEATURE,      /* DfqFeature * of feature_kind ({use: name, ...}), owned; NULL if absent and no default */
    DFQ_PARAM_TYPE_FEATURE_LIST, /* GPtrArray * of DfqFeature * of feature_kind, owned; each item may set `weight:` */
    DFQ_PARAM_TYPE_STRUCT,       /* an embedded struct described by sub_params (core sections, optimiser blocks) */
    DFQ_PARAM_TYPE_STRING_LIST,  /* GStrv (char **), owned; NULL when empty */
    DFQ_PARAM_TYPE_COUNT
} DfqParamType;

#define DFQ_NUMBER_LIST_MAX 16

typedef struct {
    guint n;
    gdouble v[DFQ_NUMBER_LIST_MAX];
} DfqNumberList;

typedef enum {
    DFQ_PARAM_FLAG_NONE = 0,
    DFQ_PARAM_FLAG_REQUIRED = 1 << 0, /* no default: the pipeline must give it */
    /* STRING: a file path; a relative value is resolved against the directory
     * of the file that sets it (a value from --set: against the working dir). */
    DFQ_PARAM_FLAG_PATH = 1 << 1,
    /* Left out of the resolved config (config.yaml, --print-config, the config
     * hash that names runs and sweep trials) while it holds its default, so a
     * key added later does not change the hash of configs written before it.
     * The default must be written as dfq prints the value ("0.001", not
     * "1e-3"); a STRUCT row is left out when all of its rows are. */
    DFQ_PARAM_FLAG_OMIT_DEFAULT = 1 << 2,
} DfqParamFlags;

typedef struct _DfqParamSpec DfqParamSpec;

/* Optional extra check of a bound value (after type and range checks), e.g.
 * "must be a power of two" or a cross-field check of a STRUCT. @value points
 * to the field (the embedded struct for STRUCT). Set any error: the binder
 * turns it into DFQ_PIPELINE_ERROR_BAD_VALUE at the value's file:line:col. */
typedef gboolean (*DfqParamCheckFunc) (const DfqParamSpec *spec, gconstpointer value, GError **error);

struct _DfqParamSpec {
    const char *name;          /* YAML key = C field name, snake_case */
    DfqParamType type;
    gsize offset;              /* of the field in the instance (or enclosing) struct */
    const char *description;   /* one line, shown by `dfq inspect` and in docs */
    gdouble min, max;          /* INT, DOUBLE and the lists: inclusive range */
    /* The default as YAML text, parsed by the same code as pipeline values
     * ("32", "1e-3", "true", "[15, 30, 35]", "adam", a feature name), or NULL
     * (REQUIRED, or an absent STRING/FEATURE/FEATURE_LIST). */
    const char *default_value;
    const char *const *enum_values; /* ENUM: NULL-terminated */
    DfqFeatureKind feature_kind;    /* FEATURE, FEATURE_LIST */
    const DfqParamSpec *sub_params; /* STRUCT */
    guint n_sub_params;
    guint flags;                    /* DfqParamFlags */
    DfqParamCheckFunc check;        /* optional, see DfqParamCheckFunc */
};

/* Conventions the core relies on (checked when a feature registers, see
 * dfq_registry_add_feature):
 * - min == max == 0 means "no range" (any value the C type holds);
 * - a STRUCT's default_value, if set, is a YAML flow mapping overriding the
 *   defaults of its sub-params ("{use: adam, lr: 1e-3}");
 * - a FEATURE default may be a name ("kd") or a flow mapping
 *   ("{use: kd, temperature: 4}"); a FEATURE_LIST default a flow list of either.
 *
 * Every row macro below takes optional trailing designated initializers for
 * the fields it does not set, e.g.
 *   DFQ_PARAM_STRING (Teacher, weights, "Weights file", NULL, .flags = DFQ_PARAM_FLAG_PATH)
 *   DFQ_PARAM_INT (Pipeline, version, "Format version", 1, 1, 1, .check = version_check)
 * A REQUIRED row has no default: pass NULL (strings, features) or use the
 * *_REQUIRED macros. */

/* Table rows. The key is the field name (STYLE.md B.8). */
#define DFQ_PARAM_INT(Struct, field, desc, min_, max_, def, ...)                              \
    { .name = #field, .type = DFQ_PARAM_TYPE_INT, .offset = G_STRUCT_OFFSET (Struct, field), \
      .description = desc, .min = (min_), .max = (max_), .default_value = G_STRINGIFY (def), __VA_ARGS__ }
#define DFQ_PARAM_DOUBLE(Struct, field, desc, min_, max_, def, ...)                              \
    { .name = #field, .type = DFQ_PARAM_TYPE_DOUBLE, .offset = G_STRUCT_OFFSET (Struct, field), \
      .description = desc, .min = (min_), .max = (max_), .default_value = G_STRINGIFY (def), __VA_ARGS__ }
#define DFQ_PARAM_BOOL(Struct, field, desc, def, ...)                                          \
    { .name = #field, .type = DFQ_PARAM_TYPE_BOOL, .offset = G_STRUCT_OFFSET (Struct, field), \
      .description = desc, .default_value = (def) ? "true" : "false", __VA_ARGS__ }
#define DFQ_PARAM_STRING(Struct, field, desc, def, ...)                                          \
    { .name = #field, .type = DFQ_PARAM_TYPE_STRING, .offset = G_STRUCT_OFFSET (Struct, field), \
      .description = desc, .default_value = (def), __VA_ARGS__ }
/* @values: a static NULL-terminated array of names; @def: one of them (a string). */
#define DFQ_PARAM_ENUM(Struct, field, desc, values, def, ...)                                  \
    { .name = #field, .type = DFQ_PARAM_TYPE_ENUM, .offset = G_STRUCT_OFFSET (Struct, field), \
      .description = desc, .enum_values = (values), .default_value = (def), __VA_ARGS__ }
/* @def: YAML flow list text, e.g. "[15, 30, 35]" or "[]". */
#define DFQ_PARAM_INT_LIST(Struct, field, desc, min_, max_, def, ...)                              \
    { .name = #field, .type = DFQ_PARAM_TYPE_INT_LIST, .offset = G_STRUCT_OFFSET (Struct, field), \
      .description = desc, .min = (min_), .max = (max_), .default_value = (def), __VA_ARGS__ }
#define DFQ_PARAM_DOUBLE_LIST(Struct, field, desc, min_, max_, def, ...)                              \
    { .name = #field, .type = DFQ_PARAM_TYPE_DOUBLE_LIST, .offset = G_STRUCT_OFFSET (Struct, field), \
      .description = desc, .min = (min_), .max = (max_), .default_value = (def), __VA_ARGS__ }
/* @def: a feature name used with its own defaults, or NULL. */
#define DFQ_PARAM_FEATURE(Struct, field, desc, kind, def, ...)                                    \
    { .name = #field, .type = DFQ_PARAM_TYPE_FEATURE, .offset = G_STRUCT_OFFSET (Struct, field), \
      .description = desc, .feature_kind = (kind), .default_value = (def), __VA_ARGS__ }
/* @def: YAML flow list of feature names ("[ce, bns]") or NULL for an empty list. */
#define DFQ_PARAM_FEATURE_LIST(Struct, field, desc, kind, def, ...)                                    \
    { .name = #field, .type = DFQ_PARAM_TYPE_FEATURE_LIST, .offset = G_STRUCT_OFFSET (Struct, field), \
      .description = desc, .feature_kind = (kind), .default_value = (def), __VA_ARGS__ }
/* @def: YAML flow list text or NULL. */
#define DFQ_PARAM_STRING_LIST(Struct, field, desc, def, ...)                                          \
    { .name = #field, .type = DFQ_PARAM_TYPE_STRING_LIST, .offset = G_STRUCT_OFFSET (Struct, field), \
      .description = desc, .default_value = (def), __VA_ARGS__ }
#define DFQ_PARAM_STRUCT(Struct, field, desc, sub, ...)                                          \
    { .name = #field, .type = DFQ_PARAM_TYPE_STRUCT, .offset = G_STRUCT_OFFSET (Struct, field), \
      .description = desc, .sub_params = (sub), .n_sub_params = G_N_ELEMENTS (sub), __VA_ARGS__ }

/* INT/DOUBLE without a default: the pipeline must give them. */
#define DFQ_PARAM_INT_REQUIRED(Struct, field, desc, min_, max_, ...)                          \
    { .name = #field, .type = DFQ_PARAM_TYPE_INT, .offset = G_STRUCT_OFFSET (Struct, field), \
      .description = desc, .min = (min_), .max = (max_), .flags = DFQ_PARAM_FLAG_REQUIRED, __VA_ARGS__ }
#define DFQ_PARAM_DOUBLE_REQUIRED(Struct, field, desc, min_, max_, ...)                          \
    { .name = #field, .type = DFQ_PARAM_TYPE_DOUBLE, .offset = G_STRUCT_OFFSET (Struct, field), \
      .description = desc, .min = (min_), .max = (max_), .flags = DFQ_PARAM_FLAG_REQUIRED, __VA_ARGS__ }

/* "int", "double", "feature-list", ... */
DFQ_API const char *dfq_param_type_name (DfqParamType type);
DFQ_API const char *dfq_feature_kind_name (DfqFeatureKind kind);
/* "synthesizer" -> DFQ_FEATURE_SYNTHESIZER; FALSE if unknown. */
DFQ_API gboolean dfq_feature_kind_from_name (const char *name, DfqFeatureKind *kind);

/* Returns: (transfer none) the row of @specs named @name, or NULL. */
DFQ_API const DfqParamSpec *dfq_param_spec_find (const DfqParamSpec *specs, guint n_specs, const char *name);

/**
 * dfq_params_clear:
 * Frees what the params of @specs own in the struct at @base (strings, string
 * lists, nested features and feature lists; STRUCT rows recursively) and sets
 * those fields to NULL. Numbers are left alone. Safe to call twice.
 */
DFQ_API void dfq_params_clear (const DfqParamSpec *specs, guint n_specs, gpointer base);

G_END_DECLS
