// Validate recorded HTTP responses against deploy/openapi.yaml.
//
//   node openapi_contract.mjs SPEC LOG
//
// LOG has one JSON object per line: {method, path, query, status,
// content_type, body} (tests/lib/stack.py, GCRELAY_CONTRACT_LOG).  Prints
// one JSON report on stdout:
//   {responses, mismatches: [{line, what, ...}], operations: [...],
//    covered: [...], unexercised: [{op, reason}]}
// where reason is the operation's x-contract-not-exercised text or null.
// Exit status 0 whenever the report was written; the caller decides.
//
// A response is checked against the operation its method and path match
// (path templates: "{name}" is one non-empty segment, literal segments
// win), the status must be documented there (exactly, as "4XX"/"5XX", or
// "default"), the media type must be one the response lists (none for a
// response without content: then the body must be empty), and a JSON
// body must validate against the schema (JSON Schema 2020-12, ajv).  A
// request matching no operation is held to the document's
// x-gcrelay-unrouted responses (401 only under /admin/).

import fs from "node:fs";
import Ajv2020 from "ajv/dist/2020.js";
import addFormats from "ajv-formats";
import YAML from "yaml";

const METHODS = ["get", "put", "post", "delete", "patch", "head", "options"];
const SPEC_ID = "https://gcrelay.invalid/openapi.json";

function loadSpec(path) {
  return YAML.parse(fs.readFileSync(path, "utf8"));
}

function makeAjv(spec) {
  // strict off: the document is OpenAPI, not only JSON Schema (its
  // "paths", "openapi", "example" members are no schema keywords).
  const ajv = new Ajv2020({ strict: false, allErrors: true });
  addFormats(ajv);
  ajv.addSchema({ ...spec, $id: SPEC_ID });
  return ajv;
}

// A "#/..." JSON pointer inside the document.
function deref(spec, obj) {
  let seen = 0;
  while (obj && typeof obj.$ref === "string" && seen++ < 20) {
    const parts = obj.$ref.replace(/^#\//, "").split("/")
      .map((p) => p.replace(/~1/g, "/").replace(/~0/g, "~"));
    obj = parts.reduce((o, k) => (o == null ? o : o[k]), spec);
  }
  return obj;
}

function templateRegex(template) {
  const re = template.split("/").map((seg) =>
    /^\{[^}]+\}$/.test(seg) ? "[^/]+"
      : seg.replace(/[.*+?^$()|[\]\\]/g, "\\$&")).join("/");
  return new RegExp("^" + re + "$");
}

// The path item for a concrete path: a literal match first, else the
// template with the most literal segments.
function matchPath(spec, path) {
  let best = null, bestScore = -1;
  for (const template of Object.keys(spec.paths || {})) {
    if (!templateRegex(template).test(path)) continue;
    const score = template.split("/").filter((s) => !s.startsWith("{"))
      .length;
    if (score > bestScore) {
      best = template;
      bestScore = score;
    }
  }
  return best;
}

function pickStatus(responses, status) {
  const s = String(status);
  if (responses[s]) return [s, responses[s]];
  const range = s[0] + "XX";
  if (responses[range]) return [range, responses[range]];
  if (responses.default) return ["default", responses.default];
  return [null, null];
}

function mediaType(ct) {
  return (ct || "").split(";")[0].trim().toLowerCase();
}

function isJson(mt) {
  return mt === "application/json" || /^application\/[^/]+\+json$/.test(mt);
}

function operations(spec) {
  const ops = [];
  for (const [template, item] of Object.entries(spec.paths || {}))
    for (const m of METHODS)
      if (item[m]) ops.push({ key: m.toUpperCase() + " " + template,
                              op: item[m] });
  return ops;
}

export function check(spec, records) {
  const ajv = makeAjv(spec);
  const mismatches = [];
  const covered = new Set();
  const unrouted = spec["x-gcrelay-unrouted"]?.responses || {};

  records.forEach((r, i) => {
    const where = { line: i + 1, request: `${r.method} ${r.path}` +
                    (r.query ? "?" + r.query : ""), status: r.status };
    const bad = (what, extra = {}) =>
      mismatches.push({ ...where, what, ...extra });
    const template = matchPath(spec, r.path || "");
    const op = template &&
      spec.paths[template][String(r.method || "").toLowerCase()];
    let responses, opKey, base;
    if (op && METHODS.includes(String(r.method).toLowerCase())) {
      opKey = r.method.toUpperCase() + " " + template;
      covered.add(opKey);
      responses = op.responses || {};
      base = `#/paths/${template.replace(/~/g, "~0").replace(/\//g, "~1")}` +
             `/${r.method.toLowerCase()}/responses`;
    } else {
      opKey = "(unrouted)";
      responses = { ...unrouted };
      if (!String(r.path || "").startsWith("/admin/")) delete responses["401"];
      base = "#/x-gcrelay-unrouted/responses";
    }
    where.operation = opKey;
    const [code, resp0] = pickStatus(responses, r.status);
    if (!resp0) {
      bad(`status ${r.status} is not documented for ${opKey}`);
      return;
    }
    const resp = deref(spec, resp0);
    let pointer = resp0.$ref ? resp0.$ref : `${base}/${code}`;
    const content = resp.content || {};
    const body = r.body ?? "";
    if (Object.keys(content).length === 0) {
      if (body.length > 0) bad("a response without content has a body",
                               { body: body.slice(0, 200) });
      return;
    }
    const mt = mediaType(r.content_type);
    if (!content[mt]) {
      bad(`content type "${r.content_type}" is not one of ` +
          Object.keys(content).join(", "), { body: body.slice(0, 200) });
      return;
    }
    const schema = content[mt].schema;
    if (!schema) return;
    let value = body;
    if (isJson(mt)) {
      try {
        value = JSON.parse(body);
      } catch (e) {
        bad(`body is not JSON: ${e.message}`, { body: body.slice(0, 200) });
        return;
      }
    }
    pointer = pointer.replace(/^#/, "") + "/content/" +
              mt.replace(/~/g, "~0").replace(/\//g, "~1") + "/schema";
    const validate = ajv.getSchema(SPEC_ID + "#" + pointer);
    if (!validate) {
      bad(`no schema at ${pointer}`);
      return;
    }
    if (!validate(value))
      bad("body does not match the schema", {
        errors: validate.errors.slice(0, 5).map((e) =>
          `${e.instancePath || "(root)"} ${e.message}` +
          (e.params && Object.keys(e.params).length
            ? " " + JSON.stringify(e.params) : "")),
        body: body.slice(0, 300),
      });
  });

  const ops = operations(spec);
  return {
    responses: records.length,
    mismatches,
    operations: ops.map((o) => o.key),
    covered: [...covered].filter((k) => k !== "(unrouted)").sort(),
    unexercised: ops.filter((o) => !covered.has(o.key)).map((o) => ({
      op: o.key, reason: o.op["x-contract-not-exercised"] ?? null })),
  };
}

function main() {
  const [specPath, logPath] = process.argv.slice(2);
  const spec = loadSpec(specPath);
  const records = fs.readFileSync(logPath, "utf8").split("\n")
    .filter((l) => l.trim() !== "").map((l) => JSON.parse(l));
  process.stdout.write(JSON.stringify(check(spec, records)) + "\n");
}

main();
