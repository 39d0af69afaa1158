/**
 * Images arriving over HTTP, checked before they may wait for the model: a data URL's base64 is validated strictly
 * (not skipped over, as Buffer's decoder would), the image's header is read without decoding it (so a decompression
 * bomb costs a header read to refuse), and its pixels are bounded. Remote http(s) URLs are fetched only when the
 * config allows it, never from loopback, private or link-local addresses unless that too is allowed — the address is
 * checked where the connection is made, so a DNS answer that changes between check and connect cannot slip past —
 * without redirects, within a time and a size limit.
 */
import { lookup as dnsLookup } from "node:dns";
import { request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";
import { BlockList, isIP, type LookupFunction } from "node:net";
import { Buffer } from "node:buffer";
import { isFlorenceError } from "../../errors.ts";
import { probeImage } from "../../florence/image.ts";
import { maskUrl } from "../redact.ts";
import { badRequest, HttpError } from "./http_errors.ts";

export interface ImageLimits {
  maxPixels: number;
  /** Largest image file accepted (a remote image's download stops here). */
  maxBytes: number;
  remoteImages: boolean;
  privateAddresses: boolean;
  /** A remote image must arrive within this. */
  fetchTimeoutMs: number;
}

/** An image checked to be one, within the limits; `bytes` go to the model as they are. */
export interface InputImage {
  bytes: Uint8Array;
  width: number;
  height: number;
  format: string;
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
const BASE64_URL = /^[A-Za-z0-9_-]*={0,2}$/;

/** The bytes of base64 text, refusing anything that is not base64 (with where the first bad character is). */
export function decodeBase64(text: string, param: string): Uint8Array {
  const compact = text.replace(/[\r\n\t ]+/g, "");
  if (compact.length === 0) throw badRequest(param, "the base64 image data is empty", "send the image file's bytes, base64-encoded");
  if (!BASE64.test(compact) && !BASE64_URL.test(compact)) {
    const at = compact.search(/[^A-Za-z0-9+/=_-]|=(?=[^=])/);
    const where = at >= 0 ? ` (${JSON.stringify(compact[at])} at character ${at})` : "";
    throw badRequest(param, `the base64 image data is malformed${where}`, "send the image file's bytes, base64-encoded (RFC 4648)");
  }
  if (compact.replace(/=+$/, "").length % 4 === 1) throw badRequest(param, "the base64 image data is truncated (its length is not possible for base64)", "send the whole image");
  const bytes = Buffer.from(compact, BASE64.test(compact) ? "base64" : "base64url");
  return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length);
}

/** `data:image/jpeg;base64,…` → the image's bytes. */
export function decodeDataUrl(url: string, param: string): Uint8Array {
  const comma = url.indexOf(",");
  const header = comma < 0 ? url : url.slice(0, comma);
  if (comma < 0 || !/^data:[\w.+-]+\/[\w.+-]+(;[\w-]+=[\w.-]+)*;base64$/i.test(header)) {
    throw badRequest(param, `${JSON.stringify(header.slice(0, 60))} is not a base64 data URL`, 'send "data:image/jpeg;base64,<the file base64-encoded>"');
  }
  return decodeBase64(url.slice(comma + 1), param);
}

/** Reads the header of `bytes` and refuses what is not an image or has too many pixels. */
export async function checkImage(bytes: Uint8Array, param: string, limits: Pick<ImageLimits, "maxPixels" | "maxBytes">): Promise<InputImage> {
  if (bytes.length > limits.maxBytes) throw new HttpError(413, "image_too_large", `${param}: the image is ${bytes.length} bytes, more than the limit of ${limits.maxBytes}`, { param, fix: "send a smaller image (or raise http.max_body_bytes)" });
  let header;
  try {
    header = await probeImage(bytes);
  } catch (error) {
    if (isFlorenceError(error, "IMAGE_UNREADABLE")) throw badRequest(param, `not an image: ${error.message.replace(/ — .*$/, "")}`, "send a complete JPEG, PNG, WebP, GIF or TIFF file");
    throw error;
  }
  const pixels = header.width * header.height;
  if (pixels > limits.maxPixels) {
    throw new HttpError(413, "image_too_large", `${param}: the image is ${header.width}x${header.height} (${pixels} pixels), more than the limit of ${limits.maxPixels}`, { param, fix: "downscale it first (the model sees 768x768), or raise http.max_pixels" });
  }
  return { bytes, width: header.width, height: header.height, format: header.format };
}

// where a remote image may not come from unless http.private_addresses allows it
const PRIVATE = new BlockList();
for (const [net, bits] of [["0.0.0.0", 8], ["10.0.0.0", 8], ["100.64.0.0", 10], ["127.0.0.0", 8], ["169.254.0.0", 16], ["172.16.0.0", 12], ["192.0.0.0", 24], ["192.168.0.0", 16], ["198.18.0.0", 15], ["224.0.0.0", 3]] as const) PRIVATE.addSubnet(net, bits, "ipv4");
for (const [net, bits] of [["::", 127], ["fc00::", 7], ["fe80::", 10], ["ff00::", 8], ["64:ff9b::", 96]] as const) PRIVATE.addSubnet(net, bits, "ipv6");

/** Whether an IP address is loopback, private, link-local, multicast or otherwise not a public host. */
export function isPrivateAddress(address: string): boolean {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return PRIVATE.check(mapped[1]!, "ipv4");
  const family = isIP(address);
  if (family === 0) return true; // not an address: never connect to it
  return PRIVATE.check(address, family === 4 ? "ipv4" : "ipv6");
}

function refusedAddress(param: string, url: string, address: string): HttpError {
  return badRequest(param, `${maskUrl(url)} resolves to ${address}, a loopback, private or link-local address`, "fetch the image yourself and send it as a data URL, or set http.private_addresses: true");
}

/** Downloads an image URL within the limits; no redirects. */
export async function fetchImage(url: string, param: string, limits: ImageLimits, signal?: AbortSignal): Promise<Uint8Array> {
  if (!limits.remoteImages) throw badRequest(param, "image URLs are off here", 'send the image inline as "data:image/jpeg;base64,…", or set http.remote_images: true');
  let target: URL;
  try {
    target = new URL(url);
  } catch {
    throw badRequest(param, `${JSON.stringify(maskUrl(url).slice(0, 80))} is not a URL`, "send a data URL or an http(s) URL");
  }
  const host = target.hostname.replace(/^\[|\]$/g, "");
  if (!limits.privateAddresses && isIP(host) !== 0 && isPrivateAddress(host)) throw refusedAddress(param, url, host);
  const lookup: LookupFunction = (hostname, options, callback) => {
    dnsLookup(hostname, { ...options, all: true }, (error, addresses) => {
      if (error) return callback(error, "", 4);
      const list = addresses as unknown as { address: string; family: number }[];
      const bad = limits.privateAddresses ? undefined : list.find((a) => isPrivateAddress(a.address));
      if (bad) return callback(refusedAddress(param, url, bad.address), "", 4);
      if ((options as { all?: boolean }).all) return (callback as unknown as (e: null, a: unknown) => void)(null, list);
      callback(null, list[0]!.address, list[0]!.family);
    });
  };
  const send = target.protocol === "https:" ? httpsRequest : httpRequest;
  return new Promise<Uint8Array>((resolve, reject) => {
    const failed = (message: string, fix: string) => reject(badRequest(param, `fetching ${maskUrl(url)} failed: ${message}`, fix));
    const req = send(target, { lookup, timeout: limits.fetchTimeoutMs, headers: { accept: "image/*" }, ...(signal ? { signal } : {}) }, (res) => {
      const status = res.statusCode ?? 0;
      if (status < 200 || status >= 300) {
        res.resume();
        return failed(status >= 300 && status < 400 ? `it redirects (${status}), and redirects are not followed` : `it answered ${status}`, "send an image URL that answers 200, or a data URL");
      }
      const chunks: Buffer[] = [];
      let size = 0;
      res.on("data", (chunk: Buffer) => {
        size += chunk.length;
        if (size > limits.maxBytes) {
          req.destroy();
          reject(new HttpError(413, "image_too_large", `${param}: the image at ${maskUrl(url)} is more than ${limits.maxBytes} bytes`, { param, fix: "send a smaller image" }));
        } else chunks.push(chunk);
      });
      res.on("end", () => {
        const all = Buffer.concat(chunks);
        resolve(new Uint8Array(all.buffer, all.byteOffset, all.length));
      });
      res.on("error", (error) => failed(error.message, "check the URL"));
    });
    req.on("timeout", () => {
      req.destroy();
      failed(`no answer within ${limits.fetchTimeoutMs} ms`, "send the image as a data URL");
    });
    req.on("error", (error) => (error instanceof HttpError ? reject(error) : failed(error.message, "check the URL and that this machine can reach it")));
    req.end();
  });
}

/** A data URL or (when allowed) an http(s) URL, checked as an image within the limits. */
export async function loadImageUrl(url: unknown, param: string, limits: ImageLimits, signal?: AbortSignal): Promise<InputImage> {
  if (typeof url !== "string" || url.length === 0) throw badRequest(param, "must be a data URL or an http(s) URL string", 'e.g. "data:image/jpeg;base64,/9j/4AAQ…"');
  if (/^data:/i.test(url)) return checkImage(decodeDataUrl(url, param), param, limits);
  if (/^https?:\/\//i.test(url)) return checkImage(await fetchImage(url, param, limits, signal), param, limits);
  throw badRequest(param, `${JSON.stringify(maskUrl(url).slice(0, 40))} is neither a data URL nor an http(s) URL`, 'send "data:image/jpeg;base64,…"');
}
