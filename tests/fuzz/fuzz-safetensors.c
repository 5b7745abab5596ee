/* libFuzzer target over the safetensors reader (core/io/dfq-safetensors.c):
 * any byte string must give either a valid file or a DFQ_MODEL_ERROR, never a
 * crash, a sanitizer report or a leak; a valid file is then driven through
 * every accessor, conversion and the table loader.
 *
 * Build (clang; tests/fuzz/meson.build compiles libdfq's sources once more
 * with coverage instrumentation into the target):
 *   CC=clang meson setup build-fuzz -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false
 *   ninja -C build-fuzz tests/fuzz/fuzz-safetensors
 * Run (the committed corpus is the seed; new inputs go to the first dir):
 *   mkdir -p build-fuzz/corpus
 *   build-fuzz/tests/fuzz/fuzz-safetensors -max_total_time=300 \
 *       -dict=tests/fuzz/safetensors.dict build-fuzz/corpus tests/data/corpus
 * A crash leaves crash-<sha1>; add it to tests/data/corpus with an expectation
 * in tests/data/test-safetensors.c once fixed. */
#include <stdint.h>
#include <string.h>

#include <dfq/dfq.h>

static void
fuzz_check_error (const GError *error)
{
    /* the reader's contract: set iff NULL is returned, in its own domain */
    if (error == NULL || error->domain != DFQ_MODEL_ERROR || error->message == NULL || error->message[0] == '\0')
        __builtin_trap ();
}

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    g_autoptr (GBytes) bytes = g_bytes_new_static (data, size);
    g_autoptr (GError) error = NULL;
    g_autoptr (DfqSafetensors) st = dfq_safetensors_new_from_bytes (bytes, "fuzz", &error);
    if (st == NULL) {
        fuzz_check_error (error);
        return 0;
    }
    if (error != NULL)
        __builtin_trap ();

    /* Every tensor converts; offsets lie inside the input. */
    guint n = dfq_safetensors_get_n_tensors (st);
    g_autoptr (DfqArena) arena = dfq_arena_new (0);
    g_autoptr (GHashTable) expected = g_hash_table_new (g_str_hash, g_str_equal);
    for (guint i = 0; i < n; i++) {
        const DfqSafetensorsInfo *info = dfq_safetensors_get_info (st, i);
        if (dfq_safetensors_lookup (st, info->name) != info)
            __builtin_trap ();
        gsize raw_size = 0;
        const guint8 *raw = dfq_safetensors_get_data (st, info->name, &raw_size);
        if (raw < data || raw + raw_size > data + size)
            __builtin_trap ();
        g_autofree float *out = g_new (float, MAX (info->numel, 1));
        if (!dfq_safetensors_read_f32 (st, info->name, out, (gsize) info->numel, NULL))
            __builtin_trap ();
        DfqTensor *t = dfq_safetensors_get_tensor (st, info->name, arena, &error);
        if (t == NULL) {
            fuzz_check_error (error);
            g_clear_error (&error);
            continue;
        }
        /* half of the tensors are expected by the "model", as I32 where the data is integer */
        if (i % 2 == 0) {
            DfqTensor *dst = t;
            if (info->dtype == DFQ_SAFETENSORS_I64 || info->dtype == DFQ_SAFETENSORS_I32)
                dst = dfq_tensor_new (arena, DFQ_DTYPE_I32, t->n_dims, t->shape);
            g_hash_table_insert (expected, (gpointer) info->name, dst);
        }
    }
    g_hash_table_insert (expected, "fuzz.expected", dfq_tensor_new_1d (arena, DFQ_DTYPE_F32, 1));
    dfq_safetensors_get_metadata (st, "format");

    /* The loader: missing (always), then with renames and leniency. */
    const char *ignore[] = { "*num_batches_tracked", NULL };
    DfqSafetensorsLoadOptions opt = { .ignore = ignore };
    if (dfq_safetensors_load_into (st, expected, &opt, &error))
        __builtin_trap (); /* "fuzz.expected" is never in the file under that name */
    fuzz_check_error (error);
    g_clear_error (&error);

    /* built once: compiling the rules' regexes per input would dominate the run */
    static DfqSafetensorsRenames *renames = NULL;
    if (renames == NULL) {
        renames = dfq_safetensors_renames_new_pytorchcv_resnet_cifar (3);
        dfq_safetensors_renames_add_prefix (renames, "module.", "");
    }
    opt.renames = renames;
    opt.allow_missing = TRUE;
    opt.allow_unexpected = TRUE;
    if (!dfq_safetensors_load_into (st, expected, &opt, &error))
        fuzz_check_error (error);
    return 0;
}
