// Label LaTeX math with tex2typst (the version package.json pins), as the real evaluation sets were labelled:
// one JSON object {"tex": ...} per input line, one {"typst": ..., "error": ...} per output line.
//   npm ci --prefix examples/typst && node examples/typst/tex2typst.mjs < formulas.jsonl
import { tex2typst } from "tex2typst";
import * as readline from "node:readline";

const lines = readline.createInterface({ input: process.stdin });
for await (const line of lines) {
  const { tex } = JSON.parse(line);
  let typst = null;
  let error = null;
  try {
    typst = tex2typst(tex);  // default options, as for the shared sets
  } catch (e) {
    error = String(e?.message ?? e).split("\n")[0];
  }
  process.stdout.write(JSON.stringify({ typst, error }) + "\n");
}
