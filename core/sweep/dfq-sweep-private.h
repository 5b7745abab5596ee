/* Sweeps and reports (core/sweep), private to the dfq CLI and the tests:
 * a sweep file (a base pipeline plus axes) expanded into trials with stable
 * ids (dfq-sweep.c), and the report over a directory of run directories
 * (dfq-report.c: groups, mean +- std over seeds; dfq-report-html.c: the HTML
 * page with its SVG plots). Running the trials is the CLI's job
 * (core/cli/dfq-cmd-sweep.c). Not installed; exported from libdfq (DFQ_API)
 * only for the CLI and the tests, like core/params/dfq-params-private.h. */
#pragma once

#include <dfq/dfq.h>
#include <glib.h>
#include <json-glib/json-glib.h>

G_BEGIN_DECLS

#define DFQ_SWEEP_VERSION 1
#define DFQ_SWEEP_MAX_TRIALS 10000
#define DFQ_SWEEP_ID_LENGTH 10 /* hex digits of the SHA-256 kept in a trial id */

/* Runtime errors of `dfq sweep` and `dfq report` (exit status 1); problems in
 * the sweep file itself are DFQ_PIPELINE_ERROR with file:line:col. */
#define DFQ_SWEEP_ERROR (dfq_sweep_error_quark ())
typedef enum {
    DFQ_SWEEP_ERROR_IO,          /* a file or directory cannot be read or written */
    DFQ_SWEEP_ERROR_LOCKED,      /* another dfq sweep is writing to the output directory */
    DFQ_SWEEP_ERROR_TRIALS,      /* some trials crashed, diverged or failed */
    DFQ_SWEEP_ERROR_INTERRUPTED, /* stopped by a signal; rerun to continue */
    DFQ_SWEEP_ERROR_NO_RUNS,     /* dfq report: no run directory found */
    DFQ_SWEEP_ERROR_SLURM,       /* --launcher slurm: sbatch/squeue missing, or Slurm refused the job */
} DfqSweepError;

DFQ_API GQuark dfq_sweep_error_quark (void);

/* One trial: the base pipeline with its overrides. */
typedef struct {
    guint index;            /* position in the expansion (0-based) */
    char *id;               /* DFQ_SWEEP_ID_LENGTH hex digits: dfq_sweep_config_id() of the resolved config */
    char *label;            /* readable, from the axis values: "w_bits=4,gdfq,s1" */
    char *dir_name;         /* "<label>-<id>", safe as a file name */
    GPtrArray *overrides;   /* char *: "key=value" as `dfq run --set` takes them: the axes, then set: */
    GPtrArray *axis_keys;   /* char *: the dotted keys of the axes ("seed" for seeds:) */
    GPtrArray *axis_values; /* DfqConfigNode * (owned): the value of each axis key in this trial */
    gboolean sets_threads;  /* an override names `threads` (else the sweep chooses it) */
    char *config_yaml;      /* the resolved config (dfq_pipeline_to_yaml) */
} DfqSweepTrial;

typedef struct {
    char *path;        /* the sweep file, as given */
    char *dir;         /* its directory, absolute: trials run there */
    char *name;        /* name:, or the file name without .yaml */
    char *pipeline;    /* the base pipeline, absolute */
    gint eval_limit;   /* eval_limit: (0 = the whole split) */
    GPtrArray *trials; /* DfqSweepTrial *, in expansion order */
} DfqSweep;

/**
 * dfq_sweep_new_from_file:
 * Reads the sweep file @path (format: docs/sweeps.md), loads its base
 * pipeline, expands the axes (first axis slowest; set: applied after them) and
 * binds every trial's pipeline with @registry, so nothing runs unless every
 * trial validates. Errors: DFQ_PIPELINE_ERROR with file:line:col of the sweep
 * file (unknown key, wrong type, lists of different lengths in a zip group,
 * two trials with the same configuration) or of the pipeline (a trial's value
 * that does not bind, with the trial named at the end of the message).
 * Returns: (transfer full) the sweep, or NULL with @error.
 */
DFQ_API DfqSweep *dfq_sweep_new_from_file (DfqRegistry *registry, const char *path, GError **error);
DFQ_API void dfq_sweep_free (DfqSweep *sweep);

/**
 * dfq_sweep_config_id:
 * The trial id of a resolved config (dfq_pipeline_to_yaml(), or a run
 * directory's config.yaml): the first DFQ_SWEEP_ID_LENGTH hex digits of the
 * SHA-256 of the config without `threads` and `output_dir` (they change
 * neither what is computed nor the result's meaning), plus @eval_limit when
 * it is > 0.
 * Returns: (transfer full) the id, or NULL if @config_yaml does not parse.
 */
DFQ_API char *dfq_sweep_config_id (const char *config_yaml, gint eval_limit);

/* @node as one line of flow YAML that dfq_config_parse() reads back to the
 * same tree (quoted scalars stay strings). Returns: (transfer full). */
DFQ_API char *dfq_sweep_config_to_flow (const DfqConfigNode *node);
/* @node as JSON: unquoted scalars that read as null, bools or numbers become
 * those; everything else strings. Returns: (transfer full). */
DFQ_API JsonNode *dfq_sweep_config_to_json (const DfqConfigNode *node);

/**
 * dfq_sweep_json_load_object:
 * Reads the JSON object in @path into @parser (a new JsonParser the caller
 * unrefs). json-glib writes NaN and infinities as `nan.0` and `inf.0`, which
 * are not JSON (a run that diverged before its first evaluation has no
 * accuracy): those read as null.
 * Returns: (transfer none) the object, or NULL if @path is absent or not a
 * JSON object.
 */
DFQ_API JsonObject *dfq_sweep_json_load_object (const char *path, JsonParser **parser);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (DfqSweep, dfq_sweep_free)

/* ------------------------------------------------------------------------ */
/* Reports (dfq-report.c)                                                   */

/* One run directory. */
typedef struct {
    char *path; /* relative to the report's root ("." for the root itself) */
    char *id;   /* trial id (trial.json), or NULL */
    gint seed;
    char *status;                         /* finished, diverged, crashed, failed, interrupted, incomplete */
    char *detail;                         /* why it failed (error, exit status, last log line), or NULL */
    double fp_top1, last_top1, best_top1; /* NAN when unknown */
    gint best_epoch;
    gint epochs_done;
    double wall_seconds;
    GArray *curve;       /* double: top-1 of epoch i (metrics.jsonl) */
    char *method;        /* "gdfq / uniform / kd+ce" */
    char *bits;          /* "W4A4", "W4A32", "FP" */
    gint w_bits, a_bits; /* -1 for a full-precision student */
    GHashTable *flat;    /* char * -> char *: flattened config plus the pseudo keys, the grouping key */
    gboolean averaged;   /* counted in its group's statistics */
    gpointer group;      /* DfqReportGroup * */
    GPtrArray *sqnr_sites; /* char *: activation sites of the last metrics line with sqnr_db, or NULL */
    GArray *sqnr_db;       /* double: their SQNR in dB */
} DfqReportRun;

/* Runs of one configuration (all keys equal but the seed). */
typedef struct {
    char *method;
    char *bits;
    gint w_bits, a_bits;
    char *label;                                              /* the method, plus [key=value] for what separates it from groups of the same method and bits */
    char *series;                                             /* label without the bits: one line in the plots */
    char *protocol;                                           /* the protocol keys that differ between the report's groups, or "" */
    GPtrArray *runs;                                          /* DfqReportRun * (borrowed), by seed */
    guint n;                                                  /* runs averaged (finished, one per seed) */
    double last_mean, last_std, best_mean, best_std, fp_mean; /* NAN when n == 0 (std NAN when n < 2) */
    guint n_failed;                                           /* runs not averaged because they did not finish */
} DfqReportGroup;

typedef struct {
    char *root; /* the directory read */
    char *title;
    GPtrArray *runs;          /* DfqReportRun *, by path */
    GPtrArray *groups;        /* DfqReportGroup *, by method, bits (wider first), label */
    GPtrArray *protocol_keys; /* char *: protocol keys that differ between groups (empty: one protocol) */
    char *common_protocol;    /* a description of the protocol keys shared by every group */
    gboolean timings;         /* add each run's wall time to the Markdown and CSV (dfq report --timings); off by
                                 default, so that the report of a resumed sweep is byte-identical */
} DfqReport;

/**
 * dfq_report_new_from_dir:
 * Reads every run directory under @dir (a directory holding config.yaml,
 * result.json or trial.json; @dir itself may be one), groups runs whose
 * configs differ only in the seed, and computes mean and sample std over the
 * finished runs of each group. Error: DFQ_SWEEP_ERROR_NO_RUNS, _IO.
 * Returns: (transfer full).
 */
DFQ_API DfqReport *dfq_report_new_from_dir (const char *dir, GError **error);
DFQ_API void dfq_report_free (DfqReport *report);

/* The tables. Returns: (transfer full). */
DFQ_API char *dfq_report_to_markdown (const DfqReport *report);
DFQ_API char *dfq_report_to_csv (const DfqReport *report);
/* A self-contained page (inline CSS and SVG, no external asset). */
DFQ_API char *dfq_report_to_html (const DfqReport *report);

/* Writes report.md, report.csv and report.html into @out_dir (created). */
DFQ_API gboolean dfq_report_write (const DfqReport *report, const char *out_dir, GError **error);

/* Per-layer SQNR (dfq-report-sqnr.c): read from a metrics line, the mean of
 * a group at a site (NAN: none), the sites of the report in forward order
 * (transfer container), whether a group has figures, the Markdown section
 * (nothing when no run has figures). */
void dfq_report_sqnr_read (DfqReportRun *run, JsonObject *line);
double dfq_report_sqnr_group_mean (const DfqReportGroup *g, const char *site);
GPtrArray *dfq_report_sqnr_sites (const DfqReport *report);
gboolean dfq_report_sqnr_group_has (const DfqReportGroup *g);
void dfq_report_sqnr_markdown (GString *md, const DfqReport *report);

/* "12.34 ± 0.56", "12.34" (n == 1) or "—" (n == 0). Returns: (transfer full). */
DFQ_API char *dfq_report_format_mean_std (double mean, double std, guint n);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (DfqReport, dfq_report_free)

G_END_DECLS
