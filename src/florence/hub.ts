/**
 * Downloads a model folder from the Hugging Face hub (onnx-community layout) into a local cache.
 * Offline, it fails with a message that says how to provide a model folder instead.
 */
import { mkdir, rename, rm, stat, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { FlorenceError } from "../errors.ts";
import type { Precision } from "./model_files.ts";

export const DEFAULT_HUB_MODEL = "onnx-community/Florence-2-base-ft";

export interface HubOptions {
  cacheDir: string;
  revision?: string;
  precision?: Precision;
  token?: string;
  endpoint?: string;
  /** Progress lines (one per file). */
  log?: (line: string) => void;
  fetchImpl?: typeof fetch;
}

const REQUIRED = ["config.json", "tokenizer.json"];
const OPTIONAL = ["generation_config.json", "preprocessor_config.json", "processor_config.json", "tokenizer_config.json", "special_tokens_map.json"];
const GRAPHS = ["vision_encoder", "embed_tokens", "encoder_model", "decoder_model_merged"];

export function isHubId(value: string): boolean {
  return /^[A-Za-z0-9][\w.-]*\/[\w.-]+$/.test(value) && !value.startsWith(".") && !value.includes("..");
}

async function exists(path: string): Promise<boolean> {
  try {
    return (await stat(path)).size > 0;
  } catch {
    return false;
  }
}

/** Returns the local folder for `modelId`, downloading missing files. */
export async function downloadModel(modelId: string, options: HubOptions): Promise<string> {
  if (!isHubId(modelId)) {
    throw new FlorenceError("INVALID_ARGUMENT", `not a hub model id: ${JSON.stringify(modelId)}`, { fix: "use the form org/name, e.g. onnx-community/Florence-2-base-ft, or a local folder" });
  }
  const revision = options.revision ?? "main";
  const endpoint = (options.endpoint ?? "https://huggingface.co").replace(/\/$/, "");
  const folder = join(options.cacheDir, `${modelId.replace("/", "--")}`, revision);
  const suffix = !options.precision || options.precision === "fp32" ? "" : `_${options.precision}`;
  const files = [...REQUIRED.map((f) => ({ f, required: true })), ...OPTIONAL.map((f) => ({ f, required: false })), ...GRAPHS.map((g) => ({ f: `onnx/${g}${suffix}.onnx`, required: true }))];
  const doFetch = options.fetchImpl ?? fetch;
  for (const { f, required } of files) {
    const target = join(folder, f);
    if (await exists(target)) continue;
    const url = `${endpoint}/${modelId}/resolve/${encodeURIComponent(revision)}/${f}`;
    options.log?.(`downloading ${url}`);
    let response: Response;
    try {
      response = await doFetch(url, { headers: options.token ? { authorization: `Bearer ${options.token}` } : {}, redirect: "follow" });
    } catch (cause) {
      throw new FlorenceError("MODEL_DOWNLOAD_FAILED", `cannot reach the Hugging Face hub for ${modelId} (${url}): ${(cause as Error).message}`, {
        fix: `this machine looks offline: on a connected machine run \`huggingface-cli download ${modelId} --local-dir ${modelId.split("/")[1]}\` (or git clone https://huggingface.co/${modelId}), copy the folder here and pass --model /path/to/that/folder`,
        cause,
      });
    }
    if (response.status === 404 && !required) continue;
    if (!response.ok) {
      throw new FlorenceError("MODEL_DOWNLOAD_FAILED", `hub answered HTTP ${response.status} for ${url}`, {
        fix: response.status === 401 || response.status === 403 ? "the model is gated or private: set HF_TOKEN" : `check the model id, revision and precision (${options.precision ?? "fp32"})`,
      });
    }
    const body = new Uint8Array(await response.arrayBuffer());
    await mkdir(dirname(target), { recursive: true });
    const partial = `${target}.partial`;
    try {
      await writeFile(partial, body);
      await rename(partial, target); // never leave a half-written file under the final name
    } catch (cause) {
      await rm(partial, { force: true });
      throw new FlorenceError("MODEL_DOWNLOAD_FAILED", `cannot write ${target}: ${(cause as Error).message}`, { fix: "check free disk space and permissions of the cache folder", cause });
    }
  }
  return folder;
}
