// Copies the dashboard's JavaScript libraries from node_modules (installed by `npm ci` from the npm
// registry, pinned in package-lock.json) into dashboard/front/static/vendor/, where Django's
// collectstatic finds them. Runs as npm's postinstall; the copies are not committed (dashboard/.gitignore).
import { copyFileSync, existsSync, mkdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const out = join(root, "dashboard", "front", "static", "vendor");
const FILES = {
  "wavesurfer.js/dist/wavesurfer.min.js": "wavesurfer/wavesurfer.min.js",
  "wavesurfer.js/dist/plugins/timeline.min.js": "wavesurfer/plugins/timeline.min.js",
  "wavesurfer.js/dist/plugins/spectrogram.min.js": "wavesurfer/plugins/spectrogram.min.js",
  "wavesurfer.js/dist/plugins/zoom.min.js": "wavesurfer/plugins/zoom.min.js",
  "wavesurfer.js/LICENSE": "wavesurfer/LICENSE",
};

rmSync(out, { recursive: true, force: true });
for (const [from, to] of Object.entries(FILES)) {
  const source = join(root, "node_modules", from);
  if (!existsSync(source)) {
    console.error(`vendor_static: ${source} is missing; run \`npm ci\` first`);
    process.exit(1);
  }
  mkdirSync(dirname(join(out, to)), { recursive: true });
  copyFileSync(source, join(out, to));
}
console.log(`vendor_static: copied ${Object.keys(FILES).length} files to ${out}`);
