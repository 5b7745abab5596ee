/* Synthesizer plugin, image sources that optimise nothing. Offline:
 * - `real`: N images of the dataset's training split, drawn once for the seed
 *   (with their labels): the data-driven upper bound of every PTQ table;
 * - `noise`: N(mean, std) images: the lower bound;
 * - `image-set`: the images (and labels) of an images.safetensors written by
 *   an earlier run (or any safetensors with an "images" [N,C,H,W] tensor), so
 *   that several pipelines calibrate on exactly the same set. */
#include <math.h>
#include <string.h>

#include <dfq/dfq.h>

#define NOISE_STREAM_BASE G_GUINT64_CONSTANT (0x6e6f697365000000)

typedef struct {
    DfqSynthesizer parent;
    /* real */
    gint split;
    /* noise */
    gdouble mean;
    gdouble std;
    /* image-set */
    char *path;
    /* state: the whole set (real, image-set), sliced per batch */
    DfqTensor *images;
    DfqTensor *labels;
    /* real-stream */
    gint augment;
    DfqDataset *dataset;
    DfqDataLoader *loader;
    guint n_batches;   /* per data epoch */
    gint64 next_step;  /* the step the loader is positioned at, or -1 */
} ImageSource;

static const char *const image_source_split_names[] = { "train", "test", NULL };

static const DfqParamSpec real_params[] = {
    DFQ_PARAM_ENUM (ImageSource, split, "Split the images are drawn from (train: the usual calibration data)",
                    image_source_split_names, "train"),
};

typedef enum { STREAM_AUGMENT_STANDARD, STREAM_AUGMENT_NONE } StreamAugment;
static const char *const stream_augment_names[] = { "standard", "none", NULL };

static const DfqParamSpec real_stream_params[] = {
    DFQ_PARAM_ENUM (ImageSource, split, "Split the batches are drawn from", image_source_split_names, "train"),
    DFQ_PARAM_ENUM (ImageSource, augment,
                    "standard: the dataset's training augmentation (fashion-mnist: pad 2 + random crop + flip, as "
                    "the teachers; mnist: pad 2 + crop; cifar: pad 4 + crop + flip); none: the images as they are",
                    stream_augment_names, "standard"),
};

static const DfqParamSpec noise_params[] = {
    DFQ_PARAM_DOUBLE (ImageSource, mean, "Mean of the Gaussian pixels", -1e6, 1e6, 0.0),
    DFQ_PARAM_DOUBLE (ImageSource, std, "Standard deviation of the Gaussian pixels", 0, 1e6, 1.0),
};

static const DfqParamSpec image_set_params[] = {
    DFQ_PARAM_STRING (ImageSource, path, "A safetensors file with 'images' [N,C,H,W] (and 'labels' [N]), "
                      "e.g. the images.safetensors of an earlier run", NULL,
                      .flags = DFQ_PARAM_FLAG_PATH | DFQ_PARAM_FLAG_REQUIRED),
};

/* Copies images [first, first + n) of the whole set into the step's arena. */
static void
image_source_slice (ImageSource *self, DfqStepContext *ctx, DfqSynthBatch *out)
{
    gint64 per = dfq_tensor_numel (self->images) / self->images->shape[0];
    gint64 start = ctx->step; /* offline synthesizers: the batch's first image in the set */
    out->images = dfq_tensor_new_4d (ctx->arena, DFQ_DTYPE_F32, ctx->batch, self->images->shape[1],
                                     self->images->shape[2], self->images->shape[3]);
    memcpy (dfq_tensor_f32 (out->images), dfq_tensor_f32 (self->images) + start * per,
            (gsize) (ctx->batch * per) * sizeof (float));
    if (self->labels != NULL) {
        out->labels = dfq_tensor_new_1d (ctx->arena, DFQ_DTYPE_I32, ctx->batch);
        memcpy (dfq_tensor_i32 (out->labels), dfq_tensor_i32 (self->labels) + start, (gsize) ctx->batch * sizeof (gint32));
    }
}

static gboolean
image_source_check_shape (ImageSource *self, DfqStepContext *ctx, const char *what, GError **error)
{
    const gint64 *s = self->images->shape;
    if (self->images->n_dims != 4 || s[1] != ctx->image_shape[0] || s[2] != ctx->image_shape[1]
        || s[3] != ctx->image_shape[2]) {
        char buf[64];
        g_set_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_SHAPE,
                     "%s holds images of shape %s; the teacher takes [N,%" G_GINT64_FORMAT ",%" G_GINT64_FORMAT
                     ",%" G_GINT64_FORMAT "]",
                     what, dfq_tensor_shape_string (self->images, buf, sizeof buf), ctx->image_shape[0],
                     ctx->image_shape[1], ctx->image_shape[2]);
        return FALSE;
    }
    return TRUE;
}

static void
image_source_finalize (DfqFeature *feature)
{
    ImageSource *self = (ImageSource *) feature;
    g_clear_pointer (&self->loader, dfq_data_loader_free);
    g_clear_pointer (&self->dataset, dfq_dataset_free);
    g_clear_pointer (&self->parent.arena, dfq_arena_free);
}

static gboolean
image_source_init (DfqFeature *feature, GError **error)
{
    ((ImageSource *) feature)->parent.arena = dfq_arena_new (0);
    return TRUE;
}

/* ------------------------------------------------------------ real */

static gboolean
real_prepare (DfqSynthesizer *synth, DfqStepContext *ctx, GError **error)
{
    ImageSource *self = (ImageSource *) synth;
    if (self->images != NULL)
        return TRUE;
    if (ctx->dataset == NULL) {
        g_set_error_literal (error, DFQ_DATA_ERROR, DFQ_DATA_ERROR_NOT_FOUND, "real: the run names no dataset");
        return FALSE;
    }
    g_autoptr (DfqDataset) ds = dfq_dataset_open (ctx->dataset, (DfqDatasetSplit) self->split, ctx->data_dir, error);
    if (ds == NULL)
        return FALSE;
    return TRUE;
}

/* The set is the first N of the seed's permutation of the split; each call
 * fills the batch starting at image ctx->step of the set. */
static gboolean
real_step (DfqSynthesizer *synth, DfqStepContext *ctx, DfqSynthBatch *out, GError **error)
{
    ImageSource *self = (ImageSource *) synth;
    g_autoptr (DfqDataset) ds = dfq_dataset_open (ctx->dataset, (DfqDatasetSplit) self->split, ctx->data_dir, error);
    if (ds == NULL)
        return FALSE;
    guint n_total = dfq_dataset_get_n (ds);
    guint first = (guint) ctx->step, n = (guint) ctx->batch;
    if (first + n > n_total) {
        g_set_error (error, DFQ_DATA_ERROR, DFQ_DATA_ERROR_FORMAT,
                     "real: %u images asked for, the %s split of %s has %u", first + n,
                     image_source_split_names[self->split], ctx->dataset, n_total);
        return FALSE;
    }
    guint32 *perm = g_new (guint32, n_total);
    dfq_rand_permutation (perm, n_total, ctx->seed, NOISE_STREAM_BASE - 1);
    guint c, h, w;
    dfq_dataset_get_shape (ds, &c, &h, &w);
    out->images = dfq_tensor_new_4d (ctx->arena, DFQ_DTYPE_F32, n, c, h, w);
    out->labels = dfq_tensor_new_1d (ctx->arena, DFQ_DTYPE_I32, n);
    dfq_dataset_fill_batch (ds, perm + first, n, out->images, out->labels);
    g_free (perm);
    self->images = out->images;
    gboolean ok = image_source_check_shape (self, ctx, "the dataset", error);
    self->images = NULL;
    return ok;
}

/* ------------------------------------------------------------ real-stream */

static gboolean
real_stream_prepare (DfqSynthesizer *synth, DfqStepContext *ctx, GError **error)
{
    ImageSource *self = (ImageSource *) synth;
    if (self->loader != NULL)
        return TRUE;
    if (ctx->dataset == NULL) {
        g_set_error_literal (error, DFQ_DATA_ERROR, DFQ_DATA_ERROR_NOT_FOUND, "real-stream: the run names no dataset");
        return FALSE;
    }
    self->dataset = dfq_dataset_open (ctx->dataset, (DfqDatasetSplit) self->split, ctx->data_dir, error);
    if (self->dataset == NULL)
        return FALSE;
    guint c, h, w;
    dfq_dataset_get_shape (self->dataset, &c, &h, &w);
    if ((gint64) c != ctx->image_shape[0] || (gint64) h != ctx->image_shape[1] || (gint64) w != ctx->image_shape[2]) {
        g_set_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_SHAPE,
                     "real-stream: %s holds %ux%ux%u images; the teacher takes %" G_GINT64_FORMAT "x%" G_GINT64_FORMAT
                     "x%" G_GINT64_FORMAT,
                     ctx->dataset, c, h, w, ctx->image_shape[0], ctx->image_shape[1], ctx->image_shape[2]);
        g_clear_pointer (&self->dataset, dfq_dataset_free);
        return FALSE;
    }
    if (ctx->batch <= 0 || (guint) ctx->batch > dfq_dataset_get_n (self->dataset)) {
        g_set_error (error, DFQ_DATA_ERROR, DFQ_DATA_ERROR_FORMAT, "real-stream: batch %d for a split of %u images",
                     ctx->batch, dfq_dataset_get_n (self->dataset));
        g_clear_pointer (&self->dataset, dfq_dataset_free);
        return FALSE;
    }
    DfqDataLoaderOptions lo = DFQ_DATA_LOADER_OPTIONS_INIT;
    lo.batch_size = (guint) ctx->batch;
    lo.shuffle = TRUE;
    lo.drop_last = TRUE;
    lo.seed = ctx->seed;
    if (self->augment == STREAM_AUGMENT_STANDARD) {
        gboolean cifar = g_str_has_prefix (ctx->dataset, "cifar");
        lo.pad = cifar ? 4 : 2;
        lo.hflip = !g_str_equal (ctx->dataset, "mnist");
    }
    self->loader = dfq_data_loader_new (self->dataset, &lo);
    self->n_batches = dfq_data_loader_get_n_batches (self->loader);
    self->next_step = -1;
    return TRUE;
}

/* Batch ctx->step of the stream: batch step % n of data epoch step / n. */
static gboolean
real_stream_step (DfqSynthesizer *synth, DfqStepContext *ctx, DfqSynthBatch *out, GError **error)
{
    ImageSource *self = (ImageSource *) synth;
    guint epoch = (guint) (ctx->step / self->n_batches), index = (guint) (ctx->step % self->n_batches);
    out->images = dfq_tensor_new_4d (ctx->arena, DFQ_DTYPE_F32, ctx->batch, ctx->image_shape[0], ctx->image_shape[1],
                                     ctx->image_shape[2]);
    out->labels = dfq_tensor_new_1d (ctx->arena, DFQ_DTYPE_I32, ctx->batch);
    if (ctx->step != self->next_step || index == 0) {
        /* a new data epoch, or a resumed run: position the loader */
        dfq_data_loader_start_epoch (self->loader, epoch);
        for (guint k = 0; k < index; k++)
            dfq_data_loader_next (self->loader, out->images, out->labels, NULL);
    }
    if (!dfq_data_loader_next (self->loader, out->images, out->labels, NULL)) {
        g_set_error (error, DFQ_DATA_ERROR, DFQ_DATA_ERROR_FORMAT, "real-stream: no batch %u in data epoch %u", index,
                     epoch);
        return FALSE;
    }
    self->next_step = ctx->step + 1;
    return TRUE;
}

/* ------------------------------------------------------------ noise */

static gboolean
noise_prepare (DfqSynthesizer *synth, DfqStepContext *ctx, GError **error)
{
    return TRUE;
}

static gboolean
noise_step (DfqSynthesizer *synth, DfqStepContext *ctx, DfqSynthBatch *out, GError **error)
{
    ImageSource *self = (ImageSource *) synth;
    out->images = dfq_tensor_new_4d (ctx->arena, DFQ_DTYPE_F32, ctx->batch, ctx->image_shape[0], ctx->image_shape[1],
                                     ctx->image_shape[2]);
    dfq_rand_normal_fill (out->images, ctx->seed, NOISE_STREAM_BASE + (guint64) ctx->iter, (float) self->mean,
                          (float) self->std);
    return TRUE;
}

/* ------------------------------------------------------------ image-set */

static gboolean
image_set_prepare (DfqSynthesizer *synth, DfqStepContext *ctx, GError **error)
{
    ImageSource *self = (ImageSource *) synth;
    if (self->images != NULL)
        return TRUE;
    g_autoptr (DfqSafetensors) st = dfq_safetensors_new_from_file (self->path, error);
    if (st == NULL)
        return FALSE;
    self->images = dfq_safetensors_get_tensor (st, "images", synth->arena, error);
    if (self->images == NULL) {
        g_prefix_error (error, "image-set: ");
        return FALSE;
    }
    if (!image_source_check_shape (self, ctx, self->path, error)) {
        self->images = NULL;
        return FALSE;
    }
    if (dfq_safetensors_lookup (st, "labels") != NULL) {
        /* read as float (exact for class indices), kept as I32 */
        DfqTensor *f = dfq_safetensors_get_tensor (st, "labels", synth->arena, error);
        if (f == NULL || f->n_dims != 1 || f->shape[0] != self->images->shape[0]) {
            g_clear_error (error);
            g_set_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_SHAPE, "%s: 'labels' must have shape [%" G_GINT64_FORMAT "]",
                         self->path, self->images->shape[0]);
            self->images = NULL;
            return FALSE;
        }
        self->labels = dfq_tensor_new_1d (synth->arena, DFQ_DTYPE_I32, f->shape[0]);
        for (gint64 i = 0; i < f->shape[0]; i++)
            dfq_tensor_i32 (self->labels)[i] = (gint32) dfq_tensor_f32 (f)[i];
    }
    return TRUE;
}

static gboolean
image_set_step (DfqSynthesizer *synth, DfqStepContext *ctx, DfqSynthBatch *out, GError **error)
{
    ImageSource *self = (ImageSource *) synth;
    gint64 end = ctx->step + ctx->batch;
    if (end > self->images->shape[0]) {
        g_set_error (error, DFQ_DATA_ERROR, DFQ_DATA_ERROR_FORMAT,
                     "image-set: %s holds %" G_GINT64_FORMAT " images, the run asks for %" G_GINT64_FORMAT
                     " (synthesize.images)",
                     self->path, self->images->shape[0], end);
        return FALSE;
    }
    image_source_slice (self, ctx, out);
    return TRUE;
}

/* ------------------------------------------------------------ classes */

static const DfqSynthesizerClass real_class = {
    .parent = DFQ_FEATURE_CLASS_INIT_FULL (DFQ_FEATURE_SYNTHESIZER, "real",
                                           "Real images of the dataset (the data-driven bound of PTQ tables; offline)",
                                           ImageSource, real_params, image_source_init, image_source_finalize),
    .prepare = real_prepare,
    .step = real_step,
    .mode = DFQ_SYNTH_OFFLINE,
};

static const DfqSynthesizerClass real_stream_class = {
    .parent = DFQ_FEATURE_CLASS_INIT_FULL (DFQ_FEATURE_SYNTHESIZER, "real-stream",
                                           "Real training images with the dataset's augmentation, a batch per "
                                           "training step (QAT on real data; online)",
                                           ImageSource, real_stream_params, image_source_init, image_source_finalize),
    .prepare = real_stream_prepare,
    .step = real_stream_step,
    .mode = DFQ_SYNTH_ONLINE,
};

static const DfqSynthesizerClass noise_class = {
    .parent = DFQ_FEATURE_CLASS_INIT_FULL (DFQ_FEATURE_SYNTHESIZER, "noise",
                                           "Gaussian-noise images (the lower bound of PTQ tables; offline)", ImageSource,
                                           noise_params, image_source_init, image_source_finalize),
    .prepare = noise_prepare,
    .step = noise_step,
    .mode = DFQ_SYNTH_OFFLINE,
};

static const DfqSynthesizerClass image_set_class = {
    .parent = DFQ_FEATURE_CLASS_INIT_FULL (DFQ_FEATURE_SYNTHESIZER, "image-set",
                                           "The images of an earlier run's images.safetensors (offline)", ImageSource,
                                           image_set_params, image_source_init, image_source_finalize),
    .prepare = image_set_prepare,
    .step = image_set_step,
    .mode = DFQ_SYNTH_OFFLINE,
};

static gboolean
image_sources_register (DfqRegistry *registry, GError **error)
{
    return dfq_registry_add_feature (registry, &real_class.parent, error)
           && dfq_registry_add_feature (registry, &real_stream_class.parent, error)
           && dfq_registry_add_feature (registry, &noise_class.parent, error)
           && dfq_registry_add_feature (registry, &image_set_class.parent, error);
}

DFQ_PLUGIN_DEFINE (image-sources, "Image sources without optimisation: real, noise, image-set (offline), real-stream (online)",
                   image_sources_register)
