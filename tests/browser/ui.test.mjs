// Squall's web UI in headless Chromium, driven by Playwright. Run by
// tests/it/browser.rs, which starts the server and passes in:
//   SQUALL_URL, SQUALL_API_KEY   the server and an admin key of its tenant
//   SQUALL_PACK_ARCHIVE          a pack's .tar.gz to upload
//   SQUALL_SCREENSHOTS           where each test saves its screenshot
//   CHROMIUM                     the browser (Debian's /usr/bin/chromium)
// Every wait is for something on the page, with a generous deadline.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { chromium } from "playwright-core";

const base = process.env.SQUALL_URL;
const key = process.env.SQUALL_API_KEY;
const shots = process.env.SQUALL_SCREENSHOTS;
const WAIT = { timeout: 60_000 };

let browser;
let page;

before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  context.setDefaultTimeout(WAIT.timeout);
  page = await context.newPage();
  // A script error or a refused resource (the CSP) fails the test that saw it.
  page.on("pageerror", (e) => errors.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(`console: ${m.text()}`);
  });
});

after(async () => {
  await browser?.close();
});

const errors = [];

async function shot(name) {
  await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
  assert.deepEqual(errors.splice(0), [], "no script errors and no refused resources");
}

/** The API, with the key (what a script or another client does). */
async function api(method, url, body) {
  const response = await fetch(`${base}${url}`, {
    method,
    headers: { "St2-Api-Key": key, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

test("1. sign in", async () => {
  await page.goto(`${base}/ui/executions`);
  // Not signed in: the sign-in page, which will come back here.
  await page.waitForURL(/\/ui\/login\?next=/);
  await page.getByLabel("API key").fill(key);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL(`${base}/ui/executions`);
  await page.getByRole("button", { name: "Sign out" }).waitFor();
  await page.locator("table[data-live=rows][data-connected=true]").waitFor();
  await shot("1-signed-in");
  // The history's first paint, as the browser measured it (recorded in
  // docs/benchmarks.md; a figure, not a check).
  await page.reload();
  await page.locator("table[data-live=rows]").waitFor();
  const paint = await page.evaluate(
    () => performance.getEntriesByName("first-contentful-paint")[0]?.startTime ?? null,
  );
  assert.notEqual(paint, null, "the browser reports its first paint");
  await writeFile(path.join(shots, "first-paint-ms.txt"), `${paint.toFixed(1)}\n`);
});

test("2. run an action from its form and watch it succeed live", async () => {
  await page.goto(`${base}/ui/actions`);
  await page.getByRole("link", { name: "echo", exact: true }).click();
  await page.getByLabel("message").fill("hello from the browser");
  await page.getByRole("button", { name: "Run" }).click();
  await page.waitForURL(/\/ui\/executions\/[0-9a-f]{32}$/);
  await page.locator("h1 .status", { hasText: "succeeded" }).waitFor();
  await page.getByText("hello from the browser").first().waitFor();
  // The history shows it too, without a reload of its own.
  await page.goto(`${base}/ui/executions`);
  await page.locator("table[data-connected=true]").waitFor();
  const started = await api("POST", "/api/v1/executions", {
    action: "core.echo",
    parameters: { message: "arrived live" },
  });
  assert.equal(started.status, 201);
  await page
    .locator(`tr[data-id="${started.body.id}"] .status`, { hasText: "succeeded" })
    .waitFor();
  await shot("2-history-live");
});

test("3. re-run a failed execution with an edited parameter", async () => {
  const failed = await api("POST", "/api/v1/executions", {
    action: "core.fail",
    parameters: { message: "first try" },
  });
  assert.equal(failed.status, 201);
  await page.goto(`${base}/ui/executions/${failed.body.id}`);
  await page.locator("h1 .status", { hasText: "failed" }).waitFor();
  await page.getByRole("link", { name: "Re-run…" }).click();
  await page.getByLabel("message").fill("second try");
  await page.getByRole("button", { name: "Re-run" }).click();
  await page.waitForURL((url) => !url.pathname.endsWith(failed.body.id) && /\/ui\/executions\//.test(url.pathname));
  await page.locator("h1 .status", { hasText: "failed" }).waitFor();
  await page.getByText("second try").first().waitFor();
  await page.getByRole("link", { name: failed.body.id }).waitFor();
  await shot("3-re-run");
});

test("4. disable a rule, and a webhook no longer runs it", async () => {
  await page.goto(`${base}/ui/rules/hooks.echo_critical`);
  await page.getByRole("button", { name: "Disable" }).click();
  await page.locator("h1 .status", { hasText: "disabled" }).waitFor();
  await shot("4-rule-disabled");
  const before = await api("GET", "/api/v1/executions?action=core.echo&limit=1000");
  const hook = await fetch(`${base}/api/v1/webhooks/alerts`, {
    method: "POST",
    headers: { "St2-Api-Key": key, "Content-Type": "application/json" },
    body: JSON.stringify({ severity: "critical", host: "db9" }),
  });
  assert.equal(hook.status, 202);
  const instance = hook.headers.get("St2-Trigger-Instance-Id");
  // The backstop rule takes the event instead: its core.noop runs.
  await page.goto(`${base}/ui/executions?action=core.noop`);
  await page.locator("tbody .status", { hasText: "succeeded" }).first().waitFor();
  const noop = await api("GET", `/api/v1/executions?trigger_instance=${instance}`);
  assert.deepEqual(noop.body.map((e) => e.action.ref), ["core.noop"]);
  const after = await api("GET", "/api/v1/executions?action=core.echo&limit=1000");
  assert.equal(after.body.length, before.body.length, "no core.echo ran");
});

test("5. upload a pack", async () => {
  await page.goto(`${base}/ui/packs`);
  await page.getByLabel(/Upload a pack/).setInputFiles(process.env.SQUALL_PACK_ARCHIVE);
  await page.getByRole("button", { name: "Upload", exact: true }).click();
  await page.getByText("Installed pack uploaded").waitFor();
  await page.getByRole("cell", { name: /^uploaded/ }).first().waitFor();
  await shot("5-pack-uploaded");
});

test("6. answer an inquiry, and its workflow finishes", async () => {
  const workflow = await api("POST", "/api/v1/executions", { action: "ask.approve", parameters: {} });
  assert.equal(workflow.status, 201);
  await page.goto(`${base}/ui/inquiries`);
  // It appears once the workflow reaches the question.
  for (let i = 0; i < 60; i++) {
    if (await page.getByRole("link", { name: "Answer" }).count()) break;
    await page.waitForTimeout(1000);
    await page.reload();
  }
  await page.getByRole("link", { name: "Answer" }).first().click();
  await page.getByLabel("approved").check();
  await page.getByRole("button", { name: "Respond" }).click();
  await page.waitForURL(`${base}/ui/executions/${workflow.body.id}`);
  await page.locator("h1 .status", { hasText: "succeeded" }).waitFor();
  await page.getByRole("cell", { name: "finish" }).waitFor();
  await shot("6-inquiry-answered");
});

test("7. a sensor's failure appears with its panic message", async () => {
  await page.goto(`${base}/ui/sensors/flaky.TestSensor`);
  await page.locator("#last-error", { hasText: "guest panicked: sensor broke on purpose" }).waitFor();
  await page.locator("#sensor-log", { hasText: "sensor broke on purpose" }).waitFor();
  await shot("7-sensor-failure");
});
