"""Another user's "daemon": listens on a Unix socket, records every byte it is sent, answers every request.

Run as that other user (setpriv) with the code passed on the command line (`python3 -c SOURCE SOCKET RECORD`),
so it needs no access to the repository. Standard library only.

RECORD gets `accepted`, `closed <n bytes>` lines and the bytes themselves (hex); `RECORD.ready` appears once it
listens. Each JSON-RPC request line gets a plausible success, so a client that trusts it goes on talking.
"""

import json
import os
import socket
import sys
import threading

path, record = sys.argv[1], sys.argv[2]
lock = threading.Lock()


def note(line: str) -> None:
    with lock, open(record, "a") as out:
        out.write(line + "\n")


def serve(conn: socket.socket) -> None:
    total, pending = 0, b""
    with conn:
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                break
            if not data:
                break
            total += len(data)
            note("data " + data.hex())
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                try:
                    request = json.loads(line)
                except ValueError:
                    continue
                if isinstance(request, dict) and "id" in request:
                    reply = {"jsonrpc": "2.0", "id": request["id"], "result": {"name": "srv", "ok": True}}
                    conn.sendall(json.dumps(reply).encode() + b"\n")
    note(f"closed {total}")


listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(path)
os.chmod(path, 0o777)  # anyone may connect: that is the trap
listener.listen(16)
with open(record + ".ready", "w"):
    pass
while True:
    conn, _ = listener.accept()
    note("accepted")
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
