"""The HTTP surface: thin Starlette handlers over the queue and key services.

Modules: ``endpoints`` (the table of every route, its roles and bodies, which
the router and the OpenAPI document are both built from), ``auth``,
``bodies`` (reading and validating request bodies), ``errors`` (the OpenAI
error envelope for every failure), ``limits`` (body size), ``access_log``,
``longpoll`` and one module of handlers per audience (``user_routes``,
``node_routes``, ``meta_routes``).
"""
