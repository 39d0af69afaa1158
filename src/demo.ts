/**
 * What `npm start` runs until the camera service lands: the bundled tiny model on the bundled images, several tasks
 * per image on one vision pass, printing what it finds. Shows the whole pipeline with no set-up.
 */
import { readdir } from "node:fs/promises";
import process from "node:process";
import { readEnvironment } from "./config.ts";
import { loadFlorence } from "./mod.ts";

import { bundledModelDir } from "./paths.ts";

export async function runDemo(_argv: string[]): Promise<number> {
  const modelDir = bundledModelDir();
  const imagesDir = `${modelDir}/reference/images`;
  const model = await loadFlorence(modelDir, { env: readEnvironment(), backend: "auto", log: (l) => process.stdout.write(`${l}\n`) });
  try {
    process.stdout.write(`model: ${modelDir} (tiny random weights: the output is token soup, the pipeline is real)\n`);
    const images = (await readdir(imagesDir)).filter((f) => /\.(jpe?g|png)$/i.test(f)).sort().slice(0, 3);
    for (const name of images) {
      const results = await model.infer(`${imagesDir}/${name}`, [{ task: "<OD>" }, { task: "<CAPTION>" }], { maxNewTokens: 16, postprocess: { scores: true } });
      for (const r of results) {
        process.stdout.write(`${name} ${r.task} ${r.timings_ms.total_ms.toFixed(1)} ms ${JSON.stringify(r.result)}\n`);
      }
    }
  } finally {
    await model.dispose();
    await model.engine.dispose();
  }
  return 0;
}
