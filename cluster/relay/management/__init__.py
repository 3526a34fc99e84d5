"""NIP-86 relay management: JSON-RPC methods (`rpc.py`) behind NIP-98 auth over HTTP (`http.py`)."""
