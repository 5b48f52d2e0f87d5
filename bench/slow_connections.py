"""Bench of a slow-headers attack on a served studio (issue 25): how many half-sent requests it holds, for how long,
and how fast it answers a normal request meanwhile.

    python app.py --host 127.0.0.1 --port 7860 &        (POPCORN_PUBLIC=1 for the public defaults)
    flock /tmp/popcorn-bench.lock python bench/slow_connections.py --url http://127.0.0.1:7860/ [--n 3000]

Opens --n connections that each send the start of a request head and never finish it, then measures: connections
closed by the server at once (over POPCORN_PENDING / POPCORN_PENDING_PER_ADDRESS), the longest any was held (the
header deadline, POPCORN_HEADER_SECONDS), and the time of GET /config during the attack and after it. Before issue
25's fix all 3,000 were held for minutes. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import selectors
import socket
import time
import urllib.parse
import urllib.request


def _get_seconds(url: str) -> float | str:
    """Seconds for GET /config, or the error (from the attacker's own address it is refused by design while its
    pending connections are over POPCORN_PENDING_PER_ADDRESS; ask from another machine to see what others get)."""
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(url + "config", timeout=60) as response:
            response.read()
    except OSError as exc:
        return type(exc).__name__
    return round(time.perf_counter() - started, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:7860/")
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--wait", type=float, default=120.0, help="give up on a connection after this many seconds")
    args = parser.parse_args()
    url = args.url if args.url.endswith("/") else args.url + "/"
    host = urllib.parse.urlsplit(url)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, args.n + 256)), hard))

    selector = selectors.DefaultSelector()
    started = time.monotonic()
    refused = 0
    for _ in range(args.n):
        try:
            s = socket.create_connection((host.hostname, host.port or 80), timeout=10)
            s.sendall(b"GET / HTTP/1.1\r\nHost: " + host.netloc.encode() + b"\r\nX-Slow: ")
            s.setblocking(False)
            selector.register(s, selectors.EVENT_READ, time.monotonic())
        except OSError:
            refused += 1
    opened = time.monotonic() - started
    during = _get_seconds(url)
    held, closed_at_once = [], 0
    deadline = time.monotonic() + args.wait
    while selector.get_map() and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=1.0):
            sock, since = key.fileobj, key.data
            try:  # readable: closed (b"") or answered; either ends the half-sent request
                sock.recv(4096)
            except OSError:
                pass
            lasted = time.monotonic() - since
            closed_at_once += lasted < 0.5
            held.append(lasted)
            selector.unregister(sock)
            sock.close()
    still_open = len(selector.get_map())
    for key in list(selector.get_map().values()):
        key.fileobj.close()
    print(json.dumps({
        "connections": args.n, "refused_to_connect": refused, "seconds_to_open": round(opened, 2),
        "closed_within_0.5s": closed_at_once, "held_longest_s": round(max(held), 2) if held else None,
        "still_open_after_wait": still_open, "get_config_during_s": during,
        "get_config_after_s": _get_seconds(url), "machine": platform.node(), "cpus": os.cpu_count(),
        "load": os.getloadavg()[0],
    }))


if __name__ == "__main__":
    main()
