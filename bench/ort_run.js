#!/usr/bin/env node
'use strict';
// Run one ONNX model in ONNX Runtime (CPU) on a float32 .npy input and write
// the first output as float32 .npy — a reference output for dermal's tests.
//
//   node bench/ort_run.js MODEL.onnx INPUT.npy OUTPUT.npy [--threads N] [--opt all|disable]
//
// The input is fed to the model's first input; the output is the model's first
// output (or --output NAME). Prints one JSON line with shapes and timing.
const path = require('path');
const { readNpy, writeNpy } = require('./npy');

function usage(msg) {
  if (msg) process.stderr.write('ort_run: ' + msg + '\n');
  process.stderr.write('usage: node ort_run.js MODEL.onnx INPUT.npy OUTPUT.npy [--threads N] [--opt all|basic|extended|disabled] [--output NAME]\n');
  process.exit(2);
}

async function main() {
  const pos = [];
  const opts = { threads: 1, opt: 'all', output: null };
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--threads') opts.threads = Number(argv[++i]);
    else if (a === '--opt') opts.opt = argv[++i];
    else if (a === '--output') opts.output = argv[++i];
    else if (a === '-h' || a === '--help') usage();
    else if (a.startsWith('--')) usage('unknown option ' + a);
    else pos.push(a);
  }
  if (pos.length !== 3) usage('need MODEL INPUT OUTPUT');
  if (!(opts.threads >= 1)) usage('--threads must be >= 1');
  const [modelPath, inPath, outPath] = pos;

  const ort = require('onnxruntime-node');
  const session = await ort.InferenceSession.create(path.resolve(modelPath), {
    executionProviders: ['cpu'],
    intraOpNumThreads: opts.threads,
    interOpNumThreads: 1,
    graphOptimizationLevel: opts.opt,
    executionMode: 'sequential',
  });
  const inp = readNpy(inPath);
  const feeds = {};
  feeds[session.inputNames[0]] = new ort.Tensor('float32', inp.data, inp.shape);
  const outName = opts.output || session.outputNames[0];
  const t0 = process.hrtime.bigint();
  const res = await session.run(feeds, [outName]);
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  const out = res[outName];
  if (out.type !== 'float32') throw new Error('output ' + outName + ' is ' + out.type + ', not float32');
  writeNpy(outPath, out.dims.map(Number), out.data);
  process.stdout.write(JSON.stringify({
    runtime: 'onnxruntime', version: ort.env.versions && ort.env.versions.node,
    model: modelPath, input: session.inputNames[0], input_shape: inp.shape,
    output: outName, output_shape: out.dims.map(Number), run_ms: +ms.toFixed(3),
  }) + '\n');
  if (session.release) await session.release();
}

main().catch((e) => { process.stderr.write('ort_run: ' + (e && e.stack || e) + '\n'); process.exit(1); });
