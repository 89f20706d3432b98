// Remote agents in a real Chromium, on the defaults as shipped (HTTPS,
// self-signed, HTTP/2; Node-RED from npm): an Owner provisions an agent in
// the console and downloads its one-time bundle; the real `redwall-agent`
// enrols with it and runs the site's Node-RED; a snapshot of the team's
// central instance goes to the agent group from the pipelines page's
// "Deploy a snapshot" form; and a new agent build is rolled out from the
// agents page, which the agent takes in place (same process id).
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, mkdirSync, readFileSync, writeFileSync, rmSync, openSync, closeSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import {
  startRedwall, launchBrowser, watchPage, saveScreenshot, screenshotOnFailure, api, apiLogin, PASSWORD,
  newContext, protocolOf, PROTOCOL, freePort, SCREENSHOTS, BINARY, nodeRedInstall,
} from "./lib/harness.mjs";

// The agent built next to `redwall`.
const AGENT_BINARY = process.env.REDWALL_AGENT_BIN || join(dirname(BINARY), "redwall-agent");

let redwall;
let browser;
let admin; // the admin's console page (an Owner of the team, and a platform admin)
let watch; // CSP violations and errors of the admin's console page
const dialogs = []; // what the console asked the admin to confirm
const state = {};

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const sha256 = (bytes) => createHash("sha256").update(bytes).digest("hex");

/** The agent's own log (its stderr, REDWALL_AGENT_LOG=debug), for failure messages. */
function agentLog() {
  if (!state.work) return "(no agent)";
  let text = "";
  try { text = readFileSync(join(state.work, "agent.log"), "utf8"); } catch { return "(no agent log)"; }
  return `--- the agent's log (last 6000 characters) ---\n${text.slice(-6000)}`;
}

/** Fails with what the page and the agent said. */
function failWith(message) {
  assert.fail(`${message}\n${agentLog()}`);
}

function agentsUrl() {
  return `${redwall.baseUrl}/teams/${state.team}/agents`;
}

/** The row of `name` in the agents table. */
function agentRow(page, name) {
  return page.locator(`[data-testid="agents"] tr[data-agent="${name}"]`);
}

/**
 * Loads the agents page afresh: a goto that only moved to a fragment of the
 * page already shown (no response) is followed by a real reload.
 */
async function loadAgentsPage(page, hash = "") {
  const answer = await page.goto(`${agentsUrl()}${hash}`);
  if (answer === null) await page.reload();
}

/**
 * Reloads the agents page until `ready()` holds (bounded), then returns;
 * else fails with `describe()`'s account of the page.
 */
async function reloadUntil(page, what, ready, describe, { seconds = 90, hash = "" } = {}) {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    await loadAgentsPage(page, hash);
    if (await ready()) return;
    if (state.agent && state.agent.exitCode !== null) {
      failWith(`the agent exited (${state.agent.exitCode}) while waiting for ${what}`);
    }
    if (Date.now() > deadline) failWith(`after ${seconds} s, not ${what}: ${await describe()}`);
    await sleep(1000);
  }
}

/** The API's view of an agent. */
async function agentView(name) {
  const r = await api(redwall.baseUrl, "GET", `/api/v1/teams/${state.team}/agents/${name}`, undefined, state.session);
  assert.equal(r.status, 200, r.text);
  return r.json;
}

/** A flow whose /hello answers through a function, with a broker's credentials in it. */
function siteFlows() {
  return [
    { id: "t1", type: "tab", label: "Site" },
    { id: "h1", type: "http in", z: "t1", name: "", url: "/hello", method: "get", upload: false, swaggerDoc: "",
      x: 120, y: 80, wires: [["f1"]] },
    { id: "f1", type: "function", z: "t1", name: "greet", func: 'msg.payload = "Hello from the site";\nreturn msg;',
      outputs: 1, timeout: 0, noerr: 0, initialize: "", finalize: "", libs: [], x: 300, y: 80, wires: [["r1"]] },
    { id: "r1", type: "http response", z: "t1", name: "", statusCode: "", headers: {}, x: 480, y: 80, wires: [] },
    { id: "b1", type: "mqtt-broker", name: "plant", broker: "127.0.0.1", port: "1", autoConnect: false,
      credentials: { user: "plc", password: "site-broker-password" } },
  ];
}

describe("remote agents in the console", () => {
  before(async () => {
    assert.ok(existsSync(AGENT_BINARY), `${AGENT_BINARY} is missing: build it with cargo build -p redwall-agent`);
    redwall = await startRedwall({ instances: true });
    browser = await launchBrowser();
    // Set-up through the API (what the other browser tests prove by hand).
    const setup = await api(redwall.baseUrl, "POST", "/api/v1/setup",
      { setup_token: redwall.setupToken, username: "admin", password: PASSWORD });
    assert.equal(setup.status, 201, setup.text);
    state.session = await apiLogin(redwall.baseUrl, "admin", PASSWORD);
    const team = await api(redwall.baseUrl, "POST", "/api/v1/teams", { name: "Plant ops" }, state.session);
    assert.equal(team.status, 201, team.text);
    state.team = team.json.id;
    state.work = mkdtempSync(join(tmpdir(), "redwall-agent-browser-"));
  });

  after(async () => {
    // The agent (and the Node-RED it runs) stops on SIGTERM; SIGKILL if not.
    const agent = state.agent;
    if (agent && agent.exitCode === null && agent.signalCode === null) {
      const exited = new Promise((r) => agent.once("exit", r));
      agent.kill("SIGTERM");
      const timer = setTimeout(() => agent.kill("SIGKILL"), 20_000);
      await exited;
      clearTimeout(timer);
    }
    await browser?.close();
    mkdirSync(SCREENSHOTS, { recursive: true });
    if (redwall) writeFileSync(join(SCREENSHOTS, "agents-redwall.log"), redwall.logs());
    if (state.work) {
      try { writeFileSync(join(SCREENSHOTS, "agents-agent.log"), readFileSync(join(state.work, "agent.log"))); } catch { /* none */ }
      rmSync(state.work, { recursive: true, force: true });
    }
    await redwall?.stop();
  });

  it("an Owner provisions an agent in group plants; the bundle is shown once", async () => {
    const context = await newContext(browser);
    admin = await context.newPage();
    admin.setDefaultTimeout(20_000);
    // The console asks before a rollout: the admin says yes.
    admin.on("dialog", (d) => { dialogs.push(d.message()); d.accept(); });
    watch = await watchPage(admin);
    await screenshotOnFailure(admin, "agents-provision", async () => {
      await admin.goto(`${redwall.baseUrl}/login`);
      await admin.getByLabel("Username").fill("admin");
      await admin.getByLabel("Password").fill(PASSWORD);
      await admin.getByRole("button", { name: "Log in" }).click();
      await admin.getByRole("heading", { name: "Your teams" }).waitFor();
      await admin.goto(`${redwall.baseUrl}/teams/${state.team}`);
      await admin.getByRole("link", { name: "Remote agents" }).click();
      await admin.getByRole("heading", { name: "Remote agents" }).waitFor();
      assert.equal(await protocolOf(admin), PROTOCOL);
      assert.equal((await admin.getByTestId("my-role").textContent()).trim().toLowerCase(), "owner");
      await admin.getByTestId("no-agents").waitFor();
      await saveScreenshot(admin, "team-agents-empty");

      const form = admin.getByTestId("provision-form");
      await form.getByLabel("Group (optional)").fill("plants");
      await form.getByRole("button", { name: "Provision an agent" }).click();
      const shown = admin.getByTestId("agent-bundle");
      await shown.waitFor();
      const bundle = (await shown.getByTestId("new-bundle").textContent()).trim();
      assert.match(bundle, /^rwbundle1\.[A-Za-z0-9_-]+$/, `the bundle: ${bundle}`);
      assert.match(await shown.textContent(), /plants/);
      assert.match(await shown.textContent(), /exactly this hub's certificate, SHA-256/);
      // The page's own "Download bundle.txt" gives the same text.
      const [download] = await Promise.all([
        admin.waitForEvent("download"),
        shown.getByRole("button", { name: "Download bundle.txt" }).click(),
      ]);
      assert.equal(download.suggestedFilename(), "bundle.txt");
      state.bundleFile = join(state.work, "bundle.txt");
      await download.saveAs(state.bundleFile);
      assert.equal(readFileSync(state.bundleFile, "utf8").trim(), bundle, "the downloaded bundle is the one shown");
      state.bundle = bundle;

      // Reloaded (the form sent again): the bundle is not shown again, and
      // its token is listed as unused.
      await admin.reload();
      await admin.getByRole("heading", { name: "Remote agents" }).waitFor();
      assert.equal(await admin.getByTestId("agent-bundle").count(), 0, "the bundle is shown again after a reload");
      assert.ok(!(await admin.content()).includes(bundle), "the bundle is still in the page after a reload");
      const tokens = admin.locator('[data-testid="tokens"] tr[data-token]');
      assert.equal(await tokens.count(), 1, "one unused provisioning token");
      assert.match(await tokens.first().textContent(), /plants/);
      assert.equal(await tokens.first().locator('[data-state="usable"]').count(), 1);
      // A plain visit shows no bundle either.
      await loadAgentsPage(admin);
      assert.equal(await admin.getByTestId("agent-bundle").count(), 0, "the bundle is shown on a later visit");
      await saveScreenshot(admin, "team-agents-provisioned");
    });
  });

  it("the real agent enrols with the bundle, runs Node-RED, and shows online", async () => {
    // The agent as shipped: the executable stripped, as a release is.
    state.installed = join(state.work, "redwall-agent");
    execFileSync("strip", ["-o", state.installed, AGENT_BINARY]);
    state.originalSha = sha256(readFileSync(state.installed));
    // The same Node-RED package the hub runs its instances with.
    const install = nodeRedInstall();
    state.dir = join(state.work, "state");
    state.nodeRedPort = await freePort();
    const env = { ...process.env, REDWALL_AGENT_LOG: "debug" };
    delete env.REDWALL_AGENT_DIR;
    delete env.REDWALL_AGENT_BUNDLE;
    try {
      const out = execFileSync(state.installed, ["enrol", "--name", "site-1", "--bundle", `@${state.bundleFile}`,
        "--dir", state.dir, "--node-red-path", install.packageDir, "--node", install.node,
        "--port", String(state.nodeRedPort)], { env, timeout: 60_000, stdio: ["ignore", "pipe", "pipe"] });
      assert.match(out.toString(), /enrolled as site-1/);
    } catch (e) {
      assert.fail(`redwall-agent enrol failed: ${e.message}\n${e.stdout ?? ""}\n${e.stderr ?? ""}`);
    }
    const log = openSync(join(state.work, "agent.log"), "a");
    state.agent = spawn(state.installed, ["run", "--dir", state.dir], { env, stdio: ["ignore", "ignore", log] });
    closeSync(log);
    state.pid = state.agent.pid;

    await screenshotOnFailure(admin, "agents-online", async () => {
      const row = () => agentRow(admin, "site-1");
      await reloadUntil(admin, "site-1 online with Node-RED running",
        async () => (await row().locator('[data-state="online"]').count()) === 1
          && (await row().locator('[data-status="running"]').count()) === 1,
        async () => (await row().count()) ? (await row().textContent()).replace(/\s+/g, " ") : "site-1 is not listed",
        { seconds: 120 });
      assert.match(await row().textContent(), /plants/);
      assert.match(await row().getByTestId("agent-snapshot").textContent(), /none/);
      // The one-time token is spent.
      await admin.getByTestId("no-tokens").waitFor();
      await saveScreenshot(admin, "team-agents-online");
    });
    const view = await agentView("site-1");
    assert.equal(view.online, true, JSON.stringify(view));
    assert.equal(view.group, "plants");
    assert.equal(view.build_sha256, state.originalSha, "the agent reports the digest of the build it runs");
  });

  it("a snapshot of central deploys to agent-group plants from the pipelines page", async () => {
    // The snapshot: a flows file imported as a snapshot of "central".
    const made = await api(redwall.baseUrl, "POST", `/api/v1/teams/${state.team}/instances`,
      { name: "central", start: false }, state.session);
    assert.equal(made.status, 201, made.text);
    const imported = await api(redwall.baseUrl, "POST",
      `/api/v1/teams/${state.team}/instances/central/snapshots/import`,
      { file: Buffer.from(JSON.stringify(siteFlows())).toString("base64"), accept_plaintext_credentials: true,
        note: "for the sites" },
      state.session);
    assert.equal(imported.status, 201, imported.text);
    state.snapshot = imported.json.snapshot.id;
    const short = state.snapshot.slice(0, 8);

    await screenshotOnFailure(admin, "agents-deploy", async () => {
      await admin.goto(`${redwall.baseUrl}/teams/${state.team}`);
      await admin.getByRole("link", { name: "Pipelines and deploy targets" }).click();
      await admin.getByRole("heading", { name: "Pipelines and deploy targets" }).waitFor();
      const form = admin.getByTestId("deploy-form");
      await form.getByLabel("Snapshot id").fill(state.snapshot);
      await form.getByLabel("Target").selectOption({ label: "agent-group plants" });
      await form.getByRole("button", { name: "Deploy" }).click();
      const result = admin.getByTestId("deploy-result");
      await result.waitFor();
      const line = result.locator('li[data-deployed="agent site-1"]');
      assert.equal(await line.count(), 1, `the deploy reached: ${await result.textContent()}`);
      assert.doesNotMatch(await line.locator("[data-status]").getAttribute("data-status"), /failed/,
        await line.textContent());
      await saveScreenshot(admin, "team-pipelines-deployed-to-agents");

      const cell = () => agentRow(admin, "site-1").getByTestId("agent-snapshot");
      await reloadUntil(admin, `site-1 running snapshot ${short}`,
        async () => (await cell().textContent()).trim() === short,
        async () => `Runs snapshot: ${(await cell().textContent()).trim()}`);
      await saveScreenshot(admin, "team-agents-running-snapshot");
    });
    const deployments = await api(redwall.baseUrl, "GET", `/api/v1/teams/${state.team}/agents/site-1/deployments`,
      undefined, state.session);
    assert.equal(deployments.status, 200, deployments.text);
    const ours = deployments.json.filter((d) => d.snapshot_id === state.snapshot);
    assert.equal(ours.length, 1, deployments.text);
    assert.equal(ours[0].status, "done", JSON.stringify(ours[0]));
    assert.equal((await agentView("site-1")).running_snapshot, state.snapshot);
  });

  it("a new agent build rolls out from the agents page; the agent takes it in place", async () => {
    // Another digest, the same program: the shipped agent with bytes appended.
    const build = Buffer.concat([readFileSync(state.installed), Buffer.from("\nredwall browser test build\n")]);
    state.buildSha = sha256(build);
    assert.notEqual(state.buildSha, state.originalSha);
    const added = await api(redwall.baseUrl, "POST", "/api/v1/agent-builds",
      { version: "9.1.0-browser", platform: "linux-x86_64", binary: build.toString("base64") }, state.session);
    assert.equal(added.status, 201, added.text);
    assert.equal(added.json.sha256, state.buildSha);
    state.build = added.json.id;

    await screenshotOnFailure(admin, "agents-update", async () => {
      // The way an Owner gets there: the team page, "Remote agents".
      await admin.goto(`${redwall.baseUrl}/teams/${state.team}`);
      await admin.getByRole("link", { name: "Remote agents" }).click();
      await admin.getByRole("heading", { name: "Remote agents" }).waitFor();
      await admin.getByTestId("no-updates").waitFor();
      const form = admin.getByTestId("update-form");
      await form.getByLabel("Build").selectOption(state.build);
      assert.match(await form.getByLabel("Build").locator("option:checked").textContent(),
        new RegExp(`9\\.1\\.0-browser · linux-x86_64 · ${state.buildSha.slice(0, 12)}`));
      await form.getByLabel("Agents").selectOption({ label: "agent-group plants" });
      await form.getByLabel("Batch size").fill("1");
      const asked = dialogs.length;
      await form.getByRole("button", { name: "Update agents" }).click();
      await admin.waitForURL(/[?&]done=update_started/);
      assert.deepEqual(dialogs.slice(asked), ["Roll this build out to the agents chosen?"]);
      const rollout = () => admin.locator('[data-testid="updates"] tr[data-update]').first();
      assert.match(await rollout().textContent(), /9\.1\.0-browser/);
      assert.match(await rollout().textContent(), /agent group plants/);
      await saveScreenshot(admin, "team-agents-update-started");

      await reloadUntil(admin, "the rollout done",
        async () => (await rollout().locator('[data-state="done"]').count()) === 1,
        async () => `the rollout: ${(await rollout().textContent()).replace(/\s+/g, " ")}`,
        { seconds: 90, hash: "#updates" });
      assert.match(await rollout().textContent(), /1 of 1 updated/);
      await saveScreenshot(admin, "team-agents-update-done");
    });
    const deadline = Date.now() + 30_000;
    let view;
    for (;;) {
      view = await agentView("site-1");
      if (view.online && view.build_sha256 === state.buildSha) break;
      if (Date.now() > deadline) failWith(`the agent does not report the new build: ${JSON.stringify(view)}`);
      await sleep(500);
    }
    // The same process, running the new build.
    assert.equal(state.agent.exitCode, null, `the agent exited:\n${agentLog()}`);
    assert.equal(state.agent.pid, state.pid);
    const exe = execFileSync("readlink", [`/proc/${state.pid}/exe`]).toString().trim();
    assert.equal(sha256(readFileSync(`/proc/${state.pid}/exe`)), state.buildSha, `the agent's executable: ${exe}`);
    // The switch stopped the site's Node-RED; the new build starts it again
    // with the snapshot that ran.
    const short = state.snapshot.slice(0, 8);
    await screenshotOnFailure(admin, "agents-after-update", async () => {
      const row = () => agentRow(admin, "site-1");
      await reloadUntil(admin, `site-1 online with Node-RED running snapshot ${short} again`,
        async () => (await row().locator('[data-state="online"]').count()) === 1
          && (await row().locator('[data-status="running"]').count()) === 1
          && (await row().getByTestId("agent-snapshot").textContent()).trim() === short,
        async () => (await row().textContent()).replace(/\s+/g, " "),
        { seconds: 120 });
      await saveScreenshot(admin, "team-agents-after-update");
    });
    assert.equal(state.agent.pid, state.pid);
    assert.equal(state.agent.exitCode, null);
  });

  it("the agent pages break none of the CSP", async () => {
    assert.deepEqual(await watch.cspViolations(), []);
    assert.deepEqual(watch.errors().filter((e) => !/favicon/.test(e)), []);
  });
});
