"""A local stand-in for the Hugging Face Hub's HTTP API — the only stand-in in the tests (the Hub cannot be reached
here). It serves the calls `huggingface_hub.HfApi` makes for `curate push` and `curate push-data` and for reading the
results back: create a repository, preupload (every file 'regular', so no LFS/Xet storage), commit (ndjson, base64
files), list commits, repository info, file tree, paths-info, and resolve (download) at a revision — which is also
everything `datasets.load_dataset("org/name")` calls. Repositories live in memory as a list of commits, each a full
snapshot of path -> bytes; a token is required on every call to a private repository and on every write.

    with HubStandIn(token="hf_test") as hub:   # hub.endpoint -> http://127.0.0.1:PORT
        HfApi(endpoint=hub.endpoint, token="hf_test").create_repo("org/x", repo_type="dataset", private=True)

Public dataset repositories can be served from a folder of 'org__name' folders (the layout of a CURATE_HUB_MIRROR),
for a clone with no mirror beside it (README, "Install and the two commands"):

    python tests/hub_standin.py --datasets ../shared/datasets --port 8765 &
    HF_ENDPOINT=http://127.0.0.1:8765 make demo
"""

import argparse
import base64
import hashlib
import json
import threading
import time
from pathlib import Path

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response

KINDS = {"model": "", "dataset": "datasets/", "space": "spaces/"}


class _Repos:
    """The stand-in's state: repositories by (kind, id), and the token that writes (and reads private ones)."""

    def __init__(self, token: str, repos: dict):
        self.token, self.repos = token, repos

    def auth(self, request: Request, readable: dict | None = None) -> None:
        if readable is not None and not readable["private"]:
            return  # public repositories are read without a token, as on the Hub
        if request.headers.get("authorization") != f"Bearer {self.token}":
            raise HTTPException(401, "Invalid credentials in Authorization header")

    def repo(self, kind: str, repo_id: str) -> dict:
        if (kind, repo_id) not in self.repos:
            raise HTTPException(404, f"Repository Not Found for url: {kind}s/{repo_id}",
                                headers={"X-Error-Code": "RepoNotFound"})
        return self.repos[(kind, repo_id)]

    @staticmethod
    def snapshot(r: dict, rev: str) -> tuple[str, dict]:
        commits = r["commits"]
        if rev in ("main", "HEAD"):
            return (commits[-1]["id"], commits[-1]["files"]) if commits else ("0" * 40, {})
        found = next((c for c in commits if c["id"].startswith(rev)), None)
        if found is None:
            raise HTTPException(404, f"Invalid rev id: {rev}", headers={"X-Error-Code": "RevisionNotFound"})
        return found["id"], found["files"]


def _write_routes(api: FastAPI, hub: _Repos) -> None:
    """What huggingface_hub calls to create a repository and commit to it."""
    @api.post("/api/repos/create")
    async def create(request: Request):
        hub.auth(request)
        body = await request.json()
        kind = body.get("type") or "model"
        repo_id = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
        url = f"{request.base_url}{KINDS[kind]}{repo_id}"
        if (kind, repo_id) in hub.repos:
            return JSONResponse({"error": "You already created this repo", "url": url}, status_code=409)
        private = body.get("visibility", "private" if body.get("private") else "public") != "public"
        hub.repos[(kind, repo_id)] = {"private": private, "commits": []}
        return {"url": url, "name": repo_id}

    @api.post("/api/validate-yaml")
    async def validate_yaml(request: Request):  # a README.md's metadata block is checked before a commit
        import yaml

        hub.auth(request)
        content = (await request.json())["content"]
        head = content.split("---")[1] if content.startswith("---") else ""
        try:
            yaml.safe_load(head)
        except yaml.YAMLError as err:
            return JSONResponse({"errors": [{"message": str(err)}]}, status_code=400)
        return {"errors": [], "warnings": []}

    @api.post("/api/{kind}s/{org}/{name}/preupload/{rev}")
    async def preupload(kind: str, org: str, name: str, rev: str, request: Request):
        hub.auth(request)
        hub.repo(kind, f"{org}/{name}")
        files = (await request.json())["files"]
        return {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                          for f in files]}

    @api.post("/api/{kind}s/{org}/{name}/commit/{rev}")
    async def commit(kind: str, org: str, name: str, rev: str, request: Request):
        hub.auth(request)
        r = hub.repo(kind, f"{org}/{name}")
        _, files = hub.snapshot(r, rev)
        files, header = _apply(dict(files), (await request.body()).decode())
        oid = hashlib.sha1(f"{len(r['commits'])}{header}{sorted(files)}".encode()).hexdigest()
        r["commits"].append({"id": oid, "title": header.get("summary", ""), "message": header.get("description", ""),
                             "date": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()), "files": files})
        return {"commitUrl": f"{request.base_url}{KINDS[kind]}{org}/{name}/commit/{oid}", "commitOid": oid,
                "commitMessage": header.get("summary", ""), "pullRequestUrl": None}


def _read_routes(api: FastAPI, hub: _Repos) -> None:
    """What huggingface_hub and datasets call to read a repository: commits, tree, paths-info, info, resolve."""
    @api.get("/api/{kind}s/{org}/{name}/commits/{rev}")
    async def commits(kind: str, org: str, name: str, rev: str, request: Request):
        r = hub.repo(kind, f"{org}/{name}")
        hub.auth(request, r)
        return [{"id": c["id"], "title": c["title"], "message": c["message"], "date": c["date"],
                 "authors": [{"user": "tester"}]} for c in reversed(r["commits"])]

    @api.get("/api/{kind}s/{org}/{name}/tree/{rev}")
    @api.get("/api/{kind}s/{org}/{name}/tree/{rev}/{path:path}")
    async def tree(kind: str, org: str, name: str, rev: str, request: Request, path: str = "", recursive: bool = False):
        r = hub.repo(kind, f"{org}/{name}")
        hub.auth(request, r)
        _, files = hub.snapshot(r, rev)
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        entries, folders = [], set()
        for p, b in sorted(files.items()):
            if not p.startswith(prefix):
                continue
            parts = p[len(prefix):].split("/")
            for depth in range(1, len(parts) if recursive else min(2, len(parts))):
                folders.add(prefix + "/".join(parts[:depth]))
            if recursive or len(parts) == 1:
                entries.append(_entry(p, b))
        return [{"type": "directory", "path": f, "oid": hashlib.sha1(f.encode()).hexdigest()} for f in sorted(folders)] + entries

    @api.post("/api/{kind}s/{org}/{name}/paths-info/{rev}")
    async def paths_info(kind: str, org: str, name: str, rev: str, request: Request):
        r = hub.repo(kind, f"{org}/{name}")
        hub.auth(request, r)
        _, files = hub.snapshot(r, rev)
        form = await request.form()
        wanted = form.getlist("paths")
        out = [_entry(p, files[p]) for p in wanted if p in files]
        out += [{"type": "directory", "path": p, "oid": hashlib.sha1(p.encode()).hexdigest()} for p in wanted
                if p not in files and any(f.startswith(p.rstrip("/") + "/") for f in files)]
        return out

    @api.get("/api/{kind}s/{org}/{name}")
    @api.get("/api/{kind}s/{org}/{name}/revision/{rev}")
    async def info(kind: str, org: str, name: str, request: Request, rev: str = "main"):
        r = hub.repo(kind, f"{org}/{name}")
        hub.auth(request, r)
        sha, files = hub.snapshot(r, rev)
        return {"id": f"{org}/{name}", "sha": sha, "private": r["private"], "siblings": [{"rfilename": p} for p in files],
                "lastModified": r["commits"][-1]["date"] if r["commits"] else None}


def _resolve_routes(api: FastAPI, hub: _Repos) -> None:
    """File downloads (GET) and their metadata (HEAD), for models, datasets and spaces."""
    async def resolve(kind: str, repo_id: str, rev: str, path: str, request: Request, body: bool):
        r = hub.repo(kind, repo_id)
        hub.auth(request, r)
        sha, files = hub.snapshot(r, rev)
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


def _apply(files: dict, body: str) -> tuple[dict, dict]:
    """A commit's NDJSON operations applied to a snapshot's files: (the new files, the commit's header)."""
    header = {}
    for line in body.splitlines():
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
    return files, header


def app(token: str, repos: dict) -> FastAPI:
    api, hub = FastAPI(), _Repos(token, repos)
    _write_routes(api, hub)
    _read_routes(api, hub)
    _resolve_routes(api, hub)
    return api


def _entry(path: str, data: bytes) -> dict:
    return {"type": "file", "path": path, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}


def public_datasets(folder: Path) -> dict:
    """Every 'org__name' folder under `folder` as a public dataset repository 'org/name' with one commit."""
    repos = {}
    for repo_dir in sorted(p for p in Path(folder).iterdir() if p.is_dir() and "__" in p.name):
        files = {str(f.relative_to(repo_dir)): f.read_bytes() for f in sorted(repo_dir.rglob("*")) if f.is_file()}
        oid = hashlib.sha1(repr(sorted((p, hashlib.sha1(b).hexdigest()) for p, b in files.items())).encode()).hexdigest()
        repos[("dataset", repo_dir.name.replace("__", "/", 1))] = {
            "private": False, "commits": [{"id": oid, "title": "upload", "message": "", "files": files,
                                           "date": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())}]}
    return repos


class HubStandIn:
    """Runs the stand-in on a local port (a free one by default) in a thread; `repos` holds what was pushed, and the
    public dataset repositories of `datasets` (a folder of 'org__name' folders) when given."""

    def __init__(self, token: str = "hf_standin_token", datasets: Path | None = None, port: int = 0):
        import socket

        self.token, self.repos = token, public_datasets(datasets) if datasets else {}
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
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


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Serve a folder of 'org__name' dataset folders as a local Hub.")
    parser.add_argument("--datasets", type=Path, required=True, help="e.g. ../shared/datasets")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    hub = HubStandIn(datasets=args.datasets, port=args.port)
    print(f"serving {len(hub.repos)} dataset repositories at {hub.endpoint} (HF_ENDPOINT={hub.endpoint})", flush=True)
    hub.server.run()
