// Glimpse3D result viewer: a Gaussian splat (gaussian-splats-3d on three.js), a toggle to the GLB mesh, orbit/zoom.
//
// World frame as in glimpse3d_core: right-handed, +Z up, object at the origin. The camera is given as a position,
// a look-at point and a vertical field of view in degrees (the Python side converts its OpenCV rig to this).
// A splat file written in another frame (export.up, SPZ's RUB) comes with splat.rotation, the quaternion
// [x, y, z, w] that turns it into the world frame.
// Progress is published on document.body.dataset: state = "loading" | "ready" | "error", error = message.
import * as THREE from 'three';
import * as GaussianSplats3D from '@mkkellogg/gaussian-splats-3d';
import { GLTFLoader } from 'three/examples/jsm/loaders/GLTFLoader.js';

const FORMATS = {
  splat: GaussianSplats3D.SceneFormat.Splat,
  ply: GaussianSplats3D.SceneFormat.Ply,
  ksplat: GaussianSplats3D.SceneFormat.KSplat,
  spz: GaussianSplats3D.SceneFormat.Spz,
};

function setState(state, error) {
  document.body.dataset.state = state;
  if (error) document.body.dataset.error = String(error);
}

function makeCamera(root, cam) {
  const aspect = root.clientWidth / Math.max(root.clientHeight, 1);
  const camera = new THREE.PerspectiveCamera(cam.fovYDeg, aspect, cam.near ?? 0.01, cam.far ?? 100);
  camera.position.fromArray(cam.position);
  camera.up.fromArray(cam.up ?? [0, 0, 1]);
  camera.lookAt(new THREE.Vector3().fromArray(cam.lookAt ?? [0, 0, 0]));
  return camera;
}

async function loadMesh(url) {
  const gltf = await new GLTFLoader().loadAsync(url);
  const scene = new THREE.Scene();
  // glTF is +Y up; our world is +Z up: turn the model back.
  gltf.scene.rotation.x = Math.PI / 2;
  // Our meshes carry baked vertex colours: show them as diffuse albedo (a metallic default would render black).
  gltf.scene.traverse((node) => {
    if (node.isMesh && node.material) {
      node.material.metalness = 0;
      node.material.roughness = 1;
    }
  });
  scene.add(gltf.scene);
  scene.add(new THREE.HemisphereLight(0xffffff, 0x444444, 2.5));
  return scene;
}

function addMeshToggle(root, viewer, meshScene) {
  const button = document.createElement('button');
  button.id = 'toggle-mesh';
  button.textContent = 'Show mesh';
  button.className = 'g3d-toggle';
  button.addEventListener('click', () => {
    const showMesh = !meshScene.visible;
    meshScene.visible = showMesh;
    viewer.getSplatMesh().visible = !showMesh;
    button.textContent = showMesh ? 'Show splat' : 'Show mesh';
    viewer.forceRenderNextFrame();
  });
  root.appendChild(button);
}

/**
 * Load the splat into the viewer. SuperSplat's compressed PLY ("ply_compressed") is read whole and decoded by
 * the package's PlyLoader.loadFromFileData: its streaming PLY path decodes no Gaussian of a compressed file.
 */
async function addSplat(viewer, splat) {
  const options = { splatAlphaRemovalThreshold: 1, rotation: splat.rotation ?? [0, 0, 0, 1] };
  if (splat.format === 'ply_compressed') {
    const response = await fetch(splat.url);
    if (!response.ok) throw new Error(`${splat.url}: HTTP ${response.status}`);
    const buffer = await GaussianSplats3D.PlyLoader.loadFromFileData(
      await response.arrayBuffer(), options.splatAlphaRemovalThreshold, 0, true, splat.shDegree ?? 0);
    await viewer.addSplatBuffers([buffer], [options], true, false, false);
    return;
  }
  await viewer.addSplatScene(splat.url, {
    ...options, format: FORMATS[splat.format ?? 'splat'], showLoadingUI: false, progressiveLoad: false,
  });
}

/**
 * Mount a viewer in `root`.
 * config = { splat: {url, format: "splat"|"ply"|"ply_compressed"|"ksplat"|"spz", rotation?: [x, y, z, w]}, mesh?: {url},
 *            camera: {position, lookAt, up, fovYDeg},
 *            ignoreDevicePixelRatio?: bool }
 */
export async function mount(root, config) {
  setState('loading');
  try {
    const camera = makeCamera(root, config.camera);
    const meshScene = config.mesh ? await loadMesh(config.mesh.url) : null;
    if (meshScene) meshScene.visible = false;
    const viewer = new GaussianSplats3D.Viewer({
      rootElement: root,
      camera,
      threeScene: meshScene ?? undefined,
      initialCameraLookAt: config.camera.lookAt ?? [0, 0, 0],
      cameraUp: config.camera.up ?? [0, 0, 1],
      sharedMemoryForWorkers: false, // works from file:// and without cross-origin isolation headers
      gpuAcceleratedSort: false,
      ignoreDevicePixelRatio: Boolean(config.ignoreDevicePixelRatio),
      sphericalHarmonicsDegree: config.splat.shDegree ?? 0,
      sceneRevealMode: GaussianSplats3D.SceneRevealMode.Instant,
      logLevel: GaussianSplats3D.LogLevel.None,
    });
    await addSplat(viewer, config.splat);
    viewer.start();
    if (meshScene) addMeshToggle(root, viewer, meshScene);
    window.glimpse3dViewer = viewer;
    // Let a few frames render (and the worker sort finish) before saying the view is ready.
    let frames = 0;
    await new Promise((resolve) => {
      const tick = () => (++frames >= 30 ? resolve() : requestAnimationFrame(tick));
      requestAnimationFrame(tick);
    });
    setState('ready');
    return viewer;
  } catch (err) {
    console.error(err);
    setState('error', err && err.message ? err.message : err);
    throw err;
  }
}

/** Turn base64 text embedded in the page into a blob: URL the splat loader can fetch (used by viewer.html). */
export function blobUrlFromBase64(base64, mime = 'application/octet-stream') {
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  return URL.createObjectURL(new Blob([bytes], { type: mime }));
}
