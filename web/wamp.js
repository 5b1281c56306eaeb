// A small WAMP v2 client for the browser: WebSocket + JSON, WAMP-CRA login
// (with PBKDF2-salted secrets, through WebCrypto), CALL. Written for the
// balloon example; it reports why a connection closed and reconnects with
// backoff unless the user logged out or the login was refused.

const HELLO = 1, WELCOME = 2, ABORT = 3, CHALLENGE = 4, AUTHENTICATE = 5, GOODBYE = 6,
  ERROR = 8, CALL = 48, RESULT = 50;

const enc = new TextEncoder();

function b64(bytes) {
  let s = "";
  for (const b of new Uint8Array(bytes)) s += String.fromCharCode(b);
  return btoa(s);
}

// WAMP-CRA: key = base64(PBKDF2-SHA256(password, salt)) when the challenge
// carries a salt, else the password; signature = base64(HMAC-SHA256(key, challenge)).
async function craSignature(password, extra) {
  let key = password;
  if (extra.salt) {
    const base = await crypto.subtle.importKey("raw", enc.encode(password), "PBKDF2", false, ["deriveBits"]);
    const bits = await crypto.subtle.deriveBits(
      { name: "PBKDF2", salt: enc.encode(extra.salt), iterations: extra.iterations || 1000, hash: "SHA-256" },
      base, (extra.keylen || 32) * 8);
    key = b64(bits);
  }
  const hmac = await crypto.subtle.importKey("raw", enc.encode(key), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return b64(await crypto.subtle.sign("HMAC", hmac, enc.encode(extra.challenge)));
}

export class WampConnection {
  // options: url, realm, authid, password, authmethods (default ["wampcra"];
  // ["cookie", "wampcra"] logs in by the tracking cookie when it can),
  // onjoin(details), onclose(reason, message, willRetry)
  constructor(options) {
    this.o = options;
    this.ws = null;
    this.pending = new Map();
    this.nextId = 1;
    this.delay = 500;
    this.stopped = false;
    this.refused = false;
  }

  open() {
    this.stopped = false;
    this.refused = false;
    const ws = new WebSocket(this.o.url, ["wamp.2.json"]);
    this.ws = ws;
    let reason = "wamp.close.connection_lost", message = "the connection was lost";
    ws.onopen = () => {
      ws.send(JSON.stringify([HELLO, this.o.realm, {
        roles: { caller: { features: {} } },
        authmethods: this.o.authmethods || ["wampcra"],
        authid: this.o.authid,
      }]));
    };
    ws.onmessage = async (ev) => {
      let msg;
      try { msg = JSON.parse(ev.data); } catch { ws.close(); return; }
      switch (msg[0]) {
        case WELCOME:
          this.delay = 500;
          this.session = msg[1];
          this.o.onjoin && this.o.onjoin(msg[2]);
          break;
        case CHALLENGE:
          try {
            const sig = await craSignature(this.o.password, msg[2]);
            ws.send(JSON.stringify([AUTHENTICATE, sig, {}]));
          } catch (e) {
            reason = "client.error"; message = "cannot compute the WAMP-CRA signature: " + e;
            ws.close();
          }
          break;
        case ABORT:
          reason = msg[2]; message = (msg[1] && msg[1].message) || "";
          this.refused = true;
          ws.close();
          break;
        case GOODBYE:
          reason = msg[2]; message = (msg[1] && msg[1].message) || "";
          if (!this.stopped) ws.send(JSON.stringify([GOODBYE, {}, "wamp.close.goodbye_and_out"]));
          ws.close();
          break;
        case RESULT: {
          const p = this.pending.get(msg[1]);
          if (p) { this.pending.delete(msg[1]); p.resolve(msg[3] || []); }
          break;
        }
        case ERROR: {
          const p = this.pending.get(msg[2]);
          if (p) {
            this.pending.delete(msg[2]);
            p.reject({ error: msg[4], args: msg[5] || [] });
          }
          break;
        }
      }
    };
    ws.onclose = () => {
      for (const p of this.pending.values()) p.reject({ error: reason, args: [message] });
      this.pending.clear();
      this.session = null;
      const retry = !this.stopped && !this.refused;
      this.o.onclose && this.o.onclose(reason, message, retry ? this.delay : null);
      if (retry) {
        setTimeout(() => { if (!this.stopped) this.open(); }, this.delay);
        this.delay = Math.min(this.delay * 2, 8000);
      }
    };
  }

  call(procedure, args) {
    if (!this.session) return Promise.reject({ error: "client.not_connected", args: ["not logged in"] });
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.ws.send(JSON.stringify([CALL, id, {}, procedure, args]));
    });
  }

  // reason: "wamp.close.logout" also logs the tracking cookie out.
  close(reason) {
    this.stopped = true;
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify([GOODBYE, {}, reason || "wamp.close.close_realm"]));
    }
    if (this.ws) this.ws.close();
  }
}
