/* Tests of core/io/dfq-safetensors.c: the corrupt-file corpus (each file its own
 * error code and message), dtype decoding, save -> load round trips, the
 * model-table loader with renames, and the PyTorch-written ResNet-20 fixture. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <glib/gstdio.h>
#include <json-glib/json-glib.h>

#include "dfq-test-util.h"

/* ------------------------------------------------------------------------ */
/* Helpers */

/* A safetensors file in memory: length, header text, data. */
static GBytes *
make_file (const char *header, const void *data, gsize data_len)
{
    gsize hlen = strlen (header);
    guint8 *buf = g_malloc (8 + hlen + data_len);
    guint64 le = GUINT64_TO_LE ((guint64) hlen);
    memcpy (buf, &le, 8);
    memcpy (buf + 8, header, hlen);
    if (data_len)
        memcpy (buf + 8 + hlen, data, data_len);
    return g_bytes_new_take (buf, 8 + hlen + data_len);
}

static char *
make_tmp_dir (void)
{
    g_autoptr (GError) error = NULL;
    char *dir = g_dir_make_tmp ("dfq-st-XXXXXX", &error);
    g_assert_no_error (error);
    return dir;
}

static void
remove_tree (const char *dir)
{
    GDir *d = g_dir_open (dir, 0, NULL);
    if (d != NULL) {
        const char *name;
        while ((name = g_dir_read_name (d)) != NULL) {
            g_autofree char *p = g_build_filename (dir, name, NULL);
            g_remove (p);
        }
        g_dir_close (d);
    }
    g_rmdir (dir);
}

static const char *
shared_fixture (const char *name, char **out_path)
{
    const char *env = g_getenv ("DFQ_SHARED_DIR");
    char *path = env ? g_build_filename (env, "fixtures", name, NULL)
                     : g_build_filename (g_test_get_dir (G_TEST_DIST), "..", "..", "shared", "fixtures", name, NULL);
    if (!g_file_test (path, G_FILE_TEST_IS_REGULAR)) {
        g_free (path);
        path = NULL;
    }
    *out_path = path;
    return path;
}

/* ------------------------------------------------------------------------ */
/* The corpus */

typedef struct {
    const char *file;
    int code; /* -1 = valid */
    const char *fragment;
} CorpusCase;

static const CorpusCase corpus_cases[] = {
    { "valid-small.safetensors", -1, NULL },
    { "valid-empty.safetensors", -1, NULL },
    { "valid-zero-size.safetensors", -1, NULL },
    { "empty.safetensors", DFQ_MODEL_ERROR_FORMAT, "too short for the 8-byte header length" },
    { "short-length.safetensors", DFQ_MODEL_ERROR_FORMAT, "too short for the 8-byte header length" },
    { "header-too-large.safetensors", DFQ_MODEL_ERROR_FORMAT, "header length 200000000 exceeds the 100000000-byte limit" },
    { "header-beyond-file.safetensors", DFQ_MODEL_ERROR_FORMAT, "header length 1000 is larger than the file (10 bytes)" },
    { "truncated-header.safetensors", DFQ_MODEL_ERROR_FORMAT, "is larger than the file" },
    { "truncated-data.safetensors", DFQ_MODEL_ERROR_FORMAT, "tensor 'n': data_offsets [28, 36] out of the 31-byte data buffer" },
    { "bad-utf8.safetensors", DFQ_MODEL_ERROR_FORMAT, "header is not valid UTF-8 (byte 3 of the header)" },
    { "nul-in-header.safetensors", DFQ_MODEL_ERROR_FORMAT, "header is not valid UTF-8 (byte 5 of the header)" },
    { "bad-json.safetensors", DFQ_MODEL_ERROR_FORMAT, "header is not valid JSON" },
    { "not-object.safetensors", DFQ_MODEL_ERROR_FORMAT, "header is not a JSON object" },
    { "deep-nesting.safetensors", DFQ_MODEL_ERROR_FORMAT, "header nests JSON more than 16 levels deep" },
    { "deep-nesting-in-entry.safetensors", DFQ_MODEL_ERROR_FORMAT, "header nests JSON more than 16 levels deep" },
    { "empty-header.safetensors", DFQ_MODEL_ERROR_FORMAT, "header is not a JSON object" },
    { "entry-not-object.safetensors", DFQ_MODEL_ERROR_FORMAT, "tensor 'w': entry is not a JSON object" },
    { "missing-dtype.safetensors", DFQ_MODEL_ERROR_FORMAT, "tensor 'w': missing \"dtype\"" },
    { "missing-shape.safetensors", DFQ_MODEL_ERROR_FORMAT, "tensor 'w': missing \"shape\"" },
    { "missing-offsets.safetensors", DFQ_MODEL_ERROR_FORMAT, "tensor 'w': missing \"data_offsets\"" },
    { "dtype-not-string.safetensors", DFQ_MODEL_ERROR_FORMAT, "tensor 'w': \"dtype\" is not a string" },
    { "unknown-dtype.safetensors", DFQ_MODEL_ERROR_FORMAT, "tensor 'w': unknown dtype 'F8_E4M3' (supported: F64, F32, F16, BF16, I64" },
    { "shape-not-array.safetensors", DFQ_MODEL_ERROR_FORMAT, "tensor 'w': \"shape\" is not an array" },
    { "negative-shape.safetensors", DFQ_MODEL_ERROR_FORMAT, "tensor 'w': shape dimension 0 is negative" },
    { "float-shape.safetensors", DFQ_MODEL_ERROR_FORMAT, "tensor 'w': shape dimension 0 is not an integer" },
    { "string-shape.safetensors", DFQ_MODEL_ERROR_FORMAT, "tensor 'w': shape dimension 0 is not an integer" },
    { "rank-too-high.safetensors", DFQ_MODEL_ERROR_FORMAT, "tensor 'w': rank 17 exceeds 16" },
    { "shape-overflow.safetensors", DFQ_MODEL_ERROR_FORMAT, "tensor 'w': shape is too large" },
    { "offsets-wrong-length.safetensors", DFQ_MODEL_ERROR_FORMAT, "tensor 'w': \"data_offsets\" is not an array of two integers" },
    { "negative-offset.safetensors", DFQ_MODEL_ERROR_FORMAT, "tensor 'w': data_offsets begin is negative" },
    { "float-offset.safetensors", DFQ_MODEL_ERROR_FORMAT, "tensor 'w': data_offsets end is not an integer" },
    { "offsets-out-of-buffer.safetensors", DFQ_MODEL_ERROR_FORMAT, "tensor 'w': data_offsets [0, 400] out of the 16-byte data buffer" },
    { "begin-after-end.safetensors", DFQ_MODEL_ERROR_FORMAT, "tensor 'w': data_offsets begin 8 > end 4" },
    { "overlap.safetensors", DFQ_MODEL_ERROR_FORMAT, "tensors 'a' [0, 8) and 'b' [4, 12) overlap" },
    { "size-mismatch.safetensors", DFQ_MODEL_ERROR_FORMAT, "tensor 'w': F32 x 4 elements = 16 bytes but data_offsets span 12 bytes" },
    { "metadata-not-object.safetensors", DFQ_MODEL_ERROR_FORMAT, "\"__metadata__\" is not a JSON object" },
    { "metadata-not-string.safetensors", DFQ_MODEL_ERROR_FORMAT, "\"__metadata__\" value of 'epoch' is not a string" },
};

static void
test_corpus (void)
{
    g_test_summary ("Every corpus file gives its own error code and a message naming the file and the defect");
    for (guint i = 0; i < G_N_ELEMENTS (corpus_cases); i++) {
        const CorpusCase *c = &corpus_cases[i];
        const char *path = g_test_get_filename (G_TEST_DIST, "data", "corpus", c->file, NULL);
        g_autoptr (GError) error = NULL;
        g_autoptr (DfqSafetensors) st = dfq_safetensors_new_from_file (path, &error);
        if (c->code < 0) {
            g_assert_no_error (error);
            g_assert_nonnull (st);
            continue;
        }
        g_assert_null (st);
        g_assert_error (error, DFQ_MODEL_ERROR, c->code);
        g_test_message ("%s", error->message);
        if (strstr (error->message, c->fragment) == NULL || strstr (error->message, c->file) == NULL)
            g_error ("%s: message \"%s\" lacks \"%s\" or the file name", c->file, error->message, c->fragment);

        /* The same bytes from memory give the same error, naming the display name. */
        g_autofree char *contents = NULL;
        gsize len = 0;
        g_assert_true (g_file_get_contents (path, &contents, &len, NULL));
        g_autoptr (GBytes) bytes = g_bytes_new (contents, len);
        g_autoptr (GError) error2 = NULL;
        g_autoptr (DfqSafetensors) st2 = dfq_safetensors_new_from_bytes (bytes, c->file, &error2);
        g_assert_null (st2);
        g_assert_error (error2, DFQ_MODEL_ERROR, c->code);
        g_assert_true (strstr (error2->message, c->fragment) != NULL);
    }
}

static void
test_corpus_complete (void)
{
    g_test_summary ("Every file in tests/data/corpus has an expectation (new fuzz findings must be described)");
    const char *dir = g_test_get_filename (G_TEST_DIST, "data", "corpus", NULL);
    g_autoptr (GError) error = NULL;
    GDir *d = g_dir_open (dir, 0, &error);
    g_assert_no_error (error);
    const char *name;
    guint n = 0;
    while ((name = g_dir_read_name (d)) != NULL) {
        if (!g_str_has_suffix (name, ".safetensors"))
            continue;
        gboolean known = FALSE;
        for (guint i = 0; i < G_N_ELEMENTS (corpus_cases); i++)
            known |= strcmp (corpus_cases[i].file, name) == 0;
        if (!known)
            g_error ("corpus file %s has no entry in corpus_cases[]", name);
        n++;
    }
    g_dir_close (d);
    g_assert_cmpuint (n, ==, G_N_ELEMENTS (corpus_cases));
}

static void
test_io_errors (void)
{
    g_test_summary ("A missing file or a directory is DFQ_MODEL_ERROR_IO naming the path");
    g_autoptr (GError) error = NULL;
    g_autoptr (DfqSafetensors) st = dfq_safetensors_new_from_file ("/nonexistent/dir/w.safetensors", &error);
    g_assert_null (st);
    g_assert_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_IO);
    g_assert_nonnull (strstr (error->message, "/nonexistent/dir/w.safetensors"));

    g_autofree char *dir = make_tmp_dir ();
    g_clear_error (&error);
    g_autoptr (DfqSafetensors) st2 = dfq_safetensors_new_from_file (dir, &error);
    g_assert_null (st2);
    g_assert_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_IO);

    /* Saving into a directory that does not exist */
    g_autoptr (DfqArena) arena = dfq_arena_new (0);
    g_autoptr (GHashTable) t = g_hash_table_new (g_str_hash, g_str_equal);
    g_hash_table_insert (t, "w", dfq_tensor_new_1d (arena, DFQ_DTYPE_F32, 3));
    g_clear_error (&error);
    g_assert_false (dfq_safetensors_save ("/nonexistent/dir/out.safetensors", t, NULL, &error));
    g_assert_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_IO);
    g_assert_nonnull (strstr (error->message, "/nonexistent/dir/out.safetensors"));
    remove_tree (dir);
}

/* ------------------------------------------------------------------------ */
/* Decoding */

static void
test_decode (void)
{
    g_test_summary ("F16, BF16, I64, I32, U8, F64 decode to the known float values; metadata and listing");
    const guint16 f16[] = { 0x3C00, 0xC000, 0x7BFF, 0x0001, 0x3555, 0x8000, 0x7C00, 0x0400 };
    const float f16_want[] = { 1.0f, -2.0f, 65504.0f, 5.9604644775390625e-08f, 0.333251953125f, -0.0f, INFINITY, 6.103515625e-05f };
    const guint16 bf16[] = { 0x3F80, 0xC040, 0x4049, 0x0000 };
    const float bf16_want[] = { 1.0f, -3.0f, 3.140625f, 0.0f };
    const gint64 i64[] = { 12345, -7, G_GINT64_CONSTANT (1) << 40 };
    const double f64[] = { 0.1, -1e10 };
    guint8 data[256];
    gsize off = 0;
    for (guint i = 0; i < G_N_ELEMENTS (f16); i++) {
        guint16 v = GUINT16_TO_LE (f16[i]);
        memcpy (data + off, &v, 2), off += 2;
    }
    for (guint i = 0; i < G_N_ELEMENTS (bf16); i++) {
        guint16 v = GUINT16_TO_LE (bf16[i]);
        memcpy (data + off, &v, 2), off += 2;
    }
    for (guint i = 0; i < G_N_ELEMENTS (i64); i++) {
        guint64 v = GUINT64_TO_LE ((guint64) i64[i]);
        memcpy (data + off, &v, 8), off += 8;
    }
    for (guint i = 0; i < G_N_ELEMENTS (f64); i++) {
        guint64 v;
        memcpy (&v, &f64[i], 8);
        v = GUINT64_TO_LE (v);
        memcpy (data + off, &v, 8), off += 8;
    }
    data[off++] = 200; /* U8 */
    data[off++] = 0xFF; /* I8 = -1 */
    g_assert_cmpuint (off, ==, 16 + 8 + 24 + 16 + 2);
    const char *header =
        "{\"h\":{\"dtype\":\"F16\",\"shape\":[2,4],\"data_offsets\":[0,16]},"
        "\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[16,24]},"
        "\"n\":{\"dtype\":\"I64\",\"shape\":[3],\"data_offsets\":[24,48]},"
        "\"d\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[48,64]},"
        "\"u\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[64,65]},"
        "\"s\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[65,66]},"
        "\"__metadata__\":{\"format\":\"pt\",\"note\":\"caf\\u00e9\"}}";
    g_autoptr (GBytes) bytes = make_file (header, data, off);
    g_autoptr (GError) error = NULL;
    g_autoptr (DfqSafetensors) st = dfq_safetensors_new_from_bytes (bytes, "decode", &error);
    g_assert_no_error (error);

    g_assert_cmpuint (dfq_safetensors_get_n_tensors (st), ==, 6);
    /* listed in data order */
    const char *order[] = { "h", "b", "n", "d", "u", "s" };
    for (guint i = 0; i < 6; i++)
        g_assert_cmpstr (dfq_safetensors_get_info (st, i)->name, ==, order[i]);
    const DfqSafetensorsInfo *info = dfq_safetensors_lookup (st, "h");
    g_assert_cmpint (info->dtype, ==, DFQ_SAFETENSORS_F16);
    g_assert_cmpint (info->n_dims, ==, 2);
    g_assert_cmpint (info->shape[0], ==, 2);
    g_assert_cmpint (info->shape[1], ==, 4);
    g_assert_cmpint (dfq_safetensors_lookup (st, "u")->n_dims, ==, 0);
    g_assert_cmpint (dfq_safetensors_lookup (st, "u")->numel, ==, 1);
    g_assert_null (dfq_safetensors_lookup (st, "__metadata__"));
    g_assert_cmpstr (dfq_safetensors_get_metadata (st, "format"), ==, "pt");
    g_assert_cmpstr (dfq_safetensors_get_metadata (st, "note"), ==, "caf\xc3\xa9");
    g_assert_cmpstr (dfq_safetensors_dtype_name (DFQ_SAFETENSORS_BF16), ==, "BF16");
    g_assert_cmpuint (dfq_safetensors_dtype_size (DFQ_SAFETENSORS_I64), ==, 8);

    float out[8];
    g_assert_true (dfq_safetensors_read_f32 (st, "h", out, 8, &error));
    for (guint i = 0; i < 8; i++) {
        g_assert_cmpfloat (out[i], ==, f16_want[i]);
        g_assert_cmpint (!!signbit (out[i]), ==, !!signbit (f16_want[i]));
    }
    g_assert_true (dfq_safetensors_read_f32 (st, "b", out, 4, &error));
    for (guint i = 0; i < 4; i++)
        g_assert_cmpfloat (out[i], ==, bf16_want[i]);
    g_assert_true (dfq_safetensors_read_f32 (st, "n", out, 3, &error));
    g_assert_cmpfloat (out[0], ==, 12345.0f);
    g_assert_cmpfloat (out[1], ==, -7.0f);
    g_assert_cmpfloat (out[2], ==, 1099511627776.0f);
    g_assert_true (dfq_safetensors_read_f32 (st, "d", out, 2, &error));
    g_assert_cmpfloat (out[0], ==, 0.1f);
    g_assert_cmpfloat (out[1], ==, -1e10f);
    g_assert_true (dfq_safetensors_read_f32 (st, "u", out, 1, &error));
    g_assert_cmpfloat (out[0], ==, 200.0f);
    g_assert_true (dfq_safetensors_read_f32 (st, "s", out, 1, &error));
    g_assert_cmpfloat (out[0], ==, -1.0f);
    g_assert_no_error (error);

    gsize size = 0;
    const guint8 *raw = dfq_safetensors_get_data (st, "b", &size);
    g_assert_cmpuint (size, ==, 8);
    g_assert_cmpmem (raw, 8, data + 16, 8);

    /* wrong count, missing name */
    g_assert_false (dfq_safetensors_read_f32 (st, "h", out, 7, &error));
    g_assert_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_SHAPE);
    g_clear_error (&error);
    g_assert_false (dfq_safetensors_read_f32 (st, "nope", out, 1, &error));
    g_assert_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_MISSING);
    g_assert_nonnull (strstr (error->message, "'nope'"));
    g_clear_error (&error);

    /* Into tensors: a scalar fits [1]; integers into I32; floats not into I32;
     * values beyond 32 bits refused. */
    g_autoptr (DfqArena) arena = dfq_arena_new (0);
    DfqTensor *t = dfq_safetensors_get_tensor (st, "h", arena, &error);
    g_assert_no_error (error);
    g_assert_cmpint (t->n_dims, ==, 2);
    g_assert_cmpfloat (dfq_tensor_f32 (t)[2], ==, 65504.0f);
    g_assert_cmpstr (t->name, ==, "h");
    DfqTensor *u = dfq_safetensors_get_tensor (st, "u", arena, &error);
    g_assert_cmpint (u->n_dims, ==, 1);
    g_assert_cmpint (u->shape[0], ==, 1);
    g_assert_cmpfloat (dfq_tensor_f32 (u)[0], ==, 200.0f);

    DfqTensor *i1 = dfq_tensor_new_1d (arena, DFQ_DTYPE_I32, 1);
    g_assert_true (dfq_safetensors_copy_to (st, "u", i1, &error));
    g_assert_cmpint (dfq_tensor_i32 (i1)[0], ==, 200);
    DfqTensor *i3 = dfq_tensor_new_1d (arena, DFQ_DTYPE_I32, 3);
    g_assert_false (dfq_safetensors_copy_to (st, "n", i3, &error));
    g_assert_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_FORMAT);
    g_assert_nonnull (strstr (error->message, "does not fit in 32 bits"));
    g_clear_error (&error);
    DfqTensor *i4 = dfq_tensor_new_1d (arena, DFQ_DTYPE_I32, 4);
    g_assert_false (dfq_safetensors_copy_to (st, "b", i4, &error));
    g_assert_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_FORMAT);
    g_clear_error (&error);
    DfqTensor *f8 = dfq_tensor_new_2d (arena, DFQ_DTYPE_F32, 4, 2);
    g_assert_false (dfq_safetensors_copy_to (st, "h", f8, &error));
    g_assert_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_SHAPE);
    g_assert_nonnull (strstr (error->message, "is [2, 4] in the file, [4, 2] in the model"));
    g_clear_error (&error);
}

static void
test_unaligned (void)
{
    g_test_summary ("Data at odd offsets (odd header length) decodes correctly");
    const char *header = "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[1,13]}}"; /* odd length */
    guint8 data[13] = { 0 };
    const float vals[3] = { 1.5f, -2.25f, 1e-3f };
    for (int i = 0; i < 3; i++) {
        guint32 b;
        memcpy (&b, &vals[i], 4);
        b = GUINT32_TO_LE (b);
        memcpy (data + 1 + 4 * i, &b, 4);
    }
    g_autoptr (GBytes) bytes = make_file (header, data, sizeof data);
    g_autoptr (GError) error = NULL;
    g_autoptr (DfqSafetensors) st = dfq_safetensors_new_from_bytes (bytes, NULL, &error);
    g_assert_no_error (error);
    float out[3];
    g_assert_true (dfq_safetensors_read_f32 (st, "w", out, 3, &error));
    g_assert_cmpmem (out, sizeof out, vals, sizeof vals);
}

/* ------------------------------------------------------------------------ */
/* Writing */

static void
check_reference_layout (const char *path)
{
    /* What the reference reader demands: header length fits, header starts with
     * '{', and the tensors tile the data buffer exactly, in offset order. We also
     * pad to 8 as the reference writer does. */
    g_autofree char *contents = NULL;
    gsize len = 0;
    g_assert_true (g_file_get_contents (path, &contents, &len, NULL));
    guint64 hlen;
    memcpy (&hlen, contents, 8);
    hlen = GUINT64_FROM_LE (hlen);
    g_assert_cmpuint (hlen % 8, ==, 0);
    g_assert_cmpuint (8 + hlen, <=, len);
    g_assert_cmpint (contents[8], ==, '{');
    g_autoptr (JsonParser) parser = json_parser_new ();
    g_assert_true (json_parser_load_from_data (parser, contents + 8, (gssize) hlen, NULL));
    JsonObject *obj = json_node_get_object (json_parser_get_root (parser));
    g_autoptr (GList) names = json_object_get_members (obj);
    guint64 covered = 0;
    for (GList *l = names; l; l = l->next) {
        if (strcmp (l->data, "__metadata__") == 0)
            continue;
        JsonArray *off = json_object_get_array_member (json_object_get_object_member (obj, l->data), "data_offsets");
        g_assert_cmpint (json_array_get_int_element (off, 0), ==, (gint64) covered);
        covered = (guint64) json_array_get_int_element (off, 1);
    }
    g_assert_cmpuint (covered, ==, len - 8 - hlen);
}

static void
test_roundtrip (void)
{
    g_test_summary ("save -> load gives the same names, shapes, values and metadata; the file is in the reference layout");
    g_autoptr (DfqArena) arena = dfq_arena_new (0);
    g_autofree char *dir = make_tmp_dir ();
    g_autofree char *path = g_build_filename (dir, "model.safetensors", NULL);

    DfqTensor *w = dfq_tensor_new_4d (arena, DFQ_DTYPE_F32, 4, 3, 3, 3);
    dfq_rand_normal_fill (w, 7, 1, 0.0f, 1.0f);
    DfqTensor *b = dfq_tensor_new_1d (arena, DFQ_DTYPE_F32, 5);
    dfq_rand_normal_fill (b, 7, 2, 0.0f, 1.0f);
    DfqTensor *lab = dfq_tensor_new_1d (arena, DFQ_DTYPE_I32, 3);
    dfq_tensor_i32 (lab)[0] = -5, dfq_tensor_i32 (lab)[1] = 0, dfq_tensor_i32 (lab)[2] = G_MAXINT32;
    DfqTensor *m = dfq_tensor_new_2d (arena, DFQ_DTYPE_F32, 2, 3);
    dfq_rand_normal_fill (m, 7, 3, 0.0f, 1.0f);

    g_autoptr (GHashTable) tensors = g_hash_table_new (g_str_hash, g_str_equal);
    g_hash_table_insert (tensors, "layer.weight", w);
    g_hash_table_insert (tensors, "layer.bias", b);
    g_hash_table_insert (tensors, "labels", lab);
    g_hash_table_insert (tensors, "fc \"quoted\"\\name", m);
    g_autoptr (GHashTable) meta = g_hash_table_new (g_str_hash, g_str_equal);
    g_hash_table_insert (meta, "pipeline", "train-resnet20.yaml");
    g_hash_table_insert (meta, "accuracy", "94.15\n");

    g_autoptr (GError) error = NULL;
    g_assert_true (dfq_safetensors_save (path, tensors, meta, &error));
    g_assert_no_error (error);
    check_reference_layout (path);

    g_autoptr (DfqSafetensors) st = dfq_safetensors_new_from_file (path, &error);
    g_assert_no_error (error);
    g_assert_cmpstr (dfq_safetensors_get_name (st), ==, path);
    g_assert_cmpuint (dfq_safetensors_get_n_tensors (st), ==, 4);
    /* sorted names */
    g_assert_cmpstr (dfq_safetensors_get_info (st, 0)->name, ==, "fc \"quoted\"\\name");
    g_assert_cmpstr (dfq_safetensors_get_info (st, 1)->name, ==, "labels");
    g_assert_cmpstr (dfq_safetensors_get_info (st, 2)->name, ==, "layer.bias");
    g_assert_cmpint (dfq_safetensors_lookup (st, "labels")->dtype, ==, DFQ_SAFETENSORS_I32);
    g_assert_cmpstr (dfq_safetensors_get_metadata (st, "pipeline"), ==, "train-resnet20.yaml");
    g_assert_cmpstr (dfq_safetensors_get_metadata (st, "accuracy"), ==, "94.15\n");
    g_assert_cmpuint (g_hash_table_size (dfq_safetensors_get_metadata_table (st)), ==, 2);

    g_autoptr (GHashTable) expected = g_hash_table_new (g_str_hash, g_str_equal);
    DfqTensor *w2 = dfq_tensor_new_like (arena, w), *b2 = dfq_tensor_new_like (arena, b);
    DfqTensor *lab2 = dfq_tensor_new_like (arena, lab), *m2 = dfq_tensor_new_like (arena, m);
    g_hash_table_insert (expected, "layer.weight", w2);
    g_hash_table_insert (expected, "layer.bias", b2);
    g_hash_table_insert (expected, "labels", lab2);
    g_hash_table_insert (expected, "fc \"quoted\"\\name", m2);
    g_assert_true (dfq_safetensors_load_into (st, expected, NULL, &error));
    g_assert_no_error (error);
    g_assert_cmpmem (w2->data, 4 * 4 * 27, w->data, 4 * 4 * 27);
    g_assert_cmpmem (b2->data, 4 * 5, b->data, 4 * 5);
    g_assert_cmpmem (lab2->data, 4 * 3, lab->data, 4 * 3);
    g_assert_cmpmem (m2->data, 4 * 6, m->data, 4 * 6);

    /* Same content, same bytes; overwriting is atomic and leaves no temp file. */
    g_autofree char *first = NULL, *second = NULL;
    gsize l1, l2;
    g_assert_true (g_file_get_contents (path, &first, &l1, NULL));
    dfq_tensor_f32 (b)[0] = 42.0f;
    g_assert_true (dfq_safetensors_save (path, tensors, meta, &error));
    g_assert_true (g_file_get_contents (path, &second, &l2, NULL));
    g_assert_cmpuint (l1, ==, l2);
    g_assert_true (memcmp (first, second, l1) != 0);
    GDir *d = g_dir_open (dir, 0, NULL);
    guint n_files = 0;
    while (g_dir_read_name (d) != NULL)
        n_files++;
    g_dir_close (d);
    g_assert_cmpuint (n_files, ==, 1);

    /* Ordered list, no metadata, empty file */
    g_autofree char *path2 = g_build_filename (dir, "list.safetensors", NULL);
    const char *names[] = { "z", "a" };
    DfqTensor *list[] = { b, w };
    g_assert_true (dfq_safetensors_save_list (path2, names, list, 2, NULL, &error));
    check_reference_layout (path2);
    g_autoptr (DfqSafetensors) st2 = dfq_safetensors_new_from_file (path2, &error);
    g_assert_no_error (error);
    g_assert_cmpstr (dfq_safetensors_get_info (st2, 0)->name, ==, "z");
    g_assert_cmpfloat (dfq_safetensors_get_tensor (st2, "z", arena, &error)->shape[0], ==, 5);

    g_autoptr (GBytes) empty = dfq_safetensors_serialize (NULL, NULL, 0, NULL);
    g_assert_cmpuint (g_bytes_get_size (empty), ==, 16);
    g_assert_cmpmem ((const char *) g_bytes_get_data (empty, NULL) + 8, 8, "{}      ", 8);
    g_autoptr (DfqSafetensors) st3 = dfq_safetensors_new_from_bytes (empty, NULL, &error);
    g_assert_no_error (error);
    g_assert_cmpuint (dfq_safetensors_get_n_tensors (st3), ==, 0);
    remove_tree (dir);
}

/* ------------------------------------------------------------------------ */
/* Loading a model's table */

typedef struct {
    DfqArena *arena;
    GHashTable *file_tensors; /* what we save */
    GHashTable *model;        /* what the "model" expects */
    char *dir;
    char *path;
} LoadFixture;

static void
load_setup (LoadFixture *f, gconstpointer data)
{
    f->arena = dfq_arena_new (0);
    f->file_tensors = g_hash_table_new (g_str_hash, g_str_equal);
    f->model = g_hash_table_new (g_str_hash, g_str_equal);
    f->dir = make_tmp_dir ();
    f->path = g_build_filename (f->dir, "w.safetensors", NULL);
    static const char *const names[] = { "conv.weight", "bn.weight", "bn.bias", "fc.weight", "fc.bias",
                                         "l1.w", "l2.w", "l3.w", "l4.w", "l5.w", "l6.w" };
    for (guint i = 0; i < G_N_ELEMENTS (names); i++) {
        DfqTensor *t = dfq_tensor_new_2d (f->arena, DFQ_DTYPE_F32, 2, (gint64) i + 1);
        dfq_rand_normal_fill (t, 3, i, 0.0f, 1.0f);
        g_hash_table_insert (f->file_tensors, (gpointer) names[i], t);
        DfqTensor *m = dfq_tensor_new_like (f->arena, t);
        dfq_tensor_fill (m, -99.0f);
        g_hash_table_insert (f->model, (gpointer) names[i], m);
    }
    DfqTensor *nbt = dfq_tensor_new_1d (f->arena, DFQ_DTYPE_I32, 1);
    g_hash_table_insert (f->file_tensors, "bn.num_batches_tracked", nbt);
}

static void
load_teardown (LoadFixture *f, gconstpointer data)
{
    g_hash_table_unref (f->file_tensors);
    g_hash_table_unref (f->model);
    dfq_arena_free (f->arena);
    remove_tree (f->dir);
    g_free (f->dir);
    g_free (f->path);
}

static gboolean
model_untouched (LoadFixture *f)
{
    GHashTableIter it;
    gpointer k, v;
    g_hash_table_iter_init (&it, f->model);
    while (g_hash_table_iter_next (&it, &k, &v))
        for (gint64 i = 0; i < dfq_tensor_numel (v); i++)
            if (dfq_tensor_f32 (v)[i] != -99.0f)
                return FALSE;
    return TRUE;
}

static void
test_load_ok (LoadFixture *f, gconstpointer data)
{
    g_test_summary ("load_into fills every tensor; an ignored glob lets num_batches_tracked pass");
    g_autoptr (GError) error = NULL;
    g_assert_true (dfq_safetensors_save (f->path, f->file_tensors, NULL, &error));

    g_assert_false (dfq_safetensors_load_file_into (f->path, f->model, NULL, &error));
    g_assert_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_UNEXPECTED);
    g_assert_nonnull (strstr (error->message, "1 tensor the model does not know: 'bn.num_batches_tracked'"));
    g_assert_true (model_untouched (f));
    g_clear_error (&error);

    const char *ignore[] = { "*num_batches_tracked", NULL };
    DfqSafetensorsLoadOptions opt = { .ignore = ignore };
    g_assert_true (dfq_safetensors_load_file_into (f->path, f->model, &opt, &error));
    g_assert_no_error (error);
    DfqTensor *got = g_hash_table_lookup (f->model, "fc.bias");
    DfqTensor *want = g_hash_table_lookup (f->file_tensors, "fc.bias");
    g_assert_cmpfloat (dfq_tensor_max_abs_diff (got, want), ==, 0.0f);
}

static void
test_load_missing (LoadFixture *f, gconstpointer data)
{
    g_test_summary ("Missing tensors are listed by name, at most 5 plus a count, and nothing is written");
    for (const char *n = "123456"; *n; n++) {
        g_autofree char *name = g_strdup_printf ("l%c.w", *n);
        g_hash_table_remove (f->file_tensors, name);
    }
    g_autoptr (GError) error = NULL;
    g_assert_true (dfq_safetensors_save (f->path, f->file_tensors, NULL, &error));
    const char *ignore[] = { "*num_batches_tracked", NULL };
    DfqSafetensorsLoadOptions opt = { .ignore = ignore };
    g_assert_false (dfq_safetensors_load_file_into (f->path, f->model, &opt, &error));
    g_assert_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_MISSING);
    g_assert_nonnull (strstr (error->message, "6 of the model's 11 tensors are missing: 'l1.w', 'l2.w', 'l3.w', 'l4.w', 'l5.w' and 1 more"));
    g_assert_nonnull (strstr (error->message, f->path));
    g_assert_true (model_untouched (f));
    g_clear_error (&error);

    opt.allow_missing = TRUE;
    g_assert_true (dfq_safetensors_load_file_into (f->path, f->model, &opt, &error));
    g_assert_no_error (error);
    g_assert_cmpfloat (dfq_tensor_f32 (g_hash_table_lookup (f->model, "l1.w"))[0], ==, -99.0f);
    g_assert_cmpfloat (dfq_tensor_f32 (g_hash_table_lookup (f->model, "fc.bias"))[0], !=, -99.0f);
}

static void
test_load_unexpected (LoadFixture *f, gconstpointer data)
{
    g_test_summary ("Unexpected tensors are listed by name; allow_unexpected accepts them");
    g_hash_table_remove (f->model, "fc.weight");
    g_hash_table_remove (f->model, "fc.bias");
    g_autoptr (GError) error = NULL;
    g_assert_true (dfq_safetensors_save (f->path, f->file_tensors, NULL, &error));
    const char *ignore[] = { "*num_batches_tracked", NULL };
    DfqSafetensorsLoadOptions opt = { .ignore = ignore };
    g_assert_false (dfq_safetensors_load_file_into (f->path, f->model, &opt, &error));
    g_assert_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_UNEXPECTED);
    g_assert_nonnull (strstr (error->message, "2 tensors the model does not know: 'fc.bias', 'fc.weight'"));
    g_assert_true (model_untouched (f));
    g_clear_error (&error);
    opt.allow_unexpected = TRUE;
    g_assert_true (dfq_safetensors_load_file_into (f->path, f->model, &opt, &error));
    g_assert_no_error (error);
}

static void
test_load_shape (LoadFixture *f, gconstpointer data)
{
    g_test_summary ("Shape mismatches are listed with both shapes, and nothing is written");
    g_hash_table_insert (f->model, "fc.weight", dfq_tensor_new_2d (f->arena, DFQ_DTYPE_F32, 4, 2));
    g_hash_table_insert (f->model, "conv.weight", dfq_tensor_new_4d (f->arena, DFQ_DTYPE_F32, 2, 1, 1, 1));
    dfq_tensor_fill (g_hash_table_lookup (f->model, "fc.weight"), -99.0f);
    dfq_tensor_fill (g_hash_table_lookup (f->model, "conv.weight"), -99.0f);
    g_autoptr (GError) error = NULL;
    g_assert_true (dfq_safetensors_save (f->path, f->file_tensors, NULL, &error));
    const char *ignore[] = { "*num_batches_tracked", NULL };
    DfqSafetensorsLoadOptions opt = { .ignore = ignore };
    g_assert_false (dfq_safetensors_load_file_into (f->path, f->model, &opt, &error));
    g_assert_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_SHAPE);
    g_assert_nonnull (strstr (error->message, "2 tensors of the wrong shape: 'conv.weight' file [2, 1] vs model [2, 1, 1, 1], "
                                              "'fc.weight' file [2, 4] vs model [4, 2]"));
    g_assert_true (model_untouched (f));
}

static void
test_load_renames (LoadFixture *f, gconstpointer data)
{
    g_test_summary ("Rename rules map foreign names; a clash after renaming is a FORMAT error");
    /* The file uses "module." + "features." names of a foreign trainer. */
    g_autoptr (GHashTable) foreign = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
    GHashTableIter it;
    gpointer k, v;
    g_hash_table_iter_init (&it, f->file_tensors);
    while (g_hash_table_iter_next (&it, &k, &v))
        g_hash_table_insert (foreign, g_strconcat ("module.features.", k, NULL), v);
    g_autoptr (GError) error = NULL;
    g_assert_true (dfq_safetensors_save (f->path, foreign, NULL, &error));

    g_autoptr (DfqSafetensorsRenames) r = dfq_safetensors_renames_new ();
    dfq_safetensors_renames_add_prefix (r, "module.", "");
    g_assert_true (dfq_safetensors_renames_add_regex (r, "^features\\.(.*)$", "\\1", &error));
    g_assert_true (dfq_safetensors_renames_add_regex (r, "num_batches_tracked$", "nbt", &error));
    const char *ignore[] = { "*.nbt", NULL };
    DfqSafetensorsLoadOptions opt = { .renames = r, .ignore = ignore };
    g_assert_true (dfq_safetensors_load_file_into (f->path, f->model, &opt, &error));
    g_assert_no_error (error);
    g_assert_cmpfloat (dfq_tensor_max_abs_diff (g_hash_table_lookup (f->model, "l3.w"),
                                                g_hash_table_lookup (f->file_tensors, "l3.w")),
                       ==, 0.0f);

    /* Without renames the unexpected list shows file names */
    opt.renames = NULL;
    g_assert_false (dfq_safetensors_load_file_into (f->path, f->model, &opt, &error));
    g_assert_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_MISSING);
    g_clear_error (&error);

    /* A rule that drops names (empty result), one that maps two onto one */
    g_autoptr (DfqSafetensorsRenames) drop = dfq_safetensors_renames_new ();
    dfq_safetensors_renames_add_prefix (drop, "module.features.", "");
    g_assert_true (dfq_safetensors_renames_add_regex (drop, "^.*num_batches_tracked$", "", &error));
    opt.renames = drop;
    opt.ignore = NULL;
    g_assert_true (dfq_safetensors_load_file_into (f->path, f->model, &opt, &error));
    g_assert_no_error (error);

    g_autoptr (DfqSafetensorsRenames) clash = dfq_safetensors_renames_new ();
    dfq_safetensors_renames_add_prefix (clash, "module.features.", "");
    g_assert_true (dfq_safetensors_renames_add_regex (clash, "^bn\\.(weight|bias)$", "bn.affine", &error));
    opt.renames = clash;
    g_assert_false (dfq_safetensors_load_file_into (f->path, f->model, &opt, &error));
    g_assert_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_FORMAT);
    g_assert_nonnull (strstr (error->message, "both map to 'bn.affine' after renaming"));
    g_clear_error (&error);

    /* The unexpected list says where a renamed name came from */
    g_autoptr (DfqSafetensorsRenames) odd = dfq_safetensors_renames_new ();
    dfq_safetensors_renames_add_prefix (odd, "module.features.", "");
    dfq_safetensors_renames_add_prefix (odd, "bn.num", "bn.xnum");
    opt.renames = odd;
    opt.allow_missing = TRUE;
    g_assert_false (dfq_safetensors_load_file_into (f->path, f->model, &opt, &error));
    g_assert_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_UNEXPECTED);
    g_assert_nonnull (strstr (error->message, "'bn.xnum_batches_tracked' (from 'module.features.bn.num_batches_tracked')"));
}

static void
test_renames (void)
{
    g_test_summary ("Rules apply in order, each on the previous result; bad patterns are G_REGEX_ERROR");
    g_autoptr (DfqSafetensorsRenames) r = dfq_safetensors_renames_new ();
    g_autoptr (GError) error = NULL;
    g_assert_true (dfq_safetensors_renames_add_regex (r, "^a\\.", "b.", &error));
    g_assert_true (dfq_safetensors_renames_add_regex (r, "^b\\.(\\d+)", "c.\\1", &error));
    dfq_safetensors_renames_add_prefix (r, "c.", "d.");
    g_autofree char *x = dfq_safetensors_renames_apply (r, "a.7.weight");
    g_assert_cmpstr (x, ==, "d.7.weight");
    g_autofree char *y = dfq_safetensors_renames_apply (r, "zz.a.1");
    g_assert_cmpstr (y, ==, "zz.a.1");
    g_autofree char *z = dfq_safetensors_renames_apply (NULL, "same");
    g_assert_cmpstr (z, ==, "same");

    g_assert_false (dfq_safetensors_renames_add_regex (r, "([unclosed", "x", &error));
    g_assert_true (error != NULL && error->domain == G_REGEX_ERROR);
    g_assert_nonnull (strstr (error->message, "([unclosed"));
    g_clear_error (&error);
    g_assert_false (dfq_safetensors_renames_add_regex (r, "a", "\\g<", &error));
    g_assert_true (error != NULL && error->domain == G_REGEX_ERROR);
    g_clear_error (&error);

    g_autoptr (DfqSafetensorsRenames) cv = dfq_safetensors_renames_new_pytorchcv_resnet_cifar (3);
    static const char *const cases[][2] = {
        { "features.init_block.conv.weight", "conv.weight" },
        { "features.init_block.conv.conv.weight", "conv.weight" },
        { "features.init_block.bn.running_var", "bn.running_var" },
        { "features.init_block.conv.bn.weight", "bn.weight" },
        { "features.stage1.unit1.body.conv1.conv.weight", "layers.0.conv1.weight" },
        { "features.stage1.unit3.body.conv2.bn.bias", "layers.2.bn2.bias" },
        { "features.stage2.unit1.identity_conv.conv.weight", "layers.3.down.0.weight" },
        { "features.stage3.unit1.identity_conv.bn.running_mean", "layers.6.down.1.running_mean" },
        { "features.stage3.unit3.body.conv1.bn.num_batches_tracked", "layers.8.bn1.num_batches_tracked" },
        { "output.weight", "fc.weight" },
        { "output.bias", "fc.bias" },
    };
    for (guint i = 0; i < G_N_ELEMENTS (cases); i++) {
        g_autofree char *got = dfq_safetensors_renames_apply (cv, cases[i][0]);
        g_assert_cmpstr (got, ==, cases[i][1]);
    }
}

/* ------------------------------------------------------------------------ */
/* The PyTorch-written fixture */

/* The ResNet-20 layout of shared/fixtures/README.md, name -> shape. */
static void
resnet20_expected (DfqArena *arena, GHashTable *model)
{
    const gint64 widths[3] = { 16, 32, 64 };
    g_hash_table_insert (model, g_strdup ("conv.weight"), dfq_tensor_new_4d (arena, DFQ_DTYPE_F32, 16, 1, 3, 3));
    const char *bn_parts[] = { "weight", "bias", "running_mean", "running_var" };
    for (guint p = 0; p < 4; p++)
        g_hash_table_insert (model, g_strdup_printf ("bn.%s", bn_parts[p]), dfq_tensor_new_1d (arena, DFQ_DTYPE_F32, 16));
    gint64 cin = 16;
    for (guint l = 0; l < 9; l++) {
        gint64 c = widths[l / 3];
        g_hash_table_insert (model, g_strdup_printf ("layers.%u.conv1.weight", l), dfq_tensor_new_4d (arena, DFQ_DTYPE_F32, c, cin, 3, 3));
        g_hash_table_insert (model, g_strdup_printf ("layers.%u.conv2.weight", l), dfq_tensor_new_4d (arena, DFQ_DTYPE_F32, c, c, 3, 3));
        for (guint p = 0; p < 4; p++) {
            g_hash_table_insert (model, g_strdup_printf ("layers.%u.bn1.%s", l, bn_parts[p]), dfq_tensor_new_1d (arena, DFQ_DTYPE_F32, c));
            g_hash_table_insert (model, g_strdup_printf ("layers.%u.bn2.%s", l, bn_parts[p]), dfq_tensor_new_1d (arena, DFQ_DTYPE_F32, c));
        }
        if (l == 3 || l == 6) {
            g_hash_table_insert (model, g_strdup_printf ("layers.%u.down.0.weight", l), dfq_tensor_new_4d (arena, DFQ_DTYPE_F32, c, cin, 1, 1));
            for (guint p = 0; p < 4; p++)
                g_hash_table_insert (model, g_strdup_printf ("layers.%u.down.1.%s", l, bn_parts[p]), dfq_tensor_new_1d (arena, DFQ_DTYPE_F32, c));
        }
        cin = c;
    }
    g_hash_table_insert (model, g_strdup ("fc.weight"), dfq_tensor_new_2d (arena, DFQ_DTYPE_F32, 10, 64));
    g_hash_table_insert (model, g_strdup ("fc.bias"), dfq_tensor_new_1d (arena, DFQ_DTYPE_F32, 10));
}

static void
test_fixture_resnet20 (void)
{
    g_test_summary ("shared/fixtures/resnet20-fmnist-torch.safetensors: 128 tensors, 272,186 parameters, loads into the ResNet-20 layout");
    g_autofree char *path = NULL;
    if (shared_fixture ("resnet20-fmnist-torch.safetensors", &path) == NULL) {
        g_test_skip ("shared/fixtures/resnet20-fmnist-torch.safetensors is absent (set DFQ_SHARED_DIR)");
        return;
    }
    g_autoptr (GError) error = NULL;
    g_autoptr (DfqSafetensors) st = dfq_safetensors_new_from_file (path, &error);
    g_assert_no_error (error);
    g_assert_cmpuint (dfq_safetensors_get_n_tensors (st), ==, 128);
    gint64 n_f32 = 0, n_i64 = 0, n_params = 0;
    for (guint i = 0; i < dfq_safetensors_get_n_tensors (st); i++) {
        const DfqSafetensorsInfo *info = dfq_safetensors_get_info (st, i);
        if (info->dtype == DFQ_SAFETENSORS_F32) {
            n_f32 += info->numel;
            if (!strstr (info->name, "running_"))
                n_params += info->numel;
        } else {
            g_assert_cmpint (info->dtype, ==, DFQ_SAFETENSORS_I64);
            g_assert_true (g_str_has_suffix (info->name, "num_batches_tracked"));
            g_assert_cmpint (info->n_dims, ==, 0);
            n_i64++;
        }
    }
    g_assert_cmpint (n_params, ==, 272186);
    g_assert_cmpint (n_f32, ==, 272186 + 2 * (16 * 7 + 32 * 7 + 64 * 7));
    g_assert_cmpint (n_i64, ==, 21);

    g_autoptr (DfqArena) arena = dfq_arena_new (0);
    g_autoptr (GHashTable) model = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
    resnet20_expected (arena, model);
    g_assert_cmpuint (g_hash_table_size (model), ==, 107);
    const char *ignore[] = { "*.num_batches_tracked", NULL };
    DfqSafetensorsLoadOptions opt = { .ignore = ignore };
    g_assert_true (dfq_safetensors_load_into (st, model, &opt, &error));
    g_assert_no_error (error);

    /* BN running variances are positive; the loaded values equal the file's. */
    DfqTensor *rv = g_hash_table_lookup (model, "layers.8.bn2.running_var");
    for (gint64 i = 0; i < dfq_tensor_numel (rv); i++)
        g_assert_cmpfloat (dfq_tensor_f32 (rv)[i], >, 0.0f);
    DfqTensor *fcw = dfq_safetensors_get_tensor (st, "fc.weight", arena, &error);
    g_assert_cmpfloat (dfq_tensor_max_abs_diff (fcw, g_hash_table_lookup (model, "fc.weight")), ==, 0.0f);
    g_assert_true (dfq_tensor_all_finite (fcw));
    float nbt = 0.0f;
    g_assert_true (dfq_safetensors_read_f32 (st, "bn.num_batches_tracked", &nbt, 1, &error));
    g_assert_cmpfloat (nbt, >, 0.0f);

    /* Saved again under pytorchcv names, it loads back through the rename rules. */
    g_autofree char *dir = make_tmp_dir ();
    g_autofree char *cvpath = g_build_filename (dir, "cv.safetensors", NULL);
    g_autoptr (GHashTable) cv = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
    GHashTableIter it;
    gpointer k, v;
    g_hash_table_iter_init (&it, model);
    while (g_hash_table_iter_next (&it, &k, &v)) {
        const char *name = k;
        char *foreign;
        guint l;
        char rest[64];
        if (sscanf (name, "layers.%u.%63s", &l, rest) == 2) {
            g_autofree char *tail = NULL;
            if (g_str_has_prefix (rest, "conv"))
                tail = g_strdup_printf ("body.conv%c.conv%s", rest[4], rest + 5);
            else if (g_str_has_prefix (rest, "bn"))
                tail = g_strdup_printf ("body.conv%c.bn%s", rest[2], rest + 3);
            else if (g_str_has_prefix (rest, "down.0"))
                tail = g_strdup_printf ("identity_conv.conv%s", rest + 6);
            else
                tail = g_strdup_printf ("identity_conv.bn%s", rest + 6);
            foreign = g_strdup_printf ("features.stage%u.unit%u.%s", l / 3 + 1, l % 3 + 1, tail);
        } else if (g_str_has_prefix (name, "fc.")) {
            foreign = g_strconcat ("output.", name + 3, NULL);
        } else {
            foreign = g_strconcat ("features.init_block.", name, NULL);
        }
        g_hash_table_insert (cv, foreign, v);
    }
    g_assert_true (dfq_safetensors_save (cvpath, cv, NULL, &error));
    g_autoptr (GHashTable) model2 = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
    resnet20_expected (arena, model2);
    g_autoptr (DfqSafetensorsRenames) r = dfq_safetensors_renames_new_pytorchcv_resnet_cifar (3);
    DfqSafetensorsLoadOptions opt2 = { .renames = r };
    g_assert_true (dfq_safetensors_load_file_into (cvpath, model2, &opt2, &error));
    g_assert_no_error (error);
    g_hash_table_iter_init (&it, model);
    while (g_hash_table_iter_next (&it, &k, &v))
        g_assert_cmpfloat (dfq_tensor_max_abs_diff (v, g_hash_table_lookup (model2, k)), ==, 0.0f);
    remove_tree (dir);
}

int
main (int argc, char **argv)
{
    /* no G_TEST_OPTION_ISOLATE_DIRS: GLib 2.74 leaks its per-test dir strings
     * under valgrind; these tests write only below g_dir_make_tmp () */
    g_test_init (&argc, &argv, NULL);
    g_test_add_func ("/safetensors/corpus/errors", test_corpus);
    g_test_add_func ("/safetensors/corpus/complete", test_corpus_complete);
    g_test_add_func ("/safetensors/io-errors", test_io_errors);
    g_test_add_func ("/safetensors/decode/dtypes", test_decode);
    g_test_add_func ("/safetensors/decode/unaligned", test_unaligned);
    g_test_add_func ("/safetensors/save/roundtrip", test_roundtrip);
    g_test_add_func ("/safetensors/renames/rules", test_renames);
    g_test_add ("/safetensors/load/ok", LoadFixture, NULL, load_setup, test_load_ok, load_teardown);
    g_test_add ("/safetensors/load/missing", LoadFixture, NULL, load_setup, test_load_missing, load_teardown);
    g_test_add ("/safetensors/load/unexpected", LoadFixture, NULL, load_setup, test_load_unexpected, load_teardown);
    g_test_add ("/safetensors/load/shape", LoadFixture, NULL, load_setup, test_load_shape, load_teardown);
    g_test_add ("/safetensors/load/renames", LoadFixture, NULL, load_setup, test_load_renames, load_teardown);
    g_test_add_func ("/safetensors/fixture/resnet20-fmnist", test_fixture_resnet20);
    return g_test_run ();
}
