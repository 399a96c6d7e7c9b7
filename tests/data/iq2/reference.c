// Runs llama.cpp's own IQ2 kernels (ggml-quants.c at 0c1e57098, compiled from the upstream file
// itself) on raw tensors written by make_reference.py, and writes their outputs back as raw files:
//   <name>.iq2_s.im.q     quantize_iq2_s with the importance weights <name>.qw
//   <name>.iq2_s.noim.q   quantize_iq2_s without (the weights x^2 + sigma^2/4)
//   <name>.<type>.deq     dequantize_row_<type> of the given quantized file <name>.<type>.q
// Usage: reference quantize NAME NE0   |   reference dequant TYPE NAME NE0
#include "ggml-quants.c"
#include <stdio.h>

static void * slurp(const char * path, long * size) {
    FILE * f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *size = ftell(f);
    fseek(f, 0, SEEK_SET);
    void * p = malloc(*size);
    if (fread(p, 1, *size, f) != (size_t)*size) abort();
    fclose(f);
    return p;
}

static void spit(const char * path, const void * p, long size) {
    FILE * f = fopen(path, "wb");
    fwrite(p, 1, size, f);
    fclose(f);
}

int main(int argc, char ** argv) {
    char path[4096];
    long size;
    if (argc == 4 && !strcmp(argv[1], "quantize")) {
        const char * name = argv[2];
        long ne0 = atol(argv[3]);
        iq2xs_init_impl(GGML_TYPE_IQ2_S);
        snprintf(path, sizeof path, "%s.f32", name);
        float * x = slurp(path, &size);
        long nrow = size / 4 / ne0;
        long qsize = nrow * (ne0 / QK_K) * sizeof(block_iq2_s);
        void * q = malloc(qsize);
        snprintf(path, sizeof path, "%s.qw", name);
        float * qw = slurp(path, &size);
        if (qw) {
            quantize_iq2_s(x, q, nrow, ne0, qw);
            snprintf(path, sizeof path, "%s.iq2_s.im.q", name);
            spit(path, q, qsize);
        }
        quantize_iq2_s(x, q, nrow, ne0, NULL);
        snprintf(path, sizeof path, "%s.iq2_s.noim.q", name);
        spit(path, q, qsize);
        return 0;
    }
    if (argc == 5 && !strcmp(argv[1], "dequant")) {
        const char * type = argv[2];
        const char * name = argv[3];
        long ne0 = atol(argv[4]);
        snprintf(path, sizeof path, "%s.%s.q", name, type);
        void * q = slurp(path, &size);
        long bs = !strcmp(type, "iq2_xxs") ? sizeof(block_iq2_xxs) : !strcmp(type, "iq2_xs") ? sizeof(block_iq2_xs) : sizeof(block_iq2_s);
        long n = size / bs * QK_K;
        float * y = malloc(n * 4);
        for (long r = 0; r < n / ne0; r++) {
            const char * row = (const char *)q + r * (ne0 / QK_K) * bs;
            if (!strcmp(type, "iq2_xxs")) dequantize_row_iq2_xxs((const void *)row, y + r * ne0, ne0);
            else if (!strcmp(type, "iq2_xs")) dequantize_row_iq2_xs((const void *)row, y + r * ne0, ne0);
            else dequantize_row_iq2_s((const void *)row, y + r * ne0, ne0);
        }
        snprintf(path, sizeof path, "%s.%s.deq", name, type);
        spit(path, y, n * 4);
        return 0;
    }
    return 2;
}
