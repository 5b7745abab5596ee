/* Inside the genie-d plugin: the feature's struct, for the white-box tests of
 * tests/plugins/test-genie-d.c (initial latents and generator, the state after
 * a step). */
#pragma once

#include <dfq/dfq.h>

G_BEGIN_DECLS

#define GENIE_D_MAX_LOSSES 8

/* The generator's parameters, in forward order (state_dict names under
 * "generator."). Its BNs always normalise with batch statistics and their
 * running statistics are never read, so there are none; the last BN
 * (conv_layers.8) has no affine parameters. */
enum {
    GENIE_D_LIN_W, /* linear.weight [c1*h0*w0, latent] */
    GENIE_D_LIN_B,
    GENIE_D_BN0_W, /* conv_layers.0 (c1) */
    GENIE_D_BN0_B,
    GENIE_D_CONV1_W, /* conv_layers.2 c1 -> c2, 3x3 pad 1 */
    GENIE_D_CONV1_B,
    GENIE_D_BN1_W, /* conv_layers.3 (c2) */
    GENIE_D_BN1_B,
    GENIE_D_CONV2_W, /* conv_layers.6 c2 -> C, 3x3 pad 1 */
    GENIE_D_CONV2_B,
    GENIE_D_N_TENSORS
};

typedef struct _GenieD GenieD;

struct _GenieD {
    DfqSynthesizer parent;
    /* params */
    gint iters;
    gint latent;
    gint c1, c2;
    gdouble z_lr;
    gint patience;
    gdouble factor;
    gdouble min_lr;
    gdouble generator_lr;
    gdouble generator_gamma;
    gint generator_decay_every;
    GPtrArray *losses;
    GPtrArray *transforms; /* DfqTransform *, on the teacher's forwards (swing-conv), or NULL */
    /* state */
    DfqTransformChain chain;
    DfqArena *work; /* the batch being optimised: z, the generator (reset per batch) */
    DfqArena *step; /* one iteration's graph (reset per iteration) */
    /* the current batch (in @work): after genie_d_batch_init() the initial
     * values, after a step() the values after its last update */
    DfqTensor *z;
    DfqTensor *g[GENIE_D_N_TENSORS];
    gint channels, init_h, init_w;
    /* set by init(), for the tests (the plugin's symbols are hidden):
     * batch_init resets self->work and draws batch ctx->iter's latents and
     * fresh generator (pure functions of the run seed and the batch index;
     * step() starts with it); generate makes x = G(z) in @a (batch statistics
     * in every BN, as the official generator in train mode). */
    void (*batch_init) (GenieD *self, const DfqStepContext *ctx);
    DfqTensor *(*generate) (GenieD *self, DfqArena *a, DfqTensor *z);
};

G_END_DECLS
