/**
 * Home Assistant's rules for an MQTT device discovery payload (`<discovery_prefix>/device/<id>/config`), written from
 * its documentation: the MQTT integration page (device discovery: `device`, `origin` with `name` and `components`
 * required, each component with a `platform` and a `unique_id`; shared availability; the abbreviations) and the pages
 * of the platforms the service uses — sensor, binary_sensor, image, event — for their required keys and allowed
 * values. `default_entity_id` (`<platform>.<object id>`) replaces `object_id`, deprecated in 2025.10, so `object_id`
 * is reported. Stricter than Home Assistant in one way: an unknown key is a problem here (HA ignores it; for us it is
 * a typo).
 */

/** Abbreviations HA expands in discovery payloads (the subset that can name a key these platforms know). */
const ABBREVIATIONS: Record<string, string> = {
  avty: "availability", avty_mode: "availability_mode", avty_t: "availability_topic", avty_tpl: "availability_template",
  cmps: "components", dev: "device", o: "origin", p: "platform", def_ent_id: "default_entity_id", dev_cla: "device_class",
  e: "encoding", en: "enabled_by_default", ent_cat: "entity_category", ent_pic: "entity_picture", exp_aft: "expire_after",
  frc_upd: "force_update", ic: "icon", json_attr_t: "json_attributes_topic", json_attr_tpl: "json_attributes_template",
  lrst_val_tpl: "last_reset_value_template", obj_id: "object_id", off_dly: "off_delay", ops: "options",
  pl_avail: "payload_available", pl_not_avail: "payload_not_available", pl_off: "payload_off", pl_on: "payload_on",
  stat_cla: "state_class", stat_t: "state_topic", sug_dsp_prc: "suggested_display_precision", t: "topic",
  uniq_id: "unique_id", unit_of_meas: "unit_of_measurement", val_tpl: "value_template", url_t: "url_topic",
  url_tpl: "url_template", img_e: "image_encoding",
};
const DEVICE_ABBREVIATIONS: Record<string, string> = {
  cns: "connections", cu: "configuration_url", ids: "identifiers", mf: "manufacturer", mdl: "model", mdl_id: "model_id",
  hw: "hw_version", sw: "sw_version", sa: "suggested_area", sn: "serial_number",
};
const ORIGIN_ABBREVIATIONS: Record<string, string> = { sw: "sw_version", url: "support_url" };

const DEVICE_KEYS = ["connections", "configuration_url", "identifiers", "manufacturer", "model", "model_id", "hw_version", "sw_version", "suggested_area", "serial_number", "name", "via_device"];
const ORIGIN_KEYS = ["name", "sw_version", "support_url"];
/** Options a device payload may share with all its components. */
const SHARED_KEYS = ["availability", "availability_mode", "availability_template", "availability_topic", "payload_available", "payload_not_available", "state_topic", "command_topic", "qos", "encoding"];
/** Options every entity platform takes. */
const ENTITY_KEYS = ["platform", "name", "unique_id", "default_entity_id", "object_id", "icon", "entity_category", "entity_picture", "enabled_by_default", "json_attributes_topic", "json_attributes_template", "qos", "encoding", ...SHARED_KEYS];

const SENSOR_CLASSES = [
  "apparent_power", "aqi", "area", "atmospheric_pressure", "battery", "blood_glucose_concentration", "carbon_dioxide", "carbon_monoxide", "conductivity",
  "current", "data_rate", "data_size", "date", "distance", "duration", "energy", "energy_distance", "energy_storage", "enum", "frequency", "gas",
  "humidity", "illuminance", "irradiance", "moisture", "monetary", "nitrogen_dioxide", "nitrogen_monoxide", "nitrous_oxide", "ozone", "ph", "pm1",
  "pm10", "pm25", "power_factor", "power", "precipitation", "precipitation_intensity", "pressure", "reactive_energy", "reactive_power",
  "signal_strength", "sound_pressure", "speed", "sulphur_dioxide", "temperature", "timestamp", "volatile_organic_compounds",
  "volatile_organic_compounds_parts", "voltage", "volume", "volume_flow_rate", "volume_storage", "water", "weight", "wind_direction", "wind_speed",
];
const BINARY_SENSOR_CLASSES = [
  "battery", "battery_charging", "carbon_monoxide", "cold", "connectivity", "door", "garage_door", "gas", "heat", "light", "lock", "moisture",
  "motion", "moving", "occupancy", "opening", "plug", "power", "presence", "problem", "running", "safety", "smoke", "sound", "tamper", "update",
  "vibration", "window",
];

interface PlatformRules {
  keys: readonly string[];
  required: readonly string[];
  check?(c: Record<string, unknown>, at: string, out: string[]): void;
}

const PLATFORMS: Record<string, PlatformRules> = {
  sensor: {
    keys: ["state_topic", "value_template", "device_class", "state_class", "unit_of_measurement", "options", "expire_after", "force_update", "last_reset_value_template", "suggested_display_precision"],
    required: ["state_topic"],
    check(c, at, out) {
      oneOf(c["device_class"], SENSOR_CLASSES, `${at}.device_class`, out);
      oneOf(c["state_class"], ["measurement", "measurement_angle", "total", "total_increasing"], `${at}.state_class`, out);
      if (c["device_class"] === "enum") {
        if (!Array.isArray(c["options"]) || c["options"].length === 0 || !c["options"].every((o) => typeof o === "string")) out.push(`${at}.options: an enum sensor needs its options, a list of strings`);
        if (c["state_class"] !== undefined || c["unit_of_measurement"] !== undefined) out.push(`${at}: an enum sensor takes no state_class nor unit_of_measurement`);
      } else if (c["options"] !== undefined) out.push(`${at}.options: only for device_class enum`);
    },
  },
  binary_sensor: {
    keys: ["state_topic", "value_template", "device_class", "payload_on", "payload_off", "off_delay", "expire_after", "force_update"],
    required: ["state_topic"],
    check(c, at, out) {
      oneOf(c["device_class"], BINARY_SENSOR_CLASSES, `${at}.device_class`, out);
      // the template must render the payloads (ON / OFF unless set)
      const template = c["value_template"];
      if (typeof template === "string") for (const payload of [c["payload_on"] ?? "ON", c["payload_off"] ?? "OFF"]) if (!template.includes(`'${payload}'`) && !template.includes(`"${payload}"`)) out.push(`${at}.value_template: never renders ${payload}`);
    },
  },
  image: {
    keys: ["image_topic", "url_topic", "url_template", "content_type", "image_encoding"],
    required: [],
    check(c, at, out) {
      if ((c["image_topic"] === undefined) === (c["url_topic"] === undefined)) out.push(`${at}: exactly one of image_topic and url_topic`);
      if (c["content_type"] !== undefined && (c["url_topic"] !== undefined || typeof c["content_type"] !== "string" || !/^image\/[a-z0-9.+-]+$/.test(c["content_type"]))) out.push(`${at}.content_type: an image/* type, with image_topic only`);
      if (c["url_template"] !== undefined && c["url_topic"] === undefined) out.push(`${at}.url_template: with url_topic only`);
      oneOf(c["image_encoding"], ["b64"], `${at}.image_encoding`, out);
    },
  },
  event: {
    keys: ["state_topic", "value_template", "event_types", "device_class"],
    required: ["state_topic", "event_types"],
    check(c, at, out) {
      const types = c["event_types"];
      if (!Array.isArray(types) || types.length === 0 || !types.every((t) => typeof t === "string" && t !== "")) out.push(`${at}.event_types: a non-empty list of strings`);
      oneOf(c["device_class"], ["button", "doorbell", "motion"], `${at}.device_class`, out);
    },
  },
};

function oneOf(value: unknown, allowed: readonly string[], at: string, out: string[]): void {
  if (value !== undefined && !allowed.includes(value as string)) out.push(`${at}: ${JSON.stringify(value)} is not one of HA's values`);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

/** The payload with abbreviations expanded; a key given both ways, or an unknown one, is a problem. */
function expand(obj: Record<string, unknown>, abbreviations: Record<string, string>, known: readonly string[], at: string, out: string[]): Record<string, unknown> {
  const full: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(obj)) {
    const name = abbreviations[key] ?? key;
    if (name in full) out.push(`${at}.${key}: given twice (${name} and its abbreviation)`);
    if (!known.includes(name)) out.push(`${at}.${key}: unknown key`);
    full[name] = value;
  }
  return full;
}

function checkTemplate(value: unknown, at: string, out: string[]): void {
  if (value === undefined) return;
  if (typeof value !== "string" || value === "") {
    out.push(`${at}: a template string`);
    return;
  }
  const count = (s: string) => value.split(s).length - 1;
  if (count("{{") !== count("}}") || count("{%") !== count("%}")) out.push(`${at}: unbalanced Jinja delimiters`);
}

function checkTopic(value: unknown, at: string, out: string[]): void {
  if (value !== undefined && (typeof value !== "string" || value === "" || /[+#\u0000]/.test(value))) out.push(`${at}: a topic without wildcards`);
}

function checkAvailability(c: Record<string, unknown>, at: string, out: string[]): void {
  if (c["availability"] !== undefined && c["availability_topic"] !== undefined) out.push(`${at}: availability and availability_topic may not be used together`);
  oneOf(c["availability_mode"], ["all", "any", "latest"], `${at}.availability_mode`, out);
  checkTopic(c["availability_topic"], `${at}.availability_topic`, out);
  if (c["availability"] === undefined) return;
  if (!Array.isArray(c["availability"]) || c["availability"].length === 0) {
    out.push(`${at}.availability: a non-empty list`);
    return;
  }
  c["availability"].forEach((raw, i) => {
    const where = `${at}.availability[${i}]`;
    if (!isObject(raw)) return void out.push(`${where}: a mapping`);
    const a = expand(raw, ABBREVIATIONS, ["topic", "payload_available", "payload_not_available", "value_template"], where, out);
    if (a["topic"] === undefined) out.push(`${where}.topic: required`);
    checkTopic(a["topic"], `${where}.topic`, out);
    checkTemplate(a["value_template"], `${where}.value_template`, out);
  });
}

function checkComponent(id: string, raw: unknown, at: string, out: string[]): string | undefined {
  if (!isObject(raw)) return void out.push(`${at}: a mapping`);
  const platform = raw["platform"] ?? raw["p"];
  const rules = PLATFORMS[platform as string];
  if (rules === undefined) return void out.push(`${at}.platform: ${JSON.stringify(platform)} is not a platform these rules know`);
  const c = expand(raw, ABBREVIATIONS, [...ENTITY_KEYS, ...rules.keys], at, out);
  for (const key of ["unique_id", ...rules.required]) if (c[key] === undefined) out.push(`${at}.${key}: required`);
  if (c["object_id"] !== undefined) out.push(`${at}.object_id: deprecated since Home Assistant 2025.10; use default_entity_id`);
  const entity = c["default_entity_id"];
  if (entity !== undefined && (typeof entity !== "string" || !new RegExp(`^${platform}\\.[a-z0-9_]+$`).test(entity))) out.push(`${at}.default_entity_id: ${JSON.stringify(entity)} must be ${platform}.<lower-case object id>`);
  if (typeof c["unique_id"] !== "string" || c["unique_id"] === "") out.push(`${at}.unique_id: a non-empty string`);
  if (c["name"] !== undefined && c["name"] !== null && typeof c["name"] !== "string") out.push(`${at}.name: a string or null`);
  if (c["icon"] !== undefined && !/^mdi:[a-z0-9-]+$/.test(String(c["icon"]))) out.push(`${at}.icon: an mdi: icon`);
  oneOf(c["entity_category"], ["config", "diagnostic"], `${at}.entity_category`, out);
  if (c["qos"] !== undefined && ![0, 1, 2].includes(c["qos"] as number)) out.push(`${at}.qos: 0, 1 or 2`);
  for (const key of ["state_topic", "json_attributes_topic", "image_topic", "url_topic"]) checkTopic(c[key], `${at}.${key}`, out);
  for (const key of ["value_template", "json_attributes_template", "url_template", "last_reset_value_template"]) checkTemplate(c[key], `${at}.${key}`, out);
  checkAvailability(c, at, out);
  rules.check?.(c, at, out);
  void id;
  return typeof c["unique_id"] === "string" ? c["unique_id"] : undefined;
}

/** The problems of one device discovery payload (empty when Home Assistant takes it). */
export function haDeviceDiscoveryProblems(topic: string, payload: unknown): string[] {
  const out: string[] = [];
  if (!/^[^/#+]+\/device\/(?:[A-Za-z0-9_-]+\/)?[A-Za-z0-9_-]+\/config$/.test(topic)) out.push(`${topic}: not <prefix>/device/[<node_id>/]<object_id>/config with [A-Za-z0-9_-] ids`);
  if (!isObject(payload)) return [...out, "payload: a JSON mapping"];
  const p = expand(payload, ABBREVIATIONS, ["device", "origin", "components", "migrate_discovery", ...SHARED_KEYS], "payload", out);
  const device = p["device"];
  if (!isObject(device)) out.push("payload.device: required, a mapping");
  else {
    const d = expand(device, DEVICE_ABBREVIATIONS, DEVICE_KEYS, "payload.device", out);
    const ids = d["identifiers"];
    if (ids === undefined && d["connections"] === undefined) out.push("payload.device: identifiers or connections required");
    if (ids !== undefined && typeof ids !== "string" && !(Array.isArray(ids) && ids.length > 0 && ids.every((i) => typeof i === "string"))) out.push("payload.device.identifiers: a string or a list of strings");
  }
  const origin = p["origin"];
  if (!isObject(origin)) out.push("payload.origin: required for device discovery, a mapping");
  else if (typeof expand(origin, ORIGIN_ABBREVIATIONS, ORIGIN_KEYS, "payload.origin", out)["name"] !== "string") out.push("payload.origin.name: required");
  checkAvailability(p, "payload", out);
  const components = p["components"];
  if (!isObject(components) || Object.keys(components).length === 0) return [...out, "payload.components: required, a non-empty mapping"];
  const uniqueIds = new Set<string>();
  for (const [id, component] of Object.entries(components)) {
    if (!/^[A-Za-z0-9_-]+$/.test(id)) out.push(`payload.components.${id}: ids use [A-Za-z0-9_-]`);
    const uniqueId = checkComponent(id, component, `payload.components.${id}`, out);
    if (uniqueId !== undefined && uniqueIds.has(uniqueId)) out.push(`payload.components.${id}.unique_id: ${uniqueId} is used twice`);
    if (uniqueId !== undefined) uniqueIds.add(uniqueId);
  }
  return out;
}
