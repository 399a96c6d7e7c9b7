#!/usr/bin/env python3
"""Writes reference.json: what llama.cpp's own IQ2 kernels give for golden/tensors.f32.gguf.

The pure-imatrix goldens hold IQ2_XXS and IQ2_XS tensors but no IQ2_S ones (llama-quantize's
IQ2_S ftype stores IQ2_XS; only the IQ2_M mix uses IQ2_S), and none show quantize_iq2_s without
an imatrix or the dequantizers. reference.c runs those functions from the upstream ggml-quants.c
itself; this script feeds it every tensor of tensors.f32.gguf whose rows are whole super-blocks
and records sha256 of the results (of the f32 little-endian values for dequantization).

    python3 tests/data/iq2/make_reference.py LLAMA_CPP_DIR [GOLDEN_DIR]

needs gcc and python3 only; GOLDEN_DIR defaults to ../shared/golden beside the checkout.
"""
import hashlib, json, os, struct, subprocess, sys, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
LLAMA = sys.argv[1]
GOLDEN = sys.argv[2] if len(sys.argv) > 2 else os.path.join(HERE, '../../../../shared/golden')

SIZES = {0: 'B', 1: 'b', 2: 'H', 3: 'h', 4: 'I', 5: 'i', 6: 'f', 7: '?', 10: 'Q', 11: 'q', 12: 'd'}
BLOCKS = {0: (1, 4), 16: (256, 66), 17: (256, 74), 22: (256, 82)}  # F32, IQ2_XXS, IQ2_XS, IQ2_S


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


def main():
    work = tempfile.mkdtemp(prefix='iq2-reference-')
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
    im, im_data = read_gguf(os.path.join(GOLDEN, 'imatrix.gguf'))
    goldens = {t: read_gguf(os.path.join(GOLDEN, 'pure-imatrix', f'{t}.gguf'))
               for t in ['IQ2_XXS', 'IQ2_XS']}
    out = []
    for name, (ne, ty, _) in sorted(src.items()):
        if ty != 0 or len(ne) < 2 or ne[0] % 256:
            continue
        ne0 = ne[0]
        base = os.path.join(work, name)
        open(base + '.f32', 'wb').write(src_data(name))
        entry = {'name': name, 'ne0': ne0}
        if name + '.in_sum2' in im:
            # llama-quantize's weights: in_sum2 / count, the count rounded (all ones for 0).
            sums = struct.unpack(f'<{ne0}f', im_data(name + '.in_sum2')[:4 * ne0])
            count = float(round(struct.unpack('<f', im_data(name + '.counts')[:4])[0]))
            w = [struct.unpack('<f', struct.pack('<f', v / count))[0] if count > 0 else 1.0
                 for v in sums]
            open(base + '.qw', 'wb').write(struct.pack(f'<{ne0}f', *w))
        subprocess.check_call([exe, 'quantize', base, str(ne0)])
        if os.path.exists(base + '.iq2_s.im.q'):
            entry['iq2_s_imatrix'] = sha(open(base + '.iq2_s.im.q', 'rb').read())
        entry['iq2_s'] = sha(open(base + '.iq2_s.noim.q', 'rb').read())
        deq = {}
        for t, (gt, gdata) in goldens.items():
            if name in gt and gt[name][1] in (16, 17):
                open(base + '.' + t.lower() + '.q', 'wb').write(gdata(name))
                subprocess.check_call([exe, 'dequant', t.lower(), base, str(ne0)])
                deq[t] = sha(open(base + '.' + t.lower() + '.deq', 'rb').read())
        os.replace(base + '.iq2_s.noim.q', base + '.iq2_s.q')
        subprocess.check_call([exe, 'dequant', 'iq2_s', base, str(ne0)])
        deq['IQ2_S'] = sha(open(base + '.iq2_s.deq', 'rb').read())
        entry['dequantized'] = deq
        out.append(entry)
    doc = {
        'made_by': 'tests/data/iq2/make_reference.py (llama.cpp 0c1e57098 ggml-quants.c)',
        'iq2_s_imatrix': 'sha256 of quantize_iq2_s(tensor, imatrix.gguf weights)',
        'iq2_s': 'sha256 of quantize_iq2_s(tensor, NULL)',
        'dequantized': 'sha256 of dequantize_row_<type> (f32 LE) of the pure-imatrix golden '
                       'tensor (IQ2_XXS, IQ2_XS) or of the IQ2_S bytes above without imatrix',
        'tensors': out,
    }
    with open(os.path.join(HERE, 'reference.json'), 'w') as f:
        json.dump(doc, f, indent=1)
        f.write('\n')


main()
