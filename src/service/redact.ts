/**
 * The one credential redactor: whatever may reach a log line, an MQTT message, a status reason or an error goes
 * through here. URLs keep the user and show `user:***@`; a bare userinfo (`https://TOKEN@host`) becomes `***@`;
 * secret-looking query parameters (`?token=`, `access_token`, `api_key`, `key`, `password`, `auth`, `sig`…) keep
 * their name and lose their value. `redactor` also removes given secrets verbatim (a dying ffmpeg's stderr repeats
 * the password it was given, decoded).
 */

export const MASK = "***";

// scheme://user:password@host — keeps the user, masks the password (which may contain ':' or an unencoded '@').
const URL_PASSWORD = /([a-z][a-z0-9+.-]*:\/\/[^\s/?#@:]*:)[^\s/?#]*@/gi;
// scheme://token@host (no user part): a bare userinfo is a credential for RTSP/HTTP cameras too.
const URL_USERINFO_ONLY = /([a-z][a-z0-9+.-]*:\/\/)[^\s/?#@:]+@/gi;
const QUERY_SECRET = /([?&;](?:[a-z0-9_-]*(?:pass(?:word|wd)?|secret|token|api[-_]?key|auth|sig|signature|key))=)[^&#\s"']*/gi;

/** Masks credentials in a text: URL passwords and bare userinfo, secret query parameters. */
export function maskSecrets(text: string): string {
  if (text.indexOf("://") < 0 && text.indexOf("=") < 0) return text;
  return text
    .replace(URL_PASSWORD, `$1${MASK}@`)
    .replace(URL_USERINFO_ONLY, (match, scheme: string) => (match.includes(MASK) ? match : `${scheme}${MASK}@`))
    .replace(QUERY_SECRET, `$1${MASK}`);
}

/** `rtsp://admin:secret@cam/stream` → `rtsp://admin:***@cam/stream`; a URL without credentials is unchanged. */
export function maskUrl(url: string): string {
  return maskSecrets(url);
}

/** Builds a function that removes the given secrets (raw and URL-encoded) and any URL credential from text. */
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
    let out = maskSecrets(text);
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
