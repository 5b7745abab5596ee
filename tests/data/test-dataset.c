/* Tests of core/data/dfq-dataset.c: IDX files (plain and gzip) generated here,
 * each kind of corruption with its error, CIFAR-10/100 binary files in the real
 * format, dataset location and the NOT_FOUND message, loader determinism
 * (shuffling, augmentation, thread and batch-size independence), and the real
 * Fashion-MNIST package when it is installed. */
#include <math.h>
#include <string.h>

#include <gio/gio.h>
#include <glib/gstdio.h>

#include "dfq-test-util.h"

/* ------------------------------------------------------------------------ */
/* Helpers */

typedef struct {
    char *dir;
} TmpFixture;

static void
tmp_setup (TmpFixture *f, gconstpointer data)
{
    g_autoptr (GError) error = NULL;
    f->dir = g_dir_make_tmp ("dfq-data-XXXXXX", &error);
    g_assert_no_error (error);
    g_unsetenv ("DFQ_DATA_DIR");
}

static void
remove_tree (const char *path)
{
    if (g_file_test (path, G_FILE_TEST_IS_DIR) && !g_file_test (path, G_FILE_TEST_IS_SYMLINK)) {
        GDir *d = g_dir_open (path, 0, NULL);
        const char *name;
        while (d != NULL && (name = g_dir_read_name (d)) != NULL) {
            g_autofree char *p = g_build_filename (path, name, NULL);
            remove_tree (p);
        }
        if (d)
            g_dir_close (d);
        g_rmdir (path);
    } else {
        g_remove (path);
    }
}

static void
tmp_teardown (TmpFixture *f, gconstpointer data)
{
    remove_tree (f->dir);
    g_free (f->dir);
    g_unsetenv ("DFQ_DATA_DIR");
}

static char *
write_file (const char *dir, const char *name, const guint8 *data, gsize len)
{
    char *path = g_build_filename (dir, name, NULL);
    g_autofree char *parent = g_path_get_dirname (path);
    g_mkdir_with_parents (parent, 0755);
    g_autoptr (GError) error = NULL;
    g_assert_true (g_file_set_contents (path, (const char *) data, (gssize) len, &error));
    return path;
}

static GBytes *
gzip_bytes (const guint8 *data, gsize len)
{
    g_autoptr (GZlibCompressor) comp = g_zlib_compressor_new (G_ZLIB_COMPRESSOR_FORMAT_GZIP, -1);
    g_autoptr (GOutputStream) mem = g_memory_output_stream_new_resizable ();
    g_autoptr (GOutputStream) out = g_converter_output_stream_new (mem, G_CONVERTER (comp));
    g_assert_true (g_output_stream_write_all (out, data, len, NULL, NULL, NULL));
    g_assert_true (g_output_stream_close (out, NULL, NULL));
    return g_memory_output_stream_steal_as_bytes (G_MEMORY_OUTPUT_STREAM (mem));
}

/* An IDX ubyte file: 00 00 08 ndims, big-endian dims, payload. */
static GByteArray *
make_idx (guint ndims, const guint32 *dims, const guint8 *payload, gsize len)
{
    GByteArray *a = g_byte_array_new ();
    guint8 magic[4] = { 0, 0, 0x08, (guint8) ndims };
    g_byte_array_append (a, magic, 4);
    for (guint d = 0; d < ndims; d++) {
        guint32 be = GUINT32_TO_BE (dims[d]);
        g_byte_array_append (a, (guint8 *) &be, 4);
    }
    g_byte_array_append (a, payload, (guint) len);
    return a;
}

#define IDX_N 7
#define IDX_H 5
#define IDX_W 4

static guint8
idx_pixel (guint i, guint y, guint x)
{
    return (guint8) ((i * 31 + y * 7 + x * 3) % 256);
}

/* Writes a small valid IDX pair (IDX_N images of IDX_H x IDX_W, labels i % 10)
 * named <prefix>-images-idx3-ubyte[.gz] / <prefix>-labels-idx1-ubyte[.gz]. */
static void
write_idx_pair (const char *dir, const char *prefix, gboolean gz, char **images_path, char **labels_path)
{
    guint8 pixels[IDX_N * IDX_H * IDX_W], labels[IDX_N];
    for (guint i = 0; i < IDX_N; i++) {
        labels[i] = (guint8) (i % 10);
        for (guint y = 0; y < IDX_H; y++)
            for (guint x = 0; x < IDX_W; x++)
                pixels[(i * IDX_H + y) * IDX_W + x] = idx_pixel (i, y, x);
    }
    const guint32 idims[3] = { IDX_N, IDX_H, IDX_W }, ldims[1] = { IDX_N };
    g_autoptr (GByteArray) img = make_idx (3, idims, pixels, sizeof pixels);
    g_autoptr (GByteArray) lab = make_idx (1, ldims, labels, sizeof labels);
    g_autofree char *iname = g_strdup_printf ("%s-images-idx3-ubyte%s", prefix, gz ? ".gz" : "");
    g_autofree char *lname = g_strdup_printf ("%s-labels-idx1-ubyte%s", prefix, gz ? ".gz" : "");
    if (gz) {
        g_autoptr (GBytes) gi = gzip_bytes (img->data, img->len);
        g_autoptr (GBytes) gl = gzip_bytes (lab->data, lab->len);
        *images_path = write_file (dir, iname, g_bytes_get_data (gi, NULL), g_bytes_get_size (gi));
        *labels_path = write_file (dir, lname, g_bytes_get_data (gl, NULL), g_bytes_get_size (gl));
    } else {
        *images_path = write_file (dir, iname, img->data, img->len);
        *labels_path = write_file (dir, lname, lab->data, lab->len);
    }
}

static void
assert_error_contains (const GError *error, int code, const char *fragment)
{
    g_assert_error ((GError *) error, DFQ_DATA_ERROR, code);
    g_test_message ("%s", error->message);
    if (strstr (error->message, fragment) == NULL)
        g_error ("message \"%s\" lacks \"%s\"", error->message, fragment);
}

/* ------------------------------------------------------------------------ */
/* IDX */

static void
test_idx_load (TmpFixture *f, gconstpointer data)
{
    g_test_summary ("Plain and gzip IDX files load with exact pixels and labels; batches are normalised");
    for (int gz = 0; gz <= 1; gz++) {
        g_autofree char *sub = g_build_filename (f->dir, gz ? "gz" : "plain", NULL);
        g_autofree char *ip = NULL, *lp = NULL;
        write_idx_pair (sub, "train", gz, &ip, &lp);
        g_autoptr (GError) error = NULL;
        g_autoptr (DfqDataset) ds = dfq_dataset_new_idx (ip, lp, 10, &error);
        g_assert_no_error (error);
        g_assert_cmpuint (dfq_dataset_get_n (ds), ==, IDX_N);
        guint c, h, w;
        dfq_dataset_get_shape (ds, &c, &h, &w);
        g_assert_cmpuint (c, ==, 1);
        g_assert_cmpuint (h, ==, IDX_H);
        g_assert_cmpuint (w, ==, IDX_W);
        g_assert_cmpuint (dfq_dataset_get_n_classes (ds), ==, 10);
        for (guint i = 0; i < IDX_N; i++) {
            g_assert_cmpuint (dfq_dataset_get_label (ds, i), ==, i % 10);
            const guint8 *p = dfq_dataset_get_pixels (ds, i);
            for (guint k = 0; k < IDX_H * IDX_W; k++)
                g_assert_cmpuint (p[k], ==, idx_pixel (i, k / IDX_W, k % IDX_W));
        }

        const float mean = 0.5f, std = 0.25f;
        dfq_dataset_set_normalization (ds, &mean, &std);
        g_autoptr (DfqArena) arena = dfq_arena_new (0);
        DfqTensor *x = dfq_tensor_new_4d (arena, DFQ_DTYPE_F32, 2, 1, IDX_H, IDX_W);
        DfqTensor *y = dfq_tensor_new_1d (arena, DFQ_DTYPE_I32, 2);
        const guint32 idx[2] = { 6, 0 };
        dfq_dataset_fill_batch (ds, idx, 2, x, y);
        g_assert_cmpint (dfq_tensor_i32 (y)[0], ==, 6);
        g_assert_cmpint (dfq_tensor_i32 (y)[1], ==, 0);
        for (guint k = 0; k < IDX_H * IDX_W; k++) {
            float want = ((float) idx_pixel (6, k / IDX_W, k % IDX_W) / 255.0f - mean) / std;
            g_assert_cmpfloat_with_epsilon (dfq_tensor_f32 (x)[k], want, 1e-6);
        }
    }

    /* Found by name in an explicit directory, with MNIST's normalisation. */
    g_autofree char *ip = NULL, *lp = NULL;
    g_autofree char *mdir = g_build_filename (f->dir, "mnist", NULL);
    write_idx_pair (mdir, "t10k", FALSE, &ip, &lp);
    g_autoptr (GError) error = NULL;
    g_autoptr (DfqDataset) ds = dfq_dataset_open ("MNIST", DFQ_DATASET_SPLIT_TEST, f->dir, &error);
    g_assert_no_error (error);
    g_assert_cmpstr (dfq_dataset_get_name (ds), ==, "mnist");
    g_assert_cmpstr (dfq_dataset_get_location (ds), ==, mdir);
    float m, s;
    dfq_dataset_get_normalization (ds, &m, &s);
    g_assert_cmpfloat (m, ==, 0.1307f);
    g_assert_cmpfloat (s, ==, 0.3081f);
}

typedef enum {
    CORRUPT_MAGIC,
    CORRUPT_TYPE,
    CORRUPT_DIMS,
    CORRUPT_ZERO_DIM,
    CORRUPT_TRUNCATED,
    CORRUPT_TRAILING,
    CORRUPT_LABEL_COUNT,
    CORRUPT_LABEL_VALUE,
    CORRUPT_HUGE_CLAIM,
    CORRUPT_IMPLAUSIBLE,
    CORRUPT_EMPTY,
    CORRUPT_SHORT_HEADER,
    CORRUPT_GZ_METHOD,
    CORRUPT_GZ_CRC,
    CORRUPT_GZ_TRUNCATED,
} Corruption;

static const struct {
    Corruption kind;
    const char *name;
    int code;
    const char *fragment;
} idx_corruptions[] = {
    { CORRUPT_MAGIC, "magic", DFQ_DATA_ERROR_FORMAT, "bad IDX magic number 0x01000803 (expected 0x00000803)" },
    { CORRUPT_TYPE, "type", DFQ_DATA_ERROR_FORMAT, "IDX data type 0x0d is not supported (need 0x08, unsigned byte)" },
    { CORRUPT_DIMS, "dims", DFQ_DATA_ERROR_FORMAT, "IDX file has 2 dimensions, expected 3 (images)" },
    { CORRUPT_ZERO_DIM, "zero-dim", DFQ_DATA_ERROR_FORMAT, "IDX dimension 1 is 0 (must be 1 .. 4096)" },
    { CORRUPT_TRUNCATED, "truncated", DFQ_DATA_ERROR_FORMAT,
      "truncated: the header promises 140 bytes of pixels (156 bytes in all) but the data is 153 bytes" },
    { CORRUPT_TRAILING, "trailing", DFQ_DATA_ERROR_FORMAT, "the data is longer than the 156 bytes the header promises" },
    { CORRUPT_LABEL_COUNT, "label-count", DFQ_DATA_ERROR_FORMAT, "6 labels for the 7 images of" },
    { CORRUPT_LABEL_VALUE, "label-value", DFQ_DATA_ERROR_FORMAT, "label of sample 3 is 10, not < 10 classes" },
    { CORRUPT_HUGE_CLAIM, "huge-claim", DFQ_DATA_ERROR_FORMAT,
      "truncated: the header promises 784000000 bytes of pixels" },
    { CORRUPT_IMPLAUSIBLE, "implausible", DFQ_DATA_ERROR_FORMAT, "more than the 17179869184-byte limit" },
    { CORRUPT_EMPTY, "empty", DFQ_DATA_ERROR_FORMAT, "0 bytes, too short for an IDX magic number" },
    { CORRUPT_SHORT_HEADER, "short-header", DFQ_DATA_ERROR_FORMAT, "truncated IDX header (6 of 12 dimension bytes)" },
    { CORRUPT_GZ_METHOD, "gz-method", DFQ_DATA_ERROR_FORMAT, "corrupt gzip data" },
    { CORRUPT_GZ_CRC, "gz-crc", DFQ_DATA_ERROR_FORMAT, "corrupt gzip data" },
    { CORRUPT_GZ_TRUNCATED, "gz-truncated", DFQ_DATA_ERROR_FORMAT, "corrupt gzip data" },
};

static void
test_idx_corrupt (TmpFixture *f, gconstpointer data)
{
    g_test_summary ("Every kind of IDX corruption is DFQ_DATA_ERROR_FORMAT with a message naming the file and the defect");
    for (guint ci = 0; ci < G_N_ELEMENTS (idx_corruptions); ci++) {
        Corruption kind = idx_corruptions[ci].kind;
        g_autofree char *sub = g_build_filename (f->dir, idx_corruptions[ci].name, NULL);
        g_autofree char *ip = NULL, *lp = NULL;
        write_idx_pair (sub, "train", FALSE, &ip, &lp);
        g_autofree guint8 *img = NULL, *lab = NULL;
        gsize ilen = 0, llen = 0;
        g_assert_true (g_file_get_contents (ip, (char **) &img, &ilen, NULL));
        g_assert_true (g_file_get_contents (lp, (char **) &lab, &llen, NULL));
        g_autoptr (GByteArray) a = g_byte_array_new ();
        g_byte_array_append (a, img, (guint) ilen);
        const char *bad = ip; /* which file the message must name */
        switch (kind) {
        case CORRUPT_MAGIC:
            a->data[0] = 1;
            break;
        case CORRUPT_TYPE:
            a->data[2] = 0x0D;
            break;
        case CORRUPT_DIMS:
            a->data[3] = 2;
            break;
        case CORRUPT_ZERO_DIM:
            memset (a->data + 8, 0, 4);
            break;
        case CORRUPT_TRUNCATED:
            g_byte_array_set_size (a, a->len - 3);
            break;
        case CORRUPT_TRAILING:
            g_byte_array_append (a, (const guint8 *) "x", 1);
            break;
        case CORRUPT_HUGE_CLAIM: {
            guint32 be[3] = { GUINT32_TO_BE (1000000), GUINT32_TO_BE (28), GUINT32_TO_BE (28) };
            memcpy (a->data + 4, be, 12);
            break;
        }
        case CORRUPT_IMPLAUSIBLE: {
            guint32 be[3] = { GUINT32_TO_BE (G_MAXINT32), GUINT32_TO_BE (4096), GUINT32_TO_BE (4096) };
            memcpy (a->data + 4, be, 12);
            break;
        }
        case CORRUPT_EMPTY:
            g_byte_array_set_size (a, 0);
            break;
        case CORRUPT_SHORT_HEADER:
            g_byte_array_set_size (a, 10);
            break;
        case CORRUPT_LABEL_COUNT: {
            const guint32 dims[1] = { IDX_N - 1 };
            g_autoptr (GByteArray) l = make_idx (1, dims, lab + 8, IDX_N - 1);
            g_assert_true (g_file_set_contents (lp, (char *) l->data, l->len, NULL));
            bad = lp;
            break;
        }
        case CORRUPT_LABEL_VALUE:
            lab[8 + 3] = 10;
            g_assert_true (g_file_set_contents (lp, (char *) lab, (gssize) llen, NULL));
            bad = lp;
            break;
        case CORRUPT_GZ_METHOD:
        case CORRUPT_GZ_CRC:
        case CORRUPT_GZ_TRUNCATED: {
            g_autoptr (GBytes) gz = gzip_bytes (img, ilen);
            g_byte_array_set_size (a, 0);
            g_byte_array_append (a, g_bytes_get_data (gz, NULL), (guint) g_bytes_get_size (gz));
            if (kind == CORRUPT_GZ_METHOD)
                a->data[2] = 7; /* compression method: only 8 (deflate) exists */
            else if (kind == CORRUPT_GZ_CRC)
                a->data[a->len - 8] ^= 0xFF; /* CRC-32 of the trailer */
            else
                g_byte_array_set_size (a, a->len / 2);
            break;
        }
        }
        if (bad == ip)
            g_assert_true (g_file_set_contents (ip, (char *) a->data, a->len, NULL));

        g_autoptr (GError) error = NULL;
        g_autoptr (DfqDataset) ds = dfq_dataset_new_idx (ip, lp, 10, &error);
        g_assert_null (ds);
        g_test_message ("case %s", idx_corruptions[ci].name);
        assert_error_contains (error, idx_corruptions[ci].code, idx_corruptions[ci].fragment);
        assert_error_contains (error, idx_corruptions[ci].code, bad);
    }

    /* A missing file is NOT_FOUND, a directory is IO. */
    g_autofree char *ip = NULL, *lp = NULL;
    write_idx_pair (f->dir, "t10k", FALSE, &ip, &lp);
    g_autofree char *nope = g_build_filename (f->dir, "nope-labels", NULL);
    g_autoptr (GError) error = NULL;
    g_assert_null (dfq_dataset_new_idx (ip, nope, 10, &error));
    assert_error_contains (error, DFQ_DATA_ERROR_NOT_FOUND, nope);
    g_clear_error (&error);
    g_assert_null (dfq_dataset_new_idx (f->dir, lp, 10, &error));
    assert_error_contains (error, DFQ_DATA_ERROR_IO, f->dir);
}

/* ------------------------------------------------------------------------ */
/* CIFAR */

static guint8
cifar_pixel (guint i, guint k)
{
    return (guint8) ((i * 13 + k * 7 + (k >> 10) * 50) % 256);
}

/* @n records starting at global index @first. CIFAR-10 label = (i*3) % 10;
 * CIFAR-100 coarse = i % 20, fine = (i*7) % 100. */
static GByteArray *
make_cifar (guint first, guint n, gboolean cifar100)
{
    GByteArray *a = g_byte_array_new ();
    for (guint i = first; i < first + n; i++) {
        if (cifar100) {
            guint8 l[2] = { (guint8) (i % 20), (guint8) ((i * 7) % 100) };
            g_byte_array_append (a, l, 2);
        } else {
            guint8 l = (guint8) ((i * 3) % 10);
            g_byte_array_append (a, &l, 1);
        }
        guint8 px[3072];
        for (guint k = 0; k < 3072; k++)
            px[k] = cifar_pixel (i, k);
        g_byte_array_append (a, px, 3072);
    }
    return a;
}

static void
write_cifar10 (const char *dir, guint per_batch)
{
    for (guint b = 1; b <= 5; b++) {
        g_autoptr (GByteArray) a = make_cifar ((b - 1) * per_batch, per_batch, FALSE);
        g_autofree char *name = g_strdup_printf ("data_batch_%u.bin", b);
        g_free (write_file (dir, name, a->data, a->len));
    }
    g_autoptr (GByteArray) t = make_cifar (1000, 2, FALSE);
    g_free (write_file (dir, "test_batch.bin", t->data, t->len));
}

static void
test_cifar10 (TmpFixture *f, gconstpointer data)
{
    g_test_summary ("CIFAR-10 binary batches found via $DFQ_DATA_DIR/cifar10: 5 train files in order, test file, labels, CHW planes");
    g_autofree char *cdir = g_build_filename (f->dir, "cifar10", NULL);
    write_cifar10 (cdir, 3);
    g_setenv ("DFQ_DATA_DIR", f->dir, TRUE);

    g_autoptr (GError) error = NULL;
    g_autoptr (DfqDataset) train = dfq_dataset_open ("CIFAR-10", DFQ_DATASET_SPLIT_TRAIN, NULL, &error);
    g_assert_no_error (error);
    g_assert_cmpstr (dfq_dataset_get_name (train), ==, "cifar10");
    g_assert_cmpstr (dfq_dataset_get_location (train), ==, cdir);
    g_assert_cmpuint (dfq_dataset_get_n (train), ==, 15);
    guint c, h, w;
    dfq_dataset_get_shape (train, &c, &h, &w);
    g_assert_cmpuint (c * 100 + h * 10 + w, ==, 3 * 100 + 32 * 10 + 32);
    g_assert_cmpuint (dfq_dataset_get_n_classes (train), ==, 10);
    for (guint i = 0; i < 15; i++) {
        g_assert_cmpuint (dfq_dataset_get_label (train, i), ==, (i * 3) % 10);
        const guint8 *p = dfq_dataset_get_pixels (train, i);
        for (guint k = 0; k < 3072; k += 97)
            g_assert_cmpuint (p[k], ==, cifar_pixel (i, k));
    }
    float mean[3], std[3];
    dfq_dataset_get_normalization (train, mean, std);
    g_assert_cmpfloat (mean[0], ==, 0.49139968f);
    g_assert_cmpfloat (std[2], ==, 0.26158768f);

    /* The green plane of image 4, normalised */
    g_autoptr (DfqArena) arena = dfq_arena_new (0);
    DfqTensor *x = dfq_tensor_new_4d (arena, DFQ_DTYPE_F32, 1, 3, 32, 32);
    const guint32 idx = 4;
    dfq_dataset_fill_batch (train, &idx, 1, x, NULL);
    float want = ((float) cifar_pixel (4, 1024 + 33) / 255.0f - mean[1]) / std[1];
    g_assert_cmpfloat_with_epsilon (dfq_tensor_f32 (x)[1024 + 33], want, 1e-6);

    g_autoptr (DfqDataset) test = dfq_dataset_open ("cifar10", DFQ_DATASET_SPLIT_TEST, NULL, &error);
    g_assert_no_error (error);
    g_assert_cmpuint (dfq_dataset_get_n (test), ==, 2);
    g_assert_cmpuint (dfq_dataset_get_label (test, 1), ==, (1001 * 3) % 10);

    /* Corruptions */
    g_autofree char *bad = g_build_filename (f->dir, "bad.bin", NULL);
    const char *paths[] = { bad, NULL };
    g_autoptr (GByteArray) a = make_cifar (0, 2, FALSE);
    g_byte_array_append (a, (const guint8 *) "x", 1);
    g_assert_true (g_file_set_contents (bad, (char *) a->data, a->len, NULL));
    g_assert_null (dfq_dataset_new_cifar (paths, FALSE, FALSE, &error));
    assert_error_contains (error, DFQ_DATA_ERROR_FORMAT, "bad.bin: 6147 bytes is not a whole number of 3073-byte CIFAR-10 records");
    g_clear_error (&error);
    g_byte_array_set_size (a, a->len - 1);
    a->data[3073] = 10; /* label of record 1 */
    g_assert_true (g_file_set_contents (bad, (char *) a->data, a->len, NULL));
    g_assert_null (dfq_dataset_new_cifar (paths, FALSE, FALSE, &error));
    assert_error_contains (error, DFQ_DATA_ERROR_FORMAT, "bad.bin: label of sample 1 is 10, not < 10 classes");
    g_clear_error (&error);
    g_assert_true (g_file_set_contents (bad, "", 0, NULL));
    g_assert_null (dfq_dataset_new_cifar (paths, FALSE, FALSE, &error));
    assert_error_contains (error, DFQ_DATA_ERROR_FORMAT, "0 bytes is not a whole number");
    g_clear_error (&error);

    /* gzip-compressed batches are accepted as well */
    g_autoptr (GByteArray) ok = make_cifar (0, 2, FALSE);
    g_autoptr (GBytes) gz = gzip_bytes (ok->data, ok->len);
    g_assert_true (g_file_set_contents (bad, g_bytes_get_data (gz, NULL), (gssize) g_bytes_get_size (gz), NULL));
    g_autoptr (DfqDataset) gzds = dfq_dataset_new_cifar (paths, FALSE, FALSE, &error);
    g_assert_no_error (error);
    g_assert_cmpuint (dfq_dataset_get_n (gzds), ==, 2);
}

static void
test_cifar100 (TmpFixture *f, gconstpointer data)
{
    g_test_summary ("CIFAR-100 train.bin/test.bin: fine labels by default, coarse on request, both label bytes validated");
    g_autoptr (GByteArray) tr = make_cifar (0, 25, TRUE);
    g_autoptr (GByteArray) te = make_cifar (500, 4, TRUE);
    g_autofree char *sub = g_build_filename (f->dir, "cifar-100-binary", NULL);
    g_free (write_file (sub, "train.bin", tr->data, tr->len));
    g_free (write_file (sub, "test.bin", te->data, te->len));

    g_autoptr (GError) error = NULL;
    g_autoptr (DfqDataset) fine = dfq_dataset_open ("cifar100", DFQ_DATASET_SPLIT_TRAIN, f->dir, &error);
    g_assert_no_error (error);
    g_assert_cmpuint (dfq_dataset_get_n (fine), ==, 25);
    g_assert_cmpuint (dfq_dataset_get_n_classes (fine), ==, 100);
    for (guint i = 0; i < 25; i++)
        g_assert_cmpuint (dfq_dataset_get_label (fine, i), ==, (i * 7) % 100);
    g_assert_cmpuint (dfq_dataset_get_pixels (fine, 24)[3071], ==, cifar_pixel (24, 3071));
    float mean[3];
    dfq_dataset_get_normalization (fine, mean, NULL);
    g_assert_cmpfloat (mean[2], ==, 0.44078431f);

    g_autoptr (DfqDataset) coarse = dfq_dataset_open ("cifar100-coarse", DFQ_DATASET_SPLIT_TEST, f->dir, &error);
    g_assert_no_error (error);
    g_assert_cmpuint (dfq_dataset_get_n (coarse), ==, 4);
    g_assert_cmpuint (dfq_dataset_get_n_classes (coarse), ==, 20);
    g_assert_cmpuint (dfq_dataset_get_label (coarse, 3), ==, 503 % 20);

    g_autofree char *train = g_build_filename (sub, "train.bin", NULL);
    const char *paths[] = { train, NULL };
    tr->data[3074 * 2 + 1] = 100; /* fine label of record 2 */
    g_assert_true (g_file_set_contents (train, (char *) tr->data, tr->len, NULL));
    g_assert_null (dfq_dataset_new_cifar (paths, TRUE, FALSE, &error));
    assert_error_contains (error, DFQ_DATA_ERROR_FORMAT, "label of sample 2 is 100, not < 100 classes");
    g_clear_error (&error);
    tr->data[3074 * 2 + 1] = 5;
    tr->data[3074 * 2] = 20; /* coarse label of record 2 */
    g_assert_true (g_file_set_contents (train, (char *) tr->data, tr->len, NULL));
    g_assert_null (dfq_dataset_new_cifar (paths, TRUE, FALSE, &error));
    assert_error_contains (error, DFQ_DATA_ERROR_FORMAT, "(the other label byte)");
    assert_error_contains (error, DFQ_DATA_ERROR_FORMAT, "label of sample 2 is 20, not < 20 classes");
    g_clear_error (&error);
    g_byte_array_set_size (tr, 3073);
    g_assert_true (g_file_set_contents (train, (char *) tr->data, tr->len, NULL));
    g_assert_null (dfq_dataset_new_cifar (paths, TRUE, FALSE, &error));
    assert_error_contains (error, DFQ_DATA_ERROR_FORMAT, "3073 bytes is not a whole number of 3074-byte CIFAR-100 records");
}

/* ------------------------------------------------------------------------ */
/* Location */

static void
test_not_found (TmpFixture *f, gconstpointer data)
{
    g_test_summary ("A missing dataset is NOT_FOUND listing every path tried and how to get the data");
    g_autoptr (GError) error = NULL;

    g_assert_null (dfq_dataset_open ("fashion-mnist", DFQ_DATASET_SPLIT_TEST, f->dir, &error));
    assert_error_contains (error, DFQ_DATA_ERROR_NOT_FOUND, "dataset 'fashion-mnist' (test split) not found");
    assert_error_contains (error, DFQ_DATA_ERROR_NOT_FOUND, "t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]");
    g_autofree char *sub = g_build_filename (f->dir, "fashion-mnist", NULL);
    assert_error_contains (error, DFQ_DATA_ERROR_NOT_FOUND, sub);
    assert_error_contains (error, DFQ_DATA_ERROR_NOT_FOUND, "apt-get install dataset-fashion-mnist");
    /* an explicit directory is the only place looked at */
    const char *looked = strstr (error->message, "looked in: ");
    const char *how = strstr (error->message, ". To get it: ");
    g_assert_true (looked != NULL && how != NULL && looked < how);
    g_autofree char *places = g_strndup (looked, (gsize) (how - looked));
    g_assert_null (strstr (places, DFQ_DATASET_FASHION_MNIST_SYSTEM_DIR));
    g_assert_nonnull (strstr (places, f->dir));
    g_clear_error (&error);

    g_setenv ("DFQ_DATA_DIR", f->dir, TRUE);
    g_assert_null (dfq_dataset_open ("cifar10", DFQ_DATASET_SPLIT_TRAIN, NULL, &error));
    g_autofree char *c10 = g_build_filename (f->dir, "cifar10", NULL);
    g_autofree char *c10b = g_build_filename (f->dir, "cifar-10-batches-bin", NULL);
    assert_error_contains (error, DFQ_DATA_ERROR_NOT_FOUND, c10);
    assert_error_contains (error, DFQ_DATA_ERROR_NOT_FOUND, c10b);
    assert_error_contains (error, DFQ_DATA_ERROR_NOT_FOUND, "need data_batch_1.bin, data_batch_2.bin");
    assert_error_contains (error, DFQ_DATA_ERROR_NOT_FOUND, "cifar-10-binary.tar.gz");
    assert_error_contains (error, DFQ_DATA_ERROR_NOT_FOUND, "$DFQ_DATA_DIR/cifar10");
    g_clear_error (&error);

    /* Some of the files: the message says which are missing */
    write_cifar10 (c10, 1);
    g_autofree char *b5 = g_build_filename (c10, "data_batch_5.bin", NULL);
    g_remove (b5);
    g_assert_null (dfq_dataset_open ("cifar10", DFQ_DATASET_SPLIT_TRAIN, NULL, &error));
    g_autofree char *partial = g_strdup_printf ("%s (missing: data_batch_5.bin)", c10);
    assert_error_contains (error, DFQ_DATA_ERROR_NOT_FOUND, partial);
    g_clear_error (&error);
    /* ... while its test split is complete */
    g_autoptr (DfqDataset) test = dfq_dataset_open ("cifar10", DFQ_DATASET_SPLIT_TEST, NULL, &error);
    g_assert_no_error (error);
    g_assert_cmpuint (dfq_dataset_get_n (test), ==, 2);

    g_unsetenv ("DFQ_DATA_DIR");
    g_assert_null (dfq_dataset_open ("cifar100", DFQ_DATASET_SPLIT_TEST, NULL, &error));
    assert_error_contains (error, DFQ_DATA_ERROR_NOT_FOUND, "$DFQ_DATA_DIR is not set");
    assert_error_contains (error, DFQ_DATA_ERROR_NOT_FOUND, "train.bin and test.bin");
    g_clear_error (&error);

    g_assert_null (dfq_dataset_open ("imagenet", DFQ_DATASET_SPLIT_TRAIN, NULL, &error));
    assert_error_contains (error, DFQ_DATA_ERROR_NOT_FOUND, "unknown dataset 'imagenet' (known: fashion-mnist, mnist, cifar10");
}

/* ------------------------------------------------------------------------ */
/* The loader */

/* n CIFAR-shaped images whose pixel 0 of channel 0 is the index (n <= 256);
 * the other pixels are random. Normalisation mean 0, std 1/255 so that a
 * batch value times 1 is the byte value. */
static DfqDataset *
make_indexed_cifar (const char *dir, guint n)
{
    GByteArray *a = g_byte_array_new ();
    for (guint i = 0; i < n; i++) {
        guint8 l = (guint8) (i % 10);
        g_byte_array_append (a, &l, 1);
        guint8 px[3072];
        for (guint k = 0; k < 3072; k++) {
            guint32 r[4];
            dfq_rand_philox (99, i, k, r);
            px[k] = (guint8) r[0];
        }
        px[0] = (guint8) i;
        g_byte_array_append (a, px, 3072);
    }
    g_autofree char *path = write_file (dir, "indexed.bin", a->data, a->len);
    g_byte_array_unref (a);
    const char *paths[] = { path, NULL };
    g_autoptr (GError) error = NULL;
    DfqDataset *ds = dfq_dataset_new_cifar (paths, FALSE, FALSE, &error);
    g_assert_no_error (error);
    const float mean[3] = { 0, 0, 0 }, std[3] = { 1.0f / 255, 1.0f / 255, 1.0f / 255 };
    dfq_dataset_set_normalization (ds, mean, std);
    return ds;
}

/* One epoch's sample order, read back from pixel 0. */
static void
epoch_order (DfqDataLoader *loader, guint epoch, guint batch, GArray *order)
{
    g_autoptr (DfqArena) arena = dfq_arena_new (0);
    DfqTensor *x = dfq_tensor_new_4d (arena, DFQ_DTYPE_F32, batch, 3, 32, 32);
    DfqTensor *y = dfq_tensor_new_1d (arena, DFQ_DTYPE_I32, batch);
    g_array_set_size (order, 0);
    dfq_data_loader_start_epoch (loader, epoch);
    guint n = 0;
    while (dfq_data_loader_next (loader, x, y, &n))
        for (guint i = 0; i < n; i++) {
            guint idx = (guint) lrintf (dfq_tensor_f32 (x)[i * 3072]);
            g_assert_cmpint (dfq_tensor_i32 (y)[i], ==, (gint) (idx % 10));
            g_array_append_val (order, idx);
        }
}

static gboolean
orders_equal (GArray *a, GArray *b)
{
    return a->len == b->len && memcmp (a->data, b->data, a->len * sizeof (guint)) == 0;
}

static void
test_loader_shuffle (TmpFixture *f, gconstpointer data)
{
    g_test_summary ("Shuffling: a permutation per epoch, same seed same order, different seed or epoch different order; drop_last");
    g_autoptr (DfqDataset) ds = make_indexed_cifar (f->dir, 50);
    DfqDataLoaderOptions opt = DFQ_DATA_LOADER_OPTIONS_INIT;
    opt.batch_size = 8;
    opt.shuffle = FALSE;
    g_autoptr (GArray) plain = g_array_new (FALSE, FALSE, sizeof (guint));
    g_autoptr (DfqDataLoader) l0 = dfq_data_loader_new (ds, &opt);
    g_assert_cmpuint (dfq_data_loader_get_n_batches (l0), ==, 7);
    epoch_order (l0, 0, 8, plain);
    g_assert_cmpuint (plain->len, ==, 50);
    for (guint i = 0; i < 50; i++)
        g_assert_cmpuint (g_array_index (plain, guint, i), ==, i);

    opt.shuffle = TRUE;
    opt.seed = 1;
    g_autoptr (GArray) a = g_array_new (FALSE, FALSE, sizeof (guint));
    g_autoptr (GArray) b = g_array_new (FALSE, FALSE, sizeof (guint));
    g_autoptr (DfqDataLoader) l1 = dfq_data_loader_new (ds, &opt);
    epoch_order (l1, 0, 8, a);
    g_assert_cmpuint (a->len, ==, 50);
    gboolean seen[50] = { FALSE };
    for (guint i = 0; i < 50; i++) {
        guint v = g_array_index (a, guint, i);
        g_assert_cmpuint (v, <, 50);
        g_assert_false (seen[v]);
        seen[v] = TRUE;
    }
    g_assert_false (orders_equal (a, plain));

    g_autoptr (DfqDataLoader) l1b = dfq_data_loader_new (ds, &opt);
    epoch_order (l1b, 0, 8, b);
    g_assert_true (orders_equal (a, b));
    epoch_order (l1b, 1, 8, b);
    g_assert_false (orders_equal (a, b));
    g_assert_cmpuint (dfq_data_loader_get_epoch (l1b), ==, 1);
    epoch_order (l1b, 0, 8, b);
    g_assert_true (orders_equal (a, b));

    opt.seed = 2;
    g_autoptr (DfqDataLoader) l2 = dfq_data_loader_new (ds, &opt);
    epoch_order (l2, 0, 8, b);
    g_assert_false (orders_equal (a, b));

    /* The order does not depend on the batch size */
    opt.seed = 1;
    opt.batch_size = 5;
    g_autoptr (DfqDataLoader) l5 = dfq_data_loader_new (ds, &opt);
    epoch_order (l5, 0, 5, b);
    g_assert_true (orders_equal (a, b));

    /* The short last batch: 2 samples, zero rows after them, labels -1 */
    opt.batch_size = 8;
    g_autoptr (DfqDataLoader) ls = dfq_data_loader_new (ds, &opt);
    g_autoptr (DfqArena) arena = dfq_arena_new (0);
    DfqTensor *x = dfq_tensor_new_4d (arena, DFQ_DTYPE_F32, 8, 3, 32, 32);
    DfqTensor *y = dfq_tensor_new_1d (arena, DFQ_DTYPE_I32, 8);
    guint n = 0, batches = 0, last = 0;
    while (dfq_data_loader_next (ls, x, y, &n))
        batches++, last = n;
    g_assert_cmpuint (batches, ==, 7);
    g_assert_cmpuint (last, ==, 2);
    g_assert_cmpuint (n, ==, 0);
    g_assert_false (dfq_data_loader_next (ls, x, y, &n));
    for (guint i = 2; i < 8; i++) {
        g_assert_cmpint (dfq_tensor_i32 (y)[i], ==, -1);
        g_assert_cmpfloat (dfq_tensor_f32 (x)[i * 3072 + 100], ==, 0.0f);
    }

    opt.drop_last = TRUE;
    g_autoptr (DfqDataLoader) ld = dfq_data_loader_new (ds, &opt);
    g_assert_cmpuint (dfq_data_loader_get_n_batches (ld), ==, 6);
    batches = 0;
    while (dfq_data_loader_next (ld, x, NULL, &n)) {
        batches++;
        g_assert_cmpuint (n, ==, 8);
    }
    g_assert_cmpuint (batches, ==, 6);
}

/* All of an epoch's images, concatenated in loader order. */
static float *
epoch_images (const DfqDataset *ds, const DfqDataLoaderOptions *opt, guint epoch)
{
    guint n = dfq_dataset_get_n (ds);
    float *all = g_new0 (float, (gsize) n * 3072);
    g_autoptr (DfqArena) arena = dfq_arena_new (0);
    DfqTensor *x = dfq_tensor_new_4d (arena, DFQ_DTYPE_F32, opt->batch_size, 3, 32, 32);
    g_autoptr (DfqDataLoader) loader = dfq_data_loader_new (ds, opt);
    dfq_data_loader_start_epoch (loader, epoch);
    guint got = 0, m;
    while (dfq_data_loader_next (loader, x, NULL, &m)) {
        memcpy (all + (gsize) got * 3072, x->data, (gsize) m * 3072 * sizeof (float));
        got += m;
    }
    g_assert_cmpuint (got, ==, n);
    return all;
}

/* Does @out equal image @src padded by @pad, cropped at (dy, dx), maybe mirrored? */
static gboolean
matches_augmentation (const guint8 *src, const float *out, guint pad, guint dy, guint dx, gboolean flip)
{
    for (guint c = 0; c < 3; c++)
        for (guint y = 0; y < 32; y++)
            for (guint x = 0; x < 32; x++) {
                int sy = (int) y + (int) dy - (int) pad;
                int sx = (int) (flip ? 31 - x : x) + (int) dx - (int) pad;
                float want = (sy < 0 || sy >= 32 || sx < 0 || sx >= 32) ? 0.0f : (float) src[(c * 32 + sy) * 32 + sx];
                if (fabsf (out[(c * 32 + y) * 32 + x] - want) > 1e-3f)
                    return FALSE;
            }
    return TRUE;
}

static void
test_loader_augment (TmpFixture *f, gconstpointer data)
{
    g_test_summary ("Pad + random crop + flip: a valid crop of each image, deterministic, independent of batch size and threads");
    g_autoptr (DfqDataset) ds = make_indexed_cifar (f->dir, 100);
    DfqDataLoaderOptions opt = DFQ_DATA_LOADER_OPTIONS_INIT;
    opt.shuffle = FALSE;
    opt.seed = 5;
    opt.pad = 4;
    opt.hflip = TRUE;

    /* batch 100 renders in parallel (OpenMP), batch 3 serially */
    opt.batch_size = 100;
    g_autofree float *big = epoch_images (ds, &opt, 0);
    opt.batch_size = 3;
    g_autofree float *small = epoch_images (ds, &opt, 0);
    g_assert_cmpmem (big, 100 * 3072 * sizeof (float), small, 100 * 3072 * sizeof (float));
    g_autofree float *again = epoch_images (ds, &opt, 0);
    g_assert_cmpmem (big, 100 * 3072 * sizeof (float), again, 100 * 3072 * sizeof (float));
    g_autofree float *next_epoch = epoch_images (ds, &opt, 1);
    g_assert_true (memcmp (big, next_epoch, 100 * 3072 * sizeof (float)) != 0);

    /* Each output is some crop/flip of its own image; both flips and several offsets occur. */
    guint flips = 0, offsets_seen = 0;
    gboolean offset_used[9] = { FALSE };
    for (guint i = 0; i < 100; i++) {
        const float *out = big + (gsize) i * 3072;
        gboolean found = FALSE;
        for (guint dy = 0; dy <= 8 && !found; dy++)
            for (guint dx = 0; dx <= 8 && !found; dx++)
                for (int flip = 0; flip <= 1 && !found; flip++)
                    if (matches_augmentation (dfq_dataset_get_pixels (ds, i), out, 4, dy, dx, flip)) {
                        found = TRUE;
                        flips += (guint) flip;
                        if (!offset_used[dy]) {
                            offset_used[dy] = TRUE;
                            offsets_seen++;
                        }
                    }
        if (!found)
            g_error ("image %u is not a pad-4 crop/flip of its source", i);
    }
    g_assert_cmpuint (flips, >, 20);
    g_assert_cmpuint (flips, <, 80);
    g_assert_cmpuint (offsets_seen, >=, 7);

    /* Shuffled: the same image gets the same augmentation whatever the batch size */
    opt.shuffle = TRUE;
    opt.batch_size = 100;
    g_autofree float *sh_big = epoch_images (ds, &opt, 2);
    opt.batch_size = 7;
    g_autofree float *sh_small = epoch_images (ds, &opt, 2);
    g_assert_cmpmem (sh_big, 100 * 3072 * sizeof (float), sh_small, 100 * 3072 * sizeof (float));

    /* Without augmentation the loader gives fill_batch's values */
    opt.shuffle = FALSE;
    opt.pad = 0;
    opt.hflip = FALSE;
    opt.batch_size = 10;
    g_autofree float *plain = epoch_images (ds, &opt, 0);
    g_autoptr (DfqArena) arena = dfq_arena_new (0);
    DfqTensor *x = dfq_tensor_new_4d (arena, DFQ_DTYPE_F32, 10, 3, 32, 32);
    guint32 idx[10];
    for (guint i = 0; i < 10; i++)
        idx[i] = 20 + i;
    dfq_dataset_fill_batch (ds, idx, 10, x, NULL);
    g_assert_cmpmem (plain + 20 * 3072, 10 * 3072 * sizeof (float), x->data, 10 * 3072 * sizeof (float));
}

static void
test_loader_seek (TmpFixture *f, gconstpointer data)
{
    g_test_summary ("Seek to batch k of an epoch gives the batches that reading from the start gives there "
                    "(order and augmentation), and past the end the epoch is exhausted");
    g_autoptr (DfqDataset) ds = make_indexed_cifar (f->dir, 50);
    DfqDataLoaderOptions opt = DFQ_DATA_LOADER_OPTIONS_INIT;
    opt.batch_size = 8;
    opt.seed = 3;
    opt.pad = 4;
    opt.hflip = TRUE;
    opt.drop_last = TRUE;
    g_autofree float *all = g_new0 (float, 50 * 3072);
    g_autoptr (DfqArena) arena = dfq_arena_new (0);
    DfqTensor *x = dfq_tensor_new_4d (arena, DFQ_DTYPE_F32, 8, 3, 32, 32);
    DfqTensor *y = dfq_tensor_new_1d (arena, DFQ_DTYPE_I32, 8);
    g_autofree gint32 *labels = g_new0 (gint32, 50);
    g_autoptr (DfqDataLoader) loader = dfq_data_loader_new (ds, &opt);
    dfq_data_loader_start_epoch (loader, 2);
    guint b = 0;
    while (dfq_data_loader_next (loader, x, y, NULL)) {
        memcpy (all + (gsize) b * 8 * 3072, x->data, 8 * 3072 * sizeof (float));
        memcpy (labels + b * 8, y->data, 8 * sizeof (gint32));
        b++;
    }
    g_assert_cmpuint (b, ==, 6);
    g_autoptr (DfqDataLoader) other = dfq_data_loader_new (ds, &opt);
    for (guint k = 0; k < 6; k++) {
        dfq_data_loader_start_epoch (other, 2);
        dfq_data_loader_seek (other, k);
        for (guint j = k; j < 6; j++) {
            g_assert_true (dfq_data_loader_next (other, x, y, NULL));
            g_assert_cmpmem (x->data, 8 * 3072 * sizeof (float), all + (gsize) j * 8 * 3072, 8 * 3072 * sizeof (float));
            g_assert_cmpmem (y->data, 8 * sizeof (gint32), labels + j * 8, 8 * sizeof (gint32));
        }
        g_assert_false (dfq_data_loader_next (other, x, y, NULL));
    }
    dfq_data_loader_seek (other, 1000000);
    g_assert_false (dfq_data_loader_next (other, x, y, NULL));
}

static void
test_sample (TmpFixture *f, gconstpointer data)
{
    g_test_summary ("dfq_dataset_sample: a fixed set of distinct samples per seed (calibration)");
    g_autoptr (DfqDataset) ds = make_indexed_cifar (f->dir, 30);
    g_autoptr (DfqArena) arena = dfq_arena_new (0);
    DfqTensor *x1, *y1, *x2, *y2, *x3;
    dfq_dataset_sample (ds, 12, 3, arena, &x1, &y1);
    dfq_dataset_sample (ds, 12, 3, arena, &x2, &y2);
    dfq_dataset_sample (ds, 12, 4, arena, &x3, NULL);
    g_assert_cmpint (x1->shape[0], ==, 12);
    g_assert_cmpfloat (dfq_tensor_max_abs_diff (x1, x2), ==, 0.0f);
    g_assert_cmpfloat (dfq_tensor_max_abs_diff (x1, x3), >, 0.0f);
    gboolean seen[30] = { FALSE };
    for (guint i = 0; i < 12; i++) {
        guint idx = (guint) lrintf (dfq_tensor_f32 (x1)[i * 3072]);
        g_assert_false (seen[idx]);
        seen[idx] = TRUE;
        g_assert_cmpint (dfq_tensor_i32 (y1)[i], ==, (gint) (idx % 10));
    }
}

static void
test_statistics (TmpFixture *f, gconstpointer data)
{
    g_test_summary ("compute_statistics: exact per-channel mean and std of pixels / 255");
    /* 2 images: channel 0 all 0 in one and 255 in the other; channel 1 all 51 */
    GByteArray *a = g_byte_array_new ();
    for (guint i = 0; i < 2; i++) {
        guint8 rec[3073];
        rec[0] = 1;
        memset (rec + 1, i ? 255 : 0, 1024);
        memset (rec + 1 + 1024, 51, 1024);
        memset (rec + 1 + 2048, 0, 1024);
        g_byte_array_append (a, rec, sizeof rec);
    }
    g_autofree char *path = write_file (f->dir, "s.bin", a->data, a->len);
    g_byte_array_unref (a);
    const char *paths[] = { path, NULL };
    g_autoptr (GError) error = NULL;
    g_autoptr (DfqDataset) ds = dfq_dataset_new_cifar (paths, FALSE, FALSE, &error);
    g_assert_no_error (error);
    double mean[3], std[3];
    dfq_dataset_compute_statistics (ds, mean, std);
    g_assert_cmpfloat_with_epsilon (mean[0], 0.5, 1e-12);
    g_assert_cmpfloat_with_epsilon (std[0], 0.5, 1e-12);
    g_assert_cmpfloat_with_epsilon (mean[1], 0.2, 1e-12);
    g_assert_cmpfloat_with_epsilon (std[1], 0.0, 1e-6);
    g_assert_cmpfloat (mean[2], ==, 0.0);
}

/* ------------------------------------------------------------------------ */
/* The real Fashion-MNIST */

static void
test_fashion_mnist_real (TmpFixture *f, gconstpointer data)
{
    g_test_summary ("Debian's dataset-fashion-mnist: test 10000 and train 60000 images of 28x28, labels 0..9, train mean 0.2860 std 0.3530");
    if (!g_file_test (DFQ_DATASET_FASHION_MNIST_SYSTEM_DIR, G_FILE_TEST_IS_DIR)) {
        g_test_skip ("dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)");
        return;
    }
    g_autoptr (GError) error = NULL;
    g_autoptr (DfqDataset) test = dfq_dataset_open ("fashion-mnist", DFQ_DATASET_SPLIT_TEST, NULL, &error);
    g_assert_no_error (error);
    g_assert_cmpstr (dfq_dataset_get_location (test), ==, DFQ_DATASET_FASHION_MNIST_SYSTEM_DIR);
    g_assert_cmpuint (dfq_dataset_get_n (test), ==, 10000);
    guint c, h, w;
    dfq_dataset_get_shape (test, &c, &h, &w);
    g_assert_cmpuint (c, ==, 1);
    g_assert_cmpuint (h, ==, 28);
    g_assert_cmpuint (w, ==, 28);
    guint per_class[10] = { 0 };
    for (guint i = 0; i < 10000; i++)
        per_class[dfq_dataset_get_label (test, i)]++;
    for (guint k = 0; k < 10; k++)
        g_assert_cmpuint (per_class[k], ==, 1000);
    double mean, std;
    dfq_dataset_compute_statistics (test, &mean, &std);
    g_test_message ("test split: mean %.4f std %.4f", mean, std);
    g_assert_cmpfloat (fabs (mean - 0.286), <, 0.005);
    g_assert_cmpfloat (fabs (std - 0.353), <, 0.005);
    float m, s;
    dfq_dataset_get_normalization (test, &m, &s);
    g_assert_cmpfloat (m, ==, 0.2860f);
    g_assert_cmpfloat (s, ==, 0.3530f);

    g_autoptr (DfqDataset) train = dfq_dataset_open ("fashion-mnist", DFQ_DATASET_SPLIT_TRAIN, NULL, &error);
    g_assert_no_error (error);
    g_assert_cmpuint (dfq_dataset_get_n (train), ==, 60000);
    dfq_dataset_compute_statistics (train, &mean, &std);
    g_test_message ("train split: mean %.4f std %.4f", mean, std);
    g_assert_cmpfloat (fabs (mean - 0.2860), <, 0.0005);
    g_assert_cmpfloat (fabs (std - 0.3530), <, 0.0005);

    /* A normalised batch of the whole training set is about zero-mean */
    DfqDataLoaderOptions opt = DFQ_DATA_LOADER_OPTIONS_INIT;
    opt.batch_size = 500;
    opt.seed = 1;
    g_autoptr (DfqDataLoader) loader = dfq_data_loader_new (train, &opt);
    g_autoptr (DfqArena) arena = dfq_arena_new (0);
    DfqTensor *x = dfq_tensor_new_4d (arena, DFQ_DTYPE_F32, 500, 1, 28, 28);
    DfqTensor *y = dfq_tensor_new_1d (arena, DFQ_DTYPE_I32, 500);
    double sum = 0.0;
    guint n = 0, batches = 0;
    while (dfq_data_loader_next (loader, x, y, &n)) {
        for (gint64 i = 0; i < dfq_tensor_numel (x); i++)
            sum += dfq_tensor_f32 (x)[i];
        batches++;
    }
    g_assert_cmpuint (batches, ==, 120);
    g_assert_cmpfloat (fabs (sum / (60000.0 * 784)), <, 0.002);
}

int
main (int argc, char **argv)
{
    /* no G_TEST_OPTION_ISOLATE_DIRS: GLib 2.74 leaks its per-test dir strings
     * under valgrind; these tests write only below g_dir_make_tmp () */
    g_test_init (&argc, &argv, NULL);
#define ADD(path, fn) g_test_add (path, TmpFixture, NULL, tmp_setup, fn, tmp_teardown)
    ADD ("/dataset/idx/load", test_idx_load);
    ADD ("/dataset/idx/corrupt", test_idx_corrupt);
    ADD ("/dataset/cifar/cifar10", test_cifar10);
    ADD ("/dataset/cifar/cifar100", test_cifar100);
    ADD ("/dataset/location/not-found", test_not_found);
    ADD ("/dataset/loader/shuffle", test_loader_shuffle);
    ADD ("/dataset/loader/augment", test_loader_augment);
    ADD ("/dataset/loader/seek", test_loader_seek);
    ADD ("/dataset/sample", test_sample);
    ADD ("/dataset/statistics", test_statistics);
    ADD ("/dataset/fashion-mnist/real", test_fashion_mnist_real);
#undef ADD
    return g_test_run ();
}
