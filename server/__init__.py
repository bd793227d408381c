"""asyncio I/O for the caption server: config, HTTP/WebSocket app, connections, wire protocol."""
