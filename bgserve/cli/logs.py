"""Where log lines go: bgserve's own at ``BGSERVE_LOG_LEVEL``; MLflow's only when they matter.

MLflow writes for notebooks: INFO lines on every store it opens, progress prints
("Successfully registered model ...") and coloured warnings. In a terminal story or a
server log they are noise, so bgserve's entry points keep MLflow at WARNING, route its
lines through bgserve's own format and silence its prints, unless the level is ``debug``.
"""

from __future__ import annotations

import logging
import sys
import warnings

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str = "info") -> None:
    """Set bgserve's log level and quiet MLflow (imported here, after its own set-up)."""
    debug = level.lower() == "debug"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    own = logging.getLogger("bgserve")
    if not (own.handlers or logging.getLogger().handlers):  # else the host configured logging
        own.setLevel(level.upper())
        own.addHandler(handler)
    import mlflow  # noqa: F401  (MLflow configures its loggers on import; ours comes after)
    from mlflow.utils import logging_utils

    _own(logging.getLogger("mlflow"), handler, "DEBUG" if debug else "WARNING")
    # The stream only carries MLflow's progress prints once its logger is routed to ours.
    logging_utils.MLFLOW_LOGGING_STREAM.enabled = debug
    if not debug:
        warnings.filterwarnings("ignore", category=UserWarning, module=r"mlflow(\.|$)")


def _own(logger: logging.Logger, handler: logging.Handler, level: str) -> None:
    # As MLflow itself does: its own handler, no propagation (so never printed twice).
    logger.handlers = [handler]
    logger.setLevel(level)
    logger.propagate = False
