"""Downloads, images, files, multimodal prompts, image embeddings and image classification."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar, Literal

import dagster as dg
import numpy as np
import pyarrow as pa
import pytest
from PIL import Image
from pydantic import BaseModel

from ai_assets import (
    DownloadPolicy,
    EfficientNetLite0Provider,
    ImageColumn,
    ImageSpec,
    OpenAICompatibleProvider,
    RetryPolicy,
    RunOptions,
    SentenceTransformersProvider,
    classify_image,
    decode_images,
    download,
    embed_image,
    extract_text,
    prompt,
)
from ai_assets.runtime.errors import ConfigError, RowFailedError
from ai_assets.testing import FakeOpenAIServer
from ai_assets.testing.documents import pdf

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
PRODUCTS = ROOT / "data" / "images" / "products"
EXAMPLES = ROOT / "data" / "images" / "examples"


def png(colour: str = "red", size: tuple[int, int] = (64, 48), mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, colour).save(out, format="PNG")
    return out.getvalue()


class _Files(BaseHTTPRequestHandler):
    hits: ClassVar[dict[str, int]] = {}

    def do_GET(self) -> None:
        _Files.hits[self.path] = _Files.hits.get(self.path, 0) + 1
        if self.path == "/flaky.png" and _Files.hits[self.path] == 1:
            self.send_response(503)
            self.end_headers()
            return
        if self.path == "/huge":  # no Content-Length: only streaming can catch it
            self.send_response(200)
            self.end_headers()
            for _ in range(100):
                self.wfile.write(b"x" * 65536)
            return
        if self.path in ("/red.png", "/flaky.png"):
            body = png()
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def files_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_download_retries_caps_size_and_reports_rows(files_url: str, tmp_path: Path) -> None:
    local = tmp_path / "local.png"
    local.write_bytes(png("blue"))
    urls = [f"{files_url}/red.png", f"{files_url}/flaky.png", f"{files_url}/huge", f"{files_url}/missing",
            None, str(local), f"file://{local}"]
    options = RunOptions(on_error="null", retry=RetryPolicy(max_attempts=3, base_wait=0.01))
    out = download(pa.table({"url": urls}), "url", policy=DownloadPolicy(max_bytes=1_000_000, allow_private=True),
                   options=options)
    values = out.table.column("bytes").to_pylist()
    errors = out.table.column("bytes_error").to_pylist()
    assert values[0] == png() and values[1] == png()
    assert _Files.hits["/flaky.png"] == 2  # 503, then retried
    assert "passed max_bytes=1000000; aborted" in errors[2]
    assert "HTTP 404" in errors[3] and _Files.hits["/missing"] == 1  # permanent: not retried
    assert errors[4].startswith("skipped")
    assert "refused: local file" in errors[5] and "refused: local file" in errors[6]

    allowed = download(pa.table({"url": [str(local)]}), "url", policy=DownloadPolicy(allow_files=True))
    assert allowed.table.column("bytes").to_pylist() == [png("blue")]


def test_decode_images_converts_resizes_and_isolates_bad_rows() -> None:
    truncated = png(size=(200, 200))[:100]
    bomb = io.BytesIO()
    Image.new("1", (5000, 5000)).save(bomb, format="PNG")  # 25 Mpx that compress to a few KB
    table = pa.table({"b": [png(size=(400, 200), mode="RGBA"), truncated, b"not an image", bomb.getvalue(), None]})
    out = decode_images(table, "b", spec=ImageSpec(mode="RGB", size=(100, 100), max_pixels=10_000_000))
    rows = out.select(["image_width", "image_height", "image_mode"]).to_pylist()
    assert rows[0] == {"image_width": 100, "image_height": 50, "image_mode": "RGB"}
    errors = out.column("image_error").to_pylist()
    assert errors[0] is None
    assert "truncated" in errors[1] or "OSError" in errors[1]
    assert "UnidentifiedImageError" in errors[2]
    assert "max_pixels" in errors[3] or "DecompressionBomb" in errors[3]
    assert "null" in errors[4]
    assert Image.open(io.BytesIO(out.column("image")[0].as_py())).size == (100, 50)
    exact = decode_images(table.slice(0, 1), "b", spec=ImageSpec(size=(32, 32), resize="exact", format="JPEG"))
    assert exact.column("image")[0].as_py()[:3] == b"\xff\xd8\xff"


def minimal_pdf(text: str) -> bytes:
    return pdf(text)


def test_extract_text_from_pdf_html_and_text_with_limits() -> None:
    html = b"<!doctype html><html><head><style>x{}</style></head><body><h1>Title</h1><p>Body text</p>" \
           b"<script>var x;</script></body></html>"
    table = pa.table({"path": ["a.pdf", "b.html", "c.txt", "d.pdf"],
                      "bytes": [minimal_pdf("Hello from a PDF"), html, "plain ünïcode".encode(), b"%PDF-1.4 broken"]})
    out = extract_text(table, "bytes", max_chars=1000)
    texts = out.column("text").to_pylist()
    assert "Hello from a PDF" in texts[0]
    assert texts[1] == "Title\nBody text"
    assert texts[2] == "plain ünïcode"
    assert texts[3] is None and "d.pdf" in out.column("text_error").to_pylist()[3]
    assert extract_text(table.slice(2, 1), "bytes", max_chars=5).column("text").to_pylist() == ["plain"]


class Description(BaseModel):
    colour: str
    kind: Literal["phone", "laptop", "earbuds"]


def test_multimodal_prompt_sends_text_and_images(server: FakeOpenAIServer, llm: OpenAICompatibleProvider) -> None:
    table = pa.table({"name": ["a", "b", "c"], "image": [png("red"), png("blue"), None]})
    out = prompt(table, ["Product {name}.", ImageColumn("image"), "Describe it."], provider=llm,
                 return_format=Description, options=RunOptions(on_error="null"))
    values = out.table.column("response").to_pylist()
    assert all(Description.model_validate(v) for v in values[:2]) and values[2] is None
    assert out.table.column("response_error").to_pylist()[2] == "skipped: image column 'image' is null"
    keys = list(server.stats().by_key)
    assert len(keys) == 2 and all("<image " in k and k.startswith("Product ") for k in keys)
    assert keys[0] != keys[1]  # different images, different prompts


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> SentenceTransformersProvider:
    """A randomly initialised CLIP (about 200 KB) saved with save_pretrained: no weights can be downloaded."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    folder = tmp_path_factory.mktemp("tiny-clip")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for code in range(33, 127):
        vocab.setdefault(chr(code), len(vocab))
        vocab.setdefault(chr(code) + "</w>", len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                                 crop_size={"height": 32, "width": 32}),
                              tokenizer=tokenizer)
    layers = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 2}
    config = CLIPConfig(text_config={**layers, "vocab_size": len(vocab), "max_position_embeddings": 77,
                                     "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1},
                        vision_config={**layers, "image_size": 32, "patch_size": 8}, projection_dim=16)
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return SentenceTransformersProvider(folder, device="cpu")


def test_clip_image_embeddings_and_prompt_classification(tiny_clip: SentenceTransformersProvider) -> None:
    table = pa.table({"image": [png("red"), png("blue"), b"broken", None]})
    out = embed_image(table, "image", provider=tiny_clip)
    column = out.table.column("image_embedding")
    assert column.type.list_size == 16 and column.null_count == 2
    vectors = np.array(column.to_pylist()[:2], dtype=np.float32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    errors = out.table.column("image_embedding_error").to_pylist()
    assert "UnidentifiedImageError" in errors[2] and errors[3].startswith("skipped")

    labelled = classify_image(table, "image", {"red": "a red square", "blue": "a blue square"}, provider=tiny_clip)
    values = labelled.table.column("image_class").to_pylist()
    assert all(v["label"] in {"red", "blue"} and 0 < v["score"] <= 1 for v in values[:2])
    assert values[2:] == [None, None]


def test_efficientnet_classifies_the_demo_images_by_example() -> None:
    provider = EfficientNetLite0Provider(device="cpu")
    products = sorted(PRODUCTS.glob("product-0[1-6].png"))
    table = pa.table({"image": [p.read_bytes() for p in products]})
    examples = {p.stem: [p.read_bytes()] for p in sorted(EXAMPLES.glob("*.png"))}
    out = classify_image(table, "image", examples, provider=provider)
    labels = [v["label"] for v in out.table.column("image_class").to_pylist()]
    assert labels == ["phone", "laptop", "earbuds", "phone", "earbuds", "laptop"]  # how make_demo_images drew them
    with pytest.raises(TypeError, match="give example images"):
        classify_image(table, "image", ["phone", "laptop"], provider=provider)


def test_image_pipeline_materializes_with_thumbnails(tmp_path: Path) -> None:
    from ai_assets.dagster import (
        EfficientNetResource,
        LanceDBIOManager,
        ResultCacheResource,
        decode_images_asset,
        embed_image_asset,
        ingest_asset,
    )

    raw = ingest_asset("images", path=str(PRODUCTS / "*.png"), format="files")
    small = decode_images_asset("small", raw, spec=ImageSpec(size=(64, 64)))
    vectors = embed_image_asset("vectors", small, column="image", io_manager_key="lancedb")
    result = dg.materialize([raw, small, vectors], resources={
        "io_manager": LanceDBIOManager(root=str(tmp_path / "lance")),
        "lancedb": LanceDBIOManager(root=str(tmp_path / "lance")),
        "image_embedder": EfficientNetResource(device="cpu"),
        "ai_cache": ResultCacheResource(path=str(tmp_path / "cache.sqlite"))})
    assert result.success
    preview = result.asset_materializations_for_node("small")[0].metadata["preview"].value
    assert "![thumbnail](data:image/png;base64," in preview
    assert result.asset_materializations_for_node("small")[0].metadata["rows_with_image_error"].value == 1
    assert all(c.passed for c in result.get_asset_check_evaluations())


def test_classify_image_by_a_vision_llm(tmp_path: Path, fake_server: FakeOpenAIServer) -> None:
    """method="llm": each image goes as an image part with the labels as a Literal choice; the answer is a valid
    label with a confidence (shape and validity, not accuracy: the fake server answers from the schema)."""
    from ai_assets.dagster import OpenAICompatibleResource, ParquetIOManager, ResultCacheResource
    from ai_assets.dagster import classify_image_asset as factory

    fake_server.set_faults()
    fake_server.reset()
    llm = OpenAICompatibleProvider("vision-model", base_url=fake_server.base_url, api_key="k")
    images = pa.table({"image": [png("red"), png("blue"), None]})
    labels = {"phone": "a smartphone", "laptop": "a laptop computer", "watch": "a wristwatch"}
    out = classify_image(images, "image", labels, provider=llm).table
    picked = out.column("image_class").to_pylist()
    assert [p["label"] in labels for p in picked[:2]] == [True, True]
    assert all(0 <= p["score"] <= 1 for p in picked[:2])
    assert picked[2] is None and out.column("image_class_error")[2].as_py() == "skipped: image column 'image' is null"
    assert sum("<image " in key for key in fake_server.stats().by_key) == 2
    with pytest.raises(ConfigError, match="example images"):
        classify_image(images, "image", {"phone": [png("red")], "watch": "a wristwatch"}, provider=llm,
                       method="llm")

    @dg.asset(key="raw")
    def raw_images() -> pa.Table:
        return images

    asset = factory("classes", raw_images, labels=labels, method="llm", provider_key="llm", model="gpt-vision")
    resources = {"llm": OpenAICompatibleResource(model="m", base_url=fake_server.base_url, api_key="k"),
                 "ai_cache": ResultCacheResource(path=str(tmp_path / "journal.sqlite")),
                 "io_manager": ParquetIOManager(root=str(tmp_path / "out"))}
    fake_server.reset()
    assert dg.materialize([raw_images, asset], resources=resources).success
    assert fake_server.stats().models == {"gpt-vision": 2}


def test_classify_image_by_llm_refuses_undecodable_images_before_sending(
        fake_server: FakeOpenAIServer, tiny_clip: SentenceTransformersProvider) -> None:
    """Bytes that do not decode are that row's error, before anything is sent, with the error the embedding
    methods give them. Modelled: OpenAI's vision input takes PNG, JPEG, WEBP or non-animated GIF (OpenAI docs,
    "Images and vision": image input requirements); anything else can only be answered with an error, after its
    upload, a request and a rate-limit slot were spent on it."""
    from ai_assets.runtime.dead_letter import ERROR

    fake_server.set_faults()
    fake_server.reset()
    llm = OpenAICompatibleProvider("vision-model", base_url=fake_server.base_url, api_key="k")
    truncated = png("green", size=(300, 300))[:200]
    huge = png("white", size=(2000, 1500))  # 3 MP, over max_pixels below
    images = pa.table({"image": [png("red"), b"not an image", truncated, huge, png("blue"), b"not an image", None]})
    out = classify_image(images, "image", ["phone", "laptop"], provider=llm, max_pixels=1_000_000)
    values = out.table.column("image_class").to_pylist()
    errors = out.table.column("image_class_error").to_pylist()
    assert fake_server.stats().chat_requests == 2  # only the two images that decode were sent
    assert values[0] is not None and values[4] is not None and errors[0] is None and errors[4] is None
    assert [v for v in values[1:4] + values[5:]] == [None] * 5
    assert errors[1] == errors[5] == ("refused before sending: column 'image': UnidentifiedImageError: cannot "
                                      "identify image file")
    assert "OSError" in errors[2] and "truncated" in errors[2]
    assert "2000x1500 is over max_pixels=1000000" in errors[3]
    assert errors[6] == "skipped: image column 'image' is null"
    assert out.usage.errors == 4 and out.usage.skipped == 1  # refused rows are errors, not skips
    assert sorted(r[ERROR] for r in out.failed.table().to_pylist()) == sorted(errors[1:4] + errors[5:6])

    embedded = embed_image(images, "image", provider=tiny_clip, max_pixels=1_000_000).table
    by_embedding = embedded.column("image_embedding_error").to_pylist()
    for row in (1, 2, 3):  # the same check as the embedding methods: the same words
        assert errors[row].endswith(by_embedding[row]), (errors[row], by_embedding[row])

    fake_server.reset()
    with pytest.raises(ConfigError, match="not file bytes"):  # a column of the wrong type: one clear error
        classify_image(pa.table({"image": ["red.png"]}), "image", ["phone", "laptop"], provider=llm)
    assert fake_server.stats().chat_requests == 0
    with pytest.raises(RowFailedError, match="UnidentifiedImageError"):
        classify_image(images.slice(1, 1), "image", ["phone", "laptop"], provider=llm,
                       options=RunOptions(on_error="raise"))
