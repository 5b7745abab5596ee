/* dfq images (core/cli): a PNG grid of images, from a run's image set
 * (RUN_DIR/images.safetensors, as the synthesize phase writes it), any
 * safetensors file with an "images" tensor [N, C, H, W], or real images of a
 * dataset (--dataset fashion-mnist). Each tile maps its own min..max to 0..255
 * (--range image, the default) or the shown set's (--range set); 1-channel
 * images become a grayscale PNG, 3-channel ones RGB (dfq-png.c). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <dfq/dfq.h>

#include "dfq-cli.h"
#include "dfq-png.h"

#define DFQ_IMAGES_GAP 2         /* pixels between tiles */
#define DFQ_IMAGES_BACKGROUND 255 /* the gaps: white */

typedef struct {
    gint n;
    gint cols;
    gint scale;
    gboolean set_range; /* --range set */
} DfqImagesLayout;

/* min and max of @len floats */
static void
dfq_images_minmax (const float *d, gsize len, float *lo, float *hi)
{
    *lo = INFINITY;
    *hi = -INFINITY;
    for (gsize i = 0; i < len; i++) {
        *lo = MIN (*lo, d[i]);
        *hi = MAX (*hi, d[i]);
    }
}

/* The grid of the first l->n images of @x [N, C, H, W] (C 1 or 3), interleaved
 * 8-bit pixels of *@width x *@height. (transfer full) */
static guint8 *
dfq_images_grid (const DfqTensor *x, const DfqImagesLayout *l, guint *width, guint *height)
{
    const gint64 C = x->shape[1], H = x->shape[2], W = x->shape[3], per = C * H * W;
    const gint cols = MIN (l->cols, l->n), rows = (l->n + cols - 1) / cols;
    const gint64 th = H * l->scale, tw = W * l->scale;
    *width = (guint) (cols * tw + (cols + 1) * DFQ_IMAGES_GAP);
    *height = (guint) (rows * th + (rows + 1) * DFQ_IMAGES_GAP);
    guint8 *px = g_malloc ((gsize) *width * *height * C);
    memset (px, DFQ_IMAGES_BACKGROUND, (gsize) *width * *height * C);
    const float *d = dfq_tensor_f32 (x);
    float lo, hi;
    dfq_images_minmax (d, (gsize) (l->n * per), &lo, &hi);
    for (gint i = 0; i < l->n; i++) {
        const float *img = d + i * per;
        if (!l->set_range)
            dfq_images_minmax (img, (gsize) per, &lo, &hi);
        const float scale = hi > lo ? 255.0f / (hi - lo) : 0.0f;
        const gint64 top = DFQ_IMAGES_GAP + (i / cols) * (th + DFQ_IMAGES_GAP);
        const gint64 left = DFQ_IMAGES_GAP + (i % cols) * (tw + DFQ_IMAGES_GAP);
        for (gint64 y = 0; y < th; y++)
            for (gint64 xx = 0; xx < tw; xx++)
                for (gint64 c = 0; c < C; c++) {
                    float v = (img[(c * H + y / l->scale) * W + xx / l->scale] - lo) * scale;
                    px[((top + y) * *width + left + xx) * C + c] = (guint8) CLAMP (lrintf (v), 0, 255);
                }
    }
    return px;
}

/* The images of a run directory or a safetensors file, into @arena. */
static DfqTensor *
dfq_images_load_file (const char *source, DfqArena *arena, char **default_out, GError **error)
{
    gboolean is_dir = g_file_test (source, G_FILE_TEST_IS_DIR);
    g_autofree char *path = is_dir ? g_build_filename (source, "images.safetensors", NULL) : g_strdup (source);
    if (!g_file_test (path, G_FILE_TEST_EXISTS)) {
        g_set_error (error, G_FILE_ERROR, G_FILE_ERROR_NOENT,
                     "%s does not exist%s", path,
                     is_dir ? " (runs with a synthesize phase write it; a training run has no image set)" : "");
        return NULL;
    }
    g_autoptr (DfqSafetensors) st = dfq_safetensors_new_from_file (path, error);
    if (st == NULL)
        return NULL;
    DfqTensor *x = dfq_safetensors_get_tensor (st, "images", arena, error);
    if (x == NULL) {
        g_prefix_error (error, "%s: ", path);
        return NULL;
    }
    if (is_dir)
        *default_out = g_build_filename (source, "images.png", NULL);
    else {
        g_autofree char *stem = g_str_has_suffix (path, ".safetensors")
                                    ? g_strndup (path, strlen (path) - strlen (".safetensors"))
                                    : g_strdup (path);
        *default_out = g_strconcat (stem, ".png", NULL);
    }
    return x;
}

/* @n real images of @dataset (the first @n of the seed's draw), normalised as
 * the pipelines see them. */
static DfqTensor *
dfq_images_load_dataset (const char *dataset, const char *split, const char *data_dir, gint n, gint seed,
                         DfqArena *arena, char **default_out, GError **error)
{
    DfqDatasetSplit s;
    if (g_strcmp0 (split, "train") == 0)
        s = DFQ_DATASET_SPLIT_TRAIN;
    else if (g_strcmp0 (split, "test") == 0)
        s = DFQ_DATASET_SPLIT_TEST;
    else {
        g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE, "--split: '%s' is not one of train, test",
                     split);
        return NULL;
    }
    g_autoptr (DfqDataset) ds = dfq_dataset_open (dataset, s, data_dir, error);
    if (ds == NULL)
        return NULL;
    DfqTensor *x = NULL;
    dfq_dataset_sample (ds, (guint) MIN ((guint) n, dfq_dataset_get_n (ds)), (guint64) seed, arena, &x, NULL);
    *default_out = g_strdup_printf ("%s-%s.png", dataset, split);
    return x;
}

static gboolean
dfq_images_check (const DfqTensor *x, DfqImagesLayout *l, GError **error)
{
    if (x->n_dims != 4 || (x->shape[1] != 1 && x->shape[1] != 3) || x->shape[0] < 1) {
        g_set_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_SHAPE,
                     "expected images [N, C, H, W] with C 1 or 3, got %d dims (C = %" G_GINT64_FORMAT ")", x->n_dims,
                     x->n_dims > 1 ? x->shape[1] : 0);
        return FALSE;
    }
    if (l->n < 1 || l->cols < 1 || l->scale < 1 || l->scale > 16) {
        g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                     "--n and --cols must be >= 1 and --scale in 1..16");
        return FALSE;
    }
    l->n = (gint) MIN ((gint64) l->n, x->shape[0]);
    return TRUE;
}

gboolean
dfq_cmd_images (DfqCli *cli, int argc, char **argv, GError **error)
{
    gboolean help = FALSE;
    g_autofree char *out = NULL, *dataset = NULL, *split = NULL, *data_dir = NULL, *range = NULL;
    DfqImagesLayout l = { .n = 64, .cols = 8, .scale = 2 };
    gint seed = 1;
    const GOptionEntry entries[] = {
        { "out", 'o', 0, G_OPTION_ARG_FILENAME, &out,
          "The PNG (default: RUN_DIR/images.png, FILE.png beside a file, DATASET-SPLIT.png here)", "PNG" },
        { "n", 'n', 0, G_OPTION_ARG_INT, &l.n, "Images shown, the first N (default 64)", "N" },
        { "cols", 'c', 0, G_OPTION_ARG_INT, &l.cols, "Tiles per row (default 8)", "C" },
        { "scale", 's', 0, G_OPTION_ARG_INT, &l.scale, "Pixels per image pixel (default 2)", "S" },
        { "range", 'r', 0, G_OPTION_ARG_STRING, &range,
          "image: each tile's min..max to black..white (default); set: the shown images' together", "image|set" },
        { "dataset", 'd', 0, G_OPTION_ARG_STRING, &dataset, "Real images of this dataset instead of a file "
          "(fashion-mnist, mnist, cifar10, cifar100)", "NAME" },
        { "split", 0, 0, G_OPTION_ARG_STRING, &split, "With --dataset: train (default) or test", "SPLIT" },
        { "data-dir", 0, 0, G_OPTION_ARG_FILENAME, &data_dir, "With --dataset: where its files are", "DIR" },
        { "seed", 0, 0, G_OPTION_ARG_INT, &seed, "With --dataset: which images (the seed's draw, default 1)", "S" },
        { NULL }
    };
    if (!dfq_cli_parse (cli, "images", "[RUN_DIR | IMAGES.safetensors]", "A PNG grid of a run's images",
                        "Writes the first N images of a run's image set (RUN_DIR/images.safetensors), of any "
                        "safetensors file with an 'images' tensor [N, C, H, W], or of a dataset (--dataset) as a "
                        "grid, and prints the PNG's path.",
                        entries, &argc, &argv, &help, error))
        return FALSE;
    if (help)
        return TRUE;
    if ((dataset == NULL) != (argc == 2) || argc > 2) {
        g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_FAILED,
                     "images: give one run directory or images file, or --dataset NAME (see --help)");
        return FALSE;
    }
    if (range != NULL && !g_str_equal (range, "image") && !g_str_equal (range, "set")) {
        g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE, "--range: '%s' is not one of image, set", range);
        return FALSE;
    }
    l.set_range = range != NULL && g_str_equal (range, "set");
    g_autoptr (DfqArena) arena = dfq_arena_new (0);
    g_autofree char *default_out = NULL;
    DfqTensor *x = dataset != NULL ? dfq_images_load_dataset (dataset, split ? split : "train", data_dir, MAX (l.n, 1),
                                                              seed, arena, &default_out, error)
                                   : dfq_images_load_file (argv[1], arena, &default_out, error);
    if (x == NULL || !dfq_images_check (x, &l, error))
        return FALSE;
    guint width, height;
    g_autofree guint8 *px = dfq_images_grid (x, &l, &width, &height);
    const char *path = out != NULL ? out : default_out;
    if (!dfq_png_write (path, px, width, height, (guint) x->shape[1], error))
        return FALSE;
    printf ("%s: %d images of %" G_GINT64_FORMAT "x%" G_GINT64_FORMAT "x%" G_GINT64_FORMAT ", %ux%u pixels\n", path,
            l.n, x->shape[1], x->shape[2], x->shape[3], width, height);
    return TRUE;
}
