"""The HTTP server: OpenAI's audio API and MLflow's scoring protocol over one model, bounded by design.

One file per part: `app` (the factory and the one guard), `holder` (the model: load, identity, admission in
audio seconds), `scheduler` (fair turns of one window each), `fetch` (URL inputs, closed to SSRF), `errors`
(the one exception -> status mapping), `metrics`, and one router per protocol: `openai_audio`,
`mlflow_scoring`, `pages`, `health`. The body limit is `asrflow.limits`.
"""

from asrflow.server.app import create_app
from asrflow.server.holder import ServerConfig, model_identity

__all__ = ["ServerConfig", "create_app", "model_identity"]
