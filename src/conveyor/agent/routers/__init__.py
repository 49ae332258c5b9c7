"""The agent's routes, one module per resource (FastAPI's "bigger applications" layout).

Each route takes its method, path, summary and tags from the operations table
(:mod:`conveyor.operations`), so the REST API, the Python client and the CLI say the same
thing about every operation.
"""

from __future__ import annotations

from fastapi import APIRouter

from ...operations import OPERATIONS


def operation(router: APIRouter, name: str, **kwargs):
    """The route decorator for the table's operation ``name``."""
    op = OPERATIONS[name]
    return router.api_route(op.path, methods=[op.method], summary=op.summary, tags=list(op.tags), **kwargs)
