#!/usr/bin/env python3
"""Writes reference.json: what llama.cpp's own IQ1 kernels give for golden/tensors.f32.gguf.

The pure-imatrix goldens show quantize_iq1_s / quantize_iq1_m with golden/imatrix.gguf only.
reference.c runs those functions from the upstream ggml-quants.c itself, on every tensor of
tensors.f32.gguf whose rows are whole super-blocks, with other weights: none (IQ1_M only: IQ1_S
asserts), all ones (so equal values also have equal weights: the sort's tie order shows), and
golden/imatrix-partial.gguf's; and runs the dequantizers on the pure-imatrix golden bytes. It
records sha256 of the results (of the f32 little-endian values for dequantization).

    python3 tests/data/iq1/make_reference.py LLAMA_CPP_DIR [GOLDEN_DIR]

needs gcc and python3 only; GOLDEN_DIR defaults to ../shared/golden beside the checkout.
"""
import hashlib, json, os, struct, subprocess, sys, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
LLAMA = sys.argv[1]
GOLDEN = sys.argv[2] if len(sys.argv) > 2 else os.path.join(HERE, '../../../../shared/golden')

SIZES = {0: 'B', 1: 'b', 2: 'H', 3: 'h', 4: 'I', 5: 'i', 6: 'f', 7: '?', 10: 'Q', 11: 'q', 12: 'd'}
BLOCKS = {0: (1, 4), 19: (256, 50), 20: (32, 18), 29: (256, 56), 1: (1, 2)}  # F32, IQ1_S, IQ4_NL, IQ1_M, F16


def read_gguf(path):
    b = open(path, 'rb').read()
    o = 0

    def u(fmt):
        nonlocal o
        v = struct.unpack_from('<' + fmt, b, o)[0]
        o += struct.calcsize('<' + fmt)
        return v

    def s():
        nonlocal o
        n = u('Q')
        v = b[o:o + n].decode()
        o += n
        return v

    def val(t):
        if t == 8:
            return s()
        if t == 9:
            et = u('i')
            return [val(et) for _ in range(u('Q'))]
        return u(SIZES[t])

    assert b[:4] == b'GGUF'
    o = 4
    u('I')
    nt, nkv = u('q'), u('q')
    kv = {}
    for _ in range(nkv):
        k = s()
        kv[k] = val(u('i'))
    tensors = {}
    for _ in range(nt):
        name = s()
        ne = [u('q') for _ in range(u('I'))]
        ty, off = u('i'), u('Q')
        tensors[name] = (ne, ty, off)
    al = kv.get('general.alignment', 32)
    data = (o + al - 1) // al * al

    def data_of(name):
        ne, ty, off = tensors[name]
        n = 1
        for v in ne:
            n *= v
        bs, ts = BLOCKS[ty]
        return b[data + off:data + off + n // bs * ts]

    return tensors, data_of


def sha(b):
    return hashlib.sha256(b).hexdigest()


def weights(im, im_data, name, ne0):
    """llama-quantize's weights: in_sum2 / count, the count rounded (all ones for 0)."""
    if name + '.in_sum2' not in im:
        return None
    sums = struct.unpack(f'<{ne0}f', im_data(name + '.in_sum2')[:4 * ne0])
    count = float(round(struct.unpack('<f', im_data(name + '.counts')[:4])[0]))
    return [struct.unpack('<f', struct.pack('<f', v / count))[0] if count > 0 else 1.0
            for v in sums]


def main():
    work = tempfile.mkdtemp(prefix='iq1-reference-')
    stubs = os.path.join(work, 'stubs.c')
    open(stubs, 'w').write(
        '#include <stdlib.h>\n#include <stddef.h>\n'
        'void ggml_abort(const char*f,int l,const char*fmt,...){abort();}\n'
        'size_t ggml_row_size(int t,long n){abort();}\n'
        'const char* ggml_type_name(int t){return "";}\n'
        'size_t ggml_type_size(int t){abort();}\n')
    exe = os.path.join(work, 'reference')
    subprocess.check_call(['gcc', '-O2', '-std=gnu11', '-I' + LLAMA + '/ggml/include',
                           '-I' + LLAMA + '/ggml/src', os.path.join(HERE, 'reference.c'), stubs,
                           '-lm', '-o', exe])
    src, src_data = read_gguf(os.path.join(GOLDEN, 'tensors.f32.gguf'))
    partial, partial_data = read_gguf(os.path.join(GOLDEN, 'imatrix-partial.gguf'))
    goldens = {t: read_gguf(os.path.join(GOLDEN, 'pure-imatrix', f'{t.upper()}.gguf'))
               for t in ['iq1_s', 'iq1_m']}
    jobs, todo = [], []
    for name, (ne, ty, _) in sorted(src.items()):
        if ty != 0 or len(ne) < 2 or ne[0] % 256:
            continue
        ne0 = ne[0]
        base = os.path.join(work, name)
        open(base + '.f32', 'wb').write(src_data(name))
        open(base + '.ones.qw', 'wb').write(struct.pack(f'<{ne0}f', *([1.0] * ne0)))
        tags = ['ones']
        w = weights(partial, partial_data, name, ne0)
        if w is not None:
            open(base + '.partial.qw', 'wb').write(struct.pack(f'<{ne0}f', *w))
            tags.append('partial')
        for t in ['iq1_s', 'iq1_m']:
            for tag in tags + (['none'] if t == 'iq1_m' else []):
                jobs.append(f'quantize {t} {base} {ne0} {tag}')
            open(f'{base}.{t}.q', 'wb').write(goldens[t][1](name))
            jobs.append(f'dequant {t} {base} {ne0}')
        todo.append((name, ne0, base, tags))
    subprocess.run([exe], input='\n'.join(jobs) + '\n', text=True, check=True)
    out = []
    for name, ne0, base, tags in todo:
        entry = {'name': name, 'ne0': ne0}
        for t in ['iq1_s', 'iq1_m']:
            entry[t] = {tag: sha(open(f'{base}.{t}.{tag}.q', 'rb').read())
                        for tag in tags + (['none'] if t == 'iq1_m' else [])}
            entry[t + '_dequantized'] = sha(open(f'{base}.{t}.deq', 'rb').read())
        out.append(entry)
    doc = {
        'made_by': 'tests/data/iq1/make_reference.py (llama.cpp 0c1e57098 ggml-quants.c)',
        'iq1_s': 'sha256 of quantize_iq1_s(tensor, weights): ones, imatrix-partial.gguf\'s',
        'iq1_m': 'sha256 of quantize_iq1_m(tensor, weights): ones, imatrix-partial.gguf\'s, NULL',
        'dequantized': 'sha256 of dequantize_row_<type> (f32 LE) of the pure-imatrix golden tensor',
        'tensors': out,
    }
    with open(os.path.join(HERE, 'reference.json'), 'w') as f:
        json.dump(doc, f, indent=1)
        f.write('\n')


main()
