// Validates glTF/GLB files with the Khronos glTF validator (npm gltf-validator):
//   node web/validate-gltf.mjs FILE...
// Prints one JSON line per file ({file, errors, warnings, infos, messages}) and exits 1 when any file has errors.
import { readFile } from 'node:fs/promises';
import validator from 'gltf-validator';

let failed = false;
for (const file of process.argv.slice(2)) {
  const report = await validator.validateBytes(new Uint8Array(await readFile(file)), {
    maxIssues: 50,
    externalResourceFunction: (uri) => Promise.reject(new Error(`external resource ${uri} not allowed`)),
  });
  const { numErrors: errors, numWarnings: warnings, numInfos: infos, messages } = report.issues;
  failed ||= errors > 0;
  console.log(JSON.stringify({ file, errors, warnings, infos, messages }));
}
process.exit(failed ? 1 : 0);
