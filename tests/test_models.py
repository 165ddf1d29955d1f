import hashlib
import json

import pytest

from tokenskip import models
from tokenskip.errors import UserError


def test_unknown_alias_is_a_user_error():
    with pytest.raises(UserError, match="unknown model 'nosuch-model'"):
        models.resolve_model("nosuch-model")
    with pytest.raises(UserError, match="empty"):
        models.resolve_model(" ")


def test_hub_ids_and_local_folders(tmp_path):
    assert models.resolve_model("Qwen/Qwen2.5-7B-Instruct") == "Qwen/Qwen2.5-7B-Instruct"
    (tmp_path / "config.json").write_text("{}")
    assert models.resolve_model(str(tmp_path)) == str(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no config.json"):
        models.resolve_model(str(empty))


def _fake_packages(tmp_path, monkeypatch, chunks):
    for i, data in enumerate(chunks):
        pkg = tmp_path / f"fakechunk{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("raise ImportError('must not be imported')\n")
        (pkg / "data" / "part.bin").write_bytes(data)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tuple(f"fakechunk{i}" for i in range(len(chunks)))


def test_assemble_concatenates_chunks_and_checks_sha(tmp_path, monkeypatch):
    chunks = [b"abc" * 10, b"def" * 7, b"g"]
    whole = b"".join(chunks)
    pkgs = _fake_packages(tmp_path, monkeypatch, chunks)
    spec = models.EmbeddedModel(
        alias="fake",
        description="",
        packages=pkgs,
        files=("data/part.bin",) * 3,
        gguf_name="f.gguf",
        sha256=hashlib.sha256(whole).hexdigest(),
        size=len(whole),
        pip_install="pip install fake",
    )
    work = tmp_path / "work"
    work.mkdir()
    out = models._assemble_gguf(spec, work)
    assert out.read_bytes() == whole
    bad = models.EmbeddedModel(**{**spec.__dict__, "sha256": "0" * 64})
    with pytest.raises(UserError, match="sha256"):
        models._assemble_gguf(bad, work)
    missing = models.EmbeddedModel(**{**spec.__dict__, "packages": ("not_installed_pkg_xyz",) * 3})
    with pytest.raises(UserError, match="pip install fake"):
        models._assemble_gguf(missing, work)


def test_cache_dir_env(tmp_path, monkeypatch):
    monkeypatch.setenv("TOKENSKIP_CACHE", str(tmp_path))
    assert models.cache_dir() == tmp_path
    rows = models.list_models()
    assert {r["alias"] for r in rows} >= {"smollm2-135m", "qwen2.5-coder-0.5b"}
    assert not any(r["cached"] for r in rows)


def test_dtype_and_device():
    import torch

    assert models.resolve_dtype("auto", "cpu") == torch.float32
    assert models.resolve_dtype("bf16", "cpu") == torch.bfloat16
    with pytest.raises(UserError, match="dtype"):
        models.resolve_dtype("float8", "cpu")
    if not torch.cuda.is_available():
        assert models.resolve_device("auto") == "cpu"
        with pytest.raises(UserError, match="CUDA"):
            models.resolve_device("cuda")


@pytest.mark.slow
def test_embedded_model_is_converted_once_and_reused(embedded_model_dir):
    from pathlib import Path

    folder = Path(embedded_model_dir)
    marker = json.loads((folder / "tokenskip_source.json").read_text())
    assert marker["sha256"] == models.EMBEDDED_MODELS["smollm2-135m"].sha256
    assert (folder / "model.safetensors").exists() and (folder / "config.json").exists()
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config
    mtime = (folder / "model.safetensors").stat().st_mtime
    assert models.resolve_model("smollm2-135m") == str(folder)
    assert (folder / "model.safetensors").stat().st_mtime == mtime


@pytest.mark.slow
def test_load_model_generates_with_chat_template(embedded_model_dir):
    import torch

    model, tok = models.load_model("smollm2-135m")
    assert model.dtype == torch.float32 and tok.chat_template
    ids = tok("Hello", return_tensors="pt")
    with torch.no_grad():
        logits = model(**ids).logits
    assert logits.shape[-1] == model.config.vocab_size and torch.isfinite(logits).all()


def test_auto_dtype_follows_the_machine(monkeypatch):
    """--dtype auto: bf16 on a CPU with AMX, fp32 on one without; TOKENSKIP_CPU_DTYPE decides when set."""
    import tokenskip.models as m

    monkeypatch.delenv(m.CPU_DTYPE_ENV, raising=False)
    monkeypatch.setattr(m, "cpu_has_amx", lambda: True)
    assert m.auto_dtype("cpu") == "bfloat16" and m.dtype_name("auto", "cpu") == "bfloat16"
    monkeypatch.setattr(m, "cpu_has_amx", lambda: False)
    assert m.auto_dtype("cpu") == "float32"
    assert m.dtype_name("bf16", "cpu") == "bfloat16" and m.dtype_name("fp32", "cpu") == "float32"
    monkeypatch.setenv(m.CPU_DTYPE_ENV, "bfloat16")
    assert m.auto_dtype("cpu") == "bfloat16"
    monkeypatch.setenv(m.CPU_DTYPE_ENV, "int8")
    with pytest.raises(UserError, match="TOKENSKIP_CPU_DTYPE"):
        m.auto_dtype("cpu")
    with pytest.raises(UserError, match="unknown --dtype"):
        m.dtype_name("float8", "cpu")
