/* Transforms: feature kind TRANSFORM. A transform wraps a layer of a model
 * without the model knowing: today the input of a conv, through the
 * DfqForward.conv_input hook that dfq_layer_conv / dfq_layer_conv_bn call
 * before every conv (swing convolution, plugins/transforms/swing-conv, pads and
 * crops there). Transforms come in lists (`transforms: [{use: swing-conv,
 * pad: 1}]` under a synthesizer); a DfqTransformChain applies a list in order
 * and is installed into a forward by dfq_transform_chain_install(). The
 * synthesizers that take a `transforms` list put their chain in their own copy
 * of the step context (DfqStepContext.transforms), so that only their teacher
 * forwards see it (dfq_step_teacher_forward); evaluation and the student never
 * do. */
#pragma once

#include <glib.h>
#include <dfq/dfq-macros.h>
#include <dfq/dfq-plugin.h>
#include <dfq/dfq-model.h>

G_BEGIN_DECLS

typedef struct _DfqTransform DfqTransform;
typedef struct _DfqTransformClass DfqTransformClass;

struct _DfqTransform {
    DfqFeature parent;
    /* The transform's own RNG stream, distinct for each position of a list:
     * set by dfq_transform_chain_init(). Draw with (fwd->seed, stream, an index
     * made of fwd->step), so that the same seed and step draw the same values. */
    guint64 stream;
    gpointer reserved[4];
};

struct _DfqTransformClass {
    DfqFeatureClass parent;
    /* Optional: whether the transform wraps conv @conv of stride @stride
     * (swing-conv: stride != 1). NULL: every conv. */
    gboolean (*applies) (DfqTransform *self, const char *conv, int stride);
    /* Required: the input to use for conv @conv (stride @stride) instead of
     * @x [N,C,H,W], built with ops in fwd->arena (so gradients flow back to
     * @x); the conv itself then runs unchanged on it, so the result must keep
     * @x's shape. May return @x. NULL with @error when the input cannot be
     * transformed (too small for the padding, ...). */
    DfqTensor *(*conv_input) (DfqTransform *self, DfqForward *fwd, const char *conv, int stride, DfqTensor *x,
                              GError **error);
    gpointer reserved[4];
};

#define DFQ_TRANSFORM_CLASS(t) ((const DfqTransformClass *) ((DfqFeature *) (t))->klass)

/* Applies one transform: @x itself when its applies() says no, else its
 * conv_input(). NULL with @error when that fails or returns a tensor of
 * another shape (DFQ_PLUGIN_ERROR_BAD_FEATURE). */
DFQ_API DfqTensor *dfq_transform_conv_input (DfqTransform *self, DfqForward *fwd, const char *conv, int stride,
                                             DfqTensor *x, GError **error);

/* Whether every item of @transforms (DfqFeature * of a FEATURE_LIST, nullable)
 * is a transform whose class has a conv_input and whose instance holds a
 * DfqTransform header; DFQ_PLUGIN_ERROR_BAD_FEATURE naming the item otherwise.
 * Synthesizers call it from their init(). */
DFQ_API gboolean dfq_transform_list_check (GPtrArray *transforms, GError **error);

/* A list of transforms applied in order to every conv input of a forward. */
typedef struct {
    GPtrArray *transforms; /* DfqTransform *, borrowed (a FEATURE_LIST param), nullable */
    GError *error;         /* the first failure of a transform since the last check, or NULL */
    gpointer reserved[2];
} DfqTransformChain;

/* Points @chain at @transforms (nullable: an empty chain) and gives each item
 * its stream (DFQ_TRANSFORM_STREAM_BASE + its position). */
#define DFQ_TRANSFORM_STREAM_BASE G_GUINT64_CONSTANT (0x7472616e73000000)
DFQ_API void dfq_transform_chain_init (DfqTransformChain *chain, GPtrArray *transforms);
/* Frees a recorded error; the chain stays usable. */
DFQ_API void dfq_transform_chain_clear (DfqTransformChain *chain);
/* Whether the chain has items. */
DFQ_API gboolean dfq_transform_chain_active (const DfqTransformChain *chain);
/* Sets fwd->conv_input / conv_input_data to the chain (replacing any hook
 * there; nothing when the chain is empty). Each conv input then goes through
 * every transform of the list in order. A transform that fails records its
 * error in the chain (the first one only) and the conv runs on its input
 * unchanged, since the hook has no error path: ask dfq_transform_chain_check()
 * after the forward. */
DFQ_API void dfq_transform_chain_install (DfqTransformChain *chain, DfqForward *fwd);
/* FALSE and the recorded error (moved to @error, prefixed with "transforms: ")
 * when a transform failed since the last check; TRUE otherwise. */
DFQ_API gboolean dfq_transform_chain_check (DfqTransformChain *chain, GError **error);

G_END_DECLS
