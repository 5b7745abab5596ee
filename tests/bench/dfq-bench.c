/* dfq-bench (tests/bench): the engine benchmark of DESIGN.md section 5 and
 * issue 8. It times the workloads of shared/reference/torch_resnet20_bench.py
 * with the same shapes:
 *
 *   resnet20-train  ResNet-20 (resnet-cifar plugin) train step at batch 128:
 *                   forward (train-mode BN), cross-entropy, backward, SGD
 *                   (lr 0.1, momentum 0.9) step
 *   resnet20-infer  the same network in eval mode, no graph, batch 128
 *   gdfq-gen        one GDFQ generator step at batch 32: the generator of the
 *                   reference script built inline from ops, the teacher forward
 *                   in train mode, cross-entropy, backward through the teacher
 *                   to the image and through the generator, Adam (lr 1e-3);
 *                   as in the reference the teacher's parameters also get
 *                   gradients
 *
 * on 1x28x28 and 3x32x32 inputs, and (issue 15) on 1x28x28 only:
 *
 *   mobilenetv2-train  MobileNetV2 (mobilenetv2-cifar plugin, the layout of the
 *                      shared fixture: stem stride 1, ReLU6, no dropout) train
 *                      step at batch 64, SGD as above
 *   mobilenetv2-infer  the same network in eval mode, no graph, batch 128
 *
 * and (issue 15's PTQ workloads) on both shapes:
 *
 *   zeroq-step      one ZeroQ image-optimisation step at batch 64 through the
 *                   zeroq synthesizer plugin (default losses: per-sample BN
 *                   statistics of every BN input + image prior), the
 *                   ResNet-20 after its training steps as the frozen teacher:
 *                   fresh images, forward, loss, backward to the images,
 *                   Adam (lr 0.5)
 *   recon-step      one block-reconstruction step at batch 32: the first
 *                   basic block of a fresh ResNet-20 under the adaround
 *                   quantizer (W4A4, calibrated on the 128 images), forward
 *                   through the quantizer, squared error to the full-precision
 *                   block's output + the rounding regulariser, backward into
 *                   the soft bits and activation steps, Adam per group
 *
 * Each figure is the median over --reps timed
 * steps after --warmup untimed training steps (the reference's PyTorch speed
 * depends on the state of the network, so both sides warm up the same way).
 *
 * Inputs: by default real Fashion-MNIST training images (normalised; for
 * 3x32x32 zero-padded by 2 pixels and repeated over 3 channels), or N(0,1)
 * noise with --data noise. Weights: the model plugin's initialisation
 * (PyTorch's default rule) with init_seed 0, and the same rule for the
 * generator. --dump DIR writes all of it (inputs, labels, latents, weights) to
 * DIR/bench-CxHxW.safetensors so that tools/bench_torch.py feeds PyTorch the
 * very same bits.
 *
 * Every workload prints one "RESULT key=value ..." line: images/s, ms per
 * step, the conv/linear FLOPs of one step (counted on the recorded graph:
 * forward 2*MACs, plus as much again for each weight gradient and each input
 * gradient actually computed), achieved GFLOP/s, the fraction of the OpenBLAS
 * sgemm peak measured in the same process on the same threads (--sgemm N, an
 * N^3 sgemm), the scratch arena of one step and the process's peak RSS so far
 * (run one workload per process, --only, for a per-workload peak).
 *
 * Not a test: it is not registered with test(). tools/bench-vs-torch.sh runs
 * it next to PyTorch and prints the ratios; docs/performance.md has results. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <cblas.h>

#include <dfq/dfq.h>
#include <dfq/dfq-quantizer.h>

#define BENCH_CLASSES 10
#define BENCH_LATENT 100
#define BENCH_TRAIN_BATCH 128
#define BENCH_GEN_BATCH 32
#define BENCH_MV2_TRAIN_BATCH 64
#define BENCH_ZEROQ_BATCH 64
#define BENCH_RECON_BATCH 32
#define BENCH_RECON_UNIT 1 /* layers.0: the first basic block, 16 channels at full resolution */
#define BENCH_RECON_PROGRESS 0.5 /* the regulariser's annealing half-way */
#define BENCH_FMNIST_MEAN 0.2860f
#define BENCH_FMNIST_STD 0.3530f

typedef struct {
    int threads;
    int reps;
    int warmup;
    int sgemm_n;
    const char *only;
    const char *data;
    const char *dump_dir;
    const char *plugin_path;
} BenchOptions;

static BenchOptions opts = {
    .threads = 2,
    .reps = 7,
    .warmup = 5,
    .sgemm_n = 2048,
    .only = NULL,
    .data = "fmnist",
    .dump_dir = NULL,
    .plugin_path = NULL,
};

static double sgemm_peak_gflops = 0.0;

/* ------------------------------------------------------------------ helpers */

static double
bench_now (void)
{
    return (double) g_get_monotonic_time () * 1e-6;
}

/* CPU time of the whole process (all threads): with 1 thread, or a passive
 * OpenMP wait policy, a measure of the work done that other processes on a
 * loaded machine disturb far less than the wall clock. */
static double
bench_cpu_now (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double) ts.tv_sec + 1e-9 * (double) ts.tv_nsec;
}

static int
bench_cmp_double (const void *a, const void *b)
{
    double x = *(const double *) a, y = *(const double *) b;
    return (x > y) - (x < y);
}

static double
bench_median (double *v, int n)
{
    qsort (v, (gsize) n, sizeof (double), bench_cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static double
bench_maxrss_mib (void)
{
    struct rusage ru;
    getrusage (RUSAGE_SELF, &ru);
    return (double) ru.ru_maxrss / 1024.0; /* KiB on Linux */
}

static gboolean
bench_selected (const char *id)
{
    return opts.only == NULL || strstr (id, opts.only) != NULL || g_pattern_match_simple (opts.only, id);
}

/* The best of a few N^3 sgemms on the current threads: the physical limit the
 * engine's GFLOP/s are compared with. */
static double
bench_sgemm_peak (int n)
{
    gsize numel = (gsize) n * (gsize) n;
    float *a = g_aligned_alloc (numel, sizeof (float), 64);
    float *b = g_aligned_alloc (numel, sizeof (float), 64);
    float *c = g_aligned_alloc (numel, sizeof (float), 64);
    for (gsize i = 0; i < numel; i++) {
        a[i] = dfq_rand_uniform_at (1, 1, i) - 0.5f;
        b[i] = dfq_rand_uniform_at (1, 2, i) - 0.5f;
    }
    double best = G_MAXDOUBLE;
    for (int r = 0; r < 4; r++) {
        double t0 = bench_now ();
        cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        double t = bench_now () - t0;
        if (r > 0)
            best = MIN (best, t);
    }
    g_aligned_free (a);
    g_aligned_free (b);
    g_aligned_free (c);
    return 2.0 * (double) n * n * n / best * 1e-9;
}

/* Conv and linear FLOPs of the graph that ends in @root: forward 2*MACs for
 * every node, and the same again for each gradient the backward computes (the
 * weight gradient when the weight requires one, the input gradient when the
 * input does). Inference figures use @fwd_only. */
static void
bench_count_flops (DfqTensor *root, double *fwd_flops, double *train_flops)
{
    g_autoptr (GPtrArray) stack = g_ptr_array_new ();
    g_autoptr (GHashTable) seen = g_hash_table_new (NULL, NULL);
    *fwd_flops = *train_flops = 0.0;
    g_ptr_array_add (stack, root);
    while (stack->len > 0) {
        DfqTensor *t = g_ptr_array_steal_index_fast (stack, stack->len - 1);
        if (t == NULL || g_hash_table_contains (seen, t))
            continue;
        g_hash_table_add (seen, t);
        double macs = 0.0;
        if (t->op == DFQ_OP_CONV2D) {
            const DfqTensor *w = t->src[1];
            macs = (double) t->shape[0] * t->shape[1] * t->shape[2] * t->shape[3] * w->shape[1] * w->shape[2] *
                   w->shape[3];
        } else if (t->op == DFQ_OP_LINEAR) {
            macs = (double) t->shape[0] * t->shape[1] * t->src[1]->shape[1];
        }
        if (macs > 0.0) {
            double f = 2.0 * macs;
            *fwd_flops += f;
            *train_flops += f;
            if (dfq_tensor_requires_grad (t->src[0]))
                *train_flops += f;
            if (dfq_tensor_requires_grad (t->src[1]))
                *train_flops += f;
        }
        for (int i = 0; i < DFQ_MAX_SRC; i++)
            if (t->src[i] != NULL)
                g_ptr_array_add (stack, t->src[i]);
    }
}

/* The last loss as bits: two runs with the same thread count must print the
 * same (determinism). */
static guint32 bench_last_loss_bits = 0;

static void
bench_note_value (float v)
{
    memcpy (&bench_last_loss_bits, &v, sizeof v);
}

static void
bench_note_loss (const DfqTensor *loss)
{
    bench_note_value (dfq_tensor_f32 (loss)[0]);
}

static void
bench_report (const char *workload, int cin, int hw, int batch, double *times, double *cpu, int n,
              double flops, gsize arena_bytes)
{
    double med = bench_median (times, n);
    double cpu_med = bench_median (cpu, n);
    double gflops = flops / med * 1e-9;
    double frac = sgemm_peak_gflops > 0.0 ? gflops / sgemm_peak_gflops : 0.0;
    printf ("RESULT side=dfqlab workload=%s in=%dx%dx%d batch=%d img_s=%.1f ms=%.2f min_ms=%.2f max_ms=%.2f "
            "cpu_ms=%.2f gflop=%.3f gflops=%.1f sgemm_gflops=%.1f frac_peak=%.3f arena_mib=%.1f maxrss_mib=%.1f "
            "loss_bits=%08x\n",
            workload, cin, hw, hw, batch, batch / med, med * 1e3, times[0] * 1e3, times[n - 1] * 1e3, cpu_med * 1e3,
            flops * 1e-9, gflops, sgemm_peak_gflops, frac, (double) arena_bytes / (1024.0 * 1024.0),
            bench_maxrss_mib (), (unsigned) bench_last_loss_bits);
    fflush (stdout);
}

/* ------------------------------------------------------------------ inputs */

static DfqFeature *
bench_make_feature (DfqRegistry *registry, DfqFeatureKind kind, const char *use, const char *yaml, const char *name)
{
    g_autoptr (GError) error = NULL;
    DfqConfigNode *node = dfq_config_parse (yaml, -1, "dfq-bench", &error);
    if (node == NULL)
        g_error ("%s", error->message);
    const DfqFeatureClass *klass = dfq_registry_find (registry, kind, use);
    if (klass == NULL)
        g_error ("the %s plugin was not found (--plugin-path, DFQ_PLUGIN_PATH)", use);
    DfqFeature *f = dfq_feature_new_from_config (registry, klass, node, FALSE, name, &error);
    dfq_config_node_free (node);
    if (f == NULL)
        g_error ("%s", error->message);
    return f;
}

static DfqModel *
bench_make_model_yaml (DfqRegistry *registry, const char *use, const char *yaml)
{
    return (DfqModel *) bench_make_feature (registry, DFQ_FEATURE_MODEL, use, yaml, "model");
}

static DfqModel *
bench_make_model (DfqRegistry *registry, int cin, int hw)
{
    g_autofree char *yaml = g_strdup_printf ("use: resnet-cifar\ndepth: 20\nin_channels: %d\nimage_size: %d\n"
                                             "classes: %d\ninit_seed: 0\n",
                                             cin, hw, BENCH_CLASSES);
    return bench_make_model_yaml (registry, "resnet-cifar", yaml);
}

/* The MobileNetV2 of the shared fixture (no dropout, so that both sides run
 * the same network). */
static DfqModel *
bench_make_mv2 (DfqRegistry *registry, int cin, int hw)
{
    g_autofree char *yaml = g_strdup_printf ("use: mobilenetv2-cifar\nin_channels: %d\nimage_size: %d\n"
                                             "classes: %d\ndropout: 0\ninit_seed: 0\n",
                                             cin, hw, BENCH_CLASSES);
    return bench_make_model_yaml (registry, "mobilenetv2-cifar", yaml);
}

/* Fashion-MNIST training images 0..n-1, normalised; a 32x32 size pads by 2 with
 * the normalised background, extra channels repeat the first. */
static gboolean
bench_fill_fmnist (DfqTensor *x, DfqTensor *y, GError **error)
{
    DfqDataset *ds = dfq_dataset_open ("fashion-mnist", DFQ_DATASET_SPLIT_TRAIN, NULL, error);
    if (ds == NULL)
        return FALSE;
    const gint64 n = x->shape[0], c = x->shape[1], h = x->shape[2], w = x->shape[3];
    const gint64 off = (h - 28) / 2;
    float *px = dfq_tensor_f32 (x);
    for (gint64 i = 0; i < n; i++) {
        const guint8 *pix = dfq_dataset_get_pixels (ds, (guint) i);
        for (gint64 ch = 0; ch < c; ch++)
            for (gint64 r = 0; r < h; r++)
                for (gint64 k = 0; k < w; k++) {
                    gint64 rr = r - off, kk = k - off;
                    float v = (rr >= 0 && rr < 28 && kk >= 0 && kk < 28) ? pix[rr * 28 + kk] / 255.0f : 0.0f;
                    px[((i * c + ch) * h + r) * w + k] = (v - BENCH_FMNIST_MEAN) / BENCH_FMNIST_STD;
                }
        dfq_tensor_i32 (y)[i] = (gint32) dfq_dataset_get_label (ds, (guint) i);
    }
    dfq_dataset_free (ds);
    return TRUE;
}

/* The generator of the reference script (GDFQ-style, conditional), from ops. */
typedef struct {
    DfqArena *arena;
    int ch, init;
    DfqTensor *emb, *l1_w, *l1_b;
    DfqTensor *b0[4], *c1_w, *c1_b, *b1[4], *c2_w, *c2_b, *b2[4], *c3_w, *c3_b, *b3[4];
    GPtrArray *params;  /* trainable */
    GPtrArray *named;   /* every tensor, for --dump */
} BenchGen;

static DfqTensor *
bench_gen_tensor (BenchGen *g, const char *name, int n_dims, const gint64 *shape, gboolean param)
{
    DfqTensor *t = dfq_tensor_new (g->arena, DFQ_DTYPE_F32, n_dims, shape);
    dfq_tensor_set_name (t, "gen.%s", name);
    if (param) {
        dfq_tensor_set_param (t);
        g_ptr_array_add (g->params, t);
    }
    g_ptr_array_add (g->named, t);
    return t;
}

/* PyTorch's default init of Linear/Conv2d: U(-1/sqrt(fan_in), 1/sqrt(fan_in)). */
static void
bench_gen_uniform (DfqTensor *t, guint64 stream, double fan_in)
{
    float bound = (float) (1.0 / sqrt (fan_in));
    dfq_rand_uniform_fill (t, 7, stream, -bound, bound);
}

static void
bench_gen_bn (BenchGen *g, DfqTensor *bn[4], const char *name, gint64 c, gboolean affine)
{
    gint64 shape[1] = { c };
    char buf[64];
    bn[0] = bn[1] = NULL;
    if (affine) {
        g_snprintf (buf, sizeof buf, "%s.weight", name);
        bn[0] = bench_gen_tensor (g, buf, 1, shape, TRUE);
        dfq_tensor_fill (bn[0], 1.0f);
        g_snprintf (buf, sizeof buf, "%s.bias", name);
        bn[1] = bench_gen_tensor (g, buf, 1, shape, TRUE);
    }
    g_snprintf (buf, sizeof buf, "%s.running_mean", name);
    bn[2] = bench_gen_tensor (g, buf, 1, shape, FALSE);
    g_snprintf (buf, sizeof buf, "%s.running_var", name);
    bn[3] = bench_gen_tensor (g, buf, 1, shape, FALSE);
    dfq_tensor_fill (bn[3], 1.0f);
}

static void
bench_gen_init (BenchGen *g, int ch, int size)
{
    memset (g, 0, sizeof *g);
    g->arena = dfq_arena_new (0);
    g->params = g_ptr_array_new ();
    g->named = g_ptr_array_new ();
    g->ch = ch;
    g->init = size / 4;
    const gint64 s2 = (gint64) g->init * g->init;
    g->emb = bench_gen_tensor (g, "emb.weight", 2, (gint64[]) { BENCH_CLASSES, BENCH_LATENT }, TRUE);
    dfq_rand_normal_fill (g->emb, 7, 1, 0.0f, 1.0f);
    g->l1_w = bench_gen_tensor (g, "l1.weight", 2, (gint64[]) { 128 * s2, BENCH_LATENT }, TRUE);
    g->l1_b = bench_gen_tensor (g, "l1.bias", 1, (gint64[]) { 128 * s2 }, TRUE);
    bench_gen_uniform (g->l1_w, 2, BENCH_LATENT);
    bench_gen_uniform (g->l1_b, 3, BENCH_LATENT);
    bench_gen_bn (g, g->b0, "b0", 128, TRUE);
    g->c1_w = bench_gen_tensor (g, "c1.weight", 4, (gint64[]) { 128, 128, 3, 3 }, TRUE);
    g->c1_b = bench_gen_tensor (g, "c1.bias", 1, (gint64[]) { 128 }, TRUE);
    bench_gen_uniform (g->c1_w, 4, 128 * 9);
    bench_gen_uniform (g->c1_b, 5, 128 * 9);
    bench_gen_bn (g, g->b1, "b1", 128, TRUE);
    g->c2_w = bench_gen_tensor (g, "c2.weight", 4, (gint64[]) { 64, 128, 3, 3 }, TRUE);
    g->c2_b = bench_gen_tensor (g, "c2.bias", 1, (gint64[]) { 64 }, TRUE);
    bench_gen_uniform (g->c2_w, 6, 128 * 9);
    bench_gen_uniform (g->c2_b, 7, 128 * 9);
    bench_gen_bn (g, g->b2, "b2", 64, TRUE);
    g->c3_w = bench_gen_tensor (g, "c3.weight", 4, (gint64[]) { ch, 64, 3, 3 }, TRUE);
    g->c3_b = bench_gen_tensor (g, "c3.bias", 1, (gint64[]) { ch }, TRUE);
    bench_gen_uniform (g->c3_w, 8, 64 * 9);
    bench_gen_uniform (g->c3_b, 9, 64 * 9);
    bench_gen_bn (g, g->b3, "b3", ch, FALSE);
}

static void
bench_gen_clear (BenchGen *g)
{
    g_ptr_array_unref (g->params);
    g_ptr_array_unref (g->named);
    dfq_arena_free (g->arena);
}

static DfqTensor *
bench_gen_forward (BenchGen *g, DfqArena *a, DfqTensor *z, DfqTensor *y)
{
    DfqTensor *h = dfq_mul (a, z, dfq_embedding (a, g->emb, y));
    h = dfq_linear (a, h, g->l1_w, g->l1_b);
    h = dfq_reshape (a, h, 4, (gint64[]) { z->shape[0], 128, g->init, g->init });
    h = dfq_batchnorm (a, h, g->b0[0], g->b0[1], g->b0[2], g->b0[3], TRUE, 0.1f, 1e-5f);
    h = dfq_upsample_nearest (a, h, 2);
    h = dfq_conv2d (a, h, g->c1_w, g->c1_b, 1, 1, 1);
    h = dfq_batchnorm (a, h, g->b1[0], g->b1[1], g->b1[2], g->b1[3], TRUE, 0.1f, 0.8f);
    h = dfq_leaky_relu (a, h, 0.2f);
    h = dfq_upsample_nearest (a, h, 2);
    h = dfq_conv2d (a, h, g->c2_w, g->c2_b, 1, 1, 1);
    h = dfq_batchnorm (a, h, g->b2[0], g->b2[1], g->b2[2], g->b2[3], TRUE, 0.1f, 0.8f);
    h = dfq_leaky_relu (a, h, 0.2f);
    h = dfq_conv2d (a, h, g->c3_w, g->c3_b, 1, 1, 1);
    h = dfq_tanh (a, h);
    return dfq_batchnorm (a, h, NULL, NULL, g->b3[2], g->b3[3], TRUE, 0.1f, 1e-5f);
}

/* ------------------------------------------------------------------ workloads */

typedef struct {
    int cin, hw;
    DfqModel *model;
    DfqOptim *sgd;
    DfqTensor *x, *y;     /* batch 128 */
    DfqTensor *z, *yl;    /* generator batch 32 */
    BenchGen gen;
    DfqOptim *adam;
    DfqArena *inputs;
    DfqArena *scratch;
    DfqModel *mv2;        /* 1x28x28 only */
    DfqOptim *mv2_sgd;
    DfqTensor *x64, *y64; /* the first 64 images of x, y */
    DfqRegistry *registry;
} BenchCase;

static DfqTensor *
bench_train_step (BenchCase *c)
{
    dfq_arena_reset (c->scratch);
    dfq_optim_zero_grad (c->sgd);
    DfqForward fwd;
    dfq_forward_init (&fwd, c->scratch, TRUE);
    DfqTensor *logits = dfq_model_forward (c->model, &fwd, c->x);
    DfqTensor *loss = dfq_cross_entropy (c->scratch, logits, c->y);
    dfq_backward (loss, c->scratch);
    dfq_optim_step (c->sgd);
    return loss;
}

static void
bench_infer_step (BenchCase *c)
{
    dfq_arena_reset (c->scratch);
    gboolean prev = dfq_set_grad_enabled (FALSE);
    DfqForward fwd;
    dfq_forward_init (&fwd, c->scratch, FALSE);
    dfq_model_forward (c->model, &fwd, c->x);
    dfq_set_grad_enabled (prev);
}

static DfqTensor *
bench_mv2_train_step (BenchCase *c)
{
    dfq_arena_reset (c->scratch);
    dfq_optim_zero_grad (c->mv2_sgd);
    DfqForward fwd;
    dfq_forward_init (&fwd, c->scratch, TRUE);
    DfqTensor *logits = dfq_model_forward (c->mv2, &fwd, c->x64);
    DfqTensor *loss = dfq_cross_entropy (c->scratch, logits, c->y64);
    dfq_backward (loss, c->scratch);
    dfq_optim_step (c->mv2_sgd);
    return loss;
}

static void
bench_mv2_infer_step (BenchCase *c)
{
    dfq_arena_reset (c->scratch);
    gboolean prev = dfq_set_grad_enabled (FALSE);
    DfqForward fwd;
    dfq_forward_init (&fwd, c->scratch, FALSE);
    dfq_model_forward (c->mv2, &fwd, c->x);
    dfq_set_grad_enabled (prev);
}

static DfqTensor *
bench_gen_step (BenchCase *c)
{
    dfq_arena_reset (c->scratch);
    dfq_optim_zero_grad (c->adam);
    /* The reference never zeroes the teacher's gradients; zeroing them here
     * costs the same and keeps them bounded. */
    for (guint i = 0; i < c->model->params->len; i++)
        dfq_tensor_zero_grad (c->model->params->pdata[i]);
    DfqTensor *img = bench_gen_forward (&c->gen, c->scratch, c->z, c->yl);
    DfqForward fwd;
    dfq_forward_init (&fwd, c->scratch, TRUE);
    DfqTensor *logits = dfq_model_forward (c->model, &fwd, img);
    DfqTensor *loss = dfq_cross_entropy (c->scratch, logits, c->yl);
    dfq_backward (loss, c->scratch);
    dfq_optim_step (c->adam);
    return loss;
}

/* zeroq-step: one ZeroQ image-optimisation step through the zeroq
 * synthesizer plugin with its default loss list (bns-sample over every BN
 * input of the teacher + image-prior) and `iters: 1`: fresh images of
 * BENCH_ZEROQ_BATCH, the frozen teacher's eval-mode forward with its BN
 * inputs tapped, the loss, the backward to the images, one Adam step (lr
 * 0.5). The teacher is this case's ResNet-20 after its training steps. Each
 * call also draws the batch's initial images and creates its optimizer, as
 * the PyTorch side does. */
typedef struct {
    DfqSynthesizer *synth;
    DfqStepContext ctx;
} BenchZeroq;

static void
bench_zeroq_init (BenchZeroq *z, BenchCase *c)
{
    memset (z, 0, sizeof *z);
    z->synth = (DfqSynthesizer *) bench_make_feature (c->registry, DFQ_FEATURE_SYNTHESIZER, "zeroq",
                                                      "use: zeroq\niters: 1\n", "synthesizer");
    z->ctx.arena = c->scratch;
    z->ctx.teacher = c->model;
    z->ctx.seed = 1;
    z->ctx.epochs = 1;
    z->ctx.batch = BENCH_ZEROQ_BATCH;
    z->ctx.classes = BENCH_CLASSES;
    z->ctx.image_shape[0] = c->cin;
    z->ctx.image_shape[1] = c->hw;
    z->ctx.image_shape[2] = c->hw;
    g_autoptr (GError) error = NULL;
    if (!DFQ_SYNTHESIZER_CLASS (z->synth)->prepare (z->synth, &z->ctx, &error))
        g_error ("zeroq-step: %s", error->message);
}

static float
bench_zeroq_step (BenchZeroq *z)
{
    dfq_arena_reset (z->ctx.arena);
    DfqSynthBatch out = { 0 };
    g_autoptr (GError) error = NULL;
    if (!DFQ_SYNTHESIZER_CLASS (z->synth)->step (z->synth, &z->ctx, &out, &error))
        g_error ("zeroq-step: %s", error->message);
    z->ctx.iter++;
    z->ctx.step++;
    return (float) out.loss;
}

/* The zeroq-step workload; @fwd_flops: the teacher's forward at its batch.
 * The FLOPs of a step are the forward and the input gradient of every conv
 * and linear layer (no weight gradients: the teacher is frozen). */
static void
bench_zeroq_run (BenchCase *c, double fwd_flops, double *times, double *cpu)
{
    BenchZeroq z;
    bench_zeroq_init (&z, c);
    dfq_model_set_trainable (c->model, FALSE);
    /* untimed: the first sizes the arenas, the second runs in the merged ones */
    float loss = bench_zeroq_step (&z);
    loss = bench_zeroq_step (&z);
    for (int r = 0; r < opts.reps; r++) {
        double t0 = bench_now (), c0 = bench_cpu_now ();
        loss = bench_zeroq_step (&z);
        times[r] = bench_now () - t0;
        cpu[r] = bench_cpu_now () - c0;
    }
    if (!isfinite (loss))
        g_warning ("zeroq-step %dx%dx%d: the loss is not finite", c->cin, c->hw, c->hw);
    bench_note_value (loss);
    bench_report ("zeroq-step", c->cin, c->hw, BENCH_ZEROQ_BATCH, times, cpu, opts.reps, 2.0 * fwd_flops,
                  dfq_arena_capacity (c->scratch));
    dfq_model_set_trainable (c->model, TRUE);
    dfq_feature_free ((DfqFeature *) z.synth);
}

/* recon-step: one block-reconstruction step as the reconstruct phase takes
 * it (core/runner/dfq-phase-reconstruct.c, QDrop off as in the AdaRound
 * pipelines): a fresh ResNet-20 (the initial weights, frozen) as the student
 * under the adaround quantizer (W4A4: soft bits, LSQ activation steps),
 * calibrated on the 128 images; unit BENCH_RECON_UNIT learning; its input x
 * and the full-precision unit's output y on the first BENCH_RECON_BATCH
 * images. A step: the unit's forward through the quantizer, loss = sum (out -
 * y)^2 / (B H W) + the rounding regulariser (at half of its annealing), the
 * backward into the soft bits and the activation steps, one Adam step per
 * parameter group. */
typedef struct {
    DfqModel *student;
    DfqQuantizer *q;
    GPtrArray *optims;
    DfqArena *arena; /* x, y */
    DfqTensor *xb, *yb;
    guint64 step;
} BenchRecon;

static void
bench_recon_calibrate (BenchRecon *b, BenchCase *c)
{
    gboolean prev = dfq_set_grad_enabled (FALSE);
    DfqTensor *x = dfq_tensor_new_4d (b->arena, DFQ_DTYPE_F32, BENCH_RECON_BATCH, c->cin, c->hw, c->hw);
    memcpy (dfq_tensor_f32 (x), dfq_tensor_f32 (c->x), (gsize) dfq_tensor_numel (x) * sizeof (float));
    DfqForward fwd;
    dfq_forward_init (&fwd, b->arena, FALSE);
    b->xb = dfq_model_forward_block (b->student, &fwd, 0, x);
    dfq_forward_init (&fwd, b->arena, FALSE);
    b->yb = dfq_model_forward_block (b->student, &fwd, BENCH_RECON_UNIT, b->xb);
    dfq_quantizer_set_mode (b->q, DFQ_QUANT_MODE_CALIBRATE);
    dfq_arena_reset (c->scratch);
    dfq_forward_init (&fwd, c->scratch, FALSE);
    dfq_quantizer_hook (b->q, &fwd);
    dfq_model_forward (b->student, &fwd, c->x);
    dfq_set_grad_enabled (prev);
}

static void
bench_recon_init (BenchRecon *b, BenchCase *c)
{
    memset (b, 0, sizeof *b);
    b->student = bench_make_model (c->registry, c->cin, c->hw);
    b->q = (DfqQuantizer *) bench_make_feature (c->registry, DFQ_FEATURE_QUANTIZER, "adaround",
                                                "use: adaround\nw_bits: 4\na_bits: 4\n", "quantizer");
    g_autoptr (GError) error = NULL;
    if (!dfq_quantizer_attach (b->q, b->student, &error))
        g_error ("recon-step: %s", error->message);
    dfq_model_set_trainable (b->student, FALSE);
    b->arena = dfq_arena_new (0);
    bench_recon_calibrate (b, c);
    dfq_quantizer_set_active_block (b->q, b->student->blocks->pdata[BENCH_RECON_UNIT]);
    dfq_quantizer_set_mode (b->q, DFQ_QUANT_MODE_LEARN);
    GArray *groups = dfq_quantizer_get_param_groups (b->q);
    b->optims = g_ptr_array_new_with_free_func ((GDestroyNotify) dfq_optim_free);
    for (guint g = 0; g < groups->len; g++) {
        const DfqQuantParamGroup *grp = &g_array_index (groups, DfqQuantParamGroup, g);
        DfqOptimConfig oc;
        dfq_optim_config_init (&oc, DFQ_OPTIM_ADAM);
        oc.lr = grp->lr > 0 ? grp->lr : 1e-3;
        oc.weight_decay = grp->weight_decay >= 0 ? grp->weight_decay : 0.0;
        DfqOptim *o = dfq_optim_new (&oc);
        for (guint i = 0; i < grp->params->len; i++)
            dfq_optim_add_param (o, grp->params->pdata[i]);
        g_ptr_array_add (b->optims, o);
    }
    dfq_quant_param_groups_free (groups);
}

static DfqTensor *
bench_recon_step (BenchRecon *b, BenchCase *c)
{
    DfqArena *a = c->scratch;
    dfq_arena_reset (a);
    for (guint g = 0; g < b->optims->len; g++)
        dfq_optim_zero_grad (b->optims->pdata[g]);
    DfqForward fwd;
    dfq_forward_init (&fwd, a, FALSE);
    fwd.seed = 1;
    fwd.step = ++b->step;
    dfq_quantizer_hook (b->q, &fwd);
    DfqTensor *out = dfq_model_forward_block (b->student, &fwd, BENCH_RECON_UNIT, b->xb);
    DfqTensor *d = dfq_sub (a, out, b->yb);
    DfqTensor *loss = dfq_affine (a, dfq_sum (a, dfq_mul (a, d, d)),
                                  (float) ((double) out->shape[1] / (double) dfq_tensor_numel (out)), 0.0f);
    DfqTensor *reg = dfq_quantizer_regularizer (b->q, a, BENCH_RECON_PROGRESS);
    if (reg != NULL)
        loss = dfq_add (a, loss, reg);
    dfq_backward (loss, a);
    for (guint g = 0; g < b->optims->len; g++)
        dfq_optim_step (b->optims->pdata[g]);
    return loss;
}

static void
bench_recon_run (BenchCase *c, double *times, double *cpu)
{
    BenchRecon b;
    bench_recon_init (&b, c);
    gboolean prev = dfq_set_grad_enabled (TRUE);
    double fwd_flops, train_flops;
    DfqTensor *loss = bench_recon_step (&b, c); /* untimed, twice: the arenas settle */
    bench_count_flops (loss, &fwd_flops, &train_flops);
    loss = bench_recon_step (&b, c);
    for (int r = 0; r < opts.reps; r++) {
        double t0 = bench_now (), c0 = bench_cpu_now ();
        loss = bench_recon_step (&b, c);
        times[r] = bench_now () - t0;
        cpu[r] = bench_cpu_now () - c0;
    }
    dfq_set_grad_enabled (prev);
    if (!isfinite (dfq_tensor_f32 (loss)[0]))
        g_warning ("recon-step %dx%dx%d: the loss is not finite", c->cin, c->hw, c->hw);
    bench_note_loss (loss);
    bench_report ("recon-step", c->cin, c->hw, BENCH_RECON_BATCH, times, cpu, opts.reps, train_flops,
                  dfq_arena_capacity (c->scratch));
    g_ptr_array_unref (b.optims);
    dfq_feature_free ((DfqFeature *) b.q);
    dfq_feature_free ((DfqFeature *) b.student);
    dfq_arena_free (b.arena);
}

static void
bench_case_init (BenchCase *c, DfqRegistry *registry, int cin, int hw)
{
    memset (c, 0, sizeof *c);
    c->registry = registry;
    c->cin = cin;
    c->hw = hw;
    c->model = bench_make_model (registry, cin, hw);
    DfqOptimConfig cfg;
    dfq_optim_config_init (&cfg, DFQ_OPTIM_SGD);
    cfg.lr = 0.1;
    cfg.momentum = 0.9;
    c->sgd = dfq_optim_new (&cfg);
    for (guint i = 0; i < c->model->params->len; i++)
        dfq_optim_add_param (c->sgd, c->model->params->pdata[i]);

    c->inputs = dfq_arena_new (0);
    c->scratch = dfq_arena_new (0);
    c->x = dfq_tensor_new_4d (c->inputs, DFQ_DTYPE_F32, BENCH_TRAIN_BATCH, cin, hw, hw);
    c->y = dfq_tensor_new_1d (c->inputs, DFQ_DTYPE_I32, BENCH_TRAIN_BATCH);
    dfq_tensor_set_name (c->x, "x");
    dfq_tensor_set_name (c->y, "y");
    g_autoptr (GError) error = NULL;
    if (g_str_equal (opts.data, "noise") || !bench_fill_fmnist (c->x, c->y, &error)) {
        if (error != NULL)
            g_error ("--data fmnist: %s (use --data noise)", error->message);
        dfq_rand_normal_fill (c->x, 11, (guint64) cin, 0.0f, 1.0f);
        dfq_rand_int_fill (c->y, 11, 100 + (guint64) cin, BENCH_CLASSES);
    }

    bench_gen_init (&c->gen, cin, hw);
    dfq_optim_config_init (&cfg, DFQ_OPTIM_ADAM);
    cfg.lr = 1e-3;
    c->adam = dfq_optim_new (&cfg);
    for (guint i = 0; i < c->gen.params->len; i++)
        dfq_optim_add_param (c->adam, c->gen.params->pdata[i]);
    c->z = dfq_tensor_new_2d (c->inputs, DFQ_DTYPE_F32, BENCH_GEN_BATCH, BENCH_LATENT);
    c->yl = dfq_tensor_new_1d (c->inputs, DFQ_DTYPE_I32, BENCH_GEN_BATCH);
    dfq_tensor_set_name (c->z, "z");
    dfq_tensor_set_name (c->yl, "yl");
    dfq_rand_normal_fill (c->z, 13, (guint64) cin, 0.0f, 1.0f);
    dfq_rand_int_fill (c->yl, 13, 100 + (guint64) cin, BENCH_CLASSES);

    if (cin == 1 && hw == 28) {
        c->mv2 = bench_make_mv2 (registry, cin, hw);
        dfq_optim_config_init (&cfg, DFQ_OPTIM_SGD);
        cfg.lr = 0.1;
        cfg.momentum = 0.9;
        c->mv2_sgd = dfq_optim_new (&cfg);
        for (guint i = 0; i < c->mv2->params->len; i++)
            dfq_optim_add_param (c->mv2_sgd, c->mv2->params->pdata[i]);
        c->x64 = dfq_tensor_new_4d (c->inputs, DFQ_DTYPE_F32, BENCH_MV2_TRAIN_BATCH, cin, hw, hw);
        c->y64 = dfq_tensor_new_1d (c->inputs, DFQ_DTYPE_I32, BENCH_MV2_TRAIN_BATCH);
        memcpy (dfq_tensor_f32 (c->x64), dfq_tensor_f32 (c->x), (gsize) dfq_tensor_numel (c->x64) * sizeof (float));
        memcpy (dfq_tensor_i32 (c->y64), dfq_tensor_i32 (c->y), (gsize) BENCH_MV2_TRAIN_BATCH * sizeof (gint32));
    }
}

static void
bench_case_clear (BenchCase *c)
{
    dfq_optim_free (c->sgd);
    dfq_optim_free (c->adam);
    bench_gen_clear (&c->gen);
    dfq_feature_free ((DfqFeature *) c->model);
    if (c->mv2 != NULL) {
        dfq_optim_free (c->mv2_sgd);
        dfq_feature_free ((DfqFeature *) c->mv2);
    }
    dfq_arena_free (c->inputs);
    dfq_arena_free (c->scratch);
}

static void
bench_case_dump (BenchCase *c)
{
    g_autoptr (GPtrArray) names = g_ptr_array_new_with_free_func (g_free);
    g_autoptr (GPtrArray) tensors = g_ptr_array_new ();
    DfqTensor *inputs[] = { c->x, c->y, c->z, c->yl };
    for (guint i = 0; i < G_N_ELEMENTS (inputs); i++) {
        g_ptr_array_add (names, g_strdup (inputs[i]->name));
        g_ptr_array_add (tensors, inputs[i]);
    }
    GPtrArray *lists[] = { c->model->params, c->model->buffers,
                           c->mv2 != NULL ? c->mv2->params : NULL, c->mv2 != NULL ? c->mv2->buffers : NULL };
    for (guint l = 0; l < G_N_ELEMENTS (lists); l++)
        for (guint i = 0; lists[l] != NULL && i < lists[l]->len; i++) {
            DfqTensor *t = lists[l]->pdata[i];
            g_ptr_array_add (names, g_strdup_printf ("%s.%s", l < 2 ? "teacher" : "mv2", t->name));
            g_ptr_array_add (tensors, t);
        }
    for (guint i = 0; i < c->gen.named->len; i++) {
        DfqTensor *t = c->gen.named->pdata[i];
        g_ptr_array_add (names, g_strdup (t->name));
        g_ptr_array_add (tensors, t);
    }
    g_autofree char *file = g_strdup_printf ("bench-%dx%dx%d.safetensors", c->cin, c->hw, c->hw);
    g_autofree char *path = g_build_filename (opts.dump_dir, file, NULL);
    g_autoptr (GError) error = NULL;
    g_mkdir_with_parents (opts.dump_dir, 0755);
    if (!dfq_safetensors_save_list (path, (const char *const *) names->pdata, (DfqTensor *const *) tensors->pdata,
                                    names->len, NULL, &error))
        g_error ("%s", error->message);
    printf ("# wrote %s (%u tensors, data %s)\n", path, names->len, opts.data);
}

/* The MobileNetV2 workloads (1x28x28): 5 untimed training steps, then each. */
static void
bench_mv2_run (BenchCase *c)
{
    const gboolean want_train = bench_selected ("mobilenetv2-train-1x28x28");
    const gboolean want_infer = bench_selected ("mobilenetv2-infer-1x28x28");
    if (!want_train && !want_infer)
        return;
    double *times = g_new (double, opts.reps);
    double *cpu = g_new (double, opts.reps);
    double fwd_flops, train_flops, infer_flops;
    for (int i = 0; i < opts.warmup; i++)
        bench_mv2_train_step (c);
    DfqTensor *loss = bench_mv2_train_step (c);
    bench_count_flops (loss, &fwd_flops, &train_flops);
    if (want_train) {
        for (int r = 0; r < opts.reps; r++) {
            double t0 = bench_now (), c0 = bench_cpu_now ();
            loss = bench_mv2_train_step (c);
            times[r] = bench_now () - t0;
            cpu[r] = bench_cpu_now () - c0;
        }
        if (!isfinite (dfq_tensor_f32 (loss)[0]))
            g_warning ("mobilenetv2-train: the loss is not finite");
        bench_note_loss (loss);
        bench_report ("mobilenetv2-train", 1, 28, BENCH_MV2_TRAIN_BATCH, times, cpu, opts.reps, train_flops,
                      dfq_arena_capacity (c->scratch));
    }
    if (want_infer) {
        /* the inference batch is twice the training one: the same FLOPs per image */
        infer_flops = fwd_flops * BENCH_TRAIN_BATCH / BENCH_MV2_TRAIN_BATCH;
        bench_mv2_infer_step (c); /* untimed: sizes the arena for eval */
        for (int r = 0; r < opts.reps; r++) {
            double t0 = bench_now (), c0 = bench_cpu_now ();
            bench_mv2_infer_step (c);
            times[r] = bench_now () - t0;
            cpu[r] = bench_cpu_now () - c0;
        }
        bench_report ("mobilenetv2-infer", 1, 28, BENCH_TRAIN_BATCH, times, cpu, opts.reps, infer_flops,
                      dfq_arena_capacity (c->scratch));
    }
    g_free (times);
    g_free (cpu);
}

static void
bench_case_run (BenchCase *c)
{
    char id[64];
    double *times = g_new (double, opts.reps);
    double *cpu = g_new (double, opts.reps);
    double fwd_flops, train_flops;
    const int cin = c->cin, hw = c->hw;

    g_snprintf (id, sizeof id, "resnet20-train-%dx%dx%d", cin, hw, hw);
    gboolean want_train = bench_selected (id);
    g_snprintf (id, sizeof id, "resnet20-infer-%dx%dx%d", cin, hw, hw);
    gboolean want_infer = bench_selected (id);
    g_snprintf (id, sizeof id, "gdfq-gen-%dx%dx%d", cin, hw, hw);
    gboolean want_gen = bench_selected (id);
    g_snprintf (id, sizeof id, "zeroq-step-%dx%dx%d", cin, hw, hw);
    gboolean want_zeroq = bench_selected (id);
    g_snprintf (id, sizeof id, "recon-step-%dx%dx%d", cin, hw, hw);
    gboolean want_recon = bench_selected (id);
    if (c->mv2 != NULL)
        bench_mv2_run (c);
    if (!want_train && !want_infer && !want_gen && !want_zeroq && !want_recon)
        goto out;

    /* Warm-up: the same untimed training steps for every workload of this shape. */
    for (int i = 0; i < opts.warmup; i++)
        bench_train_step (c);

    DfqTensor *loss = bench_train_step (c);
    bench_count_flops (loss, &fwd_flops, &train_flops);
    const double teacher_fwd_flops = fwd_flops; /* batch 128 */
    if (want_train) {
        for (int r = 0; r < opts.reps; r++) {
            double t0 = bench_now (), c0 = bench_cpu_now ();
            loss = bench_train_step (c);
            times[r] = bench_now () - t0;
            cpu[r] = bench_cpu_now () - c0;
        }
        if (!isfinite (dfq_tensor_f32 (loss)[0]))
            g_warning ("resnet20-train %dx%dx%d: the loss is not finite", cin, hw, hw);
        bench_note_loss (loss);
        bench_report ("resnet20-train", cin, hw, BENCH_TRAIN_BATCH, times, cpu, opts.reps, train_flops,
                      dfq_arena_capacity (c->scratch));
    }
    if (want_infer) {
        bench_infer_step (c); /* untimed: sizes the arena for eval */
        for (int r = 0; r < opts.reps; r++) {
            double t0 = bench_now (), c0 = bench_cpu_now ();
            bench_infer_step (c);
            times[r] = bench_now () - t0;
            cpu[r] = bench_cpu_now () - c0;
        }
        bench_report ("resnet20-infer", cin, hw, BENCH_TRAIN_BATCH, times, cpu, opts.reps, fwd_flops,
                      dfq_arena_capacity (c->scratch));
    }
    if (want_gen) {
        loss = bench_gen_step (c); /* untimed, as the reference's first call */
        bench_count_flops (loss, &fwd_flops, &train_flops);
        for (int r = 0; r < opts.reps; r++) {
            double t0 = bench_now (), c0 = bench_cpu_now ();
            loss = bench_gen_step (c);
            times[r] = bench_now () - t0;
            cpu[r] = bench_cpu_now () - c0;
        }
        if (!isfinite (dfq_tensor_f32 (loss)[0]))
            g_warning ("gdfq-gen %dx%dx%d: the loss is not finite", cin, hw, hw);
        bench_note_loss (loss);
        bench_report ("gdfq-gen", cin, hw, BENCH_GEN_BATCH, times, cpu, opts.reps, train_flops,
                      dfq_arena_capacity (c->scratch));
    }
    if (want_zeroq)
        bench_zeroq_run (c, teacher_fwd_flops * BENCH_ZEROQ_BATCH / BENCH_TRAIN_BATCH, times, cpu);
    if (want_recon)
        bench_recon_run (c, times, cpu);
out:
    g_free (times);
    g_free (cpu);
}

/* ------------------------------------------------------------------ main */

int
main (int argc, char **argv)
{
    GOptionEntry entries[] = {
        { "threads", 't', 0, G_OPTION_ARG_INT, &opts.threads, "Threads for the engine and OpenBLAS (2)", "N" },
        { "reps", 'r', 0, G_OPTION_ARG_INT, &opts.reps, "Timed repetitions; the median is reported (7)", "N" },
        { "warmup", 'w', 0, G_OPTION_ARG_INT, &opts.warmup, "Untimed training steps first (5)", "N" },
        { "sgemm", 0, 0, G_OPTION_ARG_INT, &opts.sgemm_n, "Size of the peak sgemm, 0 to skip (2048)", "N" },
        { "only", 'o', 0, G_OPTION_ARG_STRING, &opts.only,
          "Workloads whose id (e.g. resnet20-train-1x28x28) contains or glob-matches this", "PATTERN" },
        { "data", 'd', 0, G_OPTION_ARG_STRING, &opts.data, "fmnist (real images) or noise (N(0,1))", "KIND" },
        { "dump", 0, 0, G_OPTION_ARG_FILENAME, &opts.dump_dir, "Write inputs and weights for PyTorch to DIR and exit", "DIR" },
        { "plugin-path", 0, 0, G_OPTION_ARG_FILENAME, &opts.plugin_path, "Where the model plugins are", "DIR" },
        { NULL },
    };
    g_autoptr (GOptionContext) ctx = g_option_context_new ("- dfqlab engine benchmark (ResNet-20, GDFQ generator, MobileNetV2)");
    g_option_context_add_main_entries (ctx, entries, NULL);
    g_autoptr (GError) error = NULL;
    if (!g_option_context_parse (ctx, &argc, &argv, &error)) {
        g_printerr ("dfq-bench: %s\n", error->message);
        return 2;
    }
    if (opts.threads < 1 || opts.reps < 1 || opts.warmup < 0) {
        g_printerr ("dfq-bench: --threads and --reps must be >= 1, --warmup >= 0\n");
        return 2;
    }
    if (!g_str_equal (opts.data, "fmnist") && !g_str_equal (opts.data, "noise")) {
        g_printerr ("dfq-bench: --data is fmnist or noise\n");
        return 2;
    }
    dfq_set_num_threads (opts.threads);

    const char *plugin_path = opts.plugin_path;
#ifdef DFQ_BENCH_PLUGIN_DIR
    if (plugin_path == NULL && g_getenv ("DFQ_PLUGIN_PATH") == NULL)
        plugin_path = DFQ_BENCH_PLUGIN_DIR;
#endif
    DfqRegistry *registry = dfq_registry_new ();
    dfq_registry_scan (registry, plugin_path, NULL);

    printf ("# dfq-bench: threads %d, reps %d, warm-up %d training steps, data %s, OPENBLAS_CORETYPE=%s, "
            "OMP_WAIT_POLICY=%s\n",
            opts.threads, opts.reps, opts.warmup, opts.data, g_getenv ("OPENBLAS_CORETYPE") ?: "(unset)",
            g_getenv ("OMP_WAIT_POLICY") ?: "(unset)");
    if (opts.dump_dir == NULL && opts.sgemm_n > 0) {
        sgemm_peak_gflops = bench_sgemm_peak (opts.sgemm_n);
        printf ("RESULT side=dfqlab workload=sgemm n=%d gflops=%.1f\n", opts.sgemm_n, sgemm_peak_gflops);
    }

    static const int shapes[][2] = { { 1, 28 }, { 3, 32 } };
    for (guint s = 0; s < G_N_ELEMENTS (shapes); s++) {
        BenchCase c;
        char tag[32];
        g_snprintf (tag, sizeof tag, "-%dx%dx%d", shapes[s][0], shapes[s][1], shapes[s][1]);
        if (opts.only != NULL && opts.dump_dir == NULL && !bench_selected (tag + 1)) {
            /* cheap skip when the pattern names the other shape */
            char ids[7][64];
            g_snprintf (ids[0], 64, "resnet20-train%s", tag);
            g_snprintf (ids[1], 64, "resnet20-infer%s", tag);
            g_snprintf (ids[2], 64, "gdfq-gen%s", tag);
            g_snprintf (ids[3], 64, "mobilenetv2-train%s", tag);
            g_snprintf (ids[4], 64, "mobilenetv2-infer%s", tag);
            g_snprintf (ids[5], 64, "zeroq-step%s", tag);
            g_snprintf (ids[6], 64, "recon-step%s", tag);
            gboolean any = FALSE;
            for (guint k = 0; k < G_N_ELEMENTS (ids); k++)
                any = any || bench_selected (ids[k]);
            if (!any)
                continue;
        }
        bench_case_init (&c, registry, shapes[s][0], shapes[s][1]);
        if (opts.dump_dir != NULL)
            bench_case_dump (&c);
        else
            bench_case_run (&c);
        bench_case_clear (&c);
    }
    dfq_registry_free (registry);
    return 0;
}
