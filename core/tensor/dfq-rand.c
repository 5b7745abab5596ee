/* Counter-based RNG (core/tensor): Philox4x32-10 (Salmon et al., SC'11). The key is
 * the seed, the counter is (index, stream), so any element can be drawn on its
 * own and results are identical for every thread count. */
#include <math.h>

#include <dfq/dfq-rand.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

void
dfq_rand_philox (guint64 seed, guint64 stream, guint64 index, guint32 out[4])
{
    guint32 c0 = (guint32) index, c1 = (guint32) (index >> 32);
    guint32 c2 = (guint32) stream, c3 = (guint32) (stream >> 32);
    guint32 k0 = (guint32) seed, k1 = (guint32) (seed >> 32);
    for (int r = 0; r < 10; r++) {
        guint64 p0 = (guint64) PHILOX_M0 * c0;
        guint64 p1 = (guint64) PHILOX_M1 * c2;
        guint32 n0 = (guint32) (p1 >> 32) ^ c1 ^ k0;
        guint32 n1 = (guint32) p1;
        guint32 n2 = (guint32) (p0 >> 32) ^ c3 ^ k1;
        guint32 n3 = (guint32) p0;
        c0 = n0;
        c1 = n1;
        c2 = n2;
        c3 = n3;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

static inline float
dfq_rand_u32_to_unit (guint32 x)
{
    /* 24 random bits -> [0, 1) exactly representable in float */
    return (float) (x >> 8) * (1.0f / 16777216.0f);
}

float
dfq_rand_uniform_at (guint64 seed, guint64 stream, guint64 index)
{
    guint32 r[4];
    dfq_rand_philox (seed, stream, index, r);
    return dfq_rand_u32_to_unit (r[0]);
}

float
dfq_rand_normal_at (guint64 seed, guint64 stream, guint64 index)
{
    guint32 r[4];
    dfq_rand_philox (seed, stream, index, r);
    /* Box-Muller; u1 in (0, 1] so log() is finite */
    double u1 = ((double) r[0] + 1.0) / 4294967296.0;
    double u2 = (double) r[1] / 4294967296.0;
    return (float) (sqrt (-2.0 * log (u1)) * cos (2.0 * G_PI * u2));
}

void
dfq_rand_normal_fill (DfqTensor *t, guint64 seed, guint64 stream, float mean, float std)
{
    g_return_if_fail (t->dtype == DFQ_DTYPE_F32);
    float *d = dfq_tensor_f32 (t);
    gint64 n = dfq_tensor_numel (t);
#pragma omp parallel for schedule(static) if (n > 65536)
    for (gint64 i = 0; i < n; i++)
        d[i] = mean + std * dfq_rand_normal_at (seed, stream, (guint64) i);
}

void
dfq_rand_uniform_fill (DfqTensor *t, guint64 seed, guint64 stream, float lo, float hi)
{
    g_return_if_fail (t->dtype == DFQ_DTYPE_F32);
    float *d = dfq_tensor_f32 (t);
    gint64 n = dfq_tensor_numel (t);
#pragma omp parallel for schedule(static) if (n > 65536)
    for (gint64 i = 0; i < n; i++)
        d[i] = lo + (hi - lo) * dfq_rand_uniform_at (seed, stream, (guint64) i);
}

void
dfq_rand_int_fill (DfqTensor *t, guint64 seed, guint64 stream, gint32 n)
{
    g_return_if_fail (t->dtype == DFQ_DTYPE_I32);
    g_return_if_fail (n > 0);
    gint32 *d = dfq_tensor_i32 (t);
    gint64 count = dfq_tensor_numel (t);
    for (gint64 i = 0; i < count; i++) {
        guint32 r[4];
        dfq_rand_philox (seed, stream, (guint64) i, r);
        /* 64-bit multiply-shift: bias below 2^-32 */
        d[i] = (gint32) (((guint64) r[0] * (guint64) n) >> 32);
    }
}

void
dfq_rand_permutation (guint32 *out, guint32 n, guint64 seed, guint64 stream)
{
    for (guint32 i = 0; i < n; i++)
        out[i] = i;
    for (guint32 i = n; i > 1; i--) {
        guint32 r[4];
        dfq_rand_philox (seed, stream, (guint64) i, r);
        guint32 j = (guint32) (((guint64) r[0] * (guint64) i) >> 32);
        guint32 tmp = out[i - 1];
        out[i - 1] = out[j];
        out[j] = tmp;
    }
}

void
dfq_rng_init (DfqRng *rng, guint64 seed)
{
    rng->seed = seed;
    rng->next_stream = 1;
}

guint64
dfq_rng_stream (DfqRng *rng)
{
    return rng->next_stream++;
}
