"""HTTP server for IDE completion clients: request validation and protocol shapes only.

Prompts are rendered by codegemma.fim and run by codegemma.infer.engine; see docs/serving.md.
`create_app(backend)` builds the FastAPI app (imported lazily: fastapi is not on every machine).
"""


def create_app(backend, api_key=None):
    from codegemma.serve.app import create_app as _create

    return _create(backend, api_key=api_key)
