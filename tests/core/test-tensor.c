/* Engine basics (core/tensor, core/autograd): arena alignment and steady state,
 * tensor creation, the counter-based Philox RNG (determinism, moments, thread
 * independence, permutations) and the autograd walker's accumulation rules. */
#include <math.h>
#include <string.h>

#include "dfq-test-util.h"

typedef struct {
    DfqArena *arena;   /* leaves and parameters */
    DfqArena *scratch; /* graphs and intermediate gradients */
} TensorFixture;

static void
tensor_setup (TensorFixture *f, gconstpointer data)
{
    (void) data;
    f->arena = dfq_arena_new (0);
    f->scratch = dfq_arena_new (0);
}

static void
tensor_teardown (TensorFixture *f, gconstpointer data)
{
    (void) data;
    g_clear_pointer (&f->scratch, dfq_arena_free);
    g_clear_pointer (&f->arena, dfq_arena_free);
}

/* A 1-d F32 tensor holding @n values. */
static DfqTensor *
tensor_from (DfqArena *arena, const float *values, gint64 n)
{
    DfqTensor *t = dfq_tensor_new_1d (arena, DFQ_DTYPE_F32, n);
    memcpy (t->data, values, (gsize) n * sizeof (float));
    return t;
}

/* ---- arena ---- */

static void
test_arena_alignment (TensorFixture *f, gconstpointer data)
{
    (void) data;
    g_test_summary ("Every arena allocation and tensor buffer is 64-byte aligned, "
                    "also across chunk growth");
    static const gsize sizes[] = { 1, 3, 17, 63, 64, 65, 100, 4096, 4097, 3 << 20, 5 };
    for (guint i = 0; i < G_N_ELEMENTS (sizes); i++) {
        guint8 *p = dfq_arena_alloc (f->arena, sizes[i]);
        g_assert_nonnull (p);
        g_assert_cmpuint ((guintptr) p % DFQ_ARENA_ALIGN, ==, 0);
        /* zero-filled */
        g_assert_cmpuint (p[0], ==, 0);
        g_assert_cmpuint (p[sizes[i] - 1], ==, 0);
        g_assert_cmpuint ((guintptr) dfq_arena_alloc_uninit (f->arena, sizes[i]) % DFQ_ARENA_ALIGN, ==, 0);
    }
    DfqTensor *t = dfq_tensor_new_4d (f->arena, DFQ_DTYPE_F32, 3, 5, 7, 7);
    g_assert_cmpuint ((guintptr) t->data % 64, ==, 0);
    g_assert_cmpuint (dfq_arena_used (f->arena), <=, dfq_arena_capacity (f->arena));
}

/* One "training step": a few tensors, some larger than the first chunk. */
static void
arena_cycle (DfqArena *arena)
{
    for (int i = 0; i < 8; i++)
        dfq_tensor_new_4d (arena, DFQ_DTYPE_F32, 4, 16, 32, 32 + i); /* ~0.25 MiB each */
    dfq_arena_alloc (arena, 3u << 20);
    dfq_arena_alloc_uninit (arena, 100);
}

static void
test_arena_steady_state (TensorFixture *f, gconstpointer data)
{
    (void) data;
    g_test_summary ("After the first cycle and a reset, identical cycles make no "
                    "system allocation (chunks are merged on reset)");
    DfqArena *a = f->scratch;
    arena_cycle (a);
    g_assert_cmpuint (dfq_arena_n_system_allocs (a), >, 1); /* it had to grow */
    gsize used = dfq_arena_used (a);
    dfq_arena_reset (a);
    g_assert_cmpuint (dfq_arena_used (a), ==, 0);
    g_assert_cmpuint (dfq_arena_capacity (a), >=, used);
    guint n_allocs = dfq_arena_n_system_allocs (a);
    for (int step = 0; step < 20; step++) {
        arena_cycle (a);
        g_assert_cmpuint (dfq_arena_used (a), ==, used);
        dfq_arena_reset (a);
    }
    g_assert_cmpuint (dfq_arena_n_system_allocs (a), ==, n_allocs);
}

#if defined(__SANITIZE_ADDRESS__)
#define TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#endif
#endif

#ifdef TEST_ASAN
/* Only in AddressSanitizer builds (the CI's build-asan runs this suite): the
 * arena's red zones and poisoning make overruns between arena tensors, and
 * reads of memory freed by a reset, fail like heap errors. */
static void
test_arena_asan (gconstpointer data)
{
    const char *what = data;
    g_test_summary ("Under ASan, writing one byte past an arena allocation (inside the same chunk, before the "
                    "next allocation) and reading an allocation after dfq_arena_reset() are reported");
    if (g_test_subprocess ()) {
        DfqArena *a = dfq_arena_new (0);
        volatile guint8 *p = dfq_arena_alloc (a, 10);
        dfq_arena_alloc (a, 10);
        p[9] = 1; /* the last byte: fine */
        if (g_str_equal (what, "reset")) {
            dfq_arena_reset (a);
            g_print ("%d\n", p[0]);
        } else {
            p[10] = 1;
        }
        dfq_arena_free (a);
        return;
    }
    g_test_trap_subprocess (NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
    g_test_trap_assert_failed ();
    g_test_trap_assert_stderr ("*use-after-poison*");
}
#endif

/* ---- tensor ---- */

static void
test_tensor_new (TensorFixture *f, gconstpointer data)
{
    (void) data;
    g_test_summary ("Creation: shape, contiguous strides, numel, zero fill, shape string");
    char buf[64];
    DfqTensor *t = dfq_tensor_new_4d (f->arena, DFQ_DTYPE_F32, 2, 3, 4, 5);
    g_assert_cmpint (t->n_dims, ==, 4);
    g_assert_cmpint (dfq_tensor_numel (t), ==, 120);
    g_assert_cmpint (t->stride[0], ==, 60);
    g_assert_cmpint (t->stride[1], ==, 20);
    g_assert_cmpint (t->stride[2], ==, 5);
    g_assert_cmpint (t->stride[3], ==, 1);
    g_assert_true (dfq_tensor_is_contiguous (t));
    g_assert_cmpint (t->op, ==, DFQ_OP_NONE);
    g_assert_false (dfq_tensor_requires_grad (t));
    for (gint64 i = 0; i < dfq_tensor_numel (t); i++)
        g_assert_cmpfloat (dfq_tensor_f32 (t)[i], ==, 0.0f);
    g_assert_cmpstr (dfq_tensor_shape_string (t, buf, sizeof buf), ==, "[2, 3, 4, 5]");

    DfqTensor *v = dfq_tensor_new_1d (f->arena, DFQ_DTYPE_I32, 7);
    g_assert_cmpint (dfq_tensor_numel (v), ==, 7);
    g_assert_cmpstr (dfq_tensor_shape_string (v, buf, sizeof buf), ==, "[7]");

    DfqTensor *m = dfq_tensor_new_2d (f->arena, DFQ_DTYPE_F32, 3, 1);
    g_assert_cmpstr (dfq_tensor_shape_string (m, buf, sizeof buf), ==, "[3, 1]");

    DfqTensor *s = dfq_tensor_new_scalar (f->arena, 2.5f);
    g_assert_cmpint (dfq_tensor_numel (s), ==, 1);
    g_assert_cmpfloat (dfq_tensor_f32 (s)[0], ==, 2.5f);

    DfqTensor *like = dfq_tensor_new_like (f->arena, t);
    g_assert_true (dfq_tensor_same_shape (like, t));
    g_assert_false (dfq_tensor_same_shape (m, t));

    dfq_tensor_set_name (t, "layers.%d.bn%d:in", 3, 1);
    g_assert_cmpstr (t->name, ==, "layers.3.bn1:in");
}

/* ---- random numbers ---- */

static void
test_rand_philox_deterministic (void)
{
    g_test_summary ("Philox values are a pure function of (seed, stream, index); "
                    "other streams and seeds give other values");
    for (guint64 i = 0; i < 64; i++) {
        guint32 a[4], b[4], c[4], d[4];
        dfq_rand_philox (42, 7, i, a);
        dfq_rand_philox (42, 7, i, b);
        dfq_rand_philox (42, 8, i, c);
        dfq_rand_philox (43, 7, i, d);
        g_assert_cmpmem (a, sizeof a, b, sizeof b);
        g_assert_false (memcmp (a, c, sizeof a) == 0);
        g_assert_false (memcmp (a, d, sizeof a) == 0);
        g_assert_cmpfloat (dfq_rand_uniform_at (42, 7, i), ==, dfq_rand_uniform_at (42, 7, i));
        g_assert_cmpfloat (dfq_rand_normal_at (42, 7, i), ==, dfq_rand_normal_at (42, 7, i));
    }
    /* Streams differ element by element, not just somewhere. */
    int n_equal = 0;
    for (guint64 i = 0; i < 1000; i++)
        if (dfq_rand_uniform_at (1, 1, i) == dfq_rand_uniform_at (1, 2, i))
            n_equal++;
    g_assert_cmpint (n_equal, <, 5);
    /* The high halves of seed and stream matter too. */
    g_assert_cmpfloat (dfq_rand_uniform_at (1, 1, 0), !=, dfq_rand_uniform_at (1, 1 | (1ull << 40), 0));
    g_assert_cmpfloat (dfq_rand_uniform_at (1, 1, 0), !=, dfq_rand_uniform_at (1 | (1ull << 40), 1, 0));
    for (guint64 i = 0; i < 1000; i++) {
        float u = dfq_rand_uniform_at (5, 5, i);
        g_assert_true (u >= 0.0f && u < 1.0f);
    }
}

static void
test_rand_normal_moments (TensorFixture *f, gconstpointer data)
{
    (void) data;
    g_test_summary ("dfq_rand_normal_fill on 100k samples: mean and std match (within "
                    "about 6 standard errors)");
    const gint64 n = 100000;
    DfqTensor *t = dfq_tensor_new_1d (f->arena, DFQ_DTYPE_F32, n);
    dfq_rand_normal_fill (t, 2024, 3, 1.5f, 2.0f);
    const float *x = dfq_tensor_f32 (t);
    double s = 0.0, ss = 0.0;
    for (gint64 i = 0; i < n; i++)
        s += x[i];
    double mean = s / n;
    for (gint64 i = 0; i < n; i++)
        ss += (x[i] - mean) * (x[i] - mean);
    double std = sqrt (ss / (n - 1));
    /* standard error of the mean 2/sqrt(n) = 0.0063, of the std about 0.0045 */
    g_assert_cmpfloat_with_epsilon (mean, 1.5, 0.04);
    g_assert_cmpfloat_with_epsilon (std, 2.0, 0.03);

    DfqTensor *u = dfq_tensor_new_1d (f->arena, DFQ_DTYPE_F32, n);
    dfq_rand_uniform_fill (u, 2024, 4, -1.0f, 3.0f);
    s = 0.0;
    for (gint64 i = 0; i < n; i++) {
        float v = dfq_tensor_f32 (u)[i];
        g_assert_true (v >= -1.0f && v <= 3.0f);
        s += v;
    }
    /* mean 1, std of the mean 4/sqrt(12 n) = 0.0037 */
    g_assert_cmpfloat_with_epsilon (s / n, 1.0, 0.025);
}

static void
test_rand_thread_independent (TensorFixture *f, gconstpointer data)
{
    (void) data;
    g_test_summary ("Fills large enough to be threaded give bit-identical results "
                    "with 1 and 2 threads");
    const gint64 n = 200003; /* above the fills' parallel threshold, odd */
    int prev = dfq_get_num_threads ();
    DfqTensor *r[2][3];
    for (int k = 0; k < 2; k++) {
        dfq_set_num_threads (k + 1);
        r[k][0] = dfq_tensor_new_1d (f->arena, DFQ_DTYPE_F32, n);
        r[k][1] = dfq_tensor_new_1d (f->arena, DFQ_DTYPE_F32, n);
        r[k][2] = dfq_tensor_new_1d (f->arena, DFQ_DTYPE_I32, n);
        dfq_rand_normal_fill (r[k][0], 11, 1, 0.0f, 1.0f);
        dfq_rand_uniform_fill (r[k][1], 11, 2, 0.0f, 1.0f);
        dfq_rand_int_fill (r[k][2], 11, 3, 10);
    }
    dfq_set_num_threads (prev);
    for (int j = 0; j < 3; j++)
        g_assert_cmpmem (r[0][j]->data, n * 4, r[1][j]->data, n * 4);
    /* element i equals the single draw for index i */
    g_assert_cmpfloat (dfq_tensor_f32 (r[0][0])[12345], ==, dfq_rand_normal_at (11, 1, 12345));
    for (gint64 i = 0; i < n; i++)
        g_assert_true (dfq_tensor_i32 (r[0][2])[i] >= 0 && dfq_tensor_i32 (r[0][2])[i] < 10);
}

static void
test_rand_permutation (void)
{
    g_test_summary ("dfq_rand_permutation returns each of 0..n-1 exactly once, "
                    "deterministically, and depends on the stream");
    const guint32 n = 1000;
    g_autofree guint32 *p = g_new0 (guint32, n);
    g_autofree guint32 *q = g_new0 (guint32, n);
    g_autofree guint32 *r = g_new0 (guint32, n);
    g_autofree gboolean *seen = g_new0 (gboolean, n);
    dfq_rand_permutation (p, n, 9, 1);
    dfq_rand_permutation (q, n, 9, 1);
    dfq_rand_permutation (r, n, 9, 2);
    guint n_fixed = 0;
    for (guint32 i = 0; i < n; i++) {
        g_assert_cmpuint (p[i], <, n);
        g_assert_false (seen[p[i]]);
        seen[p[i]] = TRUE;
        if (p[i] == i)
            n_fixed++;
    }
    g_assert_cmpmem (p, n * sizeof (guint32), q, n * sizeof (guint32));
    g_assert_false (memcmp (p, r, n * sizeof (guint32)) == 0);
    g_assert_cmpuint (n_fixed, <, 10); /* expected 1 for a uniform permutation */
    /* edge sizes */
    guint32 one = 77;
    dfq_rand_permutation (&one, 1, 9, 1);
    g_assert_cmpuint (one, ==, 0);
    dfq_rand_permutation (NULL, 0, 9, 1);
}

/* ---- autograd ---- */

static const float xs[5] = { -1.5f, -0.25f, 0.0f, 0.75f, 2.0f };

static void
test_autograd_square (TensorFixture *f, gconstpointer data)
{
    (void) data;
    g_test_summary ("y = sum(x * x): dy/dx = 2x (both operands of mul are the same tensor)");
    DfqTensor *x = tensor_from (f->arena, xs, 5);
    dfq_tensor_set_param (x);
    DfqTensor *y = dfq_mul (f->scratch, x, x);
    g_assert_cmpint (y->op, ==, DFQ_OP_MUL);
    g_assert_true (dfq_tensor_requires_grad (y));
    DfqTensor *loss = dfq_sum (f->scratch, y);
    dfq_backward (loss, f->scratch);
    g_assert_cmpfloat_with_epsilon (dfq_tensor_f32 (loss)[0], 1.5f * 1.5f + 0.0625f + 0.5625f + 4.0f, 1e-5);
    for (int i = 0; i < 5; i++)
        g_assert_cmpfloat_with_epsilon (dfq_tensor_f32 (x->grad)[i], 2.0f * xs[i], 1e-6);
}

static void
test_autograd_used_twice (TensorFixture *f, gconstpointer data)
{
    (void) data;
    g_test_summary ("A tensor feeding two paths gets the sum of both: "
                    "d/dx sum(3x + x*w) = 3 + w, and dw = x");
    static const float ws[5] = { 0.5f, -2.0f, 1.0f, 3.0f, -0.5f };
    DfqTensor *x = tensor_from (f->arena, xs, 5);
    DfqTensor *w = tensor_from (f->arena, ws, 5);
    dfq_tensor_set_param (x);
    dfq_tensor_set_param (w);
    DfqTensor *h = dfq_affine (f->scratch, x, 3.0f, 1.0f);
    DfqTensor *loss = dfq_sum (f->scratch, dfq_add (f->scratch, h, dfq_mul (f->scratch, x, w)));
    dfq_backward (loss, f->scratch);
    for (int i = 0; i < 5; i++) {
        g_assert_cmpfloat_with_epsilon (dfq_tensor_f32 (x->grad)[i], 3.0f + ws[i], 1e-6);
        g_assert_cmpfloat_with_epsilon (dfq_tensor_f32 (w->grad)[i], xs[i], 1e-6);
    }
    /* An intermediate used twice accumulates too: sum(h * h) with h = 3x + 1. */
    dfq_tensor_zero_grad (x);
    DfqTensor *h2 = dfq_affine (f->scratch, x, 3.0f, 1.0f);
    dfq_backward (dfq_sum (f->scratch, dfq_mul (f->scratch, h2, h2)), f->scratch);
    for (int i = 0; i < 5; i++)
        g_assert_cmpfloat_with_epsilon (dfq_tensor_f32 (x->grad)[i], 6.0f * (3.0f * xs[i] + 1.0f), 1e-5);
}

static void
test_autograd_detach (TensorFixture *f, gconstpointer data)
{
    (void) data;
    g_test_summary ("dfq_detach shares data but stops the gradient: "
                    "d/dx sum(detach(x) * x) = x, not 2x");
    DfqTensor *x = tensor_from (f->arena, xs, 5);
    dfq_tensor_set_param (x);
    DfqTensor *d = dfq_detach (f->scratch, x);
    g_assert_true (d->data == x->data);
    g_assert_false (dfq_tensor_requires_grad (d));
    g_assert_cmpint (d->op, ==, DFQ_OP_NONE);
    dfq_backward (dfq_sum (f->scratch, dfq_mul (f->scratch, d, x)), f->scratch);
    for (int i = 0; i < 5; i++)
        g_assert_cmpfloat_with_epsilon (dfq_tensor_f32 (x->grad)[i], xs[i], 1e-6);
    /* A loss that depends only on detached values leaves the grad alone. */
    DfqTensor *l2 = dfq_sum (f->scratch, dfq_mul (f->scratch, d, d));
    g_assert_false (dfq_tensor_requires_grad (l2));
    dfq_backward (l2, f->scratch);
    for (int i = 0; i < 5; i++)
        g_assert_cmpfloat_with_epsilon (dfq_tensor_f32 (x->grad)[i], xs[i], 1e-6);
}

static void
test_autograd_no_grad_mode (TensorFixture *f, gconstpointer data)
{
    (void) data;
    g_test_summary ("With grad mode off, ops compute but record nothing: results are "
                    "leaves (op NONE, no sources) that need no gradient");
    DfqTensor *x = tensor_from (f->arena, xs, 5);
    dfq_tensor_set_param (x);
    gboolean prev = dfq_set_grad_enabled (FALSE);
    g_assert_true (prev);
    g_assert_false (dfq_grad_enabled ());
    DfqTensor *y = dfq_mul (f->scratch, x, x);
    gint64 shape[2] = { 1, 5 };
    DfqTensor *r = dfq_reshape (f->scratch, x, 2, shape);
    DfqTensor *s = dfq_sum (f->scratch, y);
    dfq_set_grad_enabled (prev);
    g_assert_true (dfq_grad_enabled ());
    for (int i = 0; i < 3; i++) {
        DfqTensor *t = i == 0 ? y : (i == 1 ? r : s);
        g_assert_cmpint (t->op, ==, DFQ_OP_NONE);
        g_assert_null (t->src[0]);
        g_assert_false (dfq_tensor_requires_grad (t));
    }
    g_assert_cmpfloat_with_epsilon (dfq_tensor_f32 (y)[4], 4.0f, 1e-6);
    /* With it back on, the same op records again. */
    DfqTensor *y2 = dfq_mul (f->scratch, x, x);
    g_assert_cmpint (y2->op, ==, DFQ_OP_MUL);
    g_assert_true (y2->src[0] == x);
    /* An op on leaves that need no gradient records nothing either. */
    DfqTensor *c = tensor_from (f->arena, xs, 5);
    DfqTensor *z = dfq_add (f->scratch, c, c);
    g_assert_cmpint (z->op, ==, DFQ_OP_NONE);
}

static void
test_autograd_param_accumulates (TensorFixture *f, gconstpointer data)
{
    (void) data;
    g_test_summary ("A PARAM's .grad adds up across backward calls (and scratch resets) "
                    "until dfq_tensor_zero_grad");
    static const float ws[5] = { 0.5f, -2.0f, 1.0f, 3.0f, -0.5f };
    DfqTensor *x = tensor_from (f->arena, xs, 5);
    DfqTensor *w = tensor_from (f->arena, ws, 5);
    dfq_tensor_set_param (w);
    for (int step = 1; step <= 3; step++) {
        DfqTensor *loss = dfq_sum (f->scratch, dfq_mul (f->scratch, w, x));
        dfq_backward (loss, f->scratch);
        for (int i = 0; i < 5; i++)
            g_assert_cmpfloat_with_epsilon (dfq_tensor_f32 (w->grad)[i], step * xs[i], 1e-6);
        dfq_arena_reset (f->scratch);
    }
    dfq_tensor_zero_grad (w);
    for (int i = 0; i < 5; i++)
        g_assert_cmpfloat (dfq_tensor_f32 (w->grad)[i], ==, 0.0f);
}

static void
test_autograd_reshape_aliases (TensorFixture *f, gconstpointer data)
{
    (void) data;
    g_test_summary ("dfq_reshape shares its source's data (no copy) and passes the "
                    "gradient back unchanged");
    DfqTensor *x = dfq_tensor_new_4d (f->arena, DFQ_DTYPE_F32, 2, 3, 2, 2);
    dfq_rand_normal_fill (x, 1, 1, 0.0f, 1.0f);
    dfq_tensor_set_param (x);
    gint64 shape[2] = { 2, 12 };
    DfqTensor *r = dfq_reshape (f->scratch, x, 2, shape);
    g_assert_true (r->data == x->data);
    g_assert_true (r->view_src == x);
    g_assert_cmpint (r->op, ==, DFQ_OP_RESHAPE);
    g_assert_cmpint (r->stride[0], ==, 12);
    g_assert_true (dfq_tensor_requires_grad (r));
    /* sum(3 * r) -> dx = 3 */
    dfq_backward (dfq_sum (f->scratch, dfq_affine (f->scratch, r, 3.0f, 0.0f)), f->scratch);
    for (gint64 i = 0; i < 24; i++)
        g_assert_cmpfloat (dfq_tensor_f32 (x->grad)[i], ==, 3.0f);
    /* writes through the source are visible through the view */
    dfq_tensor_f32 (x)[5] = 42.0f;
    g_assert_cmpfloat (dfq_tensor_f32 (r)[5], ==, 42.0f);
}

int
main (int argc, char **argv)
{
    /* No G_TEST_OPTION_ISOLATE_DIRS: nothing here touches files, and GLib 2.74 leaks
     * the isolated dir strings, which the valgrind setup reports. */
    g_test_init (&argc, &argv, NULL);
#define ADD_F(path, fn) g_test_add (path, TensorFixture, NULL, tensor_setup, fn, tensor_teardown)
    ADD_F ("/arena/alignment", test_arena_alignment);
    ADD_F ("/arena/steady-state", test_arena_steady_state);
#ifdef TEST_ASAN
    g_test_add_data_func ("/arena/asan/overrun", "overrun", test_arena_asan);
    g_test_add_data_func ("/arena/asan/reset", "reset", test_arena_asan);
#endif
    ADD_F ("/tensor/new", test_tensor_new);
    g_test_add_func ("/rand/philox/deterministic", test_rand_philox_deterministic);
    ADD_F ("/rand/normal/moments", test_rand_normal_moments);
    ADD_F ("/rand/fill/thread-independent", test_rand_thread_independent);
    g_test_add_func ("/rand/permutation", test_rand_permutation);
    ADD_F ("/autograd/square", test_autograd_square);
    ADD_F ("/autograd/used-twice", test_autograd_used_twice);
    ADD_F ("/autograd/detach", test_autograd_detach);
    ADD_F ("/autograd/no-grad-mode", test_autograd_no_grad_mode);
    ADD_F ("/autograd/param-accumulates", test_autograd_param_accumulates);
    ADD_F ("/autograd/reshape-aliases", test_autograd_reshape_aliases);
#undef ADD_F
    return g_test_run ();
}
