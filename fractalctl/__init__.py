"""fractalctl: the command-line client of fractal-scheduler. It talks to the HTTP API only
(httpx), never imports `scheduler`, and can be installed on its own (`pip install .`)."""
