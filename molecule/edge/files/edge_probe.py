#!/usr/bin/env python3
"""SMTP probe for the edge scenario's verify: the ways clients misbehave.

Each mode prints one JSON document that the playbook asserts on. Standard
library only: it runs on the controller and in the guest.

  send      one message (--file or --bytes N; --size declares SIZE=)
  helo      HELO --helo NAME, MAIL, RCPT --to; RCPT's reply (smtpd delays
            HELO restrictions to RCPT)
  pregreet  talk before the greeting, as spambots do; RCPT's reply
  hold      open --count sessions and keep them --seconds; their greetings
  errors    --count unknown commands in one session; every reply code
  pipeline  HELO (no PIPELINING offered), then MAIL+RCPT+DATA in one write
  burst     --count messages, one session each; the reply codes
  verdict   a message From: --sender with --message-id, DKIM-signed with
            --dkim-key (python3-dkim, in the guest only) for the sender's
            domain, selector "test"; written to --save as sent
"""

import argparse
import concurrent.futures
import json
import smtplib
import socket
import sys
import time


def connect(options):
    return socket.create_connection((options.server, options.port), timeout=30,
                                    source_address=(options.source, 0) if options.source else None)


def read_reply(stream):
    lines = []
    while True:
        line = stream.readline().decode(errors="replace").rstrip("\r\n")
        lines.append(line)
        if len(line) < 4 or line[3] != "-":
            return int(line[:3] or 0), "\n".join(lines)


class Client(smtplib.SMTP):
    """smtplib from a chosen source address."""

    def __init__(self, options):
        source = (options.source, 0) if options.source else None
        super().__init__(options.server, options.port, timeout=120, source_address=source)


def send(options, body):
    """One transaction; SIZE= only when --size says so (smtplib would add the true one)."""
    try:
        with Client(options) as client:
            client.ehlo(options.helo)
            mail_options = [f"SIZE={options.size}"] if options.size else []
            for command, reply in [("MAIL", client.mail(options.sender, mail_options)),
                                   *(("RCPT", client.rcpt(to)) for to in options.to)]:
                if reply[0] not in (250, 251):
                    return reply[0], f"{command}: {reply[1].decode(errors='replace')}"
            code, text = client.data(body)
            return code, text.decode(errors="replace")
    except (OSError, smtplib.SMTPException) as error:
        return 0, f"{type(error).__name__}: {error}"


def helo(options):
    with Client(options) as client:
        client.helo(options.helo)
        client.mail(options.sender)
        code, text = client.rcpt(options.to[0])
        return {"code": code, "text": text.decode(errors="replace")}


def pregreet(options):
    with connect(options) as sock, sock.makefile("rb") as stream:
        sock.sendall(f"EHLO {options.helo}\r\n".encode())  # before the greeting
        greeting = read_reply(stream)
        sock.sendall(f"EHLO {options.helo}\r\n".encode())  # postscreen drops the early one
        ehlo = read_reply(stream)
        sock.sendall(f"MAIL FROM:<{options.sender}>\r\n".encode())
        mail = read_reply(stream)
        sock.sendall(f"RCPT TO:<{options.to[0]}>\r\n".encode())
        code, text = read_reply(stream)
        return {"code": code, "text": text, "before": [greeting, ehlo, mail]}


def hold(options):
    sessions, greetings = [], []
    for _ in range(options.count):
        sock = connect(options)
        stream = sock.makefile("rb")
        greetings.append(read_reply(stream))
        sessions.append((sock, stream))
    time.sleep(options.seconds)
    for sock, stream in sessions:
        stream.close()
        sock.close()
    return {"codes": [code for code, _ in greetings], "texts": [text for _, text in greetings]}


def errors(options):
    codes = []
    with connect(options) as sock, sock.makefile("rb") as stream:
        read_reply(stream)
        sock.sendall(f"EHLO {options.helo}\r\n".encode())
        read_reply(stream)
        for number in range(options.count):
            try:
                sock.sendall(f"BOGUS{number}\r\n".encode())
                code, _ = read_reply(stream)
            except OSError:
                code = 0
            codes.append(code)
            if code in (0, 421):
                break
    return {"codes": codes}


def pipeline(options):
    with connect(options) as sock, sock.makefile("rb") as stream:
        read_reply(stream)
        sock.sendall(f"HELO {options.helo}\r\n".encode())
        read_reply(stream)
        sock.sendall(f"MAIL FROM:<{options.sender}>\r\nRCPT TO:<{options.to[0]}>\r\nDATA\r\n"
                     .encode())
        replies = [read_reply(stream) for _ in range(3)]
        return {"codes": [code for code, _ in replies], "texts": [text for _, text in replies]}


def burst(options):
    """--count messages, a connection each, over --parallel sessions at a time.

    The codes in the order sent, and how long it all took.
    """
    started = time.monotonic()

    def one(number):
        return send(options, f"Subject: burst {number}\r\n\r\nburst\r\n".encode())[0]

    with concurrent.futures.ThreadPoolExecutor(options.parallel) as sessions:
        codes = list(sessions.map(one, range(options.count)))
    return {"codes": codes, "seconds": round(time.monotonic() - started, 1)}


def verdict(options):
    domain = options.sender.rpartition("@")[2]
    body = (f"From: Alice <{options.sender}>\r\nTo: <{options.to[0]}>\r\n"
            f"Subject: verdicts\r\nMessage-ID: {options.message_id}\r\n"
            "Date: Mon, 30 Nov 2026 22:00:00 +0000\r\n\r\n"
            "A message whose SPF, DKIM and DMARC verdicts are stored with it.\r\n").encode()
    if options.dkim_key:
        import dkim  # noqa: PLC0415 - python3-dkim is in the guest only

        with open(options.dkim_key, "rb") as handle:
            body = dkim.sign(body, b"test", domain.encode(), handle.read(),
                             canonicalize=(b"relaxed", b"relaxed")) + body
    if options.save:
        with open(options.save, "wb") as handle:
            handle.write(body)
    code, text = send(options, body)
    return {"code": code, "text": text}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["send", "helo", "pregreet", "hold", "errors",
                                         "pipeline", "burst", "verdict"])
    parser.add_argument("--server", required=True)
    parser.add_argument("--port", type=int, default=25)
    parser.add_argument("--source", help="local address to connect from")
    parser.add_argument("--helo", default="probe.example.net")
    parser.add_argument("--sender", default="probe@example.net")
    parser.add_argument("--to", action="append", help="recipient (repeatable; default "
                        "someone@edge.test)")
    parser.add_argument("--file")
    parser.add_argument("--bytes", type=int, help="send a message of this many bytes")
    parser.add_argument("--size", type=int, help="declare SIZE= in MAIL FROM")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=0)
    parser.add_argument("--parallel", type=int, default=1, help="burst: sessions at a time")
    parser.add_argument("--message-id", default="<verdict@example.net>")
    parser.add_argument("--dkim-key", help="PEM private key to sign with")
    parser.add_argument("--save", help="write the message as sent to this file")
    options = parser.parse_args()
    options.to = options.to or ["someone@edge.test"]

    if options.mode == "send":
        if options.file:
            with open(options.file, "rb") as handle:
                body = handle.read().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        else:
            line = b"x" * 998 + b"\r\n"
            body = b"Subject: big\r\n\r\n" + line * ((options.bytes or 1000) // len(line) + 1)
        code, text = send(options, body)
        result = {"code": code, "text": text}
    else:
        result = globals()[options.mode](options)
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
