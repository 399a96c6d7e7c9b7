// Runs llama.cpp's own IQ1 kernels (ggml-quants.c at 0c1e57098, compiled from the upstream file
// itself) on raw tensors written by make_reference.py, and writes their outputs back as raw files.
// Jobs come one per line on stdin (the codebook tables are built once, which takes seconds):
//   quantize TYPE NAME NE0 TAG   quantize_<TYPE>(NAME.f32, weights NAME.TAG.qw, or NULL when TAG
//                                is "none") -> NAME.TYPE.TAG.q
//   dequant TYPE NAME NE0        dequantize_row_<TYPE>(NAME.TYPE.q) -> NAME.TYPE.deq
// TYPE is iq1_s or iq1_m.
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

static int run(int argc, char ** argv) {
    char path[4096];
    long size;
    if (argc < 4) return 2;
    const int is_s = !strcmp(argv[1], "iq1_s");
    const char * name = argv[2];
    const long ne0 = atol(argv[3]);
    const long bs = is_s ? sizeof(block_iq1_s) : sizeof(block_iq1_m);
    if (argc == 5 && !strcmp(argv[0], "quantize")) {
        const char * tag = argv[4];
        snprintf(path, sizeof path, "%s.f32", name);
        float * x = slurp(path, &size);
        long nrow = size / 4 / ne0;
        long qsize = nrow * (ne0 / QK_K) * bs;
        void * q = calloc(1, qsize);
        float * qw = NULL;
        if (strcmp(tag, "none")) {
            snprintf(path, sizeof path, "%s.%s.qw", name, tag);
            qw = slurp(path, &size);
            if (!qw) return 3;
        }
        if (is_s) quantize_iq1_s(x, q, nrow, ne0, qw);
        else quantize_iq1_m(x, q, nrow, ne0, qw);
        snprintf(path, sizeof path, "%s.%s.%s.q", name, argv[1], tag);
        spit(path, q, qsize);
        return 0;
    }
    if (argc == 4 && !strcmp(argv[0], "dequant")) {
        snprintf(path, sizeof path, "%s.%s.q", name, argv[1]);
        void * q = slurp(path, &size);
        long n = size / bs * QK_K;
        float * y = malloc(n * 4);
        for (long r = 0; r < n / ne0; r++) {
            const char * row = (const char *)q + r * (ne0 / QK_K) * bs;
            if (is_s) dequantize_row_iq1_s((const void *)row, y + r * ne0, ne0);
            else dequantize_row_iq1_m((const void *)row, y + r * ne0, ne0);
        }
        snprintf(path, sizeof path, "%s.%s.deq", name, argv[1]);
        spit(path, y, n * 4);
        return 0;
    }
    return 2;
}

int main(void) {
    iq2xs_init_impl(GGML_TYPE_IQ1_S); // IQ1_M shares these tables
    char line[8192];
    while (fgets(line, sizeof line, stdin)) {
        char * argv[8];
        int argc = 0;
        for (char * t = strtok(line, " \n"); t && argc < 8; t = strtok(NULL, " \n")) argv[argc++] = t;
        if (argc == 0) continue;
        int rc = run(argc, argv);
        if (rc) return rc;
    }
    return 0;
}
