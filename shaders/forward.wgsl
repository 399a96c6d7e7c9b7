// The llama forward pass on the GPU (src/gpu/forward.rs drives it): token-embedding gather,
// RMSNorm, tiled matmul, RoPE from a host-computed table, grouped-query causal attention,
// SwiGLU and residual/bias adds, all in f32.
//
// Determinism: every reduction has a fixed order (sequential per invocation, then a fixed
// shared-memory tree); no atomics, no subgroup operations. A given device and driver therefore
// gives the same bits on every run.
//
// lavapipe (llvmpipe) silently ends all loops of an invocation once 65535 iterations in total
// have run; the host refuses shapes whose loop counts could get near that on software adapters
// (see `iteration_budget` in src/gpu/forward.rs), so loops here are kept short per invocation.
//
// Every entry point shares one bind group layout: 0 the step's static parameters, 1 the
// per-call parameters, 2..4 read-only inputs, 5 the output.

struct Step {
    // matmul: weight rows in this chunk; elementwise kernels: values per token row.
    rows: u32,
    // matmul: inner dimension (weight columns); embed: values per embedding row.
    cols: u32,
    // First input element, and elements between consecutive tokens of the input.
    x_base: u32,
    x_stride: u32,
    // First output element, elements between consecutive tokens of the output, and how far the
    // output moves per cached position (writes into the KV cache land at position pos0).
    y_base: u32,
    y_stride: u32,
    y_pos_stride: u32,
    n_head: u32,
    n_head_kv: u32,
    head_dim: u32,
    head_dim_v: u32,
    n_rot: u32,
    eps: f32,
    scale: f32,
    pad0: u32,
    pad1: u32,
}

struct Call {
    n_tokens: u32,
    pos0: u32,
    pad0: u32,
    pad1: u32,
}

@group(0) @binding(0) var<uniform> st: Step;
@group(0) @binding(1) var<uniform> call: Call;
@group(0) @binding(2) var<storage, read> in_a: array<f32>;
@group(0) @binding(3) var<storage, read> in_b: array<f32>;
@group(0) @binding(4) var<storage, read> in_c: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

const WG: u32 = 64u;

// A fixed-order tree over the 64 partial results of a workgroup.
var<workgroup> red: array<f32, 64>;

// Sum of red[0..64] into red[0], pairs (i, i + s) for s = 32, 16, ..., 1. Must be called from
// uniform control flow by the whole workgroup, after red[li] has been written.
fn tree_sum(li: u32) {
    workgroupBarrier();
    for (var s = 32u; s > 0u; s = s >> 1u) {
        if (li < s) {
            red[li] = red[li] + red[li + s];
        }
        workgroupBarrier();
    }
}

fn tree_max(li: u32) {
    workgroupBarrier();
    for (var s = 32u; s > 0u; s = s >> 1u) {
        if (li < s) {
            red[li] = max(red[li], red[li + s]);
        }
        workgroupBarrier();
    }
}

// Output element index of (token t, element i) of a step, including the KV-cache position shift.
fn out_index(t: u32, i: u32) -> u32 {
    return st.y_base + call.pos0 * st.y_pos_stride + t * st.y_stride + i;
}

// ---------------------------------------------------------------------------------------------
// Token embedding gather: out[t][i] = E[tok[t] - r0][i] for the tokens whose id falls in this
// chunk of the embedding (rows r0 .. r0 + rows). in_a: the chunk, in_b: token ids as f32 values
// (exact below 2^24; a u32 bit pattern would be an f32 subnormal, which a driver may flush),
// x_base: r0. Grid-stride over n_tokens × cols.

@compute @workgroup_size(64)
fn embed(@builtin(global_invocation_id) gid: vec3<u32>,
         @builtin(num_workgroups) nwg: vec3<u32>) {
    let total = call.n_tokens * st.cols;
    let step = nwg.x * WG;
    for (var e = gid.x; e < total; e = e + step) {
        let t = e / st.cols;
        let i = e % st.cols;
        let tok = u32(in_b[t]);
        if (tok >= st.x_base && tok - st.x_base < st.rows) {
            out[t * st.y_stride + i] = in_a[(tok - st.x_base) * st.cols + i];
        }
    }
}

// ---------------------------------------------------------------------------------------------
// RMSNorm of one token per workgroup, then the learned scale: y = (x · 1/√(mean(x²) + ε)) · w.
// in_a: x, in_b: w (rows values).

@compute @workgroup_size(64)
fn rms_norm(@builtin(workgroup_id) wg: vec3<u32>,
            @builtin(local_invocation_index) li: u32) {
    let t = wg.x;
    let n = st.rows;
    let xb = st.x_base + t * st.x_stride;
    var s = 0.0;
    for (var i = li; i < n; i = i + WG) {
        let v = in_a[xb + i];
        s = s + v * v;
    }
    red[li] = s;
    tree_sum(li);
    let mean = red[0] / f32(n);
    let scale = 1.0 / sqrt(mean + st.eps);
    for (var i = li; i < n; i = i + WG) {
        out[out_index(t, i)] = (in_a[xb + i] * scale) * in_b[i];
    }
}

// ---------------------------------------------------------------------------------------------
// y[t][r] = Σ_k W[r][k] · x[t][k] for one chunk of weight rows (in_a, rows × cols, row-major)
// and the input tokens (in_b). A workgroup computes a 32-row × 32-token tile, 4 × 4 per
// invocation; K advances in slices of 32 staged through workgroup memory. Each output is one
// running sum over k in ascending order.

const TILE_R: u32 = 32u;
const TILE_T: u32 = 32u;
const TILE_K: u32 = 32u;
// Both tiles k-major, four rows (tokens) per vec4: w_tile[kk · 8 + r / 4][r % 4] = W[r][k0 + kk],
// so the inner loop reads one vec4 of weights and one of inputs per k.
var<workgroup> w_tile: array<vec4<f32>, 256>;
var<workgroup> x_tile: array<vec4<f32>, 256>;

@compute @workgroup_size(64)
fn matmul(@builtin(workgroup_id) wg: vec3<u32>,
          @builtin(local_invocation_index) li: u32) {
    let r_base = wg.x * TILE_R;
    let t_base = wg.y * TILE_T;
    let n = call.n_tokens;
    let k_len = st.cols;
    // This invocation's rows r_base + 4·(li % 8) .. +4 and tokens t_base + 4·(li / 8) .. +4.
    let r4 = li % 8u;
    let t4 = li / 8u;
    let tr = r4 * 4u;
    let tt = t4 * 4u;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < k_len; k0 = k0 + TILE_K) {
        // 1024 values of each tile, 16 per invocation, consecutive invocations along k; zeros
        // outside the matrices.
        for (var u = 0u; u < 16u; u = u + 1u) {
            let e = li + u * WG;
            let rr = e / TILE_K;
            let kk = e % TILE_K;
            let k = k0 + kk;
            var w = 0.0;
            let r = r_base + rr;
            if (r < st.rows && k < k_len) {
                w = in_a[r * k_len + k];
            }
            w_tile[kk * 8u + rr / 4u][rr % 4u] = w;
            var x = 0.0;
            let t = t_base + rr;
            if (t < n && k < k_len) {
                x = in_b[st.x_base + t * st.x_stride + k];
            }
            x_tile[kk * 8u + rr / 4u][rr % 4u] = x;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TILE_K; kk = kk + 1u) {
            let xv = x_tile[kk * 8u + t4];
            let wv = w_tile[kk * 8u + r4];
            acc0 = acc0 + xv * wv.x;
            acc1 = acc1 + xv * wv.y;
            acc2 = acc2 + xv * wv.z;
            acc3 = acc3 + xv * wv.w;
        }
        workgroupBarrier();
    }
    var accs = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
    for (var i = 0u; i < 4u; i = i + 1u) {
        let r = r_base + tr + i;
        for (var j = 0u; j < 4u; j = j + 1u) {
            let t = t_base + tt + j;
            if (r < st.rows && t < n) {
                out[out_index(t, r)] = accs[i][j];
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// RoPE ("NORM" mode: adjacent pairs) in place on n_head heads of head_dim per token; the first
// n_rot values of each head rotate. in_a: the table, (cos, sin) for position p and pair i at
// 2·(p·n_rot/2 + i), computed on the host (see forward.rs for why).

@compute @workgroup_size(64)
fn rope(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let half = st.n_rot / 2u;
    let per_token = st.n_head * half;
    let total = call.n_tokens * per_token;
    let step = nwg.x * WG;
    for (var e = gid.x; e < total; e = e + step) {
        let t = e / per_token;
        let rem = e % per_token;
        let h = rem / half;
        let i = rem % half;
        let tab = 2u * ((call.pos0 + t) * half + i);
        let c = in_a[tab];
        let s = in_a[tab + 1u];
        let at = out_index(t, h * st.head_dim + 2u * i);
        let a = out[at];
        let b = out[at + 1u];
        out[at] = a * c - b * s;
        out[at + 1u] = a * s + b * c;
    }
}

// ---------------------------------------------------------------------------------------------
// Causal grouped-query attention, one workgroup per (query head, token). Query t sits at
// position pos0 + t and sees cached keys 0 ..= pos0 + t; head h reads KV head h / (n_head /
// n_head_kv). Keys go in blocks of ATT_BLOCK: scores into workgroup memory, the block's max and
// Σ exp by fixed trees, and the running output rescaled when the max grows (one block, as for
// any context up to ATT_BLOCK, is the plain softmax). Invocation li owns output dims li + 64·c.
// in_a: Q (x_base, x_stride), in_b: K cache, in_c: V cache, out: y_base, y_stride.

const ATT_BLOCK: u32 = 512u;
const MAX_HEAD_DIM: u32 = 256u;
var<workgroup> q_sh: array<f32, MAX_HEAD_DIM>;
var<workgroup> p_sh: array<f32, ATT_BLOCK>;

@compute @workgroup_size(64)
fn attention(@builtin(workgroup_id) wg: vec3<u32>,
             @builtin(local_invocation_index) li: u32) {
    let h = wg.x;
    let t = wg.y;
    let hd = st.head_dim;
    let hdv = st.head_dim_v;
    let kvh = h / (st.n_head / st.n_head_kv);
    let k_row = st.n_head_kv * hd;
    let v_row = st.n_head_kv * hdv;
    let n_keys = call.pos0 + t + 1u;
    let qb = st.x_base + t * st.x_stride + h * hd;
    for (var d = li; d < hd; d = d + WG) {
        q_sh[d] = in_a[qb + d];
    }
    workgroupBarrier();
    var acc = vec4<f32>(0.0);
    var m_run = -3.0e38;
    var l_run = 0.0;
    for (var j0 = 0u; j0 < n_keys; j0 = j0 + ATT_BLOCK) {
        let nb = min(ATT_BLOCK, n_keys - j0);
        var local_max = -3.0e38;
        for (var jj = li; jj < nb; jj = jj + WG) {
            let kb = (j0 + jj) * k_row + kvh * hd;
            var s = 0.0;
            for (var d = 0u; d < hd; d = d + 1u) {
                s = s + q_sh[d] * in_b[kb + d];
            }
            s = s * st.scale;
            p_sh[jj] = s;
            local_max = max(local_max, s);
        }
        red[li] = local_max;
        tree_max(li);
        let m_new = max(m_run, red[0]);
        workgroupBarrier();
        var local_sum = 0.0;
        for (var jj = li; jj < nb; jj = jj + WG) {
            let p = exp(p_sh[jj] - m_new);
            p_sh[jj] = p;
            local_sum = local_sum + p;
        }
        red[li] = local_sum;
        tree_sum(li);
        let corr = exp(m_run - m_new);
        l_run = l_run * corr + red[0];
        m_run = m_new;
        acc = acc * corr;
        for (var jj = 0u; jj < nb; jj = jj + 1u) {
            let p = p_sh[jj];
            let vb = (j0 + jj) * v_row + kvh * hdv + li;
            if (li < hdv) {
                acc.x = acc.x + p * in_c[vb];
            }
            if (li + 64u < hdv) {
                acc.y = acc.y + p * in_c[vb + 64u];
            }
            if (li + 128u < hdv) {
                acc.z = acc.z + p * in_c[vb + 128u];
            }
            if (li + 192u < hdv) {
                acc.w = acc.w + p * in_c[vb + 192u];
            }
        }
        // p_sh and red are rewritten by the next block.
        workgroupBarrier();
    }
    let inv = 1.0 / l_run;
    let ob = st.y_base + t * st.y_stride + h * hdv + li;
    if (li < hdv) {
        out[ob] = acc.x * inv;
    }
    if (li + 64u < hdv) {
        out[ob + 64u] = acc.y * inv;
    }
    if (li + 128u < hdv) {
        out[ob + 128u] = acc.z * inv;
    }
    if (li + 192u < hdv) {
        out[ob + 192u] = acc.w * inv;
    }
}

// ---------------------------------------------------------------------------------------------
// up ← up · silu(gate), silu(g) = g / (1 + e^(−g)). in_a: gate (x_base, x_stride), out: up.

@compute @workgroup_size(64)
fn swiglu(@builtin(global_invocation_id) gid: vec3<u32>,
          @builtin(num_workgroups) nwg: vec3<u32>) {
    let total = call.n_tokens * st.rows;
    let step = nwg.x * WG;
    for (var e = gid.x; e < total; e = e + step) {
        let t = e / st.rows;
        let i = e % st.rows;
        let g = in_a[st.x_base + t * st.x_stride + i];
        let at = out_index(t, i);
        out[at] = out[at] * (g / (1.0 + exp(-g)));
    }
}

// ---------------------------------------------------------------------------------------------
// out[t][i] += a[t][i]: the residual add (x_stride = row width) or a bias (x_stride = 0).

@compute @workgroup_size(64)
fn add(@builtin(global_invocation_id) gid: vec3<u32>,
       @builtin(num_workgroups) nwg: vec3<u32>) {
    let total = call.n_tokens * st.rows;
    let step = nwg.x * WG;
    for (var e = gid.x; e < total; e = e + step) {
        let t = e / st.rows;
        let i = e % st.rows;
        let at = out_index(t, i);
        out[at] = out[at] + in_a[st.x_base + t * st.x_stride + i];
    }
}
