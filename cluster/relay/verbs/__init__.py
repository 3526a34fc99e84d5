"""One module per client verb (NIP-01 EVENT, REQ, COUNT, CLOSE; NIP-42 AUTH).

`cluster/relay/websocket.py` dispatches each decoded command to one of them with a `match` over
the typed command union; each verb only talks to its connection and the worker's context.
"""
