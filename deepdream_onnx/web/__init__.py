"""The web front end of `deepdream-onnx serve`: one page and a JSON API over the recipe.

Needs the optional extra deepdream-onnx[web] (FastAPI, uvicorn, python-multipart); the
core package never imports this one.  create_app (deepdream_onnx.web.app) builds the
application; the modules below it each do one thing:

    limits      the server's caps on uploads and dreams
    net         a Net that several dream threads share
    spec        a request's params and uploads, checked by the command line's rules
    store       the bounded on-disk cache of results
    jobs        the FIFO queue, its worker threads, progress, previews and cancelling
    thumbnails  small dreams of the built-in sky, one per layer, cached on disk
    events      the Server-Sent Events stream of a dream
    schemas     the JSON shapes, for /openapi.json
"""
