"""A plain keep-alive HTTP/1.1 client (the standard library's) writing to a proxy that
holds no lease: every write must get the proxy's 503, and no connection may break.

Usage: keepalive_own_answers.py HOST PORT COUNT BODY_BYTES
Prints one JSON object: statuses, connection errors, answers with Connection: close,
and whether every answer had Retry-After and an InfluxDB-style JSON body.
"""

import http.client
import json
import sys


def main() -> None:
    host, port, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    body = b"cpu,host=a value=1 " + b"0" * max(0, size - 19)
    body = body[:size]
    statuses: dict[str, int] = {}
    errors = 0
    closes = 0
    well_formed = True
    connections = 1
    conn = http.client.HTTPConnection(host, port, timeout=30)
    for _ in range(count):
        try:
            conn.request("POST", "/write?db=telemetry", body=body,
                         headers={"Content-Type": "text/plain; charset=utf-8"})
            response = conn.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException):
            errors += 1
            conn.close()
            conn = http.client.HTTPConnection(host, port, timeout=30)
            connections += 1
            continue
        statuses[str(response.status)] = statuses.get(str(response.status), 0) + 1
        try:
            code = json.loads(payload)["code"]
        except (ValueError, KeyError):
            code = None
        if response.getheader("Retry-After") is None or code != "unavailable":
            well_formed = False
        if (response.getheader("Connection") or "").lower() == "close":
            closes += 1
            conn.close()
            conn = http.client.HTTPConnection(host, port, timeout=30)
            connections += 1
    print(json.dumps({
        "statuses": statuses,
        "errors": errors,
        "closes": closes,
        "well_formed": well_formed,
        "connections": connections,
    }))


if __name__ == "__main__":
    main()
