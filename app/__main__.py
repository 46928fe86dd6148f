"""`python -m app`: serve the API with uvicorn on the configured host and port."""

import logging.config

import uvicorn

from app.main import create_app
from app.observability.logs import logging_config
from app.settings import Settings


def main() -> None:
    settings = Settings()
    # JSON lines (or text on a terminal) for our loggers and uvicorn's, access log included.
    config = logging_config(settings.log_format)
    logging.config.dictConfig(config)
    logging.captureWarnings(True)  # a library's warning is a log line too, not raw text on stderr
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=config, log_level="info")


if __name__ == "__main__":
    main()
