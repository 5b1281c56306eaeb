// Headless Chromium opens the admin listener's status page and reads the
// session count of a realm from its table.
//
// Usage: node status_page.mjs http://127.0.0.1:PORT/status REALM
import { chromium } from "playwright-core";

const [url, realm] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--headless=new", "--disable-background-networking"],
});
let failed = false;
try {
  const page = await browser.newPage();
  await page.goto(url);
  const title = await page.textContent("h1");
  console.log("title:", title);
  const rows = await page.$$eval("table tr", (trs) => trs.map((tr) => [...tr.children].map((c) => c.textContent)));
  const row = rows.find((cells) => cells[1] === realm);
  if (!row) throw new Error(`no row for realm ${realm} in ${JSON.stringify(rows)}`);
  console.log(`realm ${realm}: sessions ${row[2]}`);
} catch (e) {
  console.error(e);
  failed = true;
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
