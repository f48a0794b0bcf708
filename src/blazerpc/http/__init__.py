"""HTTP transport on FastAPI + uvicorn: JSON, Server-Sent Events, health, OpenAPI docs."""
