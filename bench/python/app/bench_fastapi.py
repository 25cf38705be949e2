"""FastAPI benchmark app (run by uvicorn): the minimal handler the tests use
and the realistic one (app/work.py; a sync endpoint, so FastAPI runs it in
its thread pool, as it does any blocking client)."""
from fastapi import FastAPI

import work

app = FastAPI()


@app.get("/users/{ident}")
async def get_user(ident: str):
    return {"id": ident, "name": "user" + ident}


@app.get("/orders/{ident}")
def get_order(ident: str):
    return work.order(ident)
