/* Quantizers: feature kind QUANTIZER. A quantizer turns the student into a
 * fake-quantized network through the model's quantization sites: every
 * conv/linear weight (site = layer name) and every activation site (after each
 * ReLU/ReLU6, site = activation name). It keeps per-site state (activation
 * ranges, learnable scales or clip values) that checkpoints save. */
#pragma once

#include <glib.h>
#include <dfq/dfq-macros.h>
#include <dfq/dfq-plugin.h>
#include <dfq/dfq-model.h>

G_BEGIN_DECLS

typedef struct _DfqQuantizer DfqQuantizer;
typedef struct _DfqQuantizerClass DfqQuantizerClass;

/* DfqSiteKind (weight or activation site) is in dfq-model.h. */

struct _DfqQuantizer {
    DfqFeature parent;
    DfqArena *arena;     /* per-site state: created by the plugin's init(), freed by its finalize() */
    gboolean calibrating;/* activation ranges are being tracked (epochs < range_epochs) */
    gpointer reserved[4];
};

struct _DfqQuantizerClass {
    DfqFeatureClass parent;
    /* Called once per site, in forward order, before training (@index counts
     * sites of that kind; @is_first / @is_last mark the first and last weight
     * layers). Create the site's state in self->arena here. */
    gboolean (*add_site) (DfqQuantizer *self, DfqSiteKind kind, const char *site, const DfqTensor *example,
                          guint index, gboolean is_first, gboolean is_last, GError **error);
    DfqTensor *(*quantize_weight) (DfqQuantizer *self, DfqForward *fwd, const char *site, DfqTensor *w);
    DfqTensor *(*quantize_act) (DfqQuantizer *self, DfqForward *fwd, const char *site, DfqTensor *x);
    /* Learnable quantizer parameters (scales, clip values, soft bits) and their
     * weight decay, appended to @params (DfqTensor *). Optional. */
    void (*get_params) (DfqQuantizer *self, GPtrArray *params);
    /* Tensors that must be checkpointed (ranges, scales...), appended to @state
     * (DfqTensor *, each uniquely named). Optional. */
    void (*get_state) (DfqQuantizer *self, GPtrArray *state);
    /* The default bits of sites of @kind (before per-site overrides), or 0 when
     * the quantizer has no such notion. Optional (NULL: unknown). Used by
     * features that follow the student's bit-width (BAG's generator). Takes a
     * former reserved slot: the class layout is unchanged. */
    gint (*get_bits) (DfqQuantizer *self, DfqSiteKind kind);
    gpointer reserved[3];
};

#define DFQ_QUANTIZER_CLASS(q) ((const DfqQuantizerClass *) ((DfqFeature *) (q))->klass)

/**
 * dfq_quantizer_attach:
 * Discovers the student's sites with one forward on zeros (no range tracking),
 * calls add_site for each, in order. Errors: the quantizer's own.
 */
DFQ_API gboolean dfq_quantizer_attach (DfqQuantizer *self, DfqModel *student, GError **error);
/* Installs the quantizer's hooks into @fwd. */
DFQ_API void dfq_quantizer_hook (DfqQuantizer *self, DfqForward *fwd);
DFQ_API void dfq_quantizer_set_calibrating (DfqQuantizer *self, gboolean on);

G_END_DECLS
