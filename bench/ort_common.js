'use strict';
// What ort_bench.js and ort_profile.js share, so that both measure the same
// thing: the session options and the input.

// CPU only, intraOpNumThreads = threads, interOpNumThreads = 1, graph
// optimisation 'all', sequential execution; `extra` adds options.
function sessionOptions(threads, extra) {
  return Object.assign({
    executionProviders: ['cpu'],
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
    executionMode: 'sequential',
  }, extra || {});
}

// Feeds for the session's first input: its shape (dynamic dims taken as
// 1x3x224x224), uniform(-1, 1) floats from a fixed LCG.
function randomFeeds(ort, session) {
  const dflt = [1, 3, 224, 224];
  let shape = dflt;
  const meta = session.inputMetadata && session.inputMetadata[0];
  if (meta && Array.isArray(meta.shape) && meta.shape.length > 0)
    shape = meta.shape.map((d, i) => (typeof d === 'number' && d > 0 ? d : (dflt[i] || 1)));
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  let s = 12345;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    data[i] = (s / 4294967296) * 2 - 1;
  }
  return { [session.inputNames[0]]: new ort.Tensor('float32', data, shape) };
}

module.exports = { sessionOptions, randomFeeds };
