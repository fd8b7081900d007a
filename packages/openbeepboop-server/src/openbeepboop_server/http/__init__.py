"""The HTTP surface: thin Starlette handlers over dispatch and the queue and key services.

Modules: ``endpoints`` (the table of every route, its roles and bodies, which
the router and the OpenAPI document are both built from), ``auth``,
``bodies`` (reading and validating request bodies), ``errors`` (the OpenAI
error envelope for every failure), ``limits`` (body size), ``access_log``,
``context`` (a request's way to the app's context), ``disconnect`` (a
client hanging up, told to a long-poll's waiter), ``single_write_protocol``
(uvicorn's protocol sending a response's head and body in one write) and
one module of handlers per audience (``user_routes``, ``node_routes``,
``meta_routes``). The handlers call the dispatch layer
(:mod:`openbeepboop_server.dispatch`) for everything that waits or wakes,
and the queue and key services for the rest.
"""
