/* Datasets (core/data): IDX (MNIST, Fashion-MNIST) and CIFAR-10/100 binary
 * readers with full validation, dataset location ($DFQ_DATA_DIR, Debian's
 * package directory), normalisation through per-channel lookup tables, and the
 * batch loader with counter-RNG shuffling and augmentation (DESIGN.md 4).
 * Files are untrusted: every header value is checked against the data that
 * actually arrives, and memory grows only as data is read (no huge allocation
 * from a lying header or a gzip bomb). */
#include <math.h>
#include <string.h>

#include <gio/gio.h>

#include <dfq/dfq-dataset.h>
#include <dfq/dfq-rand.h>

struct _DfqDataset {
    char *name;
    char *location;
    guint n, channels, height, width, n_classes;
    guint8 *pixels; /* n * C * H * W, CHW per image */
    guint8 *labels; /* n */
    float mean[DFQ_DATASET_MAX_CHANNELS];
    float std[DFQ_DATASET_MAX_CHANNELS];
    /* lut[c][v] = (v / 255 - mean[c]) / std[c]: one load per pixel in the hot path */
    float lut[DFQ_DATASET_MAX_CHANNELS][256];
};

struct _DfqDataLoader {
    const DfqDataset *dataset;
    DfqDataLoaderOptions opt;
    guint32 *order; /* this epoch's sample order */
    guint epoch;
    guint pos;
};

/* Stream ids of the counter RNG, tagged so no other consumer of the same seed
 * draws the same numbers; the low 32 bits hold the epoch. */
#define DFQ_DATA_STREAM_SHUFFLE (G_GUINT64_CONSTANT (0x53687566) << 32) /* "Shuf" */
#define DFQ_DATA_STREAM_AUGMENT (G_GUINT64_CONSTANT (0x41756774) << 32) /* "Augt" */
#define DFQ_DATA_STREAM_SAMPLE (G_GUINT64_CONSTANT (0x53616d70) << 32)  /* "Samp" */

/* Read granularity and sanity caps. */
#define DFQ_DATASET_CHUNK (4u << 20)
#define DFQ_DATASET_MAX_BYTES (G_GUINT64_CONSTANT (16) << 30) /* 16 GiB of pixels */
#define DFQ_DATASET_MAX_SIDE 4096

typedef enum {
    DFQ_DATASET_KIND_IDX,
    DFQ_DATASET_KIND_CIFAR10,
    DFQ_DATASET_KIND_CIFAR100,
    DFQ_DATASET_KIND_CIFAR100_COARSE,
} DfqDatasetKind;

/* The datasets dfq_dataset_open() knows. */
typedef struct {
    const char *name;     /* canonical name */
    const char *key;      /* lower-case, no '-' or '_': what user spellings reduce to */
    DfqDatasetKind kind;
    guint n_classes;
    const char *subdirs[4]; /* tried below each base directory, before the base itself */
    float mean[DFQ_DATASET_MAX_CHANNELS];
    float std[DFQ_DATASET_MAX_CHANNELS];
    const char *how_to_get;
} DfqDatasetSpec;

static const DfqDatasetSpec dfq_dataset_specs[] = {
    { "fashion-mnist", "fashionmnist", DFQ_DATASET_KIND_IDX, 10,
      { "fashion-mnist", "FashionMNIST/raw", NULL },
      { 0.2860f }, { 0.3530f },
      "install it with 'apt-get install dataset-fashion-mnist' (it puts the IDX files in "
      DFQ_DATASET_FASHION_MNIST_SYSTEM_DIR "), or put train-images-idx3-ubyte.gz, "
      "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz "
      "in $DFQ_DATA_DIR/fashion-mnist" },
    { "mnist", "mnist", DFQ_DATASET_KIND_IDX, 10,
      { "mnist", "MNIST/raw", NULL },
      { 0.1307f }, { 0.3081f },
      "put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz "
      "and t10k-labels-idx1-ubyte.gz (gzip or plain) in $DFQ_DATA_DIR/mnist or the pipeline's data directory" },
    { "cifar10", "cifar10", DFQ_DATASET_KIND_CIFAR10, 10,
      { "cifar10", "cifar10/cifar-10-batches-bin", "cifar-10-batches-bin", NULL },
      { 0.49139968f, 0.48215827f, 0.44653124f }, { 0.24703233f, 0.24348505f, 0.26158768f },
      "put the binary version's files (cifar-10-binary.tar.gz, extracted: data_batch_1.bin .. "
      "data_batch_5.bin and test_batch.bin) in $DFQ_DATA_DIR/cifar10 or the pipeline's data directory" },
    { "cifar100", "cifar100", DFQ_DATASET_KIND_CIFAR100, 100,
      { "cifar100", "cifar100/cifar-100-binary", "cifar-100-binary", NULL },
      { 0.50705882f, 0.48666667f, 0.44078431f }, { 0.26745098f, 0.25568627f, 0.27607843f },
      "put the binary version's files (cifar-100-binary.tar.gz, extracted: train.bin and test.bin) "
      "in $DFQ_DATA_DIR/cifar100 or the pipeline's data directory" },
    { "cifar100-coarse", "cifar100coarse", DFQ_DATASET_KIND_CIFAR100_COARSE, 20,
      { "cifar100", "cifar100/cifar-100-binary", "cifar-100-binary", NULL },
      { 0.50705882f, 0.48666667f, 0.44078431f }, { 0.26745098f, 0.25568627f, 0.27607843f },
      "put the binary version's files (cifar-100-binary.tar.gz, extracted: train.bin and test.bin) "
      "in $DFQ_DATA_DIR/cifar100 or the pipeline's data directory" },
};

/* ------------------------------------------------------------------------ */
/* Streams: plain or gzip, with GIO errors mapped onto DFQ_DATA_ERROR */

static void
dfq_dataset_propagate_read_error (GError **error, GError *local, const char *path)
{
    /* GZlibDecompressor reports corrupt data as INVALID_DATA and a cut-off
     * stream as PARTIAL_INPUT: both are defects of the file, not of the disk. */
    if (g_error_matches (local, G_IO_ERROR, G_IO_ERROR_INVALID_DATA) ||
        g_error_matches (local, G_IO_ERROR, G_IO_ERROR_PARTIAL_INPUT))
        g_set_error (error, DFQ_DATA_ERROR, DFQ_DATA_ERROR_FORMAT, "%s: corrupt gzip data: %s", path, local->message);
    else
        g_set_error (error, DFQ_DATA_ERROR, DFQ_DATA_ERROR_IO, "%s: %s", path, local->message);
}

/* Opens @path; gzip is recognised by its magic bytes, not by the file name. */
static GInputStream *
dfq_dataset_open_stream (const char *path, GError **error)
{
    g_autoptr (GFile) file = g_file_new_for_path (path);
    g_autoptr (GError) local = NULL;
    g_autoptr (GFileInputStream) fis = g_file_read (file, NULL, &local);
    if (fis == NULL) {
        g_set_error (error, DFQ_DATA_ERROR,
                     g_error_matches (local, G_IO_ERROR, G_IO_ERROR_NOT_FOUND) ? DFQ_DATA_ERROR_NOT_FOUND : DFQ_DATA_ERROR_IO,
                     "%s: %s", path, local->message);
        return NULL;
    }
    g_autoptr (GInputStream) buffered = g_buffered_input_stream_new (G_INPUT_STREAM (fis));
    GBufferedInputStream *bis = G_BUFFERED_INPUT_STREAM (buffered);
    while (g_buffered_input_stream_get_available (bis) < 2) {
        gssize got = g_buffered_input_stream_fill (bis, 2, NULL, &local);
        if (got < 0) {
            dfq_dataset_propagate_read_error (error, local, path);
            return NULL;
        }
        if (got == 0)
            break; /* short file: the format check will say so */
    }
    gsize avail = 0;
    const guint8 *peek = g_buffered_input_stream_peek_buffer (bis, &avail);
    if (avail >= 2 && peek[0] == 0x1f && peek[1] == 0x8b) {
        g_autoptr (GZlibDecompressor) dec = g_zlib_decompressor_new (G_ZLIB_COMPRESSOR_FORMAT_GZIP);
        return g_converter_input_stream_new (buffered, G_CONVERTER (dec));
    }
    return g_steal_pointer (&buffered);
}

/* Reads up to @n bytes; *got < n only at end of stream. */
static gboolean
dfq_dataset_read (GInputStream *s, const char *path, guint8 *buf, gsize n, gsize *got, GError **error)
{
    g_autoptr (GError) local = NULL;
    if (!g_input_stream_read_all (s, buf, n, got, NULL, &local)) {
        dfq_dataset_propagate_read_error (error, local, path);
        return FALSE;
    }
    return TRUE;
}

/* Reads exactly @expected bytes and checks that nothing follows. The buffer
 * grows with the data that really arrives, so a header that promises too
 * much fails on the short file instead of allocating first. */
static guint8 *
dfq_dataset_read_payload (GInputStream *s, const char *path, guint64 expected, guint64 header_bytes,
                          const char *what, GError **error)
{
    if (expected > DFQ_DATASET_MAX_BYTES) {
        g_set_error (error, DFQ_DATA_ERROR, DFQ_DATA_ERROR_FORMAT,
                     "%s: header promises %" G_GUINT64_FORMAT " bytes of %s, more than the %" G_GUINT64_FORMAT "-byte limit",
                     path, expected, what, DFQ_DATASET_MAX_BYTES);
        return NULL;
    }
    gsize cap = (gsize) MIN (expected, (guint64) DFQ_DATASET_CHUNK);
    g_autofree guint8 *buf = g_malloc (MAX (cap, 1));
    gsize have = 0;
    while (have < expected) {
        if (have == cap) {
            cap = (gsize) MIN (expected, (guint64) cap * 2);
            buf = g_realloc (buf, cap);
        }
        gsize want = MIN (cap - have, (gsize) DFQ_DATASET_CHUNK);
        gsize got = 0;
        if (!dfq_dataset_read (s, path, buf + have, want, &got, error))
            return NULL;
        have += got;
        if (got < want) {
            g_set_error (error, DFQ_DATA_ERROR, DFQ_DATA_ERROR_FORMAT,
                         "%s: truncated: the header promises %" G_GUINT64_FORMAT " bytes of %s "
                         "(%" G_GUINT64_FORMAT " bytes in all) but the data is %" G_GUINT64_FORMAT " bytes",
                         path, expected, what, header_bytes + expected, header_bytes + (guint64) have);
            return NULL;
        }
    }
    guint8 extra[64];
    gsize got = 0;
    if (!dfq_dataset_read (s, path, extra, sizeof extra, &got, error))
        return NULL;
    if (got > 0) {
        g_set_error (error, DFQ_DATA_ERROR, DFQ_DATA_ERROR_FORMAT,
                     "%s: the data is longer than the %" G_GUINT64_FORMAT " bytes the header promises",
                     path, header_bytes + expected);
        return NULL;
    }
    return g_steal_pointer (&buf);
}

/* ------------------------------------------------------------------------ */
/* IDX */

/* Reads an IDX ubyte file with @want_dims dimensions; dims into @dims. */
static guint8 *
dfq_dataset_read_idx (const char *path, guint want_dims, guint32 *dims, GError **error)
{
    g_autoptr (GInputStream) s = dfq_dataset_open_stream (path, error);
    if (s == NULL)
        return NULL;

    guint8 magic[4];
    gsize got = 0;
    if (!dfq_dataset_read (s, path, magic, 4, &got, error))
        return NULL;
    if (got < 4) {
        g_set_error (error, DFQ_DATA_ERROR, DFQ_DATA_ERROR_FORMAT,
                     "%s: %" G_GSIZE_FORMAT " bytes, too short for an IDX magic number", path, got);
        return NULL;
    }
    if (magic[0] != 0 || magic[1] != 0) {
        g_set_error (error, DFQ_DATA_ERROR, DFQ_DATA_ERROR_FORMAT,
                     "%s: bad IDX magic number 0x%02x%02x%02x%02x (expected 0x0000080%u)",
                     path, magic[0], magic[1], magic[2], magic[3], want_dims);
        return NULL;
    }
    if (magic[2] != 0x08) {
        g_set_error (error, DFQ_DATA_ERROR, DFQ_DATA_ERROR_FORMAT,
                     "%s: IDX data type 0x%02x is not supported (need 0x08, unsigned byte)", path, magic[2]);
        return NULL;
    }
    if (magic[3] != want_dims) {
        g_set_error (error, DFQ_DATA_ERROR, DFQ_DATA_ERROR_FORMAT,
                     "%s: IDX file has %u dimensions, expected %u (%s)",
                     path, magic[3], want_dims, want_dims == 3 ? "images" : "labels");
        return NULL;
    }
    guint8 raw[4 * 3];
    if (!dfq_dataset_read (s, path, raw, 4 * want_dims, &got, error))
        return NULL;
    if (got < 4 * want_dims) {
        g_set_error (error, DFQ_DATA_ERROR, DFQ_DATA_ERROR_FORMAT,
                     "%s: truncated IDX header (%" G_GSIZE_FORMAT " of %u dimension bytes)", path, got, 4 * want_dims);
        return NULL;
    }
    guint64 total = 1;
    for (guint d = 0; d < want_dims; d++) {
        dims[d] = ((guint32) raw[4 * d] << 24) | ((guint32) raw[4 * d + 1] << 16) | ((guint32) raw[4 * d + 2] << 8) | raw[4 * d + 3];
        if (dims[d] == 0 || dims[d] > G_MAXINT32 || (d > 0 && dims[d] > DFQ_DATASET_MAX_SIDE)) {
            g_set_error (error, DFQ_DATA_ERROR, DFQ_DATA_ERROR_FORMAT,
                         "%s: IDX dimension %u is %u (must be 1 .. %u)",
                         path, d, dims[d], d > 0 ? DFQ_DATASET_MAX_SIDE : G_MAXINT32);
            return NULL;
        }
        total *= dims[d]; /* < 2^31 * 4096^2: no overflow */
    }
    return dfq_dataset_read_payload (s, path, total, 4 + 4 * (guint64) want_dims,
                                     want_dims == 3 ? "pixels" : "labels", error);
}

static void
dfq_dataset_update_lut (DfqDataset *self)
{
    for (guint c = 0; c < self->channels; c++)
        for (int v = 0; v < 256; v++)
            self->lut[c][v] = ((float) v / 255.0f - self->mean[c]) / self->std[c];
}

static DfqDataset *
dfq_dataset_alloc (const char *name, const char *location, guint channels, guint height, guint width, guint n_classes)
{
    DfqDataset *self = g_new0 (DfqDataset, 1);
    self->name = g_strdup (name);
    self->location = g_strdup (location);
    self->channels = channels;
    self->height = height;
    self->width = width;
    self->n_classes = n_classes;
    for (guint c = 0; c < DFQ_DATASET_MAX_CHANNELS; c++) {
        self->mean[c] = 0.0f;
        self->std[c] = 1.0f;
    }
    dfq_dataset_update_lut (self);
    return self;
}

void
dfq_dataset_free (DfqDataset *self)
{
    if (self == NULL)
        return;
    g_free (self->pixels);
    g_free (self->labels);
    g_free (self->name);
    g_free (self->location);
    g_free (self);
}

/* Labels must be < n_classes; the message names the first bad one. */
static gboolean
dfq_dataset_check_labels (const char *path, const guint8 *labels, guint n, guint stride, guint n_classes, GError **error)
{
    for (guint i = 0; i < n; i++)
        if (labels[(gsize) i * stride] >= n_classes) {
            g_set_error (error, DFQ_DATA_ERROR, DFQ_DATA_ERROR_FORMAT,
                         "%s: label of sample %u is %u, not < %u classes", path, i, labels[(gsize) i * stride], n_classes);
            return FALSE;
        }
    return TRUE;
}

DfqDataset *
dfq_dataset_new_idx (const char *images_path, const char *labels_path, guint n_classes, GError **error)
{
    g_return_val_if_fail (images_path != NULL && labels_path != NULL, NULL);
    g_return_val_if_fail (n_classes >= 1 && n_classes <= 256, NULL);
    g_return_val_if_fail (error == NULL || *error == NULL, NULL);

    guint32 idims[3], ldims[1];
    g_autofree guint8 *pixels = dfq_dataset_read_idx (images_path, 3, idims, error);
    if (pixels == NULL)
        return NULL;
    g_autofree guint8 *labels = dfq_dataset_read_idx (labels_path, 1, ldims, error);
    if (labels == NULL)
        return NULL;
    if (ldims[0] != idims[0]) {
        g_set_error (error, DFQ_DATA_ERROR, DFQ_DATA_ERROR_FORMAT,
                     "%s: %u labels for the %u images of %s", labels_path, ldims[0], idims[0], images_path);
        return NULL;
    }
    if (!dfq_dataset_check_labels (labels_path, labels, ldims[0], 1, n_classes, error))
        return NULL;

    g_autofree char *base = g_path_get_basename (images_path);
    DfqDataset *self = dfq_dataset_alloc (base, images_path, 1, idims[1], idims[2], n_classes);
    self->n = idims[0];
    self->pixels = g_steal_pointer (&pixels);
    self->labels = g_steal_pointer (&labels);
    return self;
}

/* ------------------------------------------------------------------------ */
/* CIFAR binary */

#define DFQ_CIFAR_PIXELS 3072 /* 3 x 32 x 32, R, G, B planes */

/* Reads a whole (plain or gzip) file, growing with the data, at most @cap bytes. */
static guint8 *
dfq_dataset_read_all (const char *path, guint64 cap, gsize *len, GError **error)
{
    g_autoptr (GInputStream) s = dfq_dataset_open_stream (path, error);
    if (s == NULL)
        return NULL;
    gsize size = DFQ_DATASET_CHUNK, have = 0;
    g_autofree guint8 *buf = g_malloc (size);
    for (;;) {
        if (have == size) {
            if (size >= cap) {
                g_set_error (error, DFQ_DATA_ERROR, DFQ_DATA_ERROR_FORMAT,
                             "%s: larger than %" G_GUINT64_FORMAT " bytes", path, cap);
                return NULL;
            }
            size = (gsize) MIN ((guint64) size * 2, cap);
            buf = g_realloc (buf, size);
        }
        gsize got = 0;
        if (!dfq_dataset_read (s, path, buf + have, size - have, &got, error))
            return NULL;
        have += got;
        if (have < size)
            break; /* end of stream */
    }
    *len = have;
    return g_steal_pointer (&buf);
}

DfqDataset *
dfq_dataset_new_cifar (const char *const *paths, gboolean cifar100, gboolean coarse_labels, GError **error)
{
    g_return_val_if_fail (paths != NULL && paths[0] != NULL, NULL);
    g_return_val_if_fail (error == NULL || *error == NULL, NULL);

    const guint label_bytes = cifar100 ? 2 : 1;
    const gsize record = label_bytes + DFQ_CIFAR_PIXELS;
    /* CIFAR-100 records: coarse label, fine label, pixels */
    const guint label_offset = cifar100 && !coarse_labels ? 1 : 0;
    const guint n_classes = !cifar100 ? 10 : coarse_labels ? 20 : 100;

    g_autoptr (GByteArray) pixels = g_byte_array_new ();
    g_autoptr (GByteArray) labels = g_byte_array_new ();
    for (const char *const *p = paths; *p != NULL; p++) {
        gsize len = 0;
        g_autofree guint8 *data = dfq_dataset_read_all (*p, DFQ_DATASET_MAX_BYTES, &len, error);
        if (data == NULL)
            return NULL;
        if (len == 0 || len % record != 0) {
            g_set_error (error, DFQ_DATA_ERROR, DFQ_DATA_ERROR_FORMAT,
                         "%s: %" G_GSIZE_FORMAT " bytes is not a whole number of %" G_GSIZE_FORMAT "-byte %s records",
                         *p, len, record, cifar100 ? "CIFAR-100" : "CIFAR-10");
            return NULL;
        }
        guint n = (guint) (len / record);
        if ((guint64) labels->len + n > G_MAXINT32) {
            g_set_error (error, DFQ_DATA_ERROR, DFQ_DATA_ERROR_FORMAT, "%s: too many records", *p);
            return NULL;
        }
        if (!dfq_dataset_check_labels (*p, data + label_offset, n, (guint) record, n_classes, error))
            return NULL;
        if (cifar100 && !dfq_dataset_check_labels (*p, data + (1 - label_offset), n, (guint) record,
                                                   coarse_labels ? 100 : 20, error)) {
            g_prefix_error (error, "(the other label byte) ");
            return NULL;
        }
        for (guint i = 0; i < n; i++) {
            const guint8 *r = data + (gsize) i * record;
            g_byte_array_append (labels, r + label_offset, 1);
            g_byte_array_append (pixels, r + label_bytes, DFQ_CIFAR_PIXELS);
        }
    }

    g_autofree char *dir = g_path_get_dirname (paths[0]);
    DfqDataset *self = dfq_dataset_alloc (cifar100 ? (coarse_labels ? "cifar100-coarse" : "cifar100") : "cifar10",
                                          dir, 3, 32, 32, n_classes);
    self->n = labels->len;
    self->pixels = g_byte_array_steal (pixels, NULL);
    self->labels = g_byte_array_steal (labels, NULL);
    return self;
}

/* ------------------------------------------------------------------------ */
/* Finding a dataset by name */

static const DfqDatasetSpec *
dfq_dataset_find_spec (const char *name)
{
    g_autofree char *lower = g_ascii_strdown (name, -1);
    GString *key = g_string_new (NULL);
    for (const char *p = lower; *p; p++)
        if (*p != '-' && *p != '_')
            g_string_append_c (key, *p);
    const DfqDatasetSpec *found = NULL;
    for (guint i = 0; i < G_N_ELEMENTS (dfq_dataset_specs); i++)
        if (strcmp (key->str, dfq_dataset_specs[i].key) == 0)
            found = &dfq_dataset_specs[i];
    g_string_free (key, TRUE);
    return found;
}

/* The files a split needs, as NULL-terminated base names (IDX: images, labels
 * without the optional ".gz"). */
static GStrv
dfq_dataset_split_files (const DfqDatasetSpec *spec, DfqDatasetSplit split)
{
    GStrvBuilder *b = g_strv_builder_new ();
    if (spec->kind == DFQ_DATASET_KIND_IDX) {
        const char *prefix = split == DFQ_DATASET_SPLIT_TRAIN ? "train" : "t10k";
        g_autofree char *images = g_strdup_printf ("%s-images-idx3-ubyte", prefix);
        g_autofree char *labels = g_strdup_printf ("%s-labels-idx1-ubyte", prefix);
        g_strv_builder_add (b, images);
        g_strv_builder_add (b, labels);
    } else if (spec->kind == DFQ_DATASET_KIND_CIFAR10) {
        if (split == DFQ_DATASET_SPLIT_TRAIN)
            for (int i = 1; i <= 5; i++) {
                g_autofree char *file = g_strdup_printf ("data_batch_%d.bin", i);
                g_strv_builder_add (b, file);
            }
        else
            g_strv_builder_add (b, "test_batch.bin");
    } else {
        g_strv_builder_add (b, split == DFQ_DATASET_SPLIT_TRAIN ? "train.bin" : "test.bin");
    }
    GStrv files = g_strv_builder_end (b);
    g_strv_builder_unref (b);
    return files;
}

/* Path of @file in @dir if it exists (IDX files also as "<file>.gz", preferred). */
static char *
dfq_dataset_find_file (const DfqDatasetSpec *spec, const char *dir, const char *file)
{
    if (spec->kind == DFQ_DATASET_KIND_IDX) {
        g_autofree char *gz = g_strconcat (file, ".gz", NULL);
        char *path = g_build_filename (dir, gz, NULL);
        if (g_file_test (path, G_FILE_TEST_IS_REGULAR))
            return path;
        g_free (path);
    }
    char *path = g_build_filename (dir, file, NULL);
    if (g_file_test (path, G_FILE_TEST_IS_REGULAR))
        return path;
    g_free (path);
    return NULL;
}

/* Tries one directory; on success fills @found with the full paths. Otherwise
 * appends "dir" or "dir (missing: a, b)" to @tried. */
static gboolean
dfq_dataset_try_dir (const DfqDatasetSpec *spec, const char *dir, const char *const *files,
                     GPtrArray *found, GString *tried)
{
    g_autoptr (GString) missing = g_string_new (NULL);
    guint n_found = 0;
    for (const char *const *f = files; *f != NULL; f++) {
        char *path = dfq_dataset_find_file (spec, dir, *f);
        if (path != NULL) {
            g_ptr_array_add (found, path);
            n_found++;
        } else {
            g_string_append_printf (missing, "%s%s%s", missing->len ? ", " : "", *f,
                                    spec->kind == DFQ_DATASET_KIND_IDX ? "[.gz]" : "");
        }
    }
    if (missing->len == 0)
        return TRUE;
    g_ptr_array_set_size (found, 0);
    g_string_append_printf (tried, "%s%s", tried->len ? ", " : "", dir);
    if (n_found > 0)
        g_string_append_printf (tried, " (missing: %s)", missing->str);
    return FALSE;
}

static gboolean
dfq_dataset_try_base (const DfqDatasetSpec *spec, const char *base, const char *const *files,
                      GPtrArray *found, GString *tried, char **found_dir)
{
    for (guint i = 0; i < G_N_ELEMENTS (spec->subdirs) && spec->subdirs[i] != NULL; i++) {
        g_autofree char *dir = g_build_filename (base, spec->subdirs[i], NULL);
        if (dfq_dataset_try_dir (spec, dir, files, found, tried)) {
            *found_dir = g_steal_pointer (&dir);
            return TRUE;
        }
    }
    if (dfq_dataset_try_dir (spec, base, files, found, tried)) {
        *found_dir = g_strdup (base);
        return TRUE;
    }
    return FALSE;
}

DfqDataset *
dfq_dataset_open (const char *name, DfqDatasetSplit split, const char *dir, GError **error)
{
    g_return_val_if_fail (name != NULL, NULL);
    g_return_val_if_fail (split == DFQ_DATASET_SPLIT_TRAIN || split == DFQ_DATASET_SPLIT_TEST, NULL);
    g_return_val_if_fail (error == NULL || *error == NULL, NULL);

    const DfqDatasetSpec *spec = dfq_dataset_find_spec (name);
    if (spec == NULL) {
        g_set_error (error, DFQ_DATA_ERROR, DFQ_DATA_ERROR_NOT_FOUND,
                     "unknown dataset '%s' (known: fashion-mnist, mnist, cifar10, cifar100, cifar100-coarse)", name);
        return NULL;
    }
    const char *split_name = split == DFQ_DATASET_SPLIT_TRAIN ? "train" : "test";
    g_auto (GStrv) files = dfq_dataset_split_files (spec, split);
    g_autoptr (GPtrArray) found = g_ptr_array_new_with_free_func (g_free);
    g_autoptr (GString) tried = g_string_new (NULL);
    g_autofree char *found_dir = NULL;
    gboolean ok = FALSE;

    if (dir != NULL && dir[0] != '\0') {
        /* An explicit directory is the only place looked at: a pipeline that
         * names one must not silently train on data from elsewhere. */
        ok = dfq_dataset_try_base (spec, dir, (const char *const *) files, found, tried, &found_dir);
    } else {
        const char *env = g_getenv ("DFQ_DATA_DIR");
        if (env != NULL && env[0] != '\0')
            ok = dfq_dataset_try_base (spec, env, (const char *const *) files, found, tried, &found_dir);
        else
            g_string_append (tried, "($DFQ_DATA_DIR is not set)");
        if (!ok && spec->kind == DFQ_DATASET_KIND_IDX && strcmp (spec->name, "fashion-mnist") == 0)
            ok = dfq_dataset_try_dir (spec, DFQ_DATASET_FASHION_MNIST_SYSTEM_DIR, (const char *const *) files, found, tried) &&
                 (found_dir = g_strdup (DFQ_DATASET_FASHION_MNIST_SYSTEM_DIR)) != NULL;
    }
    if (!ok) {
        g_autofree char *want = g_strjoinv (spec->kind == DFQ_DATASET_KIND_IDX ? "[.gz], " : ", ", files);
        g_set_error (error, DFQ_DATA_ERROR, DFQ_DATA_ERROR_NOT_FOUND,
                     "dataset '%s' (%s split) not found: need %s%s; looked in: %s. To get it: %s",
                     spec->name, split_name, want, spec->kind == DFQ_DATASET_KIND_IDX ? "[.gz]" : "",
                     tried->str, spec->how_to_get);
        return NULL;
    }

    g_ptr_array_add (found, NULL);
    DfqDataset *self;
    if (spec->kind == DFQ_DATASET_KIND_IDX)
        self = dfq_dataset_new_idx (g_ptr_array_index (found, 0), g_ptr_array_index (found, 1), spec->n_classes, error);
    else
        self = dfq_dataset_new_cifar ((const char *const *) found->pdata, spec->kind != DFQ_DATASET_KIND_CIFAR10,
                                      spec->kind == DFQ_DATASET_KIND_CIFAR100_COARSE, error);
    if (self == NULL)
        return NULL;
    g_free (self->name);
    self->name = g_strdup (spec->name);
    g_free (self->location);
    self->location = g_steal_pointer (&found_dir);
    dfq_dataset_set_normalization (self, spec->mean, spec->std);
    g_debug ("dataset %s (%s): %u images %ux%ux%u from %s", self->name, split_name, self->n,
             self->channels, self->height, self->width, self->location);
    return self;
}

/* ------------------------------------------------------------------------ */
/* Accessors and batches */

const char *
dfq_dataset_get_name (const DfqDataset *self)
{
    g_return_val_if_fail (self != NULL, NULL);
    return self->name;
}

const char *
dfq_dataset_get_location (const DfqDataset *self)
{
    g_return_val_if_fail (self != NULL, NULL);
    return self->location;
}

guint
dfq_dataset_get_n (const DfqDataset *self)
{
    g_return_val_if_fail (self != NULL, 0);
    return self->n;
}

guint
dfq_dataset_get_n_classes (const DfqDataset *self)
{
    g_return_val_if_fail (self != NULL, 0);
    return self->n_classes;
}

void
dfq_dataset_get_shape (const DfqDataset *self, guint *channels, guint *height, guint *width)
{
    g_return_if_fail (self != NULL);
    if (channels)
        *channels = self->channels;
    if (height)
        *height = self->height;
    if (width)
        *width = self->width;
}

guint
dfq_dataset_get_label (const DfqDataset *self, guint index)
{
    g_return_val_if_fail (self != NULL && index < self->n, 0);
    return self->labels[index];
}

const guint8 *
dfq_dataset_get_pixels (const DfqDataset *self, guint index)
{
    g_return_val_if_fail (self != NULL && index < self->n, NULL);
    return self->pixels + (gsize) index * self->channels * self->height * self->width;
}

void
dfq_dataset_set_normalization (DfqDataset *self, const float *mean, const float *std)
{
    g_return_if_fail (self != NULL && mean != NULL && std != NULL);
    for (guint c = 0; c < self->channels; c++) {
        g_return_if_fail (std[c] > 0.0f);
        self->mean[c] = mean[c];
        self->std[c] = std[c];
    }
    dfq_dataset_update_lut (self);
}

void
dfq_dataset_get_normalization (const DfqDataset *self, float *mean, float *std)
{
    g_return_if_fail (self != NULL);
    for (guint c = 0; c < self->channels; c++) {
        if (mean)
            mean[c] = self->mean[c];
        if (std)
            std[c] = self->std[c];
    }
}

void
dfq_dataset_compute_statistics (const DfqDataset *self, double *mean, double *std)
{
    g_return_if_fail (self != NULL && mean != NULL && std != NULL);
    const gsize plane = (gsize) self->height * self->width;
    /* Exact: a histogram of byte values per channel, then the moments. */
    for (guint c = 0; c < self->channels; c++) {
        guint64 hist[256] = { 0 };
        for (guint i = 0; i < self->n; i++) {
            const guint8 *p = self->pixels + ((gsize) i * self->channels + c) * plane;
            for (gsize k = 0; k < plane; k++)
                hist[p[k]]++;
        }
        double count = (double) self->n * (double) plane, s = 0.0, s2 = 0.0;
        for (int v = 0; v < 256; v++) {
            double x = v / 255.0;
            s += x * (double) hist[v];
            s2 += x * x * (double) hist[v];
        }
        mean[c] = count > 0 ? s / count : 0.0;
        std[c] = count > 0 ? sqrt (MAX (s2 / count - mean[c] * mean[c], 0.0)) : 0.0;
    }
}

/* One image into @out (C*H*W floats): normalised, optionally padded by @pad,
 * cropped at (@dy, @dx) of the padded image and mirrored. Padding is pixel 0
 * before normalisation, as torchvision's RandomCrop(padding) then Normalize. */
static void
dfq_dataset_render (const DfqDataset *self, guint index, guint pad, guint dy, guint dx, gboolean flip,
                    float *restrict out)
{
    const guint C = self->channels, H = self->height, W = self->width;
    const guint8 *src = dfq_dataset_get_pixels (self, index);
    if (pad == 0 && !flip) {
        for (guint c = 0; c < C; c++) {
            const float *restrict lut = self->lut[c];
            const guint8 *restrict s = src + (gsize) c * H * W;
            float *restrict o = out + (gsize) c * H * W;
            for (gsize k = 0; k < (gsize) H * W; k++)
                o[k] = lut[s[k]];
        }
        return;
    }
    for (guint c = 0; c < C; c++) {
        const float *restrict lut = self->lut[c];
        const float zero = lut[0];
        for (guint y = 0; y < H; y++) {
            float *restrict o = out + ((gsize) c * H + y) * W;
            gint64 sy = (gint64) y + dy - pad;
            if (sy < 0 || sy >= H) {
                for (guint x = 0; x < W; x++)
                    o[x] = zero;
                continue;
            }
            const guint8 *restrict row = src + ((gsize) c * H + (gsize) sy) * W;
            for (guint x = 0; x < W; x++) {
                gint64 sx = (gint64) (flip ? W - 1 - x : x) + dx - pad;
                o[x] = (sx < 0 || sx >= W) ? zero : lut[row[sx]];
            }
        }
    }
}

void
dfq_dataset_fill_batch (const DfqDataset *self, const guint32 *indices, guint n, DfqTensor *x, DfqTensor *y)
{
    g_return_if_fail (self != NULL && (indices != NULL || n == 0) && x != NULL);
    g_return_if_fail (x->dtype == DFQ_DTYPE_F32 && x->n_dims == 4 && x->shape[0] == n);
    g_return_if_fail (x->shape[1] == self->channels && x->shape[2] == self->height && x->shape[3] == self->width);
    g_return_if_fail (y == NULL || (y->dtype == DFQ_DTYPE_I32 && dfq_tensor_numel (y) == n));
    for (guint i = 0; i < n; i++)
        g_return_if_fail (indices[i] < self->n);

    const gsize chw = (gsize) self->channels * self->height * self->width;
    float *xd = dfq_tensor_f32 (x);
#pragma omp parallel for schedule(static) if ((gsize) n * chw > 262144)
    for (guint i = 0; i < n; i++)
        dfq_dataset_render (self, indices[i], 0, 0, 0, FALSE, xd + i * chw);
    if (y != NULL)
        for (guint i = 0; i < n; i++)
            dfq_tensor_i32 (y)[i] = self->labels[indices[i]];
}

void
dfq_dataset_sample (const DfqDataset *self, guint n, guint64 seed, DfqArena *arena, DfqTensor **x, DfqTensor **y)
{
    g_return_if_fail (self != NULL && arena != NULL && x != NULL);
    g_return_if_fail (n >= 1 && n <= self->n);
    g_autofree guint32 *perm = g_new (guint32, self->n);
    dfq_rand_permutation (perm, self->n, seed, DFQ_DATA_STREAM_SAMPLE);
    *x = dfq_tensor_new_4d (arena, DFQ_DTYPE_F32, n, self->channels, self->height, self->width);
    DfqTensor *labels = y ? dfq_tensor_new_1d (arena, DFQ_DTYPE_I32, n) : NULL;
    dfq_dataset_fill_batch (self, perm, n, *x, labels);
    if (y)
        *y = labels;
}

/* ------------------------------------------------------------------------ */
/* The loader */

DfqDataLoader *
dfq_data_loader_new (const DfqDataset *dataset, const DfqDataLoaderOptions *options)
{
    g_return_val_if_fail (dataset != NULL && options != NULL, NULL);
    g_return_val_if_fail (options->batch_size > 0, NULL);
    g_return_val_if_fail (options->pad <= 64, NULL);

    DfqDataLoader *self = g_new0 (DfqDataLoader, 1);
    self->dataset = dataset;
    self->opt = *options;
    self->order = g_new (guint32, MAX (dataset->n, 1));
    dfq_data_loader_start_epoch (self, 0);
    return self;
}

void
dfq_data_loader_free (DfqDataLoader *self)
{
    if (self == NULL)
        return;
    g_free (self->order);
    g_free (self);
}

void
dfq_data_loader_start_epoch (DfqDataLoader *self, guint epoch)
{
    g_return_if_fail (self != NULL);
    self->epoch = epoch;
    self->pos = 0;
    if (self->opt.shuffle) {
        dfq_rand_permutation (self->order, self->dataset->n, self->opt.seed, DFQ_DATA_STREAM_SHUFFLE | epoch);
    } else {
        for (guint i = 0; i < self->dataset->n; i++)
            self->order[i] = i;
    }
}

guint
dfq_data_loader_get_epoch (const DfqDataLoader *self)
{
    g_return_val_if_fail (self != NULL, 0);
    return self->epoch;
}

void
dfq_data_loader_seek (DfqDataLoader *self, guint batch)
{
    g_return_if_fail (self != NULL);
    guint64 pos = (guint64) batch * self->opt.batch_size;
    self->pos = (guint) MIN (pos, (guint64) self->dataset->n);
}

guint
dfq_data_loader_get_n_batches (const DfqDataLoader *self)
{
    g_return_val_if_fail (self != NULL, 0);
    guint n = self->dataset->n, b = self->opt.batch_size;
    return self->opt.drop_last ? n / b : (n + b - 1) / b;
}

gboolean
dfq_data_loader_next (DfqDataLoader *self, DfqTensor *x, DfqTensor *y, guint *n_filled)
{
    g_return_val_if_fail (self != NULL && x != NULL, FALSE);
    const DfqDataset *ds = self->dataset;
    const guint B = self->opt.batch_size;
    g_return_val_if_fail (x->dtype == DFQ_DTYPE_F32 && x->n_dims == 4 && x->shape[0] == B, FALSE);
    g_return_val_if_fail (x->shape[1] == ds->channels && x->shape[2] == ds->height && x->shape[3] == ds->width, FALSE);
    g_return_val_if_fail (y == NULL || (y->dtype == DFQ_DTYPE_I32 && dfq_tensor_numel (y) == B), FALSE);

    if (n_filled)
        *n_filled = 0;
    guint left = ds->n - self->pos;
    if (left == 0 || (self->opt.drop_last && left < B))
        return FALSE;
    const guint m = MIN (left, B);
    const guint32 *idx = self->order + self->pos;
    const gsize chw = (gsize) ds->channels * ds->height * ds->width;
    const guint pad = self->opt.pad;
    const gboolean hflip = self->opt.hflip;
    const guint64 seed = self->opt.seed, stream = DFQ_DATA_STREAM_AUGMENT | self->epoch;
    float *xd = dfq_tensor_f32 (x);

    /* Each sample's crop and flip are drawn from (seed, epoch, dataset index):
     * the same image gets the same augmentation whatever the batch size, the
     * position in the batch or the thread that renders it. */
#pragma omp parallel for schedule(static) if ((gsize) m * chw > 262144)
    for (guint i = 0; i < m; i++) {
        guint dy = 0, dx = 0;
        gboolean flip = FALSE;
        if (pad > 0 || hflip) {
            guint32 r[4];
            dfq_rand_philox (seed, stream, idx[i], r);
            /* offsets uniform in [0, 2 pad] by 64-bit multiply-shift */
            dy = (guint) (((guint64) r[0] * (2 * pad + 1)) >> 32);
            dx = (guint) (((guint64) r[1] * (2 * pad + 1)) >> 32);
            flip = hflip && (r[2] >> 31) != 0;
        }
        dfq_dataset_render (ds, idx[i], pad, dy, dx, flip, xd + i * chw);
    }
    if (m < B)
        memset (xd + m * chw, 0, (B - m) * chw * sizeof (float));
    if (y != NULL) {
        gint32 *yd = dfq_tensor_i32 (y);
        for (guint i = 0; i < m; i++)
            yd[i] = ds->labels[idx[i]];
        for (guint i = m; i < B; i++)
            yd[i] = -1;
    }
    self->pos += m;
    if (n_filled)
        *n_filled = m;
    return TRUE;
}
