"""Writes three points with the official InfluxDB 1.x Python client, configured with
no credentials at all: the leasehold proxy must supply them."""
import sys

from influxdb import InfluxDBClient

host, port, database = sys.argv[1], int(sys.argv[2]), sys.argv[3]
client = InfluxDBClient(host=host, port=port, database=database)
points = [
    {"measurement": "python_v1", "tags": {"n": str(i)}, "fields": {"value": float(i)}}
    for i in range(3)
]
assert client.write_points(points), "write_points returned False"
result = client.query('SELECT count("value") FROM "python_v1"')
count = list(result.get_points())[0]["count"]
assert count == 3, f"read back {count} points"
print("ok")
