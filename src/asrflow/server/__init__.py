"""The HTTP server: OpenAI's audio API and MLflow's scoring protocol over a default model and any registered
model a request names, bounded by design.

One file per part: `app` (the factory and the one guard), `holder` (models, identity, admission in audio
seconds), `pool` (models per request: LRU, TTL, one load each), `uploads` (clips decoded ahead of the model),
`scheduler` (fair turns of one window each), `fetch` (URL inputs, closed to SSRF), `errors` (the one exception
-> status mapping), `metrics`, and one router per protocol: `openai_audio`, `openai_models`, `realtime`,
`mlflow_scoring`, `pages`, `health`. The body limit is `asrflow.limits`.
"""

from asrflow.server.app import create_app
from asrflow.server.holder import ServerConfig
from asrflow.server.pool import model_identity

__all__ = ["ServerConfig", "create_app", "model_identity"]
