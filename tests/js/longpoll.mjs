// autobahn-js over WAMP-over-Longpoll (its fallback where WebSocket is
// blocked), against a second autobahn-js session over WebSocket: calls and
// events both ways, the session's transport seen as "longpoll" by the
// router, then a clean close.
//
// Usage: node longpoll.mjs http://127.0.0.1:PORT/lp ws://127.0.0.1:PORT/ws
// (Node.js has no XMLHttpRequest, which autobahn-js's long-poll transport
// uses; the xhr2 package provides a standard one.)
import autobahn from "autobahn";
import XMLHttpRequest from "xhr2";
import { WebSocket } from "ws";

globalThis.XMLHttpRequest = XMLHttpRequest;
globalThis.WebSocket = WebSocket;

const [lpUrl, wsUrl] = process.argv.slice(2);
const timeout = setTimeout(() => { console.error("timed out"); process.exit(1); }, 30000);
const fail = (what) => { console.error(what); process.exit(1); };

function join(transports) {
  return new Promise((resolve, reject) => {
    const connection = new autobahn.Connection({ transports, realm: "realm1", max_retries: 0 });
    connection.onopen = (session, details) => resolve({ connection, session, details });
    connection.onclose = (reason, details) => { reject(new Error(`${reason}: ${JSON.stringify(details)}`)); return true; };
    connection.open();
  });
}

const lp = await join([{ type: "longpoll", url: lpUrl }]);
console.log(`joined over ${lp.connection.transport.info.type} as session ${lp.session.id}`);
if (lp.connection.transport.info.type !== "longpoll") fail("not a long-poll transport");
const ws = await join([{ type: "websocket", url: wsUrl }]);

// The long-poll session is a callee and a subscriber.
await lp.session.register("com.lp.add", (args) => args[0] + args[1]);
const events = [];
let gotAll;
const allIn = new Promise((r) => { gotAll = r; });
await lp.session.subscribe("com.lp.topic", (args) => { events.push(args[0]); if (events.length === 20) gotAll(); });

const sum = await ws.session.call("com.lp.add", [20, 22]);
if (sum !== 42) fail(`com.lp.add returned ${sum}`);
console.log("a WebSocket caller reached the long-poll callee: 42");
for (let i = 0; i < 20; i++) ws.session.publish("com.lp.topic", [i]);
await Promise.race([allIn, new Promise((r) => setTimeout(r, 10000))]);
if (events.join(",") !== [...Array(20).keys()].join(",")) fail(`events: ${events}`);
console.log("20 events reached the long-poll subscriber in order");

// ... and a caller and publisher.
await ws.session.register("com.ws.echo", (args) => args[0]);
const big = "x".repeat(50000);
if ((await lp.session.call("com.ws.echo", [big])) !== big) fail("echo differs");
console.log("the long-poll caller got a 50000-character result");
let wsGot;
const wsEvent = new Promise((r) => { wsGot = r; });
await ws.session.subscribe("com.ws.topic", (args) => wsGot(args[0]));
lp.session.publish("com.ws.topic", ["from long-poll"]);
if ((await Promise.race([wsEvent, new Promise((r) => setTimeout(() => r(null), 5000))])) !== "from long-poll") fail("event from long-poll missing");
console.log("a long-poll publication reached a WebSocket subscriber");

const info = await ws.session.call("wamp.session.get", [lp.session.id]);
console.log(`the router sees transport ${JSON.stringify(info.transport)}`);
if (info.transport.type !== "longpoll") fail("the router does not see a long-poll transport");

const before = await ws.session.call("wamp.session.count");
await new Promise((resolve) => { lp.connection.onclose = () => { resolve(); return true; }; lp.connection.close(); });
let after = before;
for (let i = 0; i < 50 && after === before; i++) {
  await new Promise((r) => setTimeout(r, 100));
  after = await ws.session.call("wamp.session.count");
}
if (after !== before - 1) fail(`session count ${before} -> ${after}`);
console.log("closed: the long-poll session left");
ws.connection.close();
clearTimeout(timeout);
process.exit(0);
