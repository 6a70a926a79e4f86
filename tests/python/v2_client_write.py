"""Writes three points with the official InfluxDB 2.x Python client (influxdb-client),
configured with no token: the leasehold proxy must supply it."""
import sys

from influxdb_client import InfluxDBClient, Point
from influxdb_client.client.write_api import SYNCHRONOUS

url, org, bucket = sys.argv[1], sys.argv[2], sys.argv[3]
with InfluxDBClient(url=url, token="", org=org) as client:
    write_api = client.write_api(write_options=SYNCHRONOUS)
    write_api.write(
        bucket=bucket,
        record=[Point("python_v2").tag("n", str(i)).field("value", float(i)) for i in range(3)],
    )
print("ok")
