// autobahn-js over a transport with permessage-deflate: Node's `ws` offers
// the extension by default; the router must accept it, and a large event
// and call result must come through compressed both ways.
//
// Usage: node deflate.mjs ws://127.0.0.1:PORT/
import autobahn from "autobahn";
import { WebSocket as WsWebSocket } from "ws";

// Record what each connection negotiated.
const negotiated = [];
class Recording extends WsWebSocket {
  constructor(...args) {
    super(...args);
    this.on("open", () => negotiated.push(this.extensions));
  }
}
globalThis.WebSocket = Recording;

const timeout = setTimeout(() => { console.error("timed out"); process.exit(1); }, 30000);
const session = await new Promise((resolve, reject) => {
  const connection = new autobahn.Connection({ url: process.argv[2], realm: "realm1", max_retries: 0 });
  connection.onopen = (s) => resolve(s);
  connection.onclose = (reason, details) => { reject(new Error(`${reason}: ${JSON.stringify(details)}`)); return true; };
  connection.open();
});
console.log(`negotiated: ${JSON.stringify(negotiated)}`);
if (!negotiated[0] || !negotiated[0].startsWith("permessage-deflate")) {
  console.error("permessage-deflate was not negotiated");
  process.exit(1);
}
const big = "balloon ".repeat(25000);
await session.register("com.deflate.echo", (args) => args[0] + "!");
const echoed = await session.call("com.deflate.echo", [big]);
if (echoed !== big + "!") { console.error("call result differs"); process.exit(1); }
console.log(`a ${big.length}-character call came back`);
let resolveEvent;
const got = new Promise((resolve) => { resolveEvent = resolve; });
await session.subscribe("com.deflate.js", (args) => resolveEvent(args[0]));
session.publish("com.deflate.js", [big], {}, { exclude_me: false });
const event = await Promise.race([got, new Promise((r) => setTimeout(() => r(null), 5000))]);
if (event !== big) { console.error("event differs or missing"); process.exit(1); }
console.log("the event came back whole");
clearTimeout(timeout);
process.exit(0);
