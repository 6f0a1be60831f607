#!/usr/bin/env node
'use strict';
// ONNX Runtime's own per-node profile (CPU, onnxruntime-node).
//
//   node bench/ort_profile.js MODEL.onnx [--threads N] [--iters N]
//
// Runs the model --iters times (default 200) with profiling on, then prints
// one line per node, in the order the nodes first ran: its name (ORT's, after
// ORT's fusions), a tab, and the median of its kernel times in microseconds.
// Same session options and input as ort_bench.js (ort_common.js). bench/layer_compare.py
// sets these next to dermal's DERMAL_ONEDNN_PROFILE=1 steps.
const fs = require('fs');
const os = require('os');
const path = require('path');
const { sessionOptions, randomFeeds } = require('./ort_common');

async function main() {
  const argv = process.argv.slice(2);
  let model = null, threads = 1, iters = 200;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--threads') threads = Number(argv[++i]);
    else if (argv[i] === '--iters') iters = Number(argv[++i]);
    else if (argv[i].startsWith('--')) { process.stderr.write('ort_profile: unknown option ' + argv[i] + '\n'); process.exit(2); }
    else model = argv[i];
  }
  if (!model || !(threads >= 1) || !(iters >= 1)) {
    process.stderr.write('usage: node ort_profile.js MODEL.onnx [--threads N] [--iters N]\n');
    process.exit(2);
  }
  const ort = require('onnxruntime-node');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ort-profile-'));
  const session = await ort.InferenceSession.create(path.resolve(model), sessionOptions(threads, {
    enableProfiling: true, profileFilePrefix: path.join(dir, 'p'),
  }));
  const feeds = randomFeeds(ort, session);
  for (let i = 0; i < iters; i++) await session.run(feeds);
  session.endProfiling();
  const file = fs.readdirSync(dir).filter((f) => f.endsWith('.json')).map((f) => path.join(dir, f))[0];
  const events = JSON.parse(fs.readFileSync(file, 'utf8'));
  fs.rmSync(dir, { recursive: true, force: true });
  const times = new Map();
  for (const e of events) {
    if (e.cat !== 'Node' || !e.name.endsWith('_kernel_time')) continue;
    const k = e.name.slice(0, -'_kernel_time'.length);
    if (!times.has(k)) times.set(k, []);
    times.get(k).push(e.dur);
  }
  for (const [k, v] of times) {
    v.sort((a, b) => a - b);
    process.stdout.write(k + '\t' + v[Math.floor(v.length / 2)] + '\n');
  }
}
main().catch((e) => { process.stderr.write('ort_profile: ' + (e && e.message ? e.message : e) + '\n'); process.exit(1); });
