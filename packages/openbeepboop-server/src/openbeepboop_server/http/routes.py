"""Every endpoint of the server, in the order the OpenAPI document lists them."""

from __future__ import annotations

from openbeepboop_server.http import (
    meta_routes,
    node_routes,
    status_routes,
    usage_routes,
    user_routes,
)
from openbeepboop_server.http.endpoints import Endpoint
from openbeepboop_server.http.openai import routes as openai_routes

ENDPOINTS: tuple[Endpoint, ...] = (
    *user_routes.ENDPOINTS,
    *node_routes.ENDPOINTS,
    *meta_routes.ENDPOINTS,
    *status_routes.ENDPOINTS,
    *usage_routes.ENDPOINTS,
    *openai_routes.ENDPOINTS,
)
