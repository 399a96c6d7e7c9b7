/* Runs llama.cpp's own IQ3 quantizers (ggml-quants.c, linked unmodified) the way
 * ggml_quantize_chunk does: init the codebook tables, then quantize_iq3_xxs / quantize_iq3_s over
 * whole rows; or its dequantizers over whole blocks.
 * Usage: harness xxs|s N_PER_ROW IN.f32 IMATRIX.f32|- OUT.bin
 *        harness dequant xxs|s IN.bin OUT.f32 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void iq3xs_init_impl(int grid_size);
size_t quantize_iq3_xxs(const float *src, void *dst, int64_t nrow, int64_t n_per_row, const float *qw);
size_t quantize_iq3_s(const float *src, void *dst, int64_t nrow, int64_t n_per_row, const float *qw);
void dequantize_row_iq3_xxs(const void *x, float *y, int64_t k);
void dequantize_row_iq3_s(const void *x, float *y, int64_t k);

/* The few ggml symbols ggml-quants.o refers to; none is reached on these paths. */
void ggml_abort(const char *file, int line, const char *fmt, ...) {
    fprintf(stderr, "ggml_abort at %s:%d\n", file, line);
    exit(3);
}
size_t ggml_row_size(int type, int64_t n) { (void)type; (void)n; return 0; }
const char *ggml_type_name(int type) { (void)type; return "?"; }
size_t ggml_type_size(int type) { (void)type; return 0; }

static void *read_all(const char *path, long *len) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); exit(2); }
    fseek(f, 0, SEEK_END);
    *len = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *buf = malloc(*len);
    if (fread(buf, 1, *len, f) != (size_t)*len) { perror(path); exit(2); }
    fclose(f);
    return buf;
}

static int dequant(int argc, char **argv) {
    if (argc != 5) { fprintf(stderr, "usage: harness dequant xxs|s IN.bin OUT.f32\n"); return 2; }
    int xxs = strcmp(argv[2], "xxs") == 0;
    long n_bytes;
    void *q = read_all(argv[3], &n_bytes);
    long n = n_bytes / (xxs ? 98 : 110) * 256;
    float *y = malloc(n * sizeof(float));
    if (xxs) dequantize_row_iq3_xxs(q, y, n); else dequantize_row_iq3_s(q, y, n);
    FILE *f = fopen(argv[4], "wb");
    fwrite(y, sizeof(float), n, f);
    fclose(f);
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "dequant") == 0) return dequant(argc, argv);
    if (argc != 6) { fprintf(stderr, "usage: harness xxs|s N_PER_ROW IN.f32 IMATRIX.f32|- OUT.bin\n"); return 2; }
    int xxs = strcmp(argv[1], "xxs") == 0;
    long n_per_row = atol(argv[2]);
    long n_bytes;
    float *x = read_all(argv[3], &n_bytes);
    float *qw = NULL;
    if (strcmp(argv[4], "-") != 0) { long n; qw = read_all(argv[4], &n); }
    long nrow = n_bytes / 4 / n_per_row;
    iq3xs_init_impl(xxs ? 256 : 512);
    void *out = calloc(nrow * (n_per_row / 256), xxs ? 98 : 110);
    size_t n = xxs ? quantize_iq3_xxs(x, out, nrow, n_per_row, qw) : quantize_iq3_s(x, out, nrow, n_per_row, qw);
    FILE *f = fopen(argv[5], "wb");
    fwrite(out, 1, n, f);
    fclose(f);
    return 0;
}
