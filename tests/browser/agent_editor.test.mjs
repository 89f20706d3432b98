// The editor of an instance on a remote agent, in a real Chromium, on the
// defaults as shipped (HTTPS, self-signed, HTTP/2; Node-RED from npm): the
// real `redwall-agent` runs the site's Node-RED; an Owner makes it an
// instance of the team from the console's new-instance page; its editor is
// opened through the hub (the console's link, the session handed over to
// the instance's host) and reached through the agent's one connection.
// With an unsaved edit in the editor, the agent is killed (its link cut):
// the editor shows Node-RED's "lost connection" and stays loaded with the
// edit, never sent to a login page; the agent comes back, the editor
// reconnects by itself, and a Deploy from it reaches the site's Node-RED.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, mkdirSync, writeFileSync, readFileSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  startRedwall, launchBrowser, watchPage, saveScreenshot, screenshotOnFailure, api, apiLogin, PASSWORD,
  newContext, protocolOf, PROTOCOL, freePort, SCREENSHOTS,
} from "./lib/harness.mjs";
import { AGENT_BINARY, enrolAgent, runAgent, killAgent, stopAgent, alive, agentLogTail } from "./lib/agent.mjs";

const INSTANCE = "plant-a";
const AGENT = "site-1";
const NODE_NAME = "unsaved while the site was away";

let redwall;
let browser;
let context;
let consolePage; // the Owner's console
let editor; // the instance's editor, through the hub
let watch; // CSP violations and errors of the console page
let editorWatch;
const state = {};

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function logFile() {
  return join(state.work, "agent.log");
}

/** Fails with what the agent said. */
function failWith(message) {
  assert.fail(`${message}\n${agentLogTail(logFile())}`);
}

/**
 * Waits until `ready()` holds, checking every `every` ms until `seconds`
 * have passed; else fails with `describe()`'s account.
 */
async function until(what, ready, describe, { seconds = 60, every = 250 } = {}) {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    if (await ready()) return;
    if (Date.now() > deadline) failWith(`after ${seconds} s, not ${what}: ${await describe()}`);
    await sleep(every);
  }
}

/** The API's view of the instance. */
async function instanceView() {
  const r = await api(redwall.baseUrl, "GET", `/api/v1/teams/${state.team}/instances/${INSTANCE}`, undefined,
    state.session);
  assert.equal(r.status, 200, r.text);
  return r.json;
}

/** The API's view of the agent. */
async function agentView() {
  const r = await api(redwall.baseUrl, "GET", `/api/v1/teams/${state.team}/agents/${AGENT}`, undefined,
    state.session);
  assert.equal(r.status, 200, r.text);
  return r.json;
}

function instancePageUrl() {
  return `${redwall.baseUrl}/teams/${state.team}/instances/${state.instanceId}`;
}

/** Reloads the console's instance page until its status badge says `status`. */
async function consoleShows(status, seconds = 60) {
  await until(`the console showing ${INSTANCE} ${status}`, async () => {
    await consolePage.goto(instancePageUrl());
    return (await consolePage.locator(`.team-head [data-status="${status}"]`).count()) === 1;
  }, async () => (await consolePage.locator(".team-head").textContent()).replace(/\s+/g, " "),
  { seconds, every: 500 });
}

/** What the editor's page holds: the edit, the model's state, the notifications. */
async function editorState() {
  return editor.evaluate((name) => {
    const found = [];
    RED.nodes.eachNode((n) => { if (n.name === name) found.push({ id: n.id, changed: Boolean(n.changed) }); });
    const notes = [...document.querySelectorAll(".red-ui-notification")]
      .filter((n) => n.offsetParent !== null)
      .map((n) => n.textContent.trim());
    return { url: location.href, dirty: RED.nodes.dirty(), found, notes, title: document.title,
      workspace: Boolean(document.querySelector("#red-ui-workspace-chart")) };
  }, NODE_NAME);
}

/** Whether Node-RED's "lost connection" notification is shown. */
async function lostConnectionShown() {
  return (await editorState()).notes.some((t) => /Lost connection to server/i.test(t));
}

describe("the editor of an instance on a remote agent", () => {
  before(async () => {
    assert.ok(existsSync(AGENT_BINARY), `${AGENT_BINARY} is missing: build it with cargo build -p redwall-agent`);
    redwall = await startRedwall({ instances: true });
    browser = await launchBrowser();
    // Set-up through the API (what the other browser tests prove by hand):
    // the admin, a team, and the agent enrolled with a bundle (the agents
    // page's own provisioning is agents.test.mjs's).
    const setup = await api(redwall.baseUrl, "POST", "/api/v1/setup",
      { setup_token: redwall.setupToken, username: "admin", password: PASSWORD });
    assert.equal(setup.status, 201, setup.text);
    state.session = await apiLogin(redwall.baseUrl, "admin", PASSWORD);
    const team = await api(redwall.baseUrl, "POST", "/api/v1/teams", { name: "Plant ops" }, state.session);
    assert.equal(team.status, 201, team.text);
    state.team = team.json.id;
    state.work = mkdtempSync(join(tmpdir(), "redwall-agent-editor-"));
    const token = await api(redwall.baseUrl, "POST", `/api/v1/teams/${state.team}/agent-tokens`,
      { hub_url: redwall.baseUrl }, state.session);
    assert.equal(token.status, 201, token.text);
    state.bundleFile = join(state.work, "bundle.txt");
    writeFileSync(state.bundleFile, token.json.bundle);
    state.dir = join(state.work, "state");
    const out = enrolAgent({ name: AGENT, bundleFile: state.bundleFile, dir: state.dir,
      nodeRedPort: await freePort() });
    assert.match(out, new RegExp(`enrolled as ${AGENT}`));
    state.agent = runAgent({ dir: state.dir, logFile: logFile() });
    await until(`${AGENT} online with its Node-RED running`, async () => {
      if (!alive(state.agent)) failWith(`the agent exited (${state.agent.exitCode})`);
      const v = await agentView();
      return v.online && v.node_red === "running";
    }, async () => JSON.stringify(await agentView()), { seconds: 120, every: 500 });
  });

  after(async () => {
    await stopAgent(state.agent);
    await browser?.close();
    mkdirSync(SCREENSHOTS, { recursive: true });
    if (redwall) writeFileSync(join(SCREENSHOTS, "agent-editor-redwall.log"), redwall.logs());
    if (state.work) {
      try { writeFileSync(join(SCREENSHOTS, "agent-editor-agent.log"), readFileSync(logFile())); } catch { /* none */ }
      rmSync(state.work, { recursive: true, force: true });
    }
    await redwall?.stop();
  });

  it("an Owner makes the agent's Node-RED an instance from the new-instance page", async () => {
    context = await newContext(browser);
    consolePage = await context.newPage();
    consolePage.setDefaultTimeout(20_000);
    watch = await watchPage(consolePage);
    await screenshotOnFailure(consolePage, "agent-instance-new", async () => {
      await consolePage.goto(`${redwall.baseUrl}/login`);
      await consolePage.getByLabel("Username").fill("admin");
      await consolePage.getByLabel("Password").fill(PASSWORD);
      await consolePage.getByRole("button", { name: "Log in" }).click();
      await consolePage.getByRole("heading", { name: "Your teams" }).waitFor();
      assert.equal(await protocolOf(consolePage), PROTOCOL);
      await consolePage.goto(`${redwall.baseUrl}/teams/${state.team}`);
      await consolePage.getByRole("link", { name: "New instance" }).click();
      await consolePage.getByRole("heading", { name: "New instance" }).waitFor();
      const runsOn = consolePage.getByLabel("Runs on");
      assert.equal(await runsOn.inputValue(), "", "this hub is the default");
      assert.deepEqual(
        (await runsOn.locator("option").allTextContents()).map((t) => t.trim()),
        ["this hub", `agent ${AGENT}`]);
      await consolePage.getByLabel("Instance name").fill(INSTANCE);
      await runsOn.selectOption({ label: `agent ${AGENT}` });
      // The start box stays as it was: it is for this hub only, and says so.
      assert.match(await consolePage.locator("label.check").textContent(), /on this hub only/);
      await saveScreenshot(consolePage, "instance-new-on-agent");
      await consolePage.getByRole("button", { name: "Create instance" }).click();
      await consolePage.getByRole("heading", { name: INSTANCE }).waitFor();
      state.instanceId = consolePage.url().match(/\/instances\/([0-9a-f]{32})/)[1];
      assert.match(await consolePage.getByTestId("on-agent").textContent(), new RegExp(`on agent ${AGENT}`));
      assert.match(await consolePage.getByTestId("agent-note").textContent(),
        /its process, environment and network are the site's, and it is restarted through its agent/);
      assert.equal(await consolePage.getByTestId("agent-note").getByRole("link", { name: "remote agents" }).count(), 1);
      // Nothing only this hub can do for an instance.
      for (const name of ["Start", "Stop", "Restart", "Save environment", "Save options"]) {
        assert.equal(await consolePage.getByRole("button", { name, exact: true }).count(), 0, `a ${name} button`);
      }
      assert.equal(await consolePage.locator("#env, #logs, #options").count(), 0);
      // What stays: route rules, API keys, the editor.
      await consolePage.getByRole("button", { name: "Save rules" }).waitFor();
      await consolePage.getByRole("button", { name: "Create key" }).waitFor();
      await consolePage.getByTestId("open-editor").waitFor();
    });
    const v = await instanceView();
    assert.equal(v.agent, AGENT, JSON.stringify(v));
  });

  it("the agent takes the instance's keys; the console shows it running on the agent", async () => {
    await until("the agent's Node-RED made the hub's instance",
      async () => readFileSync(logFile(), "utf8").includes(`Node-RED is now the hub's instance ${INSTANCE}`),
      async () => "no such line in the agent's log", { seconds: 90 });
    await screenshotOnFailure(consolePage, "agent-instance-running", async () => {
      await consoleShows("running", 90);
      const fact = consolePage.getByTestId("agent-link");
      assert.equal(await fact.getAttribute("data-link"), "online");
      assert.match(await fact.textContent(), /its Node-RED is running/);
      await saveScreenshot(consolePage, "instance-on-agent");
      // The team's list says where it runs.
      await consolePage.goto(`${redwall.baseUrl}/teams/${state.team}`);
      const row = consolePage.locator(`#instances tr[data-instance="${state.instanceId}"]`);
      assert.match(await row.textContent(), new RegExp(`on agent ${AGENT}`));
      await consolePage.goto(instancePageUrl());
    });
  });

  it("its editor opens through the hub and the agent's tunnel", async () => {
    const href = await consolePage.getByTestId("open-editor").getAttribute("href");
    assert.match(href, new RegExp(`^/api/v1/instance-login\\?instance=${INSTANCE}&`));
    // The console's link, in a tab of its own (the console's CSP is checked
    // on the console's tab; the editor is Node-RED's page).
    editor = await context.newPage();
    editor.setDefaultTimeout(30_000);
    editorWatch = await watchPage(editor);
    state.navigations = [];
    editor.on("framenavigated", (f) => { if (f === editor.mainFrame()) state.navigations.push(f.url()); });
    // Node-RED's comms WebSockets, as the browser sees them.
    state.sockets = [];
    editor.on("websocket", (ws) => {
      if (!/\/editor\/comms$/.test(ws.url())) return;
      const s = { url: ws.url(), opened: Date.now(), closed: null, sent: 0, received: 0 };
      state.sockets.push(s);
      // The editor sends its subscriptions once the socket is open.
      ws.on("framesent", () => { s.sent += 1; });
      ws.on("framereceived", () => { s.received += 1; });
      ws.on("close", () => { s.closed = Date.now(); });
    });
    await screenshotOnFailure(editor, "agent-editor-open", async () => {
      // Node-RED may be finishing its restart as the hub's instance: the
      // hub says so (502/503) until it answers.
      await until("the editor answering through the hub", async () => {
        const answer = await editor.goto(new URL(href, redwall.baseUrl).href);
        return answer !== null && answer.status() === 200;
      }, async () => `${editor.url()}: ${(await editor.content()).slice(0, 300)}`, { seconds: 60, every: 1000 });
      assert.match(editor.url(), new RegExp(`^https://${INSTANCE}\\.localhost:\\d+/editor/`),
        "the editor is on the instance's own origin");
      assert.equal(await protocolOf(editor), PROTOCOL);
      // Loaded: the workspace shown, the flows read, the comms connected.
      await editor.locator("#red-ui-workspace-chart").waitFor({ state: "visible", timeout: 60_000 });
      await editor.waitForFunction(() => window.RED && RED.nodes && RED.workspaces
        && RED.workspaces.active() && RED.nodes.getType("comment") && RED.nodes.version(),
      null, { timeout: 60_000 });
      await until("the comms WebSocket open", async () => state.sockets.some((s) => s.closed === null && s.sent > 0),
        async () => JSON.stringify(state.sockets));
      assert.equal(await editor.evaluate(() => RED.nodes.dirty()), false, "nothing changed yet");
      await saveScreenshot(editor, "agent-editor-loaded");
    });
  });

  it("an unsaved edit survives the agent's link dropping, with no login page", async () => {
    await screenshotOnFailure(editor, "agent-editor-offline", async () => {
      // The edit: a comment node added to the open flow, as the palette does,
      // and not deployed.
      state.nodeId = await editor.evaluate((name) => {
        const id = RED.nodes.id();
        const added = RED.nodes.import([{ id, type: "comment", z: RED.workspaces.active(), name, info: "",
          x: 260, y: 140, wires: [] }]);
        for (const n of added.nodes) { n.changed = true; n.dirty = true; }
        RED.history.push({ t: "add", nodes: added.nodes.map((n) => n.id), dirty: RED.nodes.dirty() });
        RED.nodes.dirty(true);
        RED.view.redraw(true);
        return id;
      }, NODE_NAME);
      const edited = await editorState();
      assert.equal(edited.dirty, true, JSON.stringify(edited));
      assert.deepEqual(edited.found, [{ id: state.nodeId, changed: true }]);
      // Shown on the workspace, and the deploy button offers it.
      await editor.waitForFunction((id) => [...document.querySelectorAll("#red-ui-workspace-chart .red-ui-flow-node-group")]
        .some((g) => g.__data__ && g.__data__.id === id), state.nodeId);
      await editor.locator("#red-ui-header-button-deploy:not(.disabled)").waitFor();
      await saveScreenshot(editor, "agent-editor-unsaved-edit");
      const before = state.sockets.filter((s) => s.closed === null);
      assert.equal(before.length, 1, JSON.stringify(state.sockets));
      state.navigationsBefore = state.navigations.length;

      // The link is cut: the agent dies at once.
      await killAgent(state.agent);
      state.killedAt = Date.now();
      await until("the comms WebSocket closed", async () => before[0].closed !== null,
        async () => JSON.stringify(state.sockets), { seconds: 30 });
      await until("Node-RED's lost-connection notification", lostConnectionShown,
        async () => JSON.stringify(await editorState()), { seconds: 30 });
      // The editor's requests now get the hub's clear answer.
      const offline = await editor.evaluate(async () => {
        const r = await fetch("settings", { headers: { accept: "application/json" } });
        return { status: r.status, body: await r.text() };
      });
      assert.equal(offline.status, 502, JSON.stringify(offline));
      assert.equal(JSON.parse(offline.body).error.code, "agent_offline", offline.body);
      // The page stays: same document, the edit kept, no login page.
      const away = await editorState();
      assert.equal(away.url, state.navigations[state.navigations.length - 1], JSON.stringify(away));
      assert.match(away.url, new RegExp(`^https://${INSTANCE}\\.localhost:\\d+/editor/`));
      assert.equal(state.navigations.length, state.navigationsBefore, `navigated: ${state.navigations.join(" ")}`);
      assert.equal(away.dirty, true, JSON.stringify(away));
      assert.deepEqual(away.found, [{ id: state.nodeId, changed: true }]);
      assert.equal(await editor.locator("#red-ui-workspace-chart").isVisible(), true);
      assert.equal(await editor.locator('input[type="password"], #node-dialog-login-username').count(), 0,
        "a login form is shown");
      await saveScreenshot(editor, "agent-editor-lost-connection");
    });
    // The console says the agent is away.
    await screenshotOnFailure(consolePage, "agent-instance-offline", async () => {
      await consoleShows("offline", 30);
      const fact = consolePage.getByTestId("agent-link");
      assert.equal(await fact.getAttribute("data-link"), "offline");
      assert.match(await fact.textContent(), /offline: not connected to this hub/);
      await saveScreenshot(consolePage, "instance-on-agent-offline");
    });
  });

  it("the agent comes back: the editor reconnects by itself, the edit is still there, and deploys", async () => {
    state.agent = runAgent({ dir: state.dir, logFile: logFile() });
    await screenshotOnFailure(editor, "agent-editor-reconnected", async () => {
      const reopened = () => state.sockets.filter((s) => s.opened > state.killedAt && s.closed === null && s.sent > 0);
      await until("Node-RED's comms reconnected", async () => {
        if (!alive(state.agent)) failWith(`the agent exited (${state.agent.exitCode})`);
        return reopened().length === 1 && !(await lostConnectionShown());
      }, async () => `${JSON.stringify(state.sockets)} ${JSON.stringify(await editorState())}`,
      { seconds: 120, every: 500 });
      const back = await editorState();
      assert.equal(back.dirty, true, JSON.stringify(back));
      assert.deepEqual(back.found, [{ id: state.nodeId, changed: true }]);
      assert.equal(state.navigations.length, state.navigationsBefore, `navigated: ${state.navigations.join(" ")}`);
      await saveScreenshot(editor, "agent-editor-reconnected");

      // Deploy, from the editor's own button.
      const deployed = editor.waitForResponse((r) => r.request().method() === "POST"
        && new URL(r.url()).pathname === "/editor/flows", { timeout: 60_000 });
      await editor.locator("#red-ui-header-button-deploy").click();
      const answer = await deployed;
      assert.equal(answer.status(), 200, await answer.text());
      await editor.waitForFunction(() => RED.nodes.dirty() === false, null, { timeout: 30_000 });
      await editor.locator(".red-ui-notification", { hasText: "Successfully deployed" }).waitFor();
      await editor.locator("#red-ui-header-button-deploy.disabled").waitFor();
      await saveScreenshot(editor, "agent-editor-deployed");

      // Through the hub, the site's Node-RED runs the new node.
      const flows = await editor.evaluate(async () => {
        const r = await fetch("flows", { headers: { accept: "application/json", "Node-RED-API-Version": "v2" } });
        return { status: r.status, body: await r.json() };
      });
      assert.equal(flows.status, 200, JSON.stringify(flows));
      const node = flows.body.flows.find((n) => n.id === state.nodeId);
      assert.ok(node, `the deployed flows: ${JSON.stringify(flows.body)}`);
      assert.equal(node.type, "comment");
      assert.equal(node.name, NODE_NAME);
    });
    // The console sees it running again.
    await screenshotOnFailure(consolePage, "agent-instance-back", async () => {
      await consoleShows("running", 60);
      await saveScreenshot(consolePage, "instance-on-agent-back");
    });
  });

  it("the console pages break none of the CSP", async (t) => {
    assert.deepEqual(await watch.cspViolations(), []);
    assert.deepEqual(watch.errors().filter((e) => !/favicon/.test(e)), []);
    // The editor is Node-RED's own page: what it reported, for the record
    // (its failed requests while the agent was away are expected).
    t.diagnostic(`the editor's CSP reports: ${JSON.stringify(await editorWatch.cspViolations())}`);
    t.diagnostic(`the editor's errors: ${JSON.stringify(editorWatch.errors())}`);
  });
});
