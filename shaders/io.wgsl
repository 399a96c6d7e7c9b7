// io.wgsl — bindings, dispatch geometry and byte packing shared by every qforge kernel.
//
// A "unit" is a group of blocks whose byte size is a multiple of 4 (e.g. two 34-byte Q8_0 blocks
// = 68 bytes), so each invocation owns whole u32 words of `dst` and no atomics are needed. The
// unit's bytes are assembled in the private `ob` words, then stored. An invocation quantizes
// `units_per_invocation` consecutive units (fewer invocations cost much less on lavapipe, and
// they stay numerous enough for a real GPU: the host lowers the count for small dispatches).
// The host pads the last unit's input with zeros and drops the padding bytes on read-back.

struct Params {
    n_units: u32,         // units in this dispatch
    blocks_per_row: u32,  // blocks in one row (chunks always start at a row boundary)
    n_per_row: u32,       // elements in one row
    has_qw: u32,          // 1 when `qw` holds importance weights (informational: each
                          // kernel's imatrix path is its own entry point)
    zero: u32,            // always 0 — see exact.wgsl `opaque`
    dispatch_width: u32,  // invocations per row of the 2-D dispatch grid
    n_rows: u32,          // rows in this dispatch
    units_per_invocation: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// The input as 16-byte vectors: llvmpipe (Mesa 22.3) turns every storage access into a loop
// over the SIMD lanes, so one vec4 load costs about what one f32 load does. Blocks start at
// multiples of 4 elements; kernels read whole vectors where they walk a block in order.
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> qw: array<f32>;
// Binding 3: the row_sigma2 pre-pass's σ² per row (Binding3 = f32), or, for a family with lookup
// tables (IQ3), those tables (Binding3 = u32). The host declares Binding3.
@group(0) @binding(3) var<storage, read> row_stats: array<Binding3>;
@group(0) @binding(4) var<storage, read_write> dst: array<u32>;

// Element i of the input.
fn sx(i: u32) -> f32 {
    return src[i >> 2u][i & 3u];
}

// OB_MAX_WORDS (the largest unit of the shader family, in words) is set by the host.
var<private> ob: array<u32, OB_MAX_WORDS>;

fn unit_index(gid: vec3<u32>) -> u32 {
    return gid.x + gid.y * params.dispatch_width;
}

// The units [x, y) of this invocation.
fn unit_range(gid: vec3<u32>) -> vec2<u32> {
    let first = unit_index(gid) * params.units_per_invocation;
    return vec2<u32>(first, min(first + params.units_per_invocation, params.n_units));
}

fn put_byte(pos: u32, v: u32) {
    ob[pos >> 2u] = ob[pos >> 2u] | ((v & 0xffu) << ((pos & 3u) * 8u));
}

fn put_u16(pos: u32, v: u32) {
    put_byte(pos, v);
    put_byte(pos + 1u, v >> 8u);
}

fn put_u32(pos: u32, v: u32) {
    put_u16(pos, v);
    put_u16(pos + 2u, v >> 16u);
}

// Store the unit's `n_words` words and clear them for the next unit. FAULT_INJECT (a host-set
// constant, false in every real pipeline) flips one bit of the dispatch's first word: the
// deliberately wrong variant the self-check test must catch.
fn store_unit(unit: u32, n_words: u32) {
    for (var k = 0u; k < n_words; k = k + 1u) {
        var w = ob[k];
        if (FAULT_INJECT && unit == 0u && k == 0u) {
            w = w ^ 1u;
        }
        dst[unit * n_words + k] = w;
        ob[k] = 0u;
    }
}

// Column of the first element of chunk-relative block `blk`, and its row.
fn block_col(blk: u32, block_size: u32) -> u32 {
    return (blk % params.blocks_per_row) * block_size;
}

fn block_row(blk: u32) -> u32 {
    return blk / params.blocks_per_row;
}
