// Drives the operations dashboard the way an operator does, in Debian's headless Chromium:
// sign in with the token, read the queues, replay a dead letter, find a case by ID number.
// Usage: node dashboard.mjs BASE_URL TOKEN ID_NUMBER SCREENSHOT_DIR
// Prints one JSON line of what it saw; the Rust test asserts on it.
import { chromium } from "playwright-core";

const [base, token, idNumber, shots] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"],
});
const seen = {};
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  await page.goto(`${base}/dashboard`);
  seen.signin_visible = await page.isVisible("#signin");
  await page.fill("#token", "wrong-token");
  await page.click("#signin-form button");
  await page.waitForSelector("#signin:not([hidden])");
  seen.wrong_token_refused = (await page.textContent("#status")).includes("unknown operator token");
  await page.fill("#token", token);
  await page.click("#signin-form button");
  await page.waitForSelector("#queues tbody tr");
  await page.waitForSelector("#chart polyline.series");
  seen.queue_workers = await page.$$eval("#queues tbody tr td:first-child", tds => tds.map(td => td.textContent));
  seen.chart_series = await page.$$eval("#chart polyline.series", ps => ps.map(p => p.dataset.state));
  seen.sla_rows = await page.$$eval("#sla tbody tr", trs => trs.length);
  seen.dead_letters_before = await page.$$eval("#dead button[data-replay]", bs => bs.length);
  await page.screenshot({ path: `${shots}/dashboard.png`, fullPage: true });

  await page.click("#dead button[data-replay]");
  await page.waitForFunction(() => document.querySelectorAll("#dead .ok").length > 0);
  seen.replayed_shown = await page.$$eval("#dead .ok", els => els.length);

  await page.fill("#q", idNumber);
  await page.click("#search-form button");
  await page.waitForSelector("#timeline tbody tr");
  seen.case_header = await page.textContent("#case p");
  seen.timeline_kinds = await page.$$eval("#timeline tbody tr td:nth-child(3)", tds => tds.map(td => td.textContent));
  seen.page_text = await page.textContent("body");
  await page.screenshot({ path: `${shots}/dashboard-case.png`, fullPage: true });
} catch (e) {
  seen.error = String(e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(seen));
