// lora_merge.wgsl — the LoRA merge of src/lora/merge.rs on the GPU, bit for bit.
//
// Assembled after exact.wgsl (which needs `params.zero`). One invocation owns one element
// (s, c) of a chunk of the stored matrix W [rows, cols] and computes, for each adapter a in order:
//
//     acc = +0.0;  for k = 0, 1, …, rank-1:  acc = acc + xmul(P[s,k], Q[k,c])
//     merged = merged + xmul(scale_a, acc)
//
// starting from merged = W[s,c] (already f32), and writes merged once, rounded to the output
// type with the integer helpers of exact.wgsl. xmul rounds the product on its own, so no driver
// can fuse it with the add that follows: the additions happen in exactly the CPU's order.
//
// Tiling: a 16×16 workgroup computes a 16×16 tile of W. For each slice of 16 k's it stages the
// tile's P rows [16 × 16 k] and Q columns [16 k × 16] in workgroup memory once, and every
// invocation then walks the slice's k's in ascending order — the sum order of an element never
// depends on the tiling. Invocations outside the matrix (ragged edge tiles) still take part in
// the barriers and only skip the store.
//
// Up to MAX_ADAPTERS updates per dispatch; the host chains dispatches for more, passing the f32
// result of one (out_type 0: no rounding) as W of the next, which is the same arithmetic.

const TILE: u32 = 16u;
const MAX_ADAPTERS: u32 = 8u;

struct MergeParams {
    rows: u32,        // rows of W in this dispatch
    cols: u32,        // columns of W
    n_adapters: u32,  // updates to fold, <= MAX_ADAPTERS
    out_type: u32,    // 0: f32 bits, 1: f16 bits, 2: bf16 bits (one u32 per element)
    zero: u32,        // always 0 — see exact.wgsl `opaque`
    pad0: u32,
    pad1: u32,
    pad2: u32,
    // Per adapter: rank, offset of its P slice (rows × rank) in `p`, offset of its Q
    // (rank × cols) in `q`, and the bits of its f32 scale.
    adapters: array<vec4<u32>, MAX_ADAPTERS>,
}

@group(0) @binding(0) var<uniform> params: MergeParams;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read> p: array<f32>;
@group(0) @binding(3) var<storage, read> q: array<f32>;
@group(0) @binding(4) var<storage, read_write> dst: array<u32>;

var<workgroup> tile_p: array<f32, 256>; // [row in tile][k in slice]
var<workgroup> tile_q: array<f32, 256>; // [k in slice][column in tile]

@compute @workgroup_size(16, 16, 1)
fn lora_merge(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let row = wg.y * TILE + lid.y;
    let col = wg.x * TILE + lid.x;
    let inside = row < params.rows && col < params.cols;
    var merged = 0.0;
    if (inside) {
        merged = w[row * params.cols + col];
    }
    for (var a = 0u; a < params.n_adapters; a = a + 1u) {
        let info = params.adapters[a];
        let rank = info.x;
        var acc = 0.0;
        for (var k0 = 0u; k0 < rank; k0 = k0 + TILE) {
            // Stage P[tile rows, k0 + lid.x] and Q[k0 + lid.y, tile columns].
            let pk = k0 + lid.x;
            var pv = 0.0;
            if (row < params.rows && pk < rank) {
                pv = p[info.y + row * rank + pk];
            }
            tile_p[lid.y * TILE + lid.x] = pv;
            let qk = k0 + lid.y;
            var qv = 0.0;
            if (col < params.cols && qk < rank) {
                qv = q[info.z + qk * params.cols + col];
            }
            tile_q[lid.y * TILE + lid.x] = qv;
            workgroupBarrier();
            let n = min(TILE, rank - k0);
            for (var kk = 0u; kk < n; kk = kk + 1u) {
                acc = acc + xmul(tile_p[lid.y * TILE + kk], tile_q[kk * TILE + lid.x]);
            }
            workgroupBarrier();
        }
        merged = merged + xmul(bitcast<f32>(info.w), acc);
    }
    if (!inside) {
        return;
    }
    var bits = bitcast<u32>(merged);
    if (params.out_type == 1u) {
        bits = f32_to_f16_bits(merged);
    } else if (params.out_type == 2u) {
        bits = f32_to_bf16_bits(merged);
    }
    dst[row * params.cols + col] = bits;
}
