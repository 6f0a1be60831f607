#!/usr/bin/env node
'use strict';
// ONNX Runtime (CPU, onnxruntime-node) latency benchmark.
//
//   node bench/ort_bench.js MODEL.onnx [--threads N] [--iters N] [--warmup N]
//
// Prints one JSON line:
//   {"runtime":"onnxruntime","model":...,"threads":N,"load_ms":...,"first_ms":...,
//    "p50_ms":...,"p90_ms":...,"p99_ms":...}
// load_ms: InferenceSession.create (parse + graph optimisation);
// first_ms: the first session.run; then --warmup untimed runs, then --iters
// timed runs (each session.run timed alone) for the percentiles.
// intraOpNumThreads=N, interOpNumThreads=1, graphOptimizationLevel 'all',
// executionMode 'sequential'. Input: random Float32Array of the model's input
// shape (dynamic dims taken as 1x3x224x224).
const path = require('path');

function usage(msg) {
  if (msg) process.stderr.write('ort_bench: ' + msg + '\n');
  process.stderr.write('usage: node ort_bench.js MODEL.onnx [--threads N] [--iters N] [--warmup N]\n');
  process.exit(2);
}

function percentile(sorted, p) {
  // nearest-rank on sorted samples, linear interpolation between ranks
  if (sorted.length === 0) return NaN;
  const r = (p / 100) * (sorted.length - 1);
  const lo = Math.floor(r);
  const hi = Math.ceil(r);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (r - lo);
}

function nowMs() { return Number(process.hrtime.bigint()) / 1e6; }

async function main() {
  const opts = { threads: 1, iters: 100, warmup: 10 };
  let model = null;
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--threads') opts.threads = Number(argv[++i]);
    else if (a === '--iters') opts.iters = Number(argv[++i]);
    else if (a === '--warmup') opts.warmup = Number(argv[++i]);
    else if (a === '-h' || a === '--help') usage();
    else if (a.startsWith('--')) usage('unknown option ' + a);
    else if (model === null) model = a;
    else usage('extra argument ' + a);
  }
  if (!model) usage('need MODEL');
  for (const k of ['threads', 'iters']) if (!(Number.isInteger(opts[k]) && opts[k] >= 1)) usage('--' + k + ' must be a positive integer');
  if (!(Number.isInteger(opts.warmup) && opts.warmup >= 0)) usage('--warmup must be >= 0');

  const ort = require('onnxruntime-node');
  const t0 = nowMs();
  const session = await ort.InferenceSession.create(path.resolve(model), {
    executionProviders: ['cpu'],
    intraOpNumThreads: opts.threads,
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
    executionMode: 'sequential',
  });
  const loadMs = nowMs() - t0;

  const inName = session.inputNames[0];
  let shape = [1, 3, 224, 224];
  const meta = session.inputMetadata && session.inputMetadata[0];
  if (meta && Array.isArray(meta.shape) && meta.shape.length > 0) {
    const dflt = [1, 3, 224, 224];
    shape = meta.shape.map((d, i) => (typeof d === 'number' && d > 0 ? d : (dflt[i] || 1)));
  }
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  let s = 12345;
  for (let i = 0; i < n; i++) { // LCG -> uniform(-1, 1), deterministic
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    data[i] = (s / 4294967296) * 2 - 1;
  }
  const feeds = { [inName]: new ort.Tensor('float32', data, shape) };

  let t = nowMs();
  await session.run(feeds);
  const firstMs = nowMs() - t;
  for (let i = 0; i < opts.warmup; i++) await session.run(feeds);
  const samples = new Float64Array(opts.iters);
  for (let i = 0; i < opts.iters; i++) {
    t = nowMs();
    await session.run(feeds);
    samples[i] = nowMs() - t;
  }
  samples.sort();
  const r3 = (x) => Math.round(x * 1000) / 1000;
  process.stdout.write(JSON.stringify({
    runtime: 'onnxruntime',
    version: ort.env.versions && ort.env.versions.node,
    model: path.basename(model),
    threads: opts.threads,
    iters: opts.iters,
    load_ms: r3(loadMs),
    first_ms: r3(firstMs),
    p50_ms: r3(percentile(samples, 50)),
    p90_ms: r3(percentile(samples, 90)),
    p99_ms: r3(percentile(samples, 99)),
    peak_rss_mb: r3(process.resourceUsage().maxRSS / 1024),
  }) + '\n');
  if (session.release) await session.release();
}

main().catch((e) => { process.stderr.write('ort_bench: ' + (e && e.stack || e) + '\n'); process.exit(1); });
