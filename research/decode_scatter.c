/* Decode one JPEG TIFF tile with libjpeg(-turbo)'s scanline API and copy each band of decoded
 * rows straight into the output tiles it belongs to, while the band is still in the L1 cache.
 *
 * A research prototype for issue 26 (research/decode_scatter.py builds and drives it): what the
 * embed reader would gain by decoding into its 224-px output tiles instead of into 256-px TIFF
 * tiles that it copies from. Not part of edgepath. Build:
 *   gcc -O2 -shared -fPIC -o libdecode_scatter.so decode_scatter.c -ljpeg
 */
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <jpeglib.h>

#define MAX_BAND 64
#define MAX_WIDTH 4096

struct error_mgr {
  struct jpeg_error_mgr pub;
  jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

static void on_error(j_common_ptr c) {
  struct error_mgr *e = (struct error_mgr *)c->err;
  (*c->err->format_message)(c, e->message);
  longjmp(e->jump, 1);
}

static void on_message(j_common_ptr c, int level) { (void)c, (void)level; }

static struct jpeg_decompress_struct dinfo;
static struct error_mgr error;
static int created = 0;
static uint8_t band_rows[MAX_BAND * MAX_WIDTH * 3] __attribute__((aligned(64)));

/* Rows decoded before their copies (set from Python). */
int band = 16;
/* Seconds spent in the copies, summed over calls (read and reset from Python). */
double copy_s = 0.0;

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

/* The rows [y0, y1) of part `q` within rows [first, first + got); returns its row bytes. */
static size_t clip(const int64_t *q, int first, int got, int *y0, int *y1) {
  *y0 = q[2] > first ? (int)q[2] : first;
  *y1 = q[3] < first + got ? (int)q[3] : first + got;
  return (size_t)(q[5] - q[4]) * 3;
}

/* Ask for the destination lines of rows [first, first + got) (for writing) before the band is
 * decoded, so that fetching them overlaps the decoding (`prefetch` set from Python). */
int prefetch = 0;
static void prefetch_band(int first, int got, int nparts, const int64_t *parts) {
  for (int p = 0; p < nparts; p++) {
    const int64_t *q = parts + 6 * p;
    int y0, y1;
    size_t n = clip(q, first, got, &y0, &y1);
    for (int y = y0; y < y1; y++) {
      const uint8_t *d = (const uint8_t *)q[0] + (y - q[2]) * q[1];
      for (size_t b = 0; b < n + 63; b += 64) __builtin_prefetch(d + (b < n ? b : n - 1), 1, 3);
    }
  }
}

/* Copy rows [first, first + got) of the band buffer into the parts that hold them. */
static void copy_band(int first, int got, size_t pitch, int nparts, const int64_t *parts) {
  for (int p = 0; p < nparts; p++) {
    const int64_t *q = parts + 6 * p;
    int y0, y1;
    size_t n = clip(q, first, got, &y0, &y1);
    for (int y = y0; y < y1; y++)
      memcpy((uint8_t *)q[0] + (y - q[2]) * q[1], band_rows + (y - first) * pitch + q[4] * 3, n);
  }
}

/* The same copies as decode_scatter for a `width` x `height` tile, from the band buffer as it
 * is, without decoding: what the copies cost on their own. */
void scatter_only(int width, int height, int nparts, const int64_t *parts) {
  int rows_per_band = band < 1 ? 1 : band > MAX_BAND ? MAX_BAND : band;
  for (int first = 0; first < height; first += rows_per_band) {
    int got = height - first < rows_per_band ? height - first : rows_per_band;
    copy_band(first, got, (size_t)width * 3, nparts, parts);
  }
}

/* Decode `data` (after the abbreviated-stream `tables`, if any) to RGB and copy its pixels into
 * `nparts` destinations. parts[6 * p ...] = destination address of the part's first pixel, the
 * destination's row stride in bytes, then the part's rows [y0, y1) and columns [x0, x1) in the
 * tile. `rgb`: the JPEG holds RGB, not YCbCr (Aperio writes it without a JFIF marker).
 * Returns 0, or -1 with libjpeg's message in `message` (200 bytes). */
int decode_scatter(const uint8_t *tables, size_t ntables, const uint8_t *data, size_t ndata,
                   int rgb, int nparts, const int64_t *parts, char *message) {
  JSAMPROW rows[MAX_BAND];
  if (!created) {
    dinfo.err = jpeg_std_error(&error.pub);
    error.pub.error_exit = on_error;
    error.pub.emit_message = on_message;
    jpeg_create_decompress(&dinfo);
    created = 1;
  }
  if (setjmp(error.jump)) {
    jpeg_abort_decompress(&dinfo);
    snprintf(message, 200, "%s", error.message);
    return -1;
  }
  if (ntables) {
    jpeg_mem_src(&dinfo, tables, ntables);
    jpeg_read_header(&dinfo, FALSE);
  }
  jpeg_mem_src(&dinfo, data, ndata);
  jpeg_read_header(&dinfo, TRUE);
  if (rgb) dinfo.jpeg_color_space = JCS_RGB;
  dinfo.out_color_space = JCS_RGB;
  jpeg_start_decompress(&dinfo);
  size_t pitch = (size_t)dinfo.output_width * 3;
  int rows_per_band = band < 1 ? 1 : band > MAX_BAND ? MAX_BAND : band;
  if (dinfo.output_width > MAX_WIDTH) {
    jpeg_abort_decompress(&dinfo);
    snprintf(message, 200, "tile wider than %d px", MAX_WIDTH);
    return -1;
  }
  for (int i = 0; i < MAX_BAND; i++) rows[i] = band_rows + i * pitch;
  while (dinfo.output_scanline < dinfo.output_height) {
    int first = (int)dinfo.output_scanline, got = 0;
    if (prefetch) prefetch_band(first, rows_per_band, nparts, parts);
    while (got < rows_per_band && dinfo.output_scanline < dinfo.output_height)
      got += (int)jpeg_read_scanlines(&dinfo, rows + got, rows_per_band - got);
    double t0 = now();
    copy_band(first, got, pitch, nparts, parts);
    copy_s += now() - t0;
  }
  jpeg_finish_decompress(&dinfo);
  return 0;
}
