"""An OpenAI-compatible HTTP gateway over the SDK, and a live status page of the network.

    secureinfer gateway --certs certs --name alice --seed 127.0.0.1:7001      # http://127.0.0.1:8080

    from openai import OpenAI
    llm = OpenAI(base_url="http://127.0.0.1:8080/v1", api_key="none")
    llm.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "Hi"}])

It runs at the client's side with the client's certificate: it sees prompts and answers in the clear and secret-
shares them itself, so it listens on loopback unless told otherwise. Per request, `"privacy": "secret" | "public"`
(default secret) and `"strategy"` ("auto" by default) are extension fields of the request body.

  config.py   GatewayConfig: address, API key, defaults; the warning for an address beyond loopback
  params.py   the OpenAI request bodies, checked into requests for the SDK (a 400 for what the engine does not do)
  backend.py  the SDK side: generation with text pieces and a stop switch, embeddings, the model look-up
  catalog.py  the hosted models from the membership view: modes, committees, endpoints
  chat.py     chat messages through the tokenizer's chat template
  runs.py     requests in worker threads, their events handed to the event loop
  events.py   server-sent events, and a caller that hangs up stopping its request
  shapes.py   the OpenAI response objects, with usage and the plan that served each request
  errors.py   the OpenAI error format, and the HTTP status of each SDK error
  auth.py     the optional bearer token
  board.py    the status page's data: nodes and their health, committees, recent requests per mode
  page.py     the status page (HTML and a little JavaScript)
  app.py      the Starlette application: the routes and their handlers
  server.py   serving it with uvicorn, in the foreground or in a background thread
"""

from __future__ import annotations

from .app import build_app
from .backend import Backend
from .config import GatewayConfig, exposure_warnings, parse_listen
from .server import RunningGateway

__all__ = ["Backend", "GatewayConfig", "RunningGateway", "build_app", "exposure_warnings", "parse_listen"]
