/** The engine folder on disk: its manifest, whether an engine is up to date, and replacing it whole or not at all. */
import { existsSync } from "node:fs";
import { copyFile, readdir, readFile, rename, rm } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import process from "node:process";
import { type BuildMode, type EngineEntry, type EngineManifest, MANIFEST_SCHEMA } from "../engine/tensorrt/manifest.ts";
import { sha256File } from "./graphs.ts";
import type { PreparedGraph } from "./prepare.ts";

export async function readPreviousManifest(path: string): Promise<EngineManifest | undefined> {
  try {
    const value = JSON.parse(await readFile(path, "utf8")) as EngineManifest;
    return value.schema === MANIFEST_SCHEMA ? value : undefined;
  } catch {
    return undefined;
  }
}

export async function isUpToDate(entry: EngineEntry | undefined, prepared: PreparedGraph, engineDir: string, mode: BuildMode, manifest: EngineManifest | undefined): Promise<boolean> {
  if (!entry || !manifest || manifest.mode !== mode) return false;
  if (entry.onnxSha256 !== prepared.onnxSha256 || JSON.stringify(entry.flags) !== JSON.stringify(prepared.flags)) return false;
  const plan = join(engineDir, entry.plan);
  if (!existsSync(plan)) return false;
  return (await sha256File(plan)) === entry.planSha256;
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Removes temporary folders left by builds that died (their process is gone). */
export async function removeStaleTemporaries(modelOut: string, dirName: string): Promise<void> {
  let names: string[];
  try {
    names = await readdir(modelOut);
  } catch {
    return;
  }
  for (const name of names) {
    const m = new RegExp(`^\\.${dirName.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}\\.(?:partial|previous)-(\\d+)-`).exec(name);
    if (m && !processAlive(Number(m[1]))) await rm(join(modelOut, name), { recursive: true, force: true });
  }
}

export async function replaceAtomically(tempDir: string, finalDir: string): Promise<void> {
  const previous = join(dirname(finalDir), `.${basename(finalDir)}.previous-${process.pid}-${Date.now()}`);
  const hadPrevious = existsSync(finalDir);
  if (hadPrevious) await rename(finalDir, previous);
  try {
    await rename(tempDir, finalDir);
  } catch (error) {
    if (hadPrevious) await rename(previous, finalDir).catch(() => undefined);
    throw error;
  }
  if (hadPrevious) await rm(previous, { recursive: true, force: true });
}

export async function replaceFile(source: string, target: string): Promise<void> {
  const temp = `${target}.tmp-${process.pid}`;
  await copyFile(source, temp);
  await rename(temp, target);
}
