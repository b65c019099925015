"""Downloads from a real HTTP server on 127.0.0.1, safe extraction, `prepare` on a fake COCO/VQAv2 tree."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import stat
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image
from pycocotools.coco import COCO

from vlpeft.cli import main
from vlpeft.data.archive import safe_extract
from vlpeft.data.coco import load_captions
from vlpeft.data.download import fetch, load_registry, select
from vlpeft.data.gqa import load_gqa
from vlpeft.data.nlvr import load_nlvr
from vlpeft.data.images import image_table, load_image
from vlpeft.data.prepare import prepare_coco
from vlpeft.data.vqa import load_vqa
from vlpeft.errors import DataError


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    files: dict[str, bytes]
    break_after: dict[str, int]  # path -> send this many bytes once, then drop the connection
    ranges: bool  # honour Range headers
    requests: list[tuple[str, str | None]]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        srv = self.server
        rng = self.headers.get("Range")
        srv.requests.append((self.path, rng))
        body = srv.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        if rng and srv.ranges:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        chunk = body[start:]
        self.send_header("Content-Length", str(len(chunk)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        cut = srv.break_after.pop(self.path, None)
        if cut is not None:  # simulate a dropped connection in the middle of the transfer
            self.wfile.write(chunk[:cut])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(chunk)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.files, srv.break_after, srv.ranges, srv.requests = {}, {}, True, []
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()


def _payload(n: int = 300_000) -> bytes:
    return bytes((i * 7919 + (i >> 8)) % 251 for i in range(n))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _quiet(_msg: str) -> None:
    pass


def test_interrupted_download_resumes_with_range(server, tmp_path):
    data = _payload()
    server.files["/f.bin"] = data
    server.break_after["/f.bin"] = 100_000
    dest = tmp_path / "f.bin"
    with pytest.raises(DataError, match=r"download interrupted .*100000 bytes kept in .*f.bin.part"):
        fetch(server.url + "/f.bin", dest, sha256=_sha(data), retries=0, progress=False, log=_quiet)
    assert not dest.exists() and (tmp_path / "f.bin.part").stat().st_size == 100_000
    fetch(
        server.url + "/f.bin", dest, size=len(data), sha256=_sha(data), retries=0, progress=False, log=_quiet
    )
    assert dest.read_bytes() == data and not (tmp_path / "f.bin.part").exists()
    assert server.requests == [("/f.bin", None), ("/f.bin", "bytes=100000-")]
    # A second call finds the verified file and does not download again.
    fetch(server.url + "/f.bin", dest, size=len(data), progress=False, log=_quiet)
    assert len(server.requests) == 2


def test_broken_transfer_is_retried_automatically(server, tmp_path):
    data = _payload(50_000)
    server.files["/g.bin"] = data
    server.break_after["/g.bin"] = 12_345
    msgs: list[str] = []
    fetch(
        server.url + "/g.bin",
        tmp_path / "g.bin",
        sha256=_sha(data),
        retries=2,
        progress=False,
        log=msgs.append,
    )
    assert (tmp_path / "g.bin").read_bytes() == data
    assert server.requests[1] == ("/g.bin", "bytes=12345-")
    assert any("resuming" in m for m in msgs)


def test_resume_from_existing_part_and_server_without_ranges(server, tmp_path):
    data = _payload(40_000)
    server.files["/h.bin"] = data
    (tmp_path / "h.bin.part").write_bytes(data[:1234])
    fetch(server.url + "/h.bin", tmp_path / "h.bin", sha256=_sha(data), progress=False, log=_quiet)
    assert (tmp_path / "h.bin").read_bytes() == data and server.requests[-1] == ("/h.bin", "bytes=1234-")
    # A server that ignores Range answers 200 with the whole file: the stale part is overwritten.
    server.ranges = False
    (tmp_path / "i.bin.part").write_bytes(b"garbage")
    server.files["/i.bin"] = data
    fetch(
        server.url + "/i.bin",
        tmp_path / "i.bin",
        md5=hashlib.md5(data).hexdigest(),
        progress=False,
        log=_quiet,
    )
    assert (tmp_path / "i.bin").read_bytes() == data


def test_wrong_checksum_is_a_clear_error(server, tmp_path):
    data = _payload(20_000)
    server.files["/c.bin"] = data
    wrong = "0" * 64
    msg = rf"c.bin from {server.url}/c.bin: sha256 mismatch \(expected {wrong}, got {_sha(data)}\)"
    with pytest.raises(DataError, match=msg):
        fetch(server.url + "/c.bin", tmp_path / "c.bin", sha256=wrong, progress=False, log=_quiet)
    assert not (tmp_path / "c.bin").exists() and not (tmp_path / "c.bin.part").exists()
    with pytest.raises(DataError, match=r"size mismatch \(expected 7 bytes, got 20000\)"):
        fetch(server.url + "/c.bin", tmp_path / "c.bin", size=7, progress=False, log=_quiet)
    with pytest.raises(DataError, match=r"/missing.zip: HTTP 404"):
        fetch(server.url + "/missing.zip", tmp_path / "m.zip", progress=False, log=_quiet)


def _zip(members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("members", "symlinks", "why"),
    [
        ({"ok.txt": b"1", "../evil.txt": b"x"}, None, r"member '../evil.txt' contains '..'"),
        ({"ok.txt": b"1", "/tmp/abs.txt": b"x"}, None, r"member '/tmp/abs.txt' has an absolute path"),
        ({"a/../../evil.txt": b"x"}, None, r"member 'a/../../evil.txt' contains '..'"),
        ({"ok.txt": b"1"}, {"link": "/etc"}, r"member 'link' is a symbolic link"),
    ],
)
def test_malicious_archive_member_is_refused(tmp_path, members, symlinks, why):
    archive = tmp_path / "bad.zip"
    archive.write_bytes(_zip(members, symlinks))
    dest = tmp_path / "out" / "inner"
    with pytest.raises(DataError, match=rf"bad.zip: {why}; refusing"):
        safe_extract(archive, dest)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "out" / "evil.txt").exists()
    assert list(dest.iterdir()) == [], "nothing may be extracted from a refused archive"


def test_safe_extract_merges_and_is_idempotent(tmp_path):
    (tmp_path / "a.zip").write_bytes(_zip({"vqa/q.json": b"{}", "top.txt": b"t"}))
    (tmp_path / "b.zip").write_bytes(_zip({"vqa/a.json": b"[]"}))
    assert safe_extract(tmp_path / "a.zip", tmp_path / "x") == [
        tmp_path / "x" / "top.txt",
        tmp_path / "x" / "vqa",
    ]
    safe_extract(tmp_path / "b.zip", tmp_path / "x")
    assert sorted(p.name for p in (tmp_path / "x" / "vqa").iterdir()) == ["a.json", "q.json"]
    (tmp_path / "x" / "top.txt").write_text("edited")
    safe_extract(tmp_path / "a.zip", tmp_path / "x")  # marker present: not extracted again
    assert (tmp_path / "x" / "top.txt").read_text() == "edited"
    (tmp_path / "c.zip").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(DataError, match=r"c.zip: not a valid zip archive"):
        safe_extract(tmp_path / "c.zip", tmp_path / "y")


# ------------------------------------------------------------------ fake COCO 2014 + Karpathy + VQAv2


def _jpeg(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), color).save(buf, format="JPEG")
    return buf.getvalue()


NLVR_COMMIT = "18924841aa96d519cfb8584f0945350f07a6d860"  # the commit the registry pins


def _fake_archives() -> dict[str, bytes]:
    """Zips shaped like the official ones: 6 train2014 + 4 val2014 images, Karpathy file, VQAv2 files."""
    images = [("train2014", i) for i in (9, 25, 30, 34, 36, 42)] + [
        ("val2014", i) for i in (42000, 42001, 42002, 42003)
    ]
    splits = ["train", "train", "train", "train", "restval", "val", "restval", "val", "test", "test"]
    karpathy, qs, anns = [], {"train2014": [], "val2014": []}, {"train2014": [], "val2014": []}
    sentid = 0
    for imgid, ((folder, cocoid), split) in enumerate(zip(images, splits, strict=True)):
        name = f"COCO_{folder}_{cocoid:012d}.jpg"
        sents = [
            {
                "raw": f"A photo number {cocoid} view {k}.",
                "tokens": ["a"],
                "imgid": imgid,
                "sentid": sentid + k,
            }
            for k in range(5)
        ]
        karpathy.append(
            {
                "filepath": folder,
                "filename": name,
                "imgid": imgid,
                "cocoid": cocoid,
                "split": split,
                "sentids": [s["sentid"] for s in sents],
                "sentences": sents,
            }
        )
        sentid += 5
        for k in range(2):
            qid = cocoid * 1000 + k
            qs[folder].append({"image_id": cocoid, "question": f"What is {k}?", "question_id": qid})
            answers = [
                {"answer": "yes" if j < 7 else "no", "answer_confidence": "yes", "answer_id": j + 1}
                for j in range(10)
            ]
            anns[folder].append(
                {
                    "question_id": qid,
                    "image_id": cocoid,
                    "question_type": "what is",
                    "answer_type": "yes/no",
                    "multiple_choice_answer": "yes",
                    "answers": answers,
                }
            )
    info = {"description": "fake"}
    out = {
        "/zips/train2014.zip": _zip(
            {f"train2014/COCO_train2014_{i:012d}.jpg": _jpeg((i, 0, 0)) for _, i in images[:6]}
        ),
        "/zips/val2014.zip": _zip(
            {f"val2014/COCO_val2014_{i:012d}.jpg": _jpeg((0, i % 256, 0)) for _, i in images[6:]}
        ),
        "/karpathy/caption_datasets.zip": _zip(
            {
                "dataset_coco.json": json.dumps({"dataset": "coco", "images": karpathy}).encode(),
                "dataset_flickr8k.json": b"{}",
            }
        ),
    }
    for sub, folder in (("Train", "train2014"), ("Val", "val2014")):
        q = {
            "info": info,
            "task_type": "Open-Ended",
            "data_type": "mscoco",
            "data_subtype": folder,
            "license": {},
            "questions": qs[folder],
        }
        a = {
            "info": info,
            "data_type": "mscoco",
            "data_subtype": folder,
            "license": {},
            "annotations": anns[folder],
        }
        out[f"/vqa/v2_Questions_{sub}_mscoco.zip"] = _zip(
            {f"v2_OpenEnded_mscoco_{folder}_questions.json": json.dumps(q).encode()}
        )
        out[f"/vqa/v2_Annotations_{sub}_mscoco.zip"] = _zip(
            {f"v2_mscoco_{folder}_annotations.json": json.dumps(a).encode()}
        )
    # GQA: one zip of the official balanced files (dicts keyed by question id); NLVR2: JSON lines per split.
    gqa = {f"q{cocoid}": {"imageId": str(cocoid), "question": "Is it red?", "answer": "no"} for _, cocoid in images}
    out["/nlp/data/gqa/questions1.2.zip"] = _zip(
        {f"{s}_balanced_questions.json": json.dumps(gqa).encode() for s in ("train", "val", "testdev")}
    )
    for name in ("train", "dev", "test1"):
        line = {"identifier": f"{name}-1-0-0", "sentence": "Two dogs.", "label": "True", "left_url": "u"}
        out[f"/lil-lab/nlvr/{NLVR_COMMIT}/nlvr2/data/{name}.json"] = (json.dumps(line) + "\n").encode()
    return out


def _registry(server, tmp_path: Path, archives: dict[str, bytes]) -> Path:
    real = json.loads((Path(__file__).parents[2] / "vlpeft" / "data" / "registry.json").read_text())
    files = {}
    for name, entry in real["files"].items():
        path = "/" + entry["url"].split("/", 3)[3].replace(
            "people/karpathy/deepimagesent", "karpathy"
        ).replace("cvmlp/vqa/mscoco/vqa", "vqa")
        data = archives[path]
        server.files[path] = data
        files[name] = {
            **entry,
            "url": server.url + path,
            "size": len(data),
            "sha256": _sha(data),
            "md5": None,
        }
    reg = tmp_path / "registry.json"
    reg.write_text(json.dumps({"files": files}))
    return reg


def test_packaged_registry_is_complete():
    entries = load_registry()
    assert {e.group for e in entries.values()} == {"coco-images", "karpathy", "vqa", "gqa", "nlvr"}
    assert len(select(entries, "nlvr")) == 3 and len(select(entries, "gqa")) == 1
    assert len(select(entries, "vqa")) == 4 and len(select(entries, "coco-images")) == 2
    for e in entries.values():
        assert e.url.startswith(("http://", "https://")) and e.filename == e.url.rsplit("/", 1)[1]
        assert e.sha256 is None or len(e.sha256) == 64
    with pytest.raises(DataError, match="--what 'imagenet': unknown"):
        select(entries, "imagenet")


def test_download_then_prepare_gives_the_loader_layout(server, tmp_path, capsys):
    archives = _fake_archives()
    reg = _registry(server, tmp_path, archives)
    server.break_after["/zips/val2014.zip"] = 500  # one broken transfer on the way: resumed automatically
    raw, out = tmp_path / "raw", tmp_path / "coco"
    assert main(["data", "download", "--what", "all", "--out", str(raw), "--registry", str(reg)]) == 0
    assert ("/zips/val2014.zip", "bytes=500-") in server.requests
    assert main(["data", "prepare", "--source", "coco", "--raw", str(raw), "--out", str(out)]) == 0
    for source in ("gqa", "nlvr"):
        assert main(["data", "prepare", "--source", source, "--raw", str(raw), "--out", str(out)]) == 0
    capsys.readouterr()
    assert [r.img_id for r in load_gqa(out, "testdev")][:2] == ["9", "25"]
    assert [(r.img0, r.label) for r in load_nlvr(out, "test")] == [("test1-1-0-img0", 1)]

    world = json.loads((out / "world.json").read_text())
    assert world["counts"]["images"] == {"train": 6, "val": 2, "test": 2}  # restval joined train
    table = image_table(out)
    assert len(table) == 10 and all(p.is_symlink() and load_image(p).size == (8, 6) for _, p in table)
    caps = load_captions(out, "test")
    assert [c.image_id for c in caps] == [42002, 42003] and caps[0].captions[
        0
    ] == "A photo number 42002 view 0."
    coco = COCO(str(out / "captions_val.json"))
    assert sorted(coco.getImgIds()) == [42, 42001] and len(coco.getAnnIds()) == 10
    for split, ids in (("train", {9, 25, 30, 34, 36, 42000}), ("val", {42, 42001}), ("test", {42002, 42003})):
        recs = load_vqa(out, split)
        assert {r.image_id for r in recs} == ids and len(recs) == 2 * len(
            ids
        )  # each question follows its image
        assert all(r.answers.count("yes") == 7 for r in recs)
    karpathy = json.loads((out / "dataset_coco.json").read_text())["images"]
    assert {im["karpathy_split"] for im in karpathy if im["split"] == "train"} == {"train", "restval"}


def test_prepare_errors(tmp_path):
    with pytest.raises(DataError, match=r"raw data directory not found"):
        prepare_coco(tmp_path / "nope", tmp_path / "out")
    raw = tmp_path / "raw"
    for path, data in _fake_archives().items():
        if not path.endswith(".zip"):
            continue
        (tmp_path / "z.zip").write_bytes(data)
        safe_extract(tmp_path / "z.zip", raw / Path(path).stem)
        os.remove(tmp_path / "z.zip")
    prepare_coco(raw, tmp_path / "copied", link="copy", progress=False)
    assert all(not p.is_symlink() and p.stat().st_size > 0 for _, p in image_table(tmp_path / "copied"))
    with pytest.raises(DataError, match=r"--link 'move': choose symlink, hardlink or copy"):
        prepare_coco(raw, tmp_path / "out", link="move", progress=False)
    assert not (tmp_path / "out").exists()
    next((raw / "val2014" / "val2014").iterdir()).unlink()
    with pytest.raises(
        DataError, match=r"dataset_coco.json: image cocoid 4200\d: .*COCO_val2014_.*jpg not found"
    ):
        prepare_coco(raw, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    (raw / "v2_Annotations_Val_mscoco" / "v2_mscoco_val2014_annotations.json").unlink()
    with pytest.raises(DataError, match=r"not found: v2_mscoco_val2014_annotations.json"):
        prepare_coco(raw, tmp_path / "out", progress=False)
