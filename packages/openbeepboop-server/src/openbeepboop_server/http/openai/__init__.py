"""The OpenAI-compatible surface under ``/openai/v1`` (docs/openai.md).

The official OpenAI SDK pointed at ``HOST/openai/v1`` works unchanged: every
request is an ordinary job (or many) of the caller's key underneath. Modules:
``chat`` (synchronous chat completions and the model list), ``failures``
(a failed job as the OpenAI error and status), ``routes`` (the table).
"""
