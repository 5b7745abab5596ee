/* Run-directory helpers (dfq-rundir.c), shared by every phase and entry point. */
#pragma once

#include <json-glib/json-glib.h>
#include <dfq/dfq.h>
#include <dfq/dfq-runner.h>

G_BEGIN_DECLS

#include "dfq-git-revision.h" /* generated: DFQ_GIT_REVISION */

gboolean dfq_priv_write_atomic (const char *path, const char *text, GError **error);
char *dfq_priv_file_sha256 (const char *path);
gboolean dfq_priv_write_manifest (const char *run_dir, DfqRegistry *registry, DfqPipeline *pipeline,
                                  const char *config_hash, GError **error);
gboolean dfq_priv_prepare_run_dir (const char *run_dir, DfqPipeline *pipeline, gboolean restart, char **config_hash,
                                   GError **error);
gboolean dfq_priv_truncate_metrics (const char *run_dir, gint n_epochs, GError **error);
gboolean dfq_priv_append_metrics (const char *run_dir, JsonBuilder *b, GError **error);
gboolean dfq_priv_write_result (const char *run_dir, const DfqRunResult *r, const char *extra_key,
                                const char *extra_value, GError **error);
void dfq_priv_ckpt_add (GPtrArray *names, GPtrArray *tensors, const char *prefix, GPtrArray *items);
void dfq_priv_ckpt_add_model (GPtrArray *names, GPtrArray *tensors, const char *prefix, DfqModel *m);
gboolean dfq_priv_ckpt_restore (DfqSafetensors *st, GPtrArray *names, GPtrArray *tensors, GError **error);
gboolean dfq_priv_ckpt_save (const char *run_dir, GPtrArray *names, GPtrArray *tensors, GHashTable *meta,
                             GError **error);
double dfq_priv_meta_double (DfqSafetensors *st, const char *key, double fallback);
void dfq_priv_meta_set_double (GHashTable *meta, const char *key, double v);
void dfq_priv_report (const DfqRunOptions *o, DfqProgress *p);
gboolean dfq_priv_cancelled (const DfqRunOptions *o, GError **error);
DfqDataset *dfq_priv_open_dataset (const DfqPipelineConfig *cfg, DfqDatasetSplit split, GError **error);
DfqModel *dfq_priv_new_student (DfqRegistry *registry, DfqPipeline *pipeline, GError **error);

G_END_DECLS
