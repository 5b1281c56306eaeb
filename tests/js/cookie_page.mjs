// Headless Chromium and cookie logins: log in with WAMP-CRA, reload and be
// welcomed by the tracking cookie, log out, reload and be refused; with
// "revoked", only check that the cookie no longer logs in.
//
// Usage: node cookie_page.mjs http://127.0.0.1:PORT/ STATE_FILE login|revoked
// (the browser's cookies are kept in STATE_FILE between the two runs)
import { chromium } from "playwright-core";
import { existsSync } from "node:fs";

const [url, stateFile, mode] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--headless=new"],
});
let failed = false;
const status = async (page, want) => {
  await page.waitForFunction((w) => document.getElementById("status").textContent.includes(w), want, { timeout: 15000 });
  const s = await page.textContent("#status");
  console.log("status:", s);
  return s;
};
try {
  const context = await browser.newContext(existsSync(stateFile) ? { storageState: stateFile } : {});
  const page = await context.newPage();
  page.on("pageerror", (e) => { console.error("page error:", e.message); failed = true; });
  await page.goto(url);
  if (mode === "login") {
    // No login yet: the cookie alone is refused.
    await status(page, "closed: wamp.error.authentication_failed: this connection's cookie has not logged in");
    await page.fill("#password", "secret123");
    await page.click("#login");
    await status(page, "joined as client1 (frontend) by wampcra/static");
    const [cookie] = (await context.cookies()).filter((c) => c.name === "cbtid");
    console.log(`cookie: httpOnly=${cookie.httpOnly} sameSite=${cookie.sameSite} secure=${cookie.secure} length=${cookie.value.length}`);
    console.log(`cookie value: ${cookie.value}`);
    // A reload: welcomed by the cookie, no password typed.
    await page.reload();
    await status(page, "joined as client1 (frontend) by wampcra/cookie");
    // Log out: the cookie no longer logs in.
    await page.click("#logout");
    await status(page, "logged out");
    await page.reload();
    await status(page, "closed: wamp.error.authentication_failed: this connection's cookie has not logged in");
    // Log in again and keep the cookie for the second run.
    await page.fill("#password", "secret123");
    await page.click("#login");
    await status(page, "by wampcra/static");
    await context.storageState({ path: stateFile });
  } else {
    await status(page, "closed: wamp.error.authentication_failed: this connection's cookie no longer logs in: principal \"client1\" is no longer configured for wampcra");
  }
} catch (e) {
  console.error(e);
  failed = true;
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
