/* Quantizers: feature kind QUANTIZER. A quantizer turns the student into a
 * fake-quantized network through the model's quantization sites: every
 * conv/linear weight (site = layer name) and every activation site (after each
 * ReLU/ReLU6, site = activation name). It keeps per-site state (activation
 * ranges, learnable scales or clip values) that checkpoints save.
 *
 * The run puts a quantizer in one mode at a time (DfqQuantMode): CALIBRATE
 * while ranges are measured (the calibrate phase, the first epochs of QAT),
 * LEARN while its parameters are optimised (QAT, block reconstruction), HARD
 * after learning (soft rounding replaced by hard rounding for good), EVAL
 * during evaluation. Learnable parameters come in optimiser groups
 * (get_param_groups) with their own learning rate and weight decay; a
 * regulariser (AdaRound's rounding term, ACD's clip decay) is added to the
 * loss of every learning step; each site knows the model block it belongs to
 * (dfq_quantizer_get_site_block), for block reconstruction.
 *
 * Block reconstruction optimises one block (unit) at a time: the reconstruct
 * phase sets an active block (dfq_quantizer_set_active_block). While one is
 * set, a quantizer with learnable parameters restricts get_param_groups, the
 * regulariser, its training-only behaviour (soft rounding, QDrop) and the
 * hardening on HARD to the sites of that block (dfq_quantizer_site_active);
 * the other sites behave as in EVAL. NULL (the default) means every site. */
#pragma once

#include <glib.h>
#include <dfq/dfq-macros.h>
#include <dfq/dfq-plugin.h>
#include <dfq/dfq-model.h>

G_BEGIN_DECLS

typedef struct _DfqQuantizer DfqQuantizer;
typedef struct _DfqQuantizerClass DfqQuantizerClass;

/* DfqSiteKind (weight or activation site) is in dfq-model.h. */

typedef enum {
    DFQ_QUANT_MODE_LEARN = 0,     /* ranges frozen, learnable parameters in use (the default) */
    DFQ_QUANT_MODE_CALIBRATE = 1, /* activation ranges are being measured */
    DFQ_QUANT_MODE_HARD = 2,      /* after learning: hard rounding, parameters frozen */
    DFQ_QUANT_MODE_EVAL = 3,      /* evaluation: nothing moves */
} DfqQuantMode;

/* A group of learnable quantizer parameters with its own optimiser settings. */
typedef struct {
    const char *name;       /* "scales", "soft_bits", "clips": for messages and metrics */
    GPtrArray *params;      /* DfqTensor * PARAM tensors (transfer: the group owns the array, not the tensors) */
    double lr;              /* <= 0: the phase optimiser's learning rate */
    double weight_decay;    /* < 0: the phase optimiser's weight decay */
} DfqQuantParamGroup;

struct _DfqQuantizer {
    DfqFeature parent;
    DfqArena *arena;     /* per-site state: created by the plugin's init(), freed by its finalize() */
    DfqQuantMode mode;   /* set through dfq_quantizer_set_mode() */
    gpointer site_blocks; /* core-private, in @arena: see dfq_quantizer_get_site_block() */
    /* The block being reconstructed (an interned string), or NULL: every site.
     * Set through dfq_quantizer_set_active_block(). Takes a former reserved
     * slot: the instance layout is unchanged. */
    const char *active_block;
    gpointer reserved[2];
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
    /* Called by dfq_quantizer_set_mode() after self->mode changed from @old
     * (AdaRound hardens its rounding on HARD). Optional. */
    void (*set_mode) (DfqQuantizer *self, DfqQuantMode old);
    /* Learnable parameters by group, appended to @groups (DfqQuantParamGroup,
     * each with a new params array). Optional: without it, get_params' tensors
     * form one group with the optimiser's settings. */
    void (*get_param_groups) (DfqQuantizer *self, GArray *groups);
    /* A scalar term added to the loss of each learning step (graph in @arena),
     * or NULL for none; @progress runs from 0 to 1 over the phase (annealing).
     * Optional. */
    DfqTensor *(*regularizer) (DfqQuantizer *self, DfqArena *arena, double progress);
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
/* Sets the mode (calls the class's set_mode when it changes). */
DFQ_API void dfq_quantizer_set_mode (DfqQuantizer *self, DfqQuantMode mode);
DFQ_API DfqQuantMode dfq_quantizer_get_mode (const DfqQuantizer *self);
/* "calibrate", "learn"...  */
DFQ_API const char *dfq_quant_mode_name (DfqQuantMode mode);
/* Shorthand: CALIBRATE when @on, else LEARN. */
DFQ_API void dfq_quantizer_set_calibrating (DfqQuantizer *self, gboolean on);
/* The block (an entry of the model's blocks) @site runs in, or NULL when the
 * model declares no blocks. Known after dfq_quantizer_attach(). */
DFQ_API const char *dfq_quantizer_get_site_block (const DfqQuantizer *self, const char *site);
/* Restricts learning to the sites of @block (a name of the model's blocks),
 * or lifts the restriction (NULL). See the top of this file. */
DFQ_API void dfq_quantizer_set_active_block (DfqQuantizer *self, const char *block);
DFQ_API const char *dfq_quantizer_get_active_block (const DfqQuantizer *self);
/* Whether @site takes part in learning now: TRUE without an active block,
 * else whether @site runs in the active block. */
DFQ_API gboolean dfq_quantizer_site_active (const DfqQuantizer *self, const char *site);
/**
 * dfq_qdrop_mix:
 * QDrop (Wei et al., ICLR 2022): element i of the result is @x's with
 * probability @p (a uniform draw u_i of (@seed, @stream, i) below @p), else
 * @x_q's. p = 0 gives @x_q and p = 1 gives @x, bit for bit. The gradient of
 * each element goes to the source it came from. @x_q and @x: F32, contiguous,
 * the same shape. Block reconstruction mixes the quantized model's block input
 * with the full-precision one; GENIE's activation quantizer mixes its output
 * with its input.
 */
DFQ_API DfqTensor *dfq_qdrop_mix (DfqArena *arena, DfqTensor *x_q, DfqTensor *x, double p, guint64 seed,
                                  guint64 stream);
/* The learnable parameters by group (get_param_groups, else one group of
 * get_params' tensors named "params"); clear with dfq_quant_param_groups_free. */
DFQ_API GArray *dfq_quantizer_get_param_groups (DfqQuantizer *self);
DFQ_API void dfq_quant_param_groups_free (GArray *groups);
/* The regulariser term, or NULL (none, or the class has no regulariser). */
DFQ_API DfqTensor *dfq_quantizer_regularizer (DfqQuantizer *self, DfqArena *arena, double progress);

G_END_DECLS
