// autobahn-js against the balloon example: WAMP-CRA login as ingemar
// (PBKDF2-salted, answered by the router's authenticator component), the
// authid rewrite to ID09125, com.balloon.pop from the container component;
// then a wrong password is refused.
//
// Usage: node balloon.mjs ws://127.0.0.1:PORT/ws [PASSWORD]
import autobahn from "autobahn";

// autobahn-js uses the platform WebSocket: built into Node.js 22+; on
// older Node.js the `ws` package provides it.
if (typeof globalThis.WebSocket === "undefined") {
  globalThis.WebSocket = (await import("ws")).WebSocket;
}

const url = process.argv[2];
// ingemar's password: the Rust example's users.json by default; the Python
// example (examples/balloon-python) keeps the seed's.
const password = process.argv[3] ?? "secret123";

function cra(password) {
  return (session, method, extra) => {
    if (method !== "wampcra") throw new Error("unexpected challenge " + method);
    const key = extra.salt
      ? autobahn.auth_cra.derive_key(password, extra.salt, extra.iterations, extra.keylen)
      : password;
    return autobahn.auth_cra.sign(key, extra.challenge);
  };
}

function login(password, serializer) {
  return new Promise((resolve, reject) => {
    const connection = new autobahn.Connection({
      url,
      realm: "realm1",
      authmethods: ["wampcra"],
      authid: "ingemar",
      onchallenge: cra(password),
      max_retries: 0,
      serializers: serializer ? [serializer] : undefined,
    });
    connection.onopen = (session, details) => resolve({ connection, session, details });
    connection.onclose = (reason, details) => {
      reject(new Error(`${reason}: ${details && details.reason} ${details && details.message}`));
      return true; // do not retry
    };
    connection.open();
  });
}

const timeout = setTimeout(() => { console.error("timed out"); process.exit(1); }, 30000);

const { connection, session, details } = await login(password);
if (details.authid !== "ID09125" || details.authrole !== "balloonpopper") {
  console.error("unexpected identity", details);
  process.exit(1);
}
console.log(`joined as ${details.authid} (${details.authrole})`);
const sum = await session.call("com.balloon.pop", [2, 3]);
if (sum !== 5) { console.error("pop returned", sum); process.exit(1); }
console.log(`com.balloon.pop(2, 3) = ${sum}`);
try {
  await session.call("com.balloon.authenticate", ["realm1", "ingemar", {}]);
  console.error("a balloonpopper called the authenticator");
  process.exit(1);
} catch (e) {
  console.log(`authenticator refused: ${e.error}`);
}
connection.close();

try {
  await login("wrong");
  console.error("a wrong password joined");
  process.exit(1);
} catch (e) {
  console.log(`wrong password: ${e.message}`);
}
clearTimeout(timeout);
process.exit(0);
