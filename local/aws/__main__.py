"""`python -m local.aws --port 4566`: the embedded AWS as its own process.

Point the API at it with `AWS_ENDPOINT_URL=http://127.0.0.1:4566`; the API can then
restart while the AWS side keeps its state (in memory: lost when this process ends).
"""

import argparse
import logging

from local.aws.server import EmbeddedAWS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4566)
    parser.add_argument("--region", default="us-east-1")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = EmbeddedAWS(port=args.port, host=args.host, region=args.region)
    server.start()
    print(f"embedded AWS ready on {server.endpoint_url}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
