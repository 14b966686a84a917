/**
 * `npm run bench -- <benchmark> [flags]`:
 *
 *   npm run bench -- compare --tasks 5000 --systems bullmq,memory,kafka,rocketmq   (bench/compare.ts)
 *   npm run bench -- e2e --broker kafka --tasks 2000                               (bench/e2e.ts)
 *
 * Without a benchmark name the flags go to e2e, as before `compare` existed.
 */
const [name] = process.argv.slice(2);
const known = { compare: () => import('./compare.ts'), e2e: () => import('./e2e.ts') };

if (name === undefined || name.startsWith('-')) {
  await known.e2e();
} else if (name === 'compare' || name === 'e2e') {
  // Each benchmark parses process.argv itself: drop the benchmark's name.
  process.argv.splice(2, 1);
  await known[name]();
} else {
  process.stderr.write(`unknown benchmark ${name}: npm run bench -- compare|e2e [flags] (see bench/README.md)\n`);
  process.exit(1);
}
