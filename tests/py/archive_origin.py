"""An archive's origin for `"download": true`: serves the files of DIR
under /files/, redirects /old/NAME there (as GitHub's archive links
redirect), over TLS when given a certificate and key. Prints "ready"
when listening, then one line per request.

    archive_origin.py PORT DIR [CERT KEY]
"""

import functools
import http.server
import ssl
import sys


class Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        print("GET", self.path, flush=True)
        if self.path.startswith("/old/"):
            self.send_response(302)
            self.send_header("Location", "/files/" + self.path[len("/old/"):])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path.startswith("/files/"):
            self.path = self.path[len("/files"):]
            return super().do_GET()
        self.send_error(404)

    def log_message(self, *args):
        pass


def main():
    port, directory = int(sys.argv[1]), sys.argv[2]
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", port), functools.partial(Handler, directory=directory)
    )
    if len(sys.argv) == 5:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(sys.argv[3], sys.argv[4])
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
