// The reference for src/quant/iq_grid.rs's `neighbour_lists_equal_llama_cpps` test: builds
// llama.cpp's own lattice tables (iq2xs_init_impl, compiled from the upstream file itself) and
// prints, per codebook, an FNV-1a 64 hash over every level tuple with levels 0..=2 in ascending
// order — the codebook index if the tuple is a point, else 0x8000 | count followed by the
// neighbour list — and the total neighbour count.
//
//   L=path/to/llama.cpp
//   printf '%s\n' '#include <stdlib.h>' '#include <stddef.h>' \
//     'void ggml_abort(const char*f,int l,const char*fmt,...){abort();}' \
//     'size_t ggml_row_size(int t,long n){abort();}' 'const char* ggml_type_name(int t){return "";}' \
//     'size_t ggml_type_size(int t){abort();}' > /tmp/stubs.c
//   gcc -O1 -std=gnu11 -I$L/ggml/include -I$L/ggml/src scripts/iq_grid_reference.c /tmp/stubs.c -lm \
//     -o /tmp/iq_grid_reference && /tmp/iq_grid_reference     # ~30 s
#include "ggml-quants.c"
#include <stdio.h>

static uint64_t h;

static void put(uint16_t v) {
    for (int b = 0; b < 2; b++) {
        h ^= (v >> (8 * b)) & 0xff;
        h *= 0x100000001b3ULL;
    }
}

int main(void) {
    enum ggml_type ts[4] = {GGML_TYPE_IQ2_XXS, GGML_TYPE_IQ2_XS, GGML_TYPE_IQ2_S, GGML_TYPE_IQ1_S};
    for (int t = 0; t < 4; t++) {
        iq2xs_init_impl(ts[t]);
        int gi = iq2_data_index(ts[t]);
        const int * map = iq2_data[gi].map;
        const uint16_t * nb = iq2_data[gi].neighbours;
        h = 0xcbf29ce484222325ULL;
        long total = 0;
        for (int u = 0; u < 43692; u++) {
            int reachable = 1;
            for (int k = 0; k < 8; k++) if (((u >> 2 * k) & 3) == 3) reachable = 0;
            if (!reachable) continue;
            if (map[u] >= 0) { put(map[u]); continue; }
            const uint16_t * n = nb - map[u] - 1;
            put(0x8000 | n[0]);
            total += n[0];
            for (int j = 1; j <= n[0]; j++) put(n[j]);
        }
        printf("%d hash=0x%016llx total=%ld\n", t, (unsigned long long)h, total);
    }
    return 0;
}
