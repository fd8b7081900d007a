"""``python -m openbeepboop_schemas``: print the contract's JSON Schemas."""

from __future__ import annotations

import json

from openbeepboop_schemas.json_schema import component_schemas

if __name__ == "__main__":
    print(json.dumps(component_schemas(), indent=2, sort_keys=True))
