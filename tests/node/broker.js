// A real `weir serve` for the tests: an ephemeral loopback port and a temporary data dir.
//
// The binary comes from WEIR_BIN (scripts/test sets it), else target/debug/weir under
// CARGO_TARGET_DIR or the repository. Every wait is bounded: 60 s to start (recovery of an
// empty dir takes well under a second, but a cold CI disk can be slow), 30 s to stop.
// stop() requires a clean exit (status 0) after SIGTERM, as docs/AMQP.md promises.
'use strict';

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..', '..');
const WEIR_BIN =
  process.env.WEIR_BIN || path.join(process.env.CARGO_TARGET_DIR || path.join(ROOT, 'target'), 'debug', 'weir');

const START_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 30_000;

class Broker {
  constructor() {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weir-node-'));
    this.logPath = path.join(this.dir, 'broker.log');
    this.process = null;
    this.port = null;
  }

  url() {
    return `amqp://guest:guest@127.0.0.1:${this.port}`;
  }

  log() {
    return fs.existsSync(this.logPath) ? fs.readFileSync(this.logPath, 'utf8') : '';
  }

  start() {
    const log = fs.openSync(this.logPath, 'a');
    this.process = spawn(
      WEIR_BIN,
      ['serve', '--data-dir', path.join(this.dir, 'data'), '--amqp-listen', '127.0.0.1:0', '--http-listen', '127.0.0.1:0'],
      { stdio: ['ignore', 'pipe', log] },
    );
    fs.closeSync(log);
    return new Promise((resolve, reject) => {
      let buffered = '';
      const timer = setTimeout(() => {
        this.process.kill('SIGKILL');
        reject(new Error(`weir did not start within ${START_TIMEOUT_MS} ms:\n${this.log()}`));
      }, START_TIMEOUT_MS);
      this.process.once('error', (error) => {
        clearTimeout(timer);
        reject(new Error(`cannot run ${WEIR_BIN}: ${error.message}`));
      });
      this.process.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`weir exited (${code ?? signal}) before listening:\n${this.log()}`));
      });
      this.process.stdout.on('data', (chunk) => {
        buffered += chunk.toString();
        const match = /^amqp listening on 127\.0\.0\.1:(\d+)$/m.exec(buffered);
        if (match && this.port === null) {
          this.port = Number(match[1]);
          clearTimeout(timer);
          this.process.removeAllListeners('exit');
          resolve(this);
        }
      });
    });
  }

  async stop() {
    const child = this.process;
    if (child === null) return;
    this.process = null;
    try {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(`weir had already exited (${child.exitCode ?? child.signalCode}):\n${this.log()}`);
      }
      const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve(code ?? signal)));
      child.kill('SIGTERM');
      let timer;
      const timeout = new Promise((resolve) => {
        timer = setTimeout(() => resolve('timeout'), STOP_TIMEOUT_MS);
      });
      const status = await Promise.race([exited, timeout]);
      clearTimeout(timer);
      if (status === 'timeout') {
        child.kill('SIGKILL');
        throw new Error(`weir did not stop within ${STOP_TIMEOUT_MS} ms of SIGTERM:\n${this.log()}`);
      }
      if (status !== 0) {
        throw new Error(`weir exited with ${status} after SIGTERM:\n${this.log()}`);
      }
    } finally {
      fs.rmSync(this.dir, { recursive: true, force: true });
    }
  }
}

module.exports = { Broker };
