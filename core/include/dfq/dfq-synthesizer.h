/* Synthesizers: feature kind SYNTHESIZER. They make the images the student is
 * trained or calibrated on, from the teacher alone. Online synthesizers (gdfq,
 * bag, adadfq, qimera) train a generator alongside the student: each step
 * updates the generator and hands back a batch (the train phase). Offline ones
 * (zeroq, genie-d, dsg, and the real / noise bounds) have mode
 * DFQ_SYNTH_OFFLINE: the synthesize phase calls step() once per batch of the
 * image set (ctx->iter = batch index, ctx->step = index of its first image in
 * the set, ctx->batch = its size; prepare() before the first), each call
 * optimising that batch from scratch against the frozen teacher and returning
 * the finished images; the runner keeps them as the run's image set
 * (images.safetensors, reused by runs with the same synthesizer config). */
#pragma once

#include <glib.h>
#include <dfq/dfq-macros.h>
#include <dfq/dfq-plugin.h>
#include <dfq/dfq-step.h>

G_BEGIN_DECLS

typedef struct _DfqSynthesizer DfqSynthesizer;
typedef struct _DfqSynthesizerClass DfqSynthesizerClass;

/* Offline synthesizers: progress inside one step() (iteration @iter of @iters,
 * current loss), shown by the run's progress display. */
typedef void (*DfqSynthProgressFn) (gpointer data, gint iter, gint iters, double loss);

struct _DfqSynthesizer {
    DfqFeature parent;
    DfqArena *arena; /* generator parameters and optimizer state: created by the plugin's init(), freed by its finalize() */
    DfqSynthProgressFn progress; /* set through dfq_synthesizer_set_progress() */
    gpointer progress_data;
    gpointer reserved[2];
};

typedef struct {
    DfqTensor *images;      /* [B,C,H,W], detached (no gradient) */
    DfqTensor *labels;      /* I32 [B] or NULL */
    DfqTensor *soft_labels; /* F32 [B,K] or NULL */
    double loss;            /* the generator's weighted loss this step (for metrics) */
    double loss_terms[8];   /* unweighted values of its loss list, in order */
    guint n_loss_terms;
    const char *loss_names[8]; /* names of those terms for metrics.jsonl ("generator.<name>"), or NULL */
} DfqSynthBatch;

typedef enum {
    DFQ_SYNTH_ONLINE = 0,  /* a batch per training step, generator trained alongside */
    DFQ_SYNTH_OFFLINE = 1, /* a finished image set before calibration */
} DfqSynthMode;

struct _DfqSynthesizerClass {
    DfqFeatureClass parent;
    /* Builds the generator for ctx->classes and ctx->image_shape. */
    gboolean (*prepare) (DfqSynthesizer *self, DfqStepContext *ctx, GError **error);
    /* Called at the start of each epoch (learning-rate schedules). */
    void (*start_epoch) (DfqSynthesizer *self, DfqStepContext *ctx);
    /* One generator update (online) and a batch for the student step. */
    gboolean (*step) (DfqSynthesizer *self, DfqStepContext *ctx, DfqSynthBatch *out, GError **error);
    /* Tensors to checkpoint (generator weights and buffers, optimizer state),
     * each uniquely named, appended to @state. */
    void (*get_state) (DfqSynthesizer *self, GPtrArray *state);
    /* After a restore of get_state()'s tensors: the optimizer step count. */
    gint64 (*get_optim_step) (DfqSynthesizer *self);
    void (*set_optim_step) (DfqSynthesizer *self, gint64 step);
    DfqSynthMode mode; /* takes a former reserved slot: offsets unchanged */
    gpointer reserved[3];
};

#define DFQ_SYNTHESIZER_CLASS(s) ((const DfqSynthesizerClass *) ((DfqFeature *) (s))->klass)

DFQ_API void dfq_synthesizer_set_progress (DfqSynthesizer *self, DfqSynthProgressFn fn, gpointer data);
DFQ_API void dfq_synthesizer_report (DfqSynthesizer *self, gint iter, gint iters, double loss);

G_END_DECLS
