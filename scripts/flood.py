#!/usr/bin/env python3
"""A fixed-rate attacker for scripts/bench-dhcp --attack: malformed DHCP datagrams to
port 67 and logins with a wrong password to the panel, each at its own rate, for a
bounded time. It stops by itself. Only for benchmark namespaces.

    flood.py --secs S [--dhcp HOST --dhcp-rate N] [--login URL --login-rate N]
"""
import argparse
import os
import random
import re
import socket
import threading
import time
import urllib.error
import urllib.request


def paced(rate, secs, action):
    sent = 0
    start = time.monotonic()
    end = start + secs
    while True:
        now = time.monotonic()
        if now >= end:
            return sent
        due = int((now - start) * rate)
        while sent < due:
            action(sent)
            sent += 1
        time.sleep(0.002)


def dhcp_flood(host, rate, secs, counts):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rng = random.Random(7)

    def one(n):
        # A BOOTREQUEST header that is cut short, lies about option lengths, or is
        # plain noise: each kind a decoder must drop.
        kind = n % 3
        if kind == 0:
            packet = bytes([1, 1, 6, 0]) + os.urandom(rng.randint(0, 200))
        elif kind == 1:
            packet = (bytes([1, 1, 6, 0]) + os.urandom(232) + bytes([99, 130, 83, 99])
                      + bytes([53, 1, 1, 55, 200]) + os.urandom(10))
        else:
            packet = os.urandom(rng.randint(1, 1400))
        try:
            sock.sendto(packet, (host, 67))
        except OSError:
            pass

    counts["dhcp"] = paced(rate, secs, one)


def login_flood(url, rate, secs, counts):
    statuses = {}

    def one(n):
        try:
            page = urllib.request.urlopen(url + "/login", timeout=2)
            cookie = page.headers.get("Set-Cookie", "").split(";")[0]
            token = re.search(r'name="login_csrf" value="([0-9a-f]+)"', page.read().decode())
            body = "user=admin&password=wrong-%d&login_csrf=%s" % (n, token.group(1) if token else "")
            request = urllib.request.Request(url + "/login", data=body.encode(),
                                             headers={"Cookie": cookie})
            urllib.request.urlopen(request, timeout=5)
            code = 200
        except urllib.error.HTTPError as e:
            code = e.code
        except OSError:
            code = 0
        statuses[code] = statuses.get(code, 0) + 1

    # Several workers, so a slow answer does not lower the offered rate.
    workers = []
    per = max(rate / 4.0, 0.1)
    for _ in range(4):
        t = threading.Thread(target=lambda: paced(per, secs, one))
        t.start()
        workers.append(t)
    for t in workers:
        t.join()
    counts["login"] = statuses


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--secs", type=float, required=True)
    parser.add_argument("--dhcp")
    parser.add_argument("--dhcp-rate", type=float, default=1000)
    parser.add_argument("--login")
    parser.add_argument("--login-rate", type=float, default=20)
    args = parser.parse_args()
    counts = {}
    threads = []
    if args.dhcp:
        threads.append(threading.Thread(target=dhcp_flood,
                                        args=(args.dhcp, args.dhcp_rate, args.secs, counts)))
    if args.login:
        threads.append(threading.Thread(target=login_flood,
                                        args=(args.login, args.login_rate, args.secs, counts)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("flood: sent", counts)


if __name__ == "__main__":
    main()
