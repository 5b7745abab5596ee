/* A minimal PNG encoder for the dfq CLI (dfq images), private: 8-bit
 * grayscale or RGB, no interlace, filter 0 on every row, the zlib stream made
 * of stored (uncompressed) deflate blocks, with CRC-32 and Adler-32 computed
 * here: no compression library. Images of a few hundred pixels a side stay
 * small enough uncompressed. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* CRC-32 (ISO 3309, as PNG chunks use) of @len bytes, continuing @crc (0 to start). */
guint32 dfq_png_crc32 (guint32 crc, const guint8 *data, gsize len);
/* Adler-32 (RFC 1950) of @len bytes, continuing @adler (1 to start). */
guint32 dfq_png_adler32 (guint32 adler, const guint8 *data, gsize len);

/**
 * dfq_png_encode:
 * @pixels: @height rows of @width pixels of @channels (1: gray, 3: RGB) bytes each.
 * Returns: (transfer full) the PNG file's bytes.
 */
GBytes *dfq_png_encode (const guint8 *pixels, guint width, guint height, guint channels);

/* dfq_png_encode() written to @path (G_FILE_ERROR on failure). */
gboolean dfq_png_write (const char *path, const guint8 *pixels, guint width, guint height, guint channels,
                        GError **error);

G_END_DECLS
