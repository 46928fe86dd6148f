"""Local mode: the embedded AWS (`local.aws`), the OpenAI-compatible simulator
(`local.simulator`) and what starts them around the API (`local.runtime`).

Never imported in aws mode: it needs the optional `local` dependency group (moto, werkzeug),
which the production image and the Lambda layer do not carry.
"""
