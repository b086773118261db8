// Bundles src/viewer.js (three.js + gaussian-splats-3d from the pinned npm dependencies) into one IIFE script,
// written into the Python package's static assets (git-ignored; rebuilt by `make viewer`).
import { build } from 'esbuild';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));
await build({
  entryPoints: [path.join(here, 'src/viewer.js')],
  outfile: path.join(here, '../glimpse3d_core/viewer/static/glimpse3d-viewer.js'),
  bundle: true,
  format: 'iife',
  globalName: 'Glimpse3DViewer',
  minify: true,
  legalComments: 'eof',
  target: ['es2020'],
  logLevel: 'info',
});
