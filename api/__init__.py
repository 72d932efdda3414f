"""FastAPI app: REST, live stream, web console, regulator audit."""
