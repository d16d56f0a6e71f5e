"""A moto S3 server on 127.0.0.1:PORT for the tests, with BUCKET created;
prints "ready" and runs until its standard input closes (when the test
process that started it exits, however it exits).

    python tests/interop/moto_server.py PORT BUCKET...
"""

import logging
import sys

import boto3
from moto.server import ThreadedMotoServer

logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
port = int(sys.argv[1])
server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
server.start()
s3 = boto3.client(
    "s3",
    endpoint_url=f"http://127.0.0.1:{port}",
    aws_access_key_id="ckpt",
    aws_secret_access_key="ckpt",
    region_name="us-east-1",
)
for bucket in sys.argv[2:]:
    s3.create_bucket(Bucket=bucket)
print("ready", flush=True)
sys.stdin.read()
server.stop()
