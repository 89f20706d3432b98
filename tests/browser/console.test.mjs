// The console in a real Chromium, as people use it: first run, login with
// MFA, teams and invitations, roles, instances, the editor through the
// proxy, secrets, logout; and every main page under the strict CSP.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { readdirSync } from "node:fs";
import {
  startRedwall, launchBrowser, watchPage, saveScreenshot, screenshotOnFailure, api, apiLogin, PASSWORD,
  newContext, protocolOf, PROTOCOL,
} from "./lib/harness.mjs";
import { totp } from "./lib/totp.mjs";

let redwall;
let browser;
let admin; // the admin's page, signed in
const state = {};

/** A new browser profile: its own cookies. */
async function newPage() {
  const context = await newContext(browser);
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  return page;
}

async function login(page, username, password = PASSWORD) {
  await page.goto(`${redwall.baseUrl}/login`);
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Log in" }).click();
}

/** The CSRF token the page's forms carry. */
async function csrfOf(page) {
  return page.locator('input[name="csrf"]').first().inputValue();
}

describe("the Redwall console", () => {
  before(async () => {
    redwall = await startRedwall({ instances: true });
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await redwall?.stop();
  });

  it("first run: the setup token creates the first admin, who is offered MFA", async () => {
    admin = await newPage();
    await screenshotOnFailure(admin, "first-run", async () => {
      await admin.goto(`${redwall.baseUrl}/`);
      assert.match(admin.url(), /\/login\?next=/, "signed out, the console asks to log in");
      await admin.goto(`${redwall.baseUrl}/setup`);
      assert.equal(await protocolOf(admin), PROTOCOL, "the console is spoken to as browsers do");
      await saveScreenshot(admin, "setup");
      await admin.getByLabel("Setup token").fill(redwall.setupToken);
      await admin.getByLabel("Administrator username").fill("admin");
      await admin.getByLabel("Password", { exact: true }).fill(PASSWORD);
      await admin.getByLabel("Password again").fill(PASSWORD + "x");
      await admin.getByRole("button", { name: "Create administrator" }).click();
      await assert.doesNotReject(admin.getByText("The two passwords differ.").waitFor());
      assert.equal(await admin.getByLabel("Administrator username").inputValue(), "admin", "typed text is kept");
      assert.equal(await admin.getByLabel("Setup token").inputValue(), "", "secrets are not");
      await admin.getByLabel("Setup token").fill(redwall.setupToken);
      await admin.getByLabel("Password", { exact: true }).fill(PASSWORD);
      await admin.getByLabel("Password again").fill(PASSWORD);
      await admin.getByRole("button", { name: "Create administrator" }).click();
      await admin.waitForURL(/\/account\/mfa\?first_run=1/);
      await admin.getByText("strongly recommended").waitFor();
      await saveScreenshot(admin, "first-run-mfa-offer");
      await admin.getByTestId("skip-mfa").click();
      await admin.getByRole("heading", { name: "Your teams" }).waitFor();
      // The token worked once only.
      const again = await api(redwall.baseUrl, "POST", "/api/v1/setup",
        { setup_token: redwall.setupToken, username: "second", password: PASSWORD });
      assert.equal(again.status, 401);
    });
  });

  it("a wrong password says so, and keeps the username", async () => {
    const page = await newPage();
    await screenshotOnFailure(page, "wrong-password", async () => {
      await login(page, "admin", "not-the-password-at-all");
      const message = page.getByTestId("login-error");
      await message.waitFor();
      assert.match(await message.textContent(), /username or password is incorrect/);
      assert.equal(await page.getByLabel("Username").inputValue(), "admin");
      assert.equal(await page.getByLabel("Password").inputValue(), "");
      await saveScreenshot(page, "login-wrong-password");
    });
    await page.context().close();
  });

  it("enrol MFA with the QR code, keep the recovery codes, then log in with a code", async () => {
    const setup = await apiLogin(redwall.baseUrl, "admin", PASSWORD);
    const created = await api(redwall.baseUrl, "POST", "/api/v1/users", { username: "mia", password: PASSWORD }, setup);
    assert.equal(created.status, 201, created.text);
    const page = await newPage();
    await screenshotOnFailure(page, "mfa", async () => {
      await login(page, "mia");
      await page.getByRole("heading", { name: "Your teams" }).waitFor();
      await page.getByRole("link", { name: "Account" }).click();
      await page.getByRole("link", { name: "Two-step verification" }).click();
      await page.getByRole("button", { name: "Set up an authenticator app" }).click();
      const qr = page.getByTestId("mfa-qr");
      await qr.waitFor();
      assert.ok(await qr.evaluate((img) => img.complete && img.naturalWidth > 0), "the QR code is drawn");
      await saveScreenshot(page, "account-mfa-enrol");
      const secret = (await page.getByTestId("mfa-secret").textContent()).trim();
      await page.getByLabel("Code from your app").fill("123456");
      await page.getByRole("button", { name: "Turn on" }).click();
      await page.locator(".field-error").waitFor();
      await page.getByTestId("mfa-qr").waitFor();
      await page.getByLabel("Code from your app").fill(totp(secret));
      await page.getByRole("button", { name: "Turn on" }).click();
      const codes = page.getByTestId("recovery-codes");
      await codes.waitFor();
      const shown = (await codes.textContent()).trim().split("\n");
      assert.ok(shown.length >= 8, `recovery codes: ${shown.length}`);
      await saveScreenshot(page, "account-mfa-recovery-codes");
      const [download] = await Promise.all([
        page.waitForEvent("download"),
        page.getByRole("button", { name: "Download as a text file" }).click(),
      ]);
      assert.equal(download.suggestedFilename(), "redwall-recovery-codes.txt");
      const file = await readFile(await download.path(), "utf8");
      assert.deepEqual(file.trim().split("\n"), shown);
      // Shown once: the page again no longer has them.
      await page.goto(`${redwall.baseUrl}/account/mfa`);
      await page.getByText("Two-step verification is on").waitFor();
      assert.equal(await page.getByTestId("recovery-codes").count(), 0);
      assert.ok(!(await page.content()).includes(shown[0]));

      await page.getByTestId("logout").click();
      await login(page, "mia");
      await page.getByRole("heading", { name: "Two-step verification" }).waitFor();
      await saveScreenshot(page, "login-mfa-step");
      await page.getByLabel("Code").fill("000000");
      await page.getByRole("button", { name: "Verify" }).click();
      await page.getByTestId("login-error").waitFor();
      // The next 30-second step: the current one was spent on enrolment.
      await page.getByLabel("Code").fill(totp(secret, Date.now() + 30_000));
      await page.getByRole("button", { name: "Verify" }).click();
      await page.getByRole("heading", { name: "Your teams" }).waitFor();
    });
    await page.context().close();
  });

  it("create a team", async () => {
    await screenshotOnFailure(admin, "create-team", async () => {
      await admin.goto(`${redwall.baseUrl}/`);
      await admin.getByRole("link", { name: "New team" }).click();
      await admin.getByLabel("Team name").fill("Plant floor");
      await admin.getByRole("button", { name: "Create team" }).click();
      await admin.getByRole("heading", { name: "Plant floor" }).waitFor();
      state.team = admin.url().match(/\/teams\/([0-9a-f]{32})/)[1];
      assert.equal(await admin.getByTestId("my-role").textContent(), "owner");
    });
  });

  it("invite a user, who accepts", async () => {
    const setup = await apiLogin(redwall.baseUrl, "admin", PASSWORD);
    const created = await api(redwall.baseUrl, "POST", "/api/v1/users", { username: "bob", password: PASSWORD }, setup);
    assert.equal(created.status, 201, created.text);
    await screenshotOnFailure(admin, "invite", async () => {
      await admin.goto(`${redwall.baseUrl}/teams/${state.team}`);
      await admin.getByLabel("Username to invite").fill("bob");
      await admin.getByLabel("Role", { exact: true }).selectOption("viewer");
      await admin.getByRole("button", { name: "Invite" }).click();
      await admin.getByText("The invitation was created").waitFor();
      await admin.getByRole("button", { name: "Copy link" }).waitFor();
      await saveScreenshot(admin, "team");
    });
    const bob = await newPage();
    state.bob = bob;
    await screenshotOnFailure(bob, "accept", async () => {
      await login(bob, "bob");
      await bob.getByText("You have 1 pending invitation").waitFor();
      await bob.getByRole("link", { name: "See invitations" }).click();
      await saveScreenshot(bob, "invitations");
      await bob.getByRole("button", { name: "Accept" }).click();
      await bob.getByRole("heading", { name: "Plant floor" }).waitFor();
      assert.equal(await bob.getByTestId("my-role").textContent(), "viewer");
    });
  });

  it("create and start an instance, and open its editor through the proxy", async () => {
    await screenshotOnFailure(admin, "instance", async () => {
      await admin.goto(`${redwall.baseUrl}/teams/${state.team}`);
      await admin.getByRole("link", { name: "New instance" }).click();
      await admin.getByLabel("Instance name").fill("line-one");
      await admin.getByRole("button", { name: "Create instance" }).click();
      await admin.getByRole("heading", { name: "line-one" }).waitFor();
      state.instance = admin.url().match(/\/instances\/([0-9a-f]{32})/)[1];
      // Live logs: the page follows the instance's log stream.
      await admin.locator("[data-log-state]", { hasText: "live" }).waitFor();
      // The page's own script follows the status until Node-RED is up.
      await admin.locator('.team-head [data-status="running"]').waitFor({ timeout: 90_000 });
      // As shipped, run as root: the instance has its own network namespace
      // (whose links once made this browser abort with ERR_NETWORK_CHANGED).
      if (process.getuid() === 0) {
        assert.ok(readdirSync("/run/netns").some((n) => /^redwall-\d+$/.test(n)), "the instance is not network-isolated");
      }
      await saveScreenshot(admin, "instance");
      await admin.getByTestId("open-editor").click();
      // The editor opens on the instance's own origin, never the console's.
      await admin.waitForURL(/^https:\/\/line-one\.localhost:\d+\/editor\//);
      await admin.locator("#red-ui-header").waitFor({ timeout: 60_000 });
      assert.equal(await protocolOf(admin), PROTOCOL);
      assert.match(await admin.title(), /Node-RED/);
      await saveScreenshot(admin, "node-red-editor-through-proxy");
    });
  });

  it("a flow's page cannot read the console as its visitor (own origin per instance)", async () => {
    await screenshotOnFailure(admin, "instance-origin", async () => {
      const instanceOrigin = new URL(admin.url()).origin;
      // The page a Member could write: it tries to read the console with the
      // visitor's cookie (the security pass's replay, which made its author
      // a platform admin when instances shared the console's origin).
      const page = `<!doctype html><title>steal</title><p id="out">running</p><script>
fetch(${JSON.stringify(redwall.baseUrl)} + "/api/v1/me", { credentials: "include" })
  .then((r) => r.text()).then((t) => { document.getElementById("out").textContent = "READ " + t; })
  .catch(() => { document.getElementById("out").textContent = "BLOCKED"; });
</script>`;
      const flows = [
        { id: "t1", type: "tab", label: "T" },
        { id: "h1", type: "http in", z: "t1", url: "/steal", method: "get", upload: false, swaggerDoc: "", wires: [["f1"]] },
        { id: "f1", type: "function", z: "t1", outputs: 1, wires: [["r1"]],
          func: `msg.payload = ${JSON.stringify(page)}; msg.headers = { "content-type": "text/html" }; return msg;` },
        { id: "r1", type: "http response", z: "t1", statusCode: "", headers: {}, wires: [] },
      ];
      // Deployed from the editor's page, with the session the console handed over.
      const deployed = await admin.evaluate(async (body) => {
        const r = await fetch("/editor/flows", {
          method: "POST", body,
          headers: { "content-type": "application/json", "node-red-deployment-type": "full" },
        });
        return r.status;
      }, JSON.stringify(flows));
      assert.ok([200, 204].includes(deployed), `deploy: ${deployed}`);
      const session = await apiLogin(redwall.baseUrl, "admin", PASSWORD);
      const routes = await api(redwall.baseUrl, "PUT",
        `/api/v1/teams/${state.team}/instances/line-one/routes`,
        [{ path_prefix: "/steal", policy: { type: "public" } }], session);
      assert.equal(routes.status, 200, routes.text);
      let answer;
      for (let i = 0; i < 50; i++) {
        answer = await admin.goto(`${instanceOrigin}/steal`);
        if (answer.status() === 200) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal(answer.status(), 200);
      await admin.locator("#out", { hasText: /BLOCKED|READ/ }).waitFor();
      assert.equal(await admin.locator("#out").textContent(), "BLOCKED",
        "the console's answer is not readable from an instance's page");
      // Nothing of the instance is served on the console's own origin.
      const onConsole = await admin.goto(`${redwall.baseUrl}/i/line-one/steal`);
      assert.equal(onConsole.status(), 404);
    });
  });

  it("a Viewer sees no start or stop button, and a forced post is refused", async () => {
    const bob = state.bob;
    const path = `/teams/${state.team}/instances/${state.instance}`;
    await screenshotOnFailure(bob, "viewer", async () => {
      await bob.goto(redwall.baseUrl + path);
      await bob.getByRole("heading", { name: "line-one" }).waitFor();
      assert.equal(await bob.getByRole("button", { name: "Stop" }).count(), 0);
      assert.equal(await bob.getByRole("button", { name: "Start" }).count(), 0);
      assert.equal(await bob.getByRole("button", { name: "Save environment" }).count(), 0);
      // What a hand-made form would send, with Bob's own valid session and token.
      const forced = await bob.request.post(`${redwall.baseUrl}${path}/stop`, {
        form: { csrf: await csrfOf(bob), form_id: "forced-0123456789abcdef" },
        headers: { origin: redwall.baseUrl },
        maxRedirects: 0,
      });
      assert.equal(forced.status(), 403);
      const status = await api(redwall.baseUrl, "GET", `/api/v1${path}`, undefined,
        await apiLogin(redwall.baseUrl, "admin", PASSWORD));
      assert.equal(status.json.desired_state, "running", "the instance kept running");
    });
    // The Owner makes Bob a Member: the buttons appear for him.
    await screenshotOnFailure(admin, "role-change", async () => {
      await admin.goto(`${redwall.baseUrl}/teams/${state.team}`);
      await admin.getByLabel("Role of bob").selectOption("member");
      await admin.getByRole("row", { name: /bob/ }).getByRole("button", { name: "Change" }).click();
      await admin.getByText("The role was changed.").waitFor();
    });
    await bob.goto(redwall.baseUrl + path);
    await bob.getByRole("button", { name: "Stop" }).waitFor();
  });

  it("a secret is saved and never shown again", async () => {
    const value = "tok-8f2c-very-secret-value";
    const path = `/teams/${state.team}/instances/${state.instance}`;
    await screenshotOnFailure(admin, "secret", async () => {
      await admin.goto(redwall.baseUrl + path + "#env");
      await admin.getByLabel("New name").fill("PLANT_API_TOKEN");
      await admin.getByLabel("Value", { exact: true }).last().fill(value);
      await admin.getByLabel("Kind", { exact: true }).last().selectOption("secret");
      await admin.getByRole("button", { name: "Save environment" }).click();
      await admin.getByText("The environment was saved").waitFor();
      const row = admin.locator('tr[data-env="PLANT_API_TOKEN"]');
      await row.waitFor();
      assert.equal(await row.locator('input[name="env_value"]').getAttribute("type"), "password");
      assert.equal(await row.locator('input[name="env_value"]').inputValue(), "");
      assert.ok(!(await admin.content()).includes(value), "the value is not in the page");
      const env = await api(redwall.baseUrl, "GET", `/api/v1${path}/env`, undefined,
        await apiLogin(redwall.baseUrl, "admin", PASSWORD));
      assert.ok(!env.text.includes(value), "nor in the API");
    });
  });

  it("every main page carries the CSP and breaks none of it", async () => {
    const page = await newPage();
    const watch = await watchPage(page);
    await login(page, "admin");
    await page.getByRole("heading", { name: "Your teams" }).waitFor();
    const pages = [
      ["home", "/"],
      ["team-page", `/teams/${state.team}`],
      ["team-audit", `/teams/${state.team}/audit`],
      ["new-team", "/teams/new"],
      ["new-instance", `/teams/${state.team}/instances/new`],
      ["instance-page", `/teams/${state.team}/instances/${state.instance}`],
      ["invitations-page", "/invitations"],
      ["account", "/account"],
      ["account-mfa", "/account/mfa"],
      ["admin-users", "/admin/users"],
      ["admin-settings", "/admin/settings"],
      ["admin-audit", "/admin/audit"],
    ];
    for (const [name, path] of pages) {
      await screenshotOnFailure(page, `csp-${name}`, async () => {
        const response = await page.goto(redwall.baseUrl + path);
        assert.equal(response.status(), 200, `${path} answers 200`);
        const csp = response.headers()["content-security-policy"];
        assert.match(csp ?? "", /script-src 'self'/, `${path} has the CSP`);
        assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
        await page.waitForLoadState("networkidle").catch(() => {});
        await saveScreenshot(page, name);
      });
    }
    // Keyboard: the first Tab lands on "Skip to content", visibly focused.
    await page.goto(redwall.baseUrl + "/");
    await page.keyboard.press("Tab");
    const focused = await page.evaluate(() => {
      const el = document.activeElement;
      return { text: el.textContent, outline: getComputedStyle(el).outlineStyle };
    });
    assert.equal(focused.text, "Skip to content");
    assert.notEqual(focused.outline, "none", "focus is visible");
    // Phone width: the pages reflow instead of overflowing.
    await page.setViewportSize({ width: 375, height: 800 });
    for (const [name, path] of [["home-phone", "/"], ["instance-phone", `/teams/${state.team}/instances/${state.instance}`]]) {
      await page.goto(redwall.baseUrl + path);
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflow <= 1, `${path} overflows a phone screen by ${overflow}px`);
      await saveScreenshot(page, name);
    }
    assert.deepEqual(await watch.cspViolations(), []);
    assert.deepEqual(watch.errors().filter((e) => !/favicon/.test(e)), []);
    await page.context().close();
  });

  it("logout ends the session", async () => {
    await screenshotOnFailure(admin, "logout", async () => {
      await admin.goto(`${redwall.baseUrl}/`);
      await admin.getByTestId("logout").click();
      await admin.getByText("You are logged out.").waitFor();
      await admin.goto(`${redwall.baseUrl}/teams/${state.team}`);
      assert.match(admin.url(), /\/login\?next=/);
    });
  });
});
