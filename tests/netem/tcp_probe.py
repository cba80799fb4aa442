"""TCP round-trip and throughput probe between two emulated hosts (run with ``EmulatedNetwork.command``).

    python tcp_probe.py serve ADDR PORT                 # echoes pings; counts streamed bytes
    python tcp_probe.py rtt ADDR PORT N                 # median of N 1-byte ping-pongs, seconds
    python tcp_probe.py rate ADDR PORT SECONDS          # streams for SECONDS; Mbit/s the receiver got

RTT over TCP, not ping: ``ping`` is not delayed on the way out by the ingress-only delay program.
Rate = bytes the receiver read between its first and last byte, over that time (so connection set-up
and the final ACK do not count).
"""

import socket
import struct
import sys
import time


def serve(addr: str, port: int) -> None:
    srv = socket.create_server((addr, port))
    print("listening", flush=True)
    while True:
        conn, _ = srv.accept()
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            mode = conn.recv(1)
            if mode == b"p":
                while (b := conn.recv(1)):
                    conn.sendall(b)
            elif mode == b"s":
                total, first, last = 0, None, None
                while (b := conn.recv(1 << 20)):
                    last = time.perf_counter()
                    first = first or last
                    total += len(b)
                conn.sendall(struct.pack("!dd", total, (last or 0) - (first or 0)))
            elif mode == b"q":
                return


def connect(addr: str, port: int, mode: bytes) -> socket.socket:
    for _ in range(100):
        try:
            s = socket.create_connection((addr, port), timeout=30)
            break
        except OSError:
            time.sleep(0.05)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(mode)
    return s


def rtt(addr: str, port: int, n: int) -> float:
    with connect(addr, port, b"p") as s:
        times = []
        for _ in range(n):
            t = time.perf_counter()
            s.sendall(b"x")
            s.recv(1)
            times.append(time.perf_counter() - t)
    # The fastest round trip: a loaded host only ever adds its wake-ups to the emulated delay.
    return min(times[2:])


def rate(addr: str, port: int, seconds: float) -> float:
    with connect(addr, port, b"s") as s:
        buf, end = b"\0" * (1 << 20), time.perf_counter() + seconds
        while time.perf_counter() < end:
            s.sendall(buf)
        s.shutdown(socket.SHUT_WR)
        total, span = struct.unpack("!dd", s.recv(16))
    return total * 8 / span / 1e6


def main() -> None:
    mode, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "serve":
        serve(addr, port)
    elif mode == "rtt":
        print(rtt(addr, port, int(sys.argv[4])))
    elif mode == "rate":
        print(rate(addr, port, float(sys.argv[4])))
    elif mode == "quit":
        connect(addr, port, b"q").close()


if __name__ == "__main__":
    main()
