/* Pipelines: YAML files describing one experiment (DESIGN.md section 3).
 *
 * Three layers, usable on their own:
 * 1. the config tree (DfqConfigNode): YAML read with libyaml into scalars,
 *    mappings and sequences that remember file:line:col, with includes,
 *    deep merge, --set overrides and emission back to YAML;
 * 2. binding (dfq_params_bind): a mapping node checked against a DfqParamSpec
 *    table and stored into a C struct (types, ranges, enums, features by
 *    `use:`, defaults), with errors that locate the problem and list what would
 *    have been valid;
 * 3. the pipeline (DfqPipeline): a whole file bound against the core schema
 *    into a DfqPipelineConfig. Nothing runs until the whole file validates. */
#pragma once

#include <glib.h>
#include <dfq/dfq-macros.h>
#include <dfq/dfq-params.h>
#include <dfq/dfq-plugin.h>
#include <dfq/dfq-registry.h>
#include <dfq/dfq-optim-params.h>

G_BEGIN_DECLS

#define DFQ_PIPELINE_ERROR (dfq_pipeline_error_quark ())
typedef enum {
    DFQ_PIPELINE_ERROR_SYNTAX,          /* YAML syntax, tabs, duplicate keys, aliases, bad UTF-8, empty file, bad --set */
    DFQ_PIPELINE_ERROR_UNKNOWN_FEATURE, /* `use: zeroqq` */
    DFQ_PIPELINE_ERROR_UNKNOWN_PARAM,   /* unknown keys are errors, not warnings */
    DFQ_PIPELINE_ERROR_BAD_VALUE,       /* wrong type, out of range, not an enum value, failed check */
    DFQ_PIPELINE_ERROR_MISSING_PARAM,   /* a required key (or `use:`) is absent */
    DFQ_PIPELINE_ERROR_INCLUDE,         /* include cycle, bad include list, included file unreadable */
    DFQ_PIPELINE_ERROR_IO,              /* the pipeline file cannot be read */
    DFQ_PIPELINE_ERROR_LIMIT,           /* nesting deeper than DFQ_CONFIG_MAX_DEPTH, file too large */
    DFQ_PIPELINE_ERROR_INIT_FAILED,     /* a feature's init() rejected its parameters */
} DfqPipelineError;

DFQ_API GQuark dfq_pipeline_error_quark (void);

/* ------------------------------------------------------------------------ */
/* 1. The config tree                                                       */

#define DFQ_CONFIG_MAX_DEPTH 64             /* nesting of mappings/sequences */
#define DFQ_CONFIG_MAX_FILE_SIZE (16 << 20) /* bytes of one YAML file */
#define DFQ_CONFIG_MAX_INCLUDE_DEPTH 16

typedef enum {
    DFQ_CONFIG_NULL,     /* `~`, `null`, or nothing */
    DFQ_CONFIG_SCALAR,
    DFQ_CONFIG_MAPPING,
    DFQ_CONFIG_SEQUENCE,
} DfqConfigKind;

/* Where a node comes from. @file is interned (never freed). Lines and columns
 * are 1-based; both 0 when the node comes from the command line (`--set a.b`)
 * or a built-in default. */
typedef struct {
    const char *file;
    guint line;
    guint column;
} DfqConfigMark;

typedef struct _DfqConfigNode DfqConfigNode;
struct _DfqConfigNode {
    DfqConfigKind kind;
    DfqConfigMark mark;
    char *scalar;      /* SCALAR: the text (UTF-8) */
    gboolean quoted;   /* SCALAR: quoted or block style, so always a string */
    GPtrArray *keys;   /* MAPPING: key nodes (SCALAR), parallel to @values */
    GPtrArray *values; /* MAPPING: values; SEQUENCE: items (DfqConfigNode *, owned) */
};

DFQ_API DfqConfigNode *dfq_config_node_new (DfqConfigKind kind, const DfqConfigMark *mark);
DFQ_API DfqConfigNode *dfq_config_node_new_scalar (const char *text, gboolean quoted, const DfqConfigMark *mark);
DFQ_API DfqConfigNode *dfq_config_node_copy (const DfqConfigNode *node);
DFQ_API void dfq_config_node_free (DfqConfigNode *node);
DFQ_API guint dfq_config_node_n_children (const DfqConfigNode *node);

/* MAPPING helpers. get: (transfer none) the value or NULL; set: takes @value
 * (replacing an existing one in place, else appending with a key marked like
 * @value); remove: TRUE if the key was there. */
DFQ_API DfqConfigNode *dfq_config_mapping_get (const DfqConfigNode *mapping, const char *key);
DFQ_API void dfq_config_mapping_set (DfqConfigNode *mapping, const char *key, DfqConfigNode *value);
DFQ_API gboolean dfq_config_mapping_remove (DfqConfigNode *mapping, const char *key);

/* "pipe.yaml:12:7" or "--set train.iters". Returns: (transfer full). */
DFQ_API char *dfq_config_mark_to_string (const DfqConfigMark *mark);

/**
 * dfq_config_set_error:
 * Sets @error in DFQ_PIPELINE_ERROR with "file:line:col: message" from the
 * mark of @node (or just "message" when @node is NULL).
 */
DFQ_API void dfq_config_set_error (GError **error, const DfqConfigNode *node, DfqPipelineError code,
                                   const char *format, ...) G_GNUC_PRINTF (4, 5);

/**
 * dfq_config_parse:
 * @text: (array length=length) YAML; need not be NUL-terminated.
 * @length: bytes of @text, or -1 if NUL-terminated.
 * @filename: used in marks (interned).
 * Parses one YAML document (UTF-8 only). Rejects, as
 * DFQ_PIPELINE_ERROR_SYNTAX with the position: syntax errors (with a clear
 * message for tabs used as indentation), invalid UTF-8 and control characters,
 * duplicate keys, non-scalar keys, anchors/aliases, tags and more than one
 * document; as DFQ_PIPELINE_ERROR_LIMIT: nesting deeper than
 * DFQ_CONFIG_MAX_DEPTH or more than DFQ_CONFIG_MAX_FILE_SIZE bytes.
 * An empty document gives a NULL-kind node.
 * Returns: (transfer full) the root, or NULL with @error.
 */
DFQ_API DfqConfigNode *dfq_config_parse (const char *text, gssize length, const char *filename, GError **error);

/**
 * dfq_config_load_file:
 * Reads and parses @path, then resolves its top-level `include:` (a file name
 * or a list of them, relative to the including file, read in order and merged
 * with dfq_config_merge, then the including file merged on top), recursively.
 * Errors: DFQ_PIPELINE_ERROR_IO (unreadable @path), _INCLUDE (cycle, an
 * included file that cannot be read, `include:` not a string or list of
 * strings, too deep), and those of dfq_config_parse().
 * Returns: (transfer full) the merged tree, or NULL with @error.
 */
DFQ_API DfqConfigNode *dfq_config_load_file (const char *path, GError **error);

/**
 * dfq_config_resolve_includes:
 * The include step of dfq_config_load_file() for a tree parsed from memory:
 * @filename names the file @root came from (relative includes start from its
 * directory). @root is modified in place.
 */
DFQ_API gboolean dfq_config_resolve_includes (DfqConfigNode **root, const char *filename, GError **error);

/**
 * dfq_config_merge:
 * Deep merge: @over wins. Two mappings merge key by key, recursively, except
 * when both name a different `use:` (a different feature: @over replaces the
 * whole mapping). Anything else (scalars, sequences, null) is replaced.
 * Returns: (transfer full) the result; consumes @base and @over.
 */
DFQ_API DfqConfigNode *dfq_config_merge (DfqConfigNode *base, DfqConfigNode *over);

/**
 * dfq_config_apply_override:
 * @root: (inout) the tree (a NULL-kind root becomes a mapping).
 * @assignment: "a.b.c=value" (`--set`). The path is dot-separated keys;
 *   sequence items by index ("train.losses.1.weight" or "train.losses[1].weight").
 *   The value is parsed as YAML (a scalar or flow collection: `[1, 2]`,
 *   `{use: kd}`) and its nodes are marked "--set a.b.c". Missing mappings on the
 *   path are created; a mapping value is merged as in dfq_config_merge.
 * Errors: DFQ_PIPELINE_ERROR_SYNTAX (no '=', empty path segment, value syntax),
 * _BAD_VALUE (index into a non-sequence, index out of range, key into a scalar).
 */
DFQ_API gboolean dfq_config_apply_override (DfqConfigNode **root, const char *assignment, GError **error);

/* Emits @node as block-style YAML (flow style for lists of scalars). Strings
 * that would read back as another type are quoted. Returns: (transfer full). */
DFQ_API char *dfq_config_to_yaml (const DfqConfigNode *node);

/* ------------------------------------------------------------------------ */
/* 2. Binding                                                               */

/**
 * dfq_params_bind:
 * @registry: resolves FEATURE and FEATURE_LIST params (`use:` names).
 * @node: (nullable) a MAPPING (or NULL/NULL-kind: every param at its default).
 * @context: how messages name the owner, after the key: "for synthesizer
 *   'zeroq'", "in 'train'", "in the pipeline".
 * @path: (nullable) the dotted path of @node ("train"): messages about values
 *   start with "train.batch: ", features are labelled "train.losses[1] (kd)".
 *
 * Binds every key of @node into the struct at @base by the offsets of @specs,
 * then fills the absent params from their default text, parsed and checked by
 * the same code. The first problem is reported (as dfq_config_set_error):
 * UNKNOWN_PARAM ("unknown parameter 'itres' for synthesizer 'zeroq' (known:
 * batch, iters, lr); did you mean 'iters'?"), BAD_VALUE (wrong type, out of
 * range with the range, enum with its values), MISSING_PARAM, UNKNOWN_FEATURE
 * (with the registered features of that kind) and INIT_FAILED.
 * On failure the struct may be partly filled: release it with
 * dfq_params_clear() either way.
 */
DFQ_API gboolean dfq_params_bind (DfqRegistry *registry, const DfqParamSpec *specs, guint n_specs,
                                  gpointer base, const DfqConfigNode *node, const char *context,
                                  const char *path, GError **error);

/**
 * dfq_params_to_config:
 * The resolved values of the struct at @base as a mapping (every param,
 * features with `use:`, feature-list items with `weight:`), for
 * dfq_config_to_yaml(). Binding the result gives the same values.
 * Returns: (transfer full).
 */
DFQ_API DfqConfigNode *dfq_params_to_config (const DfqParamSpec *specs, guint n_specs, gconstpointer base);

/**
 * dfq_feature_new_from_config:
 * Instantiates @klass from @node (a mapping of its params; `use:` and, if
 * @allow_weight, `weight:` are accepted) and calls its init().
 * Returns: (transfer full) the feature, or NULL with a DFQ_PIPELINE_ERROR.
 */
DFQ_API DfqFeature *dfq_feature_new_from_config (DfqRegistry *registry, const DfqFeatureClass *klass,
                                                 const DfqConfigNode *node, gboolean allow_weight,
                                                 const char *label, GError **error);

/* ------------------------------------------------------------------------ */
/* 3. The pipeline: the core schema (core/pipeline/dfq-pipeline-schema.c)   */

#define DFQ_PIPELINE_VERSION 1

typedef enum {
    DFQ_PIPELINE_DATASET_FASHION_MNIST,
    DFQ_PIPELINE_DATASET_MNIST,
    DFQ_PIPELINE_DATASET_CIFAR10,
    DFQ_PIPELINE_DATASET_CIFAR100,
} DfqPipelineDataset;

/* "fashion-mnist", "mnist", "cifar10", "cifar100": the names dfq_dataset_open() takes. */
DFQ_API extern const char *const dfq_pipeline_dataset_names[];
/* "train", "test": DfqDatasetSplit order. */
DFQ_API extern const char *const dfq_pipeline_split_names[];

typedef struct {
    DfqFeature *model;   /* MODEL; required */
    char *weights;       /* path (absolute once bound) or NULL */
    char **rename;       /* "regex=>replacement" rules for weight names, or NULL */
} DfqPipelineTeacher;

typedef struct {
    gint dataset;        /* DfqPipelineDataset */
    char *dir;           /* NULL: automatic (see dfq_dataset_open) */
} DfqPipelineData;

typedef struct {
    gint split;          /* DfqDatasetSplit */
    gint batch;
    gint sqnr_images;    /* per-layer SQNR diagnostic after each evaluation over this many images; 0: off */
} DfqPipelineEval;

typedef struct {
    DfqFeature *quantizer; /* QUANTIZER or NULL (full precision) */
} DfqPipelineStudent;

typedef struct {
    gint epochs;
    gint iters;          /* iterations per epoch */
    gint batch;
    gint warmup_epochs;  /* epochs training the synthesizer only */
    gint range_epochs;   /* activation ranges tracked in epochs < range_epochs */
    DfqOptimParams optimizer;
    GPtrArray *losses;   /* DfqFeature * of LOSS, each with its weight; never NULL once bound */
    gint pad;            /* dfq train: pad + random crop augmentation */
    gboolean hflip;      /* dfq train: random horizontal flip */
    char *save;          /* dfq train: extra path for the trained weights, or NULL */
    gdouble checkpoint_minutes; /* a checkpoint inside an epoch at least this often (0: at epoch ends and stops) */
} DfqPipelineTrain;

typedef struct {
    gint images;         /* size of the image set */
    gint batch;          /* images optimised together (one unit of the synthesize phase) */
    gboolean reuse;      /* take the set from the cache when one with the same key is there, and store it */
    char *cache;         /* cache directory (NULL: <output_dir>/image-sets) */
} DfqPipelineSynthesize;

typedef struct {
    gint batch;          /* images per calibration forward (one unit of the calibrate phase) */
} DfqPipelineCalibrate;

typedef struct {
    gint iters;          /* optimisation steps per unit (block) */
    gint batch;          /* images per step */
    gdouble warmup;      /* fraction of the steps before the quantizer's regulariser is added */
    gdouble qdrop;       /* probability that an input element is the full-precision one (QDrop) */
    gdouble lr;          /* learning rate of quantizer parameter groups that name none */
    char **cosine;       /* names of parameter groups on a cosine schedule (to 0 over the steps) */
    gint eval_batch;     /* images per forward when the block inputs and outputs are cached */
} DfqPipelineReconstruct;

typedef struct {
    gint version;        /* DFQ_PIPELINE_VERSION */
    char *name;
    gint seed;
    gint threads;
    char *output_dir;
    DfqPipelineTeacher teacher;
    DfqPipelineData data;
    DfqPipelineEval eval;
    DfqPipelineStudent student;
    DfqFeature *synthesizer; /* SYNTHESIZER or NULL */
    DfqPipelineTrain train;
    char **phases;       /* phase names in order, or NULL: from the synthesizer (see docs/architecture.md) */
    DfqPipelineSynthesize synthesize;
    DfqPipelineCalibrate calibrate;
    DfqPipelineReconstruct reconstruct;
} DfqPipelineConfig;

/* The phases `phases:` accepts, NULL-terminated. */
DFQ_API extern const char *const dfq_pipeline_phase_names[];

/* The schema: one row per top-level key (STRUCT rows for the sections). */
DFQ_API extern const DfqParamSpec dfq_pipeline_param_specs[];
DFQ_API extern const guint dfq_pipeline_n_param_specs;

typedef struct _DfqPipeline DfqPipeline;

/**
 * dfq_pipeline_new_from_file:
 * @registry: must outlive the pipeline (features point into its plugins).
 * @overrides: (nullable) (array zero-terminated=1) `--set` assignments,
 *   applied in order after includes.
 * Loads @path (dfq_config_load_file), applies @overrides, binds the tree
 * against the core schema and checks it. Errors: any DFQ_PIPELINE_ERROR, with
 * file:line:col.
 * Returns: (transfer full) the pipeline, or NULL with @error.
 */
DFQ_API DfqPipeline *dfq_pipeline_new_from_file (DfqRegistry *registry, const char *path,
                                                 const char *const *overrides, GError **error);
/* Same from memory; @filename names it in marks and anchors includes and PATH
 * params. */
DFQ_API DfqPipeline *dfq_pipeline_new_from_data (DfqRegistry *registry, const char *text, gssize length,
                                                 const char *filename, const char *const *overrides,
                                                 GError **error);
/* Binds an already-merged tree (consumed, even on error). */
DFQ_API DfqPipeline *dfq_pipeline_new_from_tree (DfqRegistry *registry, DfqConfigNode *tree, GError **error);
DFQ_API void dfq_pipeline_free (DfqPipeline *pipeline);

/* Returns: (transfer none) the bound configuration. */
DFQ_API const DfqPipelineConfig *dfq_pipeline_get_config (const DfqPipeline *pipeline);
/* Returns: (transfer none) the merged tree as written (includes and overrides
 * applied, defaults not filled), with marks: to locate problems found later. */
DFQ_API const DfqConfigNode *dfq_pipeline_get_tree (const DfqPipeline *pipeline);
/* Returns: (transfer none) the file name given at load, or NULL. */
DFQ_API const char *dfq_pipeline_get_filename (const DfqPipeline *pipeline);
/**
 * dfq_pipeline_to_yaml:
 * The resolved config (every key with its value, defaults filled, paths
 * absolute) as YAML: what `dfq validate --print-config` prints and what a run
 * directory records. Loading it again gives the same config.
 * Returns: (transfer full).
 */
DFQ_API char *dfq_pipeline_to_yaml (const DfqPipeline *pipeline);

/**
 * dfq_pipeline_check_taps:
 * Resolves the tap patterns of every loss of @pipeline (train.losses, the
 * losses inside synthesizers and other features, at any depth) against the
 * taps of the teacher's model, which the student shares (one eval forward of a
 * zero image, dfq_model_list_taps). A pattern that matches nothing is
 * DFQ_PIPELINE_ERROR_BAD_VALUE at the pattern's file:line:col (or the loss's,
 * when the pattern is not written in the file), naming the loss, the pattern
 * and every tap of the model. `dfq validate` and `dfq run` call it; a teacher
 * that is not a built model (test fixtures) is not checked.
 */
DFQ_API gboolean dfq_pipeline_check_taps (const DfqPipeline *pipeline, GError **error);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (DfqConfigNode, dfq_config_node_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DfqPipeline, dfq_pipeline_free)

G_END_DECLS
