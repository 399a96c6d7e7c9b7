#!/usr/bin/env python3
"""Per-tensor sha256 of llama.cpp's IQ3_XXS / IQ3_S quantizers (through harness.c) on every
tensor of golden/tensors.f32.gguf whose rows are whole super-blocks, without an imatrix (the path
llama-quantize takes for IQ3_S/IQ3_M/IQ3_XS mixes run without one), and with golden/imatrix.gguf
(a check that the harness reproduces golden/pure-imatrix/ byte for byte); and the sha256 of the
f32 values llama.cpp's dequantizer gives for each IQ3 tensor of golden/pure-imatrix/. See
README.md."""
import array, hashlib, json, os, struct, subprocess, sys, tempfile

def read_gguf(path):
    b = open(path, 'rb').read()
    o = [4]
    def rd(fmt):
        v = struct.unpack_from('<' + fmt, b, o[0]); o[0] += struct.calcsize('<' + fmt); return v[0]
    def rstr():
        n = rd('Q'); s = b[o[0]:o[0] + n].decode(); o[0] += n; return s
    scalar = {0: 'B', 1: 'b', 2: 'H', 3: 'h', 4: 'I', 5: 'i', 6: 'f', 7: '?', 10: 'Q', 11: 'q', 12: 'd'}
    def rval(t):
        if t == 8: return rstr()
        if t == 9:
            et = rd('i'); n = rd('Q'); return [rval(et) for _ in range(n)]
        return rd(scalar[t])
    assert b[:4] == b'GGUF'
    rd('I'); n_tensors = rd('q'); n_kv = rd('q')
    kv = {}
    for _ in range(n_kv):
        k = rstr(); kv[k] = rval(rd('i'))
    infos = []
    for _ in range(n_tensors):
        name = rstr(); nd = rd('I'); ne = [rd('q') for _ in range(nd)]; ty = rd('i'); off = rd('Q')
        infos.append((name, ne, ty, off))
    align = kv.get('general.alignment', 32)
    start = (o[0] + align - 1) // align * align
    return {name: (ne, ty, start + off) for name, ne, ty, off in infos}, [i[0] for i in infos], b

def imatrix_weights(im, imb, name):
    """in_sum2 / count in f32 (all ones for a zero count), as llama-quantize derives them."""
    if name + '.in_sum2' not in im: return None
    ne, _, off = im[name + '.in_sum2']
    sums = array.array('f'); sums.frombytes(imb[off:off + 4 * ne[0]])
    count = struct.unpack_from('<f', imb, im[name + '.counts'][2])[0]
    f32 = lambda v: struct.unpack('<f', struct.pack('<f', v))[0]
    return array.array('f', [f32(s / count) if count > 0 else 1.0 for s in sums])

def main():
    golden, harness, out_path = sys.argv[1], sys.argv[2], sys.argv[3]
    tens, order, tb = read_gguf(os.path.join(golden, 'tensors.f32.gguf'))
    im, _, imb = read_gguf(os.path.join(golden, 'imatrix.gguf'))
    result = {}
    tmp = tempfile.mkdtemp()
    for ty, gname in [('xxs', 'IQ3_XXS'), ('s', 'IQ3_S')]:
        gold, _, gb = read_gguf(os.path.join(golden, 'pure-imatrix', gname + '.gguf'))
        for with_im in [False, True]:
            key = gname + (' imatrix' if with_im else '')
            result[key] = {}
            for name in order:
                ne, _, off = tens[name]
                if len(ne) < 2 or ne[0] % 256: continue
                n = ne[0] * ne[1]
                xp = os.path.join(tmp, 'x.f32'); open(xp, 'wb').write(tb[off:off + 4 * n])
                wp = '-'
                if with_im:
                    w = imatrix_weights(im, imb, name)
                    wp = os.path.join(tmp, 'w.f32'); open(wp, 'wb').write(w.tobytes())
                op = os.path.join(tmp, 'out.bin')
                subprocess.run([harness, ty, str(ne[0]), xp, wp, op], check=True)
                q = open(op, 'rb').read()
                if with_im:
                    gne, gty, goff = gold[name]
                    assert gb[goff:goff + len(q)] == q, f'{gname} {name}: harness differs from llama-quantize'
                result[key][name] = hashlib.sha256(q).hexdigest()
        key = gname + ' dequantized'
        result[key] = {}
        for name in order:
            gne, gty, goff = gold[name]
            if gty != (18 if ty == 'xxs' else 21): continue
            n_bytes = gne[0] * gne[1] // 256 * (98 if ty == 'xxs' else 110)
            qp = os.path.join(tmp, 'q.bin'); open(qp, 'wb').write(gb[goff:goff + n_bytes])
            yp = os.path.join(tmp, 'y.f32')
            subprocess.run([harness, 'dequant', ty, qp, yp], check=True)
            result[key][name] = hashlib.sha256(open(yp, 'rb').read()).hexdigest()
    json.dump(result, open(out_path, 'w'), indent=1, sort_keys=True)
    open(out_path, 'a').write('\n')

main()
