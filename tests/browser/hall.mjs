// Drives the hall desk the way the counter staff do, in Debian's headless Chromium: sign in with
// a staff token, record a document's arrival, refuse a handover when the ID number shown does not
// match, hand it over when it does.
// Usage: node hall.mjs BASE_URL STAFF_TOKEN DUE_CASE READY_CASE WRONG_ID RIGHT_ID SCREENSHOT_DIR
// Prints one JSON line of what it saw; the Rust test asserts on it.
import { chromium } from "playwright-core";

const [base, token, dueCase, readyCase, wrongId, rightId, shots] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"],
});
const seen = {};
const result = async (page, before) => {
  await page.waitForFunction(b => { const t = document.querySelector("#result").textContent; return t.length > 0 && t !== b; }, before);
  return page.textContent("#result");
};
const rows = (page, table) => page.$$eval(`#${table} tbody tr[data-case]`, trs => trs.length);
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  await page.goto(`${base}/hall`);
  await page.fill("#token", "not-a-staff-token");
  await page.click("#signin-form button");
  await page.waitForFunction(() => document.querySelector("#signin-error").textContent.length > 0);
  seen.wrong_token_refused = await page.textContent("#signin-error");
  await page.fill("#token", token);
  await page.click("#signin-form button");
  await page.waitForSelector(`#due tr[data-case="${dueCase}"]`);
  seen.who = await page.textContent("#who");
  seen.due_rows = await rows(page, "due");
  seen.ready_rows = await rows(page, "ready");
  seen.uncollected_rows = await rows(page, "uncollected");
  await page.screenshot({ path: `${shots}/hall-desk.png`, fullPage: true });

  await page.click(`button.arrived[data-case="${dueCase}"]`);
  seen.arrival = await result(page, "");
  await page.waitForSelector(`#ready tr[data-case="${dueCase}"]`);

  const form = `form.collect[data-case="${readyCase}"]`;
  await page.fill(`${form} input`, wrongId);
  await page.click(`${form} button`);
  seen.refused = await result(page, seen.arrival);
  await page.fill(`${form} input`, rightId);
  await page.click(`${form} button`);
  seen.handed_over = await result(page, seen.refused);
  await page.waitForFunction(c => !document.querySelector(`#ready tr[data-case="${c}"]`), readyCase);
  seen.page_text = await page.textContent("body");
} catch (e) {
  seen.error = String(e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(seen));
