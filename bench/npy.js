'use strict';
// Minimal .npy (format 1.0/2.0/3.0) reader/writer for little-endian float32,
// C-order arrays. Enough for test vectors; anything else is rejected.
const fs = require('fs');

const MAGIC = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]); // \x93NUMPY

function parseHeader(text) {
  // e.g. {'descr': '<f4', 'fortran_order': False, 'shape': (1, 3, 224, 224), }
  const descr = /'descr'\s*:\s*'([^']*)'/.exec(text);
  const fortran = /'fortran_order'\s*:\s*(True|False)/.exec(text);
  const shape = /'shape'\s*:\s*\(([^)]*)\)/.exec(text);
  if (!descr || !fortran || !shape) throw new Error('npy: malformed header: ' + text);
  const dims = shape[1].split(',').map((s) => s.trim()).filter((s) => s.length > 0)
    .map((s) => {
      if (!/^\d+$/.test(s)) throw new Error('npy: bad dimension ' + s);
      return Number(s);
    });
  return { descr: descr[1], fortran: fortran[1] === 'True', shape: dims };
}

function readNpy(path) {
  const buf = fs.readFileSync(path);
  if (buf.length < 10 || !buf.subarray(0, 6).equals(MAGIC)) throw new Error(path + ': not a .npy file');
  const major = buf[6];
  let hlen;
  let off;
  if (major === 1) { hlen = buf.readUInt16LE(8); off = 10; } else if (major === 2 || major === 3) {
    hlen = buf.readUInt32LE(8); off = 12;
  } else throw new Error(path + ': unsupported .npy version ' + major);
  if (off + hlen > buf.length) throw new Error(path + ': truncated header');
  const h = parseHeader(buf.subarray(off, off + hlen).toString('latin1'));
  if (h.descr !== '<f4' && h.descr !== '=f4' && h.descr !== 'f4') {
    throw new Error(path + ': dtype ' + h.descr + ' not supported (float32 little-endian only)');
  }
  if (h.fortran) throw new Error(path + ': Fortran-order arrays not supported');
  const n = h.shape.reduce((a, b) => a * b, 1);
  const start = off + hlen;
  if (buf.length - start < n * 4) throw new Error(path + ': truncated data');
  // Copy so the Float32Array is 4-byte aligned.
  const data = new Float32Array(n);
  Buffer.from(data.buffer).set(buf.subarray(start, start + n * 4));
  return { shape: h.shape, data };
}

function writeNpy(path, shape, data) {
  const f32 = data instanceof Float32Array ? data : Float32Array.from(data);
  const n = shape.reduce((a, b) => a * b, 1);
  if (n !== f32.length) throw new Error('writeNpy: shape ' + JSON.stringify(shape) + ' does not match ' + f32.length + ' elements');
  const shapeStr = shape.length === 1 ? '(' + shape[0] + ',)' : '(' + shape.join(', ') + ')';
  let header = "{'descr': '<f4', 'fortran_order': False, 'shape': " + shapeStr + ', }';
  // Pad so that magic(6)+version(2)+len(2)+header+\n is a multiple of 64.
  const total = 10 + header.length + 1;
  header += ' '.repeat((64 - (total % 64)) % 64) + '\n';
  const pre = Buffer.alloc(10);
  MAGIC.copy(pre, 0);
  pre[6] = 1; pre[7] = 0;
  pre.writeUInt16LE(header.length, 8);
  const body = Buffer.from(f32.buffer, f32.byteOffset, f32.byteLength);
  fs.writeFileSync(path, Buffer.concat([pre, Buffer.from(header, 'latin1'), body]));
}

module.exports = { readNpy, writeNpy };
