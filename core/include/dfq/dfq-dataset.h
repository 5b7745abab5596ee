/* Real datasets: the IDX format (MNIST, Fashion-MNIST; gzip or plain) and the
 * CIFAR-10/100 binary format, held as uint8 images in memory, normalised to
 * float32 batches on demand; and a loader that batches them with seeded
 * shuffling and pad + random-crop + horizontal-flip augmentation. Every random
 * choice comes from the counter RNG keyed by (seed, epoch, sample index), so
 * batches are identical for every thread count and batch size. */
#pragma once

#include <glib.h>
#include <dfq/dfq-macros.h>
#include <dfq/dfq-error.h>
#include <dfq/dfq-tensor.h>

G_BEGIN_DECLS

#define DFQ_DATASET_MAX_CHANNELS 3

/* Where Debian's dataset-fashion-mnist package puts the IDX files. */
#define DFQ_DATASET_FASHION_MNIST_SYSTEM_DIR "/usr/share/datasets/fashion-mnist"

typedef enum {
    DFQ_DATASET_SPLIT_TRAIN,
    DFQ_DATASET_SPLIT_TEST,
} DfqDatasetSplit;

typedef struct _DfqDataset DfqDataset;

/**
 * dfq_dataset_open:
 * @name: "fashion-mnist", "mnist", "cifar10" or "cifar100" (fine labels;
 *   "cifar100-coarse" for the 20 superclasses).
 * @dir: (nullable) where the files are (the pipeline's data dir). If set, only
 *   @dir is searched. If NULL or "": $DFQ_DATA_DIR, then (Fashion-MNIST only)
 *   the Debian package directory DFQ_DATASET_FASHION_MNIST_SYSTEM_DIR. Below a
 *   base directory the subfolder named after the dataset ("fashion-mnist",
 *   "cifar10", ...) is tried first, then the usual extracted-archive and
 *   torchvision folders ("cifar-10-batches-bin", "FashionMNIST/raw", ...), then
 *   the base itself. IDX files may be "<name>.gz" or plain.
 *
 * Finds, reads and validates the split's files, and sets the dataset's standard
 * normalisation (Fashion-MNIST 0.2860/0.3530, MNIST 0.1307/0.3081, CIFAR as in
 * METHODS.md 1.1).
 *
 * Returns: (transfer full) the dataset, or NULL with DFQ_DATA_ERROR_NOT_FOUND
 *   (unknown @name, or files absent: the message lists every path tried and how
 *   to get the data), DFQ_DATA_ERROR_IO or DFQ_DATA_ERROR_FORMAT (corrupt or
 *   truncated file; the message names it).
 */
DFQ_API DfqDataset *dfq_dataset_open (const char *name, DfqDatasetSplit split, const char *dir, GError **error);

/**
 * dfq_dataset_new_idx:
 * @images_path: an IDX3 ubyte file [n, h, w], gzip-compressed or plain (told
 *   apart by content, not by name).
 * @labels_path: the matching IDX1 ubyte file [n].
 * @n_classes: labels must be < this.
 * Returns: (transfer full) a 1-channel dataset named after @images_path, with
 *   normalisation mean 0, std 1 (pixels in [0, 1]); or NULL with
 *   DFQ_DATA_ERROR_NOT_FOUND, DFQ_DATA_ERROR_IO or DFQ_DATA_ERROR_FORMAT (bad
 *   magic number, dims, sizes against the file length, label count against
 *   image count, label value out of range, gzip corruption).
 */
DFQ_API DfqDataset *dfq_dataset_new_idx (const char *images_path, const char *labels_path,
                                         guint n_classes, GError **error);

/**
 * dfq_dataset_new_cifar:
 * @paths: (array zero-terminated=1) CIFAR binary files, concatenated in order:
 *   CIFAR-10 records are 1 label byte + 3072 pixel bytes (R, G, B planes of
 *   32x32); CIFAR-100 records are coarse + fine label bytes + 3072 pixels.
 * @cifar100: the files are CIFAR-100.
 * @coarse_labels: CIFAR-100 only: use the 20 coarse labels instead of the 100 fine ones.
 * Returns: (transfer full) a 3x32x32 dataset with normalisation mean 0, std 1;
 *   or NULL with DFQ_DATA_ERROR_NOT_FOUND, _IO or _FORMAT (length not a whole
 *   number of records, label out of range).
 */
DFQ_API DfqDataset *dfq_dataset_new_cifar (const char *const *paths, gboolean cifar100,
                                           gboolean coarse_labels, GError **error);

DFQ_API void dfq_dataset_free (DfqDataset *self);

/* Returns: (transfer none) "fashion-mnist", "cifar10", ... or the file name. */
DFQ_API const char *dfq_dataset_get_name (const DfqDataset *self);
/* Returns: (transfer none) the directory or file the data was read from. */
DFQ_API const char *dfq_dataset_get_location (const DfqDataset *self);
DFQ_API guint dfq_dataset_get_n (const DfqDataset *self);
DFQ_API guint dfq_dataset_get_n_classes (const DfqDataset *self);
/* Image shape: channels, height, width (any of the out pointers may be NULL). */
DFQ_API void dfq_dataset_get_shape (const DfqDataset *self, guint *channels, guint *height, guint *width);
DFQ_API guint dfq_dataset_get_label (const DfqDataset *self, guint index);
/* Returns: (transfer none) the C*H*W uint8 pixels of image @index (CHW order). */
DFQ_API const guint8 *dfq_dataset_get_pixels (const DfqDataset *self, guint index);

/**
 * dfq_dataset_set_normalization:
 * @mean: (array fixed-size=channels) per-channel mean of pixels scaled to [0, 1].
 * @std: (array fixed-size=channels) per-channel std (> 0).
 * Batches hold (pixel / 255 - mean[c]) / std[c].
 */
DFQ_API void dfq_dataset_set_normalization (DfqDataset *self, const float *mean, const float *std);
DFQ_API void dfq_dataset_get_normalization (const DfqDataset *self, float *mean, float *std);
/* Per-channel mean and (population) std of pixels / 255 over the whole dataset. */
DFQ_API void dfq_dataset_compute_statistics (const DfqDataset *self, double *mean, double *std);

/**
 * dfq_dataset_fill_batch:
 * @indices: (array length=n) sample indices, each < n of the dataset.
 * @x: F32 [n, C, H, W], contiguous.
 * @y: (nullable) I32 [n] labels.
 * Fills normalised images and labels, without augmentation and without
 * allocating (the calibration-set path).
 */
DFQ_API void dfq_dataset_fill_batch (const DfqDataset *self, const guint32 *indices, guint n,
                                     DfqTensor *x, DfqTensor *y);

/**
 * dfq_dataset_sample:
 * Draws @n distinct samples (the first @n of the permutation for @seed) into
 * new tensors in @arena: *x F32 [n, C, H, W] and, if @y is not NULL, *y I32 [n].
 * The same @seed always gives the same samples (a fixed calibration set).
 */
DFQ_API void dfq_dataset_sample (const DfqDataset *self, guint n, guint64 seed, DfqArena *arena,
                                 DfqTensor **x, DfqTensor **y);

/* ------------------------------------------------------------------------ */

typedef struct _DfqDataLoader DfqDataLoader;

typedef struct {
    guint batch_size;   /* > 0 */
    gboolean shuffle;   /* a new permutation of (seed, epoch) every epoch */
    gboolean drop_last; /* skip the final short batch */
    guint64 seed;
    guint pad;          /* augmentation: zero-pad by this many pixels, then crop a
                         * random HxW window back (0 = no crop) */
    gboolean hflip;     /* augmentation: mirror horizontally with probability 1/2 */
} DfqDataLoaderOptions;

#define DFQ_DATA_LOADER_OPTIONS_INIT { 128, TRUE, FALSE, 0, 0, FALSE }

/**
 * dfq_data_loader_new:
 * @dataset: (transfer none) must outlive the loader.
 * Returns: (transfer full) a loader positioned at the start of epoch 0.
 */
DFQ_API DfqDataLoader *dfq_data_loader_new (const DfqDataset *dataset, const DfqDataLoaderOptions *options);
DFQ_API void dfq_data_loader_free (DfqDataLoader *self);

/* Rewinds to the start of @epoch, with that epoch's order and augmentation. */
DFQ_API void dfq_data_loader_start_epoch (DfqDataLoader *self, guint epoch);
DFQ_API guint dfq_data_loader_get_epoch (const DfqDataLoader *self);
/* Moves to batch @batch of the current epoch, as if @batch batches had been
 * read (order and augmentation are functions of seed, epoch and sample; a run
 * resumed inside an epoch). Past the end: the epoch is exhausted. */
DFQ_API void dfq_data_loader_seek (DfqDataLoader *self, guint batch);
/* Batches per epoch (counting a short final batch unless drop_last). */
DFQ_API guint dfq_data_loader_get_n_batches (const DfqDataLoader *self);

/**
 * dfq_data_loader_next:
 * @x: F32 [batch_size, C, H, W], contiguous; filled with the next batch.
 * @y: (nullable) I32 [batch_size]; filled with the labels.
 * @n_filled: (out) (optional) samples written: batch_size, or fewer for the
 *   final batch when drop_last is off (the rows after them are zeroed, labels -1).
 * Allocates nothing.
 * Returns: FALSE (and writes nothing) once the epoch is exhausted; call
 *   dfq_data_loader_start_epoch() to go on.
 */
DFQ_API gboolean dfq_data_loader_next (DfqDataLoader *self, DfqTensor *x, DfqTensor *y, guint *n_filled);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (DfqDataset, dfq_dataset_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DfqDataLoader, dfq_data_loader_free)

G_END_DECLS
