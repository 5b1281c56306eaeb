// Headless Chromium opens the balloon page, logs in, pops, and checks that
// a refused login is reported and not retried.
//
// Usage: node page.mjs http://127.0.0.1:PORT/ [PASSWORD]
// (CHROMIUM overrides /usr/bin/chromium; PASSWORD is ingemar's when it is
// not the page's default, as in the Python example)
import { chromium } from "playwright-core";

const url = process.argv[2];
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--headless=new"],
});
let failed = false;
try {
  const page = await browser.newPage();
  page.on("pageerror", (e) => { console.error("page error:", e.message); failed = true; });
  await page.goto(url);
  if (process.argv[3] !== undefined) await page.fill("#password", process.argv[3]);
  await page.click("#login");
  await page.waitForFunction(() => document.getElementById("status").textContent.includes("logged in as ID09125"), null, { timeout: 15000 });
  console.log("status:", await page.textContent("#status"));
  await page.fill("#x", "40");
  await page.fill("#y", "2");
  await page.click("#pop");
  await page.waitForFunction(() => document.getElementById("result").textContent === "42", null, { timeout: 15000 });
  console.log("result:", await page.textContent("#result"));
  await page.click("#logout");
  await page.waitForFunction(() => document.getElementById("status").textContent.startsWith("closed:"), null, { timeout: 15000 });
  console.log("after logout:", await page.textContent("#status"));
  await page.fill("#password", "wrong");
  await page.click("#login");
  await page.waitForFunction(() => document.getElementById("status").textContent.includes("wamp.error.authentication_failed"), null, { timeout: 15000 });
  const refused = await page.textContent("#status");
  console.log("refused:", refused);
  if (refused.includes("reconnecting")) { console.error("a refused login is retried"); failed = true; }
} catch (e) {
  console.error(e);
  failed = true;
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
