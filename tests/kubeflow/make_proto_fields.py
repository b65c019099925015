"""Regenerate kfp_proto_fields.json: each message's field names in the protos each KFP backend was built with.

Usage (from the project root):
    python tests/kubeflow/make_proto_fields.py CLONE > tests/kubeflow/kfp_proto_fields.json
(a git clone of kubeflow/pipelines with its tags). The API server parses the pipeline and platform specs with
these messages (backend/src/apiserver/template/v2_template.go, protojson.Unmarshal), the driver the executor
configs (backend/src/v2/cmd/driver/main.go). Tag 2.4.0's go.mod has no `replace` for ./api and
./kubernetes_platform, so its protos are those of the pinned pseudo-versions' commits; from 2.5.0 on, the
tag's own directories.
"""

import json
import re
import subprocess
import sys

REPO = sys.argv[1] if len(sys.argv) > 1 else "."
# tag -> (commit of api/, commit of kubernetes_platform/); 2.4.0: the pinned pseudo-versions of its go.mod
SOURCES = {
    "2.4.0": ("873e9dedd766", "d911c8b73b49"),
    "2.5.0": ("2.5.0", "2.5.0"),
    "2.14.0": ("2.14.0", "2.14.0"),
    "2.15.0": ("2.15.0", "2.15.0"),
    "2.16.0": ("2.16.0", "2.16.0"),
    "2.17.0": ("2.17.0", "2.17.0"),
}
FILES = {
    "api": "api/v2alpha1/pipeline_spec.proto",
    "k8s": "kubernetes_platform/proto/kubernetes_executor_config.proto",
}


def show(rev, path):
    return subprocess.run(
        ["git", "-C", REPO, "show", f"{rev}:{path}"], capture_output=True, text=True, check=True
    ).stdout


def parse(text):
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    pkg = re.search(r"^\s*package\s+([\w.]+)\s*;", text, re.M).group(1)
    tokens = re.findall(r"[{};]|[^\s{};]+", text)
    out, stack, stmt = {}, [], []
    for tok in tokens:
        if tok == "{":
            kind = stmt[0] if stmt else ""
            name = stmt[1] if len(stmt) > 1 else ""
            stack.append((kind, name))
            if kind == "message":
                out[".".join([pkg] + [n for k, n in stack if k == "message"])] = []
            stmt = []
        elif tok == "}":
            stack.pop()
            stmt = []
        elif tok == ";":
            s = " ".join(stmt)
            msgs = [n for k, n in stack if k == "message"]
            if (
                msgs
                and stack[-1][0] in ("message", "oneof")
                and "=" in s
                and not re.match(r"(option|reserved|extensions)\b", s)
            ):
                m = re.match(r"(?:repeated\s+|optional\s+)?(?:map\s*<[^>]*>|[\w.]+)\s+(\w+)\s*=", s)
                if m:
                    out[".".join([pkg, *msgs])].append(m.group(1))
            stmt = []
        else:
            stmt.append(tok)
    return out


table = {}
for tag, (api, k8s) in SOURCES.items():
    fields = {}
    fields.update(parse(show(api, FILES["api"])))
    fields.update(parse(show(k8s, FILES["k8s"])))
    table[tag] = {k: sorted(v) for k, v in sorted(fields.items())}
json.dump(
    {
        "sources": {
            t: {
                "api/v2alpha1/pipeline_spec.proto": a,
                "kubernetes_platform/proto/kubernetes_executor_config.proto": k,
            }
            for t, (a, k) in SOURCES.items()
        },
        "fields": table,
    },
    sys.stdout,
    indent=1,
    sort_keys=True,
)
