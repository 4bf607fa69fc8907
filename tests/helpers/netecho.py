"""A what's-my-address server for the model internet: answers each UDP datagram and each TCP
connection with the address it came from, as ``"<ip>:<port> <local ip>"``, so a test sees what
a NAT on the way rewrote.

Run inside a namespace: ``python -m tests.helpers.netecho --port N``; it prints
``ready udp N tcp N`` once both sockets listen, and runs until terminated.
"""

from __future__ import annotations

import argparse
import socket
import threading


def reply(peer: tuple[str, int], local: str) -> bytes:
    return f"{peer[0]}:{peer[1]} {local}".encode()


def serve_udp(sock: socket.socket) -> None:
    while True:
        _, peer = sock.recvfrom(2048)
        sock.sendto(reply(peer, "?"), peer)


def serve_tcp(sock: socket.socket) -> None:
    while True:
        conn, peer = sock.accept()
        with conn:
            conn.sendall(reply(peer, conn.getsockname()[0]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bind", default="0.0.0.0")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((args.bind, args.port))
    tcp = socket.create_server((args.bind, args.port))
    threading.Thread(target=serve_udp, args=(udp,), daemon=True).start()
    print(f"ready udp {args.port} tcp {args.port}", flush=True)
    serve_tcp(tcp)


if __name__ == "__main__":
    main()
