// Waits in a pooled node process for exactly one snippet, then runs it as `node main.js` would:
// a CommonJS module with require, module, exports, __filename and __dirname, top-level var
// scoped to it. The run arrives on the pipe whose fd is argv[2] (never on argv itself): one
// JSON header line ({"network": bool}), then the code; the pipe's EOF starts the run.
'use strict';
const fs = require('fs');
const path = require('path');
const Module = require('module');

const PROXY_VARIABLES = ['HTTP_PROXY', 'HTTPS_PROXY', 'NO_PROXY'];

// Blocking writes, as for a file: a snippet that prints in a tight loop then waits for the reader
// (and meets the output cap) instead of buffering without bound inside node.
for (const stream of [process.stdout, process.stderr]) {
  if (stream._handle && typeof stream._handle.setBlocking === 'function') stream._handle.setBlocking(true);
}
const codeFd = Number(process.argv[2]);
let code;
try {
  const payload = fs.readFileSync(codeFd, 'utf8');
  fs.closeSync(codeFd);
  const newline = payload.indexOf('\n');
  const header = JSON.parse(payload.slice(0, newline));
  code = payload.slice(newline + 1);
  if (!header.network) {
    for (const name of PROXY_VARIABLES) delete process.env[name];
  }
} catch (error) {
  process.stderr.write(`sandbox: cannot read the code: ${error.message}\n`);
  process.exit(70);
}
process.argv.splice(2, 1);

const filename = path.join(process.cwd(), 'main.js');
const main = new Module(filename, null);
main.filename = filename;
main.paths = Module._nodeModulePaths(process.cwd());
process.argv[1] = filename;
process.mainModule = main;
main.loaded = true;
main._compile(code, filename);
