"""The status page's files (HTML, script, style sheet), shipped in the wheel as package data.

Served by :mod:`openbeepboop_server.http.status_routes`; no build step and no
CDN: what is in this folder is exactly what a browser gets.
"""
