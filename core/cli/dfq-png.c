/* Minimal PNG encoder (dfq-png.h): signature, IHDR, one IDAT holding a zlib
 * stream of stored deflate blocks, IEND. */
#include <string.h>

#include "dfq-png.h"

#define DFQ_PNG_STORED_MAX 65535 /* bytes per stored deflate block */

guint32
dfq_png_crc32 (guint32 crc, const guint8 *data, gsize len)
{
    static guint32 table[256];
    static gsize init = 0;
    if (g_once_init_enter (&init)) {
        for (guint32 n = 0; n < 256; n++) {
            guint32 c = n;
            for (int k = 0; k < 8; k++)
                c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
            table[n] = c;
        }
        g_once_init_leave (&init, 1);
    }
    crc ^= 0xffffffffu;
    for (gsize i = 0; i < len; i++)
        crc = table[(crc ^ data[i]) & 0xff] ^ (crc >> 8);
    return crc ^ 0xffffffffu;
}

guint32
dfq_png_adler32 (guint32 adler, const guint8 *data, gsize len)
{
    guint32 a = adler & 0xffff, b = adler >> 16;
    for (gsize i = 0; i < len; i++) {
        a = (a + data[i]) % 65521u;
        b = (b + a) % 65521u;
    }
    return (b << 16) | a;
}

static void
dfq_png_put32 (GByteArray *out, guint32 v)
{
    const guint8 b[4] = { v >> 24, (v >> 16) & 0xff, (v >> 8) & 0xff, v & 0xff };
    g_byte_array_append (out, b, 4);
}

/* length, type, data, CRC over type and data */
static void
dfq_png_chunk (GByteArray *out, const char *type, const guint8 *data, gsize len)
{
    dfq_png_put32 (out, (guint32) len);
    gsize crc_from = out->len;
    g_byte_array_append (out, (const guint8 *) type, 4);
    if (len > 0)
        g_byte_array_append (out, data, (guint) len);
    dfq_png_put32 (out, dfq_png_crc32 (0, out->data + crc_from, len + 4));
}

/* zlib (RFC 1950) around stored deflate blocks (RFC 1951 BTYPE 00) */
static GByteArray *
dfq_png_zlib_stored (const guint8 *raw, gsize len)
{
    GByteArray *z = g_byte_array_sized_new ((guint) (len + len / DFQ_PNG_STORED_MAX * 5 + 16));
    const guint8 header[2] = { 0x78, 0x01 }; /* deflate, 32K window, no dictionary; (0x78 << 8 | 0x01) % 31 == 0 */
    g_byte_array_append (z, header, 2);
    gsize pos = 0;
    do {
        gsize n = MIN (len - pos, (gsize) DFQ_PNG_STORED_MAX);
        const guint8 block[5] = { pos + n == len ? 1 : 0, n & 0xff, n >> 8, ~n & 0xff, (~n >> 8) & 0xff };
        g_byte_array_append (z, block, 5);
        if (n > 0)
            g_byte_array_append (z, raw + pos, (guint) n);
        pos += n;
    } while (pos < len);
    dfq_png_put32 (z, dfq_png_adler32 (1, raw, len));
    return z;
}

GBytes *
dfq_png_encode (const guint8 *pixels, guint width, guint height, guint channels)
{
    g_return_val_if_fail (channels == 1 || channels == 3, NULL);
    g_return_val_if_fail (width > 0 && height > 0, NULL);
    /* scanlines: a filter byte (0, none) then the row */
    gsize row = (gsize) width * channels;
    guint8 *raw = g_malloc ((row + 1) * height);
    for (guint y = 0; y < height; y++) {
        raw[y * (row + 1)] = 0;
        memcpy (raw + y * (row + 1) + 1, pixels + y * row, row);
    }
    g_autoptr (GByteArray) z = dfq_png_zlib_stored (raw, (row + 1) * height);
    g_free (raw);

    GByteArray *out = g_byte_array_sized_new (z->len + 64);
    const guint8 signature[8] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n' };
    g_byte_array_append (out, signature, 8);
    guint8 ihdr[13];
    const guint32 dims[2] = { GUINT32_TO_BE (width), GUINT32_TO_BE (height) };
    memcpy (ihdr, dims, 8);
    ihdr[8] = 8;                      /* bit depth */
    ihdr[9] = channels == 1 ? 0 : 2;  /* colour type: gray, RGB */
    ihdr[10] = ihdr[11] = ihdr[12] = 0; /* deflate, filter method 0, no interlace */
    dfq_png_chunk (out, "IHDR", ihdr, sizeof ihdr);
    dfq_png_chunk (out, "IDAT", z->data, z->len);
    dfq_png_chunk (out, "IEND", NULL, 0);
    return g_byte_array_free_to_bytes (out);
}

gboolean
dfq_png_write (const char *path, const guint8 *pixels, guint width, guint height, guint channels, GError **error)
{
    g_autoptr (GBytes) png = dfq_png_encode (pixels, width, height, channels);
    gsize len;
    const char *data = g_bytes_get_data (png, &len);
    return g_file_set_contents (path, data, (gssize) len, error);
}
