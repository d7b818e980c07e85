"""The Kubernetes REST API (HTTP/JSON) of the api-server, beside its gRPC API.

Pure parts (discovery documents, Status mapping, patches, tables) are in their own modules;
`http.py` is the aiohttp adapter that calls the same Registry and Forwarder as gRPC.
"""
