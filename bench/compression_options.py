"""Compression options for ckpt's .ckptz, measured on safetensors files
(the README's table): whole-file deflate / zstd / xz, and per tensor deflate
of the bytes, of byte planes, and zstd. Sizes are bytes and % of the first
file given.

    python bench/compression_options.py F32.safetensors OTHER.safetensors...

zstd needs the `zstandard` package (skipped when missing).
"""
import sys, zlib, lzma, struct, json
import numpy as np
try:
    import zstandard
except ImportError:
    zstandard = None
def tensors(f):
    b=open(f,'rb').read(); n=struct.unpack('<Q',b[:8])[0]; h=json.loads(b[8:8+n]); data=b[8+n:]
    out=[]
    for k,v in h.items():
        if k=='__metadata__': continue
        s,e=v['data_offsets']; out.append((k,v['dtype'],data[s:e]))
    return b, out
def planes(buf, size):
    a=np.frombuffer(buf,dtype=np.uint8).reshape(-1,size)
    return a.T.tobytes()
base = None
for f in sys.argv[1:]:
    whole, ts = tensors(f)
    raw=sum(len(t[2]) for t in ts)
    sz={'dt':{'F32':4,'I8':1,'I64':8}}
    res={}
    res['file']=len(whole)
    res['deflate6 file']=len(zlib.compress(whole,6))
    res['deflate9 file']=len(zlib.compress(whole,9))
    if zstandard:
        res['zstd3 file']=len(zstandard.ZstdCompressor(level=3).compress(whole))
        res['zstd19 file']=len(zstandard.ZstdCompressor(level=19).compress(whole))
    res['xz file']=len(lzma.compress(whole))
    pt=lambda fn: sum(len(fn(t)) for t in ts)
    res['deflate6 per tensor']=pt(lambda t: zlib.compress(t[2],6))
    res['deflate6 planes']=pt(lambda t: zlib.compress(planes(t[2],sz['dt'][t[1]]),6))
    if zstandard:
        res['zstd3 planes']=pt(lambda t: zstandard.ZstdCompressor(level=3).compress(planes(t[2],sz['dt'][t[1]])))
        res['zstd3 per tensor']=pt(lambda t: zstandard.ZstdCompressor(level=3).compress(t[2]))
    base = base or res['file']
    print(f, 'tensor bytes', raw)
    for k,v in res.items(): print(f'   {k:22} {v:8d} {100*v/base:6.1f}% of the first file')
