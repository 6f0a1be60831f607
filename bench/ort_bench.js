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
const { sessionOptions, randomFeeds } = require('./ort_common');

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
  const session = await ort.InferenceSession.create(path.resolve(model), sessionOptions(opts.threads));
  const loadMs = nowMs() - t0;

  const feeds = randomFeeds(ort, session);

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
