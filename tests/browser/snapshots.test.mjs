// Snapshots, rollback and pipelines in a real Chromium, on the defaults as
// shipped (HTTPS, self-signed, HTTP/2; as root, one OS user per instance):
// a deploy from Node-RED's own editor is snapshotted, compared, rolled back
// and undone from the console; a snapshot goes through a pipeline whose
// production stage needs a second Owner; exports download sealed; pasted
// flows with credentials in the clear are refused until accepted; and a
// snapshot goes to a git repository (a real `git daemon` on loopback) for
// review and comes back edited.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, mkdirSync, readFileSync, writeFileSync, rmSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  startRedwall, launchBrowser, watchPage, saveScreenshot, screenshotOnFailure, api, apiLogin, PASSWORD,
  newContext, protocolOf, PROTOCOL, freePort, SCREENSHOTS,
} from "./lib/harness.mjs";

let redwall;
let browser;
let admin; // the admin's console page (an Owner of the team)
let editor; // the admin's Node-RED editor of "dev", open all along
let watch; // CSP violations and errors of the admin's console page
const state = {};

async function newPage() {
  const context = await newContext(browser);
  const page = await context.newPage();
  page.setDefaultTimeout(20_000);
  // The console asks before a rollback or an approval: the user says yes.
  page.on("dialog", (d) => d.accept());
  return page;
}

async function login(page, username) {
  await page.goto(`${redwall.baseUrl}/login`);
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Log in" }).click();
  await page.getByRole("heading", { name: "Your teams" }).waitFor();
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** What the flow's public endpoint answers now, on the instance's own origin. */
async function greeting(page, instance) {
  const origin = `https://${instance}.localhost:${new URL(redwall.baseUrl).port}`;
  const r = await page.request.fetch(`${origin}/hello`, { ignoreHTTPSErrors: true, failOnStatusCode: false })
    .catch(() => null);
  if (r) return { status: r.status(), text: await r.text() };
  // playwright's own client may not resolve *.localhost; the browser does.
  const p = await page.context().newPage();
  try {
    const answer = await p.goto(`${origin}/hello`);
    return { status: answer.status(), text: await answer.text() };
  } finally {
    await p.close();
  }
}

/** Waits until the endpoint answers `text` (Node-RED loads new flows in the background). */
async function waitForGreeting(page, instance, text) {
  let last;
  for (let i = 0; i < 100; i++) {
    last = await greeting(page, instance);
    if (last.status === 200 && last.text === text) return;
    await sleep(200);
  }
  assert.fail(`${instance}/hello answers ${last.status} ${JSON.stringify(last.text)}, not ${JSON.stringify(text)}`);
}

/** The API's snapshots of an instance, newest first, once there are `count`. */
async function snapshotsOf(instance, count) {
  const session = await apiLogin(redwall.baseUrl, "admin", PASSWORD);
  let last;
  for (let i = 0; i < 150; i++) {
    last = await api(redwall.baseUrl, "GET", `/api/v1/teams/${state.team}/snapshots?instance=${instance}`, undefined, session);
    assert.equal(last.status, 200, last.text);
    if (last.json.length >= count) return last.json;
    await sleep(200);
  }
  assert.fail(`${instance} has ${last.json.length} snapshots, not ${count}`);
}

/** The newest promotion into `stage` of the pipeline "release". */
function promotionRow(page, stage) {
  return page.locator('[data-pipeline="release"] tr[data-promotion]')
    .filter({ has: page.locator("td:nth-child(2)", { hasText: new RegExp(`^${stage}$`) }) }).first();
}

/** Reloads the pipelines page until the promotion into `stage` has `status`. */
async function waitForPromotion(page, stage, status) {
  const row = () => promotionRow(page, stage);
  for (let i = 0; i < 120; i++) {
    if (await row().locator(`[data-status="${status}"]`).count()) return;
    await sleep(500);
    await page.goto(`${redwall.baseUrl}/teams/${state.team}/pipelines`);
  }
  assert.fail(`the promotion into ${stage} is not ${status}: ${await row().textContent()}`);
}

function snapshotsPath(instanceId) {
  return `/teams/${state.team}/instances/${instanceId}/snapshots`;
}

/** The nodes the editor imports: an endpoint whose function answers `greeting`. */
function helloFlow(greetingText) {
  return [
    { id: "t1", type: "tab", label: "Greeter" },
    { id: "h1", type: "http in", z: "t1", name: "", url: "/hello", method: "get", upload: false, swaggerDoc: "", x: 120, y: 80, wires: [["f1"]] },
    { id: "f1", type: "function", z: "t1", name: "greet", func: functionBody(greetingText), outputs: 1, timeout: 0,
      noerr: 0, initialize: "", finalize: "", libs: [], x: 300, y: 80, wires: [["r1"]] },
    { id: "r1", type: "http response", z: "t1", name: "", statusCode: "", headers: {}, x: 480, y: 80, wires: [] },
  ];
}

function functionBody(greetingText) {
  return `const who = "line one";\nmsg.payload = "${greetingText}, " + who;\nreturn msg;`;
}

/** Clicks Node-RED's own Deploy button and waits for its "Successfully deployed". */
async function deployInEditor() {
  await editor.locator("#red-ui-header-button-deploy:not(.disabled)").click();
  const answer = editor.locator(".red-ui-notification").filter({ hasText: /Successfully deployed|Are you sure/ }).first();
  await answer.waitFor({ timeout: 30_000 });
  const text = await answer.textContent();
  assert.match(text, /Successfully deployed/, `Node-RED did not deploy at once: ${text}`);
}

describe("snapshots, rollback and pipelines in the console", () => {
  before(async () => {
    redwall = await startRedwall({ instances: true });
    browser = await launchBrowser();
    // Set-up through the API (what the other browser tests prove by hand).
    const setup = await api(redwall.baseUrl, "POST", "/api/v1/setup",
      { setup_token: redwall.setupToken, username: "admin", password: PASSWORD });
    assert.equal(setup.status, 201, setup.text);
    const session = await apiLogin(redwall.baseUrl, "admin", PASSWORD);
    const team = await api(redwall.baseUrl, "POST", "/api/v1/teams", { name: "Line ops" }, session);
    assert.equal(team.status, 201, team.text);
    state.team = team.json.id;
    // A second Owner, who approves production deploys.
    const olga = await api(redwall.baseUrl, "POST", "/api/v1/users", { username: "olga", password: PASSWORD }, session);
    assert.equal(olga.status, 201, olga.text);
    const invited = await api(redwall.baseUrl, "POST", `/api/v1/teams/${state.team}/invitations`,
      { username: "olga", role: "owner" }, session);
    assert.equal(invited.status, 201, invited.text);
    const olgaSession = await apiLogin(redwall.baseUrl, "olga", PASSWORD);
    const mine = await api(redwall.baseUrl, "GET", "/api/v1/me/invitations", undefined, olgaSession);
    const accepted = await api(redwall.baseUrl, "POST", `/api/v1/me/invitations/${mine.json[0].id}/accept`, {}, olgaSession);
    assert.ok([200, 204].includes(accepted.status), accepted.text);
    state.instances = {};
    for (const name of ["dev", "prod"]) {
      const made = await api(redwall.baseUrl, "POST", `/api/v1/teams/${state.team}/instances`, { name, start: true }, session);
      assert.equal(made.status, 201, made.text);
      state.instances[name] = made.json.id;
      const routes = await api(redwall.baseUrl, "PUT", `/api/v1/teams/${state.team}/instances/${name}/routes`,
        [{ path_prefix: "/hello", policy: { type: "public" } }], session);
      assert.equal(routes.status, 200, routes.text);
    }
    for (const name of ["dev", "prod"]) {
      for (let i = 0; ; i++) {
        const r = await api(redwall.baseUrl, "GET", `/api/v1/teams/${state.team}/instances/${name}`, undefined, session);
        if (r.json?.status?.state === "running") break;
        if (i > 900) assert.fail(`${name} did not start: ${r.text}\n${redwall.logs().slice(-4000)}`);
        await sleep(100);
      }
    }
  });

  after(async () => {
    await browser?.close();
    // Redwall's own log, kept with the screenshots for whoever reads a failure.
    if (redwall) {
      mkdirSync(SCREENSHOTS, { recursive: true });
      writeFileSync(join(SCREENSHOTS, "snapshots-redwall.log"), redwall.logs());
    }
    await redwall?.stop();
    state.gitDaemon?.kill("SIGKILL");
    if (state.gitDir) rmSync(state.gitDir, { recursive: true, force: true });
  });

  it("a deploy from Node-RED's editor is snapshotted, twice", async () => {
    admin = await newPage();
    watch = await watchPage(admin);
    await login(admin, "admin");
    editor = await newPage();
    await screenshotOnFailure(editor, "snapshots-editor-deploy", async () => {
      await login(editor, "admin");
      await editor.goto(`${redwall.baseUrl}/teams/${state.team}/instances/${state.instances.dev}`);
      await editor.getByTestId("open-editor").click();
      await editor.waitForURL(/^https:\/\/dev\.localhost:\d+\/editor\//);
      await editor.locator("#red-ui-header").waitFor({ timeout: 60_000 });
      // Loaded: the editor has the server's flows (and their revision), so
      // what is imported now is not replaced by the first load.
      await editor.waitForFunction(() => window.RED?.nodes?.version?.() && window.RED.workspaces.count() > 0);
      assert.equal(await protocolOf(editor), PROTOCOL);
      // What a user pastes into Import, then Deploy.
      await editor.evaluate((flow) => window.RED.view.importNodes(flow, { generateIds: false }), helloFlow("Hello"));
      await deployInEditor();
      await waitForGreeting(editor, "dev", "Hello, line one");
      const first = await snapshotsOf("dev", 1);
      assert.equal(first[0].kind, "automatic");
      state.hello = first[0].id;

      // An edit of the function, deployed again.
      await editor.evaluate((body) => {
        const node = window.RED.nodes.node("f1");
        node.func = body;
        node.changed = true;
        node.dirty = true;
        window.RED.nodes.dirty(true);
        window.RED.view.redraw(true);
      }, functionBody("Howdy"));
      await deployInEditor();
      await waitForGreeting(editor, "dev", "Howdy, line one");
      const second = await snapshotsOf("dev", 2);
      assert.equal(second[0].kind, "automatic");
      assert.notEqual(second[0].id, state.hello);
      state.howdy = second[0].id;
      await saveScreenshot(editor, "node-red-editor-deployed");
    });

    await screenshotOnFailure(admin, "snapshots-list", async () => {
      await admin.goto(`${redwall.baseUrl}/teams/${state.team}/instances/${state.instances.dev}`);
      await admin.getByTestId("instance-snapshot").getByText(state.howdy.slice(0, 8)).waitFor();
      await admin.getByTestId("instance-snapshot").getByRole("link", { name: "Snapshots" }).click();
      await admin.getByRole("heading", { name: "Snapshots of dev" }).waitFor();
      assert.equal(await protocolOf(admin), PROTOCOL);
      const running = admin.locator(`tr[data-snapshot="${state.howdy}"]`);
      await running.getByTestId("running").waitFor();
      assert.match(await admin.locator(`tr[data-snapshot="${state.hello}"]`).textContent(), /deploy from the editor/);
      await saveScreenshot(admin, "instance-snapshots");
    });
  });

  it("compare shows the function's code as a line diff", async () => {
    await screenshotOnFailure(admin, "snapshots-compare", async () => {
      await admin.locator(`tr[data-snapshot="${state.hello}"]`).getByRole("link", { name: "Compare with running" }).click();
      const compare = admin.getByTestId("compare");
      await compare.waitFor();
      const code = await compare.getByTestId("code-diff").textContent();
      assert.match(code, /^-.*Howdy/m, code);
      assert.match(code, /^\+.*Hello/m, code);
      assert.match(await compare.textContent(), /changed .*greet/);
      await saveScreenshot(admin, "instance-snapshots-compare");
    });
  });

  it("roll back in one step, while the editor stays open, then undo", async () => {
    await screenshotOnFailure(admin, "snapshots-rollback", async () => {
      await admin.goto(`${redwall.baseUrl}${snapshotsPath(state.instances.dev)}`);
      await admin.locator(`tr[data-snapshot="${state.hello}"]`).getByTestId("rollback-link").click();
      const confirm = admin.getByTestId("rollback-confirm");
      await confirm.waitFor();
      assert.match(await confirm.getByTestId("code-diff").textContent(), /Hello/);
      await saveScreenshot(admin, "instance-snapshots-rollback-confirm");
      await confirm.getByTestId("rollback-submit").click();
      const result = admin.getByTestId("deployment-result");
      await result.waitFor({ timeout: 60_000 });
      assert.equal(await result.getAttribute("data-status"), "done", await result.textContent());
      await waitForGreeting(admin, "dev", "Hello, line one");
      await admin.locator(`tr[data-snapshot="${state.hello}"]`).getByTestId("running").waitFor();
      await saveScreenshot(admin, "instance-snapshots-rolled-back");
    });
    // The editor left open learns that the server runs other flows now.
    await screenshotOnFailure(editor, "snapshots-editor-notified", async () => {
      await editor.locator(".red-ui-notification").filter({ hasText: "The flows on the server have been updated" }).last()
        .waitFor({ timeout: 30_000 });
      await saveScreenshot(editor, "node-red-editor-after-rollback");
    });
    await screenshotOnFailure(admin, "snapshots-undo", async () => {
      await admin.getByTestId("undo-result").click();
      const result = admin.getByTestId("deployment-result");
      await result.waitFor({ timeout: 60_000 });
      assert.equal(await result.getAttribute("data-status"), "done", await result.textContent());
      await waitForGreeting(admin, "dev", "Howdy, line one");
      // Undo rolled back to what ran before: the editor's own deploy.
      await admin.locator(`tr[data-snapshot="${state.howdy}"]`).getByTestId("running").waitFor();
      const rows = await admin.locator("tr[data-deployment]").count();
      assert.equal(rows, 2, "the rollback and its undo are both listed");
    });
  });

  it("a pipeline's production stage waits for a second Owner's approval", async () => {
    const pipelines = `${redwall.baseUrl}/teams/${state.team}/pipelines`;
    await screenshotOnFailure(admin, "pipelines-create", async () => {
      await admin.goto(`${redwall.baseUrl}/teams/${state.team}`);
      await admin.getByRole("link", { name: "Pipelines and deploy targets" }).click();
      await admin.getByRole("heading", { name: "Pipelines and deploy targets" }).waitFor();
      await admin.getByTestId("pipeline-form").getByLabel("Name").fill("release");
      await admin.getByLabel("Stages, in order, one per line").fill("dev instance:dev\nprod instance:prod approval");
      await admin.getByRole("button", { name: "Create pipeline" }).click();
      const pipeline = admin.locator('[data-pipeline="release"]');
      await pipeline.locator('[data-stage="prod"]').getByTestId("approval").waitFor();
      // Into dev: dev runs it at once (it already did; it loads it again).
      await pipeline.locator("summary", { hasText: "Promote a snapshot" }).click();
      await pipeline.getByLabel("Snapshot id").fill(state.howdy);
      await pipeline.getByLabel("Into stage").selectOption("dev");
      await pipeline.getByRole("button", { name: "Promote" }).click();
      await waitForPromotion(admin, "dev", "done");
      // Into prod: it waits.
      await admin.goto(pipelines);
      const again = admin.locator('[data-pipeline="release"]');
      await again.locator("summary", { hasText: "Promote a snapshot" }).click();
      await again.getByLabel("Snapshot id").fill(state.howdy);
      await again.getByLabel("Into stage").selectOption("prod");
      await again.getByRole("button", { name: "Promote" }).click();
      const waiting = promotionRow(admin, "prod");
      await waiting.getByTestId("approval-by-other").waitFor();
      assert.match(await waiting.textContent(), /You promoted it: another Owner must approve/);
      assert.equal(await waiting.getByTestId("approve").count(), 0, "the promoter is offered no Approve");
      await saveScreenshot(admin, "team-pipelines-awaiting-approval");
      // What a hand-made form would send, with the promoter's own session
      // and token: refused, and prod runs nothing new.
      const promotion = await waiting.getAttribute("data-promotion");
      const forced = await admin.request.post(`${pipelines}/promotions/${promotion}/approve`, {
        form: { csrf: await admin.locator('input[name="csrf"]').first().inputValue() },
        headers: { origin: redwall.baseUrl },
        maxRedirects: 0,
      });
      assert.equal(forced.status(), 403);
      assert.match(await forced.text(), /an Owner other than the one who promoted it/);
      const prod = await greeting(admin, "prod");
      assert.notEqual(prod.text, "Howdy, line one", "prod deployed without approval");
    });

    const olga = await newPage();
    const olgaWatch = await watchPage(olga);
    await screenshotOnFailure(olga, "pipelines-approve", async () => {
      await login(olga, "olga");
      await olga.goto(pipelines);
      const waiting = promotionRow(olga, "prod");
      await waiting.getByTestId("approve").click();
      await waitForGreeting(olga, "prod", "Howdy, line one");
      await olga.goto(pipelines);
      const row = promotionRow(olga, "prod");
      await row.getByText("approved by olga").waitFor();
      await saveScreenshot(olga, "team-pipelines-approved");
    });
    assert.deepEqual(await olgaWatch.cspViolations(), []);
    await olga.context().close();
    // prod shows which snapshot it runs: the one promoted.
    await admin.goto(`${redwall.baseUrl}/teams/${state.team}/instances/${state.instances.prod}`);
    await admin.getByTestId("instance-snapshot").getByText(state.howdy.slice(0, 8)).waitFor();
  });

  it("an export downloads sealed; pasted credentials in the clear are refused until accepted", async () => {
    await screenshotOnFailure(admin, "snapshots-export-import", async () => {
      await admin.goto(`${redwall.baseUrl}${snapshotsPath(state.instances.dev)}`);
      const form = admin.getByTestId("export-form");
      await form.getByLabel("Snapshot").selectOption(state.howdy);
      await form.getByLabel(/^Passphrase/).fill("a long export passphrase");
      const [download] = await Promise.all([
        admin.waitForEvent("download"),
        form.getByRole("button", { name: "Download the sealed export" }).click(),
      ]);
      const file = readFileSync(await download.path());
      assert.ok(file.length > 100, `export of ${file.length} bytes`);
      assert.ok(!file.includes("Howdy"), "the flows are sealed, not in the clear");

      const secret = "plc-password-in-the-clear";
      const flows = [...helloFlow("Imported"),
        { id: "b1", type: "mqtt-broker", name: "plant", broker: "127.0.0.1", port: "1", autoConnect: false,
          credentials: { user: "plc", password: secret } }];
      const importForm = admin.getByTestId("import-form");
      await importForm.getByLabel(/Node-RED flows file/).fill(JSON.stringify(flows));
      await importForm.getByLabel(/^Note/).fill("from the vendor");
      await importForm.getByTestId("import").click();
      await admin.getByTestId("import-error").waitFor();
      assert.match(await admin.getByTestId("import-error").textContent(), /clear/i);
      // The pasted file is kept: ticking the box is enough.
      const form2 = admin.getByTestId("import-form");
      assert.equal(await form2.getByLabel(/Node-RED flows file/).inputValue(), JSON.stringify(flows));
      await form2.getByLabel("Accept credentials in the clear").check();
      await form2.getByTestId("import").click();
      await admin.getByText("imported as a new snapshot").waitFor();
      const imported = admin.locator("tr[data-snapshot]", { hasText: "from the vendor" });
      assert.match(await imported.textContent(), /imported/);
      await saveScreenshot(admin, "instance-snapshots-imported");
    });
  });

  it("git: push a snapshot for review, pull the reviewed branch, roll it out", async () => {
    // A real git server on loopback, as a team's self-hosted one would be.
    state.gitDir = mkdtempSync(join(tmpdir(), "redwall-git-"));
    execFileSync("git", ["init", "-q", "--bare", "-b", "main", join(state.gitDir, "flows.git")]);
    writeFileSync(join(state.gitDir, "flows.git", "git-daemon-export-ok"), "");
    const gitPort = await freePort();
    state.gitDaemon = spawn("git", ["daemon", "--reuseaddr", "--listen=127.0.0.1", `--port=${gitPort}`,
      `--base-path=${state.gitDir}`, "--enable=receive-pack", "--export-all", state.gitDir],
    { stdio: "ignore" });
    const url = `git://127.0.0.1:${gitPort}/flows.git`;
    for (let i = 0; ; i++) {
      try {
        execFileSync("git", ["ls-remote", url], { stdio: "ignore" });
        break;
      } catch (e) {
        if (i > 100) throw e;
        await sleep(100);
      }
    }

    await screenshotOnFailure(admin, "snapshots-git", async () => {
      await admin.goto(`${redwall.baseUrl}/teams/${state.team}/pipelines#git`);
      await admin.getByTestId("git-unset").waitFor();
      await admin.getByLabel("Repository URL").fill(url);
      await admin.getByLabel("Push branch", { exact: true }).fill("review");
      await admin.getByLabel("Pull branch (not the push branch)").fill("main");
      await admin.getByTestId("git-save").click();
      await admin.getByTestId("git-url").getByText(url).waitFor();

      await admin.goto(`${redwall.baseUrl}${snapshotsPath(state.instances.dev)}`);
      await admin.locator(`tr[data-snapshot="${state.howdy}"]`).getByTestId("git-push").click();
      const pushed = admin.locator('[data-testid="git-result"][data-git="pushed"]');
      await pushed.waitFor({ timeout: 60_000 });
      const commit = (await pushed.getByTestId("git-commit").textContent()).trim();

      // The reviewer edits the function's code in the review branch and
      // merges it into main.
      const work = join(state.gitDir, "work");
      execFileSync("git", ["clone", "-q", "-b", "review", url, work]);
      assert.equal(execFileSync("git", ["-C", work, "rev-parse", "HEAD"]).toString().trim(), commit);
      const js = execFileSync("git", ["-C", work, "ls-files", "*.js"]).toString().trim().split("\n")
        .find((f) => /greet/.test(f));
      assert.ok(js, `the function is a .js file of its own: ${execFileSync("git", ["-C", work, "ls-files"])}`);
      const code = readFileSync(join(work, js), "utf8");
      assert.match(code, /Howdy/);
      writeFileSync(join(work, js), code.replace("Howdy", "Reviewed"));
      execFileSync("git", ["-C", work, "-c", "user.name=Rev", "-c", "user.email=rev@example.com",
        "commit", "-q", "-am", "Reviewed greeting"]);
      execFileSync("git", ["-C", work, "push", "-q", "origin", "HEAD:main"]);

      await admin.getByTestId("git-pull").click();
      const pulled = admin.locator('[data-testid="git-result"][data-git="pulled"]');
      await pulled.waitFor({ timeout: 60_000 });
      const newest = (await snapshotsOf("dev", 1))[0];
      await admin.goto(`${redwall.baseUrl}${snapshotsPath(state.instances.dev)}?rollback=${newest.id}#confirm`);
      const confirm = admin.getByTestId("rollback-confirm");
      assert.match(await confirm.getByTestId("code-diff").textContent(), /Reviewed/);
      await confirm.getByTestId("rollback-submit").click();
      const result = admin.getByTestId("deployment-result");
      await result.waitFor({ timeout: 60_000 });
      assert.equal(await result.getAttribute("data-status"), "done", await result.textContent());
      await waitForGreeting(admin, "dev", "Reviewed, line one");
      await saveScreenshot(admin, "instance-snapshots-git");
    });
  });

  it("the snapshot and pipeline pages break none of the CSP", async () => {
    assert.deepEqual(await watch.cspViolations(), []);
    // The refused import answers with its page and status 422, which the
    // browser logs; nothing else may fail.
    const refusals = /Failed to load resource: the server responded with a status of 422/;
    assert.deepEqual(watch.errors().filter((e) => !/favicon/.test(e) && !refusals.test(e)), []);
    if (process.getuid() === 0) {
      assert.ok(readdirSync("/run/netns").filter((n) => /^redwall-\d+$/.test(n)).length >= 2,
        "each instance runs in its own network namespace");
    }
  });
});
