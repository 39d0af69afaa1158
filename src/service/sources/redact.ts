/**
 * Keeps camera passwords out of descriptions, status reasons and logs: URLs show `user:***@`, and any text
 * (a dying ffmpeg's stderr repeats the URL it was given) has the password replaced.
 */

const MASK = "***";

/** `rtsp://admin:secret@cam/stream` → `rtsp://admin:***@cam/stream`; a URL without a password is unchanged. */
export function maskUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password === "") return url;
    parsed.password = MASK;
    return parsed.toString();
  } catch {
    return maskUserInfo(url);
  }
}

/** Masks every `scheme://user:password@` in free text. */
function maskUserInfo(text: string): string {
  return text.replace(/([a-z][a-z0-9+.-]*:\/\/[^\s:/@]*):[^\s@/]*@/gi, `$1:${MASK}@`);
}

/** Builds a function that removes the given secrets (raw and URL-encoded) and any URL password from text. */
export function redactor(secrets: readonly (string | undefined)[]): (text: string) => string {
  const needles = new Set<string>();
  for (const secret of secrets) {
    // Very short secrets would mangle ordinary words; the URL pattern still masks them in URLs.
    if (!secret || secret.length < 3) continue;
    needles.add(secret);
    needles.add(encodeURIComponent(secret));
  }
  const sorted = [...needles].sort((a, b) => b.length - a.length);
  return (text) => {
    let out = maskUserInfo(text);
    for (const needle of sorted) out = out.split(needle).join(MASK);
    return out;
  };
}

/** The password of a URL, decoded, if it has one. */
export function urlPassword(url: string): string | undefined {
  try {
    const parsed = new URL(url);
    return parsed.password === "" ? undefined : decodeURIComponent(parsed.password);
  } catch {
    return undefined;
  }
}
