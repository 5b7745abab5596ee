/* End-to-end engine test: a small CNN built directly from ops learns a synthetic
 * task (which quadrant of an 8x8 image holds a bright 3x3 blob, under noise), with
 * SGD and with Adam; training twice with the same seed gives bit-identical
 * parameters; and a steady-state training step allocates nothing. */
#include <string.h>

#include "dfq-test-util.h"

#define IMG 8
#define CLASSES 4
#define BATCH 32

typedef struct {
    DfqArena *params;
    DfqTensor *w1, *g1, *b1, *rm1, *rv1, *w2, *fc_w, *fc_b;
    DfqTensor *all[8];
    guint n_all;
} Net;

static void
net_init (Net *net, guint64 seed)
{
    memset (net, 0, sizeof *net);
    net->params = dfq_arena_new (0);
    net->w1 = dfq_tensor_new_4d (net->params, DFQ_DTYPE_F32, 8, 1, 3, 3);
    dfq_rand_uniform_fill (net->w1, seed, 1, -0.33f, 0.33f);
    net->g1 = dfq_tensor_new_1d (net->params, DFQ_DTYPE_F32, 8);
    dfq_tensor_fill (net->g1, 1.0f);
    net->b1 = dfq_tensor_new_1d (net->params, DFQ_DTYPE_F32, 8);
    net->rm1 = dfq_tensor_new_1d (net->params, DFQ_DTYPE_F32, 8);
    net->rv1 = dfq_tensor_new_1d (net->params, DFQ_DTYPE_F32, 8);
    dfq_tensor_fill (net->rv1, 1.0f);
    net->w2 = dfq_tensor_new_4d (net->params, DFQ_DTYPE_F32, 16, 8, 3, 3);
    dfq_rand_uniform_fill (net->w2, seed, 2, -0.12f, 0.12f);
    net->fc_w = dfq_tensor_new_2d (net->params, DFQ_DTYPE_F32, CLASSES, 16);
    dfq_rand_uniform_fill (net->fc_w, seed, 3, -0.25f, 0.25f);
    net->fc_b = dfq_tensor_new_1d (net->params, DFQ_DTYPE_F32, CLASSES);
    DfqTensor *trainable[] = { net->w1, net->g1, net->b1, net->w2, net->fc_w, net->fc_b };
    for (guint i = 0; i < G_N_ELEMENTS (trainable); i++) {
        dfq_tensor_set_name (trainable[i], "p%u", i);
        dfq_tensor_set_param (trainable[i]);
        net->all[net->n_all++] = trainable[i];
    }
}

static void
net_clear (Net *net)
{
    dfq_arena_free (net->params);
}

static DfqTensor *
net_forward (Net *net, DfqArena *a, DfqTensor *x, gboolean training)
{
    DfqTensor *h = dfq_conv2d (a, x, net->w1, NULL, 1, 1, 1);
    h = dfq_batchnorm (a, h, net->g1, net->b1, net->rm1, net->rv1, training, 0.1f, 1e-5f);
    h = dfq_relu (a, h);
    h = dfq_conv2d (a, h, net->w2, NULL, 2, 1, 1);
    h = dfq_relu (a, h);
    h = dfq_global_avg_pool (a, h);
    return dfq_linear (a, h, net->fc_w, net->fc_b);
}

/* Batch @index of the synthetic task; deterministic in (seed, index). */
static void
make_batch (DfqTensor *x, DfqTensor *y, guint64 seed, guint64 index)
{
    float *px = dfq_tensor_f32 (x);
    gint32 *py = dfq_tensor_i32 (y);
    for (int b = 0; b < BATCH; b++) {
        guint64 sample = index * BATCH + (guint64) b;
        guint32 r[4];
        dfq_rand_philox (seed, 77, sample, r);
        int cls = (int) (r[0] % CLASSES);
        int oy = (cls / 2) * 4 + (int) (r[1] % 2), ox = (cls % 2) * 4 + (int) (r[2] % 2);
        for (int i = 0; i < IMG * IMG; i++)
            px[b * IMG * IMG + i] = 0.5f * dfq_rand_normal_at (seed, 78 + sample, (guint64) i);
        for (int dy = 0; dy < 3; dy++)
            for (int dx = 0; dx < 3; dx++)
                px[b * IMG * IMG + (oy + dy) * IMG + ox + dx] += 1.5f;
        py[b] = cls;
    }
}

static double
train (Net *net, DfqOptimKind kind, double lr, int steps, guint64 seed)
{
    g_autoptr (DfqArena) scratch = dfq_arena_new (0);
    g_autoptr (DfqArena) data = dfq_arena_new (0);
    DfqTensor *x = dfq_tensor_new_4d (data, DFQ_DTYPE_F32, BATCH, 1, IMG, IMG);
    DfqTensor *y = dfq_tensor_new_1d (data, DFQ_DTYPE_I32, BATCH);
    DfqOptimConfig cfg;
    dfq_optim_config_init (&cfg, kind);
    cfg.lr = lr;
    if (kind == DFQ_OPTIM_SGD) {
        cfg.momentum = 0.9;
        cfg.nesterov = TRUE;
    }
    g_autoptr (DfqOptim) opt = dfq_optim_new (&cfg);
    for (guint i = 0; i < net->n_all; i++)
        dfq_optim_add_param (opt, net->all[i]);
    guint allocs_after_warmup = 0;
    for (int s = 0; s < steps; s++) {
        dfq_arena_reset (scratch);
        make_batch (x, y, seed, (guint64) s);
        dfq_optim_zero_grad (opt);
        DfqTensor *loss = dfq_cross_entropy (scratch, net_forward (net, scratch, x, TRUE), y);
        dfq_backward (loss, scratch);
        dfq_optim_step (opt);
        if (s == 2)
            allocs_after_warmup = dfq_arena_n_system_allocs (scratch);
    }
    /* steady state: the scratch arena stopped asking the system for memory */
    g_assert_cmpuint (dfq_arena_n_system_allocs (scratch), ==, allocs_after_warmup);

    /* accuracy on 8 held-out batches, eval-mode BN */
    int correct = 0, total = 0;
    gboolean prev = dfq_set_grad_enabled (FALSE);
    for (int s = 0; s < 8; s++) {
        dfq_arena_reset (scratch);
        make_batch (x, y, seed + 1000, (guint64) s);
        DfqTensor *logits = net_forward (net, scratch, x, FALSE);
        const float *l = dfq_tensor_f32 (logits);
        for (int b = 0; b < BATCH; b++) {
            int best = 0;
            for (int k = 1; k < CLASSES; k++)
                if (l[b * CLASSES + k] > l[b * CLASSES + best])
                    best = k;
            correct += best == dfq_tensor_i32 (y)[b];
            total++;
        }
    }
    dfq_set_grad_enabled (prev);
    return (double) correct / total;
}

static void
test_train_sgd (void)
{
    g_test_summary ("SGD (momentum 0.9, nesterov) trains a small CNN to >= 95% on the synthetic task");
    Net net;
    net_init (&net, 1);
    double acc = train (&net, DFQ_OPTIM_SGD, 0.05, 150, 1);
    g_test_message ("SGD accuracy %.4f", acc);
    g_assert_cmpfloat (acc, >=, 0.95);
    net_clear (&net);
}

static void
test_train_adam (void)
{
    g_test_summary ("Adam (lr 1e-2) trains the same CNN to >= 95%");
    Net net;
    net_init (&net, 2);
    double acc = train (&net, DFQ_OPTIM_ADAM, 1e-2, 150, 2);
    g_test_message ("Adam accuracy %.4f", acc);
    g_assert_cmpfloat (acc, >=, 0.95);
    net_clear (&net);
}

static void
test_train_deterministic (void)
{
    g_test_summary ("Same seed and thread count twice: bit-identical parameters and running stats");
    Net a, b;
    net_init (&a, 3);
    net_init (&b, 3);
    train (&a, DFQ_OPTIM_SGD, 0.05, 30, 3);
    train (&b, DFQ_OPTIM_SGD, 0.05, 30, 3);
    for (guint i = 0; i < a.n_all; i++)
        g_assert_cmpmem (a.all[i]->data, dfq_tensor_numel (a.all[i]) * 4, b.all[i]->data, dfq_tensor_numel (b.all[i]) * 4);
    g_assert_cmpmem (a.rv1->data, 8 * 4, b.rv1->data, 8 * 4);
    net_clear (&a);
    net_clear (&b);
}

int
main (int argc, char **argv)
{
    g_test_init (&argc, &argv, NULL);
    dfq_set_num_threads (2);
    g_test_add_func ("/train/small-cnn/sgd", test_train_sgd);
    g_test_add_func ("/train/small-cnn/adam", test_train_adam);
    g_test_add_func ("/train/small-cnn/deterministic", test_train_deterministic);
    return g_test_run ();
}
