/* The core schema of a pipeline file (core/pipeline), as param tables: one row
 * per key, so adding a key is adding a field to DfqPipelineConfig (dfq-pipeline.h)
 * and a row here. Also the shared `optimizer:` table (DfqOptimParams) and its
 * conversion to the engine's optimiser config. */
#include <string.h>

#include <dfq/dfq.h>

/* optimizer: ------------------------------------------------------------------ */

const char *const dfq_optim_kind_names[] = { "sgd", "adam", NULL };
const char *const dfq_schedule_kind_names[] = { "constant", "multistep", "cosine", "exponential", NULL };
G_STATIC_ASSERT (DFQ_OPTIM_SGD == 0 && DFQ_OPTIM_ADAM == 1);
G_STATIC_ASSERT (DFQ_SCHEDULE_CONSTANT == 0 && DFQ_SCHEDULE_MULTISTEP == 1 && DFQ_SCHEDULE_COSINE == 2 &&
                 DFQ_SCHEDULE_EXPONENTIAL == 3);
G_STATIC_ASSERT (DFQ_NUMBER_LIST_MAX <= DFQ_SCHEDULE_MAX_MILESTONES);

const DfqParamSpec dfq_optim_param_specs[DFQ_OPTIM_N_PARAM_SPECS] = {
    DFQ_PARAM_ENUM (DfqOptimParams, use, "Optimiser", dfq_optim_kind_names, "sgd"),
    DFQ_PARAM_DOUBLE (DfqOptimParams, lr, "Base learning rate", 0, 10, 0.01),
    DFQ_PARAM_DOUBLE (DfqOptimParams, momentum, "SGD momentum", 0, 1, 0),
    DFQ_PARAM_BOOL (DfqOptimParams, nesterov, "SGD Nesterov momentum (needs momentum > 0)", FALSE),
    DFQ_PARAM_DOUBLE (DfqOptimParams, weight_decay, "L2 penalty added to the gradient (not AdamW)", 0, 1, 0),
    DFQ_PARAM_DOUBLE_LIST (DfqOptimParams, betas, "Adam (beta1, beta2), each in [0, 1)", 0, 1, "[0.9, 0.999]"),
    DFQ_PARAM_DOUBLE (DfqOptimParams, eps, "Adam epsilon", 0, 1, 1e-8),
    DFQ_PARAM_ENUM (DfqOptimParams, schedule, "Learning-rate schedule (multistep without milestones is constant)",
                    dfq_schedule_kind_names, "multistep"),
    DFQ_PARAM_INT_LIST (DfqOptimParams, milestones, "multistep: ascending epochs where the rate is multiplied by gamma",
                        0, 1000000, "[]"),
    DFQ_PARAM_DOUBLE (DfqOptimParams, gamma, "multistep, exponential: decay factor", 0, 1, 0.1),
    DFQ_PARAM_DOUBLE (DfqOptimParams, min_lr, "cosine: the final learning rate", 0, 10, 0),
};
const guint dfq_optim_n_param_specs = G_N_ELEMENTS (dfq_optim_param_specs);

gboolean
dfq_optim_params_check (const DfqParamSpec *spec, gconstpointer value, GError **error)
{
    const DfqOptimParams *p = value;
    if (p->use == DFQ_OPTIM_SGD && p->nesterov && p->momentum <= 0.0) {
        g_set_error_literal (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_BAD_VALUE,
                             "nesterov: true needs momentum > 0");
        return FALSE;
    }
    if (p->betas.n != 2 || p->betas.v[0] >= 1.0 || p->betas.v[1] >= 1.0) {
        g_set_error_literal (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_BAD_VALUE,
                             "betas: expected two values in [0, 1), like [0.9, 0.999]");
        return FALSE;
    }
    for (guint i = 1; i < p->milestones.n; i++) {
        if (p->milestones.v[i] <= p->milestones.v[i - 1]) {
            g_set_error_literal (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_BAD_VALUE,
                                 "milestones: must be strictly ascending");
            return FALSE;
        }
    }
    return TRUE;
}

void
dfq_optim_params_to_config (const DfqOptimParams *params, gint64 total, DfqOptimConfig *config,
                            DfqSchedule *schedule)
{
    g_return_if_fail (params != NULL);
    if (config != NULL) {
        dfq_optim_config_init (config, params->use == 1 ? DFQ_OPTIM_ADAM : DFQ_OPTIM_SGD);
        config->lr = params->lr;
        config->weight_decay = params->weight_decay;
        config->momentum = params->momentum;
        config->nesterov = params->nesterov;
        if (params->betas.n == 2) {
            config->beta1 = params->betas.v[0];
            config->beta2 = params->betas.v[1];
        }
        config->eps = params->eps;
    }
    if (schedule != NULL) {
        memset (schedule, 0, sizeof *schedule);
        schedule->kind = (DfqScheduleKind) CLAMP (params->schedule, 0, DFQ_SCHEDULE_EXPONENTIAL);
        schedule->base_lr = params->lr;
        schedule->gamma = params->gamma;
        schedule->min_lr = params->min_lr;
        schedule->total = total;
        schedule->n_milestones = (int) MIN (params->milestones.n, DFQ_SCHEDULE_MAX_MILESTONES);
        for (int i = 0; i < schedule->n_milestones; i++)
            schedule->milestones[i] = (gint64) params->milestones.v[i];
    }
}

/* The pipeline ---------------------------------------------------------------- */

const char *const dfq_pipeline_dataset_names[] = { "fashion-mnist", "mnist", "cifar10", "cifar100", NULL };
const char *const dfq_pipeline_split_names[] = { "train", "test", NULL };
G_STATIC_ASSERT (DFQ_DATASET_SPLIT_TRAIN == 0 && DFQ_DATASET_SPLIT_TEST == 1);

static gboolean
dfq_pipeline_check_version (const DfqParamSpec *spec, gconstpointer value, GError **error)
{
    gint version = *(const gint *) value;
    if (version == DFQ_PIPELINE_VERSION)
        return TRUE;
    g_set_error (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_BAD_VALUE,
                 "unsupported pipeline version %d (this dfq reads version %d)", version, DFQ_PIPELINE_VERSION);
    return FALSE;
}

/* rename: ["regex=>replacement", ...]: every rule splits and compiles. */
static gboolean
dfq_pipeline_check_rename (const DfqParamSpec *spec, gconstpointer value, GError **error)
{
    char *const *rules = *(char **const *) value;
    for (guint i = 0; rules != NULL && rules[i] != NULL; i++) {
        const char *arrow = strstr (rules[i], "=>");
        if (arrow == NULL || arrow == rules[i]) {
            g_set_error (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_BAD_VALUE,
                         "rule %u: expected 'regex=>replacement'", i);
            return FALSE;
        }
        g_autofree char *pattern = g_strndup (rules[i], (gsize) (arrow - rules[i]));
        g_autoptr (GError) local = NULL;
        g_autoptr (GRegex) regex = g_regex_new (pattern, G_REGEX_OPTIMIZE, 0, &local);
        if (regex == NULL) {
            g_set_error (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_BAD_VALUE, "rule %u: %s", i, local->message);
            return FALSE;
        }
        if (!g_regex_check_replacement (arrow + 2, NULL, &local)) {
            g_set_error (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_BAD_VALUE, "rule %u: %s", i, local->message);
            return FALSE;
        }
    }
    return TRUE;
}

static gboolean
dfq_pipeline_check_train (const DfqParamSpec *spec, gconstpointer value, GError **error)
{
    const DfqPipelineTrain *train = value;
    if (train->warmup_epochs > train->epochs) {
        g_set_error (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_BAD_VALUE,
                     "warmup_epochs (%d) is more than epochs (%d)", train->warmup_epochs, train->epochs);
        return FALSE;
    }
    return TRUE;
}

static const DfqParamSpec dfq_pipeline_teacher_specs[] = {
    DFQ_PARAM_FEATURE (DfqPipelineTeacher, model, "The full-precision network: {use: <model>, <its params>}",
                       DFQ_FEATURE_MODEL, NULL, .flags = DFQ_PARAM_FLAG_REQUIRED),
    DFQ_PARAM_STRING (DfqPipelineTeacher, weights, "Trained weights of the teacher (.safetensors)",
                      NULL, .flags = DFQ_PARAM_FLAG_PATH),
    DFQ_PARAM_STRING_LIST (DfqPipelineTeacher, rename,
                           "Rewrites of weight names, 'regex=>replacement', applied in order", NULL,
                           .check = dfq_pipeline_check_rename),
};

static const DfqParamSpec dfq_pipeline_data_specs[] = {
    DFQ_PARAM_ENUM (DfqPipelineData, dataset, "Dataset of the task (evaluation, and data for baselines)",
                    dfq_pipeline_dataset_names, "fashion-mnist"),
    DFQ_PARAM_STRING (DfqPipelineData, dir, "Directory of the dataset files (null: $DFQ_DATA_DIR, then system dirs)",
                      NULL),
};

static const DfqParamSpec dfq_pipeline_eval_specs[] = {
    DFQ_PARAM_ENUM (DfqPipelineEval, split, "Split the accuracy is measured on", dfq_pipeline_split_names, "test"),
    DFQ_PARAM_INT (DfqPipelineEval, batch, "Evaluation batch size", 1, 65536, 200),
    DFQ_PARAM_INT (DfqPipelineEval, sqnr_images,
                   "Per-layer SQNR of the quantized student after each evaluation (metrics.jsonl sqnr_db*), over the "
                   "first this many images of the split; 0: off",
                   0, 1000000, 256, .flags = DFQ_PARAM_FLAG_OMIT_DEFAULT),
};

static const DfqParamSpec dfq_pipeline_student_specs[] = {
    DFQ_PARAM_FEATURE (DfqPipelineStudent, quantizer, "How the student is quantized (null: full precision)",
                       DFQ_FEATURE_QUANTIZER, NULL),
};

static const DfqParamSpec dfq_pipeline_train_specs[] = {
    DFQ_PARAM_INT (DfqPipelineTrain, epochs, "Training epochs", 0, 100000, 40),
    DFQ_PARAM_INT (DfqPipelineTrain, iters, "Iterations per epoch (dfq train: 0 = one pass over the training split)",
                   0, 10000000, 60),
    DFQ_PARAM_INT (DfqPipelineTrain, batch, "Batch size", 1, 65536, 64),
    DFQ_PARAM_INT (DfqPipelineTrain, warmup_epochs, "Epochs that train only the synthesizer", 0, 100000, 2),
    DFQ_PARAM_INT (DfqPipelineTrain, range_epochs, "Activation ranges are tracked in epochs < range_epochs, then frozen",
                   0, 100000, 4),
    DFQ_PARAM_OPTIMIZER (DfqPipelineTrain, optimizer, "Optimiser of the student",
                         .default_value = "{use: sgd, lr: 1e-4, momentum: 0.9, nesterov: true, "
                                          "weight_decay: 1e-4, milestones: [15, 30, 35]}"),
    DFQ_PARAM_FEATURE_LIST (DfqPipelineTrain, losses, "Weighted loss terms of the student: [{use: kd, weight: 1}, ...]",
                            DFQ_FEATURE_LOSS, NULL),
    DFQ_PARAM_INT (DfqPipelineTrain, pad, "dfq train: zero-pad real images by this many pixels, then random-crop back",
                   0, 64, 0),
    DFQ_PARAM_BOOL (DfqPipelineTrain, hflip, "dfq train: random horizontal flips of real images", FALSE),
    DFQ_PARAM_STRING (DfqPipelineTrain, save, "dfq train: also write the trained weights here (relative to the pipeline file)",
                      NULL, .flags = DFQ_PARAM_FLAG_PATH),
    DFQ_PARAM_DOUBLE (DfqPipelineTrain, checkpoint_minutes,
                      "Also checkpoint inside an epoch once this many minutes have passed since the last checkpoint, "
                      "so that a kill loses at most that much (0: at epoch ends and on a stop only)",
                      0, 1e6, 10.0, .flags = DFQ_PARAM_FLAG_OMIT_DEFAULT),
};

const char *const dfq_pipeline_phase_names[] = { "train-fp", "synthesize", "calibrate", "reconstruct", "train", "evaluate", NULL };

static gboolean
dfq_pipeline_check_phases (const DfqParamSpec *spec, gconstpointer value, GError **error)
{
    char *const *phases = *(char **const *) value;
    for (guint i = 0; phases != NULL && phases[i] != NULL; i++) {
        if (!g_strv_contains (dfq_pipeline_phase_names, phases[i])) {
            g_autofree char *valid = g_strjoinv (", ", (char **) dfq_pipeline_phase_names);
            g_set_error (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_BAD_VALUE,
                         "phase %u: unknown phase '%s' (valid: %s)", i, phases[i], valid);
            return FALSE;
        }
        for (guint j = 0; j < i; j++)
            if (g_str_equal (phases[j], phases[i])) {
                g_set_error (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_BAD_VALUE,
                             "phase '%s' is listed twice", phases[i]);
                return FALSE;
            }
    }
    return TRUE;
}

static const DfqParamSpec dfq_pipeline_synthesize_specs[] = {
    DFQ_PARAM_INT (DfqPipelineSynthesize, images, "Offline synthesizers: size of the image set", 1, 10000000, 64,
                   .flags = DFQ_PARAM_FLAG_OMIT_DEFAULT),
    DFQ_PARAM_INT (DfqPipelineSynthesize, batch, "Offline synthesizers: images optimised together (a checkpoint after each batch)",
                   1, 65536, 64, .flags = DFQ_PARAM_FLAG_OMIT_DEFAULT),
    DFQ_PARAM_BOOL (DfqPipelineSynthesize, reuse,
                    "Reuse an image set made before with the same synthesizer, teacher, size, seed and threads "
                    "(the cache), and store new ones there", TRUE, .flags = DFQ_PARAM_FLAG_OMIT_DEFAULT),
    DFQ_PARAM_STRING (DfqPipelineSynthesize, cache, "Image-set cache directory (null: image-sets/ beside the run directory, shared by a sweep's trials)", NULL,
                      .flags = DFQ_PARAM_FLAG_PATH | DFQ_PARAM_FLAG_OMIT_DEFAULT),
};

static const DfqParamSpec dfq_pipeline_calibrate_specs[] = {
    DFQ_PARAM_INT (DfqPipelineCalibrate, batch, "Images per calibration forward (a checkpoint after each)", 1, 65536, 64,
                   .flags = DFQ_PARAM_FLAG_OMIT_DEFAULT),
};

/* Official defaults: BRECQ / GENIE (METHODS.md 9, 11): 20000 steps of 32
 * images per block, rounding term after 20 %, QDrop 0.5 (GENIE), scale groups
 * on a cosine schedule. */
static const DfqParamSpec dfq_pipeline_reconstruct_specs[] = {
    DFQ_PARAM_INT (DfqPipelineReconstruct, iters, "Optimisation steps per unit (block or stand-alone layer)", 0, 100000000,
                   20000, .flags = DFQ_PARAM_FLAG_OMIT_DEFAULT),
    DFQ_PARAM_INT (DfqPipelineReconstruct, batch, "Images per step, drawn without replacement (a new permutation per pass)",
                   1, 65536, 32, .flags = DFQ_PARAM_FLAG_OMIT_DEFAULT),
    DFQ_PARAM_DOUBLE (DfqPipelineReconstruct, warmup,
                      "Fraction of the steps before the quantizer's regulariser (AdaRound's rounding term) is added; "
                      "its annealing runs over the rest", 0.0, 1.0, 0.2, .flags = DFQ_PARAM_FLAG_OMIT_DEFAULT),
    DFQ_PARAM_DOUBLE (DfqPipelineReconstruct, qdrop,
                      "QDrop: probability that an element of the block input is the full-precision one instead of "
                      "the quantized model's (0: BRECQ, quantized input only; 0.5: GENIE)", 0.0, 1.0, 0.5,
                      .flags = DFQ_PARAM_FLAG_OMIT_DEFAULT),
    DFQ_PARAM_DOUBLE (DfqPipelineReconstruct, lr, "Adam learning rate of quantizer parameter groups that set none",
                      0.0, 10.0, 0.001, .flags = DFQ_PARAM_FLAG_OMIT_DEFAULT),
    DFQ_PARAM_STRING_LIST (DfqPipelineReconstruct, cosine,
                           "Quantizer parameter groups whose learning rate follows a cosine to 0 over the steps "
                           "(GENIE: the scales); the others keep theirs", "[w_scales, a_scales]",
                           .flags = DFQ_PARAM_FLAG_OMIT_DEFAULT),
    DFQ_PARAM_INT (DfqPipelineReconstruct, eval_batch,
                   "Images per forward while the block inputs and outputs of the image set are cached", 1, 65536, 64,
                   .flags = DFQ_PARAM_FLAG_OMIT_DEFAULT),
};

const DfqParamSpec dfq_pipeline_param_specs[] = {
    DFQ_PARAM_INT_REQUIRED (DfqPipelineConfig, version, "Pipeline format version (1)", 0, 0,
                            .check = dfq_pipeline_check_version),
    DFQ_PARAM_STRING (DfqPipelineConfig, name, "Name of the experiment (run directories are named after it)", NULL),
    DFQ_PARAM_INT (DfqPipelineConfig, seed, "Seed of every random choice", 0, G_MAXINT, 1),
    DFQ_PARAM_INT (DfqPipelineConfig, threads, "Worker threads", 1, 1024, 2),
    DFQ_PARAM_STRING (DfqPipelineConfig, output_dir, "Where run directories are written", "runs"),
    DFQ_PARAM_STRUCT (DfqPipelineConfig, teacher, "The full-precision teacher", dfq_pipeline_teacher_specs),
    DFQ_PARAM_STRUCT (DfqPipelineConfig, data, "The dataset", dfq_pipeline_data_specs),
    DFQ_PARAM_STRUCT (DfqPipelineConfig, eval, "Evaluation", dfq_pipeline_eval_specs),
    DFQ_PARAM_STRUCT (DfqPipelineConfig, student, "The quantized student", dfq_pipeline_student_specs),
    DFQ_PARAM_FEATURE (DfqPipelineConfig, synthesizer, "Where training images come from: {use: <synthesizer>, ...}",
                       DFQ_FEATURE_SYNTHESIZER, NULL),
    DFQ_PARAM_STRUCT (DfqPipelineConfig, train, "Training of the student", dfq_pipeline_train_specs,
                      .check = dfq_pipeline_check_train),
    DFQ_PARAM_STRING_LIST (DfqPipelineConfig, phases,
                           "What the run does, in order: train-fp, synthesize, calibrate, reconstruct, train, evaluate "
                           "([] = from the synthesizer: [train] for online ones, [synthesize, calibrate, evaluate] for offline ones)",
                           "[]", .check = dfq_pipeline_check_phases, .flags = DFQ_PARAM_FLAG_OMIT_DEFAULT),
    DFQ_PARAM_STRUCT (DfqPipelineConfig, synthesize, "The image set of offline synthesizers", dfq_pipeline_synthesize_specs,
                      .flags = DFQ_PARAM_FLAG_OMIT_DEFAULT),
    DFQ_PARAM_STRUCT (DfqPipelineConfig, calibrate, "Calibration of the quantizer on the image set",
                      dfq_pipeline_calibrate_specs, .flags = DFQ_PARAM_FLAG_OMIT_DEFAULT),
    DFQ_PARAM_STRUCT (DfqPipelineConfig, reconstruct,
                      "Block reconstruction (phase reconstruct): the quantizer's parameters of one unit at a time "
                      "against the full-precision unit's output", dfq_pipeline_reconstruct_specs,
                      .flags = DFQ_PARAM_FLAG_OMIT_DEFAULT),
};
const guint dfq_pipeline_n_param_specs = G_N_ELEMENTS (dfq_pipeline_param_specs);
