/**
 * The one credential redactor (src/service/redact.ts), over every way a camera or broker URL carries a secret:
 * rtsp/http/mqtt user-info, a bare token as user-info, and secret query parameters.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { maskSecrets, maskUrl, redactor, urlPassword } from "../../src/service/redact.ts";

const USERINFO: [string, string][] = [
  ["rtsp://admin:hunter22@10.0.0.5:554/Streaming/Channels/101", "rtsp://admin:***@10.0.0.5:554/Streaming/Channels/101"],
  ["rtsps://admin:p@ss:w0rd@cam/s", "rtsps://admin:***@cam/s"],
  ["http://u:topsecret@cam/snap.jpg", "http://u:***@cam/snap.jpg"],
  ["https://ghp_T0KEN@github.com/x", "https://***@github.com/x"],
  ["mqtt://svc:pw@broker:1883", "mqtt://svc:***@broker:1883"],
  ["mqtts://svc:pw@broker:8883", "mqtts://svc:***@broker:8883"],
  ["ws://svc:pw@broker/mqtt", "ws://svc:***@broker/mqtt"],
  ["rtsp://10.0.0.5/s", "rtsp://10.0.0.5/s"],
  ["mqtt://broker:1883", "mqtt://broker:1883"],
];

test("URL user-info: the password goes, the user stays; a bare token goes entirely", () => {
  for (const [url, masked] of USERINFO) {
    assert.is(maskUrl(url), masked, url);
    assert.is(maskSecrets(`cannot open ${url}: refused`), `cannot open ${masked}: refused`, `${url} in text`);
  }
});

test("secret query parameters keep their name and lose their value", () => {
  for (const name of ["token", "access_token", "api_key", "apikey", "api-key", "key", "password", "passwd", "auth", "sig", "signature", "secret", "client_secret"]) {
    assert.is(maskUrl(`http://cam/snap.jpg?${name}=s3cr3t&channel=1`), `http://cam/snap.jpg?${name}=***&channel=1`, name);
    assert.is(maskUrl(`https://cam/a?x=1&${name}=s3cr3t`), `https://cam/a?x=1&${name}=***`, name);
  }
  assert.is(maskUrl("rtsp://cam/stream?channel=1&subtype=0"), "rtsp://cam/stream?channel=1&subtype=0", "ordinary parameters stay");
  assert.is(maskUrl("rtsp://admin:pw@cam/s?token=abc"), "rtsp://admin:***@cam/s?token=***", "both at once");
});

test("redactor: given secrets go too, raw and URL-encoded; short ones only inside URLs", () => {
  const redact = redactor(["p@ss/word", undefined, "ab"]);
  assert.is(redact("rtsp://admin:p%40ss%2Fword@cam: 401 (password p@ss/word)"), "rtsp://admin:***@cam: 401 (password ***)");
  assert.is(redact("about ab"), "about ab");
  assert.is(urlPassword("rtsp://u:p%40ss@cam/s"), "p@ss");
  assert.is(urlPassword("rtsp://cam/s"), undefined);
  assert.is(urlPassword("not a url"), undefined);
});

test.run();
