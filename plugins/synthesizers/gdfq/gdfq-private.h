/* Inside the gdfq plugin: the GDFQ generator (METHODS.md 2.1) and its online
 * training step, shared by the plugin's three synthesizer features: `gdfq`
 * (GDFQ's losses), `adadfq` (AdaDFQ's losses, METHODS.md 4) and `bag` (the
 * generator's weights, optionally its activations, fake-quantized at the
 * student's bit-width, METHODS.md 5.2). gdfq.c holds the generator and the
 * gdfq/adadfq classes, bag.c the quantization of the generator and the bag
 * class. White-box tests (tests/plugins/test-bag.c) include this header to read
 * the resolved bits and the weights a forward used. */
#pragma once

#include <dfq/dfq.h>

G_BEGIN_DECLS

#define GDFQ_HIDDEN 128     /* channels after l1 and conv_blocks1 */
#define GDFQ_HIDDEN2 64     /* channels after conv_blocks2.0 */
/* The `transforms` row of every feature's param table. */
#define GDFQ_PARAM_TRANSFORMS                                                                                 \
    DFQ_PARAM_FEATURE_LIST (Gdfq, transforms,                                                                 \
                            "Transforms of the teacher's forwards in the generator step, in order (e.g. "    \
                            "[{use: swing-conv}])",                                                           \
                            DFQ_FEATURE_TRANSFORM, "[]", .flags = DFQ_PARAM_FLAG_OMIT_DEFAULT)
#define GDFQ_MAX_TENSORS 28 /* 15 parameters, 8 BN buffers, 2 activation ranges */

/* The GDFQ generator's Adam (trainer.py: lr_G 1e-3, betas (0.5, 0.999), no
 * weight decay) with the CIFAR multistep schedule ([100, 200, 300] x 0.1), the
 * default of every feature (AdaDFQ's is the same). */
#define GDFQ_OPTIMIZER_DEFAULT \
    "{use: adam, lr: 1e-3, betas: [0.5, 0.999], weight_decay: 0, schedule: multistep, milestones: [100, 200, 300], gamma: 0.1}"

/* The generator's quantizable layers, in forward order (bag): l1.0,
 * conv_blocks1.0, conv_blocks2.0, conv_blocks2.3. */
enum {
    GDFQ_LAYER_L1,
    GDFQ_LAYER_CONV1,
    GDFQ_LAYER_CONV2,
    GDFQ_LAYER_CONV3,
    GDFQ_N_LAYERS
};

/* Its activation sites (bag act_bits): after each LeakyReLU, named like the
 * PyTorch Sequential index of the LeakyReLU (conv_blocks1.2, conv_blocks2.2). */
enum {
    GDFQ_ACT_1,
    GDFQ_ACT_2,
    GDFQ_N_ACTS
};

typedef struct {
    DfqSynthesizer parent;
    /* params of every feature of the plugin */
    gint latent;
    GPtrArray *losses; /* DfqFeature * of kind LOSS, with weights */
    DfqOptimParams optimizer;
    gdouble bn_eps_inner;
    GPtrArray *transforms; /* DfqTransform *, on the teacher's forwards of the generator step, or NULL */
    /* params of bag only */
    gint bits;     /* generator weight bits; 0 = the student's */
    gint act_bits; /* generator activation bits; 0 = float, -1 = the student's */
    /* set by the feature's init */
    const char *method; /* feature name, for messages */
    gboolean quantize;  /* bag: resolve bits and quantize at prepare */
    DfqTransformChain chain; /* over @transforms, for the teacher's forward of each step */
    /* resolved by prepare(): 0 = full precision */
    gint w_bits_used;
    gint a_bits_used;
    /* built by prepare() */
    gboolean owns_arena;
    gint classes;
    gint channels;
    gint init_h, init_w;    /* image size / 4 */
    DfqTensor *emb;         /* label_emb.weight [classes, latent] */
    DfqTensor *l1_w, *l1_b; /* l1.0 [128*h*w, latent] */
    DfqTensor *bn0[4];      /* conv_blocks0.0: weight, bias, running_mean, running_var */
    DfqTensor *c1_w, *c1_b; /* conv_blocks1.0 128->128 */
    DfqTensor *bn1[4];      /* conv_blocks1.1, eps bn_eps_inner */
    DfqTensor *c2_w, *c2_b; /* conv_blocks2.0 128->64 */
    DfqTensor *bn2[4];      /* conv_blocks2.1, eps bn_eps_inner */
    DfqTensor *c3_w, *c3_b; /* conv_blocks2.3 64->C */
    DfqTensor *bn3[4];      /* conv_blocks2.5, affine=False: [2], [3] only */
    /* bag with act_bits: "generator.conv_blocks{1,2}.2.act_range" =
     * [min, max, number of updates], a plain EMA of the batch min/max */
    DfqTensor *act_range[GDFQ_N_ACTS];
    DfqTensor *tensors[GDFQ_MAX_TENSORS]; /* every parameter then every buffer, for get_state */
    guint n_tensors;
    DfqOptim *optim;
    DfqSchedule schedule;
    /* The weights the last forward used (fake-quantized under bag), in that
     * step's arena: valid until it is reset. For tests. */
    DfqTensor *used_weights[GDFQ_N_LAYERS];
    /* Student and quantizer parameters frozen during a generator step whose
     * losses run the student (reused, no allocation per step). */
    GPtrArray *frozen;
} Gdfq;

/* gdfq.c: the vfuncs every feature of the plugin shares. */
gboolean gdfq_init_common (Gdfq *self, GError **error);
void gdfq_finalize (DfqFeature *feature);
gboolean gdfq_prepare (DfqSynthesizer *synth, DfqStepContext *ctx, GError **error);
void gdfq_start_epoch (DfqSynthesizer *synth, DfqStepContext *ctx);
gboolean gdfq_step (DfqSynthesizer *synth, DfqStepContext *ctx, DfqSynthBatch *out, GError **error);
void gdfq_get_state (DfqSynthesizer *synth, GPtrArray *state);
gint64 gdfq_get_optim_step (DfqSynthesizer *synth);
void gdfq_set_optim_step (DfqSynthesizer *synth, gint64 step);
/* Adds a buffer (no gradient) "generator.<name>" to the state. */
DfqTensor *gdfq_add_buffer (Gdfq *self, const char *name, int n_dims, const gint64 *shape);

/* bag.c */
extern const DfqSynthesizerClass bag_class;
/* At prepare(): w_bits_used / a_bits_used from the params and the student's
 * quantizer, and the activation-range buffers. DFQ_PIPELINE_ERROR_BAD_VALUE
 * when bits follow a quantizer that does not report them. */
gboolean bag_prepare_quant (Gdfq *self, DfqStepContext *ctx, GError **error);
/* A Linear/Conv weight as the forward uses it (fake-quantized, STE). */
DfqTensor *bag_weight (Gdfq *self, DfqArena *arena, DfqTensor *w);
/* The activation at site @site as the forward uses it (range updated first). */
DfqTensor *bag_act (Gdfq *self, DfqArena *arena, guint site, DfqTensor *x);

G_END_DECLS
