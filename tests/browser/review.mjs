// Drives the reviewer console the way a reviewer does, in Debian's headless Chromium: sign in
// with a reviewer token, open cases from the queue, look at the uploaded images (the photo in
// the guide's frame, zoomed), ask for a new photo from the image itself, approve, meet a 409
// when the office's supervisor decided first, and see what a resubmission changed.
// Usage: node review.mjs BASE_URL REVIEWER_TOKEN SUPERVISOR_TOKEN SCREENSHOT_DIR
// Prints one JSON line of what it saw; the Rust test asserts on it.
import { chromium } from "playwright-core";

const [base, token, supervisorToken, shots] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"],
});
const seen = {};
const result = async page => {
  await page.waitForFunction(() => document.querySelector("#decision-result")?.textContent.length > 0);
  return page.textContent("#decision-result");
};
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  await page.goto(`${base}/review`);
  seen.signin_visible = await page.isVisible("#signin");
  await page.fill("#token", "not-a-reviewer");
  await page.click("#signin-form button");
  await page.waitForFunction(() => document.querySelector("#signin-error").textContent.length > 0);
  seen.wrong_token_refused = await page.textContent("#signin-error");
  await page.fill("#token", token);
  await page.click("#signin-form button");
  await page.waitForSelector("#tasks tbody tr[data-case]");
  seen.who = await page.textContent("#who");
  const cases = await page.$$eval("#tasks tbody tr[data-case]", trs => trs.map(tr => tr.dataset.case));
  seen.task_rows = cases.length;
  seen.queue_rows = await page.$$eval("#queues tbody tr", trs => trs.map(tr => tr.textContent));

  const loaded = async () => {
    await page.waitForFunction(() => { const p = [...document.querySelectorAll("#materials .pic[data-sha]")];
                                       return p.length > 0 && p.every(x => x.dataset.loaded); });
    return page.$$eval("#materials .pic[data-sha]", ps => ps.map(p => ({ material: p.dataset.material, loaded: p.dataset.loaded,
      width: p.querySelector("img")?.naturalWidth || 0, height: p.querySelector("img")?.naturalHeight || 0,
      marks: !!p.querySelector("svg.guide"), before: !!p.closest(".before") })));
  };

  // First case: look at the images, zoom the photo, then ask for a new photo from the photo.
  await page.click(`#tasks a[data-case="${cases[0]}"]`);
  await page.waitForSelector(`#case[data-case="${cases[0]}"] #approve`);
  seen.id_shown = await page.textContent("#id-number");
  seen.page_text = await page.textContent("body");
  seen.pictures = await loaded();
  await page.click('#materials .pic.photo[data-loaded="yes"]');
  await page.waitForSelector("#zoom:not([hidden]) img");
  seen.zoomed = await page.$eval("#zoom img", img => ({ width: img.getBoundingClientRect().width, marks: !!img.parentElement.querySelector("svg.guide") }));
  await page.screenshot({ path: `${shots}/review-zoom.png` });
  await page.keyboard.press("Escape");
  seen.zoom_closed = await page.isHidden("#zoom");
  await page.click('button.ask[data-ask="photo"]');
  seen.photo_item_checked = await page.isChecked('input[name=item][value="photo"]');
  await page.fill("#message", "照片背景请使用白色");
  await page.click("#correct");
  seen.correction = await result(page);

  // Second case: approve.
  await page.click(`#tasks a[data-case="${cases[1]}"]`);
  await page.waitForSelector(`#case[data-case="${cases[1]}"] #approve`);
  await page.click("#approve");
  seen.approval = await result(page);

  // Third case: the supervisor decides it while it is open here; the click gets a clear 409.
  await page.click(`#tasks a[data-case="${cases[2]}"]`);
  await page.waitForSelector(`#case[data-case="${cases[2]}"] #approve`);
  const r = await fetch(`${base}/api/review/cases/${cases[2]}/decision`, {
    method: "POST", headers: { "authorization": `Bearer ${supervisorToken}`, "content-type": "application/json" },
    body: JSON.stringify({ decision: "reject", reason: "证件照片与身份证照片不符" }) });
  seen.supervisor_status = r.status;
  await page.click("#approve");
  seen.late_click = await result(page);

  // Fourth case: resubmitted with a new photo and phone number; the console shows what changed.
  await page.click(`#tasks a[data-case="${cases[3]}"]`);
  await page.waitForSelector(`#case[data-case="${cases[3]}"] #changes`);
  seen.changes = await page.textContent("#changes");
  seen.corrections = await page.$$eval("#corrections li", ls => ls.map(l => l.textContent));
  seen.resubmitted_pictures = await loaded();
  seen.changed_badges = await page.$$eval("#materials figure", fs => fs.filter(f => f.querySelector(".changed")).map(f => f.dataset.material));
  await page.screenshot({ path: `${shots}/review-console.png`, fullPage: true });
  seen.cases = cases;
} catch (e) {
  seen.error = String(e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(seen));
