"""What `mlflow models serve` lacks for asrflow models, applied in its process only.

MLflow's documented behaviour, which holds everywhere else (a notebook's `mlflow.pyfunc.load_model`, a Spark UDF):
params missing from a model's signature are dropped with a warning before `predict` sees them, and a failed
prediction is reported with the request's data in the message. A scoring server answering clients needs more:
an unknown param is a 400 naming it, and an error never echoes megabytes of base64 back. MLflow has no hook for
either, so in the scoring server's process, and only there, asrflow wraps two of its private functions. Each is
guarded by a canary (tests/test_seams.py) that fails naming it, and pyproject bounds mlflow to the releases the
canaries passed on.
"""

from __future__ import annotations

import os
import sys

from asrflow.mlmodel import FLAVOR_NAME
from asrflow.scoring import OUTPUT_PARAMS, param_names

SERVER_MODULE = "mlflow.pyfunc.scoring_server.app"  # what `mlflow models serve` runs; it loads the model on import
MODEL_PATH_VARIABLE = "__pyfunc_model_path__"  # scoring_server._SERVER_MODEL_PATH, set by `mlflow models serve`
ERROR_SEPARATOR = "'. \nError: "  # scoring_server.invocations: f"Failed to predict data '{data}'. \nError: {message}"
# scoring_server's parse errors (JSON, UTF-8, CSV) quote the parser's exception, whose repr can hold the body:
# f"Ensure that input is a valid JSON formatted string. Error: '{ex!r}'\nInput: \n{json_input}\n"
PARSE_ERROR = " Error: '"


def in_scoring_server() -> bool:
    """Whether this is `mlflow models serve`'s process loading its model: its app module is being imported (in
    sys.modules, its `app` not yet made) with the model's path in MLflow's variable."""
    module = sys.modules.get(SERVER_MODULE)
    return module is not None and not hasattr(module, "app") and bool(os.environ.get(MODEL_PATH_VARIABLE))


def strict_scoring_server() -> None:
    """In `mlflow models serve`'s process: unknown params are refused and errors come without the payload."""
    if in_scoring_server():
        reject_unknown_params()
        no_payload_in_errors()


def reject_unknown_params() -> None:
    """MLflow drops params missing from a model's signature with only a warning (none at log level ERROR),
    before predict() sees them. For asrflow models they are an error naming them (400 when served)."""
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException
    from mlflow.models import utils
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
    from mlflow.types import ParamSchema

    enforce = utils._enforce_params_schema
    if getattr(enforce, "asrflow", False):
        return

    def strict(params, schema):
        names = {p.name for p in schema.params} if isinstance(schema, ParamSchema) else set()
        if set(OUTPUT_PARAMS) | {"vad_filter"} <= names and isinstance(params, dict):  # an asrflow model's
            unknown = sorted(set(map(str, params)) - names)
            if unknown:
                raise MlflowException(
                    f"unknown param(s) {', '.join(unknown)}: an asrflow model takes {', '.join(param_names())}.",
                    INVALID_PARAMETER_VALUE,
                )
        return enforce(params, schema)

    strict.asrflow = True
    utils._enforce_params_schema = mlflow.pyfunc._enforce_params_schema = strict


def no_payload_in_errors() -> None:
    """`mlflow models serve` puts the whole request data into every prediction error ("Failed to predict data
    '<megabytes of base64>'. Error: ...") and the body, or the parser's exception that quotes it, into its parse
    errors ("... Error: 'UnicodeDecodeError(... b'<body>'...)' Input: <body>"); for asrflow models the client gets
    the error alone."""
    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc import scoring_server

    invocations = scoring_server.invocations
    if getattr(invocations, "asrflow", False):
        return

    def quiet(data, content_type, model, input_schema):
        try:
            return invocations(data, content_type, model, input_schema)
        except MlflowException as e:
            if FLAVOR_NAME in getattr(model.metadata, "flavors", {}):
                e.message = e.message.split(ERROR_SEPARATOR, 1)[-1].split(PARSE_ERROR, 1)[0]
            raise

    quiet.asrflow = True
    scoring_server.invocations = quiet
