// The real `redwall-agent` for the browser tests, as agents.test.mjs runs
// it: enrolled with a provisioning bundle, running the site's Node-RED (the
// same npm install the hub's instances use), its log (debug) in a file.
import { spawn, execFileSync } from "node:child_process";
import { existsSync, openSync, closeSync, readFileSync } from "node:fs";
import { join, dirname } from "node:path";
import { BINARY, nodeRedInstall } from "./harness.mjs";

// The agent built next to `redwall`.
export const AGENT_BINARY = process.env.REDWALL_AGENT_BIN || join(dirname(BINARY), "redwall-agent");

const running = new Set();
process.on("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

function agentEnv() {
  const env = { ...process.env, REDWALL_AGENT_LOG: "debug" };
  delete env.REDWALL_AGENT_DIR;
  delete env.REDWALL_AGENT_BUNDLE;
  return env;
}

/**
 * Enrols the agent `name` with the bundle in `bundleFile` into the state
 * directory `dir`, with Node-RED on 127.0.0.1:`nodeRedPort`.
 */
export function enrolAgent({ name, bundleFile, dir, nodeRedPort, binary = AGENT_BINARY }) {
  if (!existsSync(binary)) throw new Error(`${binary} is missing: build it with cargo build -p redwall-agent`);
  const install = nodeRedInstall();
  try {
    const out = execFileSync(binary, ["enrol", "--name", name, "--bundle", `@${bundleFile}`,
      "--dir", dir, "--node-red-path", install.packageDir, "--node", install.node,
      "--port", String(nodeRedPort)], { env: agentEnv(), timeout: 60_000, stdio: ["ignore", "pipe", "pipe"] });
    return out.toString();
  } catch (e) {
    throw new Error(`redwall-agent enrol failed: ${e.message}\n${e.stdout ?? ""}\n${e.stderr ?? ""}`);
  }
}

/** `redwall-agent run --dir dir`, its stderr appended to `logFile`; the child. */
export function runAgent({ dir, logFile, binary = AGENT_BINARY }) {
  const log = openSync(logFile, "a");
  const child = spawn(binary, ["run", "--dir", dir], { env: agentEnv(), stdio: ["ignore", "ignore", log] });
  closeSync(log);
  running.add(child);
  child.once("exit", () => running.delete(child));
  return child;
}

/** Whether the child process is still running. */
export function alive(child) {
  return Boolean(child) && child.exitCode === null && child.signalCode === null;
}

/** Kills the agent at once (SIGKILL: no goodbye to the hub) and waits for it. */
export async function killAgent(child) {
  if (!alive(child)) return;
  const exited = new Promise((r) => child.once("exit", r));
  child.kill("SIGKILL");
  await exited;
}

/** Stops the agent (and the Node-RED it runs) on SIGTERM; SIGKILL if it hangs. */
export async function stopAgent(child) {
  if (!alive(child)) return;
  const exited = new Promise((r) => child.once("exit", r));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
  await exited;
  clearTimeout(timer);
}

/** The end of the agent's log, for failure messages. */
export function agentLogTail(logFile, chars = 6000) {
  let text;
  try { text = readFileSync(logFile, "utf8"); } catch { return "(no agent log)"; }
  return `--- the agent's log (last ${chars} characters) ---\n${text.slice(-chars)}`;
}
