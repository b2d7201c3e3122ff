#!/usr/bin/env python3
"""Python's own socketserver as a contender: stock ThreadingTCPServer and
ThreadingUDPServer (a thread per connection / per datagram, listen backlog 5,
non-daemon request threads, block_on_close), each handler echoing.

    python3 python_echo.py --tcp 127.0.0.1:0 --udp 127.0.0.1:0

prints `listening tcp ADDR` / `listening udp ADDR` like `socketserver echo`.
SIGINT raises KeyboardInterrupt in the TCP server's serve_forever; leaving the
`with` block calls server_close(), which joins the request threads (and the
interpreter waits for non-daemon threads anyway) -- so with idle connections
open it does not exit, which is Python's stock behaviour.
"""
import argparse
import socketserver
import sys
import threading


class TCPEcho(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            data = self.request.recv(16384)
            if not data:
                return
            self.request.sendall(data)


class UDPEcho(socketserver.BaseRequestHandler):
    def handle(self):
        data, sock = self.request
        sock.sendto(data, self.client_address)


def hostport(s):
    host, _, port = s.rpartition(":")
    return host.strip("[]"), int(port)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tcp", required=True)
    p.add_argument("--udp", required=True)
    a = p.parse_args()
    with socketserver.ThreadingTCPServer(hostport(a.tcp), TCPEcho) as tcp, \
            socketserver.ThreadingUDPServer(hostport(a.udp), UDPEcho) as udp:
        print("listening tcp %s:%d" % tcp.server_address[:2], flush=True)
        print("listening udp %s:%d" % udp.server_address[:2], flush=True)
        # The UDP loop runs in a daemon thread and is not shut down (shutdown()
        # would add up to 0.5 s of polling to every exit); TCP is the main loop.
        threading.Thread(target=udp.serve_forever, daemon=True).start()
        try:
            tcp.serve_forever()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    sys.exit(main())
