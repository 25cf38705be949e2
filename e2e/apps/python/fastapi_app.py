"""The test app on FastAPI (served by uvicorn).

    uvicorn --host 127.0.0.1 --port PORT fastapi_app:app

Same routes as stdlib_server.py.
"""
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse, StreamingResponse

app = FastAPI()


@app.get("/health")
async def health():
    return {"ok": True}


@app.get("/hello")
async def hello():
    return Response("hello\n", media_type="text/plain")


@app.api_route("/users/{ident}", methods=["GET", "HEAD"])
async def get_user(ident: str):
    return {"id": ident, "name": "user" + ident}


@app.post("/users", status_code=201)
async def create_user(request: Request):
    return {"received": len(await request.body())}


@app.put("/users/{ident}")
async def update_user(ident: str, request: Request):
    return {"updated": ident, "received": len(await request.body())}


@app.delete("/users/{ident}", status_code=204)
async def delete_user(ident: str):
    return Response(status_code=204)


@app.get("/redirect/{ident}")
async def redirect_user(ident: str):
    return RedirectResponse("/users/" + ident, status_code=302)


@app.get("/missing/{ident}")
async def missing(ident: str):
    return JSONResponse({"error": "not found"}, status_code=404)


@app.get("/fail/{ident}")
async def fail(ident: str):
    return JSONResponse({"error": "boom"}, status_code=500)


@app.get("/stream/{ident}")
async def stream(ident: str):
    async def pieces():
        for piece in (b"alpha-", b"beta-", b"gamma"):
            yield piece

    return StreamingResponse(pieces(), media_type="text/plain")
