"""The serve subcommand: the web page and its JSON API (deepdream_onnx.web), run by uvicorn.

FastAPI and uvicorn come with the optional extra deepdream-onnx[web]; they, like the
network, are imported in the command, so that --help stays light.
"""

import argparse
import importlib.util
import socket
import sys
import threading

from deepdream_onnx.cli.common import PROG, UsageError, int_at_least
from deepdream_onnx.errors import DeepDreamError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
EXTRA = ("fastapi", "uvicorn", "multipart")  # multipart: python-multipart, for the uploads


def add_serve_command(sub, model):
    p = sub.add_parser("serve", parents=[model], help="a web page to dream in the browser",
                       description="Serve a web page (and its JSON API, described at /openapi.json) that "
                                   "dreams uploaded images, the built-in sky or noise, with previews as it "
                                   f"goes. Needs the web extra: pip install {PROG}[web].")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help="address to listen on (default: %(default)s, this machine only; 0.0.0.0 lets "
                        "anyone who can reach it run dreams)")
    p.add_argument("--port", type=_port, default=DEFAULT_PORT, help="port to listen on (default: %(default)s)")
    p.add_argument("--open", action="store_true", help="open the page in a web browser once it is up")
    p.add_argument("--workers", type=int_at_least(1), default=1, metavar="N",
                   help="dreams computed at once; the others wait in a queue (default: %(default)s)")
    p.set_defaults(run=run_serve)


def _port(text):
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0-65535, not {value}")
    return value


_port.__name__ = "port"  # argparse names the type in "invalid port value"


def run_serve(args):
    missing = [name for name in EXTRA if importlib.util.find_spec(name) is None]
    if missing:
        raise DeepDreamError(f"serve needs the web extra ({', '.join(missing)} missing): pip install {PROG}[web]")
    import uvicorn

    from deepdream_onnx.web.app import create_app

    sock = _listen(args.host, args.port)
    from deepdream_onnx.addresses import is_loopback

    if not is_loopback(args.host):
        print(f"{PROG}: warning: listening on {args.host}: anyone who can reach this machine can run dreams "
              "on it and see the results; there is no login", file=sys.stderr)
    app = create_app(args.model, device=args.device, workers=args.workers)
    host, port = sock.getsockname()[:2]
    url = f"http://{_url_host(args.host, host)}:{port}/"
    print(f"{PROG}: serving {app.state.net.manifest.get('name', 'the model')} at {url} "
          f"({app.state.net.describe_device()}); Ctrl+C stops", file=sys.stderr)
    server = _server_class()(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
    if args.open:
        threading.Thread(target=_open_when_up, args=(server, url), daemon=True).start()
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn raises the Ctrl+C again once it has stopped cleanly
        if not server.started:
            raise
    return 0


def _server_class():
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            # uvicorn waits for open connections before it stops the application, and the
            # pages' event streams stay open while their dreams run: cancel the dreams
            # first, so that the streams end with them.
            self.config.app.state.jobs.stop(wait=False)
            super().handle_exit(sig, frame)

    return Server


def _listen(host, port):
    """A bound socket, so that a busy port or a bad address is one line before the model loads."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as e:
        raise UsageError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.set_inheritable(True)
    return sock


def _url_host(given, bound):
    if given in ("0.0.0.0", "::", ""):  # every address: this machine's own is the one to open
        return "127.0.0.1"
    return f"[{bound}]" if ":" in bound else given


def _open_when_up(server, url):
    import time
    import webbrowser

    while not server.started and not server.should_exit:
        time.sleep(0.1)
    if server.started:
        webbrowser.open(url)
