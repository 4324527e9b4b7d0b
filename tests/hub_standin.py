"""A local stand-in for the Hugging Face Hub's HTTP API — the only stand-in in the tests (the Hub cannot be reached
here). It serves the calls `huggingface_hub.HfApi` makes for `curate push` and `curate push-data` and for reading the
results back: create a repository, preupload (every file 'regular', so no LFS/Xet storage), commit (ndjson, base64
files), list commits, repository info, file tree, and resolve (download) at a revision. Repositories live in memory
as a list of commits, each a full snapshot of path -> bytes; a token is required on every call.

    with HubStandIn(token="hf_test") as hub:   # hub.endpoint -> http://127.0.0.1:PORT
        HfApi(endpoint=hub.endpoint, token="hf_test").create_repo("org/x", repo_type="dataset", private=True)
"""

import base64
import hashlib
import json
import threading
import time

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response

KINDS = {"model": "", "dataset": "datasets/", "space": "spaces/"}


def app(token: str, repos: dict) -> FastAPI:
    api = FastAPI()

    def auth(request: Request) -> None:
        if request.headers.get("authorization") != f"Bearer {token}":
            raise HTTPException(401, "Invalid credentials in Authorization header")

    def repo(kind: str, repo_id: str) -> dict:
        if (kind, repo_id) not in repos:
            raise HTTPException(404, f"Repository Not Found for url: {kind}s/{repo_id}",
                                headers={"X-Error-Code": "RepoNotFound"})
        return repos[(kind, repo_id)]

    def snapshot(r: dict, rev: str) -> tuple[str, dict]:
        commits = r["commits"]
        if rev in ("main", "HEAD"):
            return (commits[-1]["id"], commits[-1]["files"]) if commits else ("0" * 40, {})
        found = next((c for c in commits if c["id"].startswith(rev)), None)
        if found is None:
            raise HTTPException(404, f"Invalid rev id: {rev}", headers={"X-Error-Code": "RevisionNotFound"})
        return found["id"], found["files"]

    @api.post("/api/repos/create")
    async def create(request: Request):
        auth(request)
        body = await request.json()
        kind = body.get("type") or "model"
        repo_id = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
        url = f"{request.base_url}{KINDS[kind]}{repo_id}"
        if (kind, repo_id) in repos:
            return JSONResponse({"error": "You already created this repo", "url": url}, status_code=409)
        private = body.get("visibility", "private" if body.get("private") else "public") != "public"
        repos[(kind, repo_id)] = {"private": private, "commits": []}
        return {"url": url, "name": repo_id}

    @api.post("/api/validate-yaml")
    async def validate_yaml(request: Request):  # a README.md's metadata block is checked before a commit
        import yaml

        auth(request)
        content = (await request.json())["content"]
        head = content.split("---")[1] if content.startswith("---") else ""
        try:
            yaml.safe_load(head)
        except yaml.YAMLError as err:
            return JSONResponse({"errors": [{"message": str(err)}]}, status_code=400)
        return {"errors": [], "warnings": []}

    @api.post("/api/{kind}s/{org}/{name}/preupload/{rev}")
    async def preupload(kind: str, org: str, name: str, rev: str, request: Request):
        auth(request)
        repo(kind, f"{org}/{name}")
        files = (await request.json())["files"]
        return {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                          for f in files]}

    @api.post("/api/{kind}s/{org}/{name}/commit/{rev}")
    async def commit(kind: str, org: str, name: str, rev: str, request: Request):
        auth(request)
        r = repo(kind, f"{org}/{name}")
        _, files = snapshot(r, rev)
        files, header = dict(files), {}
        for line in (await request.body()).decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            if item["key"] == "header":
                header = item["value"]
            elif item["key"] == "file":
                files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            elif item["key"] in ("deletedFile", "deletedFolder"):
                prefix = item["value"]["path"]
                files = {p: b for p, b in files.items() if p != prefix and not p.startswith(prefix.rstrip("/") + "/")}
            else:
                raise HTTPException(400, f"the stand-in does not take '{item['key']}' operations")
        oid = hashlib.sha1(f"{len(r['commits'])}{header}{sorted(files)}".encode()).hexdigest()
        r["commits"].append({"id": oid, "title": header.get("summary", ""), "message": header.get("description", ""),
                             "date": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()), "files": files})
        return {"commitUrl": f"{request.base_url}{KINDS[kind]}{org}/{name}/commit/{oid}", "commitOid": oid,
                "commitMessage": header.get("summary", ""), "pullRequestUrl": None}

    @api.get("/api/{kind}s/{org}/{name}/commits/{rev}")
    async def commits(kind: str, org: str, name: str, rev: str, request: Request):
        auth(request)
        r = repo(kind, f"{org}/{name}")
        return [{"id": c["id"], "title": c["title"], "message": c["message"], "date": c["date"],
                 "authors": [{"user": "tester"}]} for c in reversed(r["commits"])]

    @api.get("/api/{kind}s/{org}/{name}/tree/{rev}")
    @api.get("/api/{kind}s/{org}/{name}/tree/{rev}/{path:path}")
    async def tree(kind: str, org: str, name: str, rev: str, request: Request, path: str = ""):
        auth(request)
        _, files = snapshot(repo(kind, f"{org}/{name}"), rev)
        prefix = path.rstrip("/") + "/" if path else ""
        return [{"type": "file", "path": p, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                for p, b in sorted(files.items()) if p.startswith(prefix)]

    @api.get("/api/{kind}s/{org}/{name}")
    @api.get("/api/{kind}s/{org}/{name}/revision/{rev}")
    async def info(kind: str, org: str, name: str, request: Request, rev: str = "main"):
        auth(request)
        r = repo(kind, f"{org}/{name}")
        sha, files = snapshot(r, rev)
        return {"id": f"{org}/{name}", "sha": sha, "private": r["private"], "siblings": [{"rfilename": p} for p in files],
                "lastModified": r["commits"][-1]["date"] if r["commits"] else None}

    async def resolve(kind: str, repo_id: str, rev: str, path: str, request: Request, body: bool):
        auth(request)
        sha, files = snapshot(repo(kind, repo_id), rev)
        if path not in files:
            raise HTTPException(404, f"Entry Not Found: {path}", headers={"X-Error-Code": "EntryNotFound"})
        data = files[path]
        headers = {"X-Repo-Commit": sha, "ETag": f'"{hashlib.sha1(data).hexdigest()}"',
                   "Content-Length": str(len(data))}
        return Response(data if body else b"", headers=headers, media_type="application/octet-stream")

    for kind, prefix in KINDS.items():
        def bind(kind=kind):
            async def get(org: str, name: str, rev: str, path: str, request: Request):
                return await resolve(kind, f"{org}/{name}", rev, path, request, request.method == "GET")
            return get
        api.add_api_route(f"/{prefix}{{org}}/{{name}}/resolve/{{rev}}/{{path:path}}", bind(), methods=["GET", "HEAD"])
    return api


class HubStandIn:
    """Runs the stand-in on a free local port in a thread; `repos` holds what was pushed."""

    def __init__(self, token: str = "hf_standin_token"):
        import socket

        self.token, self.repos = token, {}
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app(token, self.repos), host="127.0.0.1", port=self.port,
                                                    log_level="warning"))

    def __enter__(self) -> "HubStandIn":
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        for _ in range(200):
            if self.server.started:
                return self
            time.sleep(0.05)
        raise RuntimeError("the Hub stand-in did not start")

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
