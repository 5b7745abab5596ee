/* Full-precision training on real data (core/runner): how dfqlab makes its own
 * teachers (`dfq train`). Cross-entropy, SGD/Adam with the pipeline's schedule
 * (cosine per step, multistep and exponential per epoch), pad + crop + flip
 * augmentation, evaluation and a checkpoint every epoch, resume. */
#include <math.h>
#include <string.h>

#include <json-glib/json-glib.h>

#include <dfq/dfq.h>
#include <dfq/dfq-runner.h>

#include "dfq-runner-private.h"

gboolean
dfq_runner_train (DfqRegistry *registry, DfqPipeline *pipeline, const DfqRunOptions *options, DfqRunResult *result,
                  GError **error)
{
    g_return_val_if_fail (registry != NULL && pipeline != NULL && result != NULL, FALSE);
    memset (result, 0, sizeof *result);
    result->eval_limit = options ? (gint) options->eval_limit : 0;
    const DfqPipelineConfig *cfg = dfq_pipeline_get_config (pipeline);
    DfqModel *model = (DfqModel *) cfg->teacher.model;
    gint64 t_start = g_get_monotonic_time ();
    GError *e = NULL;
    gboolean ok = FALSE;
    g_autofree char *run_dir = dfq_runner_get_run_dir (pipeline, options);
    g_autofree char *config_hash = NULL;
    g_autofree char *ckpt_path = g_build_filename (run_dir, "checkpoint.safetensors", NULL);
    g_autoptr (DfqDataset) train_set = NULL;
    g_autoptr (DfqDataset) eval_set = NULL;
    g_autoptr (DfqDataLoader) loader = NULL;
    g_autoptr (DfqOptim) optim = NULL;
    g_autoptr (DfqArena) scratch = dfq_arena_new (0);
    g_autoptr (DfqArena) data = dfq_arena_new (0);
    g_autoptr (GPtrArray) names = g_ptr_array_new_with_free_func (g_free);
    g_autoptr (GPtrArray) tensors = g_ptr_array_new ();
    g_autoptr (GPtrArray) ostate = NULL;
    DfqSchedule schedule;
    DfqOptimConfig ocfg;
    gint start_epoch = 0, best_epoch = -1, epochs_this_call = 0;
    double best = -1.0, last = NAN, prior_wall = 0.0;
    /* wall time through the last epoch done (as its checkpoint records it): a
     * rerun of a finished run reports and writes the same figure */
    double wall_done = 0.0;

    dfq_set_num_threads (MAX (cfg->threads, 1));
    if (!dfq_priv_prepare_run_dir (run_dir, pipeline, options && options->restart, &config_hash, &e))
        goto out;
    if (!dfq_priv_write_manifest (run_dir, registry, pipeline, config_hash, &e))
        goto out;
    if (cfg->teacher.weights != NULL
        && !dfq_model_load (model, cfg->teacher.weights, (const char *const *) cfg->teacher.rename, &e))
        goto out;
    train_set = dfq_priv_open_dataset (cfg, DFQ_DATASET_SPLIT_TRAIN, &e);
    if (train_set == NULL)
        goto out;
    eval_set = dfq_priv_open_dataset (cfg, (DfqDatasetSplit) cfg->eval.split, &e);
    if (eval_set == NULL)
        goto out;

    DfqDataLoaderOptions lo = DFQ_DATA_LOADER_OPTIONS_INIT;
    lo.batch_size = (guint) cfg->train.batch;
    lo.shuffle = TRUE;
    lo.drop_last = TRUE; /* constant batch shape: BN statistics of full batches only */
    lo.seed = (guint64) cfg->seed;
    lo.pad = (guint) cfg->train.pad;
    lo.hflip = cfg->train.hflip;
    loader = dfq_data_loader_new (train_set, &lo);
    guint steps = dfq_data_loader_get_n_batches (loader);
    if (cfg->train.iters > 0 && (guint) cfg->train.iters < steps)
        steps = (guint) cfg->train.iters;

    /* cosine decays per step over the whole run; the others count epochs */
    dfq_optim_params_to_config (&cfg->train.optimizer, (gint64) cfg->train.epochs * steps, &ocfg, &schedule);
    gboolean per_step = schedule.kind == DFQ_SCHEDULE_COSINE;
    optim = dfq_optim_new (&ocfg);
    for (guint i = 0; i < model->params->len; i++)
        dfq_optim_add_param (optim, model->params->pdata[i]);
    ostate = dfq_optim_get_state (optim);
    dfq_priv_ckpt_add_model (names, tensors, "model.", model);
    dfq_priv_ckpt_add (names, tensors, "optim.", ostate);

    if (g_file_test (ckpt_path, G_FILE_TEST_EXISTS)) {
        g_autoptr (DfqSafetensors) st = dfq_safetensors_new_from_file (ckpt_path, &e);
        if (st == NULL || !dfq_priv_ckpt_restore (st, names, tensors, &e))
            goto out;
        start_epoch = (gint) dfq_priv_meta_double (st, "epochs_done", 0);
        best = dfq_priv_meta_double (st, "best_top1", -1);
        best_epoch = (gint) dfq_priv_meta_double (st, "best_epoch", -1);
        last = dfq_priv_meta_double (st, "last_top1", NAN);
        prior_wall = dfq_priv_meta_double (st, "wall_seconds", 0);
        wall_done = prior_wall;
        dfq_optim_set_step (optim, (gint64) dfq_priv_meta_double (st, "optim_step", 0));
        if (!dfq_priv_truncate_metrics (run_dir, start_epoch, &e))
            goto out;
    }

    guint c, h, w;
    dfq_dataset_get_shape (train_set, &c, &h, &w);
    if ((gint) c != model->in_channels) {
        g_set_error (&e, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_SHAPE, "dataset images have %u channels, the model takes %d",
                     c, model->in_channels);
        goto out;
    }
    DfqTensor *x = dfq_tensor_new_4d (data, DFQ_DTYPE_F32, cfg->train.batch, c, h, w);
    DfqTensor *y = dfq_tensor_new_1d (data, DFQ_DTYPE_I32, cfg->train.batch);
    DfqProgress prog = { .phase = "train", .epochs = cfg->train.epochs, .iters = (gint) steps, .top1 = last };
    for (gint epoch = start_epoch; epoch < cfg->train.epochs; epoch++) {
        gint64 t_epoch = g_get_monotonic_time ();
        dfq_data_loader_start_epoch (loader, (guint) epoch);
        double loss_sum = 0.0;
        guint correct = 0, seen = 0;
        prog.phase = "train";
        for (guint it = 0; it < steps; it++) {
            if (dfq_priv_cancelled (options, &e))
                goto out;
            gint64 step = (gint64) epoch * steps + it;
            dfq_optim_set_lr (optim, dfq_schedule_lr (&schedule, per_step ? step : epoch));
            if (!dfq_data_loader_next (loader, x, y, NULL))
                break;
            dfq_arena_reset (scratch);
            DfqForward fwd;
            dfq_forward_init (&fwd, scratch, TRUE);
            fwd.seed = (guint64) cfg->seed;
            fwd.step = (guint64) step;
            DfqTensor *logits = dfq_model_forward (model, &fwd, x);
            DfqTensor *loss = dfq_cross_entropy (scratch, logits, y);
            float lv = dfq_tensor_f32 (loss)[0];
            if (!isfinite (lv)) {
                g_set_error (&e, DFQ_RUN_ERROR, DFQ_RUN_ERROR_DIVERGED,
                             "training loss is %g at epoch %d, step %u: training diverged (lower the learning rate?)",
                             lv, epoch, it);
                goto diverged;
            }
            dfq_optim_zero_grad (optim);
            dfq_backward (loss, scratch);
            dfq_optim_step (optim);
            loss_sum += lv;
            const float *l = dfq_tensor_f32 (logits);
            for (gint b = 0; b < cfg->train.batch; b++) {
                gint best_k = 0;
                for (gint k = 1; k < model->classes; k++)
                    if (l[b * model->classes + k] > l[b * model->classes + best_k])
                        best_k = k;
                correct += best_k == dfq_tensor_i32 (y)[b];
                seen++;
            }
            prog.epoch = epoch;
            prog.iter = (gint) it;
            prog.loss = lv;
            prog.elapsed = (g_get_monotonic_time () - t_start) / 1e6;
            gint64 done = (gint64) (epoch - start_epoch) * steps + it + 1;
            gint64 total = (gint64) (cfg->train.epochs - start_epoch) * steps;
            prog.eta = prog.elapsed / done * (total - done);
            dfq_priv_report (options, &prog);
        }
        prog.phase = "eval";
        dfq_priv_report (options, &prog);
        DfqEvalResult ev;
        if (!dfq_evaluate (model, NULL, eval_set, (guint) cfg->eval.batch, options ? options->eval_limit : 0, &ev, &e))
            goto diverged;
        last = ev.top1;
        dfq_eval_result_clear (&ev);
        if (last > best) {
            best = last;
            best_epoch = epoch;
        }
        prog.top1 = last;

        g_autoptr (JsonBuilder) b = json_builder_new ();
        json_builder_begin_object (b);
        json_builder_set_member_name (b, "epoch");
        json_builder_add_int_value (b, epoch);
        json_builder_set_member_name (b, "lr");
        json_builder_add_double_value (b, dfq_optim_get_lr (optim));
        json_builder_set_member_name (b, "train_loss");
        json_builder_add_double_value (b, loss_sum / MAX (steps, 1));
        json_builder_set_member_name (b, "train_top1");
        json_builder_add_double_value (b, 100.0 * correct / MAX (seen, 1));
        json_builder_set_member_name (b, "top1");
        json_builder_add_double_value (b, last);
        json_builder_set_member_name (b, "split");
        json_builder_add_string_value (b, dfq_pipeline_split_names[cfg->eval.split]);
        json_builder_set_member_name (b, "seconds");
        json_builder_add_double_value (b, (g_get_monotonic_time () - t_epoch) / 1e6);
        json_builder_end_object (b);
        if (!dfq_priv_append_metrics (run_dir, b, &e))
            goto out;

        g_autoptr (GHashTable) meta = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
        g_hash_table_insert (meta, g_strdup ("config_sha256"), g_strdup (config_hash));
        dfq_priv_meta_set_double (meta, "epochs_done", epoch + 1);
        dfq_priv_meta_set_double (meta, "best_top1", best);
        dfq_priv_meta_set_double (meta, "best_epoch", best_epoch);
        dfq_priv_meta_set_double (meta, "last_top1", last);
        dfq_priv_meta_set_double (meta, "optim_step", (double) dfq_optim_get_step (optim));
        wall_done = prior_wall + (g_get_monotonic_time () - t_start) / 1e6;
        dfq_priv_meta_set_double (meta, "wall_seconds", wall_done);
        if (!dfq_priv_ckpt_save (run_dir, names, tensors, meta, &e))
            goto out;
        result->epochs_done = epoch + 1;
        epochs_this_call++;
        if (options != NULL && options->stop_after_epochs > 0 && epochs_this_call >= options->stop_after_epochs
            && epoch + 1 < cfg->train.epochs) {
            g_set_error (&e, DFQ_RUN_ERROR, DFQ_RUN_ERROR_CANCELLED, "stopped after %d epochs as asked", epochs_this_call);
            goto out;
        }
    }

    result->status = g_strdup ("finished");
    result->last_top1 = last;
    result->best_top1 = best;
    result->best_epoch = best_epoch;
    result->best_split = g_strdup (dfq_pipeline_split_names[cfg->eval.split]);
    result->epochs_done = cfg->train.epochs;
    result->fp_top1 = last;
    result->wall_seconds = wall_done;
    {
        g_autoptr (GHashTable) meta = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
        g_hash_table_insert (meta, g_strdup ("dfqlab_version"), g_strdup (DFQ_VERSION_STRING));
        g_hash_table_insert (meta, g_strdup ("pipeline"), g_strdup (dfq_pipeline_get_filename (pipeline)));
        g_hash_table_insert (meta, g_strdup ("seed"), g_strdup_printf ("%d", cfg->seed));
        dfq_priv_meta_set_double (meta, "top1", last);
        g_hash_table_insert (meta, g_strdup ("split"), g_strdup (dfq_pipeline_split_names[cfg->eval.split]));
        dfq_priv_meta_set_double (meta, "train_seconds", result->wall_seconds);
        g_autofree char *wpath = g_build_filename (run_dir, "model.safetensors", NULL);
        if (!dfq_model_save (model, wpath, meta, &e))
            goto out;
        if (cfg->train.save != NULL && !dfq_model_save (model, cfg->train.save, meta, &e))
            goto out;
    }
    if (!dfq_priv_write_result (run_dir, result, NULL, NULL, &e))
        goto out;
    prog.phase = "done";
    dfq_priv_report (options, &prog);
    ok = TRUE;
    goto out;

diverged:
    if (e != NULL && g_error_matches (e, DFQ_RUN_ERROR, DFQ_RUN_ERROR_DIVERGED)) {
        result->status = g_strdup ("diverged");
        result->last_top1 = last;
        result->best_top1 = best;
        result->best_split = g_strdup (dfq_pipeline_split_names[cfg->eval.split]);
        dfq_priv_write_result (run_dir, result, "error", e->message, NULL);
    }
out:
    if (!ok)
        g_propagate_error (error, e);
    result->run_dir = g_strdup (run_dir);
    return ok;
}
