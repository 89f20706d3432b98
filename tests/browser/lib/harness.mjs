// The browser tests' harness: a real `redwall serve` on a loopback port
// with a fresh data directory, Debian's Chromium driven by playwright-core,
// screenshots, and the page's CSP violations and errors.
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, mkdirSync, writeFileSync, existsSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
const TARGET = process.env.CARGO_TARGET_DIR || join(ROOT, "target");
export const BINARY = process.env.REDWALL_BIN || join(TARGET, "debug", "redwall");
export const SCREENSHOTS = process.env.REDWALL_SCREENSHOT_DIR || join(ROOT, "target", "browser-screenshots");
export const PASSWORD = "violet-harbor-copper-9";

// The defaults as shipped: HTTPS with the self-signed certificate, which
// Chromium speaks HTTP/2 to. REDWALL_BROWSER_HTTP1=1 keeps one run on
// HTTP/1.1 (Chromium with --disable-http2), still over TLS.
export const HTTP1 = process.env.REDWALL_BROWSER_HTTP1 === "1";
export const PROTOCOL = HTTP1 ? "http/1.1" : "h2";
// The set-up calls from Node (fetch) trust the test server's own certificate.
process.env.NODE_TLS_REJECT_UNAUTHORIZED = "0";

// The same pinned Node-RED the Rust tests install (crates/redwall-runtime:
// DEFAULT_NODE_RED_VERSION, testing::shared_install), in the same place and
// layout, so both suites share one npm install.
const NODE_RED_VERSION = "4.1.8";
const NODE_RED_CACHE = process.env.REDWALL_TEST_NODE_RED_CACHE || "/var/tmp/redwall-test-node-red";
const COMPLETE_MARKER = ".redwall-install-complete";

const running = new Set();
process.on("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

export async function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once("error", fail);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

/** The shared Node-RED install: reused when complete, else made like Rust does. */
export function nodeRedInstall() {
  const target = join(NODE_RED_CACHE, `node-red-${NODE_RED_VERSION}`);
  const pkg = join(target, "node_modules", "node-red");
  if (!(existsSync(join(target, COMPLETE_MARKER)) && existsSync(join(pkg, "red.js")))) {
    mkdirSync(NODE_RED_CACHE, { recursive: true, mode: 0o755 });
    const scratch = join(NODE_RED_CACHE, `.node-red-${NODE_RED_VERSION}.partial`);
    rmSync(scratch, { recursive: true, force: true });
    mkdirSync(scratch, { recursive: true, mode: 0o755 });
    execFileSync("npm", ["install", "--prefix", scratch, "--no-audit", "--no-fund", "--omit=dev",
      "--no-update-notifier", `node-red@${NODE_RED_VERSION}`], { stdio: "inherit", timeout: 600_000 });
    writeFileSync(join(scratch, COMPLETE_MARKER), NODE_RED_VERSION);
    rmSync(target, { recursive: true, force: true });
    execFileSync("mv", [scratch, target]);
  }
  return { packageDir: pkg, node: execFileSync("which", ["node"]).toString().trim() };
}

/**
 * Starts `redwall serve` on a fresh data directory, on its defaults (HTTPS,
 * self-signed). With `instances`, Node-RED instances can run, each at its
 * own origin, https://{name}.localhost:{port}/.
 * Returns { baseUrl, setupToken, dataDir, logs(), stop() }.
 */
export async function startRedwall({ instances = false } = {}) {
  if (!existsSync(BINARY)) throw new Error(`${BINARY} is missing: build it with cargo build -p redwall`);
  const dataDir = mkdtempSync(join(tmpdir(), "redwall-browser-"));
  const port = await freePort();
  let config = `data_dir = ${JSON.stringify(dataDir)}
[server]
listen = "127.0.0.1:${port}"
[passwords]
memory_kib = 1024
iterations = 1
parallelism = 1
[log]
level = "info"
`;
  if (instances) {
    const install = nodeRedInstall();
    const base = 20000 + (port % 20000);
    config += `[instances]
node_red_path = ${JSON.stringify(install.packageDir)}
node = ${JSON.stringify(install.node)}
port_min = ${base}
port_max = ${base + 9}
uid_base = ${200000 + base}
`;
  }
  writeFileSync(join(dataDir, "redwall.toml"), config);
  const child = spawn(BINARY, ["serve", "--config", join(dataDir, "redwall.toml")], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  running.add(child);
  let output = "";
  child.stdout.on("data", (d) => { output += d; });
  child.stderr.on("data", (d) => { output += d; });
  const baseUrl = `https://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  let setupToken;
  for (;;) {
    setupToken = output.match(/rws_[A-Za-z0-9_-]+/)?.[0];
    if (setupToken) {
      try {
        const r = await fetch(`${baseUrl}/healthz`);
        if (r.ok) break;
      } catch { /* not listening yet */ }
    }
    if (child.exitCode !== null) throw new Error(`redwall exited:\n${output}`);
    if (Date.now() > deadline) throw new Error(`redwall did not start:\n${output}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    baseUrl,
    setupToken,
    dataDir,
    logs: () => output,
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once("exit", r));
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
        await exited;
        clearTimeout(timer);
      }
      running.delete(child);
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** Debian's Chromium, headless, with the flags this network needs. */
export async function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      ...(HTTP1 ? ["--disable-http2"] : [])],
  });
}

/**
 * Records what a page reports: CSP violations (from the console and from
 * `securitypolicyviolation` events) and errors.
 */
export async function watchPage(page) {
  const csp = [];
  const errors = [];
  await page.addInitScript(() => {
    window.__cspViolations = [];
    document.addEventListener("securitypolicyviolation", (e) => {
      window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`);
    });
  });
  page.on("console", (m) => {
    if (/Content Security Policy/i.test(m.text())) csp.push(m.text());
    else if (m.type() === "error") errors.push(m.text());
  });
  page.on("pageerror", (e) => errors.push(String(e)));
  return {
    async cspViolations() {
      const fromEvents = await page.evaluate(() => window.__cspViolations || []).catch(() => []);
      return [...csp, ...fromEvents];
    },
    errors: () => [...errors],
  };
}

function fileName(name) {
  return name.replace(/[^a-z0-9-]+/gi, "-").toLowerCase();
}

/** A full-page screenshot of a main page, kept by CI for inspection. */
export async function saveScreenshot(page, name) {
  const dir = join(SCREENSHOTS, "pages");
  mkdirSync(dir, { recursive: true });
  await page.screenshot({ path: join(dir, `${fileName(name)}.png`), fullPage: true });
}

/** Runs `fn`; when it throws, saves the page as it was, then rethrows. */
export async function screenshotOnFailure(page, name, fn) {
  try {
    return await fn();
  } catch (e) {
    const dir = join(SCREENSHOTS, "failures");
    mkdirSync(dir, { recursive: true });
    await page.screenshot({ path: join(dir, `${fileName(name)}.png`), fullPage: true }).catch(() => {});
    throw e;
  }
}

/** A new browser profile (its own cookies) that accepts the self-signed certificate. */
export async function newContext(browser) {
  return browser.newContext({ viewport: { width: 1280, height: 900 }, ignoreHTTPSErrors: true });
}

/** The protocol the page's main document came over ("h2", "http/1.1"). */
export async function protocolOf(page) {
  return page.evaluate(() => performance.getEntriesByType("navigation")[0]?.nextHopProtocol);
}

/** A JSON API call for test set-up (not what the tests prove). */
export async function api(baseUrl, method, path, body, { cookie, csrf } = {}) {
  const headers = { origin: baseUrl };
  if (body !== undefined) headers["content-type"] = "application/json";
  if (cookie) headers.cookie = cookie;
  if (csrf) headers["x-csrf-token"] = csrf;
  const r = await fetch(baseUrl + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), redirect: "manual" });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: r.status, json, text, headers: r.headers };
}

/** Logs in through the API and returns { cookie, csrf } for more set-up. */
export async function apiLogin(baseUrl, username, password) {
  const r = await api(baseUrl, "POST", "/api/v1/auth/login", { username, password });
  if (r.status !== 200) throw new Error(`login ${username}: ${r.status} ${r.text}`);
  const cookie = r.headers.get("set-cookie").split(";")[0];
  return { cookie, csrf: r.json.csrf_token };
}

