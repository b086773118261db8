// Decodes an .spz file with the viewer's own npm package (gaussian-splats-3d's SpzLoader), an SPZ reader
// independent of glimpse3d_core.io.spz:   node web/decode-spz.mjs FILE
// Prints one JSON object: count, and per Gaussian (file order) centers [x,y,z], scales [sx,sy,sz] (linear),
// rotations [w,x,y,z] (unit) and colors [r,g,b,a] (0..255, a = opacity).
import { readFile } from 'node:fs/promises';
import * as THREE from 'three';
import { SpzLoader } from '@mkkellogg/gaussian-splats-3d';

globalThis.window ??= globalThis; // the loader schedules work with window.setTimeout
// a Uint8Array (the browser passes an ArrayBuffer; Node's DecompressionStream takes only views)
const data = new Uint8Array(await readFile(process.argv[2]));
// optimizeSplatData = false keeps the file's order and full float precision
const buffer = await SpzLoader.loadFromFileData(data, 0, 0, false, 0);
const count = buffer.getSplatCount();
const out = { count, centers: [], scales: [], rotations: [], colors: [] };
const center = new THREE.Vector3();
const scale = new THREE.Vector3();
const rotation = new THREE.Quaternion();
const color = new THREE.Vector4();
for (let i = 0; i < count; i++) {
  buffer.getSplatCenter(i, center);
  buffer.getSplatScaleAndRotation(i, scale, rotation);
  buffer.getSplatColor(i, color);
  out.centers.push(center.toArray());
  out.scales.push(scale.toArray());
  out.rotations.push([rotation.w, rotation.x, rotation.y, rotation.z]);
  out.colors.push(color.toArray());
}
console.log(JSON.stringify(out));
